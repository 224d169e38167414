//! A subscription to `$all`: the events from a position on, filtered, first caught up from
//! the log and then followed as they are committed, with no gap and no duplicate between
//! the two (the server's `GET /subscribe` and the admin UI read it).
//!
//! There is one path for both phases. The subscription reads the log in windows of
//! positions up to the head it saw; when it has read up to the head it waits on the store's
//! head watch, marked seen *before* the head is read, so a commit racing the read still
//! wakes it. Positions are gap-free and a position at or below the head is committed and
//! visible, so reading `[next, head]` and moving `next` past what was read loses nothing
//! and repeats nothing. It holds at most one page of events, bounded in count (`batch`) and in
//! bytes (`max_bytes`): a slow reader slows the reads, never grows a buffer.

use std::collections::VecDeque;
use std::sync::Arc;

use eshost_store::{AllRead, Direction, EventStore, ReadError, RecordedEvent, Until, read_page};
use futures_util::Stream;
use tokio::sync::watch;

/// Events read per store call, and the most a subscription buffers.
pub const DEFAULT_BATCH: usize = 500;
/// The default [`SubscriptionOptions::max_bytes`]: 4 MiB.
pub const DEFAULT_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Positions one store call scans at most, so that a filter matching little of a long log
/// does not make one read run for long.
const SCAN_WINDOW: u64 = 16 * 1024;

/// What to subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionOptions {
    /// The first position to deliver (1: from the beginning; past the head: only what comes).
    pub from: u64,
    /// Only events of streams whose id starts with this (all when empty).
    pub stream_prefix: String,
    /// Only events of these types (all when empty).
    pub event_types: Vec<String>,
    /// Decrypt personal data for the reader; without it events say only whether their
    /// personal data was shredded.
    pub disclose: bool,
    /// Events read per store call and the most held at once (at least 1).
    pub batch: usize,
    /// The most event bytes held at once (after at least one event): a subscriber that does
    /// not read pins no more than this.
    pub max_bytes: usize,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        SubscriptionOptions {
            from: 1,
            stream_prefix: String::new(),
            event_types: Vec::new(),
            disclose: false,
            batch: DEFAULT_BATCH,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// A subscription to `$all`; see the module documentation. Read it with
/// [`next`](Subscription::next) or as a [`Stream`] ([`into_stream`](Subscription::into_stream)).
#[derive(Debug)]
pub struct Subscription {
    store: Arc<dyn EventStore>,
    options: SubscriptionOptions,
    /// The next position to read.
    next: u64,
    buffer: VecDeque<RecordedEvent>,
    head: watch::Receiver<u64>,
}

impl Subscription {
    /// A subscription to `store` from `options.from`. Nothing is read before the first call
    /// to `next`.
    pub fn new(store: Arc<dyn EventStore>, mut options: SubscriptionOptions) -> Self {
        options.batch = options.batch.max(1);
        let head = store.watch_head();
        Subscription {
            next: options.from.max(1),
            store,
            options,
            buffer: VecDeque::new(),
            head,
        }
    }

    /// The next event, waiting for one to be committed when the subscription has caught up.
    /// `None` once the store has closed; an error of a read (the next call tries it again).
    pub async fn next(&mut self) -> Option<Result<RecordedEvent, ReadError>> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Some(Ok(event));
            }
            // Seen before the head is read: a commit after this line wakes `changed`.
            self.head.borrow_and_update();
            let head = self.store.head();
            if head >= self.next {
                if let Err(error) = self.read_up_to(head).await {
                    return Some(Err(error));
                }
                continue;
            }
            if self.head.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Events held and not yet delivered (never more than the batch, nor more bytes than
    /// `max_bytes` after the first).
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next position the subscription will read.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The subscription as a stream of events.
    pub fn into_stream(self) -> impl Stream<Item = Result<RecordedEvent, ReadError>> + Send {
        futures_util::stream::unfold(self, |mut subscription| async move {
            let item = subscription.next().await?;
            Some((item, subscription))
        })
    }

    /// Reads one window of `[next, head]` into the buffer and moves `next` past it.
    async fn read_up_to(&mut self, head: u64) -> Result<(), ReadError> {
        let from = self.next;
        let window_end = head.min(from.saturating_add(SCAN_WINDOW - 1));
        let mut read = AllRead {
            from_position: from,
            direction: Direction::Forward,
            limit: 0,
            event_types: self.options.event_types.clone(),
            until: Some(Until::Position(window_end)),
        };
        let store = self.store.clone();
        let disclose = self.options.disclose;
        let (batch, max_bytes) = (self.options.batch.max(1), self.options.max_bytes);
        let events = tokio::task::spawn_blocking(move || {
            let mut events = read_page(batch, max_bytes, |after, n| {
                if let Some(last) = after {
                    read.from_position = last.position + 1;
                }
                read.limit = n;
                store.read_all(&read)
            })?;
            for event in events.iter_mut().filter(|e| e.sealed.is_some()) {
                store.reveal_owned(event);
                if !disclose {
                    event.personal_data = None;
                }
            }
            Ok::<_, ReadError>(events)
        })
        .await
        .map_err(|error| ReadError::Storage(format!("a subscription read failed: {error}")))??;
        // A page may end inside the window (its count or its bytes): read on after its last
        // event; an empty one read the whole window.
        self.next = events
            .last()
            .map_or(window_end + 1, |last| last.position + 1);
        let prefix = self.options.stream_prefix.as_str();
        self.buffer.extend(
            events
                .into_iter()
                .filter(|event| event.stream_id.starts_with(prefix)),
        );
        Ok(())
    }
}
