//! A stream belongs to the aggregate type whose commands wrote it: another type's command,
//! state or history on that id is refused, naming the owner (issue 13, item 8).

use crate::aggregate_support::{host, send};
use eshost_core::aggregate::{
    AggregateConfig, At, CommandError, CommandOptions, Decision, HistoryPage, QueryError,
    StateError,
};
use eshost_store::{AppendRequest, EventStore, ExpectedVersion, ProposedEvent};
use eshost_tests::CUSTOMER;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_belongs_to_the_aggregate_type_whose_commands_wrote_it() {
    let host = host(AggregateConfig::default());
    let customer = host.runtime.load_aggregate(CUSTOMER).unwrap();
    host.aggregates
        .register(customer, AggregateConfig::default())
        .unwrap();
    let registered = host
        .aggregates
        .execute(
            "customer",
            "shared-1",
            r#"{"type":"Register","name":"Ann Lee","email":"ann@example.com"}"#,
            CommandOptions::default(),
        )
        .await
        .unwrap();
    assert!(matches!(registered.decision, Decision::Accepted { .. }));

    // The same id under another type: refused, naming the owner, and nothing appended.
    let refused = host
        .aggregates
        .execute(
            "bank-account",
            "shared-1",
            r#"{"type":"Open","owner":"Ann"}"#,
            CommandOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            &refused,
            CommandError::State {
                source: StateError::ForeignStream { owner, version: 1 },
                ..
            } if owner == "customer"
        ),
        "{refused}"
    );
    assert!(refused.to_string().contains("\"customer\""), "{refused}");
    assert_eq!(
        host.store.stream_info("shared-1").unwrap().unwrap().version,
        1
    );
    let state = host
        .aggregates
        .state("bank-account", "shared-1", At::Latest)
        .await
        .unwrap_err();
    assert!(
        matches!(state, QueryError::State(StateError::ForeignStream { .. })),
        "{state}"
    );
    // The owner goes on.
    let changed = host
        .aggregates
        .execute(
            "customer",
            "shared-1",
            r#"{"type":"ChangeEmail","email":"ann@example.org"}"#,
            CommandOptions::default(),
        )
        .await
        .unwrap();
    assert!(matches!(changed.decision, Decision::Accepted { .. }));

    // An event appended by hand names no type, so it claims no stream.
    host.store
        .append(AppendRequest::new(
            "account-9",
            ExpectedVersion::NoStream,
            vec![ProposedEvent::new("AuditNote", r#"{"note":"by hand"}"#)],
        ))
        .await
        .unwrap();
    let opened = send(
        &host.aggregates,
        "account-9",
        r#"{"type":"Open","owner":"Bo"}"#,
    )
    .await;
    assert!(
        matches!(opened.decision, Decision::Accepted { .. }),
        "{opened:?}"
    );
}

/// With a `stream_prefix` per type, two types use the same ids: each id maps to its own
/// stream, through commands, state, history and snapshots alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_aggregate_types_with_stream_prefixes_share_ids_in_separate_streams() {
    let host = host(AggregateConfig {
        stream_prefix: "account-".into(),
        ..AggregateConfig::every(2)
    });
    let customer = host.runtime.load_aggregate(CUSTOMER).unwrap();
    host.aggregates
        .register(
            customer,
            AggregateConfig {
                stream_prefix: "customer-".into(),
                ..AggregateConfig::default()
            },
        )
        .unwrap();
    let registered = host
        .aggregates
        .execute(
            "customer",
            "7",
            r#"{"type":"Register","name":"Ann Lee","email":"ann@example.com"}"#,
            CommandOptions::default(),
        )
        .await
        .unwrap();
    assert!(matches!(registered.decision, Decision::Accepted { .. }));
    assert_eq!(registered.stream_id, "customer-7");
    for command in [
        r#"{"type":"Open","owner":"Ann","initial_deposit":100}"#,
        r#"{"type":"Deposit","amount":50}"#,
        r#"{"type":"Withdraw","amount":30}"#,
    ] {
        let reply = send(&host.aggregates, "7", command).await;
        assert!(reply.accepted(), "{reply:?}");
        assert_eq!(reply.stream_id, "account-7");
    }

    let info = |stream: &str| host.store.stream_info(stream).unwrap().map(|i| i.version);
    assert_eq!(info("customer-7"), Some(1));
    assert_eq!(info("account-7"), Some(3));
    assert_eq!(info("7"), None, "nothing is written under the bare id");

    let account = host
        .aggregates
        .state("bank-account", "7", At::Latest)
        .await
        .unwrap();
    assert_eq!(account.stream_id, "account-7");
    assert_eq!(account.state["balance"], 120, "{}", account.state);
    assert_eq!(account.version, 3);
    let before = host
        .aggregates
        .state("bank-account", "7", At::Version(2))
        .await
        .unwrap();
    assert_eq!(before.state["balance"], 150, "{}", before.state);
    let person = host
        .aggregates
        .state("customer", "7", At::Latest)
        .await
        .unwrap();
    assert_eq!(person.stream_id, "customer-7");
    assert_eq!(person.state["email"], "ann@example.com", "{}", person.state);
    // The plugin's `load` gets the stream: the id it sees matches its events' stream ids.
    assert_eq!(person.state["id"], "customer-7", "{}", person.state);

    let history = host
        .aggregates
        .history("bank-account", "7", None, HistoryPage::all())
        .await
        .unwrap();
    assert_eq!(history.len(), 3);
    assert!(
        history
            .iter()
            .all(|entry| entry.event.stream_id == "account-7")
    );
    let snapshot = host.aggregates.snapshot("bank-account", "7").await.unwrap();
    assert_eq!(snapshot.map(|s| s.version), Some(3));
    assert!(
        host.aggregates
            .snapshots()
            .get("bank-account", "account-7")
            .unwrap()
            .is_some()
    );

    // From a stream back to its aggregate, for links: only a stream of the type's shape.
    let aggregates = &host.aggregates;
    assert_eq!(
        aggregates
            .aggregate_id_of("bank-account", "account-7")
            .as_deref(),
        Some("7")
    );
    assert_eq!(
        aggregates.aggregate_id_of("bank-account", "customer-7"),
        None
    );
    assert_eq!(aggregates.aggregate_id_of("bank-account", "account-"), None);
    assert_eq!(aggregates.stream_of("customer", "7"), "customer-7");
}
