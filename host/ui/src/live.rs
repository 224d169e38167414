//! The live parts: the overview (head, rates, projection lag, plugins, store size, health, the
//! newest events) and the live tail. Both are pages first; server-sent events over the
//! session cookie keep them current, read from the core's catch-up-then-live
//! [`Subscription`], so a tail resumed from the last position shown misses nothing.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use eshost_core::projection::ProjectionState;
use eshost_core::subscription::{Subscription, SubscriptionOptions};
use eshost_store::RecordedEvent;
use futures_util::Stream;
use maud::{Markup, html};
use serde::Deserialize;

use crate::events::{FilterParams, event_row, event_table, number};
use crate::markup::{Nav, UiError, bytes, page, query, short_hash, sparkline};
use crate::scan::{self, Filters};
use crate::session::Viewer;
use crate::{BASE, Ui};

/// Rows the overview's newest-events table keeps.
const OVERVIEW_ROWS: usize = 10;
/// Rows the live tail keeps by default, and at most.
const TAIL_ROWS: u64 = 100;
const MAX_TAIL_ROWS: u64 = 1000;
/// The most events one server-sent message carries (a burst becomes a few messages, not
/// thousands).
const BATCH: usize = 200;
/// How often the overview's figures are sent.
const STATS_EVERY: Duration = Duration::from_secs(2);

fn store_bytes(ui: &Ui) -> u64 {
    let dir = &ui.host().config().store;
    [eshost_store::EVENTS_FILE, eshost_core::views::VIEWS_FILE]
        .iter()
        .map(|file| std::fs::metadata(dir.join(file)).map_or(0, |m| m.len()))
        .sum()
}

