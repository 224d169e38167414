//! `eshost.toml`: what `eshost run` serves. Unknown keys are refused; relative paths resolve
//! against the config file's folder.
//!
//! ```toml
//! store = "data"                 # the store directory (events.redb, views.redb, keys.eshk)
//! keys = "/secure/keys.eshk"      # optional: the personal-data key file, elsewhere
//! # or a PostgreSQL database shared by several nodes:
//! # store = "postgres://eshost@db.internal:5432/eshost"
//! # key_encryption_key = "env:ESHOST_KEK"   # or a file; default: eshost.kek beside this file
//! # data = "data"                          # this node's derived state (views.redb)
//! listen = "127.0.0.1:7070"
//! max_body_bytes = 4194304       # request bodies (plugin uploads: max_plugin_bytes)
//! max_response_bytes = 8388608   # event bytes in one page of /all, /streams, history
//! watch_plugins = true           # hot-swap a plugin when its file changes
//! ui = true                      # serve the admin web UI at /ui
//!
//! [http]                         # what one client connection may hold
//! max_connections = 512          # served at once; more wait in the accept queue
//! header_timeout_ms = 30000      # headers (and idle keep-alive) within this, or closed
//! body_timeout_ms = 120000       # a body within this, or refused
//!
//! [archive]                      # retention, either backend (default: off)
//! after_days = 90                # older events move to sealed segments; every_secs = 3600
//!
//! [limits]                       # sandbox limits for every plugin call
//! time_ms = 1000
//! memory_mb = 128
//!
//! [[aggregates]]
//! name = "bank-account"
//! plugin = "plugins/bank_account.wasm"
//! snapshot_every = 100
//! instance_per_aggregate = false # true: a wasm instance per cached aggregate (determinism)
//! stream_prefix = "account-"     # aggregate 42's stream is account-42 (default: none, the id)
//! limits = { memory_mb = 256 }   # this plugin's own limits, over [limits] key by key
//!
//! [[upcasters]]
//! name = "deposit-currency"
//! plugin = "plugins/deposit_currency.wasm"
//!
//! [[projections]]
//! name = "balances"
//! plugin = "plugins/balances.wasm"
//! batch = 2000
//! on_failure = "stop"            # or "dead_letter"
//! attempts = 5
//!
//! [[reactors]]                   # turn events into commands, events and timers
//! name = "transfer-saga"
//! plugin = "plugins/transfer_saga.wasm"
//! batch = 100
//! on_failure = "stop"            # or "dead_letter"
//! start = "head"                 # or "beginning": act on the whole history once
//!
//! [[tokens]]                     # none: open, loopback only
//! token = "s3cret"
//! role = "admin"                 # read (GETs), write (+ commands, appends), admin (+ plugins,
//!                                # projection control)
//! ```
//!
//! Every default is defined once: the `DEFAULT_*` constants here, the pipeline's own
//! ([`AggregateConfig::DEFAULT_SNAPSHOT_EVERY`], [`ProjectionConfig::DEFAULT_BATCH`],
//! [`ProjectionConfig::DEFAULT_ATTEMPTS`]) and the sandbox's ([`Limits::default`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use eshost_runtime::Limits;

mod archive;
mod http;
mod reactor;

pub use archive::ArchivePolicy;
pub use http::HttpLimits;
pub use reactor::{ReactorEntry, ReactorStart};

use crate::aggregate::AggregateConfig;
use crate::projection::ProjectionConfig;

/// The default listen address (and the CLI's default server).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// The default `max_body_bytes`: 4 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// The default `max_plugin_bytes`: 64 MiB.
pub const DEFAULT_MAX_PLUGIN_BYTES: usize = 64 * 1024 * 1024;
/// The default `max_response_bytes`: 8 MiB of event data and metadata per page.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// The default `watch_plugins`: on.
pub const DEFAULT_WATCH_PLUGINS: bool = true;

