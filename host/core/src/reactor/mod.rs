//! Reactors: plugins that turn events into commands, events and timers (process managers,
//! sagas, policies), exactly once.
//!
//! Each reactor has a runner thread (`runner`) that follows `$all` from its checkpoint like a
//! projection, hands the plugin the events it handles and the outcomes of its own intents, and
//! carries the intents out (`effects`) before the checkpoint moves: commands under idempotency
//! keys derived from the reactor, the causing event and the intent's index; appends and the
//! records of outcomes and timers under derived event ids. What came of each command goes to
//! the reactor's stream `$reactor-{name}` as `CommandAccepted` or `CommandRejected`, and a due
//! timer as `TimerFired` (`timers`): the reactor's decisions are driven by recorded facts, so a
//! replay sees what the live reactor saw, never a clock.
//!
//! A new reactor starts at the head of the log (it never acts on history unless configured to
//! start at the beginning); a new version (a swap) goes on from the checkpoint, or from the
//! head or a chosen position.

mod crash_hook;
pub mod dry_run;
mod effects;
mod runner;
mod timers;
mod types;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::aggregate::Aggregates;
use crate::projection::read_model::SnapshotModel;
use crate::upcast::UpcasterChain;
use crate::views::Views;
use eshost_runtime::ReactorPlugin;
use eshost_store::EventStore;

pub use effects::outcome_stream;
pub use types::{ReactorConfig, ReactorError, ReactorState, ReactorStatus, StartAt};

use runner::{Control, Runner, Shared};

struct Handle {
    shared: Arc<Shared>,
    control: mpsc::UnboundedSender<Control>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Inner {
    store: Arc<dyn EventStore>,
    views: Views,
    aggregates: Aggregates,
    upcasters: UpcasterChain,
    reactors: Mutex<HashMap<String, Handle>>,
}

/// The running reactors. Cheap to clone.
#[derive(Clone)]
pub struct Reactors {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Reactors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactors")
            .field("names", &self.names())
            .finish_non_exhaustive()
    }
}