/// The overview's figures: the part the live stream replaces.
fn stats(ui: &Ui) -> Markup {
    let host = ui.host();
    let rates = ui.inner.samples.rates();
    let statuses = host.projections().statuses();
    let failed: Vec<&str> = statuses
        .iter()
        .filter(|s| s.state == ProjectionState::Failed)
        .map(|s| s.name.as_str())
        .collect();
    let uptime = host.started().elapsed().as_secs();
    html! {
        div.tiles {
            div.tile { div.label { "Head position" } div.value #head { (host.store().head()) } }
            div.tile { div.label { "Appends (events/s)" } div.value { (format!("{:.1}", rates.appends)) } }
            div.tile { div.label { "Commands (per s)" } div.value { (format!("{:.1}", rates.commands)) } }
            div.tile { div.label { "Store size" } div.value { (bytes(store_bytes(ui))) } }
            div.tile { div.label { "Uptime" } div.value { (uptime / 3600) "h " (uptime / 60 % 60) "m" } }
            div.tile { div.label { "Health" } div.value {
                @if let Some(cause) = host.store().degraded() {
                    span.problem { "store read-only: " (cause) }
                } @else if failed.is_empty() { span.ok { "ok" } }
                @else { span.problem { "failed: " (failed.join(", ")) } }
            } }
        }
        h2 { "Projections" }
        table {
            thead { tr {
                th scope="col" { "Projection" } th scope="col" { "State" } th.num scope="col" { "Position" }
                th.num scope="col" { "Lag" } th scope="col" { "Lag trend" } th.num scope="col" { "Events/s" }
            } }
            tbody {
                @for status in &statuses {
                    tr {
                        td { a href={ (BASE) "/projections/" (crate::markup::segment(&status.name)) } { (status.name) } }
                        td { (crate::projections::state_label(status.state)) }
                        td.num { (status.position) }
                        td.num { (status.lag) }
                        td { (sparkline(&ui.inner.samples.lags(&status.name), &format!("lag of {} over the last minutes", status.name))) }
                        td.num { (format!("{:.0}", status.events_per_sec)) }
                    }
                }
            }
        }
        @if statuses.is_empty() { p.note { "No projection is configured." } }
    }
}

fn plugins_table(ui: &Ui) -> Markup {
    let host = ui.host();
    let mut rows: Vec<(String, &'static str, String, String)> = Vec::new();
    for info in host.aggregates().types() {
        rows.push((info.name, "aggregate", info.version, info.content_hash));
    }
    for plugin in host.upcasters().plugins() {
        let info = plugin.info();
        rows.push((
            info.name.clone(),
            "upcaster",
            info.version.clone(),
            info.content_hash.clone(),
        ));
    }
    for status in host.projections().statuses() {
        rows.push((
            status.name,
            "projection",
            status.active.version,
            status.active.hash,
        ));
    }
    html! {
        table {
            thead { tr { th scope="col" { "Plugin" } th scope="col" { "Kind" } th scope="col" { "Version" } th scope="col" { "Hash" } } }
            tbody {
                @for (name, kind, version, hash) in &rows {
                    tr {
                        td { a href={ (BASE) "/plugins#plugin-" (crate::markup::segment(name)) } { (name) } }
                        td { (kind) } td { (version) } td { (short_hash(hash)) }
                    }
                }
            }
        }
    }
}

/// `GET /ui`.
pub async fn overview(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Markup, UiError> {
    let store = ui.host().store().clone();
    let allowed = viewer.discloses();
    let mut newest = crate::events::blocking(move || {
        Ok(scan::backward(store.as_ref(), u64::MAX, OVERVIEW_ROWS, &Filters::default())?.events)
    })
    .await?;
    eshost_core::access::disclose(ui.host().store().as_ref(), &mut newest, allowed);
    let head = newest.first().map_or(0, |e| e.position);
    let body = html! {
        @if viewer.caller.is_none() {
            p.banner { "Open mode: no tokens are configured, so the UI, like the API, lets whoever reaches this loopback address do everything." }
        }
        div hx-ext="sse" sse-connect={ (BASE) "/overview/live?from=" (head + 1) } {
            section #stats aria-live="off" sse-swap="stats" { (stats(&ui)) }
            h2 { "Newest events" }
            table {
                caption.note { "Newest first; new events appear as they commit" }
                thead { tr {
                    th.num scope="col" { "Position" } th scope="col" { "Stream" } th.num scope="col" { "Version" }
                    th scope="col" { "Type" } th scope="col" { "Recorded (UTC)" } th scope="col" { "Data" }
                    th scope="col" { "Personal data" }
                } }
                tbody #newest sse-swap="events" hx-swap="afterbegin" data-keep=(OVERVIEW_ROWS) {
                    @for event in &newest { (event_row(event, &viewer)) }
                }
            }
        }
        h2 { "Plugins" }
        (plugins_table(&ui))
    };
    Ok(page(&viewer, Nav::Overview, "Overview", body))
}

/// Where a live stream starts: after `Last-Event-ID` when the browser reconnects, else
/// `?from=`.
fn first_position(headers: &HeaderMap, from: Option<u64>) -> Result<u64, UiError> {
    match headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        Some(last) => last
            .trim()
            .parse::<u64>()
            .ok()
            .and_then(|last| last.checked_add(1))
            .ok_or_else(|| UiError::bad_request("Last-Event-ID must be a position")),
        None => Ok(from.unwrap_or(1).max(1)),
    }
}

/// Rows of `events`, newest first, as one server-sent message (its id: the last position).
fn rows_message(events: &[RecordedEvent], viewer: &Viewer) -> Option<SseEvent> {
    let last = events.last()?.position;
    let rows = html! { @for event in events.iter().rev() { (event_row(event, viewer)) } };
    Some(
        SseEvent::default()
            .event("events")
            .id(last.to_string())
            .data(rows.into_string()),
    )
}

/// What a live stream waits on: the next events (a batch), a tick, or the end.
enum Next {
    Events(Vec<RecordedEvent>),
    Tick,
    End,
}

struct Live {
    subscription: Subscription,
    filters: Filters,
    shutdown: tokio::sync::watch::Receiver<bool>,
    tick: Option<tokio::time::Interval>,
}

impl Live {
    /// The next batch of events that pass the filters (what is already read, up to
    /// [`BATCH`]), or a tick.
    async fn next(&mut self) -> Next {
        if *self.shutdown.borrow() {
            return Next::End;
        }
        let tick = async {
            match self.tick.as_mut() {
                Some(tick) => {
                    tick.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        let first = tokio::select! {
            item = self.subscription.next() => item,
            _ = tick => return Next::Tick,
            _ = self.shutdown.wait_for(|ending| *ending) => return Next::End,
        };
        let mut batch = Vec::new();
        let mut item = first;
        loop {
            match item {
                Some(Ok(event)) => {
                    if self.filters.keeps(&event.stream_id, &event.metadata) {
                        batch.push(event);
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "a live page's subscription ended on a read error");
                    return Next::End;
                }
                None => return Next::End,
            }
            if batch.len() >= BATCH || self.subscription.buffered() == 0 {
                break;
            }
            item = self.subscription.next().await;
        }
        Next::Events(batch)
    }
}

fn live_stream(
    ui: &Ui,
    viewer: Viewer,
    from: u64,
    filters: Filters,
    with_stats: bool,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + use<> {
    let options = SubscriptionOptions {
        from,
        stream_prefix: filters.stream_prefix.clone(),
        event_types: filters.types.clone(),
        disclose: viewer.discloses(),
        ..SubscriptionOptions::default()
    };
    let live = Live {
        subscription: Subscription::new(ui.host().store().clone(), options),
        filters,
        shutdown: ui.inner.shutdown.clone(),
        tick: with_stats.then(|| {
            let mut tick = tokio::time::interval(STATS_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        }),
    };
    let ui = ui.clone();
    futures_util::stream::unfold((live, ui, viewer), |(mut live, ui, viewer)| async move {
        loop {
            let message = match live.next().await {
                Next::End => return None,
                Next::Tick => Some(
                    SseEvent::default()
                        .event("stats")
                        .data(stats(&ui).into_string()),
                ),
                Next::Events(batch) => rows_message(&batch, &viewer),
            };
            if let Some(message) = message {
                return Some((Ok(message), (live, ui, viewer)));
            }
        }
    })
}

#[derive(Deserialize, Default)]
pub struct LiveParams {
    from: Option<String>,
    rows: Option<String>,
    #[serde(flatten)]
    filters: FilterParams,
}

/// `GET /ui/overview/live`: the overview's figures every few seconds and its newest events as
/// they commit.
pub async fn overview_stream(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    Query(params): Query<LiveParams>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, UiError> {
    let from = first_position(&headers, number(&params.from, "from")?)?;
    let stream = live_stream(&ui, viewer, from, Filters::default(), true);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// `GET /ui/tail/live`: events that pass the filters, as they commit, from `?from=`.
pub async fn tail_stream(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    Query(params): Query<LiveParams>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, UiError> {
    let from = first_position(&headers, number(&params.from, "from")?)?;
    let stream = live_stream(&ui, viewer, from, params.filters.filters(), false);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// `GET /ui/tail`: the newest events that pass the filters; with script, followed live.
pub async fn tail(
    State(ui): State<Ui>,
    Extension(viewer): Extension<Viewer>,
    Query(params): Query<LiveParams>,
) -> Result<Markup, UiError> {
    let rows = number(&params.rows, "rows")?
        .unwrap_or(TAIL_ROWS)
        .clamp(1, MAX_TAIL_ROWS);
    let filters = params.filters.filters();
    let store = ui.host().store().clone();
    let allowed = viewer.discloses();
    let scan_filters = filters.clone();
    let (head, events) = crate::events::blocking(move || {
        let head = store.head();
        let mut page = scan::backward(store.as_ref(), head, rows as usize, &scan_filters)?;
        eshost_core::access::disclose(store.as_ref(), &mut page.events, allowed);
        Ok((head, page.events))
    })
    .await?;
    let mut pairs = params.filters.pairs();
    let stream = format!("{BASE}/tail/live{}", query(&pairs));
    pairs.push(("rows", rows.to_string()));
    let reload = format!("{BASE}/tail{}", query(&pairs));
    let body = html! {
        form.filters method="get" action={ (BASE) "/tail" } {
            (params.filters.inputs())
            label { "Rows kept" input type="number" name="rows" min="1" max=(MAX_TAIL_ROWS) value=(rows); }
            button type="submit" { "Follow" }
        }
        div #tail data-tail data-stream=(stream) data-last=(head) data-keep=(rows) {
            p {
                a.button href=(reload) data-tail-toggle { "Reload" } " "
                span data-tail-state role="status" { "the newest events up to position " (head) }
            }
            p.note { "Newest first; the table keeps the last " (rows) " rows. Pausing stops the stream; resuming starts it again after the last position shown, so no event is skipped." }
            (event_table(&events, &viewer, "Live tail"))
        }
    };
    Ok(page(&viewer, Nav::Tail, "Live tail", body))
}
