//! A stream belongs to the aggregate type whose commands wrote it: another type's command,
//! state or history on that id is refused, naming the owner (issue 13, item 8).

use crate::aggregate_support::{host, send};
use eshost_core::aggregate::{
    AggregateConfig, At, CommandError, CommandOptions, Decision, QueryError, StateError,
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
