//! `eshost:plugin@0.1` (`wit/v0.1.0`, frozen): the bindings of its three worlds, and the
//! conversions between their generated types and the host's own (`crate::types`).
//!
//! Every 0.1.x component is served here: export names are looked up as `...@0.1.0`, and
//! wasmtime matches them to any semver-compatible `...@0.1.x` the component exports (and links
//! its `read-model@0.1.x` import to the one this module provides).
//!
//! The host's events go to the guest without being copied on the host side: [`EventRecord`]
//! borrows each [`Event`]'s strings and is lowered straight into the guest's memory, through a
//! typed function this module keeps beside the generated bindings (`apply`, the projection's
//! `handle`, `upcast`). Everything else goes through the generated bindings, and what comes
//! back is moved into host types field by field.

use wasmtime::component::{ComponentExportIndex, Func, HasSelf, InstancePre, Linker, ResourceAny};
use wasmtime::{Store, format_err};

pub(super) use self::bindings::EventRecord;
use self::bindings::aggregate::eshost::plugin::types as wit;
use self::bindings::{aggregate, projection, upcaster};
use crate::sandbox::HostState;
use crate::types::{
    Command, CommandError, Description, Event, EventError, NewEvent, PluginKind, QueryRefusal,
    UpcastResult, UpcastedEvent, VersionedType,
};

/// The version every export is looked up under; any 0.1.x matches it.
const VERSION: &str = "0.1.0";

/// Generated code: the `bindgen!` of each world, and the borrowed event record. `types` is
/// generated once, with the aggregate world, and shared by the other two through `with`.
///
/// The generated code (and wasmtime's `ComponentType`/`Lower` derives) implements unsafe
/// traits and has no `Debug` impls, so the workspace lints are relaxed for it here, and only
/// here.
#[allow(unsafe_code, missing_debug_implementations, unused_qualifications)]
mod bindings {
    use wasmtime::component::{ComponentType, Lower};

    pub(super) mod aggregate {
        wasmtime::component::bindgen!({
            world: "aggregate-plugin",
            path: "../../wit/v0.1.0",
        });
    }

    pub(super) mod upcaster {
        wasmtime::component::bindgen!({
            world: "upcaster-plugin",
            path: "../../wit/v0.1.0",
            with: { "eshost:plugin/types": super::aggregate::eshost::plugin::types },
        });
    }

    pub(super) mod projection {
        wasmtime::component::bindgen!({
            world: "projection-plugin",
            path: "../../wit/v0.1.0",
            with: { "eshost:plugin/types": super::aggregate::eshost::plugin::types },
            imports: { default: trappable },
        });
    }

    /// The 0.1 `event` record, borrowing a host event's strings. wasmtime checks it against
    /// the component's type when a call is typed, field by field, names included.
    #[derive(ComponentType, Lower)]
    #[component(record)]
    pub(crate) struct EventRecord<'a> {
        pub(super) position: u64,
        #[component(name = "stream-id")]
        pub(super) stream_id: &'a str,
        #[component(name = "stream-version")]
        pub(super) stream_version: u64,
        #[component(name = "event-id")]
        pub(super) event_id: &'a str,
        #[component(name = "event-type")]
        pub(super) event_type: &'a str,
        #[component(name = "schema-version")]
        pub(super) schema_version: u32,
        #[component(name = "recorded-at")]
        pub(super) recorded_at: u64,
        pub(super) data: &'a str,
        pub(super) metadata: &'a str,
        #[component(name = "subject-id")]
        pub(super) subject_id: Option<&'a str>,
        #[component(name = "personal-data")]
        pub(super) personal_data: Option<&'a str>,
        pub(super) shredded: bool,
    }
}

// ---- conversions -------------------------------------------------------------------------

impl<'a> From<&'a Event> for EventRecord<'a> {
    fn from(event: &'a Event) -> Self {
        EventRecord {
            position: event.position,
            stream_id: &event.stream_id,
            stream_version: event.stream_version,
            event_id: &event.event_id,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            recorded_at: event.recorded_at,
            data: &event.data,
            metadata: &event.metadata,
            subject_id: event.subject_id.as_deref(),
            personal_data: event.personal_data.as_deref(),
            shredded: event.shredded,
        }
    }
}

impl From<&Command> for wit::Command {
    fn from(command: &Command) -> Self {
        wit::Command {
            payload: command.payload.clone(),
            metadata: command.metadata.clone(),
            issued_at: command.issued_at,
        }
    }
}

impl From<wit::PluginKind> for PluginKind {
    fn from(kind: wit::PluginKind) -> Self {
        match kind {
            wit::PluginKind::Aggregate => PluginKind::Aggregate,
            wit::PluginKind::Upcaster => PluginKind::Upcaster,
            wit::PluginKind::Projection => PluginKind::Projection,
        }
    }
}

