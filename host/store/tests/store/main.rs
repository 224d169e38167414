//! The store's integration tests, one binary: the contract, checkpoints beside appends,
//! personal data, export/import, and crash safety.

mod checkpoint;
mod contract;
mod crash;
mod personal;
mod transfer;
