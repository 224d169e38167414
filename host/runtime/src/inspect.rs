//! `eshost plugin inspect`: what a component file is, without running the host.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::{LoadError, RuntimeError};
use super::runtime::{self, Runtime, RuntimeConfig};
use super::types::{PluginKind, VersionedType};

/// What a plugin file is and what it asks of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inspection {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// blake3 of its bytes, hex: the plugin's identity.
    pub content_hash: String,
    /// The plugin's name, from `describe()`.
    pub name: String,
    /// The world it targets.
    pub kind: PluginKind,
    /// The plugin's own version, from `describe()`.
    pub version: String,
    /// The WIT package it exports, e.g. `eshost:plugin@0.1.0`.
    pub wit: String,
    /// The event types it handles (empty: all).
    pub handles: Vec<String>,
    /// Upcasters: the (type, schema version) pairs it rewrites.
    pub upcasts: Vec<VersionedType>,
    /// The interfaces and functions it exports.
    pub exports: Vec<String>,
    /// The interfaces and functions it imports.
    pub imports: Vec<String>,
    /// Whether the compiled form came from the cache.
    pub cache_hit: bool,
}

/// Why a file could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The runtime could not start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The file is not a loadable plugin.
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// Inspects the plugin at `path` with a default runtime (and the default component cache).
pub fn inspect(path: impl AsRef<Path>) -> Result<Inspection, InspectError> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    Ok(runtime.inspect(path)?)
}

impl Runtime {
    /// Inspects the plugin at `path`: loads it as whatever kind it is and lists its imports
    /// and exports.
    pub fn inspect(&self, path: impl AsRef<Path>) -> Result<Inspection, LoadError> {
        let path = path.as_ref();
        let (bytes, label) = runtime::read(path)?;
        let (plugin, component) = self.load_inner(&bytes, &label, None)?;
        let engine = self.engine();
        let ty = component.component_type();
        let mut imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_owned()).collect();
        let mut exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
        imports.sort();
        exports.sort();
        let info = plugin.info().clone();
        Ok(Inspection {
            path: path.to_owned(),
            size_bytes: bytes.len() as u64,
            content_hash: info.content_hash,
            name: info.name,
            kind: info.kind,
            version: info.version,
            wit: format!("eshost:plugin@{}", info.wit_version),
            handles: info.handles,
            upcasts: info.upcasts,
            exports,
            imports,
            cache_hit: plugin.load_stats().cache_hit,
        })
    }
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |items: &[String]| {
            if items.is_empty() {
                "(all)".to_owned()
            } else {
                items.join(", ")
            }
        };
        writeln!(f, "{:<13}{}", "file", self.path.display())?;
        writeln!(f, "{:<13}{}", "name", self.name)?;
        writeln!(f, "{:<13}{}", "kind", self.kind)?;
        writeln!(f, "{:<13}{}", "version", self.version)?;
        writeln!(f, "{:<13}{}", "wit", self.wit)?;
        writeln!(f, "{:<13}{}", "handles", list(&self.handles))?;
        if self.kind == PluginKind::Upcaster {
            let upcasts: Vec<String> = self
                .upcasts
                .iter()
                .map(|v| format!("{} v{}", v.event_type, v.schema_version))
                .collect();
            writeln!(f, "{:<13}{}", "upcasts", upcasts.join(", "))?;
        }
        writeln!(f, "{:<13}{} bytes", "size", self.size_bytes)?;
        writeln!(f, "{:<13}{}", "blake3", self.content_hash)?;
        writeln!(f, "exports")?;
        for export in &self.exports {
            writeln!(f, "  {export}")?;
        }
        writeln!(f, "imports")?;
        for import in &self.imports {
            writeln!(f, "  {import}")?;
        }
        Ok(())
    }
}
