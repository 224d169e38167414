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
pub mod store;
pub mod upcast;
pub mod views;
