#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod aggregate;
mod event;
mod projection;
mod reactor;
pub mod testing;
mod upcaster;

use std::fmt;

pub use aggregate::{Aggregate, CommandContext, Rejection};
pub use event::{
    DomainEvent, EncodedEvent, StoredEvent, encode, event_types, personal_fields, schema_version,
};
pub use projection::{Projection, QueryArgs, QueryError, ReadModel, ReadModelStore, ReadModelView};
pub use reactor::{Cause, Effect, Intent, Intents, Outcome, Reactor, outcome_stream};
pub use upcaster::{Upcast, Upcaster};

/// Re-exported so plugins need not name it in their own `Cargo.toml`.
pub use serde_json;

/// An error from a plugin's own code: a payload that does not decode, a read-model value that
/// is not what it should be, a broken invariant. It fails the call (the host stops at the
/// event and shows the message); it is not a trap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self(e.to_string())
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Self(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Self(message.to_owned())
    }
}

include!(concat!(env!("OUT_DIR"), "/wit_bindgen_macro.rs"));

/// Exports an [`Aggregate`] as the component's `aggregate-plugin` world.
///
/// ```ignore
/// eshost_sdk::export_aggregate!(BankAccount);
/// ```
///
/// Use it once, at the crate root, in a crate that depends on the SDK under the name
/// `eshost_sdk`. On non-wasm targets it only checks that the type is an aggregate.
#[macro_export]
macro_rules! export_aggregate {
    ($ty:ty) => {
        $crate::__eshost_export!(
            $ty,
            "aggregate-plugin",
            Aggregate,
            assert_aggregate,
            aggregate_info,
            {
                use exports::eshost::plugin::aggregate as wit;

                impl wit::Guest for Plugin {
                    type Instance = Instance;
                }

                struct Instance(rt::AggregateInstance<super::__EshostPlugin>);

                impl wit::GuestInstance for Instance {
                    fn new(id: String) -> Self {
                        Self(rt::AggregateInstance::new(id))
                    }

                    fn restore(id: String, snapshot: Vec<u8>) -> Result<wit::Instance, String> {
                        rt::AggregateInstance::restore(id, &snapshot)
                            .map(|i| wit::Instance::new(Self(i)))
                    }

                    fn apply(&self, events: Vec<wit::Event>) -> Result<(), wit::EventError> {
                        let mut state = self.0.state_mut();
                        for e in &events {
                            rt::apply(&mut *state, &$crate::__eshost_stored!(e)).map_err(
                                |message| wit::EventError {
                                    position: e.position,
                                    message,
                                },
                            )?;
                        }
                        Ok(())
                    }

                    fn handle(
                        &self,
                        command: wit::Command,
                    ) -> Result<Vec<wit::NewEvent>, wit::CommandError> {
                        match self
                            .0
                            .handle(&command.payload, &command.metadata, command.issued_at)
                        {
                            Ok(events) => Ok(events
                                .into_iter()
                                .map(|e| wit::NewEvent {
                                    event_type: e.event_type.into(),
                                    schema_version: e.schema_version,
                                    data: e.data,
                                    subject_id: e.subject_id,
                                    personal_data: e.personal_data,
                                })
                                .collect()),
                            Err(rt::Rejection::Rejected(m)) => Err(wit::CommandError::Rejected(m)),
                            Err(rt::Rejection::Invalid(m)) => Err(wit::CommandError::Invalid(m)),
                        }
                    }

                    fn snapshot(&self) -> Vec<u8> {
                        self.0.snapshot()
                    }

                    fn state(&self) -> String {
                        self.0.state()
                    }
                }
            }
        );
    };
}

