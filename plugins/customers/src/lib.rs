//! The `customers` projection: one row per customer (the stream id being the customer id),
//! with the name and email while the customer's personal data exists. Once the customer is
//! forgotten the host rebuilds this read model from the shredded log, where those fields are
//! missing: the rows keep everything else and no name or email.
//!
//! Queries: `get` `{"id":"customer-1"}` → a row; `list` (optional
//! `{"after":"customer-1","limit":100}`) → `[row, ..]` in id order. A row is
//! `{"id","name","email","tier","registered_at","closed"}`, `registered_at` in ms since the
//! Unix epoch.
//!
//! Read-model keys: `customer/<id>` (a [`Row`]).

use std::borrow::Cow;

use eshost_sdk::serde_json::{Value, json};
use eshost_sdk::{
    DomainEvent, Error, Projection, QueryArgs, QueryError, ReadModel, ReadModelView, StoredEvent,
};
use serde::{Deserialize, Serialize};

/// The customer events, as the `customer` aggregate stores them. The personal fields are
/// declared as there, so that the harness stores them as the host does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomerEvent {
    /// The customer registered.
    CustomerRegistered {
        /// The customer id: the subject of `name` and `email`.
        customer_id: String,
        /// Personal: missing once the customer is forgotten.
        #[serde(default)]
        name: Option<String>,
        /// Personal: missing once the customer is forgotten.
        #[serde(default)]
        email: Option<String>,
        /// A service tier.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tier: Option<String>,
    },
    /// The customer's email changed.
    EmailChanged {
        /// The customer id: the subject of `email`.
        customer_id: String,
        /// Personal: missing once the customer is forgotten.
        #[serde(default)]
        email: Option<String>,
    },
    /// The customer was closed.
    CustomerClosed,
}

impl DomainEvent for CustomerEvent {
    const PERSONAL_FIELDS: &'static [(&'static str, &'static [&'static str])] = &[
        ("CustomerRegistered", &["name", "email"]),
        ("EmailChanged", &["email"]),
    ];

    fn subject_id(&self) -> Option<String> {
        match self {
            Self::CustomerRegistered { customer_id, .. }
            | Self::EmailChanged { customer_id, .. } => Some(customer_id.clone()),
            Self::CustomerClosed => None,
        }
    }
}

/// One customer in the read model (and the answer of the `get` query).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// The customer id.
    pub id: String,
    /// `None` once the customer is forgotten.
    pub name: Option<String>,
    /// `None` once the customer is forgotten.
    pub email: Option<String>,
    /// The service tier, if any.
    pub tier: Option<String>,
    /// When the customer registered, ms since the Unix epoch.
    pub registered_at: u64,
    /// Whether the customer was closed.
    pub closed: bool,
}

/// The projection.
#[derive(Debug)]
pub struct Customers;

/// Stream ids may contain `/`, the key separator: escape it (and `%`) so that keys stay
/// one per customer.
fn key_part(id: &str) -> Cow<'_, str> {
    if id.contains(['/', '%']) {
        Cow::Owned(id.replace('%', "%25").replace('/', "%2F"))
    } else {
        Cow::Borrowed(id)
    }
}

fn customer_key(id: &str) -> String {
    format!("customer/{}", key_part(id))
}

impl Projection for Customers {
    const NAME: &'static str = "customers";
    type Event = CustomerEvent;

