//! `eshost-bench archive --store postgres://...`: the archive benchmark on the PostgreSQL
//! store, in a scratch schema dropped afterwards. The hot sizes are of the `events` table
//! (with its indexes and TOAST) rewritten by `VACUUM FULL` (what `eshost compact` does), the
//! archive's of the segments' compressed bodies.

use std::sync::Arc;
use std::time::Instant;

use eshost_runtime::{Runtime, RuntimeConfig};
use eshost_store::keys::KeyEncryptionKey;
use eshost_store::{ArchiveCut, EventStore};
use eshost_store_postgres::{KekSource, PgConfig, PgStore};

use super::archive::{ArchiveBenchOptions, ArchiveBenchReport, rebuild, scan};

/// Runs the benchmark against the server at `url`.
pub fn run(options: &ArchiveBenchOptions, url: &str) -> anyhow::Result<ArchiveBenchReport> {
    let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let base = PgConfig::new(url, KekSource::Key(KeyEncryptionKey::generate()?))?;
    let server_url = base.url.clone();
    let separator = if server_url.contains('?') { "&" } else { "?" };
    let config = PgConfig::new(&format!("{server_url}{separator}schema={schema}"), base.kek)?;
    let store = PgStore::open(config)?;
    let report = measure(&store, options);
    drop(store);
    let dropped = drop_schema(&server_url, &schema);
    let report = report?;
    dropped?;
    Ok(report)
}

fn measure(store: &PgStore, options: &ArchiveBenchOptions) -> anyhow::Result<ArchiveBenchReport> {
    let scratch = match &options.dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    super::projection::fill(store, options.events, options.accounts)?;
    store.compact()?;
    let hot_bytes_before = store.table_bytes("events")?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(scratch.path().join("cache")),
        ..RuntimeConfig::default()
    })?;
    runtime.load_projection(&options.plugin)?;
    let shared: Arc<dyn EventStore> = Arc::new(store.clone());
    let head = store.head();
    let scan_hot_seconds = scan(store)?;
    let rebuild_hot_seconds = rebuild(
        shared.clone(),
        &runtime,
        &options.plugin,
        options.batch,
        &scratch.path().join("views-hot"),
    )?;
    let started = Instant::now();
    let archived = store.archive(ArchiveCut::BeforePosition(head + 1))?;
    let archive_seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(archived.archived_through == head, "archived {archived:?}");
    store.compact()?;
    let hot_bytes_after = store.table_bytes("events")?;
    let scan_archive_seconds = scan(store)?;
    let rebuild_archive_seconds = rebuild(
        shared,
        &runtime,
        &options.plugin,
        options.batch,
        &scratch.path().join("views-archive"),
    )?;
    anyhow::ensure!(
        store.verify()?.is_ok(),
        "the archived store does not verify"
    );
    let archive_bytes: u64 = archived.segments.iter().map(|s| s.bytes).sum();
    let raw_bytes: u64 = archived.segments.iter().map(|s| s.raw_bytes).sum();
    Ok(ArchiveBenchReport {
        events: head,
        hot_bytes_before,
        hot_bytes_after,
        archive_bytes,
        raw_bytes,
        compression_ratio: raw_bytes as f64 / archive_bytes.max(1) as f64,
        segments: archived.segments.len(),
        archive_seconds,
        scan_hot_seconds,
        scan_archive_seconds,
        rebuild_hot_seconds,
        rebuild_archive_seconds,
        load_average: super::projection::load_average(),
    })
}

fn drop_schema(url: &str, schema: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await?;
        anyhow::Ok(())
    })
}
