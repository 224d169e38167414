//! The `{{NAME}}` upcaster: `Added` version 1 (`{"n":N}`) becomes version 2 (`{"by":N}`).

use eshost_sdk::serde_json::{Map, Value};
use eshost_sdk::{Error, StoredEvent, Upcast, Upcaster};

/// The upcaster.
#[derive(Debug)]
pub struct RenameN;

impl Upcaster for RenameN {
    const NAME: &'static str = "{{NAME}}";
    const UPCASTS: &'static [(&'static str, u32)] = &[("Added", 1)];

    fn upcast(event: &StoredEvent<'_>) -> Result<Upcast, Error> {
        if (event.event_type, event.schema_version) != ("Added", 1) {
            return Ok(Upcast::Unchanged);
        }
        let mut data: Map<String, Value> = event
            .data_as()
            .map_err(|e| Error::new(format!("Added v1 at position {}: {e}", event.position)))?;
        let Some(n) = data.remove("n") else {
            return Err(Error::new(format!("Added v1 at position {} has no n", event.position)));
        };
        data.insert("by".into(), n);
        Upcast::to_version(event, 2, &data)
    }
}

eshost_sdk::export_upcaster!(RenameN);
