//! The `{{NAME}}` projection: the count of every counter stream. Query `count`
//! `{"stream":"counter-1"}` answers `{"stream":"counter-1","count":N}`.

use eshost_sdk::serde_json::{Value, json};
use eshost_sdk::{
    DomainEvent, Error, Projection, QueryArgs, QueryError, ReadModel, ReadModelView, StoredEvent,
};
use serde::{Deserialize, Serialize};

/// The events it reads (others are skipped). Version 2 of `Added` has `by`.
#[derive(Debug, Serialize, Deserialize)]
pub enum Event {
    /// A counter went up.
    Added { by: u64 },
    /// A counter went back to zero.
    Reset,
}

impl DomainEvent for Event {
    const SCHEMA_VERSIONS: &'static [(&'static str, u32)] = &[("Added", 2)];
}

/// The projection.
#[derive(Debug)]
pub struct Counts;

fn key(stream: &str) -> String {
    format!("count/{stream}")
}

impl Projection for Counts {
    const NAME: &'static str = "{{NAME}}";
    type Event = Event;

    fn handle(event: Event, meta: &StoredEvent<'_>, model: &mut ReadModel<'_>) -> Result<(), Error> {
        model.update_json(&key(meta.stream_id), |count: &mut Option<u64>| {
            let count = count.get_or_insert(0);
            match event {
                Event::Added { by } => *count = count.saturating_add(by),
                Event::Reset => *count = 0,
            }
            Ok(())
        })
    }

    fn query(name: &str, args: QueryArgs<'_>, model: &ReadModelView<'_>) -> Result<Value, QueryError> {
        match name {
            "count" => {
                #[derive(Deserialize)]
                struct Args {
                    stream: String,
                }
                let Args { stream } = args.parse()?;
                let count: u64 = model.get_json(&key(&stream))?.unwrap_or(0);
                Ok(json!({ "stream": stream, "count": count }))
            }
            other => Err(QueryError::UnknownQuery(format!("no query named {other:?}"))),
        }
    }
}

eshost_sdk::export_projection!(Counts);
