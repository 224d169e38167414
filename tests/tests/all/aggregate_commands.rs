//! The command pipeline: concurrency without lost updates, refusals and faults as answers,
//! event metadata, idempotency keys and explicit expected versions.

use std::collections::HashMap;

use crate::aggregate_support::{BANK, balance, host, pipeline, send};
use eshost_core::aggregate::{AggregateConfig, CommandError, CommandOptions, Decision};
use eshost_store::{AppendRequest, EventStore, ExpectedVersion, ProposedEvent, StreamRead};
use eshost_tests::HOSTILE;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deposits_and_withdrawals_lose_no_update() {
    let host = host(AggregateConfig::every(5));
    // A second pipeline on the same store competes for the same accounts, so appends do
    // conflict and commands are retried on the state as it now is.
    let rival = pipeline(
        &host.store,
        &host.views,
        &host.runtime,
        &host.bank,
        AggregateConfig::every(5),
        true,
    );
    let accounts = ["account-1", "account-2", "account-3"];
    for account in accounts {
        let reply = send(
            &host.aggregates,
            account,
            r#"{"type":"Open","owner":"Ann","initial_deposit":100}"#,
        )
        .await;
        assert!(reply.accepted());
    }

    let mut tasks = Vec::new();
    for task in 0..32u64 {
        let pipeline = if task % 2 == 0 {
            host.aggregates.clone()
        } else {
            rival.clone()
        };
        tasks.push(tokio::spawn(async move {
            // (account, signed amount accepted)
            let mut applied: Vec<(String, i64)> = Vec::new();
            let mut rejected = 0;
            for step in 0..20u64 {
                let account = format!("account-{}", 1 + (task + step) % 3);
                let amount = 1 + (task * 7 + step * 13) % 50;
                let withdraw = step % 4 == 3;
                let command = if withdraw {
                    format!(r#"{{"type":"Withdraw","amount":{}}}"#, amount * 3)
                } else {
                    format!(r#"{{"type":"Deposit","amount":{amount}}}"#)
                };
                let reply = pipeline
                    .execute(BANK, &account, &command, CommandOptions::default())
                    .await
                    .expect("every command is decided");
                match &reply.decision {
                    Decision::Accepted { events } => {
                        assert_eq!(events.len(), 1);
                        let signed = if withdraw {
                            -((amount * 3) as i64)
                        } else {
                            amount as i64
                        };
                        applied.push((account, signed));
                    }
                    Decision::Rejected { reason } => {
                        assert!(withdraw, "only withdrawals can be refused: {reason}");
                        assert!(reason.contains("insufficient funds"), "{reason}");
                        rejected += 1;
                    }
                    Decision::Invalid { reason } => panic!("invalid: {reason}"),
                }
            }
            (applied, rejected)
        }));
    }
    let mut expected: HashMap<String, i64> =
        accounts.iter().map(|a| (a.to_string(), 100)).collect();
    let mut accepted: HashMap<String, u64> = HashMap::new();
    let mut total = 0;
    for task in tasks {
        let (applied, rejected) = task.await.unwrap();
        total += applied.len() + rejected;
        for (account, signed) in applied {
            *expected.get_mut(&account).unwrap() += signed;
            *accepted.entry(account).or_default() += 1;
        }
    }
    assert_eq!(total, 32 * 20);
    let (ours, theirs) = (host.aggregates.stats(), rival.stats());
    eprintln!("pipeline stats: {ours:?} / rival: {theirs:?}");
    for account in accounts {
        let want = expected[account];
        assert!(want >= 0, "{account} went negative");
        assert_eq!(
            balance(&host.aggregates, account).await,
            want as u64,
            "{account}"
        );
        // Applied once each: the stream holds the opening plus one event per acceptance.
        let info = host.store.stream_info(account).unwrap().unwrap();
        assert_eq!(info.version, 1 + accepted[account], "{account}");
        // The rival's cache agrees with a fresh rebuild.
        let reply = send(&rival, account, r#"{"type":"Deposit","amount":1}"#).await;
        assert_eq!(reply.stream_version, info.version + 1);
        assert_eq!(balance(&rival, account).await, want as u64 + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_answers_and_a_trap_is_a_fault_of_that_plugin_only() {
    let host = host(AggregateConfig::default());
    let hostile = host.runtime.load_aggregate(HOSTILE).unwrap();
    host.aggregates
        .register(hostile, AggregateConfig::default())
        .unwrap();
    send(
        &host.aggregates,
        "account-1",
        r#"{"type":"Open","owner":"Ann"}"#,
    )
    .await;

    let reply = send(
        &host.aggregates,
        "account-1",
        r#"{"type":"Withdraw","amount":5}"#,
    )
    .await;
    assert_eq!(
        reply.decision,
        Decision::Rejected {
            reason: "insufficient funds: balance 0, withdrawal 5".into()
        }
    );
    assert_eq!(reply.stream_version, 1);
    let reply = send(&host.aggregates, "account-1", r#"{"type":"Teleport"}"#).await;
    assert!(
        matches!(reply.decision, Decision::Invalid { .. }),
        "{reply:?}"
    );

    let ok = |id: &'static str| {
        let aggregates = host.aggregates.clone();
        async move {
            aggregates
                .execute("hostile", id, r#"{"type":"ok"}"#, CommandOptions::default())
                .await
        }
    };
    assert!(ok("h-1").await.unwrap().accepted());
    assert!(ok("h-2").await.unwrap().accepted());
    let error = host
        .aggregates
        .execute(
            "hostile",
            "h-1",
            r#"{"type":"panic"}"#,
            CommandOptions::default(),
        )
        .await
        .unwrap_err();
    match &error {
        CommandError::Plugin(fault) => assert_eq!(fault.plugin(), "hostile"),
        other => panic!("expected a plugin fault, got {other:?}"),
    }
    assert!(error.to_string().contains("hostile"), "{error}");
    // The aggregates that shared the trapped instance are rebuilt; others never noticed.
    assert_eq!(ok("h-1").await.unwrap().stream_version, 2);
    assert_eq!(ok("h-2").await.unwrap().stream_version, 2);
    let reply = send(
        &host.aggregates,
        "account-1",
        r#"{"type":"Deposit","amount":5}"#,
    )
    .await;
    assert!(reply.accepted());
    assert_eq!(balance(&host.aggregates, "account-1").await, 5);

    let error = host
        .aggregates
        .execute("no-such-type", "x-1", "{}", CommandOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, CommandError::UnknownType { .. }),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_record_who_caused_them_and_which_code_decided() {
    let host = host(AggregateConfig::default());
    let opened = send(
        &host.aggregates,
        "account-1",
        r#"{"type":"Open","owner":"Ann"}"#,
    )
    .await;
    let metadata: Value = serde_json::from_str(&opened.events()[0].metadata).unwrap();
    let command_id = opened.command_id.to_string();
    assert_eq!(metadata["command_id"], command_id.as_str());
    assert_eq!(metadata["causation_id"], command_id.as_str());
    assert_eq!(metadata["correlation_id"], command_id.as_str());
    assert_eq!(
        metadata["plugin_hash"],
        host.bank.info().content_hash.as_str()
    );
    assert!(metadata.get("user").is_none());

    let mut extra = serde_json::Map::new();
    extra.insert("channel".into(), Value::from("web"));
    extra.insert("plugin_hash".into(), Value::from("forged"));
    let options = CommandOptions {
        correlation_id: Some("request-9".into()),
        causation_id: Some("event-3".into()),
        user: Some("ann@example.com".into()),
        metadata: extra,
        ..CommandOptions::default()
    };
    let reply = host
        .aggregates
        .execute(
            BANK,
            "account-1",
            r#"{"type":"Deposit","amount":7}"#,
            options,
        )
        .await
        .unwrap();
    let stored = host
        .store
        .read_stream("account-1", &StreamRead::forward())
        .unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].event_id, reply.events()[0].event_id);
    assert_eq!(stored[1].position, reply.events()[0].position);
    assert_eq!(reply.positions(), Some((2, 2)));
    let metadata: Value = serde_json::from_str(&stored[1].metadata).unwrap();
    assert_eq!(metadata["correlation_id"], "request-9");
    assert_eq!(metadata["causation_id"], "event-3");
    assert_eq!(metadata["user"], "ann@example.com");
    assert_eq!(metadata["channel"], "web");
    assert_eq!(
        metadata["command_id"],
        reply.command_id.to_string().as_str()
    );
    // The host's own keys cannot be forged by the client.
    assert_eq!(
        metadata["plugin_hash"],
        host.bank.info().content_hash.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_returns_the_first_reply_and_writes_nothing() {
    let host = host(AggregateConfig::default());
    send(
        &host.aggregates,
        "account-1",
        r#"{"type":"Open","owner":"Ann"}"#,
    )
    .await;
    let keyed = |key: &str| CommandOptions {
        idempotency_key: Some(key.into()),
        ..CommandOptions::default()
    };
    let deposit = r#"{"type":"Deposit","amount":10}"#;
    let first = host
        .aggregates
        .execute(BANK, "account-1", deposit, keyed("pay-1"))
        .await
        .unwrap();
    assert!(first.accepted() && !first.replayed);

    // Sent again, even concurrently: one set of events.
    let mut resends = Vec::new();
    for _ in 0..8 {
        let aggregates = host.aggregates.clone();
        let options = keyed("pay-1");
        resends.push(tokio::spawn(async move {
            aggregates
                .execute(BANK, "account-1", deposit, options)
                .await
                .unwrap()
        }));
    }
    for resend in resends {
        let again = resend.await.unwrap();
        assert!(again.replayed);
        assert_eq!(again.command_id, first.command_id);
        assert_eq!(again.events(), first.events());
        assert_eq!(again.stream_version, first.stream_version);
    }
    assert_eq!(
        host.store
            .stream_info("account-1")
            .unwrap()
            .unwrap()
            .version,
        2
    );
    assert_eq!(balance(&host.aggregates, "account-1").await, 10);

    // A refusal is a first reply too.
    let refused = host
        .aggregates
        .execute(
            BANK,
            "account-1",
            r#"{"type":"Withdraw","amount":50}"#,
            keyed("w-1"),
        )
        .await
        .unwrap();
    assert!(matches!(refused.decision, Decision::Rejected { .. }));
    send(
        &host.aggregates,
        "account-1",
        r#"{"type":"Deposit","amount":100}"#,
    )
    .await;
    let again = host
        .aggregates
        .execute(
            BANK,
            "account-1",
            r#"{"type":"Withdraw","amount":50}"#,
            keyed("w-1"),
        )
        .await
        .unwrap();
    assert_eq!(again.decision, refused.decision);
    assert!(again.replayed);

    // The record survives a restart of the pipeline.
    let restarted = pipeline(
        &host.store,
        &host.views,
        &host.runtime,
        &host.bank,
        AggregateConfig::default(),
        true,
    );
    let after_restart = restarted
        .execute(BANK, "account-1", deposit, keyed("pay-1"))
        .await
        .unwrap();
    assert_eq!(after_restart.events(), first.events());
    assert!(after_restart.replayed);
    assert_eq!(
        host.store
            .stream_info("account-1")
            .unwrap()
            .unwrap()
            .version,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_record_was_lost_still_writes_nothing_twice() {
    // As if the host died after the append but before the answer was recorded: the views
    // (and their records) are gone, the log is not. The events' ids, derived from the key,
    // make the store recognise the resend.
    let host = host(AggregateConfig::default());
    send(
        &host.aggregates,
        "account-1",
        r#"{"type":"Open","owner":"Ann"}"#,
    )
    .await;
    let options = CommandOptions {
        idempotency_key: Some("pay-7".into()),
        ..CommandOptions::default()
    };
    let deposit = r#"{"type":"Deposit","amount":10}"#;
    let first = host
        .aggregates
        .execute(BANK, "account-1", deposit, options.clone())
        .await
        .unwrap();
    send(
        &host.aggregates,
        "account-1",
        r#"{"type":"Deposit","amount":1}"#,
    )
    .await;

    let fresh_views_dir = tempfile::tempdir().unwrap();
    let fresh_views = eshost_core::views::Views::open(fresh_views_dir.path()).unwrap();
    let forgetful = pipeline(
        &host.store,
        &fresh_views,
        &host.runtime,
        &host.bank,
        AggregateConfig::default(),
        true,
    );
    let again = forgetful
        .execute(BANK, "account-1", deposit, options.clone())
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.events(), first.events());
    assert_eq!(again.command_id, first.command_id);
    assert_eq!(
        host.store
            .stream_info("account-1")
            .unwrap()
            .unwrap()
            .version,
        3
    );
    assert_eq!(balance(&forgetful, "account-1").await, 11);
    // And it is recorded now.
    let third = forgetful
        .execute(BANK, "account-1", deposit, options)
        .await
        .unwrap();
    assert_eq!(third.events(), first.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_expected_version_is_checked_not_retried() {
    let host = host(AggregateConfig::default());
    let at = |version: u64| CommandOptions {
        expected_version: Some(version),
        ..CommandOptions::default()
    };
    let opened = host
        .aggregates
        .execute(BANK, "account-1", r#"{"type":"Open","owner":"Ann"}"#, at(0))
        .await
        .unwrap();
    assert_eq!(opened.stream_version, 1);
    let deposit = r#"{"type":"Deposit","amount":10}"#;
    let reply = host
        .aggregates
        .execute(BANK, "account-1", deposit, at(1))
        .await
        .unwrap();
    assert_eq!(reply.stream_version, 2);

    let error = host
        .aggregates
        .execute(BANK, "account-1", deposit, at(1))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        CommandError::Conflict {
            stream_id: "account-1".into(),
            expected: ExpectedVersion::Exact(1),
            actual: 2,
            attempts: 0,
        }
    );
    // Appended behind the pipeline's back: its cache is stale, the check is not.
    let rival = pipeline(
        &host.store,
        &host.views,
        &host.runtime,
        &host.bank,
        AggregateConfig::default(),
        true,
    );
    send(&rival, "account-1", deposit).await;
    let error = host
        .aggregates
        .execute(BANK, "account-1", deposit, at(2))
        .await
        .unwrap_err();
    assert!(
        matches!(error, CommandError::Conflict { actual: 3, .. }),
        "{error:?}"
    );
    let reply = host
        .aggregates
        .execute(BANK, "account-1", deposit, at(3))
        .await
        .unwrap();
    assert_eq!(reply.stream_version, 4);
    assert_eq!(
        host.store
            .stream_info("account-1")
            .unwrap()
            .unwrap()
            .version,
        4
    );
    assert_eq!(balance(&host.aggregates, "account-1").await, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_cache_evicts_and_rebuilds_without_changing_answers() {
    let host = host(AggregateConfig::every(4));
    let small = crate::aggregate_support::pipeline_with(
        &host.store,
        &host.views,
        &host.runtime,
        &host.bank,
        AggregateConfig::every(4),
        true,
        eshost_core::aggregate::EngineConfig {
            workers: 1,
            cache_entries: 2,
            ..eshost_core::aggregate::EngineConfig::default()
        },
    );
    let accounts: Vec<String> = (1..=5).map(|n| format!("account-{n}")).collect();
    for account in &accounts {
        send(&small, account, r#"{"type":"Open","owner":"Ann"}"#).await;
    }
    for round in 1..=6u64 {
        for (index, account) in accounts.iter().enumerate() {
            let amount = round * 10 + index as u64;
            let reply = send(
                &small,
                account,
                &format!(r#"{{"type":"Deposit","amount":{amount}}}"#),
            )
            .await;
            assert_eq!(reply.stream_version, 1 + round);
        }
    }
    for (index, account) in accounts.iter().enumerate() {
        let expected: u64 = (1..=6u64).map(|round| round * 10 + index as u64).sum();
        assert_eq!(balance(&small, account).await, expected, "{account}");
    }
    let stats = small.stats();
    // Five accounts taking turns through a cache of two: every decision after an opening
    // had to rebuild (from a snapshot when there was one).
    assert_eq!(stats.decisions, 5 + 30);
    assert_eq!(stats.rebuilds, 35);
    assert_eq!(stats.retries, 0);
}

/// Appends `event_type` with `data` to `account` behind the pipeline's back, as
/// `POST /streams/{id}` does.
async fn raw_append(
    host: &crate::aggregate_support::Host,
    account: &str,
    event_type: &str,
    data: &str,
) {
    let event = ProposedEvent::new(event_type, data);
    let request = AppendRequest::new(account, ExpectedVersion::Any, vec![event]);
    host.store.append(request).await.expect("raw append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_never_decided_on_a_stale_cached_state() {
    // Issue 13: a raw append leaves the worker's cached state behind. An acceptance is
    // checked by its append's expected version; a refusal was not, so a command the real
    // state allows was refused on every retry.
    let host = host(AggregateConfig::default());
    let keyed = |key: &str| CommandOptions {
        idempotency_key: Some(key.into()),
        ..CommandOptions::default()
    };
    for account in ["account-1", "account-2"] {
        let opened = send(
            &host.aggregates,
            account,
            r#"{"type":"Open","owner":"Ann","initial_deposit":100}"#,
        )
        .await;
        assert!(opened.accepted());
        // Cached now at version 1, balance 100.
    }
    raw_append(&host, "account-1", "FundsDeposited", r#"{"amount":400}"#).await;
    raw_append(&host, "account-2", "FundsDeposited", r#"{"amount":400}"#).await;

    // Only the state after the raw append (balance 500) allows these.
    let withdraw = r#"{"type":"Withdraw","amount":450}"#;
    let reply = send(&host.aggregates, "account-1", withdraw).await;
    assert!(reply.accepted(), "{reply:?}");
    assert_eq!(reply.stream_version, 3);
    let keyed_reply = host
        .aggregates
        .execute(BANK, "account-2", withdraw, keyed("w-2"))
        .await
        .unwrap();
    assert!(keyed_reply.accepted(), "{keyed_reply:?}");
    assert_eq!(keyed_reply.stream_version, 3);
    let resent = host
        .aggregates
        .execute(BANK, "account-2", withdraw, keyed("w-2"))
        .await
        .unwrap();
    assert!(resent.replayed);
    assert_eq!(resent.events(), keyed_reply.events());
    for account in ["account-1", "account-2"] {
        assert_eq!(balance(&host.aggregates, account).await, 50, "{account}");
    }

    // The mirror: a raw append makes an allowed command refused, at the stream's version.
    raw_append(&host, "account-1", "FundsWithdrawn", r#"{"amount":50}"#).await;
    raw_append(&host, "account-2", "FundsWithdrawn", r#"{"amount":50}"#).await;
    let small = r#"{"type":"Withdraw","amount":30}"#;
    let refused = send(&host.aggregates, "account-1", small).await;
    assert_eq!(
        refused.decision,
        Decision::Rejected {
            reason: "insufficient funds: balance 0, withdrawal 30".into()
        }
    );
    assert_eq!(refused.stream_version, 4);
    let keyed_refused = host
        .aggregates
        .execute(BANK, "account-2", small, keyed("w-3"))
        .await
        .unwrap();
    assert_eq!(keyed_refused.decision, refused.decision);
    assert_eq!(keyed_refused.stream_version, 4);

    // A refusal that stands on a stale state still answers the stream's current version and
    // balance, not the cached ones.
    raw_append(&host, "account-1", "FundsDeposited", r#"{"amount":7}"#).await;
    raw_append(&host, "account-2", "FundsDeposited", r#"{"amount":7}"#).await;
    let large = r#"{"type":"Withdraw","amount":1000}"#;
    let refused = send(&host.aggregates, "account-1", large).await;
    assert_eq!(
        refused.decision,
        Decision::Rejected {
            reason: "insufficient funds: balance 7, withdrawal 1000".into()
        }
    );
    assert_eq!(refused.stream_version, 5);
    let keyed_refused = host
        .aggregates
        .execute(BANK, "account-2", large, keyed("w-4"))
        .await
        .unwrap();
    assert_eq!(keyed_refused.decision, refused.decision);
    assert_eq!(keyed_refused.stream_version, 5);
    // Nothing was written by the refusals.
    for account in ["account-1", "account-2"] {
        let info = host.store.stream_info(account).unwrap().unwrap();
        assert_eq!(info.version, 5, "{account}");
    }
}