/// Exports an [`Upcaster`] as the component's `upcaster-plugin` world.
///
/// ```ignore
/// eshost_sdk::export_upcaster!(DepositCurrency);
/// ```
///
/// Use it once, at the crate root. On non-wasm targets it only checks the type.
#[macro_export]
macro_rules! export_upcaster {
    ($ty:ty) => {
        $crate::__eshost_export!(
            $ty,
            "upcaster-plugin",
            Upcaster,
            assert_upcaster,
            upcaster_info,
            {
                use eshost::plugin::types as wt;
                use exports::eshost::plugin::upcaster as wit;

                impl wit::Guest for Plugin {
                    fn upcast(event: wit::Event) -> Result<wt::UpcastResult, String> {
                        match rt::upcast::<super::__EshostPlugin>(&$crate::__eshost_stored!(event))?
                        {
                            rt::Upcast::Unchanged => Ok(wt::UpcastResult::Unchanged),
                            rt::Upcast::Upcasted {
                                event_type,
                                schema_version,
                                data,
                            } => Ok(wt::UpcastResult::Upcasted(wt::UpcastedEvent {
                                event_type,
                                schema_version,
                                data,
                            })),
                        }
                    }
                }
            }
        );
    };
}

/// Exports a [`Projection`] as the component's `projection-plugin` world, with the host's
/// `read-model` import as its [`ReadModelStore`].
///
/// ```ignore
/// eshost_sdk::export_projection!(Balances);
/// ```
///
/// Use it once, at the crate root. On non-wasm targets it only checks the type.
#[macro_export]
macro_rules! export_projection {
    ($ty:ty) => {
        $crate::__eshost_export!(
            $ty,
            "projection-plugin",
            Projection,
            assert_projection,
            projection_info,
            {
                use eshost::plugin::types as wt;
                use exports::eshost::plugin::projection as wit;

                $crate::__eshost_host_store!();

                impl wit::Guest for Plugin {
                    fn handle(events: Vec<wit::Event>) -> Result<(), wit::EventError> {
                        rt::handle_batch::<super::__EshostPlugin>(
                            events.iter().map(|e| $crate::__eshost_stored!(e)),
                            &mut HostStore,
                        )
                        .map_err(|(position, message)| wit::EventError { position, message })
                    }

                    fn query(name: String, args: String) -> Result<String, wt::QueryError> {
                        rt::query::<super::__EshostPlugin>(&name, &args, &HostStore).map_err(|e| {
                            match e {
                                rt::QueryError::UnknownQuery(m) => wt::QueryError::UnknownQuery(m),
                                rt::QueryError::InvalidArgs(m) => wt::QueryError::InvalidArgs(m),
                                rt::QueryError::Failed(m) => wt::QueryError::Failed(m),
                            }
                        })
                    }
                }
            }
        );
    };
}

