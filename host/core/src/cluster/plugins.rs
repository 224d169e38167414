//! Code changes are events: every activation of a plugin version is recorded in the system
//! stream `$plugins` (name, kind, content hash, previous hash, source, who, why, node), with the
//! component's bytes stored once by content hash beside the log (the store's blob port).
//!
//! - **At start** a node runs, for each configured plugin, the latest version activated in the
//!   log, unless its config names a file other than the one of this node's last config-sourced
//!   activation: then the config changed, and the file is activated (and recorded). So a swap
//!   by upload survives a restart, and a new config still takes effect.
//! - **A swap** (upload, file watcher, rollback) is checked, its bytes stored, the activation
//!   appended, and then applied here; every other node follows `$plugins` and applies it,
//!   loading the bytes by hash. Activations of one plugin apply in log order on every node
//!   (a node skips an activation older than the one it applied last), so all converge on the
//!   latest.
//! - A command is decided by the version active on its node at decision time; its events
//!   carry that version's hash (`plugin_hash`). A swap replaces the plugin atomically between
//!   two decisions and fails no command; the store's expected-version check still decides
//!   between nodes running different versions for a moment.
//! - A reactor swap runs the new version from where the activation says (`start`: its
//!   checkpoint unless chosen otherwise), on every node; its read model and timers carry over.
//! - An upcaster swap replaces the whole chain at once (checked first: two claims of one
//!   type and version are refused), drops every aggregate state and snapshot built through
//!   the old chain, and rebuilds the projections whose events it raises differently.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::Node;
use crate::aggregate::Aggregates;
use crate::check::CheckReport;
use crate::projection::{ProjectionHostError, Projections, SwapMode, SwapOutcome};
use crate::reactor::{ReactorError, Reactors, StartAt};
use crate::upcast::{ChainError, UpcasterChain};

pub use super::start::{StartVersion, at_start, recorded_version};
use eshost_runtime::{LoadedPlugin, PluginInfo, PluginKind, Runtime};
use eshost_store::{
    AppendRequest, EventStore, ExpectedVersion, ProposedEvent, RecordedEvent, StreamRead, block_on,
};

/// The system stream of plugin activations.
pub const PLUGINS_STREAM: &str = "$plugins";
/// The type of the events there.
pub const ACTIVATION_EVENT: &str = "PluginActivated";

/// What made a version active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationSource {
    /// A node started with a config naming this file (for the first time on that node).
    Config,
    /// `PUT /plugins/{name}`.
    Upload,
    /// The plugin file changed (`watch_plugins`).
    Watcher,
    /// `POST /plugins/{name}/rollback` to a recorded version.
    Rollback,
}

/// One activation, as recorded in `$plugins`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// The plugin's name.
    pub name: String,
    /// `aggregate`, `projection`, `upcaster` or `reactor`.
    pub kind: String,
    /// The blake3 hash of the component: its identity, and its key in the blob store.
    pub content_hash: String,
    /// The plugin's own version string.
    pub version: String,
    /// The version active before, in the log (none for the first).
    pub previous_hash: Option<String>,
    /// What activated it.
    pub source: ActivationSource,
    /// Who (a token's name; `config` for a config activation).
    pub user: Option<String>,
    /// Why, free text.
    pub reason: Option<String>,
    /// The node that recorded it.
    pub node: String,
    /// For a reactor: where the new version goes on from (none: its checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<StartAt>,
}

/// An activation with where it is in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordedActivation {
    /// Its position in `$all`.
    pub position: u64,
    /// When it was recorded, ms since the epoch.
    pub recorded_at: u64,
    /// The activation.
    #[serde(flatten)]
    pub activation: Activation,
}

