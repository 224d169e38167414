//! The `eshost` binary: thin glue over the library crates. One module per verb group:
//! `run` (the server), `store` (verbs on a stopped store, some with an online form),
//! `archive` (moving a store's oldest events into sealed segments),
//! `client` (verbs against a running host, and the HTTP client), `plugin` (plugin files and
//! offline replay); `output` prints.

mod archive;
mod client;
mod client_verbs;
mod output;
mod plugin;
mod run;
mod scaffold;
mod store;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use archive::ArchiveArgs;
use client_verbs::{
    ClientCommandArgs, ClientHistoryArgs, ClientSnapshotArgs, ClientStateArgs, ClientSubscribeArgs,
    ProjectionCommand,
};
use plugin::{PluginCommand, ReplayArgs};
use run::{CompletionsArgs, RunArgs};
use store::{
    AllArgs, AppendArgs, ExportArgs, ForgetArgs, ImportArgs, ReadArgs, StoreArgs, StreamsArgs,
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
    /// Read a stream, or a range of it by version, position or time: of a stopped store
    /// (--store, one JSON event per line), or from a running host (--server).
    Read(ReadArgs),
    /// Read `$all` (every stream, in commit order), or a range of it by position or time, one
    /// JSON event per line.
    All(AllArgs),
    /// List streams, optionally those whose id starts with a prefix.
    Streams(StreamsArgs),
    /// Re-check positions, stream versions and the hash chain of a stopped store.
    Verify(StoreArgs),
    /// Compact a store: a stopped directory store's files (events.redb, views.redb) hand the
    /// space of freed pages, and the old bytes they held, back to the file system; a
    /// PostgreSQL store's tables are rewritten (VACUUM FULL). Prints the sizes.
    Compact(StoreArgs),
    /// Move a store's oldest events into sealed, compressed segments.
    ///
    /// The events before a position or time leave a stopped directory store's events.redb for
    /// immutable segment files in its `archive` directory, then events.redb is compacted; or,
    /// beside live nodes, a PostgreSQL store's events table for rows of its segments table.
    /// Every read, subscription, rebuild, export and verify still covers them. Prints the
    /// sizes. A running host archives on a schedule instead (`[archive]` in its config).
    Archive(ArchiveArgs),
    /// Write a stopped store's events (or one stream's) as NDJSON, exactly as stored.
    Export(ExportArgs),
    /// Restore NDJSON exported by `eshost export` into a stopped store, keeping positions,
    /// ids, times and hashes; every event must continue the store's log.
    Import(ImportArgs),
    /// Forget a data subject: erase its personal-data key, record the erasure in
    /// `$erasures`, and purge state derived from its data. Through a running host (--server)
    /// or on a stopped store (--store; read models are then rebuilt when the host starts).
    Forget(ForgetArgs),
    /// Work with plugin files (`inspect`), or a running host's plugins (`list`, `swap`,
    /// `check`, `history`, `rollback`).
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Send a command (a JSON object) to an aggregate of a running host; prints the recorded
    /// events. A refusal by a business rule (HTTP 422) is printed as an error and exits 1.
    Command(ClientCommandArgs),
    /// Print an aggregate's state from a running host: latest, or as of a version or time.
    State(ClientStateArgs),
    /// Print an aggregate's audit trail from a running host: each event with the state after it.
    History(ClientHistoryArgs),
    /// Snapshot an aggregate's latest state now on a running host (admin), whatever its
    /// `snapshot_every`; later loads start from it.
    Snapshot(ClientSnapshotArgs),
    /// Follow a running host's events (server-sent events) and print each as one JSON line,
    /// until interrupted, the server stops, or `--limit` events were printed.
    Subscribe(ClientSubscribeArgs),
    /// A running host's projections: list, status, query, pause, resume, rebuild.
    #[command(subcommand)]
    Projection(ProjectionCommand),
    /// Run a projection plugin over the whole history of a stopped store into a temporary
    /// read model (optionally diff it against a live projection), or dry-run a reactor from a
    /// position: the intents it would produce, none carried out.
    Replay(ReplayArgs),
}

/// Run the parsed command.
fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run::run_host(args),
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
        Command::Append(args) => store::append(args),
        Command::Read(args) => store::read(args),
        Command::All(args) => store::all(args),
        Command::Streams(args) => store::streams(args),
        Command::Verify(args) => store::verify(args),
        Command::Compact(args) => store::compact(args),
        Command::Archive(args) => archive::archive(args),
        Command::Export(args) => store::export(args),
        Command::Import(args) => store::import(args),
        Command::Forget(args) => store::forget(args),
        Command::Replay(args) => plugin::replay(args),
        Command::Plugin(PluginCommand::Inspect(args)) => plugin::inspect(args),
        Command::Plugin(PluginCommand::Test(args)) => plugin::test(args),
        Command::Plugin(PluginCommand::New(args)) => scaffold::new(args),
        Command::Plugin(PluginCommand::List(args)) => client_verbs::plugin_list(args),
        Command::Plugin(PluginCommand::Swap(args)) => client_verbs::plugin_swap(args),
        Command::Plugin(PluginCommand::Check(args)) => client_verbs::plugin_check(args),
        Command::Plugin(PluginCommand::History(args)) => client_verbs::plugin_history(args),
        Command::Plugin(PluginCommand::Rollback(args)) => client_verbs::plugin_rollback(args),
        Command::Command(args) => client_verbs::command(args),
        Command::State(args) => client_verbs::state(args),
        Command::History(args) => client_verbs::history(args),
        Command::Snapshot(args) => client_verbs::snapshot(args),
        Command::Subscribe(args) => client_verbs::subscribe(args),
        Command::Projection(command) => client_verbs::projection(command),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Run(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ESHOST_LOG")
        .unwrap_or_else(|_| default_level.into());
    // Colours only for a person at a terminal: a log file or a pipe gets plain text.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("eshost: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// A closed stdout (`eshost all | head`) is the reader's choice, not a failure.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
