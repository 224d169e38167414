//! Benchmarks behind `eshost bench`: each prints figures next to a baseline measured in the same run.

pub mod append;
pub mod command;
pub mod load;
pub mod projection;
pub mod replay;
