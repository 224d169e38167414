//! Verbs on a stopped store (`--store`): append, read, all, streams, verify, export, import,
//! forget, compact. `append`, `read` and `forget` go through a running host instead when one
//! is named.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use eshost_api::{self as api, ExpectedVersion};
use eshost_store::{
    AllRead, AppendRequest, Bounds, Direction, EventStore, ProposedEvent, RecordedEvent, Store,
    StoreConfig, StreamRead, Until, block_on,
};
use eshost_store_postgres::{KekSource, PgConfig, PgStore, is_postgres_url};
use reqwest::Method;

use crate::client_verbs::{ServerArgs, online};
use crate::output::{print_json, print_lines};

/// Where the store is.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The store directory (holds events.redb), or a postgres://USER@HOST:PORT/DB URL.
    #[arg(long, env = "ESHOST_STORE", default_value = "eshost-data")]
    pub store: String,
    /// The personal-data key file of a directory store [default: keys.eshk in it].
    #[arg(long, env = "ESHOST_KEYS")]
    pub keys: Option<PathBuf>,
    /// A postgres store's key-encryption key: `env:NAME` or a file.
    #[arg(long, env = "ESHOST_KEY_ENCRYPTION_KEY", default_value = "eshost.kek")]
    pub key_encryption_key: String,
}

impl StoreArgs {
    /// The directory of a directory store; an error for a postgres store.
    pub fn directory(&self, verb: &str) -> anyhow::Result<PathBuf> {
        if is_postgres_url(&self.store) {
            bail!(
                "`eshost {verb}` works on a directory store; with a postgres store, run it through a running host (--server)"
            );
        }
        Ok(PathBuf::from(&self.store))
    }
}

/// `eshost append`.
#[derive(Debug, Args)]
pub struct AppendArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// With --server (or --config, or ESHOST_SERVER), append through a running host instead.
    #[command(flatten)]
    server: ServerArgs,
    /// The stream, e.g. `account-42`.
    stream: String,
    /// The event type, e.g. `FundsDeposited`.
    #[arg(long = "type")]
    event_type: String,
    /// The event's data, a JSON value.
    #[arg(long, default_value = "{}")]
    data: String,
    /// The event's metadata, a JSON object.
    #[arg(long, default_value = "{}")]
    metadata: String,
    /// The event's id (a UUID); a fresh one by default. Re-sending an id is idempotent.
    #[arg(long)]
    id: Option<uuid::Uuid>,
    /// The schema version of the data.
    #[arg(long, default_value_t = 1)]
    schema_version: u32,
    /// Only append if the stream is at this version: any, no_stream, stream_exists or a number.
    #[arg(long, default_value = "any")]
    expected: ExpectedVersion,
}

/// `eshost read`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// With --server (or --config, or ESHOST_SERVER), read from a running host instead.
    #[command(flatten)]
    server: ServerArgs,
    /// The stream.
    stream: String,
    /// The version the read starts at: the lowest forward (default 1), the highest backward
    /// (default the last).
    #[arg(long)]
    from: Option<u64>,
    /// Newest first.
    #[arg(long)]
    backward: bool,
    /// The most events to print (with --server, one page: at most 10000).
    #[arg(long)]
    limit: Option<usize>,
    /// Only events at or after this global position.
    #[arg(long)]
    from_position: Option<u64>,
    /// Only events at or before this stream version.
    #[arg(long)]
    until_version: Option<u64>,
    #[command(flatten)]
    range: RangeArgs,
}

impl ReadArgs {
    fn query(&self) -> api::ReadStreamQuery {
        api::ReadStreamQuery {
            from: self.from,
            backward: self.backward,
            limit: self.limit.map(|limit| limit as u64),
            from_position: self.from_position,
            from_time: self.range.from_time,
            until_version: self.until_version,
            until_position: self.range.until_position,
            until_time: self.range.until_time,
        }
    }
}

/// `eshost all`.
#[derive(Debug, Args)]
pub struct AllArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// First position to read.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// The most events to print.
    #[arg(long)]
    limit: Option<usize>,
    /// Only events of this type (repeatable).
    #[arg(long = "type")]
    event_types: Vec<String>,
    #[command(flatten)]
    range: RangeArgs,
}

/// The bounds of a read besides its start: every one given applies. A time is ms since the
/// Unix epoch or RFC 3339 (`2026-11-28T10:00:00Z`).
#[derive(Debug, Args)]
pub struct RangeArgs {
    /// Only events recorded at or after this time.
    #[arg(long)]
    from_time: Option<api::Timestamp>,
    /// Only events at or before this global position.
    #[arg(long)]
    until_position: Option<u64>,
    /// Only events recorded at or before this time.
    #[arg(long)]
    until_time: Option<api::Timestamp>,
}

/// `eshost streams`.
#[derive(Debug, Args)]
pub struct StreamsArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Only streams whose id starts with this, e.g. `account-`.
    #[arg(long, default_value = "")]
    prefix: String,
    /// The most streams to print.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
}

