//! The HTTP API (axum) and `eshost run`.
//!
//! [`ROUTES`] is the one table of what the server serves: [`router`] is built from it, and so
//! are the auth rules and the OpenAPI document (`GET /openapi.json`), so the three cannot
//! disagree. [`Host::start`] builds everything a config names; [`serve`] runs it until
//! SIGTERM/SIGINT.

mod error;
mod handlers;
pub mod metrics;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::aggregate::{AggregateConfig, Aggregates, EngineConfig};
use crate::config::{Config, Role};
use crate::privacy::Forgetting;
use crate::projection::{PluginWatcher, ProjectionConfig, Projections, WatchedPlugin};
use crate::runtime::{LoadedPlugin, PluginKind, Runtime, RuntimeConfig};
use crate::store::{EventStore, Store, StoreConfig};
use crate::upcast::UpcasterChain;
use crate::views::Views;

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
    store: Arc<dyn EventStore>,
    store_dir: PathBuf,
    runtime: Runtime,
    aggregates: Aggregates,
    upcasters: UpcasterChain,
    projections: Projections,
    forgetting: Forgetting,
    tokens: HashMap<String, Caller>,
    metrics: Metrics,
    shutdown: watch::Receiver<bool>,
    started: Instant,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.inner.store_dir)
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

/// A running host: the store, the plugins, the pipeline and projections of one config.
pub struct Host {
    state: AppState,
    config: Config,
    shutdown: watch::Sender<bool>,
    _watchers: Vec<PluginWatcher>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("config", &self.config.file)
            .finish_non_exhaustive()
    }
}

fn load_kind(
    runtime: &Runtime,
    config: &Config,
    key: &str,
    name: &str,
    path: &std::path::Path,
    expected: PluginKind,
) -> anyhow::Result<LoadedPlugin> {
    let at = || format!("config file {}: `{key}`", config.file.display());
    let plugin = runtime
        .load_any(path)
        .with_context(|| format!("{}: loading {}", at(), path.display()))?;
    let info = plugin.info();
    if info.kind != expected {
        bail!(
            "{}: {} is {} plugin ({:?}), not {}",
            at(),
            path.display(),
            info.kind.with_article(),
            info.name,
            expected.with_article()
        );
    }
    if info.name != name {
        bail!(
            "{}: {} describes itself as {:?}, but the config names it {name:?}",
            at(),
            path.display(),
            info.name
        );
    }
    Ok(plugin)
}

/// How long a forget request waits for projections to rebuild before answering.
const FORGET_WAIT: Duration = Duration::from_secs(600);

/// Finish, in the background, erasures a crash or an offline `eshost forget` left pending.
fn resume_erasures(forgetting: &Forgetting) {
    match forgetting.pending() {
        Ok(pending) if pending.is_empty() => {}
        Ok(_) => {
            let forgetting = forgetting.clone();
            let spawned = std::thread::Builder::new()
                .name("eshost-erasures".into())
                .spawn(move || {
                    for outcome in forgetting.resume() {
                        match outcome {
                            Ok(report) => tracing::info!(
                                subject = %report.subject_id,
                                projections = ?report.projections_rebuilt,
                                "erasure finished"
                            ),
                            Err(error) => tracing::error!(%error, "erasure not finished"),
                        }
                    }
                });
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start finishing pending erasures");
            }
        }
        Err(error) => tracing::error!(%error, "cannot read pending erasures"),
    }
}

