//! The admin web UI of eshost, served by `eshost run` at `/ui` (the config's `ui = false`
//! turns it off).
//!
//! Server-rendered HTML (maud) over the same core calls the JSON API makes: the store,
//! aggregates, projections, forgetting, the catch-up-then-live subscription. Every action is a
//! link or a form that works without script; a vendored htmx and a small script make the
//! live parts live (server-sent events over the session cookie, so the browser's
//! `EventSource` needs no `Authorization` header). Sign-in, sessions, CSRF and roles are in
//! [`session`]; the pages are one module per concept.
//!
//! Architecture invariant: like the API's handlers, pages hold no domain logic; they call the
//! core and render what it answers.

mod assets;
mod compare;
mod events;
mod integrity;
mod live;
mod markup;
mod plugins;
mod projections;
mod reactors;
mod samples;
mod scan;
mod session;
mod time;
mod timeline;
mod upload;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use eshost_core::Host;
use eshost_core::access::Tokens;
use tokio::sync::watch;

use markup::UiError;
use session::Sessions;

/// Where the UI is mounted.
pub const BASE: &str = "/ui";

/// The UI's shared state: the host, the tokens, the sessions, samples for rates and trends,
/// and comparison jobs. Cheap to clone.
#[derive(Clone)]
pub struct Ui {
    inner: Arc<Inner>,
}

struct Inner {
    host: Host,
    tokens: Tokens,
    sessions: Sessions,
    shutdown: watch::Receiver<bool>,
    samples: samples::Samples,
    jobs: compare::Jobs,
}

impl std::fmt::Debug for Ui {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ui")
            .field("host", &self.inner.host)
            .finish_non_exhaustive()
    }
}

impl Ui {
    /// The UI over `host`, checking callers against `tokens` (the API's). Live pages end when
    /// `shutdown` turns true. Call inside a tokio runtime: it starts the sampler of rates and
    /// trends, which ends with `shutdown` too.
    pub fn new(host: Host, tokens: Tokens, shutdown: watch::Receiver<bool>) -> Ui {
        let ui = Ui {
            inner: Arc::new(Inner {
                host,
                tokens,
                sessions: Sessions::default(),
                shutdown,
                samples: samples::Samples::default(),
                jobs: compare::Jobs::default(),
            }),
        };
        samples::start(&ui);
        ui
    }

    fn host(&self) -> &Host {
        &self.inner.host
    }
}

/// The UI's routes, under [`BASE`], to merge into the server's router.
pub fn router(ui: Ui) -> Router {
    let max_plugin_bytes = ui.inner.host.config().max_plugin_bytes;
    let pages = Router::new()
        .route(BASE, get(live::overview))
        .route("/ui/", get(live::overview))
        .route("/ui/overview/live", get(live::overview_stream))
        .route("/ui/streams", get(events::streams))
        .route("/ui/streams/{id}", get(events::stream))
        .route("/ui/all", get(events::all))
        .route("/ui/events/{position}", get(events::event))
        .route("/ui/events/{position}/raw", get(events::raw_event))
        .route("/ui/aggregates", get(timeline::index))
        .route("/ui/aggregates/{type}/{id}", get(timeline::timeline))
        .route("/ui/tail", get(live::tail))
        .route("/ui/tail/live", get(live::tail_stream))
        .route("/ui/projections", get(projections::list))
        .route("/ui/projections/{name}", get(projections::detail))
        .route(
            "/ui/projections/{name}/status",
            get(projections::status_fragment),
        )
        .route("/ui/projections/{name}/pause", post(projections::pause))
        .route("/ui/projections/{name}/resume", post(projections::resume))
        .route("/ui/projections/{name}/skip", post(projections::skip))
        .route(
            "/ui/projections/{name}/rebuild",
            get(projections::confirm_rebuild).post(projections::rebuild),
        )
        .route("/ui/reactors", get(reactors::list))
        .route("/ui/reactors/{name}/pause", post(reactors::pause))
        .route("/ui/reactors/{name}/resume", post(reactors::resume))
        .route("/ui/plugins", get(plugins::list))
        .route(
            "/ui/plugins/{name}",
            post(plugins::upload).layer(DefaultBodyLimit::max(max_plugin_bytes)),
        )
        .route(
            "/ui/compare",
            get(compare::form)
                .post(compare::start)
                .layer(DefaultBodyLimit::max(max_plugin_bytes)),
        )
        .route("/ui/compare/{job}", get(compare::job))
        .route("/ui/integrity", get(integrity::show))
        .route(
            "/ui/forget",
            get(integrity::confirm_forget).post(integrity::forget),
        )
        .route("/ui/verify", post(integrity::verify))
        .route("/ui/logout", post(session::logout))
        .route("/ui/{*rest}", get(not_found).post(not_found))
        .route_layer(axum::middleware::from_fn_with_state(
            ui.clone(),
            session::gate,
        ));
    Router::new()
        .route("/ui/login", get(session::login_form).post(session::login))
        .route("/ui/assets/{name}", get(assets::serve))
        .merge(pages)
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(ui)
}

async fn not_found() -> UiError {
    UiError::not_found("no such page")
}

/// What every answer of the UI carries: no scripts or styles from elsewhere, no framing, no
/// sniffing, no caching of pages (they show live data and a CSRF token).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