impl From<wit::VersionedType> for VersionedType {
    fn from(ty: wit::VersionedType) -> Self {
        VersionedType {
            event_type: ty.event_type,
            schema_version: ty.schema_version,
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
            upcasts: info.upcasts.into_iter().map(Into::into).collect(),
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

impl From<wit::CommandError> for CommandError {
    fn from(error: wit::CommandError) -> Self {
        match error {
            wit::CommandError::Rejected(message) => CommandError::Rejected(message),
            wit::CommandError::Invalid(message) => CommandError::Invalid(message),
        }
    }
}

impl From<wit::EventError> for EventError {
    fn from(error: wit::EventError) -> Self {
        EventError {
            position: error.position,
            message: error.message,
        }
    }
}

impl From<wit::UpcastResult> for UpcastResult {
    fn from(result: wit::UpcastResult) -> Self {
        match result {
            wit::UpcastResult::Unchanged => UpcastResult::Unchanged,
            wit::UpcastResult::Upcasted(event) => UpcastResult::Upcasted(UpcastedEvent {
                event_type: event.event_type,
                schema_version: event.schema_version,
                data: event.data,
            }),
        }
    }
}

impl From<wit::QueryError> for QueryRefusal {
    fn from(error: wit::QueryError) -> Self {
        match error {
            wit::QueryError::UnknownQuery(message) => QueryRefusal::UnknownQuery(message),
            wit::QueryError::InvalidArgs(message) => QueryRefusal::InvalidArgs(message),
            wit::QueryError::Failed(message) => QueryRefusal::Failed(message),
        }
    }
}

// ---- the read-model import ---------------------------------------------------------------

impl projection::eshost::plugin::read_model::Host for HostState {
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

/// Adds the `read-model@0.1.0` import (the host side of the projection world) to `linker`.
pub(crate) fn link_read_model(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    projection::eshost::plugin::read_model::add_to_linker::<_, HasSelf<HostState>>(
        linker,
        |state| state,
    )
}

// ---- the worlds --------------------------------------------------------------------------

/// The index of function `func` in the exported interface `eshost:plugin/{interface}@0.1.x`.
fn export_index(
    pre: &InstancePre<HostState>,
    interface: &str,
    func: &str,
) -> wasmtime::Result<ComponentExportIndex> {
    let name = format!("eshost:plugin/{interface}@{VERSION}");
    let component = pre.component();
    let instance = component
        .get_export_index(None, &name)
        .ok_or_else(|| format_err!("no exported instance named `{name}`"))?;
    component
        .get_export_index(Some(&instance), func)
        .ok_or_else(|| format_err!("`{name}` does not export `{func}`"))
}

/// Instantiates `pre` and finds the function at `index` in the new instance.
fn instantiate<B>(
    pre: &InstancePre<HostState>,
    store: &mut Store<HostState>,
    load: impl FnOnce(&mut Store<HostState>, &wasmtime::component::Instance) -> wasmtime::Result<B>,
    index: ComponentExportIndex,
) -> wasmtime::Result<(B, Func)> {
    let instance = pre.instantiate(&mut *store)?;
    let bindings = load(store, &instance)?;
    let func = instance
        .get_func(&mut *store, index)
        .ok_or_else(|| format_err!("an exported function is missing from the instance"))?;
    Ok((bindings, func))
}

/// An `aggregate-plugin` component, ready to instantiate.
pub(crate) struct AggregatePre {
    pre: InstancePre<HostState>,
    indices: aggregate::AggregatePluginIndices,
    apply: ComponentExportIndex,
}

/// An instantiated `aggregate-plugin` component.
pub(crate) struct Aggregate {
    bindings: aggregate::AggregatePlugin,
    apply: Func,
}

impl AggregatePre {
    pub(crate) fn new(pre: InstancePre<HostState>) -> wasmtime::Result<Self> {
        Ok(AggregatePre {
            indices: aggregate::AggregatePluginIndices::new(&pre)?,
            apply: export_index(&pre, "aggregate", "[method]instance.apply")?,
            pre,
        })
    }

    pub(crate) fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Aggregate> {
        let load = |store: &mut Store<HostState>, instance: &_| self.indices.load(store, instance);
        let (bindings, apply) = instantiate(&self.pre, store, load, self.apply)?;
        Ok(Aggregate { bindings, apply })
    }
}

impl Aggregate {
    pub(crate) fn describe(&self, store: &mut Store<HostState>) -> wasmtime::Result<Description> {
        Ok(self.bindings.call_describe(store)?.into())
    }

    pub(crate) fn construct(
        &self,
        store: &mut Store<HostState>,
        id: &str,
    ) -> wasmtime::Result<ResourceAny> {
        let guest = self.bindings.eshost_plugin_aggregate();
        guest.instance().call_constructor(store, id)
    }

    pub(crate) fn restore(
        &self,
        store: &mut Store<HostState>,
        id: &str,
        snapshot: &[u8],
    ) -> wasmtime::Result<Result<ResourceAny, String>> {
        let guest = self.bindings.eshost_plugin_aggregate();
        guest.instance().call_restore(store, id, snapshot)
    }

    pub(crate) fn apply(
        &self,
        store: &mut Store<HostState>,
        aggregate: ResourceAny,
        events: &[Event],
    ) -> wasmtime::Result<Result<(), EventError>> {
        let records: Vec<EventRecord<'_>> = events.iter().map(EventRecord::from).collect();
        let apply = self
            .apply
            .typed::<(ResourceAny, &[EventRecord<'_>]), (Result<(), wit::EventError>,)>(&*store)?;
        let (result,) = apply.call(store, (aggregate, &records))?;
        Ok(result.map_err(Into::into))
    }

    pub(crate) fn handle(
        &self,
        store: &mut Store<HostState>,
        aggregate: ResourceAny,
        command: &Command,
    ) -> wasmtime::Result<Result<Vec<NewEvent>, CommandError>> {
        let guest = self.bindings.eshost_plugin_aggregate();
        let result = guest
            .instance()
            .call_handle(store, aggregate, &command.into())?;
        Ok(result
            .map(|events| events.into_iter().map(Into::into).collect())
            .map_err(Into::into))
    }

    pub(crate) fn snapshot(
        &self,
        store: &mut Store<HostState>,
        aggregate: ResourceAny,
    ) -> wasmtime::Result<Vec<u8>> {
        let guest = self.bindings.eshost_plugin_aggregate();
        guest.instance().call_snapshot(store, aggregate)
    }

    pub(crate) fn state(
        &self,
        store: &mut Store<HostState>,
        aggregate: ResourceAny,
    ) -> wasmtime::Result<String> {
        let guest = self.bindings.eshost_plugin_aggregate();
        guest.instance().call_state(store, aggregate)
    }
}

/// An `upcaster-plugin` component, ready to instantiate.
pub(crate) struct UpcasterPre {
    pre: InstancePre<HostState>,
    indices: upcaster::UpcasterPluginIndices,
    upcast: ComponentExportIndex,
}

/// An instantiated `upcaster-plugin` component.
pub(crate) struct Upcaster {
    bindings: upcaster::UpcasterPlugin,
    upcast: Func,
}

impl UpcasterPre {
    pub(crate) fn new(pre: InstancePre<HostState>) -> wasmtime::Result<Self> {
        Ok(UpcasterPre {
            indices: upcaster::UpcasterPluginIndices::new(&pre)?,
            upcast: export_index(&pre, "upcaster", "upcast")?,
            pre,
        })
    }

    pub(crate) fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Upcaster> {
        let load = |store: &mut Store<HostState>, instance: &_| self.indices.load(store, instance);
        let (bindings, upcast) = instantiate(&self.pre, store, load, self.upcast)?;
        Ok(Upcaster { bindings, upcast })
    }
}

impl Upcaster {
    pub(crate) fn describe(&self, store: &mut Store<HostState>) -> wasmtime::Result<Description> {
        Ok(self.bindings.call_describe(store)?.into())
    }

    pub(crate) fn upcast(
        &self,
        store: &mut Store<HostState>,
        event: &Event,
    ) -> wasmtime::Result<Result<UpcastResult, String>> {
        let upcast = self
            .upcast
            .typed::<(EventRecord<'_>,), (Result<wit::UpcastResult, String>,)>(&*store)?;
        let (result,) = upcast.call(store, (EventRecord::from(event),))?;
        Ok(result.map(Into::into))
    }
}

/// A `projection-plugin` component, ready to instantiate.
pub(crate) struct ProjectionPre {
    pre: InstancePre<HostState>,
    indices: projection::ProjectionPluginIndices,
    handle: ComponentExportIndex,
}

/// An instantiated `projection-plugin` component.
pub(crate) struct Projection {
    bindings: projection::ProjectionPlugin,
    handle: Func,
}

impl ProjectionPre {
    pub(crate) fn new(pre: InstancePre<HostState>) -> wasmtime::Result<Self> {
        Ok(ProjectionPre {
            indices: projection::ProjectionPluginIndices::new(&pre)?,
            handle: export_index(&pre, "projection", "handle")?,
            pre,
        })
    }

    pub(crate) fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Projection> {
        let load = |store: &mut Store<HostState>, instance: &_| self.indices.load(store, instance);
        let (bindings, handle) = instantiate(&self.pre, store, load, self.handle)?;
        Ok(Projection { bindings, handle })
    }
}

impl Projection {
    pub(crate) fn describe(&self, store: &mut Store<HostState>) -> wasmtime::Result<Description> {
        Ok(self.bindings.call_describe(store)?.into())
    }

    pub(crate) fn handle(
        &self,
        store: &mut Store<HostState>,
        events: &[Event],
    ) -> wasmtime::Result<Result<(), EventError>> {
        let records: Vec<EventRecord<'_>> = events.iter().map(EventRecord::from).collect();
        let handle = self
            .handle
            .typed::<(&[EventRecord<'_>],), (Result<(), wit::EventError>,)>(&*store)?;
        let (result,) = handle.call(store, (&records,))?;
        Ok(result.map_err(Into::into))
    }

    pub(crate) fn query(
        &self,
        store: &mut Store<HostState>,
        name: &str,
        args: &str,
    ) -> wasmtime::Result<Result<String, QueryRefusal>> {
        let guest = self.bindings.eshost_plugin_projection();
        Ok(guest.call_query(store, name, args)?.map_err(Into::into))
    }
}
