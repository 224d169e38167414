//! The reactor harness, and the SDK's side of the reactor contract it stands in for.

use eshost_sdk::serde_json::json;
use eshost_sdk::testing::{DEFAULT_EPOCH_MS, EventJson, IntentJson, ReactorTest};
use eshost_sdk::{
    Cause, DomainEvent, Effect, Error, Intents, Outcome, QueryArgs, QueryError, Reactor, ReadModel,
    ReadModelView, StoredEvent, encode, outcome_stream,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Serialize, Deserialize)]
enum OrderEvent {
    OrderPlaced { item: String, quantity: u32 },
    OrderCancelled,
}
impl DomainEvent for OrderEvent {}

#[derive(Debug, Serialize, Deserialize)]
enum LogEvent {
    Noted { order: String },
}
impl DomainEvent for LogEvent {}

/// Reserves stock for orders; a large order also gets a reminder timer and a log entry.
struct Shipper;

impl Reactor for Shipper {
    const NAME: &'static str = "shipper";
    type Event = OrderEvent;

    fn react(
        event: OrderEvent,
        meta: &StoredEvent<'_>,
        model: &mut ReadModel<'_>,
        out: &mut Intents,
    ) -> Result<(), Error> {
        let OrderEvent::OrderPlaced { item, quantity } = event else {
            return Ok(());
        };
        if quantity == 0 {
            return Err(Error::new("an order of nothing"));
        }
        let order = meta.stream_id;
        model.put(&format!("placed/{order}"), &quantity.to_string());
        out.send(
            "warehouse",
            &item,
            &json!({"type": "Reserve", "quantity": quantity}),
            &json!({"order": order}),
        )?;
        if quantity > 10 {
            out.timer(meta.recorded_at + 60_000, &json!({"order": order}))?;
            out.append(
                "shipper-log",
                [LogEvent::Noted {
                    order: order.to_owned(),
                }],
            )?;
        }
        Ok(())
    }

    fn on_outcome(
        outcome: Outcome,
        _meta: &StoredEvent<'_>,
        model: &mut ReadModel<'_>,
        out: &mut Intents,
    ) -> Result<(), Error> {
        let order = |v: &Value| v["order"].as_str().unwrap_or_default().to_owned();
        match outcome {
            Outcome::Accepted { context, .. } => {
                model.put(&format!("reserved/{}", order(&context)), "true");
                Ok(())
            }
            Outcome::Rejected {
                context,
                reason,
                invalid,
                ..
            } => out.send(
                "order",
                &order(&context),
                &json!({"type": "Cancel", "reason": reason, "invalid": invalid}),
                &(),
            ),
            Outcome::TimerFired { payload, .. } => {
                out.send("order", &order(&payload), &json!({"type": "Remind"}), &())
            }
            _ => Ok(()),
        }
    }

    fn query(
        name: &str,
        args: QueryArgs<'_>,
        model: &ReadModelView<'_>,
    ) -> Result<Value, QueryError> {
        match name {
            "reserved" => {
                let order: String = args.parse()?;
                Ok(json!(model.get(&format!("reserved/{order}")).is_some()))
            }
            _ => Err(QueryError::unknown(name)),
        }
    }
}

fn placed(item: &str, quantity: u32) -> OrderEvent {
    OrderEvent::OrderPlaced {
        item: item.into(),
        quantity,
    }
}

fn reserve(item: &str, quantity: u32, order: &str) -> IntentJson {
    IntentJson::send(
        "warehouse",
        item,
        json!({"type": "Reserve", "quantity": quantity}),
        json!({"order": order}),
    )
}

#[test]
fn events_become_intents_caused_by_them() {
    let test = ReactorTest::<Shipper>::new()
        .given("order-1", [placed("socks", 2)])
        .then_expect_intents([reserve("socks", 2, "order-1")])
        .then_expect_commands([(
            "warehouse",
            "socks",
            json!({"type": "Reserve", "quantity": 2}),
        )])
        .then_expect_timers([])
        .given_stored("order-1", "OrderShipped", 1, json!({}))
        .then_expect_no_intents()
        .given(
            "order-2",
            [
                placed("hats", 3),
                OrderEvent::OrderCancelled,
                placed("caps", 20),
            ],
        )
        .then_expect_intents([
            reserve("hats", 3, "order-2"),
            reserve("caps", 20, "order-2"),
            // Recorded at position 5, a second per position from the harness's epoch.
            IntentJson::timer(
                DEFAULT_EPOCH_MS + 5000 + 60_000,
                json!({"order": "order-2"}),
            ),
            IntentJson::append(
                "shipper-log",
                [LogEvent::Noted {
                    order: "order-2".into(),
                }],
            ),
        ])
        .then_expect_timers([(DEFAULT_EPOCH_MS + 65_000, json!({"order": "order-2"}))]);
    let causes: Vec<u64> = test.raw_intents().iter().map(|i| i.cause).collect();
    assert_eq!(causes, [3, 5, 5, 5]);
    assert_eq!(
        test.raw_intents()[3].effect,
        Effect::Append {
            stream_id: "shipper-log".into(),
            events: vec![
                encode(&LogEvent::Noted {
                    order: "order-2".into()
                })
                .unwrap()
            ],
        }
    );
    assert_eq!(
        test.intents()[3],
        IntentJson::Append {
            stream_id: "shipper-log".into(),
            events: vec![EventJson {
                event_type: "Noted".into(),
                schema_version: 1,
                data: json!({"order": "order-2"}),
                subject_id: None,
                personal_data: None,
            }],
        }
    );
}

