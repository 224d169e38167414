//! How to open a PostgreSQL store: the server's URL, the schema that holds the store, where
//! the key-encryption key comes from, and the writer's limits.

use std::path::PathBuf;
use std::time::Duration;

use eshost_store::Limits;
use eshost_store::keys::KeyEncryptionKey;

use crate::error::PgOpenError;

/// The schema a store lives in unless the URL names another (`?schema=NAME`).
pub const DEFAULT_SCHEMA: &str = "eshost";

/// Where the key-encryption key that wraps the subjects' keys comes from. It must live outside
/// the database: a copy of the database alone must not reveal personal data.
#[derive(Debug)]
pub enum KekSource {
    /// A file holding the key as 64 hex digits. Created with a fresh key (mode 0600) when it
    /// is missing and the database holds no keys wrapped under another.
    File(PathBuf),
    /// An environment variable holding the key as 64 hex digits.
    Env(String),
    /// The key itself (tests, embedding programs).
    Key(KeyEncryptionKey),
}

impl KekSource {
    /// `env:NAME` names an environment variable; anything else is a file path.
    pub fn parse(text: &str) -> KekSource {
        match text.strip_prefix("env:") {
            Some(name) => KekSource::Env(name.to_owned()),
            None => KekSource::File(PathBuf::from(text)),
        }
    }

    /// What the source is, for messages (never the key).
    pub fn describe(&self) -> String {
        match self {
            KekSource::File(path) => format!("file {}", path.display()),
            KekSource::Env(name) => format!("environment variable {name}"),
            KekSource::Key(_) => "the key given".to_owned(),
        }
    }
}

/// How to open a [`PgStore`](crate::PgStore).
#[derive(Debug)]
pub struct PgConfig {
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DB`, without the `schema` parameter.
    pub url: String,
    /// The schema that holds the store's tables; created if missing.
    pub schema: String,
    /// Where the key-encryption key comes from.
    pub kek: KekSource,
    /// Size limits on appends.
    pub limits: Limits,
    /// The most appends gathered into one transaction.
    pub max_batch: usize,
    /// Connections kept for reads.
    pub readers: usize,
    /// How long an append transaction waits for the log head held by another node before it
    /// fails (`lock_timeout`).
    pub lock_timeout: Duration,
    /// How long this node's sessions may sit idle inside a transaction before PostgreSQL ends
    /// them and releases their locks (`idle_in_transaction_session_timeout`): a stalled node
    /// cannot hold the log head for longer.
    pub idle_in_transaction_timeout: Duration,
    /// How often the head and forgotten subjects are re-read when no notification came.
    pub poll_interval: Duration,
    /// How long to wait for a connection to the server.
    pub connect_timeout: Duration,
}

impl PgConfig {
    /// A store at `url` (which may carry `?schema=NAME`), its subjects' keys wrapped under the
    /// key from `kek`.
    pub fn new(url: &str, kek: KekSource) -> Result<PgConfig, PgOpenError> {
        let (url, schema) = split_schema(url)?;
        Ok(PgConfig {
            url,
            schema,
            kek,
            limits: Limits::default(),
            max_batch: 4096,
            readers: 4,
            lock_timeout: Duration::from_secs(10),
            idle_in_transaction_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(5),
        })
    }

    /// The URL without its password, for messages.
    pub fn display_url(&self) -> String {
        redact(&self.url)
    }
}

/// Whether a configured store location is a PostgreSQL URL rather than a directory.
pub fn is_postgres_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// Take the `schema` parameter out of the URL (tokio-postgres refuses parameters it does not
/// know), checking that it is a plain identifier.
fn split_schema(url: &str) -> Result<(String, String), PgOpenError> {
    if !is_postgres_url(url) {
        return Err(PgOpenError::Url {
            url: redact(url),
            reason: "it must start with postgres:// or postgresql://".into(),
        });
    }
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut schema = DEFAULT_SCHEMA.to_owned();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("schema", value)) => schema = value.to_owned(),
            _ => kept.push(pair),
        }
    }
    let plain = schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !plain {
        return Err(PgOpenError::Url {
            url: redact(url),
            reason: format!(
                "schema {schema:?} must be 1 to 63 lowercase letters, digits or underscores, not starting with a digit"
            ),
        });
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, schema))
}

/// The URL with any password replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_parameter_is_taken_out_and_checked() {
        let (url, schema) = split_schema("postgres://u@h:5/db").unwrap();
        assert_eq!(
            (url.as_str(), schema.as_str()),
            ("postgres://u@h:5/db", "eshost")
        );
        let (url, schema) =
            split_schema("postgres://u@h:5/db?connect_timeout=3&schema=node_a").unwrap();
        assert_eq!(url, "postgres://u@h:5/db?connect_timeout=3");
        assert_eq!(schema, "node_a");
        assert!(split_schema("postgres://u@h/db?schema=Bad-Name").is_err());
        assert!(split_schema("/var/lib/eshost").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://ann:secret@db:5432/x?schema=s"),
            "postgres://ann:***@db:5432/x?schema=s"
        );
        assert_eq!(redact("postgres://ann@db/x"), "postgres://ann@db/x");
    }
}
