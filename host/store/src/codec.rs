//! The stored form of an event record and the hash chain over it.
//!
//! A record is `body ++ hash`, keyed by position. The body is a format byte, then
//! fixed-width fields (little endian), then length-prefixed strings. Format 1 is an event
//! without personal data; format 2 adds the subject id and the sealed (encrypted) personal
//! part, so the chain covers the ciphertext and never the plaintext. The hash is
//! `blake3(previous hash ++ position ++ body)`: changing any stored byte, or reordering
//! records, breaks the chain from that position on.

use uuid::Uuid;

use super::event::EventRef;

/// The record format of an event without personal data.
pub const RECORD_FORMAT: u8 = 1;
/// The record format of an event with a subject and a sealed personal part.
pub const RECORD_FORMAT_PERSONAL: u8 = 2;
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
    /// The subject and sealed personal part, if the event carries personal data.
    pub personal: Option<(&'a str, &'a [u8])>,
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
                + self.personal.map_or(0, |(s, p)| 8 + s.len() + p.len())
                + HASH_LEN,
        );
        out.push(match self.personal {
            None => RECORD_FORMAT,
            Some(_) => RECORD_FORMAT_PERSONAL,
        });
        out.extend_from_slice(&self.stream_version.to_le_bytes());
        out.extend_from_slice(self.event_id.as_bytes());
        out.extend_from_slice(&self.schema_version.to_le_bytes());
        out.extend_from_slice(&self.recorded_at.to_le_bytes());
        let texts = [self.stream_id, self.event_type, self.data, self.metadata].map(str::as_bytes);
        let personal = self
            .personal
            .map(|(subject, sealed)| [subject.as_bytes(), sealed]);
        let fields = || texts.iter().chain(personal.iter().flatten());
        for field in fields() {
            out.extend_from_slice(&(field.len() as u32).to_le_bytes());
        }
        for field in fields() {
            out.extend_from_slice(field);
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
    let fields = match bytes[0] {
        RECORD_FORMAT => 4,
        RECORD_FORMAT_PERSONAL => 6,
        other => return Err(format!("unknown record format {other}")),
    };
    let fixed = FIXED_LEN + 4 * (fields - 4);
    if bytes.len() < fixed + HASH_LEN {
        return Err(format!("record is {} bytes, too short", bytes.len()));
    }
    let (body_bytes, hash) = bytes.split_at(bytes.len() - HASH_LEN);
    let u64_at = |at: usize| u64::from_le_bytes(body_bytes[at..at + 8].try_into().unwrap());
    let u32_at = |at: usize| u32::from_le_bytes(body_bytes[at..at + 4].try_into().unwrap());
    let mut lengths = [0usize; 6];
    for (index, len) in lengths.iter_mut().take(fields).enumerate() {
        *len = u32_at(37 + 4 * index) as usize;
    }
    let fields_len: usize = lengths.iter().sum();
    if fixed + fields_len != body_bytes.len() {
        return Err("record lengths do not add up".into());
    }
    let mut offset = fixed;
    let mut slices: [&[u8]; 6] = [&[]; 6];
    for (slice, len) in slices.iter_mut().zip(lengths).take(fields) {
        *slice = &body_bytes[offset..offset + len];
        offset += len;
    }
    fn text(bytes: &[u8]) -> Result<&str, String> {
        std::str::from_utf8(bytes).map_err(|_| "record holds text that is not UTF-8".to_owned())
    }
    let (stream_id, event_type, data, metadata) = (
        text(slices[0])?,
        text(slices[1])?,
        text(slices[2])?,
        text(slices[3])?,
    );
    let personal = if fields == 6 {
        Some((text(slices[4])?, slices[5]))
    } else {
        None
    };
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
            subject_id: personal.map(|(subject, _)| subject),
            sealed: personal.map(|(_, sealed)| sealed),
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
            personal: None,
        }
    }

    #[test]
    fn a_record_with_a_sealed_part_round_trips_and_its_hash_covers_it() {
        let sealed = [1u8, 2, 3, 250];
        let with = RecordBody {
            personal: Some(("customer-1", &sealed)),
            ..body()
        };
        let mut bytes = Vec::new();
        let hash = with.encode_into(5, &GENESIS_HASH, &mut bytes);
        assert_ne!(hash, body().encode_into(5, &GENESIS_HASH, &mut Vec::new()));
        let decoded = decode(5, &bytes).unwrap();
        assert_eq!(decoded.event.subject_id, Some("customer-1"));
        assert_eq!(decoded.event.sealed, Some(&sealed[..]));
        assert_eq!(decoded.event.data, body().data);
        assert_eq!(chain_hash(&GENESIS_HASH, 5, decoded.body_bytes), hash);
        let mut tampered = bytes.clone();
        let at = tampered.len() - HASH_LEN - 1;
        tampered[at] ^= 1;
        let decoded = decode(5, &tampered).unwrap();
        assert_ne!(chain_hash(&GENESIS_HASH, 5, decoded.body_bytes), hash);
        assert!(decode(5, &bytes[..bytes.len() - 3]).is_err());
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
