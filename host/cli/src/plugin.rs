//! Plugin files (`plugin inspect`) and offline replay of a projection over a stopped store.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::client_verbs::{
    PluginCheckArgs, PluginHistoryArgs, PluginRollbackArgs, PluginSwapArgs, ServerArgs,
};
use crate::output::print_json;

/// `eshost plugin ...`.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// What a plugin file is: kind, name, contract version, events, imports, hash.
    Inspect(PluginInspectArgs),
    /// Run the component FILE (any language) in the real sandbox against the cases of a
    /// fixture file: given events, then a command (aggregate: the events, rejection or state
    /// expected), queries (projection: the answers) or nothing (upcaster: the events as the
    /// chain leaves them). Prints each case, with where a mismatch is; exits 1 if any fails.
    Test(PluginTestArgs),
    /// Create a plugin project of its own (outside the eshost checkout): a small working
    /// aggregate, projection or upcaster in Rust, Python or JavaScript, a build script using
    /// the checkout's pinned tools, a fixture for `plugin test` and an eshost.toml serving it.
    New(crate::scaffold::PluginNewArgs),
    /// The plugins a running host has loaded.
    List(ServerArgs),
    /// Hot-swap a running host's aggregate, upcaster or projection plugin NAME with the
    /// component FILE (uploaded; needs an admin token when tokens are configured). The
    /// activation is recorded in the log (`$plugins`): every node of a cluster follows it, and
    /// it survives a restart. An upcaster swap drops the aggregates' cached states and
    /// snapshots and rebuilds the projections it affects.
    Swap(PluginSwapArgs),
    /// Check the candidate component FILE against a running host's stored history, as the
    /// new version of its plugin NAME (`--against`), without activating it: an upcaster over
    /// every event of the types it or the live version upcasts (unchanged, changed, failed
    /// against the live chain), an aggregate over
    /// every stream of its type (differing and failing streams, at their first event), a
    /// projection replayed and compared with the live read model. Prints the report; needs an
    /// admin token when tokens are configured.
    Check(PluginCheckArgs),
    /// Every activation of plugin NAME's versions (config, upload, watcher, rollback), oldest
    /// first, as recorded in `$plugins`.
    History(PluginHistoryArgs),
    /// Activate again a version of plugin NAME from its history, by content hash (needs an
    /// admin token when tokens are configured).
    Rollback(PluginRollbackArgs),
}

/// `eshost replay`. Events go through the live host's upcasters: those of `--config` (each in
/// the version its host runs: a swapped one from `$plugins`), or the `--upcaster` files. Flags given beside `--config` win over it: `--store`/`--keys` over its
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
    /// The projection component to replay, or a reactor to dry-run (it lists the intents it
    /// would produce and carries out none).
    #[arg(long)]
    plugin: PathBuf,
    /// Reactors: start after this position (a new version is swapped in from a position its
    /// dry run shows to be safe).
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Reactors: intents to list.
    #[arg(long, default_value_t = 50)]
    show: usize,
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

/// `eshost plugin test`.
#[derive(Debug, Args)]
pub struct PluginTestArgs {
    /// The component file.
    file: PathBuf,
    /// The fixture file (JSON: `{"upcasters": [...], "cases": [...]}`; see the plugin guides).
    #[arg(long, short)]
    fixture: PathBuf,
    /// An upcaster component the events go through, after the fixture's; repeat for a chain.
    #[arg(long = "upcaster", value_name = "FILE")]
    upcasters: Vec<PathBuf>,
    /// The time limit of each plugin call, as in the config's `limits` [default: 1000].
    #[arg(long, value_name = "MS")]
    time_ms: Option<u64>,
    /// The memory limit of each plugin instance, as in the config's `limits` [default: 128].
    #[arg(long, value_name = "MB")]
    memory_mb: Option<usize>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
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

pub(crate) fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(file) => Some(eshost_core::config::Config::load(file)?),
        None => None,
    };
    if config
        .as_ref()
        .is_some_and(|config| config.postgres.is_some())
    {
        anyhow::bail!(
            "`eshost replay` runs on a directory store, and this config names a postgres store"
        );
    }
    let store = args
        .store
        .or_else(|| config.as_ref().map(|c| c.store.clone()))
        .unwrap_or_else(|| PathBuf::from("eshost-data"));
    let keys = args
        .keys
        .or_else(|| config.as_ref().and_then(|c| c.keys.clone()));
    // From the config, each upcaster runs the version its host runs (a swap is in $plugins).
    let (upcasters, upcaster_names) = match (args.upcasters.is_empty(), &config) {
        (true, Some(config)) => config
            .upcasters
            .iter()
            .map(|u| (u.plugin.clone(), u.name.clone()))
            .unzip(),
        _ => (args.upcasters, Vec::new()),
    };
    let limits = config.map(|c| c.limits).unwrap_or_default();
    let options = eshost_core::projection::replay::ReplayOptions {
        store,
        keys,
        plugin: args.plugin,
        upcasters,
        upcaster_names,
        limits,
        diff: args.diff,
        batch: args.batch.max(1),
        progress: !args.json,
        samples: args.samples,
    };
    let is_reactor = std::fs::read(&options.plugin)
        .ok()
        .and_then(|bytes| eshost_runtime::declared_kind(&bytes))
        == Some(eshost_runtime::PluginKind::Reactor);
    if is_reactor {
        if options.diff.is_some() {
            anyhow::bail!("--diff compares projections; a reactor's replay is a dry run");
        }
        let report = eshost_core::reactor::dry_run::run(&options, args.from, args.show)?;
        return if args.json {
            print_json(&report)
        } else {
            print!("{report}");
            Ok(())
        };
    }
    let report = eshost_core::projection::replay::run(&options)?;
    if args.json {
        print_json(&report)
    } else {
        print!("{report}");
        Ok(())
    }
}

pub(crate) fn test(args: PluginTestArgs) -> anyhow::Result<()> {
    let fixture = eshost_core::fixture::Fixture::load(&args.fixture)?;
    let mut limits = eshost_runtime::Limits::default();
    if let Some(ms) = args.time_ms {
        limits.time = std::time::Duration::from_millis(ms.max(1));
    }
    if let Some(mb) = args.memory_mb {
        limits.memory_bytes = mb.max(1).saturating_mul(1024 * 1024);
    }
    let runtime = eshost_runtime::Runtime::new(eshost_runtime::RuntimeConfig {
        limits,
        ..eshost_runtime::RuntimeConfig::default()
    })?;
    let report = eshost_core::fixture::run(&runtime, &args.file, &fixture, &args.upcasters)?;
    if args.json {
        print_json(&report)?;
    } else {
        print!("{report}");
    }
    match report.failed() {
        0 => Ok(()),
        failed => anyhow::bail!("{failed} of {} cases failed", report.cases.len()),
    }
}

pub(crate) fn inspect(args: PluginInspectArgs) -> anyhow::Result<()> {
    let inspection = eshost_runtime::inspect(&args.file)?;
    if args.json {
        print_json(&inspection)
    } else {
        print!("{inspection}");
        Ok(())
    }
}
