//! `tally` version 2: the fix; counts `Poison` and `Refused` like any event.

#![allow(unsafe_code)]

const VERSION: &str = "2";
const POISON_TRAPS: bool = false;
const REFUSES: bool = false;
const DESCRIBE_TRAPS: bool = false;

include!("../../tally/tally.rs");
