//! The node's one writer: group commit of every waiting append in one PostgreSQL transaction.
//!
//! A batch is two pipelined round trips. First `BEGIN`, the log head locked `FOR UPDATE`
//! (which waits for any other node's batch to commit), and the stream rows, stored event ids
//! and forgotten subjects the batch touches, all read after the lock, so they include every
//! commit before it. The batch is then decided in memory (`stage`), exactly as the embedded
//! writer decides, and its rows inserted with the new head and a `NOTIFY` hint before
//! `COMMIT`. Positions come from the locked head: serial, gap-free, in commit order, and a
//! lower position can never commit after a higher one is visible.
//!
//! A connection that breaks after `COMMIT` was sent leaves the outcome unknown; the writer
//! finds it out on a new connection, waiting on the head lock until the old transaction has
//! ended, and answers accordingly.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use eshost_store::{AppendError, Appended, WriterStats, now_ms};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::archive::Tier;
use crate::error::{append_error, describe};
use crate::pool::{Conn, Connector};
use crate::reader::{Slim, Stored, stored_of};
use crate::schema::Sql;
use crate::stage::{self, Head, Known, Op, StreamRow};

/// One write waiting for the writer, with the channel its answer goes back on.
#[derive(Debug)]
pub(crate) struct WriteRequest {
    pub op: Op,
    pub reply: oneshot::Sender<Result<Appended, AppendError>>,
}

/// How long the writer waits for more appends before it starts a transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gather {
    /// Start when no append arrived for this long.
    pub gap: Duration,
    /// Never wait longer than this in total.
    pub max_wait: Duration,
}

pub(crate) struct Writer {
    pub connector: Arc<Connector>,
    pub sql: Arc<Sql>,
    pub tier: Arc<Tier>,
    pub conn: Option<Conn>,
    pub head_tx: watch::Sender<u64>,
    pub stats: Arc<WriterStats>,
    pub max_batch: usize,
    pub gather: Gather,
    /// How long finding out the outcome of a commit whose reply was lost may take.
    pub resolve_within: Duration,
}

/// A failure of the batch as a whole.
enum Failed {
    /// Nothing was written; each op gets this error.
    Before(AppendError),
    /// The connection broke after `COMMIT` was sent.
    Unknown(String),
}

