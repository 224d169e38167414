//! The store's tables, created in a schema of their own, and every statement the store runs.
//!
//! - `events`: the log, one row per event, its fields as columns (`data` and `metadata` as
//!   `text`, so the stored JSON is byte for byte what was appended and hashed). Positions are
//!   the primary key; event ids and (stream, version) are unique.
//! - `head`: one row, the last position, its hash and commit time. Every append transaction
//!   locks it `FOR UPDATE` first, so positions are assigned serially, in commit order, from
//!   the hash before them: no sequence, no gaps, no later commit of a lower position.
//! - `streams`: one row per stream, its version and first/last positions and times.
//! - `subject_keys`: each subject's key wrapped under the key-encryption key, or a tombstone.
//! - `meta`: the format version and the check value of the key-encryption key.
//! - `blobs`: bytes by content hash (plugin components the log's `$plugins` names).
//! - `nodes`: the nodes sharing the store, their heartbeats and the erasures each purged.
//! - `segments`: the archive's sealed segments, one row each (see `archive`); an archived
//!   event keeps a slim row in `events` (its position, stream, version, id, type and time,
//!   its payload columns NULL), so every index and uniqueness constraint still covers it.
//!
//! Stream ids sort with `COLLATE "C"`: byte order, as the embedded store lists them.

use eshost_store::codec::GENESIS_HASH;

/// The format of the tables this build creates.
pub const FORMAT: i64 = 1;
/// The format of a store that has archived: its archived events' payloads are in `segments`,
/// which builds that know format 1 only would not read.
pub const ARCHIVED_FORMAT: i64 = 2;

/// The statements, with the schema name filled in.
#[derive(Debug)]
pub(crate) struct Sql {
    pub schema: String,
    pub channel: String,
    pub create: String,
    pub read_format: String,
    pub write_format: String,
    pub read_kek_check: String,
    pub write_kek_check: String,
    // The writer.
    pub lock_head: String,
    pub stream_rows: String,
    pub events_by_id: String,
    pub forgotten_of: String,
    pub insert_events: String,
    pub upsert_streams: String,
    pub update_head: String,
    pub notify: String,
    // Reads.
    pub read_head: String,
    pub all_forward: String,
    pub all_backward: String,
    pub stream_forward: String,
    pub stream_backward: String,
    pub stream_info: String,
    pub streams_from: String,
    pub position_at: String,
    pub event_position: String,
    pub verify_page: String,
    // Keys.
    pub insert_key: String,
    pub key_of: String,
    pub key_for_update: String,
    pub erase_key: String,
    pub tombstone: String,
    pub forgotten_since: String,
    pub all_keys: String,
    // Blobs and nodes.
    pub put_blob: String,
    pub get_blob: String,
    pub heartbeat: String,
    pub nodes: String,
    // The archive.
    pub archive_lock: String,
    pub read_manifest: String,
    pub write_manifest: String,
    pub write_archived_format: String,
    pub payload_not_null: String,
    pub relax_not_null: String,
    pub insert_segment: String,
    pub segment_row: String,
    pub archive_events: String,
}

/// The columns of an event, in the order reads return them (see `reader::stored_of`).
const EVENT_COLUMNS: &str = "position, stream_id, stream_version, event_id, event_type, \
     schema_version, recorded_at, data, metadata, subject_id, sealed, hash";

