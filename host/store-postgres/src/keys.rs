//! Subject keys in PostgreSQL, shared by every node: each key wrapped under the
//! key-encryption key (held outside the database), or a tombstone once forgotten.
//!
//! Nodes cache unwrapped keys. Forgetting erases the wrapped key and numbers the tombstone
//! (`forgotten_seq`) under the log head lock, so tombstones are numbered in commit order;
//! every node drops the key on the `NOTIFY` hint or, at the latest, on its next poll
//! (`listen`). The writer also refuses personal data for a forgotten subject inside the
//! append transaction, so a node with a stale cache cannot store new data under a
//! forgotten key.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, RwLock};

use eshost_store::keys::{
    Forgot, KeyEncryptionKey, KeyLine, KeyStoreError, Personal, SealError, SubjectKey, SubjectKeys,
    check_subject,
};
use eshost_store::{AppendRequest, now_ms};
use tokio::runtime::Handle;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::error::{describe, key_error};
use crate::pool::Pool;
use crate::runtime::block;
use crate::schema::Sql;

#[derive(Debug, Default)]
struct Cache {
    live: HashMap<String, Arc<SubjectKey>>,
    /// Subjects this node knows are forgotten; never cached as live again.
    forgotten: HashSet<String>,
    /// The highest tombstone number seen.
    seen: i64,
}

/// The subjects' keys of one PostgreSQL store.
#[derive(Debug)]
pub(crate) struct PgKeys {
    pool: Arc<Pool>,
    sql: Arc<Sql>,
    kek: KeyEncryptionKey,
    runtime: Handle,
    cache: RwLock<Cache>,
}

impl PgKeys {
    pub fn new(pool: Arc<Pool>, sql: Arc<Sql>, kek: KeyEncryptionKey, runtime: Handle) -> PgKeys {
        PgKeys {
            pool,
            sql,
            kek,
            runtime,
            cache: RwLock::new(Cache::default()),
        }
    }

    /// Seal the personal parts of `request`, creating keys for new subjects.
    pub async fn seal_request(
        &self,
        request: &AppendRequest,
    ) -> Result<Vec<Option<Vec<u8>>>, SealError> {
        let mut sealed = Vec::with_capacity(request.events.len());
        for event in &request.events {
            sealed.push(match (&event.subject_id, &event.personal_data) {
                (Some(subject), Some(data)) => {
                    let key = self.key_for_sealing(subject).await?;
                    Some(key.seal(subject, event.event_id, data))
                }
                _ => None,
            });
        }
        Ok(sealed)
    }

    /// The highest tombstone number this node has seen.
    pub fn forgotten_seen(&self) -> i64 {
        self.read().seen
    }

    /// Subjects forgotten (by any node), with their tombstone numbers: drop their keys.
    pub fn forgotten_elsewhere(&self, forgotten: impl Iterator<Item = (String, i64)>) {
        let mut cache = self.write();
        for (subject, seq) in forgotten {
            cache.live.remove(&subject);
            cache.forgotten.insert(subject);
            cache.seen = cache.seen.max(seq);
        }
    }

    fn cached(&self, subject: &str) -> Option<Arc<SubjectKey>> {
        self.read().live.get(subject).cloned()
    }

    /// Keep an unwrapped key, unless its subject is known to be forgotten meanwhile.
    fn remember(&self, subject: &str, key: SubjectKey) -> Option<Arc<SubjectKey>> {
        let mut cache = self.write();
        if cache.forgotten.contains(subject) {
            return None;
        }
        let key = Arc::new(key);
        cache.live.insert(subject.to_owned(), key.clone());
        Some(key)
    }

    fn mark_forgotten(&self, subject: &str) {
        let mut cache = self.write();
        cache.live.remove(subject);
        cache.forgotten.insert(subject.to_owned());
    }

