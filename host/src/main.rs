//! The `eshost` binary: thin glue over the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = eshost::cli::Cli::parse();
    let default_level = match cli.command {
        eshost::cli::Command::Run(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ESHOST_LOG")
        .unwrap_or_else(|_| default_level.into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        eshost::cli::LogFormat::Text => logs.init(),
        eshost::cli::LogFormat::Json => logs.json().init(),
    }
    match eshost::cli::run(cli) {
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