/// A loaded config; paths are absolute (resolved against the file's folder).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from.
    pub file: PathBuf,
    /// The store directory: the embedded log and keys, and this node's derived state
    /// (`views.redb`). With a PostgreSQL store ([`Config::postgres`]), the derived state only
    /// (the `data` key).
    pub store: PathBuf,
    /// The key store file; `None`: `keys.eshk` in the store directory.
    pub keys: Option<PathBuf>,
    /// The PostgreSQL store, when `store` is a `postgres://` URL.
    pub postgres: Option<PostgresStore>,
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// The largest request body, except plugin uploads.
    pub max_body_bytes: usize,
    /// The largest plugin upload (`PUT /plugins/{name}`).
    pub max_plugin_bytes: usize,
    /// The event bytes (data, metadata, personal part) one page of events may hold: a read
    /// of `$all`, a stream or a history ends its page there (after at least one event).
    pub max_response_bytes: usize,
    /// Hot-swap a plugin when its file changes.
    pub watch_plugins: bool,
    /// Serve the admin web UI at `/ui` (default: yes).
    pub ui: bool,
    /// What one client connection may hold (`[http]`).
    pub http: HttpLimits,
    /// `[archive]`: how long events stay hot.
    pub archive: ArchivePolicy,
    /// Sandbox limits of every plugin without limits of its own ([`Config::plugin_limits`]).
    pub limits: Limits,
    /// Aggregate plugins.
    pub aggregates: Vec<AggregateEntry>,
    /// Upcaster plugins, in chain order.
    pub upcasters: Vec<UpcasterEntry>,
    /// Projection plugins.
    pub projections: Vec<ProjectionEntry>,
    /// Reactor plugins.
    pub reactors: Vec<ReactorEntry>,
    /// Bearer tokens; empty: no auth (loopback only).
    pub tokens: Vec<TokenEntry>,
}

/// A PostgreSQL event store: `store = "postgres://..."`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresStore {
    /// The server's URL (may carry `?schema=NAME`).
    pub url: String,
    /// Where the key-encryption key is: `env:NAME`, or a file path (resolved).
    pub key_encryption_key: String,
}

/// `[[aggregates]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateEntry {
    /// The aggregate type; the plugin must describe itself with it.
    pub name: String,
    /// The component file.
    pub plugin: PathBuf,
    /// Snapshot every N events (0: never).
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
    /// A wasm instance per cached aggregate (see `AggregateConfig::instance_per_aggregate`).
    #[serde(default)]
    pub instance_per_aggregate: bool,
    /// Put before an aggregate's id to name its stream (see `AggregateConfig::stream_prefix`).
    #[serde(default)]
    pub stream_prefix: String,
    /// This plugin's own sandbox limits, over `[limits]` ([`Config::plugin_limits`]).
    #[serde(default)]
    pub limits: Option<LimitOverrides>,
}

/// `[[upcasters]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpcasterEntry {
    /// The upcaster's name; the plugin must describe itself with it.
    pub name: String,
    /// The component file.
    pub plugin: PathBuf,
    /// This plugin's own sandbox limits, over `[limits]` ([`Config::plugin_limits`]).
    #[serde(default)]
    pub limits: Option<LimitOverrides>,
}

/// What a projection does with an event that keeps failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Stop at the event with the error visible (the default).
    #[default]
    Stop,
    /// Park it in the dead-letter table and go on.
    DeadLetter,
}

/// `[[projections]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionEntry {
    /// The projection's name; the plugin must describe itself with it.
    pub name: String,
    /// The component file.
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
    /// This plugin's own sandbox limits, over `[limits]` ([`Config::plugin_limits`]).
    #[serde(default)]
    pub limits: Option<LimitOverrides>,
}

/// What a token may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// GETs: state, streams, `$all`, subscriptions, projections, plugins, metrics.
    Read,
    /// Also commands and appends.
    Write,
    /// Also plugin swaps and projection control.
    Admin,
}

