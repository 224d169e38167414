//! `[http]`: what one client connection may hold of the host.

use std::time::Duration;

use serde::Deserialize;

/// Limits on client connections, so that slow, half-open or idle clients cannot hold every
/// connection (or every file descriptor) the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// Connections served at once; more wait in the kernel's accept queue until one closes.
    /// Keep it under the process's open-file limit.
    pub max_connections: usize,
    /// A request's headers must arrive within this long, or the connection is closed; an
    /// idle keep-alive connection is closed after it too.
    pub header_timeout_ms: u64,
    /// A request's body must arrive within this long, or it is refused (400).
    pub body_timeout_ms: u64,
}

impl HttpLimits {
    /// The default `max_connections`: half the usual 1,024 open files, leaving the rest to the
    /// store, the plugins' cache and the logs.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
    /// The default `header_timeout_ms`.
    pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 30_000;
    /// The default `body_timeout_ms`: a plugin upload of the largest size at about 1 MB/s.
    pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 120_000;

    /// [`header_timeout_ms`](Self::header_timeout_ms) as a duration.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    /// [`body_timeout_ms`](Self::body_timeout_ms) as a duration.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    /// Refuses limits that would stop the host from serving anyone.
    pub(super) fn check(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        if self.header_timeout_ms == 0 || self.body_timeout_ms == 0 {
            return Err("header_timeout_ms and body_timeout_ms must be above 0".into());
        }
        Ok(())
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            header_timeout_ms: Self::DEFAULT_HEADER_TIMEOUT_MS,
            body_timeout_ms: Self::DEFAULT_BODY_TIMEOUT_MS,
        }
    }
}
