//! The `balances` projection: the balance of every account (one stream per account, the
//! stream id being the account id) and the bank's totals.
//!
//! Queries: `balance` `{"account":"account-1"}` → `{"account","balance","currency"}`;
//! `total` → `{"total","by_currency":{"USD":..},"accounts"}`; `accounts`
//! (optional `{"after":"account-1","limit":100}`) → `[{"account","balance","currency"}, ..]`
//! in account-id order.
//!
//! Read-model keys: `account/<id>` (an [`Account`]), `total/<currency>` (cents), `accounts`
//! (how many accounts).
//!
//! Number ranges: `bank-account` keeps every amount and balance within 0..=2^53 − 1 cents, so
//! an account's balance (`i64`) cannot overflow on its events; the totals add up every account
//! and are kept as `i128`, which no number of such accounts can overflow. All arithmetic is
//! checked: an event from elsewhere (a raw append) that would overflow stops the projection
//! at that event with a clear error, never with a wrapped number.

use std::borrow::Cow;

use eshost_sdk::serde_json::{Map, Value, json};
use eshost_sdk::{
    DomainEvent, Error, Projection, QueryArgs, QueryError, ReadModel, ReadModelView, StoredEvent,
};
use serde::{Deserialize, Serialize};

const DEFAULT_CURRENCY: &str = "USD";

fn default_currency() -> String {
    DEFAULT_CURRENCY.to_owned()
}

/// The bank events this projection reads, with only the fields it needs.
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
        /// Version 1 deposits have no currency and were in USD.
        #[serde(default = "default_currency")]
        currency: String,
    },
    /// Money went out.
    FundsWithdrawn {
        /// Cents.
        amount: u64,
    },
}

impl DomainEvent for BankEvent {
    const SCHEMA_VERSIONS: &'static [(&'static str, u32)] = &[("FundsDeposited", 2)];
}

/// One account's entry in the read model (and the answer of the `balance` query).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The account id.
    pub account: String,
    /// Cents. Signed: a projection records facts, it does not judge them.
    pub balance: i64,
    /// The account's currency.
    pub currency: String,
}

/// The projection.
#[derive(Debug)]
pub struct Balances;

/// Stream ids may contain `/`, the key separator: escape it (and `%`) so that the key of one
/// account is never a prefix of another's.
fn key_part(id: &str) -> Cow<'_, str> {
    if id.contains(['/', '%']) {
        Cow::Owned(id.replace('%', "%25").replace('/', "%2F"))
    } else {
        Cow::Borrowed(id)
    }
}

fn account_key(id: &str) -> String {
    let id = key_part(id);
    let mut key = String::with_capacity("account/".len() + id.len());
    key.push_str("account/");
    key.push_str(&id);
    key
}

fn cents(amount: u64) -> Result<i64, Error> {
    i64::try_from(amount).map_err(|_| Error::new(format!("amount {amount} is out of range")))
}

fn add(a: i64, b: i64) -> Result<i64, Error> {
    a.checked_add(b)
        .ok_or_else(|| Error::new(format!("balance overflow adding {b} to {a}")))
}

fn add_to_total(total: i128, delta: i64) -> Result<i128, Error> {
    total
        .checked_add(i128::from(delta))
        .ok_or_else(|| Error::new(format!("total overflow adding {delta} to {total}")))
}

/// A total as a JSON number; beyond 64 bits serde_json has no exact form for it.
fn total_number(total: i128) -> Result<Value, QueryError> {
    eshost_sdk::serde_json::Number::from_i128(total)
        .map(Value::Number)
        .ok_or_else(|| {
            QueryError::Failed(format!("total {total} does not fit a 64-bit JSON number"))
        })
}

impl Projection for Balances {
    const NAME: &'static str = "balances";
    type Event = BankEvent;

    fn handle(
        event: BankEvent,
        meta: &StoredEvent<'_>,
        model: &mut ReadModel<'_>,
    ) -> Result<(), Error> {
        // `update_json` keeps the values decoded for the whole batch: a hot key costs no
        // JSON work per event.
        let mut is_new = false;
        let (delta, currency) = model.update_json(&account_key(meta.stream_id), |entry| {
            let account = entry.get_or_insert_with(|| {
                is_new = true;
                Account {
                    account: meta.stream_id.to_owned(),
                    balance: 0,
                    currency: default_currency(),
                }
            });
            let (delta, currency) = match event {
                BankEvent::AccountOpened {
                    initial_deposit,
                    currency,
                } => {
                    account.currency.clone_from(&currency);
                    (cents(initial_deposit.unwrap_or(0))?, currency)
                }
                BankEvent::FundsDeposited { amount, currency } => (cents(amount)?, currency),
                BankEvent::FundsWithdrawn { amount } => (-cents(amount)?, account.currency.clone()),
            };
            account.balance = add(account.balance, delta)?;
            Ok((delta, currency))
        })?;

        let mut total_key = String::with_capacity("total/".len() + currency.len());
        total_key.push_str("total/");
        total_key.push_str(&currency);
        model.update_json(&total_key, |total: &mut Option<i128>| {
            *total = Some(add_to_total(total.unwrap_or(0), delta)?);
            Ok(())
        })?;

        if is_new {
            model.update_json("accounts", |count: &mut Option<u64>| {
                *count = Some(count.unwrap_or(0) + 1);
                Ok(())
            })?;
        }
        Ok(())
    }

