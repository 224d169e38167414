//! `ledger` version 1: adds every `n` (see `../../ledger/ledger.rs`).

#![allow(unsafe_code)]

const VERSION: &str = "1";
const TRAPS_ON: Option<u64> = None;
const IGNORES: Option<u64> = None;

include!("../../ledger/ledger.rs");
