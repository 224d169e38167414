//! The `fraud-watch` reactor: freezes a bank account that sees more than
//! [`MAX_WITHDRAWALS`] withdrawals within [`WINDOW_MS`] (by the events' `recorded_at`), and
//! unfreezes it [`COOL_OFF_MS`] after the withdrawal that set it off.
//!
//! The cool-off is a short one for the demo (seconds, so that one sees the account thaw); a
//! real policy would hold the account for a person to look at.
//!
//! It reads `FundsWithdrawn` from the `bank-account` streams (the stream id is the account
//! id). Once the limit is passed it sends `{"type":"Freeze","reason":"fraud-watch: N
//! withdrawals within 10 minutes"}` to the account, once, and sets a timer; when the timer
//! fires it sends `{"type":"Unfreeze"}`. It unfreezes only an account its own freeze froze:
//! a refused freeze (the account was already frozen, or closed) clears the hold, and a timer
//! that fires before the freeze's outcome arrives leaves the unfreeze to that outcome.
//!
//! Read model: `account/<id>` → [`Watch`]. Query `status` `{"account":"acc-1"}` →
//! `{"frozen_by_watch": bool, "recent": n}` (`recent`: the withdrawals counted towards the
//! limit, at most `MAX_WITHDRAWALS + 1`).

use eshost_sdk::serde_json::{Value, json};
use eshost_sdk::{
    DomainEvent, Error, Intents, Outcome, QueryArgs, QueryError, Reactor, ReadModel, ReadModelView,
    StoredEvent,
};
use serde::{Deserialize, Serialize};

/// More withdrawals than this within [`WINDOW_MS`] freeze the account.
pub const MAX_WITHDRAWALS: usize = 5;
/// The window the withdrawals are counted in: 10 minutes.
pub const WINDOW_MS: u64 = 10 * 60 * 1000;
/// How long after the withdrawal that set it off the account is unfrozen: 3 s (a demo value).
pub const COOL_OFF_MS: u64 = 3000;

/// The aggregate type of the accounts.
const BANK_ACCOUNT: &str = "bank-account";

/// The bank event the watch reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BankEvent {
    /// Money went out of the account.
    FundsWithdrawn {
        /// In cents (not used: every withdrawal counts).
        amount: u64,
    },
}

impl DomainEvent for BankEvent {}

/// Where the watch's own freeze of an account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hold {
    /// The freeze was sent; its outcome has not come yet.
    Requested,
    /// The freeze was accepted; the timer will lift it.
    Frozen,
    /// The timer fired before the freeze's outcome: lift the freeze once it is accepted.
    Expired,
}

/// What the watch knows of one account.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    /// `recorded_at` of the latest withdrawals within the window, oldest first; at most
    /// `MAX_WITHDRAWALS + 1`. Cleared when they set off a freeze.
    pub recent: Vec<u64>,
    /// The watch's own freeze, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
}

/// The context of the commands the watch sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
enum Action {
    Freeze { account: String },
    Unfreeze { account: String },
}

/// The payload of the watch's timers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Thaw {
    account: String,
}

/// Decodes JSON the watch gave with an intent and got back in an outcome.
fn decode<T: serde::de::DeserializeOwned>(value: Value, what: &str) -> Result<T, Error> {
    eshost_sdk::serde_json::from_value(value)
        .map_err(|e| Error::new(format!("{what} of a fraud-watch outcome: {e}")))
}

fn key(account: &str) -> String {
    format!("account/{account}")
}

fn unfreeze(out: &mut Intents, account: &str) -> Result<(), Error> {
    let context = Action::Unfreeze {
        account: account.to_owned(),
    };
    out.send(
        BANK_ACCOUNT,
        account,
        &json!({"type": "Unfreeze"}),
        &context,
    )
}

/// The reactor.
#[derive(Debug)]
pub struct FraudWatch;

impl Reactor for FraudWatch {
    const NAME: &'static str = "fraud-watch";
    type Event = BankEvent;

