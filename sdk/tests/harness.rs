//! The harness itself: the README's example, and the mistakes the harness must catch.

use eshost_sdk::serde_json::json;
use eshost_sdk::testing::{AggregateTest, EventJson, MemoryStore, ProjectionTest, given, upcast};
use eshost_sdk::{
    Aggregate, CommandContext, DomainEvent, Error, Projection, QueryArgs, QueryError, ReadModel,
    ReadModelStore, ReadModelView, Rejection, StoredEvent, Upcast, Upcaster, ensure,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

// ---- the README's aggregate ----------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize)]
pub enum Event {
    Opened { owner: String },
    Deposited { amount: u64 },
    Withdrawn { amount: u64 },
}
impl DomainEvent for Event {}

#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
pub enum Command {
    Open { owner: String },
    Deposit { amount: u64 },
    Withdraw { amount: u64 },
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Account {
    open: bool,
    balance: u64,
}

impl Aggregate for Account {
    const NAME: &'static str = "bank-account";
    type Command = Command;
    type Event = Event;

    fn handle(&self, command: Command, _: &CommandContext) -> Result<Vec<Event>, Rejection> {
        let opening = matches!(command, Command::Open { .. });
        ensure!(
            self.open != opening,
            "account is {}",
            if self.open {
                "already open"
            } else {
                "not open"
            }
        );
        Ok(vec![match command {
            Command::Open { owner } => Event::Opened { owner },
            Command::Deposit { amount } => Event::Deposited { amount },
            Command::Withdraw { amount } => {
                ensure!(
                    amount <= self.balance,
                    "insufficient funds: balance {}, withdrawal {amount}",
                    self.balance
                );
                Event::Withdrawn { amount }
            }
        }])
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Opened { .. } => self.open = true,
            Event::Deposited { amount } => self.balance += amount,
            Event::Withdrawn { amount } => self.balance -= amount,
        }
    }
}

eshost_sdk::export_aggregate!(Account);

fn opened() -> Event {
    Event::Opened {
        owner: "Ann".into(),
    }
}

#[test]
fn readme_no_overdraft() {
    given::<Account>([opened(), Event::Deposited { amount: 300 }])
        .when(Command::Withdraw { amount: 500 })
        .then_expect_rejection("insufficient funds: balance 300, withdrawal 500");
}

#[test]
fn readme_deposit() {
    given::<Account>([opened()])
        .when_json(json!({"type": "Deposit", "amount": 100}))
        .then_expect_events([Event::Deposited { amount: 100 }])
        .then_expect_state(json!({"open": true, "balance": 100}));
}

#[test]
fn state_rules_apply_before_open() {
    AggregateTest::<Account>::new()
        .when(Command::Deposit { amount: 1 })
        .then_expect_rejection("account is not open");
}

// ---- what the harness catches --------------------------------------------------------------

#[test]
#[should_panic(expected = "events produced by bank-account")]
fn unexpected_events_fail() {
    given::<Account>([opened()])
        .when(Command::Deposit { amount: 100 })
        .then_expect_events([Event::Deposited { amount: 99 }]);
}

#[test]
#[should_panic(expected = "but the command was refused: rejected: account is not open")]
fn a_rejection_where_events_were_expected_fails() {
    given::<Account>([])
        .when(Command::Deposit { amount: 100 })
        .then_expect_events([Event::Deposited { amount: 100 }]);
}

#[test]
#[should_panic(expected = "rejection message of bank-account")]
fn a_different_rejection_message_fails() {
    given::<Account>([])
        .when(Command::Deposit { amount: 100 })
        .then_expect_rejection("nope");
}

#[test]
#[should_panic(expected = "expected the rejection \"x\", got events")]
fn events_where_a_rejection_was_expected_fail() {
    given::<Account>([opened()])
        .when(Command::Deposit { amount: 1 })
        .then_expect_rejection("x");
}

#[test]
fn malformed_commands_are_invalid() {
    given::<Account>([opened()])
        .when_json(json!({"type": "Deposit", "amount": "ten"}))
        .then_expect_invalid("invalid type: string \"ten\"");
}

/// A state that loses a field through serde: the host would restore a different state.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Forgetful {
    #[serde(skip_deserializing)]
    seen: u32,
}

impl Aggregate for Forgetful {
    const NAME: &'static str = "forgetful";
    type Command = Command;
    type Event = Event;

    fn handle(&self, _: Command, _: &CommandContext) -> Result<Vec<Event>, Rejection> {
        Ok(vec![])
    }

    fn apply(&mut self, _: Event) {
        self.seen += 1;
    }
}

#[test]
#[should_panic(expected = "the state of forgetful changes through snapshot and restore")]
fn states_that_do_not_survive_a_snapshot_fail() {
    given::<Forgetful>([opened()])
        .when(Command::Deposit { amount: 1 })
        .then_expect_no_events();
}

