//! The `statement` projection: every account's statement, one line per event with the
//! running balance. The stream id is the account id.
//!
//! Query: `statement` `{"account":"account-1"}` (optional `"after"`: a stream version,
//! `"limit"`: a line count) → `{"account","currency","balance","lines":[..]}`, each line
//! `{"version","position","recorded_at","kind","description","amount","balance"}` with
//! `amount` signed (withdrawals negative).
//!
//! Read-model keys: `account/<id>` (balance and currency), `line/<id>/<version, 20 digits>`
//! (a [`Line`]; zero-padded so that key order is stream order).
//!
//! Number ranges: `bank-account` keeps every amount and balance within 0..=2^53 − 1 cents, so
//! the `i64` running balance cannot overflow on its events. The arithmetic is checked: an
//! event from elsewhere that would overflow fails with a clear error instead.

use std::borrow::Cow;

use eshost_sdk::serde_json::{Value, json};
use eshost_sdk::{
    DomainEvent, Error, Projection, QueryArgs, QueryError, ReadModel, ReadModelView, StoredEvent,
};
use serde::{Deserialize, Serialize};

const DEFAULT_CURRENCY: &str = "USD";

fn default_currency() -> String {
    DEFAULT_CURRENCY.to_owned()
}

/// The bank events a statement shows, with the fields it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BankEvent {
    /// An account was opened.
    AccountOpened {
        /// Opening deposit, cents.
        #[serde(default)]
        initial_deposit: Option<u64>,
        /// The account's currency.
        #[serde(default = "default_currency")]
        currency: String,
    },
    /// Money came in.
    FundsDeposited {
        /// Cents.
        amount: u64,
    },
    /// Money went out.
    FundsWithdrawn {
        /// Cents.
        amount: u64,
    },
    /// Money movement was stopped.
    AccountFrozen {
        /// Why.
        reason: String,
    },
    /// Money may move again.
    AccountUnfrozen,
    /// The account was closed.
    AccountClosed,
}

impl DomainEvent for BankEvent {
    const SCHEMA_VERSIONS: &'static [(&'static str, u32)] = &[("FundsDeposited", 2)];
}

/// An account's running totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Summary {
    balance: i64,
    currency: String,
}

/// One statement line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// The event's version in the account's stream.
    pub version: u64,
    /// The event's position in the log.
    pub position: u64,
    /// When it was recorded, ms since the Unix epoch.
    pub recorded_at: u64,
    /// `opened`, `deposit`, `withdrawal`, `frozen`, `unfrozen` or `closed`.
    pub kind: String,
    /// Human-readable.
    pub description: String,
    /// The change in cents, negative for withdrawals.
    pub amount: i64,
    /// The balance after this line.
    pub balance: i64,
}

/// The projection.
#[derive(Debug)]
pub struct Statement;

/// Stream ids may contain `/`, the key separator: escape it (and `%`) so that one account's
/// line prefix never covers another's.
fn key_part(id: &str) -> Cow<'_, str> {
    if id.contains(['/', '%']) {
        Cow::Owned(id.replace('%', "%25").replace('/', "%2F"))
    } else {
        Cow::Borrowed(id)
    }
}

fn lines_prefix(id: &str) -> String {
    format!("line/{}/", key_part(id))
}

fn line_key(id: &str, version: u64) -> String {
    format!("line/{}/{version:020}", key_part(id))
}

fn account_key(id: &str) -> String {
    format!("account/{}", key_part(id))
}

fn cents(amount: u64) -> Result<i64, Error> {
    i64::try_from(amount).map_err(|_| Error::new(format!("amount {amount} is out of range")))
}

impl Projection for Statement {
    const NAME: &'static str = "statement";
    type Event = BankEvent;

