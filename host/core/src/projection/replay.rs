//! `eshost replay`: runs a projection plugin over the whole history of a stopped store into a
//! temporary read model, and optionally compares it key by key with a live projection. Events
//! go through the same upcaster chain as in the live host (given as files, in chain order, or
//! the versions a config's host runs), so a difference is the plugin's, not the replay's.

use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use redb::{ReadableDatabase, ReadableTable};
use serde::Serialize;

use super::runner::to_event;
use super::schema;
use crate::cluster::plugins::recorded_version;
use crate::upcast::UpcasterChain;
use crate::views::Views;
use eshost_runtime::{
    Event, Limits, LoadedPlugin, MemoryReadModel, PluginKind, Runtime, RuntimeConfig,
};
use eshost_store::{AllRead, EventStore, Store, StoreConfig};

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The store directory (stopped: replay opens its files).
    pub store: PathBuf,
    /// The personal-data key file; `None`: `keys.eshk` in the store directory.
    pub keys: Option<PathBuf>,
    /// The projection component.
    pub plugin: PathBuf,
    /// The upcaster components, in chain order: the live host's `[[upcasters]]`.
    pub upcasters: Vec<PathBuf>,
    /// The config's names of `upcasters`, when they come from a config: each then runs the
    /// version its host would run (the latest activation in `$plugins`, unless the config
    /// changed). Empty: the files as they are.
    pub upcaster_names: Vec<String>,
    /// The sandbox limits of every plugin call (the live host's `[limits]`).
    pub limits: Limits,
    /// Compare with the live projection of this name.
    pub diff: Option<String>,
    /// Events per `handle` call.
    pub batch: usize,
    /// Show a progress bar (only drawn on a terminal).
    pub progress: bool,
    /// How many differing keys of each kind to show.
    pub samples: usize,
}

/// One differing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffSample {
    /// The key.
    pub key: String,
    /// Its value in the live projection.
    pub live: Option<String>,
    /// Its value in the replay.
    pub replayed: Option<String>,
}

/// The replay's read model against the live one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffReport {
    /// The live projection.
    pub against: String,
    /// Its active generation.
    pub generation: u64,
    /// Its checkpoint (a diff is meaningful when it equals the replay's head).
    pub live_position: u64,
    /// Keys in the live read model.
    pub live_keys: u64,
    /// Keys only the replay has.
    pub added: u64,
    /// Keys only the live projection has.
    pub removed: u64,
    /// Keys both have with different values.
    pub changed: u64,
    /// Keys with the same value.
    pub same: u64,
    /// Some added keys.
    pub added_samples: Vec<DiffSample>,
    /// Some removed keys.
    pub removed_samples: Vec<DiffSample>,
    /// Some changed keys.
    pub changed_samples: Vec<DiffSample>,
}

/// What the replay did.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// The plugin's name.
    pub plugin: String,
    /// Its own version.
    pub version: String,
    /// Its content hash.
    pub hash: String,
    /// The upcasters the events went through, in chain order.
    pub upcasters: Vec<String>,
    /// The last position replayed.
    pub head: u64,
    /// Events passed to the plugin.
    pub handled: u64,
    /// Seconds the replay took.
    pub seconds: f64,
    /// Positions per second.
    pub events_per_sec: f64,
    /// Keys in the replayed read model.
    pub keys: u64,
    /// The comparison, with `--diff`.
    pub diff: Option<DiffReport>,
    /// The replayed read model (not printed).
    #[serde(skip)]
    pub model: MemoryReadModel,
}

