//! `[[reactors]]`: plugins that turn events into commands, events and timers.

use std::path::PathBuf;

use serde::Deserialize;

use super::{FailurePolicy, LimitOverrides};
use crate::reactor::{ReactorConfig, StartAt};

/// Where a reactor without a checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReactorStart {
    /// At the head: it acts only on events from its first start on (the default).
    #[default]
    Head,
    /// At the first event: it acts on the whole history once.
    Beginning,
}

/// `[[reactors]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReactorEntry {
    /// The reactor's name; the plugin must describe itself with it. It owns the streams
    /// `{name}-...` and its own `$reactor-{name}`.
    pub name: String,
    /// The component file (built against `wit/v0.2.0`, world `reactor-plugin`).
    pub plugin: PathBuf,
    /// Events per `handle` call.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Tries of a failing event before the failure policy applies.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// What happens then.
    #[serde(default)]
    pub on_failure: FailurePolicy,
    /// Where it starts the first time.
    #[serde(default)]
    pub start: ReactorStart,
    /// This plugin's own sandbox limits, over `[limits]`.
    #[serde(default)]
    pub limits: Option<LimitOverrides>,
}

fn default_batch() -> usize {
    ReactorConfig::new("").batch
}

fn default_attempts() -> u32 {
    ReactorConfig::new("").attempts
}

impl ReactorEntry {
    /// How the reactor runs.
    pub fn config(&self) -> ReactorConfig {
        let mut config = ReactorConfig::new(&self.name);
        config.batch = self.batch;
        config.attempts = self.attempts;
        config.dead_letter = self.on_failure == FailurePolicy::DeadLetter;
        config.start = match self.start {
            ReactorStart::Head => StartAt::Head,
            ReactorStart::Beginning => StartAt::Beginning,
        };
        config
    }
}
