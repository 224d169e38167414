//! One reactor's runner: a thread that reads `$all` from the checkpoint, hands the plugin the
//! events it handles (and the outcomes and timers of its own stream), carries out the intents
//! (`effects`), and only then commits the read model's writes, the timer changes and the
//! checkpoint in one `views.redb` transaction. A crash anywhere redelivers the batch, and
//! carrying it out again changes nothing.

use std::ops::ControlFlow;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::crash_hook::CrashHook;
use super::effects::{self, COMMAND_ACCEPTED, COMMAND_REJECTED, TIMER_FIRED, outcome_stream};
use super::timers::{TimerChange, Timers, change_of};
use super::{ReactorConfig, ReactorError, ReactorState, ReactorStatus, StartAt};
use crate::aggregate::Aggregates;
use crate::projection::DeadLetter;
use crate::projection::read_model::{BatchModel, Snapshot};
use crate::projection::schema;
use crate::upcast::{Relevance, UpcasterChain, Upcasting};
use crate::views::Views;
use eshost_runtime::{Event, ProjectionError, ReactorInstance, ReactorPlugin};
use eshost_store::{AllRead, Direction, EventStore, StreamRead, Until, now_ms};

/// How long non-durable commits may pile up (a crash redelivers at most this much, which
/// changes nothing).
const DURABLE_EVERY: Duration = Duration::from_millis(500);

/// The answer to a control message, sent once the runner acted on it and published its new
/// status.
pub(crate) type Ack = Sender<Result<(), ReactorError>>;

/// What callers ask of a runner.
pub(crate) enum Control {
    Pause(Ack),
    /// Also retries a reactor stopped at a failing event.
    Resume(Ack),
    Swap {
        plugin: ReactorPlugin,
        from: StartAt,
        ack: Ack,
    },
    Stop,
}

/// What the runner shares with callers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) status: Mutex<ReactorStatus>,
    pub(crate) plugin: Mutex<ReactorPlugin>,
}

/// The namespace of a reactor's read model and checkpoint in `views.redb`.
pub(crate) fn namespace(name: &str) -> String {
    format!("reactor/{name}")
}

pub(crate) struct Runner {
    config: ReactorConfig,
    store: Arc<dyn EventStore>,
    views: Views,
    aggregates: Aggregates,
    upcasting: Upcasting,
    plugin: ReactorPlugin,
    relevance: Arc<Relevance>,
    instance: Option<ReactorInstance<BatchModel>>,
    namespace: String,
    own_stream: String,
    checkpoint: u64,
    /// Until the checkpoint passes this, batches hold one event (narrowing down a failure).
    careful_until: u64,
    attempts: u32,
    retry_at: Option<Instant>,
    /// Stopped at (position, why).
    failed: Option<(u64, String)>,
    paused: bool,
    last_error: Option<String>,
    /// A commit failed: reread the checkpoint and timers before the next batch.
    reload: bool,
    timers: Timers,
    /// The test hook that aborts mid-batch (see `crash_hook`); unarmed in production.
    crash_hook: CrashHook,
    commands_sent: u64,
    events_appended: u64,
    dead_letters: u64,
    last_durable: Instant,
    unsynced: bool,
    shared: Arc<Shared>,
    control: mpsc::UnboundedReceiver<Control>,
    head: watch::Receiver<u64>,
}

fn views_error(name: &str) -> impl Fn(redb::Error) -> ReactorError + '_ {
    move |e| ReactorError::Views {
        name: name.to_owned(),
        message: e.to_string(),
    }
}

