//! The `bank-account` aggregate. Amounts are integers in cents; an account holds one
//! currency, fixed when it is opened.
//!
//! Commands (JSON): `{"type":"Open","owner":"Ann","initial_deposit":100,"currency":"USD"}`
//! (the last two optional), `{"type":"Deposit","amount":100}` (optional `currency`, which
//! must be the account's), `{"type":"Withdraw","amount":50}`,
//! `{"type":"Freeze","reason":"..."}`, `{"type":"Unfreeze"}`, `{"type":"Close"}` (pays out
//! the balance and closes the account: two events).
//!
//! Every amount and every balance stays within `1..=`[`MAX_CENTS`] (balances `0..=`), the
//! range all first-party plugins share: JSON numbers that size are exact in every language
//! (JavaScript's included), and a projection's `i64` sums of them cannot overflow.

use eshost_sdk::{Aggregate, CommandContext, DomainEvent, Rejection, ensure, reject};
use serde::{Deserialize, Serialize};

/// The currency of accounts and deposits recorded before currencies existed.
pub const DEFAULT_CURRENCY: &str = "USD";

/// The largest amount, and the largest balance, in cents: 2^53 − 1, the largest integer
/// every JSON reader holds exactly.
pub const MAX_CENTS: u64 = (1 << 53) - 1;

fn default_currency() -> String {
    DEFAULT_CURRENCY.to_owned()
}

/// What happens to a bank account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BankEvent {
    /// The account was opened, possibly with money in it.
    AccountOpened {
        /// Who owns it.
        owner: String,
        /// The opening deposit, in cents.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        initial_deposit: Option<u64>,
        /// The account's currency; events without it are USD.
        #[serde(default = "default_currency")]
        currency: String,
    },
    /// Money came in (schema version 2 added `currency`; see the `deposit-currency` upcaster).
    FundsDeposited {
        /// In cents.
        amount: u64,
        /// ISO 4217 code, e.g. `USD`.
        currency: String,
    },
    /// Money went out.
    FundsWithdrawn {
        /// In cents.
        amount: u64,
    },
    /// Money movement was stopped.
    AccountFrozen {
        /// Why.
        reason: String,
    },
    /// Money may move again.
    AccountUnfrozen,
    /// The account was closed (its balance paid out just before); nothing may change any more.
    AccountClosed,
}

impl DomainEvent for BankEvent {
    const SCHEMA_VERSIONS: &'static [(&'static str, u32)] = &[("FundsDeposited", 2)];
}

/// What a client can ask of a bank account. Amounts are signed so that a negative or zero
/// amount gets a clear rejection rather than a decoding error.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type")]
pub enum BankCommand {
    /// Open the account.
    Open {
        /// Who owns it.
        owner: String,
        /// An opening deposit, in cents.
        #[serde(default)]
        initial_deposit: Option<i64>,
        /// The account's currency (default USD).
        #[serde(default)]
        currency: Option<String>,
    },
    /// Put money in.
    Deposit {
        /// In cents.
        amount: i64,
        /// Must be the account's currency when given.
        #[serde(default)]
        currency: Option<String>,
    },
    /// Take money out.
    Withdraw {
        /// In cents.
        amount: i64,
    },
    /// Stop money movement.
    Freeze {
        /// Why.
        reason: String,
    },
    /// Allow money movement again.
    Unfreeze,
    /// Pay out the whole balance and close the account.
    Close,
}

/// The state of one account.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankAccount {
    /// The account id (its stream id).
    pub id: String,
    /// Who owns it, once opened.
    pub owner: Option<String>,
    /// In cents.
    pub balance: u64,
    /// Once opened.
    pub currency: Option<String>,
    /// Whether money movement is stopped.
    pub frozen: bool,
    /// Whether the account was opened.
    pub open: bool,
    /// Whether the account was closed (`open` stays true: it was opened once).
    #[serde(default)]
    pub closed: bool,
}