impl Host {
    /// Opens the store and loads every plugin the config names. Call inside a tokio runtime.
    pub fn start(config: &Config) -> anyhow::Result<Host> {
        let mut store_config = StoreConfig::new(&config.store);
        store_config.keys = config.keys.clone();
        let store: Arc<dyn EventStore> = Arc::new(
            Store::open(store_config)
                .with_context(|| format!("opening store {}", config.store.display()))?,
        );
        let views = Views::open(&config.store)?;
        let runtime = Runtime::new(RuntimeConfig {
            limits: config.limits.clone(),
            ..RuntimeConfig::default()
        })?;
        let mut upcasters = Vec::new();
        for (index, entry) in config.upcasters.iter().enumerate() {
            let key = format!("upcasters[{index}].plugin");
            match load_kind(
                &runtime,
                config,
                &key,
                &entry.name,
                &entry.plugin,
                PluginKind::Upcaster,
            )? {
                LoadedPlugin::Upcaster(plugin) => upcasters.push(plugin),
                _ => unreachable!("load_kind checks the kind"),
            }
        }
        let upcasters = UpcasterChain::new(upcasters)
            .with_context(|| format!("config file {}: `upcasters`", config.file.display()))?;
        let aggregates = Aggregates::new(
            store.clone(),
            views.clone(),
            upcasters.clone(),
            EngineConfig::default(),
        )?;
        for (index, entry) in config.aggregates.iter().enumerate() {
            let key = format!("aggregates[{index}].plugin");
            let LoadedPlugin::Aggregate(plugin) = load_kind(
                &runtime,
                config,
                &key,
                &entry.name,
                &entry.plugin,
                PluginKind::Aggregate,
            )?
            else {
                unreachable!("load_kind checks the kind")
            };
            aggregates.register(
                plugin,
                AggregateConfig {
                    snapshot_every: entry.snapshot_every,
                },
            )?;
        }
        let projections = Projections::with_upcasters(
            store.clone(),
            views.clone(),
            runtime.clone(),
            upcasters.clone(),
        );
        for (index, entry) in config.projections.iter().enumerate() {
            let key = format!("projections[{index}].plugin");
            load_kind(
                &runtime,
                config,
                &key,
                &entry.name,
                &entry.plugin,
                PluginKind::Projection,
            )?;
            let mut projection = ProjectionConfig::new(&entry.name, &entry.plugin);
            projection.batch = entry.batch;
            projection.attempts = entry.attempts;
            projection.dead_letter = entry.on_failure == crate::config::FailurePolicy::DeadLetter;
            projections
                .add(projection)
                .with_context(|| format!("config file {}: `{key}`", config.file.display()))?;
        }
        let mut watchers = Vec::new();
        if config.watch_plugins {
            watchers.push(projections.watch_files()?);
            watchers.push(watch_aggregates(config, &runtime, &aggregates)?);
        }
        let tokens = config
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
        let forgetting = Forgetting::new(
            store.clone(),
            views.clone(),
            Some(aggregates.clone()),
            Some(projections.clone()),
            FORGET_WAIT,
        );
        resume_erasures(&forgetting);
        let (shutdown, shutdown_rx) = watch::channel(false);
        Ok(Host {
            state: AppState {
                inner: Arc::new(Inner {
                    store,
                    store_dir: config.store.clone(),
                    runtime,
                    aggregates,
                    upcasters,
                    projections,
                    forgetting,
                    tokens,
                    metrics: Metrics::default(),
                    shutdown: shutdown_rx,
                    started: Instant::now(),
                }),
            },
            config: config.clone(),
            shutdown,
            _watchers: watchers,
        })
    }

    /// The router over this host.
    pub fn router(&self) -> Router {
        router(
            self.state.clone(),
            self.config.max_body_bytes,
            self.config.max_plugin_bytes,
        )
    }

    /// The shared state (for tests).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The projections (for tests and tools).
    pub fn projections(&self) -> &Projections {
        &self.state.inner.projections
    }

    /// Ends subscriptions, stops the projections (each finishes its batch) and the command
    /// workers, and closes the store (the writer finishes what it holds). Blocking.
    pub fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.state.inner.projections.shutdown();
        drop(self._watchers);
        drop(self.state);
    }

    /// Tells subscriptions to end (before a graceful HTTP shutdown waits for them).
    pub fn end_subscriptions(&self) {
        let _ = self.shutdown.send(true);
    }
}

fn watch_aggregates(
    config: &Config,
    runtime: &Runtime,
    aggregates: &Aggregates,
) -> anyhow::Result<PluginWatcher> {
    let plugins = config
        .aggregates
        .iter()
        .map(|entry| WatchedPlugin {
            kind: PluginKind::Aggregate,
            name: entry.name.clone(),
            path: entry.plugin.clone(),
        })
        .collect();
    let (runtime, aggregates) = (runtime.clone(), aggregates.clone());
    Ok(PluginWatcher::new(plugins, move |plugin| {
        match runtime.load_aggregate(&plugin.path) {
            Ok(loaded) if loaded.info().name == plugin.name => {
                match aggregates.swap(loaded, None) {
                    Ok(old) => {
                        tracing::info!(aggregate = %plugin.name, old = %old.content_hash, "plugin file changed: swapped")
                    }
                    Err(error) => tracing::warn!(aggregate = %plugin.name, "swap failed: {error}"),
                }
            }
            Ok(loaded) => tracing::warn!(
                aggregate = %plugin.name,
                "plugin file changed but describes itself as {:?}; refused",
                loaded.info().name
            ),
            Err(error) => {
                tracing::warn!(aggregate = %plugin.name, "plugin file changed but was refused: {error}")
            }
        }
    })?)
}

/// Runs the host of `config` on `listen` (default: the config's) until SIGTERM or SIGINT:
/// then it stops accepting, finishes requests in flight, ends subscriptions, stops the
/// projections and command workers and closes the store. Prints the bound address on stdout
/// as `listening on http://ADDR`.
pub async fn serve(config: Config, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let listen = listen.unwrap_or(config.listen);
    let host = Host::start(&config)?;
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
