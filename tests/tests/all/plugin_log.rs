//! A plugin's stdout and stderr go to the host log, tagged with the plugin's name, within a
//! byte budget per call. In its own test binary: `tracing` caches which call sites are enabled
//! per process, and a thread-local subscriber set while other tests log on other threads can
//! miss events.

use std::io::Write;
use std::sync::{Arc, Mutex};

use eshost_tests::{HOSTILE, command, runtime, test_limits};
use tracing_subscriber::util::SubscriberInitExt;

/// A log sink for one test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn plugin_output_goes_to_the_host_log_within_its_budget() {
    let log = Captured::default();
    let sink = log.clone();
    let _subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish()
        .set_default();

    let (runtime, _cache) = runtime();
    let mut instance = runtime
        .load_aggregate(HOSTILE)
        .unwrap()
        .instantiate()
        .unwrap();
    instance.new("victim-1").unwrap();
    // The guest writes 2,000 lines of 1,000 bytes to each of stdout and stderr.
    let events = instance.handle(&command(r#"{"type":"print"}"#, 1)).unwrap();
    assert_eq!(events[0].event_type, "Printed");

    let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("spam spam")).collect();
    assert!(!lines.is_empty(), "plugin output reaches the log:\n{log}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("plugin=\"hostile\"") || l.contains("plugin=hostile"))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("stream=\"stdout\"") || l.contains("stream=stdout"))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("stream=\"stderr\"") || l.contains("stream=stderr"))
    );
    // 16 KiB per stream and call are kept, the rest is dropped and counted.
    let kept: usize = lines.iter().map(|l| l.matches("spam").count() * 5).sum();
    assert!(kept <= 2 * test_limits().log_bytes, "kept {kept} bytes");
    assert!(log.contains("dropped_bytes="), "the drop is logged:\n{log}");
}
