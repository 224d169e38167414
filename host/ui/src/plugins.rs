//! Plugins: each with its kind, version, hash, size and limits, and an upload of a new
//! version through the same core call and checks as `PUT /plugins/{name}`
//! (recorded in `$plugins` through [`eshost_core::cluster::plugins::PluginLog::activate`], like `PUT /plugins/{name}`).

use std::path::Path as FilePath;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use eshost_core::cluster::plugins::{ActivateError, ActivationSource};
use eshost_core::config::Role;
use eshost_core::projection::SwapOutcome;
use eshost_core::reactor::ReactorError;
use maud::{Markup, html};

use crate::markup::{Nav, UiError, bytes, csrf_field, page, segment, stream_href};
use crate::session::Viewer;
use crate::upload::Upload;
use crate::{BASE, Ui};

struct Row {
    name: String,
    kind: &'static str,
    version: String,
    hash: String,
    wit: Option<String>,
    handles: Vec<String>,
    file: Option<std::path::PathBuf>,
}

/// The size of the configured file when it is the version running (its hash matches);
/// otherwise the running version came from an upload, whose size is not kept.
fn size(file: Option<&FilePath>, hash: &str) -> Option<u64> {
    let bytes = std::fs::read(file?).ok()?;
    (blake3::hash(&bytes).to_hex().as_str() == hash).then_some(bytes.len() as u64)
}

fn rows(ui: &Ui) -> Vec<Row> {
    let host = ui.host();
    let config = host.config();
    let file_of = |entries: Vec<(&String, &std::path::PathBuf)>, name: &str| {
        entries
            .into_iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, p)| p.clone())
    };
    let mut rows = Vec::new();
    for info in host.aggregates().types() {
        let file = file_of(
            config
                .aggregates
                .iter()
                .map(|e| (&e.name, &e.plugin))
                .collect(),
            &info.name,
        );
        rows.push(Row {
            name: info.name,
            kind: "aggregate",
            version: info.version,
            hash: info.content_hash,
            wit: Some(info.wit_version),
            handles: info.handles,
            file,
        });
    }
    for plugin in host.upcasters().plugins() {
        let info = plugin.info();
        let file = file_of(
            config
                .upcasters
                .iter()
                .map(|e| (&e.name, &e.plugin))
                .collect(),
            &info.name,
        );
        rows.push(Row {
            name: info.name.clone(),
            kind: "upcaster",
            version: info.version.clone(),
            hash: info.content_hash.clone(),
            wit: Some(info.wit_version.clone()),
            handles: info.handles.clone(),
            file,
        });
    }
    for status in host.projections().statuses() {
        let file = file_of(
            config
                .projections
                .iter()
                .map(|e| (&e.name, &e.plugin))
                .collect(),
            &status.name,
        );
        rows.push(Row {
            name: status.name,
            kind: "projection",
            version: status.active.version,
            hash: status.active.hash,
            wit: None,
            handles: Vec::new(),
            file,
        });
    }
    let reactors = host.reactors();
    for name in reactors.names() {
        let Some(plugin) = reactors.plugin(&name) else {
            continue;
        };
        let info = plugin.info();
        let file = file_of(
            config
                .reactors
                .iter()
                .map(|e| (&e.name, &e.plugin))
                .collect(),
            &name,
        );
        rows.push(Row {
            name,
            kind: "reactor",
            version: info.version.clone(),
            hash: info.content_hash.clone(),
            wit: Some(info.wit_version.clone()),
            handles: info.handles.clone(),
            file,
        });
    }
    rows
}

