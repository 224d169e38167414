//! Opening a store: the server is one eshost can use, the tables exist in the store's format,
//! and the key-encryption key is the one the database's subject keys are wrapped under.

use std::io::Write;

use eshost_store::keys::KeyEncryptionKey;

use crate::config::KekSource;
use crate::error::{PgOpenError, describe};
use crate::pool::Connector;
use crate::schema::{ARCHIVED_FORMAT, FORMAT, Sql};
use crate::stage::Head;
use crate::writer::head_of;

/// What opening found.
pub(crate) struct Prepared {
    pub head: Head,
    pub kek: KeyEncryptionKey,
}

/// Connect once, create or check the tables, and settle the key-encryption key.
pub(crate) async fn prepare(
    connector: &Connector,
    sql: &Sql,
    kek: KekSource,
) -> Result<Prepared, PgOpenError> {
    let schema_error = |error: tokio_postgres::Error| PgOpenError::Schema {
        schema: sql.schema.clone(),
        reason: describe(&error),
    };
    let conn = connector
        .connect()
        .await
        .map_err(|error| PgOpenError::Connect {
            url: connector.url.clone(),
            reason: describe(&error),
        })?;
    let client = &conn.client;
    let encoding: String = client
        .query_one("SHOW server_encoding", &[])
        .await
        .map_err(schema_error)?
        .get(0);
    if encoding != "UTF8" {
        return Err(PgOpenError::Schema {
            schema: sql.schema.clone(),
            reason: format!("the database's encoding is {encoding}; eshost needs UTF8"),
        });
    }
    let source_name = kek.describe();
    let given = load(&kek)?;
    // One node at a time creates the tables and settles the key check.
    client.batch_execute("BEGIN").await.map_err(schema_error)?;
    client
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext('eshost store ' || $1))",
            &[&sql.schema],
        )
        .await
        .map_err(schema_error)?;
    client
        .batch_execute(&sql.create)
        .await
        .map_err(schema_error)?;
    let format = client
        .query_opt(&sql.read_format, &[])
        .await
        .map_err(schema_error)?
        .map(|row| row.get::<_, Vec<u8>>(0));
    match format {
        None => {
            client
                .execute(&sql.write_format, &[&FORMAT.to_string().into_bytes()])
                .await
                .map_err(schema_error)?;
        }
        Some(bytes) => {
            let found = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| text.parse().ok())
                .unwrap_or(-1);
            if found != FORMAT && found != ARCHIVED_FORMAT {
                return Err(PgOpenError::Format {
                    schema: sql.schema.clone(),
                    found,
                    supported: ARCHIVED_FORMAT,
                });
            }
        }
    }
    let check = client
        .query_opt(&sql.read_kek_check, &[])
        .await
        .map_err(schema_error)?
        .map(|row| row.get::<_, Vec<u8>>(0));
    let kek_error = |reason: &str| PgOpenError::Kek {
        source_name: source_name.clone(),
        reason: reason.to_owned(),
    };
    let kek = match (check, given) {
        (Some(check), Some(kek)) if check == kek.check_value() => kek,
        (Some(_), Some(_)) => {
            return Err(kek_error(
                "it is not the key this store's subject keys are wrapped under",
            ));
        }
        (Some(_), None) => {
            return Err(kek_error(
                "the file is missing, and this store's subject keys are wrapped under the key it held",
            ));
        }
        (None, given) => {
            let kek = match given {
                Some(kek) => kek,
                None => create_file(&kek)?,
            };
            client
                .execute(&sql.write_kek_check, &[&kek.check_value().to_vec()])
                .await
                .map_err(schema_error)?;
            kek
        }
    };
    let head = head_of(
        &client
            .query_one(&sql.read_head, &[])
            .await
            .map_err(schema_error)?,
    );
    client.batch_execute("COMMIT").await.map_err(schema_error)?;
    let fsync: String = client
        .query_one("SHOW fsync", &[])
        .await
        .map_err(schema_error)?
        .get(0);
    if fsync != "on" {
        tracing::warn!(
            url = %connector.url,
            "the PostgreSQL server runs with fsync = off: acknowledged appends can be lost in a crash"
        );
    }
    Ok(Prepared { head, kek })
}

/// The key from its source; `None` for a file that does not exist yet.
fn load(source: &KekSource) -> Result<Option<KeyEncryptionKey>, PgOpenError> {
    let error = |reason: String| PgOpenError::Kek {
        source_name: source.describe(),
        reason,
    };
    let text = match source {
        KekSource::Key(kek) => return Ok(Some(kek.clone())),
        KekSource::Env(name) => std::env::var(name)
            .map_err(|_| error("the variable is not set (it must hold 64 hex digits)".into()))?,
        KekSource::File(path) => match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(io) if io.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(io) => return Err(error(io.to_string())),
        },
    };
    KeyEncryptionKey::from_hex(&text)
        .map(Some)
        .ok_or_else(|| error("it is not 64 hex digits".into()))
}

/// A new key in a new file readable by its owner only (a store with no keys yet).
fn create_file(source: &KekSource) -> Result<KeyEncryptionKey, PgOpenError> {
    let KekSource::File(path) = source else {
        unreachable!("only a file source can be missing");
    };
    let error = |reason: String| PgOpenError::Kek {
        source_name: source.describe(),
        reason,
    };
    let kek = KeyEncryptionKey::generate().map_err(|e| error(e.to_string()))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| error(e.to_string()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| error(e.to_string()))?;
    writeln!(file, "{}", kek.to_hex())
        .and_then(|()| file.sync_all())
        .map_err(|e| error(e.to_string()))?;
    tracing::info!(path = %path.display(), "created a new key-encryption key; keep it apart from the database's backups");
    Ok(kek)
}
