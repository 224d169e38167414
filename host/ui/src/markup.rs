//! What every page shares: the shell (navigation, who is signed in), errors as pages, JSON
//! shown collapsed and size-gated, links, times and hashes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use eshost_core::config::Role;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::session::Viewer;
use crate::{BASE, assets, time};

/// JSON up to this size is shown open; above it, collapsed behind a summary.
pub const OPEN_JSON_BYTES: usize = 2 * 1024;
/// JSON above this size is cut to it in the page (the whole is one link away).
pub const SHOWN_JSON_BYTES: usize = 64 * 1024;

/// The sections of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Streams,
    All,
    Aggregates,
    Tail,
    Projections,
    Reactors,
    Plugins,
    Compare,
    Integrity,
}

const SECTIONS: [(Nav, &str, &str); 10] = [
    (Nav::Overview, "", "Overview"),
    (Nav::Streams, "/streams", "Streams"),
    (Nav::All, "/all", "$all"),
    (Nav::Aggregates, "/aggregates", "Aggregates"),
    (Nav::Tail, "/tail", "Live tail"),
    (Nav::Projections, "/projections", "Projections"),
    (Nav::Reactors, "/reactors", "Reactors"),
    (Nav::Plugins, "/plugins", "Plugins"),
    (Nav::Compare, "/compare", "Compare"),
    (Nav::Integrity, "/integrity", "Erasure & integrity"),
];

fn head(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        // No inline styles or eval: the pages run under a strict content security policy.
        meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
        title { (title) " · eshost" }
        link rel="stylesheet" href=(assets::href(assets::CSS));
        script src=(assets::href(assets::HTMX)) defer {}
        script src=(assets::href(assets::HTMX_SSE)) defer {}
        script src=(assets::href(assets::SCRIPT)) defer {}
    }
}

/// A page of the UI for `viewer`, with the navigation.
pub fn page(viewer: &Viewer, nav: Nav, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href=(BASE) { "eshost" }
                    nav aria-label="Sections" {
                        ul {
                            @for (section, path, label) in SECTIONS {
                                li {
                                    @if section == nav {
                                        a href={ (BASE) (path) } aria-current="page" { (label) }
                                    } @else {
                                        a href={ (BASE) (path) } { (label) }
                                    }
                                }
                            }
                        }
                    }
                    div.who {
                        @match &viewer.caller {
                            Some(caller) => {
                                span { (caller.name) " · " (caller.role.as_str())
                                    @if caller.personal_data { " · personal data" } }
                                form.inline method="post" action={ (BASE) "/logout" } {
                                    (csrf_field(viewer))
                                    button.link type="submit" { "Sign out" }
                                }
                            }
                            None => span title="no tokens are configured: the UI, like the API, is open to whoever reaches this loopback address" { "open mode" },
                        }
                    }
                }
                main #main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page without navigation (sign-in, errors before a session).
pub fn bare_page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body {
                header.top { a.brand href=(BASE) { "eshost" } }
                main #main.narrow { h1 { (title) } (body) }
            }
        }
    }
}

/// The hidden field every state-changing form carries.
pub fn csrf_field(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.csrf); }
}

/// A page-level failure: an HTML page with the status and a message naming the thing.
#[derive(Debug)]
pub struct UiError {
    status: StatusCode,
    message: String,
}

