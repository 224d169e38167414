//! Several nodes on one log: what each node learns from the log and does for itself.
//!
//! Every node runs every projection into its own `views.redb` (no leases: reads scale with
//! nodes, a dead node stops nothing for the others, each node's exactly-once commits stay
//! local). What must reach every node goes through the log, in system streams each node
//! follows: code changes in `$plugins` ([`plugins`]), projection rebuilds in `$projections`
//! ([`control`]), erasures in `$erasures` ([`erasures`]). Nodes register in the store
//! ([`Node`]: an id kept in the data directory, the address, a heartbeat, and the last erasure
//! each has purged), so that an erasure can answer when every live node has purged.
//!
//! On the embedded store a single process holds the log: the same paths run, with one node.

pub mod control;
pub mod erasures;
pub mod plugins;
mod start;

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{ReadableTable, TableDefinition};
use serde::Serialize;

use crate::subscription::{Subscription, SubscriptionOptions};
use crate::views::Views;
use eshost_store::{EventStore, NodeReport, RecordedEvent};

/// The file in the data directory that holds this node's id.
pub const NODE_ID_FILE: &str = "node-id";
/// How often a node reports to the registry.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node whose last report is older than this is not live.
pub const LIVE_WITHIN: Duration = Duration::from_secs(5);

/// follower name → the last position it handled.
const FOLLOWED: TableDefinition<&str, u64> = TableDefinition::new("cluster_followed");

/// This node: its id, its address, and what it reports to the registry.
#[derive(Debug, Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

#[derive(Debug)]
struct NodeInner {
    id: String,
    address: String,
    store: Arc<dyn EventStore>,
    erasures_purged: AtomicU64,
    /// Whether the store keeps a registry (PostgreSQL); unknown until the first report.
    registry: std::sync::atomic::AtomicBool,
    stop: tokio::sync::watch::Sender<bool>,
}

/// A node as seen from this one, for answers that wait on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeState {
    /// The node's id.
    pub id: String,
    /// Where its API listens.
    pub address: String,
    /// `done`, `pending` or `not_live`.
    pub state: NodeProgress,
}

/// A node of the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegisteredNode {
    /// Its id.
    pub id: String,
    /// Where its API listens.
    pub address: String,
    /// Whether it reported within [`LIVE_WITHIN`].
    pub live: bool,
    /// Milliseconds since its last report.
    pub age_ms: u64,
    /// The position of the last erasure it purged.
    pub erasures_purged: u64,
    /// Whether it is the node answering.
    pub this_node: bool,
}

/// Where a node is with a piece of work every node must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeProgress {
    /// It has done it.
    Done,
    /// It is live and has not done it yet.
    Pending,
    /// It has not reported within [`LIVE_WITHIN`]; it does the work when it is back.
    NotLive,
}

/// This node's id, from `dir/node-id`, made on first start.
pub fn node_id(dir: &Path) -> std::io::Result<String> {
    let path = dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    std::fs::create_dir_all(dir)?;
    let id = uuid::Uuid::now_v7().to_string();
    let temporary = dir.join(format!("{NODE_ID_FILE}.tmp"));
    std::fs::write(&temporary, &id)?;
    std::fs::rename(&temporary, &path)?;
    Ok(id)
}