impl Role {
    /// `read`, `write`, `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// `[[tokens]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// The bearer token.
    pub token: String,
    /// What it may do.
    pub role: Role,
    /// Who it is (recorded as the `user` of commands); default: the role.
    #[serde(default)]
    pub name: Option<String>,
    /// Whether reads with this token show events' decrypted personal data (default: no;
    /// the `subject_id` and whether it was shredded are shown either way).
    #[serde(default)]
    pub personal_data: bool,
}

/// `[limits]`, or the `limits` table of one plugin: sandbox limits, each key optional. An
/// absent key keeps the value underneath: [`Limits::default`] for `[limits]`, `[limits]` for a
/// plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    /// Wall time of one call, ms ([`Limits::time`]).
    pub time_ms: Option<u64>,
    /// Linear memory of one instance, MiB ([`Limits::memory_bytes`]).
    pub memory_mb: Option<usize>,
    /// What one call may return, MiB ([`Limits::output_bytes`]).
    pub output_mb: Option<usize>,
    /// stdout + stderr one call may log, KiB ([`Limits::log_bytes`]).
    pub log_kb: Option<usize>,
    /// Entries one read-model scan may return ([`Limits::scan_entries`]).
    pub scan_entries: Option<u32>,
}

impl LimitOverrides {
    /// `base` with the keys given here replaced. `key` names the table in errors (`limits`,
    /// `aggregates[0].limits`): a zero time or memory, or a size that does not fit, is refused.
    fn over(&self, base: &Limits, key: &str) -> Result<Limits, (String, String)> {
        let invalid = |name: &str, message: &str| (format!("{key}.{name}"), message.to_owned());
        let scaled = |name: &str, value: usize, unit: usize| {
            value
                .checked_mul(unit)
                .ok_or_else(|| invalid(name, "is too large"))
        };
        let mut limits = base.clone();
        if let Some(ms) = self.time_ms {
            if ms == 0 {
                return Err(invalid("time_ms", "must be positive"));
            }
            limits.time = Duration::from_millis(ms);
        }
        if let Some(mb) = self.memory_mb {
            if mb == 0 {
                return Err(invalid("memory_mb", "must be positive"));
            }
            limits.memory_bytes = scaled("memory_mb", mb, 1024 * 1024)?;
        }
        if let Some(mb) = self.output_mb {
            limits.output_bytes = scaled("output_mb", mb, 1024 * 1024)?;
        }
        if let Some(kb) = self.log_kb {
            limits.log_bytes = scaled("log_kb", kb, 1024)?;
        }
        if let Some(entries) = self.scan_entries {
            limits.scan_entries = entries;
        }
        Ok(limits)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    store: String,
    #[serde(default)]
    keys: Option<PathBuf>,
    #[serde(default)]
    key_encryption_key: Option<String>,
    #[serde(default)]
    data: Option<PathBuf>,
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    max_body_bytes: Option<usize>,
    #[serde(default)]
    max_response_bytes: Option<usize>,
    #[serde(default)]
    max_plugin_bytes: Option<usize>,
    #[serde(default)]
    watch_plugins: Option<bool>,
    #[serde(default)]
    ui: Option<bool>,
    #[serde(default)]
    http: HttpLimits,
    #[serde(default)]
    archive: ArchivePolicy,
    #[serde(default)]
    limits: Option<LimitOverrides>,
    #[serde(default)]
    aggregates: Vec<AggregateEntry>,
    #[serde(default)]
    upcasters: Vec<UpcasterEntry>,
    #[serde(default)]
    projections: Vec<ProjectionEntry>,
    #[serde(default)]
    reactors: Vec<ReactorEntry>,
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

/// A prefix may not make a stream id the store refuses, whatever id follows it.
fn check_stream_prefix(prefix: &str) -> Result<(), String> {
    if prefix.starts_with('$') {
        Err(format!(
            "{prefix:?} starts with '$', which marks the host's own streams"
        ))
    } else if prefix.chars().any(char::is_control) {
        Err(format!("{prefix:?} contains control characters"))
    } else if prefix.len() > MAX_STREAM_PREFIX_BYTES {
        Err(format!(
            "{prefix:?} is longer than {MAX_STREAM_PREFIX_BYTES} bytes"
        ))
    } else {
        Ok(())
    }
}

/// Leaves most of a stream id's 256 bytes to the aggregate id.
const MAX_STREAM_PREFIX_BYTES: usize = 64;

fn default_snapshot_every() -> u64 {
    AggregateConfig::DEFAULT_SNAPSHOT_EVERY
}

fn default_batch() -> usize {
    ProjectionConfig::DEFAULT_BATCH
}

fn default_attempts() -> u32 {
    ProjectionConfig::DEFAULT_ATTEMPTS
}

/// Why a config could not be loaded. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {file}: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, a wrong type.
    #[error("config file {file}: {message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// A value is wrong (a missing plugin file, a duplicate name...).
    #[error("config file {file}: `{key}`: {message}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The key, e.g. `aggregates[0].plugin`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads and checks `file`. Plugin files must exist; their kinds are checked when the host
    /// loads them.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        let file = std::path::absolute(file).unwrap_or_else(|_| file.to_owned());
        Config::parse(&text, &file)
    }