/// Exports a [`Reactor`] as the component's `reactor-plugin` world of `eshost:plugin@0.2.0`,
/// with the host's `read-model` import as its [`ReadModelStore`]. `describe` reports the kind
/// `reactor` and, as `handles`, the event types of [`Reactor::Event`].
///
/// ```ignore
/// eshost_sdk::export_reactor!(TransferSaga);
/// ```
///
/// Use it once, at the crate root. On non-wasm targets it only checks the type.
#[macro_export]
macro_rules! export_reactor {
    ($ty:ty) => {
        $crate::__eshost_export!(
            @bindgen __eshost_wit_bindgen_v0_2,
            $ty,
            "reactor-plugin",
            Reactor,
            assert_reactor,
            reactor_info,
            {
                use eshost::plugin::types as wt;
                use exports::eshost::plugin::reactor as wit;

                $crate::__eshost_host_store!();

                fn intent(intent: rt::Intent) -> wit::Intent {
                    let effect = match intent.effect {
                        rt::Effect::Send {
                            aggregate_type,
                            aggregate_id,
                            command,
                            context,
                        } => wit::Effect::Send(wit::SendCommand {
                            aggregate_type,
                            aggregate_id,
                            command,
                            context,
                        }),
                        rt::Effect::Append { stream_id, events } => {
                            wit::Effect::Append(wit::AppendEvents {
                                stream_id,
                                events: events
                                    .into_iter()
                                    .map(|e| wit::NewEvent {
                                        event_type: e.event_type.into(),
                                        schema_version: e.schema_version,
                                        data: e.data,
                                        subject_id: e.subject_id,
                                        personal_data: e.personal_data,
                                    })
                                    .collect(),
                            })
                        }
                        rt::Effect::Timer { due_at, payload } => {
                            wit::Effect::Timer(wit::SetTimer { due_at, payload })
                        }
                    };
                    wit::Intent {
                        cause: intent.cause,
                        effect,
                    }
                }

                impl wit::Guest for Plugin {
                    fn handle(events: Vec<wit::Event>) -> Result<Vec<wit::Intent>, wit::EventError> {
                        rt::react_batch::<super::__EshostPlugin>(
                            events.iter().map(|e| $crate::__eshost_stored!(e)),
                            &mut HostStore,
                        )
                        .map(|intents| intents.into_iter().map(intent).collect())
                        .map_err(|(position, message)| wit::EventError { position, message })
                    }

                    fn query(name: String, args: String) -> Result<String, wt::QueryError> {
                        rt::reactor_query::<super::__EshostPlugin>(&name, &args, &HostStore)
                            .map_err(|e| match e {
                                rt::QueryError::UnknownQuery(m) => wt::QueryError::UnknownQuery(m),
                                rt::QueryError::InvalidArgs(m) => wt::QueryError::InvalidArgs(m),
                                rt::QueryError::Failed(m) => wt::QueryError::Failed(m),
                            })
                    }
                }
            }
        );
    };
}

/// The host's read-model store (the `read-model` import, which the host scopes to this
/// plugin) as a [`ReadModelStore`] named `HostStore`. Used by the export macros, inside the
/// generated bindings module.
#[doc(hidden)]
#[macro_export]
macro_rules! __eshost_host_store {
    () => {
        /// The host's read-model store, scoped by the host to this plugin.
        struct HostStore;

        impl rt::ReadModelStore for HostStore {
            fn get(&self, key: &str) -> Option<String> {
                eshost::plugin::read_model::get(key)
            }
            fn put(&mut self, key: &str, value: &str) {
                eshost::plugin::read_model::put(key, value)
            }
            fn delete(&mut self, key: &str) {
                eshost::plugin::read_model::delete(key)
            }
            fn scan(
                &self,
                prefix: &str,
                start_after: Option<&str>,
                limit: u32,
            ) -> Vec<(String, String)> {
                eshost::plugin::read_model::scan(prefix, start_after, limit)
            }
        }
    };
}

/// The one implementation of the export macros: the compile-time check that `$ty` is a
/// plugin of the world, the one-export-per-crate guard, the bindings of `$world` (from the
/// frozen `wit/v0.1.0`, or the contract `$bindgen` embeds), `describe()`, the world's own glue
/// (`$glue`: items that implement the generated traits for `Plugin`, with `rt` naming
/// [`__private`]) and `export!`.
#[doc(hidden)]
#[macro_export]
macro_rules! __eshost_export {
    ($ty:ty, $world:literal, $kind:ident, $assert:ident, $info:ident, { $($glue:tt)* }) => {
        $crate::__eshost_export!(
            @bindgen __eshost_wit_bindgen,
            $ty, $world, $kind, $assert, $info, { $($glue)* }
        );
    };
    (
        @bindgen $bindgen:ident,
        $ty:ty, $world:literal, $kind:ident, $assert:ident, $info:ident, { $($glue:tt)* }
    ) => {
        const _: fn() = $crate::__private::$assert::<$ty>;
        // One export per crate: a second export macro fails here with "defined multiple times".
        #[doc(hidden)]
        #[allow(dead_code)]
        type __EshostPlugin = $ty;

        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        #[allow(
            unsafe_code,
            missing_docs,
            missing_debug_implementations,
            unused,
            unused_qualifications,
            clippy::all
        )]
        mod __eshost_plugin {
            $crate::$bindgen!($world);

            use $crate::__private as rt;

            struct Plugin;

            impl Guest for Plugin {
                fn describe() -> PluginInfo {
                    $crate::__eshost_plugin_info!(
                        rt::$info::<super::__EshostPlugin>(env!("CARGO_PKG_VERSION")),
                        $kind
                    )
                }
            }

            $($glue)*

            export!(Plugin);
        }
    };
}

