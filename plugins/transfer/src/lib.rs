//! The `transfer` aggregate: one money transfer between two bank accounts (ids such as
//! `t-1`), and how it ended. It moves no money itself: the `transfer-saga` reactor does, with
//! `bank-account` commands, and reports back here.
//!
//! Commands (JSON): `{"type":"Request","from":"acc-a","to":"acc-b","amount":500}` (cents),
//! `{"type":"Complete"}`, `{"type":"Fail","reason":"..."}` (the debit was refused),
//! `{"type":"Refund","reason":"..."}` (the credit was refused and the money went back). A
//! transfer is requested once; it then ends exactly once, by one of the other three.
//!
//! State (JSON): `{"status":"new|requested|completed|failed|refunded","from","to","amount"}`,
//! plus `"reason"` once failed or refunded.

use eshost_sdk::{Aggregate, CommandContext, DomainEvent, Rejection, ensure, reject};
use serde::{Deserialize, Serialize};

/// The largest amount in cents: 2^53 − 1, as for `bank-account` (exact in every JSON reader).
pub const MAX_CENTS: u64 = (1 << 53) - 1;

/// What happens to a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferEvent {
    /// Someone asked to move `amount` cents from one account to another.
    TransferRequested {
        /// The account debited.
        from: String,
        /// The account credited.
        to: String,
        /// In cents.
        amount: u64,
    },
    /// The money arrived.
    TransferCompleted,
    /// The debit was refused; no money moved.
    TransferFailed {
        /// Why the debit was refused.
        reason: String,
    },
    /// The credit was refused; the money went back to the debited account.
    TransferRefunded {
        /// Why the credit was refused.
        reason: String,
    },
}

impl DomainEvent for TransferEvent {}

/// What can be asked of a transfer. The amount is signed so that a negative or zero amount
/// gets a clear rejection rather than a decoding error.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type")]
pub enum TransferCommand {
    /// Ask for the transfer.
    Request {
        /// The account to debit.
        from: String,
        /// The account to credit.
        to: String,
        /// In cents.
        amount: i64,
    },
    /// Record that the money arrived.
    Complete,
    /// Record that the debit was refused.
    Fail {
        /// Why.
        reason: String,
    },
    /// Record that the credit was refused and the money returned.
    Refund {
        /// Why.
        reason: String,
    },
}

/// Where a transfer stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Not requested yet.
    #[default]
    New,
    /// Requested; money may be on its way.
    Requested,
    /// The money arrived.
    Completed,
    /// The debit was refused.
    Failed,
    /// The credit was refused; the money went back.
    Refunded,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Requested => "requested",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Refunded => "refunded",
        }
    }
}

/// The state of one transfer.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Where it stands.
    pub status: Status,
    /// The account debited.
    pub from: String,
    /// The account credited.
    pub to: String,
    /// In cents.
    pub amount: u64,
    /// Why it failed or was refunded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Transfer {
    /// A transfer ends once, and only after it was requested.
    fn end(&self, id: &str, event: TransferEvent) -> Result<Vec<TransferEvent>, Rejection> {
        if self.status != Status::Requested {
            reject!("transfer {id} is {}, not requested", self.status.name());
        }
        Ok(vec![event])
    }
}

impl Aggregate for Transfer {
    const NAME: &'static str = "transfer";
    type Command = TransferCommand;
    type Event = TransferEvent;

    fn handle(
        &self,
        command: TransferCommand,
        ctx: &CommandContext<'_>,
    ) -> Result<Vec<TransferEvent>, Rejection> {
        let id = ctx.id;
        match command {
            TransferCommand::Request { from, to, amount } => {
                ensure!(
                    self.status == Status::New,
                    "transfer {id} is already requested"
                );
                ensure!(
                    !from.trim().is_empty() && !to.trim().is_empty(),
                    "a transfer needs the accounts `from` and `to`"
                );
                ensure!(
                    from != to,
                    "a transfer needs two accounts, got {from} twice"
                );
                ensure!(
                    amount > 0,
                    "amount must be a positive number of cents, got {amount}"
                );
                let amount = amount.unsigned_abs();
                ensure!(
                    amount <= MAX_CENTS,
                    "amount must be at most {MAX_CENTS} cents, got {amount}"
                );
                Ok(vec![TransferEvent::TransferRequested { from, to, amount }])
            }
            TransferCommand::Complete => self.end(id, TransferEvent::TransferCompleted),
            TransferCommand::Fail { reason } => {
                self.end(id, TransferEvent::TransferFailed { reason })
            }
            TransferCommand::Refund { reason } => {
                self.end(id, TransferEvent::TransferRefunded { reason })
            }
        }
    }

