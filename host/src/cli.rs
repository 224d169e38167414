//! The `eshost` command line: clap definitions and the code behind each verb.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use reqwest::Method;

use crate::bench;
use crate::store::{
    AllRead, AppendRequest, Direction, Durability, EventStore, ExpectedVersion, ProposedEvent,
    RecordedEvent, Store, StoreConfig, StreamRead, Until,
};

/// eshost: an event-sourcing host with an embedded event store and WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "eshost", version, about, long_about = None)]
pub struct Cli {
    /// Log format (logs go to stderr; the level comes from ESHOST_LOG, e.g. `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the host: the HTTP API over the store and plugins a config file names.
    Run(RunArgs),
    /// Print shell completions for SHELL to stdout.
    Completions(CompletionsArgs),
    /// Append one event to a stream: of a stopped store (--store), or through a running host
    /// (--server).
    Append(AppendArgs),
    /// Read a stream: of a stopped store (--store, one JSON event per line), or from a running
    /// host (--server).
    Read(ReadArgs),
    /// Read `$all` (every stream, in commit order), one JSON event per line.
    All(AllArgs),
    /// List streams, optionally those whose id starts with a prefix.
    Streams(StreamsArgs),
    /// Re-check positions, stream versions and the hash chain of a stopped store.
    Verify(StoreArgs),
    /// Write a stopped store's events (or one stream's) as NDJSON, exactly as stored.
    Export(ExportArgs),
    /// Restore NDJSON exported by `eshost export` into a stopped store, keeping positions,
    /// ids, times and hashes; every event must continue the store's log.
    Import(ImportArgs),
    /// Forget a data subject: erase its personal-data key, record the erasure in
    /// `$erasures`, and purge state derived from its data. Through a running host (--server)
    /// or on a stopped store (--store; read models are then rebuilt when the host starts).
    Forget(ForgetArgs),
    /// Measure the host: prints figures beside a baseline measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Work with plugin files (`inspect`), or a running host's plugins (`list`, `swap`).
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Send a command (a JSON object) to an aggregate of a running host; prints the recorded
    /// events. A refusal by a business rule (HTTP 422) is printed as an error and exits 1.
    Command(ClientCommandArgs),
    /// Print an aggregate's state from a running host: latest, or as of a version or time.
    State(ClientStateArgs),
    /// Print an aggregate's audit trail from a running host: each event with the state after it.
    History(ClientHistoryArgs),
    /// Follow a running host's events (server-sent events) and print each as one JSON line,
    /// until interrupted, the server stops, or `--limit` events were printed.
    Subscribe(ClientSubscribeArgs),
    /// A running host's projections: list, status, query, pause, resume, rebuild.
    #[command(subcommand)]
    Projection(ProjectionCommand),
    /// Run a projection plugin over the whole history of a stopped store into a temporary
    /// read model; optionally diff it against a live projection.
    Replay(ReplayArgs),
}

/// `eshost run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The config file.
    #[arg(long, short, env = "ESHOST_CONFIG", default_value = "eshost.toml")]
    pub config: PathBuf,
    /// Listen here instead of the config's `listen` (port 0: any free port; the bound
    /// address is printed on stdout).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
}

/// `eshost completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// Where the store is.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The store directory (holds events.redb).
    #[arg(long, env = "ESHOST_STORE", default_value = "eshost-data")]
    pub store: PathBuf,
    /// The personal-data key file [default: keys.eshk in the store directory].
    #[arg(long, env = "ESHOST_KEYS")]
    pub keys: Option<PathBuf>,
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
    /// First version to read (forward from 1, backward from the end by default).
    #[arg(long)]
    from: Option<u64>,
    /// Newest first.
    #[arg(long)]
    backward: bool,
    /// The most events to print.
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    until: UntilArgs,
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
    until: UntilArgs,
}

