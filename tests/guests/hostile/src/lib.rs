//! An aggregate plugin that misbehaves on command, to test the sandbox.
//!
//! `handle` reads the command's `type` and does that: `ok` (one normal event), `loop`,
//! `alloc` (a memory bomb), `recurse` and `recurse-frames`, `panic`, `exit`, `huge` (an 8 MiB
//! event), `print`
//! (floods stdout and stderr), and the probes `file`, `env`, `socket`, `clock`, `random`, whose
//! one event's data says what the guest could see; `digest` reports the state it decides on.
//!
//! `apply` mixes, for every event, the wall clock, the monotonic clock and fresh randomness
//! into the state, so that replays show whether any of them leak host entropy.

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

wit_bindgen::generate!({
    world: "aggregate-plugin",
    path: "../../../wit/v0.1.0",
});

use eshost::plugin::types::PluginKind;
use exports::eshost::plugin::aggregate::{
    Command, CommandError, Event, EventError, Guest as AggregateGuest, GuestInstance, NewEvent,
};

struct Hostile;

impl Guest for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "hostile".into(),
            kind: PluginKind::Aggregate,
            version: "0.0.1".into(),
            handles: vec![],
            upcasts: vec![],
        }
    }
}

impl AggregateGuest for Hostile {
    type Instance = Instance;
}

#[derive(Default)]
struct State {
    id: String,
    applied: u64,
    digest: u64,
    last_wall_ms: u128,
    last_monotonic_ns: u128,
}

struct Instance(RefCell<State>);

fn fnv(mut digest: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        digest ^= u64::from(*b);
        digest = digest.wrapping_mul(0x100_0000_01b3);
    }
    digest
}

fn random_u64() -> u64 {
    // `RandomState` draws its keys from `wasi:random`.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u8(1);
    hasher.finish()
}

