//! `GET /subscribe`: `$all` as server-sent events, caught up and then live (the core's
//! [`Subscription`]), ended by a shutdown.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use eshost_api as api;
use eshost_core::subscription::{DEFAULT_BATCH, Subscription, SubscriptionOptions};
use futures_util::Stream;

use super::discloses;
use crate::extract::Params;
use crate::{ApiError, AppState, Caller};

/// The first position to send: after `Last-Event-ID` when the client resumes, else `?from=`.
fn first_position(headers: &HeaderMap, from: Option<u64>) -> Result<u64, ApiError> {
    let Some(value) = headers.get(api::LAST_EVENT_ID) else {
        return Ok(from.unwrap_or(1).max(1));
    };
    let last = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be a position"))?;
    // No event has the largest position, so nothing can follow it: refuse rather than wrap
    // to 0 and replay the whole log.
    last.checked_add(1).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Last-Event-ID {last} is not a position an event can have"
        ))
    })
}

pub(crate) async fn subscribe(
    State(state): State<AppState>,
    Params(params): Params<api::SubscribeQuery>,
    headers: HeaderMap,
    caller: Option<Extension<Caller>>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let inner = &state.inner;
    let options = SubscriptionOptions {
        from: first_position(&headers, params.from)?,
        stream_prefix: params.stream_prefix.unwrap_or_default(),
        event_types: api::split_types(params.types.as_deref()),
        disclose: discloses(&caller),
        batch: DEFAULT_BATCH,
        // A subscriber that does not read pins no more than one page of events.
        max_bytes: inner.host.config().max_response_bytes,
    };
    let subscription = Subscription::new(inner.host.store().clone(), options);
    let shutdown = inner.shutdown.clone();
    let stream = futures_util::stream::unfold(
        (subscription, shutdown),
        |(mut subscription, mut shutdown)| async move {
            if *shutdown.borrow() {
                return None;
            }
            let item = tokio::select! {
                item = subscription.next() => item?,
                _ = shutdown.wait_for(|ending| *ending) => return None,
            };
            let event = match item {
                Ok(event) => event,
                Err(error) => {
                    tracing::warn!(%error, "a subscription ended on a read error");
                    return None;
                }
            };
            let sse = SseEvent::default()
                .id(event.position.to_string())
                .event(event.event_type.clone())
                .json_data(api::Event::from(&event))
                .ok()?;
            Some((Ok(sse), (subscription, shutdown)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
