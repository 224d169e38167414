//! Serving connections within `[http]` limits: at most `max_connections` at once (the others
//! wait in the kernel's accept queue, instead of the process running out of file
//! descriptors and failing every accept); request headers within `header_timeout` once they
//! start (hyper's timer); a connection with no request in progress (silent since it opened,
//! or idle between keep-alive requests) closed after `header_timeout` too (hyper has no such
//! timer: `idle`); bodies within `body_timeout`; on shutdown, connections finish what they
//! serve and close.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use eshost_core::config::HttpLimits;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::idle::{Activity, GuardedBody, IdleTimeout, RequestGuard};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Serves `app` on `listener` within `limits` until `shutdown` completes; then stops
/// accepting and waits for open connections to finish (idle ones close at once).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout());
    let app = app.layer(axum::middleware::from_fn_with_state(
        limits.body_timeout(),
        body_deadline,
    ));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors or a connection reset before accept: wait, retry.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let (starts, ends) = (activity.clone(), activity.clone());
        let service = TowerToHyperService::new(
            app.clone()
                .map_request(move |request: Request<Incoming>| {
                    starts.request_started();
                    request.map(Body::new)
                })
                .map_response(move |response: Response| {
                    let guard = RequestGuard(ends.clone());
                    response.map(|body| {
                        Body::new(GuardedBody {
                            inner: body,
                            _guard: guard,
                        })
                    })
                }),
        );
        let stream = IdleTimeout::new(stream, activity, limits.header_timeout());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%error, "a connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Gives the request's body until `timeout` from now to arrive whole.
async fn body_deadline(
    axum::extract::State(timeout): axum::extract::State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let request = request.map(|body| {
        Body::new(DeadlineBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        })
    });
    next.run(request).await
}

/// A request body that fails once its deadline passes before its end.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            let message = format!(
                "the request body did not arrive within {} ms",
                self.timeout.as_millis()
            );
            return Poll::Ready(Some(Err(axum::Error::new(message))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
