//! `eshost plugin new`: every kind in every language scaffolds a project outside the checkout
//! that builds with its own script, passes its own fixture in the real sandbox, and is served
//! by `eshost run` with its own config.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use eshost_tests::cli::{Running, eshost_offline, eshost_online, eshost_with, json};
use eshost_tests::start_host;

/// Runs `command` to its end, at most `limit`; panics with its output when it fails, returns
/// it when it succeeds.
fn run_bounded(command: &mut Command, limit: Duration) -> String {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .expect("start the build");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{command:?} did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert!(status.success(), "{command:?} failed ({status}):\n{output}");
    output
}

/// Runs the project's `build.sh`; returns what it printed.
fn build(dir: &Path) -> String {
    // Rust projects share a target directory across runs, so only the first compiles the SDK.
    let rust_target = std::env::temp_dir().join("eshost-scaffold-target");
    run_bounded(
        Command::new(dir.join("build.sh")).env("CARGO_TARGET_DIR", &rust_target),
        Duration::from_secs(900),
    )
}

/// Scaffolds, builds and tests one project in `dir`.
fn scaffold(dir: &Path, name: &str, kind: &str, lang: &str) {
    let new = eshost_offline(&[
        "plugin",
        "new",
        name,
        "--kind",
        kind,
        "--lang",
        lang,
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(new.code, Some(0), "{}", new.stderr);
    assert!(new.stdout.contains("./build.sh"), "{}", new.stdout);
    // Rust projects share a target directory across runs, so only the first compiles the SDK.
    build(dir);
    let wasm = dir.join(format!("{name}.wasm"));
    let cache = std::env::temp_dir().join("eshost-polyglot-tests-cache");
    let tested = eshost_with(
        &[
            "plugin",
            "test",
            wasm.to_str().unwrap(),
            "--fixture",
            dir.join("cases.json").to_str().unwrap(),
            "--time-ms",
            "5000",
            "--memory-mb",
            "256",
        ],
        &[("ESHOST_CACHE_DIR", cache.as_os_str())],
        Duration::from_secs(300),
    );
    assert_eq!(
        tested.code,
        Some(0),
        "{lang} {kind}: {}\n{}",
        tested.stdout,
        tested.stderr
    );
    assert!(tested.stdout.contains(" 0 failed"), "{}", tested.stdout);
}

#[test]
fn every_kind_in_every_language_builds_and_passes_its_own_fixture() {
    let root = tempfile::tempdir().unwrap();
    for lang in ["rust", "python", "javascript"] {
        for kind in ["aggregate", "projection", "upcaster", "reactor"] {
            let dir = root.path().join(format!("{lang}-{kind}"));
            scaffold(&dir, &format!("my-{kind}"), kind, lang);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaffolded_javascript_reactor_acts_when_served_by_its_own_config() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("big-adds");
    scaffold(&dir, "big-adds", "reactor", "javascript");
    let (child, base) = start_host(&dir.join("eshost.toml"), &dir.join("eshost.log"), &[]);
    let _host = Running(child);
    let client = reqwest::Client::new();
    let appended = client
        .post(format!("{base}/streams/counter-1"))
        .json(&serde_json::json!({"expected": "any", "events": [
            {"type": "Added", "schema_version": 2, "data": {"by": 150}}]}))
        .send()
        .await
        .unwrap();
    assert!(
        appended.status().is_success(),
        "{:?}",
        appended.text().await
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let logged = loop {
        let read = client
            .get(format!("{base}/streams/big-adds-log"))
            .send()
            .await
            .unwrap();
        if read.status().is_success() {
            let body: serde_json::Value = read.json().await.unwrap();
            if let Some(event) = body["events"].get(0) {
                break event.clone();
            }
        }
        assert!(Instant::now() < deadline, "no LargeAdd was appended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(logged["event_type"], "LargeAdd", "{logged}");
    assert_eq!(logged["data"]["by"], 150, "{logged}");
    assert_eq!(logged["data"]["stream"], "counter-1", "{logged}");
}

#[test]
fn a_scaffolded_aggregate_is_served_by_its_own_config() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("counter");
    scaffold(&dir, "counter", "aggregate", "python");
    let (child, base) = start_host(&dir.join("eshost.toml"), &dir.join("eshost.log"), &[]);
    let _host = Running(child);
    let sent = eshost_online(
        &base,
        &[
            "command",
            "counter",
            "counter-1",
            r#"{"type":"Add","by":3}"#,
        ],
    );
    assert_eq!(json(&sent)["stream_version"], 1, "{}", sent.stdout);
    let state = json(&eshost_online(&base, &["state", "counter", "counter-1"]));
    assert_eq!(state["state"]["count"], 3, "{state}");
}

/// componentize-py does not build byte-reproducibly, so an unchanged project is not built
/// again: the plugin keeps its identity. A changed source is built, here by one round of the
/// project's `watch.sh`, which also runs the fixture and says whether it passes.
#[test]
fn a_python_plugin_is_rebuilt_only_when_its_sources_change() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tally");
    scaffold(&dir, "tally", "projection", "python");
    let wasm = dir.join("tally.wasm");
    let built = std::fs::read(&wasm).unwrap();
    // What is not a source (a store beside it, a log) does not count.
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/events.redb"), b"changing").unwrap();
    std::fs::write(dir.join("notes.txt"), b"not a module").unwrap();
    let again = build(&dir);
    assert!(again.contains("tally.wasm is up to date"), "{again}");
    assert!(
        std::fs::read(&wasm).unwrap() == built,
        "the component was rebuilt"
    );

    let app = dir.join("app.py");
    let mut source = std::fs::read_to_string(&app).unwrap();
    source.push_str("\nEDITED = True\n");
    std::fs::write(&app, source).unwrap();
    let changed = watch_once(&dir);
    assert!(!changed.contains("up to date"), "{changed}");
    assert!(
        changed.contains("built, and the fixture passes"),
        "{changed}"
    );
    assert!(
        std::fs::read(&wasm).unwrap() != built,
        "the edit is not in the component"
    );

    // A fixture that no longer holds is reported as such.
    let cases = dir.join("cases.json");
    let fixture = std::fs::read_to_string(&cases).unwrap();
    assert!(fixture.contains("\"count\": 5"), "{fixture}");
    std::fs::write(&cases, fixture.replacen("\"count\": 5", "\"count\": 6", 1)).unwrap();
    let failed = watch_once(&dir);
    assert!(failed.contains("1 failed"), "{failed}");
    assert!(
        failed.contains("the build or the fixture failed"),
        "{failed}"
    );
}

/// One round of the project's `watch.sh`: build if a source changed, then its fixture.
fn watch_once(dir: &Path) -> String {
    run_bounded(
        Command::new(dir.join("watch.sh"))
            .env("ESHOST", eshost_tests::eshost_binary())
            .env("ESHOST_HOME", eshost_tests::checkout())
            .env("ESHOST_WATCH_ROUNDS", "1"),
        Duration::from_secs(600),
    )
}

#[test]
fn a_bad_name_or_a_taken_directory_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let bad = eshost_offline(&[
        "plugin",
        "new",
        "My Plugin",
        "--kind",
        "projection",
        "--lang",
        "rust",
    ]);
    assert_eq!(bad.code, Some(1));
    assert!(
        bad.stderr.contains("lowercase letters, digits and '-'"),
        "{}",
        bad.stderr
    );
    std::fs::write(root.path().join("keep.txt"), "mine").unwrap();
    let taken = eshost_offline(&[
        "plugin",
        "new",
        "x",
        "--kind",
        "upcaster",
        "--lang",
        "python",
        "--dir",
        root.path().to_str().unwrap(),
    ]);
    assert_eq!(taken.code, Some(1));
    assert!(
        taken.stderr.contains("exists and is not empty"),
        "{}",
        taken.stderr
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("keep.txt")).unwrap(),
        "mine"
    );
}
