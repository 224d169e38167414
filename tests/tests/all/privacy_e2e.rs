//! Forgetting a customer through the real `eshost` binary: the name is visible to the
//! aggregate, the projection and allowed readers; after `POST /subjects/{id}/forget` it is
//! gone from reads, aggregate states, snapshots and read models, the erasure is recorded,
//! another customer is untouched, `eshost verify` passes, and the events file never held it.
//! Needs `target/release/eshost` (built by `cargo test --release --workspace`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eshost_core::aggregate::Snapshots;
use eshost_core::views::Views;
use serde_json::{Value, json};

const NAME: &str = "Ottoline Vasquez-Brandt";
const EMAIL: &str = "ottoline.vb@example.org";
const OTHER: &str = "Barnaby Quist";

/// `eshost run` with the customer plugins, a snapshot after every event, and a token that
/// may see personal data beside one that may not.
fn start_host(dir: &Path) -> (Child, String) {
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    std::fs::copy(eshost_tests::CUSTOMER, dir.join("plugins/customer.wasm")).unwrap();
    std::fs::copy(eshost_tests::CUSTOMERS, dir.join("plugins/customers.wasm")).unwrap();
    std::fs::write(
        dir.join("eshost.toml"),
        r#"
store = "data"
[[aggregates]]
name = "customer"
plugin = "plugins/customer.wasm"
snapshot_every = 1
[[projections]]
name = "customers"
plugin = "plugins/customers.wasm"
[[tokens]]
token = "admin-token-1"
role = "admin"
name = "dpo"
personal_data = true
[[tokens]]
token = "reader-token-1"
role = "read"
"#,
    )
    .unwrap();
    let mut child = Command::new(eshost_tests::eshost_binary())
        .args(["run", "--config"])
        .arg(dir.join("eshost.toml"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    (child, base)
}

/// Kills the host if the test fails before stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, token, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, "admin-token-1", Some(body))
            .await
    }

    /// The customers row of `id`, once the projection shows it with `field` = `want`.
    async fn row_when(&self, id: &str, field: &str, want: &Value) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, row) = self
                .call(
                    reqwest::Method::GET,
                    &format!("/projections/customers/query/get?id={id}"),
                    "reader-token-1",
                    None,
                )
                .await;
            if status == 200 && &row[field] == want {
                return row;
            }
            assert!(Instant::now() < deadline, "row {id}: {row}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_customer_is_gone_from_reads_states_snapshots_and_read_models() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = start_host(dir.path());
    let mut child = Running(child);
    let api = Api {
        http: reqwest::Client::new(),
        base,
    };

    let drive = async {
        let (status, body) = api
            .post(
                "/aggregates/customer/customer-7",
                json!({"type": "Register", "name": NAME, "email": EMAIL, "tier": "gold"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, _) = api
            .post(
                "/aggregates/customer/customer-8",
                json!({"type": "Register", "name": OTHER, "email": "bq@example.org"}),
            )
            .await;
        assert_eq!(status, 200);

        // Before: the projection, the state and an allowed reader see the name; a reader
        // without `personal_data` sees that there is personal data, not what it is.
        api.row_when("customer-7", "name", &json!(NAME)).await;
        let state = api
            .get("/aggregates/customer/customer-7", "reader-token-1")
            .await;
        assert!(state.to_string().contains(NAME), "{state}");
        let allowed = api.get("/streams/customer-7", "admin-token-1").await;
        assert_eq!(
            allowed["events"][0]["personal_data"]["name"], NAME,
            "{allowed}"
        );
        let withheld = api.get("/streams/customer-7", "reader-token-1").await;
        assert_eq!(withheld["events"][0]["subject_id"], "customer-7");
        assert_eq!(withheld["events"][0]["shredded"], false);
        assert!(!withheld.to_string().contains(NAME), "{withheld}");
        assert_eq!(withheld["events"][0]["data"]["tier"], "gold");

        // Forget customer-7.
        let (status, report) = api
            .post(
                "/subjects/customer-7/forget",
                json!({"reason": "ticket 4711"}),
            )
            .await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["key"], "key_erased");
        assert_eq!(report["streams"], json!(["customer-7"]));
        assert_eq!(report["projections_rebuilt"], json!(["customers"]));
        assert_eq!(report["projections_pending"], json!([]));

        // After: gone from event reads (even for allowed readers), history, state and rows.
        for token in ["admin-token-1", "reader-token-1"] {
            let events = api.get("/streams/customer-7", token).await;
            assert_eq!(events["events"][0]["shredded"], true, "{events}");
            assert!(events["events"][0].get("personal_data").is_none());
            assert_eq!(events["events"][0]["data"]["tier"], "gold");
        }
        let all = api.get("/all", "admin-token-1").await.to_string();
        assert!(!all.contains(NAME) && !all.contains(EMAIL), "{all}");
        let history = api
            .get("/aggregates/customer/customer-7/history", "admin-token-1")
            .await
            .to_string();
        assert!(
            !history.contains(NAME) && !history.contains(EMAIL),
            "{history}"
        );
        let state = api
            .get("/aggregates/customer/customer-7", "admin-token-1")
            .await;
        assert!(!state.to_string().contains(NAME), "{state}");
        let row = api.row_when("customer-7", "name", &Value::Null).await;
        assert!(!row.to_string().contains(EMAIL), "{row}");
        assert_eq!(
            row["id"], "customer-7",
            "the row stays, without personal data"
        );

        // The other customer is untouched.
        api.row_when("customer-8", "name", &json!(OTHER)).await;
        let other = api.get("/streams/customer-8", "admin-token-1").await;
        assert_eq!(other["events"][0]["personal_data"]["name"], OTHER);

        // The erasure is on record, without personal data, naming who asked and why.
        let erasures = api.get("/streams/$erasures", "reader-token-1").await;
        let erasure = &erasures["events"][0];
        assert_eq!(erasure["event_type"], "SubjectForgotten");
        assert_eq!(erasure["data"]["subject_id"], "customer-7");
        assert_eq!(erasure["metadata"]["user"], "dpo");
        assert_eq!(erasure["metadata"]["reason"], "ticket 4711");

        // New personal data for a forgotten subject is refused: by the plugin's own rule,
        // and by the host for any writer; readers cannot forget.
        let (status, body) = api
            .post(
                "/aggregates/customer/customer-7",
                json!({"type": "ChangeEmail", "email": "new@example.org"}),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        let (status, body) = api
            .post(
                "/streams/customer-7",
                json!({"events": [{"type": "EmailChanged", "data": {},
                    "subject_id": "customer-7", "personal_data": {"email": "x@example.org"}}]}),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"], "subject_forgotten");
        let (status, _) = api
            .call(
                reqwest::Method::POST,
                "/subjects/customer-8/forget",
                "reader-token-1",
                Some(json!({})),
            )
            .await;
        assert_eq!(status, 403);
    };
    tokio::time::timeout(Duration::from_secs(120), drive)
        .await
        .expect("the story finishes");

    let stopped = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(child.0.wait().unwrap().success());

    // The log was not rewritten: the chain verifies.
    let store = dir.path().join("data");
    let verify = Command::new(eshost_tests::eshost_binary())
        .args(["verify", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // The events file never held the plaintext; the snapshot of the forgotten customer holds
    // none either, while the other customer's snapshot (proof that snapshots were taken)
    // still holds its name.
    let events_file = std::fs::read(store.join(eshost_store::EVENTS_FILE)).unwrap();
    assert!(contains(&events_file, "customer-7"));
    assert!(!contains(&events_file, NAME) && !contains(&events_file, EMAIL));
    assert!(!contains(&events_file, OTHER));
    // Nor did the write-ahead log, which holds the same records.
    for wal in ["events.wal0", "events.wal1"] {
        let log = std::fs::read(store.join(wal)).unwrap();
        assert!(!contains(&log, NAME) && !contains(&log, EMAIL) && !contains(&log, OTHER));
    }
    let snapshots = Snapshots::new(Views::open(&store).unwrap());
    let other = snapshots.get("customer", "customer-8").unwrap().unwrap();
    assert!(contains(&other.state, OTHER));
    if let Some(forgotten) = snapshots.get("customer", "customer-7").unwrap() {
        assert!(!contains(&forgotten.state, NAME) && !contains(&forgotten.state, EMAIL));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_offline_purges_read_models_when_the_host_next_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = start_host(dir.path());
    let mut child = Running(child);
    let api = Api {
        http: reqwest::Client::new(),
        base,
    };
    let (status, _) = api
        .post(
            "/aggregates/customer/customer-3",
            json!({"type": "Register", "name": NAME, "email": EMAIL}),
        )
        .await;
    assert_eq!(status, 200);
    api.row_when("customer-3", "name", &json!(NAME)).await;
    let stop = |child: &mut Running| {
        Command::new("kill")
            .args(["-TERM", &child.0.id().to_string()])
            .status()
            .unwrap();
        assert!(child.0.wait().unwrap().success());
    };
    stop(&mut child);

    let store = dir.path().join("data");
    let forget = Command::new(eshost_tests::eshost_binary())
        .args(["forget", "customer-3", "--reason", "offline", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        forget.status.success(),
        "{}",
        String::from_utf8_lossy(&forget.stderr)
    );
    let report: Value = serde_json::from_slice(&forget.stdout).unwrap();
    assert_eq!(report["key"], "key_erased");
    assert_eq!(report["streams"], json!(["customer-3"]));
    {
        // Snapshots are written without waiting for the disk, so one may not have survived
        // the stop; none that did may hold the name.
        let snapshots = Snapshots::new(Views::open(&store).unwrap());
        if let Some(snapshot) = snapshots.get("customer", "customer-3").unwrap() {
            assert!(!contains(&snapshot.state, NAME));
        }
    }

    // The read model still holds the name until a host finishes the purge on start.
    let (child, base) = start_host(dir.path());
    let mut child = Running(child);
    let api = Api {
        http: reqwest::Client::new(),
        base,
    };
    let row = api.row_when("customer-3", "name", &Value::Null).await;
    assert!(!row.to_string().contains(EMAIL), "{row}");
    let events = api.get("/streams/customer-3", "admin-token-1").await;
    assert_eq!(events["events"][0]["shredded"], true);
    stop(&mut child);
    let verify = Command::new(eshost_tests::eshost_binary())
        .args(["verify", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(verify.status.success());
}

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if contains(&std::fs::read(&path).unwrap(), needle) {
            found.push(path.display().to_string());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_forgetting_and_compacting_no_file_of_the_store_holds_the_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = start_host(dir.path());
    let mut child = Running(child);
    let api = Api {
        http: reqwest::Client::new(),
        base,
    };
    let register = |id: String, name: String| {
        let api = &api;
        async move {
            let (status, body) = api
                .post(
                    &format!("/aggregates/customer/{id}"),
                    json!({"type": "Register", "name": name, "email": format!("{id}@example.org")}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    };
    let (status, body) = api
        .post(
            "/aggregates/customer/customer-5",
            json!({"type": "Register", "name": NAME, "email": EMAIL}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Enough other rows that the read model spans many pages.
    for n in 0..200 {
        register(format!("customer-other-{n}"), format!("{OTHER} {n}")).await;
    }
    api.row_when("customer-5", "name", &json!(NAME)).await;
    api.row_when("customer-other-199", "name", &json!(format!("{OTHER} 199")))
        .await;
    let (status, report) = api
        .post("/subjects/customer-5/forget", json!({"reason": "ticket 5"}))
        .await;
    assert_eq!(status, 200, "{report}");
    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(child.0.wait().unwrap().success());

    let store = dir.path().join("data");
    let before = files_holding(&store, NAME);
    eprintln!("before compacting, the name is in {before:?}");
    let compacted = eshost_tests::cli::json(&eshost_tests::cli::eshost_offline(&[
        "compact",
        "--store",
        store.to_str().unwrap(),
    ]));
    for file in compacted["compacted"].as_array().unwrap() {
        assert!(
            file["bytes_after"].as_u64() <= file["bytes_before"].as_u64(),
            "{file}"
        );
    }
    assert_eq!(files_holding(&store, NAME), Vec::<String>::new());
    assert_eq!(files_holding(&store, EMAIL), Vec::<String>::new());

    // The compacted store still serves: the log verifies, the other rows are there.
    let verify = eshost_tests::cli::eshost_offline(&["verify", "--store", store.to_str().unwrap()]);
    assert_eq!(verify.code, Some(0), "{}", verify.stderr);
    let (child, base) = start_host(dir.path());
    let _child = Running(child);
    let api = Api {
        http: reqwest::Client::new(),
        base,
    };
    api.row_when("customer-other-7", "name", &json!(format!("{OTHER} 7")))
        .await;
}
