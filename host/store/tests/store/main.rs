//! The store's integration tests, one binary: the contract, personal data, export/import,
//! and crash safety.

mod contract;
mod crash;
mod personal;
mod transfer;