impl BankAccount {
    fn currency(&self) -> &str {
        self.currency.as_deref().unwrap_or(DEFAULT_CURRENCY)
    }

    fn ensure_movable(&self) -> Result<(), Rejection> {
        ensure!(!self.frozen, "account {} is frozen", self.id);
        Ok(())
    }
}

/// A command amount as cents within `1..=MAX_CENTS`.
fn positive(amount: i64) -> Result<u64, Rejection> {
    ensure!(
        amount > 0,
        "amount must be a positive number of cents, got {amount}"
    );
    let cents = amount.unsigned_abs();
    ensure!(
        cents <= MAX_CENTS,
        "amount must be at most {MAX_CENTS} cents, got {amount}"
    );
    Ok(cents)
}

fn valid_currency(code: String) -> Result<String, Rejection> {
    ensure!(
        code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()),
        "currency must be a three-letter ISO 4217 code such as USD, got {code:?}"
    );
    Ok(code)
}

impl Aggregate for BankAccount {
    const NAME: &'static str = "bank-account";
    type Command = BankCommand;
    type Event = BankEvent;

    fn initial(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            ..Self::default()
        }
    }

    fn handle(
        &self,
        command: BankCommand,
        _ctx: &CommandContext<'_>,
    ) -> Result<Vec<BankEvent>, Rejection> {
        if self.closed {
            reject!("account {} is closed", self.id);
        }
        if !self.open && !matches!(command, BankCommand::Open { .. }) {
            reject!("account {} is not open", self.id);
        }
        let event = match command {
            BankCommand::Open {
                owner,
                initial_deposit,
                currency,
            } => {
                ensure!(!self.open, "account {} is already open", self.id);
                ensure!(!owner.trim().is_empty(), "owner must not be empty");
                BankEvent::AccountOpened {
                    owner,
                    initial_deposit: initial_deposit.map(positive).transpose()?,
                    currency: valid_currency(currency.unwrap_or_else(default_currency))?,
                }
            }
            BankCommand::Deposit { amount, currency } => {
                let amount = positive(amount)?;
                self.ensure_movable()?;
                let currency = currency.unwrap_or_else(|| self.currency().to_owned());
                ensure!(
                    currency == self.currency(),
                    "currency mismatch: account {} holds {}, deposit is in {currency}",
                    self.id,
                    self.currency()
                );
                ensure!(
                    self.balance
                        .checked_add(amount)
                        .is_some_and(|balance| balance <= MAX_CENTS),
                    "deposit of {amount} would take the balance {} over {MAX_CENTS} cents",
                    self.balance
                );
                BankEvent::FundsDeposited { amount, currency }
            }
            BankCommand::Withdraw { amount } => {
                let amount = positive(amount)?;
                self.ensure_movable()?;
                ensure!(
                    amount <= self.balance,
                    "insufficient funds: balance {}, withdrawal {amount}",
                    self.balance
                );
                BankEvent::FundsWithdrawn { amount }
            }
            BankCommand::Freeze { reason } => {
                ensure!(!self.frozen, "account {} is already frozen", self.id);
                ensure!(!reason.trim().is_empty(), "a freeze needs a reason");
                BankEvent::AccountFrozen { reason }
            }
            BankCommand::Unfreeze => {
                ensure!(self.frozen, "account {} is not frozen", self.id);
                BankEvent::AccountUnfrozen
            }
            BankCommand::Close => {
                self.ensure_movable()?;
                let payout = (self.balance > 0).then_some(BankEvent::FundsWithdrawn {
                    amount: self.balance,
                });
                return Ok(payout
                    .into_iter()
                    .chain([BankEvent::AccountClosed])
                    .collect());
            }
        };
        Ok(vec![event])
    }

    fn apply(&mut self, event: BankEvent) {
        match event {
            BankEvent::AccountOpened {
                owner,
                initial_deposit,
                currency,
            } => {
                self.open = true;
                self.owner = Some(owner);
                self.balance = initial_deposit.unwrap_or(0);
                self.currency = Some(currency);
            }
            // Events are facts: saturate rather than fail on values `handle` never produces.
            BankEvent::FundsDeposited { amount, .. } => {
                self.balance = self.balance.saturating_add(amount)
            }
            BankEvent::FundsWithdrawn { amount } => {
                self.balance = self.balance.saturating_sub(amount)
            }
            BankEvent::AccountFrozen { .. } => self.frozen = true,
            BankEvent::AccountUnfrozen => self.frozen = false,
            BankEvent::AccountClosed => self.closed = true,
        }
    }
}

