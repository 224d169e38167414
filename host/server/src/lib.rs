//! The HTTP API (axum) over a [`Host`], and `eshost run`.
//!
//! [`ROUTES`] is the one table of what the server serves: [`router`] is built from it, and so
//! are the auth rules and the OpenAPI document (`GET /openapi.json`), so the three cannot
//! disagree. [`Server::start`] builds the host a config names and its API; [`serve`] runs it
//! until SIGTERM/SIGINT.
//!
//! Architecture invariant: handlers translate HTTP to calls on the core and back; they hold no
//! domain logic and never reach into store internals.

#![deny(missing_docs)]

mod drain;
mod error;
mod extract;
mod handlers;
mod idle;
mod listen;
pub mod metrics;
mod openapi;
mod routes;
mod wire;

use std::net::SocketAddr;

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use eshost_api::ErrorCode;
use serde_json::Value;
use tokio::sync::watch;

use eshost_core::Host;
pub use eshost_core::access::Caller;
use eshost_core::access::Tokens;
use eshost_core::config::{Config, Role};
use eshost_core::projection::Projections;

pub use error::ApiError;
use metrics::Metrics;
pub use routes::{Access, Answer, Body, Query, ROUTES, Route, Schema, access};

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    host: Host,
    tokens: Tokens,
    metrics: Metrics,
    shutdown: watch::Receiver<bool>,
    drain: Arc<drain::Drain>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("host", &self.inner.host)
            .finish_non_exhaustive()
    }
}

/// The router: every route of [`ROUTES`], auth, body limits, JSON 404s, and the admin UI at
/// `/ui` unless the config turns it off. Call inside a tokio runtime (the UI samples rates).
pub fn router(state: AppState, max_body_bytes: usize, max_plugin_bytes: usize) -> Router {
    let mut by_path: Vec<(&'static str, MethodRouter<AppState>)> = Vec::new();
    for route in ROUTES {
        let mut handler = route.handler();
        if matches!(route.body, Body::Wasm) {
            handler = handler.layer(DefaultBodyLimit::max(max_plugin_bytes));
        }
        match by_path.iter_mut().find(|(path, _)| *path == route.path) {
            Some((_, existing)) => {
                let merged = std::mem::take(existing).merge(handler);
                *existing = merged;
            }
            None => by_path.push((route.path, handler)),
        }
    }
    let mut router = Router::new();
    for (path, handler) in by_path {
        router = router.route(path, handler);
    }
    let inner = &state.inner;
    // The admin UI has its own sign-in (sessions over the same tokens) and its own pages.
    let ui = inner.host.config().ui.then(|| {
        eshost_ui::router(eshost_ui::Ui::new(
            inner.host.clone(),
            inner.tokens.clone(),
            inner.shutdown.clone(),
        ))
    });
    // The drain covers every request, the UI's included.
    let drain_state = state.clone();
    let mut router = router
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .with_state(state);
    if let Some(ui) = ui {
        router = router.merge(ui);
    }
    router
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            drain_state,
            drain::gate,
        ))
}

/// The token of an `Authorization` header: the scheme `Bearer` in any case, then the token.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(char::is_whitespace)?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

async fn authorize(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let needed = access(request.method(), &path).unwrap_or(Access::Role(Role::Admin));
    let tokens = &state.inner.tokens;
    if let Access::Role(role) = needed
        && !tokens.is_empty()
    {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        let Some(caller) = presented.and_then(|token| tokens.get(token)) else {
            return ApiError::new(
                ErrorCode::Unauthorized,
                "a bearer token is required (Authorization: Bearer TOKEN)",
            )
            .into_response();
        };
        if caller.role < role {
            return ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "this route needs the {} role; the token has {}",
                    role.as_str(),
                    caller.role.as_str()
                ),
            )
            .into_response();
        }
        request.extensions_mut().insert(caller.clone());
    }
    next.run(request).await
}

/// The OpenAPI 3.1 document of [`ROUTES`], with the schemas of every request, answer and
/// error ([`eshost_api`]).
pub fn openapi() -> Value {
    openapi::document()
}

/// A host behind the HTTP API: the [`Host`], the tokens of its config, metrics, and the
/// signal that ends subscriptions.
#[derive(Debug)]
pub struct Server {
    state: AppState,
    shutdown: watch::Sender<bool>,
}

impl Server {
    /// Starts the host of `config` (see [`Host::start`]) and prepares its API. Call inside a
    /// tokio runtime.
    pub fn start(config: &Config) -> anyhow::Result<Server> {
        Ok(Server::new(Host::start(config)?))
    }

    /// The API over a host already started.
    pub fn new(host: Host) -> Server {
        let tokens = Tokens::from_config(host.config());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let drain = Arc::new(drain::Drain::default());
        Server {
            state: AppState {
                inner: Arc::new(Inner {
                    metrics: Metrics::new(&host, drain.clone()),
                    host,
                    tokens,
                    shutdown: shutdown_rx,
                    drain,
                }),
            },
            shutdown,
        }
    }

    /// The router over this host.
    pub fn router(&self) -> Router {
        let config = self.state.inner.host.config();
        router(
            self.state.clone(),
            config.max_body_bytes,
            config.max_plugin_bytes,
        )
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.state.inner.host
    }

    /// The shared state of the handlers.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The projections (for tests and tools).
    pub fn projections(&self) -> &Projections {
        self.state.inner.host.projections()
    }

    /// Tells subscriptions to end (before a graceful HTTP shutdown waits for them).
    pub fn end_subscriptions(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Ends subscriptions, stops the projections (each finishes its batch) and the command
    /// workers, and closes the store (the writer finishes what it holds). Blocking.
    pub fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let host = self.state.inner.host.clone();
        drop(self.state);
        host.shutdown();
    }
}

/// Runs the host of `config` on `listen` (default: the config's) until SIGTERM or SIGINT:
/// then it ends subscriptions and drains (requests in flight finish; requests arriving
/// meanwhile get 503 with `Connection: close`), stops accepting and closes idle connections,
/// stops the projections and command workers and closes the store. Prints the bound address on stdout
/// as `listening on http://ADDR`.
pub async fn serve(config: Config, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let listen = listen.unwrap_or(config.listen);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr()?;
    // The node registers the address it really serves on.
    let mut config = config;
    config.listen = bound;
    let host = Server::start(&config)?;
    if config.tokens.is_empty() && !listen.ip().is_loopback() {
        tracing::warn!(
            %listen,
            "no tokens are configured and the host listens beyond loopback: anyone who can \
             reach it can send commands and swap plugins; configure [[tokens]]"
        );
    }
    tracing::info!(address = %bound, config = %config.file.display(), "eshost listening");
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{bound}")?;
        out.flush()?;
    }
    let app = host.router();
    let ending = host.shutdown.clone();
    let state = host.state.clone();
    let signal = async move {
        wait_for_signal().await;
        let drain = &state.inner.drain;
        drain.start();
        tracing::info!(
            in_flight = drain.in_flight(),
            "shutting down: finishing requests in flight"
        );
        let _ = ending.send(true);
        drain.settled().await;
    };
    listen::serve(listener, app, config.http, signal).await;
    tokio::task::spawn_blocking(move || host.shutdown())
        .await
        .context("stopping the host")?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
