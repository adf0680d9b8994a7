//! Pure service tests of the push feed (DESIGN §12): every committer path
//! feeds exactly the users it wrote, with the versions it wrote, once per
//! call; a failed feed is kept for the next scan and never fails a commit.

use std::sync::atomic::Ordering;

use super::erase::EraseError;
use super::fakes::FakeDeadLetters;
use super::tests::{committer, ev, user, NOW};
use crate::domain::{EventKind, ManualState, ManualStatus, Rules};

fn version(c: &super::tests::Fake, id: u64) -> u64 {
    c.store.records.lock().unwrap()[&user(id)].version
}

#[tokio::test]
async fn an_aggregated_batch_feeds_each_written_user_once_and_no_unchanged_one() {
    let c = committer();
    c.aggregate(&[ev(EventKind::Connected, 1, "a", NOW)], NOW).await.unwrap();
    assert_eq!(c.feed.fed(), vec![(1, 1)]);
    let batch = [
        ev(EventKind::Connected, 1, "a", NOW), // a replay: user 1 does not change
        ev(EventKind::Connected, 2, "a", NOW + 1),
        ev(EventKind::Activity, 2, "a", NOW + 2),
        ev(EventKind::Connected, 3, "b", NOW + 3),
    ];
    let out = c.aggregate(&batch, NOW + 5).await.unwrap();
    assert_eq!((out.fed, out.feed_failed), (2, false));
    let calls = c.feed.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "one feed call per commit, not one per user");
    let fed: Vec<(u64, u64, i64)> = calls[1].iter().map(|c| (c.user_id.get(), c.version, c.at_ms)).collect();
    assert_eq!(fed, vec![(2, 1, NOW + 5), (3, 1, NOW + 5)], "the version written, at the write's time");
    // A replay of the whole batch writes nothing and feeds nothing.
    let again = c.aggregate(&batch, NOW + 6).await.unwrap();
    assert_eq!(again.fed, 0);
    assert_eq!(c.feed.calls.lock().unwrap().len(), 2, "no call without a change");
}

#[tokio::test]
async fn the_scanner_feeds_users_turning_idle_and_manual_statuses_expiring() {
    let c = committer();
    let idle_after = Rules::default().idle_after_ms;
    c.aggregate(&[ev(EventKind::Connected, 4, "a", NOW), ev(EventKind::Connected, 5, "a", NOW)], NOW).await.unwrap();
    let expires = NOW + idle_after / 2;
    let manual = ManualStatus::new(ManualState::Dnd, None, Some(expires), NOW).unwrap();
    c.set_manual(user(6), Some(manual), NOW).await.unwrap();
    c.feed.calls.lock().unwrap().clear();

    // The manual status runs out first; nobody else is due yet.
    let scan = c.scan_shard(0, expires + 1).await.unwrap();
    assert_eq!(scan.written, 1);
    assert_eq!(c.feed.fed(), vec![(6, 2)], "the expiry, written as version 2");
    assert!(c.store.records.lock().unwrap()[&user(6)].state.manual.is_none());

    // Then both connected users turn idle in one page: one call for both.
    c.feed.calls.lock().unwrap().clear();
    c.scan_shard(0, NOW + idle_after + 1).await.unwrap();
    assert_eq!(c.feed.calls.lock().unwrap().len(), 1);
    assert_eq!(c.feed.fed(), vec![(4, 2), (5, 2)]);
    assert_eq!((version(&c, 4), version(&c, 5)), (2, 2));

    // A scan that finds nothing stale feeds nothing.
    c.feed.calls.lock().unwrap().clear();
    c.scan_shard(0, NOW + idle_after + 2).await.unwrap();
    assert!(c.feed.fed().is_empty());
}

#[tokio::test]
async fn visibility_and_manual_writes_feed_their_user_and_replays_do_not() {
    let c = committer();
    c.aggregate(&[ev(EventKind::Connected, 7, "a", NOW)], NOW).await.unwrap();
    c.feed.calls.lock().unwrap().clear();
    c.set_visibility(user(7), false, NOW + 1).await.unwrap();
    c.set_visibility(user(7), false, NOW + 2).await.unwrap();
    assert_eq!(c.feed.fed(), vec![(7, 2)], "the hide once; hiding again changes nothing");
    c.set_visibility(user(7), true, NOW + 3).await.unwrap();
    let busy = ManualStatus::new(ManualState::Busy, Some("call".into()), None, NOW).unwrap();
    c.set_manual(user(7), Some(busy.clone()), NOW + 4).await.unwrap();
    c.set_manual(user(7), Some(busy), NOW + 5).await.unwrap();
    c.set_manual(user(7), None, NOW + 6).await.unwrap();
    assert_eq!(c.feed.fed(), vec![(7, 2), (7, 3), (7, 4), (7, 5)]);
}

#[tokio::test]
async fn an_erasure_feeds_the_version_it_took() {
    let c = committer();
    c.aggregate(&[ev(EventKind::Connected, 8, "a", NOW)], NOW).await.unwrap();
    c.feed.calls.lock().unwrap().clear();
    let erased = c.erase(user(8), NOW + 10, &FakeDeadLetters).await.unwrap();
    assert_eq!(erased.version, 2);
    assert!(!erased.feed_failed);
    let calls = c.feed.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0][0].user_id, calls[0][0].version, calls[0][0].at_ms), (user(8), 2, NOW + 10));
}

