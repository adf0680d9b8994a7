//! Holding back activity (DESIGN §12 "Activity of an online user") and
//! coalescing across invocations (`STREAM_COALESCE_MS`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use status_shared::app::App;
use status_shared::domain::{EventKind, FeedChange, FeedEvent, ManualState, ManualStatus};
use status_shared::ports::{ChangeFeed, FeedError, HeldChanges};
use status_shared::services::Committer;
use status_stream::handler::Stream;

use crate::support::*;

/// A push feed that hands its changes straight to a stream function, run
/// at the latest change's time: the scanner's flush as deployed, without
/// Lambda in between.
struct Loopback(Arc<Stream<Recorder>>);

impl ChangeFeed for Loopback {
    fn enabled(&self) -> bool {
        true
    }

    async fn changed(&self, changes: &[FeedChange]) -> Result<(), FeedError> {
        let now = changes.iter().map(|c| c.at_ms).max().unwrap_or(NOW);
        let event = serde_json::to_value(FeedEvent { feed: changes.to_vec() }).unwrap();
        let answer = self.0.invoke(&event, now).await;
        assert_eq!(answer["statusCode"], json!(200), "{answer}");
        Ok(())
    }
}

/// The scanner's committer over `env`, feeding `env`'s stream function
/// (its whole scan, repair and flush together, runs in the scanner's own
/// tests and `services::feed_tests`; here only the flush, the scanner's
/// last step).
fn scanner(
    env: &Env,
) -> Committer<
    status_shared::app::AppCache,
    status_shared::app::AppStore,
    status_shared::app::AppRepairBuffer,
    status_shared::app::Publisher,
    Loopback,
> {
    let app: &App = &env.app;
    let base = app.committer();
    let stream = Arc::new(Stream::with_poster(app, env.poster.clone()));
    Committer {
        cache: base.cache,
        store: base.store,
        repair: base.repair,
        publisher: base.publisher,
        feed: Loopback(stream),
        rules: base.rules,
    }
}

#[tokio::test]
async fn activity_within_the_refresh_is_held_and_goes_out_as_one_frame() {
    let env = Env::new().await;
    env.connect("c", None, NOW).await;
    env.event(EventKind::Connected, 1, "a", Some("web"), NOW).await;
    env.subscribe("c", &[1], None, NOW + 1).await;
    for k in 1..=10 {
        let t = NOW + k * 1_000;
        env.event(EventKind::Activity, 1, "a", Some("web"), t).await;
        assert_eq!(env.feed(&[1], t).await["fanout"]["held"], json!(1));
    }
    assert!(env.poster.take("c").is_empty(), "activity alone is held");
    // Held until the refresh has passed since the snapshot (next.at_ms is
    // NOW + 300,001, far enough).
    let shard = id(1).shard(env.app.config.shards);
    assert!(env.app.cache.held_due(shard, NOW + 60_000, 10).await.unwrap().is_empty());
    assert_eq!(env.app.cache.held_due(shard, NOW + 60_001, 10).await.unwrap(), vec![(id(1), (NOW + 60_001) as f64)]);
    let flushed = scanner(&env).flush_held(shard, NOW + 60_001).await.unwrap();
    assert_eq!(flushed.fed, 1);
    let frames = env.poster.take("c");
    assert_eq!(frames.len(), 1, "{frames:?}");
    let entry = &frames[0]["statuses"][0];
    assert_eq!(shown(entry), view_json(1, &env.bulk(&[1], None, NOW + 60_001).await[0]), "the latest state");
    assert_eq!(entry["last_active_ms"], json!(NOW + 10_000));
    assert!(env.app.cache.held_due(shard, NOW + 60_001, 10).await.unwrap().is_empty(), "let go once fed");
}

#[tokio::test]
async fn a_held_change_goes_out_through_the_scanner_before_next_comes_due() {
    let env = Env::with(&[("STREAM_ACTIVITY_REFRESH_MS", "3600000")]).await;
    env.connect("c", None, NOW).await;
    env.event(EventKind::Connected, 1, "a", None, NOW).await;
    let snapshot = env.subscribe("c", &[1], None, NOW + 1).await;
    let next_at = snapshot[0]["statuses"][0]["next"]["at_ms"].as_i64().unwrap();
    assert_eq!(next_at, NOW + 300_001);
    env.event(EventKind::Activity, 1, "a", None, NOW + 100_000).await;
    env.feed(&[1], NOW + 100_000).await;
    assert!(env.poster.take("c").is_empty());
    let shard = id(1).shard(env.app.config.shards);
    let scanner = scanner(&env);
    // The flush instant is next.at_ms less the margin: the scanner, once a
    // minute, meets it at least a minute before `next` comes due.
    let flush = next_at - 120_000;
    assert_eq!(scanner.flush_held(shard, flush - 1).await.unwrap().fed, 0);
    assert!(env.poster.take("c").is_empty());
    assert_eq!(scanner.flush_held(shard, flush).await.unwrap().fed, 1);
    let frames = env.poster.take("c");
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["statuses"][0]["last_active_ms"], json!(NOW + 100_000));
    assert_eq!(frames[0]["statuses"][0]["next"]["at_ms"], json!(NOW + 400_001), "next moved on in time");
}