impl UiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> UiError {
        UiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> UiError {
        UiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> UiError {
        UiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal(message: impl std::fmt::Display) -> UiError {
        UiError::new(StatusCode::INTERNAL_SERVER_ERROR, message.to_string())
    }
}

impl From<eshost_store::ReadError> for UiError {
    fn from(error: eshost_store::ReadError) -> Self {
        match error {
            eshost_store::ReadError::Invalid(_) => UiError::bad_request(error.to_string()),
            other => UiError::internal(other),
        }
    }
}

impl From<tokio::task::JoinError> for UiError {
    fn from(error: tokio::task::JoinError) -> Self {
        UiError::internal(format!("a blocking task failed: {error}"))
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let title = match self.status {
            StatusCode::UNAUTHORIZED => "Sign-in needed",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::NOT_FOUND => "Not found",
            status if status.is_client_error() => "Cannot do that",
            _ => "Something failed",
        };
        let body = bare_page(
            title,
            html! {
                p.problem role="alert" { (self.message) }
                p { a href=(BASE) { "Back to the overview" } }
            },
        );
        (self.status, body).into_response()
    }
}

/// What a path segment may hold unescaped.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `text` escaped for one path segment.
pub fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// A query string from pairs, leaving out empty values.
pub fn query(pairs: &[(&str, String)]) -> String {
    let kept: Vec<(&str, &str)> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    if kept.is_empty() {
        return String::new();
    }
    format!("?{}", serde_urlencoded::to_string(kept).unwrap_or_default())
}

/// The link to a stream's page.
pub fn stream_href(stream_id: &str) -> String {
    format!("{BASE}/streams/{}", segment(stream_id))
}

/// The link to an event's page.
pub fn event_href(position: u64) -> String {
    format!("{BASE}/events/{position}")
}

/// A time, with the milliseconds in a tooltip.
pub fn when(ms: u64) -> Markup {
    if ms == 0 {
        return html! { "—" };
    }
    html! { time datetime={ (time::input_value(ms)) "Z" } title={ (ms) " ms since the epoch" } { (time::format_ms(ms)) } }
}

/// The first 12 hex digits of a hash, the whole in a tooltip.
pub fn short_hash(hash: &str) -> Markup {
    let short = &hash[..hash.len().min(12)];
    html! { code title=(hash) { (short) } }
}

/// A byte count for people.
pub fn bytes(count: u64) -> String {
    match count {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// JSON text pretty-printed; text that is not JSON as it is.
pub fn pretty(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}

/// One line of JSON, cut to `max` characters, for tables.
pub fn preview(text: &str, max: usize) -> String {
    let mut line: String = text.chars().filter(|c| *c != '\n').take(max + 1).collect();
    if line.chars().count() > max {
        line = line.chars().take(max).collect();
        line.push('…');
    }
    line
}

/// JSON for reading: open when small, collapsed behind its size when large, and cut to
/// [`SHOWN_JSON_BYTES`] when huge (the whole behind `whole`, a link), so that no page has to
/// lay out megabytes of text.
pub fn json_block(label: &str, text: &str, whole: Option<&str>) -> Markup {
    let pretty = pretty(text);
    let size = pretty.len();
    let (shown, cut) = if size > SHOWN_JSON_BYTES {
        let mut end = SHOWN_JSON_BYTES;
        while !pretty.is_char_boundary(end) {
            end -= 1;
        }
        (&pretty[..end], true)
    } else {
        (pretty.as_str(), false)
    };
    let body = html! {
        pre.json tabindex="0" aria-label=(label) { code { (shown) } }
        @if cut {
            p.note {
                "Showing the first " (bytes(SHOWN_JSON_BYTES as u64)) " of " (bytes(size as u64)) "."
                @if let Some(whole) = whole { " " a href=(whole) { "The whole JSON" } }
            }
        }
    };
    if size <= OPEN_JSON_BYTES {
        return body;
    }
    html! {
        details.json {
            summary { (label) " (" (bytes(size as u64)) ", collapsed)" }
            (body)
        }
    }
}

/// A small form posting to `action` with one button (pause, resume...), for viewers with
/// `role`; nothing for others.
pub fn action_button(viewer: &Viewer, role: Role, action: &str, label: &str) -> Markup {
    if !viewer.can(role) {
        return html! {};
    }
    html! {
        form.inline method="post" action=(action) {
            (csrf_field(viewer))
            button type="submit" { (label) }
        }
    }
}

/// A line chart of `values` (oldest first) as inline SVG, for trends.
pub fn sparkline(values: &[u64], label: &str) -> Markup {
    if values.len() < 2 {
        return html! { span.note { "collecting…" } };
    }
    let (width, height) = (120.0f64, 24.0f64);
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = width / (values.len() - 1) as f64;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                height - 1.0 - (*v as f64 / max) * (height - 2.0)
            )
        })
        .collect();
    let svg = format!(
        r#"<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="{}"><polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{}"/></svg>"#,
        html! { (label) }.into_string(),
        points.join(" ")
    );
    PreEscaped(svg)
}
