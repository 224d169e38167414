//! "Any 0.1.x links", both ways, for a patch release of the contract (a copy of 0.1.0 named
//! `eshost:plugin@0.1.1`, `tests/compat/src/wit-v0.1.1`):
//!
//! - a guest built against 0.1.1 (it exports `projection@0.1.1` and imports
//!   `read-model@0.1.1`) loads and runs in this host, which implements 0.1.0;
//! - a host generated from 0.1.1 (what `host/runtime`'s 0.1 module becomes when a 0.1.1 is
//!   released) links and runs the committed 0.1.0 guest.
//!
//! wasmtime matches `…@0.1.x` names by semver in both directions, for imports and for the
//! exports bindings look up. A patch may therefore only change what stays compatible both
//! ways: docs, new host-provided functions (imports a guest may ignore). A function added to
//! an export would have to be implemented by old guests, so it is a 0.2 (`wit/README.md`).

use std::collections::BTreeMap;

use eshost_runtime::MemoryReadModel;
use eshost_tests::event;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::compat_fixtures::fixture;

fn batch() -> Vec<eshost_runtime::Event> {
    [("c-1", 30), ("c-2", 7), ("c-1", 50)]
        .into_iter()
        .enumerate()
        .map(|(index, (stream, amount))| {
            let position = index as u64 + 1;
            let data = format!("{{\"amount\":{amount}}}");
            event(position, stream, position, "Added", 2, &data)
        })
        .collect()
}

#[test]
fn a_guest_built_against_0_1_1_runs_in_this_0_1_0_host() {
    let (runtime, _cache) = eshost_tests::runtime();
    let plugin = runtime
        .load_projection(fixture("v0.1.1/projection.wasm"))
        .unwrap();
    assert_eq!(plugin.info().name, "compat-totals");
    assert_eq!(plugin.info().wit_version, "0.1.1");
    assert_eq!(plugin.info().version, "1.0.0+wit-0.1.1");

    let mut instance = plugin.instantiate(MemoryReadModel::new()).unwrap();
    instance.handle(&batch()).unwrap();
    assert_eq!(instance.read_model().entries["total/c-1"], "80");
    assert_eq!(
        instance.query("streams", "{}").unwrap(),
        r#"{"c-1":80,"c-2":7}"#
    );
}

/// A host generated from the 0.1.1 copy, as small as a host gets: full WASI, the read model
/// in a map.
#[allow(unsafe_code, missing_debug_implementations, unused_qualifications)]
mod host_0_1_1 {
    wasmtime::component::bindgen!({
        world: "projection-plugin",
        path: "compat/src/wit-v0.1.1",
        imports: { default: trappable },
    });
}

use host_0_1_1::eshost::plugin::{read_model, types};

struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    entries: BTreeMap<String, String>,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl read_model::Host for State {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.entries.get(&key).cloned())
    }

    fn put(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        self.entries.insert(key, value);
        Ok(())
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.entries.remove(&key);
        Ok(())
    }

    fn scan(
        &mut self,
        prefix: String,
        start_after: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self
            .entries
            .range(prefix.clone()..)
            .filter(|(key, _)| start_after.as_ref().is_none_or(|after| *key > after))
            .take_while(|(key, _)| key.starts_with(&prefix))
            .take(limit as usize)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

#[test]
fn a_0_1_1_host_links_and_runs_the_committed_0_1_0_guest() {
    let engine = Engine::default();
    let component = Component::from_file(&engine, fixture("v0.1.0/projection.wasm")).unwrap();
    let mut linker = Linker::<State>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    read_model::add_to_linker::<_, HasSelf<State>>(&mut linker, |state| state).unwrap();
    let mut store = Store::new(
        &engine,
        State {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            entries: BTreeMap::new(),
        },
    );
    // The guest imports read-model@0.1.0 and exports projection@0.1.0; this host provides
    // and looks up 0.1.1.
    let guest = host_0_1_1::ProjectionPlugin::instantiate(&mut store, &component, &linker).unwrap();
    let info = guest.call_describe(&mut store).unwrap();
    assert_eq!(info.name, "compat-totals");
    assert!(matches!(info.kind, types::PluginKind::Projection));

    let events: Vec<types::Event> = batch()
        .into_iter()
        .map(|e| types::Event {
            position: e.position,
            stream_id: e.stream_id,
            stream_version: e.stream_version,
            event_id: e.event_id,
            event_type: e.event_type,
            schema_version: e.schema_version,
            recorded_at: e.recorded_at,
            data: e.data,
            metadata: e.metadata,
            subject_id: e.subject_id,
            personal_data: e.personal_data,
            shredded: e.shredded,
        })
        .collect();
    let projection = guest.eshost_plugin_projection();
    projection
        .call_handle(&mut store, &events)
        .unwrap()
        .unwrap();
    assert_eq!(store.data().entries["total/c-1"], "80");
    let answer = projection
        .call_query(&mut store, "total", r#"{"stream":"c-2"}"#)
        .unwrap()
        .unwrap();
    assert_eq!(answer, r#"{"stream":"c-2","total":7}"#);
}
