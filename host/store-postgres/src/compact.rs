//! Compacting a PostgreSQL store: `VACUUM (FULL, ANALYZE)` rewrites each of the store's
//! tables into new files and drops the old ones, so the dead rows (among them the keys of
//! forgotten subjects, which a `DELETE` only marks dead) leave the table files.

use eshost_store::{Compacted, ReadError};

use crate::PgStore;
use crate::error::read_error;

/// The store's tables, in the order they are rewritten.
const TABLES: [&str; 8] = [
    "events",
    "segments",
    "streams",
    "subject_keys",
    "head",
    "meta",
    "blobs",
    "nodes",
];

impl PgStore {
    /// Rewrites each of the store's tables and reports its size (with indexes and TOAST)
    /// before and after. It runs beside live nodes, but each rewrite holds an exclusive lock
    /// on its table: appends wait while `events` is rewritten.
    pub fn compact(&self) -> Result<Vec<Compacted>, ReadError> {
        let pool = self.inner.pool.clone();
        let schema = self.inner.sql.schema.clone();
        self.block(async move {
            let conn = pool.get().await.map_err(read_error)?;
            let mut report = Vec::new();
            for table in TABLES {
                let name = format!("{}.{}", quote(&schema), quote(table));
                let size = format!("SELECT pg_total_relation_size('{name}')::bigint");
                let before: i64 = conn
                    .client
                    .query_one(&size, &[])
                    .await
                    .map_err(read_error)?
                    .get(0);
                conn.client
                    .batch_execute(&format!("VACUUM (FULL, ANALYZE) {name}"))
                    .await
                    .map_err(read_error)?;
                let after: i64 = conn
                    .client
                    .query_one(&size, &[])
                    .await
                    .map_err(read_error)?
                    .get(0);
                report.push(Compacted {
                    name: format!("{schema}.{table}"),
                    bytes_before: before.max(0) as u64,
                    bytes_after: after.max(0) as u64,
                });
            }
            Ok(report)
        })
    }
}

impl PgStore {
    /// The size of one of the store's tables (`events`, `segments`, ...), with its indexes
    /// and TOAST, in bytes.
    pub fn table_bytes(&self, table: &str) -> Result<u64, ReadError> {
        let pool = self.inner.pool.clone();
        let name = format!("{}.{}", quote(&self.inner.sql.schema), quote(table));
        self.block(async move {
            let conn = pool.get().await.map_err(read_error)?;
            let bytes: i64 = conn
                .client
                .query_one(
                    "SELECT pg_total_relation_size($1::text::regclass)::bigint",
                    &[&name],
                )
                .await
                .map_err(read_error)?
                .get(0);
            Ok(bytes.max(0) as u64)
        })
    }
}

/// An SQL identifier, quoted.
fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}
