//! The eshost event store on PostgreSQL: the [`EventStore`] contract of `eshost-store`, kept
//! by tables in one schema of a database that several eshost nodes may share.
//!
//! - Appends go through one writer per node that gathers them into one transaction (group
//!   commit). Positions are assigned serially under a row lock on the log head, so they are
//!   gap-free and in commit order across nodes, and the blake3 chain continues from the
//!   previous hash exactly as in the embedded store (`writer`, `stage`).
//! - Reads page through the log by position or stream version on pooled connections
//!   (`reader`); the contract's synchronous calls run on the store's own runtime (`runtime`).
//! - Subscribers wake on `NOTIFY` hints from any node, re-reading by position, with a
//!   polling fallback (`listen`).
//! - The archive moves the oldest events into sealed, compressed segments kept in a table;
//!   archived events keep slim rows, and every read covers both tiers as one log
//!   (`archive`, `archiver`).
//! - Subject keys live in the database wrapped under a key-encryption key held outside it
//!   (`keys`).
//!
//! This crate depends on `eshost-store` only: no plugins, no HTTP.

#![deny(missing_docs)]

mod archive;
mod archiver;
mod compact;
mod config;
mod error;
mod keys;
mod listen;
mod open;
mod pool;
mod reader;
mod runtime;
mod schema;
mod side;
mod stage;
mod verify;
mod writer;

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use eshost_store::keys::SubjectKeys;
use eshost_store::{
    AllRead, AppendError, AppendRequest, Appended, ArchiveCut, ArchiveError, Archived, BlobError,
    BoxFuture, Direction, EventRef, EventStore, Limits, NodeReport, NodeRow, ReadError,
    RecordedEvent, StreamInfo, StreamRead, ValidationError, VerifyReport, WriterStats, validate,
};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

pub use config::{DEFAULT_SCHEMA, KekSource, PgConfig, is_postgres_url};
pub use error::PgOpenError;

use archive::Tier;
use keys::{PgKeys, SharedKeys};
use pool::{Connector, Pool};
use reader::Cursor;
use runtime::StoreRuntime;
use schema::Sql;
use stage::Op;
use writer::{Gather, WriteRequest, Writer};

/// How long closing the store waits for the writer to finish its batch.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// The PostgreSQL event store. Cheap to clone; closes when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sql: Arc<Sql>,
    pool: Arc<Pool>,
    tier: Arc<Tier>,
    keys: SharedKeys,
    limits: Limits,
    url: String,
    requests: Option<mpsc::UnboundedSender<WriteRequest>>,
    head: watch::Receiver<u64>,
    stats: Arc<WriterStats>,
    writer: Option<tokio::task::JoinHandle<()>>,
    listener: tokio::task::JoinHandle<()>,
    // Dropped last: everything above runs on it.
    runtime: StoreRuntime,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish the batch it holds and exit.
        self.requests.take();
        self.listener.abort();
        if let Some(writer) = self.writer.take() {
            let _ = self.runtime.block(async move {
                let _ = tokio::time::timeout(CLOSE_GRACE, writer).await;
            });
        }
    }
}

