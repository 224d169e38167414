//! The drain on SIGTERM: requests in flight finish; a request that arrives meanwhile (on an
//! idle keep-alive connection or a new one) gets a 503 with `Connection: close` instead of a
//! silently closed socket, so a client or load balancer knows to go elsewhere. Only when
//! nothing is in flight does the server stop accepting and close idle connections.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use eshost_api::ErrorCode;
use tokio::sync::Notify;

use crate::{ApiError, AppState};

/// Requests in flight and whether the server drains.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    draining: AtomicBool,
    in_flight: AtomicUsize,
    settled: Notify,
}

impl Drain {
    /// From now on, new requests are answered 503.
    pub(crate) fn start(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.settled.notify_waiters();
    }

    /// Requests being served (not counting those answered 503 by the drain).
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until nothing is in flight. Call after [`start`](Self::start).
    pub(crate) async fn settled(&self) {
        loop {
            // Registered before the check, so a request ending in between still wakes us.
            let notified = self.settled.notified();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Decrements the in-flight count when the request's handler is done.
struct InFlight<'a>(&'a Drain);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}

/// The middleware: counts requests in flight, and answers 503 `Connection: close` while the
/// server drains.
pub(crate) async fn gate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let drain = &state.inner.drain;
    drain.in_flight.fetch_add(1, Ordering::SeqCst);
    let guard = InFlight(drain);
    if drain.draining.load(Ordering::SeqCst) {
        drop(guard);
        let mut response =
            ApiError::new(ErrorCode::Unavailable, "the host is shutting down").into_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    let response = next.run(request).await;
    drop(guard);
    response
}
