//! A projection's read model, served by the host: writes during `handle`, reads and paging
//! scans, read-only queries, and failures of the plugin or of the store. The guest is
//! `tests/guests/counter`.

use eshost_runtime::{
    MemoryReadModel, PluginError, ProjectionError, ProjectionPlugin, QueryError, ReadModel,
    ReadModelError,
};
use eshost_tests::{COUNTER, event, runtime};

fn counter() -> (ProjectionPlugin, tempfile::TempDir) {
    let (runtime, cache) = runtime();
    (runtime.load_projection(COUNTER).unwrap(), cache)
}

fn batch() -> Vec<eshost_runtime::Event> {
    ["Opened", "Deposited", "Deposited", "Withdrawn", "Deposited"]
        .iter()
        .enumerate()
        .map(|(i, t)| event(i as u64 + 1, "s", i as u64 + 1, t, 1, "{}"))
        .collect()
}

#[test]
fn handle_writes_and_query_reads() {
    let (plugin, _cache) = counter();
    let mut instance = plugin.instantiate(MemoryReadModel::new()).unwrap();
    instance.handle(&batch()).unwrap();
    let entries = &instance.read_model().entries;
    assert_eq!(entries["count/Deposited"], "3");
    assert_eq!(entries["count/Opened"], "1");
    assert_eq!(entries["last-position"], "5");

    assert_eq!(instance.query("count", r#""Deposited""#).unwrap(), "3");
    assert_eq!(instance.query("count", r#""Frozen""#).unwrap(), "0");
    // `all` pages through a scan two entries at a time.
    assert_eq!(
        instance.query("all", "null").unwrap(),
        r#"{"Deposited":3,"Opened":1,"Withdrawn":1}"#
    );

    let model = instance.into_read_model();
    assert_eq!(model.entries.len(), 4);
}

#[test]
fn query_errors_are_values() {
    let (plugin, _cache) = counter();
    let mut instance = plugin.instantiate(MemoryReadModel::new()).unwrap();
    let error = instance.query("nope", "null").unwrap_err();
    assert!(
        matches!(error, QueryError::UnknownQuery { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "plugin \"counter\" has no query \"nope\": nope"
    );
    let error = instance.query("count", r#""""#).unwrap_err();
    assert!(matches!(error, QueryError::InvalidArgs { .. }), "{error:?}");
}

#[test]
fn queries_cannot_write() {
    let (plugin, _cache) = counter();
    let mut instance = plugin.instantiate(MemoryReadModel::new()).unwrap();
    instance.handle(&batch()).unwrap();
    let before = instance.read_model().clone();
    for (query, op) in [("sneaky-put", "put"), ("sneaky-delete", "delete")] {
        let error = instance.query(query, "null").unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "plugin \"counter\" tried to {op} during query \"{query}\"; queries are read-only"
            )
        );
        assert_eq!(instance.read_model(), &before, "nothing was written");
    }
    // The instance that tried is replaced; the next query works.
    assert_eq!(instance.query("count", r#""Deposited""#).unwrap(), "3");
}

#[test]
fn a_refused_event_is_reported_at_its_position() {
    let (plugin, _cache) = counter();
    let mut instance = plugin.instantiate(MemoryReadModel::new()).unwrap();
    let mut events = batch();
    events[3].event_type = "Poison".into();
    let error = instance.handle(&events).unwrap_err();
    assert_eq!(
        error,
        ProjectionError::Event {
            plugin: "counter".into(),
            position: 4,
            message: "poisoned event".into()
        }
    );
}

/// A store whose writes fail, like a full disk.
#[derive(Debug, Default)]
struct FailingStore {
    reads: usize,
}

impl ReadModel for FailingStore {
    fn get(&self, _key: &str) -> Result<Option<String>, ReadModelError> {
        Ok(None)
    }
    fn scan(
        &self,
        _: &str,
        _: Option<&str>,
        _: usize,
    ) -> Result<Vec<(String, String)>, ReadModelError> {
        Ok(Vec::new())
    }
    fn put(&mut self, _key: String, _value: String) -> Result<(), ReadModelError> {
        self.reads += 1;
        Err(ReadModelError("disk full".into()))
    }
    fn delete(&mut self, _key: &str) -> Result<(), ReadModelError> {
        Err(ReadModelError("disk full".into()))
    }
}

#[test]
fn a_failing_store_fails_the_batch_and_comes_back() {
    let (plugin, _cache) = counter();
    let mut instance = plugin.instantiate(FailingStore::default()).unwrap();
    let error = instance.handle(&batch()).unwrap_err();
    assert_eq!(
        error,
        ProjectionError::ReadModel {
            plugin: "counter".into(),
            error: ReadModelError("disk full".into())
        }
    );
    assert_eq!(
        error.to_string(),
        "plugin \"counter\": read model error: disk full"
    );
    // The host keeps its store: the runner can abort its transaction.
    assert_eq!(instance.read_model_mut().reads, 1);
    // Queries still work (reads succeed).
    assert_eq!(instance.query("count", r#""Opened""#).unwrap(), "0");
}

#[test]
fn a_trapping_projection_keeps_the_read_model() {
    // The memory limit is far too small for the guest to even start: instantiation fails.
    let (plugin, _cache) = counter();
    let tiny = plugin.with_limits(eshost_runtime::Limits {
        memory_bytes: 64 * 1024,
        ..eshost_tests::test_limits()
    });
    let error = tiny.instantiate(MemoryReadModel::new()).unwrap_err();
    assert!(
        matches!(
            error,
            PluginError::MemoryLimit { .. } | PluginError::Instantiate { .. }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().starts_with("plugin \"counter\""),
        "{error}"
    );
}
