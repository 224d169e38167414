//! `eshost:plugin@0.2` (`wit/v0.2.0`, frozen once released): the `reactor-plugin` world, the
//! one world 0.2 adds, and the conversions between its generated types and the host's.
//!
//! 0.2 keeps the other three worlds as 0.1 has them; this host serves those at 0.1 (plugins
//! build them against `wit/v0.1.0`), and a component exporting one of them at 0.2 is refused
//! with a message saying so (see [`super::detect`]). Events are lowered without a copy, through
//! 0.1's borrowed record: the `event` record is the same in both versions.

use wasmtime::component::{ComponentExportIndex, Func, HasSelf, InstancePre, Linker};
use wasmtime::{Store, format_err};

use self::bindings::reactor;
use self::bindings::reactor::eshost::plugin::types as wit;
use self::bindings::reactor::exports::eshost::plugin::reactor as wit_reactor;
use super::v0_1::EventRecord;
use crate::sandbox::HostState;
use crate::types::{
    Description, Effect, Event, EventError, Intent, NewEvent, PluginKind, QueryRefusal,
    VersionedType,
};

/// The version every export is looked up under; any 0.2.x matches it.
const VERSION: &str = "0.2.0";

/// Generated code (see `v0_1.rs` for why the lints are relaxed here).
#[allow(unsafe_code, missing_debug_implementations, unused_qualifications)]
mod bindings {
    pub(super) mod reactor {
        wasmtime::component::bindgen!({
            world: "reactor-plugin",
            path: "../../wit/v0.2.0",
            imports: { default: trappable },
        });
    }
}

// ---- conversions -------------------------------------------------------------------------

impl From<wit::PluginKind> for PluginKind {
    fn from(kind: wit::PluginKind) -> Self {
        match kind {
            wit::PluginKind::Aggregate => PluginKind::Aggregate,
            wit::PluginKind::Upcaster => PluginKind::Upcaster,
            wit::PluginKind::Projection => PluginKind::Projection,
            wit::PluginKind::Reactor => PluginKind::Reactor,
        }
    }
}

impl From<wit::PluginInfo> for Description {
    fn from(info: wit::PluginInfo) -> Self {
        Description {
            name: info.name,
            kind: info.kind.into(),
            version: info.version,
            handles: info.handles,
            upcasts: info
                .upcasts
                .into_iter()
                .map(|ty| VersionedType {
                    event_type: ty.event_type,
                    schema_version: ty.schema_version,
                })
                .collect(),
        }
    }
}

impl From<wit::NewEvent> for NewEvent {
    fn from(event: wit::NewEvent) -> Self {
        NewEvent {
            event_type: event.event_type,
            schema_version: event.schema_version,
            data: event.data,
            subject_id: event.subject_id,
            personal_data: event.personal_data,
        }
    }
}

impl From<wit_reactor::Intent> for Intent {
    fn from(intent: wit_reactor::Intent) -> Self {
        let effect = match intent.effect {
            wit_reactor::Effect::Send(send) => Effect::Send {
                aggregate_type: send.aggregate_type,
                aggregate_id: send.aggregate_id,
                command: send.command,
                context: send.context,
            },
            wit_reactor::Effect::Append(append) => Effect::Append {
                stream_id: append.stream_id,
                events: append.events.into_iter().map(Into::into).collect(),
            },
            wit_reactor::Effect::Timer(timer) => Effect::Timer {
                due_at: timer.due_at,
                payload: timer.payload,
            },
        };
        Intent {
            cause: intent.cause,
            effect,
        }
    }
}

fn query_refusal(error: wit::QueryError) -> QueryRefusal {
    match error {
        wit::QueryError::UnknownQuery(message) => QueryRefusal::UnknownQuery(message),
        wit::QueryError::InvalidArgs(message) => QueryRefusal::InvalidArgs(message),
        wit::QueryError::Failed(message) => QueryRefusal::Failed(message),
    }
}

// ---- the read-model import ---------------------------------------------------------------

impl reactor::eshost::plugin::read_model::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.read_model_get(&key)
    }

    fn put(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        self.read_model_put(key, value)
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.read_model_delete(&key)
    }

    fn scan(
        &mut self,
        prefix: String,
        start_after: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Vec<(String, String)>> {
        self.read_model_scan(&prefix, start_after.as_deref(), limit)
    }
}

/// Adds the `read-model@0.2.0` import to `linker`.
pub(crate) fn link_read_model(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    reactor::eshost::plugin::read_model::add_to_linker::<_, HasSelf<HostState>>(linker, |state| {
        state
    })
}

// ---- the world ---------------------------------------------------------------------------

/// A `reactor-plugin` component, ready to instantiate.
pub(crate) struct ReactorPre {
    pre: InstancePre<HostState>,
    indices: reactor::ReactorPluginIndices,
    handle: ComponentExportIndex,
}

/// An instantiated `reactor-plugin` component.
pub(crate) struct Reactor {
    bindings: reactor::ReactorPlugin,
    handle: Func,
}

impl ReactorPre {
    pub(crate) fn new(pre: InstancePre<HostState>) -> wasmtime::Result<Self> {
        let name = format!("eshost:plugin/reactor@{VERSION}");
        let component = pre.component();
        let instance = component
            .get_export_index(None, &name)
            .ok_or_else(|| format_err!("no exported instance named `{name}`"))?;
        let handle = component
            .get_export_index(Some(&instance), "handle")
            .ok_or_else(|| format_err!("`{name}` does not export `handle`"))?;
        Ok(ReactorPre {
            indices: reactor::ReactorPluginIndices::new(&pre)?,
            handle,
            pre,
        })
    }

    pub(crate) fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Reactor> {
        let instance = self.pre.instantiate(&mut *store)?;
        let bindings = self.indices.load(&mut *store, &instance)?;
        let handle = instance
            .get_func(&mut *store, self.handle)
            .ok_or_else(|| format_err!("an exported function is missing from the instance"))?;
        Ok(Reactor { bindings, handle })
    }
}

impl Reactor {
    pub(crate) fn describe(&self, store: &mut Store<HostState>) -> wasmtime::Result<Description> {
        Ok(self.bindings.call_describe(store)?.into())
    }

    pub(crate) fn handle(
        &self,
        store: &mut Store<HostState>,
        events: &[Event],
    ) -> wasmtime::Result<Result<Vec<Intent>, EventError>> {
        let records: Vec<EventRecord<'_>> = events.iter().map(EventRecord::from).collect();
        let handle = self
            .handle
            .typed::<(&[EventRecord<'_>],), (Result<Vec<wit_reactor::Intent>, wit::EventError>,)>(
                &*store,
            )?;
        let (result,) = handle.call(store, (&records,))?;
        Ok(result
            .map(|intents| intents.into_iter().map(Into::into).collect())
            .map_err(|error| EventError {
                position: error.position,
                message: error.message,
            }))
    }

    pub(crate) fn query(
        &self,
        store: &mut Store<HostState>,
        name: &str,
        args: &str,
    ) -> wasmtime::Result<Result<String, QueryRefusal>> {
        let guest = self.bindings.eshost_plugin_reactor();
        Ok(guest.call_query(store, name, args)?.map_err(query_refusal))
    }
}
