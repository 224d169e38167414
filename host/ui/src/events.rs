//! Streams and events: streams by prefix (paged by id, never a scan of the log), a stream's
//! events, `$all` from a position or a time with filters, and one event with its hashes, its
//! personal data (or why it is not shown) and its correlation chain.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use eshost_core::access::disclose;
use eshost_store::{EventStore, RecordedEvent, StreamRead};
use maud::{Markup, html};
use serde::Deserialize;

use crate::markup::{
    self, Nav, UiError, event_href, json_block, page, preview, query, short_hash, stream_href, when,
};
use crate::scan::{self, Filters};
use crate::session::Viewer;
use crate::{BASE, Ui, time};

/// Rows per page.
const PAGE: usize = 50;

/// A number from a form field: empty means none.
pub fn number(text: &Option<String>, what: &str) -> Result<Option<u64>, UiError> {
    match text.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            UiError::bad_request(format!("{what} must be a whole number, not {text:?}"))
        }),
    }
}

/// Runs a read off the async threads.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, UiError> + Send + 'static,
) -> Result<T, UiError> {
    tokio::task::spawn_blocking(work).await?
}

/// What the personal-data column says of an event.
fn personal_marker(event: &RecordedEvent, viewer: &Viewer) -> &'static str {
    match (&event.subject_id, event.shredded, &event.personal_data) {
        (None, _, _) => "",
        (Some(_), true, _) => "shredded",
        (Some(_), false, Some(_)) => "shown",
        (Some(_), false, None) if !viewer.discloses() => "hidden",
        (Some(_), false, None) => "none",
    }
}

/// A table of events.
pub fn event_table(events: &[RecordedEvent], viewer: &Viewer, caption: &str) -> Markup {
    html! {
        table {
            caption.note { (caption) }
            thead { tr {
                th.num scope="col" { "Position" } th scope="col" { "Stream" } th.num scope="col" { "Version" }
                th scope="col" { "Type" } th scope="col" { "Recorded (UTC)" } th scope="col" { "Data" }
                th scope="col" { "Personal data" }
            } }
            tbody {
                @for event in events { (event_row(event, viewer)) }
            }
        }
    }
}

/// One row of an event table.
pub fn event_row(event: &RecordedEvent, viewer: &Viewer) -> Markup {
    html! {
        tr data-position=(event.position) {
            td.num { a href=(event_href(event.position)) { (event.position) } }
            td { a href=(stream_href(&event.stream_id)) { (event.stream_id) } }
            td.num { (event.stream_version) }
            td { (event.event_type) @if event.schema_version != 1 { " v" (event.schema_version) } }
            td { (when(event.recorded_at)) }
            td { code { (preview(&event.data, 100)) } }
            td { (personal_marker(event, viewer)) }
        }
    }
}

#[derive(Deserialize, Default)]
pub struct StreamsParams {
    prefix: Option<String>,
    after: Option<String>,
}

/// `GET /ui/streams`: streams by prefix, in id order, a page at a time.
pub async fn streams(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Query(params): Query<StreamsParams>,
) -> Result<Markup, UiError> {
    let prefix = params.prefix.unwrap_or_default();
    let after = params.after.filter(|a| !a.is_empty());
    let store = ui.host().store().clone();
    let (prefix_read, after_read) = (prefix.clone(), after.clone());
    let mut rows =
        blocking(move || Ok(store.streams(&prefix_read, after_read.as_deref(), PAGE + 1)?)).await?;
    let more = rows.len() > PAGE;
    rows.truncate(PAGE);
    let next = rows.last().map(|(id, _)| id.clone()).filter(|_| more);
    let body = html! {
        form.filters method="get" action={ (BASE) "/streams" } {
            label { "Stream id prefix" input type="text" name="prefix" value=(prefix); }
            button type="submit" { "List" }
        }
        p.note { "Streams in id order, " (PAGE) " a page, read from the stream index (no scan of the log). System streams start with $." }
        table {
            thead { tr {
                th scope="col" { "Stream" } th.num scope="col" { "Version" } th.num scope="col" { "First position" }
                th.num scope="col" { "Last position" } th scope="col" { "Created (UTC)" } th scope="col" { "Updated (UTC)" }
            } }
            tbody {
                @for (id, info) in &rows {
                    tr {
                        td { a href=(stream_href(id)) { (id) } }
                        td.num { (info.version) }
                        td.num { a href=(event_href(info.first_position)) { (info.first_position) } }
                        td.num { a href=(event_href(info.last_position)) { (info.last_position) } }
                        td { (when(info.created_at)) }
                        td { (when(info.updated_at)) }
                    }
                }
            }
        }
        @if rows.is_empty() { p { "No stream has an id starting with " code { (prefix) } "." } }
        nav.pager aria-label="Pages of streams" {
            @if after.is_some() { a href={ (BASE) "/streams" (query(&[("prefix", prefix.clone())])) } { "First page" } }
            @if let Some(next) = next {
                a href={ (BASE) "/streams" (query(&[("prefix", prefix.clone()), ("after", next)])) } rel="next" { "Next page" }
            }
        }
    };
    Ok(page(&viewer, Nav::Streams, "Streams", body))
}

