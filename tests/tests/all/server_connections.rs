//! The connection limits of `eshost run` (`[http]`) over real sockets: slow, half-open and
//! idle clients are closed after the header timeout, a body that trickles is refused after
//! the body timeout, with every connection slot held a new client waits and is served, and a
//! quiet subscription is never cut.
//! Needs `target/release/eshost` (built by `cargo test --release --workspace`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use eshost_tests::cli::Running;

/// Everything the server sends until it closes the connection; fails if it keeps it open
/// longer than `within`.
fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => String::from_utf8_lossy(&answer).into_owned(),
        // A reset is the server closing too.
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
            String::from_utf8_lossy(&answer).into_owned()
        }
        Err(error) => panic!("the server kept the connection open: {error}"),
    }
}

#[test]
fn slow_half_open_and_trickling_clients_are_dropped_while_others_are_served() {
    const SLOTS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let limits = format!(
        "[http]\nmax_connections = {SLOTS}\nheader_timeout_ms = 500\nbody_timeout_ms = 500\n"
    );
    let (child, base) = eshost_tests::start_bank_host_with(dir.path(), &[], &limits);
    let _host = Running(child);
    let address = base.strip_prefix("http://").unwrap().to_owned();

    // Every slot held: half the clients send nothing, half stop inside their headers.
    let mut hogs: Vec<TcpStream> = (0..SLOTS)
        .map(|n| {
            let mut stream = TcpStream::connect(&address).unwrap();
            if n % 2 == 1 {
                stream
                    .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                    .unwrap();
            }
            stream
        })
        .collect();

    // A well-behaved client waits for a slot (the header timeout frees them) and is served.
    let mut client = TcpStream::connect(&address).unwrap();
    client
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let answer = read_until_closed(&mut client, Duration::from_secs(30));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The server closed every hog.
    for hog in &mut hogs {
        let leftover = read_until_closed(hog, Duration::from_secs(30));
        assert!(!leftover.contains("200 OK"), "{leftover}");
    }

    // A body that stops arriving is refused, and nothing is appended.
    let mut trickle = TcpStream::connect(&address).unwrap();
    trickle
        .write_all(
            b"POST /streams/slow-1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\nConnection: close\r\n\r\n{\"events\": [",
        )
        .unwrap();
    let answer = read_until_closed(&mut trickle, Duration::from_secs(30));
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("did not arrive within 500 ms"), "{answer}");
    let mut check = TcpStream::connect(&address).unwrap();
    check
        .write_all(b"GET /streams/slow-1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let answer = read_until_closed(&mut check, Duration::from_secs(30));
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");

    // A request in progress is never cut: a subscriber quiet for three timeouts still gets
    // the next event. (The wait is the point here: it shows what does not happen.)
    let mut subscriber = TcpStream::connect(&address).unwrap();
    subscriber
        .write_all(b"GET /subscribe?from=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let seen = read_until(&mut subscriber, "\r\n\r\n");
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    std::thread::sleep(Duration::from_millis(1_500));
    let body = r#"{"events":[{"type":"Noted","data":{}}]}"#;
    let mut append = TcpStream::connect(&address).unwrap();
    append
        .write_all(
            format!(
                "POST /streams/live-1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
    let answer = read_until_closed(&mut append, Duration::from_secs(30));
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    read_until(&mut subscriber, "live-1");
}

/// Reads until what arrived contains `wanted` (at most 30 s).
fn read_until(stream: &mut TcpStream, wanted: &str) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(wanted) {
        let n = stream
            .read(&mut chunk)
            .unwrap_or_else(|e| panic!("waiting for {wanted:?}: {e}"));
        assert!(
            n > 0,
            "closed before {wanted:?}: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}
