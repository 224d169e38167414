//! Pages of events bounded in count and in bytes, so one read of big events cannot take a
//! reader's memory: a page is read in chunks sized from the events seen so far, and ends at
//! its count, at the byte budget (after at least one event), or where the events end. The
//! HTTP reads (`max_response_bytes`) and subscriptions page this way over any backend.

use crate::{ReadError, RecordedEvent};

/// The most events the first chunk reads, before sizes are known.
const FIRST_CHUNK: usize = 16;
/// The most events any chunk reads.
const MAX_CHUNK: usize = 1_000;

/// The bytes an event holds in a page: its data, metadata and sealed personal part.
pub fn event_bytes(event: &RecordedEvent) -> usize {
    event.data.len() + event.metadata.len() + event.sealed.as_ref().map_or(0, Vec::len)
}

/// Reads a page of at most `limit` events and about `max_bytes` bytes. `read_chunk(after, n)`
/// returns up to `n` events following `after` (the last event so far; `None`: the page's
/// start), and fewer only at the end.
pub fn read_page(
    limit: usize,
    max_bytes: usize,
    mut read_chunk: impl FnMut(Option<&RecordedEvent>, usize) -> Result<Vec<RecordedEvent>, ReadError>,
) -> Result<Vec<RecordedEvent>, ReadError> {
    let mut page: Vec<RecordedEvent> = Vec::new();
    let mut bytes = 0usize;
    while page.len() < limit {
        let room = limit - page.len();
        let wanted = match bytes.checked_div(page.len()) {
            // Enough events of the average size so far to fill the budget.
            Some(average) => (max_bytes.saturating_sub(bytes) / average.max(1)).max(1),
            None => FIRST_CHUNK,
        };
        let n = wanted.min(MAX_CHUNK).min(room);
        let chunk = read_chunk(page.last(), n)?;
        let complete = chunk.len() < n;
        for event in chunk {
            let size = event_bytes(&event);
            if !page.is_empty() && bytes.saturating_add(size) > max_bytes {
                return Ok(page);
            }
            bytes += size;
            page.push(event);
        }
        if complete {
            break;
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(position: u64, size: usize) -> RecordedEvent {
        RecordedEvent {
            position,
            stream_id: "s".into(),
            stream_version: position,
            event_id: uuid::Uuid::nil(),
            event_type: "T".into(),
            schema_version: 1,
            recorded_at: 0,
            data: "x".repeat(size),
            metadata: String::new(),
            subject_id: None,
            personal_data: None,
            shredded: false,
            sealed: None,
            hash: [0; 32],
        }
    }

    /// A log of `count` events of `size` bytes, read as `read_page` asks.
    fn page(count: u64, size: usize, limit: usize, max_bytes: usize) -> (Vec<u64>, usize) {
        let mut chunks = 0;
        let page = read_page(limit, max_bytes, |after, n| {
            chunks += 1;
            let from = after.map_or(1, |e| e.position + 1);
            Ok((from..=count).take(n).map(|p| event(p, size)).collect())
        })
        .unwrap();
        (page.iter().map(|e| e.position).collect(), chunks)
    }

    #[test]
    fn a_page_ends_at_the_byte_budget_after_at_least_one_event() {
        let (positions, _) = page(100, 1_000, 1_000, 3_500);
        assert_eq!(positions, [1, 2, 3]);
        let (positions, _) = page(100, 10_000, 1_000, 3_500);
        assert_eq!(positions, [1], "one event over the budget is still served");
    }

    #[test]
    fn a_page_ends_at_its_count_or_at_the_end() {
        assert_eq!(page(100, 10, 7, usize::MAX).0, (1..=7).collect::<Vec<_>>());
        assert_eq!(
            page(5, 10, 1_000, usize::MAX).0,
            (1..=5).collect::<Vec<_>>()
        );
        assert!(page(0, 10, 1_000, usize::MAX).0.is_empty());
    }

    #[test]
    fn small_events_are_read_in_few_chunks() {
        let (positions, chunks) = page(10_000, 10, 10_000, 8 << 20);
        assert_eq!(positions.len(), 10_000);
        assert!(chunks <= 12, "{chunks} chunks");
    }
}