impl std::fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "replay: {} {} ({})",
            self.plugin,
            self.version,
            &self.hash[..12.min(self.hash.len())]
        )?;
        let upcasters = match self.upcasters.as_slice() {
            [] => "none".to_owned(),
            names => names.join(", "),
        };
        writeln!(f, "  {:<20} {:>12}", "upcasters", upcasters)?;
        writeln!(f, "  {:<20} {:>12}", "head", self.head)?;
        writeln!(f, "  {:<20} {:>12}", "events handled", self.handled)?;
        writeln!(f, "  {:<20} {:>12.0}", "events/s", self.events_per_sec)?;
        writeln!(f, "  {:<20} {:>12}", "keys", self.keys)?;
        if let Some(diff) = &self.diff {
            writeln!(
                f,
                "diff against {:?} (generation {}, at position {}, {} keys):",
                diff.against, diff.generation, diff.live_position, diff.live_keys
            )?;
            writeln!(f, "  {:<20} {:>12}", "added", diff.added)?;
            writeln!(f, "  {:<20} {:>12}", "removed", diff.removed)?;
            writeln!(f, "  {:<20} {:>12}", "changed", diff.changed)?;
            writeln!(f, "  {:<20} {:>12}", "same", diff.same)?;
            let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            for (label, samples) in [
                ("+", &diff.added_samples),
                ("-", &diff.removed_samples),
                ("~", &diff.changed_samples),
            ] {
                for sample in samples {
                    writeln!(
                        f,
                        "  {label} {}: {} -> {}",
                        sample.key,
                        show(&sample.live),
                        show(&sample.replayed)
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// Feeds every event of `store` up to its head through a fresh instance of the plugin into
/// a memory read model, upcast through `upcasters` exactly as the live runner does (only the
/// events relevant to the plugin; then those it handles). `on_progress` gets the position
/// reached after each batch.
pub fn replay_into_memory(
    store: &dyn EventStore,
    plugin: &eshost_runtime::ProjectionPlugin,
    batch: usize,
    upcasters: &UpcasterChain,
    mut on_progress: impl FnMut(u64),
) -> anyhow::Result<(MemoryReadModel, u64)> {
    let head = store.head();
    // One chain for the whole replay, even if the live one is swapped meanwhile.
    let mut upcasting = upcasters.instantiate();
    let relevance = upcasting.relevance(&plugin.info().handles);
    let mut instance = plugin.instantiate(MemoryReadModel::new())?;
    let mut from = 1;
    let mut handled = 0u64;
    let batch = batch.max(1);
    let mut events: Vec<Event> = Vec::with_capacity(batch);
    while from <= head {
        events.clear();
        let mut last = from - 1;
        let read = AllRead {
            until: Some(eshost_store::Until::Position(head)),
            ..AllRead::from(from)
        };
        store.visit_all(&read, &mut |event| {
            last = event.position;
            if relevance.is_relevant(event.event_type, event.schema_version) {
                events.push(to_event(&event, store));
            }
            if events.len() >= batch || last - from >= 16 * batch as u64 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        if last < from {
            break;
        }
        upcasting.for_plugin(&relevance, &mut events)?;
        if !events.is_empty() {
            instance.handle(&events)?;
            handled += events.len() as u64;
        }
        from = last + 1;
        on_progress(last);
    }
    Ok((instance.into_read_model(), handled))
}

/// Opens what a replay reads: the stopped store, a runtime with the options' limits, and the
/// upcaster chain the live host runs. (A reactor's dry run opens the same.)
pub(crate) fn open(options: &ReplayOptions) -> anyhow::Result<(Store, Runtime, UpcasterChain)> {
    let mut store_config = StoreConfig::new(&options.store);
    store_config.keys = options.keys.clone();
    let store = Store::open(store_config)
        .with_context(|| format!("opening store {}", options.store.display()))?;
    let runtime = Runtime::new(RuntimeConfig {
        limits: options.limits.clone(),
        ..RuntimeConfig::default()
    })?;
    let mut upcasters = Vec::with_capacity(options.upcasters.len());
    for (index, file) in options.upcasters.iter().enumerate() {
        let mut bytes =
            std::fs::read(file).with_context(|| format!("reading upcaster {}", file.display()))?;
        let mut label = file.display().to_string();
        if let Some(name) = options.upcaster_names.get(index) {
            let swapped = recorded_version(&store, &options.store, name, &bytes)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("the version of upcaster {name:?} in $plugins"))?;
            if let Some(swapped) = swapped {
                (bytes, label) = (swapped.bytes, swapped.label);
            }
        }
        let upcaster = match runtime.load_bytes(&bytes, &label, PluginKind::Upcaster) {
            Ok(LoadedPlugin::Upcaster(upcaster)) => upcaster,
            Ok(_) => bail!("{label} is not an upcaster"),
            Err(error) => return Err(error).with_context(|| format!("loading upcaster {label}")),
        };
        upcasters.push(upcaster);
    }
    Ok((store, runtime, UpcasterChain::new(upcasters)?))
}

/// Runs the replay (and the diff) on a stopped store.
pub fn run(options: &ReplayOptions) -> anyhow::Result<ReplayReport> {
    let (store, runtime, upcasters) = open(options)?;
    let plugin = runtime
        .load_projection(&options.plugin)
        .with_context(|| format!("loading {}", options.plugin.display()))?;
    let head = store.head();
    let bar = if options.progress && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(head);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} replaying [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        Some(bar)
    } else {
        None
    };
    let started = Instant::now();
    let replayed = replay_into_memory(&store, &plugin, options.batch, &upcasters, |position| {
        if let Some(bar) = &bar {
            bar.set_position(position);
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let (model, handled) = replayed?;
    let diff = match &options.diff {
        Some(name) => Some(diff(&options.store, name, &model, options.samples)?),
        None => None,
    };
    Ok(ReplayReport {
        plugin: plugin.info().name.clone(),
        version: plugin.info().version.clone(),
        hash: plugin.info().content_hash.clone(),
        upcasters: upcasters
            .plugins()
            .iter()
            .map(|p| p.info().name.clone())
            .collect(),
        head,
        handled,
        seconds,
        events_per_sec: head as f64 / seconds.max(1e-9),
        keys: model.entries.len() as u64,
        diff,
        model,
    })
}

/// Compares `replayed` with the active generation of the live projection `name` of a stopped
/// store.
pub fn diff(
    store_dir: &std::path::Path,
    name: &str,
    replayed: &MemoryReadModel,
    samples: usize,
) -> anyhow::Result<DiffReport> {
    diff_views(&Views::open(store_dir)?, name, replayed, samples)
}

/// [`diff`] against the `views.redb` of a running host (the admin UI's comparison).
pub fn diff_views(
    views: &Views,
    name: &str,
    replayed: &MemoryReadModel,
    samples: usize,
) -> anyhow::Result<DiffReport> {
    let db = views.db()?;
    let db = &db;
    let txn = db.begin_read()?;
    let Some(meta) = schema::read_meta_in(&txn, name)? else {
        bail!(
            "no live projection named {name:?} in {}",
            views.path().display()
        );
    };
    let namespace = schema::namespace(name, meta.active.number);
    let live_position = schema::checkpoint(db, &namespace)?;
    let mut report = DiffReport {
        against: name.to_owned(),
        generation: meta.active.number,
        live_position,
        live_keys: 0,
        added: 0,
        removed: 0,
        changed: 0,
        same: 0,
        added_samples: Vec::new(),
        removed_samples: Vec::new(),
        changed_samples: Vec::new(),
    };
    let mut replayed_iter = replayed.entries.iter().peekable();
    let push = |list: &mut Vec<DiffSample>, key: &str, live: Option<&str>, new: Option<&str>| {
        if list.len() < samples {
            list.push(DiffSample {
                key: key.to_owned(),
                live: live.map(str::to_owned),
                replayed: new.map(str::to_owned),
            });
        }
    };
    match txn.open_table(schema::data_table(&namespace)) {
        Ok(table) => {
            for entry in table.iter()? {
                let (key, value) = entry?;
                let (key, value) = (key.value(), value.value());
                report.live_keys += 1;
                // Keys only the replay has, before this one.
                while let Some((k, v)) = replayed_iter.next_if(|(k, _)| k.as_str() < key) {
                    report.added += 1;
                    push(&mut report.added_samples, k, None, Some(v));
                }
                match replayed_iter.next_if(|(k, _)| k.as_str() == key) {
                    Some((_, v)) if v == value => report.same += 1,
                    Some((_, v)) => {
                        report.changed += 1;
                        push(&mut report.changed_samples, key, Some(value), Some(v));
                    }
                    None => {
                        report.removed += 1;
                        push(&mut report.removed_samples, key, Some(value), None);
                    }
                }
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(error) => return Err(error.into()),
    }
    for (k, v) in replayed_iter {
        report.added += 1;
        push(&mut report.added_samples, k, None, Some(v));
    }
    Ok(report)
}
