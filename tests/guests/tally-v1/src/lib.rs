//! `tally` version 1: traps on `Poison`, refuses `Refused` (see `../../tally/tally.rs`).

#![allow(unsafe_code)]

const VERSION: &str = "1";
const POISON_TRAPS: bool = true;
const REFUSES: bool = true;
const DESCRIBE_TRAPS: bool = false;

include!("../../tally/tally.rs");
