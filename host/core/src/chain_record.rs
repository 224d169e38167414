//! Which upcaster chain this node's derived data was built through, kept in `views.redb`, so
//! that a chain that changed while the node was down (a swap through another node, or a new
//! config) is handled at start like a swap: the aggregates' snapshots are dropped and the
//! affected projections rebuilt.

use redb::TableDefinition;

use crate::aggregate::Aggregates;
use crate::projection::Projections;
use crate::upcast::UpcasterChain;
use crate::views::Views;
use eshost_runtime::{LoadedPlugin, PluginKind, Runtime};
use eshost_store::EventStore;

/// One row: the chain, as JSON `[[name, content hash], ...]` in chain order.
const CHAIN: TableDefinition<&str, &str> = TableDefinition::new("upcaster_chain");
const KEY: &str = "chain";

type Versions = Vec<(String, String)>;

fn versions(chain: &UpcasterChain) -> Versions {
    let plugins = chain.plugins();
    let versions = plugins
        .iter()
        .map(|p| (p.info().name.clone(), p.info().content_hash.clone()));
    versions.collect()
}

fn recorded(views: &Views) -> Result<Option<Versions>, redb::Error> {
    let txn = views.begin_read()?;
    let table = match txn.open_table(CHAIN) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let Some(row) = table.get(KEY)? else {
        return Ok(None);
    };
    Ok(serde_json::from_str(row.value()).ok())
}

/// Records `chain` as the one the derived data is built through now.
pub fn record(views: &Views, chain: &UpcasterChain) -> Result<(), redb::Error> {
    let text = serde_json::to_string(&versions(chain)).expect("strings serialize");
    let txn = views.begin_write()?;
    txn.open_table(CHAIN)?.insert(KEY, text.as_str())?;
    txn.commit()?;
    Ok(())
}

/// At start: if the chain recorded differs from `chain` (the one chosen now), drops what was
/// built through the recorded one (as a live swap does), then records `chain`. The old
/// versions are loaded from the store's blobs to know what they claimed; one that cannot be
/// loaded counts as claiming what its successor claims. Returns the projections rebuilding.
pub fn reconcile(
    views: &Views,
    store: &dyn EventStore,
    runtime: &Runtime,
    chain: &UpcasterChain,
    aggregates: &Aggregates,
    projections: &Projections,
) -> anyhow::Result<Vec<String>> {
    let now = versions(chain);
    let before = recorded(views)?;
    let mut rebuilding = Vec::new();
    if let Some(before) = before.filter(|before| *before != now) {
        let mut old = Vec::new();
        for (name, hash) in &before {
            let Ok(Some(bytes)) = store.get_blob(hash) else {
                continue;
            };
            let label = format!("{name} {hash} (the chain recorded in views.redb)");
            if let Ok(LoadedPlugin::Upcaster(plugin)) =
                runtime.load_bytes(&bytes, &label, PluginKind::Upcaster)
            {
                old.push(plugin);
            }
        }
        let old = UpcasterChain::new(old).unwrap_or_else(|_| UpcasterChain::empty());
        let claims = |chain: &UpcasterChain, changed: &dyn Fn(&str, &str) -> bool| {
            let plugins = chain.plugins();
            let changed: Vec<(String, u32)> = plugins
                .iter()
                .filter(|p| changed(&p.info().name, &p.info().content_hash))
                .flat_map(|p| p.info().upcasts.clone())
                .map(|claim| (claim.event_type, claim.schema_version))
                .collect();
            changed
        };
        let mut changed = claims(chain, &|name, hash| {
            !before.iter().any(|(n, h)| n == name && h == hash)
        });
        changed.extend(claims(&old, &|name, hash| {
            !now.iter().any(|(n, h)| n == name && h == hash)
        }));
        let deleted = aggregates.swap_upcasters(chain)?;
        rebuilding = projections.rebuild_after_upcaster_swap(&old, &changed)?;
        tracing::info!(snapshots_deleted = deleted, projections = ?rebuilding, "the upcaster chain changed since this node last ran; what was built through the old one is rebuilt");
    }
    record(views, chain)?;
    Ok(rebuilding)
}