/// `GET /ui/plugins`.
pub async fn list(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Markup, UiError> {
    let limits = ui.host().config().limits.clone();
    let rows = tokio::task::spawn_blocking({
        let ui = ui.clone();
        move || {
            rows(&ui)
                .into_iter()
                .map(|row| {
                    let size = size(row.file.as_deref(), &row.hash);
                    (row, size)
                })
                .collect::<Vec<_>>()
        }
    })
    .await?;
    let body = html! {
        p { "Every plugin runs under the host's limits: "
            (limits.time.as_millis()) " ms and " (bytes(limits.memory_bytes as u64)) " of memory per call, "
            (bytes(limits.output_bytes as u64)) " of output, " (bytes(limits.log_bytes as u64)) " of log, "
            (limits.scan_entries) " entries per read-model scan." }
        p.note { "Every version a plugin ran is recorded in the system stream " a href=(stream_href("$plugins")) { "$plugins" } " (" code { "eshost plugin history NAME" } "); the events a version wrote carry its hash, which " a href={ (BASE) "/all" } { "$all" } " filters by." }
        @for (row, size) in &rows {
            section.plugin id={ "plugin-" (segment(&row.name)) } aria-labelledby={ "plugin-h-" (segment(&row.name)) } {
                h2 id={ "plugin-h-" (segment(&row.name)) } { (row.name) " (" (row.kind) ")" }
                dl.facts {
                    dt { "Version" } dd { (row.version) }
                    dt { "Content hash" } dd { code { (row.hash) } }
                    @if let Some(wit) = &row.wit { dt { "WIT package" } dd { "eshost:plugin@" (wit) } }
                    dt { "Size" } dd { @match size { Some(size) => (bytes(*size)), None => "not recorded (uploaded while running)" } }
                    @if let Some(file) = &row.file { dt { "Configured file" } dd { code { (file.display()) } } }
                    @if !row.handles.is_empty() { dt { "Handles" } dd { (row.handles.join(", ")) } }
                    dt { "Events it wrote" } dd { a href={ (BASE) "/all?from=1&plugin=" (row.hash) } { "$all filtered by its hash" } }
                }
                @if viewer.can(Role::Admin) {
                    form.stack method="post" enctype="multipart/form-data" action={ (BASE) "/plugins/" (segment(&row.name)) } {
                        (csrf_field(&viewer))
                        label { "New version of " (row.name) " (a .wasm component)"
                            input type="file" name="plugin" accept=".wasm,application/wasm" required;
                        }
                        button type="submit" { "Upload and swap" }
                    }
                }
            }
        }
    };
    Ok(page(&viewer, Nav::Plugins, "Plugins", body))
}

/// `POST /ui/plugins/{name}` (admin, multipart): swap in the uploaded version.
pub async fn upload(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Path(name): Path<String>,
    upload: Upload,
) -> Result<Markup, UiError> {
    viewer.require(Role::Admin)?;
    if upload.file.is_empty() {
        return Err(UiError::bad_request("choose a .wasm file to upload"));
    }
    let host = ui.host().clone();
    let target = name.clone();
    let who = viewer
        .caller
        .as_ref()
        .map_or("open mode", |c| c.name.as_str())
        .to_owned();
    let user = viewer.caller.as_ref().map(|c| c.name.clone());
    // Recorded in `$plugins` like an upload through the API, so every node follows.
    let activated = tokio::task::spawn_blocking(move || {
        host.plugin_log()
            .activate(&target, upload.file, ActivationSource::Upload, user, None)
    })
    .await?
    .map_err(|error| match error {
        ActivateError::Unknown(_) => UiError::not_found(error.to_string()),
        ActivateError::BadPlugin(_)
        | ActivateError::Chain { .. }
        | ActivateError::UnknownVersion { .. } => UiError::bad_request(error.to_string()),
        ActivateError::CheckFailed(_) => {
            UiError::new(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
        }
        ActivateError::Projection(error) => error.into(),
        ActivateError::Reactor(ReactorError::BadPlugin(_)) => {
            UiError::bad_request(error.to_string())
        }
        ActivateError::Reactor(_) | ActivateError::Store { .. } => {
            UiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
        }
    })?;
    tracing::info!(plugin = %name, user = %who, position = activated.position, "plugin swapped from the admin UI");
    let unchanged =
        activated.previous_hash.as_deref() == Some(activated.info.content_hash.as_str());
    let body = html! {
        @match (&activated.projection, unchanged) {
            (Some(SwapOutcome::Rebuilding { generation }), _) => {
                p.ok { "Accepted: " (name) " rebuilds in generation " (generation) " beside the active one and switches in when it has caught up." }
            }
            (Some(SwapOutcome::Continued), _) => {
                p.ok { "The new version continues the active read model." }
            }
            (Some(SwapOutcome::Unchanged), _) | (None, true) => {
                p { "The upload is the version already running; nothing changed." }
            }
            (None, false) => {
                p.ok { "Swapped: " (name) " → " (activated.info.version) "." }
                @if let Some(upcaster) = &activated.upcaster {
                    p { "Every later read goes through the new upcaster chain: cached states and " (upcaster.snapshots_deleted) " snapshots built through the old one were dropped." }
                    @if !upcaster.projections_rebuilding.is_empty() {
                        p { "Rebuilding through the new chain: " (upcaster.projections_rebuilding.join(", ")) "." }
                    }
                } @else {
                    p { "The next commands are decided by " code { (activated.info.content_hash) } "." }
                }
            }
        }
        p { a href={ (BASE) "/plugins#plugin-" (segment(&name)) } { "Back to the plugins" } }
        @if activated.projection.is_some() {
            p { a href={ (BASE) "/projections/" (segment(&name)) } { "Follow the rebuild" } }
        }
    };
    Ok(page(
        &viewer,
        Nav::Plugins,
        &format!("Upload of {name}"),
        body,
    ))
}
