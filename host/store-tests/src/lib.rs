//! The harness of the store's conformance suite: a fresh place for a store on each backend
//! (a temporary directory for redb, a schema of its own in the test server's database for
//! PostgreSQL), opened as often as a test needs, and tampered with behind the store's back.
//!
//! The PostgreSQL tests need a server: `scripts/test` starts a throwaway cluster and names it
//! in `ESHOST_TEST_POSTGRES`. Without one they fail, saying so; they never skip.

pub mod powercut;

use std::ops::Deref;
use std::sync::atomic::Ordering;

use eshost_store::keys::KeyEncryptionKey;
use eshost_store::{
    AppendError, AppendRequest, Appended, EventStore, Limits, Store, StoreConfig, block_on,
};
use eshost_store_postgres::{KekSource, PgConfig, PgStore};

/// The environment variable that names the test server.
pub const SERVER_ENV: &str = "ESHOST_TEST_POSTGRES";

const NO_SERVER: &str = "the PostgreSQL store tests need a server, and ESHOST_TEST_POSTGRES names \
     none: run scripts/test (it starts a throwaway cluster), or start one with \
     `scripts/postgres.sh start` and run `ESHOST_TEST_POSTGRES=$(scripts/postgres.sh url) cargo test`";

/// The URL of the test server.
///
/// # Panics
/// When `ESHOST_TEST_POSTGRES` is not set, with a message that says how to run the tests.
pub fn server_url() -> String {
    match std::env::var(SERVER_ENV) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!("{NO_SERVER}"),
    }
}

/// A backend of the store contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded redb store.
    Redb,
    /// The PostgreSQL store.
    Postgres,
}

/// Where one test's store lives; removed when dropped.
#[derive(Debug)]
pub enum Place {
    /// A temporary directory.
    Redb(tempfile::TempDir),
    /// A schema of its own in the test server's database.
    Postgres(PgPlace),
}

/// A PostgreSQL place: the server, the schema, and the key-encryption key of its keys.
#[derive(Debug)]
pub struct PgPlace {
    /// The server's URL (without the schema parameter).
    pub url: String,
    /// The schema that holds the store.
    pub schema: String,
    /// The key-encryption key.
    pub kek: KeyEncryptionKey,
}

impl PgPlace {
    /// A fresh schema name on the test server.
    pub fn new() -> PgPlace {
        PgPlace {
            url: server_url(),
            schema: format!("t_{}", uuid::Uuid::new_v4().simple()),
            kek: KeyEncryptionKey::generate().expect("random key"),
        }
    }

    /// The store's configuration, before it is opened.
    pub fn config(&self) -> PgConfig {
        PgConfig::new(
            &format!("{}?schema={}", self.url, self.schema),
            KekSource::Key(self.kek.clone()),
        )
        .expect("a valid test url")
    }

    /// Open a node of the store.
    pub fn open(&self) -> PgStore {
        PgStore::open(self.config()).expect("open the postgres store")
    }

    /// Run `sql` on a connection of its own (statements separated by `;`).
    pub fn execute(&self, sql: &str) {
        let sql = sql.replace("$schema", &self.schema);
        on_connection(&self.url, async |client| client.batch_execute(&sql).await)
            .unwrap_or_else(|error| panic!("running {sql:?}: {error}"));
    }

    /// The first column of the rows `sql` returns, as text.
    pub fn query_text(&self, sql: &str) -> Vec<Option<String>> {
        let sql = sql.replace("$schema", &self.schema);
        on_connection(&self.url, async |client| {
            let rows = client.simple_query(&sql).await?;
            Ok(rows
                .into_iter()
                .filter_map(|message| match message {
                    tokio_postgres::SimpleQueryMessage::Row(row) => {
                        Some(row.get(0).map(str::to_owned))
                    }
                    _ => None,
                })
                .collect())
        })
        .unwrap_or_else(|error| panic!("running {sql:?}: {error}"))
    }
}

impl Default for PgPlace {
    fn default() -> Self {
        PgPlace::new()
    }
}

impl Drop for PgPlace {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema);
        let _ = on_connection(&self.url, async |client| client.batch_execute(&sql).await);
    }
}

/// Run `work` with a fresh connection to `url`, on a runtime of its own.
pub fn on_connection<T>(
    url: &str,
    work: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
) -> Result<T, tokio_postgres::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(connection);
        let result = work(&client).await;
        drop(client);
        let _ = driver.await;
        result
    })
}

impl Place {
    /// A fresh, empty place on `backend`.
    pub fn new(backend: Backend) -> Place {
        match backend {
            Backend::Redb => Place::Redb(tempfile::tempdir().expect("a temporary directory")),
            Backend::Postgres => Place::Postgres(PgPlace::new()),
        }
    }

    /// Open the store with default limits.
    pub fn open(&self) -> Opened {
        self.open_with(Limits::default())
    }

