//! Export and import as NDJSON: one stored event per line, exactly as stored.
//!
//! A line holds every field of the record, with `data` and `metadata` as the JSON values
//! themselves (byte for byte the stored text) and the chained `hash`. An import restores the
//! events with their positions, ids, times and hashes, so a whole-store export imported into
//! an empty store gives the same log, and `verify` passes. Each imported event must continue
//! the log (next position, its stream's next version, the hash its predecessor gives it):
//! an altered or partial file is refused at the first line that does not fit, with the store
//! unchanged from that line on.
//!
//! Personal data travels as it is stored: `subject_id` and the `sealed` part (hex of the
//! ciphertext), never decrypted. Keys are exported only on request, to a file of their own
//! ([`export_keys`]), so an export alone cannot reveal anyone's personal data.

use std::io::{BufRead, Write};
use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::event::{EventRef, RecordedEvent};
use super::{AllRead, AppendError, EventStore, ReadError, StreamRead, block_on, validate};

/// One exported event (the borrowed form, for writing).
#[derive(Serialize)]
struct LineOut<'a> {
    position: u64,
    stream_id: &'a str,
    stream_version: u64,
    event_id: Uuid,
    event_type: &'a str,
    schema_version: u32,
    recorded_at: u64,
    data: &'a RawValue,
    metadata: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sealed: Option<String>,
    hash: String,
}

