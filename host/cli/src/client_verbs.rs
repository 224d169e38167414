//! Verbs against a running host over HTTP: command, state, history, subscribe, projection,
//! plugin list and swap.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use eshost_api::{self as api, ExpectedVersion};
use reqwest::Method;

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
    pub(crate) fn named(&self) -> bool {
        self.server.is_some() || self.config.is_some()
    }

    pub(crate) fn client(&self) -> anyhow::Result<crate::client::Client> {
        let server = match (&self.server, &self.config) {
            (Some(server), _) => server.clone(),
            (None, Some(config)) => crate::client::server_from_config(config)?,
            (None, None) => format!("http://{}", eshost_core::config::DEFAULT_LISTEN),
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
    /// Only if the aggregate is at this version (a number, or no_stream) (else HTTP 409).
    #[arg(long)]
    expected_version: Option<ExpectedVersion>,
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
    /// The state as of this time: ms since the Unix epoch, or RFC 3339
    /// (`2026-11-28T10:00:00Z`).
    #[arg(long)]
    at: Option<api::Timestamp>,
}

/// `eshost snapshot`.
#[derive(Debug, Args)]
pub struct ClientSnapshotArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The aggregate type.
    aggregate_type: String,
    /// The aggregate id.
    id: String,
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

/// The most history pages `eshost history` reads (each up to the server's page size).
const MAX_HISTORY_PAGES: usize = 100_000;

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
    /// Leave out the event at POSITION that projection NAME is stopped at: parked as a dead
    /// letter, recorded in `$projections` with who and why (admin).
    Skip(ProjectionSkipArgs),
}

/// `eshost projection skip`.
#[derive(Debug, Args)]
pub struct ProjectionSkipArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The projection.
    name: String,
    /// The position of the event it is stopped at.
    position: u64,
    /// Why (recorded; keep personal data out).
    #[arg(long)]
    reason: String,
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
    /// Check FILE against the stored history first (as `eshost plugin check` does) and
    /// refuse the swap unless the check is clean: nothing is activated, the report is printed
    /// and the exit status is 1.
    #[arg(long)]
    require_check: bool,
}

/// How long a check may take: it reads the whole log.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3600);

/// `eshost plugin check`.
#[derive(Debug, Args)]
pub struct PluginCheckArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The candidate component file.
    file: PathBuf,
    /// The configured plugin it would replace.
    #[arg(long)]
    against: String,
}

/// `eshost plugin history`.
#[derive(Debug, Args)]
pub struct PluginHistoryArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The plugin's name in the host's config.
    name: String,
}

/// `eshost plugin rollback`.
#[derive(Debug, Args)]
pub struct PluginRollbackArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The plugin's name in the host's config.
    name: String,
    /// The version to activate again: a content hash from `eshost plugin history NAME`.
    content_hash: String,
    /// Why (recorded in the log; no personal data).
    #[arg(long)]
    reason: Option<String>,
}

/// Runs one client request on a small runtime.
pub(crate) fn online(future: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(future)
}

pub(crate) fn command(args: ClientCommandArgs) -> anyhow::Result<()> {
    let command = api::Command(
        serde_json::from_str(&args.json)
            .with_context(|| format!("the command is not JSON: {}", args.json))?,
    );
    let client = args.server.client()?;
    let url = client.url(&["aggregates", &args.aggregate_type, &args.id]);
    let query = api::CommandQuery {
        expected_version: args.expected_version,
    };
    let mut request = client
        .request(Method::POST, url)
        .query(&query)
        .json(&command);
    if let Some(key) = &args.idempotency_key {
        request = request.header(api::IDEMPOTENCY_KEY, key);
    }
    online(client.print::<api::CommandAccepted>(request))
}

pub(crate) fn state(args: ClientStateArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    let url = client.url(&["aggregates", &args.aggregate_type, &args.id]);
    let query = api::StateQuery {
        version: args.version,
        at: args.at,
    };
    let request = client.request(Method::GET, url).query(&query);
    online(client.print::<api::AggregateState>(request))
}

pub(crate) fn snapshot(args: ClientSnapshotArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    let url = client.url(&["aggregates", &args.aggregate_type, &args.id, "snapshot"]);
    online(client.print::<api::SnapshotTaken>(client.request(Method::POST, url)))
}

