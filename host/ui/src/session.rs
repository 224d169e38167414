//! Signing in, sessions and CSRF.
//!
//! With tokens configured, a browser signs in once with a token of the config (the same
//! `[[tokens]]` the HTTP API checks, [`Tokens`]); the UI then holds a session cookie
//! (`HttpOnly`, `SameSite=Strict`, `Path=/ui`, expiring) that names a session kept in memory.
//! The token never goes back to the browser. Without tokens (the open, loopback mode) every
//! browser gets a session by itself, so that the CSRF rule below holds in both modes.
//!
//! Every state change is a POST that must carry the session's CSRF token in a form field
//! (`csrf`), and must not come from another site (`Origin`, `Sec-Fetch-Site`). URL-encoded
//! forms are checked here, before any handler runs; multipart bodies are let through only to
//! the two file uploads, whose one extractor ([`crate::upload::Upload`]) checks the field, so
//! no POST gets past without the check. Roles are
//! enforced by the handlers ([`Viewer::require`]), whatever the page showed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::{Body, to_bytes};
use axum::extract::{Form, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use eshost_core::access::Caller;
use eshost_core::config::Role;
use maud::{Markup, html};
use serde::Deserialize;

use crate::markup::{self, UiError};
use crate::{BASE, Ui};

/// The session cookie's name.
pub const COOKIE: &str = "eshost_session";
/// How long a session lives after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// The most sessions held; the oldest goes first.
const MAX_SESSIONS: usize = 10_000;
/// The routes that take multipart forms (their extractor, [`crate::upload::Upload`], checks
/// the CSRF field).
const UPLOADS: [fn(&str) -> bool; 2] = [
    |path| path.starts_with("/ui/plugins/"),
    |path| path == "/ui/compare",
];
/// The largest URL-encoded form the gate reads to find the CSRF token.
const MAX_FORM_BYTES: usize = 1024 * 1024;

/// Who is looking at a page: the token's holder, or nobody in particular in the open mode.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The caller; `None` in the open mode (no tokens configured).
    pub caller: Option<Caller>,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    session: String,
}

impl Viewer {
    /// What the viewer may do: the token's role, or everything in the open mode.
    pub fn role(&self) -> Role {
        self.caller.as_ref().map_or(Role::Admin, |c| c.role)
    }

    /// Whether the viewer has at least `role`.
    pub fn can(&self, role: Role) -> bool {
        self.role() >= role
    }

    /// Refuses (403) a viewer without `role`.
    pub fn require(&self, role: Role) -> Result<(), UiError> {
        if self.can(role) {
            return Ok(());
        }
        Err(UiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this needs the {} role; you are signed in with {}",
                role.as_str(),
                self.role().as_str()
            ),
        ))
    }

    /// Whether decrypted personal data may be shown (the API's rule).
    pub fn discloses(&self) -> bool {
        eshost_core::access::discloses(self.caller.as_ref())
    }

    /// Checks a form's CSRF field against the session's.
    pub fn check_csrf(&self, presented: Option<&str>) -> Result<(), UiError> {
        match presented {
            Some(token) if constant_time_eq(token.as_bytes(), self.csrf.as_bytes()) => Ok(()),
            _ => Err(UiError::new(
                StatusCode::FORBIDDEN,
                "the form's CSRF token is missing or wrong; reload the page and try again",
            )),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct Session {
    caller: Option<Caller>,
    csrf: String,
    expires: Instant,
}

/// The sessions of the UI, in memory (a restart signs everyone out).
#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

/// 32 random bytes as hex.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    /// A new session for `caller`; returns the viewer and the session id.
    fn create(&self, caller: Option<Caller>) -> Viewer {
        let id = random_token();
        let csrf = random_token();
        let mut sessions = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                caller: caller.clone(),
                csrf: csrf.clone(),
                expires: now + SESSION_TTL,
            },
        );
        Viewer {
            caller,
            csrf,
            session: id,
        }
    }

    fn get(&self, id: &str) -> Option<Viewer> {
        let sessions = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        let session = sessions.get(id).filter(|s| s.expires > Instant::now())?;
        Some(Viewer {
            caller: session.caller.clone(),
            csrf: session.csrf.clone(),
            session: id.to_owned(),
        })
    }

    fn remove(&self, id: &str) {
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

fn set_cookie(id: &str) -> HeaderValue {
    let value = format!(
        "{COOKIE}={id}; Path={BASE}; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    HeaderValue::from_str(&value).expect("a cookie of hex digits")
}

fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("eshost_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// A request another site made the browser send: refused before any handler sees it.
fn cross_site(headers: &HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| site == "cross-site" || site == "same-site")
    {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => false,
        Some(origin) => {
            let origin_host = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            origin_host.is_none() || origin_host != host
        }
    }
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"))
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("multipart/form-data"))
}

/// Wants the answer of a server-sent event stream (no redirect to a sign-in page then).
fn wants_events(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"))
}

#[derive(Deserialize)]
struct CsrfField {
    csrf: Option<String>,
}

/// The gate in front of every page but sign-in and the static files: finds the session (or
/// makes one in the open mode), checks state changes for CSRF, and hands the [`Viewer`] on.
pub async fn gate(State(ui): State<Ui>, request: Request, next: Next) -> Response {
    let sessions = &ui.inner.sessions;
    let mut new_cookie = None;
    let viewer = match cookie_value(request.headers()).and_then(|id| sessions.get(&id)) {
        Some(viewer) => viewer,
        None if ui.inner.tokens.is_empty() => {
            let viewer = sessions.create(None);
            new_cookie = Some(set_cookie(&viewer.session));
            viewer
        }
        None => {
            if request.method() == Method::GET && !wants_events(request.headers()) {
                let wanted = request
                    .uri()
                    .path_and_query()
                    .map_or(BASE.to_owned(), |p| p.as_str().to_owned());
                let query = serde_urlencoded::to_string([("next", wanted)]).unwrap_or_default();
                return Redirect::to(&format!("{BASE}/login?{query}")).into_response();
            }
            return UiError::new(
                StatusCode::UNAUTHORIZED,
                "sign in first: this host has tokens configured",
            )
            .into_response();
        }
    };
    let request = if request.method() == Method::POST {
        match check_post(&viewer, request).await {
            Ok(request) => request,
            Err(error) => return error.into_response(),
        }
    } else {
        request
    };
    let mut request = request;
    request.extensions_mut().insert(viewer);
    let mut response = next.run(request).await;
    if let Some(cookie) = new_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// A POST must come from this site and carry the session's CSRF token; a URL-encoded form is
/// read here (and handed on whole), a multipart one by the upload extractor.
async fn check_post(viewer: &Viewer, request: Request) -> Result<Request, UiError> {
    if cross_site(request.headers()) {
        return Err(UiError::new(
            StatusCode::FORBIDDEN,
            "a form from another site is refused",
        ));
    }
    if is_multipart(request.headers()) {
        // Only the uploads read multipart, and their extractor checks the CSRF field.
        if UPLOADS.iter().any(|upload| upload(request.uri().path())) {
            return Ok(request);
        }
        return Err(UiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "only plugin uploads take multipart forms",
        ));
    }
    if !is_form(request.headers()) {
        return Err(UiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the UI takes forms only (application/x-www-form-urlencoded or multipart/form-data)",
        ));
    }
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| UiError::new(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large"))?;
    let field: CsrfField = serde_urlencoded::from_bytes(&bytes).unwrap_or(CsrfField { csrf: None });
    viewer.check_csrf(field.csrf.as_deref())?;
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

/// Where to go after signing in: a page of the UI, nothing else (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next)
            if (next == BASE || next.starts_with("/ui/") || next.starts_with("/ui?"))
                && !next.contains("//")
                && !next.contains('\\') =>
        {
            next.to_owned()
        }
        _ => BASE.to_owned(),
    }
}