fn wall_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn event(event_type: &str, data: String) -> NewEvent {
    NewEvent {
        event_type: event_type.into(),
        schema_version: 1,
        data,
        subject_id: None,
        personal_data: None,
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn outcome<T: std::fmt::Debug, E: std::fmt::Display>(result: Result<T, E>) -> String {
    match result {
        Ok(value) => format!("{{\"ok\":{}}}", json_str(&format!("{value:?}"))),
        Err(error) => format!("{{\"err\":{}}}", json_str(&error.to_string())),
    }
}

/// Recursion whose frames live on the wasm stack (the engine's native stack).
fn recurse(depth: u64) -> u64 {
    if depth == 0 {
        return 1;
    }
    recurse(depth - 1).wrapping_mul(3).wrapping_add(depth)
}

/// Recursion whose frames hold an array, which Rust keeps on its shadow stack in linear
/// memory: that stack overflows first.
fn recurse_frames(depth: u64) -> u64 {
    if depth == 0 {
        return 0;
    }
    let mut frame = [0u64; 16];
    frame[black_box(depth as usize % 16)] = depth;
    black_box(recurse_frames(black_box(depth - 1))) + black_box(frame)[3]
}

/// The `type` field of a JSON command, found without a JSON parser.
fn command_type(payload: &str) -> &str {
    let Some(start) = payload.find("\"type\"") else {
        return "";
    };
    let rest = &payload[start + 6..];
    let Some(open) = rest.find('"') else {
        return "";
    };
    let rest = &rest[open + 1..];
    &rest[..rest.find('"').unwrap_or(0)]
}

impl GuestInstance for Instance {
    fn new(id: String) -> Self {
        Instance(RefCell::new(State {
            id,
            ..State::default()
        }))
    }

    fn restore(
        id: String,
        snapshot: Vec<u8>,
    ) -> Result<exports::eshost::plugin::aggregate::Instance, String> {
        if snapshot.len() != 8 {
            return Err(format!(
                "a hostile snapshot is 8 bytes, got {}",
                snapshot.len()
            ));
        }
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&snapshot);
        let state = State {
            id,
            applied: u64::from_le_bytes(bytes),
            ..State::default()
        };
        Ok(exports::eshost::plugin::aggregate::Instance::new(Instance(
            RefCell::new(state),
        )))
    }

    fn apply(&self, events: Vec<Event>) -> Result<(), EventError> {
        let mut state = self.0.borrow_mut();
        for e in &events {
            if e.event_type == "Poison" {
                return Err(EventError {
                    position: e.position,
                    message: "poisoned event".into(),
                });
            }
            let wall = wall_ms();
            let mono = Instant::now();
            let monotonic_ns = mono.elapsed().as_nanos();
            let random = random_u64();
            let mut digest = fnv(state.digest, e.data.as_bytes());
            digest = fnv(digest, &wall.to_le_bytes());
            digest = fnv(digest, &monotonic_ns.to_le_bytes());
            digest = fnv(digest, &random.to_le_bytes());
            state.digest = digest;
            state.applied += 1;
            state.last_wall_ms = wall;
            state.last_monotonic_ns = monotonic_ns;
        }
        Ok(())
    }

    fn handle(&self, command: Command) -> Result<Vec<NewEvent>, CommandError> {
        let kind = command_type(&command.payload).to_owned();
        match kind.as_str() {
            "ok" => Ok(vec![event("Happened", "{}".into())]),
            "reject" => Err(CommandError::Rejected("no, on purpose".into())),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![black_box(7u8); 1 << 20]);
                    black_box(&hoard);
                }
            }
            "recurse" => Ok(vec![event(
                "Deep",
                format!("{{\"depth\":{}}}", recurse(black_box(u64::MAX))),
            )]),
            "recurse-frames" => Ok(vec![event(
                "Deep",
                format!("{{\"depth\":{}}}", recurse_frames(black_box(u64::MAX))),
            )]),
            "panic" => panic!("the hostile guest panicked on purpose"),
            "exit" => std::process::exit(3),
            "huge" => Ok(vec![event("Huge", format!("\"{}\"", "x".repeat(8 << 20)))]),
            "many" => Ok((0..100_000).map(|_| event("T", "{}".into())).collect()),
            "print" => {
                let line = "spam ".repeat(200);
                for _ in 0..2000 {
                    println!("{line}");
                    eprintln!("{line}");
                }
                Ok(vec![event("Printed", "{}".into())])
            }
            "file" => {
                let read = outcome(std::fs::read_to_string("/etc/passwd"));
                let create = outcome(std::fs::write("escape.txt", b"out"));
                let list = outcome(std::fs::read_dir(".").map(|d| d.count()));
                Ok(vec![event(
                    "Probed",
                    format!("{{\"read\":{read},\"create\":{create},\"list\":{list}}}"),
                )])
            }
            "env" => {
                let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
                let args: Vec<String> = std::env::args().collect();
                let cwd = outcome(std::env::current_dir());
                Ok(vec![event(
                    "Probed",
                    format!(
                        "{{\"vars\":{},\"args\":{},\"cwd\":{cwd}}}",
                        vars.len(),
                        args.len()
                    ),
                )])
            }
            "socket" => {
                let tcp = outcome(std::net::TcpStream::connect_timeout(
                    &"127.0.0.1:9".parse().unwrap(),
                    Duration::from_millis(100),
                ));
                let udp = outcome(std::net::UdpSocket::bind("0.0.0.0:0"));
                let listen = outcome(std::net::TcpListener::bind("0.0.0.0:0"));
                Ok(vec![event(
                    "Probed",
                    format!("{{\"tcp\":{tcp},\"udp\":{udp},\"listen\":{listen}}}"),
                )])
            }
            "clock" => {
                let wall = wall_ms();
                let start = Instant::now();
                std::thread::sleep(Duration::from_secs(10));
                let slept_ns = start.elapsed().as_nanos();
                Ok(vec![event(
                    "Probed",
                    format!("{{\"wall_ms\":{wall},\"slept_ns\":{slept_ns}}}"),
                )])
            }
            "digest" => {
                // What the state is as this command is decided (no randomness drawn).
                let state = self.0.borrow();
                Ok(vec![event(
                    "Observed",
                    format!(
                        "{{\"digest\":\"{:016x}\",\"applied\":{}}}",
                        state.digest, state.applied
                    ),
                )])
            }
            "random" => Ok(vec![event(
                "Probed",
                format!("{{\"random\":\"{:016x}\"}}", random_u64()),
            )]),
            other => Err(CommandError::Invalid(format!(
                "unknown hostile command {other:?}"
            ))),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.0.borrow().applied.to_le_bytes().to_vec()
    }

    fn state(&self) -> String {
        let s = self.0.borrow();
        format!(
            "{{\"id\":{},\"applied\":{},\"digest\":\"{:016x}\",\"last_wall_ms\":{},\"last_monotonic_ns\":{}}}",
            json_str(&s.id),
            s.applied,
            s.digest,
            s.last_wall_ms,
            s.last_monotonic_ns
        )
    }
}

export!(Hostile);
