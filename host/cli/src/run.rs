//! `eshost run` and `eshost completions`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

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

pub(crate) fn run_host(args: RunArgs) -> anyhow::Result<()> {
    let config = eshost_core::config::Config::load(&args.config)?;
    tokio::runtime::Runtime::new()
        .context("starting the async runtime")?
        .block_on(eshost_server::serve(config, args.listen))
}
