//! Wake-ups across nodes. Every append transaction sends a payload-free `NOTIFY`; this task
//! `LISTEN`s and, on a notification, on every `poll_interval` without one, and after every
//! reconnect, re-reads the head (waking this node's subscribers, who re-query by position)
//! and the subjects forgotten since it last looked (dropping their keys from this node's
//! cache). A notification is only ever a hint: one lost to a reconnect is made up by the
//! re-read that follows it, or by the next poll.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;

use crate::keys::PgKeys;
use crate::pool::Connector;
use crate::schema::Sql;

pub(crate) struct Listener {
    pub connector: Arc<Connector>,
    pub sql: Arc<Sql>,
    pub head_tx: watch::Sender<u64>,
    pub keys: Arc<PgKeys>,
    pub poll_interval: Duration,
}

impl Listener {
    /// Listen until the store's runtime stops.
    pub async fn run(self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.session().await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(error) => {
                    tracing::warn!(
                        url = %self.connector.url,
                        error = %crate::error::describe(&error),
                        "postgres listener lost its connection; polling resumes on reconnect"
                    );
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// One connection's life: listen, re-read at once, then on every hint or tick.
    async fn session(&self) -> Result<(), tokio_postgres::Error> {
        let (client, mut connection) = self.connector.connect_raw().await?;
        let (hints, mut hinted) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => {
                        let _ = hints.send(());
                    }
                    Ok(_) => {}
                    Err(error) => return Err(error),
                }
            }
            Ok(())
        });
        let listened = client
            .batch_execute(&format!("LISTEN \"{}\"", self.sql.channel))
            .await;
        let result = match listened {
            Ok(()) => self.watch(&client, &mut hinted).await,
            Err(error) => Err(error),
        };
        drop(client);
        let _ = driver.await;
        result
    }

    async fn watch(
        &self,
        client: &tokio_postgres::Client,
        hinted: &mut mpsc::UnboundedReceiver<()>,
    ) -> Result<(), tokio_postgres::Error> {
        let read_head = client.prepare(&self.sql.read_head).await?;
        let forgotten_since = client.prepare(&self.sql.forgotten_since).await?;
        let mut tick = tokio::time::interval(self.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let head = client.query_one(&read_head, &[]).await?;
            let position = head.get::<_, i64>(0) as u64;
            self.head_tx.send_if_modified(|head| {
                let newer = position > *head;
                if newer {
                    *head = position;
                }
                newer
            });
            let since = self.keys.forgotten_seen();
            let rows = client.query(&forgotten_since, &[&since]).await?;
            self.keys
                .forgotten_elsewhere(rows.iter().map(|row| (row.get(0), row.get(1))));
            tokio::select! {
                hint = hinted.recv() => {
                    if hint.is_none() {
                        // The driver ended: the connection is gone.
                        return client.batch_execute("SELECT 1").await;
                    }
                    // Coalesce a burst of hints into one re-read.
                    while hinted.try_recv().is_ok() {}
                }
                _ = tick.tick() => {}
            }
        }
    }
}