    fn handle(
        event: BankEvent,
        meta: &StoredEvent<'_>,
        model: &mut ReadModel<'_>,
    ) -> Result<(), Error> {
        let id = meta.stream_id;
        let key = account_key(id);
        let mut summary: Summary = model.get_json(&key)?.unwrap_or_else(|| Summary {
            balance: 0,
            currency: default_currency(),
        });
        let (kind, description, amount) = match event {
            BankEvent::AccountOpened {
                initial_deposit,
                currency,
            } => {
                let amount = cents(initial_deposit.unwrap_or(0))?;
                let description = format!("account opened in {currency}");
                summary.currency = currency;
                ("opened", description, amount)
            }
            BankEvent::FundsDeposited { amount } => {
                ("deposit", "deposit".to_owned(), cents(amount)?)
            }
            BankEvent::FundsWithdrawn { amount } => {
                ("withdrawal", "withdrawal".to_owned(), -cents(amount)?)
            }
            BankEvent::AccountFrozen { reason } => {
                ("frozen", format!("account frozen: {reason}"), 0)
            }
            BankEvent::AccountUnfrozen => ("unfrozen", "account unfrozen".to_owned(), 0),
            BankEvent::AccountClosed => ("closed", "account closed".to_owned(), 0),
        };
        summary.balance = summary
            .balance
            .checked_add(amount)
            .ok_or_else(|| Error::new(format!("balance overflow on account {id}")))?;
        let line = Line {
            version: meta.stream_version,
            position: meta.position,
            recorded_at: meta.recorded_at,
            kind: kind.to_owned(),
            description,
            amount,
            balance: summary.balance,
        };
        model.put_json(&line_key(id, meta.stream_version), &line)?;
        model.put_json(&key, &summary)?;
        Ok(())
    }

