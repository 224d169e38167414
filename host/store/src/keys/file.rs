//! The embedded store's keys: one random 256-bit key per data subject, in a file of its own.
//! Forgetting a subject overwrites its key in place, syncs, and leaves a tombstone.
//!
//! The file is an 8-byte magic, then one entry per subject in the order subjects were first
//! seen: `state (1 live, 2 forgotten) | subject length u16 | subject | key 32 | check 8`,
//! with `check = blake3(subject ++ key)[..8]` to catch an append torn by a crash. Forgetting
//! rewrites state, key and check of the entry where it lies, so the key's bytes are gone from
//! the file itself (not just unlinked from an index, as a copy-on-write database would leave
//! them).

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use uuid::Uuid;
use zeroize::Zeroize;

use crate::tap::{self, Tap, TappedFile};

use super::seal::{KEY_LEN, SubjectKey as Key, unhex_key};
use super::{Forgot, KeyLine, KeyStoreError, Personal, SealError, SubjectKeys, check_subject};

/// The file, inside the store directory, that holds the keys unless configured elsewhere.
pub const KEYS_FILE: &str = "keys.eshk";

const MAGIC: &[u8; 8] = b"ESHKEYS1";
const LIVE: u8 = 1;
const FORGOTTEN: u8 = 2;
const CHECK_LEN: usize = 8;
/// The largest entry: the longest subject id with its key and check.
const MAX_ENTRY_LEN: usize = 3 + super::MAX_SUBJECT_ID_BYTES + KEY_LEN + CHECK_LEN;

struct Live {
    offset: u64,
    key: Key,
}

#[derive(Default)]
struct Keys {
    live: HashMap<String, Live>,
    forgotten: HashSet<String>,
    /// Where tombstones still hold key bytes: an erasure a crash cut short.
    unerased: Vec<u64>,
}

/// The subjects' keys. Lookups share a read lock; new keys and forgetting are serialized by
/// the file lock and synced before they take effect.
pub struct KeyStore {
    path: PathBuf,
    keys: RwLock<Keys>,
    file: Mutex<TappedFile>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// Open (or create) the key file at `path` and lock it.
    pub fn open(path: &Path) -> Result<KeyStore, KeyStoreError> {
        KeyStore::open_tapped(path, &None)
    }