#[derive(Debug, Serialize, Deserialize)]
enum Misversioned {
    Happened,
}
impl DomainEvent for Misversioned {
    const SCHEMA_VERSIONS: &'static [(&'static str, u32)] = &[("Hapened", 2)];
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Typo;

impl Aggregate for Typo {
    const NAME: &'static str = "typo";
    type Command = Command;
    type Event = Misversioned;

    fn handle(&self, _: Command, _: &CommandContext) -> Result<Vec<Misversioned>, Rejection> {
        Ok(vec![])
    }

    fn apply(&mut self, _: Misversioned) {}
}

#[test]
#[should_panic(expected = "SCHEMA_VERSIONS names \"Hapened\", which is not an event type")]
fn schema_versions_must_name_real_event_types() {
    given::<Typo>([Misversioned::Happened]);
}

// ---- upcasters -----------------------------------------------------------------------------

/// `Deposited` v1 `{cents}` → v2 `{amount}`.
struct Rename;

impl Upcaster for Rename {
    const NAME: &'static str = "rename";
    const UPCASTS: &'static [(&'static str, u32)] = &[("Deposited", 1)];

    fn upcast(event: &StoredEvent<'_>) -> Result<Upcast, Error> {
        #[derive(Deserialize)]
        struct V1 {
            cents: u64,
        }
        let v1: V1 = event.data_as()?;
        Upcast::to_version(event, 2, &json!({"amount": v1.cents}))
    }
}

/// `Deposited` v2 `{amount}` → v3 `{amount, currency: "USD"}`: chains after [`Rename`].
struct AddCurrency;

impl Upcaster for AddCurrency {
    const NAME: &'static str = "add-currency";
    const UPCASTS: &'static [(&'static str, u32)] = &[("Deposited", 2)];

    fn upcast(event: &StoredEvent<'_>) -> Result<Upcast, Error> {
        let mut data: serde_json::Map<String, Value> = event.data_as()?;
        data.insert("currency".into(), "USD".into());
        Upcast::to_version(event, 3, &data)
    }
}

/// Claims to upcast but does not raise the version.
struct Stuck;

impl Upcaster for Stuck {
    const NAME: &'static str = "stuck";
    const UPCASTS: &'static [(&'static str, u32)] = &[("Deposited", 1)];

    fn upcast(event: &StoredEvent<'_>) -> Result<Upcast, Error> {
        Upcast::to_version(event, 1, &json!({}))
    }
}

#[test]
fn upcasts_raise_the_version() {
    assert_eq!(
        upcast::<Rename>("Deposited", 1, json!({"cents": 5})),
        Ok(Some(EventJson {
            event_type: "Deposited".into(),
            schema_version: 2,
            data: json!({"amount": 5}),
            subject_id: None,
            personal_data: None,
        }))
    );
    let err = upcast::<Rename>("Deposited", 1, json!({"amount": 5})).unwrap_err();
    assert!(err.contains("missing field `cents`"), "{err}");
    let err = upcast::<Stuck>("Deposited", 1, json!({})).unwrap_err();
    assert_eq!(
        err,
        "upcaster stuck turned Deposited version 1 into version 1; it must raise the version"
    );
}

/// `Credited` v1 becomes `Deposited` v2, a rename it declares.
struct Retype;

impl Upcaster for Retype {
    const NAME: &'static str = "retype";
    const UPCASTS: &'static [(&'static str, u32)] = &[("Credited", 1)];
    const RENAMES_TO: &'static [&'static str] = &["Deposited"];

    fn upcast(event: &StoredEvent<'_>) -> Result<Upcast, Error> {
        Upcast::renamed("Deposited", 2, &event.data_as::<Value>()?)
    }
}

/// The same rename, undeclared.
struct UndeclaredRetype;

impl Upcaster for UndeclaredRetype {
    const NAME: &'static str = "undeclared-retype";
    const UPCASTS: &'static [(&'static str, u32)] = &[("Credited", 1)];

    fn upcast(event: &StoredEvent<'_>) -> Result<Upcast, Error> {
        Retype::upcast(event)
    }
}

#[test]
fn renames_must_be_declared() {
    let renamed = upcast::<Retype>("Credited", 1, json!({"amount": 5})).unwrap();
    assert_eq!(renamed.unwrap().event_type, "Deposited");
    let info = eshost_sdk::__private::upcaster_info::<Retype>("1.0.0");
    assert_eq!(
        info.handles,
        ["Credited", "Deposited"],
        "describe() declares it"
    );

    let err = upcast::<UndeclaredRetype>("Credited", 1, json!({"amount": 5})).unwrap_err();
    assert_eq!(
        err,
        "upcaster undeclared-retype renamed Credited version 1 to \"Deposited\", which is not \
         in its UPCASTS or RENAMES_TO"
    );
}

