//! A watcher of plugin files: when a watched file changes, it calls back with the plugin it
//! belongs to. It is generic over plugin kinds: the caller decides what a change means
//! (projections swap and rebuild; aggregates would swap their own way).
//!
//! The parent directories are watched rather than the files, so that a file replaced by a
//! rename (how editors and `cp` over a build output often write) is still seen. Changes are
//! debounced: a file is reported once it has been quiet for a short while.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};

use eshost_runtime::PluginKind;

/// How long a file must stay unchanged before it is reported.
const QUIET: Duration = Duration::from_millis(150);

/// A plugin file to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedPlugin {
    /// What kind of plugin it is.
    pub kind: PluginKind,
    /// The configured name.
    pub name: String,
    /// The file.
    pub path: PathBuf,
}

/// Watches plugin files until dropped.
pub struct PluginWatcher {
    _watcher: notify::RecommendedWatcher,
    _thread: std::thread::JoinHandle<()>,
}

impl std::fmt::Debug for PluginWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginWatcher").finish_non_exhaustive()
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

impl PluginWatcher {
    /// Watches `plugins`, calling `on_change` (on the watcher's own thread) for each one whose
    /// file changed.
    pub fn new(
        plugins: Vec<WatchedPlugin>,
        on_change: impl Fn(&WatchedPlugin) + Send + 'static,
    ) -> Result<PluginWatcher, notify::Error> {
        let (sender, events) = mpsc::channel::<notify::Result<notify::Event>>();
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = sender.send(event);
        })?;
        let by_path: HashMap<PathBuf, WatchedPlugin> = plugins
            .into_iter()
            .map(|plugin| (absolute(&plugin.path), plugin))
            .collect();
        let mut dirs: Vec<PathBuf> = by_path
            .keys()
            .filter_map(|path| path.parent().map(Path::to_owned))
            .collect();
        dirs.sort();
        dirs.dedup();
        for dir in &dirs {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
        let thread = std::thread::Builder::new()
            .name("plugin-watcher".into())
            .spawn(move || {
                // Path → when it last changed.
                let mut pending: HashMap<PathBuf, Instant> = HashMap::new();
                loop {
                    let wait = pending
                        .values()
                        .map(|at| (*at + QUIET).saturating_duration_since(Instant::now()))
                        .min()
                        .unwrap_or(Duration::from_secs(3600));
                    match events.recv_timeout(wait) {
                        Ok(Ok(event)) => {
                            if matches!(event.kind, notify::EventKind::Access(_)) {
                                continue;
                            }
                            for path in event.paths {
                                let path = absolute(&path);
                                if by_path.contains_key(&path) {
                                    pending.insert(path, Instant::now());
                                }
                            }
                        }
                        Ok(Err(error)) => tracing::warn!("watching plugin files: {error}"),
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                    let now = Instant::now();
                    let due: Vec<PathBuf> = pending
                        .iter()
                        .filter(|(_, at)| now.duration_since(**at) >= QUIET)
                        .map(|(path, _)| path.clone())
                        .collect();
                    for path in due {
                        pending.remove(&path);
                        if path.exists() {
                            on_change(&by_path[&path]);
                        }
                    }
                }
            })
            .map_err(notify::Error::io)?;
        Ok(PluginWatcher {
            _watcher: watcher,
            _thread: thread,
        })
    }
}