#[derive(Deserialize, Default)]
pub struct StreamParams {
    from: Option<String>,
    backward: Option<String>,
}

/// `GET /ui/streams/{id}`: a stream's events, a page at a time.
pub async fn stream(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Path(stream_id): Path<String>,
    Query(params): Query<StreamParams>,
) -> Result<Markup, UiError> {
    let backward = params
        .backward
        .as_deref()
        .is_some_and(|b| b == "true" || b == "1");
    let from = number(&params.from, "from")?;
    let store = ui.host().store().clone();
    let id = stream_id.clone();
    let allowed = viewer.discloses();
    let (info, events) = blocking(move || {
        let Some(info) = store.stream_info(&id)? else {
            return Err(UiError::not_found(format!("stream {id:?} does not exist")));
        };
        let mut read = if backward {
            StreamRead::backward()
        } else {
            StreamRead::forward()
        };
        if let Some(from) = from {
            read.from_version = from;
        }
        read.limit = PAGE;
        let mut events = store.read_stream(&id, &read)?;
        disclose(store.as_ref(), &mut events, allowed);
        Ok((info, events))
    })
    .await?;
    // The aggregate whose commands wrote the stream, by its id (the stream without the type's
    // prefix), when that type is loaded.
    let aggregate = events
        .first()
        .and_then(|e| serde_json::from_str::<serde_json::Value>(&e.metadata).ok())
        .and_then(|m| {
            m.get("aggregate_type")
                .and_then(|t| t.as_str())
                .map(str::to_owned)
        })
        .and_then(|t| {
            let id = ui.host().aggregates().aggregate_id_of(&t, &stream_id)?;
            Some((t, id))
        });
    let here = stream_href(&stream_id);
    let (first, last) = (
        events.iter().map(|e| e.stream_version).min().unwrap_or(0),
        events.iter().map(|e| e.stream_version).max().unwrap_or(0),
    );
    let body = html! {
        dl.facts {
            dt { "Version" } dd { (info.version) }
            dt { "Positions" } dd { (info.first_position) " – " (info.last_position) }
            dt { "Created" } dd { (when(info.created_at)) }
            dt { "Updated" } dd { (when(info.updated_at)) }
            @if let Some((aggregate_type, aggregate_id)) = &aggregate {
                dt { "Aggregate" }
                dd { a href={ (BASE) "/aggregates/" (markup::segment(aggregate_type)) "/" (markup::segment(aggregate_id)) } { "Timeline of this " (aggregate_type) } }
            }
        }
        nav.pager aria-label="Pages of this stream" {
            a href=(here) { "Oldest" }
            a href={ (here) "?backward=true" } { "Newest" }
            @if !backward && last < info.version && last > 0 { a href={ (here) "?from=" (last + 1) } rel="next" { "Next" } }
            @if backward && first > 1 { a href={ (here) "?backward=true&from=" (first - 1) } rel="next" { "Older" } }
        }
        (event_table(&events, &viewer, if backward { "Newest first" } else { "Oldest first" }))
    };
    Ok(page(
        &viewer,
        Nav::Streams,
        &format!("Stream {stream_id}"),
        body,
    ))
}

