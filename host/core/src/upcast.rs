//! Upcasting on read: old event shapes are raised, step by step, to the current ones before
//! any aggregate or projection sees them. Stored events never change.
//!
//! An [`UpcasterChain`] is built from the loaded upcaster plugins; each (event type, schema
//! version) pair belongs to at most one upcaster. A reader thread makes its own [`Upcasting`]
//! (sandboxed instances, created on first use) and passes events through it: an event goes to
//! the upcaster that claims its (type, version), then again with the new (type, version),
//! until no upcaster claims it.
//!
//! The chain is hot-swapped as a whole ([`UpcasterChain::adopt`]): every clone of a host's
//! chain sees the new one, but an [`Upcasting`] keeps the chain it started with until its
//! owner calls [`Upcasting::refresh`] at a point where that is safe (between two commands of
//! a worker, between two batches of a projection), so no state or batch mixes two chains.
//!
//! A plugin sees only the events it handles (WIT `plugin-info.handles`), so only those that
//! may become such events are upcast for it: the [`Relevance`] of each event to each plugin.
//! An event of another type, however malformed, can therefore never stop a plugin.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use eshost_runtime::{
    Event, PluginError, PluginInfo, UpcastError, UpcasterInstance, UpcasterPlugin,
};
use eshost_store::{EventRef, EventStore};

/// The upcasters of a host, keyed by the (event type, schema version) each one raises.
/// Cheap to clone; every clone sees a swap ([`adopt`](Self::adopt)).
#[derive(Clone, Default)]
pub struct UpcasterChain {
    live: Arc<Live>,
}

/// The chain in force, and how many times it was replaced.
#[derive(Default)]
struct Live {
    current: RwLock<Arc<Chain>>,
    generation: AtomicU64,
}

#[derive(Default)]
struct Chain {
    plugins: Vec<UpcasterPlugin>,
    claims: Claims,
    /// The relevance for each `handles` list asked about, computed once.
    relevance: Mutex<HashMap<Vec<String>, Arc<Relevance>>>,
}

/// What the chain knows from the upcasters' declarations, without running one: which
/// upcaster raises which (type, version), and which types each may give.
#[derive(Debug, Default)]
struct Claims {
    /// Event type → the schema versions of it that are claimed, each with its upcaster's
    /// index. Keyed by type alone so that a look-up borrows the event's `&str`.
    by_type: HashMap<String, Vec<(u32, usize)>>,
    /// How many (type, version) pairs are claimed.
    count: usize,
    /// Per upcaster: the types it may give (WIT `handles` plus the types it upcasts); `None`:
    /// any type (its `handles` is empty).
    outputs: Vec<Option<Vec<String>>>,
}

impl Claims {
    fn new<'a>(upcasters: impl IntoIterator<Item = &'a PluginInfo>) -> Result<Self, ChainError> {
        let mut claims = Claims::default();
        let mut names: Vec<&str> = Vec::new();
        for info in upcasters {
            let index = claims.outputs.len();
            for claim in &info.upcasts {
                let (event_type, schema_version) = (&claim.event_type, claim.schema_version);
                if let Some(other) = claims.claimant(event_type, schema_version) {
                    return Err(ChainError::Ambiguous {
                        event_type: event_type.clone(),
                        schema_version,
                        first: names[other].to_owned(),
                        second: info.name.clone(),
                    });
                }
                claims
                    .by_type
                    .entry(event_type.clone())
                    .or_default()
                    .push((schema_version, index));
                claims.count += 1;
            }
            let outputs = (!info.handles.is_empty()).then(|| {
                let upcast = info.upcasts.iter().map(|claim| &claim.event_type);
                info.handles.iter().chain(upcast).cloned().collect()
            });
            claims.outputs.push(outputs);
            names.push(&info.name);
        }
        Ok(claims)
    }

    /// The index of the upcaster that raises this type and version.
    fn claimant(&self, event_type: &str, schema_version: u32) -> Option<usize> {
        self.by_type
            .get(event_type)?
            .iter()
            .find(|(version, _)| *version == schema_version)
            .map(|&(_, index)| index)
    }

    fn relevance(&self, handles: &[String]) -> Relevance {
        if handles.is_empty() {
            return Relevance::default();
        }
        let handled: HashSet<&str> = handles.iter().map(String::as_str).collect();
        let mut upcast_into_handled = Vec::new();
        for (event_type, claims) in &self.by_type {
            if handled.contains(event_type.as_str()) {
                continue;
            }
            for &(version, index) in claims {
                if self.may_become(index, &handled) {
                    upcast_into_handled.push((event_type.clone(), version));
                }
            }
        }
        upcast_into_handled.sort_unstable();
        let mut handles = handles.to_vec();
        handles.sort_unstable();
        handles.dedup();
        Relevance {
            handles: Some(handles),
            upcast_into_handled,
        }
    }

    /// Whether an event raised by upcaster `start` may come out of the chain as one of
    /// `targets`. By types alone (any version of a type it gives may be claimed again), which
    /// can only answer yes too often, never no.
    fn may_become(&self, start: usize, targets: &HashSet<&str>) -> bool {
        let mut visited = vec![false; self.outputs.len()];
        visited[start] = true;
        let mut pending = vec![start];
        while let Some(index) = pending.pop() {
            let Some(outputs) = &self.outputs[index] else {
                return true;
            };
            for output in outputs {
                if targets.contains(output.as_str()) {
                    return true;
                }
                for &(_, next) in self.by_type.get(output).into_iter().flatten() {
                    if !std::mem::replace(&mut visited[next], true) {
                        pending.push(next);
                    }
                }
            }
        }
        false
    }
}