impl Writer {
    /// Serve appends until every sender is gone.
    pub async fn run(mut self, mut requests: mpsc::UnboundedReceiver<WriteRequest>) {
        while let Some(first) = requests.recv().await {
            let batch = self.gather(first, &mut requests).await;
            let (ops, replies): (Vec<Op>, Vec<_>) = batch
                .into_iter()
                .map(|request| (request.op, request.reply))
                .unzip();
            let outcomes = self.serve(&ops).await;
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // The caller may have given up waiting; its append stands regardless.
                let _ = reply.send(outcome);
            }
        }
        if let Some(conn) = self.conn.take() {
            drop(conn.client);
        }
    }

    /// `first` and whatever arrives close behind it.
    async fn gather(
        &self,
        first: WriteRequest,
        requests: &mut mpsc::UnboundedReceiver<WriteRequest>,
    ) -> Vec<WriteRequest> {
        let started = Instant::now();
        let mut batch = vec![first];
        let mut last_arrival = started;
        loop {
            while batch.len() < self.max_batch {
                match requests.try_recv() {
                    Ok(request) => {
                        batch.push(request);
                        last_arrival = Instant::now();
                    }
                    Err(_) => break,
                }
            }
            if batch.len() >= self.max_batch
                || last_arrival.elapsed() >= self.gather.gap
                || started.elapsed() >= self.gather.max_wait
            {
                break;
            }
            tokio::task::yield_now().await;
        }
        add_elapsed(&self.stats.gather_nanos, started);
        batch
    }

    /// Write one batch; every op's answer, in order.
    async fn serve(&mut self, ops: &[Op]) -> Vec<Result<Appended, AppendError>> {
        let staging = Instant::now();
        let known = match self.begin(ops).await {
            Ok(known) => known,
            Err(error) => return ops.iter().map(|_| Err(error.clone())).collect(),
        };
        let staged = stage::stage(ops, known, now_ms());
        add_elapsed(&self.stats.stage_nanos, staging);
        let mut outcomes = staged.outcomes;
        if staged.rows.len() == 0 {
            self.rollback().await;
            return outcomes;
        }
        let committing = Instant::now();
        let written = write(
            self.conn.as_mut().expect("begin left a connection"),
            &self.sql,
            &staged.rows,
            &staged.streams,
            &staged.head,
        )
        .await;
        add_elapsed(&self.stats.commit_nanos, committing);
        let committed = match written {
            Ok(()) => true,
            Err(Failed::Before(error)) => {
                self.rollback().await;
                fail_written(&mut outcomes, &error);
                false
            }
            Err(Failed::Unknown(reason)) => {
                self.conn = None;
                let first_id = staged.rows.event_id[0];
                match self.resolve(first_id).await {
                    Ok(committed) => {
                        if !committed {
                            fail_written(
                                &mut outcomes,
                                &AppendError::Storage(format!(
                                    "postgres: the connection broke before the commit \
                                     ({reason}); nothing of this append was written"
                                )),
                            );
                        }
                        committed
                    }
                    Err(why) => {
                        fail_written(
                            &mut outcomes,
                            &AppendError::Storage(format!(
                                "postgres: the connection broke during the commit ({reason}) \
                                 and its outcome could not be checked ({why}); retrying with \
                                 the same event ids is safe"
                            )),
                        );
                        false
                    }
                }
            }
        };
        if committed {
            self.count(&outcomes);
            let position = staged.head.position;
            self.head_tx.send_if_modified(|head| {
                let newer = position > *head;
                if newer {
                    *head = position;
                }
                newer
            });
        }
        outcomes
    }

    /// A connection, begin the transaction, lock the head and read what the batch touches.
    async fn begin(&mut self, ops: &[Op]) -> Result<Known, AppendError> {
        if self
            .conn
            .as_ref()
            .is_none_or(|conn| conn.client.is_closed())
        {
            let conn = self.connector.connect().await.map_err(|error| {
                append_error(&format!("cannot connect to {}", self.connector.url), &error)
            })?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("connected above");
        match read_known(conn, &self.sql, ops).await {
            Ok((mut known, archived)) => {
                // Ids of archived events are still taken: their events come from segments.
                for slim in &archived {
                    match self.tier.archived(conn, slim).await {
                        Ok(event) => {
                            known.stored.insert(event.event_id, event);
                        }
                        Err(error) => {
                            self.rollback().await;
                            return Err(AppendError::Storage(format!(
                                "postgres: reading the stored event {} to check a retried \
                                 append: {error}",
                                slim.event_id
                            )));
                        }
                    }
                }
                Ok(known)
            }
            Err(error) => {
                let error =
                    if error.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
                        AppendError::Storage(format!(
                            "postgres: the log head stayed locked by another session longer than \
                         the lock timeout (a stalled node?): {}",
                            describe(&error)
                        ))
                    } else {
                        append_error("reading the log head", &error)
                    };
                self.rollback().await;
                Err(error)
            }
        }
    }

    /// End the open transaction without writing; a broken connection is dropped.
    async fn rollback(&mut self) {
        if let Some(conn) = &self.conn
            && conn.client.batch_execute("ROLLBACK").await.is_err()
        {
            self.conn = None;
        }
    }

    /// Whether the batch whose first event is `first_id` committed, found on a new
    /// connection once the old transaction has ended (it holds the head lock until then).
    async fn resolve(&mut self, first_id: Uuid) -> Result<bool, String> {
        let deadline = Instant::now() + self.resolve_within;
        let mut last_error = String::from("no attempt");
        while Instant::now() < deadline {
            match self.connector.connect().await {
                Ok(mut conn) => match committed(&mut conn, &self.sql, first_id).await {
                    Ok(found) => {
                        self.conn = Some(conn);
                        return Ok(found);
                    }
                    Err(error) => last_error = describe(&error),
                },
                Err(error) => last_error = describe(&error),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last_error)
    }

    fn count(&self, outcomes: &[Result<Appended, AppendError>]) {
        let (appends, events) = outcomes
            .iter()
            .filter_map(|outcome| match outcome {
                Ok(appended) if !appended.already_stored => {
                    Some(appended.last_position - appended.first_position + 1)
                }
                _ => None,
            })
            .fold((0, 0), |(appends, events), count| {
                (appends + 1, events + count)
            });
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats.appends.fetch_add(appends, Ordering::Relaxed);
        self.stats.events.fetch_add(events, Ordering::Relaxed);
    }
}

