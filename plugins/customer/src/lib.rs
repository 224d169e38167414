//! The `customer` aggregate. The aggregate id (stream id) is the customer id, and the data
//! subject of the customer's personal data: `name` and `email` are stored apart from the
//! events' data, encrypted under the customer's key, and read as missing once the customer is
//! forgotten.
//!
//! Commands (JSON): `{"type":"Register","name":"Ann Lee","email":"ann@example.com"}`
//! (optional `"tier"`), `{"type":"ChangeEmail","email":"..."}`, `{"type":"Close"}`.
//!
//! Rejection messages never repeat a name or an email: they may be logged.

use eshost_sdk::{Aggregate, CommandContext, DomainEvent, Rejection, ensure, reject};
use serde::{Deserialize, Serialize};

/// What happens to a customer. Personal fields are `Option`s: after the customer is
/// forgotten they are missing from the stored events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomerEvent {
    /// The customer registered.
    CustomerRegistered {
        /// The customer id (the stream id): the subject of `name` and `email`.
        customer_id: String,
        /// Personal.
        #[serde(default)]
        name: Option<String>,
        /// Personal.
        #[serde(default)]
        email: Option<String>,
        /// A service tier, e.g. `gold`; not personal.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tier: Option<String>,
    },
    /// The customer's email changed.
    EmailChanged {
        /// The customer id: the subject of `email`.
        customer_id: String,
        /// Personal.
        #[serde(default)]
        email: Option<String>,
    },
    /// The customer left; nothing may change any more.
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

/// What a client can ask of a customer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type")]
pub enum CustomerCommand {
    /// Register the customer.
    Register {
        /// The customer's name.
        name: String,
        /// The customer's email address.
        email: String,
        /// An optional service tier.
        #[serde(default)]
        tier: Option<String>,
    },
    /// Change the email address.
    ChangeEmail {
        /// The new address.
        email: String,
    },
    /// Close the customer.
    Close,
}

/// The state of one customer.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// The customer id (the stream id).
    pub id: String,
    /// Whether the customer registered.
    pub registered: bool,
    /// The name; `None` before registration and once the customer is forgotten.
    pub name: Option<String>,
    /// The email; `None` before registration and once the customer is forgotten.
    pub email: Option<String>,
    /// The service tier, if any.
    pub tier: Option<String>,
    /// Whether the customer was closed.
    pub closed: bool,
    /// Whether the customer's personal data was erased (registered, but the events no longer
    /// carry a name or an email).
    pub personal_data_erased: bool,
}

impl Customer {
    fn ensure_changeable(&self) -> Result<(), Rejection> {
        ensure!(self.registered, "customer {} is not registered", self.id);
        ensure!(!self.closed, "customer {} is closed", self.id);
        Ok(())
    }
}

/// A plausible address: one `@` with something on each side, no whitespace.
fn valid_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !email.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

fn email(email: &str) -> Result<String, Rejection> {
    let email = email.trim();
    ensure!(
        valid_email(email),
        "email must be an address such as name@example.com"
    );
    Ok(email.to_owned())
}

impl Aggregate for Customer {
    const NAME: &'static str = "customer";
    type Command = CustomerCommand;
    type Event = CustomerEvent;

    fn initial(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            ..Self::default()
        }
    }

    fn handle(
        &self,
        command: CustomerCommand,
        _ctx: &CommandContext<'_>,
    ) -> Result<Vec<CustomerEvent>, Rejection> {
        let id = &self.id;
        match command {
            CustomerCommand::Register {
                name,
                email: e,
                tier,
            } => {
                ensure!(!self.registered, "customer {id} is already registered");
                let name = name.trim();
                ensure!(!name.is_empty(), "name must not be empty");
                let tier = tier.map(|t| t.trim().to_owned());
                ensure!(
                    tier.as_ref().is_none_or(|t| !t.is_empty()),
                    "tier must not be empty when given"
                );
                Ok(vec![CustomerEvent::CustomerRegistered {
                    customer_id: id.clone(),
                    name: Some(name.to_owned()),
                    email: Some(email(&e)?),
                    tier,
                }])
            }
            CustomerCommand::ChangeEmail { email: e } => {
                self.ensure_changeable()?;
                // The host would refuse new personal data of a forgotten subject anyway.
                if self.personal_data_erased {
                    reject!("the personal data of customer {id} has been erased");
                }
                let e = email(&e)?;
                if self.email.as_deref() == Some(e.as_str()) {
                    return Ok(vec![]);
                }
                Ok(vec![CustomerEvent::EmailChanged {
                    customer_id: id.clone(),
                    email: Some(e),
                }])
            }
            CustomerCommand::Close => {
                self.ensure_changeable()?;
                Ok(vec![CustomerEvent::CustomerClosed])
            }
        }
    }

    fn apply(&mut self, event: CustomerEvent) {
        match event {
            CustomerEvent::CustomerRegistered {
                name, email, tier, ..
            } => {
                self.registered = true;
                // `handle` always records a name: one missing was erased.
                self.personal_data_erased = name.is_none();
                self.name = name;
                self.email = email;
                self.tier = tier;
            }
            CustomerEvent::EmailChanged { email, .. } => {
                self.personal_data_erased |= email.is_none();
                self.email = email;
            }
            CustomerEvent::CustomerClosed => self.closed = true,
        }
    }
}

eshost_sdk::export_aggregate!(Customer);

#[cfg(test)]
mod tests {
    use super::*;
    use eshost_sdk::serde_json::json;
    use eshost_sdk::testing::AggregateTest;

