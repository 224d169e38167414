//! Personal data and its keys: one random 256-bit key per data subject.
//!
//! An event's personal-data part is sealed with XChaCha20-Poly1305 under its subject's key
//! before the record is hashed and written, so the log and its hash chain only ever hold
//! ciphertext. Forgetting a subject erases its key and leaves a tombstone: the ciphertexts
//! stay in the log, still verifiable, no longer readable.
//!
//! Where keys live is a backend's choice behind [`SubjectKeys`]: the embedded store keeps them
//! in a file of its own ([`KeyStore`]); a server backend may keep them in its database,
//! wrapped under a [`KeyEncryptionKey`] held outside it. Sealing itself ([`SubjectKey`]) is the
//! same everywhere, so exports and key exports move between backends.

mod file;
mod seal;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use file::{KEYS_FILE, KeyStore};
pub use seal::{KeyEncryptionKey, SubjectKey};

/// Longest subject id, in bytes.
pub const MAX_SUBJECT_ID_BYTES: usize = 256;

/// What a sealed personal-data part reads as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Personal {
    /// The event carries no personal data.
    None,
    /// The decrypted part (JSON text).
    Data(String),
    /// The subject was forgotten: the key is gone.
    Shredded,
    /// The part cannot be read although its subject was never forgotten (no key for it in
    /// this key store, or a ciphertext that fails authentication).
    Unreadable(String),
}

impl Personal {
    /// As a reader's fields: the data, and whether it reads as shredded. Unreadable data
    /// counts as shredded (plugins cannot tell the two apart) and is logged, as it means a
    /// missing key file or a damaged record.
    pub fn into_fields(self, position: u64) -> (Option<String>, bool) {
        match self {
            Personal::None => (None, false),
            Personal::Data(text) => (Some(text), false),
            Personal::Shredded => (None, true),
            Personal::Unreadable(reason) => {
                tracing::warn!(position, %reason, "personal data unreadable");
                (None, true)
            }
        }
    }
}

/// Why the key store could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// Reading or writing the key file failed.
    #[error("key store {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Another process holds the key file.
    #[error("key store {path} is locked by another process (is `eshost run` using it?)")]
    Locked {
        /// The key file.
        path: PathBuf,
    },
    /// The file is not a key store, or an entry before the last is damaged.
    #[error("key store {path} is damaged at byte {offset}: {reason}")]
    Corrupt {
        /// The key file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A key line given to import is malformed.
    #[error("key for subject {subject:?}: {reason}")]
    Invalid {
        /// The subject.
        subject: String,
        /// What is wrong.
        reason: String,
    },
    /// A key given to import differs from the key this store holds for the subject.
    #[error("subject {subject:?} already has a different key in this key store")]
    Conflict {
        /// The subject.
        subject: String,
    },
    /// The database that holds the keys failed or refused.
    #[error("key store: {0}")]
    Backend(String),
}

/// Why personal data could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The subject was forgotten; its personal data is not stored again.
    #[error("subject {subject:?} has been forgotten; personal data for it is not stored")]
    Forgotten {
        /// The subject.
        subject: String,
    },
    /// Writing a new key failed.
    #[error("cannot store a key for subject {subject:?}: {reason}")]
    Storage {
        /// The subject.
        subject: String,
        /// The I/O error.
        reason: String,
    },
}

/// What [`KeyStore::forget`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Forgot {
    /// The subject's key was erased.
    KeyErased,
    /// The subject had been forgotten before.
    AlreadyForgotten,
    /// The subject had no key (no personal data stored); a tombstone now refuses any.
    NoKey,
}

/// One subject in a key export: its key, or that it was forgotten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyLine {
    /// The subject id.
    pub subject: String,
    /// The key, 64 hex digits; absent for a forgotten subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// True for a forgotten subject.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forgotten: bool,
}

/// Where the subjects' keys live: seals and unseals personal data, forgets subjects, and
/// moves keys in and out for backups. Implemented by the key file of the embedded store and
/// by server backends.
pub trait SubjectKeys: Send + Sync + std::fmt::Debug {
    /// Seal `plaintext` for event `event_id` under `subject`'s key, creating (and storing
    /// durably) the key on the subject's first personal data.
    fn seal(&self, subject: &str, event_id: Uuid, plaintext: &str) -> Result<Vec<u8>, SealError>;
    /// Read a sealed part of an event of `subject`.
    fn unseal(&self, subject: &str, event_id: Uuid, sealed: &[u8]) -> Personal;
    /// Erase `subject`'s key and keep a tombstone, so its personal data reads as shredded and
    /// is never stored again.
    fn forget(&self, subject: &str) -> Result<Forgot, KeyStoreError>;
    /// Whether `subject` was forgotten.
    fn is_forgotten(&self, subject: &str) -> bool;
    /// Every subject, with its key (hex) or its tombstone.
    fn export(&self) -> Result<Vec<KeyLine>, KeyStoreError>;
    /// Add exported keys and tombstones. A subject forgotten on either side stays forgotten;
    /// a subject with a different key here is refused. Returns how many entries were added.
    fn import(&self, lines: &[KeyLine]) -> Result<usize, KeyStoreError>;
}

/// Subject ids are non-empty, at most 256 bytes, free of control characters.
pub fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        Err("a subject id is empty".into())
    } else if subject.len() > MAX_SUBJECT_ID_BYTES {
        Err("a subject id is longer than 256 bytes".into())
    } else if subject.chars().any(char::is_control) {
        Err("a subject id contains control characters".into())
    } else {
        Ok(())
    }
}
