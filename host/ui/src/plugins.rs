//! Plugins: each with its kind, version, hash, size and limits, and an upload of a new
//! version through the same core call and checks as `PUT /plugins/{name}`
//! ([`eshost_core::host::Host::swap_plugin`]).

use std::path::Path as FilePath;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use eshost_core::config::Role;
use eshost_core::host::{PluginSwap, SwapError};
use eshost_core::projection::SwapOutcome;
use maud::{Markup, html};

use crate::markup::{Nav, UiError, bytes, csrf_field, page, segment};
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
    swappable: bool,
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
            swappable: true,
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
            swappable: false,
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
            swappable: true,
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
        p.note { "Plugin history: this host does not record earlier versions of a plugin (the events a version wrote carry its hash; " a href={ (BASE) "/all" } { "$all" } " filters by it)." }
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
                    @if row.swappable {
                        form.stack method="post" enctype="multipart/form-data" action={ (BASE) "/plugins/" (segment(&row.name)) } {
                            (csrf_field(&viewer))
                            label { "New version of " (row.name) " (a .wasm component)"
                                input type="file" name="plugin" accept=".wasm,application/wasm" required;
                            }
                            button type="submit" { "Upload and swap" }
                        }
                    } @else {
                        p.note { "Upcasters are fixed while the host runs: restart it with the new file." }
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
    let swapped = tokio::task::spawn_blocking(move || host.swap_plugin(&target, upload.file))
        .await?
        .map_err(|error| match error {
            SwapError::Unknown(_) => UiError::not_found(error.to_string()),
            SwapError::BadPlugin(_) | SwapError::NotSwappable(_) => {
                UiError::bad_request(error.to_string())
            }
            SwapError::Projection(error) => error.into(),
            SwapError::Failed(message) => UiError::new(StatusCode::INTERNAL_SERVER_ERROR, message),
        })?;
    let who = viewer
        .caller
        .as_ref()
        .map_or("open mode", |c| c.name.as_str());
    tracing::info!(plugin = %name, user = %who, "plugin swapped from the admin UI");
    let body = html! {
        @match &swapped {
            PluginSwap::Aggregate { old, new } if old.content_hash == new.content_hash => {
                p { "The upload is the version already running; nothing changed." }
            }
            PluginSwap::Aggregate { old, new } => {
                p.ok { "Swapped: " (name) " " (old.version) " → " (new.version) "." }
                p { "The next commands are decided by " code { (new.content_hash) } "." }
            }
            PluginSwap::Projection(SwapOutcome::Rebuilding { generation }) => {
                p.ok { "Accepted: " (name) " rebuilds in generation " (generation) " beside the active one and switches in when it has caught up." }
            }
            PluginSwap::Projection(SwapOutcome::Unchanged) => {
                p { "The upload is the version already running; nothing changed." }
            }
            PluginSwap::Projection(SwapOutcome::Continued) => {
                p.ok { "The new version continues the active read model." }
            }
        }
        p { a href={ (BASE) "/plugins#plugin-" (segment(&name)) } { "Back to the plugins" } }
        @if matches!(swapped, PluginSwap::Projection(_)) {
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
