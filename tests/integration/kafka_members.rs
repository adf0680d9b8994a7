//! Two stacks on one consumer group (DESIGN §9 "restarts"). Each poller is
//! a static member, `KAFKA_INSTANCE_ID` or by default the group's name with
//! `-local-poller`. A second stack under the same id fences the first,
//! whose librdkafka consumer then reads nothing more: that stack stops and
//! says why, rather than serve with no poller. Under ids of their own both
//! poll. The stacks run as the `online-status-local` binary on the run's
//! own database, key prefix, tables, bus, topic, group and queue.

use std::time::{Duration, Instant};

use local_stack::kafka::produce::presence_value;
use status_tests::database_server_url;
use status_tests::kafka::PollingRun;
use status_tests::process::{spawn_local_stack, Spawned};
use status_tests::stack::wall_clock_ms;

const WAIT: Duration = Duration::from_secs(90);

/// Waits until `stack` has logged a partition assignment.
async fn assigned(stack: &Spawned) {
    let deadline = Instant::now() + WAIT;
    while !stack.stderr.text().contains("partitions assigned") {
        assert!(Instant::now() < deadline, "no partitions assigned:\n{}", stack.stderr.text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The partitions of `stack`'s latest assignment, as its log lists them
/// (`partitions=[0, 1]`).
fn latest_assignment(stack: &Spawned) -> Option<String> {
    let text = stack.stderr.text();
    let line = text.lines().rev().find(|l| l.contains("partitions assigned"))?;
    let list = line.split("partitions=[").nth(1)?.split(']').next()?;
    Some(list.to_owned())
}

/// Produces a connect for each of `users` and waits until `stack` reads
/// each one as it.
async fn applied_through(run: &PollingRun, stack: &Spawned, users: std::ops::Range<u64>) {
    let ts_ms = wall_clock_ms();
    let producer = run.topic.producer();
    for user in users.clone() {
        producer.send(user, &presence_value("session_connected", user, "s", None, ts_ms), &[]).await.expect("produced");
    }
    let deadline = Instant::now() + WAIT;
    for user in users {
        while stack.status(user).await["last_active_ms"] != ts_ms {
            assert!(Instant::now() < deadline, "user {user} never applied:\n{}", stack.stderr.text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stack_fenced_by_a_second_under_its_member_id_stops_and_says_why() {
    let run = PollingRun::new(2, database_server_url(), "fenced").await;
    let mut first = spawn_local_stack(run.env()).await;
    assigned(&first).await;
    let second = spawn_local_stack(run.env()).await;

    let status = tokio::time::timeout(WAIT, first.child.wait())
        .await
        .unwrap_or_else(|_| panic!("the fenced stack is still running:\n{}", first.stderr.text()))
        .expect("the stack's exit status");
    assert!(!status.success(), "a stack whose poller stopped exits with a failure");
    let said = first.stderr.text();
    assert!(said.contains("the Kafka poller stopped") && said.contains("KAFKA_INSTANCE_ID"), "{said}");
    // The second stack took the group over and polls.
    applied_through(&run, &second, 7_300..7_308).await;
    assert!(run.topic.on_failure_messages(1, Duration::from_secs(1)).await.is_empty(), "nothing given up");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_stacks_under_member_ids_of_their_own_both_keep_polling() {
    let run = PollingRun::new(2, database_server_url(), "members").await;
    let with_id = |id: &str| {
        let mut env = run.env();
        env.push(("KAFKA_INSTANCE_ID", id.to_owned()));
        env
    };
    let mut first = spawn_local_stack(with_id("stack-a")).await;
    assigned(&first).await;
    let mut second = spawn_local_stack(with_id("stack-b")).await;
    assigned(&second).await;
    // The group splits the two partitions between them.
    let deadline = Instant::now() + WAIT;
    loop {
        let (a, b) = (latest_assignment(&first), latest_assignment(&second));
        if matches!((a.as_deref(), b.as_deref()), (Some("0"), Some("1")) | (Some("1"), Some("0"))) {
            break;
        }
        assert!(Instant::now() < deadline, "not split: {a:?} and {b:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Records on both partitions are applied, read through either stack
    // (one database), and neither stack stopped.
    applied_through(&run, &first, 7_400..7_408).await;
    applied_through(&run, &second, 7_408..7_416).await;
    assert!(first.child.try_wait().expect("a status").is_none(), "stack-a still runs:\n{}", first.stderr.text());
    assert!(second.child.try_wait().expect("a status").is_none(), "stack-b still runs:\n{}", second.stderr.text());
    assert!(run.topic.on_failure_messages(1, Duration::from_secs(1)).await.is_empty(), "nothing given up");
}
