//! Pure service tests over in-memory fakes: the write path's decisions.

use std::sync::atomic::Ordering;

use super::commit::{CommitError, Committer};
use super::fakes::{FakeCache, FakeFeed, FakePublisher, FakeRepair, FakeStore};
use crate::domain::{EventKind, Millis, PresenceEvent, Rules, SessionId, Status, UserId};

pub(super) const NOW: Millis = 1_764_270_000_000;

pub(super) type Fake = Committer<FakeCache, FakeStore, FakeRepair, FakePublisher, FakeFeed>;

pub(super) fn committer() -> Fake {
    Committer {
        cache: FakeCache::default(),
        store: FakeStore::default(),
        repair: FakeRepair::default(),
        publisher: FakePublisher::default(),
        feed: FakeFeed::default(),
        rules: Rules::default(),
    }
}

pub(super) fn user(id: u64) -> UserId {
    UserId::new(id).unwrap()
}

pub(super) fn ev(kind: EventKind, id: u64, session: &str, ts_ms: Millis) -> PresenceEvent {
    PresenceEvent { kind, user_id: user(id), session_id: SessionId::new(session).unwrap(), device: None, ts_ms }
}

#[tokio::test]
async fn a_lost_race_is_merged_again_from_the_winner_and_published_once() {
    let c = committer();
    c.store.rivals.lock().unwrap().push(user(1));
    c.store.rival_rounds.store(1, Ordering::SeqCst);
    let out = c.aggregate(&[ev(EventKind::Connected, 1, "a", NOW)], NOW).await.unwrap();
    assert_eq!(out.retried, 1);
    assert_eq!(c.store.saves.load(Ordering::SeqCst), 2);
    let stored = c.store.records.lock().unwrap()[&user(1)].clone();
    assert_eq!(stored.version, 2, "merged on top of the rival's version 1");
    assert_eq!(stored.state.presence.sessions.len(), 1);
    assert_eq!(c.publisher.published.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn endless_contention_fails_once_the_time_budget_is_spent() {
    let c = committer();
    c.store.rivals.lock().unwrap().push(user(1));
    c.store.rival_rounds.store(usize::MAX, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let err = c.aggregate(&[ev(EventKind::Connected, 1, "a", NOW)], NOW).await.unwrap_err();
    assert!(matches!(err, CommitError::Contended(ref users) if users == &vec![user(1)]));
    assert!(started.elapsed() >= super::commit::CONTENTION_BUDGET, "gives up only once the budget is spent");
    assert!(c.store.saves.load(Ordering::SeqCst) > 20, "far more rounds than a small fixed count");
    assert!(c.publisher.published.lock().unwrap().is_empty(), "nothing acknowledged, nothing announced");
}

#[tokio::test]
async fn a_redis_that_fails_to_store_leaves_a_repair_and_the_change_is_still_acknowledged() {
    let c = committer();
    c.cache.fail_store.store(true, Ordering::SeqCst);
    let out = c.aggregate(&[ev(EventKind::Connected, 2, "a", NOW)], NOW).await.unwrap();
    assert!(!out.cache_ok);
    assert_eq!(*c.repair.recorded.lock().unwrap(), vec![user(2)]);
    assert!(c.store.records.lock().unwrap().contains_key(&user(2)));
}

#[tokio::test]
async fn when_the_repair_buffer_fails_too_the_commit_fails_so_it_is_retried() {
    let c = committer();
    c.cache.fail_load.store(true, Ordering::SeqCst);
    c.repair.fail.store(true, Ordering::SeqCst);
    let err = c.aggregate(&[ev(EventKind::Connected, 3, "a", NOW)], NOW).await.unwrap_err();
    assert!(matches!(err, CommitError::Repair(_)));
}

#[tokio::test]
async fn a_hide_while_redis_is_down_changes_nothing() {
    let c = committer();
    c.aggregate(&[ev(EventKind::Connected, 4, "a", NOW)], NOW).await.unwrap();
    c.cache.fail_load.store(true, Ordering::SeqCst);
    let err = c.set_visibility(user(4), false, NOW + 1).await.unwrap_err();
    assert!(matches!(err, CommitError::CacheRequired));
    assert!(c.store.records.lock().unwrap()[&user(4)].state.visibility.is_visible());
    // Showing again needs no Redis.
    c.set_visibility(user(4), true, NOW + 2).await.unwrap();
}

#[tokio::test]
async fn a_replayed_change_writes_nothing_and_announces_nothing() {
    let c = committer();
    let events = [ev(EventKind::Connected, 5, "a", NOW), ev(EventKind::Activity, 5, "a", NOW + 5)];
    c.aggregate(&events, NOW + 10).await.unwrap();
    let saves = c.store.saves.load(Ordering::SeqCst);
    let again = c.aggregate(&events, NOW + 10).await.unwrap();
    assert!(again.written.is_empty());
    assert!(again.transitions.is_empty());
    assert_eq!(c.store.saves.load(Ordering::SeqCst), saves + 1, "one empty save call at most");
    assert_eq!(c.publisher.published.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_failed_publication_is_reported_kept_in_the_outbox_and_sent_by_the_next_drain() {
    let c = committer();
    c.publisher.fail.store(true, Ordering::SeqCst);
    let out = c.aggregate(&[ev(EventKind::Connected, 6, "a", NOW)], NOW).await.unwrap();
    assert!(out.publish_failed);
    assert_eq!(out.transitions.len(), 1);
    let stored = c.store.records.lock().unwrap()[&user(6)].clone();
    assert_eq!(stored.announced, Some(Status::Online));
    assert_eq!(c.store.outbox.lock().unwrap().len(), 1, "the event waits in the outbox");
    // A later write of the same user publishes the older event first.
    c.publisher.fail.store(false, Ordering::SeqCst);
    c.aggregate(&[ev(EventKind::Disconnected, 6, "a", NOW + 1)], NOW + 1).await.unwrap();
    let sent = c.publisher.transitions();
    assert_eq!(sent, vec![("offline".into(), "online".into()), ("online".into(), "offline".into())]);
    assert!(c.store.outbox.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_event_too_large_for_the_bus_leaves_the_outbox_and_counts_as_a_publish_failure() {
    let c = committer();
    c.publisher.too_large.store(true, Ordering::SeqCst);
    let out = c.aggregate(&[ev(EventKind::Connected, 7, "a", NOW)], NOW).await.unwrap();
    assert!(out.publish_failed, "a dropped event is counted");
    assert_eq!(out.published, 0, "and not as published");
    assert!(c.store.outbox.lock().unwrap().is_empty(), "nor kept to block the user's later events");
    c.publisher.too_large.store(false, Ordering::SeqCst);
    let next = c.aggregate(&[ev(EventKind::Disconnected, 7, "a", NOW + 1)], NOW + 1).await.unwrap();
    assert_eq!((next.published, next.publish_failed), (1, false));
    assert_eq!(c.publisher.transitions(), vec![("online".into(), "offline".into())]);
}

#[tokio::test]
async fn a_hide_in_the_redis_flag_is_adopted_by_the_next_write_and_only_a_show_undoes_it() {
    let c = committer();
    c.aggregate(&[ev(EventKind::Connected, 11, "a", NOW)], NOW).await.unwrap();
    c.cache.hidden_flags.lock().unwrap().insert(user(11));
    c.aggregate(&[ev(EventKind::Activity, 11, "a", NOW + 5)], NOW + 5).await.unwrap();
    let stored = c.store.records.lock().unwrap()[&user(11)].clone();
    assert!(!stored.state.visibility.is_visible(), "an event write keeps (and stores) the hide");
    assert_eq!(c.publisher.transitions().last(), Some(&("online".into(), "offline".into())));
    c.set_visibility(user(11), true, NOW + 6).await.unwrap();
    assert!(c.store.records.lock().unwrap()[&user(11)].state.visibility.is_visible());
}

#[tokio::test]
async fn the_reader_answers_from_sql_when_redis_is_down_and_backfills_when_it_is_up() {
    let c = committer();
    c.aggregate(&[ev(EventKind::Connected, 7, "a", NOW)], NOW).await.unwrap();
    c.cache.records.lock().unwrap().clear();
    let reader = super::Reader { cache: c.cache, store: c.store, rules: Rules::default() };
    reader.cache.fail_load.store(true, Ordering::SeqCst);
    let views = reader.read(&[user(7), user(8)], None, NOW).await.unwrap();
    assert_eq!((views[0].status, views[1].status), (Status::Online, Status::Offline));
    assert!(reader.cache.records.lock().unwrap().is_empty(), "no backfill while redis is down");
    reader.cache.fail_load.store(false, Ordering::SeqCst);
    reader.read(&[user(7), user(8)], None, NOW).await.unwrap();
    assert_eq!(reader.cache.records.lock().unwrap().len(), 2, "both backfilled, the unknown one as version 0");
}

#[tokio::test]
async fn a_hide_whose_redis_write_fails_after_the_durable_write_is_still_announced_and_repaired() {
    let c = committer();
    c.aggregate(&[ev(EventKind::Connected, 9, "a", NOW)], NOW).await.unwrap();
    c.cache.fail_store.store(true, Ordering::SeqCst);
    let err = c.set_visibility(user(9), false, NOW + 1).await.unwrap_err();
    assert!(matches!(err, CommitError::CacheRequired), "the caller is asked to retry");
    assert!(!c.store.records.lock().unwrap()[&user(9)].state.visibility.is_visible(), "the hide is durable");
    assert_eq!(*c.repair.recorded.lock().unwrap(), vec![user(9)]);
    assert_eq!(c.publisher.transitions().last(), Some(&("online".into(), "offline".into())));
}

#[tokio::test]
async fn an_audience_whose_list_an_erasure_deleted_before_its_record_landed_gets_the_list_back() {
    use crate::domain::{Audience, AudienceDefault, LastSeenRule};
    let c = committer();
    let friends = Audience::new(AudienceDefault::Nobody, [user(9), user(8)], LastSeenRule::Coarse).unwrap();
    c.store.erase_after_put_list.store(true, Ordering::SeqCst);
    c.set_audience(user(5), &friends, NOW).await.unwrap();
    let reader = super::Reader { cache: c.cache, store: c.store, rules: Rules::default() };
    // Without the list the record names, the two friends would read as
    // left out and the stored audience as `nobody` naming nobody.
    assert_eq!(reader.audience_of(user(5)).await.unwrap(), friends);
    let rule = reader.store.records.lock().unwrap()[&user(5)].state.audience;
    assert_eq!(reader.allowed(&[user(5)], &[rule], Some(user(8)), true).await, vec![true]);
}

#[tokio::test]
async fn a_list_is_not_written_back_for_a_record_that_names_another_rule() {
    use crate::domain::{Audience, AudienceDefault, LastSeenRule};
    use crate::ports::StoreAudience;
    let c = committer();
    let one = Audience::new(AudienceDefault::Everyone, [user(3)], LastSeenRule::Withheld).unwrap();
    c.set_audience(user(5), &one, NOW).await.unwrap();
    let rule = c.store.records.lock().unwrap()[&user(5)].state.audience;
    let other = crate::domain::AudienceRule { list: Some(crate::domain::ListTag(7)), ..rule };
    assert!(!c.store.restore_list(user(5), other, &[user(4)], NOW).await.unwrap());
    assert!(!c.store.restore_list(user(6), rule, &[user(4)], NOW).await.unwrap(), "no record, no list");
    assert_eq!(c.store.lists.lock().unwrap().len(), 1);
}
