//! The `transfer-saga` reactor: carries out a `transfer` (see `plugins/transfer`) with
//! `bank-account` commands, one step at a time, and records how it ended on the transfer.
//!
//! On `TransferRequested` (the stream id is the transfer id) it withdraws the amount from
//! `from` (step `debit`). Then, on what came of each command:
//!
//! | step | accepted | rejected |
//! |---|---|---|
//! | `debit` (Withdraw from `from`) | Deposit to `to` (`credit`) | transfer `Fail` with the reason |
//! | `credit` (Deposit to `to`) | transfer `Complete` | Deposit back to `from` (`refund`) |
//! | `refund` (Deposit to `from`) | transfer `Refund` with the credit's reason | nothing: recorded in the log |
//! | `complete`, `fail`, `record-refund` (to the transfer) | nothing | nothing: recorded in the log |
//!
//! A rejection for a malformed command (`invalid`) counts as a rejection. Every command's
//! context carries the whole transfer (`{"transfer","step","from","to","amount"}`, plus
//! `"reason"` once the credit was refused), so the saga keeps no read model.

use eshost_sdk::serde_json::json;
use eshost_sdk::{DomainEvent, Error, Intents, Outcome, Reactor, ReadModel, StoredEvent};
use serde::{Deserialize, Serialize};

/// The aggregate type of the accounts.
const BANK_ACCOUNT: &str = "bank-account";
/// The aggregate type of the transfers.
const TRANSFER: &str = "transfer";

/// The transfer event the saga starts from, with the fields it reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferEvent {
    /// A transfer was requested.
    TransferRequested {
        /// The account to debit.
        from: String,
        /// The account to credit.
        to: String,
        /// In cents.
        amount: u64,
    },
}

impl DomainEvent for TransferEvent {}

/// Which command of the saga an outcome is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Withdraw from `from`.
    Debit,
    /// Deposit to `to`.
    Credit,
    /// Deposit back to `from`, the credit having been refused.
    Refund,
    /// Transfer `Complete`.
    Complete,
    /// Transfer `Fail`.
    Fail,
    /// Transfer `Refund`.
    RecordRefund,
}

/// The context of every command the saga sends: the whole transfer and the step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// The transfer id.
    pub transfer: String,
    /// Which command this is.
    pub step: Step,
    /// The account debited.
    pub from: String,
    /// The account credited.
    pub to: String,
    /// In cents.
    pub amount: u64,
    /// Why the credit was refused (from the `refund` step on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Context {
    /// The same transfer at another step.
    fn at(&self, step: Step) -> Self {
        Self {
            step,
            ..self.clone()
        }
    }
}

/// The reactor.
#[derive(Debug)]
pub struct TransferSaga;

fn deposit(out: &mut Intents, account: &str, context: &Context) -> Result<(), Error> {
    let command = json!({"type": "Deposit", "amount": context.amount});
    out.send(BANK_ACCOUNT, account, &command, context)
}

impl Reactor for TransferSaga {
    const NAME: &'static str = "transfer-saga";
    type Event = TransferEvent;

    fn react(
        event: TransferEvent,
        meta: &StoredEvent<'_>,
        _model: &mut ReadModel<'_>,
        out: &mut Intents,
    ) -> Result<(), Error> {
        let TransferEvent::TransferRequested { from, to, amount } = event;
        let context = Context {
            transfer: meta.stream_id.to_owned(),
            step: Step::Debit,
            from,
            to,
            amount,
            reason: None,
        };
        let command = json!({"type": "Withdraw", "amount": amount});
        out.send(BANK_ACCOUNT, &context.from, &command, &context)
    }

    fn on_outcome(
        outcome: Outcome,
        _meta: &StoredEvent<'_>,
        _model: &mut ReadModel<'_>,
        out: &mut Intents,
    ) -> Result<(), Error> {
        let (context, refused) = match outcome {
            Outcome::Accepted { context, .. } => (context, None),
            Outcome::Rejected {
                context, reason, ..
            } => (context, Some(reason)),
            // The saga sets no timers.
            _ => return Ok(()),
        };
        let context: Context = eshost_sdk::serde_json::from_value(context)
            .map_err(|e| Error::new(format!("outcome context of a transfer step: {e}")))?;
        match (context.step, refused) {
            (Step::Debit, None) => deposit(out, &context.to, &context.at(Step::Credit)),
            (Step::Debit, Some(reason)) => out.send(
                TRANSFER,
                &context.transfer,
                &json!({"type": "Fail", "reason": reason}),
                &context.at(Step::Fail),
            ),
            (Step::Credit, None) => out.send(
                TRANSFER,
                &context.transfer,
                &json!({"type": "Complete"}),
                &context.at(Step::Complete),
            ),
            (Step::Credit, Some(reason)) => {
                let refund = Context {
                    reason: Some(reason),
                    ..context.at(Step::Refund)
                };
                deposit(out, &context.from, &refund)
            }
            (Step::Refund, None) => {
                let reason = context.reason.clone().unwrap_or_default();
                out.send(
                    TRANSFER,
                    &context.transfer,
                    &json!({"type": "Refund", "reason": reason}),
                    &context.at(Step::RecordRefund),
                )
            }
            // A refused refund leaves the money with the saga's outcome in the log, for a
            // person to settle; the transfer stays `requested`. The transfer's own outcomes
            // end the saga either way.
            (Step::Refund, Some(_)) | (Step::Complete | Step::Fail | Step::RecordRefund, _) => {
                Ok(())
            }
        }
    }
}

eshost_sdk::export_reactor!(TransferSaga);