    /// Parses `text` as if read from `file`.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|error| ConfigError::Parse {
            file: file.to_owned(),
            message: error.to_string().trim_end().to_owned(),
        })?;
        let base = file.parent().unwrap_or(Path::new(".")).to_owned();
        let resolve = |path: &Path| {
            if path.is_absolute() {
                path.to_owned()
            } else {
                base.join(path)
            }
        };
        let invalid = |key: String, message: String| ConfigError::Invalid {
            file: file.to_owned(),
            key,
            message,
        };
        let listen_text = raw.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            invalid(
                "listen".into(),
                format!("{listen_text:?} is not an address like 127.0.0.1:7070"),
            )
        })?;
        raw.http
            .check()
            .map_err(|message| invalid("http".into(), message))?;
        let limits = raw
            .limits
            .unwrap_or_default()
            .over(&Limits::default(), "limits")
            .map_err(|(key, message)| invalid(key, message))?;
        // A plugin's own limits are checked here, so that a bad one fails the load, not a swap.
        let check_limits = |section: &str, index: usize, own: &Option<LimitOverrides>| {
            own.as_ref().map_or(Ok(()), |own| {
                own.over(&limits, &format!("{section}[{index}].limits"))
                    .map(drop)
                    .map_err(|(key, message)| invalid(key, message))
            })
        };
        let mut names = std::collections::HashSet::new();
        let mut check_plugin = |section: &str, index: usize, name: &str, path: &Path| {
            if name.is_empty() {
                return Err(invalid(
                    format!("{section}[{index}].name"),
                    "must not be empty".into(),
                ));
            }
            if !names.insert(name.to_owned()) {
                return Err(invalid(
                    format!("{section}[{index}].name"),
                    format!("{name:?} is configured twice (plugin names are unique)"),
                ));
            }
            if !path.is_file() {
                return Err(invalid(
                    format!("{section}[{index}].plugin"),
                    format!("plugin file {} does not exist", path.display()),
                ));
            }
            Ok(())
        };
        let mut aggregates = raw.aggregates;
        for (index, entry) in aggregates.iter_mut().enumerate() {
            entry.plugin = resolve(&entry.plugin);
            check_plugin("aggregates", index, &entry.name, &entry.plugin)?;
            check_limits("aggregates", index, &entry.limits)?;
            check_stream_prefix(&entry.stream_prefix).map_err(|message| {
                invalid(format!("aggregates[{index}].stream_prefix"), message)
            })?;
        }
        let mut upcasters = raw.upcasters;
        for (index, entry) in upcasters.iter_mut().enumerate() {
            entry.plugin = resolve(&entry.plugin);
            check_plugin("upcasters", index, &entry.name, &entry.plugin)?;
            check_limits("upcasters", index, &entry.limits)?;
        }
        let mut projections = raw.projections;
        for (index, entry) in projections.iter_mut().enumerate() {
            entry.plugin = resolve(&entry.plugin);
            check_plugin("projections", index, &entry.name, &entry.plugin)?;
            check_limits("projections", index, &entry.limits)?;
            if entry.batch == 0 || entry.attempts == 0 {
                return Err(invalid(
                    format!("projections[{index}]"),
                    "batch and attempts must be positive".into(),
                ));
            }
        }
        let mut reactors = raw.reactors;
        for (index, entry) in reactors.iter_mut().enumerate() {
            entry.plugin = resolve(&entry.plugin);
            check_plugin("reactors", index, &entry.name, &entry.plugin)?;
            check_limits("reactors", index, &entry.limits)?;
            if entry.batch == 0 || entry.attempts == 0 {
                return Err(invalid(
                    format!("reactors[{index}]"),
                    "batch and attempts must be positive".into(),
                ));
            }
        }
        for (index, token) in raw.tokens.iter().enumerate() {
            if token.token.len() < 8 {
                return Err(invalid(
                    format!("tokens[{index}].token"),
                    "must be at least 8 characters".into(),
                ));
            }
        }
        let (store, postgres) = if eshost_store_postgres::is_postgres_url(&raw.store) {
            if raw.keys.is_some() {
                return Err(invalid(
                    "keys".into(),
                    "a postgres store keeps subject keys in its database, wrapped under \
                     `key_encryption_key`; `keys` names the key file of a directory store"
                        .into(),
                ));
            }
            let key_encryption_key = match raw.key_encryption_key {
                Some(source) if source.starts_with("env:") => source,
                Some(path) => resolve(Path::new(&path)).display().to_string(),
                None => base.join("eshost.kek").display().to_string(),
            };
            let data = resolve(raw.data.as_deref().unwrap_or(Path::new("data")));
            (
                data,
                Some(PostgresStore {
                    url: raw.store,
                    key_encryption_key,
                }),
            )
        } else {
            for (key, given) in [
                ("data", raw.data.is_some()),
                ("key_encryption_key", raw.key_encryption_key.is_some()),
            ] {
                if given {
                    return Err(invalid(
                        key.into(),
                        "only a postgres store (`store = \"postgres://...\"`) takes it".into(),
                    ));
                }
            }
            (resolve(Path::new(&raw.store)), None)
        };
        raw.archive
            .check()
            .map_err(|message| invalid("archive".into(), message))?;
        Ok(Config {
            file: file.to_owned(),
            store,
            keys: raw.keys.as_deref().map(resolve),
            postgres,
            listen,
            max_body_bytes: raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
            max_response_bytes: raw.max_response_bytes.unwrap_or(DEFAULT_MAX_RESPONSE_BYTES),
            max_plugin_bytes: raw.max_plugin_bytes.unwrap_or(DEFAULT_MAX_PLUGIN_BYTES),
            watch_plugins: raw.watch_plugins.unwrap_or(DEFAULT_WATCH_PLUGINS),
            ui: raw.ui.unwrap_or(true),
            http: raw.http,
            archive: raw.archive,
            limits,
            aggregates,
            upcasters,
            projections,
            reactors,
            tokens: raw.tokens,
        })
    }
}

impl Config {
    /// The limits plugin `name` runs under: `[limits]`, with the plugin's own `limits` table
    /// over it key by key. (Plugin names are unique across the sections.) A name the config
    /// does not list gets `[limits]`.
    pub fn plugin_limits(&self, name: &str) -> Limits {
        let aggregates = self.aggregates.iter().map(|e| (&e.name, &e.limits));
        let upcasters = self.upcasters.iter().map(|e| (&e.name, &e.limits));
        let projections = self.projections.iter().map(|e| (&e.name, &e.limits));
        let reactors = self.reactors.iter().map(|e| (&e.name, &e.limits));
        let own = aggregates
            .chain(upcasters)
            .chain(projections)
            .chain(reactors)
            .find(|(entry, _)| *entry == name)
            .and_then(|(_, own)| own.as_ref());
        match own {
            // Checked when the config was parsed.
            Some(own) => own
                .over(&self.limits, "limits")
                .unwrap_or_else(|_| self.limits.clone()),
            None => self.limits.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