impl fmt::Debug for UpcasterChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chain = self.current();
        let names: Vec<_> = chain.plugins.iter().map(|p| &p.info().name).collect();
        f.debug_struct("UpcasterChain")
            .field("plugins", &names)
            .finish()
    }
}

/// Why a chain could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// Two upcasters claim the same event type and version: which one runs would be a guess.
    #[error("upcasters \"{first}\" and \"{second}\" both upcast {event_type} v{schema_version}")]
    Ambiguous {
        /// The event type.
        event_type: String,
        /// Its schema version.
        schema_version: u32,
        /// The upcaster that claimed it first.
        first: String,
        /// The other one.
        second: String,
    },
    /// A new version of an upcaster the chain does not hold.
    #[error("no upcaster named {0:?} in the chain")]
    Unknown(String),
}

impl UpcasterChain {
    /// A chain of `plugins`, each claiming the (type, version) pairs its `describe()` lists.
    pub fn new(plugins: impl IntoIterator<Item = UpcasterPlugin>) -> Result<Self, ChainError> {
        Ok(UpcasterChain::of(Chain::new(
            plugins.into_iter().collect(),
        )?))
    }

    fn of(chain: Chain) -> Self {
        UpcasterChain {
            live: Arc::new(Live {
                current: RwLock::new(Arc::new(chain)),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// A chain that changes nothing.
    pub fn empty() -> Self {
        UpcasterChain::default()
    }

    fn current(&self) -> Arc<Chain> {
        self.live
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// True when no upcaster is configured.
    pub fn is_empty(&self) -> bool {
        self.current().claims.count == 0
    }

    /// The upcasters, in chain order.
    pub fn plugins(&self) -> Vec<UpcasterPlugin> {
        self.current().plugins.clone()
    }

    /// Whether some upcaster raises events of this type and version.
    pub fn upcasts(&self, event_type: &str, schema_version: u32) -> bool {
        self.current()
            .claims
            .claimant(event_type, schema_version)
            .is_some()
    }

    /// Which events matter to a plugin that handles `handles` (empty: every type), through
    /// this chain. Computed once per list and shared.
    pub fn relevance(&self, handles: &[String]) -> Arc<Relevance> {
        self.current().relevance(handles)
    }

    /// How many times the chain was replaced.
    pub fn generation(&self) -> u64 {
        self.live.generation.load(Ordering::SeqCst)
    }

    /// A chain of its own holding the upcasters in force now: a later swap of this one does
    /// not change it.
    pub fn detached(&self) -> UpcasterChain {
        UpcasterChain {
            live: Arc::new(Live {
                current: RwLock::new(self.current()),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// A chain of its own: this one with `plugin` in place of the upcaster of its name.
    /// Checked like a new chain (two claims of one type and version are refused); nothing
    /// live changes.
    pub fn with_version(&self, plugin: UpcasterPlugin) -> Result<UpcasterChain, ChainError> {
        let mut plugins = self.plugins();
        let name = &plugin.info().name;
        let slot = plugins
            .iter_mut()
            .find(|p| &p.info().name == name)
            .ok_or_else(|| ChainError::Unknown(name.clone()))?;
        *slot = plugin;
        UpcasterChain::new(plugins)
    }

    /// Makes `other`'s upcasters the ones in force, for every clone of this chain. Each
    /// [`Upcasting`] moves to them at its next [`Upcasting::refresh`].
    pub fn adopt(&self, other: &UpcasterChain) {
        let chain = other.current();
        let mut current = self.live.current.write().unwrap_or_else(|e| e.into_inner());
        *current = chain;
        // Bumped under the lock, so a reader sees the generation and the chain agree.
        self.live.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// A per-thread runner of the chain in force now. Its instances are created on first use.
    pub fn instantiate(&self) -> Upcasting {
        let (pinned, generation) = {
            let current = self.live.current.read().unwrap_or_else(|e| e.into_inner());
            (current.clone(), self.generation())
        };
        Upcasting {
            chain: self.clone(),
            instances: (0..pinned.plugins.len()).map(|_| None).collect(),
            pinned,
            generation,
            relevance: Vec::new(),
        }
    }
}

impl Chain {
    fn new(plugins: Vec<UpcasterPlugin>) -> Result<Chain, ChainError> {
        let claims = Claims::new(plugins.iter().map(UpcasterPlugin::info))?;
        Ok(Chain {
            plugins,
            claims,
            relevance: Mutex::default(),
        })
    }

    fn relevance(&self, handles: &[String]) -> Arc<Relevance> {
        let mut known = self.relevance.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(relevance) = known.get(handles) {
            return relevance.clone();
        }
        // Plugins are few, but swaps can bring new lists for as long as the host runs.
        if known.len() >= 64 {
            known.clear();
        }
        let relevance = Arc::new(self.claims.relevance(handles));
        known.insert(handles.to_vec(), relevance.clone());
        relevance
    }
}

/// Which events matter to one plugin, given an [`UpcasterChain`]: those of a type it handles,
/// and those the chain raises and may turn into such a type (as far as each upcaster declares
/// what it may give: WIT `handles` plus the types it upcasts, any type when `handles` is
/// empty). Get it from [`UpcasterChain::relevance`]; asking about an event allocates nothing.
#[derive(Debug, Clone, Default)]
pub struct Relevance {
    /// The types the plugin handles, sorted; `None`: every type. Lists are short, and a
    /// binary search over them costs less than hashing the event's type.
    handles: Option<Vec<String>>,
    /// (type, schema version) pairs, sorted, of types the plugin does not handle that the
    /// chain raises and may turn into a type it handles.
    upcast_into_handled: Vec<(String, u32)>,
}

impl Relevance {
    /// Whether a stored event of this type and version is upcast for the plugin: it is of a
    /// type the plugin handles, or may become one.
    pub fn is_relevant(&self, event_type: &str, schema_version: u32) -> bool {
        self.is_handled(event_type)
            || self
                .upcast_into_handled
                .binary_search_by(|(t, v)| (t.as_str(), *v).cmp(&(event_type, schema_version)))
                .is_ok()
    }

    /// Whether the plugin handles events of this type (after upcasting: the type it sees).
    pub fn is_handled(&self, event_type: &str) -> bool {
        self.handles.as_ref().is_none_or(|handles| {
            handles
                .binary_search_by(|h| h.as_str().cmp(event_type))
                .is_ok()
        })
    }
}

/// An event the chain could not upcast.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upcasting the event at position {position}: {error}")]
pub struct UpcastFailure {
    /// The event's position.
    pub position: u64,
    /// What went wrong (shown in the message, so not also given as its source).
    pub error: UpcastError,
}

/// One thread's instances of an [`UpcasterChain`], for the chain in force when it was made or
/// last refreshed. Call from a blocking context.
#[derive(Debug)]
pub struct Upcasting {
    chain: UpcasterChain,
    /// The chain this runs, until [`refresh`](Self::refresh).
    pinned: Arc<Chain>,
    /// The generation of `pinned`.
    generation: u64,
    instances: Vec<Option<UpcasterInstance>>,
    /// (plugin content hash, its relevance) of the plugins this thread served lately: a
    /// look-up here takes no lock.
    relevance: Vec<(String, Arc<Relevance>)>,
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.plugins.iter().map(|p| &p.info().name).collect();
        f.debug_struct("Chain").field("plugins", &names).finish()
    }
}

impl Upcasting {
    /// Moves to the chain in force, if it was swapped since: drops the old instances. Returns
    /// whether it moved (state built through the old chain is then stale).
    pub fn refresh(&mut self) -> bool {
        if self.chain.generation() == self.generation {
            return false;
        }
        *self = self.chain.instantiate();
        true
    }

    /// New instances of the same chain (after a trap left these unusable).
    pub fn fresh(&self) -> Upcasting {
        Upcasting {
            chain: self.chain.clone(),
            pinned: self.pinned.clone(),
            generation: self.generation,
            instances: (0..self.pinned.plugins.len()).map(|_| None).collect(),
            relevance: Vec::new(),
        }
    }

    /// The generation of the chain this runs (see [`UpcasterChain::generation`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// True when the chain this runs changes nothing.
    pub fn is_empty(&self) -> bool {
        self.pinned.claims.count == 0
    }

    /// The [`Relevance`] of the chain this runs for a plugin that handles `handles`.
    pub fn relevance(&self, handles: &[String]) -> Arc<Relevance> {
        self.pinned.relevance(handles)
    }

    /// The chain's [`Relevance`] for `plugin`, remembered by this thread.
    pub fn relevance_for(&mut self, plugin: &PluginInfo) -> Arc<Relevance> {
        let hash = &plugin.content_hash;
        if let Some((_, relevance)) = self.relevance.iter().find(|(known, _)| known == hash) {
            return relevance.clone();
        }
        let relevance = self.pinned.relevance(&plugin.handles);
        if self.relevance.len() >= 16 {
            self.relevance.remove(0);
        }
        self.relevance.push((hash.clone(), relevance.clone()));
        relevance
    }

    /// Raises `event` through the chain, in place. Returns whether it changed.
    pub fn upcast(&mut self, event: &mut Event) -> Result<bool, UpcastError> {
        if self.is_empty() {
            return Ok(false);
        }
        let mut changed = false;
        // Every step raises the schema version (the runtime refuses one that does not), so
        // the chain ends; the bound is a second guard against a cycle through event types.
        for _ in 0..=self.pinned.claims.count {
            let Some(index) = self
                .pinned
                .claims
                .claimant(&event.event_type, event.schema_version)
            else {
                return Ok(changed);
            };
            let instance = match &mut self.instances[index] {
                Some(instance) => instance,
                slot => slot.insert(self.pinned.plugins[index].instantiate()?),
            };
            if !instance.upcast_in_place(event)? {
                return Ok(changed);
            }
            changed = true;
        }
        let plugin = self.pinned.plugins[0].info().name.clone();
        Err(UpcastError::Plugin(PluginError::Contract {
            plugin,
            call: "upcast",
            message: format!(
                "the upcaster chain did not settle on event {} at position {}",
                event.event_id, event.position
            ),
        }))
    }

    /// Raises every event of `events`, in place.
    pub fn upcast_all(&mut self, events: &mut [Event]) -> Result<(), UpcastFailure> {
        if self.is_empty() {
            return Ok(());
        }
        for event in events {
            self.upcast(event).map_err(|error| UpcastFailure {
                position: event.position,
                error,
            })?;
        }
        Ok(())
    }

    /// Makes stored events into what a plugin sees: drops those not relevant to it, raises
    /// the rest through the chain, and keeps those of a type it handles, in order.
    pub fn for_plugin(
        &mut self,
        relevance: &Relevance,
        events: &mut Vec<Event>,
    ) -> Result<(), UpcastFailure> {
        events.retain(|event| relevance.is_relevant(&event.event_type, event.schema_version));
        self.upcast_all(events)?;
        events.retain(|event| relevance.is_handled(&event.event_type));
        Ok(())
    }
}

/// A stored event in the shape plugins receive, its personal data decrypted by `store`.
pub fn plugin_event(event: &EventRef<'_>, store: &dyn EventStore) -> Event {
    let mut plugin_event = stored_event(event);
    set_personal(&mut plugin_event, event, store);
    plugin_event
}

/// Sets `target`'s personal-data fields from `event`: decrypted, or marked shredded once the
/// subject's key is gone (or unreadable, which plugins cannot tell from shredded).
pub fn set_personal(target: &mut Event, event: &EventRef<'_>, store: &dyn EventStore) {
    target.subject_id = event.subject_id.map(str::to_owned);
    (target.personal_data, target.shredded) = match event.sealed {
        None => (None, false),
        Some(_) => store.reveal(event).into_fields(event.position),
    };
}

/// A stored event in the shape plugins receive, without its personal data.
fn stored_event(event: &EventRef<'_>) -> Event {
    Event {
        position: event.position,
        stream_id: event.stream_id.to_owned(),
        stream_version: event.stream_version,
        event_id: event.event_id.to_string(),
        event_type: event.event_type.to_owned(),
        schema_version: event.schema_version,
        recorded_at: event.recorded_at,
        data: event.data.to_owned(),
        metadata: event.metadata.to_owned(),
        subject_id: None,
        personal_data: None,
        shredded: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eshost_runtime::{PluginKind, VersionedType};

    /// An upcaster's declarations: what it may give (`handles`), what it raises.
    fn upcaster(name: &str, handles: &[&str], upcasts: &[(&str, u32)]) -> PluginInfo {
        PluginInfo {
            name: name.into(),
            kind: PluginKind::Upcaster,
            version: "1".into(),
            handles: handles.iter().map(|&t| t.into()).collect(),
            upcasts: upcasts
                .iter()
                .map(|&(event_type, schema_version)| VersionedType {
                    event_type: event_type.into(),
                    schema_version,
                })
                .collect(),
            content_hash: name.into(),
            wit_version: "0.1.0".into(),
        }
    }

    fn handles(types: &[&str]) -> Vec<String> {
        types.iter().map(|&t| t.into()).collect()
    }

    #[test]
    fn an_event_is_relevant_to_the_plugins_it_may_reach() {
        let deposits = upcaster("deposits", &["FundsDeposited"], &[("FundsDeposited", 1)]);
        // Credited v1 → Deposited v2, then Deposited v2 → Received v3: a chain of renames.
        let credited = upcaster("credited", &["Deposited"], &[("Credited", 1)]);
        let deposited = upcaster("deposited", &["Received"], &[("Deposited", 2)]);
        let claims = Claims::new([&deposits, &credited, &deposited]).unwrap();

        let customers = claims.relevance(&handles(&["CustomerRegistered"]));
        assert!(customers.is_relevant("CustomerRegistered", 1));
        assert!(
            !customers.is_relevant("FundsDeposited", 1),
            "never upcast for it"
        );
        assert!(!customers.is_relevant("Credited", 1));
        assert!(!customers.is_handled("FundsDeposited"));

        let balances = claims.relevance(&handles(&["FundsDeposited"]));
        assert!(balances.is_relevant("FundsDeposited", 1));
        assert!(
            balances.is_relevant("FundsDeposited", 7),
            "a handled type, any version"
        );
        assert!(!balances.is_relevant("Credited", 1));

        let receipts = claims.relevance(&handles(&["Received"]));
        assert!(receipts.is_relevant("Credited", 1), "through two renames");
        assert!(receipts.is_relevant("Deposited", 2));
        assert!(
            !receipts.is_relevant("Deposited", 3),
            "no upcaster raises v3"
        );
        assert!(!receipts.is_relevant("FundsDeposited", 1));

        let everything = claims.relevance(&[]);
        assert!(everything.is_relevant("Anything", 1) && everything.is_handled("Anything"));
    }

    #[test]
    fn an_upcaster_that_declares_no_outputs_may_give_any_type() {
        let open = upcaster("open", &[], &[("Note", 1)]);
        let claims = Claims::new([&open]).unwrap();
        let relevance = claims.relevance(&handles(&["CustomerRegistered"]));
        assert!(relevance.is_relevant("Note", 1));
        assert!(!relevance.is_relevant("Note", 2));
        assert!(
            !relevance.is_handled("Note"),
            "upcast, then kept only as a handled type"
        );
    }

    #[test]
    fn two_claims_of_one_type_and_version_are_ambiguous() {
        let first = upcaster("first", &[], &[("A", 1), ("B", 1)]);
        let second = upcaster("second", &[], &[("B", 2), ("A", 1)]);
        let error = Claims::new([&first, &second]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "upcasters \"first\" and \"second\" both upcast A v1"
        );
    }
}
