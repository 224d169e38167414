//! The stored form of an event record and the hash chain over it.
//!
//! A record is `body ++ hash`, keyed by position. The body is a format byte, then
//! fixed-width fields (little endian), then length-prefixed strings. The hash is
//! `blake3(previous hash ++ position ++ body)`: changing any stored byte, or reordering
//! records, breaks the chain from that position on.

use uuid::Uuid;

use super::event::EventRef;

/// The record format this build writes and reads.
pub const RECORD_FORMAT: u8 = 1;
/// The hash that precedes position 1.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

const HASH_LEN: usize = 32;
// format + stream_version + event_id + schema_version + recorded_at + 4 string lengths
const FIXED_LEN: usize = 1 + 8 + 16 + 4 + 8 + 4 * 4;

/// The fields of a record that are hashed and stored (everything but position and hash).
#[derive(Debug, Clone, Copy)]
pub struct RecordBody<'a> {
    /// Version within the stream.
    pub stream_version: u64,
    /// The event's id.
    pub event_id: Uuid,
    /// Version of the shape of `data`.
    pub schema_version: u32,
    /// Commit time, ms since the epoch.
    pub recorded_at: u64,
    /// The stream.
    pub stream_id: &'a str,
    /// The event type.
    pub event_type: &'a str,
    /// JSON payload.
    pub data: &'a str,
    /// JSON metadata object.
    pub metadata: &'a str,
}

impl RecordBody<'_> {
    /// Append the encoded body and its chained hash to `out`; returns the hash.
    pub fn encode_into(&self, position: u64, previous: &[u8; 32], out: &mut Vec<u8>) -> [u8; 32] {
        let start = out.len();
        out.reserve(
            FIXED_LEN
                + self.stream_id.len()
                + self.event_type.len()
                + self.data.len()
                + self.metadata.len()
                + HASH_LEN,
        );
        out.push(RECORD_FORMAT);
        out.extend_from_slice(&self.stream_version.to_le_bytes());
        out.extend_from_slice(self.event_id.as_bytes());
        out.extend_from_slice(&self.schema_version.to_le_bytes());
        out.extend_from_slice(&self.recorded_at.to_le_bytes());
        for text in [self.stream_id, self.event_type, self.data, self.metadata] {
            out.extend_from_slice(&(text.len() as u32).to_le_bytes());
        }
        for text in [self.stream_id, self.event_type, self.data, self.metadata] {
            out.extend_from_slice(text.as_bytes());
        }
        let hash = chain_hash(previous, position, &out[start..]);
        out.extend_from_slice(&hash);
        hash
    }
}

/// `blake3(previous ++ position ++ body)`.
pub fn chain_hash(previous: &[u8; 32], position: u64, body: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(previous);
    hasher.update(&position.to_le_bytes());
    hasher.update(body);
    *hasher.finalize().as_bytes()
}

/// A decoded record that borrows from the stored bytes.
#[derive(Debug, Clone, Copy)]
pub struct Decoded<'a> {
    /// The event.
    pub event: EventRef<'a>,
    /// The encoded body, as hashed.
    pub body_bytes: &'a [u8],
}

