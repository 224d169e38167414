//! Errors of the runtime. One enum per operation: [`RuntimeError`] to start a runtime,
//! [`LoadError`] to load a plugin, [`PluginError`] for a fault during a call. The per-world
//! call errors ([`HandleError`](super::HandleError), [`QueryError`](super::QueryError), ...)
//! live with their world and wrap [`PluginError`].

use std::path::PathBuf;
use std::time::Duration;

use super::types::PluginKind;

/// Why a [`Runtime`](super::Runtime) could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The wasmtime engine could not be configured.
    #[error("cannot create the wasmtime engine: {0}")]
    Engine(String),
    /// The component cache directory could not be created.
    #[error("cannot create the component cache directory {}: {source}", path.display())]
    CacheDir {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// Why a plugin could not be loaded. Messages name the file or the plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read plugin file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The bytes are not WebAssembly at all.
    #[error("{file} is not a WebAssembly file")]
    NotWasm {
        /// The file name, or a label for in-memory bytes.
        file: String,
    },
    /// The bytes are a core WebAssembly module, not a component.
    #[error(
        "{file} is a core WebAssembly module, not a component; build plugins for \
         wasm32-wasip2 (or wrap the module with `wasm-tools component new`)"
    )]
    CoreModule {
        /// The file name, or a label for in-memory bytes.
        file: String,
    },
    /// wasmtime refused the component (invalid, or uses features this host does not enable).
    #[error("{file} is not a valid component: {message}")]
    Invalid {
        /// The file name, or a label for in-memory bytes.
        file: String,
        /// wasmtime's reason.
        message: String,
    },
    /// The component exports none of the eshost plugin interfaces.
    #[error(
        "{file} is not an eshost plugin: it exports none of eshost:plugin/aggregate, \
         eshost:plugin/upcaster or eshost:plugin/projection"
    )]
    NotAPlugin {
        /// The file name, or a label for in-memory bytes.
        file: String,
    },
    /// The component targets a version of the contract this host does not support.
    #[error("plugin \"{file}\" exports eshost:plugin@{found}; this host supports {supported}")]
    UnsupportedVersion {
        /// The file name, or a label for in-memory bytes.
        file: String,
        /// The version the component exports.
        found: String,
        /// The versions this host supports, e.g. `0.1` (every 0.1.x).
        supported: String,
    },
    /// The component targets another world than the one it is loaded as.
    #[error("plugin \"{name}\" is {} component; expected {}", found.with_article(), expected.with_article())]
    WrongKind {
        /// The plugin's name, from `describe()`.
        name: String,
        /// The world the component targets.
        found: PluginKind,
        /// The kind it was loaded as.
        expected: PluginKind,
    },
    /// The component exports another world than the kind it is loaded as: seen in its bytes,
    /// before compiling it.
    #[error("{file} is {} component; expected {}", found.with_article(), expected.with_article())]
    WrongWorld {
        /// The file (or upload) it came from.
        file: String,
        /// The world the component exports.
        found: PluginKind,
        /// The kind it was loaded as.
        expected: PluginKind,
    },
    /// `describe()` reports another kind than the world the component targets.
    #[error(
        "plugin \"{name}\" targets the {world} world but describes itself as {}",
        described.with_article()
    )]
    KindMismatch {
        /// The plugin's name, from `describe()`.
        name: String,
        /// The world the component targets.
        world: PluginKind,
        /// The kind `describe()` returned.
        described: PluginKind,
    },
    /// `describe()` returned something unusable (e.g. an empty name).
    #[error("{file}: describe() returned an invalid plugin description: {message}")]
    BadDescription {
        /// The file name, or a label for in-memory bytes.
        file: String,
        /// What is wrong with it.
        message: String,
    },
    /// The component imports something the sandbox does not provide, or its start-up failed.
    #[error("cannot instantiate {file}: {message}")]
    Instantiate {
        /// The file name, or a label for in-memory bytes.
        file: String,
        /// wasmtime's reason.
        message: String,
    },
    /// Calling `describe()` failed (trap, time or memory limit).
    #[error(transparent)]
    Describe(#[from] PluginError),
}

/// A fault while running a plugin: a trap, a limit, or output the host refuses. The instance
/// it happened in is discarded; the next call gets a fresh one. Every message names the
/// plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// The call ran past its time limit (an endless loop, or far too much work).
    #[error("plugin \"{plugin}\" exceeded its {} ms time limit", limit.as_millis())]
    Timeout {
        /// The plugin's name.
        plugin: String,
        /// The limit per call.
        limit: Duration,
    },
    /// The plugin tried to grow its memory past the limit.
    #[error("plugin \"{plugin}\" exceeded its {} memory limit", display_bytes(*limit_bytes))]
    MemoryLimit {
        /// The plugin's name.
        plugin: String,
        /// The limit, in bytes.
        limit_bytes: usize,
    },
    /// The plugin exhausted its call stack (usually unbounded recursion).
    #[error("plugin \"{plugin}\" overflowed its call stack (unbounded recursion?)")]
    StackOverflow {
        /// The plugin's name.
        plugin: String,
    },
    /// The plugin trapped: a panic, an `unreachable`, an out-of-bounds access, a call to
    /// `exit`...
    #[error("plugin \"{plugin}\" trapped: {message}")]
    Trap {
        /// The plugin's name.
        plugin: String,
        /// The trap, with the last lines the plugin wrote to stderr (a panic message).
        message: String,
    },
    /// The plugin returned more data than the host accepts from one call.
    #[error(
        "plugin \"{plugin}\" returned {} from {call}, over its {} output limit",
        display_bytes(*size), display_bytes(*limit)
    )]
    OutputTooLarge {
        /// The plugin's name.
        plugin: String,
        /// The call, e.g. `state`.
        call: &'static str,
        /// How much it returned, in bytes.
        size: usize,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The plugin returned something that breaks the contract (e.g. an upcast that does not
    /// raise the schema version).
    #[error("plugin \"{plugin}\" broke the plugin contract in {call}: {message}")]
    Contract {
        /// The plugin's name.
        plugin: String,
        /// The call.
        call: &'static str,
        /// What it did wrong.
        message: String,
    },
    /// A fresh instance could not be created.
    #[error("plugin \"{plugin}\" could not be instantiated: {message}")]
    Instantiate {
        /// The plugin's name.
        plugin: String,
        /// wasmtime's reason.
        message: String,
    },
    /// An aggregate call was made with no aggregate loaded: `new` or `restore` was never
    /// called, or the instance holding it trapped and was discarded.
    #[error(
        "plugin \"{plugin}\": no aggregate is loaded in this instance (never created, or lost \
         when an earlier call failed); call new or restore first"
    )]
    NoAggregate {
        /// The plugin's name.
        plugin: String,
    },
}

impl PluginError {
    /// The name of the plugin the fault happened in.
    pub fn plugin(&self) -> &str {
        match self {
            PluginError::Timeout { plugin, .. }
            | PluginError::MemoryLimit { plugin, .. }
            | PluginError::StackOverflow { plugin }
            | PluginError::Trap { plugin, .. }
            | PluginError::OutputTooLarge { plugin, .. }
            | PluginError::Contract { plugin, .. }
            | PluginError::Instantiate { plugin, .. }
            | PluginError::NoAggregate { plugin } => plugin,
        }
    }
}

/// `67108864` → `64 MiB`, `1500` → `1500 bytes`.
pub(crate) fn display_bytes(bytes: usize) -> String {
    const MIB: usize = 1024 * 1024;
    const KIB: usize = 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}