/// Upper bounds for "as of" reads.
#[derive(Debug, Args)]
pub struct UntilArgs {
    /// Only events at or before this global position.
    #[arg(long, conflicts_with = "until_time")]
    until_position: Option<u64>,
    /// Only events recorded at or before this time, ms since the Unix epoch.
    #[arg(long)]
    until_time: Option<u64>,
}

impl UntilArgs {
    fn until(&self) -> Option<Until> {
        self.until_position
            .map(Until::Position)
            .or(self.until_time.map(Until::Time))
    }
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

/// `eshost bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Concurrent single-event appends, durable by default, against raw redb inserts.
    Append(BenchAppendArgs),
    /// Replays one account's long history through the bank-account component, against the
    /// same aggregate compiled natively; also times a cold and a cached plugin load.
    Replay(BenchReplayArgs),
    /// Concurrent clients sending deposits through the command pipeline (durable).
    Command(BenchCommandArgs),
    /// Rebuilds one aggregate with a long history, replaying it and from a snapshot.
    Load(BenchLoadArgs),
    /// Rebuilds the balances projection over a large store through the projection runner,
    /// and times a hot swap from the file changing to the new version serving.
    Projection(BenchProjectionArgs),
    /// Starts the real HTTP server in-process on a loopback port (scratch durable store,
    /// bank-account plugin) and sends deposits from concurrent keep-alive HTTP clients.
    Http(BenchHttpArgs),
}

/// `eshost bench http`.
#[derive(Debug, Args)]
pub struct BenchHttpArgs {
    /// The bank-account component.
    #[arg(
        long,
        default_value = "plugins/target/wasm32-wasip2/release/bank_account.wasm"
    )]
    plugin: PathBuf,
    /// Concurrent HTTP clients (keep-alive connections to 127.0.0.1), each with one request
    /// in flight; at most 1024.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Accounts the deposits are spread over (opened first).
    #[arg(long, default_value_t = 1_000)]
    accounts: usize,
    /// Seconds to send (at most 600).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Threads of the clients' async runtime (the server has one per core).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Snapshot interval, events.
    #[arg(long, default_value_t = 1_000)]
    snapshot_every: u64,
    /// Directory for the scratch store (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// `eshost bench projection`.
#[derive(Debug, Args)]
pub struct BenchProjectionArgs {
    /// The balances component.
    #[arg(
        long,
        default_value = "plugins/target/wasm32-wasip2/release/balances.wasm"
    )]
    plugin: PathBuf,
    /// Events in the store.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Accounts the events are spread over.
    #[arg(long, default_value_t = 10_000)]
    accounts: u64,
    /// Events per `handle` call.
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
    /// Directory for the scratch store (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// `eshost replay`. Events go through the live host's upcasters: those of `--config`, or the
/// `--upcaster` files. Flags given beside `--config` win over it: `--store`/`--keys` over its
/// `store`/`keys`, and any `--upcaster` replaces its whole `[[upcasters]]` chain.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The live host's config file: replay its store, with its key file, sandbox limits and
    /// `[[upcasters]]` chain.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The store directory (holds events.redb) [default: the config's `store`, else
    /// eshost-data].
    #[arg(long, env = "ESHOST_STORE")]
    store: Option<PathBuf>,
    /// The personal-data key file [default: the config's `keys`, else keys.eshk in the store
    /// directory].
    #[arg(long, env = "ESHOST_KEYS")]
    keys: Option<PathBuf>,
    /// An upcaster component; repeat the flag for a chain, in chain order. Replaces the
    /// config's `[[upcasters]]`.
    #[arg(long = "upcaster", value_name = "FILE")]
    upcasters: Vec<PathBuf>,
    /// The projection component to replay.
    #[arg(long)]
    plugin: PathBuf,
    /// Compare the result key by key with this live projection.
    #[arg(long)]
    diff: Option<String>,
    /// Events per `handle` call.
    #[arg(long, default_value_t = 2_000)]
    batch: usize,
    /// Differing keys to show per kind (added, removed, changed).
    #[arg(long, default_value_t = 5)]
    samples: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// `eshost bench command`.