    async fn key_for_sealing(&self, subject: &str) -> Result<Arc<SubjectKey>, SealError> {
        if let Some(key) = self.cached(subject) {
            return Ok(key);
        }
        let forgotten = || SealError::Forgotten {
            subject: subject.to_owned(),
        };
        if self.read().forgotten.contains(subject) {
            return Err(forgotten());
        }
        let storage = |reason: String| SealError::Storage {
            subject: subject.to_owned(),
            reason,
        };
        let fresh = SubjectKey::generate().map_err(|error| storage(error.to_string()))?;
        let wrapped = self
            .kek
            .wrap(subject, &fresh)
            .map_err(|error| storage(error.to_string()))?;
        // Another node may store its key first: then that one is the subject's key. The
        // insert commits (durably) before the event that uses the key is appended.
        let stored = async {
            let mut conn = self.pool.get().await?;
            let insert = conn.statement(&self.sql.insert_key).await?;
            let select = conn.statement(&self.sql.key_of).await?;
            conn.client
                .execute(&insert, &[&subject, &wrapped, &(now_ms() as i64)])
                .await?;
            conn.client
                .query_opt(&select, &[&subject])
                .await
                .map(|row| row.and_then(|row| row.get::<_, Option<Vec<u8>>>(0)))
        }
        .await
        .map_err(|error| storage(describe(&error)))?;
        let Some(wrapped) = stored else {
            self.mark_forgotten(subject);
            return Err(forgotten());
        };
        let key = self.kek.unwrap(subject, &wrapped).map_err(storage)?;
        self.remember(subject, key).ok_or_else(forgotten)
    }

    /// The key of `subject` from the database: `Ok(None)` for a tombstone, `Err` for no row.
    async fn fetch(&self, subject: &str) -> Result<Option<SubjectKey>, String> {
        let row = async {
            let mut conn = self.pool.get().await?;
            let select = conn.statement(&self.sql.key_of).await?;
            conn.client.query_opt(&select, &[&subject]).await
        }
        .await
        .map_err(|error| describe(&error))?;
        match row {
            None => Err(format!("this key store has no key for subject {subject:?}")),
            Some(row) => match row.get::<_, Option<Vec<u8>>>(0) {
                None => Ok(None),
                Some(wrapped) => self.kek.unwrap(subject, &wrapped).map(Some),
            },
        }
    }

    async fn forget_async(&self, subject: &str) -> Result<Forgot, KeyStoreError> {
        let mut conn = self.pool.get().await.map_err(key_error)?;
        let result = async {
            let lock_head = conn.statement(&self.sql.lock_head).await?;
            let for_update = conn.statement(&self.sql.key_for_update).await?;
            let erase = conn.statement(&self.sql.erase_key).await?;
            let tombstone = conn.statement(&self.sql.tombstone).await?;
            let notify = conn.statement(&self.sql.notify).await?;
            let client = &conn.client;
            // Under the head lock: tombstones are numbered in commit order, and an append
            // that commits after this one sees the tombstone.
            let subject_param: [&(dyn ToSql + Sync); 1] = [&subject];
            let ((), _, existing) = tokio::try_join!(
                client.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED"),
                client.query_one(&lock_head, &[]),
                client.query_opt(&for_update, &subject_param),
            )?;
            let now = now_ms() as i64;
            let outcome = match existing.map(|row| row.get::<_, Option<Vec<u8>>>(0)) {
                None => {
                    client.execute(&tombstone, &[&subject, &now]).await?;
                    Forgot::NoKey
                }
                Some(None) => Forgot::AlreadyForgotten,
                Some(Some(_)) => {
                    client.execute(&erase, &[&subject, &now]).await?;
                    Forgot::KeyErased
                }
            };
            let channel: [&(dyn ToSql + Sync); 1] = [&self.sql.channel];
            let (_, ()) = tokio::try_join!(
                client.execute(&notify, &channel),
                client.batch_execute("COMMIT"),
            )?;
            Ok::<_, tokio_postgres::Error>(outcome)
        }
        .await;
        match result {
            Ok(outcome) => {
                self.mark_forgotten(subject);
                Ok(outcome)
            }
            Err(error) => {
                let _ = conn.client.batch_execute("ROLLBACK").await;
                Err(key_error(error))
            }
        }
    }

    async fn export_async(&self) -> Result<Vec<KeyLine>, KeyStoreError> {
        let mut conn = self.pool.get().await.map_err(key_error)?;
        let all = conn
            .statement(&self.sql.all_keys)
            .await
            .map_err(key_error)?;
        let rows = conn.client.query(&all, &[]).await.map_err(key_error)?;
        rows.iter()
            .map(|row| {
                let subject: String = row.get(0);
                let wrapped: Option<Vec<u8>> = row.get(1);
                let key = match wrapped {
                    Some(wrapped) => Some(
                        self.kek
                            .unwrap(&subject, &wrapped)
                            .map_err(KeyStoreError::Backend)?
                            .to_hex(),
                    ),
                    None => None,
                };
                Ok(KeyLine {
                    forgotten: key.is_none(),
                    subject,
                    key,
                })
            })
            .collect()
    }

