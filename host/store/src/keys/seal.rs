//! Sealing personal data under a subject's key, and wrapping subject keys under a
//! key-encryption key. The same on every backend, so sealed parts and key exports move
//! between them.
//!
//! Sealing is deterministic for a given key, event id and plaintext (the nonce is a keyed hash
//! of both), so an idempotent retry of an append produces the same stored bytes, and a writer
//! can compare records without holding keys.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use uuid::Uuid;
use zeroize::Zeroize;

pub(super) const KEY_LEN: usize = 32;
/// The first byte of a sealed part: how it was sealed.
const SEAL_FORMAT: u8 = 1;
/// The first byte of a wrapped key: how it was wrapped.
const WRAP_FORMAT: u8 = 1;
const NONCE_LEN: usize = 24;
const NONCE_CONTEXT: &str = "eshost 2026-11 personal-data nonce";
const WRAP_CONTEXT: &[u8] = b"eshost subject key ";
const KEK_CHECK_CONTEXT: &str = "eshost 2026-11 key-encryption-key check";

/// One subject's 256-bit key; its bytes are zeroed when dropped.
pub struct SubjectKey(pub(super) [u8; KEY_LEN]);

impl Drop for SubjectKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectKey(..)")
    }
}

impl SubjectKey {
    /// A fresh random key.
    pub fn generate() -> Result<SubjectKey, getrandom::Error> {
        let mut key = SubjectKey([0; KEY_LEN]);
        getrandom::fill(&mut key.0)?;
        Ok(key)
    }

    /// A key from its 64 hex digits (as in a key export).
    pub fn from_hex(text: &str) -> Option<SubjectKey> {
        unhex_key(text).map(SubjectKey)
    }

    /// The key as 64 hex digits, for a key export.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether two keys are the same key.
    pub fn same_as(&self, other: &SubjectKey) -> bool {
        self.0 == other.0
    }

    /// Seal `plaintext` of event `event_id` of `subject`.
    pub fn seal(&self, subject: &str, event_id: Uuid, plaintext: &str) -> Vec<u8> {
        let nonce_key = blake3::derive_key(NONCE_CONTEXT, &self.0);
        let mut hasher = blake3::Hasher::new_keyed(&nonce_key);
        hasher.update(event_id.as_bytes());
        hasher.update(plaintext.as_bytes());
        let nonce: [u8; NONCE_LEN] = hasher.finalize().as_bytes()[..NONCE_LEN]
            .try_into()
            .unwrap();
        let aad = associated(subject, event_id);
        let ciphertext = XChaCha20Poly1305::new((&self.0).into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any message under 256 GiB");
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        sealed.push(SEAL_FORMAT);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Open a part sealed by [`seal`](Self::seal); the error says why it cannot be read.
    pub fn unseal(&self, subject: &str, event_id: Uuid, sealed: &[u8]) -> Result<String, String> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != SEAL_FORMAT {
            return Err("the sealed part is malformed".into());
        }
        let aad = associated(subject, event_id);
        let plaintext = XChaCha20Poly1305::new((&self.0).into())
            .decrypt(
                XNonce::from_slice(&sealed[1..1 + NONCE_LEN]),
                Payload {
                    msg: &sealed[1 + NONCE_LEN..],
                    aad: &aad,
                },
            )
            .map_err(|_| {
                "the sealed part fails authentication under the subject's key".to_owned()
            })?;
        String::from_utf8(plaintext).map_err(|_| "the personal data is not UTF-8".to_owned())
    }
}

/// A key that wraps subject keys for storage in a database, held outside that database (a
/// file, an environment variable): a copy of the database alone cannot read personal data.
pub struct KeyEncryptionKey(SubjectKey);

impl std::fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyEncryptionKey(..)")
    }
}

impl Clone for KeyEncryptionKey {
    fn clone(&self) -> Self {
        KeyEncryptionKey(SubjectKey(self.0.0))
    }
}

impl KeyEncryptionKey {
    /// A fresh random key-encryption key.
    pub fn generate() -> Result<KeyEncryptionKey, getrandom::Error> {
        SubjectKey::generate().map(KeyEncryptionKey)
    }