#[derive(Debug, Args)]
pub struct BenchCommandArgs {
    /// The bank-account component.
    #[arg(
        long,
        default_value = "plugins/target/wasm32-wasip2/release/bank_account.wasm"
    )]
    plugin: PathBuf,
    /// Concurrent clients, each with one command in flight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Accounts the deposits are spread over.
    #[arg(long, default_value_t = 1_000)]
    accounts: usize,
    /// Seconds to send.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Pipeline worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Snapshot interval, events.
    #[arg(long, default_value_t = 1_000)]
    snapshot_every: u64,
    /// Commit durability.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Immediate)]
    durability: DurabilityArg,
    /// Directory for the scratch store (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// `eshost bench load`.
#[derive(Debug, Args)]
pub struct BenchLoadArgs {
    /// The bank-account component.
    #[arg(
        long,
        default_value = "plugins/target/wasm32-wasip2/release/bank_account.wasm"
    )]
    plugin: PathBuf,
    /// Events in the account's history.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Timed loads of each kind (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Directory for the scratch store (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// `eshost bench replay`.
#[derive(Debug, Args)]
pub struct BenchReplayArgs {
    /// The bank-account component.
    #[arg(
        long,
        default_value = "plugins/target/wasm32-wasip2/release/bank_account.wasm"
    )]
    plugin: PathBuf,
    /// Events in the account's history.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Events per `apply` call.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Component cache to time loads against (default: a fresh temporary one).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// `eshost plugin ...`.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// What a plugin file is: kind, name, contract version, events, imports, hash.
    Inspect(PluginInspectArgs),
    /// The plugins a running host has loaded.
    List(ServerArgs),
    /// Hot-swap a running host's aggregate or projection plugin NAME with the component FILE
    /// (uploaded; needs an admin token when tokens are configured).
    Swap(PluginSwapArgs),
}

/// Which running host the client verbs talk to.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The host's URL [default: the `listen` address of --config, else http://127.0.0.1:7070].
    #[arg(long, env = "ESHOST_SERVER")]
    server: Option<String>,
    /// Take the host's address from this config file's `listen`.
    #[arg(long, short, conflicts_with = "server")]
    config: Option<PathBuf>,
    /// Bearer token (needed when the host configures tokens).
    #[arg(long, env = "ESHOST_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ServerArgs {
    /// Whether a host was named, so that a verb with an offline form goes online.
    fn named(&self) -> bool {
        self.server.is_some() || self.config.is_some()
    }

    fn client(&self) -> anyhow::Result<crate::client::Client> {
        let server = match (&self.server, &self.config) {
            (Some(server), _) => server.clone(),
            (None, Some(config)) => crate::client::server_from_config(config)?,
            (None, None) => format!("http://{}", crate::config::DEFAULT_LISTEN),
        };
        crate::client::Client::new(&server, self.token.clone())
    }
}

/// `eshost command`.
#[derive(Debug, Args)]
pub struct ClientCommandArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The aggregate type, e.g. `bank-account`.
    aggregate_type: String,
    /// The aggregate id, e.g. `account-1`.
    id: String,
    /// The command, a JSON object, e.g. '{"type":"Deposit","amount":5}'.
    json: String,
    /// Only if the aggregate is at this version (else HTTP 409).
    #[arg(long)]
    expected_version: Option<u64>,
    /// Re-sending a command with the same key returns the first answer instead of running it
    /// again.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// `eshost state`.
#[derive(Debug, Args)]
pub struct ClientStateArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The aggregate type.
    aggregate_type: String,
    /// The aggregate id.
    id: String,
    /// The state after this version.
    #[arg(long, conflicts_with = "at")]
    version: Option<u64>,
    /// The state as of this time, ms since the Unix epoch.
    #[arg(long)]
    at: Option<u64>,
}

