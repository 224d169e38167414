//! The embedded store's own tests, one binary: what only redb promises, and crash safety.
//! The store contract is tested on every backend by `host/store-tests`.

mod crash;
mod embedded;