/// Round trip one: `BEGIN`, the head locked, and the rows the batch touches; the slim rows
/// of archived events among them apart, for the caller to read from their segments.
async fn read_known(
    conn: &mut Conn,
    sql: &Sql,
    ops: &[Op],
) -> Result<(Known, Vec<Slim>), tokio_postgres::Error> {
    let mut streams = HashSet::new();
    let mut ids = Vec::new();
    let mut subjects = HashSet::new();
    for op in ops {
        op.touches(&mut streams, &mut ids, &mut subjects);
    }
    let streams: Vec<&str> = streams.into_iter().collect();
    let subjects: Vec<&str> = subjects.into_iter().collect();
    let lock_head = conn.statement(&sql.lock_head).await?;
    let stream_rows = conn.statement(&sql.stream_rows).await?;
    let events_by_id = conn.statement(&sql.events_by_id).await?;
    let forgotten_of = conn.statement(&sql.forgotten_of).await?;
    let client = &conn.client;
    let forgotten = async {
        if subjects.is_empty() {
            Ok(Vec::new())
        } else {
            client.query(&forgotten_of, &[&subjects]).await
        }
    };
    // Sent together; the server runs them in order, the reads after the lock is granted.
    let streams_param: [&(dyn ToSql + Sync); 1] = [&streams];
    let ids_param: [&(dyn ToSql + Sync); 1] = [&ids];
    // The first failure in statement order is the cause (later ones only say the
    // transaction is aborted).
    let (begun, head, stream_rows, stored, forgotten) = tokio::join!(
        client.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED"),
        client.query_one(&lock_head, &[]),
        client.query(&stream_rows, &streams_param),
        client.query(&events_by_id, &ids_param),
        forgotten,
    );
    begun?;
    let (head, stream_rows, stored, forgotten) = (head?, stream_rows?, stored?, forgotten?);
    let mut hot = HashMap::new();
    let mut archived = Vec::new();
    for row in &stored {
        match stored_of(row) {
            Ok(Stored::Hot(event)) => {
                hot.insert(event.event_id, event);
            }
            Ok(Stored::Archived(slim)) => archived.push(slim),
            Err(_) => {}
        }
    }
    let known = Known {
        head: head_of(&head),
        streams: stream_rows
            .iter()
            .map(|row| (row.get::<_, String>(0), stream_row_of(row, 1)))
            .collect(),
        stored: hot,
        forgotten: forgotten.iter().map(|row| row.get(0)).collect(),
    };
    Ok((known, archived))
}

