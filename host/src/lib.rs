//! eshost: an event-sourcing host. It owns an embedded redb event store and runs aggregate,
//! upcaster and projection logic as sandboxed WebAssembly components.

pub mod aggregate;
pub mod bench;
pub mod cli;
pub mod client;
pub mod config;
pub mod privacy;
pub mod projection;
pub mod runtime;
pub mod server;
pub mod upcast;
pub mod views;

/// The event store (crate `eshost-store`).
pub use eshost_store as store;
