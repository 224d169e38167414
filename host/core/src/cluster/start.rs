//! The start rule: which version of a configured plugin a node runs when it starts (see
//! [`super::plugins`]): the latest activation in `$plugins`, unless the config names a file
//! other than the one of this node's last config-sourced activation; then the file is
//! activated (and recorded).

use std::path::Path;

use super::plugins::{Activation, ActivationSource, PLUGINS_STREAM, history, record};
use eshost_runtime::PluginKind;
use eshost_store::EventStore;
use eshost_store::blob::content_hash;

/// The component a node runs for one configured plugin at start: the bytes, and a label for
/// messages.
#[derive(Debug)]
pub struct StartVersion {
    /// The component.
    pub bytes: Vec<u8>,
    /// Where it came from.
    pub label: String,
}

/// The start rule (see the module documentation) for the plugin `name` of `kind` whose config
/// names `path`, on node `node`. Records a config activation when the config changed for this
/// node.
pub fn at_start(
    store: &dyn EventStore,
    node: &str,
    name: &str,
    kind: PluginKind,
    path: &Path,
    describe: impl Fn(&[u8]) -> Result<String, String>,
) -> Result<StartVersion, String> {
    let file = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let file_hash = content_hash(&file);
    let from_file = |file: Vec<u8>| StartVersion {
        bytes: file,
        label: path.display().to_string(),
    };
    let history = history(store, Some(name))?;
    let mine = history
        .iter()
        .rev()
        .find(|r| r.activation.source == ActivationSource::Config && r.activation.node == node)
        .map(|r| r.activation.content_hash.as_str());
    let latest = history.last().map(|r| &r.activation);
    if mine != Some(file_hash.as_str()) {
        // The config changed for this node (or it starts for the first time): its file is
        // the version to run.
        let version = describe(&file)?;
        store
            .put_blob(&file)
            .map_err(|e| format!("storing {}: {e}", path.display()))?;
        record(
            store,
            &Activation {
                name: name.to_owned(),
                kind: kind.as_str().to_owned(),
                content_hash: file_hash,
                version,
                previous_hash: latest.map(|a| a.content_hash.clone()),
                source: ActivationSource::Config,
                user: Some("config".into()),
                reason: Some(format!("the config names {}", path.display())),
                node: node.to_owned(),
                start: None,
            },
        )?;
        return Ok(from_file(file));
    }
    match latest {
        Some(latest) if latest.content_hash != file_hash => recorded(store, name, latest),
        _ => Ok(from_file(file)),
    }
}

/// The bytes of a recorded activation.
fn recorded(
    store: &dyn EventStore,
    name: &str,
    activation: &Activation,
) -> Result<StartVersion, String> {
    let hash = &activation.content_hash;
    match store.get_blob(hash) {
        Ok(Some(bytes)) => Ok(StartVersion {
            bytes,
            label: format!(
                "{name} {hash} (activated by {:?} in {PLUGINS_STREAM})",
                activation.source
            ),
        }),
        Ok(None) => Err(format!(
            "the bytes of {name} {hash} (the latest activation in {PLUGINS_STREAM}) are not in the store"
        )),
        Err(error) => Err(format!("loading {name} {hash}: {error}")),
    }
}

/// What [`at_start`] would run for plugin `name` (whose config names `file`) on the node of
/// the store directory `dir`, without recording anything: for tools that read a stopped
/// store as its host would (`eshost replay --config`). `None`: the file.
pub fn recorded_version(
    store: &dyn EventStore,
    dir: &Path,
    name: &str,
    file: &[u8],
) -> Result<Option<StartVersion>, String> {
    let node = std::fs::read_to_string(dir.join(super::NODE_ID_FILE)).unwrap_or_default();
    let history = history(store, Some(name))?;
    let file_hash = content_hash(file);
    let mine = history
        .iter()
        .rev()
        .find(|r| {
            r.activation.source == ActivationSource::Config && r.activation.node == node.trim()
        })
        .map(|r| r.activation.content_hash.as_str());
    match history.last().map(|r| &r.activation) {
        Some(latest) if mine == Some(file_hash.as_str()) && latest.content_hash != file_hash => {
            recorded(store, name, latest).map(Some)
        }
        _ => Ok(None),
    }
}