    fn handle(
        event: CustomerEvent,
        meta: &StoredEvent<'_>,
        model: &mut ReadModel<'_>,
    ) -> Result<(), Error> {
        let id = meta.stream_id;
        let key = customer_key(id);
        // The aggregate registers a customer before anything else happens to it.
        let unregistered = || {
            Error::new(format!(
                "{} for customer {id}, which is not registered",
                meta.event_type
            ))
        };
        model.update_json(&key, |row: &mut Option<Row>| {
            match event {
                CustomerEvent::CustomerRegistered {
                    name, email, tier, ..
                } => {
                    *row = Some(Row {
                        id: id.to_owned(),
                        name,
                        email,
                        tier,
                        registered_at: meta.recorded_at,
                        closed: false,
                    });
                }
                CustomerEvent::EmailChanged { email, .. } => {
                    row.as_mut().ok_or_else(unregistered)?.email = email;
                }
                CustomerEvent::CustomerClosed => {
                    row.as_mut().ok_or_else(unregistered)?.closed = true;
                }
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
            "get" => {
                #[derive(Deserialize)]
                struct Args {
                    id: String,
                }
                let Args { id } = args.parse()?;
                let row: Row = model
                    .get_json(&customer_key(&id))?
                    .ok_or_else(|| QueryError::InvalidArgs(format!("no customer {id:?}")))?;
                Ok(json!(row))
            }
            "list" => {
                #[derive(Default, Deserialize)]
                #[serde(default)]
                struct Args {
                    after: Option<String>,
                    limit: Option<u32>,
                }
                let Args { after, limit } = args.parse::<Option<Args>>()?.unwrap_or_default();
                let after = after.map(|a| customer_key(&a));
                let entries = match limit {
                    Some(limit) => model.scan("customer/", after.as_deref(), limit),
                    None if after.is_none() => model.scan_all("customer/"),
                    None => model.scan("customer/", after.as_deref(), u32::MAX),
                };
                let rows = entries
                    .into_iter()
                    .map(|(key, value)| {
                        eshost_sdk::serde_json::from_str::<Row>(&value)
                            .map_err(|e| QueryError::Failed(format!("read model key {key:?}: {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(json!(rows))
            }
            _ => Err(QueryError::unknown(name)),
        }
    }
}

eshost_sdk::export_projection!(Customers);

#[cfg(test)]
mod tests {
    use super::*;
    use eshost_sdk::testing::ProjectionTest;

    fn registered(id: &str, name: &str, email: &str) -> CustomerEvent {
        CustomerEvent::CustomerRegistered {
            customer_id: id.into(),
            name: Some(name.into()),
            email: Some(email.into()),
            tier: None,
        }
    }

    fn customers() -> ProjectionTest<Customers> {
        ProjectionTest::<Customers>::new()
            .given(
                "customer-1",
                [registered("customer-1", "Ann Lee", "ann@example.com")],
            )
            .given(
                "customer-2",
                [CustomerEvent::CustomerRegistered {
                    customer_id: "customer-2".into(),
                    name: Some("Bo Chen".into()),
                    email: Some("bo@example.com".into()),
                    tier: Some("gold".into()),
                }],
            )
            .given(
                "customer-1",
                [
                    CustomerEvent::EmailChanged {
                        customer_id: "customer-1".into(),
                        email: Some("ann@lee.example".into()),
                    },
                    CustomerEvent::CustomerClosed,
                ],
            )
    }

    #[test]
    fn name_and_email_are_stored_as_personal_data() {
        // As the aggregate stores them: the harness feeds the projection this stored form.
        let stored =
            eshost_sdk::encode(&registered("customer-1", "Ann Lee", "ann@example.com")).unwrap();
        assert_eq!(stored.data, r#"{"customer_id":"customer-1"}"#);
        assert_eq!(stored.subject_id.as_deref(), Some("customer-1"));
        assert_eq!(
            stored.personal_data.as_deref(),
            Some(r#"{"name":"Ann Lee","email":"ann@example.com"}"#)
        );
    }

    #[test]
    fn one_row_per_customer() {
        let customers = customers();
        assert_eq!(
            customers.query_ok("get", json!({"id": "customer-1"})),
            json!({
                "id": "customer-1", "name": "Ann Lee", "email": "ann@lee.example",
                "tier": null, "registered_at": 1_700_000_001_000u64, "closed": true
            })
        );
        assert_eq!(
            customers.query_ok("get", json!({"id": "customer-2"})),
            json!({
                "id": "customer-2", "name": "Bo Chen", "email": "bo@example.com",
                "tier": "gold", "registered_at": 1_700_000_002_000u64, "closed": false
            })
        );
    }

    #[test]
    fn forgetting_a_customer_leaves_the_row_without_name_or_email() {
        let customers = customers().forget("customer-1");
        assert_eq!(
            customers.query_ok("get", json!({"id": "customer-1"})),
            json!({
                "id": "customer-1", "name": null, "email": null,
                "tier": null, "registered_at": 1_700_000_001_000u64, "closed": true
            })
        );
        // Nothing of Ann anywhere in the read model; Bo is untouched.
        for value in customers.read_model().values() {
            assert!(!value.contains("Ann") && !value.contains("ann@"), "{value}");
        }
        assert_eq!(
            customers.query_ok("get", json!({"id": "customer-2"}))["name"],
            "Bo Chen"
        );
    }

    #[test]
    fn list_pages_in_id_order() {
        let customers = customers().given(
            "customer-0",
            [registered("customer-0", "Cy", "cy@example.com")],
        );
        let ids = |rows: Value| -> Vec<String> {
            rows.as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            ids(customers.query_ok("list", Value::Null)),
            ["customer-0", "customer-1", "customer-2"]
        );
        assert_eq!(
            ids(customers.query_ok("list", json!({"after": "customer-0", "limit": 1}))),
            ["customer-1"]
        );
        assert_eq!(customers.query_ok("list", json!({}))[2]["name"], "Bo Chen");
    }

    #[test]
    fn events_of_an_unregistered_customer_stop_the_projection() {
        let mut customers = customers();
        let (position, message) = customers
            .try_given_stored("customer-9", "CustomerClosed", 1, json!({}))
            .unwrap_err();
        assert_eq!(position, 5);
        assert_eq!(
            message,
            "CustomerClosed for customer customer-9, which is not registered"
        );
    }

    #[test]
    fn query_errors() {
        let customers = customers();
        assert!(matches!(
            customers.query("get", json!({"id": "customer-9"})),
            Err(QueryError::InvalidArgs(m)) if m == "no customer \"customer-9\""
        ));
        assert!(matches!(
            customers.query("get", json!({})),
            Err(QueryError::InvalidArgs(m)) if m.contains("missing field `id`")
        ));
        assert!(matches!(
            customers.query("count", json!(null)),
            Err(QueryError::UnknownQuery(_))
        ));
    }
}
