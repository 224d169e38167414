//! eshost's integration tests, one binary (wasmtime's `tests/all` pattern): every module is a
//! topic, `*_support` modules hold what several topics share. `build.rs` builds the
//! components they load.

mod aggregate_commands;
mod aggregate_idempotency;
mod aggregate_state;
mod aggregate_support;
mod cluster;
mod cluster_support;
mod cluster_upcaster;
mod compat_fixtures;
mod compat_patch;
mod plugin_check;
mod plugin_determinism;
mod plugin_first_party;
mod plugin_loading;
mod plugin_log;
mod plugin_projection;
mod plugin_sandbox;
mod plugin_upcaster;
mod plugin_upcaster_swap;
mod polyglot_aggregate;
mod polyglot_config;
mod polyglot_projection;
mod polyglot_sandbox;
mod polyglot_support;
mod privacy_e2e;
mod projection_crash;
mod projection_failures;
mod projection_support;
mod projection_swap;
mod server_auth;
mod server_budgets;
mod server_cli;
mod server_connections;
mod server_contract;
mod server_drain;
mod server_e2e;
mod server_hardening;
mod server_router;
mod server_support;
mod store_disk_full;
mod store_ranges;
mod subscription;
mod ui_auth;
