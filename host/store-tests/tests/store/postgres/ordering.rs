//! The bug every sequence-based PostgreSQL event store shipped: a lower position commits after
//! a higher one is visible, and a subscriber that moved past it never sees it. Here another
//! node's transaction takes the next position and is delayed before its commit; this node's
//! append must wait for it, and a subscriber polling meanwhile must see both, in order.

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eshost_store::codec::RecordBody;
use eshost_store::{AllRead, AppendRequest, EventStore, ExpectedVersion, ProposedEvent};
use eshost_store_tests::{PgPlace, runtime};
use uuid::Uuid;

use super::{append, wait_until};

#[test]
fn a_subscriber_never_skips_a_position_that_commits_later() {
    let place = PgPlace::new();
    let store = place.open();
    for n in 1..=3 {
        append(
            &store,
            "before",
            vec![ProposedEvent::new("E", n.to_string())],
        )
        .unwrap();
    }
    let runtime = runtime();
    let schema = place.schema.clone();
    let (client, connection) = runtime
        .block_on(tokio_postgres::connect(&place.url, tokio_postgres::NoTls))
        .unwrap();
    runtime.spawn(connection);

    // Another node: its transaction takes position 4 and then waits, uncommitted.
    let delayed_id = Uuid::new_v4();
    runtime.block_on(async {
        client.batch_execute("BEGIN").await.unwrap();
        let head = client
            .query_one(
                &format!("SELECT position, hash, recorded_at FROM \"{schema}\".head FOR UPDATE"),
                &[],
            )
            .await
            .unwrap();
        let (position, previous, recorded_at) = (
            head.get::<_, i64>(0) + 1,
            <[u8; 32]>::try_from(head.get::<_, &[u8]>(1)).unwrap(),
            head.get::<_, i64>(2),
        );
        assert_eq!(position, 4);
        let body = RecordBody {
            stream_version: 1,
            event_id: delayed_id,
            schema_version: 1,
            recorded_at: recorded_at as u64,
            stream_id: "delayed",
            event_type: "Delayed",
            data: "{}",
            metadata: "{}",
            personal: None,
        };
        let hash = body.encode_into(position as u64, &previous, &mut Vec::new());
        client
            .execute(
                &format!(
                    "INSERT INTO \"{schema}\".events VALUES ($1, 'delayed', 1, $2, 'Delayed', 1, $3, '{{}}', '{{}}', NULL, NULL, $4)"
                ),
                &[&position, &delayed_id, &recorded_at, &hash.as_slice()],
            )
            .await
            .unwrap();
        client
            .execute(
                &format!(
                    "INSERT INTO \"{schema}\".streams VALUES ('delayed', 1, $1, $1, $2, $2)"
                ),
                &[&position, &recorded_at],
            )
            .await
            .unwrap();
        client
            .execute(
                &format!(
                    "UPDATE \"{schema}\".head SET position = $1, hash = $2 WHERE id = 1"
                ),
                &[&position, &hash.as_slice()],
            )
            .await
            .unwrap();
    });

    // A subscriber polls from position 4 on, remembering every position it is shown.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let subscriber = {
        let (store, seen) = (store.clone(), seen.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut next = 4;
            while next <= 5 && Instant::now() < deadline {
                store
                    .visit_all(&AllRead::from(next), &mut |event| {
                        seen.lock().unwrap().push(event.position);
                        next = event.position + 1;
                        ControlFlow::Continue(())
                    })
                    .unwrap();
            }
        })
    };

    // This node appends meanwhile: its writer waits for the head.
    let pending = runtime.spawn(store.append(AppendRequest::new(
        "after",
        ExpectedVersion::Any,
        vec![ProposedEvent::new("After", "{}")],
    )));
    wait_until(
        Duration::from_secs(10),
        "the writer waits on the head lock",
        || {
            place
                .query_text(
                    "SELECT count(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE%'",
                )
                .first()
                .cloned()
                .flatten()
                .is_some_and(|count| count != "0")
        },
    );
    assert!(
        !pending.is_finished(),
        "the append did not wait for the earlier position"
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "the subscriber saw past an uncommitted position"
    );

    runtime.block_on(client.batch_execute("COMMIT")).unwrap();
    let appended = runtime.block_on(pending).unwrap().unwrap();
    assert_eq!(
        appended.first_position, 5,
        "the append took the next position"
    );
    subscriber.join().unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![4, 5],
        "seen in order, nothing skipped"
    );
    assert_eq!(store.event_position(delayed_id).unwrap(), Some(4));
    assert!(store.verify().unwrap().is_ok());
}
