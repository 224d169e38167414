//! `ledger` version 2, a candidate with two changes only old history shows: it panics while
//! applying `n = 13` and leaves `n = 7` out of the total (see `../../ledger/ledger.rs`).

#![allow(unsafe_code)]

const VERSION: &str = "2-trap";
const TRAPS_ON: Option<u64> = Some(13);
const IGNORES: Option<u64> = Some(7);

include!("../../ledger/ledger.rs");
