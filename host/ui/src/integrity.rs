//! Erasure and integrity: the `$erasures` audit trail, forgetting a subject (after a page that
//! names it and says what happens), and re-checking the hash chain (`verify`).

use axum::extract::{Query, State};
use axum::{Extension, Form};
use eshost_core::config::Role;
use eshost_core::privacy::{ERASURE_STREAM, ForgetError, ForgetRequest};
use eshost_store::{Forgot, StreamRead};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use crate::events::blocking;
use crate::markup::{Nav, UiError, csrf_field, event_href, page, query, stream_href, when};
use crate::session::Viewer;
use crate::{BASE, Ui};

/// Erasures listed, newest first.
const SHOWN_ERASURES: usize = 100;

impl From<ForgetError> for UiError {
    fn from(error: ForgetError) -> Self {
        match error {
            ForgetError::InvalidSubject { .. } => UiError::bad_request(error.to_string()),
            other => UiError::internal(other),
        }
    }
}

/// `GET /ui/integrity`.
pub async fn show(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Markup, UiError> {
    let store = ui.host().store().clone();
    let erasures = blocking(move || {
        let mut read = StreamRead::backward();
        read.limit = SHOWN_ERASURES;
        Ok(store.read_stream(ERASURE_STREAM, &read)?)
    })
    .await?;
    let field = |text: &str, key: &str| -> String {
        serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v.get(key).and_then(|v| v.as_str()).map(str::to_owned))
            .unwrap_or_default()
    };
    let admin = viewer.can(Role::Admin);
    let body = html! {
        h2 { "Erasures" }
        p { "Each forgotten subject is recorded in the system stream "
            a href=(stream_href(ERASURE_STREAM)) { code { (ERASURE_STREAM) } } ": who asked, why and when. The log itself is never rewritten." }
        @if erasures.is_empty() { p.note { "No subject has been forgotten." } }
        @else {
            table {
                thead { tr {
                    th.num scope="col" { "Position" } th scope="col" { "Recorded (UTC)" } th scope="col" { "Subject" }
                    th scope="col" { "Asked by" } th scope="col" { "Reason" }
                } }
                tbody { @for event in &erasures {
                    tr {
                        td.num { a href=(event_href(event.position)) { (event.position) } }
                        td { (when(event.recorded_at)) }
                        td { code { (field(&event.data, "subject_id")) } }
                        td { (field(&event.metadata, "user")) }
                        td { (field(&event.metadata, "reason")) }
                    }
                } }
            }
        }
        @if admin {
            h2 { "Forget a subject" }
            form.filters method="get" action={ (BASE) "/forget" } {
                label { "Subject id" input type="text" name="subject" required; }
                button type="submit" { "Continue…" }
            }
        }
        h2 { "Integrity" }
        p { "Verification re-reads the whole log and re-checks positions, stream versions and the hash chain." }
        @if admin {
            form method="post" action={ (BASE) "/verify" } {
                (csrf_field(&viewer))
                button type="submit" { "Verify the log" }
            }
        } @else {
            p.note { "Running it needs the admin role." }
        }
    };
    Ok(page(&viewer, Nav::Integrity, "Erasure and integrity", body))
}

#[derive(Deserialize, Default)]
pub struct SubjectParams {
    subject: Option<String>,
}

