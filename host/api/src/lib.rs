//! The wire contract of eshost's HTTP API: the request, response and error types of every
//! route, as serde types with their OpenAPI schemas (utoipa).
//!
//! The server (`eshost-server`) answers with these types and generates `GET /openapi.json`
//! from them; the `eshost` command line sends and parses them. A client of eshost can depend
//! on this crate alone: it pulls in serde, serde_json, uuid and utoipa, nothing of the host.
//!
//! Request types refuse unknown fields; response types accept them, so that a client keeps
//! working when the server adds a field.

#![deny(missing_docs)]

mod aggregates;
mod check;
mod error;
mod events;
mod expected;
#[cfg(feature = "store")]
mod from_store;
mod operations;
mod plugins;
mod projections;
mod reactors;
mod time;

pub use aggregates::{
    AggregateState, Command, CommandAccepted, CommandQuery, EmittedEvent, History, HistoryEntry,
    HistoryQuery, SnapshotTaken, StateQuery,
};
pub use check::{
    AggregateCheck, CheckFailure, CheckReport, DiffSample, EventShape, ProjectionCheck,
    StateDifference, SwapQuery, UpcastSample, UpcasterCheck,
};
pub use error::{ErrorBody, ErrorCode};
pub use events::{
    AllEvents, AllQuery, AppendRequest, Appended, Event, NewEvent, ReadStreamQuery, StreamEvents,
    StreamInfo, SubscribeQuery, split_types,
};
pub use expected::ExpectedVersion;
pub use operations::{
    ForgetReport, ForgetRequest, Forgot, Health, Node, NodeList, NodeProgress, NodePurge,
};
pub use plugins::{
    ActivationSource, Plugin, PluginActivation, PluginHistory, PluginKind, PluginList,
    PluginSwapped, RollbackRequest, SwapOutcome, VersionedType,
};
pub use projections::{
    GenerationStatus, ProjectionList, ProjectionPaused, ProjectionRebuilding, ProjectionResumed,
    ProjectionSkipped, ProjectionState, ProjectionStatus, QueryAnswer, QueryArgs, SkipRequest,
};
pub use reactors::{ReactorList, ReactorState, ReactorStatus, ReactorSwapQuery};
pub use time::{Timestamp, TimestampError};

/// The metadata keys the host writes itself; a raw append cannot set them.
pub const HOST_METADATA_KEYS: [&str; 5] = [
    "user",
    "command_id",
    "aggregate_type",
    "plugin_hash",
    "plugin_version",
];

/// The header that carries a command's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The header that carries a command's correlation id.
pub const CORRELATION_ID: &str = "correlation-id";
/// The header that carries a command's causation id.
pub const CAUSATION_ID: &str = "causation-id";
/// The header a subscription resumes after (the `id` of the last event received).
pub const LAST_EVENT_ID: &str = "last-event-id";