/// The recorded checkpoint of `namespace`, `None` when it never started.
fn recorded_checkpoint(db: &redb::Database, namespace: &str) -> Result<Option<u64>, redb::Error> {
    use redb::ReadableDatabase;
    let txn = db.begin_read()?;
    let table = match txn.open_table(schema::CHECKPOINTS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    Ok(table.get(namespace)?.map(|v| v.value()))
}

fn count_dead_letters(db: &redb::Database, namespace: &str) -> Result<u64, redb::Error> {
    use redb::ReadableDatabase;
    let txn = db.begin_read()?;
    let table = match txn.open_table(schema::DEAD_LETTERS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(error) => return Err(error.into()),
    };
    Ok(table.range((namespace, 0)..=(namespace, u64::MAX))?.count() as u64)
}

impl Runner {
    pub(crate) fn open(
        config: ReactorConfig,
        store: Arc<dyn EventStore>,
        views: Views,
        aggregates: Aggregates,
        upcasters: &UpcasterChain,
        plugin: ReactorPlugin,
        control: mpsc::UnboundedReceiver<Control>,
    ) -> Result<(Runner, Arc<Shared>), ReactorError> {
        let name = config.name.clone();
        let err = views_error(&name);
        let namespace = namespace(&name);
        let db = views.db().map_err(|e| err(e.into()))?;
        let upcasting = upcasters.instantiate();
        let relevance = upcasting.relevance(&plugin.info().handles);
        let status = ReactorStatus {
            name: name.clone(),
            state: ReactorState::Running,
            checkpoint: 0,
            head: store.head(),
            version: plugin.info().version.clone(),
            content_hash: plugin.info().content_hash.clone(),
            commands_sent: 0,
            events_appended: 0,
            timers_pending: 0,
            dead_letters: 0,
            failed_at: None,
            last_error: None,
        };
        let shared = Arc::new(Shared {
            status: Mutex::new(status),
            plugin: Mutex::new(plugin.clone()),
        });
        let mut runner = Runner {
            own_stream: outcome_stream(&name),
            store: store.clone(),
            views,
            aggregates,
            upcasting,
            plugin,
            relevance,
            instance: None,
            namespace: namespace.clone(),
            checkpoint: 0,
            careful_until: 0,
            attempts: 0,
            retry_at: None,
            failed: None,
            paused: false,
            last_error: None,
            reload: false,
            timers: Timers::load(&db, &name).map_err(&err)?,
            crash_hook: CrashHook::from_env(&name),
            commands_sent: 0,
            events_appended: 0,
            dead_letters: count_dead_letters(&db, &namespace).map_err(&err)?,
            last_durable: Instant::now(),
            unsynced: false,
            shared: shared.clone(),
            control,
            head: store.watch_head(),
            config,
        };
        match recorded_checkpoint(&db, &namespace).map_err(&err)? {
            Some(checkpoint) => runner.checkpoint = checkpoint,
            None => {
                drop(db);
                let start = runner.start_position(runner.config.start);
                runner.move_checkpoint(start).map_err(&err)?;
            }
        }
        runner.publish(store.head());
        Ok((runner, shared))
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    fn start_position(&self, start: StartAt) -> u64 {
        match start {
            StartAt::Head => self.store.head(),
            StartAt::Beginning => 0,
            StartAt::Checkpoint => self.checkpoint,
            StartAt::After(position) => position.min(self.store.head()),
        }
    }

    /// Runs until stopped, then makes the last commit durable.
    pub(crate) fn run(mut self) {
        self.follow();
        if self.unsynced {
            self.sync();
        }
    }

    fn follow(&mut self) {
        let waiter = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(reactor = %self.name(), "cannot start the runner: {error}");
                return;
            }
        };
        let mut head_open = true;
        loop {
            if self.upcasting.refresh() {
                self.relevance = self.upcasting.relevance(&self.plugin.info().handles);
            }
            while let Ok(control) = self.control.try_recv() {
                if !self.apply(control) {
                    return;
                }
            }
            if self.unsynced && self.last_durable.elapsed() >= DURABLE_EVERY {
                self.sync();
            }
            let head = *self.head.borrow_and_update();
            let mut worked = false;
            if !self.paused && self.failed.is_none() {
                worked |= self.fire_due_timers();
                let due = self.retry_at.is_none_or(|at| Instant::now() >= at);
                if due && self.checkpoint < head {
                    self.step(head, &waiter);
                    worked = true;
                }
            }
            self.publish(head);
            if worked {
                continue;
            }
            let mut wake = [
                self.retry_at,
                self.unsynced.then(|| self.last_durable + DURABLE_EVERY),
                self.timers.next_due().map(|due| {
                    let wait = due.saturating_sub(now_ms());
                    Instant::now() + Duration::from_millis(wait)
                }),
            ]
            .into_iter()
            .flatten()
            .min();
            if self.paused || self.failed.is_some() {
                wake = None;
            }
            let woken = crate::idle::sleep(
                &waiter,
                &mut self.control,
                &mut self.head,
                &mut head_open,
                wake,
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

    /// Applies a control message; false to stop.
    fn apply(&mut self, control: Control) -> bool {
        let (done, ack) = match control {
            Control::Pause(ack) => {
                self.paused = true;
                (Ok(()), ack)
            }
            Control::Resume(ack) => {
                self.paused = false;
                self.failed = None;
                self.attempts = 0;
                self.retry_at = None;
                (Ok(()), ack)
            }
            Control::Swap { plugin, from, ack } => (self.swap(plugin, from), ack),
            Control::Stop => return false,
        };
        // Before the answer: whoever asked reads the status this made.
        self.publish(*self.head.borrow());
        let _ = ack.send(done);
        true
    }

    fn swap(&mut self, plugin: ReactorPlugin, from: StartAt) -> Result<(), ReactorError> {
        let position = self.start_position(from);
        if position != self.checkpoint {
            self.move_checkpoint(position)
                .map_err(views_error(&self.config.name))?;
        }
        self.relevance = self.upcasting.relevance(&plugin.info().handles);
        *self.shared.plugin.lock().expect("not poisoned") = plugin.clone();
        tracing::info!(reactor = %self.name(), version = %plugin.info().version, from = position, "reactor swapped");
        self.plugin = plugin;
        self.instance = None;
        self.failed = None;
        self.attempts = 0;
        self.retry_at = None;
        self.careful_until = 0;
        Ok(())
    }

    /// Moves the checkpoint to `position` (a start, or a swap from elsewhere), with the
    /// pending timers as the reactor's stream says they are at that position.
    fn move_checkpoint(&mut self, position: u64) -> Result<(), redb::Error> {
        let mut changes = Vec::new();
        let read = StreamRead::forward();
        self.store
            .visit_stream(&self.own_stream, &read, &mut |event| {
                if event.position > position {
                    return ControlFlow::Break(());
                }
                let event = crate::upcast::plugin_event(&event, &*self.store);
                changes.extend(change_of(&event));
                ControlFlow::Continue(())
            })
            .map_err(|e| redb::Error::Corrupted(format!("reading {}: {e}", self.own_stream)))?;
        let txn = self.views.begin_write()?;
        Timers::clear(&txn, self.name())?;
        Timers::write(&txn, self.name(), &changes)?;
        txn.open_table(schema::CHECKPOINTS)?
            .insert(self.namespace.as_str(), position)?;
        txn.commit()?;
        self.synced();
        self.timers.reset();
        self.timers.apply(&changes);
        self.checkpoint = position;
        Ok(())
    }

    /// Appends `TimerFired` for every due timer. True if it fired one.
    fn fire_due_timers(&mut self) -> bool {
        let due = self.timers.due(now_ms());
        let mut fired = false;
        for (timer, due_at, payload) in due {
            match effects::fire_timer(&*self.store, &self.config.name, &timer, due_at, &payload) {
                Ok(()) => {
                    self.timers.mark_fired(&timer);
                    fired = true;
                }
                Err(error) => {
                    tracing::warn!(reactor = %self.config.name, %timer, "firing a timer: {error}");
                    self.last_error = Some(format!("firing timer {timer}: {error}"));
                    break;
                }
            }
        }
        fired
    }

    /// Reads, handles, carries out and commits one batch, or deals with its failure.
    fn step(&mut self, head: u64, waiter: &tokio::runtime::Runtime) {
        if self.reload {
            if let Err(error) = self.reload_state() {
                self.transient(format!("rereading the checkpoint: {error}"));
                return;
            }
            if self.checkpoint >= head {
                return;
            }
        }
        let limit = if self.checkpoint < self.careful_until {
            1
        } else {
            self.config.batch.max(1)
        };
        let (mut events, changes, last) = match self.read(head, limit) {
            Ok(read) => read,
            Err(error) => {
                self.transient(format!("reading the log: {error}"));
                return;
            }
        };
        for event in events.iter_mut() {
            if event.stream_id == self.own_stream {
                continue;
            }
            if let Err(error) = self.upcasting.upcast(event) {
                let position = event.position;
                self.failed_batch(
                    &events,
                    &changes,
                    Some(position),
                    format!("upcasting: {error}"),
                );
                return;
            }
        }
        let own = self.own_stream.clone();
        let relevance = self.relevance.clone();
        events.retain(|e| e.stream_id == own || relevance.is_handled(&e.event_type));
        if events.is_empty() {
            self.commit(Default::default(), &changes, last);
            return;
        }
        let instance = match &mut self.instance {
            Some(instance) => instance,
            None => match self.plugin.instantiate(BatchModel::default()) {
                Ok(instance) => self.instance.insert(instance),
                Err(error) => {
                    self.failed_batch(&events, &changes, None, error.to_string());
                    return;
                }
            },
        };
        let snapshot = match snapshot(&self.views, &self.namespace) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                self.transient(format!("reading the read model: {error}"));
                return;
            }
        };
        *instance.read_model_mut() = BatchModel::new(snapshot);
        let result = instance.handle(&events);
        let writes = std::mem::take(instance.read_model_mut()).writes;
        let intents = match result {
            Ok(intents) => intents,
            Err(error) => {
                let position = match &error {
                    ProjectionError::Event { position, .. } => Some(*position),
                    _ => None,
                };
                self.failed_batch(&events, &changes, position, error.to_string());
                return;
            }
        };
        let done = effects::carry_out(
            &self.config.name,
            &*self.store,
            &self.aggregates,
            waiter,
            &events,
            intents,
            &mut self.crash_hook,
        );
        match done {
            Ok(done) => {
                self.commands_sent += done.commands;
                self.events_appended += done.appended;
                self.commit(writes, &changes, last);
            }
            Err(message) => self.failed_batch(&events, &changes, None, message),
        }
    }

    fn read(&self, head: u64, limit: usize) -> Result<Batch, eshost_store::ReadError> {
        read_batch(
            &*self.store,
            &self.own_stream,
            &self.relevance,
            self.checkpoint,
            head,
            limit,
        )
    }

    fn reload_state(&mut self) -> Result<(), redb::Error> {
        let db = self.views.db()?;
        self.checkpoint = recorded_checkpoint(&db, &self.namespace)?.unwrap_or(self.checkpoint);
        self.timers = Timers::load(&db, &self.config.name)?;
        self.reload = false;
        Ok(())
    }

    /// Commits a batch's read-model writes, timer changes and checkpoint in one transaction.
    fn commit(
        &mut self,
        writes: std::collections::BTreeMap<String, Option<String>>,
        changes: &[TimerChange],
        last: u64,
    ) {
        let durable = self.last_durable.elapsed() >= DURABLE_EVERY;
        let result = (|| -> Result<(), redb::Error> {
            let mut txn = self.views.begin_write()?;
            if !durable {
                txn.set_durability(redb::Durability::None)
                    .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
            }
            schema::write_batch(&txn, &self.namespace, &writes, last)?;
            Timers::write(&txn, &self.config.name, changes)?;
            txn.commit()?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                if durable {
                    self.synced();
                } else {
                    self.unsynced = true;
                }
                self.timers.apply(changes);
                self.checkpoint = last;
                self.attempts = 0;
                self.retry_at = None;
            }
            Err(error) => {
                self.reload = true;
                self.transient(format!("committing: {error}"));
            }
        }
    }

    /// Makes the commits so far durable (an empty durable transaction).
    fn sync(&mut self) {
        let result = (|| -> Result<(), redb::Error> {
            let txn = self.views.begin_write()?;
            txn.commit()?;
            Ok(())
        })();
        match result {
            Ok(()) => self.synced(),
            Err(error) => tracing::warn!(reactor = %self.config.name, "syncing: {error}"),
        }
    }

    fn synced(&mut self) {
        self.last_durable = Instant::now();
        self.unsynced = false;
    }

    /// A failure that is not the events' fault (I/O): retry after the backoff.
    fn transient(&mut self, message: String) {
        tracing::warn!(reactor = %self.config.name, "{message}");
        self.attempts = self.attempts.saturating_add(1);
        self.retry_at = Some(Instant::now() + self.backoff());
        self.last_error = Some(message);
    }

    fn backoff(&self) -> Duration {
        let factor = 1u32 << self.attempts.saturating_sub(1).min(16);
        self.config
            .backoff
            .saturating_mul(factor)
            .min(self.config.max_backoff)
    }

    /// A batch failed: narrow it down to one event, retry that with backoff, and after the last
    /// attempt stop at it or park it.
    fn failed_batch(
        &mut self,
        events: &[Event],
        changes: &[TimerChange],
        position: Option<u64>,
        message: String,
    ) {
        self.last_error = Some(message.clone());
        if events.len() > 1 {
            let last = events.last().map_or(0, |e| e.position);
            self.careful_until = position.unwrap_or(last);
            return;
        }
        let Some(event) = events.first() else {
            return;
        };
        self.attempts += 1;
        tracing::warn!(
            reactor = %self.config.name,
            position = event.position,
            attempt = self.attempts,
            "event failed: {message}"
        );
        if self.attempts < self.config.attempts.max(1) {
            self.retry_at = Some(Instant::now() + self.backoff());
            return;
        }
        if !self.config.dead_letter {
            self.failed = Some((event.position, message));
            self.retry_at = None;
            return;
        }
        let letter = DeadLetter {
            position: event.position,
            stream_id: event.stream_id.clone(),
            event_type: event.event_type.clone(),
            reason: message,
            attempts: self.attempts,
            parked_at: now_ms(),
        };
        match self.park(&letter, changes) {
            Ok(()) => {
                self.timers.apply(changes);
                self.checkpoint = event.position;
                self.dead_letters += 1;
                self.attempts = 0;
                self.retry_at = None;
            }
            Err(error) => self.transient(format!("parking: {error}")),
        }
    }

    /// Parks `letter` and moves the checkpoint to it, in one transaction.
    fn park(&mut self, letter: &DeadLetter, changes: &[TimerChange]) -> Result<(), redb::Error> {
        let bytes = serde_json::to_vec(letter).expect("a dead letter serializes");
        let txn = self.views.begin_write()?;
        txn.open_table(schema::DEAD_LETTERS)?
            .insert((self.namespace.as_str(), letter.position), bytes.as_slice())?;
        txn.open_table(schema::CHECKPOINTS)?
            .insert(self.namespace.as_str(), letter.position)?;
        Timers::write(&txn, &self.config.name, changes)?;
        txn.commit()?;
        self.synced();
        Ok(())
    }

    fn publish(&self, head: u64) {
        let state = if self.failed.is_some() {
            ReactorState::Failed
        } else if self.paused {
            ReactorState::Paused
        } else {
            ReactorState::Running
        };
        let info = self.plugin.info();
        let status = ReactorStatus {
            name: self.config.name.clone(),
            state,
            checkpoint: self.checkpoint,
            head,
            version: info.version.clone(),
            content_hash: info.content_hash.clone(),
            commands_sent: self.commands_sent,
            events_appended: self.events_appended,
            timers_pending: self.timers.len(),
            dead_letters: self.dead_letters,
            failed_at: self.failed.as_ref().map(|(position, _)| *position),
            last_error: self
                .failed
                .as_ref()
                .map(|(_, message)| message.clone())
                .or_else(|| self.last_error.clone()),
        };
        *self.shared.status.lock().expect("not poisoned") = status;
    }
}

/// A batch read for a reactor: the events to deliver, the timer changes its own stream
/// records, and the position the read got to.
pub(crate) type Batch = (Vec<Event>, Vec<TimerChange>, u64);

/// The next events after `checkpoint`, up to `head`: those of the reactor's own stream
/// (`own_stream`) it receives and those of other streams it may handle (once upcast), up to
/// `limit` of them, through a bounded number of positions.
pub(crate) fn read_batch(
    store: &dyn EventStore,
    own_stream: &str,
    relevance: &Relevance,
    checkpoint: u64,
    head: u64,
    limit: usize,
) -> Result<Batch, eshost_store::ReadError> {
    let scan_limit = limit.saturating_mul(16).max(10_000);
    let mut events = Vec::new();
    let mut changes = Vec::new();
    let mut last = checkpoint;
    let mut scanned = 0usize;
    let read = AllRead {
        from_position: checkpoint + 1,
        direction: Direction::Forward,
        limit: usize::MAX,
        event_types: Vec::new(),
        until: Some(Until::Position(head)),
    };
    store.visit_all(&read, &mut |event| {
        last = event.position;
        scanned += 1;
        if event.stream_id == own_stream {
            let event = crate::upcast::plugin_event(&event, store);
            changes.extend(change_of(&event));
            if matches!(
                event.event_type.as_str(),
                COMMAND_ACCEPTED | COMMAND_REJECTED | TIMER_FIRED
            ) {
                events.push(event);
            }
        } else if !event.stream_id.starts_with('$')
            && relevance.is_relevant(event.event_type, event.schema_version)
        {
            events.push(crate::upcast::plugin_event(&event, store));
        }
        if events.len() >= limit || scanned >= scan_limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    Ok((events, changes, last))
}

/// The committed read model of `namespace`, as of one read transaction.
pub(crate) fn snapshot(views: &Views, namespace: &str) -> Result<Snapshot, redb::Error> {
    let txn = views.begin_read().map_err(redb::Error::from)?;
    match txn.open_table(schema::data_table(namespace)) {
        Ok(table) => Ok(Snapshot::new(Some(table))),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(Snapshot::new(None)),
        Err(error) => Err(error.into()),
    }
}