    fn query(
        name: &str,
        args: QueryArgs<'_>,
        model: &ReadModelView<'_>,
    ) -> Result<Value, QueryError> {
        match name {
            "balance" => {
                #[derive(Deserialize)]
                struct Args {
                    account: String,
                }
                let Args { account } = args.parse()?;
                let found: Account = model
                    .get_json(&account_key(&account))?
                    .ok_or_else(|| QueryError::InvalidArgs(format!("no account {account:?}")))?;
                Ok(json!(found))
            }
            "total" => {
                let mut by_currency = Map::new();
                let mut total: i128 = 0;
                for (key, value) in model.scan_all("total/") {
                    let cents: i128 = eshost_sdk::serde_json::from_str(&value)
                        .map_err(|e| QueryError::Failed(format!("read model key {key:?}: {e}")))?;
                    total = total.checked_add(cents).ok_or_else(|| {
                        QueryError::Failed(format!("total overflow adding {cents} to {total}"))
                    })?;
                    by_currency.insert(key["total/".len()..].to_owned(), total_number(cents)?);
                }
                let accounts: u64 = model.get_json("accounts")?.unwrap_or(0);
                let total = total_number(total)?;
                Ok(json!({"total": total, "by_currency": by_currency, "accounts": accounts}))
            }
            "accounts" => {
                #[derive(Default, Deserialize)]
                #[serde(default)]
                struct Args {
                    after: Option<String>,
                    limit: Option<u32>,
                }
                let Args { after, limit } = args.parse::<Option<Args>>()?.unwrap_or_default();
                let after = after.map(|a| account_key(&a));
                let entries = match limit {
                    Some(limit) => model.scan("account/", after.as_deref(), limit),
                    None if after.is_none() => model.scan_all("account/"),
                    None => model.scan("account/", after.as_deref(), u32::MAX),
                };
                let accounts = entries
                    .into_iter()
                    .map(|(key, value)| {
                        eshost_sdk::serde_json::from_str::<Account>(&value)
                            .map_err(|e| QueryError::Failed(format!("read model key {key:?}: {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(json!(accounts))
            }
            _ => Err(QueryError::unknown(name)),
        }
    }
}

eshost_sdk::export_projection!(Balances);

#[cfg(test)]
mod tests {
    use super::*;
    use eshost_sdk::testing::ProjectionTest;

    fn opened(initial_deposit: Option<u64>) -> BankEvent {
        BankEvent::AccountOpened {
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

    fn bank() -> ProjectionTest<Balances> {
        ProjectionTest::<Balances>::new()
            .given("account-1", [opened(Some(100))])
            .given("account-2", [opened(None), deposited(50)])
            .given(
                "account-1",
                [BankEvent::FundsWithdrawn { amount: 30 }, deposited(5)],
            )
    }

    #[test]
    fn balance_per_account() {
        let bank = bank();
        assert_eq!(
            bank.query_ok("balance", json!({"account": "account-1"})),
            json!({"account": "account-1", "balance": 75, "currency": "USD"})
        );
        assert_eq!(
            bank.query_ok("balance", json!({"account": "account-2"})),
            json!({"account": "account-2", "balance": 50, "currency": "USD"})
        );
    }

    #[test]
    fn bank_total() {
        let bank = bank().given(
            "account-3",
            [
                BankEvent::AccountOpened {
                    initial_deposit: Some(7),
                    currency: "EUR".into(),
                },
                BankEvent::FundsWithdrawn { amount: 2 },
            ],
        );
        assert_eq!(
            bank.query_ok("total", json!(null)),
            json!({"total": 130, "by_currency": {"EUR": 5, "USD": 125}, "accounts": 3})
        );
    }

    #[test]
    fn accounts_are_listed_in_id_order_and_page() {
        let bank = bank().given("account-0", [opened(None)]);
        let all = bank.query_ok("accounts", json!(null));
        let ids: Vec<&str> = all
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["account"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["account-0", "account-1", "account-2"]);
        assert_eq!(
            bank.query_ok("accounts", json!({"after": "account-0", "limit": 1})),
            json!([{"account": "account-1", "balance": 75, "currency": "USD"}])
        );
    }

    #[test]
    fn query_errors() {
        let bank = bank();
        assert!(matches!(
            bank.query("balance", json!({"account": "account-9"})),
            Err(QueryError::InvalidArgs(m)) if m == "no account \"account-9\""
        ));
        assert!(matches!(
            bank.query("balance", json!({})),
            Err(QueryError::InvalidArgs(m)) if m.contains("missing field `account`")
        ));
        assert!(matches!(
            bank.query("richest", json!(null)),
            Err(QueryError::UnknownQuery(_))
        ));
    }

    #[test]
    fn other_events_are_ignored_and_v1_deposits_count_as_usd() {
        let bank = ProjectionTest::<Balances>::new()
            .given("account-1", [opened(None)])
            .given_stored("account-1", "AccountFrozen", 1, json!({"reason": "x"}))
            .given_stored("account-1", "FundsDeposited", 1, json!({"amount": 9}))
            .given_stored("cart-1", "ItemAdded", 1, json!({"sku": "a"}));
        assert_eq!(
            bank.query_ok("total", json!(null)),
            json!({"total": 9, "by_currency": {"USD": 9}, "accounts": 1})
        );
    }

    #[test]
    fn account_ids_with_slashes_do_not_collide() {
        let bank = ProjectionTest::<Balances>::new()
            .given("a", [opened(Some(1))])
            .given("a/b", [opened(Some(2))]);
        assert_eq!(
            bank.query_ok("balance", json!({"account": "a/b"}))["balance"],
            2
        );
        assert_eq!(
            bank.query_ok("accounts", json!(null))
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert!(bank.read_model().contains_key("account/a%2Fb"));
    }

    /// The largest balance `bank-account` allows (2^53 − 1 cents).
    const MAX_CENTS: u64 = (1 << 53) - 1;

    #[test]
    fn balances_at_the_aggregates_bound_never_overflow() {
        // 1100 accounts at the largest balance: their sum is beyond i64, not beyond the totals.
        let accounts = 1100_u64;
        let mut bank = ProjectionTest::<Balances>::new();
        for n in 0..accounts {
            bank = bank.given(format!("account-{n}").as_str(), [opened(Some(MAX_CENTS))]);
        }
        let total = u64::try_from(u128::from(MAX_CENTS) * u128::from(accounts)).unwrap();
        assert!(total > i64::MAX as u64);
        assert_eq!(
            bank.query_ok("total", json!(null)),
            json!({"total": total, "by_currency": {"USD": total}, "accounts": accounts})
        );
        // Paid out and in again at the bound: exact, both ways.
        let bank = bank
            .given(
                "account-0",
                [BankEvent::FundsWithdrawn { amount: MAX_CENTS }],
            )
            .given("account-0", [deposited(MAX_CENTS)]);
        assert_eq!(
            bank.query_ok("balance", json!({"account": "account-0"}))["balance"],
            MAX_CENTS
        );
        assert_eq!(bank.query_ok("total", json!(null))["total"], total);
    }

    #[test]
    fn an_overflowing_event_from_elsewhere_is_a_clear_error() {
        // Not something bank-account emits: a raw append of i64::MAX onto 500.
        let mut bank = ProjectionTest::<Balances>::new().given("account-1", [opened(Some(500))]);
        let before = bank.read_model().clone();
        let err = bank
            .try_given_stored(
                "account-1",
                "FundsDeposited",
                2,
                json!({"amount": i64::MAX, "currency": "USD"}),
            )
            .unwrap_err();
        assert_eq!(
            err.1,
            format!("balance overflow adding {} to 500", i64::MAX)
        );
        let err = bank
            .try_given_stored(
                "account-1",
                "FundsDeposited",
                2,
                json!({"amount": u64::MAX}),
            )
            .unwrap_err();
        assert_eq!(err.1, format!("amount {} is out of range", u64::MAX));
        assert_eq!(bank.read_model(), &before, "a failed batch writes nothing");
    }

    #[test]
    fn a_malformed_event_stops_the_projection_at_its_position() {
        let mut bank = bank();
        let before = bank.read_model().clone();
        let err = bank
            .try_given_stored("account-1", "FundsDeposited", 2, json!({"amount": "lots"}))
            .unwrap_err();
        assert_eq!(err.0, 6);
        assert!(err.1.contains("invalid type: string"), "{}", err.1);
        assert_eq!(bank.read_model(), &before, "a failed batch writes nothing");
    }
}