/// Builds a [`StoredEvent`] view over a wit-bindgen `event` record. Used by the export macros.
#[doc(hidden)]
#[macro_export]
macro_rules! __eshost_stored {
    ($e:expr) => {{
        let e = &$e;
        $crate::StoredEvent {
            position: e.position,
            stream_id: &e.stream_id,
            stream_version: e.stream_version,
            event_id: &e.event_id,
            event_type: &e.event_type,
            schema_version: e.schema_version,
            recorded_at: e.recorded_at,
            data: &e.data,
            metadata: &e.metadata,
            subject_id: e.subject_id.as_deref(),
            personal_data: e.personal_data.as_deref(),
            shredded: e.shredded,
        }
    }};
}

/// Converts [`__private::Info`] into the generated `plugin-info` record. Used by the export
/// macros, inside the generated bindings module.
#[doc(hidden)]
#[macro_export]
macro_rules! __eshost_plugin_info {
    ($info:expr, $kind:ident) => {{
        let info = $info;
        eshost::plugin::types::PluginInfo {
            name: info.name.into(),
            kind: eshost::plugin::types::PluginKind::$kind,
            version: info.version.into(),
            handles: info.handles.iter().map(|t| (*t).into()).collect(),
            upcasts: info
                .upcasts
                .iter()
                .map(|(t, v)| eshost::plugin::types::VersionedType {
                    event_type: (*t).into(),
                    schema_version: *v,
                })
                .collect(),
        }
    }};
}

/// Support for the export macros. Not part of the API.
#[doc(hidden)]
pub mod __private {
    use std::cell::{RefCell, RefMut};

    #[cfg(target_arch = "wasm32")]
    pub use wit_bindgen;

    pub use crate::{
        Aggregate, Effect, Intent, Projection, QueryError, Reactor, ReadModelStore, Rejection,
        Upcast, Upcaster,
    };
    use crate::{EncodedEvent, StoredEvent, aggregate, event, projection, reactor, upcaster};

    /// Compile-time check that `A` is an aggregate.
    pub fn assert_aggregate<A: Aggregate>() {}
    /// Compile-time check that `U` is an upcaster.
    pub fn assert_upcaster<U: Upcaster>() {}
    /// Compile-time check that `P` is a projection.
    pub fn assert_projection<P: Projection>() {}
    /// Compile-time check that `R` is a reactor.
    pub fn assert_reactor<R: Reactor>() {}