/// The filter fields of `$all` and the live tail, as a form sends them.
#[derive(Deserialize, Default, Clone)]
pub struct FilterParams {
    pub types: Option<String>,
    pub prefix: Option<String>,
    pub correlation: Option<String>,
    pub causation: Option<String>,
    pub plugin: Option<String>,
}

impl FilterParams {
    pub fn filters(&self) -> Filters {
        let text = |v: &Option<String>| v.as_deref().unwrap_or_default().trim().to_owned();
        Filters {
            types: text(&self.types)
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
            stream_prefix: text(&self.prefix),
            correlation: text(&self.correlation),
            causation: text(&self.causation),
            plugin: text(&self.plugin),
        }
    }

    /// The filters as query pairs, to carry them over to another page.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let f = self.filters();
        vec![
            ("types", f.types.join(",")),
            ("prefix", f.stream_prefix),
            ("correlation", f.correlation),
            ("causation", f.causation),
            ("plugin", f.plugin),
        ]
    }

    /// The filter inputs of a form.
    pub fn inputs(&self) -> Markup {
        let f = self.filters();
        html! {
            label { "Event types (comma-separated)" input type="text" name="types" value=(f.types.join(",")); }
            label { "Stream id prefix" input type="text" name="prefix" value=(f.stream_prefix); }
            label { "Correlation id" input type="text" name="correlation" value=(f.correlation); }
            label { "Causation id" input type="text" name="causation" value=(f.causation); }
            label { "Plugin hash (or its start)" input type="text" name="plugin" value=(f.plugin); }
        }
    }
}

#[derive(Deserialize, Default)]
pub struct AllParams {
    from: Option<String>,
    at: Option<String>,
    before: Option<String>,
    // Flattened fields are strings only: flattening cannot parse numbers from a query.
    #[serde(flatten)]
    filters: FilterParams,
}

/// `GET /ui/all`: `$all` newest first, or from a position or a time, filtered.
pub async fn all(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Query(params): Query<AllParams>,
) -> Result<Markup, UiError> {
    let filter_params = params.filters;
    let filters = filter_params.filters();
    let at_text = params.at.clone().unwrap_or_default();
    let at = match at_text.trim() {
        "" => None,
        text => Some(time::parse(text).ok_or_else(|| {
            UiError::bad_request(format!(
                "{text:?} is not a time (YYYY-MM-DD HH:MM:SS UTC, or ms)"
            ))
        })?),
    };
    let from = number(&params.from, "from")?;
    let before = number(&params.before, "before")?;
    let store = ui.host().store().clone();
    let allowed = viewer.discloses();
    let scan_filters = filters.clone();
    let (page_read, forward, head) = blocking(move || {
        let head = store.head();
        let start = match (from, at) {
            (Some(from), _) => Some(from),
            (None, Some(at)) => Some(store.position_at(at.saturating_sub(1))? + 1),
            (None, None) => None,
        };
        let mut read = match start {
            Some(start) => (
                scan::forward(store.as_ref(), start, PAGE, &scan_filters)?,
                true,
            ),
            None => (
                scan::backward(
                    store.as_ref(),
                    before.unwrap_or(u64::MAX),
                    PAGE,
                    &scan_filters,
                )?,
                false,
            ),
        };
        disclose(store.as_ref(), &mut read.0.events, allowed);
        Ok((read.0, read.1, head))
    })
    .await?;
    let mut carried = filter_params.pairs();
    let link = |extra: (&'static str, String), carried: &mut Vec<(&'static str, String)>| {
        carried.push(extra);
        let href = format!("{BASE}/all{}", query(carried));
        carried.pop();
        href
    };
    let (low, high) = page_read.scanned;
    let body = html! {
        form.filters method="get" action={ (BASE) "/all" } {
            label { "From position" input type="number" min="1" name="from" value=[from]; }
            label { "Or from a time (UTC)" input type="text" name="at" value=(at_text) placeholder="2026-05-01 12:00:00"; }
            (filter_params.inputs())
            button type="submit" { "Read" }
        }
        p.note {
            "Head: " (head) ". "
            @if filters.any() {
                "Filtered pages scan at most " (scan::SCAN_WINDOW) " positions each; this one covered positions "
                (low) "–" (high) ". "
            }
            @if forward { "Oldest first." } @else { "Newest first." }
        }
        nav.pager aria-label="Pages of $all" {
            a href=(link(("before", String::new()), &mut carried)) { "Newest" }
            @if let Some(next) = page_read.next {
                @if forward {
                    a href=(link(("from", next.to_string()), &mut carried)) rel="next" { "Continue from position " (next) }
                } @else {
                    a href=(link(("before", next.to_string()), &mut carried)) rel="next" { "Older (from position " (next) " down)" }
                }
            }
        }
        (event_table(&page_read.events, &viewer, if forward { "Oldest first" } else { "Newest first" }))
        @if page_read.events.is_empty() { p { "No event in this range passes the filters." } }
    };
    Ok(page(&viewer, Nav::All, "$all", body))
}

