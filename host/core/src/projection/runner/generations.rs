//! The generations of a projection: the first one, a shadow rebuilt from position 0 beside the
//! active one, the one-transaction switch, and swapping in new code.

use redb::Database;

use super::lane::Lane;
use super::{Runner, redb_error, views_error};
use crate::projection::schema::{self, Generation, Meta};
use crate::projection::{ProjectionHostError, QueryPool, SwapMode, SwapOutcome};
use eshost_runtime::ProjectionPlugin;

impl Runner {
    /// Records a new projection (or restarts one whose code is lost) at generation 1 (or the
    /// next number), empty, at checkpoint 0.
    pub(super) fn create(
        db: &Database,
        name: &str,
        hash: &str,
        bytes: &[u8],
        old: Option<&Meta>,
    ) -> Result<Meta, redb::Error> {
        let number = old.map_or(0, |m| m.last_number) + 1;
        let meta = Meta {
            active: Generation {
                number,
                hash: hash.to_owned(),
            },
            shadow: None,
            last_number: number,
        };
        let txn = db.begin_write().map_err(redb_error)?;
        if let Some(old) = old {
            schema::drop_namespace(&txn, &schema::namespace(name, old.active.number))?;
            if let Some(shadow) = &old.shadow {
                schema::drop_namespace(&txn, &schema::namespace(name, shadow.number))?;
            }
        }
        txn.open_table(schema::CODE)?.insert(hash, bytes)?;
        schema::create_namespace(&txn, &schema::namespace(name, number))?;
        schema::write_meta(&txn, name, &meta)?;
        txn.commit().map_err(redb_error)?;
        Ok(meta)
    }

    pub(super) fn swap(
        &mut self,
        plugin: ProjectionPlugin,
        bytes: Vec<u8>,
        mode: SwapMode,
    ) -> Result<SwapOutcome, ProjectionHostError> {
        let hash = plugin.info().content_hash.clone();
        match mode {
            SwapMode::Rebuild => {
                let rebuilding = self
                    .shadow
                    .as_ref()
                    .is_some_and(|s| s.generation.hash == hash);
                if rebuilding || (self.active.generation.hash == hash && self.shadow.is_none()) {
                    return Ok(SwapOutcome::Unchanged);
                }
                let generation = self.start_shadow(plugin, Some(&bytes))?;
                Ok(SwapOutcome::Rebuilding { generation })
            }
            SwapMode::Continue => {
                let name = self.config.name.clone();
                let err = views_error(&name);
                let db = self.views.db().map_err(|e| err(e.into()))?;
                let mut meta = schema::read_meta(&db, &name)
                    .map_err(&err)?
                    .ok_or_else(|| ProjectionHostError::Unknown(name.clone()))?;
                meta.active.hash = hash.clone();
                let commit = || -> Result<(), redb::Error> {
                    let txn = self.views.begin_write().map_err(redb_error)?;
                    txn.open_table(schema::CODE)?
                        .insert(hash.as_str(), bytes.as_slice())?;
                    schema::write_meta(&txn, &name, &meta)?;
                    schema::collect_code(&txn)?;
                    txn.commit().map_err(redb_error)?;
                    Ok(())
                };
                commit().map_err(&err)?;
                self.active.generation = meta.active;
                self.active.relevance = self.upcasting.relevance(&plugin.info().handles);
                self.active.plugin = plugin.clone();
                self.active.instance = None;
                self.active.clear_failure();
                self.shared
                    .plugins
                    .lock()
                    .expect("not poisoned")
                    .insert(self.active.generation.number, QueryPool::new(plugin));
                Ok(SwapOutcome::Continued)
            }
        }
    }

