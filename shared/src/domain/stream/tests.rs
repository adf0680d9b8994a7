use super::frame::{self, DataKind, ErrorCode};
use super::message::{parse, ClientMessage};
use super::*;
use crate::domain::derive::Connection;
use crate::domain::{ManualState, ManualStatus, Millis, ReadModel, Rules, Status, UserId};

const NOW: Millis = 1_764_270_000_000;

fn id(n: u64) -> UserId {
    UserId::new(n).unwrap()
}

fn code(body: &str) -> ErrorCode {
    parse(body.as_bytes()).unwrap_err().code
}

#[test]
fn messages_are_read_with_their_bounds() {
    assert_eq!(
        parse(br#"{"action":"subscribe","user_ids":[3,1,3],"extra":1}"#).unwrap(),
        ClientMessage::Subscribe { user_ids: vec![id(3), id(1)], since: None }
    );
    assert_eq!(
        parse(br#"{"action":"subscribe","user_ids":[1],"since":"x"}"#).unwrap(),
        ClientMessage::Subscribe { user_ids: vec![id(1)], since: Some("x".into()) }
    );
    assert_eq!(parse(br#"{"action":"ping"}"#).unwrap(), ClientMessage::Ping);
    assert_eq!(code("nope"), ErrorCode::InvalidJson);
    assert_eq!(code("[1]"), ErrorCode::InvalidRequest);
    assert_eq!(code(r#"{"user_ids":[1]}"#), ErrorCode::InvalidRequest);
    assert_eq!(code(r#"{"action":"dance"}"#), ErrorCode::UnknownAction);
    assert_eq!(code(r#"{"action":"subscribe","user_ids":[]}"#), ErrorCode::InvalidRequest);
    assert_eq!(code(r#"{"action":"subscribe","user_ids":[0]}"#), ErrorCode::InvalidRequest);
    assert_eq!(code(r#"{"action":"subscribe","user_ids":[-1]}"#), ErrorCode::InvalidRequest);
    assert_eq!(code(r#"{"action":"subscribe","user_ids":[1.5]}"#), ErrorCode::InvalidRequest);
    assert_eq!(code(r#"{"action":"subscribe","user_ids":[9223372036854775808]}"#), ErrorCode::InvalidRequest);
    assert_eq!(code(r#"{"action":"subscribe","user_ids":[1],"since":5}"#), ErrorCode::InvalidRequest);
    let ids: Vec<String> = (1..=1001).map(|n| n.to_string()).collect();
    assert_eq!(code(&format!(r#"{{"action":"unsubscribe","user_ids":[{}]}}"#, ids.join(","))), ErrorCode::TooManyIds);
    // Counted as listed, before duplicates collapse, as the bulk read does.
    let same = vec!["7"; 1001].join(",");
    assert_eq!(code(&format!(r#"{{"action":"subscribe","user_ids":[{same}]}}"#)), ErrorCode::TooManyIds);
    let most = vec!["7"; 1000].join(",");
    assert_eq!(
        parse(format!(r#"{{"action":"subscribe","user_ids":[{most}]}}"#).as_bytes()).unwrap(),
        ClientMessage::Subscribe { user_ids: vec![id(7)], since: None }
    );
    let big = format!(r#"{{"action":"ping","pad":"{}"}}"#, "x".repeat(MAX_MESSAGE_BYTES));
    assert_eq!(code(&big), ErrorCode::PayloadTooLarge);
}

#[test]
fn cursors_round_trip_and_refuse_what_they_did_not_issue() {
    let cursor = Cursor { connection: ConnectionId::new("abc=").unwrap(), seq: 7, issued_ms: NOW };
    let text = cursor.encode();
    assert_eq!(Cursor::decode(&text), Some(cursor.clone()));
    assert_eq!(Cursor::decode("not a cursor"), None);
    assert_eq!(Cursor::decode(&"A".repeat(400)), None);
    // Issued at an instant no store holds: forged.
    for t in [i64::MIN, -1, crate::domain::ids::MAX_INSTANT_MS + 1, i64::MAX] {
        assert_eq!(Cursor::decode(&Cursor { issued_ms: t, ..cursor.clone() }.encode()), None, "{t}");
    }
    let last = Cursor { issued_ms: crate::domain::ids::MAX_INSTANT_MS, ..cursor.clone() };
    assert_eq!(Cursor::decode(&last.encode()), Some(last));
    assert!(!cursor.expired(NOW + 8_100_000, 8_100_000));
    assert!(cursor.expired(NOW + 8_100_001, 8_100_000));
    assert!(ConnectionId::new("a{b}").is_none() && ConnectionId::new("").is_none());
}

#[test]
fn frames_split_within_the_limit() {
    let entries: Vec<String> = (0..2_000).map(|n| format!(r#"{{"user_id":{n},"pad":"{}"}}"#, "y".repeat(40))).collect();
    let groups = frame::split(&entries);
    assert!(groups.len() > 2);
    assert_eq!(groups.iter().map(|g| g.len()).sum::<usize>(), entries.len());
    let n = groups.len();
    for (k, group) in groups.iter().enumerate() {
        let cursor = Cursor { connection: ConnectionId::new(&"c".repeat(128)).unwrap(), seq: u64::MAX, issued_ms: NOW };
        let text = frame::data(
            DataKind::Snapshot,
            u64::MAX,
            &entries[group.clone()],
            Some(&cursor.encode()),
            Some((k + 1, n)),
            true,
        );
        assert!(text.len() <= MAX_FRAME_BYTES, "{}", text.len());
        serde_json::from_str::<serde_json::Value>(&text).unwrap();
    }
    assert!(frame::split(&[]).is_empty());
}

#[test]
fn next_is_exact_to_the_millisecond() {
    let rules = Rules::default();
    let model = ReadModel {
        last_active_ms: Some(NOW),
        connections: vec![Connection { seen_ms: NOW, active_ms: Some(NOW), platform: None }],
        manual: Some(ManualStatus { state: ManualState::Dnd, message: None, expires_at_ms: Some(NOW + 1_000) }),
        ..ReadModel::default()
    };
    let entry = Entry::of(id(1), &model, false, NOW, &rules);
    assert_eq!(entry.view.status, Status::Online);
    let next = entry.next.clone().unwrap();
    assert_eq!(next.at_ms, NOW + 1_000, "the manual status expires first");
    assert_eq!(model.view_for(false, next.at_ms - 1, &rules), entry.view);
    assert_eq!(model.view_for(false, next.at_ms, &rules), next.view);
    let later = Entry::of(id(1), &model, false, next.at_ms, &rules).next.unwrap();
    assert_eq!(later.at_ms, NOW + rules.idle_after_ms + 1, "then idle");
    assert_eq!(later.view.status, Status::Idle);
    let never = Entry::of(id(1), &ReadModel::default(), false, NOW, &rules);
    assert_eq!((never.view.status, never.next.clone()), (Status::Offline, None));
    assert!(never.to_json().contains(r#""next":null"#));
}

#[test]
fn activity_is_held_only_within_the_refresh_and_well_before_next() {
    use super::hold::{hold, Shown, FLUSH_MARGIN_MS, HOLD_SLACK_MS};
    let shown = Shown { at_ms: NOW, shape: 5, next_at: Some(NOW + 300_001) };
    let refresh = 60_000;
    // Within the refresh, same shape, online: held until the refresh ends.
    assert_eq!(hold(5, true, Some(&shown), NOW + 1_000, refresh), Some(NOW + 60_000));
    assert_eq!(hold(5, true, Some(&shown), NOW + 60_000 - HOLD_SLACK_MS - 1, refresh), Some(NOW + 60_000));
    assert_eq!(hold(5, true, Some(&shown), NOW + 60_000 - HOLD_SLACK_MS, refresh), None);
    // Another shape, not online, never sent, or the old stored form: sent.
    assert_eq!(hold(6, true, Some(&shown), NOW + 1_000, refresh), None);
    assert_eq!(hold(5, false, Some(&shown), NOW + 1_000, refresh), None);
    assert_eq!(hold(5, true, None, NOW + 1_000, refresh), None);
    assert_eq!(hold(5, true, Some(&shown), NOW + 1_000, 0), None, "a refresh of 0 holds nothing");
    // A next close by bounds the hold: flushed the margin before it.
    let soon = Shown { next_at: Some(NOW + 150_000), ..shown };
    assert_eq!(hold(5, true, Some(&soon), NOW + 1_000, 3_600_000), Some(NOW + 150_000 - FLUSH_MARGIN_MS));
    // 2 s before it (the margin passed): sent at once.
    assert_eq!(hold(5, true, Some(&soon), NOW + 148_000, 3_600_000), None);
    let never = Shown { next_at: None, ..shown };
    assert_eq!(never.flush_at(refresh), NOW + 60_000);
}

#[test]
fn a_left_out_entry_whose_bucket_edge_alone_moved_is_held_until_the_edge_sent() {
    use super::hold::{hold_left_out, Shown, FLUSH_MARGIN_MS, HOLD_SLACK_MS};
    let edge = NOW + 3 * 86_400_000;
    let shown = Shown { at_ms: NOW, shape: 5, next_at: Some(edge) };
    // No refresh bounds it: only the edge last sent.
    assert_eq!(hold_left_out(5, Some(&shown), NOW + 3_600_000), Some(edge - FLUSH_MARGIN_MS));
    assert_eq!(
        hold_left_out(5, Some(&shown), edge - FLUSH_MARGIN_MS - HOLD_SLACK_MS - 1),
        Some(edge - FLUSH_MARGIN_MS)
    );
    assert_eq!(hold_left_out(5, Some(&shown), edge - FLUSH_MARGIN_MS - HOLD_SLACK_MS), None);
    // A new bucket, nothing sent before, or no edge sent: sent at once.
    assert_eq!(hold_left_out(6, Some(&shown), NOW + 1), None);
    assert_eq!(hold_left_out(5, None, NOW + 1), None);
    assert_eq!(hold_left_out(5, Some(&Shown { next_at: None, ..shown }), NOW + 1), None);
}

#[test]
fn the_shape_leaves_out_activity_only() {
    let rules = Rules::default();
    let mut model = ReadModel { last_active_ms: Some(NOW), ..ReadModel::default() };
    let a = Entry::of(id(1), &model, false, NOW, &rules);
    model.last_active_ms = Some(NOW + 5);
    let b = Entry::of(id(1), &model, false, NOW + 5, &rules);
    assert_eq!(a.shape(), b.shape());
    assert_ne!(a.digest(), b.digest());
}