eshost_sdk::export_aggregate!(BankAccount);

#[cfg(test)]
mod tests {
    use super::*;
    use eshost_sdk::serde_json::json;
    use eshost_sdk::testing::{AggregateTest, given};

    fn opened(initial_deposit: Option<u64>) -> BankEvent {
        BankEvent::AccountOpened {
            owner: "Ann".into(),
            initial_deposit,
            currency: "USD".into(),
        }
    }

    fn deposited(amount: u64) -> BankEvent {
        BankEvent::FundsDeposited {
            amount,
            currency: "USD".into(),
        }
    }

    #[test]
    fn opening_an_account() {
        AggregateTest::<BankAccount>::with_id("account-7")
            .when_json(json!({"type": "Open", "owner": "Ann", "initial_deposit": 250}))
            .then_expect_events([opened(Some(250))])
            .then_expect_state(json!({
                "id": "account-7", "owner": "Ann", "balance": 250,
                "currency": "USD", "frozen": false, "open": true, "closed": false
            }));
    }

    #[test]
    fn opening_twice_is_refused() {
        AggregateTest::<BankAccount>::with_id("account-7")
            .given([opened(None)])
            .when(BankCommand::Open {
                owner: "Bob".into(),
                initial_deposit: None,
                currency: None,
            })
            .then_expect_rejection("account account-7 is already open");
    }

    #[test]
    fn nothing_happens_before_the_account_is_open() {
        given::<BankAccount>([])
            .when_json(json!({"type": "Deposit", "amount": 100}))
            .then_expect_rejection("account test-1 is not open");
        given::<BankAccount>([])
            .when(BankCommand::Unfreeze)
            .then_expect_rejection("account test-1 is not open");
    }

    #[test]
    fn deposits_and_withdrawals_move_the_balance() {
        given::<BankAccount>([opened(Some(100))])
            .when_json(json!({"type": "Deposit", "amount": 200}))
            .then_expect_events([deposited(200)])
            .when_json(json!({"type": "Withdraw", "amount": 250}))
            .then_expect_events([BankEvent::FundsWithdrawn { amount: 250 }])
            .then_expect_state(json!({
                "id": "test-1", "owner": "Ann", "balance": 50,
                "currency": "USD", "frozen": false, "open": true, "closed": false
            }));
    }

    #[test]
    fn no_overdraft() {
        given::<BankAccount>([opened(None), deposited(300)])
            .when(BankCommand::Withdraw { amount: 500 })
            .then_expect_rejection("insufficient funds: balance 300, withdrawal 500");
    }

    #[test]
    fn amounts_must_be_positive_integers() {
        let account = || given::<BankAccount>([opened(Some(10))]);
        account()
            .when_json(json!({"type": "Deposit", "amount": 0}))
            .then_expect_rejection("amount must be a positive number of cents, got 0");
        account()
            .when_json(json!({"type": "Withdraw", "amount": -5}))
            .then_expect_rejection("amount must be a positive number of cents, got -5");
        account()
            .when_json(json!({"type": "Deposit", "amount": 1.5}))
            .then_expect_invalid("invalid type: floating point");
        account()
            .when_json(json!({"type": "Open", "owner": "x", "initial_deposit": -1}))
            .then_expect_rejection("account test-1 is already open");
        AggregateTest::<BankAccount>::new()
            .when_json(json!({"type": "Open", "owner": "x", "initial_deposit": -1}))
            .then_expect_rejection("amount must be a positive number of cents, got -1");
    }

