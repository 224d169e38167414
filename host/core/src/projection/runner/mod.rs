//! One projection's runner: a thread that feeds `$all` through the plugin in batches and
//! commits each batch's writes with the checkpoint in one transaction; builds a shadow
//! generation beside the active one and switches to it; retries, stops at or parks a failing
//! event.
//!
//! Modules: `lane` (one generation being fed), `batch` (read, upcast, handle and commit one
//! batch, and what happens when it fails), `generations` (create, rebuild, swap and switch
//! generations), `read_ahead` (the thread that reads the next batch while the plugin handles
//! this one). This file holds the loop and the control messages.

mod batch;
mod generations;
mod lane;
mod read_ahead;
mod skip;

pub(crate) use read_ahead::to_event;

use lane::{Lane, placeholder};
use read_ahead::ReadJob;

use std::collections::VecDeque;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::schema::{self, Generation};
use super::{
    ProjectionConfig, ProjectionHostError, ProjectionState, ProjectionStatus, QueryPool, Shared,
    SwapMode, SwapOutcome,
};
use crate::upcast::{UpcasterChain, Upcasting};
use crate::views::Views;
use eshost_runtime::{Event, ProjectionPlugin, Runtime};
use eshost_store::EventStore;

/// What callers ask of a runner.
pub(crate) enum Control {
    Pause,
    Resume,
    Rebuild {
        ack: Sender<Result<u64, ProjectionHostError>>,
    },
    AbortRebuild,
    /// Rebuild from position 0 because derived rows may hold personal data that is now
    /// shredded, or were built through an upcaster chain since swapped: restarts a rebuild
    /// already running (with its plugin), as it may have read the same.
    Purge {
        ack: Sender<Result<u64, ProjectionHostError>>,
    },
    /// Park the event a lane is stopped at, with an operator's reason, and run on.
    Skip {
        position: u64,
        reason: String,
        ack: Sender<Result<(), ProjectionHostError>>,
    },
    Swap {
        plugin: ProjectionPlugin,
        bytes: Vec<u8>,
        mode: SwapMode,
        ack: Sender<Result<SwapOutcome, ProjectionHostError>>,
    },
    Stop,
}

/// How long non-durable commits may pile up before one waits for the disk. A crash loses at
/// most this much work, never consistency: data and checkpoint roll back together.
const DURABLE_EVERY: Duration = Duration::from_millis(500);

pub(crate) struct Runner {
    config: ProjectionConfig,
    store: Arc<dyn EventStore>,
    views: Views,
    /// The reopen count of `views.redb` the lanes' checkpoints were read at (see
    /// [`Views::generation`]).
    views_generation: u64,
    /// The I/O error the last batch failed with (reading the log, committing the read
    /// model), until a commit is durable: the projection reports `failed` meanwhile and
    /// retries.
    stalled: Option<String>,
    shared: Arc<Shared>,
    control: mpsc::UnboundedReceiver<Control>,
    head: watch::Receiver<u64>,
    upcasting: Upcasting,
    active: Lane,
    shadow: Option<Lane>,
    paused: bool,
    last_error: Option<String>,
    /// Batches that failed, for the status (`failed_batches`).
    failed_batches: u64,
    last_durable: Instant,
    /// A commit since `last_durable` is not on disk yet.
    unsynced: bool,
    /// (when, positions processed so far), for the rate.
    samples: VecDeque<(Instant, u64)>,
    processed: u64,
    /// Jobs for the reader thread (started with the first read ahead; `None` before, or if it
    /// could not start).
    reader: Option<Sender<ReadJob>>,
    /// A handled batch, whose strings the next read reuses.
    spare: Vec<Event>,
}

fn views_error(name: &str) -> impl Fn(redb::Error) -> ProjectionHostError + '_ {
    move |e| ProjectionHostError::Views {
        name: name.to_owned(),
        message: e.to_string(),
    }
}

fn redb_error(e: impl Into<redb::Error>) -> redb::Error {
    e.into()
}

