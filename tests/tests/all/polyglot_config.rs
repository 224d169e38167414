//! An interpreter needs more memory than a Rust plugin: a config with tight `[limits]` for
//! everyone gives the Python `balances` projection a `limits` table of its own, and the host
//! serves; without that table the same config fails to start, naming the limit.

use std::path::Path;
use std::time::Duration;

use eshost_core::aggregate::{CommandOptions, Decision};
use eshost_core::{Config, Host};
use eshost_tests::{BANK_ACCOUNT, DEPOSIT_CURRENCY};
use serde_json::{Value, json};

use crate::polyglot_support::component;

/// Plenty for the Rust plugins (they run in 2 MiB), too little for CPython (`balances-py`
/// needs 13–16 MiB to start).
const TIGHT_MB: usize = 8;

fn bank_config(dir: &Path, projection_limits: &str) -> Config {
    let text = format!(
        "store = \"data\"\nwatch_plugins = false\n\
         [limits]\nmemory_mb = {TIGHT_MB}\n\
         [[aggregates]]\nname = \"bank-account\"\nplugin = {BANK_ACCOUNT:?}\n\
         [[upcasters]]\nname = \"deposit-currency\"\nplugin = {DEPOSIT_CURRENCY:?}\n\
         [[projections]]\nname = \"balances\"\nplugin = {:?}\n{projection_limits}",
        component("balances-py"),
    );
    let file = dir.join("eshost.toml");
    std::fs::write(&file, text).unwrap();
    Config::load(&file).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_gives_the_python_projection_the_memory_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let config = bank_config(dir.path(), "limits = { memory_mb = 64 }\n");
    assert_eq!(config.plugin_limits("balances").memory_bytes, 64 << 20);
    assert_eq!(
        config.plugin_limits("bank-account").memory_bytes,
        TIGHT_MB << 20
    );
    let host = Host::start(&config).unwrap();

    for command in [
        json!({"type": "Open", "owner": "Ann"}),
        json!({"type": "Deposit", "amount": 500}),
    ] {
        let reply = host
            .aggregates()
            .execute(
                "bank-account",
                "account-1",
                &command.to_string(),
                CommandOptions::default(),
            )
            .await
            .unwrap();
        assert!(
            matches!(reply.decision, Decision::Accepted { .. }),
            "{reply:?}"
        );
    }
    let projections = host.projections().clone();
    let answer = tokio::task::spawn_blocking(move || {
        let status = projections.wait_caught_up("balances", Duration::from_secs(60));
        assert!(status.is_some(), "balances did not catch up");
        projections.query("balances", "balance", r#"{"account":"account-1"}"#)
    })
    .await
    .unwrap()
    .unwrap();
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["balance"], 500, "{answer}");
    host.shutdown();

    // The same plugin under the tight limit everyone else runs under cannot even start.
    let dir = tempfile::tempdir().unwrap();
    let error = format!(
        "{:#}",
        Host::start(&bank_config(dir.path(), "")).unwrap_err()
    );
    assert!(
        error.contains(&format!("exceeded its {TIGHT_MB} MiB memory limit")),
        "{error}"
    );
    assert!(error.contains("projections[0].plugin"), "{error}");
}
