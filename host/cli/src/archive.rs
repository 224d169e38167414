//! `eshost archive`: move a stopped directory store's oldest events into sealed segments,
//! then compact `events.redb` so the hot file shrinks by what left it; or a PostgreSQL
//! store's, beside its live nodes, into rows of its `segments` table.

use std::path::Path;
use std::str::FromStr;

use anyhow::{Context, bail};
use clap::Args;
use eshost_api as api;
use eshost_store::{ArchiveCut, EVENTS_FILE, EventStore, Store, StoreConfig, compact_redb};
use eshost_store_postgres::{KekSource, PgConfig, PgStore};

use crate::output::print_json;
use crate::store::StoreArgs;

/// `eshost archive`.
#[derive(Debug, Args)]
pub struct ArchiveArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Archive the events before this: a global position (a bare number: positions below
    /// it) or a time (RFC 3339, e.g. 2026-01-01T00:00:00Z: events recorded before it).
    #[arg(long)]
    before: Before,
}

/// `--before`: a position or a time.
#[derive(Debug, Clone, Copy)]
struct Before(ArchiveCut);

impl FromStr for Before {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse()
                .map(|position| Before(ArchiveCut::BeforePosition(position)))
                .map_err(|_| format!("position {text:?} is too large"));
        }
        api::Timestamp::from_str(text)
            .map(|time| Before(ArchiveCut::BeforeTime(time.0)))
            .map_err(|_| {
                format!(
                    "{text:?} is neither a global position (a bare number) nor an RFC 3339 \
                     time such as 2026-11-28T10:00:00Z"
                )
            })
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

pub(crate) fn archive(args: ArchiveArgs) -> anyhow::Result<()> {
    if eshost_store_postgres::is_postgres_url(&args.store.store) {
        return archive_postgres(args);
    }
    let directory = std::path::PathBuf::from(&args.store.store);
    let events = directory.join(EVENTS_FILE);
    if !events.is_file() {
        bail!("{} holds no store (no {EVENTS_FILE})", directory.display());
    }
    let hot_bytes_before = file_size(&events);
    let mut config = StoreConfig::new(&directory);
    config.keys = args.store.keys.clone();
    let store =
        Store::open(config).with_context(|| format!("opening store {}", directory.display()))?;
    let archived = store.archive(args.before.0)?;
    drop(store);
    // The deleted records' pages go back to the file system (and their old bytes with them).
    let compacted = compact_redb(&events)?;
    let archive_bytes: u64 = std::fs::read_dir(directory.join("archive"))
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    print_json(&serde_json::json!({
        "archived_events": archived.events,
        "archived_through": archived.archived_through,
        "segments": archived.segments,
        "hot_bytes_before": hot_bytes_before,
        "hot_bytes_after": compacted.bytes_after,
        "archive_bytes": archive_bytes,
    }))
}

/// PostgreSQL: nothing to stop or compact first (the archive runs beside live nodes). The
/// archived rows' payloads leave `events` at once, but their space goes back to the file
/// system only when `eshost compact` rewrites the table.
fn archive_postgres(args: ArchiveArgs) -> anyhow::Result<()> {
    if args.store.keys.is_some() {
        bail!(
            "--keys names the key file of a directory store; a postgres store keeps subject \
             keys in its database, wrapped under --key-encryption-key"
        );
    }
    let config = PgConfig::new(
        &args.store.store,
        KekSource::parse(&args.store.key_encryption_key),
    )?;
    let url = config.display_url();
    let store = PgStore::open(config).with_context(|| format!("opening store {url}"))?;
    let hot_bytes_before = store.table_bytes("events")?;
    let archived = store.archive(args.before.0)?;
    print_json(&serde_json::json!({
        "archived_events": archived.events,
        "archived_through": archived.archived_through,
        "segments": archived.segments,
        "hot_bytes_before": hot_bytes_before,
        "hot_bytes_after": store.table_bytes("events")?,
        "archive_bytes": store.table_bytes("segments")?,
    }))
}