    async fn import_async(&self, lines: &[KeyLine]) -> Result<usize, KeyStoreError> {
        let mut added = 0;
        for line in lines {
            let invalid = |reason: &str| KeyStoreError::Invalid {
                subject: line.subject.clone(),
                reason: reason.to_owned(),
            };
            check_subject(&line.subject).map_err(|reason| invalid(&reason))?;
            if line.forgotten {
                if self.forget_async(&line.subject).await? != Forgot::AlreadyForgotten {
                    added += 1;
                }
                continue;
            }
            let text = line
                .key
                .as_deref()
                .ok_or_else(|| invalid("neither a key nor forgotten"))?;
            let key =
                SubjectKey::from_hex(text).ok_or_else(|| invalid("key is not 64 hex digits"))?;
            let wrapped = self
                .kek
                .wrap(&line.subject, &key)
                .map_err(|error| KeyStoreError::Backend(error.to_string()))?;
            let inserted = async {
                let mut conn = self.pool.get().await?;
                let insert = conn.statement(&self.sql.insert_key).await?;
                conn.client
                    .execute(&insert, &[&line.subject, &wrapped, &(now_ms() as i64)])
                    .await
            }
            .await
            .map_err(key_error)?;
            if inserted == 1 {
                added += 1;
                continue;
            }
            match self.fetch(&line.subject).await {
                Ok(None) => {}
                Ok(Some(existing)) if existing.same_as(&key) => {}
                Ok(Some(_)) => {
                    return Err(KeyStoreError::Conflict {
                        subject: line.subject.clone(),
                    });
                }
                Err(reason) => return Err(KeyStoreError::Backend(reason)),
            }
        }
        Ok(added)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The keys as the store contract sees them: blocking calls, run on the store's runtime.
#[derive(Debug, Clone)]
pub(crate) struct SharedKeys(pub Arc<PgKeys>);

impl SharedKeys {
    fn block<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, KeyStoreError> {
        block(&self.0.runtime, work)
            .ok_or_else(|| KeyStoreError::Backend("the postgres store is closed".into()))
    }
}

impl SubjectKeys for SharedKeys {
    fn seal(&self, subject: &str, event_id: Uuid, plaintext: &str) -> Result<Vec<u8>, SealError> {
        let keys = self.0.clone();
        let owned = subject.to_owned();
        let key = block(&self.0.runtime, async move {
            keys.key_for_sealing(&owned).await
        })
        .ok_or_else(|| SealError::Storage {
            subject: subject.to_owned(),
            reason: "the postgres store is closed".into(),
        })??;
        Ok(key.seal(subject, event_id, plaintext))
    }

    fn unseal(&self, subject: &str, event_id: Uuid, sealed: &[u8]) -> Personal {
        let open = |key: &SubjectKey| match key.unseal(subject, event_id, sealed) {
            Ok(text) => Personal::Data(text),
            Err(reason) => Personal::Unreadable(reason),
        };
        if let Some(key) = self.0.cached(subject) {
            return open(&key);
        }
        if self.0.read().forgotten.contains(subject) {
            return Personal::Shredded;
        }
        let keys = self.0.clone();
        let owned = subject.to_owned();
        match self.block(async move { keys.fetch(&owned).await }) {
            Ok(Ok(Some(key))) => match self.0.remember(subject, key) {
                Some(key) => open(&key),
                None => Personal::Shredded,
            },
            Ok(Ok(None)) => {
                self.0.mark_forgotten(subject);
                Personal::Shredded
            }
            Ok(Err(reason)) => Personal::Unreadable(reason),
            Err(error) => Personal::Unreadable(error.to_string()),
        }
    }

    fn forget(&self, subject: &str) -> Result<Forgot, KeyStoreError> {
        let keys = self.0.clone();
        let subject = subject.to_owned();
        self.block(async move { keys.forget_async(&subject).await })?
    }

    fn is_forgotten(&self, subject: &str) -> bool {
        if self.0.read().forgotten.contains(subject) {
            return true;
        }
        let keys = self.0.clone();
        let owned = subject.to_owned();
        match self.block(async move { keys.fetch(&owned).await }) {
            Ok(Ok(None)) => {
                self.0.mark_forgotten(subject);
                true
            }
            Ok(Ok(Some(_))) => false,
            Ok(Err(_)) => false,
            Err(error) => {
                tracing::warn!(%error, subject, "cannot tell whether a subject was forgotten");
                false
            }
        }
    }

    fn export(&self) -> Result<Vec<KeyLine>, KeyStoreError> {
        let keys = self.0.clone();
        self.block(async move { keys.export_async().await })?
    }

    fn import(&self, lines: &[KeyLine]) -> Result<usize, KeyStoreError> {
        let keys = self.0.clone();
        let lines = lines.to_vec();
        self.block(async move { keys.import_async(&lines).await })?
    }
}
