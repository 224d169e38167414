//! The HTTP API (axum) over a [`Host`], and `eshost run`.
//!
//! [`ROUTES`] is the one table of what the server serves: [`router`] is built from it, and so
//! are the auth rules and the OpenAPI document (`GET /openapi.json`), so the three cannot
//! disagree. [`Server::start`] builds the host a config names and its API; [`serve`] runs it
//! until SIGTERM/SIGINT.
//!
//! Architecture invariant: handlers translate HTTP to calls on the core and back; they hold no
//! domain logic and never reach into store internals.

mod error;
mod handlers;
pub mod metrics;

use std::collections::HashMap;
use std::net::SocketAddr;

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use serde_json::{Value, json};
use tokio::sync::watch;

use eshost_core::Host;
use eshost_core::config::{Config, Role};
use eshost_core::projection::Projections;

pub use error::ApiError;
use metrics::Metrics;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, even when tokens are configured (`/health`).
    Public,
    /// A token of at least this role.
    Role(Role),
}

/// One route of the API.
#[derive(Debug, Clone)]
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path template, axum style (`/streams/{id}`).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// One line for the OpenAPI document.
    pub summary: &'static str,
    handler: fn() -> MethodRouter<AppState>,
}

const fn route(
    method: Method,
    path: &'static str,
    access: Access,
    summary: &'static str,
    handler: fn() -> MethodRouter<AppState>,
) -> Route {
    Route {
        method,
        path,
        access,
        summary,
        handler,
    }
}

const READ: Access = Access::Role(Role::Read);
const WRITE: Access = Access::Role(Role::Write);
const ADMIN: Access = Access::Role(Role::Admin);

/// Every route the server serves.
pub const ROUTES: &[Route] = &[
    route(
        Method::POST,
        "/aggregates/{type}/{id}",
        WRITE,
        "Send a command (JSON body) to an aggregate; 422 when a business rule refuses it",
        || post(handlers::command),
    ),
    route(
        Method::GET,
        "/aggregates/{type}/{id}",
        READ,
        "An aggregate's state, latest or as of ?version= or ?at= (ms since the epoch)",
        || get(handlers::state),
    ),
    route(
        Method::GET,
        "/aggregates/{type}/{id}/history",
        READ,
        "An aggregate's audit trail: each event with the state after it",
        || get(handlers::history),
    ),
    route(
        Method::POST,
        "/streams/{id}",
        WRITE,
        "Append events to a stream: {expected, events:[{type, data, metadata, id, schema_version}]}",
        || post(handlers::append),
    ),
    route(
        Method::GET,
        "/streams/{id}",
        READ,
        "Read a stream (?from=, ?backward=, ?limit=, ?until_position=, ?until_time=)",
        || get(handlers::read_stream),
    ),
    route(
        Method::GET,
        "/all",
        READ,
        "Read $all from a position (?from=, ?limit=, ?types=A,B)",
        || get(handlers::read_all),
    ),
    route(
        Method::POST,
        "/subjects/{id}/forget",
        ADMIN,
        "Forget a data subject: erase its key, record the erasure in $erasures, purge derived state; body {reason} optional",
        || post(handlers::forget),
    ),
    route(
        Method::GET,
        "/subscribe",
        READ,
        "Server-sent events from ?from= (or Last-Event-ID), filtered by ?stream_prefix= and ?types=",
        || get(handlers::subscribe),
    ),
    route(
        Method::GET,
        "/projections",
        READ,
        "Every projection's status",
        || get(handlers::projections),
    ),
    route(
        Method::GET,
        "/projections/{name}",
        READ,
        "One projection's status",
        || get(handlers::projection),
    ),
    route(
        Method::GET,
        "/projections/{name}/query/{query}",
        READ,
        "Ask a projection (?args=JSON, or each parameter as an argument)",
        || get(handlers::projection_query),
    ),
    route(
        Method::POST,
        "/projections/{name}/pause",
        ADMIN,
        "Pause a projection",
        || post(handlers::projection_pause),
    ),
    route(
        Method::POST,
        "/projections/{name}/resume",
        ADMIN,
        "Resume a projection (a failed event is tried again)",
        || post(handlers::projection_resume),
    ),
    route(
        Method::POST,
        "/projections/{name}/rebuild",
        ADMIN,
        "Rebuild a projection from position 0 beside the active one",
        || post(handlers::projection_rebuild),
    ),
    route(Method::GET, "/plugins", READ, "The loaded plugins", || {
        get(handlers::plugins)
    }),
    route(
        Method::PUT,
        "/plugins/{name}",
        ADMIN,
        "Hot-swap an aggregate or projection plugin: the body is the component (application/wasm)",
        || put(handlers::swap_plugin),
    ),
    route(Method::GET, "/health", Access::Public, "Liveness", || {
        get(handlers::health)
    }),
    route(Method::GET, "/metrics", READ, "Prometheus metrics", || {
        get(handlers::metrics)
    }),
    route(
        Method::GET,
        "/openapi.json",
        READ,
        "This API as OpenAPI 3.1",
        || get(handlers::openapi),
    ),
];