/// The event at `position` with its personal data disclosed for `allowed`, and the hash of
/// the event before it.
fn load_event(
    store: &dyn EventStore,
    position: u64,
    allowed: bool,
) -> Result<(RecordedEvent, Option<[u8; 32]>), UiError> {
    let read = |position: u64| -> Result<Option<RecordedEvent>, UiError> {
        let events = store.read_all(&eshost_store::AllRead {
            limit: 1,
            ..eshost_store::AllRead::from(position)
        })?;
        Ok(events.into_iter().next().filter(|e| e.position == position))
    };
    let mut event = read(position)?
        .ok_or_else(|| UiError::not_found(format!("no event at position {position}")))?;
    disclose(store, std::slice::from_mut(&mut event), allowed);
    let previous = match position {
        1 => Some([0u8; 32]),
        _ => read(position - 1)?.map(|e| e.hash),
    };
    Ok((event, previous))
}

fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET /ui/events/{position}`.
pub async fn event(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Path(position): Path<u64>,
) -> Result<Markup, UiError> {
    let store = ui.host().store().clone();
    let allowed = viewer.discloses();
    let chain = blocking(move || {
        let (event, previous) = load_event(store.as_ref(), position, allowed)?;
        let links = scan::links(&event.metadata);
        // The cause: an event whose id is the causation id, else the command that caused it.
        let cause = match links.causation_id.as_deref().and_then(|c| c.parse().ok()) {
            Some(id) => store.event_position(id)?,
            None => None,
        };
        let caused = scan::forward(
            store.as_ref(),
            position + 1,
            PAGE,
            &Filters {
                causation: event.event_id.to_string(),
                ..Filters::default()
            },
        )?;
        let correlated = match &links.correlation_id {
            Some(correlation) => Some(scan::around(
                store.as_ref(),
                position,
                PAGE,
                &Filters {
                    correlation: correlation.clone(),
                    ..Filters::default()
                },
            )?),
            None => None,
        };
        let mut caused = caused;
        let mut correlated = correlated;
        disclose(store.as_ref(), &mut caused.events, allowed);
        if let Some(correlated) = correlated.as_mut() {
            disclose(store.as_ref(), &mut correlated.events, allowed);
        }
        Ok((event, previous, links, cause, caused, correlated))
    })
    .await?;
    let (event, previous, links, cause, caused, correlated) = chain;
    let metadata: serde_json::Value =
        serde_json::from_str(&event.metadata).unwrap_or(serde_json::Value::Null);
    let text = |key: &str| {
        metadata
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let raw = format!("{}/raw", event_href(event.position));
    let body = html! {
        dl.facts {
            dt { "Position" } dd { (event.position) }
            dt { "Stream" } dd { a href=(stream_href(&event.stream_id)) { (event.stream_id) } " version " (event.stream_version) }
            dt { "Type" } dd { (event.event_type) " (schema version " (event.schema_version) ")" }
            dt { "Event id" } dd { code { (event.event_id) } }
            dt { "Recorded" } dd { (when(event.recorded_at)) }
            dt { "Hash" } dd { code { (hex(&event.hash)) } }
            dt { "Previous hash" } dd {
                @match &previous {
                    Some(previous) if event.position == 1 => { code { (hex(previous)) } " (the start of the chain)" },
                    Some(previous) => a href=(event_href(event.position - 1)) { code { (hex(previous)) } },
                    None => "not found",
                }
            }
            @if let Some(subject) = &event.subject_id { dt { "Data subject" } dd { code { (subject) } } }
        }
        nav.pager aria-label="Neighbours" {
            @if event.position > 1 { a href=(event_href(event.position - 1)) { "Previous event" } }
            a href=(event_href(event.position + 1)) { "Next event" }
            a href=(raw) { "As JSON" }
        }
        h2 { "Data" }
        (json_block("Data", &event.data, Some(&raw)))
        h2 { "Metadata" }
        (json_block("Metadata", &event.metadata, Some(&raw)))
        h2 { "Personal data" }
        @match (&event.subject_id, event.shredded, &event.personal_data) {
            (None, _, _) => p { "This event carries no personal data." },
            (Some(_), true, _) => p { strong { "Shredded" } ": the subject was forgotten and its key erased; the data cannot be read by anyone." },
            (Some(_), false, Some(personal)) => (json_block("Personal data", personal, Some(&raw))),
            (Some(_), false, None) if !viewer.discloses() => p { "Hidden: your token may not see personal data (" code { "personal_data = true" } " in its " code { "[[tokens]]" } " entry allows it)." },
            (Some(_), false, None) => p { "None." },
        }
        @if let Some(hash) = text("plugin_hash") {
            h2 { "Written by" }
            p {
                @if let Some(kind) = text("aggregate_type") { "Aggregate plugin " a href={ (BASE) "/plugins#plugin-" (markup::segment(&kind)) } { (kind) } " " }
                @if let Some(version) = text("plugin_version") { "version " (version) " " }
                "(" (short_hash(&hash)) "). "
                a href={ (BASE) "/all" (query(&[("plugin", hash.clone()), ("from", "1".into())])) } { "Events written by this plugin version" }
            }
        }
        h2 { "Correlation chain" }
        dl.facts {
            dt { "Correlation id" } dd { @match &links.correlation_id { Some(c) => code { (c) }, None => "none" } }
            dt { "Caused by" } dd {
                @match (cause, &links.causation_id) {
                    (Some(position), _) => a href=(event_href(position)) { "the event at position " (position) },
                    (None, Some(causation)) => { "command " code { (causation) } " (not an event)" },
                    (None, None) => "nothing recorded",
                }
            }
        }
        h3 { "Events caused by this one" }
        @if caused.events.is_empty() {
            p.note { "None in positions " (caused.scanned.0) "–" (caused.scanned.1) "." }
        } @else {
            (event_table(&caused.events, &viewer, "Events whose causation id is this event's id"))
        }
        @if let (Some(correlation), Some(correlated)) = (&links.correlation_id, &correlated) {
            h3 { "Events of the same correlation" }
            (event_table(&correlated.events, &viewer, &format!("Positions {}–{} searched", correlated.scanned.0, correlated.scanned.1)))
            p { a href={ (BASE) "/all" (query(&[("correlation", correlation.clone()), ("from", "1".into())])) } { "Search the whole log for this correlation id" } }
        }
    };
    Ok(page(
        &viewer,
        Nav::All,
        &format!("Event {}", event.position),
        body,
    ))
}

/// `GET /ui/events/{position}/raw`: the event as the API shows it, as JSON.
pub async fn raw_event(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Path(position): Path<u64>,
) -> Result<Response, UiError> {
    let store = ui.host().store().clone();
    let allowed = viewer.discloses();
    let (event, _) = blocking(move || load_event(store.as_ref(), position, allowed)).await?;
    let shown = eshost_api::Event::from(&event);
    Ok(axum::Json(shown).into_response())
}