    /// The key from its 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Option<KeyEncryptionKey> {
        SubjectKey::from_hex(text.trim()).map(KeyEncryptionKey)
    }

    /// The key as 64 hex digits.
    pub fn to_hex(&self) -> String {
        self.0.to_hex()
    }

    /// A value that tells whether a database's keys were wrapped under this key, without
    /// revealing it: stored beside the wrapped keys, compared on open.
    pub fn check_value(&self) -> [u8; 32] {
        blake3::derive_key(KEK_CHECK_CONTEXT, &self.0.0)
    }

    /// Wrap `key` of `subject` (random nonce; the subject is bound in).
    pub fn wrap(&self, subject: &str, key: &SubjectKey) -> Result<Vec<u8>, getrandom::Error> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)?;
        let aad = wrap_associated(subject);
        let ciphertext = XChaCha20Poly1305::new((&self.0.0).into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &key.0,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encrypts a 32-byte key");
        let mut wrapped = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        wrapped.push(WRAP_FORMAT);
        wrapped.extend_from_slice(&nonce);
        wrapped.extend_from_slice(&ciphertext);
        Ok(wrapped)
    }

    /// Unwrap a key wrapped by [`wrap`](Self::wrap) for `subject`.
    pub fn unwrap(&self, subject: &str, wrapped: &[u8]) -> Result<SubjectKey, String> {
        if wrapped.len() < 1 + NONCE_LEN || wrapped[0] != WRAP_FORMAT {
            return Err(format!(
                "the wrapped key of subject {subject:?} is malformed"
            ));
        }
        let aad = wrap_associated(subject);
        let mut plain = XChaCha20Poly1305::new((&self.0.0).into())
            .decrypt(
                XNonce::from_slice(&wrapped[1..1 + NONCE_LEN]),
                Payload {
                    msg: &wrapped[1 + NONCE_LEN..],
                    aad: &aad,
                },
            )
            .map_err(|_| {
                format!(
                    "the key of subject {subject:?} does not unwrap under this key-encryption key"
                )
            })?;
        let key = plain
            .as_slice()
            .try_into()
            .map(SubjectKey)
            .map_err(|_| format!("the wrapped key of subject {subject:?} is not 32 bytes"));
        plain.zeroize();
        key
    }
}

fn wrap_associated(subject: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(WRAP_CONTEXT.len() + subject.len());
    aad.extend_from_slice(WRAP_CONTEXT);
    aad.extend_from_slice(subject.as_bytes());
    aad
}

/// The event id and subject are bound in as associated data, so a sealed part cannot be moved
/// to another event or subject.
fn associated(subject: &str, event_id: Uuid) -> Vec<u8> {
    let mut aad = Vec::with_capacity(16 + subject.len());
    aad.extend_from_slice(event_id.as_bytes());
    aad.extend_from_slice(subject.as_bytes());
    aad
}

pub(super) fn unhex_key(text: &str) -> Option<[u8; KEY_LEN]> {
    if text.len() != KEY_LEN * 2 || !text.is_ascii() {
        return None;
    }
    let mut key = [0u8; KEY_LEN];
    for (index, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_keys_unwrap_only_under_their_kek_and_subject() {
        let kek = KeyEncryptionKey::generate().unwrap();
        let key = SubjectKey::generate().unwrap();
        let wrapped = kek.wrap("alice", &key).unwrap();
        assert!(!wrapped.windows(KEY_LEN).any(|w| w == key.0));
        assert!(kek.unwrap("alice", &wrapped).unwrap().same_as(&key));
        assert!(kek.unwrap("bob", &wrapped).is_err());
        let other = KeyEncryptionKey::generate().unwrap();
        assert!(other.unwrap("alice", &wrapped).is_err());
        assert_ne!(kek.check_value(), other.check_value());
        let again = KeyEncryptionKey::from_hex(&format!(" {}\n", kek.to_hex())).unwrap();
        assert_eq!(again.check_value(), kek.check_value());
    }
}