/// A configured token's holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who (the token's name, else its role).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Whether it may see decrypted personal data.
    pub personal_data: bool,
}

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    host: Host,
    tokens: HashMap<String, Caller>,
    metrics: Metrics,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("host", &self.inner.host)
            .finish_non_exhaustive()
    }
}

/// The router: every route of [`ROUTES`], auth, body limits, JSON 404s.
pub fn router(state: AppState, max_body_bytes: usize, max_plugin_bytes: usize) -> Router {
    let mut by_path: Vec<(&'static str, MethodRouter<AppState>)> = Vec::new();
    for route in ROUTES {
        let mut handler = (route.handler)();
        if route.path == "/plugins/{name}" {
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
    router
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// The role a route needs, from the table.
pub fn access(method: &Method, path: &str) -> Option<Access> {
    ROUTES
        .iter()
        .find(|route| route.method == method && route.path == path)
        .map(|route| route.access)
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
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(caller) = presented.and_then(|token| tokens.get(token)) else {
            return ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a bearer token is required (Authorization: Bearer TOKEN)",
            )
            .into_response();
        };
        if caller.role < role {
            return ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "forbidden",
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

/// The OpenAPI 3.1 document of [`ROUTES`].
pub fn openapi() -> Value {
    let mut paths = serde_json::Map::new();
    for route in ROUTES {
        let parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut operation = json!({
            "summary": route.summary,
            "parameters": parameters,
            "responses": {
                "200": {"description": "success"},
                "default": {
                    "description": "an error",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                }
            }
        });
        match route.access {
            Access::Public => operation["security"] = json!([]),
            Access::Role(role) => {
                operation["security"] = json!([{"bearer": []}]);
                operation["x-eshost-role"] = role.as_str().into();
            }
        }
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method.as_str().to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "eshost", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {
                "type": "object",
                "required": ["error", "message"],
                "properties": {
                    "error": {"type": "string"},
                    "message": {"type": "string"},
                    "actual_version": {"type": "integer"}
                }
            }}
        }
    })
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
        let tokens = host
            .config()
            .tokens
            .iter()
            .map(|t| {
                let caller = Caller {
                    name: t.name.clone().unwrap_or_else(|| t.role.as_str().to_owned()),
                    role: t.role,
                    personal_data: t.personal_data,
                };
                (t.token.clone(), caller)
            })
            .collect();
        let (shutdown, shutdown_rx) = watch::channel(false);
        Server {
            state: AppState {
                inner: Arc::new(Inner {
                    host,
                    tokens,
                    metrics: Metrics::default(),
                    shutdown: shutdown_rx,
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
/// then it stops accepting, finishes requests in flight, ends subscriptions, stops the
/// projections and command workers and closes the store. Prints the bound address on stdout
/// as `listening on http://ADDR`.
pub async fn serve(config: Config, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let listen = listen.unwrap_or(config.listen);
    let host = Server::start(&config)?;
    if config.tokens.is_empty() && !listen.ip().is_loopback() {
        tracing::warn!(
            %listen,
            "no tokens are configured and the host listens beyond loopback: anyone who can \
             reach it can send commands and swap plugins; configure [[tokens]]"
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, config = %config.file.display(), "eshost listening");
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{bound}")?;
        out.flush()?;
    }
    let app = host.router();
    let ending = host.shutdown.clone();
    let signal = async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing requests in flight");
        let _ = ending.send(true);
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .await
        .context("serving HTTP")?;
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
