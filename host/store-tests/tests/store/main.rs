//! The store contract's conformance suite, one binary: every test of the contract is written
//! once, generic over the backend, and runs on the embedded redb store and on PostgreSQL
//! (`contract::redb::*`, `contract::postgres::*`, ...). Then what only PostgreSQL needs:
//! several nodes and processes on one database, delayed and broken connections, a restarted
//! server (`postgres`), and moving a log between the backends (`between`).
//!
//! The PostgreSQL tests need a server named in `ESHOST_TEST_POSTGRES` (`scripts/test` starts
//! one); without it they fail and say how to run them.

/// Run each named test, a `fn(Backend)` of the enclosing module, on every backend.
#[macro_export]
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod redb {
            $(#[test]
            fn $test() {
                super::$test(eshost_store_tests::Backend::Redb);
            })*
        }
        mod postgres {
            $(#[test]
            fn $test() {
                super::$test(eshost_store_tests::Backend::Postgres);
            })*
        }
    };
}

mod archive;
mod between;
mod blobs;
mod contract;
mod personal;
mod postgres;
mod powercut;
mod ranges;
mod transfer;
