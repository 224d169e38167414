//! The blob port: bytes stored once by content hash beside the log (plugin components).

use eshost_store::blob::{MAX_BLOB_BYTES, content_hash};
use eshost_store::{AppendRequest, BlobError, ExpectedVersion, ProposedEvent};
use eshost_store_tests::{Backend, Place};

pub fn blobs_are_stored_once_by_content_and_survive_reopening(backend: Backend) {
    let place = Place::new(backend);
    let component: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let hash = {
        let store = place.open();
        store
            .append_blocking(AppendRequest::new(
                "s",
                ExpectedVersion::Any,
                vec![ProposedEvent::new("A", "1")],
            ))
            .unwrap();
        let hash = store.put_blob(&component).unwrap();
        assert_eq!(hash, content_hash(&component));
        assert_eq!(store.put_blob(&component).unwrap(), hash, "idempotent");
        assert_eq!(
            store.get_blob(&hash).unwrap().as_deref(),
            Some(&component[..])
        );
        let empty = store.put_blob(&[]).unwrap();
        assert_eq!(store.get_blob(&empty).unwrap(), Some(Vec::new()));
        let unknown = content_hash(b"never stored");
        assert_eq!(store.get_blob(&unknown).unwrap(), None);
        assert!(matches!(
            store.get_blob("not-a-hash"),
            Err(BlobError::BadHash(_))
        ));
        assert!(matches!(
            store.get_blob(&hash.to_uppercase()),
            Err(BlobError::BadHash(_))
        ));
        let too_large = vec![7u8; MAX_BLOB_BYTES + 1];
        assert!(matches!(
            store.put_blob(&too_large),
            Err(BlobError::TooLarge { .. })
        ));
        assert_eq!(store.get_blob(&content_hash(&too_large)).unwrap(), None);
        // Beside the log, not in it.
        assert_eq!(store.head(), 1);
        hash
    };
    let store = place.open();
    assert_eq!(store.get_blob(&hash).unwrap(), Some(component));
    assert!(store.verify().unwrap().is_ok());
}

crate::conformance!(blobs_are_stored_once_by_content_and_survive_reopening);
