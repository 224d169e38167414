//! The `deposit-currency` upcaster: `FundsDeposited` version 1 (`{amount}`) predates
//! currencies, and every such deposit was in US dollars. Version 2 is
//! `{amount, currency: "USD"}`. Any other field of the old payload is kept.

use eshost_sdk::serde_json::{Map, Value};
use eshost_sdk::{Error, StoredEvent, Upcast, Upcaster};

/// The upcaster.
#[derive(Debug)]
pub struct DepositCurrency;

impl Upcaster for DepositCurrency {
    const NAME: &'static str = "deposit-currency";
    const UPCASTS: &'static [(&'static str, u32)] = &[("FundsDeposited", 1)];

    fn upcast(event: &StoredEvent<'_>) -> Result<Upcast, Error> {
        if (event.event_type, event.schema_version) != ("FundsDeposited", 1) {
            return Ok(Upcast::Unchanged);
        }
        let mut data: Map<String, Value> = event.data_as().map_err(|e| {
            Error::new(format!(
                "FundsDeposited v1 at position {}: {e}",
                event.position
            ))
        })?;
        if !data.get("amount").is_some_and(Value::is_u64) {
            return Err(Error::new(format!(
                "FundsDeposited v1 at position {} has no amount in cents",
                event.position
            )));
        }
        data.entry("currency").or_insert_with(|| Value::from("USD"));
        Upcast::to_version(event, 2, &data)
    }
}

eshost_sdk::export_upcaster!(DepositCurrency);

#[cfg(test)]
mod tests {
    use super::*;
    use bank_account::{BankAccount, BankEvent};
    use eshost_sdk::serde_json::json;
    use eshost_sdk::testing::{AggregateTest, EventJson, upcast};

    #[test]
    fn v1_deposits_become_usd_deposits() {
        let out = upcast::<DepositCurrency>("FundsDeposited", 1, json!({"amount": 150})).unwrap();
        assert_eq!(
            out,
            Some(EventJson {
                event_type: "FundsDeposited".into(),
                schema_version: 2,
                data: json!({"amount": 150, "currency": "USD"}),
                subject_id: None,
                personal_data: None,
            })
        );
    }

    #[test]
    fn other_fields_are_kept() {
        let out =
            upcast::<DepositCurrency>("FundsDeposited", 1, json!({"amount": 1, "memo": "rent"}))
                .unwrap()
                .unwrap();
        assert_eq!(
            out.data,
            json!({"amount": 1, "memo": "rent", "currency": "USD"})
        );
    }

    #[test]
    fn current_and_unrelated_events_pass_unchanged() {
        let v2 = json!({"amount": 1, "currency": "EUR"});
        assert_eq!(upcast::<DepositCurrency>("FundsDeposited", 2, v2), Ok(None));
        assert_eq!(
            upcast::<DepositCurrency>("FundsWithdrawn", 1, json!({"amount": 1})),
            Ok(None)
        );
    }

    #[test]
    fn malformed_v1_payloads_are_errors() {
        let err = upcast::<DepositCurrency>("FundsDeposited", 1, json!([1])).unwrap_err();
        assert!(err.contains("FundsDeposited v1 at position 1"), "{err}");
        let err =
            upcast::<DepositCurrency>("FundsDeposited", 1, json!({"amount": -3})).unwrap_err();
        assert!(err.contains("no amount in cents"), "{err}");
    }

    #[test]
    fn the_aggregate_reads_upcast_history() {
        let account = AggregateTest::<BankAccount>::new()
            .with_upcaster::<DepositCurrency>()
            .given([BankEvent::AccountOpened {
                owner: "Ann".into(),
                initial_deposit: None,
                currency: "USD".into(),
            }])
            .given_stored("FundsDeposited", 1, json!({"amount": 40}))
            .given_stored("FundsDeposited", 1, json!({"amount": 2}));
        assert_eq!(account.state().balance, 42);
    }

    #[test]
    fn without_the_upcaster_the_aggregate_names_the_gap() {
        let result = std::panic::catch_unwind(|| {
            AggregateTest::<BankAccount>::new().given_stored(
                "FundsDeposited",
                1,
                json!({"amount": 40}),
            )
        });
        let panic = result.unwrap_err();
        let message = panic.downcast_ref::<String>().expect("a formatted panic");
        assert!(message.contains("is an upcaster missing?"), "{message}");
    }
}