/// `eshost history`.
#[derive(Debug, Args)]
pub struct ClientHistoryArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The aggregate type.
    aggregate_type: String,
    /// The aggregate id.
    id: String,
}

/// `eshost subscribe`.
#[derive(Debug, Args)]
pub struct ClientSubscribeArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// First global position (default 1: from the beginning).
    #[arg(long)]
    from: Option<u64>,
    /// Only streams whose id starts with this, e.g. `account-`.
    #[arg(long)]
    stream_prefix: Option<String>,
    /// Only these event types, comma-separated.
    #[arg(long, value_delimiter = ',')]
    types: Vec<String>,
    /// Stop after this many events.
    #[arg(long)]
    limit: Option<u64>,
}

/// `eshost projection ...`.
#[derive(Debug, Subcommand)]
pub enum ProjectionCommand {
    /// Every projection's status.
    List(ServerArgs),
    /// One projection's status: position, lag, state, plugin hash.
    Status(ProjectionNameArgs),
    /// Ask projection NAME the query Q with optional arguments ARGS_JSON.
    Query(ProjectionQueryArgs),
    /// Pause projection NAME (admin).
    Pause(ProjectionNameArgs),
    /// Resume projection NAME; a failed event is tried again (admin).
    Resume(ProjectionNameArgs),
    /// Rebuild projection NAME from position 0 beside the active one (admin).
    Rebuild(ProjectionNameArgs),
}

/// A projection verb's arguments.
#[derive(Debug, Args)]
pub struct ProjectionNameArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The projection.
    name: String,
}

/// `eshost projection query`.
#[derive(Debug, Args)]
pub struct ProjectionQueryArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The projection.
    name: String,
    /// The query, e.g. `balance`.
    query: String,
    /// The query's arguments, a JSON value, e.g. '{"account":"account-1"}'.
    args: Option<String>,
}

/// `eshost plugin swap`.
#[derive(Debug, Args)]
pub struct PluginSwapArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The plugin's name in the host's config.
    name: String,
    /// The new component file.
    file: PathBuf,
}