impl PgStore {
    /// Connect, create the store's tables if missing, check the key-encryption key, and
    /// start the writer and the listener.
    pub fn open(config: PgConfig) -> Result<PgStore, PgOpenError> {
        let runtime = StoreRuntime::start()?;
        let connector = Arc::new(Connector::new(&config).map_err(|reason| PgOpenError::Url {
            url: config.display_url(),
            reason,
        })?);
        let sql = Arc::new(Sql::new(&config.schema));
        let connector_url = connector.url.clone();
        let prepared = {
            let connector = connector.clone();
            let sql = sql.clone();
            let kek = config.kek;
            runtime
                .block(async move { open::prepare(&connector, &sql, kek).await })
                .ok_or_else(|| PgOpenError::Runtime(std::io::Error::other("runtime stopped")))??
        };
        let pool = Arc::new(Pool::new(connector.clone(), config.readers));
        let keys = Arc::new(PgKeys::new(
            pool.clone(),
            sql.clone(),
            prepared.kek,
            runtime.handle().clone(),
        ));
        let tier = Arc::new(Tier::new(sql.clone()));
        let (head_tx, head) = watch::channel(prepared.head.position);
        let stats = Arc::new(WriterStats::default());
        let (requests, receiver) = mpsc::unbounded_channel();
        let writer = Writer {
            connector: connector.clone(),
            sql: sql.clone(),
            tier: tier.clone(),
            conn: None,
            head_tx: head_tx.clone(),
            stats: stats.clone(),
            max_batch: config.max_batch.max(1),
            gather: Gather {
                gap: Duration::from_micros(50),
                max_wait: Duration::from_micros(500),
            },
            resolve_within: config.lock_timeout + Duration::from_secs(5),
        };
        let writer = runtime.handle().spawn(writer.run(receiver));
        let listener = runtime.handle().spawn(
            listen::Listener {
                connector,
                sql: sql.clone(),
                head_tx,
                keys: keys.clone(),
                poll_interval: config.poll_interval,
            }
            .run(),
        );
        Ok(PgStore {
            inner: Arc::new(Inner {
                sql,
                pool,
                tier,
                keys: SharedKeys(keys),
                limits: config.limits,
                url: connector_url,
                requests: Some(requests),
                head,
                stats,
                writer: Some(writer),
                listener,
                runtime,
            }),
        })
    }

    /// The server's URL (password redacted).
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The schema that holds the store.
    pub fn schema(&self) -> &str {
        &self.inner.sql.schema
    }

    /// The writer's counters.
    pub fn writer_stats(&self) -> &WriterStats {
        &self.inner.stats
    }

    fn submit(
        &self,
        mut request: AppendRequest,
        check: fn(&AppendRequest, &Limits) -> Result<(), ValidationError>,
    ) -> BoxFuture<'static, Result<Appended, AppendError>> {
        validate::trim_json(&mut request);
        if let Err(error) = check(&request, &self.inner.limits) {
            return Box::pin(std::future::ready(Err(error.into())));
        }
        let Some(requests) = self.inner.requests.clone() else {
            return Box::pin(std::future::ready(Err(AppendError::Closed)));
        };
        if request
            .events
            .iter()
            .all(|event| event.personal_data.is_none())
        {
            let sealed = vec![None; request.events.len()];
            let (reply, answer) = oneshot::channel();
            let sent = requests.send(WriteRequest {
                op: Op::Append(request, sealed),
                reply,
            });
            return Box::pin(async move {
                sent.map_err(|_| AppendError::Closed)?;
                answer.await.map_err(|_| AppendError::Closed)?
            });
        }
        // New subjects' keys are stored in the database first: on the store's runtime.
        let keys = self.inner.keys.0.clone();
        let task = self.inner.runtime.handle().spawn(async move {
            let sealed = keys.seal_request(&request).await?;
            let (reply, answer) = oneshot::channel();
            requests
                .send(WriteRequest {
                    op: Op::Append(request, sealed),
                    reply,
                })
                .map_err(|_| AppendError::Closed)?;
            answer.await.map_err(|_| AppendError::Closed)?
        });
        Box::pin(async move { task.await.map_err(|_| AppendError::Closed)? })
    }

    /// Run `work` on the store's runtime for a blocking caller.
    fn block<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, ReadError>> + Send + 'static,
    ) -> Result<T, ReadError> {
        self.inner
            .runtime
            .block(work)
            .unwrap_or_else(|| Err(ReadError::Storage("the postgres store is closed".into())))
    }

    /// Run blob `work` on the store's runtime for a blocking caller.
    fn block_blob<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, BlobError>> + Send + 'static,
    ) -> Result<T, BlobError> {
        self.inner
            .runtime
            .block(work)
            .unwrap_or_else(|| Err(BlobError::Storage("the postgres store is closed".into())))
    }

    /// Visit pages from `cursor` until `limit` events were visited or the read is done.
    fn visit_pages(
        &self,
        mut cursor: Cursor,
        limit: usize,
        fetch: impl Fn(
            Cursor,
            usize,
        ) -> BoxFuture<'static, Result<(Vec<RecordedEvent>, Cursor), ReadError>>,
        visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
    ) -> Result<(), ReadError> {
        let mut remaining = limit;
        while remaining > 0 && !cursor.is_done() {
            let (events, next) = self.block(fetch(cursor, remaining))?;
            for event in &events {
                remaining -= 1;
                if visit(event.as_ref()).is_break() {
                    return Ok(());
                }
            }
            cursor = next;
        }
        Ok(())
    }

    /// What a read or an archive runs with, owned, for the store's runtime.
    fn parts(&self) -> (Arc<Pool>, Arc<Sql>, Arc<Tier>) {
        (
            self.inner.pool.clone(),
            self.inner.sql.clone(),
            self.inner.tier.clone(),
        )
    }

    fn max_position(&self, until: Option<eshost_store::Until>) -> Result<u64, ReadError> {
        let (pool, sql) = (self.inner.pool.clone(), self.inner.sql.clone());
        self.block(async move { reader::position_bound(&pool, &sql, until).await })
    }
}

