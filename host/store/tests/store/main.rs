//! The embedded store's own tests, one binary: what only redb promises, checkpoints beside
//! appends, and crash safety. The store contract is tested on every backend by
//! `host/store-tests`.

mod checkpoint;
mod crash;
mod embedded;