/// `eshost plugin inspect`.
#[derive(Debug, Args)]
pub struct PluginInspectArgs {
    /// The component file.
    file: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Commit durability on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DurabilityArg {
    /// Every commit reaches the disk before it is acknowledged.
    Immediate,
    /// Commits stay in memory (no fsync); for comparison only.
    None,
}

/// `eshost bench append`.
#[derive(Debug, Args)]
pub struct BenchAppendArgs {
    /// Concurrent appenders.
    #[arg(long, default_value_t = 64)]
    appenders: usize,
    /// Bytes of JSON data per event.
    #[arg(long, default_value_t = 200)]
    event_bytes: usize,
    /// Seconds to run each phase.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Commit durability.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Immediate)]
    durability: DurabilityArg,
    /// Events per commit in the raw redb baseline.
    #[arg(long, default_value_t = 1000)]
    baseline_batch: usize,
    /// Directory for the scratch stores (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Bytes of personal data per event, sealed per subject (0: none).
    #[arg(long, default_value_t = 0)]
    personal_bytes: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Run the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run_host(args),
        Command::Completions(args) => {
            use clap::CommandFactory;
            clap_complete::generate(
                args.shell,
                &mut Cli::command(),
                "eshost",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Append(args) => append(args),
        Command::Read(args) => read(args),
        Command::All(args) => all(args),
        Command::Streams(args) => streams(args),
        Command::Verify(args) => verify(args),
        Command::Export(args) => export(args),
        Command::Import(args) => import(args),
        Command::Forget(args) => forget(args),
        Command::Bench(BenchCommand::Append(args)) => bench_append(args),
        Command::Bench(BenchCommand::Replay(args)) => bench_replay(args),
        Command::Bench(BenchCommand::Command(args)) => bench_command(args),
        Command::Bench(BenchCommand::Load(args)) => bench_load(args),
        Command::Bench(BenchCommand::Projection(args)) => bench_projection(args),
        Command::Bench(BenchCommand::Http(args)) => bench_http(args),
        Command::Replay(args) => replay(args),
        Command::Plugin(PluginCommand::Inspect(args)) => plugin_inspect(args),
        Command::Plugin(PluginCommand::List(args)) => {
            let client = args.client()?;
            online(client.print(client.request(Method::GET, client.url(&["plugins"]))))
        }
        Command::Plugin(PluginCommand::Swap(args)) => plugin_swap(args),
        Command::Command(args) => client_command(args),
        Command::State(args) => client_state(args),
        Command::History(args) => {
            let client = args.server.client()?;
            let url = client.url(&["aggregates", &args.aggregate_type, &args.id, "history"]);
            online(client.print(client.request(Method::GET, url)))
        }
        Command::Subscribe(args) => client_subscribe(args),
        Command::Projection(command) => projection(command),
    }
}

/// Runs one client request on a small runtime.
fn online(future: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(future)
}

fn client_command(args: ClientCommandArgs) -> anyhow::Result<()> {
    let command: serde_json::Value = serde_json::from_str(&args.json)
        .with_context(|| format!("the command is not JSON: {}", args.json))?;
    let client = args.server.client()?;
    let url = client.url(&["aggregates", &args.aggregate_type, &args.id]);
    let mut request = client.request(Method::POST, url).json(&command);
    if let Some(version) = args.expected_version {
        request = request.query(&[("expected_version", version)]);
    }
    if let Some(key) = &args.idempotency_key {
        request = request.header("idempotency-key", key);
    }
    online(client.print(request))
}

fn client_state(args: ClientStateArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    let url = client.url(&["aggregates", &args.aggregate_type, &args.id]);
    let mut request = client.request(Method::GET, url);
    if let Some(version) = args.version {
        request = request.query(&[("version", version)]);
    }
    if let Some(at) = args.at {
        request = request.query(&[("at", at)]);
    }
    online(client.print(request))
}

fn client_subscribe(args: ClientSubscribeArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    let mut query = Vec::new();
    if let Some(from) = args.from {
        query.push(("from", from.to_string()));
    }
    if let Some(prefix) = args.stream_prefix {
        query.push(("stream_prefix", prefix));
    }
    if !args.types.is_empty() {
        query.push(("types", args.types.join(",")));
    }
    online(client.subscribe(&query, args.limit))
}

fn projection(command: ProjectionCommand) -> anyhow::Result<()> {
    let (server, method, segments, args) = match &command {
        ProjectionCommand::List(server) => (server, Method::GET, vec!["projections"], None),
        ProjectionCommand::Status(a) => (
            &a.server,
            Method::GET,
            vec!["projections", a.name.as_str()],
            None,
        ),
        ProjectionCommand::Query(a) => (
            &a.server,
            Method::GET,
            vec!["projections", a.name.as_str(), "query", a.query.as_str()],
            a.args.as_deref(),
        ),
        ProjectionCommand::Pause(a) => (
            &a.server,
            Method::POST,
            vec!["projections", a.name.as_str(), "pause"],
            None,
        ),
        ProjectionCommand::Resume(a) => (
            &a.server,
            Method::POST,
            vec!["projections", a.name.as_str(), "resume"],
            None,
        ),
        ProjectionCommand::Rebuild(a) => (
            &a.server,
            Method::POST,
            vec!["projections", a.name.as_str(), "rebuild"],
            None,
        ),
    };
    let client = server.client()?;
    let mut request = client.request(method, client.url(&segments));
    if let Some(args) = args {
        serde_json::from_str::<serde_json::Value>(args)
            .with_context(|| format!("ARGS_JSON is not JSON: {args}"))?;
        request = request.query(&[("args", args)]);
    }
    online(client.print(request))
}

fn plugin_swap(args: PluginSwapArgs) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let client = args.server.client()?;
    let request = client
        .request(Method::PUT, client.url(&["plugins", &args.name]))
        .header("content-type", "application/wasm")
        .body(bytes);
    online(client.print(request))
}

fn run_host(args: RunArgs) -> anyhow::Result<()> {
    let config = crate::config::Config::load(&args.config)?;
    tokio::runtime::Runtime::new()
        .context("starting the async runtime")?
        .block_on(crate::server::serve(config, args.listen))
}

fn open(args: &StoreArgs) -> anyhow::Result<Store> {
    let mut config = StoreConfig::new(&args.store);
    config.keys = args.keys.clone();
    Store::open(config).with_context(|| format!("opening store {}", args.store.display()))
}

/// Events read offline, with their personal data decrypted: whoever runs the tool holds the
/// key file anyway.
fn revealed(store: &Store, mut events: Vec<RecordedEvent>) -> Vec<RecordedEvent> {
    for event in &mut events {
        store.reveal_owned(event);
    }
    events
}

fn append(args: AppendArgs) -> anyhow::Result<()> {
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
    let appended =
        store.append_blocking(AppendRequest::new(args.stream, args.expected, vec![event]))?;
    print_json(&appended)
}

/// `POST /streams/{id}` on a running host.
fn append_online(args: AppendArgs) -> anyhow::Result<()> {
    let json = |text: &str, what: &str| -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(text)
            .with_context(|| format!("the event's {what} is not JSON: {text}"))
    };
    let expected = match args.expected {
        ExpectedVersion::Any => serde_json::json!("any"),
        ExpectedVersion::NoStream => serde_json::json!("no_stream"),
        ExpectedVersion::StreamExists => serde_json::json!("stream_exists"),
        ExpectedVersion::Exact(version) => serde_json::json!(version),
    };
    let mut event = serde_json::json!({
        "type": args.event_type,
        "data": json(&args.data, "data")?,
        "metadata": json(&args.metadata, "metadata")?,
        "schema_version": args.schema_version,
    });
    if let Some(id) = args.id {
        event["id"] = serde_json::json!(id);
    }
    let client = args.server.client()?;
    let url = client.url(&["streams", &args.stream]);
    let body = serde_json::json!({ "expected": expected, "events": [event] });
    online(client.print(client.request(Method::POST, url).json(&body)))
}

