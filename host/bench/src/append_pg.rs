//! `eshost-bench append --store postgres://...`: the same workload through the PostgreSQL
//! store, in a scratch schema of the named database, then in the same run on the same
//! database: the latency of one durable single-row commit (what every batch of the store
//! waits for at least once, as batches commit one after another under the log-head lock),
//! and the baseline, raw batched INSERTs of the same records into a table shaped like the
//! store's, `baseline_batch` per transaction.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use eshost_store::Durability;
use eshost_store::codec::{GENESIS_HASH, RecordBody};
use eshost_store::keys::KeyEncryptionKey;
use eshost_store_postgres::{KekSource, PgConfig, PgStore};
use serde::Serialize;
use tokio_postgres::types::ToSql;

use super::append::{AppendBenchOptions, AppendBenchReport, Measured, drive, payload};
use super::percentile;

/// The server as the run found it.
#[derive(Debug, Clone, Serialize)]
pub struct ServerProfile {
    /// `server_version`.
    pub version: String,
    /// `fsync`.
    pub fsync: String,
    /// `synchronous_commit` (the store's sessions turn `off` into `on`).
    pub synchronous_commit: String,
    /// `wal_sync_method`.
    pub wal_sync_method: String,
    /// One-row autocommit INSERTs, each a durable commit: median latency, microseconds.
    pub commit_p50_us: u64,
    /// Their 99th percentile.
    pub commit_p99_us: u64,
}

/// Run the store phase, the commit probe and the baseline; drop the scratch schema.
pub fn run(options: &AppendBenchOptions, url: &str) -> anyhow::Result<AppendBenchReport> {
    if options.durability != Durability::Immediate {
        bail!(
            "--durability none is for the embedded store; a PostgreSQL store commits durably \
             (its sessions run with synchronous_commit on)"
        );
    }
    let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let base = PgConfig::new(url, KekSource::Key(KeyEncryptionKey::generate()?))?;
    let server_url = base.url.clone();
    let mut config = PgConfig::new(
        &format!("{server_url}{}schema={schema}", separator(&server_url)),
        base.kek,
    )?;
    config.max_batch = base.max_batch;
    let store = PgStore::open(config)?;
    let measured = drive(Arc::new(store.clone()), options);
    let stats =
        measured.map(|(latencies, seconds)| Measured::of(store.writer_stats(), latencies, seconds));
    drop(store);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (profile, baseline) = runtime.block_on(async {
        let (client, connection) =
            tokio_postgres::connect(&server_url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let outcome = async {
            let profile = profile(&client, &schema).await?;
            let baseline = baseline(&client, &schema, options).await?;
            anyhow::Ok((profile, baseline))
        }
        .await;
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await?;
        outcome
    })?;
    Ok(stats?.report(options, "postgres", Some(profile), baseline))
}

fn separator(url: &str) -> &'static str {
    if url.contains('?') { "&" } else { "?" }
}

async fn profile(client: &tokio_postgres::Client, schema: &str) -> anyhow::Result<ServerProfile> {
    let show = async |name: &str| -> anyhow::Result<String> {
        Ok(client.query_one(&format!("SHOW {name}"), &[]).await?.get(0))
    };
    let table = format!("\"{schema}\".commit_probe");
    client
        .batch_execute(&format!("CREATE TABLE {table} (n bigint)"))
        .await?;
    let insert = client
        .prepare(&format!("INSERT INTO {table} VALUES ($1)"))
        .await?;
    let mut latencies = Vec::new();
    for n in 0..300i64 {
        let started = Instant::now();
        client.execute(&insert, &[&n]).await?;
        latencies.push(started.elapsed().as_micros() as u64);
    }
    latencies.sort_unstable();
    Ok(ServerProfile {
        version: show("server_version").await?,
        fsync: show("fsync").await?,
        synchronous_commit: show("synchronous_commit").await?,
        wal_sync_method: show("wal_sync_method").await?,
        commit_p50_us: percentile(&latencies, 0.5),
        commit_p99_us: percentile(&latencies, 0.99),
    })
}

/// Raw INSERTs of the same records into a copy of the store's events table (same columns and
/// indexes), `baseline_batch` per transaction, one connection, for `duration`.
async fn baseline(
    client: &tokio_postgres::Client,
    schema: &str,
    options: &AppendBenchOptions,
) -> anyhow::Result<f64> {
    let table = format!("\"{schema}\".raw_events");
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (LIKE \"{schema}\".events INCLUDING ALL)"
        ))
        .await?;
    let insert = client
        .prepare(&format!(
            "INSERT INTO {table} SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[],
                 $4::uuid[], $5::text[], $6::bigint[], $7::bigint[], $8::text[], $9::text[],
                 $10::text[], $11::bytea[], $12::bytea[])"
        ))
        .await?;
    let payload = payload(options.event_bytes);
    let batch = options.baseline_batch.max(1);
    let mut previous = GENESIS_HASH;
    let mut position = 0i64;
    let mut record = Vec::new();
    let started = Instant::now();
    while started.elapsed() < options.duration.max(Duration::from_millis(1)) {
        let mut positions = Vec::with_capacity(batch);
        let mut ids = Vec::with_capacity(batch);
        let mut hashes = Vec::with_capacity(batch);
        for _ in 0..batch {
            position += 1;
            let id = uuid::Uuid::now_v7();
            record.clear();
            previous = RecordBody {
                stream_version: position as u64,
                event_id: id,
                schema_version: 1,
                recorded_at: 0,
                stream_id: "bench-0",
                event_type: "BenchEvent",
                data: &payload,
                metadata: "{}",
                personal: None,
            }
            .encode_into(position as u64, &previous, &mut record);
            positions.push(position);
            ids.push(id);
            hashes.push(previous.to_vec());
        }
        let streams = vec!["bench-0"; batch];
        let types = vec!["BenchEvent"; batch];
        let ones = vec![1i64; batch];
        let zeros = vec![0i64; batch];
        let data = vec![payload.as_str(); batch];
        let metadata = vec!["{}"; batch];
        let none_text: Vec<Option<&str>> = vec![None; batch];
        let none_bytes: Vec<Option<&[u8]>> = vec![None; batch];
        let params: [&(dyn ToSql + Sync); 12] = [
            &positions,
            &streams,
            &positions,
            &ids,
            &types,
            &ones,
            &zeros,
            &data,
            &metadata,
            &none_text,
            &none_bytes,
            &hashes,
        ];
        let ((), _, ()) = tokio::try_join!(
            client.batch_execute("BEGIN"),
            client.execute(&insert, &params),
            client.batch_execute("COMMIT"),
        )?;
    }
    Ok(position as f64 / started.elapsed().as_secs_f64())
}
