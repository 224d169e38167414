//! `[archive]`: the retention schedule of a running host (a directory store's, or each node's
//! of a PostgreSQL store: nodes archive one at a time, and what one moved the next finds
//! done).

use std::time::Duration;

use serde::Deserialize;

/// How long events stay hot before the running host moves them to sealed
/// archive segments (see `eshost_store::archive`). Off unless `after_days` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchivePolicy {
    /// Events recorded more than this many days ago are archived; `None`: never.
    pub after_days: Option<u64>,
    /// How often the host looks for events to archive (and once when it starts).
    pub every_secs: u64,
}

impl ArchivePolicy {
    /// The default `every_secs`: hourly.
    pub const DEFAULT_EVERY_SECS: u64 = 3600;

    /// [`every_secs`](Self::every_secs) as a duration.
    pub fn every(&self) -> Duration {
        Duration::from_secs(self.every_secs)
    }

    /// How long events stay hot, if they move at all.
    pub fn keep_hot(&self) -> Option<Duration> {
        self.after_days
            .map(|days| Duration::from_secs(days.saturating_mul(86_400)))
    }

    /// Refuses a schedule that cannot run.
    pub(super) fn check(&self) -> Result<(), String> {
        if self.every_secs == 0 {
            return Err("every_secs must be at least 1".into());
        }
        Ok(())
    }
}

impl Default for ArchivePolicy {
    fn default() -> Self {
        ArchivePolicy {
            after_days: None,
            every_secs: Self::DEFAULT_EVERY_SECS,
        }
    }
}
