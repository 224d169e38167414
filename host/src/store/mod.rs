//! The redb event store.