/// Round trip two: the events, the streams, the head, the hint, `COMMIT`.
async fn write(
    conn: &mut Conn,
    sql: &Sql,
    rows: &stage::EventRows<'_>,
    streams: &std::collections::BTreeMap<&str, StreamRow>,
    head: &Head,
) -> Result<(), Failed> {
    let prepared = async {
        Ok::<_, tokio_postgres::Error>((
            conn.statement(&sql.insert_events).await?,
            conn.statement(&sql.upsert_streams).await?,
            conn.statement(&sql.update_head).await?,
            conn.statement(&sql.notify).await?,
        ))
    };
    let (insert_events, upsert_streams, update_head, notify) =
        prepared.await.map_err(|error| classify(&error, false))?;
    let ids: Vec<&str> = streams.keys().copied().collect();
    let column = |get: fn(&StreamRow) -> u64| -> Vec<i64> {
        streams.values().map(|row| get(row) as i64).collect()
    };
    let (versions, firsts, lasts, created, updated) = (
        column(|row| row.version),
        column(|row| row.first_position),
        column(|row| row.last_position),
        column(|row| row.created_at),
        column(|row| row.updated_at),
    );
    let event_params: [&(dyn ToSql + Sync); 12] = [
        &rows.position,
        &rows.stream_id,
        &rows.stream_version,
        &rows.event_id,
        &rows.event_type,
        &rows.schema_version,
        &rows.recorded_at,
        &rows.data,
        &rows.metadata,
        &rows.subject_id,
        &rows.sealed,
        &rows.hash,
    ];
    let stream_params: [&(dyn ToSql + Sync); 6] =
        [&ids, &versions, &firsts, &lasts, &created, &updated];
    let (position, hash, recorded_at) = (
        head.position as i64,
        head.hash.as_slice(),
        head.recorded_at as i64,
    );
    let head_params: [&(dyn ToSql + Sync); 3] = [&position, &hash, &recorded_at];
    let channel: [&(dyn ToSql + Sync); 1] = [&sql.channel];
    let client = &conn.client;
    let (events, streams, head, notified, committed) = tokio::join!(
        client.execute(&insert_events, &event_params),
        client.execute(&upsert_streams, &stream_params),
        client.execute(&update_head, &head_params),
        client.execute(&notify, &channel),
        client.batch_execute("COMMIT"),
    );
    // The first failure in statement order is the cause.
    events
        .and(streams)
        .and(head)
        .and(notified)
        .and(committed)
        .map_err(|error| classify(&error, true))
}

/// A server error means the transaction was rolled back; a broken connection after `COMMIT`
/// was sent leaves the outcome unknown.
fn classify(error: &tokio_postgres::Error, commit_sent: bool) -> Failed {
    if error.as_db_error().is_some() || !commit_sent {
        Failed::Before(append_error("writing the batch", error))
    } else {
        Failed::Unknown(describe(error))
    }
}

/// Whether the event `first_id` is stored, once no transaction holds the head.
async fn committed(
    conn: &mut Conn,
    sql: &Sql,
    first_id: Uuid,
) -> Result<bool, tokio_postgres::Error> {
    let lock_head = conn.statement(&sql.lock_head).await?;
    let position = conn.statement(&sql.event_position).await?;
    let client = &conn.client;
    let id_param: [&(dyn ToSql + Sync); 1] = [&first_id];
    let ((), _, found, ()) = tokio::try_join!(
        client.batch_execute("BEGIN"),
        client.query_one(&lock_head, &[]),
        client.query_opt(&position, &id_param),
        client.batch_execute("ROLLBACK"),
    )?;
    Ok(found.is_some())
}

pub(crate) fn head_of(row: &Row) -> Head {
    let hash: &[u8] = row.get(1);
    Head {
        position: row.get::<_, i64>(0) as u64,
        hash: hash.try_into().unwrap_or([0; 32]),
        recorded_at: row.get::<_, i64>(2) as u64,
    }
}

/// A stream row from its columns starting at `at` (version, first and last position,
/// created and updated at).
pub(crate) fn stream_row_of(row: &Row, at: usize) -> StreamRow {
    let value = |index: usize| row.get::<_, i64>(at + index) as u64;
    StreamRow {
        version: value(0),
        first_position: value(1),
        last_position: value(2),
        created_at: value(3),
        updated_at: value(4),
    }
}

/// Turn the written answers of a batch that did not commit into its error.
fn fail_written(outcomes: &mut [Result<Appended, AppendError>], error: &AppendError) {
    for outcome in outcomes {
        if matches!(
            outcome,
            Ok(Appended {
                already_stored: false,
                ..
            })
        ) {
            *outcome = Err(error.clone());
        }
    }
}

fn add_elapsed(counter: &AtomicU64, since: Instant) {
    counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
}