/// Why an activation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// No plugin of that name is configured.
    #[error("no plugin named {0:?}")]
    Unknown(String),
    /// The new version of an upcaster cannot join the chain (it claims what another claims).
    #[error("upcaster {name:?}: {error}")]
    Chain {
        /// The upcaster.
        name: String,
        /// Why the chain refuses it.
        error: ChainError,
    },
    /// The component is not a valid plugin of the right kind and name.
    #[error("{0}")]
    BadPlugin(String),
    /// A rollback to a version never activated for the plugin.
    #[error("plugin {name:?} was never activated with content hash {hash}")]
    UnknownVersion {
        /// The plugin.
        name: String,
        /// The hash asked for.
        hash: String,
    },
    /// The candidate's check against history found failures; nothing was activated.
    #[error("plugin {:?}: the check against history is not clean: {}", .0.candidate.name, .0.summary())]
    CheckFailed(Box<CheckReport>),
    /// The projection refused or could not take the swap.
    #[error(transparent)]
    Projection(#[from] ProjectionHostError),
    /// The reactor refused or could not take the swap.
    #[error(transparent)]
    Reactor(#[from] ReactorError),
    /// The store failed (storing the bytes, recording the activation, reading the history).
    #[error("plugin {name:?}: {reason}")]
    Store {
        /// The plugin.
        name: String,
        /// What failed.
        reason: String,
    },
}

/// What an activation did on this node.
#[derive(Debug, Clone)]
pub struct Activated {
    /// Where it is recorded.
    pub position: u64,
    /// The plugin's kind.
    pub kind: PluginKind,
    /// The version replaced here.
    pub previous_hash: Option<String>,
    /// The new version.
    pub info: PluginInfo,
    /// For a projection: what the swap did.
    pub projection: Option<SwapOutcome>,
    /// For an upcaster: what the swap dropped and rebuilt.
    pub upcaster: Option<UpcasterSwapped>,
}

/// What an upcaster swap did on this node, beside putting the new chain in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpcasterSwapped {
    /// Aggregate snapshots deleted (each was built through the old chain).
    pub snapshots_deleted: usize,
    /// The projections rebuilding from position 0 through the new chain.
    pub projections_rebuilding: Vec<String>,
}

/// What a swap did, by kind.
enum Swapped {
    /// An aggregate or a reactor: the next decision or batch runs the new code.
    Replaced,
    Projection(SwapOutcome),
    Upcaster(UpcasterSwapped),
}

/// The activations recorded for `name` (every plugin's when `None`), oldest first.
pub fn history(
    store: &dyn EventStore,
    name: Option<&str>,
) -> Result<Vec<RecordedActivation>, String> {
    let mut activations = Vec::new();
    let mut malformed = None;
    store
        .visit_stream(PLUGINS_STREAM, &StreamRead::forward(), &mut |event| {
            if event.event_type != ACTIVATION_EVENT {
                return ControlFlow::Continue(());
            }
            match serde_json::from_str::<Activation>(event.data) {
                Ok(activation) if name.is_none_or(|name| activation.name == name) => {
                    activations.push(RecordedActivation {
                        position: event.position,
                        recorded_at: event.recorded_at,
                        activation,
                    });
                }
                Ok(_) => {}
                Err(error) => malformed = Some((event.position, error)),
            }
            ControlFlow::Continue(())
        })
        .map_err(|e| e.to_string())?;
    if let Some((position, error)) = malformed {
        tracing::warn!(position, %error, "a malformed activation in {PLUGINS_STREAM} is ignored");
    }
    Ok(activations)
}

/// Appends `activation` to `$plugins`; returns its position.
pub(super) fn record(store: &dyn EventStore, activation: &Activation) -> Result<u64, String> {
    let data = serde_json::to_string(activation).map_err(|e| e.to_string())?;
    let request = AppendRequest::new(
        PLUGINS_STREAM,
        ExpectedVersion::Any,
        vec![ProposedEvent::new(ACTIVATION_EVENT, data)],
    );
    block_on(store.append_system(request))
        .map(|appended| appended.first_position)
        .map_err(|e| format!("recording the activation in {PLUGINS_STREAM}: {e}"))
}