/// `eshost export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Only this stream (an export of one stream cannot be imported as a whole log).
    #[arg(long)]
    stream: Option<String>,
    /// Write here instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Also write every subject's personal-data key (or tombstone) to this file. Without it
    /// the export holds personal data only as ciphertext. Whoever holds both files can read
    /// that data: keep them apart.
    #[arg(long)]
    keys_output: Option<PathBuf>,
}

/// `eshost import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Read this file instead of standard input.
    input: Option<PathBuf>,
    /// Events per commit.
    #[arg(long, default_value_t = 1000)]
    chunk: usize,
    /// Add the keys of a key export (`eshost export --keys-output`) first, so imported
    /// personal data stays readable. Without it, it reads as shredded.
    #[arg(long = "import-keys")]
    import_keys: Option<PathBuf>,
}

/// `eshost forget`.
#[derive(Debug, Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// With --server (or --config, or ESHOST_SERVER), forget through a running host (admin).
    #[command(flatten)]
    server: ServerArgs,
    /// The data subject, e.g. `customer-42`.
    subject: String,
    /// Why (a ticket number, say). Stored in the log: no personal data here.
    #[arg(long)]
    reason: Option<String>,
}

fn open(args: &StoreArgs) -> anyhow::Result<Arc<dyn EventStore>> {
    if is_postgres_url(&args.store) {
        if args.keys.is_some() {
            bail!(
                "--keys names the key file of a directory store; a postgres store keeps subject \
                 keys in its database, wrapped under --key-encryption-key"
            );
        }
        let config = PgConfig::new(&args.store, KekSource::parse(&args.key_encryption_key))?;
        let url = config.display_url();
        return Ok(Arc::new(
            PgStore::open(config).with_context(|| format!("opening store {url}"))?,
        ));
    }
    let mut config = StoreConfig::new(&args.store);
    config.keys = args.keys.clone();
    Ok(Arc::new(Store::open(config).with_context(|| {
        format!("opening store {}", args.store)
    })?))
}

/// Events read offline, with their personal data decrypted: whoever runs the tool holds the
/// keys anyway.
fn revealed(store: &dyn EventStore, mut events: Vec<RecordedEvent>) -> Vec<RecordedEvent> {
    for event in &mut events {
        store.reveal_owned(event);
    }
    events
}

pub(crate) fn append(args: AppendArgs) -> anyhow::Result<()> {
    if args.server.named() {
        return append_online(args);
    }
    let store = open(&args.store)?;
    let mut event = ProposedEvent::new(args.event_type, args.data)
        .with_metadata(args.metadata)
        .with_schema_version(args.schema_version);
    if let Some(id) = args.id {
        event = event.with_id(id);
    }
    let expected = match args.expected {
        ExpectedVersion::Any => eshost_store::ExpectedVersion::Any,
        ExpectedVersion::NoStream => eshost_store::ExpectedVersion::NoStream,
        ExpectedVersion::StreamExists => eshost_store::ExpectedVersion::StreamExists,
        ExpectedVersion::Exact(version) => eshost_store::ExpectedVersion::Exact(version),
    };
    let appended = block_on(store.append(AppendRequest::new(args.stream, expected, vec![event])))?;
    print_json(&appended)
}

/// `POST /streams/{id}` on a running host.
fn append_online(args: AppendArgs) -> anyhow::Result<()> {
    let json = |text: &str, what: &str| -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(text)
            .with_context(|| format!("the event's {what} is not JSON: {text}"))
    };
    let event = api::NewEvent {
        metadata: Some(json(&args.metadata, "metadata")?),
        id: args.id,
        schema_version: Some(args.schema_version),
        ..api::NewEvent::new(args.event_type, json(&args.data, "data")?)
    };
    let body = api::AppendRequest {
        expected: args.expected,
        events: vec![event],
    };
    let client = args.server.client()?;
    let url = client.url(&["streams", &args.stream]);
    online(client.print::<api::Appended>(client.request(Method::POST, url).json(&body)))
}

/// `GET /streams/{id}` on a running host.
fn read_online(args: ReadArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    let url = client.url(&["streams", &args.stream]);
    let query = args.query();
    online(client.print::<api::StreamEvents>(client.request(Method::GET, url).query(&query)))
}

pub(crate) fn read(args: ReadArgs) -> anyhow::Result<()> {
    if args.server.named() {
        return read_online(args);
    }
    let store = open(&args.store)?;
    let Some(info) = store.stream_info(&args.stream)? else {
        bail!("stream {:?} does not exist", args.stream);
    };
    let query = args.query();
    let Some(versions) =
        Bounds::from(&query).stream_versions(&*store, &args.stream, info.version)?
    else {
        return Ok(());
    };
    let (low, high) = versions.into_inner();
    let mut read = if args.backward {
        StreamRead::backward()
    } else {
        StreamRead::forward()
    };
    read.from_version = if args.backward { high } else { low };
    let count = usize::try_from(high - low + 1).unwrap_or(usize::MAX);
    read.limit = args.limit.unwrap_or(usize::MAX).min(count);
    print_lines(revealed(&*store, store.read_stream(&args.stream, &read)?))
}

