//! Building an aggregate's state: from its latest usable snapshot, else from scratch, then
//! the later events of its stream, upcast and applied in batches. The command workers, the
//! "as of" queries and the load benchmark all go through here.
//!
//! The aggregate sees only the events of its stream that it handles (WIT `handles`): others
//! (an audit note appended to the stream by hand, say) are not upcast or applied, yet still
//! count in the stream version the state covers.

use std::ops::ControlFlow;

use super::snapshot::Snapshots;
use crate::upcast::{Relevance, Upcasting, plugin_event};
use eshost_runtime::{AggregateInstance, ApplyError, Event, PluginError, UpcastError};
use eshost_store::{EventRef, EventStore, ReadError, StreamRead, Until};

/// Which state to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum At {
    /// After every committed event.
    Latest,
    /// After the event at this stream version (0: the initial state).
    Version(u64),
    /// After the last event recorded at or before this time, ms since the epoch.
    Time(u64),
}

/// Why a state could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The stream could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// An upcaster failed on an event of the stream.
    #[error(transparent)]
    Upcast(#[from] UpcastError),
    /// The aggregate could not apply an event of its own stream.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The aggregate plugin failed.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// Commands of another aggregate type wrote to this stream: the two types use the same
    /// id, and a stream belongs to one type.
    #[error(
        "the stream holds events of aggregate type {owner:?} (from version {version}): two \
         aggregate types use this id, and a stream belongs to the type whose commands wrote it; \
         give one of the types a `stream_prefix` in its config, or use ids that differ per type"
    )]
    ForeignStream {
        /// The type whose commands wrote the event.
        owner: String,
        /// The first such event's stream version.
        version: u64,
    },
}

/// Where a built state stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Built {
    /// The stream version the state covers (0: no events).
    pub version: u64,
    /// The position of the event at `version` (0: none).
    pub position: u64,
    /// When it was recorded (0: none).
    pub recorded_at: u64,
    /// The version of the snapshot the build started from, if one was used.
    pub snapshot_version: Option<u64>,
}

/// Loads aggregate `id` into `instance` as of `at`. Snapshots (when given) are used only if
/// they were made by this very plugin code and restore cleanly; otherwise the stream is
/// replayed from the start, and the reason is logged.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build(
    instance: &mut AggregateInstance,
    upcasting: &mut Upcasting,
    store: &dyn EventStore,
    snapshots: Option<&Snapshots>,
    aggregate_type: &str,
    id: &str,
    at: At,
    batch: usize,
) -> Result<Built, StateError> {
    let mut built = Built {
        version: 0,
        position: 0,
        recorded_at: 0,
        snapshot_version: None,
    };
    let restored = snapshots.is_some_and(|snapshots| {
        restore_snapshot(instance, snapshots, aggregate_type, id, at, &mut built)
    });
    if !restored {
        instance.new(id)?;
    }
    let mut read = StreamRead::forward();
    read.from_version = built.version + 1;
    match at {
        At::Latest => {}
        At::Version(version) => {
            if version <= built.version {
                return Ok(built);
            }
            read.limit = usize::try_from(version - built.version).unwrap_or(usize::MAX);
        }
        At::Time(time) => read.until = Some(Until::Time(time)),
    }
    let batch = batch.max(1);
    let relevance = upcasting.relevance_for(instance.info());
    let stream = Stream {
        store,
        id,
        aggregate_type,
        read: &read,
        relevance: &relevance,
        batch,
    };
    // A long history is read on a second thread while this one applies: reading and
    // decoding overlap with the plugin's work instead of adding to it.
    let remaining = match at {
        At::Version(version) => version - built.version,
        _ => store
            .stream_info(id)?
            .map_or(0, |info| info.version.saturating_sub(built.version)),
    };
    let last = if remaining > PIPELINE_AFTER_BATCHES * batch as u64 {
        read_beside(instance, upcasting, &stream)?
    } else {
        read_inline(instance, upcasting, &stream)?
    };
    if let Some((version, position, recorded_at)) = last {
        built.version = version;
        built.position = position;
        built.recorded_at = recorded_at;
    }
    Ok(built)
}

/// Histories longer than this many batches are read on a second thread.
const PIPELINE_AFTER_BATCHES: u64 = 4;

/// (version, position, recorded_at) of the last event read, if any.
type Last = Option<(u64, u64, u64)>;

/// The part of a stream to apply, and to whom.
struct Stream<'a> {
    store: &'a dyn EventStore,
    id: &'a str,
    /// Whose stream it must be.
    aggregate_type: &'a str,
    read: &'a StreamRead,
    /// Which events the aggregate sees; the others are read past.
    relevance: &'a Relevance,
    batch: usize,
}

