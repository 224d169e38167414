//! The loaded plugins, and hot swaps by upload.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{GenerationStatus, ProjectionState};

/// The kind of a plugin, one per WIT world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// Decides commands for one aggregate type.
    Aggregate,
    /// Rewrites old event shapes on read.
    Upcaster,
    /// Builds a read model and answers queries.
    Projection,
    /// Turns events into commands, events and timers.
    Reactor,
}

/// An event type at one schema version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VersionedType {
    /// The event type.
    pub event_type: String,
    /// Its schema version.
    pub schema_version: u32,
}

/// A loaded plugin. Aggregates and upcasters show what they declare (`handles`, `upcasts`,
/// `wit_version`); projections show their `state` and `rebuild`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Plugin {
    /// The plugin's name (the aggregate type, projection or upcaster name).
    pub name: String,
    /// Its kind.
    pub kind: PluginKind,
    /// Its own version, free text.
    pub version: String,
    /// The blake3 hash of the component's bytes, hex: its identity.
    pub content_hash: String,
    /// The event types it wants to see; empty means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handles: Option<Vec<String>>,
    /// Upcasters: the (type, schema version) pairs it rewrites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upcasts: Option<Vec<VersionedType>>,
    /// The version of the `eshost:plugin` package it exports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wit_version: Option<String>,
    /// Projections: what it is doing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ProjectionState>,
    /// Projections: the generation being rebuilt, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<GenerationStatus>,
}

/// `GET /plugins`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PluginList {
    /// Aggregates, then upcasters (in chain order), then projections.
    pub plugins: Vec<Plugin>,
}

/// What a swap did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SwapOutcome {
    /// The upload is the version already running (same content hash): nothing changed.
    Unchanged,
    /// An aggregate's new code serves the next command; an upcaster's new chain every later
    /// read.
    Swapped,
    /// A projection's new code took over the active generation.
    Continued,
    /// A projection's new version is rebuilding in a new generation beside the active one.
    Rebuilding {
        /// The new generation.
        generation: u64,
    },
}

/// `PUT /plugins/{name}`: 200 for an aggregate or an upcaster, 202 for a projection (it
/// rebuilds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PluginSwapped {
    /// The plugin.
    pub name: String,
    /// Its kind.
    pub kind: PluginKind,
    /// What the swap did.
    pub outcome: SwapOutcome,
    /// Aggregates: the content hash of the code replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_hash: Option<String>,
    /// Aggregates: the content hash of the new code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    /// Aggregates: the new code's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Where the activation is recorded in `$plugins` (every node follows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_position: Option<u64>,
    /// Upcasters: aggregate snapshots deleted on this node (built through the old chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots_deleted: Option<u64>,
    /// Upcasters: the projections rebuilding from position 0 through the new chain (their
    /// read models were built through the old one; it serves until each switches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projections_rebuilding: Option<Vec<String>>,
    /// With `?require_check=true`: the clean check the swap passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Box<crate::CheckReport>>,
}

/// What made a plugin version active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActivationSource {
    /// A node started with a config naming this file (the first time on that node).
    Config,
    /// `PUT /plugins/{name}`.
    Upload,
    /// The plugin file changed (`watch_plugins`).
    Watcher,
    /// `POST /plugins/{name}/rollback`.
    Rollback,
}

/// One activation of a plugin version, as recorded in the system stream `$plugins`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PluginActivation {
    /// Where it is in `$all`.
    pub position: u64,
    /// When it was recorded, ms since the epoch.
    pub recorded_at: u64,
    /// The plugin.
    pub name: String,
    /// `aggregate`, `projection` or `upcaster`.
    pub kind: String,
    /// The blake3 hash of the component, hex.
    pub content_hash: String,
    /// The plugin's own version string.
    pub version: String,
    /// The version active before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_hash: Option<String>,
    /// What activated it.
    pub source: ActivationSource,
    /// Who.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The node that recorded it.
    pub node: String,
    /// For a reactor: where the new version went on from (`checkpoint`, `head`, `beginning`
    /// or a position); none: its checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
}

/// `GET /plugins/{name}/history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PluginHistory {
    /// The plugin.
    pub name: String,
    /// Its activations, oldest first.
    pub activations: Vec<PluginActivation>,
}

/// `POST /plugins/{name}/rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version to activate again: a content hash from the plugin's history.
    pub content_hash: String,
    /// Why (recorded in the log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
