//! MariaDB stopped for a few seconds while records flow through the real
//! broker (DESIGN §6 "MySQL down", §9): the batches that meet it fail and
//! are retried, so every record the broker acknowledged ends applied, in
//! SQL and over the HTTP API, the records applied twice converge, and
//! nothing goes to the on-failure queue. The stack runs as the
//! `online-status-local` binary over a MariaDB of the test's own
//! ([`PrivateMariaDb`]), which is killed and started again on the same
//! data directory and port; the machine's server is never touched.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use local_stack::kafka::produce::presence_value;
use sqlx::Connection;
use status_tests::kafka::PollingRun;
use status_tests::mariadb::PrivateMariaDb;
use status_tests::process::spawn_local_stack;
use status_tests::stack::wall_clock_ms;

/// Long enough for a loaded 2-core machine; only a broken path waits it out.
const WAIT: Duration = Duration::from_secs(90);

/// What SQL holds for each of `users`: status and `last_active_at` in
/// epoch ms (both as stored in the seed's columns).
async fn stored(server: &PrivateMariaDb, database: &str, users: &[u64]) -> BTreeMap<u64, (String, i64)> {
    let mut conn = sqlx::MySqlConnection::connect(&format!("{}/{database}", server.url())).await.expect("connects");
    let ids = users.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(&format!(
        "SELECT user_id, CAST(status AS CHAR), \
         CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', last_active_at) DIV 1000 AS SIGNED) \
         FROM user_status WHERE user_id IN ({ids})"
    ))
    .fetch_all(&mut conn)
    .await
    .expect("user_status reads");
    rows.into_iter().map(|(user, status, ms)| (user as u64, (status, ms))).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_stopped_mid_stream_loses_no_acknowledged_record() {
    let mut mariadb = PrivateMariaDb::start().await;
    let run = PollingRun::new(4, mariadb.url(), "sqldown").await;
    let topic = &run.topic;
    let mut stack = spawn_local_stack(run.env()).await;

    // 30 users, 40 rounds each, one round every 30 ms, so records flow
    // before, through and after the outage: a connect, then activity one
    // ms later each round; the odd users end with a disconnect, which a
    // replay must not undo or move.
    let (users, rounds) = (8_000u64..8_030, 40i64);
    let base = wall_clock_ms() - 60_000;
    let producer = topic.producer();
    let produced = users.clone();
    let produce = tokio::spawn(async move {
        for round in 0..=rounds {
            for user in produced.clone() {
                let kind = match round {
                    0 => "session_connected",
                    r if r == rounds && user % 2 == 1 => "session_disconnected",
                    r if r == rounds => continue,
                    _ => "activity",
                };
                let value = presence_value(kind, user, "s", Some("ios"), base + round);
                producer.send(user, &value, &[]).await.expect("the broker acknowledges");
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });

    // Once records are being applied, the server dies where it stands.
    let deadline = Instant::now() + WAIT;
    while stack.status(users.start).await["last_active_ms"].as_i64().unwrap_or(0) < base + 3 {
        assert!(Instant::now() < deadline, "nothing applied:\n{}", stack.stderr.text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    mariadb.kill().await;
    // Down until a batch has met it and failed, and a little longer.
    let deadline = Instant::now() + WAIT;
    while !stack.stderr.text().contains("function failed; the batch will be retried") {
        assert!(Instant::now() < deadline, "no batch failed while MariaDB was down:\n{}", stack.stderr.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    mariadb.restart().await;
    produce.await.expect("every record acknowledged");

    // Every user ends at its last record, whatever was applied twice:
    // over the HTTP API, and in SQL.
    let last = base + rounds - 1;
    let expected = |user: u64| if user % 2 == 1 { "offline" } else { "online" };
    let deadline = Instant::now() + WAIT;
    for user in users.clone() {
        loop {
            let body = stack.status(user).await;
            if body["last_active_ms"] == last && body["status"] == expected(user) {
                break;
            }
            assert!(Instant::now() < deadline, "user {user} stopped at {body}:\n{}", stack.stderr.text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let ids: Vec<u64> = users.clone().collect();
    let rows = stored(&mariadb, &run.database, &ids).await;
    for user in users {
        assert_eq!(rows.get(&user), Some(&(expected(user).to_owned(), last)), "user {user} in SQL");
    }
    stack.child.kill().await.expect("SIGKILL");
    assert!(topic.on_failure_messages(1, Duration::from_secs(1)).await.is_empty(), "nothing given up");
}