    fn apply(&mut self, event: TransferEvent) {
        match event {
            TransferEvent::TransferRequested { from, to, amount } => {
                self.status = Status::Requested;
                self.from = from;
                self.to = to;
                self.amount = amount;
            }
            TransferEvent::TransferCompleted => self.status = Status::Completed,
            TransferEvent::TransferFailed { reason } => {
                self.status = Status::Failed;
                self.reason = Some(reason);
            }
            TransferEvent::TransferRefunded { reason } => {
                self.status = Status::Refunded;
                self.reason = Some(reason);
            }
        }
    }
}

eshost_sdk::export_aggregate!(Transfer);

#[cfg(test)]
mod tests {
    use super::*;
    use eshost_sdk::serde_json::{Value, json};
    use eshost_sdk::testing::{AggregateTest, given};

    fn requested() -> TransferEvent {
        TransferEvent::TransferRequested {
            from: "acc-a".into(),
            to: "acc-b".into(),
            amount: 500,
        }
    }

    fn new_transfer() -> AggregateTest<Transfer> {
        AggregateTest::with_id("t-1")
    }

    #[test]
    fn requesting_a_transfer() {
        new_transfer()
            .then_expect_state(json!({"status": "new", "from": "", "to": "", "amount": 0}))
            .when_json(json!({"type": "Request", "from": "acc-a", "to": "acc-b", "amount": 500}))
            .then_expect_events([requested()])
            .then_expect_state(
                json!({"status": "requested", "from": "acc-a", "to": "acc-b", "amount": 500}),
            );
    }

    #[test]
    fn a_request_needs_two_accounts_and_a_positive_amount() {
        let request = |from: &str, to: &str, amount: Value| {
            new_transfer()
                .when_json(json!({"type": "Request", "from": from, "to": to, "amount": amount}))
        };
        request("acc-a", "acc-a", json!(5))
            .then_expect_rejection("a transfer needs two accounts, got acc-a twice");
        request("acc-a", "acc-b", json!(0))
            .then_expect_rejection("amount must be a positive number of cents, got 0");
        request("acc-a", "acc-b", json!(-3))
            .then_expect_rejection("amount must be a positive number of cents, got -3");
        request("acc-a", "acc-b", json!(MAX_CENTS + 1)).then_expect_rejection(
            "amount must be at most 9007199254740991 cents, got 9007199254740992",
        );
        request("", "acc-b", json!(5))
            .then_expect_rejection("a transfer needs the accounts `from` and `to`");
        request("acc-a", "acc-b", json!(1.5)).then_expect_invalid("invalid type: floating point");
        new_transfer()
            .when_json(json!({"type": "Request", "from": "acc-a", "amount": 5}))
            .then_expect_invalid("missing field `to`");
    }

    #[test]
    fn a_transfer_is_requested_once() {
        given::<Transfer>([requested()])
            .when_json(json!({"type": "Request", "from": "acc-a", "to": "acc-c", "amount": 1}))
            .then_expect_rejection("transfer test-1 is already requested");
    }

    #[test]
    fn a_requested_transfer_ends_in_one_of_three_ways() {
        given::<Transfer>([requested()])
            .when_json(json!({"type": "Complete"}))
            .then_expect_events([TransferEvent::TransferCompleted])
            .then_expect_state(
                json!({"status": "completed", "from": "acc-a", "to": "acc-b", "amount": 500}),
            );
        given::<Transfer>([requested()])
            .when_json(json!({"type": "Fail", "reason": "insufficient funds"}))
            .then_expect_events([TransferEvent::TransferFailed {
                reason: "insufficient funds".into(),
            }])
            .then_expect_state(json!({
                "status": "failed", "from": "acc-a", "to": "acc-b", "amount": 500,
                "reason": "insufficient funds"
            }));
        given::<Transfer>([requested()])
            .when_json(json!({"type": "Refund", "reason": "account acc-b is frozen"}))
            .then_expect_events([TransferEvent::TransferRefunded {
                reason: "account acc-b is frozen".into(),
            }])
            .then_expect_state(json!({
                "status": "refunded", "from": "acc-a", "to": "acc-b", "amount": 500,
                "reason": "account acc-b is frozen"
            }));
    }

    #[test]
    fn only_a_requested_transfer_can_end() {
        let ends = [
            json!({"type": "Complete"}),
            json!({"type": "Fail", "reason": "x"}),
            json!({"type": "Refund", "reason": "x"}),
        ];
        for end in &ends {
            given::<Transfer>([])
                .when_json(end.clone())
                .then_expect_rejection("transfer test-1 is new, not requested");
        }
        let ended = [
            (TransferEvent::TransferCompleted, "completed"),
            (
                TransferEvent::TransferFailed { reason: "r".into() },
                "failed",
            ),
            (
                TransferEvent::TransferRefunded { reason: "r".into() },
                "refunded",
            ),
        ];
        for (event, status) in ended {
            for end in &ends {
                given::<Transfer>([requested(), event.clone()])
                    .when_json(end.clone())
                    .then_expect_rejection(&format!("transfer test-1 is {status}, not requested"));
            }
        }
    }
}