#[derive(Debug, Serialize, Deserialize)]
enum NewEvent {
    Deposited { amount: u64, currency: String },
}
impl DomainEvent for NewEvent {
    const SCHEMA_VERSIONS: &'static [(&'static str, u32)] = &[("Deposited", 3)];
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Total(u64);

impl Aggregate for Total {
    const NAME: &'static str = "total";
    type Command = Command;
    type Event = NewEvent;

    fn handle(&self, _: Command, _: &CommandContext) -> Result<Vec<NewEvent>, Rejection> {
        Ok(vec![])
    }

    fn apply(&mut self, event: NewEvent) {
        let NewEvent::Deposited { amount, .. } = event;
        self.0 += amount;
    }
}

#[test]
fn given_stored_events_go_through_the_upcaster_chain() {
    // Registered in either order, the chain runs until nothing changes: v1 → v2 → v3.
    let test = AggregateTest::<Total>::new()
        .with_upcaster::<AddCurrency>()
        .with_upcaster::<Rename>()
        .given_stored("Deposited", 1, json!({"cents": 40}))
        .given_stored("Deposited", 2, json!({"amount": 1}))
        .given([NewEvent::Deposited {
            amount: 1,
            currency: "EUR".into(),
        }]);
    assert_eq!(test.state().0, 42);
}

#[test]
#[should_panic(expected = "schema version 2; this plugin reads version 3, is an upcaster missing?")]
fn an_incomplete_chain_fails_clearly() {
    AggregateTest::<Total>::new()
        .with_upcaster::<Rename>()
        .given_stored("Deposited", 1, json!({"cents": 40}));
}

// ---- projections ---------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize)]
enum Seen {
    Deposited { amount: u64 },
}
impl DomainEvent for Seen {}

/// Counts deposits per stream and remembers the last position.
struct Counter;

impl Projection for Counter {
    const NAME: &'static str = "counter";
    type Event = Seen;

    fn handle(event: Seen, meta: &StoredEvent<'_>, model: &mut ReadModel<'_>) -> Result<(), Error> {
        let Seen::Deposited { amount } = event;
        if amount == 0 {
            return Err(Error::new("zero deposit"));
        }
        let key = format!("sum/{}", meta.stream_id);
        let sum: u64 = model.get_json(&key)?.unwrap_or(0);
        model.put_json(&key, &(sum + amount))?;
        model.put(
            "last",
            &format!("{}:{}", meta.position, meta.stream_version),
        );
        Ok(())
    }

    fn query(
        name: &str,
        args: QueryArgs<'_>,
        model: &ReadModelView<'_>,
    ) -> Result<Value, QueryError> {
        match name {
            "sum" => {
                let stream: String = args.parse()?;
                Ok(json!(model.get_json::<u64>(&format!("sum/{stream}"))?))
            }
            "streams" => Ok(json!(model.scan_all("sum/").len())),
            _ => Err(QueryError::unknown(name)),
        }
    }
}

#[test]
fn projections_see_all_streams_in_order() {
    let test = ProjectionTest::<Counter>::new()
        .given("a", [Seen::Deposited { amount: 1 }])
        .given("b", [Seen::Deposited { amount: 10 }])
        .given_stored("a", "Withdrawn", 1, json!({"amount": 1}))
        .given("a", [Seen::Deposited { amount: 2 }]);
    assert_eq!(test.query_ok("sum", json!("a")), json!(3));
    assert_eq!(test.query_ok("sum", json!("b")), json!(10));
    assert_eq!(test.query_ok("sum", json!("c")), Value::Null);
    assert_eq!(test.query_ok("streams", json!(null)), json!(2));
    // Position 3 was the Withdrawn event, skipped but counted; stream a's version 3.
    assert_eq!(test.read_model()["last"], "4:3");
    assert_eq!(test.position(), 4);
}

#[test]
fn query_errors_are_values() {
    let test = ProjectionTest::<Counter>::new();
    assert!(matches!(
        test.query("sum", json!(5)),
        Err(QueryError::InvalidArgs(_))
    ));
    assert_eq!(
        test.query("max", json!(null)),
        Err(QueryError::UnknownQuery("no query named \"max\"".into()))
    );
}

#[test]
fn a_failing_event_fails_its_whole_batch() {
    let mut test = ProjectionTest::<Counter>::new().given("a", [Seen::Deposited { amount: 1 }]);
    let err = test
        .try_given_stored("a", "Deposited", 1, json!({"amount": 0}))
        .unwrap_err();
    assert_eq!(err, (2, "zero deposit".to_owned()));
    assert_eq!(test.position(), 1);
    assert_eq!(test.query_ok("sum", json!("a")), json!(1));
}

