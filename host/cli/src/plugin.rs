//! Plugin files (`plugin inspect`) and offline replay of a projection over a stopped store.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::client_verbs::{PluginSwapArgs, ServerArgs};
use crate::output::print_json;
use crate::store::StoreArgs;

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

/// `eshost replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    store: StoreArgs,
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
    let options = eshost_core::projection::replay::ReplayOptions {
        store: args.store.store,
        plugin: args.plugin,
        diff: args.diff,
        batch: args.batch.max(1),
        progress: !args.json,
        samples: args.samples,
    };
    let report = eshost_core::projection::replay::run(&options)?;
    if args.json {
        print_json(&report)
    } else {
        print!("{report}");
        Ok(())
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