    fn react(
        _event: BankEvent,
        meta: &StoredEvent<'_>,
        model: &mut ReadModel<'_>,
        out: &mut Intents,
    ) -> Result<(), Error> {
        let account = meta.stream_id;
        let now = meta.recorded_at;
        model.update_json(&key(account), |watch: &mut Option<Watch>| {
            let watch = watch.get_or_insert_with(Watch::default);
            watch
                .recent
                .retain(|&at| now.saturating_sub(at) < WINDOW_MS);
            watch.recent.push(now);
            if watch.recent.len() > MAX_WITHDRAWALS + 1 {
                watch.recent.remove(0);
            }
            if watch.recent.len() <= MAX_WITHDRAWALS || watch.hold.is_some() {
                return Ok(());
            }
            let reason = format!(
                "fraud-watch: {} withdrawals within {} minutes",
                watch.recent.len(),
                WINDOW_MS / 60_000
            );
            let context = Action::Freeze {
                account: account.to_owned(),
            };
            out.send(
                BANK_ACCOUNT,
                account,
                &json!({"type": "Freeze", "reason": reason}),
                &context,
            )?;
            let thaw = Thaw {
                account: account.to_owned(),
            };
            out.timer(now + COOL_OFF_MS, &thaw)?;
            watch.hold = Some(Hold::Requested);
            watch.recent.clear();
            Ok(())
        })
    }

    fn on_outcome(
        outcome: Outcome,
        _meta: &StoredEvent<'_>,
        model: &mut ReadModel<'_>,
        out: &mut Intents,
    ) -> Result<(), Error> {
        let (account, accepted) = match outcome {
            Outcome::TimerFired { payload, .. } => {
                let Thaw { account } = decode(payload, "timer payload")?;
                return model.update_json(&key(&account), |watch: &mut Option<Watch>| {
                    let Some(watch) = watch else { return Ok(()) };
                    match watch.hold {
                        Some(Hold::Frozen) => {
                            watch.hold = None;
                            unfreeze(out, &account)
                        }
                        Some(Hold::Requested) => {
                            watch.hold = Some(Hold::Expired);
                            Ok(())
                        }
                        Some(Hold::Expired) | None => Ok(()),
                    }
                });
            }
            Outcome::Accepted { context, .. } => (decode(context, "context")?, true),
            Outcome::Rejected { context, .. } => (decode(context, "context")?, false),
            _ => return Ok(()),
        };
        // Outcomes of unfreezes need nothing: a refused one means the account thawed already.
        let Action::Freeze { account } = account else {
            return Ok(());
        };
        model.update_json(&key(&account), |watch: &mut Option<Watch>| {
            let Some(watch) = watch else { return Ok(()) };
            match (watch.hold, accepted) {
                (Some(Hold::Requested), true) => watch.hold = Some(Hold::Frozen),
                (Some(Hold::Expired), true) => {
                    watch.hold = None;
                    unfreeze(out, &account)?;
                }
                // Refused (already frozen by someone else, closed): not the watch's to lift.
                (_, false) => watch.hold = None,
                (Some(Hold::Frozen) | None, true) => {}
            }
            Ok(())
        })
    }

    fn query(
        name: &str,
        args: QueryArgs<'_>,
        model: &ReadModelView<'_>,
    ) -> Result<Value, QueryError> {
        match name {
            "status" => {
                #[derive(Deserialize)]
                struct Args {
                    account: String,
                }
                let Args { account } = args.parse()?;
                let watch: Watch = model.get_json(&key(&account))?.unwrap_or_default();
                Ok(json!({"frozen_by_watch": watch.hold.is_some(), "recent": watch.recent.len()}))
            }
            _ => Err(QueryError::unknown(name)),
        }
    }
}

eshost_sdk::export_reactor!(FraudWatch);

#[cfg(test)]
mod tests {
    use super::*;
    use eshost_sdk::testing::{DEFAULT_EPOCH_MS, IntentJson, ReactorTest};

    const T0: u64 = DEFAULT_EPOCH_MS;

    fn withdrawn() -> BankEvent {
        BankEvent::FundsWithdrawn { amount: 10 }
    }

    fn status(test: &ReactorTest<FraudWatch>, account: &str) -> Value {
        test.query_ok("status", json!({"account": account}))
    }

    /// Six withdrawals from `acc-1`, a second apart from `T0`: the sixth sets off the freeze.
    fn tripped() -> ReactorTest<FraudWatch> {
        let mut test = ReactorTest::<FraudWatch>::new().at(T0);
        for _ in 0..MAX_WITHDRAWALS {
            test = test.given("acc-1", [withdrawn()]).then_expect_no_intents();
        }
        assert_eq!(
            status(&test, "acc-1"),
            json!({"frozen_by_watch": false, "recent": 5})
        );
        let test = test.given("acc-1", [withdrawn()]).then_expect_intents([
            IntentJson::send(
                "bank-account",
                "acc-1",
                json!({"type": "Freeze", "reason": "fraud-watch: 6 withdrawals within 10 minutes"}),
                json!({"action": "freeze", "account": "acc-1"}),
            ),
            IntentJson::timer(T0 + 5000 + COOL_OFF_MS, json!({"account": "acc-1"})),
        ]);
        assert_eq!(
            status(&test, "acc-1"),
            json!({"frozen_by_watch": true, "recent": 0})
        );
        test
    }

