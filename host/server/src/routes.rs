//! The route table: method, path, role, summary, the wire types of the request and the
//! answer, and the handler. The router, the auth rules and the OpenAPI document are all
//! built from it.

use std::borrow::Cow;

use axum::http::Method;
use axum::routing::{MethodRouter, get, post, put};
use eshost_api as api;
use eshost_core::config::Role;
use utoipa::openapi::RefOr;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::handlers::{
    commands, forgetting, operations, plugins, projections, reactors, streams, subscriptions,
};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, even when tokens are configured (`/health`).
    Public,
    /// A token of at least this role.
    Role(Role),
}

/// A type of the wire contract, for the OpenAPI document: its name and the schemas of it
/// and of every type it refers to.
#[derive(Clone, Copy)]
pub struct Schema {
    name: fn() -> Cow<'static, str>,
    collect: fn(&mut Vec<(String, RefOr<utoipa::openapi::schema::Schema>)>),
}

impl Schema {
    /// The schema's name under `#/components/schemas/`.
    pub fn name(&self) -> String {
        (self.name)().into_owned()
    }

    /// Adds the schema and those it refers to.
    pub fn collect(&self, schemas: &mut Vec<(String, RefOr<utoipa::openapi::schema::Schema>)>) {
        (self.collect)(schemas)
    }
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// The schema of `T`.
pub const fn schema<T: ToSchema>() -> Schema {
    Schema {
        name: T::name,
        collect: collect::<T>,
    }
}

fn collect<T: ToSchema>(schemas: &mut Vec<(String, RefOr<utoipa::openapi::schema::Schema>)>) {
    schemas.push((T::name().into_owned(), T::schema()));
    T::schemas(schemas);
}

/// The query parameters of a route, from a type of the wire contract.
#[derive(Clone, Copy)]
pub struct Query(fn() -> Vec<Parameter>);

impl Query {
    /// The parameters.
    pub fn parameters(&self) -> Vec<Parameter> {
        (self.0)()
    }
}

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Query")
    }
}

const fn query<T: IntoParams>() -> Query {
    Query(query_parameters::<T>)
}

fn query_parameters<T: IntoParams>() -> Vec<Parameter> {
    T::into_params(|| Some(ParameterIn::Query))
}

/// What a route takes as its body.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// Nothing.
    None,
    /// JSON of this type.
    Json(Schema),
    /// JSON of this type, or nothing.
    OptionalJson(Schema),
    /// A WebAssembly component (`application/wasm`).
    Wasm,
}

/// What a route answers on success.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// JSON of this type.
    Json(Schema),
    /// Server-sent events, each carrying JSON of this type.
    EventStream(Schema),
    /// Prometheus text.
    Text,
    /// The OpenAPI document.
    Document,
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
    /// Its query parameters, if it takes any.
    pub query: Option<Query>,
    /// Headers it reads: name and meaning.
    pub headers: &'static [(&'static str, &'static str)],
    /// Its body.
    pub body: Body,
    /// The success statuses and what they carry.
    pub statuses: &'static [u16],
    /// The success answer.
    pub answer: Answer,
    handler: fn() -> MethodRouter<AppState>,
}

impl Route {
    /// The handler, as a method router.
    pub(crate) fn handler(&self) -> MethodRouter<AppState> {
        (self.handler)()
    }

    const fn new(
        method: Method,
        path: &'static str,
        access: Access,
        summary: &'static str,
        answer: Answer,
        handler: fn() -> MethodRouter<AppState>,
    ) -> Route {
        Route {
            method,
            path,
            access,
            summary,
            query: None,
            headers: &[],
            body: Body::None,
            statuses: &[200],
            answer,
            handler,
        }
    }

    const fn query(mut self, query: Query) -> Route {
        self.query = Some(query);
        self
    }

    const fn headers(mut self, headers: &'static [(&'static str, &'static str)]) -> Route {
        self.headers = headers;
        self
    }

    const fn body(mut self, body: Body) -> Route {
        self.body = body;
        self
    }

    const fn statuses(mut self, statuses: &'static [u16]) -> Route {
        self.statuses = statuses;
        self
    }
}

const READ: Access = Access::Role(Role::Read);
const WRITE: Access = Access::Role(Role::Write);
const ADMIN: Access = Access::Role(Role::Admin);

const fn json<T: ToSchema>() -> Answer {
    Answer::Json(schema::<T>())
}