#[test]
fn outcomes_come_back_as_the_host_records_them() {
    let test = ReactorTest::<Shipper>::new()
        .given("order-1", [placed("socks", 2)])
        .given("order-2", [placed("caps", 20), placed("caps", 30)]);
    // Intents of the batch: reserve 20 (cause 2), timer, append, reserve 30 (cause 3), ...
    assert_eq!(
        test.accepted(3),
        Outcome::Accepted {
            aggregate_type: "warehouse".into(),
            aggregate_id: "caps".into(),
            command: json!({"type": "Reserve", "quantity": 30}),
            context: json!({"order": "order-2"}),
            stream_version: 1,
            cause: Cause {
                position: 3,
                event_id: "00000000-0000-4000-8000-000000000003".into(),
                stream_id: "order-2".into(),
            },
            intent: 0,
        }
    );
    // A second command accepted by the same aggregate has the next stream version.
    let again = test.accepted(0);
    assert!(matches!(
        again,
        Outcome::Accepted {
            stream_version: 2,
            intent: 0,
            ..
        }
    ));
    assert!(
        matches!(test.fired(4), Outcome::TimerFired { due_at, .. } if due_at == DEFAULT_EPOCH_MS + 63_000)
    );
    assert!(matches!(
        test.invalid(3, "bad"),
        Outcome::Rejected { invalid: true, ref reason, .. } if reason == "bad"
    ));
    assert_eq!(again.context(), Some(&json!({"order": "order-2"})));
    assert_eq!(test.fired(1).context(), None);

    let test = test.command_accepted(0).then_expect_no_intents();
    assert_eq!(test.query_ok("reserved", json!("order-2")), json!(true));
    assert_eq!(test.query_ok("reserved", json!("order-1")), json!(false));
}

#[test]
fn rejections_and_timers_reach_on_outcome() {
    let large = || ReactorTest::<Shipper>::new().given("order-1", [placed("caps", 20)]);
    large()
        .command_rejected(0, "out of stock")
        .then_expect_commands([(
            "order",
            "order-1",
            json!({"type": "Cancel", "reason": "out of stock", "invalid": false}),
        )]);
    let test = large();
    let invalid = test.invalid(0, "unknown variant `Reserve`");
    test.given_outcomes([invalid]).then_expect_commands([(
        "order",
        "order-1",
        json!({"type": "Cancel", "reason": "unknown variant `Reserve`", "invalid": true}),
    )]);
    large()
        .timer_fired(1)
        .then_expect_intents([IntentJson::send(
            "order",
            "order-1",
            json!({"type": "Remind"}),
            Value::Null,
        )]);
}

#[test]
fn outcomes_decode_from_the_hosts_stored_shape() {
    // As the host writes it, with a key the SDK does not know.
    let mut test = ReactorTest::<Shipper>::new();
    let own = outcome_stream("shipper");
    assert_eq!(own, "$reactor-shipper");
    test.try_given_stored(
        &own,
        "CommandRejected",
        1,
        json!({
            "aggregate_type": "warehouse", "aggregate_id": "caps",
            "command": {"type": "Reserve", "quantity": 3}, "context": {"order": "order-9"},
            "stream_version": 0, "reason": "out of stock", "invalid": false,
            "cause": {"position": 7, "event_id": "e-7", "stream_id": "order-9"},
            "intent": 0, "by": "host"
        }),
    )
    .unwrap();
    let test = test.then_expect_commands([(
        "order",
        "order-9",
        json!({"type": "Cancel", "reason": "out of stock", "invalid": false}),
    )]);
    // TimerScheduled is the host's record, not an outcome: skipped.
    let test = test
        .given_stored(
            &own,
            "TimerScheduled",
            1,
            json!({"timer": "x", "due_at": 5, "payload": {}, "cause": {}}),
        )
        .then_expect_no_intents();
    // The stored form the SDK reads is the one it writes.
    let accepted = encode(&test.given("order-1", [placed("caps", 1)]).accepted(0)).unwrap();
    assert_eq!(accepted.event_type, "CommandAccepted");
    let data: Value = serde_json::from_str(&accepted.data).unwrap();
    let mut keys: Vec<&str> = data
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "aggregate_id",
            "aggregate_type",
            "cause",
            "command",
            "context",
            "intent",
            "stream_version"
        ]
    );
    // A malformed outcome stops the reactor at it.
    let mut test = ReactorTest::<Shipper>::new();
    let (position, message) = test
        .try_given_stored(&own, "TimerFired", 1, json!({"payload": {}}))
        .unwrap_err();
    assert_eq!(position, 1);
    assert!(message.contains("missing field `timer`"), "{message}");
}