    #[test]
    fn malformed_commands_are_invalid_not_rejected() {
        let account = || given::<BankAccount>([opened(None)]);
        account()
            .when_json(json!({"type": "Teleport"}))
            .then_expect_invalid("unknown variant `Teleport`");
        account()
            .when_json(json!({"type": "Deposit"}))
            .then_expect_invalid("missing field `amount`");
        account()
            .when_json(json!({"amount": 5}))
            .then_expect_invalid("missing field `type`");
    }

    #[test]
    fn frozen_accounts_refuse_money_movement() {
        let frozen = || {
            given::<BankAccount>([opened(Some(100))])
                .when_json(json!({"type": "Freeze", "reason": "fraud check"}))
                .then_expect_events([BankEvent::AccountFrozen {
                    reason: "fraud check".into(),
                }])
        };
        frozen()
            .when(BankCommand::Deposit {
                amount: 1,
                currency: None,
            })
            .then_expect_rejection("account test-1 is frozen");
        frozen()
            .when(BankCommand::Withdraw { amount: 1 })
            .then_expect_rejection("account test-1 is frozen");
        frozen()
            .when(BankCommand::Freeze {
                reason: "again".into(),
            })
            .then_expect_rejection("account test-1 is already frozen");
        frozen()
            .when_json(json!({"type": "Unfreeze"}))
            .then_expect_events([BankEvent::AccountUnfrozen])
            .when(BankCommand::Withdraw { amount: 100 })
            .then_expect_events([BankEvent::FundsWithdrawn { amount: 100 }])
            .then_expect_state(json!({
                "id": "test-1", "owner": "Ann", "balance": 0,
                "currency": "USD", "frozen": false, "open": true, "closed": false
            }));
    }

    #[test]
    fn unfreezing_needs_a_frozen_account_and_freezing_a_reason() {
        given::<BankAccount>([opened(None)])
            .when(BankCommand::Unfreeze)
            .then_expect_rejection("account test-1 is not frozen");
        given::<BankAccount>([opened(None)])
            .when(BankCommand::Freeze { reason: " ".into() })
            .then_expect_rejection("a freeze needs a reason");
    }

    #[test]
    fn an_account_keeps_its_currency() {
        let eur = BankEvent::AccountOpened {
            owner: "Eva".into(),
            initial_deposit: None,
            currency: "EUR".into(),
        };
        given::<BankAccount>([eur.clone()])
            .when_json(json!({"type": "Deposit", "amount": 5}))
            .then_expect_events([BankEvent::FundsDeposited {
                amount: 5,
                currency: "EUR".into(),
            }]);
        given::<BankAccount>([eur])
            .when_json(json!({"type": "Deposit", "amount": 5, "currency": "USD"}))
            .then_expect_rejection(
                "currency mismatch: account test-1 holds EUR, deposit is in USD",
            );
        AggregateTest::<BankAccount>::new()
            .when_json(json!({"type": "Open", "owner": "Eva", "currency": "euro"}))
            .then_expect_rejection(
                "currency must be a three-letter ISO 4217 code such as USD, got \"euro\"",
            );
    }

