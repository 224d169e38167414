//! Projections: status, position, lag and its trend, rate, last error; pause, resume and
//! rebuild (after a page that says what a rebuild does); a shadow rebuild's progress; dead
//! letters; queries from a form. The same core calls as `/projections/...` of the API.

use std::time::Duration;

use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Redirect;
use eshost_core::config::Role;
use eshost_core::projection::{
    ProjectionHostError, ProjectionState, ProjectionStatus, QueryFailure,
};
use maud::{Markup, html};
use serde::Deserialize;

use crate::events::blocking;
use crate::markup::{
    Nav, UiError, action_button, csrf_field, event_href, json_block, page, segment, short_hash,
    sparkline, stream_href, when,
};
use crate::session::Viewer;
use crate::{BASE, Ui};

impl From<ProjectionHostError> for UiError {
    fn from(error: ProjectionHostError) -> Self {
        match &error {
            ProjectionHostError::Unknown(_) => UiError::not_found(error.to_string()),
            ProjectionHostError::Stopped(_) => {
                UiError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
            }
            ProjectionHostError::Load(_) | ProjectionHostError::WrongName { .. } => {
                UiError::bad_request(error.to_string())
            }
            _ => UiError::internal(error),
        }
    }
}

/// A projection's state in words, styled.
pub fn state_label(state: ProjectionState) -> Markup {
    let (class, text) = match state {
        ProjectionState::Running => ("state-running", "running"),
        ProjectionState::Paused => ("state-paused", "paused"),
        ProjectionState::Failed => ("state-failed", "failed"),
        ProjectionState::Rebuilding => ("state-rebuilding", "rebuilding"),
    };
    html! { span class=(class) { (text) } }
}

fn href(name: &str) -> String {
    format!("{BASE}/projections/{}", segment(name))
}

fn status_of(ui: &Ui, name: &str) -> Result<ProjectionStatus, UiError> {
    ui.host()
        .projections()
        .status(name)
        .ok_or_else(|| UiError::not_found(format!("no projection named {name:?}")))
}

/// The controls a viewer may use on a projection (none below admin).
fn controls(viewer: &Viewer, status: &ProjectionStatus) -> Markup {
    if !viewer.can(Role::Admin) {
        return html! {};
    }
    let base = href(&status.name);
    html! {
        div.controls {
            @if status.state == ProjectionState::Paused {
                (action_button(viewer, Role::Admin, &format!("{base}/resume"), "Resume"))
            } @else {
                (action_button(viewer, Role::Admin, &format!("{base}/pause"), "Pause"))
                @if status.state == ProjectionState::Failed {
                    " " (action_button(viewer, Role::Admin, &format!("{base}/resume"), "Retry the failed event"))
                    @if let Some(position) = status.active.failed_at {
                        form.inline method="post" action={ (base) "/skip" } {
                            (csrf_field(viewer))
                            input type="hidden" name="position" value=(position);
                            " "
                            input type="text" name="reason" required placeholder="why (recorded)" aria-label="Why skip it";
                            " "
                            button.danger type="submit" { "Skip event " (position) }
                        }
                    }
                }
            }
            " "
            a href={ (base) "/rebuild" } { "Rebuild…" }
        }
    }
}

/// The part of the detail page that refreshes itself.
fn status_section(ui: &Ui, viewer: &Viewer, status: &ProjectionStatus) -> Markup {
    let lags = ui.inner.samples.lags(&status.name);
    html! {
        section #status hx-get={ (href(&status.name)) "/status" } hx-trigger="every 2s" hx-swap="outerHTML" aria-label="Status" {
            dl.facts {
                dt { "State" } dd { (state_label(status.state)) }
                dt { "Position" } dd { (status.position) " of " (status.head) }
                dt { "Lag" } dd { (status.lag) " events " (sparkline(&lags, "lag over the last minutes")) }
                dt { "Rate" } dd { (format!("{:.0}", status.events_per_sec)) " events/s" }
                dt { "Active generation" } dd { (status.active.generation) ", version " (status.active.version) " " (short_hash(&status.active.hash)) }
                dt { "Dead letters" } dd { (status.dead_letters) }
                dt { "Last error" } dd { @match &status.last_error { Some(e) => span.problem { (e) }, None => "none" } }
            }
            @if let Some(shadow) = &status.rebuild {
                h2 { "Rebuild in progress" }
                p {
                    "Generation " (shadow.generation) " (version " (shadow.version) ", " (short_hash(&shadow.hash)) ") is at position "
                    (shadow.position) " of " (status.head) "; it replaces generation " (status.active.generation)
                    " in one transaction once it has caught up. Until then queries read the active generation."
                }
                progress value=(shadow.position) max=(status.head.max(1)) aria-label="Rebuild progress" { (shadow.position) " of " (status.head) }
                @if let Some(failed) = &shadow.failed { p.problem { "The rebuild stopped: " (failed) } }
            }
            (controls(viewer, status))
        }
    }
}

