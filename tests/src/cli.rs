//! The `eshost` binary as a user runs it: arguments in, exit code and output back.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `eshost` process, killed when dropped (a test that fails leaves nothing behind).
#[derive(Debug)]
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a run printed and how it ended.
#[derive(Debug)]
pub struct Output {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `eshost ARGS` without the environment's server, token or store, killed after 20 s.
pub fn eshost_offline(args: &[&str]) -> Output {
    eshost_with(args, &[], Duration::from_secs(20))
}

/// [`eshost_offline`] with variables `env` set, killed after `limit` (a run that compiles an
/// interpreter component takes longer than most).
pub fn eshost_with(args: &[&str], env: &[(&str, &std::ffi::OsStr)], limit: Duration) -> Output {
    let mut child = Command::new(crate::eshost_binary())
        .args(args)
        // `plugin new` points projects at this checkout, not the binary's build-time one.
        .env("ESHOST_HOME", crate::checkout())
        .envs(env.iter().copied())
        .env_remove("ESHOST_TOKEN")
        .env_remove("ESHOST_STORE")
        .env_remove("ESHOST_KEYS")
        .env_remove("ESHOST_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start eshost");
    // Read while it runs: a child blocked on a full pipe never exits.
    let mut stdout_pipe = child.stdout.take().expect("stdout");
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let stdout = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout_pipe.read_to_string(&mut text);
        text
    });
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for eshost") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("eshost {args:?} did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Runs `eshost ARGS --server BASE`.
pub fn eshost_online(base: &str, args: &[&str]) -> Output {
    let mut args = args.to_vec();
    args.extend(["--server", base]);
    eshost_offline(&args)
}

/// A successful run's output as one JSON value.
///
/// # Panics
/// When the run failed or printed something else.
pub fn json(output: &Output) -> Value {
    assert_eq!(output.code, Some(0), "stderr: {}", output.stderr);
    serde_json::from_str(output.stdout.trim()).expect("one JSON value")
}

/// A successful run's output as JSON lines.
///
/// # Panics
/// When the run failed or a line is not JSON.
pub fn json_lines(output: &Output) -> Vec<Value> {
    assert_eq!(output.code, Some(0), "stderr: {}", output.stderr);
    output
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}