impl Sql {
    pub fn new(schema: &str) -> Sql {
        let s = format!("\"{schema}\"");
        let genesis: String = GENESIS_HASH.iter().map(|b| format!("{b:02x}")).collect();
        Sql {
            schema: schema.to_owned(),
            channel: format!("eshost.{schema}"),
            create: format!(
                "CREATE SCHEMA IF NOT EXISTS {s};
                 CREATE TABLE IF NOT EXISTS {s}.meta (
                     key text PRIMARY KEY,
                     value bytea NOT NULL);
                 CREATE TABLE IF NOT EXISTS {s}.head (
                     id smallint PRIMARY KEY CHECK (id = 1),
                     position bigint NOT NULL,
                     hash bytea NOT NULL,
                     recorded_at bigint NOT NULL);
                 INSERT INTO {s}.head VALUES (1, 0, '\\x{genesis}', 0) ON CONFLICT DO NOTHING;
                 CREATE TABLE IF NOT EXISTS {s}.events (
                     position bigint PRIMARY KEY,
                     stream_id text COLLATE \"C\" NOT NULL,
                     stream_version bigint NOT NULL,
                     event_id uuid NOT NULL UNIQUE,
                     event_type text NOT NULL,
                     schema_version bigint NOT NULL,
                     recorded_at bigint NOT NULL,
                     data text NOT NULL,
                     metadata text NOT NULL,
                     subject_id text,
                     sealed bytea,
                     hash bytea NOT NULL,
                     UNIQUE (stream_id, stream_version));
                 CREATE TABLE IF NOT EXISTS {s}.streams (
                     stream_id text COLLATE \"C\" PRIMARY KEY,
                     version bigint NOT NULL,
                     first_position bigint NOT NULL,
                     last_position bigint NOT NULL,
                     created_at bigint NOT NULL,
                     updated_at bigint NOT NULL);
                 CREATE TABLE IF NOT EXISTS {s}.subject_keys (
                     subject text PRIMARY KEY,
                     wrapped bytea,
                     created_at bigint NOT NULL,
                     forgotten_seq bigint UNIQUE,
                     forgotten_at bigint);
                 CREATE SEQUENCE IF NOT EXISTS {s}.forget_seq;
                 CREATE TABLE IF NOT EXISTS {s}.blobs (
                     hash text PRIMARY KEY,
                     bytes bytea NOT NULL,
                     stored_at bigint NOT NULL);
                 CREATE TABLE IF NOT EXISTS {s}.nodes (
                     id text PRIMARY KEY,
                     address text NOT NULL,
                     erasures_purged bigint NOT NULL,
                     heartbeat_at timestamptz NOT NULL);
                 CREATE TABLE IF NOT EXISTS {s}.segments (
                     first_position bigint PRIMARY KEY,
                     last_position bigint NOT NULL,
                     first_recorded_at bigint NOT NULL,
                     last_recorded_at bigint NOT NULL,
                     last_hash bytea NOT NULL,
                     checksum bytea NOT NULL,
                     events bigint NOT NULL,
                     raw_bytes bigint NOT NULL,
                     body_bytes bigint NOT NULL,
                     body bytea NOT NULL,
                     sealed_at bigint NOT NULL);"
            ),
            read_format: format!("SELECT value FROM {s}.meta WHERE key = 'format'"),
            write_format: format!(
                "INSERT INTO {s}.meta VALUES ('format', $1) ON CONFLICT DO NOTHING"
            ),
            read_kek_check: format!("SELECT value FROM {s}.meta WHERE key = 'kek_check'"),
            write_kek_check: format!(
                "INSERT INTO {s}.meta VALUES ('kek_check', $1) ON CONFLICT DO NOTHING"
            ),
            lock_head: format!(
                "SELECT position, hash, recorded_at FROM {s}.head WHERE id = 1 FOR UPDATE"
            ),
            stream_rows: format!(
                "SELECT stream_id, version, first_position, last_position, created_at, updated_at
                 FROM {s}.streams WHERE stream_id = ANY($1::text[])"
            ),
            events_by_id: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events WHERE event_id = ANY($1::uuid[])"
            ),
            forgotten_of: format!(
                "SELECT subject FROM {s}.subject_keys
                 WHERE subject = ANY($1::text[]) AND wrapped IS NULL"
            ),
            insert_events: format!(
                "INSERT INTO {s}.events ({EVENT_COLUMNS})
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::uuid[],
                     $5::text[], $6::bigint[], $7::bigint[], $8::text[], $9::text[],
                     $10::text[], $11::bytea[], $12::bytea[])"
            ),
            upsert_streams: format!(
                "INSERT INTO {s}.streams
                     (stream_id, version, first_position, last_position, created_at, updated_at)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[],
                     $5::bigint[], $6::bigint[])
                 ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version,
                     last_position = excluded.last_position, updated_at = excluded.updated_at"
            ),
            update_head: format!(
                "UPDATE {s}.head SET position = $1, hash = $2, recorded_at = $3 WHERE id = 1"
            ),
            notify: "SELECT pg_notify($1, '')".to_owned(),
            read_head: format!("SELECT position, hash, recorded_at FROM {s}.head WHERE id = 1"),
            all_forward: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events
                 WHERE position >= $1 AND position <= $2
                     AND (cardinality($3::text[]) = 0 OR event_type = ANY($3::text[]))
                 ORDER BY position LIMIT $4"
            ),
            all_backward: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events
                 WHERE position <= $1 AND position <= $2
                     AND (cardinality($3::text[]) = 0 OR event_type = ANY($3::text[]))
                 ORDER BY position DESC LIMIT $4"
            ),
            stream_forward: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events
                 WHERE stream_id = $1 AND stream_version >= $2 AND position <= $3
                 ORDER BY stream_version LIMIT $4"
            ),
            stream_backward: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events
                 WHERE stream_id = $1 AND stream_version <= $2 AND position <= $3
                 ORDER BY stream_version DESC LIMIT $4"
            ),
            stream_info: format!(
                "SELECT stream_id, version, first_position, last_position, created_at, updated_at
                 FROM {s}.streams WHERE stream_id = $1"
            ),
            streams_from: format!(
                "SELECT stream_id, version, first_position, last_position, created_at, updated_at
                 FROM {s}.streams WHERE stream_id >= $1 AND stream_id > $2
                 ORDER BY stream_id LIMIT $3"
            ),
            // Commit times never decrease along the log: a binary search over positions, in
            // one round trip.
            position_at: format!(
                "WITH RECURSIVE search(low, high) AS (
                     SELECT 1::bigint, (SELECT position FROM {s}.head WHERE id = 1)
                   UNION ALL
                     SELECT CASE WHEN e.recorded_at <= $1 THEN (s.low + s.high) / 2 + 1
                                 ELSE s.low END,
                            CASE WHEN e.recorded_at <= $1 THEN s.high
                                 ELSE (s.low + s.high) / 2 - 1 END
                     FROM search s JOIN {s}.events e ON e.position = (s.low + s.high) / 2
                     WHERE s.low <= s.high)
                 SELECT max(low) - 1 FROM search"
            ),
            event_position: format!("SELECT position FROM {s}.events WHERE event_id = $1"),
            verify_page: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events
                 WHERE position >= $1 AND position <= $2 ORDER BY position LIMIT $3"
            ),
            insert_key: format!(
                "INSERT INTO {s}.subject_keys (subject, wrapped, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (subject) DO NOTHING"
            ),
            key_of: format!("SELECT wrapped FROM {s}.subject_keys WHERE subject = $1"),
            key_for_update: format!(
                "SELECT wrapped FROM {s}.subject_keys WHERE subject = $1 FOR UPDATE"
            ),
            erase_key: format!(
                "UPDATE {s}.subject_keys SET wrapped = NULL,
                     forgotten_seq = nextval('{s}.forget_seq'), forgotten_at = $2
                 WHERE subject = $1"
            ),
            tombstone: format!(
                "INSERT INTO {s}.subject_keys
                     (subject, wrapped, created_at, forgotten_seq, forgotten_at)
                 VALUES ($1, NULL, $2, nextval('{s}.forget_seq'), $2)"
            ),
            forgotten_since: format!(
                "SELECT subject, forgotten_seq FROM {s}.subject_keys
                 WHERE forgotten_seq > $1 ORDER BY forgotten_seq"
            ),
            all_keys: format!(
                "SELECT subject, wrapped FROM {s}.subject_keys
                 ORDER BY wrapped IS NULL, CASE WHEN wrapped IS NULL THEN 0 ELSE created_at END,
                     subject"
            ),
            put_blob: format!(
                "INSERT INTO {s}.blobs (hash, bytes, stored_at) VALUES ($1, $2, $3)
                 ON CONFLICT (hash) DO NOTHING"
            ),
            get_blob: format!("SELECT bytes FROM {s}.blobs WHERE hash = $1"),
            heartbeat: format!(
                "INSERT INTO {s}.nodes (id, address, erasures_purged, heartbeat_at)
                 VALUES ($1, $2, $3, clock_timestamp())
                 ON CONFLICT (id) DO UPDATE SET address = excluded.address,
                     erasures_purged = excluded.erasures_purged,
                     heartbeat_at = excluded.heartbeat_at"
            ),
            nodes: format!(
                "SELECT id, address, erasures_purged,
                     (extract(epoch FROM clock_timestamp() - heartbeat_at) * 1000)::bigint
                 FROM {s}.nodes ORDER BY id"
            ),
            archive_lock: format!(
                "SELECT pg_advisory_xact_lock(hashtext('eshost archive ' || '{schema}'))"
            ),
            read_manifest: format!("SELECT value FROM {s}.meta WHERE key = 'archive'"),
            write_manifest: format!(
                "INSERT INTO {s}.meta VALUES ('archive', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            ),
            write_archived_format: format!(
                "UPDATE {s}.meta SET value = '{ARCHIVED_FORMAT}'::bytea WHERE key = 'format'"
            ),
            payload_not_null: format!(
                "SELECT count(*) FROM pg_attribute
                 WHERE attrelid = '{s}.events'::regclass
                     AND attname IN ('data', 'metadata', 'hash') AND attnotnull"
            ),
            relax_not_null: format!(
                "ALTER TABLE {s}.events ALTER COLUMN data DROP NOT NULL,
                     ALTER COLUMN metadata DROP NOT NULL, ALTER COLUMN hash DROP NOT NULL"
            ),
            insert_segment: format!(
                "INSERT INTO {s}.segments (first_position, last_position, first_recorded_at,
                     last_recorded_at, last_hash, checksum, events, raw_bytes, body_bytes, body,
                     sealed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ),
            segment_row: format!(
                "SELECT first_position, last_position, first_recorded_at, last_recorded_at,
                     last_hash, checksum, events, raw_bytes, body_bytes, body
                 FROM {s}.segments WHERE first_position = $1"
            ),
            archive_events: format!(
                "UPDATE {s}.events SET data = NULL, metadata = NULL, subject_id = NULL,
                     sealed = NULL, hash = NULL
                 WHERE position >= $1 AND position <= $2 AND data IS NOT NULL"
            ),
        }
    }
}
