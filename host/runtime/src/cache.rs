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

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::Component;

/// The on-disk component cache of one engine.
#[derive(Debug, Clone)]
pub(crate) struct ComponentCache {
    dir: Option<PathBuf>,
    engine_hash: String,
}

/// A component and how it was obtained.
pub(crate) struct Cached {
    pub(crate) component: Component,
    pub(crate) hit: bool,
    pub(crate) elapsed: Duration,
}

impl ComponentCache {
    /// A cache in `dir` (created if missing), or no cache at all with `None`.
    pub(crate) fn new(engine: &Engine, dir: Option<PathBuf>) -> std::io::Result<Self> {
        if let Some(dir) = &dir {
            fs::create_dir_all(dir)?;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(ComponentCache {
            dir,
            engine_hash: format!("{:016x}", hasher.finish()),
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
        let component = Component::new(engine, bytes)?;
        if let Some(path) = &path
            && let Err(error) = store(&component, path)
        {
            tracing::warn!(path = %path.display(), "cannot cache a compiled component: {error:#}");
        }
        Ok(Cached {
            component,
            hit: false,
            elapsed: start.elapsed(),
        })
    }
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
