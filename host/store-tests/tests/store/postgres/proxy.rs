//! A loopback TCP proxy in front of the test server that can cut a connection at a
//! transaction's `COMMIT`: just after forwarding it (the server commits, the client never
//! hears so), or instead of forwarding it (the server rolls back). It reads the wire
//! protocol's message framing only, enough to find a simple-query `COMMIT`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What the proxy does with the next `COMMIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Nothing: pass everything through.
    Never,
    /// Forward the `COMMIT`, then close the client's side: the reply is lost.
    AfterCommit,
    /// Close both sides instead of forwarding the `COMMIT`.
    BeforeCommit,
}

#[derive(Debug)]
pub struct Proxy {
    pub port: u16,
    cut: Arc<Mutex<Cut>>,
    cuts: Arc<AtomicU64>,
}

impl Proxy {
    /// A proxy to `target` (host:port) on a free loopback port.
    pub fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(Mutex::new(Cut::Never));
        let cuts = Arc::new(AtomicU64::new(0));
        let (shared_cut, shared_cuts) = (cut.clone(), cuts.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let (cut, cuts) = (shared_cut.clone(), shared_cuts.clone());
                std::thread::spawn(move || relay(client, server, cut, cuts));
            }
        });
        Proxy { port, cut, cuts }
    }

    /// Cut the next `COMMIT` that passes, once.
    pub fn arm(&self, cut: Cut) {
        *self.cut.lock().unwrap() = cut;
    }

    /// How many connections were cut.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::SeqCst)
    }
}

fn relay(client: TcpStream, server: TcpStream, cut: Arc<Mutex<Cut>>, cuts: Arc<AtomicU64>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut from_client, mut to_server) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    let (mut from_server, mut to_client) = (server, client);
    let upstream = std::thread::spawn(move || {
        // The startup packet has no type byte; every later message does.
        let mut startup = true;
        while let Some(message) = read_message(&mut from_client, startup) {
            startup = false;
            let is_commit = message.first() == Some(&b'Q') && message[5..].starts_with(b"COMMIT\0");
            let action = if is_commit {
                std::mem::replace(&mut *cut.lock().unwrap(), Cut::Never)
            } else {
                Cut::Never
            };
            match action {
                Cut::Never => {
                    if to_server.write_all(&message).is_err() {
                        break;
                    }
                }
                Cut::AfterCommit => {
                    // The client hears nothing more; the server gets the COMMIT and then the
                    // end of the connection, in that order, and answers the COMMIT before it
                    // notices (its reply is drained and dropped below).
                    let _ = from_client.shutdown(Shutdown::Both);
                    let _ = to_server.write_all(&message);
                    let _ = to_server.shutdown(Shutdown::Write);
                    cuts.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Cut::BeforeCommit => {
                    cuts.fetch_add(1, Ordering::SeqCst);
                    let _ = from_client.shutdown(Shutdown::Both);
                    let _ = to_server.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
        let _ = to_server.shutdown(Shutdown::Both);
    });
    // Relay the server's answers; once the client is gone, drain them until the server closes
    // (closing with unread data would reset the connection and lose what was sent to it).
    let mut buffer = [0u8; 16 * 1024];
    let mut client_gone = false;
    loop {
        match from_server.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                if !client_gone && to_client.write_all(&buffer[..read]).is_err() {
                    client_gone = true;
                }
            }
        }
    }
    let _ = to_client.shutdown(Shutdown::Both);
    let _ = upstream.join();
}

/// One frontend message, type byte (if any) and length included; `None` at the end.
fn read_message(stream: &mut TcpStream, startup: bool) -> Option<Vec<u8>> {
    let mut message = Vec::new();
    if !startup {
        let mut kind = [0u8; 1];
        stream.read_exact(&mut kind).ok()?;
        message.push(kind[0]);
    }
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).ok()?;
    message.extend_from_slice(&length);
    let body = (u32::from_be_bytes(length) as usize).checked_sub(4)?;
    let start = message.len();
    message.resize(start + body, 0);
    stream.read_exact(&mut message[start..]).ok()?;
    Some(message)
}