#[tokio::test]
async fn a_resume_delta_carries_a_held_change() {
    let env = Env::new().await;
    env.connect("c", None, NOW).await;
    env.event(EventKind::Connected, 1, "a", None, NOW).await;
    env.event(EventKind::Connected, 2, "a", None, NOW).await;
    let snapshot = env.subscribe("c", &[1, 2], None, NOW + 1).await;
    env.event(EventKind::Activity, 1, "a", None, NOW + 5_000).await;
    assert_eq!(env.feed(&[1], NOW + 5_000).await["fanout"]["held"], json!(1));
    assert!(env.poster.take("c").is_empty());
    env.disconnect("c", NOW + 6_000).await;
    env.connect("d", None, NOW + 7_000).await;
    let delta = env.subscribe("d", &[1, 2], Some(&cursor(&snapshot)), NOW + 7_000).await;
    assert_eq!(delta[0]["type"], json!("delta"));
    let statuses = delta[0]["statuses"].as_array().unwrap();
    assert_eq!(statuses.len(), 1, "only the held change: {statuses:?}");
    assert_eq!(statuses[0]["last_active_ms"], json!(NOW + 5_000));
}

#[tokio::test]
async fn a_hidden_users_activity_reaches_only_the_user() {
    let env = Env::new().await;
    env.connect("other", None, NOW).await;
    env.connect("self", Some(1), NOW).await;
    env.event(EventKind::Connected, 1, "a", None, NOW).await;
    env.committer.set_visibility(id(1), false, NOW + 1).await.unwrap();
    env.subscribe("other", &[1], None, NOW + 2).await;
    env.subscribe("self", &[1], None, NOW + 2).await;
    for k in 1..=3 {
        env.event(EventKind::Activity, 1, "a", None, NOW + k * 1_000).await;
        env.feed(&[1], NOW + k * 1_000).await;
    }
    let shard = id(1).shard(env.app.config.shards);
    scanner(&env).flush_held(shard, NOW + 60_002).await.unwrap();
    assert!(env.poster.take("other").is_empty(), "others get nothing, held or not");
    let own = env.poster.take("self");
    assert_eq!(own.len(), 1, "the user gets their activity once, at the flush");
    assert_eq!(own[0]["statuses"][0]["last_active_ms"], json!(NOW + 3_000));
}

#[tokio::test]
async fn changes_inside_one_coalescing_window_go_out_in_one_frame() {
    let env = Env::with(&[("STREAM_COALESCE_MS", "2000")]).await;
    env.connect("c", None, NOW).await;
    env.subscribe("c", &[1], None, NOW).await;
    env.event(EventKind::Connected, 1, "a", Some("web"), NOW + 10).await;
    env.feed(&[1], NOW + 10).await;
    assert_eq!(seqs(&env.poster.take("c")), vec![2], "the first change goes out at once");

    // Two changes a few ms later, each with its own feed event: the first
    // fan-out waits out the window opened at NOW + 10, so the second change
    // (committed while it waits) goes out in the same frame.
    let first = async {
        env.event(EventKind::Connected, 1, "b", Some("ios"), NOW + 20).await;
        env.feed(&[1], NOW + 20).await
    };
    let second = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let dnd = ManualStatus { state: ManualState::Dnd, message: None, expires_at_ms: None };
        env.committer.set_manual(id(1), Some(dnd), NOW + 25).await.unwrap();
        env.feed(&[1], NOW + 25).await
    };
    let (a, b) = tokio::join!(first, second);
    assert_eq!((a["statusCode"].clone(), b["statusCode"].clone()), (json!(200), json!(200)));
    let frames = env.poster.take("c");
    assert_eq!(seqs(&frames), vec![3], "one frame, gap-free: {frames:?}");
    let entry = &frames[0]["statuses"][0];
    assert_eq!(entry["manual"]["state"], json!("dnd"));
    assert_eq!(shown(entry), view_json(1, &env.bulk(&[1], None, NOW + 2_010).await[0]), "the latest state");

    // After the window a change goes out at once.
    env.event(EventKind::Disconnected, 1, "b", Some("ios"), NOW + 5_000).await;
    env.feed(&[1], NOW + 5_000).await;
    assert_eq!(seqs(&env.poster.take("c")), vec![4]);
}

#[tokio::test]
async fn a_fan_out_that_read_an_older_state_sends_nothing_after_a_newer_one_was_held() {
    use std::sync::atomic::Ordering;
    let env = Arc::new(Env::with(&[("STREAM_COALESCE_MS", "0")]).await);
    env.connect("c", Some(7), NOW).await;
    env.subscribe("c", &[1], None, NOW).await;
    env.event(EventKind::Connected, 1, "a", Some("ios"), NOW + 1_000).await;
    assert_eq!(env.feed(&[1], NOW + 1_000).await["fanout"]["frames"], 1);
    assert_eq!(env.poster.take("c")[0]["statuses"][0]["status"], "online");

    // B reads the departure, and its post fails: it serves the connection
    // again half a second later, from what it read.
    env.event(EventKind::Disconnected, 1, "a", Some("ios"), NOW + 2_000).await;
    env.poster.fail_next.store(1, Ordering::SeqCst);
    let b = tokio::spawn({
        let env = env.clone();
        async move { env.feed(&[1], NOW + 2_000).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(env.poster.fail_next.load(Ordering::SeqCst), 0, "B's first post has failed");

    // Meanwhile the user is back: only activity moved against what the
    // connection was shown (online), so C holds it back.
    env.event(EventKind::Connected, 1, "a", Some("ios"), NOW + 3_000).await;
    let c = env.feed(&[1], NOW + 3_000).await;
    assert_eq!((c["fanout"]["frames"].clone(), c["fanout"]["held"].clone()), (json!(0), json!(1)), "{c}");

    // B's second round must not show the departure C has overtaken.
    let b = b.await.unwrap();
    assert_eq!(b["statusCode"], 200, "{b}");
    assert_eq!(b["fanout"]["frames"], 0, "an older state after a newer one: {b}");
    assert!(env.poster.take("c").is_empty());
    // What the connection shows (online) is the truth the read answers.
    let bulk = env.bulk(&[1], Some(7), NOW + 3_000).await;
    assert_eq!(bulk[0].status.as_str(), "online");
}
