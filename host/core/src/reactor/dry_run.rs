//! `eshost replay` for a reactor: a dry run over a stopped store that lists the intents the
//! reactor would produce from a chosen position, carrying none of them out, so a new version
//! can be started from a position known to be safe.
//!
//! The events are read and upcast as the live runner reads them, the reactor's own outcome
//! events included; its read model starts empty (a live reactor started from that position
//! keeps the read model it has).

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};

use super::effects::outcome_stream;
use super::runner::read_batch;
use crate::projection::replay::ReplayOptions;
use eshost_runtime::{Effect, Event, Intent, MemoryReadModel};
use eshost_store::EventStore as _;

/// One intent the reactor would produce.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DryIntent {
    /// The causing event's position.
    pub position: u64,
    /// Its stream.
    pub stream_id: String,
    /// Its type.
    pub event_type: String,
    /// What the reactor would do, as JSON: `{"send": {...}}`, `{"append": {...}}` or
    /// `{"timer": {...}}`.
    pub effect: Value,
}

/// What a dry run found.
#[derive(Debug, Clone, Serialize)]
pub struct DryRunReport {
    /// The reactor.
    pub plugin: String,
    /// Its own version.
    pub version: String,
    /// Its content hash.
    pub hash: String,
    /// It started after this position.
    pub from: u64,
    /// The last position read.
    pub head: u64,
    /// Events delivered to it.
    pub handled: u64,
    /// Commands it would send.
    pub commands: u64,
    /// Events it would append.
    pub appends: u64,
    /// Timers it would set.
    pub timers: u64,
    /// The first intents, as many as asked for.
    pub intents: Vec<DryIntent>,
}

impl std::fmt::Display for DryRunReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "reactor {} {} ({}), positions {}..={}: {} events handled; it would send {} \
             commands, append {} events and set {} timers",
            self.plugin,
            self.version,
            &self.hash[..12.min(self.hash.len())],
            self.from + 1,
            self.head,
            self.handled,
            self.commands,
            self.appends,
            self.timers
        )?;
        for intent in &self.intents {
            writeln!(
                f,
                "  @{} {} {}: {}",
                intent.position, intent.stream_id, intent.event_type, intent.effect
            )?;
        }
        Ok(())
    }
}

/// An effect as `eshost replay` lists it and a `plugin test` fixture spells it.
pub(crate) fn effect_json(effect: &Effect) -> Value {
    let parse = |text: &str| serde_json::from_str(text).unwrap_or(Value::String(text.to_owned()));
    match effect {
        Effect::Send {
            aggregate_type,
            aggregate_id,
            command,
            context,
        } => json!({"send": {"aggregate_type": aggregate_type, "aggregate_id": aggregate_id,
            "command": parse(command), "context": parse(context)}}),
        Effect::Append { stream_id, events } => json!({"append": {"stream_id": stream_id,
            "events": events.iter().map(|e| json!({"type": e.event_type, "data": parse(&e.data)})).collect::<Vec<_>>()}}),
        Effect::Timer { due_at, payload } => {
            json!({"timer": {"due_at": due_at, "payload": parse(payload)}})
        }
    }
}

/// Runs the reactor in `options.plugin` over the store after position `from`, listing at most
/// `shown` intents.
pub fn run(options: &ReplayOptions, from: u64, shown: usize) -> anyhow::Result<DryRunReport> {
    let (store, runtime, upcasters) = crate::projection::replay::open(options)?;
    let plugin = runtime
        .load_reactor(&options.plugin)
        .with_context(|| format!("loading {}", options.plugin.display()))?;
    let info = plugin.info().clone();
    let own = outcome_stream(&info.name);
    let mut upcasting = upcasters.instantiate();
    let relevance = upcasting.relevance(&info.handles);
    let mut instance = plugin.instantiate(MemoryReadModel::new())?;
    let head = store.head();
    let mut report = DryRunReport {
        plugin: info.name.clone(),
        version: info.version.clone(),
        hash: info.content_hash.clone(),
        from,
        head,
        handled: 0,
        commands: 0,
        appends: 0,
        timers: 0,
        intents: Vec::new(),
    };
    let mut position = from.min(head);
    while position < head {
        let (mut events, _, last) = read_batch(
            &store,
            &own,
            &relevance,
            position,
            head,
            options.batch.max(1),
        )?;
        for event in events.iter_mut().filter(|e| e.stream_id != own) {
            upcasting
                .upcast(event)
                .with_context(|| format!("upcasting the event at {}", event.position))?;
        }
        events.retain(|e| e.stream_id == own || relevance.is_handled(&e.event_type));
        if !events.is_empty() {
            let intents = instance.handle(&events)?;
            report.handled += events.len() as u64;
            tally(&mut report, &events, intents, shown);
        }
        position = last;
    }
    Ok(report)
}

fn tally(report: &mut DryRunReport, events: &[Event], intents: Vec<Intent>, shown: usize) {
    for intent in intents {
        match &intent.effect {
            Effect::Send { .. } => report.commands += 1,
            Effect::Append { events, .. } => report.appends += events.len() as u64,
            Effect::Timer { .. } => report.timers += 1,
        }
        if report.intents.len() < shown
            && let Some(cause) = events.iter().find(|e| e.position == intent.cause)
        {
            report.intents.push(DryIntent {
                position: cause.position,
                stream_id: cause.stream_id.clone(),
                event_type: cause.event_type.clone(),
                effect: effect_json(&intent.effect),
            });
        }
    }
}