impl Runner {
    /// Opens (or creates) the projection's record and prepares its lanes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open(
        config: ProjectionConfig,
        store: Arc<dyn EventStore>,
        views: Views,
        runtime: Runtime,
        plugin: ProjectionPlugin,
        bytes: Vec<u8>,
        upcasters: UpcasterChain,
        control: mpsc::UnboundedReceiver<Control>,
    ) -> Result<(Runner, Arc<Shared>), ProjectionHostError> {
        let name = config.name.clone();
        let err = views_error(&name);
        let hash = plugin.info().content_hash.clone();
        let views_generation = views.generation();
        let db = views.db().map_err(|e| err(e.into()))?;
        let meta = schema::read_meta(&db, &name).map_err(&err)?;
        // The code of a recorded generation, from views.redb (or the configured file).
        let code_of =
            |generation: &Generation| -> Result<Option<ProjectionPlugin>, ProjectionHostError> {
                if generation.hash == hash {
                    return Ok(Some(plugin.clone()));
                }
                match schema::code(&db, &generation.hash).map_err(&err)? {
                    Some(bytes) => {
                        let label = format!("{name} (recorded version {})", &generation.hash[..12]);
                        match runtime.load_bytes(
                            &bytes,
                            &label,
                            eshost_runtime::PluginKind::Projection,
                        )? {
                            eshost_runtime::LoadedPlugin::Projection(p) => Ok(Some(p)),
                            _ => unreachable!("load_bytes checks the kind"),
                        }
                    }
                    None => Ok(None),
                }
            };
        let mut new_shadow = false;
        let (meta, active_plugin, shadow_plugin) = match meta {
            Some(meta) => match code_of(&meta.active)? {
                Some(active_plugin) => {
                    let shadow_plugin = match &meta.shadow {
                        Some(shadow) => code_of(shadow)?,
                        None => None,
                    };
                    let configured_is_live = meta.active.hash == hash
                        || meta.shadow.as_ref().is_some_and(|s| s.hash == hash);
                    new_shadow = !configured_is_live;
                    (meta, active_plugin, shadow_plugin)
                }
                // The code of the active generation is lost: start over with the configured one.
                None => (
                    Self::create(&db, &name, &hash, &bytes, Some(&meta)).map_err(&err)?,
                    plugin.clone(),
                    None,
                ),
            },
            None => (
                Self::create(&db, &name, &hash, &bytes, None).map_err(&err)?,
                plugin.clone(),
                None,
            ),
        };
        let active_checkpoint =
            schema::checkpoint(&db, &schema::namespace(&name, meta.active.number)).map_err(&err)?;
        let upcasting = upcasters.instantiate();
        let active = Lane::new(
            &name,
            meta.active.clone(),
            active_plugin.clone(),
            upcasting.relevance(&active_plugin.info().handles),
            active_checkpoint,
        );
        let mut plugins = std::collections::HashMap::new();
        plugins.insert(meta.active.number, QueryPool::new(active_plugin));
        let shadow = match (&meta.shadow, shadow_plugin) {
            (Some(generation), Some(shadow_plugin)) => {
                let checkpoint =
                    schema::checkpoint(&db, &schema::namespace(&name, generation.number))
                        .map_err(&err)?;
                plugins.insert(generation.number, QueryPool::new(shadow_plugin.clone()));
                let relevance = upcasting.relevance(&shadow_plugin.info().handles);
                Some(Lane::new(
                    &name,
                    generation.clone(),
                    shadow_plugin,
                    relevance,
                    checkpoint,
                ))
            }
            _ => None,
        };
        let head = store.watch_head();
        let status = ProjectionStatus {
            name: name.clone(),
            state: ProjectionState::Running,
            position: active.checkpoint,
            head: store.head(),
            lag: store.head().saturating_sub(active.checkpoint),
            events_per_sec: 0.0,
            last_error: None,
            active: active.status(store.head()),
            rebuild: shadow.as_ref().map(|s| s.status(store.head())),
            dead_letters: 0,
            failed_batches: 0,
        };
        let shared = Arc::new(Shared {
            name: name.clone(),
            status: Mutex::new(status),
            plugins: Mutex::new(plugins),
        });
        drop(db);
        let mut runner = Runner {
            config,
            store,
            views,
            views_generation,
            stalled: None,
            shared: shared.clone(),
            control,
            head,
            upcasting,
            active,
            shadow,
            paused: false,
            last_error: None,
            failed_batches: 0,
            last_durable: Instant::now(),
            unsynced: false,
            samples: VecDeque::new(),
            processed: 0,
            reader: None,
            spare: Vec::new(),
        };
        if new_shadow {
            runner.start_shadow(plugin, Some(&bytes))?;
        }
        runner.publish(runner.store.head());
        Ok((runner, shared))
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    /// Runs until stopped, then makes the last commits durable: a clean stop leaves the read
    /// model at the checkpoint it reached, not at the last periodic sync.
    pub(crate) fn run(mut self) {
        self.follow();
        self.sync();
    }

    /// The loop: apply control messages, feed the lanes, sleep on the head watch. Returns when
    /// asked to stop (after the batch in hand) or when the host is gone.
    fn follow(&mut self) {
        let waiter = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(projection = %self.name(), "cannot start the runner: {error}");
                return;
            }
        };
        let mut head_open = true;
        loop {
            self.refresh_upcasters();
            while let Ok(control) = self.control.try_recv() {
                if !self.apply(control) {
                    return;
                }
            }
            self.reload_if_views_reopened(None);
            if self.unsynced && self.last_durable.elapsed() >= DURABLE_EVERY {
                // Idle with commits not yet on disk: make them durable now, not at the next
                // batch, so that a disk that cannot take them shows.
                self.sync();
            }
            let head = *self.head.borrow_and_update();
            let worked = !self.paused && self.work(head);
            self.publish(head);
            if worked {
                continue;
            }
            // Nothing to do until the log grows, a caller asks something, or a retry is due.
            let retry_at = [Some(&self.active), self.shadow.as_ref()]
                .into_iter()
                .flatten()
                .filter(|lane| lane.failed.is_none())
                .filter_map(|lane| lane.retry_at)
                .min()
                .filter(|_| !self.paused);
            let sync_at = self.unsynced.then(|| self.last_durable + DURABLE_EVERY);
            let retry_at = match (retry_at, sync_at) {
                (Some(retry), Some(sync)) => Some(retry.min(sync)),
                (retry, sync) => retry.or(sync),
            };
            let woken = crate::idle::sleep(
                &waiter,
                &mut self.control,
                &mut self.head,
                &mut head_open,
                retry_at,
            );
            let keep_going = match woken {
                crate::idle::Woken::Control(control) => self.apply(control),
                crate::idle::Woken::Orphaned => false,
                crate::idle::Woken::Work => true,
            };
            if !keep_going {
                return;
            }
        }
    }

    /// Moves to the upcaster chain in force if it was swapped: the next batch of each lane
    /// goes through the new chain (a batch read ahead under the old one's relevance is read
    /// again). What the read models already hold came through the old chain: the swap asks
    /// each affected projection to rebuild ([`Control::Purge`]).
    fn refresh_upcasters(&mut self) {
        if !self.upcasting.refresh() {
            return;
        }
        for lane in [Some(&mut self.active), self.shadow.as_mut()]
            .into_iter()
            .flatten()
        {
            lane.relevance = self.upcasting.relevance(&lane.plugin.info().handles);
            lane.ahead = None;
        }
        tracing::info!(projection = %self.config.name, "upcaster chain swapped; later batches go through the new one");
    }

    /// Applies one control message; false to stop.
    fn apply(&mut self, control: Control) -> bool {
        // A rebuild asked for after an upcaster swap must run through the new chain.
        self.refresh_upcasters();
        match control {
            Control::Stop => return false,
            Control::Pause => self.paused = true,
            Control::Resume => {
                self.paused = false;
                self.active.clear_failure();
                if let Some(shadow) = &mut self.shadow {
                    shadow.clear_failure();
                }
            }
            Control::Rebuild { ack } => {
                let plugin = self.active.plugin.clone();
                let result = self.start_shadow(plugin, None);
                self.answer(ack, result);
            }
            Control::Purge { ack } => {
                let plugin = match &self.shadow {
                    Some(shadow) => shadow.plugin.clone(),
                    None => self.active.plugin.clone(),
                };
                let result = self.start_shadow(plugin, None);
                self.answer(ack, result);
            }
            Control::Skip {
                position,
                reason,
                ack,
            } => {
                let result = self.skip(position, &reason);
                let _ = ack.send(result);
            }
            Control::AbortRebuild => {
                if let Err(error) = self.drop_shadow() {
                    self.last_error = Some(error.to_string());
                }
            }
            Control::Swap {
                plugin,
                bytes,
                mode,
                ack,
            } => {
                let result = self.swap(plugin, bytes, mode);
                if let Err(error) = &result {
                    self.last_error = Some(format!("swap failed: {error}"));
                }
                self.answer(ack, result);
            }
        }
        true
    }

    /// Answers a caller once the status shows what was done: whoever gets the answer and then
    /// asks for the status sees the rebuild it started.
    fn answer<T>(&mut self, ack: Sender<T>, result: T) {
        let head = *self.head.borrow();
        self.publish(head);
        let _ = ack.send(result);
    }

    /// Feeds one batch to each lane that is behind; switches a caught-up shadow. Returns
    /// whether anything happened.
    fn work(&mut self, head: u64) -> bool {
        let now = Instant::now();
        let mut worked = false;
        if self.active.runnable(now) && self.active.checkpoint < head {
            let stand_in = placeholder(&self.active);
            let mut lane = std::mem::replace(&mut self.active, stand_in);
            self.step(&mut lane, head);
            self.active = lane;
            worked = true;
        }
        if let Some(mut shadow) = self.shadow.take() {
            if shadow.runnable(now) && shadow.checkpoint < head {
                self.step(&mut shadow, head);
                self.shadow = Some(shadow);
                worked = true;
            } else if shadow.failed.is_none() && shadow.checkpoint >= head {
                self.shadow = Some(shadow);
                if let Err(error) = self.switch() {
                    self.last_error = Some(format!("switch failed: {error}"));
                    if let Some(shadow) = &mut self.shadow {
                        shadow.retry_at = Some(now + self.config.backoff);
                    }
                }
                worked = true;
            } else {
                self.shadow = Some(shadow);
            }
        }
        worked
    }

    /// After `views.redb` was reopened (an I/O error), it holds its last durable commit: the
    /// lanes go on from the checkpoints it holds, not from those of commits it lost. `lent`:
    /// the lane being stepped (out of `self` meanwhile). Returns whether it was reopened.
    fn reload_if_views_reopened(&mut self, mut lent: Option<&mut Lane>) -> bool {
        let generation = self.views.generation();
        if generation == self.views_generation {
            return false;
        }
        let reloaded = self.views.db().map_err(redb::Error::from).and_then(|db| {
            for lane in [
                Some(&mut self.active),
                self.shadow.as_mut(),
                lent.as_deref_mut(),
            ]
            .into_iter()
            .flatten()
            {
                lane.checkpoint = schema::checkpoint(&db, &lane.namespace)?;
                lane.ahead = None;
                lane.bound = None;
                lane.careful_until = 0;
            }
            Ok(())
        });
        match reloaded {
            Ok(()) => {
                tracing::info!(projection = %self.config.name, "views.redb was reopened; going on from its checkpoint");
                self.views_generation = generation;
                self.unsynced = false;
            }
            Err(error) => {
                // Not fed until the checkpoints are read again (at the next turn of the loop).
                let retry_at = Instant::now() + self.config.backoff;
                for lane in [Some(&mut self.active), self.shadow.as_mut(), lent]
                    .into_iter()
                    .flatten()
                {
                    lane.retry_at = Some(retry_at);
                }
                self.stalled = Some(format!("reading the checkpoint: {error}"));
            }
        }
        true
    }

    /// A durable commit just made every earlier one durable too.
    fn synced(&mut self) {
        self.last_durable = Instant::now();
        self.unsynced = false;
        self.stalled = None;
    }

    /// Makes the commits made without waiting for the disk durable (an empty durable commit
    /// carries them).
    fn sync(&mut self) {
        if !self.unsynced {
            return;
        }
        let txn = self.views.begin_write();
        if self.reload_if_views_reopened(None) {
            // The commits to make durable were lost with the failed file: the lanes redo them.
            return;
        }
        let result = (|| -> Result<(), redb::Error> {
            let mut txn = txn.map_err(redb_error)?;
            txn.set_durability(redb::Durability::Immediate)
                .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
            txn.commit().map_err(redb_error)
        })();
        match result {
            Ok(()) => self.synced(),
            Err(error) => {
                let message = format!("making the last commits durable: {error}");
                tracing::warn!(projection = %self.config.name, "{message}");
                // Tried again after DURABLE_EVERY; views.redb reopens itself on the way, and
                // the lanes go on from what it holds.
                self.last_durable = Instant::now();
                self.stalled = Some(message.clone());
                self.last_error = Some(message);
            }
        }
    }

    /// Publishes the status for callers.
    fn publish(&mut self, head: u64) {
        let now = Instant::now();
        self.samples.push_back((now, self.processed));
        while self.samples.len() > 2
            && self
                .samples
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > Duration::from_secs(3))
        {
            self.samples.pop_front();
        }
        let events_per_sec = match (self.samples.front(), self.samples.back()) {
            (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => {
                (n1 - n0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        };
        let state = if self.paused {
            ProjectionState::Paused
        } else if self.stalled.is_some() {
            ProjectionState::Failed
        } else if self.shadow.is_some() {
            ProjectionState::Rebuilding
        } else if self.active.failed.is_some() {
            ProjectionState::Failed
        } else {
            ProjectionState::Running
        };
        let dead_letters = if self.config.dead_letter {
            self.views
                .db()
                .ok()
                .and_then(|db| schema::dead_letters(&db, &self.active.namespace).ok())
                .map_or(0, |l| l.len() as u64)
        } else {
            0
        };
        let mut status = self.shared.status.lock().expect("not poisoned");
        let last_error = self.last_error.clone().or(status.last_error.take());
        *status = ProjectionStatus {
            name: self.shared.name.clone(),
            state,
            position: self.active.checkpoint,
            head,
            lag: head.saturating_sub(self.active.checkpoint),
            events_per_sec,
            last_error,
            active: self.active.status(head),
            rebuild: self.shadow.as_ref().map(|s| s.status(head)),
            dead_letters,
            failed_batches: self.failed_batches,
        };
        self.last_error = status.last_error.clone();
    }
}