/// The versions a node chose at start, and the log position they reflect.
#[derive(Debug, Clone, Default)]
pub struct StartedVersions {
    /// Plugin name → content hash of the version running.
    pub current: HashMap<String, String>,
    /// Activations up to this position are reflected.
    pub head: u64,
}

/// The running part: activations made on this node, and those of other nodes followed.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct PluginLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn EventStore>,
    /// Plugin name → the runtime its versions load under (with its configured limits).
    runtimes: HashMap<String, Runtime>,
    aggregates: Aggregates,
    projections: Projections,
    reactors: Reactors,
    /// The host's chain (every read path's).
    upcasters: UpcasterChain,
    node: Node,
    /// Per plugin: the position of the activation applied last here, and its hash. Held while
    /// an activation is recorded and applied, so activations apply in log order.
    applied: Mutex<HashMap<String, (u64, String)>>,
}

impl PluginLog {
    /// The plugin log of a host whose plugins were chosen at start from the log up to
    /// `started.head` (`started.current`: name → hash of what runs).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn EventStore>,
        runtimes: HashMap<String, Runtime>,
        aggregates: Aggregates,
        projections: Projections,
        reactors: Reactors,
        upcasters: UpcasterChain,
        node: Node,
        started: StartedVersions,
    ) -> PluginLog {
        let head = started.head;
        let applied = started
            .current
            .into_iter()
            .map(|(name, hash)| (name, (head, hash)))
            .collect();
        PluginLog {
            inner: Arc::new(Inner {
                store,
                runtimes,
                aggregates,
                projections,
                reactors,
                upcasters,
                node,
                applied: Mutex::new(applied),
            }),
        }
    }

    /// Follows `$plugins` from `from`, applying other nodes' activations, until `stop`.
    pub fn follow(&self, from: u64, stop: tokio::sync::watch::Receiver<bool>) {
        let this = self.clone();
        super::follow(
            self.inner.store.clone(),
            PLUGINS_STREAM,
            ACTIVATION_EVENT,
            from,
            stop,
            move |event| {
                let this = this.clone();
                async move {
                    let _ = tokio::task::spawn_blocking(move || this.apply_recorded(&event)).await;
                }
            },
        );
    }

    /// The activations recorded for `name`, oldest first.
    pub fn history(&self, name: &str) -> Result<Vec<RecordedActivation>, ActivateError> {
        if !self.is_configured(name) {
            return Err(ActivateError::Unknown(name.to_owned()));
        }
        history(self.inner.store.as_ref(), Some(name)).map_err(|reason| ActivateError::Store {
            name: name.to_owned(),
            reason,
        })
    }

    fn is_configured(&self, name: &str) -> bool {
        self.kind_of(name).is_some()
    }

    /// The kind of the configured plugin `name`.
    pub fn kind_of(&self, name: &str) -> Option<PluginKind> {
        if self
            .inner
            .aggregates
            .types()
            .iter()
            .any(|info| info.name == name)
        {
            Some(PluginKind::Aggregate)
        } else if self.inner.projections.config(name).is_some() {
            Some(PluginKind::Projection)
        } else if self
            .inner
            .upcasters
            .plugins()
            .iter()
            .any(|p| p.info().name == name)
        {
            Some(PluginKind::Upcaster)
        } else if self.inner.reactors.names().iter().any(|n| n == name) {
            Some(PluginKind::Reactor)
        } else {
            None
        }
    }

    /// Activates `bytes` as the new version of plugin `name`: checks it, stores the bytes,
    /// records the activation, and swaps it in here (other nodes follow). A reactor goes on
    /// from its checkpoint. Blocking.
    pub fn activate(
        &self,
        name: &str,
        bytes: Vec<u8>,
        source: ActivationSource,
        user: Option<String>,
        reason: Option<String>,
    ) -> Result<Activated, ActivateError> {
        self.activate_from(name, bytes, source, user, reason, None)
    }

    /// [`activate`](Self::activate) for the reactor `name`, its new version going on from
    /// `start` on every node. Blocking.
    pub fn activate_reactor(
        &self,
        name: &str,
        bytes: Vec<u8>,
        start: StartAt,
        source: ActivationSource,
        user: Option<String>,
    ) -> Result<Activated, ActivateError> {
        if self.kind_of(name) != Some(PluginKind::Reactor) {
            return Err(ReactorError::Unknown(name.to_owned()).into());
        }
        self.activate_from(name, bytes, source, user, None, Some(start))
    }

    fn activate_from(
        &self,
        name: &str,
        bytes: Vec<u8>,
        source: ActivationSource,
        user: Option<String>,
        reason: Option<String>,
        start: Option<StartAt>,
    ) -> Result<Activated, ActivateError> {
        let Some(kind) = self.kind_of(name) else {
            return Err(ActivateError::Unknown(name.to_owned()));
        };
        let label = format!("{source:?} of {name:?}").to_lowercase();
        let info = self.check(name, kind, &bytes, &label)?;
        let store_error = |reason: String| ActivateError::Store {
            name: name.to_owned(),
            reason,
        };
        let mut applied = self.inner.applied.lock().unwrap_or_else(|e| e.into_inner());
        if kind == PluginKind::Upcaster {
            // Under the lock: no other swap changes the chain between this check and the swap.
            self.candidate_chain(name, &bytes, &label)?;
        }
        let previous_hash = applied.get(name).map(|(_, hash)| hash.clone());
        self.inner
            .store
            .put_blob(&bytes)
            .map_err(|e| store_error(format!("storing the component: {e}")))?;
        let activation = Activation {
            name: name.to_owned(),
            kind: kind.as_str().to_owned(),
            content_hash: info.content_hash.clone(),
            version: info.version.clone(),
            previous_hash: previous_hash.clone(),
            source,
            user,
            reason,
            node: self.inner.node.id().to_owned(),
            start,
        };
        let position = record(self.inner.store.as_ref(), &activation).map_err(store_error)?;
        let swapped = self.swap(name, kind, bytes, &label, start)?;
        applied.insert(name.to_owned(), (position, info.content_hash.clone()));
        let (projection, upcaster) = match swapped {
            Swapped::Replaced => (None, None),
            Swapped::Projection(outcome) => (Some(outcome), None),
            Swapped::Upcaster(swapped) => (None, Some(swapped)),
        };
        Ok(Activated {
            position,
            kind,
            previous_hash,
            info,
            projection,
            upcaster,
        })
    }

    /// [`activate`](Self::activate) only if the candidate's check against history is clean
    /// ([`crate::check`]); otherwise nothing is recorded or swapped and the report comes back
    /// in [`ActivateError::CheckFailed`]. History appended between the check and the swap is
    /// not checked. Blocking; reads the whole log.
    pub fn activate_checked(
        &self,
        name: &str,
        bytes: Vec<u8>,
        source: ActivationSource,
        user: Option<String>,
        reason: Option<String>,
    ) -> Result<(Activated, CheckReport), ActivateError> {
        let report = crate::check::check(self, name, &bytes)?;
        if !report.is_clean() {
            return Err(ActivateError::CheckFailed(Box::new(report)));
        }
        let activated = self.activate(name, bytes, source, user, reason)?;
        Ok((activated, report))
    }

    /// The store activations are recorded in.
    pub(crate) fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    /// The command pipeline whose plugins this swaps.
    pub(crate) fn aggregates(&self) -> &Aggregates {
        &self.inner.aggregates
    }

    /// The projections whose plugins this swaps.
    pub(crate) fn projections(&self) -> &Projections {
        &self.inner.projections
    }

    /// The host's upcaster chain.
    pub(crate) fn upcasters(&self) -> &UpcasterChain {
        &self.inner.upcasters
    }

    /// Activates again a version recorded for `name` (by its content hash). Blocking.
    pub fn rollback(
        &self,
        name: &str,
        hash: &str,
        user: Option<String>,
        reason: Option<String>,
    ) -> Result<Activated, ActivateError> {
        let recorded = self.history(name)?;
        if !recorded.iter().any(|r| r.activation.content_hash == hash) {
            return Err(ActivateError::UnknownVersion {
                name: name.to_owned(),
                hash: hash.to_owned(),
            });
        }
        let bytes = self
            .inner
            .store
            .get_blob(hash)
            .map_err(|e| ActivateError::Store {
                name: name.to_owned(),
                reason: e.to_string(),
            })?
            .ok_or_else(|| ActivateError::Store {
                name: name.to_owned(),
                reason: format!("the bytes of version {hash} are not in the store"),
            })?;
        self.activate(name, bytes, ActivationSource::Rollback, user, reason)
    }

    /// The runtime plugin `name`'s versions load under (its configured limits).
    pub fn runtime(&self, name: &str) -> Result<&Runtime, ActivateError> {
        self.inner
            .runtimes
            .get(name)
            .ok_or_else(|| ActivateError::Unknown(name.to_owned()))
    }

    /// Compiles `bytes` as a plugin of `kind` under plugin `name`'s runtime (its limits).
    fn load(
        &self,
        name: &str,
        kind: PluginKind,
        bytes: &[u8],
        label: &str,
    ) -> Result<LoadedPlugin, ActivateError> {
        self.runtime(name)?
            .load_bytes(bytes, label, kind)
            .map_err(|e| ActivateError::BadPlugin(e.to_string()))
    }

    /// Compiles and checks a component for plugin `name` of `kind`.
    fn check(
        &self,
        name: &str,
        kind: PluginKind,
        bytes: &[u8],
        label: &str,
    ) -> Result<PluginInfo, ActivateError> {
        let loaded = self.load(name, kind, bytes, label)?;
        let info = loaded.info().clone();
        if info.name != name {
            return Err(ActivateError::BadPlugin(format!(
                "the component describes itself as {:?}, not {name:?}",
                info.name
            )));
        }
        Ok(info)
    }

    /// The host's chain with `bytes` as the new version of upcaster `name`, checked (nothing
    /// live changes).
    pub fn candidate_chain(
        &self,
        name: &str,
        bytes: &[u8],
        label: &str,
    ) -> Result<UpcasterChain, ActivateError> {
        let loaded = self.load(name, PluginKind::Upcaster, bytes, label)?;
        let LoadedPlugin::Upcaster(plugin) = loaded else {
            return Err(ActivateError::BadPlugin("not an upcaster".into()));
        };
        self.inner
            .upcasters
            .with_version(plugin)
            .map_err(|error| ActivateError::Chain {
                name: name.to_owned(),
                error,
            })
    }

    /// Puts a new upcaster chain in force here: see [`Aggregates::swap_upcasters`] and
    /// [`Projections::rebuild_after_upcaster_swap`].
    fn swap_upcaster(
        &self,
        name: &str,
        bytes: &[u8],
        label: &str,
    ) -> Result<UpcasterSwapped, ActivateError> {
        let candidate = self.candidate_chain(name, bytes, label)?;
        let before = self.inner.upcasters.detached();
        let hashes = |chain: &UpcasterChain| -> Vec<String> {
            let plugins = chain.plugins();
            plugins
                .iter()
                .map(|p| p.info().content_hash.clone())
                .collect()
        };
        if hashes(&before) == hashes(&candidate) {
            // The version running: nothing was built through another chain.
            return Ok(UpcasterSwapped::default());
        }
        let claims = |chain: &UpcasterChain| -> Vec<(String, u32)> {
            chain
                .plugins()
                .iter()
                .filter(|p| p.info().name == name)
                .flat_map(|p| p.info().upcasts.clone())
                .map(|claim| (claim.event_type, claim.schema_version))
                .collect()
        };
        let mut changed = claims(&before);
        changed.extend(claims(&candidate));
        let snapshots_deleted = self
            .inner
            .aggregates
            .swap_upcasters(&candidate)
            .map_err(|e| ActivateError::Store {
                name: name.to_owned(),
                reason: e.to_string(),
            })?;
        let projections_rebuilding = self
            .inner
            .projections
            .rebuild_after_upcaster_swap(&before, &changed)?;
        if let Err(error) = crate::chain_record::record(self.inner.projections.views(), &candidate)
        {
            // The next start rebuilds once more; nothing is lost.
            tracing::warn!(upcaster = %name, %error, "recording the swapped chain in views.redb");
        }
        tracing::info!(upcaster = %name, snapshots_deleted, projections = ?projections_rebuilding, "upcaster chain swapped");
        Ok(UpcasterSwapped {
            snapshots_deleted,
            projections_rebuilding,
        })
    }

    /// Swaps the checked component in here (a reactor's going on from `start`, or its
    /// checkpoint).
    fn swap(
        &self,
        name: &str,
        kind: PluginKind,
        bytes: Vec<u8>,
        label: &str,
        start: Option<StartAt>,
    ) -> Result<Swapped, ActivateError> {
        match kind {
            PluginKind::Aggregate => {
                let LoadedPlugin::Aggregate(plugin) = self.load(name, kind, &bytes, label)? else {
                    return Err(ActivateError::BadPlugin("not an aggregate".into()));
                };
                self.inner
                    .aggregates
                    .swap(plugin, None)
                    .map_err(|e| ActivateError::Store {
                        name: name.to_owned(),
                        reason: e.to_string(),
                    })?;
                Ok(Swapped::Replaced)
            }
            PluginKind::Projection => Ok(Swapped::Projection(self.inner.projections.swap_bytes(
                name,
                bytes,
                label,
                SwapMode::Rebuild,
            )?)),
            PluginKind::Upcaster => Ok(Swapped::Upcaster(self.swap_upcaster(name, &bytes, label)?)),
            PluginKind::Reactor => {
                let LoadedPlugin::Reactor(plugin) = self.load(name, kind, &bytes, label)? else {
                    return Err(ActivateError::BadPlugin("not a reactor".into()));
                };
                let start = start.unwrap_or(StartAt::Checkpoint);
                self.inner.reactors.swap(name, plugin, start)?;
                Ok(Swapped::Replaced)
            }
        }
    }

    /// Applies an activation recorded in the log (by any node), unless a later one of the
    /// same plugin is applied here already. Blocking.
    fn apply_recorded(&self, event: &RecordedEvent) {
        let activation: Activation = match serde_json::from_str(&event.data) {
            Ok(activation) => activation,
            Err(error) => {
                tracing::warn!(position = event.position, %error, "a malformed activation is ignored");
                return;
            }
        };
        let name = activation.name.as_str();
        let Some(kind) = self.kind_of(name) else {
            return;
        };
        let mut applied = self.inner.applied.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((position, hash)) = applied.get(name) {
            if *position >= event.position {
                return;
            }
            if *hash == activation.content_hash {
                let hash = hash.clone();
                applied.insert(name.to_owned(), (event.position, hash));
                return;
            }
        }
        let bytes = match self.inner.store.get_blob(&activation.content_hash) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                tracing::error!(plugin = %name, hash = %activation.content_hash, "an activation's bytes are not in the store; not applied");
                return;
            }
            Err(error) => {
                tracing::error!(plugin = %name, %error, "loading an activation's bytes failed; not applied");
                return;
            }
        };
        let label = format!("{name} {} from {PLUGINS_STREAM}", activation.content_hash);
        match self.swap(name, kind, bytes, &label, activation.start) {
            Ok(_) => {
                tracing::info!(plugin = %name, hash = %activation.content_hash, node = %activation.node, "activated from the log");
                applied.insert(
                    name.to_owned(),
                    (event.position, activation.content_hash.clone()),
                );
            }
            Err(error) => {
                tracing::error!(plugin = %name, hash = %activation.content_hash, %error, "activation from the log failed")
            }
        }
    }
}