/// `GET /ui/forget?subject=` (admin): what forgetting this subject does, and the button.
pub async fn confirm_forget(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Query(params): Query<SubjectParams>,
) -> Result<Markup, UiError> {
    viewer.require(Role::Admin)?;
    let subject = params.subject.unwrap_or_default().trim().to_owned();
    if subject.is_empty() {
        return Err(UiError::bad_request("name the subject to forget"));
    }
    let already = ui.host().store().is_forgotten(&subject);
    let body = html! {
        div.confirm {
            p { "Forget the data subject " strong { code { (subject) } } "?" }
            @if already { p { strong { "This subject is already forgotten;" } " doing it again records another erasure and purges again." } }
            ul {
                li { "An erasure event naming " code { (subject) } " is appended to " code { (ERASURE_STREAM) } ", with your name and the reason." }
                li { "The subject's key is erased: its personal data in every event reads as shredded, for everyone, for good. New personal data for it is refused." }
                li { "Snapshots of the streams that held its data are deleted, cached states dropped, and every projection that read its data is rebuilt." }
                li { "This cannot be undone. Copies made before (backups of the key file, exports with keys) are not reached." }
            }
            form.stack method="post" action={ (BASE) "/forget" } {
                (csrf_field(&viewer))
                input type="hidden" name="subject" value=(subject);
                label { "Reason (stored in the log: no personal data)" input type="text" name="reason"; }
                div {
                    button.danger type="submit" { "Forget " (subject) }
                    " "
                    a href={ (BASE) "/integrity" } { "Cancel" }
                }
            }
        }
    };
    Ok(page(
        &viewer,
        Nav::Integrity,
        &format!("Forget {subject}?"),
        body,
    ))
}

#[derive(Deserialize)]
pub struct ForgetForm {
    subject: String,
    reason: Option<String>,
}

/// `POST /ui/forget` (admin).
pub async fn forget(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Form(form): Form<ForgetForm>,
) -> Result<Markup, UiError> {
    viewer.require(Role::Admin)?;
    let subject = form.subject.trim().to_owned();
    let request = ForgetRequest {
        user: viewer.caller.as_ref().map(|c| c.name.clone()),
        reason: form
            .reason
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty()),
    };
    let forgetting = ui.host().forgetting().clone();
    let target = subject.clone();
    let report = blocking(move || Ok(forgetting.forget(&target, &request)?)).await?;
    let body = html! {
        p.ok { "Subject " code { (report.subject_id) } " is forgotten." }
        dl.facts {
            dt { "Key" } dd { (match report.key { Forgot::KeyErased => "erased", Forgot::AlreadyForgotten => "was already erased", Forgot::NoKey => "there was none (no personal data stored)" }) }
            dt { "Erasure event" } dd { a href=(event_href(report.erasure_position)) { "position " (report.erasure_position) } }
            dt { "Streams with its data" } dd { @for s in &report.streams { a href=(stream_href(s)) { (s) } " " } }
            dt { "Event types" } dd { (report.event_types.join(", ")) }
            dt { "Snapshots deleted" } dd { (report.snapshots_deleted) }
            dt { "Projections rebuilt" } dd { (report.projections_rebuilt.join(", ")) }
            @if !report.projections_pending.is_empty() {
                dt { "Still rebuilding" } dd { (report.projections_pending.join(", ")) " (their old read models serve until they switch)" }
            }
        }
        p { a href={ (BASE) "/all" (query(&[("types", "SubjectForgotten".into())])) } { "All erasures in $all" } " · " a href={ (BASE) "/integrity" } { "Back" } }
    };
    Ok(page(
        &viewer,
        Nav::Integrity,
        &format!("Forgot {subject}"),
        body,
    ))
}

/// `POST /ui/verify` (admin): re-check the whole log.
pub async fn verify(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Markup, UiError> {
    viewer.require(Role::Admin)?;
    let store = ui.host().store().clone();
    let started = std::time::Instant::now();
    let report = blocking(move || Ok(store.verify()?)).await?;
    let seconds = started.elapsed().as_secs_f64();
    let body = html! {
        @match &report.first_bad {
            None => p.ok role="status" { "Intact: " (report.events_checked) " events checked, hash chain intact up to position " (report.head) "." },
            Some(bad) => p.problem role="alert" { "Corrupt at position " a href=(event_href(bad.position)) { (bad.position) } ": " (bad.reason) " (" (report.events_checked) " events checked before it)." },
        }
        p.note { "Took " (format!("{seconds:.2}")) " s." }
        p { a href={ (BASE) "/integrity" } { "Back" } }
    };
    Ok(page(&viewer, Nav::Integrity, "Verification", body))
}
