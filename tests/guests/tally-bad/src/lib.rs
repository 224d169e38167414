//! A `tally` that traps in `describe()`: a hot swap must refuse it.

#![allow(unsafe_code)]

const VERSION: &str = "bad";
const POISON_TRAPS: bool = true;
const REFUSES: bool = true;
const DESCRIBE_TRAPS: bool = true;

include!("../../tally/tally.rs");
