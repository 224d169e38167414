//! What the store keeps beside the log: blobs by content hash (the plugin components that
//! `$plugins` names) and the registry of the nodes sharing the store.

use std::sync::Arc;

use eshost_store::blob::{self, BlobError};
use eshost_store::{NodeReport, NodeRow, ReadError};
use tokio_postgres::types::ToSql;

use crate::error::{describe, read_error};
use crate::pool::Pool;
use crate::schema::Sql;

fn blob_error(error: tokio_postgres::Error) -> BlobError {
    BlobError::Storage(format!("postgres: {}", describe(&error)))
}

pub(crate) async fn put_blob(
    pool: &Arc<Pool>,
    sql: &Sql,
    bytes: Vec<u8>,
) -> Result<String, BlobError> {
    let hash = blob::check_put(&bytes)?;
    let mut conn = pool.get().await.map_err(blob_error)?;
    let statement = conn.statement(&sql.put_blob).await.map_err(blob_error)?;
    let now = eshost_store::now_ms() as i64;
    conn.client
        .execute(&statement, &[&hash as &(dyn ToSql + Sync), &bytes, &now])
        .await
        .map_err(blob_error)?;
    Ok(hash)
}

pub(crate) async fn get_blob(
    pool: &Arc<Pool>,
    sql: &Sql,
    hash: String,
) -> Result<Option<Vec<u8>>, BlobError> {
    blob::check_hash(&hash)?;
    let mut conn = pool.get().await.map_err(blob_error)?;
    let statement = conn.statement(&sql.get_blob).await.map_err(blob_error)?;
    let row = conn
        .client
        .query_opt(&statement, &[&hash])
        .await
        .map_err(blob_error)?;
    match row {
        Some(row) => blob::check_read(&hash, row.get(0)).map(Some),
        None => Ok(None),
    }
}

pub(crate) async fn heartbeat(
    pool: &Arc<Pool>,
    sql: &Sql,
    node: NodeReport,
) -> Result<(), ReadError> {
    let mut conn = pool.get().await.map_err(read_error)?;
    let statement = conn.statement(&sql.heartbeat).await.map_err(read_error)?;
    let purged = node.erasures_purged as i64;
    conn.client
        .execute(
            &statement,
            &[&node.id as &(dyn ToSql + Sync), &node.address, &purged],
        )
        .await
        .map_err(read_error)?;
    Ok(())
}

pub(crate) async fn nodes(pool: &Arc<Pool>, sql: &Sql) -> Result<Vec<NodeRow>, ReadError> {
    let mut conn = pool.get().await.map_err(read_error)?;
    let statement = conn.statement(&sql.nodes).await.map_err(read_error)?;
    let rows = conn
        .client
        .query(&statement, &[])
        .await
        .map_err(read_error)?;
    Ok(rows
        .iter()
        .map(|row| NodeRow {
            report: NodeReport {
                id: row.get(0),
                address: row.get(1),
                erasures_purged: row.get::<_, i64>(2).max(0) as u64,
            },
            age_ms: row.get::<_, i64>(3).max(0) as u64,
        })
        .collect())
}