impl EventStore for PgStore {
    fn append(&self, request: AppendRequest) -> BoxFuture<'static, Result<Appended, AppendError>> {
        self.submit(request, validate::append)
    }

    fn visit_stream(
        &self,
        stream_id: &str,
        read: &StreamRead,
        visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
    ) -> Result<(), ReadError> {
        validate::stored_stream_id(stream_id)?;
        let max_position = self.max_position(read.until)?;
        let next = match read.direction {
            Direction::Forward => read.from_version.max(1),
            Direction::Backward => read.from_version,
        };
        let (pool, sql, tier) = self.parts();
        let (stream, owned) = (stream_id.to_owned(), read.clone());
        self.visit_pages(
            Cursor::Stream { next, max_position },
            read.limit,
            move |cursor, want| {
                let (pool, sql, tier, stream, read) = (
                    pool.clone(),
                    sql.clone(),
                    tier.clone(),
                    stream.clone(),
                    owned.clone(),
                );
                Box::pin(async move {
                    reader::stream_page(&pool, &sql, &tier, &stream, &read, cursor, want).await
                })
            },
            visit,
        )
    }

    fn visit_all(
        &self,
        read: &AllRead,
        visit: &mut dyn FnMut(EventRef<'_>) -> ControlFlow<()>,
    ) -> Result<(), ReadError> {
        let max_position = self.max_position(read.until)?;
        if read.direction == Direction::Forward && read.from_position > max_position {
            return Ok(());
        }
        let (pool, sql, tier) = self.parts();
        let owned = read.clone();
        self.visit_pages(
            Cursor::All {
                next: read.from_position,
                max_position,
            },
            read.limit,
            move |cursor, want| {
                let (pool, sql, tier, read) =
                    (pool.clone(), sql.clone(), tier.clone(), owned.clone());
                Box::pin(
                    async move { reader::all_page(&pool, &sql, &tier, &read, cursor, want).await },
                )
            },
            visit,
        )
    }

    fn stream_info(&self, stream_id: &str) -> Result<Option<StreamInfo>, ReadError> {
        validate::stored_stream_id(stream_id)?;
        let (pool, sql, stream) = (
            self.inner.pool.clone(),
            self.inner.sql.clone(),
            stream_id.to_owned(),
        );
        self.block(async move { reader::stream_info(&pool, &sql, &stream).await })
    }

    fn streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, StreamInfo)>, ReadError> {
        let (pool, sql) = (self.inner.pool.clone(), self.inner.sql.clone());
        let (prefix, after) = (prefix.to_owned(), after.map(str::to_owned));
        self.block(
            async move { reader::streams(&pool, &sql, &prefix, after.as_deref(), limit).await },
        )
    }

    fn position_at(&self, time: u64) -> Result<u64, ReadError> {
        let (pool, sql) = (self.inner.pool.clone(), self.inner.sql.clone());
        self.block(async move { reader::position_at(&pool, &sql, time).await })
    }

    fn head(&self) -> u64 {
        *self.inner.head.borrow()
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.head.clone()
    }

    fn event_position(&self, event_id: Uuid) -> Result<Option<u64>, ReadError> {
        let (pool, sql) = (self.inner.pool.clone(), self.inner.sql.clone());
        self.block(async move {
            let mut conn = pool.get().await.map_err(error::read_error)?;
            let statement = conn
                .statement(&sql.event_position)
                .await
                .map_err(error::read_error)?;
            let row = conn
                .client
                .query_opt(&statement, &[&event_id])
                .await
                .map_err(error::read_error)?;
            Ok(row.map(|row| row.get::<_, i64>(0) as u64))
        })
    }

    fn import_events(
        &self,
        events: Vec<RecordedEvent>,
    ) -> BoxFuture<'static, Result<Appended, AppendError>> {
        let Some(requests) = self.inner.requests.clone() else {
            return Box::pin(std::future::ready(Err(AppendError::Closed)));
        };
        let (reply, answer) = oneshot::channel();
        let sent = requests.send(WriteRequest {
            op: Op::Import(events),
            reply,
        });
        Box::pin(async move {
            sent.map_err(|_| AppendError::Closed)?;
            answer.await.map_err(|_| AppendError::Closed)?
        })
    }

    fn limits(&self) -> Limits {
        self.inner.limits
    }

    fn subject_keys(&self) -> &dyn SubjectKeys {
        &self.inner.keys
    }

    fn append_system(
        &self,
        request: AppendRequest,
    ) -> BoxFuture<'static, Result<Appended, AppendError>> {
        if !request.stream_id.starts_with('$') {
            return Box::pin(std::future::ready(Err(ValidationError::StreamId {
                stream_id: request.stream_id,
                reason: "system streams start with '$'",
            }
            .into())));
        }
        self.submit(request, validate::append_system)
    }

    fn verify(&self) -> Result<VerifyReport, ReadError> {
        let (pool, sql, tier) = self.parts();
        self.block(async move { verify::verify(&pool, &sql, &tier).await })
    }

    fn archive(&self, cut: ArchiveCut) -> Result<Archived, ArchiveError> {
        let (pool, sql, tier) = self.parts();
        self.inner
            .runtime
            .block(async move { archiver::archive(&pool, &sql, &tier, cut).await })
            .unwrap_or_else(
                || Err(ReadError::Storage("the postgres store is closed".into()).into()),
            )
    }

    fn put_blob(&self, bytes: &[u8]) -> Result<String, BlobError> {
        let (pool, sql, bytes) = (
            self.inner.pool.clone(),
            self.inner.sql.clone(),
            bytes.to_vec(),
        );
        self.block_blob(async move { side::put_blob(&pool, &sql, bytes).await })
    }

    fn get_blob(&self, hash: &str) -> Result<Option<Vec<u8>>, BlobError> {
        let (pool, sql, hash) = (
            self.inner.pool.clone(),
            self.inner.sql.clone(),
            hash.to_owned(),
        );
        self.block_blob(async move { side::get_blob(&pool, &sql, hash).await })
    }

    fn heartbeat(&self, node: &NodeReport) -> Result<bool, ReadError> {
        let (pool, sql, node) = (
            self.inner.pool.clone(),
            self.inner.sql.clone(),
            node.clone(),
        );
        self.block(async move { side::heartbeat(&pool, &sql, node).await })?;
        Ok(true)
    }

    fn nodes(&self) -> Result<Vec<NodeRow>, ReadError> {
        let (pool, sql) = (self.inner.pool.clone(), self.inner.sql.clone());
        self.block(async move { side::nodes(&pool, &sql).await })
    }
}
