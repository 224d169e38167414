//! Reactors: state, checkpoint and lag, commands sent, pending timers, dead letters and the
//! last error, with a link to each reactor's own stream of outcomes and timers; pause and
//! resume (which retries a reactor stopped at a failing event). The same core calls as
//! `/reactors/...` of the API.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Redirect;
use eshost_core::config::Role;
use eshost_core::reactor::{ReactorError, ReactorState, outcome_stream};
use maud::{Markup, html};

use crate::markup::{Nav, UiError, action_button, page, preview, segment, short_hash, stream_href};
use crate::session::Viewer;
use crate::{BASE, Ui};

impl From<ReactorError> for UiError {
    fn from(error: ReactorError) -> Self {
        match &error {
            ReactorError::Unknown(_) => UiError::not_found(error.to_string()),
            ReactorError::Stopped(_) => {
                UiError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
            }
            _ => UiError::internal(error),
        }
    }
}

/// A reactor's state in words, styled like a projection's.
fn state_label(state: ReactorState) -> Markup {
    let (class, text) = match state {
        ReactorState::Running => ("state-running", "running"),
        ReactorState::Paused => ("state-paused", "paused"),
        ReactorState::Failed => ("state-failed", "failed"),
    };
    html! { span class=(class) { (text) } }
}

const LIST: &str = "/ui/reactors";

fn action(name: &str, verb: &str) -> String {
    format!("{BASE}/reactors/{}/{verb}", segment(name))
}

/// `GET /ui/reactors`.
pub async fn list(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Markup, UiError> {
    let statuses = ui.host().reactors().statuses();
    let body = html! {
        p.note { "A reactor turns events into commands, appends and timers, each carried out once; what came of each is recorded in its own stream. A new version is uploaded on the " a href={ (BASE) "/plugins" } { "Plugins" } " page (it goes on from the checkpoint) or to " code { "PUT /reactors/{name}?from=..." } "; either is recorded in " code { "$plugins" } ", so every node runs it and a restart keeps it." }
        table {
            thead { tr {
                th scope="col" { "Reactor" } th scope="col" { "State" } th.num scope="col" { "Checkpoint" }
                th.num scope="col" { "Lag" } th.num scope="col" { "Commands sent" } th.num scope="col" { "Timers pending" }
                th.num scope="col" { "Dead letters" } th scope="col" { "Version" } th scope="col" { "Last error" }
                @if viewer.can(Role::Admin) { th scope="col" { "Control" } }
            } }
            tbody {
                @for status in &statuses {
                    tr {
                        td { a href=(stream_href(&outcome_stream(&status.name))) { (status.name) } }
                        td { (state_label(status.state)) @if let Some(at) = status.failed_at { " at " (at) } }
                        td.num { (status.checkpoint) }
                        td.num { (status.head.saturating_sub(status.checkpoint)) }
                        td.num { (status.commands_sent) }
                        td.num { (status.timers_pending) }
                        td.num { (status.dead_letters) }
                        td { (status.version) " " (short_hash(&status.content_hash)) }
                        td { @if let Some(e) = &status.last_error { span.problem { (preview(e, 80)) } } }
                        @if viewer.can(Role::Admin) {
                            td {
                                @if status.state == ReactorState::Running {
                                    (action_button(&viewer, Role::Admin, &action(&status.name, "pause"), "Pause"))
                                } @else {
                                    (action_button(&viewer, Role::Admin, &action(&status.name, "resume"), "Resume"))
                                }
                            }
                        }
                    }
                }
            }
        }
        @if statuses.is_empty() { p.note { "No reactor is configured." } }
    };
    Ok(page(&viewer, Nav::Reactors, "Reactors", body))
}

/// `POST /ui/reactors/{name}/pause` (admin).
pub async fn pause(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Path(name): Path<String>,
) -> Result<Redirect, UiError> {
    viewer.require(Role::Admin)?;
    let host = ui.host().clone();
    tokio::task::spawn_blocking(move || host.reactors().pause(&name)).await??;
    Ok(Redirect::to(LIST))
}

/// `POST /ui/reactors/{name}/resume` (admin): a reactor stopped at a failing event tries it
/// again.
pub async fn resume(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Path(name): Path<String>,
) -> Result<Redirect, UiError> {
    viewer.require(Role::Admin)?;
    let host = ui.host().clone();
    tokio::task::spawn_blocking(move || host.reactors().resume(&name)).await??;
    Ok(Redirect::to(LIST))
}