/// Decode the record stored at `position`; the error says what is malformed.
pub fn decode(position: u64, bytes: &[u8]) -> Result<Decoded<'_>, String> {
    if bytes.len() < FIXED_LEN + HASH_LEN {
        return Err(format!("record is {} bytes, too short", bytes.len()));
    }
    if bytes[0] != RECORD_FORMAT {
        return Err(format!("unknown record format {}", bytes[0]));
    }
    let (body_bytes, hash) = bytes.split_at(bytes.len() - HASH_LEN);
    let u64_at = |at: usize| u64::from_le_bytes(body_bytes[at..at + 8].try_into().unwrap());
    let u32_at = |at: usize| u32::from_le_bytes(body_bytes[at..at + 4].try_into().unwrap());
    let lengths = [u32_at(37), u32_at(41), u32_at(45), u32_at(49)].map(|len| len as usize);
    let strings_len: usize = lengths.iter().sum();
    if FIXED_LEN + strings_len != body_bytes.len() {
        return Err("record lengths do not add up".into());
    }
    let mut offset = FIXED_LEN;
    let mut texts = [""; 4];
    for (text, len) in texts.iter_mut().zip(lengths) {
        *text = std::str::from_utf8(&body_bytes[offset..offset + len])
            .map_err(|_| "record holds text that is not UTF-8".to_owned())?;
        offset += len;
    }
    let [stream_id, event_type, data, metadata] = texts;
    Ok(Decoded {
        event: EventRef {
            position,
            stream_id,
            stream_version: u64_at(1),
            event_id: Uuid::from_bytes(body_bytes[9..25].try_into().unwrap()),
            event_type,
            schema_version: u32_at(25),
            recorded_at: u64_at(29),
            data,
            metadata,
            hash: hash.try_into().unwrap(),
        },
        body_bytes,
    })
}

/// The commit time of the record, read without decoding the rest.
pub fn recorded_at(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(29..37)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> RecordBody<'static> {
        RecordBody {
            stream_version: 7,
            event_id: Uuid::from_u128(0x1234),
            schema_version: 2,
            recorded_at: 1_700_000_000_000,
            stream_id: "account-1",
            event_type: "FundsDeposited",
            data: r#"{"amount":100,"currency":"USD"}"#,
            metadata: r#"{"correlation_id":"c"}"#,
        }
    }

    #[test]
    fn a_record_round_trips_and_its_hash_verifies() {
        let mut bytes = Vec::new();
        let hash = body().encode_into(5, &GENESIS_HASH, &mut bytes);
        let decoded = decode(5, &bytes).unwrap();
        let event = decoded.event.to_owned();
        assert_eq!(event.stream_version, 7);
        assert_eq!(event.event_id, Uuid::from_u128(0x1234));
        assert_eq!(event.schema_version, 2);
        assert_eq!(event.stream_id, "account-1");
        assert_eq!(event.event_type, "FundsDeposited");
        assert_eq!(event.data, r#"{"amount":100,"currency":"USD"}"#);
        assert_eq!(event.metadata, r#"{"correlation_id":"c"}"#);
        assert_eq!(event.position, 5);
        assert_eq!(event.recorded_at, 1_700_000_000_000);
        assert_eq!(recorded_at(&bytes), Some(1_700_000_000_000));
        assert_eq!(event.hash, hash);
        assert_eq!(chain_hash(&GENESIS_HASH, 5, decoded.body_bytes), hash);
    }

    #[test]
    fn the_hash_depends_on_position_predecessor_and_content() {
        let mut bytes = Vec::new();
        let hash = body().encode_into(5, &GENESIS_HASH, &mut bytes);
        assert_ne!(hash, body().encode_into(6, &GENESIS_HASH, &mut Vec::new()));
        assert_ne!(hash, body().encode_into(5, &[1; 32], &mut Vec::new()));
        let mut tampered = bytes.clone();
        let at = tampered.len() - 40;
        tampered[at] ^= 1;
        let decoded = decode(5, &tampered).unwrap();
        assert_ne!(
            chain_hash(&GENESIS_HASH, 5, decoded.body_bytes),
            decoded.event.hash
        );
    }

    #[test]
    fn malformed_bytes_are_reported_not_panicked_on() {
        assert!(decode(1, &[]).is_err());
        let mut bytes = Vec::new();
        body().encode_into(1, &GENESIS_HASH, &mut bytes);
        bytes[0] = 9;
        assert!(decode(1, &bytes).unwrap_err().contains("format"));
        bytes[0] = RECORD_FORMAT;
        bytes[37] = 0xff;
        assert!(decode(1, &bytes).is_err());
    }
}
