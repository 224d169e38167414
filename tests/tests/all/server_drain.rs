//! SIGTERM drains: a request in flight finishes with its answer, and a request that arrives
//! meanwhile on an idle keep-alive connection gets a 503 with `Connection: close` (then the
//! server closes that connection) rather than a silently closed socket. The real binary; a
//! command to the hostile guest's endless loop (under a 15 s time limit) keeps the drain open.
//! Its log, written to a file, has no terminal colours.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.1 exchange on a kept-alive connection: the status, the headers (lowercase
/// names), or `None` when the server closed the connection instead of answering.
async fn exchange(stream: &mut TcpStream, request: &str) -> Option<(u16, Vec<(String, String)>)> {
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse().ok())
        .expect("a content-length (the API answers with sized bodies)");
    while buffer.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    Some((status, headers))
}

fn health_request(host: &str) -> String {
    format!("GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_during_the_drain_get_503_with_connection_close() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[[aggregates]]\nname = \"hostile\"\nplugin = {:?}\nlimits = {{ time_ms = 15000 }}\n",
        eshost_tests::HOSTILE
    );
    let (mut child, base) = eshost_tests::start_bank_host_with(dir.path(), &[], &extra);
    let host = base.trim_start_matches("http://").to_owned();

    let mut idle = TcpStream::connect(&host).await.unwrap();
    let (status, _) = exchange(&mut idle, &health_request(&host))
        .await
        .expect("an answer on a fresh connection");
    assert_eq!(status, 200);

    // A command that runs until its time limit: in flight for the whole drain.
    let http = reqwest::Client::new();
    let looping = tokio::spawn(
        http.post(format!("{base}/aggregates/hostile/victim"))
            .json(&serde_json::json!({"type": "loop"}))
            .send(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let in_flight: usize = metrics
            .lines()
            .find_map(|line| line.strip_prefix("eshost_http_requests_in_flight "))
            .expect("the in-flight gauge")
            .parse()
            .unwrap();
        // This metrics request and the looping command.
        if in_flight >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the command never got in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());

    // Until the signal is handled the idle connection is still served normally; then the
    // drain answers it 503 and closes it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let headers = loop {
        let (status, headers) = exchange(&mut idle, &health_request(&host))
            .await
            .expect("an answer, not a silently closed connection, during the drain");
        if status == 503 {
            break headers;
        }
        assert_eq!(status, 200);
        assert!(Instant::now() < deadline, "the drain never began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        headers
            .iter()
            .any(|(name, value)| name == "connection" && value.eq_ignore_ascii_case("close")),
        "{headers:?}"
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the server closes the connection after the 503: {closed:?}"
    );

    // The command in flight was answered (its time limit), not cut off.
    let answer = looping
        .await
        .unwrap()
        .expect("an answer to the command in flight");
    let status = answer.status();
    let body = answer.text().await.unwrap();
    assert!(body.contains("time limit"), "{status} {body}");

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "eshost did not stop after the drain"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");

    // The log went to a file: plain text, no terminal colours.
    let log = std::fs::read_to_string(dir.path().join(eshost_tests::HOST_LOG)).unwrap();
    assert!(log.contains("shutting down"), "{log}");
    // The command stopped by its time limit was a 500, and every 500 is logged with its cause.
    assert!(
        log.lines()
            .any(|line| line.contains("answered 500") && line.contains("time limit")),
        "{log}"
    );
    assert!(!log.contains('\x1b'), "ANSI escapes in a log file:\n{log}");
}
