//! The blob port: bytes stored once, under their content hash, beside the log. The host keeps
//! plugin components there, so that an activation recorded in the log (`$plugins`) names code
//! every node can load. Blobs are never deleted: the log refers to them.

/// The largest blob a store keeps (the default largest plugin upload).
pub const MAX_BLOB_BYTES: usize = 64 * 1024 * 1024;

/// The content hash of `bytes`: blake3, lowercase hex (a plugin's identity).
pub fn content_hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Whether `hash` has the form of a content hash (64 lowercase hex digits).
pub fn check_hash(hash: &str) -> Result<(), BlobError> {
    let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    if hash.len() == 64 && hash.chars().all(hex) {
        Ok(())
    } else {
        Err(BlobError::BadHash(hash.to_owned()))
    }
}

/// Why a blob could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// Over [`MAX_BLOB_BYTES`].
    #[error("blob of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a content hash.
    #[error("{0:?} is not a content hash (64 lowercase hex digits)")]
    BadHash(String),
    /// The stored bytes do not hash to their key.
    #[error("the blob stored under {hash} is corrupt: its bytes hash to {found}")]
    Corrupt {
        /// The key.
        hash: String,
        /// What the bytes hash to.
        found: String,
    },
    /// The storage engine failed.
    #[error("blob storage failed: {0}")]
    Storage(String),
}

/// Checks a blob before it is stored; returns its hash.
pub fn check_put(bytes: &[u8]) -> Result<String, BlobError> {
    if bytes.len() > MAX_BLOB_BYTES {
        return Err(BlobError::TooLarge {
            size: bytes.len(),
            limit: MAX_BLOB_BYTES,
        });
    }
    Ok(content_hash(bytes))
}

/// Checks bytes read under `hash`.
pub fn check_read(hash: &str, bytes: Vec<u8>) -> Result<Vec<u8>, BlobError> {
    let found = content_hash(&bytes);
    if found == hash {
        Ok(bytes)
    } else {
        Err(BlobError::Corrupt {
            hash: hash.to_owned(),
            found,
        })
    }
}
