//! The outcome of re-checking a log: every backend reports the same way.

use serde::Serialize;

/// The outcome of [`verify`](super::Store::verify).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// How many records were checked.
    pub events_checked: u64,
    /// The head position the store records.
    pub head: u64,
    /// The first position found bad, and why; `None` when the log is intact.
    pub first_bad: Option<BadRecord>,
}

/// A record that failed verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadRecord {
    /// Its position.
    pub position: u64,
    /// What is wrong.
    pub reason: String,
}

impl VerifyReport {
    /// Whether the log is intact.
    pub fn is_ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.first_bad {
            None => write!(
                f,
                "ok: {} events, hash chain intact up to position {}",
                self.events_checked, self.head
            ),
            Some(bad) => write!(
                f,
                "corrupt at position {}: {} ({} events checked before it)",
                bad.position, bad.reason, self.events_checked
            ),
        }
    }
}