fn read_inline(
    instance: &mut AggregateInstance,
    upcasting: &mut Upcasting,
    stream: &Stream<'_>,
) -> Result<Last, StateError> {
    let Stream {
        store,
        id,
        aggregate_type,
        read,
        relevance,
        batch,
    } = *stream;
    let mut events: Vec<Event> = Vec::with_capacity(batch.min(4096));
    let mut failure: Option<StateError> = None;
    let mut last = None;
    store.visit_stream(id, read, &mut |event| {
        last = Some((event.stream_version, event.position, event.recorded_at));
        if let Some(foreign) = foreign_stream(&event, aggregate_type) {
            failure = Some(foreign);
            return ControlFlow::Break(());
        }
        if !relevance.is_relevant(event.event_type, event.schema_version) {
            return ControlFlow::Continue(());
        }
        events.push(plugin_event(&event, store));
        if events.len() >= batch
            && let Err(error) = apply_relevant(instance, upcasting, relevance, &mut events)
        {
            failure = Some(error);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    if let Some(error) = failure {
        return Err(error);
    }
    apply_relevant(instance, upcasting, relevance, &mut events)?;
    Ok(last)
}

fn read_beside(
    instance: &mut AggregateInstance,
    upcasting: &mut Upcasting,
    stream: &Stream<'_>,
) -> Result<Last, StateError> {
    let Stream {
        store,
        id,
        aggregate_type,
        read,
        relevance,
        batch,
    } = *stream;
    std::thread::scope(|scope| {
        let (batches, received) = std::sync::mpsc::sync_channel::<Vec<Event>>(2);
        let reader = std::thread::Builder::new()
            .name("eshost-replay-read".into())
            .spawn_scoped(scope, move || {
                let mut events = Vec::with_capacity(batch);
                let mut last = None;
                let mut foreign = None;
                store.visit_stream(id, read, &mut |event| {
                    last = Some((event.stream_version, event.position, event.recorded_at));
                    if let Some(error) = foreign_stream(&event, aggregate_type) {
                        foreign = Some(error);
                        return ControlFlow::Break(());
                    }
                    if !relevance.is_relevant(event.event_type, event.schema_version) {
                        return ControlFlow::Continue(());
                    }
                    events.push(plugin_event(&event, store));
                    if events.len() >= batch {
                        let full = std::mem::replace(&mut events, Vec::with_capacity(batch));
                        // The applier stopped (it failed): stop reading.
                        if batches.send(full).is_err() {
                            return ControlFlow::Break(());
                        }
                    }
                    ControlFlow::Continue(())
                })?;
                if !events.is_empty() && foreign.is_none() {
                    let _ = batches.send(events);
                }
                Ok::<_, ReadError>((last, foreign))
            });
        let reader = match reader {
            Ok(reader) => reader,
            // No thread to be had: read inline instead.
            Err(_) => return read_inline(instance, upcasting, stream),
        };
        let mut failure = None;
        for mut events in received {
            if let Err(error) = apply_relevant(instance, upcasting, relevance, &mut events) {
                failure = Some(error);
                break;
            }
        }
        let (last, foreign) = reader.join().expect("the replay reader does not panic")?;
        match failure.or(foreign) {
            Some(error) => Err(error),
            None => Ok(last),
        }
    })
}

/// The host records the aggregate type of a command in each event it appends
/// (`aggregate_type` in the metadata); events appended directly carry none and belong to any
/// type. An event of another type ends the build.
pub(crate) fn foreign_stream(event: &EventRef<'_>, aggregate_type: &str) -> Option<StateError> {
    const KEY: &str = "\"aggregate_type\"";
    let metadata = event.metadata;
    let at = metadata.find(KEY)?;
    // The host writes it compact; parse only when it is not (a hand-made event).
    let compact = metadata[at + KEY.len()..]
        .strip_prefix(":\"")
        .and_then(|rest| rest.split_once('"'))
        .map(|(owner, _)| owner.to_owned());
    let owner = compact.or_else(|| {
        let value: serde_json::Value = serde_json::from_str(metadata).ok()?;
        value.get("aggregate_type")?.as_str().map(str::to_owned)
    })?;
    if owner == aggregate_type {
        return None;
    }
    Some(StateError::ForeignStream {
        owner,
        version: event.stream_version,
    })
}

/// Applies to `instance` the events of `events` it sees (those relevant to it, upcast, of a
/// type it handles), leaving the buffer empty. Any stored events of its stream may be given.
pub(crate) fn apply_batch(
    instance: &mut AggregateInstance,
    upcasting: &mut Upcasting,
    events: &mut Vec<Event>,
) -> Result<(), StateError> {
    if events.is_empty() {
        return Ok(());
    }
    let relevance = upcasting.relevance_for(instance.info());
    apply_relevant(instance, upcasting, &relevance, events)
}

/// [`apply_batch`] with the instance's relevance at hand.
fn apply_relevant(
    instance: &mut AggregateInstance,
    upcasting: &mut Upcasting,
    relevance: &Relevance,
    events: &mut Vec<Event>,
) -> Result<(), StateError> {
    upcasting
        .for_plugin(relevance, events)
        .map_err(|failure| failure.error)?;
    if !events.is_empty() {
        instance.apply(events)?;
        events.clear();
    }
    Ok(())
}

/// Restores the stored snapshot if it is usable for `at`; says why not otherwise.
fn restore_snapshot(
    instance: &mut AggregateInstance,
    snapshots: &Snapshots,
    aggregate_type: &str,
    id: &str,
    at: At,
    built: &mut Built,
) -> bool {
    let snapshot = match snapshots.get(aggregate_type, id) {
        Ok(Some(snapshot)) => snapshot,
        Ok(None) => return false,
        Err(error) => {
            tracing::warn!(aggregate_type, id, %error, "snapshot ignored; replaying the stream");
            return false;
        }
    };
    let fits = match at {
        At::Latest => true,
        At::Version(version) => snapshot.version <= version,
        At::Time(time) => snapshot.recorded_at <= time,
    };
    if !fits {
        return false;
    }
    let hash = &instance.info().content_hash;
    if snapshot.plugin_hash != *hash {
        tracing::info!(
            aggregate_type,
            id,
            snapshot_plugin = %snapshot.plugin_hash,
            plugin = %hash,
            "snapshot made by other plugin code ignored; replaying the stream"
        );
        return false;
    }
    match instance.restore(id, &snapshot.state) {
        Ok(()) => {
            built.version = snapshot.version;
            built.position = snapshot.position;
            built.recorded_at = snapshot.recorded_at;
            built.snapshot_version = Some(snapshot.version);
            true
        }
        Err(error) => {
            tracing::warn!(aggregate_type, id, %error, "snapshot failed to restore; replaying the stream");
            false
        }
    }
}