pub(crate) fn all(args: AllArgs) -> anyhow::Result<()> {
    let store = open(&args.store)?;
    let query = api::AllQuery {
        from: Some(args.from),
        limit: None,
        types: None,
        from_time: args.range.from_time,
        until_position: args.range.until_position,
        until_time: args.range.until_time,
    };
    let Some(positions) = Bounds::from(&query).all_positions(&*store)? else {
        return Ok(());
    };
    let read = AllRead {
        from_position: *positions.start(),
        direction: Direction::Forward,
        limit: args.limit.unwrap_or(usize::MAX),
        event_types: args.event_types,
        until: Some(Until::Position(*positions.end())),
    };
    print_lines(revealed(&*store, store.read_all(&read)?))
}

pub(crate) fn streams(args: StreamsArgs) -> anyhow::Result<()> {
    let store = open(&args.store)?;
    let streams = store.streams(&args.prefix, None, args.limit)?;
    print_lines(
        streams
            .into_iter()
            .map(|(stream_id, info)| serde_json::json!({ "stream_id": stream_id, "info": info })),
    )
}

pub(crate) fn export(args: ExportArgs) -> anyhow::Result<()> {
    let store = open(&args.store)?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let written = eshost_store::transfer::export(&*store, args.stream.as_deref(), &mut out)?;
    if args.output.is_some() {
        eprintln!("exported {written} events");
    }
    if let Some(path) = &args.keys_output {
        let mut keys = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        let subjects = eshost_store::transfer::export_keys(&*store, &mut keys)?;
        eprintln!(
            "exported the keys of {subjects} subjects to {}: keep it apart from the export",
            path.display()
        );
    }
    Ok(())
}

pub(crate) fn forget(args: ForgetArgs) -> anyhow::Result<()> {
    if args.server.named() {
        let client = args.server.client()?;
        let url = client.url(&["subjects", &args.subject, "forget"]);
        let body = api::ForgetRequest {
            reason: args.reason,
        };
        let request = client.request(Method::POST, url).json(&body);
        return online(client.print::<api::ForgetReport>(request));
    }
    let directory = args.store.directory("forget")?;
    let store = open(&args.store)?;
    let views = eshost_core::views::Views::open(&directory)?;
    let forgetting =
        eshost_core::privacy::Forgetting::new(store, views, None, None, Duration::from_secs(0));
    let request = eshost_core::privacy::ForgetRequest {
        user: std::env::var("USER").ok(),
        reason: args.reason,
    };
    let report = forgetting.forget(&args.subject, &request)?;
    print_json(&report)?;
    eprintln!(
        "the key is erased and snapshots deleted; read models are rebuilt when the host next starts"
    );
    Ok(())
}

pub(crate) fn import(args: ImportArgs) -> anyhow::Result<()> {
    let store = open(&args.store)?;
    let mut input: Box<dyn std::io::BufRead> = match &args.input {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    if let Some(path) = &args.import_keys {
        let mut keys = std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        );
        let added = eshost_store::transfer::import_keys(&*store, &mut keys)
            .with_context(|| format!("importing keys from {}", path.display()))?;
        eprintln!("imported {added} keys and tombstones");
    }
    let report = eshost_store::transfer::import(&*store, &mut input, args.chunk.max(1))?;
    print_json(&report)
}

pub(crate) fn verify(args: StoreArgs) -> anyhow::Result<()> {
    let store = open(&args)?;
    let report = store.verify()?;
    println!("{report}");
    if !report.is_ok() {
        bail!("verification failed");
    }
    Ok(())
}

/// `eshost compact`: both redb files of a stopped directory store, or every table of a
/// PostgreSQL store (beside live nodes).
pub(crate) fn compact(args: StoreArgs) -> anyhow::Result<()> {
    let files = if is_postgres_url(&args.store) {
        let config = PgConfig::new(&args.store, KekSource::parse(&args.key_encryption_key))?;
        let url = config.display_url();
        let store = PgStore::open(config).with_context(|| format!("opening store {url}"))?;
        store.compact()?
    } else {
        let directory = PathBuf::from(&args.store);
        let (events, views) = (
            directory.join(eshost_store::EVENTS_FILE),
            directory.join(eshost_core::views::VIEWS_FILE),
        );
        if !events.is_file() && !views.is_file() {
            bail!(
                "{} holds no store (no {} or {})",
                directory.display(),
                eshost_store::EVENTS_FILE,
                eshost_core::views::VIEWS_FILE
            );
        }
        let mut files = Vec::new();
        // A PostgreSQL node's data directory holds only its views.
        if events.is_file() {
            let mut config = StoreConfig::new(&directory);
            config.keys = args.keys.clone();
            files.push(Store::compact(config)?);
        }
        if views.is_file() {
            files.push(eshost_core::views::compact(&directory)?);
        }
        files
    };
    let before: u64 = files.iter().map(|f| f.bytes_before).sum();
    let after: u64 = files.iter().map(|f| f.bytes_after).sum();
    print_json(&serde_json::json!({
        "compacted": files,
        "bytes_before": before,
        "bytes_after": after,
    }))
}