    #[test]
    fn balances_stay_within_the_shared_range() {
        // The overflow that stopped the balances projection: i64::MAX onto 500.
        given::<BankAccount>([opened(Some(500))])
            .when_json(json!({"type": "Deposit", "amount": i64::MAX}))
            .then_expect_rejection(&format!(
                "amount must be at most 9007199254740991 cents, got {}",
                i64::MAX
            ));
        given::<BankAccount>([opened(Some(500))])
            .when(BankCommand::Deposit {
                amount: (MAX_CENTS - 499) as i64,
                currency: None,
            })
            .then_expect_rejection(
                "deposit of 9007199254740492 would take the balance 500 over 9007199254740991 cents",
            );
        // Up to the bound exactly is fine.
        given::<BankAccount>([opened(Some(500))])
            .when(BankCommand::Deposit {
                amount: (MAX_CENTS - 500) as i64,
                currency: None,
            })
            .then_expect_events([deposited(MAX_CENTS - 500)])
            .then_expect_state(json!({
                "id": "test-1", "owner": "Ann", "balance": 9_007_199_254_740_991_u64,
                "currency": "USD", "frozen": false, "open": true, "closed": false
            }));
        AggregateTest::<BankAccount>::new()
            .when_json(json!({"type": "Open", "owner": "x", "initial_deposit": MAX_CENTS + 1}))
            .then_expect_rejection(
                "amount must be at most 9007199254740991 cents, got 9007199254740992",
            );
        given::<BankAccount>([opened(Some(MAX_CENTS))])
            .when_json(json!({"type": "Withdraw", "amount": MAX_CENTS + 1}))
            .then_expect_rejection(
                "amount must be at most 9007199254740991 cents, got 9007199254740992",
            );
        // A balance beyond the bound (events appended by hand) takes no more deposits.
        given::<BankAccount>([opened(Some(u64::MAX - 1))])
            .when(BankCommand::Deposit {
                amount: 2,
                currency: None,
            })
            .then_expect_rejection(&format!(
                "deposit of 2 would take the balance {} over 9007199254740991 cents",
                u64::MAX - 1
            ));
    }

    #[test]
    fn closing_pays_out_the_balance_then_closes() {
        given::<BankAccount>([opened(Some(100)), deposited(50)])
            .when_json(json!({"type": "Close"}))
            .then_expect_events([
                BankEvent::FundsWithdrawn { amount: 150 },
                BankEvent::AccountClosed,
            ])
            .then_expect_state(json!({
                "id": "test-1", "owner": "Ann", "balance": 0,
                "currency": "USD", "frozen": false, "open": true, "closed": true
            }));
        // Nothing to pay out: just closed.
        given::<BankAccount>([opened(None)])
            .when(BankCommand::Close)
            .then_expect_events([BankEvent::AccountClosed]);
    }

    #[test]
    fn a_closed_account_refuses_everything() {
        let closed = || {
            given::<BankAccount>([
                opened(Some(10)),
                BankEvent::FundsWithdrawn { amount: 10 },
                BankEvent::AccountClosed,
            ])
        };
        for command in [
            json!({"type": "Deposit", "amount": 1}),
            json!({"type": "Withdraw", "amount": 1}),
            json!({"type": "Open", "owner": "Ann"}),
            json!({"type": "Freeze", "reason": "x"}),
            json!({"type": "Close"}),
        ] {
            closed()
                .when_json(command)
                .then_expect_rejection("account test-1 is closed");
        }
        given::<BankAccount>([])
            .when(BankCommand::Close)
            .then_expect_rejection("account test-1 is not open");
        given::<BankAccount>([
            opened(Some(10)),
            BankEvent::AccountFrozen {
                reason: "audit".into(),
            },
        ])
        .when(BankCommand::Close)
        .then_expect_rejection("account test-1 is frozen");
    }

    #[test]
    fn stored_form_of_events() {
        // The host and other plugins see this shape; keep it stable.
        let then = given::<BankAccount>([opened(None)]).when(BankCommand::Deposit {
            amount: 7,
            currency: None,
        });
        let events = then.result().as_ref().expect("accepted");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, "FundsDeposited");
        assert_eq!(events[0].schema_version, 2);
        assert_eq!(events[0].data, r#"{"amount":7,"currency":"USD"}"#);
    }

    #[test]
    fn old_events_without_currency_read_as_usd() {
        given::<BankAccount>([])
            .given_stored(
                "AccountOpened",
                1,
                json!({"owner": "Old", "initial_deposit": 5}),
            )
            .then_expect_state(json!({
                "id": "test-1", "owner": "Old", "balance": 5,
                "currency": "USD", "frozen": false, "open": true, "closed": false
            }));
    }
}
