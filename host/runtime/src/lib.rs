//! The wasmtime runtime that loads and sandboxes plugins.
//!
//! One [`Runtime`] holds one wasmtime `Engine`, an on-disk cache of compiled components, and a
//! linker per WIT world. [`Runtime::load`] reads a component, detects which world and which
//! version of the contract it targets, asks it to `describe()` itself, and returns a typed
//! plugin: [`AggregatePlugin`], [`UpcasterPlugin`], [`ProjectionPlugin`] or [`ReactorPlugin`]. A plugin makes
//! sandboxed instances ([`AggregateInstance`], ...) whose calls run under the [`Limits`]; a
//! fault in a call becomes a [`PluginError`] naming the plugin, and the instance is replaced.
//!
//! Everything this crate exports is the host's own: [`Event`], [`Command`], [`NewEvent`],
//! [`PluginInfo`]... Each supported version of the WIT contract has a module of its own under
//! `wit/` (`wit::v0_1` for `wit/v0.1.0` and every 0.1.x, `wit::v0_2` for the reactor world of
//! `wit/v0.2.0`) with its `bindgen!` and its
//! conversions; generated types never leave it. A component targeting a version this host
//! does not support is refused, naming both ([`LoadError::UnsupportedVersion`]).
//!
//! Calls are synchronous: plugin code is pure computation (the only host calls are the
//! read-model ones, and redb is synchronous too), so there is nothing to await, and a sync
//! call avoids a fiber switch and a boxed future per call. Run plugin calls on worker threads
//! or in `tokio::task::spawn_blocking`, never directly on an async task: the time limit
//! (epoch interruption) bounds how long a call holds its thread.
//!
//! # Modules, and what each uses (a DAG: no module uses one listed after it)
//!
//! - `types`: the host-owned data crossing the boundary (events, commands, plugin kinds).
//! - `read_model`: the [`ReadModel`] trait and [`MemoryReadModel`].
//! - `error` → types: [`RuntimeError`], [`LoadError`], [`PluginError`].
//! - `cache`: compiled components by content hash.
//! - `engine` → error: the engine and its epoch ticker.
//! - `sandbox` → read_model: WASI without capabilities, clocks, randomness, logs, [`Limits`],
//!   the read-model import served.
//! - `plugin` → types, error, engine, sandbox, read_model: identity ([`PluginInfo`]) and the
//!   call machinery (`Sandboxed`, the `World` trait).
//! - `wit` → types, error, plugin, sandbox: version detection and the enums over versions;
//!   `wit::v0_1` → types, sandbox: the 0.1 bindings and conversions.
//! - `aggregate`, `upcaster`, `projection`, `reactor` → types, error, plugin, sandbox, wit
//!   (projection and reactor also read_model): one module per world.
//! - `runtime` → all of the above: [`Runtime`], loading, [`LoadedPlugin`].
//! - `inspect` → runtime, error, types: `eshost plugin inspect`.

mod aggregate;
mod cache;
mod engine;
mod error;
mod inspect;
pub mod metrics;
mod plugin;
mod projection;
mod reactor;
mod read_model;
mod runtime;
mod sandbox;
mod seed;
mod types;
mod upcaster;
mod wit;

pub use aggregate::{
    AggregateInstance, AggregatePlugin, ApplyError, HandleError, Parked, RestoreError,
};
pub use error::{LoadError, PluginError, RuntimeError};
pub use inspect::{InspectError, Inspection, inspect};
pub use plugin::{LoadStats, PluginInfo};
pub use projection::{ProjectionError, ProjectionInstance, ProjectionPlugin, QueryError};
pub use reactor::{ReactorInstance, ReactorPlugin};
pub use read_model::{MemoryReadModel, ReadModel, ReadModelError};
pub use runtime::{LoadedPlugin, Runtime, RuntimeConfig};
pub use sandbox::Limits;
pub use types::{
    Command, CommandError, Effect, Event, EventError, Intent, NewEvent, PluginKind, UpcastResult,
    UpcastedEvent, VersionedType,
};
pub use upcaster::{UpcastError, UpcasterInstance, UpcasterPlugin};
pub use wit::{WIT_VERSION, declared_kind};
