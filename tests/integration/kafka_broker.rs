//! The broker stopped and started again while records flow (DESIGN §9
//! "restarts"): a private broker of its own (`scripts/kafka.sh` on a free
//! port and its own data dir, so no other test sees it go), a poller that
//! rides through, and every record the broker acknowledged applied.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use local_stack::kafka::admin::ensure_topic;
use local_stack::kafka::poller::{OnFailure, Poller};
use local_stack::kafka::produce::{presence_value, PresenceProducer};
use local_stack::kafka::settings::KafkaSettings;
use status_tests::stack::free_port;
use status_tests::unique_tag;
use tokio::sync::watch;

use crate::kafka_lanes::{At, Lanes};

const WAIT: Duration = Duration::from_secs(90);

/// A broker on its own port and data dir, stopped and removed when dropped.
struct PrivateBroker {
    port: u16,
}

impl PrivateBroker {
    fn script(&self, action: &str) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka.sh");
        let status = std::process::Command::new("bash")
            .arg(script)
            .arg(action)
            .env("KAFKA_PORT", self.port.to_string())
            .env_remove("KAFKA_BOOTSTRAP_SERVERS")
            .stdout(std::process::Stdio::null())
            .status()
            .expect("bash runs scripts/kafka.sh");
        assert!(status.success(), "scripts/kafka.sh {action} on port {}", self.port);
    }

    fn servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.script("stop");
        let _ = std::fs::remove_dir_all(format!("/var/tmp/online-status/kafka-{}", self.port));
    }
}

/// An on-failure destination that keeps what it is sent.
#[derive(Clone, Default)]
struct Kept(Arc<Mutex<Vec<serde_json::Value>>>);

impl OnFailure for Kept {
    async fn send(&self, description: &serde_json::Value) -> Result<(), String> {
        self.0.lock().expect("not poisoned").push(description.clone());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_broker_stopped_and_started_again_loses_no_acknowledged_record() {
    let broker = PrivateBroker { port: free_port() };
    broker.script("start");
    let tag = unique_tag();
    let topic = format!("test.presence.{tag}");
    ensure_topic(&broker.servers(), &topic, 4).await.expect("the private broker creates the topic");
    let settings = KafkaSettings {
        topic: topic.clone(),
        consumer_group: format!("test-group-{tag}"),
        batching_window: Duration::from_millis(100),
        ..KafkaSettings::defaults(&broker.servers())
    };
    let function = Lanes::default();
    let failed = Kept::default();
    let poller = Poller::new(settings, &format!("test-{tag}"), function.clone(), failed.clone(), "arn:test".into())
        .expect("joins");
    let (stop, mut stopped) = watch::channel(false);
    let running = tokio::spawn(poller.run(async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));

    // Records flow the whole time; the ones the broker acknowledged count.
    let producer = PresenceProducer::new(&broker.servers(), &topic, 0).expect("a producer");
    let acknowledged: Arc<Mutex<BTreeSet<At>>> = Arc::default();
    let (done, finished) = watch::channel(false);
    let produce = tokio::spawn({
        let acknowledged = acknowledged.clone();
        async move {
            let mut i = 0u64;
            while !*finished.borrow() {
                let user = 9_000 + i % 30;
                let value = presence_value("activity", user, "s", Some("ios"), i as i64);
                if let Ok(d) = producer.send(user, &value, &[]).await {
                    acknowledged.lock().expect("not poisoned").insert((i64::from(d.partition), d.offset));
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let count = |set: &Arc<Mutex<BTreeSet<At>>>| set.lock().expect("not poisoned").len();
    let deadline = Instant::now() + WAIT;
    while function.applied().len() < 50 {
        assert!(Instant::now() < deadline, "nothing applied before the restart");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    broker.script("stop");
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.script("start");

    // Flowing again: more acknowledged after the restart, then stop.
    let before = count(&acknowledged);
    let deadline = Instant::now() + WAIT;
    while count(&acknowledged) < before + 100 {
        assert!(Instant::now() < deadline, "the producer never got through again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.send_replace(true);
    produce.await.expect("the producer ends");

    let acknowledged = acknowledged.lock().expect("not poisoned").clone();
    let applied =
        function.wait_until("every acknowledged record", |a| acknowledged.iter().all(|r| a.contains(r))).await;
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(30), running).await.expect("stops").expect("no panic");
    assert!(applied.len() >= acknowledged.len());
    assert!(failed.0.lock().expect("not poisoned").is_empty(), "nothing given up");
}