    #[test]
    fn too_many_withdrawals_freeze_then_the_timer_unfreezes() {
        let test = tripped();
        let fired = test.fired(1);
        let test = test.command_accepted(0).then_expect_no_intents();
        let test = test
            .given_outcomes([fired])
            .then_expect_intents([IntentJson::send(
                "bank-account",
                "acc-1",
                json!({"type": "Unfreeze"}),
                json!({"action": "unfreeze", "account": "acc-1"}),
            )])
            .command_accepted(0)
            .then_expect_no_intents();
        assert_eq!(
            status(&test, "acc-1"),
            json!({"frozen_by_watch": false, "recent": 0})
        );
    }

    #[test]
    fn the_freeze_is_sent_once() {
        let test = tripped();
        let freeze = test.accepted(0);
        let test = test
            .given("acc-1", [withdrawn(), withdrawn(), withdrawn()])
            .then_expect_no_intents()
            .given("acc-1", [withdrawn(), withdrawn(), withdrawn()])
            .then_expect_no_intents()
            .given_outcomes([freeze])
            .then_expect_no_intents();
        assert_eq!(
            status(&test, "acc-1"),
            json!({"frozen_by_watch": true, "recent": 6})
        );
    }

    #[test]
    fn a_timer_before_the_freeze_outcome_unfreezes_once_the_freeze_is_accepted() {
        let test = tripped();
        let (freeze, fired) = (test.accepted(0), test.fired(1));
        test.given_outcomes([fired])
            .then_expect_no_intents()
            .given_outcomes([freeze])
            .then_expect_commands([("bank-account", "acc-1", json!({"type": "Unfreeze"}))]);
    }

    #[test]
    fn a_refused_freeze_is_not_lifted() {
        let test = tripped();
        let fired = test.fired(1);
        let test = test
            .command_rejected(0, "account acc-1 is already frozen")
            .then_expect_no_intents();
        assert_eq!(
            status(&test, "acc-1"),
            json!({"frozen_by_watch": false, "recent": 0})
        );
        test.given_outcomes([fired]).then_expect_no_intents();
    }

    #[test]
    fn withdrawals_spread_over_more_than_the_window_do_not_freeze() {
        let mut test = ReactorTest::<FraudWatch>::new();
        // Two minutes apart: never more than five within ten minutes.
        for i in 0..12 {
            test = test
                .at(T0 + i * 120_000)
                .given("acc-1", [withdrawn()])
                .then_expect_no_intents();
        }
        assert_eq!(
            status(&test, "acc-1"),
            json!({"frozen_by_watch": false, "recent": 5})
        );
        // One more now makes six within ten minutes.
        test.at(T0 + 11 * 120_000 + 1)
            .given("acc-1", [withdrawn()])
            .then_expect_commands([(
                "bank-account",
                "acc-1",
                json!({"type": "Freeze", "reason": "fraud-watch: 6 withdrawals within 10 minutes"}),
            )]);
    }

    #[test]
    fn accounts_are_counted_apart() {
        let mut test = ReactorTest::<FraudWatch>::new();
        for account in ["acc-1", "acc-2", "acc-3"] {
            test = test
                .given(
                    account,
                    [withdrawn(), withdrawn(), withdrawn(), withdrawn()],
                )
                .then_expect_no_intents();
        }
        assert_eq!(
            status(&test, "acc-2"),
            json!({"frozen_by_watch": false, "recent": 4})
        );
        // One batch of six from one account: one freeze, caused by the sixth.
        let test = test
            .given("acc-4", (0..6).map(|_| withdrawn()))
            .then_expect_timers([(T0 + 18_000 + COOL_OFF_MS, json!({"account": "acc-4"}))]);
        assert_eq!(test.raw_intents()[0].cause, 18);
        assert_eq!(
            status(&test, "nobody"),
            json!({"frozen_by_watch": false, "recent": 0})
        );
    }

    #[test]
    fn bad_queries_are_refused() {
        let test = ReactorTest::<FraudWatch>::new();
        assert!(matches!(
            test.query("status", json!({})),
            Err(QueryError::InvalidArgs(_))
        ));
        assert!(matches!(
            test.query("nothing", json!({})),
            Err(QueryError::UnknownQuery(_))
        ));
    }
}
