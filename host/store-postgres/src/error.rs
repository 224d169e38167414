//! Why a PostgreSQL store could not be opened, and how driver errors read in store errors.

use eshost_store::{AppendError, KeyStoreError, ReadError};

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PgOpenError {
    /// The URL is not a PostgreSQL URL eshost accepts.
    #[error("postgres store url {url}: {reason}")]
    Url {
        /// The URL, password redacted.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The server could not be reached or refused the connection.
    #[error("cannot connect to PostgreSQL at {url}: {reason}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The driver's message.
        reason: String,
    },
    /// Creating or checking the store's tables failed.
    #[error("postgres store schema {schema:?}: {reason}")]
    Schema {
        /// The schema.
        schema: String,
        /// What failed.
        reason: String,
    },
    /// The tables were written by an unknown version of the store format.
    #[error(
        "postgres store schema {schema:?} has format version {found}; this eshost reads versions up to {supported}"
    )]
    Format {
        /// The schema.
        schema: String,
        /// The version found.
        found: i64,
        /// The newest version this build reads.
        supported: i64,
    },
    /// The key-encryption key is missing, malformed or not the one the keys are wrapped under.
    #[error("key-encryption key ({source_name}): {reason}")]
    Kek {
        /// Where it was looked for.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// The store's own runtime could not start.
    #[error("cannot start the postgres store's runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// The driver's message with the server's detail, if any: `tokio_postgres::Error`'s own
/// display says only "db error".
pub(crate) fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {detail}", db.message()),
            None => db.message().to_owned(),
        },
        None => match std::error::Error::source(error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        },
    }
}

/// A read failure.
pub(crate) fn read_error(error: tokio_postgres::Error) -> ReadError {
    ReadError::Storage(format!("postgres: {}", describe(&error)))
}

/// A key store failure.
pub(crate) fn key_error(error: tokio_postgres::Error) -> KeyStoreError {
    KeyStoreError::Backend(format!("postgres: {}", describe(&error)))
}

/// A write failure before anything was committed.
pub(crate) fn append_error(context: &str, error: &tokio_postgres::Error) -> AppendError {
    AppendError::Storage(format!("postgres: {context}: {}", describe(error)))
}