    fn query(
        name: &str,
        args: QueryArgs<'_>,
        model: &ReadModelView<'_>,
    ) -> Result<Value, QueryError> {
        if name != "statement" {
            return Err(QueryError::unknown(name));
        }
        #[derive(Deserialize)]
        struct Args {
            account: String,
            #[serde(default)]
            after: Option<u64>,
            #[serde(default)]
            limit: Option<u32>,
        }
        let Args {
            account,
            after,
            limit,
        } = args.parse()?;
        let summary: Summary = model
            .get_json(&account_key(&account))?
            .ok_or_else(|| QueryError::InvalidArgs(format!("no account {account:?}")))?;
        let prefix = lines_prefix(&account);
        let after = after.map(|v| line_key(&account, v));
        let entries = match (limit, &after) {
            (None, None) => model.scan_all(&prefix),
            (limit, after) => model.scan(&prefix, after.as_deref(), limit.unwrap_or(u32::MAX)),
        };
        let lines = entries
            .into_iter()
            .map(|(key, value)| {
                eshost_sdk::serde_json::from_str::<Line>(&value)
                    .map_err(|e| QueryError::Failed(format!("read model key {key:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(json!({
            "account": account,
            "currency": summary.currency,
            "balance": summary.balance,
            "lines": lines,
        }))
    }
}

eshost_sdk::export_projection!(Statement);

#[cfg(test)]
mod tests {
    use super::*;
    use eshost_sdk::testing::ProjectionTest;

    fn bank() -> ProjectionTest<Statement> {
        ProjectionTest::<Statement>::new()
            .given(
                "account-1",
                [BankEvent::AccountOpened {
                    initial_deposit: Some(100),
                    currency: "USD".into(),
                }],
            )
            .given(
                "account-2",
                [BankEvent::AccountOpened {
                    initial_deposit: None,
                    currency: "EUR".into(),
                }],
            )
            .given(
                "account-1",
                [
                    BankEvent::FundsDeposited { amount: 50 },
                    BankEvent::AccountFrozen {
                        reason: "audit".into(),
                    },
                    BankEvent::AccountUnfrozen,
                    BankEvent::FundsWithdrawn { amount: 120 },
                ],
            )
    }

    #[test]
    fn lines_carry_a_running_balance() {
        let statement = bank().query_ok("statement", json!({"account": "account-1"}));
        assert_eq!(statement["account"], "account-1");
        assert_eq!(statement["currency"], "USD");
        assert_eq!(statement["balance"], 30);
        let lines = statement["lines"].as_array().unwrap();
        let summary: Vec<(u64, &str, i64, i64)> = lines
            .iter()
            .map(|l| {
                (
                    l["version"].as_u64().unwrap(),
                    l["kind"].as_str().unwrap(),
                    l["amount"].as_i64().unwrap(),
                    l["balance"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (1, "opened", 100, 100),
                (2, "deposit", 50, 150),
                (3, "frozen", 0, 150),
                (4, "unfrozen", 0, 150),
                (5, "withdrawal", -120, 30),
            ]
        );
        assert_eq!(lines[2]["description"], "account frozen: audit");
        // Positions are global: account-2's opening came in between.
        assert_eq!(lines[0]["position"], 1);
        assert_eq!(lines[1]["position"], 3);
    }

    #[test]
    fn accounts_are_kept_apart() {
        let statement = bank().query_ok("statement", json!({"account": "account-2"}));
        assert_eq!(statement["currency"], "EUR");
        assert_eq!(statement["balance"], 0);
        assert_eq!(statement["lines"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn statements_page_by_version() {
        let page = bank().query_ok(
            "statement",
            json!({"account": "account-1", "after": 2, "limit": 2}),
        );
        let versions: Vec<u64> = page["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["version"].as_u64().unwrap())
            .collect();
        assert_eq!(versions, [3, 4]);
    }

    #[test]
    fn versions_past_nine_stay_in_order() {
        let mut test = ProjectionTest::<Statement>::new().given(
            "account-1",
            [BankEvent::AccountOpened {
                initial_deposit: None,
                currency: "USD".into(),
            }],
        );
        for _ in 0..11 {
            test = test.given("account-1", [BankEvent::FundsDeposited { amount: 1 }]);
        }
        let lines = test.query_ok("statement", json!({"account": "account-1"}))["lines"].clone();
        let balances: Vec<i64> = lines
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["balance"].as_i64().unwrap())
            .collect();
        assert_eq!(balances, (0..=11).collect::<Vec<i64>>());
    }

    /// The largest balance `bank-account` allows (2^53 − 1 cents).
    const MAX_CENTS: u64 = (1 << 53) - 1;

    #[test]
    fn a_balance_at_the_aggregates_bound_is_exact_through_closing() {
        let statement = ProjectionTest::<Statement>::new()
            .given(
                "account-1",
                [
                    BankEvent::AccountOpened {
                        initial_deposit: Some(500),
                        currency: "USD".into(),
                    },
                    BankEvent::FundsDeposited {
                        amount: MAX_CENTS - 500,
                    },
                    // What `Close` emits: the payout, then the closing.
                    BankEvent::FundsWithdrawn { amount: MAX_CENTS },
                    BankEvent::AccountClosed,
                ],
            )
            .query_ok("statement", json!({"account": "account-1"}));
        let lines: Vec<(&str, i64, i64)> = statement["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["kind"].as_str().unwrap(),
                    l["amount"].as_i64().unwrap(),
                    l["balance"].as_i64().unwrap(),
                )
            })
            .collect();
        let max = MAX_CENTS as i64;
        assert_eq!(
            lines,
            [
                ("opened", 500, 500),
                ("deposit", max - 500, max),
                ("withdrawal", -max, 0),
                ("closed", 0, 0),
            ]
        );
        assert_eq!(statement["lines"][3]["description"], "account closed");
    }

    #[test]
    fn an_overflowing_event_from_elsewhere_is_a_clear_error() {
        let mut statement = ProjectionTest::<Statement>::new().given(
            "account-1",
            [BankEvent::AccountOpened {
                initial_deposit: Some(500),
                currency: "USD".into(),
            }],
        );
        let err = statement
            .try_given_stored(
                "account-1",
                "FundsDeposited",
                2,
                json!({"amount": i64::MAX}),
            )
            .unwrap_err();
        assert_eq!(err.1, "balance overflow on account account-1");
        let err = statement
            .try_given_stored(
                "account-1",
                "FundsWithdrawn",
                1,
                json!({"amount": u64::MAX}),
            )
            .unwrap_err();
        assert_eq!(err.1, format!("amount {} is out of range", u64::MAX));
    }

    #[test]
    fn unknown_accounts_and_queries_are_errors() {
        let bank = bank();
        assert!(matches!(
            bank.query("statement", json!({"account": "account-9"})),
            Err(QueryError::InvalidArgs(m)) if m == "no account \"account-9\""
        ));
        assert!(matches!(
            bank.query("balance", json!({})),
            Err(QueryError::UnknownQuery(_))
        ));
    }
}