/// Every route the server serves.
pub const ROUTES: &[Route] = &[
    Route::new(
        Method::POST,
        "/aggregates/{type}/{id}",
        WRITE,
        "Send a command (JSON body) to an aggregate; 422 when a business rule refuses it",
        json::<api::CommandAccepted>(),
        || post(commands::command),
    )
    .query(query::<api::CommandQuery>())
    .headers(&[
        (
            "Idempotency-Key",
            "a repeated key gets the first answer back and writes nothing",
        ),
        ("Correlation-Id", "ties together what one request caused"),
        ("Causation-Id", "what caused the command"),
    ])
    .body(Body::Json(schema::<api::Command>())),
    Route::new(
        Method::GET,
        "/aggregates/{type}/{id}",
        READ,
        "An aggregate's state, latest or as of ?version= or ?at= (ms since the epoch or RFC 3339)",
        json::<api::AggregateState>(),
        || get(commands::state),
    )
    .query(query::<api::StateQuery>()),
    Route::new(
        Method::GET,
        "/aggregates/{type}/{id}/history",
        READ,
        "An aggregate's audit trail: each event with the state after it",
        json::<api::History>(),
        || get(commands::history),
    )
    .query(query::<api::HistoryQuery>()),
    Route::new(
        Method::POST,
        "/aggregates/{type}/{id}/snapshot",
        ADMIN,
        "Snapshot an aggregate's latest state now, whatever its snapshot interval",
        json::<api::SnapshotTaken>(),
        || post(commands::snapshot),
    )
    .statuses(&[201]),
    Route::new(
        Method::POST,
        "/streams/{id}",
        WRITE,
        "Append events to a stream: {expected, events:[{type, data, metadata, id, schema_version}]}",
        json::<api::Appended>(),
        || post(streams::append),
    )
    .body(Body::Json(schema::<api::AppendRequest>()))
    .statuses(&[201]),
    Route::new(
        Method::GET,
        "/streams/{id}",
        READ,
        "Read a stream (?from=, ?backward=, ?limit=, ?until_position=, ?until_time=)",
        json::<api::StreamEvents>(),
        || get(streams::read_stream),
    )
    .query(query::<api::ReadStreamQuery>()),
    Route::new(
        Method::GET,
        "/all",
        READ,
        "Read $all from a position (?from=, ?limit=, ?types=A,B)",
        json::<api::AllEvents>(),
        || get(streams::read_all),
    )
    .query(query::<api::AllQuery>()),
    Route::new(
        Method::POST,
        "/subjects/{id}/forget",
        ADMIN,
        "Forget a data subject: erase its key, record the erasure in $erasures, purge derived state; body {reason} optional",
        json::<api::ForgetReport>(),
        || post(forgetting::forget),
    )
    .body(Body::OptionalJson(schema::<api::ForgetRequest>())),
    Route::new(
        Method::GET,
        "/subscribe",
        READ,
        "Server-sent events from ?from= (or Last-Event-ID), filtered by ?stream_prefix= and ?types=",
        Answer::EventStream(schema::<api::Event>()),
        || get(subscriptions::subscribe),
    )
    .query(query::<api::SubscribeQuery>())
    .headers(&[(
        "Last-Event-ID",
        "resume after this position (the id of the last event received)",
    )]),
    Route::new(
        Method::GET,
        "/reactors",
        READ,
        "Every reactor's status",
        json::<api::ReactorList>(),
        || get(reactors::reactors),
    ),
    Route::new(
        Method::GET,
        "/reactors/{name}",
        READ,
        "One reactor's status",
        json::<api::ReactorStatus>(),
        || get(reactors::reactor),
    ),
    Route::new(
        Method::GET,
        "/reactors/{name}/query/{query}",
        READ,
        "Ask a reactor about its read model (?args=JSON, or each parameter as a string argument)",
        json::<api::QueryAnswer>(),
        || get(reactors::reactor_query),
    )
    .query(query::<api::QueryArgs>()),
    Route::new(
        Method::POST,
        "/reactors/{name}/pause",
        ADMIN,
        "Pause a reactor after its batch in hand",
        json::<api::ReactorStatus>(),
        || post(reactors::reactor_pause),
    ),
    Route::new(
        Method::POST,
        "/reactors/{name}/resume",
        ADMIN,
        "Resume a reactor (one stopped at a failing event tries it again)",
        json::<api::ReactorStatus>(),
        || post(reactors::reactor_resume),
    ),
    Route::new(
        Method::PUT,
        "/reactors/{name}",
        ADMIN,
        "Hot-swap a reactor: the body is the component (application/wasm); ?from=checkpoint (default), head, beginning or a position; recorded in $plugins, so every node runs it and a restart keeps it",
        json::<api::ReactorStatus>(),
        || put(reactors::swap_reactor),
    )
    .body(Body::Wasm)
    .query(query::<api::ReactorSwapQuery>()),
    Route::new(
        Method::GET,
        "/projections",
        READ,
        "Every projection's status",
        json::<api::ProjectionList>(),
        || get(projections::projections),
    ),
    Route::new(
        Method::GET,
        "/projections/{name}",
        READ,
        "One projection's status",
        json::<api::ProjectionStatus>(),
        || get(projections::projection),
    ),
    Route::new(
        Method::GET,
        "/projections/{name}/query/{query}",
        READ,
        "Ask a projection (?args=JSON, or each parameter as a string argument)",
        json::<api::QueryAnswer>(),
        || get(projections::projection_query),
    )
    .query(query::<api::QueryArgs>()),
    Route::new(
        Method::POST,
        "/projections/{name}/pause",
        ADMIN,
        "Pause a projection",
        json::<api::ProjectionPaused>(),
        || post(projections::projection_pause),
    )
    .statuses(&[202]),
    Route::new(
        Method::POST,
        "/projections/{name}/resume",
        ADMIN,
        "Resume a projection (a failed event is tried again)",
        json::<api::ProjectionResumed>(),
        || post(projections::projection_resume),
    )
    .statuses(&[202]),
    Route::new(
        Method::POST,
        "/projections/{name}/skip",
        ADMIN,
        "Leave out the event a stopped projection failed on: parked as a dead letter, recorded in $projections with who and why; 409 unless stopped there",
        json::<api::ProjectionSkipped>(),
        || post(projections::projection_skip),
    )
    .body(Body::Json(schema::<api::SkipRequest>())),
    Route::new(
        Method::POST,
        "/projections/{name}/rebuild",
        ADMIN,
        "Rebuild a projection from position 0 beside the active one",
        json::<api::ProjectionRebuilding>(),
        || post(projections::projection_rebuild),
    )
    .statuses(&[202]),
    Route::new(
        Method::GET,
        "/plugins",
        READ,
        "The loaded plugins",
        json::<api::PluginList>(),
        || get(plugins::plugins),
    ),
    Route::new(
        Method::PUT,
        "/plugins/{name}",
        ADMIN,
        "Hot-swap an aggregate or upcaster (200) or projection (202, it rebuilds) plugin: the body is the component (application/wasm); ?require_check=true refuses it (422 check_failed, with the report) unless its check against history is clean",
        json::<api::PluginSwapped>(),
        || put(plugins::swap_plugin),
    )
    .body(Body::Wasm)
    .query(query::<api::SwapQuery>())
    .statuses(&[200, 202]),
    Route::new(
        Method::POST,
        "/plugins/{name}/check",
        ADMIN,
        "Check a candidate version against the stored history (the body is the component): an upcaster over every event of the types it upcasts, an aggregate over every stream of its type, a projection replayed and compared; nothing live changes",
        json::<api::CheckReport>(),
        || post(plugins::check_plugin),
    )
    .body(Body::Wasm),
    Route::new(
        Method::GET,
        "/plugins/{name}/history",
        READ,
        "Every activation of a plugin's versions, as recorded in $plugins, oldest first",
        json::<api::PluginHistory>(),
        || get(plugins::plugin_history),
    ),
    Route::new(
        Method::POST,
        "/plugins/{name}/rollback",
        ADMIN,
        "Activate again a version from the plugin's history: {content_hash, reason}",
        json::<api::PluginSwapped>(),
        || post(plugins::rollback_plugin),
    )
    .body(Body::Json(schema::<api::RollbackRequest>()))
    .statuses(&[200, 202]),
    Route::new(
        Method::GET,
        "/health",
        Access::Public,
        "Liveness: 200 ok, or 503 degraded while the event store is read-only",
        json::<api::Health>(),
        || get(operations::health),
    )
    .statuses(&[200, 503]),
    Route::new(
        Method::GET,
        "/nodes",
        READ,
        "The nodes sharing the store: address, liveness (a report within 5 s), erasures purged",
        json::<api::NodeList>(),
        || get(operations::nodes),
    ),
    Route::new(
        Method::GET,
        "/metrics",
        READ,
        "Prometheus metrics",
        Answer::Text,
        || get(operations::metrics),
    ),
    Route::new(
        Method::GET,
        "/openapi.json",
        READ,
        "This API as OpenAPI 3.1",
        Answer::Document,
        || get(operations::openapi),
    ),
];

/// The role a route needs, from the table. `HEAD` is a `GET` without the body, so it needs
/// what the `GET` needs.
pub fn access(method: &Method, path: &str) -> Option<Access> {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    ROUTES
        .iter()
        .find(|route| route.method == method && route.path == path)
        .map(|route| route.access)
}
