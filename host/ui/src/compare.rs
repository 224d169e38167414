//! Compare two versions of a projection: an uploaded candidate replays the whole history
//! (through the live upcaster chain) into memory beside the live projection, and the page
//! shows the rows that differ, key by key ([`eshost_core::projection::replay`]). The replay
//! runs on a thread of its own; its page follows the progress.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Redirect;
use eshost_core::Host;
use eshost_core::config::Role;
use eshost_core::projection::replay::{DiffReport, DiffSample, diff_views, replay_into_memory};
use eshost_runtime::{LoadedPlugin, PluginKind};
use maud::{Markup, html};

use crate::markup::{Nav, UiError, csrf_field, json_block, page, short_hash};
use crate::session::Viewer;
use crate::upload::Upload;
use crate::{BASE, Ui};

/// Comparisons kept for their pages.
const KEPT_JOBS: usize = 8;
/// Differing rows shown of each kind (added, removed, changed).
const SAMPLES: usize = 100;

/// What a finished comparison found.
#[derive(Debug)]
struct Outcome {
    version: String,
    hash: String,
    handled: u64,
    keys: u64,
    seconds: f64,
    report: DiffReport,
}

#[derive(Debug)]
struct Job {
    id: u64,
    projection: String,
    file_name: String,
    head: u64,
    started: Instant,
    reached: AtomicU64,
    outcome: Mutex<Option<Result<Outcome, String>>>,
}

impl Job {
    fn done(&self) -> bool {
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

/// The comparisons of this UI, newest last.
#[derive(Debug, Default)]
pub struct Jobs {
    next: AtomicU64,
    kept: Mutex<VecDeque<Arc<Job>>>,
}

impl Jobs {
    fn get(&self, id: u64) -> Option<Arc<Job>> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter().find(|j| j.id == id).cloned()
    }

    fn all(&self) -> Vec<Arc<Job>> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter().rev().cloned().collect()
    }

    /// Registers a job, unless one is running (a replay takes a core and memory).
    fn add(&self, projection: &str, file_name: &str, head: u64) -> Result<Arc<Job>, UiError> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = kept.iter().find(|j| !j.done()) {
            return Err(UiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "comparison {} of {:?} is still running; one runs at a time",
                    running.id, running.projection
                ),
            ));
        }
        let job = Arc::new(Job {
            id: self.next.fetch_add(1, Ordering::Relaxed) + 1,
            projection: projection.to_owned(),
            file_name: file_name.to_owned(),
            head,
            started: Instant::now(),
            reached: AtomicU64::new(0),
            outcome: Mutex::new(None),
        });
        if kept.len() == KEPT_JOBS {
            kept.pop_front();
        }
        kept.push_back(job.clone());
        Ok(job)
    }
}

/// Replays `bytes` as a candidate for `job.projection` and compares it with the live one.
fn run(host: &Host, job: &Job, bytes: &[u8]) -> Result<Outcome, String> {
    let label = format!("candidate for {:?}", job.projection);
    let loaded = host
        .runtime()
        .load_bytes(bytes, &label, PluginKind::Projection)
        .map_err(|e| e.to_string())?;
    let LoadedPlugin::Projection(plugin) = loaded else {
        return Err("the runtime loaded another kind".into());
    };
    if plugin.info().name != job.projection {
        return Err(format!(
            "the candidate describes itself as {:?}, not {:?}",
            plugin.info().name,
            job.projection
        ));
    }
    let batch = host
        .projections()
        .config(&job.projection)
        .map_or(2000, |c| c.batch);
    let started = Instant::now();
    let (model, handled) = replay_into_memory(
        host.store().as_ref(),
        &plugin,
        batch,
        host.upcasters(),
        |reached| job.reached.store(reached, Ordering::Relaxed),
    )
    .map_err(|e| format!("the replay failed: {e:#}"))?;
    let report = diff_views(host.views(), &job.projection, &model, SAMPLES)
        .map_err(|e| format!("the comparison failed: {e:#}"))?;
    Ok(Outcome {
        version: plugin.info().version.clone(),
        hash: plugin.info().content_hash.clone(),
        handled,
        keys: model.entries.len() as u64,
        seconds: started.elapsed().as_secs_f64(),
        report,
    })
}