#[cfg(test)]
mod tests {
    use super::*;
    use eshost_sdk::serde_json::Value;
    use eshost_sdk::testing::{IntentJson, ReactorTest};

    fn requested(amount: u64) -> TransferEvent {
        TransferEvent::TransferRequested {
            from: "acc-a".into(),
            to: "acc-b".into(),
            amount,
        }
    }

    fn context(step: &str) -> Value {
        json!({"transfer": "t-1", "step": step, "from": "acc-a", "to": "acc-b", "amount": 500})
    }

    /// A saga whose debit was sent.
    fn debiting() -> ReactorTest<TransferSaga> {
        ReactorTest::<TransferSaga>::new()
            .given("t-1", [requested(500)])
            .then_expect_intents([IntentJson::send(
                "bank-account",
                "acc-a",
                json!({"type": "Withdraw", "amount": 500}),
                context("debit"),
            )])
    }

    /// A saga whose credit was sent.
    fn crediting() -> ReactorTest<TransferSaga> {
        debiting()
            .command_accepted(0)
            .then_expect_intents([IntentJson::send(
                "bank-account",
                "acc-b",
                json!({"type": "Deposit", "amount": 500}),
                context("credit"),
            )])
    }

    #[test]
    fn a_transfer_that_goes_through_completes() {
        crediting()
            .command_accepted(0)
            .then_expect_intents([IntentJson::send(
                "transfer",
                "t-1",
                json!({"type": "Complete"}),
                context("complete"),
            )])
            .command_accepted(0)
            .then_expect_no_intents();
    }

    #[test]
    fn a_refused_debit_fails_the_transfer() {
        debiting()
            .command_rejected(0, "insufficient funds: balance 300, withdrawal 500")
            .then_expect_intents([IntentJson::send(
                "transfer",
                "t-1",
                json!({"type": "Fail", "reason": "insufficient funds: balance 300, withdrawal 500"}),
                context("fail"),
            )])
            .command_accepted(0)
            .then_expect_no_intents();
    }

    #[test]
    fn a_malformed_debit_fails_the_transfer_too() {
        let test = debiting();
        let invalid = test.invalid(0, "missing field `amount`");
        test.given_outcomes([invalid]).then_expect_commands([(
            "transfer",
            "t-1",
            json!({"type": "Fail", "reason": "missing field `amount`"}),
        )]);
    }

    #[test]
    fn a_refused_credit_refunds_the_debit_then_records_the_refund() {
        let mut refund = context("refund");
        refund["reason"] = json!("account acc-b is frozen");
        crediting()
            .command_rejected(0, "account acc-b is frozen")
            .then_expect_intents([IntentJson::send(
                "bank-account",
                "acc-a",
                json!({"type": "Deposit", "amount": 500}),
                refund,
            )])
            .command_accepted(0)
            .then_expect_commands([(
                "transfer",
                "t-1",
                json!({"type": "Refund", "reason": "account acc-b is frozen"}),
            )])
            .command_accepted(0)
            .then_expect_no_intents();
    }

    #[test]
    fn a_refused_refund_is_left_recorded() {
        crediting()
            .command_rejected(0, "account acc-b is frozen")
            .command_rejected(0, "account acc-a is closed")
            .then_expect_no_intents();
    }

    #[test]
    fn refused_transfer_commands_end_the_saga() {
        crediting()
            .command_accepted(0)
            .command_rejected(0, "transfer t-1 is failed, not requested")
            .then_expect_no_intents();
        debiting()
            .command_rejected(0, "insufficient funds")
            .command_rejected(0, "transfer t-1 is completed, not requested")
            .then_expect_no_intents();
        crediting()
            .command_rejected(0, "frozen")
            .command_accepted(0)
            .command_rejected(0, "transfer t-1 is completed, not requested")
            .then_expect_no_intents();
    }

    #[test]
    fn transfers_run_side_by_side_each_with_its_own_context() {
        let first = ReactorTest::<TransferSaga>::new().given("t-1", [requested(500)]);
        let first_debit = first.accepted(0);
        let both = first.given(
            "t-2",
            [TransferEvent::TransferRequested {
                from: "acc-c".into(),
                to: "acc-d".into(),
                amount: 70,
            }],
        );
        let second_debit = both.accepted(0);
        both.given_outcomes([second_debit, first_debit])
            .then_expect_commands([
                (
                    "bank-account",
                    "acc-d",
                    json!({"type": "Deposit", "amount": 70}),
                ),
                (
                    "bank-account",
                    "acc-b",
                    json!({"type": "Deposit", "amount": 500}),
                ),
            ]);
    }

    #[test]
    fn the_saga_keeps_no_state_and_ignores_other_events() {
        let test = crediting()
            .given_stored("acc-a", "FundsWithdrawn", 1, json!({"amount": 500}))
            .then_expect_no_intents();
        assert!(test.read_model().is_empty());
    }

    #[test]
    fn an_outcome_with_a_foreign_context_stops_the_saga() {
        let mut test = ReactorTest::<TransferSaga>::new();
        let (position, message) = test
            .try_given_stored(
                "$reactor-transfer-saga",
                "CommandAccepted",
                1,
                json!({
                    "aggregate_type": "bank-account", "aggregate_id": "acc-a",
                    "command": {"type": "Withdraw", "amount": 5}, "context": {"step": "debit"},
                    "stream_version": 3, "intent": 0,
                    "cause": {"position": 1, "event_id": "e", "stream_id": "t-9"}
                }),
            )
            .unwrap_err();
        assert_eq!(position, 1);
        assert!(
            message.starts_with("outcome context of a transfer step: missing field"),
            "{message}"
        );
    }
}