/// `GET /ui/projections`.
pub async fn list(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Markup, UiError> {
    let statuses = ui.host().projections().statuses();
    let body = html! {
        table {
            thead { tr {
                th scope="col" { "Projection" } th scope="col" { "State" } th.num scope="col" { "Position" }
                th.num scope="col" { "Lag" } th scope="col" { "Lag trend" } th.num scope="col" { "Events/s" }
                th.num scope="col" { "Dead letters" } th scope="col" { "Last error" }
                @if viewer.can(Role::Admin) { th scope="col" { "Control" } }
            } }
            tbody {
                @for status in &statuses {
                    tr {
                        td { a href=(href(&status.name)) { (status.name) } }
                        td { (state_label(status.state)) @if status.rebuild.is_some() { " (rebuilding beside)" } }
                        td.num { (status.position) }
                        td.num { (status.lag) }
                        td { (sparkline(&ui.inner.samples.lags(&status.name), &format!("lag of {}", status.name))) }
                        td.num { (format!("{:.0}", status.events_per_sec)) }
                        td.num { (status.dead_letters) }
                        td { @if let Some(e) = &status.last_error { span.problem { (crate::markup::preview(e, 80)) } } }
                        @if viewer.can(Role::Admin) { td { (controls(&viewer, status)) } }
                    }
                }
            }
        }
        @if statuses.is_empty() { p.note { "No projection is configured." } }
    };
    Ok(page(&viewer, Nav::Projections, "Projections", body))
}

#[derive(Deserialize, Default)]
pub struct DetailParams {
    q: Option<String>,
    args: Option<String>,
}

/// `GET /ui/projections/{name}`: status, dead letters and the query form (with its answer).
pub async fn detail(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Path(name): Path<String>,
    Query(params): Query<DetailParams>,
) -> Result<Markup, UiError> {
    let status = status_of(&ui, &name)?;
    let projections = ui.host().projections().clone();
    let target = name.clone();
    let dead = blocking(move || Ok(projections.dead_letters(&target)?)).await?;
    let q = params.q.clone().unwrap_or_default();
    let args = params.args.clone().unwrap_or_default();
    let answer = if q.trim().is_empty() {
        None
    } else {
        let projections = ui.host().projections().clone();
        let (target, q, args) = (name.clone(), q.trim().to_owned(), args.trim().to_owned());
        Some(
            tokio::task::spawn_blocking(move || {
                let args = if args.is_empty() {
                    "null".to_owned()
                } else {
                    args
                };
                serde_json::from_str::<serde_json::Value>(&args)
                    .map_err(|e| format!("the arguments are not JSON: {e}"))?;
                projections.query(&target, &q, &args).map_err(|e| match e {
                    QueryFailure::Query(error) => error.to_string(),
                    other => other.to_string(),
                })
            })
            .await?,
        )
    };
    let body = html! {
        (status_section(&ui, &viewer, &status))
        h2 { "Query" }
        form.filters method="get" action=(href(&name)) {
            label { "Query name" input type="text" name="q" value=(q) required; }
            label { "Arguments (JSON)" textarea name="args" rows="1" cols="40" { (args) } }
            button type="submit" { "Ask" }
        }
        @match &answer {
            Some(Ok(answer)) => (json_block("Answer", answer, None)),
            Some(Err(problem)) => p.problem role="alert" { (problem) },
            None => {},
        }
        h2 { "Dead letters" }
        @if dead.is_empty() { p.note { "None: no event was parked." } }
        @else {
            table {
                thead { tr {
                    th.num scope="col" { "Position" } th scope="col" { "Stream" } th scope="col" { "Type" }
                    th scope="col" { "Error" } th.num scope="col" { "Attempts" } th scope="col" { "Parked (UTC)" }
                } }
                tbody {
                    @for letter in &dead {
                        tr {
                            td.num { a href=(event_href(letter.position)) { (letter.position) } }
                            td { a href=(stream_href(&letter.stream_id)) { (letter.stream_id) } }
                            td { (letter.event_type) }
                            td { (letter.reason) }
                            td.num { (letter.attempts) }
                            td { (when(letter.parked_at)) }
                        }
                    }
                }
            }
        }
    };
    Ok(page(
        &viewer,
        Nav::Projections,
        &format!("Projection {name}"),
        body,
    ))
}

/// `GET /ui/projections/{name}/status`: the status section alone, for the page to refresh.
pub async fn status_fragment(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Path(name): Path<String>,
) -> Result<Markup, UiError> {
    let status = status_of(&ui, &name)?;
    Ok(status_section(&ui, &viewer, &status))
}

/// Waits (briefly, bounded) until the runner has acted on a control message, so that the
/// page shown next has the new state.
async fn settle(ui: &Ui, name: &str, done: impl Fn(ProjectionState) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < deadline {
        match ui.host().projections().status(name) {
            Some(status) if !done(status.state) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            _ => return,
        }
    }
}

/// `POST /ui/projections/{name}/pause` (admin).
pub async fn pause(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Path(name): Path<String>,
) -> Result<Redirect, UiError> {
    viewer.require(Role::Admin)?;
    ui.host().projections().pause(&name)?;
    settle(&ui, &name, |now| now != ProjectionState::Running).await;
    Ok(Redirect::to(&href(&name)))
}

/// `POST /ui/projections/{name}/resume` (admin).
pub async fn resume(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Path(name): Path<String>,
) -> Result<Redirect, UiError> {
    viewer.require(Role::Admin)?;
    ui.host().projections().resume(&name)?;
    settle(&ui, &name, |now| now != ProjectionState::Paused).await;
    Ok(Redirect::to(&href(&name)))
}

#[derive(Deserialize)]
pub struct SkipForm {
    position: u64,
    reason: String,
}

/// `POST /ui/projections/{name}/skip` (admin): parks the event it is stopped at, recorded in
/// `$projections` with who and why.
pub async fn skip(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Path(name): Path<String>,
    Form(form): Form<SkipForm>,
) -> Result<Redirect, UiError> {
    viewer.require(Role::Admin)?;
    let control = ui.host().projection_control().clone();
    let user = viewer.caller.as_ref().map(|c| c.name.clone());
    let target = name.clone();
    let reason = form.reason.trim().to_owned();
    blocking(move || Ok(control.skip(&target, form.position, &reason, user)?)).await?;
    settle(&ui, &name, |now| now != ProjectionState::Failed).await;
    Ok(Redirect::to(&href(&name)))
}

/// `GET /ui/projections/{name}/rebuild`: what a rebuild will do, and the button.
pub async fn confirm_rebuild(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Path(name): Path<String>,
) -> Result<Markup, UiError> {
    viewer.require(Role::Admin)?;
    let status = status_of(&ui, &name)?;
    let body = html! {
        div.confirm {
            p { "Rebuilding " strong { (name) } " will:" }
            ul {
                li { "build a new generation of its read model from position 1, replaying all " (status.head) " events of the log through version " (status.active.version) " (" (short_hash(&status.active.hash)) ");" }
                li { "keep generation " (status.active.generation) " (at position " (status.position) ") answering queries while it does;" }
                li { "switch to the new generation in one transaction once it has caught up with the head, and only then drop the old one." }
            }
            p { "Nothing is deleted before the switch. "
                @if status.rebuild.is_some() { strong { "A rebuild is already running: it is started over." } }
            }
            form method="post" action={ (href(&name)) "/rebuild" } {
                (csrf_field(&viewer))
                button.danger type="submit" { "Rebuild " (name) }
                " "
                a href=(href(&name)) { "Cancel" }
            }
        }
    };
    Ok(page(
        &viewer,
        Nav::Projections,
        &format!("Rebuild {name}?"),
        body,
    ))
}

/// `POST /ui/projections/{name}/rebuild` (admin).
pub async fn rebuild(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Path(name): Path<String>,
) -> Result<Redirect, UiError> {
    viewer.require(Role::Admin)?;
    // Through the cluster control, like the API: recorded in `$projections`, so every node
    // rebuilds, not only the one whose page was used.
    let control = ui.host().projection_control().clone();
    let user = viewer.caller.as_ref().map(|c| c.name.clone());
    let target = name.clone();
    blocking(move || Ok(control.rebuild(&target, user)?)).await?;
    Ok(Redirect::to(&href(&name)))
}