/// `GET /ui/compare` (admin): the form, and the recent comparisons.
pub async fn form(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Markup, UiError> {
    viewer.require(Role::Admin)?;
    let names = ui.host().projections().names();
    let body = html! {
        p { "Upload a candidate version of a projection: eshost replays the whole history through it (in memory, through the live upcasters) beside the live projection, and shows the rows that differ. Nothing live changes." }
        form.stack method="post" enctype="multipart/form-data" action={ (BASE) "/compare" } {
            (csrf_field(&viewer))
            label { "Projection" select name="projection" required { @for name in &names { option value=(name) { (name) } } } }
            label { "Candidate (a .wasm component)" input type="file" name="candidate" accept=".wasm,application/wasm" required; }
            button type="submit" { "Replay and compare" }
        }
        @let jobs = ui.inner.jobs.all();
        @if !jobs.is_empty() {
            h2 { "Recent comparisons" }
            ul { @for job in &jobs {
                li { a href={ (BASE) "/compare/" (job.id) } { "#" (job.id) " " (job.projection) " with " (job.file_name) }
                    @if !job.done() { " (running)" } }
            } }
        }
    };
    Ok(page(
        &viewer,
        Nav::Compare,
        "Compare projection versions",
        body,
    ))
}

/// `POST /ui/compare` (admin, multipart): start a comparison.
pub async fn start(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    upload: Upload,
) -> Result<Redirect, UiError> {
    viewer.require(Role::Admin)?;
    let projection = upload
        .field("projection")
        .ok_or_else(|| UiError::bad_request("pick a projection"))?
        .to_owned();
    if ui.host().projections().status(&projection).is_none() {
        return Err(UiError::not_found(format!(
            "no projection named {projection:?}"
        )));
    }
    if upload.file.is_empty() {
        return Err(UiError::bad_request("choose a candidate .wasm file"));
    }
    let file_name = upload.file_name.clone().unwrap_or_else(|| "upload".into());
    let job = ui
        .inner
        .jobs
        .add(&projection, &file_name, ui.host().store().head())?;
    let host = ui.host().clone();
    let runner = job.clone();
    let bytes = upload.file;
    std::thread::Builder::new()
        .name("eshost-ui-compare".into())
        .spawn(move || {
            let outcome = run(&host, &runner, &bytes);
            *runner.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
        })
        .map_err(|e| UiError::internal(format!("cannot start the comparison: {e}")))?;
    Ok(Redirect::to(&format!("{BASE}/compare/{}", job.id)))
}

fn samples(title: &str, rows: &[DiffSample], total: u64) -> Markup {
    let value = |label: &str, v: &Option<String>| match v {
        Some(v) => json_block(label, v, None),
        None => html! { span.note { "(absent)" } },
    };
    html! {
        @if total > 0 {
            h3 { (title) " (" (total) @if total > rows.len() as u64 { ", the first " (rows.len()) " shown" } ")" }
            table {
                thead { tr { th scope="col" { "Key" } th scope="col" { "Live" } th scope="col" { "Candidate" } } }
                tbody { @for row in rows {
                    tr { td { code { (row.key) } } td { (value("Live", &row.live)) } td { (value("Candidate", &row.replayed)) } }
                } }
            }
        }
    }
}

/// `GET /ui/compare/{job}` (admin): a comparison's progress, then the rows that differ.
pub async fn job(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<u64>,
) -> Result<Markup, UiError> {
    viewer.require(Role::Admin)?;
    let job = ui.inner.jobs.get(id).ok_or_else(|| {
        UiError::not_found(format!(
            "no comparison {id} (only the last {KEPT_JOBS} are kept)"
        ))
    })?;
    let here = format!("{BASE}/compare/{id}");
    let outcome = job.outcome.lock().unwrap_or_else(|e| e.into_inner());
    let body = html! {
        p { "Candidate " code { (job.file_name) } " for projection " a href={ (BASE) "/projections/" (crate::markup::segment(&job.projection)) } { (job.projection) } "." }
        @match outcome.as_ref() {
            None => {
                section #job hx-get=(here) hx-trigger="every 1s" hx-select="#job" hx-swap="outerHTML" aria-label="Progress" {
                    @let reached = job.reached.load(Ordering::Relaxed);
                    p role="status" { "Replaying: position " (reached) " of " (job.head) " after " (job.started.elapsed().as_secs()) " s. " a href=(here) { "Refresh" } }
                    progress value=(reached) max=(job.head.max(1)) aria-label="Replay progress" { (reached) " of " (job.head) }
                }
            }
            Some(Err(problem)) => section #job { p.problem role="alert" { (problem) } },
            Some(Ok(found)) => section #job {
                @let report = &found.report;
                dl.facts {
                    dt { "Candidate" } dd { "version " (found.version) " " (short_hash(&found.hash)) }
                    dt { "Replayed" } dd { (found.handled) " events up to position " (job.head) " in " (format!("{:.1}", found.seconds)) " s; " (found.keys) " rows" }
                    dt { "Live" } dd { "generation " (report.generation) " at position " (report.live_position) ", " (report.live_keys) " rows" }
                    dt { "Differences" } dd { (report.added) " only in the candidate, " (report.removed) " only live, " (report.changed) " changed, " (report.same) " the same" }
                }
                @if report.live_position != job.head {
                    p.note { "The live projection is at position " (report.live_position) " and the candidate replayed to " (job.head) ": rows written between the two may differ for that reason alone." }
                }
                @if report.added + report.removed + report.changed == 0 { p.ok { "No row differs." } }
                (samples("Changed rows", &report.changed_samples, report.changed))
                (samples("Only in the candidate", &report.added_samples, report.added))
                (samples("Only in the live projection", &report.removed_samples, report.removed))
            },
        }
    };
    Ok(page(
        &viewer,
        Nav::Compare,
        &format!("Comparison #{id}"),
        body,
    ))
}