/// `GET /streams/{id}` on a running host.
fn read_online(args: ReadArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    let url = client.url(&["streams", &args.stream]);
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(from) = args.from {
        query.push(("from", from.to_string()));
    }
    if args.backward {
        query.push(("backward", "true".into()));
    }
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    if let Some(position) = args.until.until_position {
        query.push(("until_position", position.to_string()));
    }
    if let Some(time) = args.until.until_time {
        query.push(("until_time", time.to_string()));
    }
    online(client.print(client.request(Method::GET, url).query(&query)))
}

fn read(args: ReadArgs) -> anyhow::Result<()> {
    if args.server.named() {
        return read_online(args);
    }
    let store = open(&args.store)?;
    let mut read = if args.backward {
        StreamRead::backward()
    } else {
        StreamRead::forward()
    };
    if let Some(from) = args.from {
        read.from_version = from;
    }
    read.limit = args.limit.unwrap_or(usize::MAX);
    read.until = args.until.until();
    if store.stream_info(&args.stream)?.is_none() {
        bail!("stream {:?} does not exist", args.stream);
    }
    print_lines(revealed(&store, store.read_stream(&args.stream, &read)?))
}

fn all(args: AllArgs) -> anyhow::Result<()> {
    let store = open(&args.store)?;
    let read = AllRead {
        from_position: args.from,
        direction: Direction::Forward,
        limit: args.limit.unwrap_or(usize::MAX),
        event_types: args.event_types,
        until: args.until.until(),
    };
    print_lines(revealed(&store, store.read_all(&read)?))
}