#[test]
fn memory_store_scans_like_the_host() {
    let mut store = MemoryStore::default();
    for key in ["a/1", "a/2", "a/3", "b/1", "a"] {
        store.put(key, key);
    }
    let keys = |v: Vec<(String, String)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(keys(store.scan("a/", None, 10)), ["a/1", "a/2", "a/3"]);
    assert_eq!(keys(store.scan("a/", Some("a/1"), 1)), ["a/2"]);
    assert_eq!(keys(store.scan("a/", Some("0"), 10)), ["a/1", "a/2", "a/3"]);
    assert_eq!(
        keys(store.scan("", None, 10)),
        ["a", "a/1", "a/2", "a/3", "b/1"]
    );
    store.delete("a/2");
    assert_eq!(keys(store.scan("a/", None, 10)), ["a/1", "a/3"]);
}

#[test]
fn scan_all_pages_through_everything() {
    let mut store = MemoryStore::default();
    for i in 0..600 {
        store.put(&format!("k/{i:04}"), "v");
    }
    store.put("l/0", "v");
    let view = ReadModelView::new(&store);
    let all = view.scan_all("k/");
    assert_eq!(all.len(), 600);
    assert_eq!(all[599].0, "k/0599");
}

#[test]
fn command_context_reaches_handle() {
    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Echo;
    impl Aggregate for Echo {
        const NAME: &'static str = "echo";
        type Command = Command;
        type Event = Event;
        fn handle(&self, _: Command, ctx: &CommandContext) -> Result<Vec<Event>, Rejection> {
            Ok(vec![Event::Opened {
                owner: format!("{}@{}", ctx.id, ctx.issued_at),
            }])
        }
        fn apply(&mut self, _: Event) {}
    }
    AggregateTest::<Echo>::with_id("account-9")
        .when(Command::Open {
            owner: String::new(),
        })
        .then_expect_events([Event::Opened {
            owner: "account-9@1700000000000".into(),
        }]);
}

// ---- the glue the export macros call (natively, without the wasm bindings) ------------------

#[test]
fn describe_reports_names_types_and_upcasts() {
    use eshost_sdk::__private::{aggregate_info, projection_info, upcaster_info};

    let info = aggregate_info::<Account>("1.2.3");
    assert_eq!((info.name, info.version), ("bank-account", "1.2.3"));
    assert_eq!(info.handles, ["Opened", "Deposited", "Withdrawn"]);
    assert!(info.upcasts.is_empty());

    let info = upcaster_info::<Rename>("0.1.0");
    assert_eq!(info.handles, ["Deposited"]);
    assert_eq!(info.upcasts, [("Deposited", 1)]);

    let info = projection_info::<Counter>("0.1.0");
    assert_eq!((info.name, info.handles), ("counter", vec!["Deposited"]));
}

#[test]
fn aggregate_instances_handle_snapshot_and_restore() {
    use eshost_sdk::__private::{AggregateInstance, apply};

    let instance = AggregateInstance::<Account>::new("account-1".into());
    let stored = |event_type, data| StoredEvent {
        position: 1,
        stream_id: "account-1",
        stream_version: 1,
        event_id: "e",
        event_type,
        schema_version: 1,
        recorded_at: 0,
        data,
        metadata: "{}",
        subject_id: None,
        personal_data: None,
        shredded: false,
    };
    apply(
        &mut *instance.state_mut(),
        &stored("Opened", r#"{"owner":"Ann"}"#),
    )
    .unwrap();
    apply(
        &mut *instance.state_mut(),
        &stored("Deposited", r#"{"amount":7}"#),
    )
    .unwrap();
    let err = apply(&mut *instance.state_mut(), &stored("Deposited", "{}")).unwrap_err();
    assert_eq!(
        err,
        "cannot decode Deposited event: missing field `amount` at line 1 column 2"
    );

    let events = instance
        .handle(r#"{"type":"Withdraw","amount":5}"#, "{}", 0)
        .unwrap();
    assert_eq!(events[0].event_type, "Withdrawn");
    assert_eq!(events[0].data, r#"{"amount":5}"#);
    assert_eq!(
        instance.handle(r#"{"type":"Withdraw","amount":8}"#, "{}", 0),
        Err(Rejection::new(
            "insufficient funds: balance 7, withdrawal 8"
        ))
    );
    assert!(matches!(
        instance.handle("not json", "{}", 0),
        Err(Rejection::Invalid(_))
    ));

    assert_eq!(instance.state(), r#"{"open":true,"balance":7}"#);
    let restored =
        AggregateInstance::<Account>::restore("account-1".into(), &instance.snapshot()).unwrap();
    assert_eq!(restored.state(), instance.state());
    let err = AggregateInstance::<Account>::restore("account-1".into(), b"\x00").unwrap_err();
    assert!(
        err.starts_with("bank-account: cannot restore snapshot"),
        "{err}"
    );
}