impl Reactors {
    /// No reactors yet, over `store` and `views`, sending commands through `aggregates` and
    /// upcasting what they read through `upcasters`.
    pub fn new(
        store: Arc<dyn EventStore>,
        views: Views,
        aggregates: Aggregates,
        upcasters: UpcasterChain,
    ) -> Reactors {
        Reactors {
            inner: Arc::new(Inner {
                store,
                views,
                aggregates,
                upcasters,
                reactors: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Starts the reactor `config.name` with `plugin`.
    pub fn add(&self, config: ReactorConfig, plugin: ReactorPlugin) -> Result<(), ReactorError> {
        let name = config.name.clone();
        check_plugin(&name, &plugin)?;
        let mut reactors = self.lock();
        if reactors.contains_key(&name) {
            return Err(ReactorError::Duplicate(name));
        }
        let (control, inbox) = mpsc::unbounded_channel();
        let (runner, shared) = Runner::open(
            config,
            self.inner.store.clone(),
            self.inner.views.clone(),
            self.inner.aggregates.clone(),
            &self.inner.upcasters,
            plugin,
            inbox,
        )?;
        let thread = std::thread::Builder::new()
            .name(format!("reactor-{name}"))
            .spawn(move || runner.run())
            .map_err(|e| ReactorError::Views {
                name: name.clone(),
                message: format!("cannot start its thread: {e}"),
            })?;
        reactors.insert(
            name,
            Handle {
                shared,
                control,
                thread: Some(thread),
            },
        );
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Handle>> {
        self.inner
            .reactors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The reactors' names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().keys().cloned().collect();
        names.sort();
        names
    }

    /// The status of `name`.
    pub fn status(&self, name: &str) -> Result<ReactorStatus, ReactorError> {
        let reactors = self.lock();
        let handle = reactors
            .get(name)
            .ok_or_else(|| ReactorError::Unknown(name.to_owned()))?;
        Ok(handle.shared.status.lock().expect("not poisoned").clone())
    }

    /// Every reactor's status, by name.
    pub fn statuses(&self) -> Vec<ReactorStatus> {
        self.names()
            .iter()
            .filter_map(|name| self.status(name).ok())
            .collect()
    }

    /// The plugin `name` runs.
    pub fn plugin(&self, name: &str) -> Option<ReactorPlugin> {
        let reactors = self.lock();
        let handle = reactors.get(name)?;
        Some(handle.shared.plugin.lock().expect("not poisoned").clone())
    }

    fn send(&self, name: &str, control: Control) -> Result<(), ReactorError> {
        let reactors = self.lock();
        let handle = reactors
            .get(name)
            .ok_or_else(|| ReactorError::Unknown(name.to_owned()))?;
        handle
            .control
            .send(control)
            .map_err(|_| ReactorError::Stopped(name.to_owned()))
    }

    /// Sends `name` the control `make` builds and waits until the runner acted on it (after
    /// the batch in hand); returns the status it published then. Blocking.
    fn ask(
        &self,
        name: &str,
        make: impl FnOnce(runner::Ack) -> Control,
    ) -> Result<ReactorStatus, ReactorError> {
        let (ack, answer) = std::sync::mpsc::channel();
        self.send(name, make(ack))?;
        answer
            .recv()
            .map_err(|_| ReactorError::Stopped(name.to_owned()))??;
        self.status(name)
    }

    /// Pauses `name` after the batch in hand; returns its status then. Blocking.
    pub fn pause(&self, name: &str) -> Result<ReactorStatus, ReactorError> {
        self.ask(name, Control::Pause)
    }

    /// Resumes `name`; a reactor stopped at a failing event tries it again. Returns its status
    /// once resumed. Blocking.
    pub fn resume(&self, name: &str) -> Result<ReactorStatus, ReactorError> {
        self.ask(name, Control::Resume)
    }

    /// Runs `plugin` as the new version of `name`, from `from` (the checkpoint, the head, or a
    /// chosen position). The reactor's read model and pending timers carry over. Blocking.
    pub fn swap(
        &self,
        name: &str,
        plugin: ReactorPlugin,
        from: StartAt,
    ) -> Result<ReactorStatus, ReactorError> {
        check_plugin(name, &plugin)?;
        self.ask(name, |ack| Control::Swap { plugin, from, ack })
    }

    /// Answers `query` with `args` (JSON) over the committed read model of `name`. Blocking.
    pub fn query(&self, name: &str, query: &str, args: &str) -> Result<String, ReactorError> {
        let plugin = self
            .plugin(name)
            .ok_or_else(|| ReactorError::Unknown(name.to_owned()))?;
        let snapshot =
            runner::snapshot(&self.inner.views, &runner::namespace(name)).map_err(|e| {
                ReactorError::Views {
                    name: name.to_owned(),
                    message: e.to_string(),
                }
            })?;
        let mut instance = plugin.instantiate(SnapshotModel(snapshot))?;
        Ok(instance.query(query, args)?)
    }

    /// Waits until `name` has carried out everything up to the head as it is now, or is
    /// failed or paused, for at most `timeout`. Returns the last status and whether it got
    /// there.
    pub fn wait_caught_up(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<(ReactorStatus, bool), ReactorError> {
        let target = self.inner.store.head();
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(name)?;
            if status.checkpoint >= target && status.state == ReactorState::Running {
                return Ok((status, true));
            }
            if status.state != ReactorState::Running || Instant::now() >= deadline {
                return Ok((status, false));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops every reactor after its batch in hand and waits for their threads. Blocking.
    pub fn shutdown(&self) {
        let handles: Vec<Handle> = self.lock().drain().map(|(_, handle)| handle).collect();
        for handle in &handles {
            let _ = handle.control.send(Control::Stop);
        }
        for mut handle in handles {
            if let Some(thread) = handle.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

fn check_plugin(name: &str, plugin: &ReactorPlugin) -> Result<(), ReactorError> {
    if plugin.info().name != name {
        return Err(ReactorError::BadPlugin(format!(
            "the component describes itself as {:?}, not {name:?}",
            plugin.info().name
        )));
    }
    Ok(())
}
