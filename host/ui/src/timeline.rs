//! An aggregate's timeline: each event with the state after it and what changed, and the
//! state as of a version or a time (the same core calls as `GET /aggregates/{type}/{id}` and
//! its `/history`).

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use eshost_core::aggregate::{At, HistoryPage, QueryError};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use crate::events::number;
use crate::markup::{self, Nav, UiError, event_href, json_block, page, when};
use crate::session::Viewer;
use crate::{BASE, Ui, time};

/// The most history entries one page shows (the newest).
const SHOWN_ENTRIES: usize = 200;
/// The most changed paths listed per step.
const SHOWN_CHANGES: usize = 50;

impl From<QueryError> for UiError {
    fn from(error: QueryError) -> Self {
        match error {
            QueryError::UnknownType { .. } => UiError::not_found(error.to_string()),
            other => UiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

#[derive(Deserialize, Default)]
pub struct IndexParams {
    #[serde(rename = "type")]
    aggregate_type: Option<String>,
    id: Option<String>,
}

/// `GET /ui/aggregates`: pick an aggregate.
pub async fn index(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Query(params): Query<IndexParams>,
) -> Result<axum::response::Response, UiError> {
    use axum::response::{IntoResponse, Redirect};
    if let (Some(kind), Some(id)) = (&params.aggregate_type, &params.id)
        && !kind.is_empty()
        && !id.trim().is_empty()
    {
        let href = format!(
            "{BASE}/aggregates/{}/{}",
            markup::segment(kind),
            markup::segment(id.trim())
        );
        return Ok(Redirect::to(&href).into_response());
    }
    let types = ui.host().aggregates().types();
    let body = html! {
        p { "An aggregate's history with the state after each event, what each event changed, and its state as of a version or a time." }
        form.filters method="get" action={ (BASE) "/aggregates" } {
            label { "Aggregate type"
                select name="type" {
                    @for info in &types { option value=(info.name) { (info.name) } }
                }
            }
            label { "Aggregate id" input type="text" name="id" required; }
            button type="submit" { "Show timeline" }
        }
        @if types.is_empty() { p.note { "No aggregate plugin is loaded." } }
    };
    Ok(page(&viewer, Nav::Aggregates, "Aggregates", body).into_response())
}

/// One changed path between two states.
#[derive(Debug, PartialEq)]
pub struct Change {
    pub path: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// What changed from `before` to `after`: object members by key, recursively; anything else
/// (arrays, scalars) as a whole.
pub fn diff(before: &Value, after: &Value) -> Vec<Change> {
    let mut changes = Vec::new();
    walk("", Some(before), Some(after), &mut changes);
    changes
}

fn walk(path: &str, before: Option<&Value>, after: Option<&Value>, out: &mut Vec<Change>) {
    match (before, after) {
        (Some(Value::Object(old)), Some(Value::Object(new))) => {
            let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                walk(&format!("{path}.{key}"), old.get(key), new.get(key), out);
            }
        }
        (old, new) if old == new => {}
        (old, new) => out.push(Change {
            path: if path.is_empty() {
                "(the whole state)".to_owned()
            } else {
                path[1..].to_owned()
            },
            before: old.cloned(),
            after: new.cloned(),
        }),
    }
}

fn changes_list(changes: &[Change]) -> Markup {
    let shown = |v: &Option<Value>| {
        v.as_ref().map_or("(absent)".to_owned(), |v| {
            markup::preview(&v.to_string(), 120)
        })
    };
    html! {
        @if changes.is_empty() { span.note { "no change" } }
        @else {
            ul {
                @for change in changes.iter().take(SHOWN_CHANGES) {
                    li { code { (change.path) } ": " span.diff-old { (shown(&change.before)) } " → " span.diff-new { (shown(&change.after)) } }
                }
                @if changes.len() > SHOWN_CHANGES { li.note { (changes.len() - SHOWN_CHANGES) " more changes" } }
            }
        }
    }
}

#[derive(Deserialize, Default)]
pub struct TimelineParams {
    version: Option<String>,
    at: Option<String>,
}

/// `GET /ui/aggregates/{type}/{id}`.
pub async fn timeline(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Path((aggregate_type, id)): Path<(String, String)>,
    Query(params): Query<TimelineParams>,
) -> Result<Markup, UiError> {
    let aggregates = ui.host().aggregates();
    let stream = aggregates.stream_of(&aggregate_type, &id);
    let stream_version = ui
        .host()
        .store()
        .stream_info(&stream)?
        .map_or(0, |info| info.version);
    // The newest entries and the one before them (what the first shown one changed), within
    // the host's byte budget for a page.
    let first_shown = stream_version.saturating_sub(SHOWN_ENTRIES as u64).max(1);
    let window = HistoryPage {
        from_version: first_shown.saturating_sub(1).max(1),
        limit: SHOWN_ENTRIES + 1,
        max_bytes: ui.host().config().max_response_bytes,
    };
    let mut history = aggregates
        .history(&aggregate_type, &id, None, window)
        .await?;
    if history.is_empty() {
        return Err(UiError::not_found(format!(
            "aggregate {aggregate_type}/{id} has no events"
        )));
    }
    if !viewer.discloses() {
        for entry in &mut history {
            entry.event.personal_data = None;
        }
    }
    let latest = history.last().map_or(0, |e| e.event.stream_version);
    let version = number(&params.version, "version")?;
    let at_text = params.at.clone().unwrap_or_default();
    let at = match at_text.trim() {
        "" => None,
        text => Some(time::parse(text).ok_or_else(|| {
            UiError::bad_request(format!(
                "{text:?} is not a time (YYYY-MM-DD HH:MM:SS UTC, or ms)"
            ))
        })?),
    };
    let as_of = match (version, at) {
        (Some(version), _) => Some(
            aggregates
                .state(&aggregate_type, &id, At::Version(version))
                .await?,
        ),
        (None, Some(at)) => Some(aggregates.state(&aggregate_type, &id, At::Time(at)).await?),
        (None, None) => None,
    };
    let picked = version.unwrap_or(latest);
    let skipped = usize::from(first_shown > 1);
    let here = format!(
        "{BASE}/aggregates/{}/{}",
        markup::segment(&aggregate_type),
        markup::segment(&id)
    );
    let body = html! {
        p { "Stream " a href=(markup::stream_href(&stream)) { (stream) } ", version " (latest) "." }
        h2 { "State as of" }
        form.filters method="get" action=(here) {
            label { "Version (0 = before any event)"
                input #as-of-version type="range" name="version" min="0" max=(latest) value=(picked);
            }
            button type="submit" { "Show this version" }
        }
        form.filters method="get" action=(here) {
            label { "Or a time (UTC)" input type="text" name="at" value=(at_text) placeholder="2026-05-01 12:00:00"; }
            button type="submit" { "Show as of this time" }
        }
        @if let Some(state) = &as_of {
            section #as-of aria-label="State as of" {
                p {
                    strong { "As of version " (state.version) }
                    @if state.version > 0 { ", recorded " (when(state.recorded_at)) " at position " a href=(event_href(state.position)) { (state.position) } }
                    @if let Some(snapshot) = state.from_snapshot { " (built from the snapshot at version " (snapshot) ")" }
                }
                (json_block("State", &state.state.to_string(), None))
            }
        }
        h2 { "History" }
        @if first_shown > 1 { p.note { "Showing the newest " (history.len() - skipped) " of " (stream_version) " events." } }
        table {
            thead { tr {
                th.num scope="col" { "Version" } th scope="col" { "Event" } th scope="col" { "Recorded (UTC)" }
                th scope="col" { "What changed" } th scope="col" { "State after" }
            } }
            tbody {
                @for (index, entry) in history.iter().enumerate().skip(skipped) {
                    @let before = if index == 0 { None } else { Some(&history[index - 1].state) };
                    tr {
                        td.num { a href={ (here) "?version=" (entry.event.stream_version) } { (entry.event.stream_version) } }
                        td { a href=(event_href(entry.event.position)) { (entry.event.event_type) } }
                        td { (when(entry.event.recorded_at)) }
                        td { (changes_list(&diff(before.unwrap_or(&Value::Null), &entry.state))) }
                        td { (json_block("State", &entry.state.to_string(), None)) }
                    }
                }
            }
        }
    };
    Ok(page(
        &viewer,
        Nav::Aggregates,
        &format!("{aggregate_type} {id}"),
        body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_diff_names_each_changed_member() {
        let before = json!({"balance": 100, "owner": "Ann", "limits": {"daily": 5}});
        let after = json!({"balance": 150, "owner": "Ann", "limits": {"daily": 5, "weekly": 9}});
        let changes = diff(&before, &after);
        assert_eq!(
            changes,
            vec![
                Change {
                    path: "balance".into(),
                    before: Some(json!(100)),
                    after: Some(json!(150))
                },
                Change {
                    path: "limits.weekly".into(),
                    before: None,
                    after: Some(json!(9))
                },
            ]
        );
        assert!(diff(&after, &after).is_empty());
        assert_eq!(diff(&Value::Null, &json!(1))[0].path, "(the whole state)");
    }
}
