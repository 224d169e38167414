//! Filtered reads of `$all` that stay bounded on a big log.
//!
//! The store filters by event type; correlation id, causation id and the emitting plugin's
//! hash live in the metadata and are checked here. Either way a filter that matches little
//! could walk the whole log, so one page scans at most [`SCAN_WINDOW`] positions and says
//! where it stopped: the page links to "continue" from there. Unfiltered reads take exactly
//! one page of events.

use std::collections::VecDeque;
use std::ops::ControlFlow;

use eshost_store::{AllRead, Direction, EventStore, ReadError, RecordedEvent, Until};
use serde::Deserialize;

/// The most positions one filtered page scans.
pub const SCAN_WINDOW: u64 = 50_000;

/// What to keep of `$all` (all of it when empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// Event types, any of them.
    pub types: Vec<String>,
    /// Streams whose id starts with this.
    pub stream_prefix: String,
    /// `metadata.correlation_id` equal to this.
    pub correlation: String,
    /// `metadata.causation_id` equal to this.
    pub causation: String,
    /// `metadata.plugin_hash` starting with this.
    pub plugin: String,
}

#[derive(Deserialize)]
struct Links {
    correlation_id: Option<String>,
    causation_id: Option<String>,
    plugin_hash: Option<String>,
}

/// The metadata keys that tie events together, if the metadata has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventLinks {
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub plugin_hash: Option<String>,
}

/// Reads the linking keys of an event's metadata.
pub fn links(metadata: &str) -> EventLinks {
    match serde_json::from_str::<Links>(metadata) {
        Ok(links) => EventLinks {
            correlation_id: links.correlation_id,
            causation_id: links.causation_id,
            plugin_hash: links.plugin_hash,
        },
        Err(_) => EventLinks::default(),
    }
}

impl Filters {
    /// Filters that look into the metadata (and so scan).
    fn on_metadata(&self) -> bool {
        !(self.correlation.is_empty() && self.causation.is_empty() && self.plugin.is_empty())
    }

    /// Whether any filter is set.
    pub fn any(&self) -> bool {
        !self.types.is_empty() || !self.stream_prefix.is_empty() || self.on_metadata()
    }

    /// Whether an event (stream id and metadata) passes the filters the store does not apply.
    pub fn keeps(&self, stream_id: &str, metadata: &str) -> bool {
        if !stream_id.starts_with(&self.stream_prefix) {
            return false;
        }
        if !self.on_metadata() {
            return true;
        }
        let links = links(metadata);
        let equal = |wanted: &str, found: &Option<String>| {
            wanted.is_empty() || found.as_deref() == Some(wanted)
        };
        equal(&self.correlation, &links.correlation_id)
            && equal(&self.causation, &links.causation_id)
            && (self.plugin.is_empty()
                || links
                    .plugin_hash
                    .as_deref()
                    .is_some_and(|hash| hash.starts_with(&self.plugin)))
    }
}

/// One page of a filtered read.
#[derive(Debug)]
pub struct Page {
    /// The events, in the order the page shows them.
    pub events: Vec<RecordedEvent>,
    /// The first and last position the scan covered.
    pub scanned: (u64, u64),
    /// Where the next page starts (forward: the next position up; backward: the next
    /// position down), if there is more log in that direction.
    pub next: Option<u64>,
}

/// Up to `limit` events from position `from` on, oldest first, scanning at most
/// [`SCAN_WINDOW`] positions when filtered.
pub fn forward(
    store: &dyn EventStore,
    from: u64,
    limit: usize,
    filters: &Filters,
) -> Result<Page, ReadError> {
    let from = from.max(1);
    let head = store.head();
    if from > head {
        return Ok(Page {
            events: Vec::new(),
            scanned: (from, from.saturating_sub(1)),
            next: None,
        });
    }
    let window_end = if filters.any() {
        head.min(from.saturating_add(SCAN_WINDOW - 1))
    } else {
        head
    };
    let read = AllRead {
        from_position: from,
        direction: Direction::Forward,
        limit: usize::MAX,
        event_types: filters.types.clone(),
        until: Some(Until::Position(window_end)),
    };
    let mut events = Vec::new();
    let mut last_seen = from - 1;
    store.visit_all(&read, &mut |event| {
        last_seen = event.position;
        if filters.keeps(event.stream_id, event.metadata) {
            events.push(event.to_owned());
        }
        if events.len() >= limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    let stopped_at = if events.len() >= limit {
        last_seen
    } else {
        window_end
    };
    Ok(Page {
        events,
        scanned: (from, stopped_at),
        next: (stopped_at < head).then_some(stopped_at + 1),
    })
}

/// Up to `limit` events at or before position `before`, newest first, scanning at most
/// [`SCAN_WINDOW`] positions when filtered.
pub fn backward(
    store: &dyn EventStore,
    before: u64,
    limit: usize,
    filters: &Filters,
) -> Result<Page, ReadError> {
    let before = before.min(store.head());
    if before == 0 {
        return Ok(Page {
            events: Vec::new(),
            scanned: (1, 0),
            next: None,
        });
    }
    if !filters.any() {
        let read = AllRead {
            from_position: before,
            direction: Direction::Backward,
            limit,
            event_types: Vec::new(),
            until: None,
        };
        let events = store.read_all(&read)?;
        let oldest = events.last().map_or(1, |e| e.position);
        return Ok(Page {
            scanned: (oldest, before),
            next: (oldest > 1).then(|| oldest - 1),
            events,
        });
    }
    // A window read forward, keeping its newest `limit` matches.
    let start = before.saturating_sub(SCAN_WINDOW - 1).max(1);
    let read = AllRead {
        from_position: start,
        direction: Direction::Forward,
        limit: usize::MAX,
        event_types: filters.types.clone(),
        until: Some(Until::Position(before)),
    };
    let mut kept: VecDeque<RecordedEvent> = VecDeque::with_capacity(limit);
    store.visit_all(&read, &mut |event| {
        if filters.keeps(event.stream_id, event.metadata) {
            if kept.len() == limit {
                kept.pop_front();
            }
            kept.push_back(event.to_owned());
        }
        ControlFlow::Continue(())
    })?;
    // A full page covers from its oldest event up; else the whole window.
    let covered_from = match kept.front() {
        Some(oldest) if kept.len() == limit => oldest.position,
        _ => start,
    };
    Ok(Page {
        events: kept.into_iter().rev().collect(),
        scanned: (covered_from, before),
        next: (covered_from > 1).then(|| covered_from - 1),
    })
}

/// Events near `around` (up to [`SCAN_WINDOW`] / 2 positions either side) that pass
/// `filters`, oldest first, at most `limit`: an event's correlation and what it caused.
pub fn around(
    store: &dyn EventStore,
    around: u64,
    limit: usize,
    filters: &Filters,
) -> Result<Page, ReadError> {
    let from = around.saturating_sub(SCAN_WINDOW / 2).max(1);
    let read = AllRead {
        from_position: from,
        direction: Direction::Forward,
        limit: usize::MAX,
        event_types: filters.types.clone(),
        until: Some(Until::Position(around.saturating_add(SCAN_WINDOW / 2))),
    };
    let mut events = Vec::new();
    let mut last_seen = from;
    store.visit_all(&read, &mut |event| {
        last_seen = event.position;
        if filters.keeps(event.stream_id, event.metadata) {
            events.push(event.to_owned());
        }
        if events.len() >= limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    Ok(Page {
        events,
        scanned: (from, last_seen),
        next: None,
    })
}
