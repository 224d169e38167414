//! Connections: how they are made (session settings that guard the log head), a statement
//! cache per connection, and a small pool for reads and key lookups. A connection that broke
//! is dropped, and the next use makes a new one.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, Config, NoTls, Statement};

use crate::config::PgConfig;

/// Makes connections with the store's session settings.
#[derive(Debug)]
pub(crate) struct Connector {
    config: Config,
    session: String,
    /// The URL without password, for messages.
    pub url: String,
}

impl Connector {
    pub fn new(config: &PgConfig) -> Result<Connector, String> {
        let mut pg = Config::from_str(&config.url).map_err(|error| error.to_string())?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(config.connect_timeout);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("eshost");
        }
        pg.keepalives(true).keepalives_idle(Duration::from_secs(30));
        // A stalled node (paused, partitioned mid-transaction) cannot keep the log head: the
        // server ends its idle transaction; and no append waits forever for the head.
        let session = format!(
            "SET idle_in_transaction_session_timeout = {}; SET lock_timeout = {};",
            config.idle_in_transaction_timeout.as_millis().max(1),
            config.lock_timeout.as_millis().max(1),
        );
        Ok(Connector {
            config: pg,
            session,
            url: config.display_url(),
        })
    }

    /// A new connection, its driver task running on the current runtime.
    pub async fn connect(&self) -> Result<Conn, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "postgres connection ended");
            }
        });
        self.prepare_session(&client).await?;
        Ok(Conn {
            client,
            prepared: HashMap::new(),
        })
    }

    /// A new connection whose driver the caller polls (for notifications).
    pub async fn connect_raw(
        &self,
    ) -> Result<
        (
            Client,
            tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
        ),
        tokio_postgres::Error,
    > {
        self.config.connect(NoTls).await
    }

    async fn prepare_session(&self, client: &Client) -> Result<(), tokio_postgres::Error> {
        client.batch_execute(&self.session).await?;
        // Acknowledged means durable: a server that commits asynchronously by default does
        // not for this store's sessions. (Stronger settings, such as waiting for a standby,
        // are kept.)
        let commit = client.query_one("SHOW synchronous_commit", &[]).await?;
        if commit.get::<_, &str>(0) == "off" {
            client.batch_execute("SET synchronous_commit = on").await?;
        }
        Ok(())
    }
}

/// A connection with the statements it has prepared.
#[derive(Debug)]
pub(crate) struct Conn {
    pub client: Client,
    prepared: HashMap<String, Statement>,
}

impl Conn {
    /// The prepared form of `sql` on this connection (prepared on first use).
    pub async fn statement(&mut self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.prepared.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        self.prepared.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

/// Up to `size` connections shared by readers.
#[derive(Debug)]
pub(crate) struct Pool {
    connector: Arc<Connector>,
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
}

impl Pool {
    pub fn new(connector: Arc<Connector>, size: usize) -> Pool {
        Pool {
            connector,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size.max(1))),
        }
    }

    /// A connection: an idle one, or a new one while fewer than `size` are out.
    pub async fn get(self: &Arc<Self>) -> Result<Pooled, tokio_postgres::Error> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        let idle = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            std::iter::from_fn(|| idle.pop()).find(|conn| !conn.client.is_closed())
        };
        let conn = match idle {
            Some(conn) => conn,
            None => self.connector.connect().await?,
        };
        Ok(Pooled {
            conn: Some(conn),
            pool: self.clone(),
            _permit: permit,
        })
    }
}

/// A connection out of the pool; it goes back when dropped, unless it broke.
#[derive(Debug)]
pub(crate) struct Pooled {
    conn: Option<Conn>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for Pooled {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take().filter(|conn| !conn.client.is_closed()) {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
        }
    }
}