    fn registered(id: &str) -> CustomerEvent {
        CustomerEvent::CustomerRegistered {
            customer_id: id.into(),
            name: Some("Ann Lee".into()),
            email: Some("ann@example.com".into()),
            tier: None,
        }
    }

    fn customer() -> AggregateTest<Customer> {
        AggregateTest::<Customer>::with_id("customer-1")
    }

    fn ann() -> AggregateTest<Customer> {
        customer().given([registered("customer-1")])
    }

    #[test]
    fn registering_keeps_name_and_email_out_of_the_data() {
        let then = customer().when_json(json!({
            "type": "Register", "name": " Ann Lee ", "email": "ann@example.com", "tier": "gold"
        }));
        let events = then.stored_events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, "CustomerRegistered");
        assert_eq!(
            events[0].data,
            json!({"customer_id": "customer-1", "tier": "gold"})
        );
        assert_eq!(events[0].subject_id.as_deref(), Some("customer-1"));
        assert_eq!(
            events[0].personal_data,
            Some(json!({"name": "Ann Lee", "email": "ann@example.com"}))
        );
        then.then_expect_events([CustomerEvent::CustomerRegistered {
            customer_id: "customer-1".into(),
            name: Some("Ann Lee".into()),
            email: Some("ann@example.com".into()),
            tier: Some("gold".into()),
        }])
        .then_expect_state(json!({
            "id": "customer-1", "registered": true, "name": "Ann Lee",
            "email": "ann@example.com", "tier": "gold", "closed": false,
            "personal_data_erased": false
        }));
    }

    #[test]
    fn registration_rules() {
        ann()
            .when_json(json!({"type": "Register", "name": "Bo", "email": "bo@example.com"}))
            .then_expect_rejection("customer customer-1 is already registered");
        customer()
            .when_json(json!({"type": "Register", "name": "  ", "email": "a@b"}))
            .then_expect_rejection("name must not be empty");
        for bad in [
            "ann.example.com",
            "@example.com",
            "ann@",
            "ann lee@example.com",
            "a@b@c",
        ] {
            customer()
                .when_json(json!({"type": "Register", "name": "Ann", "email": bad}))
                .then_expect_rejection("email must be an address such as name@example.com");
        }
        customer()
            .when_json(json!({"type": "Register", "name": "Ann", "email": "a@b", "tier": ""}))
            .then_expect_rejection("tier must not be empty when given");
        customer()
            .when_json(json!({"type": "Register", "name": "Ann"}))
            .then_expect_invalid("missing field `email`");
    }

    #[test]
    fn nothing_happens_before_registration() {
        customer()
            .when_json(json!({"type": "ChangeEmail", "email": "a@b"}))
            .then_expect_rejection("customer customer-1 is not registered");
        customer()
            .when(CustomerCommand::Close)
            .then_expect_rejection("customer customer-1 is not registered");
    }

    #[test]
    fn changing_the_email() {
        let changed = CustomerEvent::EmailChanged {
            customer_id: "customer-1".into(),
            email: Some("ann@lee.example".into()),
        };
        let then = ann().when_json(json!({"type": "ChangeEmail", "email": "ann@lee.example"}));
        let events = then.stored_events();
        assert_eq!(events[0].data, json!({"customer_id": "customer-1"}));
        assert_eq!(
            events[0].personal_data,
            Some(json!({"email": "ann@lee.example"}))
        );
        then.then_expect_events([changed])
            .when_json(json!({"type": "ChangeEmail", "email": "ann@lee.example"}))
            .then_expect_no_events()
            .when_json(json!({"type": "ChangeEmail", "email": "nope"}))
            .then_expect_rejection("email must be an address such as name@example.com")
            .then_expect_state(json!({
                "id": "customer-1", "registered": true, "name": "Ann Lee",
                "email": "ann@lee.example", "tier": null, "closed": false,
                "personal_data_erased": false
            }));
    }

    #[test]
    fn closed_customers_refuse_changes() {
        let closed = ann()
            .when_json(json!({"type": "Close"}))
            .then_expect_events([CustomerEvent::CustomerClosed]);
        assert_eq!(closed.state_json()["closed"], true);
        closed
            .when_json(json!({"type": "ChangeEmail", "email": "a@b"}))
            .then_expect_rejection("customer customer-1 is closed")
            .when(CustomerCommand::Close)
            .then_expect_rejection("customer customer-1 is closed");
    }

    #[test]
    fn forgetting_the_customer_leaves_no_name_or_email() {
        let forgotten = ann()
            .given([CustomerEvent::EmailChanged {
                customer_id: "customer-1".into(),
                email: Some("ann@lee.example".into()),
            }])
            .forget("customer-1")
            .then_expect_state(json!({
                "id": "customer-1", "registered": true, "name": null, "email": null,
                "tier": null, "closed": false, "personal_data_erased": true
            }));
        // No new personal data for a forgotten customer; closing needs none.
        forgotten
            .when_json(json!({"type": "ChangeEmail", "email": "new@example.com"}))
            .then_expect_rejection("the personal data of customer customer-1 has been erased")
            .when(CustomerCommand::Close)
            .then_expect_events([CustomerEvent::CustomerClosed]);
    }

    #[test]
    fn forgetting_someone_else_changes_nothing() {
        ann()
            .forget("customer-2")
            .when_json(json!({"type": "ChangeEmail", "email": "ann@lee.example"}))
            .then_expect_events([CustomerEvent::EmailChanged {
                customer_id: "customer-1".into(),
                email: Some("ann@lee.example".into()),
            }]);
    }
}