/// One exported event (the owned form, for reading).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineIn {
    position: u64,
    stream_id: String,
    stream_version: u64,
    event_id: Uuid,
    event_type: String,
    schema_version: u32,
    recorded_at: u64,
    data: Box<RawValue>,
    metadata: Box<RawValue>,
    #[serde(default)]
    subject_id: Option<String>,
    #[serde(default)]
    sealed: Option<String>,
    hash: String,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the store failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Writing the output failed.
    #[error("writing the export failed: {0}")]
    Write(#[from] std::io::Error),
    /// The key store could not list its keys.
    #[error("exporting keys failed: {0}")]
    Keys(#[from] super::keys::KeyStoreError),
}

/// Why an import stopped. Lines before `line` were imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A line is not an exported event.
    #[error("line {line}: {reason}")]
    Malformed {
        /// 1-based line number.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// An event does not continue the store's log.
    #[error("line {line}: {refusal}")]
    Refused {
        /// 1-based line number of the event refused.
        line: u64,
        /// The store's reason.
        refusal: AppendError,
    },
    /// The key store refused the keys.
    #[error("importing keys failed: {0}")]
    Keys(String),
    /// Reading the input failed.
    #[error("reading the import failed: {0}")]
    Read(#[from] std::io::Error),
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Events imported.
    pub events: u64,
    /// The store's head afterwards.
    pub head: u64,
}

/// Write the events of `stream` (or of the whole log) to `out`, one line each, in order.
pub fn export(
    store: &dyn EventStore,
    stream: Option<&str>,
    out: &mut dyn Write,
) -> Result<u64, ExportError> {
    let mut written = 0;
    let mut failure = None;
    let mut write = |event: EventRef<'_>| match write_line(out, &event) {
        Ok(()) => {
            written += 1;
            ControlFlow::Continue(())
        }
        Err(error) => {
            failure = Some(error);
            ControlFlow::Break(())
        }
    };
    match stream {
        Some(stream) => store.visit_stream(stream, &StreamRead::forward(), &mut write)?,
        None => store.visit_all(&AllRead::from(1), &mut write)?,
    }
    if let Some(error) = failure {
        return Err(error.into());
    }
    out.flush()?;
    Ok(written)
}

fn write_line(out: &mut dyn Write, event: &EventRef<'_>) -> std::io::Result<()> {
    let raw = |text: &'static str| -> &'static RawValue {
        serde_json::from_str(text).expect("literal JSON")
    };
    let line = LineOut {
        position: event.position,
        stream_id: event.stream_id,
        stream_version: event.stream_version,
        event_id: event.event_id,
        event_type: event.event_type,
        schema_version: event.schema_version,
        recorded_at: event.recorded_at,
        // Stored JSON was checked on append; a record that no longer parses is exported as
        // null rather than aborting the export, and its hash will refuse it on import.
        data: serde_json::from_str(event.data).unwrap_or_else(|_| raw("null")),
        metadata: serde_json::from_str(event.metadata).unwrap_or_else(|_| raw("{}")),
        subject_id: event.subject_id,
        sealed: event.sealed.map(hex),
        hash: hex(&event.hash),
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}

/// Read exported events from `input` and restore them, `chunk` events per commit.
pub fn import(
    store: &dyn EventStore,
    input: &mut dyn BufRead,
    chunk: usize,
) -> Result<ImportReport, ImportError> {
    let chunk = chunk.max(1);
    let mut imported = 0;
    let mut pending = Vec::with_capacity(chunk);
    let mut lines = Vec::with_capacity(chunk);
    let mut number = 0;
    let mut text = String::new();
    loop {
        text.clear();
        let eof = input.read_line(&mut text)? == 0;
        if !eof {
            number += 1;
            if !text.trim().is_empty() {
                pending.push(parse_line(&text, number, store)?);
                lines.push(number);
            }
        }
        if !pending.is_empty() && (eof || pending.len() >= chunk) {
            let events = std::mem::take(&mut pending);
            let count = events.len() as u64;
            let positions: Vec<u64> = events.iter().map(|event| event.position).collect();
            block_on(store.import_events(events)).map_err(|refusal| {
                // Name the line of the event refused, not just its chunk's first.
                let at = match &refusal {
                    AppendError::Import { position, .. } => {
                        positions.iter().position(|p| p == position).unwrap_or(0)
                    }
                    _ => 0,
                };
                ImportError::Refused {
                    line: lines[at],
                    refusal,
                }
            })?;
            lines.clear();
            imported += count;
        }
        if eof {
            break;
        }
    }
    Ok(ImportReport {
        events: imported,
        head: store.head(),
    })
}

fn parse_line(text: &str, line: u64, store: &dyn EventStore) -> Result<RecordedEvent, ImportError> {
    let malformed = |reason: String| ImportError::Malformed { line, reason };
    let parsed: LineIn =
        serde_json::from_str(text).map_err(|error| malformed(error.to_string()))?;
    let hash = unhex(&parsed.hash)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| malformed("hash is not 64 hex digits".into()))?;
    let sealed = match (&parsed.subject_id, &parsed.sealed) {
        (None, None) => None,
        (Some(subject), Some(sealed)) => {
            super::keys::check_subject(subject).map_err(malformed)?;
            Some(unhex(sealed).ok_or_else(|| malformed("sealed is not hex".into()))?)
        }
        _ => return Err(malformed("subject_id and sealed come together".into())),
    };
    let event = RecordedEvent {
        position: parsed.position,
        stream_id: parsed.stream_id,
        stream_version: parsed.stream_version,
        event_id: parsed.event_id,
        event_type: parsed.event_type,
        schema_version: parsed.schema_version,
        recorded_at: parsed.recorded_at,
        data: parsed.data.get().to_owned(),
        metadata: parsed.metadata.get().to_owned(),
        subject_id: parsed.subject_id,
        personal_data: None,
        shredded: false,
        sealed,
        hash,
    };
    validate::stored_stream_id(&event.stream_id).map_err(|error| malformed(error.to_string()))?;
    validate::fields(
        &event.stream_id,
        event.event_id,
        &event.event_type,
        &event.data,
        &event.metadata,
        &store.limits(),
    )
    .map_err(|error| malformed(error.to_string()))?;
    Ok(event)
}

/// Write every subject's key (or tombstone) as NDJSON. Whoever holds this file and an
/// export can read the personal data in it: keep the two apart.
pub fn export_keys(store: &dyn EventStore, out: &mut dyn Write) -> Result<u64, ExportError> {
    let lines = store.subject_keys().export()?;
    for line in &lines {
        serde_json::to_writer(&mut *out, line).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(lines.len() as u64)
}

/// Add the keys and tombstones of a key export to the store's key store.
pub fn import_keys(store: &dyn EventStore, input: &mut dyn BufRead) -> Result<u64, ImportError> {
    let mut lines = Vec::new();
    let mut text = String::new();
    let mut number = 0;
    while {
        text.clear();
        input.read_line(&mut text)? > 0
    } {
        number += 1;
        if text.trim().is_empty() {
            continue;
        }
        lines.push(
            serde_json::from_str::<super::keys::KeyLine>(&text).map_err(|error| {
                ImportError::Malformed {
                    line: number,
                    reason: error.to_string(),
                }
            })?,
        );
    }
    store
        .subject_keys()
        .import(&lines)
        .map(|added| added as u64)
        .map_err(|error| ImportError::Keys(error.to_string()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len() / 2)
        .map(|index| u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok())
        .collect()
}