#[tokio::test]
async fn a_failed_feed_never_fails_the_commit_and_the_next_scan_feeds_it() {
    let c = committer();
    c.feed.fail.store(true, Ordering::SeqCst);
    let out = c.aggregate(&[ev(EventKind::Connected, 9, "a", NOW)], NOW).await.unwrap();
    assert!(out.feed_failed);
    assert_eq!(out.fed, 0);
    assert_eq!(*c.repair.recorded.lock().unwrap(), vec![user(9)], "kept for the next scan");
    // While the feed still fails, the scan keeps the user buffered.
    c.scan_shard(0, NOW + 1).await.unwrap();
    assert_eq!(*c.repair.recorded.lock().unwrap(), vec![user(9)]);
    c.feed.fail.store(false, Ordering::SeqCst);
    let scan = c.scan_shard(0, NOW + 2).await.unwrap();
    assert_eq!(scan.repaired, 1);
    assert_eq!(c.feed.fed(), vec![(9, 1)], "fed from SQL by the repair");
    assert!(c.repair.recorded.lock().unwrap().is_empty(), "and cleared once fed");
}

#[tokio::test]
async fn a_feed_refused_for_good_is_counted_but_not_kept() {
    let c = committer();
    c.feed.missing.store(true, Ordering::SeqCst);
    let out = c.aggregate(&[ev(EventKind::Connected, 10, "a", NOW)], NOW).await.unwrap();
    assert!(out.feed_failed);
    assert!(c.repair.recorded.lock().unwrap().is_empty());
    let erased = c.erase(user(10), NOW + 1, &FakeDeadLetters).await.unwrap();
    assert!(erased.feed_failed, "an erasure is not failed by a missing stream function");
}

#[tokio::test]
async fn a_feed_failing_with_the_repair_buffer_is_logged_and_the_commit_stands() {
    let c = committer();
    c.feed.fail.store(true, Ordering::SeqCst);
    c.repair.fail.store(true, Ordering::SeqCst);
    let out = c.aggregate(&[ev(EventKind::Connected, 11, "a", NOW)], NOW).await.unwrap();
    assert!(out.feed_failed);
    assert_eq!(version(&c, 11), 1, "the change is durable");
}

#[tokio::test]
async fn an_erasure_whose_feed_fails_asks_for_a_retry_which_feeds_it() {
    let c = committer();
    c.aggregate(&[ev(EventKind::Connected, 12, "a", NOW)], NOW).await.unwrap();
    c.feed.calls.lock().unwrap().clear();
    c.feed.fail.store(true, Ordering::SeqCst);
    let err = c.erase(user(12), NOW + 1, &FakeDeadLetters).await.unwrap_err();
    assert!(matches!(err, EraseError::Feed(_)), "{err}");
    assert!(c.repair.recorded.lock().unwrap().is_empty(), "no trace of the erased user is kept");
    c.feed.fail.store(false, Ordering::SeqCst);
    let erased = c.erase(user(12), NOW + 2, &FakeDeadLetters).await.unwrap();
    assert_eq!(c.feed.fed(), vec![(12, erased.version)]);
    assert_eq!(erased.version, 3, "the retry erased again under a new version");
}

#[tokio::test]
async fn the_scan_feeds_held_activity_once_due_and_lets_go_only_once_fed() {
    use crate::ports::HeldChanges;
    let c = committer();
    c.cache.hold(&[(user(7), NOW + 60_000), (user(8), NOW + 90_000)], NOW).await.unwrap();
    // An earlier flush instant wins over a later one.
    c.cache.hold(&[(user(7), NOW + 80_000)], NOW + 1).await.unwrap();
    c.scan_shard(0, NOW + 59_999).await.unwrap();
    assert!(c.feed.fed().is_empty(), "nothing is due yet");

    c.feed.fail.store(true, Ordering::SeqCst);
    let scan = c.scan_shard(0, NOW + 60_000).await.unwrap();
    assert!(scan.feed_failed);
    assert_eq!(c.cache.held_due(0, NOW + 60_000, 10).await.unwrap().len(), 1, "kept while the feed fails");

    c.feed.fail.store(false, Ordering::SeqCst);
    let scan = c.scan_shard(0, NOW + 60_001).await.unwrap();
    assert_eq!((scan.flushed, scan.fed), (1, 1));
    let calls = c.feed.calls.lock().unwrap().clone();
    let fed: Vec<(u64, u64, i64)> = calls[0].iter().map(|c| (c.user_id.get(), c.version, c.at_ms)).collect();
    assert_eq!(fed, vec![(7, 0, NOW + 60_000)], "no version, at the flush instant");
    assert!(c.cache.held_due(0, NOW + 60_001, 10).await.unwrap().is_empty(), "let go once fed");
    assert_eq!(c.cache.held_due(0, NOW + 90_000, 10).await.unwrap().len(), 1, "user 8 waits for its own");
}