pub(crate) fn history(args: ClientHistoryArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    let url = client.url(&["aggregates", &args.aggregate_type, &args.id, "history"]);
    // The server answers in pages bounded in count and bytes: read on to the end and print
    // the whole history as one answer, as before pages existed.
    online(async {
        let mut whole: Option<api::History> = None;
        for _ in 0..MAX_HISTORY_PAGES {
            let from = whole
                .as_ref()
                .and_then(|h| h.history.last())
                .map_or(1, |entry| entry.event.stream_version + 1);
            let request = client
                .request(Method::GET, url.clone())
                .query(&[("from", from)]);
            let (page, _) = client.send::<api::History>(request).await?;
            let done = page.history.is_empty();
            match &mut whole {
                None => whole = Some(page),
                Some(whole) => whole.history.extend(page.history),
            }
            if done {
                break;
            }
        }
        crate::output::print_json(&whole)
    })
}

pub(crate) fn plugin_list(args: ServerArgs) -> anyhow::Result<()> {
    let client = args.client()?;
    let request = client.request(Method::GET, client.url(&["plugins"]));
    online(client.print::<api::PluginList>(request))
}

pub(crate) fn subscribe(args: ClientSubscribeArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    let query = api::SubscribeQuery {
        from: args.from,
        stream_prefix: args.stream_prefix,
        types: (!args.types.is_empty()).then(|| args.types.join(",")),
    };
    online(client.subscribe(&query, args.limit))
}

pub(crate) fn projection(command: ProjectionCommand) -> anyhow::Result<()> {
    match command {
        ProjectionCommand::List(server) => {
            let client = server.client()?;
            let request = client.request(Method::GET, client.url(&["projections"]));
            online(client.print::<api::ProjectionList>(request))
        }
        ProjectionCommand::Status(a) => {
            let client = a.server.client()?;
            let request = client.request(Method::GET, client.url(&["projections", &a.name]));
            online(client.print::<api::ProjectionStatus>(request))
        }
        ProjectionCommand::Query(a) => {
            let client = a.server.client()?;
            let url = client.url(&["projections", &a.name, "query", &a.query]);
            if let Some(args) = &a.args {
                serde_json::from_str::<serde_json::Value>(args)
                    .with_context(|| format!("ARGS_JSON is not JSON: {args}"))?;
            }
            let query = api::QueryArgs { args: a.args };
            let request = client.request(Method::GET, url).query(&query);
            online(client.print::<api::QueryAnswer>(request))
        }
        ProjectionCommand::Pause(a) => {
            let client = a.server.client()?;
            let request =
                client.request(Method::POST, client.url(&["projections", &a.name, "pause"]));
            online(client.print::<api::ProjectionPaused>(request))
        }
        ProjectionCommand::Resume(a) => {
            let client = a.server.client()?;
            let request = client.request(
                Method::POST,
                client.url(&["projections", &a.name, "resume"]),
            );
            online(client.print::<api::ProjectionResumed>(request))
        }
        ProjectionCommand::Rebuild(a) => {
            let client = a.server.client()?;
            let request = client.request(
                Method::POST,
                client.url(&["projections", &a.name, "rebuild"]),
            );
            online(client.print::<api::ProjectionRebuilding>(request))
        }
        ProjectionCommand::Skip(a) => {
            let client = a.server.client()?;
            let body = api::SkipRequest {
                position: a.position,
                reason: a.reason,
            };
            let request = client
                .request(Method::POST, client.url(&["projections", &a.name, "skip"]))
                .json(&body);
            online(client.print::<api::ProjectionSkipped>(request))
        }
    }
}

pub(crate) fn plugin_swap(args: PluginSwapArgs) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let client = args.server.client()?;
    let mut url = client.url(&["plugins", &args.name]);
    let mut timeout = crate::client::REQUEST_TIMEOUT;
    if args.require_check {
        url.set_query(Some("require_check=true"));
        timeout = CHECK_TIMEOUT;
    }
    let request = client
        .request(Method::PUT, url)
        .header("content-type", "application/wasm")
        .body(bytes);
    online(client.print_within::<api::PluginSwapped>(request, timeout))
}

pub(crate) fn plugin_check(args: PluginCheckArgs) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let client = args.server.client()?;
    let request = client
        .request(
            Method::POST,
            client.url(&["plugins", &args.against, "check"]),
        )
        .header("content-type", "application/wasm")
        .body(bytes);
    online(client.print_within::<api::CheckReport>(request, CHECK_TIMEOUT))
}

pub(crate) fn plugin_history(args: PluginHistoryArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    let request = client.request(Method::GET, client.url(&["plugins", &args.name, "history"]));
    online(client.print::<api::PluginHistory>(request))
}

pub(crate) fn plugin_rollback(args: PluginRollbackArgs) -> anyhow::Result<()> {
    let client = args.server.client()?;
    let request = client
        .request(
            Method::POST,
            client.url(&["plugins", &args.name, "rollback"]),
        )
        .json(&api::RollbackRequest {
            content_hash: args.content_hash,
            reason: args.reason,
        });
    online(client.print::<api::PluginSwapped>(request))
}