    /// Open (or create) the key file at `path` and lock it; its writes go through `tap`.
    pub fn open_tapped(path: &Path, tap: &Tap) -> Result<KeyStore, KeyStoreError> {
        let io = |source| KeyStoreError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let file = TappedFile::open(path, tap).map_err(io)?;
        match file.file().try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(KeyStoreError::Locked {
                    path: path.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(error)) => return Err(io(error)),
        }
        let mut bytes = Vec::new();
        file.file().read_to_end(&mut bytes).map_err(io)?;
        if bytes.is_empty() {
            file.write_all_at(MAGIC, 0).map_err(io)?;
            file.sync_all().map_err(io)?;
            sync_parent(path, tap).map_err(io)?;
            bytes.extend_from_slice(MAGIC);
        }
        let (keys, valid_len) = parse(path, &bytes)?;
        if valid_len < bytes.len() as u64 {
            // A torn append from a crash: that key was never used, as keys are synced first.
            tracing::warn!(
                path = %path.display(),
                dropped = bytes.len() as u64 - valid_len,
                "dropping a partly written key entry"
            );
            file.set_len(valid_len).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        let mut keys = keys;
        if !keys.unerased.is_empty() {
            tracing::warn!(
                path = %path.display(),
                subjects = keys.unerased.len(),
                "finishing the erasure of forgotten keys a crash interrupted"
            );
            for offset in keys.unerased.drain(..) {
                file.write_all_at(&[0; KEY_LEN + CHECK_LEN], offset)
                    .map_err(io)?;
            }
            file.sync_data().map_err(io)?;
        }
        Ok(KeyStore {
            path: path.to_owned(),
            keys: RwLock::new(keys),
            file: Mutex::new(file),
        })
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many subjects have a key, and how many were forgotten.
    pub fn counts(&self) -> (usize, usize) {
        let keys = self.read();
        (keys.live.len(), keys.forgotten.len())
    }

    /// Whether `subject` was forgotten.
    pub fn is_forgotten(&self, subject: &str) -> bool {
        self.read().forgotten.contains(subject)
    }

    /// Seal `plaintext` for event `event_id` under `subject`'s key, creating (and syncing) the
    /// key on the subject's first personal data.
    pub fn seal(
        &self,
        subject: &str,
        event_id: Uuid,
        plaintext: &str,
    ) -> Result<Vec<u8>, SealError> {
        {
            let keys = self.read();
            if let Some(live) = keys.live.get(subject) {
                return Ok(live.key.seal(subject, event_id, plaintext));
            }
            if keys.forgotten.contains(subject) {
                return Err(SealError::Forgotten {
                    subject: subject.to_owned(),
                });
            }
        }
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // Another caller may have created it while this one waited for the file.
        if let Some(live) = self.read().live.get(subject) {
            return Ok(live.key.seal(subject, event_id, plaintext));
        }
        let mut key = Key([0; KEY_LEN]);
        getrandom::fill(&mut key.0).map_err(|error| SealError::Storage {
            subject: subject.to_owned(),
            reason: error.to_string(),
        })?;
        let offset =
            append_entry(&mut file, subject, LIVE, &key.0).map_err(|error| SealError::Storage {
                subject: subject.to_owned(),
                reason: error.to_string(),
            })?;
        let sealed = key.seal(subject, event_id, plaintext);
        self.write()
            .live
            .insert(subject.to_owned(), Live { offset, key });
        Ok(sealed)
    }

    /// Read a sealed part of an event of `subject`.
    pub fn unseal(&self, subject: &str, event_id: Uuid, sealed: &[u8]) -> Personal {
        let keys = self.read();
        match keys.live.get(subject) {
            Some(live) => match live.key.unseal(subject, event_id, sealed) {
                Ok(text) => Personal::Data(text),
                Err(reason) => Personal::Unreadable(reason),
            },
            None if keys.forgotten.contains(subject) => Personal::Shredded,
            None => {
                Personal::Unreadable(format!("this key store has no key for subject {subject:?}"))
            }
        }
    }

    /// Erase `subject`'s key from the file (in place, synced) and from memory, and keep a
    /// tombstone so its personal data reads as shredded and is never stored again.
    pub fn forget(&self, subject: &str) -> Result<Forgot, KeyStoreError> {
        let io = |source| KeyStoreError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let offset = {
            let keys = self.read();
            if keys.forgotten.contains(subject) {
                return Ok(Forgot::AlreadyForgotten);
            }
            keys.live.get(subject).map(|live| live.offset)
        };
        let outcome = match offset {
            Some(offset) => {
                // The state byte first, on its own (a one-byte write is never torn): a power
                // cut during the erasure below then leaves a tombstone, never a live entry
                // that fails its check. `open` finishes an erasure that was cut short.
                file.write_all_at(&[FORGOTTEN], offset).map_err(io)?;
                file.sync_data().map_err(io)?;
                file.write_all_at(&[0; KEY_LEN + CHECK_LEN], key_offset(offset, subject))
                    .map_err(io)?;
                file.sync_data().map_err(io)?;
                Forgot::KeyErased
            }
            None => {
                append_entry(&mut file, subject, FORGOTTEN, &[0; KEY_LEN]).map_err(io)?;
                Forgot::NoKey
            }
        };
        let mut keys = self.write();
        keys.live.remove(subject);
        keys.forgotten.insert(subject.to_owned());
        Ok(outcome)
    }

    /// Every subject, with its key (hex) or its tombstone, in the order first seen.
    pub fn export(&self) -> Vec<KeyLine> {
        let keys = self.read();
        let mut lines: Vec<(u64, KeyLine)> = keys
            .live
            .iter()
            .map(|(subject, live)| {
                (
                    live.offset,
                    KeyLine {
                        subject: subject.clone(),
                        key: Some(live.key.to_hex()),
                        forgotten: false,
                    },
                )
            })
            .collect();
        lines.sort_by_key(|(offset, _)| *offset);
        let mut forgotten: Vec<&String> = keys.forgotten.iter().collect();
        forgotten.sort();
        lines
            .into_iter()
            .map(|(_, line)| line)
            .chain(forgotten.into_iter().map(|subject| KeyLine {
                subject: subject.clone(),
                key: None,
                forgotten: true,
            }))
            .collect()
    }

    /// Add exported keys and tombstones. A subject forgotten on either side stays forgotten;
    /// a subject with a different key here is refused. Returns how many entries were added.
    pub fn import(&self, lines: &[KeyLine]) -> Result<usize, KeyStoreError> {
        let mut added = 0;
        for line in lines {
            let corrupt = |reason: &str| KeyStoreError::Invalid {
                subject: line.subject.clone(),
                reason: reason.to_owned(),
            };
            check_subject(&line.subject).map_err(|reason| corrupt(&reason))?;
            if line.forgotten {
                if self.forget(&line.subject)? != Forgot::AlreadyForgotten {
                    added += 1;
                }
                continue;
            }
            let text = line
                .key
                .as_deref()
                .ok_or_else(|| corrupt("neither a key nor forgotten"))?;
            let key = Key(unhex_key(text).ok_or_else(|| corrupt("key is not 64 hex digits"))?);
            let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
            {
                let keys = self.read();
                if keys.forgotten.contains(&line.subject) {
                    continue;
                }
                if let Some(live) = keys.live.get(&line.subject) {
                    if live.key.0 != key.0 {
                        return Err(KeyStoreError::Conflict {
                            subject: line.subject.clone(),
                        });
                    }
                    continue;
                }
            }
            let offset =
                append_entry(&mut file, &line.subject, LIVE, &key.0).map_err(|source| {
                    KeyStoreError::Io {
                        path: self.path.clone(),
                        source,
                    }
                })?;
            self.write()
                .live
                .insert(line.subject.clone(), Live { offset, key });
            added += 1;
        }
        Ok(added)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Keys> {
        self.keys.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl SubjectKeys for KeyStore {
    fn seal(&self, subject: &str, event_id: Uuid, plaintext: &str) -> Result<Vec<u8>, SealError> {
        KeyStore::seal(self, subject, event_id, plaintext)
    }

    fn unseal(&self, subject: &str, event_id: Uuid, sealed: &[u8]) -> Personal {
        KeyStore::unseal(self, subject, event_id, sealed)
    }

    fn forget(&self, subject: &str) -> Result<Forgot, KeyStoreError> {
        KeyStore::forget(self, subject)
    }

    fn is_forgotten(&self, subject: &str) -> bool {
        KeyStore::is_forgotten(self, subject)
    }

    fn export(&self) -> Result<Vec<KeyLine>, KeyStoreError> {
        Ok(KeyStore::export(self))
    }

    fn import(&self, lines: &[KeyLine]) -> Result<usize, KeyStoreError> {
        KeyStore::import(self, lines)
    }
}
fn parse(path: &Path, bytes: &[u8]) -> Result<(Keys, u64), KeyStoreError> {
    let corrupt = |offset: usize, reason: &str| KeyStoreError::Corrupt {
        path: path.to_owned(),
        offset: offset as u64,
        reason: reason.to_owned(),
    };
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt(0, "not an eshost key store"));
    }
    let mut keys = Keys::default();
    let mut at = MAGIC.len();
    while at < bytes.len() {
        let rest = &bytes[at..];
        // Entries are appended one at a time, each synced before the next: only the last can
        // be torn, and a torn one is no longer than the largest entry. Its pieces may be any
        // of its sectors (the length field included), so what fails to parse within that
        // reach of the end, with no whole entry after it, is the torn append; anything else
        // is damage.
        let torn_tail = rest.len() <= MAX_ENTRY_LEN && !ends_in_an_entry(&rest[1..]);
        let Some(len) = rest
            .get(1..3)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
        else {
            break;
        };
        let size = 3 + len + KEY_LEN + CHECK_LEN;
        if rest.len() < size {
            break; // torn: the last append did not finish
        }
        let Ok(subject) = std::str::from_utf8(&rest[3..3 + len]) else {
            if torn_tail {
                break;
            }
            return Err(corrupt(at, "a subject id is not UTF-8"));
        };
        let key: [u8; KEY_LEN] = rest[3 + len..3 + len + KEY_LEN].try_into().unwrap();
        let check = &rest[3 + len + KEY_LEN..size];
        match rest[0] {
            LIVE if check == check_of(subject, &key) => {
                keys.forgotten.remove(subject);
                keys.live.insert(
                    subject.to_owned(),
                    Live {
                        offset: at as u64,
                        key: Key(key),
                    },
                );
            }
            FORGOTTEN if len > 0 => {
                keys.live.remove(subject);
                keys.forgotten.insert(subject.to_owned());
                if key.iter().chain(check).any(|byte| *byte != 0) {
                    keys.unerased.push(key_offset(at as u64, subject));
                }
            }
            _ if torn_tail => break,
            _ => return Err(corrupt(at, "an entry fails its check")),
        }
        at += size;
    }
    Ok((keys, at as u64))
}

fn append_entry(
    file: &mut TappedFile,
    subject: &str,
    state: u8,
    key: &[u8; KEY_LEN],
) -> std::io::Result<u64> {
    let offset = file.file().metadata()?.len();
    let mut entry = Vec::with_capacity(3 + subject.len() + KEY_LEN + CHECK_LEN);
    entry.push(state);
    entry.extend_from_slice(&(subject.len() as u16).to_le_bytes());
    entry.extend_from_slice(subject.as_bytes());
    entry.extend_from_slice(key);
    if state == LIVE {
        entry.extend_from_slice(&check_of(subject, key));
    } else {
        entry.extend_from_slice(&[0; CHECK_LEN]);
    }
    let written = file
        .write_all_at(&entry, offset)
        .and_then(|()| file.sync_data());
    if let Err(error) = written {
        // Leave no half entry behind for the next append to land after.
        let _ = file.set_len(offset);
        return Err(error);
    }
    entry.zeroize();
    Ok(offset)
}

/// Whether `bytes` ends with a whole, valid entry.
fn ends_in_an_entry(bytes: &[u8]) -> bool {
    (0..bytes.len()).any(|start| {
        let rest = &bytes[start..];
        let Some(len) = rest
            .get(1..3)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
        else {
            return false;
        };
        if len == 0 || rest.len() != 3 + len + KEY_LEN + CHECK_LEN {
            return false;
        }
        let Ok(subject) = std::str::from_utf8(&rest[3..3 + len]) else {
            return false;
        };
        let key: [u8; KEY_LEN] = rest[3 + len..3 + len + KEY_LEN].try_into().unwrap();
        match rest[0] {
            LIVE => rest[3 + len + KEY_LEN..] == check_of(subject, &key),
            FORGOTTEN => true,
            _ => false,
        }
    })
}

/// Where the key of the entry at `entry` lies.
fn key_offset(entry: u64, subject: &str) -> u64 {
    entry + 3 + subject.len() as u64
}

fn check_of(subject: &str, key: &[u8; KEY_LEN]) -> [u8; CHECK_LEN] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(subject.as_bytes());
    hasher.update(key);
    hasher.finalize().as_bytes()[..CHECK_LEN]
        .try_into()
        .unwrap()
}

fn sync_parent(path: &Path, tap: &Tap) -> std::io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => tap::sync_dir(parent, tap),
        None => Ok(()),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn sealing_round_trips_is_deterministic_and_bound_to_event_and_subject() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyStore::open(&dir.path().join(KEYS_FILE)).unwrap();
        let sealed = keys.seal("alice", id(1), r#"{"name":"Alice"}"#).unwrap();
        assert_eq!(
            sealed,
            keys.seal("alice", id(1), r#"{"name":"Alice"}"#).unwrap()
        );
        assert_ne!(
            sealed,
            keys.seal("alice", id(2), r#"{"name":"Alice"}"#).unwrap()
        );
        assert!(!sealed.windows(5).any(|w| w == b"Alice"));
        assert_eq!(
            keys.unseal("alice", id(1), &sealed),
            Personal::Data(r#"{"name":"Alice"}"#.into())
        );
        assert!(matches!(
            keys.unseal("alice", id(2), &sealed),
            Personal::Unreadable(_)
        ));
        keys.seal("bob", id(3), "{}").unwrap();
        assert!(matches!(
            keys.unseal("bob", id(1), &sealed),
            Personal::Unreadable(_)
        ));
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(
            keys.unseal("alice", id(1), &tampered),
            Personal::Unreadable(_)
        ));
    }

    #[test]
    fn forgetting_erases_the_key_bytes_from_the_file_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEYS_FILE);
        let keys = KeyStore::open(&path).unwrap();
        let sealed = keys.seal("alice", id(1), r#""Alice""#).unwrap();
        keys.seal("bob", id(2), r#""Bob""#).unwrap();
        let alice_key = hex_to_bytes(keys.export()[0].key.as_deref().unwrap());
        let file_bytes = std::fs::read(&path).unwrap();
        assert!(file_bytes.windows(KEY_LEN).any(|w| w == alice_key));

        assert_eq!(keys.forget("alice").unwrap(), Forgot::KeyErased);
        assert_eq!(keys.forget("alice").unwrap(), Forgot::AlreadyForgotten);
        assert_eq!(keys.unseal("alice", id(1), &sealed), Personal::Shredded);
        assert!(matches!(
            keys.seal("alice", id(9), "{}"),
            Err(SealError::Forgotten { .. })
        ));
        let file_bytes = std::fs::read(&path).unwrap();
        assert!(!file_bytes.windows(KEY_LEN).any(|w| w == alice_key));
        drop(keys);

        let keys = KeyStore::open(&path).unwrap();
        assert_eq!(keys.counts(), (1, 1));
        assert_eq!(keys.unseal("alice", id(1), &sealed), Personal::Shredded);
        assert_eq!(keys.forget("carol").unwrap(), Forgot::NoKey);
        drop(keys);
        assert_eq!(KeyStore::open(&path).unwrap().counts(), (1, 2));
    }

    #[test]
    fn a_forget_cut_after_its_state_byte_is_finished_when_the_file_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEYS_FILE);
        let keys = KeyStore::open(&path).unwrap();
        let sealed = keys.seal("alice", id(1), r#""Alice""#).unwrap();
        keys.seal("bob", id(2), r#""Bob""#).unwrap();
        let alice_key = hex_to_bytes(keys.export()[0].key.as_deref().unwrap());
        drop(keys);
        // The first of forget's two writes reached the disk, the erasure did not.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[MAGIC.len()] = FORGOTTEN;
        std::fs::write(&path, &bytes).unwrap();

        let keys = KeyStore::open(&path).unwrap();
        assert_eq!(keys.counts(), (1, 1));
        assert_eq!(keys.unseal("alice", id(1), &sealed), Personal::Shredded);
        let file_bytes = std::fs::read(&path).unwrap();
        assert!(!file_bytes.windows(KEY_LEN).any(|w| w == alice_key));
    }

    #[test]
    fn a_last_entry_torn_anywhere_is_dropped_even_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEYS_FILE);
        let keys = KeyStore::open(&path).unwrap();
        keys.seal("alice", id(1), "1").unwrap();
        let before = std::fs::read(&path).unwrap().len();
        keys.seal("bob", id(2), "2").unwrap();
        drop(keys);
        let whole = std::fs::read(&path).unwrap();
        // Only a later sector of bob's entry reached the disk: its head reads as zeros.
        let mut torn = whole.clone();
        torn[before..before + 10].fill(0);
        std::fs::write(&path, &torn).unwrap();
        let keys = KeyStore::open(&path).unwrap();
        assert_eq!(keys.counts(), (1, 0));
        drop(keys);
        assert_eq!(std::fs::read(&path).unwrap(), whole[..before]);
    }

    #[test]
    fn a_torn_last_entry_is_dropped_and_damage_before_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEYS_FILE);
        let keys = KeyStore::open(&path).unwrap();
        keys.seal("alice", id(1), "1").unwrap();
        keys.seal("bob", id(2), "2").unwrap();
        drop(keys);
        let whole = std::fs::read(&path).unwrap();
        std::fs::write(&path, &whole[..whole.len() - 5]).unwrap();
        let keys = KeyStore::open(&path).unwrap();
        assert_eq!(keys.counts(), (1, 0));
        drop(keys);
        let mut damaged = whole.clone();
        damaged[MAGIC.len() + 4] ^= 0xff;
        std::fs::write(&path, &damaged).unwrap();
        assert!(matches!(
            KeyStore::open(&path),
            Err(KeyStoreError::Corrupt { .. })
        ));
        std::fs::write(&path, b"not keys").unwrap();
        assert!(matches!(
            KeyStore::open(&path),
            Err(KeyStoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn the_file_is_locked_and_keys_export_and_import() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEYS_FILE);
        let keys = KeyStore::open(&path).unwrap();
        assert!(matches!(
            KeyStore::open(&path),
            Err(KeyStoreError::Locked { .. })
        ));
        let sealed = keys.seal("alice", id(1), r#""A""#).unwrap();
        keys.seal("bob", id(2), "2").unwrap();
        keys.forget("bob").unwrap();
        let exported = keys.export();
        assert_eq!(exported.len(), 2);

        let other = KeyStore::open(&dir.path().join("other.eshk")).unwrap();
        assert_eq!(other.import(&exported).unwrap(), 2);
        assert_eq!(other.import(&exported).unwrap(), 0);
        assert_eq!(
            other.unseal("alice", id(1), &sealed),
            Personal::Data(r#""A""#.into())
        );
        assert!(other.is_forgotten("bob"));
        let third = KeyStore::open(&dir.path().join("third.eshk")).unwrap();
        third.seal("alice", id(5), "1").unwrap();
        assert!(matches!(
            third.import(&exported),
            Err(KeyStoreError::Conflict { .. })
        ));
    }

    fn hex_to_bytes(text: &str) -> [u8; KEY_LEN] {
        unhex_key(text).unwrap()
    }
}