impl Node {
    /// This node, reporting to `store`'s registry (if it has one) every [`HEARTBEAT`] from
    /// now on, on the current tokio runtime.
    pub fn start(id: String, address: String, store: Arc<dyn EventStore>) -> Node {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let node = Node {
            inner: Arc::new(NodeInner {
                id,
                address,
                store,
                erasures_purged: AtomicU64::new(0),
                registry: std::sync::atomic::AtomicBool::new(false),
                stop,
            }),
        };
        node.report();
        let weak = Arc::downgrade(&node.inner);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(HEARTBEAT) => {}
                    _ = stopped.changed() => return,
                }
                let Some(inner) = weak.upgrade() else { return };
                let node = Node { inner };
                let _ = tokio::task::spawn_blocking(move || node.report()).await;
            }
        });
        node
    }

    /// The node's id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Where the node's API listens.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// Reports now (blocking).
    pub fn report(&self) {
        let report = NodeReport {
            id: self.inner.id.clone(),
            address: self.inner.address.clone(),
            erasures_purged: self.inner.erasures_purged.load(Ordering::SeqCst),
        };
        match self.inner.store.heartbeat(&report) {
            Ok(registry) => self.inner.registry.store(registry, Ordering::SeqCst),
            Err(error) => tracing::warn!(%error, "reporting to the node registry failed"),
        }
    }

    /// Records that every erasure up to `position` is purged here, and reports it.
    pub fn purged_erasures(&self, position: u64) {
        self.inner
            .erasures_purged
            .fetch_max(position, Ordering::SeqCst);
        self.report();
    }

    /// Stops the heartbeat (the registry then sees the node as not live).
    pub fn stop(&self) {
        let _ = self.inner.stop.send(true);
    }

    /// Waits, up to `wait`, until every live node other than this one reports erasures purged
    /// up to `position`; answers where each node is (this one: done). Blocking.
    pub fn wait_erasures_purged(&self, position: u64, wait: Duration) -> Vec<NodeState> {
        let deadline = Instant::now() + wait;
        loop {
            let states = self.erasure_states(position);
            let pending = states.iter().any(|s| s.state == NodeProgress::Pending);
            if !pending || Instant::now() >= deadline {
                return states;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The nodes sharing the store, as the registry knows them (this one alone on a store
    /// without a registry).
    pub fn registry(&self) -> Result<Vec<RegisteredNode>, String> {
        let rows = self.inner.store.nodes().map_err(|e| e.to_string())?;
        if rows.is_empty() {
            return Ok(vec![RegisteredNode {
                id: self.inner.id.clone(),
                address: self.inner.address.clone(),
                live: true,
                age_ms: 0,
                erasures_purged: self.inner.erasures_purged.load(Ordering::SeqCst),
                this_node: true,
            }]);
        }
        Ok(rows
            .into_iter()
            .map(|row| RegisteredNode {
                this_node: row.report.id == self.inner.id,
                live: row.age_ms <= LIVE_WITHIN.as_millis() as u64,
                id: row.report.id,
                address: row.report.address,
                age_ms: row.age_ms,
                erasures_purged: row.report.erasures_purged,
            })
            .collect())
    }

    fn erasure_states(&self, position: u64) -> Vec<NodeState> {
        let me = NodeState {
            id: self.inner.id.clone(),
            address: self.inner.address.clone(),
            state: NodeProgress::Done,
        };
        let rows = match self.inner.store.nodes() {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(%error, "reading the node registry failed");
                return vec![me];
            }
        };
        let mut states = vec![me];
        for row in rows
            .into_iter()
            .filter(|row| row.report.id != self.inner.id)
        {
            let state = if row.age_ms > LIVE_WITHIN.as_millis() as u64 {
                NodeProgress::NotLive
            } else if row.report.erasures_purged >= position {
                NodeProgress::Done
            } else {
                NodeProgress::Pending
            };
            states.push(NodeState {
                id: row.report.id,
                address: row.report.address,
                state,
            });
        }
        states
    }
}

/// Where a follower of a system stream left off, in this node's `views.redb`.
#[derive(Debug, Clone)]
pub(crate) struct Followed {
    views: Views,
    name: &'static str,
}

impl Followed {
    pub(crate) fn new(views: &Views, name: &'static str) -> Followed {
        Followed {
            views: views.clone(),
            name,
        }
    }

    /// The last position handled, if the follower ran before.
    pub(crate) fn get(&self) -> Result<Option<u64>, String> {
        let txn = self.views.begin_read().map_err(|e| e.to_string())?;
        let table = match txn.open_table(FOLLOWED) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(error.to_string()),
        };
        Ok(table
            .get(self.name)
            .map_err(|e| e.to_string())?
            .map(|v| v.value()))
    }

    /// Records that everything up to `position` is handled (durably).
    pub(crate) fn set(&self, position: u64) -> Result<(), String> {
        let txn = self.views.begin_write().map_err(|e| e.to_string())?;
        {
            let mut table = txn.open_table(FOLLOWED).map_err(|e| e.to_string())?;
            let current = table
                .get(self.name)
                .map_err(|e| e.to_string())?
                .map(|v| v.value());
            if current.is_none_or(|current| current < position) {
                table
                    .insert(self.name, position)
                    .map_err(|e| e.to_string())?;
            }
        }
        txn.commit().map_err(|e| e.to_string())
    }
}

/// Follows the system stream `stream` (events of `event_type`) from position `from` on the
/// current tokio runtime, calling `handle` on a blocking thread for each event, in order,
/// until the store closes or `stop` is set. A failed read is retried after a pause.
pub(crate) fn follow<F, Fut>(
    store: Arc<dyn EventStore>,
    stream: &'static str,
    event_type: &'static str,
    from: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
    handle: F,
) where
    F: FnMut(RecordedEvent) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let options = SubscriptionOptions {
        from,
        stream_prefix: stream.to_owned(),
        event_types: vec![event_type.to_owned()],
        disclose: false,
        ..SubscriptionOptions::default()
    };
    let mut subscription = Subscription::new(store, options);
    let mut handle = handle;
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = subscription.next() => next,
                _ = stop.changed() => return,
            };
            match next {
                None => return,
                Some(Ok(event)) if event.stream_id == stream => handle(event).await,
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    tracing::warn!(%stream, %error, "following a system stream: read failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
}

/// Positions of events this node handled itself (it appended them and acted at once), so its
/// followers skip them. Bounded: a follower removes what it passes.
#[derive(Debug, Default)]
pub(crate) struct HandledHere {
    positions: Mutex<HashSet<u64>>,
}

impl HandledHere {
    pub(crate) fn insert(&self, position: u64) {
        self.positions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(position);
    }

    /// Whether `position` was handled here (and forgets it).
    pub(crate) fn take(&self, position: u64) -> bool {
        self.positions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&position)
    }
}