#[test]
fn a_failing_event_fails_its_whole_batch() {
    let mut test = ReactorTest::<Shipper>::new().given("order-1", [placed("caps", 20)]);
    let (position, message) = test
        .try_given_stored(
            "order-2",
            "OrderPlaced",
            1,
            json!({"item": "hats", "quantity": 0}),
        )
        .unwrap_err();
    assert_eq!((position, message.as_str()), (2, "an order of nothing"));
    // Nothing of the failed batch stays: position, read model, last intents.
    assert_eq!(test.position(), 1);
    assert!(!test.read_model().contains_key("placed/order-2"));
    assert_eq!(test.raw_intents().len(), 3);
}

/// Breaks the reactor rules the SDK can check itself.
struct Rulebreaker;

impl Reactor for Rulebreaker {
    const NAME: &'static str = "rules";
    type Event = OrderEvent;

    fn react(
        event: OrderEvent,
        _meta: &StoredEvent<'_>,
        _model: &mut ReadModel<'_>,
        out: &mut Intents,
    ) -> Result<(), Error> {
        match event {
            OrderEvent::OrderPlaced { item, .. } => out.append(
                &item,
                [LogEvent::Noted {
                    order: item.clone(),
                }],
            ),
            OrderEvent::OrderCancelled => out.send("order", "o", &json!(["Cancel"]), &()),
        }
    }
}

#[test]
fn the_sdk_refuses_what_the_host_would() {
    let mut test = ReactorTest::<Rulebreaker>::new();
    for (stream, ok) in [
        ("rules-1", true),
        ("rules-", false),
        ("rules", false),
        ("rulesx-1", false),
        ("order-1", false),
        ("$reactor-rules", false),
    ] {
        let result = test.try_given_stored(
            "o",
            "OrderPlaced",
            1,
            json!({"item": stream, "quantity": 1}),
        );
        if ok {
            result.unwrap();
        } else {
            let (_, message) = result.unwrap_err();
            assert_eq!(
                message,
                format!("reactor rules may append only to streams named rules-..., not {stream:?}")
            );
        }
    }
    let (_, message) = test
        .try_given_stored("o", "OrderCancelled", 1, json!({}))
        .unwrap_err();
    assert_eq!(message, "a command must be a JSON object, not [\"Cancel\"]");
}

#[test]
fn describe_declares_the_event_types() {
    let info = eshost_sdk::__private::reactor_info::<Shipper>("1.0.0");
    assert_eq!(info.name, "shipper");
    assert_eq!(info.handles, ["OrderPlaced", "OrderCancelled"]);
}

#[test]
fn reactors_have_no_queries_unless_they_say() {
    let test = ReactorTest::<Rulebreaker>::new();
    assert_eq!(
        test.query("any", json!(null)),
        Err(QueryError::UnknownQuery("no query named \"any\"".into()))
    );
}

#[test]
#[should_panic(expected = "commands sent by shipper")]
fn other_commands_than_expected_fail() {
    ReactorTest::<Shipper>::new()
        .given("order-1", [placed("socks", 2)])
        .then_expect_commands([(
            "warehouse",
            "socks",
            json!({"type": "Reserve", "quantity": 3}),
        )]);
}

#[test]
#[should_panic(expected = "intents of shipper")]
fn intents_compare_contexts_too() {
    ReactorTest::<Shipper>::new()
        .given("order-1", [placed("socks", 2)])
        .then_expect_intents([reserve("socks", 2, "order-2")]);
}

#[test]
#[should_panic(expected = "intent 1 of shipper is not a command")]
fn outcomes_of_commands_need_a_command() {
    let _ = ReactorTest::<Shipper>::new()
        .given("order-1", [placed("caps", 20)])
        .accepted(1);
}

#[test]
#[should_panic(expected = "there is no intent 1")]
fn outcomes_need_an_intent() {
    let _ = ReactorTest::<Shipper>::new()
        .given("order-1", [placed("socks", 2)])
        .timer_fired(1);
}

#[test]
#[should_panic(expected = "feed those with given_outcomes")]
fn system_streams_are_not_delivered() {
    let _ = ReactorTest::<Shipper>::new().given("$reactor-other", [placed("socks", 2)]);
}