    /// Open the store with `limits`.
    pub fn open_with(&self, limits: Limits) -> Opened {
        match self {
            Place::Redb(dir) => {
                let mut config = StoreConfig::new(dir.path());
                config.limits = limits;
                Opened::Redb(Store::open(config).expect("open the redb store"))
            }
            Place::Postgres(place) => {
                let mut config = place.config();
                config.limits = limits;
                Opened::Postgres(PgStore::open(config).expect("open the postgres store"))
            }
        }
    }

    /// Whether the stored log or keys hold `needle` anywhere, as the backend stores them.
    pub fn storage_contains(&self, needle: &str) -> bool {
        match self {
            Place::Redb(dir) => std::fs::read_dir(dir.path())
                .expect("the store directory")
                .map(|entry| std::fs::read(entry.expect("an entry").path()).expect("a file"))
                .any(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes())),
            Place::Postgres(place) => {
                let pattern = needle.replace('\'', "''");
                let hex: String = needle.bytes().map(|b| format!("{b:02x}")).collect();
                let found = place.query_text(&format!(
                    "SELECT count(*) FROM \"$schema\".events e
                     WHERE e::text LIKE '%{pattern}%'
                        OR position('\\x{hex}'::bytea in coalesce(e.sealed, '')) > 0
                     UNION ALL
                     SELECT count(*) FROM \"$schema\".subject_keys k
                     WHERE k::text LIKE '%{pattern}%'
                        OR position('\\x{hex}'::bytea in coalesce(k.wrapped, '')) > 0"
                ));
                found.iter().any(|count| count.as_deref() != Some("0"))
            }
        }
    }

    /// Replace the stored bytes `find` (which occur in one event's data, metadata or sealed
    /// part) with `replace`, of the same length, behind the store's back. The store must be
    /// closed.
    pub fn tamper(&self, find: &[u8], replace: &[u8]) {
        assert_eq!(find.len(), replace.len(), "tampering keeps the length");
        match self {
            Place::Redb(dir) => {
                let path = dir.path().join(eshost_store::EVENTS_FILE);
                let mut bytes = std::fs::read(&path).expect("the events file");
                // Copy-on-write leaves stale copies of pages in the file: change every copy.
                let places: Vec<usize> = bytes
                    .windows(find.len())
                    .enumerate()
                    .filter(|(_, window)| *window == find)
                    .map(|(at, _)| at)
                    .collect();
                assert!(
                    !places.is_empty(),
                    "the bytes to tamper with are in the file"
                );
                for at in places {
                    bytes[at..at + find.len()].copy_from_slice(replace);
                }
                std::fs::write(&path, &bytes).expect("write the events file");
            }
            Place::Postgres(place) => {
                let events = format!("\"{}\".events", place.schema);
                let (find, replace) = (find.to_vec(), replace.to_vec());
                let changed = on_connection(&place.url, async move |client| {
                    let mut changed = client
                        .execute(
                            &format!(
                                "UPDATE {events} SET sealed = overlay(sealed placing $2
                                     from position($1 in sealed))
                                 WHERE position($1 in sealed) > 0"
                            ),
                            &[&find, &replace],
                        )
                        .await?;
                    if let (Ok(find), Ok(replace)) =
                        (String::from_utf8(find), String::from_utf8(replace))
                    {
                        changed += client
                            .execute(
                                &format!(
                                    "UPDATE {events} SET data = replace(data, $1, $2),
                                         metadata = replace(metadata, $1, $2)
                                     WHERE strpos(data, $1) > 0 OR strpos(metadata, $1) > 0"
                                ),
                                &[&find, &replace],
                            )
                            .await?;
                    }
                    Ok(changed)
                })
                .expect("tamper with the events table");
                assert_eq!(changed, 1, "one event was tampered with");
            }
        }
    }
}

/// An open store of either backend.
#[derive(Debug)]
pub enum Opened {
    /// The redb store.
    Redb(Store),
    /// The PostgreSQL store.
    Postgres(PgStore),
}

impl Deref for Opened {
    type Target = dyn EventStore;
    fn deref(&self) -> &(dyn EventStore + 'static) {
        match self {
            Opened::Redb(store) => store,
            Opened::Postgres(store) => store,
        }
    }
}

impl Opened {
    /// The store as a shared trait object.
    pub fn shared(&self) -> std::sync::Arc<dyn EventStore> {
        match self {
            Opened::Redb(store) => std::sync::Arc::new(store.clone()),
            Opened::Postgres(store) => std::sync::Arc::new(store.clone()),
        }
    }

    /// Transactions the writer committed.
    pub fn commits(&self) -> u64 {
        match self {
            Opened::Redb(store) => store.writer_stats().commits.load(Ordering::Relaxed),
            Opened::Postgres(store) => store.writer_stats().commits.load(Ordering::Relaxed),
        }
    }

    /// Append from a blocking thread.
    pub fn append_blocking(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        block_on(self.append(request))
    }
}

/// A multi-threaded runtime for tests that spawn tasks.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a runtime")
}