    /// What `describe` reports, before conversion to the generated record.
    #[derive(Debug)]
    pub struct Info {
        /// The plugin's name.
        pub name: &'static str,
        /// The plugin crate's version.
        pub version: &'static str,
        /// The event types it wants.
        pub handles: Vec<&'static str>,
        /// Upcasters: the (type, version) pairs it rewrites.
        pub upcasts: &'static [(&'static str, u32)],
    }

    /// `describe` of an aggregate.
    pub fn aggregate_info<A: Aggregate>(version: &'static str) -> Info {
        Info {
            name: A::NAME,
            version,
            handles: event::event_types::<A::Event>().to_vec(),
            upcasts: &[],
        }
    }

    /// `describe` of an upcaster: it handles (may give) the types it upcasts and those it
    /// renames to.
    pub fn upcaster_info<U: Upcaster>(version: &'static str) -> Info {
        let mut handles: Vec<&'static str> = U::UPCASTS.iter().map(|(t, _)| *t).collect();
        handles.extend_from_slice(U::RENAMES_TO);
        handles.sort_unstable();
        handles.dedup();
        Info {
            name: U::NAME,
            version,
            handles,
            upcasts: U::UPCASTS,
        }
    }

    /// `describe` of a projection.
    pub fn projection_info<P: Projection>(version: &'static str) -> Info {
        Info {
            name: P::NAME,
            version,
            handles: event::event_types::<P::Event>().to_vec(),
            upcasts: &[],
        }
    }

    /// `describe` of a reactor.
    pub fn reactor_info<R: Reactor>(version: &'static str) -> Info {
        Info {
            name: R::NAME,
            version,
            handles: event::event_types::<R::Event>().to_vec(),
            upcasts: &[],
        }
    }

    /// One aggregate instance inside the guest. Resource methods take `&self`, hence the cell.
    #[derive(Debug)]
    pub struct AggregateInstance<A> {
        id: String,
        state: RefCell<A>,
    }

    impl<A: Aggregate> AggregateInstance<A> {
        /// A fresh instance.
        pub fn new(id: String) -> Self {
            let state = RefCell::new(A::initial(&id));
            Self { id, state }
        }

        /// An instance rebuilt from a snapshot.
        pub fn restore(id: String, snapshot: &[u8]) -> Result<Self, String> {
            let state = RefCell::new(aggregate::restore::<A>(snapshot)?);
            Ok(Self { id, state })
        }

        /// The state, for applying a batch of events.
        pub fn state_mut(&self) -> RefMut<'_, A> {
            self.state.borrow_mut()
        }

        /// Decodes and handles a command.
        pub fn handle(
            &self,
            payload: &str,
            metadata: &str,
            issued_at: u64,
        ) -> Result<Vec<EncodedEvent>, Rejection> {
            let ctx = crate::CommandContext {
                id: &self.id,
                issued_at,
                metadata,
            };
            aggregate::handle_payload(&*self.state.borrow(), payload, &ctx)
        }

        /// The snapshot bytes.
        pub fn snapshot(&self) -> Vec<u8> {
            aggregate::snapshot(&*self.state.borrow())
        }

        /// The state as JSON.
        pub fn state(&self) -> String {
            aggregate::state_json(&*self.state.borrow())
        }
    }

    /// Applies one stored event.
    #[inline]
    pub fn apply<A: Aggregate>(state: &mut A, event: &StoredEvent<'_>) -> Result<(), String> {
        aggregate::apply_stored(state, event)
    }

    /// Upcasts one event.
    pub fn upcast<U: Upcaster>(event: &StoredEvent<'_>) -> Result<Upcast, String> {
        upcaster::upcast_stored::<U>(event)
    }

    /// Handles a batch of events in a projection.
    pub fn handle_batch<'e, P: Projection>(
        events: impl IntoIterator<Item = StoredEvent<'e>>,
        store: &mut dyn ReadModelStore,
    ) -> Result<(), (u64, String)> {
        projection::handle_batch::<P>(events, store)
    }

    /// Runs a projection query.
    pub fn query<P: Projection>(
        name: &str,
        args: &str,
        store: &dyn ReadModelStore,
    ) -> Result<String, QueryError> {
        projection::run_query::<P>(name, args, store)
    }

    /// Handles a batch of events in a reactor.
    pub fn react_batch<'e, R: Reactor>(
        events: impl IntoIterator<Item = StoredEvent<'e>>,
        store: &mut dyn ReadModelStore,
    ) -> Result<Vec<Intent>, (u64, String)> {
        reactor::handle_batch::<R>(events, store)
    }

    /// Runs a reactor query.
    pub fn reactor_query<R: Reactor>(
        name: &str,
        args: &str,
        store: &dyn ReadModelStore,
    ) -> Result<String, QueryError> {
        reactor::run_query::<R>(name, args, store)
    }
}