fn streams(args: StreamsArgs) -> anyhow::Result<()> {
    let store = open(&args.store)?;
    let streams = store.streams(&args.prefix, None, args.limit)?;
    print_lines(
        streams
            .into_iter()
            .map(|(stream_id, info)| serde_json::json!({ "stream_id": stream_id, "info": info })),
    )
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

fn export(args: ExportArgs) -> anyhow::Result<()> {
    let store = open(&args.store)?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let written = crate::store::transfer::export(&store, args.stream.as_deref(), &mut out)?;
    if args.output.is_some() {
        eprintln!("exported {written} events");
    }
    if let Some(path) = &args.keys_output {
        let mut keys = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        let subjects = crate::store::transfer::export_keys(&store, &mut keys)?;
        eprintln!(
            "exported the keys of {subjects} subjects to {}: keep it apart from the export",
            path.display()
        );
    }
    Ok(())
}

fn forget(args: ForgetArgs) -> anyhow::Result<()> {
    if args.server.named() {
        let client = args.server.client()?;
        let url = client.url(&["subjects", &args.subject, "forget"]);
        let body = serde_json::json!({ "reason": args.reason });
        return online(client.print(client.request(Method::POST, url).json(&body)));
    }
    let store = open(&args.store)?;
    let views = crate::views::Views::open(&args.store.store)?;
    let forgetting =
        crate::privacy::Forgetting::new(store, views, None, None, Duration::from_secs(0));
    let request = crate::privacy::ForgetRequest {
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

fn import(args: ImportArgs) -> anyhow::Result<()> {
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
        let added = crate::store::transfer::import_keys(&store, &mut keys)
            .with_context(|| format!("importing keys from {}", path.display()))?;
        eprintln!("imported {added} keys and tombstones");
    }
    let report = crate::store::transfer::import(&store, &mut input, args.chunk.max(1))?;
    print_json(&report)
}

fn verify(args: StoreArgs) -> anyhow::Result<()> {
    let store = open(&args)?;
    let report = store.verify()?;
    println!("{report}");
    if !report.is_ok() {
        bail!("verification failed");
    }
    Ok(())
}

fn bench_append(args: BenchAppendArgs) -> anyhow::Result<()> {
    if args.appenders == 0 || args.seconds.is_nan() || args.seconds <= 0.0 {
        bail!("--appenders and --seconds must be positive");
    }
    let options = bench::append::AppendBenchOptions {
        appenders: args.appenders,
        event_bytes: args.event_bytes,
        duration: Duration::from_secs_f64(args.seconds),
        durability: match args.durability {
            DurabilityArg::Immediate => Durability::Immediate,
            DurabilityArg::None => Durability::None,
        },
        baseline_batch: args.baseline_batch.max(1),
        dir: args.dir,
        personal_bytes: args.personal_bytes,
    };
    let report = bench::append::run(&options)?;
    print_report(&report, args.json)
}

fn bench_command(args: BenchCommandArgs) -> anyhow::Result<()> {
    if args.seconds.is_nan() || args.seconds <= 0.0 {
        bail!("--seconds must be positive");
    }
    let defaults = bench::command::CommandBenchOptions::default();
    let options = bench::command::CommandBenchOptions {
        plugin: args.plugin,
        clients: args.clients,
        accounts: args.accounts,
        duration: Duration::from_secs_f64(args.seconds),
        workers: args.workers.unwrap_or(defaults.workers),
        durability: match args.durability {
            DurabilityArg::Immediate => Durability::Immediate,
            DurabilityArg::None => Durability::None,
        },
        snapshot_every: args.snapshot_every,
        dir: args.dir,
    };
    let report = bench::command::run(&options)?;
    print_report(&report, args.json)
}

fn bench_http(args: BenchHttpArgs) -> anyhow::Result<()> {
    if args.seconds.is_nan() || args.seconds <= 0.0 || args.seconds > 600.0 {
        bail!("--seconds must be positive and at most 600");
    }
    let options = bench::http::HttpBenchOptions {
        plugin: args.plugin,
        clients: args.clients,
        accounts: args.accounts,
        duration: Duration::from_secs_f64(args.seconds),
        client_threads: args.client_threads,
        snapshot_every: args.snapshot_every,
        dir: args.dir,
    };
    let report = bench::http::run(&options)?;
    print_report(&report, args.json)
}

fn bench_load(args: BenchLoadArgs) -> anyhow::Result<()> {
    let options = bench::load::LoadBenchOptions {
        plugin: args.plugin,
        events: args.events,
        runs: args.runs,
        dir: args.dir,
    };
    let report = bench::load::run(&options)?;
    print_report(&report, args.json)
}

fn bench_replay(args: BenchReplayArgs) -> anyhow::Result<()> {
    require_plugin(&args.plugin)?;
    let options = bench::replay::ReplayBenchOptions {
        plugin: args.plugin,
        events: args.events,
        batch: args.batch,
        cache_dir: args.cache_dir,
    };
    let report = bench::replay::run(&options)?;
    print_report(&report, args.json)
}

fn bench_projection(args: BenchProjectionArgs) -> anyhow::Result<()> {
    require_plugin(&args.plugin)?;
    let options = bench::projection::ProjectionBenchOptions {
        plugin: args.plugin,
        events: args.events,
        accounts: args.accounts,
        batch: args.batch.max(1),
        dir: args.dir,
    };
    let report = bench::projection::run(&options)?;
    print_report(&report, args.json)
}

fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(file) => Some(crate::config::Config::load(file)?),
        None => None,
    };
    let store = args
        .store
        .or_else(|| config.as_ref().map(|c| c.store.clone()))
        .unwrap_or_else(|| PathBuf::from("eshost-data"));
    let keys = args
        .keys
        .or_else(|| config.as_ref().and_then(|c| c.keys.clone()));
    let upcasters = match (args.upcasters.is_empty(), &config) {
        (true, Some(config)) => config.upcasters.iter().map(|u| u.plugin.clone()).collect(),
        _ => args.upcasters,
    };
    let limits = config.map(|c| c.limits).unwrap_or_default();
    let options = crate::projection::replay::ReplayOptions {
        store,
        keys,
        plugin: args.plugin,
        upcasters,
        limits,
        diff: args.diff,
        batch: args.batch.max(1),
        progress: !args.json,
        samples: args.samples,
    };
    let report = crate::projection::replay::run(&options)?;
    if args.json {
        print_json(&report)
    } else {
        print!("{report}");
        Ok(())
    }
}

fn plugin_inspect(args: PluginInspectArgs) -> anyhow::Result<()> {
    let inspection = crate::runtime::inspect(&args.file)?;
    if args.json {
        print_json(&inspection)
    } else {
        print!("{inspection}");
        Ok(())
    }
}

/// A benchmark's report: one JSON object with `--json`, else its table.
fn print_report(
    report: &(impl serde::Serialize + std::fmt::Display),
    json: bool,
) -> anyhow::Result<()> {
    if json {
        print_json(report)
    } else {
        println!("{report}");
        Ok(())
    }
}

/// Refuse early, with the build command, when a benchmark's plugin file is not there.
fn require_plugin(plugin: &std::path::Path) -> anyhow::Result<()> {
    if !plugin.exists() {
        bail!(
            "{} not found; build the plugins first: cargo build --release --target \
             wasm32-wasip2 --manifest-path plugins/Cargo.toml (or pass --plugin)",
            plugin.display()
        );
    }
    Ok(())
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn print_lines<T: serde::Serialize>(values: impl IntoIterator<Item = T>) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for value in values {
        serde_json::to_writer(&mut out, &value)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}
