//! Upcasters: rewrite old event shapes into new ones when events are read.

use serde::Serialize;

use crate::Error;
use crate::event::StoredEvent;

/// Rewrites stored events of old schema versions into newer shapes. Stored events never
/// change; the host applies upcasters on read, in a chain, so one upcaster only needs to
/// raise an event by one step.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an eshost upcaster",
    note = "implement `eshost_sdk::Upcaster` for it"
)]
pub trait Upcaster: 'static {
    /// The upcaster's name, e.g. `deposit-currency`.
    const NAME: &'static str;

    /// The `(event type, schema version)` pairs this upcaster rewrites. The host calls
    /// [`Upcaster::upcast`] only for events that match one of them.
    const UPCASTS: &'static [(&'static str, u32)];

    /// The event types [`Upcast::renamed`] may give, beside those in `UPCASTS`. The host
    /// refuses an upcast to any other type, and decides from this list which plugins an event
    /// can reach: an event is upcast only for plugins that handle what it may become.
    const RENAMES_TO: &'static [&'static str] = &[];

    /// Rewrites `event`, or says it is already current.
    fn upcast(event: &StoredEvent<'_>) -> Result<Upcast, Error>;
}

/// What an upcaster does with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upcast {
    /// The event is current; it passes on as it is.
    Unchanged,
    /// The event in a newer shape. Ids, positions and metadata are kept by the host.
    Upcasted {
        /// The event type, possibly renamed.
        event_type: String,
        /// The new schema version; must be higher than the old one.
        schema_version: u32,
        /// The new payload, JSON.
        data: String,
    },
}

impl Upcast {
    /// The same event type at `schema_version`, with `data` as the new payload.
    pub fn to_version<T: Serialize + ?Sized>(
        event: &StoredEvent<'_>,
        schema_version: u32,
        data: &T,
    ) -> Result<Self, Error> {
        Self::renamed(event.event_type, schema_version, data)
    }

    /// The event under a new type name at `schema_version`, with `data` as the new payload.
    pub fn renamed<T: Serialize + ?Sized>(
        event_type: impl Into<String>,
        schema_version: u32,
        data: &T,
    ) -> Result<Self, Error> {
        Ok(Self::Upcasted {
            event_type: event_type.into(),
            schema_version,
            data: serde_json::to_string(data)?,
        })
    }
}

/// Runs the upcaster on one event and checks that it moved the schema version forward, to a
/// type it declares.
pub(crate) fn upcast_stored<U: Upcaster>(event: &StoredEvent<'_>) -> Result<Upcast, String> {
    let result = U::upcast(event).map_err(|e| e.to_string())?;
    if let Upcast::Upcasted {
        event_type,
        schema_version,
        ..
    } = &result
    {
        if *schema_version <= event.schema_version {
            return Err(format!(
                "upcaster {} turned {} version {} into version {schema_version}; it must raise the version",
                U::NAME,
                event.event_type,
                event.schema_version
            ));
        }
        let declared = U::UPCASTS.iter().any(|(t, _)| t == event_type)
            || U::RENAMES_TO.contains(&event_type.as_str());
        if !declared {
            return Err(format!(
                "upcaster {} renamed {} version {} to {event_type:?}, which is not in its \
                 UPCASTS or RENAMES_TO",
                U::NAME,
                event.event_type,
                event.schema_version
            ));
        }
    }
    Ok(result)
}
