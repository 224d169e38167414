//! The eshost core: everything between the store and the edges (HTTP, CLI).
//!
//! - [`upcast`]: the upcaster chain every read path applies;
//! - [`aggregate`]: the command pipeline (per-id workers, cached state, snapshots,
//!   idempotency keys, temporal state and history, hot swap);
//! - [`projection`]: projection runners, queries, dead letters, shadow rebuilds, replay;
//! - [`reactor`]: reactor runners, intents carried out exactly once, outcomes and timers in
//!   `$reactor-{name}`, dry runs (`idle`: how a runner sleeps until it has work, shared by
//!   both kinds of runner);
//! - [`views`]: `views.redb`, everything derived from the log;
//! - [`privacy`]: forgetting a data subject and purging what was derived from it;
//! - [`subscription`]: `$all` from a position, caught up and then followed live;
//! - [`cluster`]: what every node of a cluster learns from the log (code changes in
//!   `$plugins`, projection rebuilds, erasures) and the node registry;
//! - [`retention`]: the schedule that archives old events in a running host;
//! - [`access`]: the tokens of a config and who may see personal data;
//! - [`config`] and [`host`]: the composition root that builds a running [`Host`] from an
//!   `eshost.toml`.
//!
//! Architecture invariant: nothing here speaks HTTP; the server and the CLI are clients of
//! this crate.

#![deny(missing_docs)]

pub mod access;
pub mod aggregate;
pub mod chain_record;
pub mod check;
pub mod cluster;
pub mod config;
pub mod fixture;
pub mod host;
mod idle;
pub mod privacy;
pub mod projection;
pub mod reactor;
pub mod retention;
pub mod subscription;
pub mod upcast;
pub mod views;

pub use config::Config;
pub use host::Host;
