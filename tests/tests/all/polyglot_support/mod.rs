//! Shared steps of the polyglot tests: the Python and JavaScript components (built by
//! `scripts/build-polyglot.sh`), the limits an interpreter runs under, and a generated bank
//! history.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use eshost_runtime::{Event, Limits, Runtime};
use serde_json::{Value, json};

/// Limits for interpreter plugins in the tests: the per-plugin limits the docs recommend for
/// Python and JavaScript (`docs/plugins-python.md`), with a time limit short enough that a
/// runaway guest fails fast.
pub fn interpreter_limits() -> Limits {
    Limits {
        time: Duration::from_secs(2),
        memory_bytes: 256 * 1024 * 1024,
        ..eshost_tests::test_limits()
    }
}

/// A runtime with [`interpreter_limits`] whose component cache is shared by the polyglot
/// tests (it is keyed by content, so sharing is safe): each interpreter is compiled once, not
/// once per test.
pub fn runtime() -> Runtime {
    let cache = std::env::temp_dir().join("eshost-polyglot-tests-cache");
    eshost_tests::runtime_in(&cache, interpreter_limits())
}

/// Runs `scripts/build-polyglot.sh` once per test binary (it installs the pinned tools on
/// first use and rebuilds only what changed), and returns the directory of the components.
/// A failed build fails the test with the script's output: nothing is skipped.
fn components_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = eshost_tests::checkout();
        let script = root.join("scripts/build-polyglot.sh");
        let output = Command::new("bash")
            .arg(&script)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            output.status.success(),
            "{} failed ({}), so the Python and JavaScript plugins cannot be tested:\n{}\n{}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        std::env::var_os("ESHOST_POLYGLOT_OUT")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/polyglot"))
    })
}

/// The component `name` (`balances-py`, `balances-js`, `bank-account-py`, `deposit-currency-js`, `hostile-py`, ...: see `scripts/build-polyglot.sh`).
pub fn component(name: &str) -> PathBuf {
    let path = components_dir().join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing although scripts/build-polyglot.sh succeeded; does the script build {name}?",
        path.display()
    );
    path
}

/// A small deterministic generator (64-bit LCG), so every run sees the same history.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Lcg {
        Lcg(seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1))
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// `events` interleaved bank events over `accounts` accounts, as `$all` holds them: opening
/// deposits or none, USD, EUR and GBP accounts, v1 deposits (no currency) and v2 ones,
/// withdrawals (some beyond the balance: a projection records facts), freezes, events for
/// accounts never opened, ids with `/` and `%`, unknown fields and event types no bank plugin
/// knows.
pub fn generated_history(seed: u64, events: usize, accounts: u64) -> Vec<Event> {
    let mut rng = Lcg::new(seed);
    let mut versions = BTreeMap::<String, u64>::new();
    let mut history = Vec::with_capacity(events);
    while history.len() < events {
        let n = rng.below(accounts);
        let stream = match n % 10 {
            3 => format!("branch/{n}"),
            7 => format!("acct%{n}"),
            _ => format!("account-{n}"),
        };
        let version = versions.get(&stream).copied().unwrap_or(0);
        let (event_type, schema_version, data) = if version == 0 && rng.below(10) != 0 {
            let mut data = json!({"owner": format!("owner {n}")});
            if rng.below(3) != 0 {
                data["initial_deposit"] = json!(rng.below(100_000));
            }
            match rng.below(4) {
                0 => data["currency"] = json!("EUR"),
                1 => data["currency"] = json!("GBP"),
                2 => data["currency"] = json!("USD"),
                _ => {}
            }
            ("AccountOpened", 1, data)
        } else {
            match rng.below(12) {
                0..=3 => (
                    "FundsDeposited",
                    1,
                    json!({"amount": rng.below(50_000) + 1}),
                ),
                4..=6 => (
                    "FundsDeposited",
                    2,
                    json!({"amount": rng.below(50_000) + 1, "currency": rng.pick(&["USD", "EUR", "GBP"])}),
                ),
                7..=9 => (
                    "FundsWithdrawn",
                    1,
                    json!({"amount": rng.below(60_000) + 1}),
                ),
                10 => ("AccountFrozen", 1, json!({"reason": "review"})),
                _ => (
                    "NoteAdded",
                    1,
                    json!({"note": "not a bank event", "amount": "n/a"}),
                ),
            }
        };
        let mut data: Value = data;
        if rng.below(20) == 0 {
            data["memo"] = json!("unknown fields are ignored");
        }
        *versions.entry(stream.clone()).or_default() += 1;
        history.push(eshost_tests::event(
            history.len() as u64 + 1,
            &stream,
            version + 1,
            event_type,
            schema_version,
            &data.to_string(),
        ));
    }
    history
}

/// Parses JSON text, failing the test with the text when it is not JSON.
pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}