fn login_page(next: &str, problem: Option<&str>) -> Markup {
    markup::bare_page(
        "Sign in",
        html! {
            p { "This host has tokens configured. Sign in with one of them: what you can see and do follows its role." }
            @if let Some(problem) = problem {
                p.problem role="alert" { (problem) }
            }
            form method="post" action={ (BASE) "/login" } {
                input type="hidden" name="next" value=(next);
                label for="token" { "Token" }
                input #token type="password" name="token" required autocomplete="current-password";
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// `GET /ui/login`.
pub async fn login_form(State(ui): State<Ui>, Query(query): Query<LoginQuery>) -> Response {
    if ui.inner.tokens.is_empty() {
        return Redirect::to(BASE).into_response();
    }
    login_page(&safe_next(query.next.as_deref()), None).into_response()
}

/// `POST /ui/login`: a configured token starts a session.
pub async fn login(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if cross_site(&headers) {
        return UiError::new(StatusCode::FORBIDDEN, "a form from another site is refused")
            .into_response();
    }
    let next = safe_next(form.next.as_deref());
    let Some(caller) = ui.inner.tokens.get(form.token.trim()).cloned() else {
        let page = login_page(&next, Some("that token is not configured on this host"));
        return (StatusCode::UNAUTHORIZED, page).into_response();
    };
    tracing::info!(user = %caller.name, role = caller.role.as_str(), "signed in to the admin UI");
    let viewer = ui.inner.sessions.create(Some(caller));
    let mut response = Redirect::to(&next).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&viewer.session));
    response
}

/// `POST /ui/logout` (behind the gate, so CSRF-checked).
pub async fn logout(
    State(ui): State<Ui>,
    axum::Extension(viewer): axum::Extension<Viewer>,
) -> Response {
    ui.inner.sessions.remove(&viewer.session);
    let target = if ui.inner.tokens.is_empty() {
        BASE.to_owned()
    } else {
        format!("{BASE}/login")
    };
    let mut response = Redirect::to(&target).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, clear_cookie());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pages_of_the_ui_are_followed_after_sign_in() {
        assert_eq!(
            safe_next(Some("/ui/streams?prefix=a")),
            "/ui/streams?prefix=a"
        );
        assert_eq!(safe_next(Some("/ui")), "/ui");
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/ui//evil",
            "/uix",
            "/",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui", "{bad}");
        }
    }

    #[test]
    fn origins_of_other_sites_are_cross_site() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7070"));
        assert!(!cross_site(&headers));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:7070"),
        );
        assert!(!cross_site(&headers));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(cross_site(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(cross_site(&headers));
        headers.remove(header::ORIGIN);
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(cross_site(&headers));
    }
}
