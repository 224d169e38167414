//! Compiled components, cached on disk by content hash.
//!
//! A component is compiled once per engine configuration: the compiled artifact
//! (`Component::serialize`) is written to `<dir>/<blake3 of the bytes>-<engine hash>.cwasm`,
//! and a later load reads that file instead of compiling (milliseconds instead of seconds for a
//! large component). The engine hash covers the wasmtime version and every setting that
//! affects code generation, so an upgrade or a config change simply misses the cache.
//!
//! Files are written to a temporary name and renamed into place, so a reader never sees a half
//! written artifact; a file that does not deserialize is removed and rebuilt.
//!
//! The cache is bounded: a hit marks its file as used (its modification time), and after each
//! new artifact the least recently used files go until the directory holds at most
//! `max_bytes` (default 2 GiB, `ESHOST_CACHE_MAX_MB`). An evicted plugin is compiled again on
//! its next load.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use wasmtime::Engine;
use wasmtime::component::Component;

/// The on-disk component cache of one engine.
#[derive(Debug, Clone)]
pub(crate) struct ComponentCache {
    dir: Option<PathBuf>,
    engine_hash: String,
    max_bytes: u64,
    /// Held while compiling: compiles run one at a time (each is parallel inside), so a
    /// burst of uploads queues instead of taking every core and its memory at once.
    compiling: Arc<Mutex<()>>,
}

/// The default bound of the cache directory.
pub(crate) const DEFAULT_MAX_BYTES: u64 = 2 << 30;

/// A component and how it was obtained.
pub(crate) struct Cached {
    pub(crate) component: Component,
    pub(crate) hit: bool,
    pub(crate) elapsed: Duration,
}

impl ComponentCache {
    /// A cache in `dir` (created if missing), or no cache at all with `None`.
    pub(crate) fn new(
        engine: &Engine,
        dir: Option<PathBuf>,
        max_bytes: u64,
    ) -> std::io::Result<Self> {
        if let Some(dir) = &dir {
            fs::create_dir_all(dir)?;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(ComponentCache {
            dir,
            engine_hash: format!("{:016x}", hasher.finish()),
            max_bytes,
            compiling: Arc::default(),
        })
    }

    /// The file a component with content hash `hash` is cached in.
    pub(crate) fn path_for(&self, hash: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{hash}-{}.cwasm", self.engine_hash)))
    }

    /// The compiled component for `bytes` (whose blake3 hash is `hash`): from the cache, or
    /// compiled now and stored for next time. Cache I/O failures are logged, never fatal.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        hash: &str,
    ) -> wasmtime::Result<Cached> {
        let start = Instant::now();
        let path = self.path_for(hash);
        if let Some(path) = &path
            && path.exists()
        {
            match deserialize(engine, path) {
                Ok(component) => {
                    mark_used(path);
                    return Ok(Cached {
                        component,
                        hit: true,
                        elapsed: start.elapsed(),
                    });
                }
                Err(error) => {
                    tracing::warn!(
                        path = %path.display(),
                        "discarding an unusable cached component: {error:#}"
                    );
                    let _ = fs::remove_file(path);
                }
            }
        }
        let component = {
            let _one_at_a_time = self
                .compiling
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            Component::new(engine, bytes)?
        };
        if let Some(path) = &path {
            match store(&component, path) {
                Ok(()) => evict(path, self.max_bytes),
                Err(error) => tracing::warn!(
                    path = %path.display(),
                    "cannot cache a compiled component: {error:#}"
                ),
            }
        }
        Ok(Cached {
            component,
            hit: false,
            elapsed: start.elapsed(),
        })
    }
}

/// Marks a cached file as just used, for the eviction order.
fn mark_used(path: &Path) {
    if let Ok(file) = fs::File::options().append(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// Removes the least recently used artifacts beside `kept` (just written) until the
/// directory's artifacts hold at most `max_bytes`.
fn evict(kept: &Path, max_bytes: u64) {
    let Some(dir) = kept.parent() else { return };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
        .filter_map(|path| {
            let metadata = fs::metadata(&path).ok()?;
            Some((metadata.modified().ok()?, metadata.len(), path))
        })
        .collect();
    let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
    files.sort();
    for (_, len, path) in files {
        if total <= max_bytes {
            break;
        }
        if path != kept && fs::remove_file(&path).is_ok() {
            tracing::info!(path = %path.display(), "evicted a compiled component from the cache");
            total -= len;
        }
    }
}

/// The cache bound: `ESHOST_CACHE_MAX_MB`, else [`DEFAULT_MAX_BYTES`].
pub(crate) fn default_max_bytes() -> u64 {
    std::env::var("ESHOST_CACHE_MAX_MB")
        .ok()
        .and_then(|mb| mb.trim().parse::<u64>().ok())
        .map_or(DEFAULT_MAX_BYTES, |mb| mb.saturating_mul(1 << 20))
}

/// Loads a compiled component from the cache.
///
/// The file is read into memory rather than mapped (`deserialize_file`): a mapped file that is
/// truncated or rewritten in place while the host runs would crash it with SIGBUS. Reading a
/// compiled component costs about a millisecond per few megabytes.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    let bytes = fs::read(path)?;
    // SAFETY: `deserialize` trusts the bytes to be an artifact wasmtime itself produced;
    // wasmtime still checks the header, its version and the engine configuration, but not
    // the machine code. Only this module writes into the cache directory, from
    // `Component::serialize`, through a temporary file renamed into place, so the file is
    // whole and ours. The directory must not be writable by anyone the host does not trust
    // (it lives under the host's own cache or data directory).
    unsafe { Component::deserialize(engine, &bytes) }
}

/// Serializes `component` to `path`, atomically.
fn store(component: &Component, path: &Path) -> wasmtime::Result<()> {
    let bytes = component.serialize()?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(&bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The default cache directory: `$ESHOST_CACHE_DIR`, else `$XDG_CACHE_HOME/eshost/components`,
/// else `$HOME/.cache/eshost/components`, else a directory under the system temp dir.
pub(crate) fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ESHOST_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("eshost").join("components")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(dir: &Path, name: &str, bytes: usize, age_secs: u64) -> PathBuf {
        let path = dir.join(format!("{name}.cwasm"));
        fs::write(&path, vec![0u8; bytes]).unwrap();
        let file = fs::File::options().append(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(age_secs))
            .unwrap();
        path
    }

    #[test]
    fn the_least_recently_used_artifacts_go_first_and_the_new_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let oldest = artifact(dir.path(), "a", 1000, 300);
        let used = artifact(dir.path(), "b", 1000, 200);
        let newer = artifact(dir.path(), "c", 1000, 100);
        let other = dir.path().join("notes.txt");
        fs::write(&other, vec![0u8; 5000]).unwrap();
        // A hit makes the old "b" the most recently used.
        mark_used(&used);
        let kept = artifact(dir.path(), "d", 1000, 0);

        evict(&kept, 2500);
        assert!(!oldest.exists());
        assert!(!newer.exists());
        assert!(used.exists() && kept.exists() && other.exists());

        // The new artifact stays even when it alone is over the bound.
        evict(&kept, 10);
        assert!(kept.exists());
        assert!(!used.exists());
    }
}
