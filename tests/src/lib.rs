//! Support for eshost's integration tests: the paths of the components `build.rs` compiled,
//! and small builders for runtimes, events and commands.

pub mod cli;

use std::path::{Path, PathBuf};
use std::time::Duration;

use eshost_runtime::{Command, Event, Limits, Runtime, RuntimeConfig};

// `pub const BANK_ACCOUNT: &str = "/…/bank_account.wasm";` and so on, one per component
// (`CUSTOMER` and `CUSTOMERS` for the personal-data plugins).
include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

/// Limits tight enough that hostile guests fail fast in tests, loose enough for real plugins.
pub fn test_limits() -> Limits {
    Limits {
        time: Duration::from_millis(500),
        memory_bytes: 64 * 1024 * 1024,
        output_bytes: 4 * 1024 * 1024,
        log_bytes: 16 * 1024,
        scan_entries: 100,
    }
}

/// A runtime with `limits` whose component cache lives in `cache_dir`.
pub fn runtime_in(cache_dir: &Path, limits: Limits) -> Runtime {
    Runtime::new(RuntimeConfig {
        limits,
        cache_dir: Some(cache_dir.to_owned()),
        ..RuntimeConfig::default()
    })
    .expect("start a runtime")
}

/// A runtime with [`test_limits`] and a fresh cache directory (kept alive by the returned
/// guard).
pub fn runtime() -> (Runtime, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    (runtime_in(dir.path(), test_limits()), dir)
}

/// A stored event as the runtime sees it; `data` is JSON. `recorded_at` follows the SDK test
/// harness (`1_700_000_000_000 + position * 1000`), so native and WASM runs see the same event.
pub fn event(
    position: u64,
    stream_id: &str,
    stream_version: u64,
    event_type: &str,
    schema_version: u32,
    data: &str,
) -> Event {
    Event {
        position,
        stream_id: stream_id.to_owned(),
        stream_version,
        event_id: format!("00000000-0000-4000-8000-{position:012x}"),
        event_type: event_type.to_owned(),
        schema_version,
        recorded_at: 1_700_000_000_000 + position * 1000,
        data: data.to_owned(),
        metadata: "{}".to_owned(),
        subject_id: None,
        personal_data: None,
        shredded: false,
    }
}

/// `event` carrying `personal_data` (JSON) of the data subject `subject_id`, as the host hands
/// it to plugins before the subject is forgotten.
pub fn with_personal(mut event: Event, subject_id: &str, personal_data: &str) -> Event {
    event.subject_id = Some(subject_id.to_owned());
    event.personal_data = Some(personal_data.to_owned());
    event.shredded = false;
    event
}

/// `event` as the host hands it to plugins once the subject `subject_id` is forgotten: the
/// subject is still named, the personal data is gone.
pub fn shredded(mut event: Event, subject_id: &str) -> Event {
    event.subject_id = Some(subject_id.to_owned());
    event.personal_data = None;
    event.shredded = true;
    event
}

/// A command with `payload` (JSON), issued at `issued_at` ms.
pub fn command(payload: &str, issued_at: u64) -> Command {
    Command {
        payload: payload.to_owned(),
        metadata: "{}".to_owned(),
        issued_at,
    }
}

/// The release `eshost` binary beside the test executable (built by
/// `cargo test --release --workspace`).
pub fn eshost_binary() -> PathBuf {
    let deps = std::env::current_exe().expect("the test executable");
    let binary = deps
        .parent()
        .and_then(Path::parent)
        .expect("target/release/deps")
        .join("eshost");
    assert!(
        binary.is_file(),
        "{} is missing: cargo build --release -p eshost",
        binary.display()
    );
    binary
}

/// Starts `eshost run` on a free loopback port with the bank example's config and the
/// first-party plugins copied into `dir`. Returns the process (stdout consumed up to the
/// listening line; stderr in `dir/`[`HOST_LOG`]) and the base URL. The caller stops it.
pub fn start_bank_host(dir: &Path) -> (std::process::Child, String) {
    start_bank_host_with_env(dir, &[])
}

/// The file in the host's directory that [`start_bank_host`] sends its log (stderr) to.
pub const HOST_LOG: &str = "eshost.log";

/// The components `examples/bank/eshost.toml` names, and their file names under `plugins/`.
pub const BANK_PLUGINS: [(&str, &str); 9] = [
    (BANK_ACCOUNT, "bank_account.wasm"),
    (DEPOSIT_CURRENCY, "deposit_currency.wasm"),
    (BALANCES, "balances.wasm"),
    (STATEMENT, "statement.wasm"),
    (CUSTOMER, "customer.wasm"),
    (CUSTOMERS, "customers.wasm"),
    (TRANSFER, "transfer.wasm"),
    (TRANSFER_SAGA, "transfer_saga.wasm"),
    (FRAUD_WATCH, "fraud_watch.wasm"),
];

/// The eshost checkout these tests run from. Cargo's run-time `CARGO_MANIFEST_DIR` first: a
/// test binary reused from a build of another clone (same sources, same target directory)
/// carries that clone's path at compile time, and that clone may be gone.
pub fn checkout() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .parent()
        .expect("tests/ is inside the checkout")
        .to_owned()
}

/// [`start_bank_host`] with extra environment variables for the host (test hooks).
pub fn start_bank_host_with_env(dir: &Path, env: &[(&str, &str)]) -> (std::process::Child, String) {
    start_bank_host_with(dir, env, "")
}

/// [`start_bank_host`] with extra environment variables and `extra_config` appended to the
/// bank config (more plugins, other limits).
pub fn start_bank_host_with(
    dir: &Path,
    env: &[(&str, &str)],
    extra_config: &str,
) -> (std::process::Child, String) {
    let config = std::fs::read_to_string(checkout().join("examples/bank/eshost.toml"))
        .expect("read the bank config");
    std::fs::write(dir.join("eshost.toml"), config + "\n" + extra_config)
        .expect("write the config");
    std::fs::create_dir_all(dir.join("plugins")).expect("create plugins/");
    for (path, file) in BANK_PLUGINS {
        std::fs::copy(path, dir.join("plugins").join(file)).expect("copy a plugin");
    }
    start_host(&dir.join("eshost.toml"), &dir.join(HOST_LOG), env)
}

/// Starts `eshost run --config CONFIG` on a free loopback port, its log (stderr) in `log`.
/// Returns the process (stdout consumed up to the listening line) and the base URL. The
/// caller stops it.
pub fn start_host(
    config: &Path,
    log: &Path,
    env: &[(&str, &str)],
) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut child = Command::new(eshost_binary())
        .args(["run", "--config"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("create the host's log file"))
        .spawn()
        .expect("start eshost run");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the listening line");
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .expect("the bound address")
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    (child, base)
}