    /// Starts a new generation from position 0 with `plugin` (replacing a shadow in
    /// progress). `bytes` is the plugin's code when it is not recorded yet.
    pub(super) fn start_shadow(
        &mut self,
        plugin: ProjectionPlugin,
        bytes: Option<&[u8]>,
    ) -> Result<u64, ProjectionHostError> {
        let name = self.config.name.clone();
        let err = views_error(&name);
        let db = self.views.db().map_err(|e| err(e.into()))?;
        let mut meta = schema::read_meta(&db, &name)
            .map_err(&err)?
            .ok_or_else(|| ProjectionHostError::Unknown(name.clone()))?;
        let old_shadow = meta.shadow.take();
        meta.last_number += 1;
        let generation = Generation {
            number: meta.last_number,
            hash: plugin.info().content_hash.clone(),
        };
        meta.shadow = Some(generation.clone());
        let namespace = schema::namespace(&name, generation.number);
        let commit = || -> Result<(), redb::Error> {
            let txn = self.views.begin_write().map_err(redb_error)?;
            if let Some(old) = &old_shadow {
                schema::drop_namespace(&txn, &schema::namespace(&name, old.number))?;
            }
            if let Some(bytes) = bytes {
                txn.open_table(schema::CODE)?
                    .insert(generation.hash.as_str(), bytes)?;
            }
            schema::create_namespace(&txn, &namespace)?;
            schema::write_meta(&txn, &name, &meta)?;
            schema::collect_code(&txn)?;
            txn.commit().map_err(redb_error)?;
            Ok(())
        };
        commit().map_err(&err)?;
        let mut plugins = self.shared.plugins.lock().expect("not poisoned");
        if let Some(old) = &old_shadow {
            plugins.remove(&old.number);
        }
        plugins.insert(generation.number, QueryPool::new(plugin.clone()));
        drop(plugins);
        tracing::info!(projection = %name, generation = generation.number, "rebuild started");
        let relevance = self.upcasting.relevance(&plugin.info().handles);
        self.shadow = Some(Lane::new(&name, generation.clone(), plugin, relevance, 0));
        Ok(generation.number)
    }

    pub(super) fn drop_shadow(&mut self) -> Result<(), redb::Error> {
        let Some(shadow) = self.shadow.take() else {
            return Ok(());
        };
        let name = self.config.name.clone();
        let mut meta = schema::read_meta(&*self.views.db()?, &name)?
            .ok_or_else(|| redb::Error::Corrupted(format!("no record of {name:?}")))?;
        meta.shadow = None;
        let txn = self.views.begin_write().map_err(redb_error)?;
        schema::drop_namespace(&txn, &shadow.namespace)?;
        schema::write_meta(&txn, &name, &meta)?;
        schema::collect_code(&txn)?;
        txn.commit().map_err(redb_error)?;
        self.shared
            .plugins
            .lock()
            .expect("not poisoned")
            .remove(&shadow.generation.number);
        Ok(())
    }

    /// Makes the caught-up shadow the active generation and drops the old one, in one
    /// transaction.
    pub(super) fn switch(&mut self) -> Result<(), redb::Error> {
        let shadow = self.shadow.as_ref().expect("a shadow to switch to");
        let name = self.config.name.clone();
        let mut meta = schema::read_meta(&*self.views.db()?, &name)?
            .ok_or_else(|| redb::Error::Corrupted(format!("no record of {name:?}")))?;
        meta.active = shadow.generation.clone();
        meta.shadow = None;
        let mut txn = self.views.begin_write().map_err(redb_error)?;
        txn.set_durability(redb::Durability::Immediate)
            .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
        schema::drop_namespace(&txn, &self.active.namespace)?;
        schema::write_meta(&txn, &name, &meta)?;
        schema::collect_code(&txn)?;
        txn.commit().map_err(redb_error)?;
        self.synced();
        let shadow = self.shadow.take().expect("checked above");
        let old = std::mem::replace(&mut self.active, shadow);
        self.shared
            .plugins
            .lock()
            .expect("not poisoned")
            .remove(&old.generation.number);
        tracing::info!(
            projection = %name,
            generation = self.active.generation.number,
            "switched to the rebuilt generation"
        );
        Ok(())
    }
}
