//! `relay`, a test reactor: on `Ping {"account","amount"}` it deposits `amount` into the
//! bank account `account`; a `Ping` with `"trap": true` makes it panic (a trap), for the
//! tests of a reactor failing on one event.

use eshost_sdk::serde_json;
use eshost_sdk::{DomainEvent, Error, Intents, Reactor, ReadModel, StoredEvent};
use serde::{Deserialize, Serialize};

/// The one event it reacts to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayEvent {
    /// Deposit `amount` into `account`.
    Ping {
        account: String,
        amount: u64,
        #[serde(default)]
        trap: bool,
    },
}

impl DomainEvent for RelayEvent {}

/// The reactor.
#[derive(Debug, Default)]
pub struct Relay;

impl Reactor for Relay {
    const NAME: &'static str = "relay";
    type Event = RelayEvent;

    fn react(
        event: RelayEvent,
        _meta: &StoredEvent<'_>,
        _model: &mut ReadModel<'_>,
        out: &mut Intents,
    ) -> Result<(), Error> {
        let RelayEvent::Ping {
            account,
            amount,
            trap,
        } = event;
        if trap {
            panic!("relay was asked to trap");
        }
        out.send(
            "bank-account",
            &account,
            &serde_json::json!({"type": "Deposit", "amount": amount}),
            &serde_json::json!({"account": account}),
        )
    }
}

eshost_sdk::export_reactor!(Relay);
