//! What the overview's rates and the projections' trends are made of: every
//! [`SAMPLE_EVERY`] a sampler notes the head, the commands decided and each projection's
//! position and lag, keeping the last [`KEPT`] samples. It ends with the host's shutdown.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::Ui;

/// How often the sampler looks.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// How many samples are kept (three minutes).
pub const KEPT: usize = 90;

/// One look at the host.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub head: u64,
    pub commands: u64,
    /// Projection name → (position, lag).
    pub projections: HashMap<String, (u64, u64)>,
}

/// The last samples, oldest first.
#[derive(Debug, Default)]
pub struct Samples {
    kept: Mutex<VecDeque<Sample>>,
}

/// Per-second rates between two samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rates {
    pub appends: f64,
    pub commands: f64,
}

impl Samples {
    fn push(&self, sample: Sample) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(sample);
    }

    /// Events appended and commands decided per second over the last interval (zero until
    /// two samples exist).
    pub fn rates(&self) -> Rates {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let (Some(new), Some(old)) = (kept.back(), kept.iter().rev().nth(1)) else {
            return Rates::default();
        };
        let seconds = new.at.duration_since(old.at).as_secs_f64().max(1e-3);
        Rates {
            appends: new.head.saturating_sub(old.head) as f64 / seconds,
            commands: new.commands.saturating_sub(old.commands) as f64 / seconds,
        }
    }

    /// A projection's lag in every kept sample, oldest first.
    pub fn lags(&self, projection: &str) -> Vec<u64> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter()
            .filter_map(|s| s.projections.get(projection).map(|(_, lag)| *lag))
            .collect()
    }
}

/// Takes one sample of `ui`'s host.
pub fn sample(ui: &Ui) -> Sample {
    let host = ui.host();
    let stats = host.aggregates().stats();
    Sample {
        at: Instant::now(),
        head: host.store().head(),
        commands: stats.decisions.saturating_sub(stats.retries),
        projections: host
            .projections()
            .statuses()
            .into_iter()
            .map(|s| (s.name, (s.position, s.lag)))
            .collect(),
    }
}

/// Starts the sampler (a task on the current runtime) until the host shuts down.
pub fn start(ui: &Ui) {
    let weak = std::sync::Arc::downgrade(&ui.inner);
    let mut shutdown = ui.inner.shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|ending| *ending) => return,
            }
            // A weak handle: the sampler never keeps the host (and its store) alive.
            let Some(inner) = weak.upgrade() else { return };
            let ui = Ui { inner };
            let taken = tokio::task::spawn_blocking({
                let ui = ui.clone();
                move || sample(&ui)
            })
            .await;
            if let Ok(taken) = taken {
                ui.inner.samples.push(taken);
            }
        }
    });
}
