use proptest::prelude::*;

use super::*;
use crate::adapters::codec::{summary_from_text, summary_to_text};
use crate::domain::{EventKind, ManualState, Platform, PresenceEvent, SessionId, Status, UserId, UserRecord};

const NOW: Millis = 1_764_270_000_000;

/// Short rules, so a state's events, its sessions' expiry, the grace and a
/// manual expiry all fall within one drawn time range.
fn rules_with_grace(offline_grace_ms: i64) -> Rules {
    Rules { idle_after_ms: 5_000, session_ttl_ms: 20_000, offline_grace_ms, max_sessions: 4 }
}

fn event(kind: EventKind, session: u8, device: Option<&str>, ts_ms: Millis) -> PresenceEvent {
    PresenceEvent {
        kind,
        user_id: UserId::new(42).unwrap(),
        session_id: SessionId::new(format!("s{session}")).unwrap(),
        device: device.map(str::to_owned),
        ts_ms,
    }
}

fn arb_event() -> impl Strategy<Value = PresenceEvent> {
    let kind = prop_oneof![
        Just(EventKind::Connected),
        Just(EventKind::Heartbeat),
        Just(EventKind::Activity),
        Just(EventKind::Disconnected),
    ];
    let device = prop_oneof![Just(None), Just(Some("ios")), Just(Some("web")), Just(Some("macos")), Just(Some("tv"))];
    // Up to six sessions over 60 s: ties, overlaps, expired sessions and
    // tombstones are all common.
    (kind, 0..6u8, device, 0..60_000i64).prop_map(|(kind, s, device, t)| event(kind, s, device, NOW + t))
}

/// What happens to the user's visibility while the events arrive.
#[derive(Clone, Debug)]
enum Hide {
    Never,
    /// Hidden at this time after this many events (later ones still merge).
    At {
        after_events: usize,
        at: Millis,
    },
    /// Hidden, then shown again.
    AndShown {
        after_events: usize,
        at: Millis,
    },
}

fn arb_hide() -> impl Strategy<Value = Hide> {
    prop_oneof![
        Just(Hide::Never),
        (0..12usize, 0..60_000i64).prop_map(|(after_events, t)| Hide::At { after_events, at: NOW + t }),
        (0..12usize, 0..60_000i64).prop_map(|(after_events, t)| Hide::AndShown { after_events, at: NOW + t }),
    ]
}

fn arb_manual() -> impl Strategy<Value = Option<ManualStatus>> {
    let state = prop_oneof![Just(ManualState::Dnd), Just(ManualState::Busy), Just(ManualState::Away)];
    let message = prop_oneof![Just(None), Just(Some("in a meeting".to_owned())), Just(Some("a|b:c,1d".to_owned()))];
    let expiry = prop_oneof![Just(None), (0..80_000i64).prop_map(|t| Some(NOW + t))];
    prop_oneof![
        1 => Just(None),
        2 => (state, message, expiry).prop_map(|(state, message, expires_at_ms)| Some(ManualStatus {
            state,
            message,
            expires_at_ms
        })),
    ]
}

/// A stored record as a writer leaves it: events merged (with a hide part
/// way through), then pruned and capped at the write time.
fn arb_record() -> impl Strategy<Value = (UserRecord, Rules)> {
    (
        prop::collection::vec(arb_event(), 0..12),
        arb_hide(),
        arb_manual(),
        prop_oneof![Just(0i64), Just(3_000i64), Just(25_000i64)],
        0..70_000i64,
        any::<bool>(),
    )
        .prop_map(|(events, hide, manual, grace, written, prune)| {
            let rules = rules_with_grace(grace);
            let written_ms = NOW + written;
            let mut record = UserRecord { version: 1, written_ms, ..Default::default() };
            for (i, e) in events.iter().enumerate() {
                match hide {
                    Hide::At { after_events, at } | Hide::AndShown { after_events, at } if after_events == i => {
                        record.state.set_visible(false, at);
                    }
                    _ => {}
                }
                record.state.apply(e);
            }
            if let Hide::AndShown { at, .. } = hide {
                record.state.set_visible(true, at);
            }
            record.state.manual = manual;
            if prune {
                record.state.presence.prune(written_ms, &rules);
            }
            (record, rules)
        })
}

/// The instants where some answer may flip, each ± 1 ms: every register's
/// time plus `IDLE_AFTER`, `SESSION_TTL` and the grace, the newest
/// activity's idle edge, the manual expiry, the hide and the write.
fn edges(record: &UserRecord, rules: &Rules) -> Vec<Millis> {
    let state = &record.state;
    let mut base = vec![NOW, record.written_ms];
    for session in state.presence.sessions.values() {
        let ts = session.register.ts();
        base.extend([ts, ts + rules.session_ttl_ms, ts + rules.session_ttl_ms + 1 + rules.offline_grace_ms]);
        base.extend([ts + rules.offline_grace_ms]);
        if let Some(active) = session.active_ms {
            base.push(active + rules.idle_after_ms);
        }
    }
    if let Some(active) = state.presence.last_active_ms {
        base.push(active + rules.idle_after_ms);
    }
    if let Some(end) = state.manual.as_ref().and_then(|m| m.expires_at_ms) {
        base.push(end);
    }
    if let Visibility::Hidden { since_ms, .. } = state.visibility {
        base.push(since_ms);
    }
    base.iter().flat_map(|t| [t - 1, *t, t + 1]).collect()
}

/// The fast read of `record` at `now`: its summary, through the stored
/// text, with the flag's hide applied as the reader applies it.
fn fast_read(record: &UserRecord, flag_hides: bool, is_self: bool, now: Millis, rules: &Rules) -> (View, bool) {
    let text = summary_to_text(&ReadModel::of(&record.state, record.written_ms));
    let mut summary = summary_from_text(&text).expect("a summary reads back");
    let adopted = flag_hides && summary.hide_for_flag(now);
    (summary.view_for(is_self, now, rules), adopted)
}

/// The full derivation from the registers, as before the read model.
fn full_read(record: &UserRecord, flag_hides: bool, is_self: bool, now: Millis, rules: &Rules) -> (View, bool) {
    let mut record = record.clone();
    let adopted = flag_hides && record.hide_for_flag(now);
    (record.state.view_for(is_self, now, rules), adopted)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn the_fast_read_answers_as_the_full_derivation_at_every_edge(
        (record, rules) in arb_record(),
        pick in any::<prop::sample::Index>(),
        drift in -90_000i64..90_000,
        anywhere in any::<bool>(),
        flag_hides in any::<bool>(),
    ) {
        let edges = edges(&record, &rules);
        // Mostly at an edge (± 1 ms); sometimes anywhere, before the write too.
        let now = if anywhere { NOW + drift } else { edges[pick.index(edges.len())] };
        for is_self in [false, true] {
            prop_assert_eq!(
                fast_read(&record, flag_hides, is_self, now, &rules),
                full_read(&record, flag_hides, is_self, now, &rules),
                "is_self={} now=NOW{:+} record={:?}", is_self, now - NOW, record
            );
        }
    }

    #[test]
    fn a_summary_holds_under_other_rules_than_the_writers(
        (record, _) in arb_record(),
        grace in prop_oneof![Just(0i64), Just(1i64), Just(40_000i64)],
        ttl in prop_oneof![Just(1i64), Just(10_000i64), Just(1_800_000i64)],
        at in 0..120_000i64,
    ) {
        // Nothing in a summary is derived with the rules, so a change of
        // IDLE_AFTER, SESSION_TTL or OFFLINE_GRACE after the write still
        // reads as the record does.
        let rules = Rules { idle_after_ms: 7_000, session_ttl_ms: ttl, offline_grace_ms: grace, max_sessions: 64 };
        for is_self in [false, true] {
            prop_assert_eq!(
                fast_read(&record, false, is_self, NOW + at, &rules),
                full_read(&record, false, is_self, NOW + at, &rules)
            );
        }
    }
}

/// The generators reach both sides of every edge the property names, so a
/// summary that lost one fact could not pass unnoticed.
#[test]
fn the_edges_drawn_reach_both_sides_of_each_rule() {
    let rules = rules_with_grace(3_000);
    let mut record = UserRecord { version: 1, written_ms: NOW + 10, ..Default::default() };
    record.state.apply(&event(EventKind::Connected, 1, Some("ios"), NOW));
    record.state.apply(&event(EventKind::Heartbeat, 2, Some("web"), NOW + 2));
    record.state.apply(&event(EventKind::Disconnected, 2, Some("web"), NOW + 4));
    record.state.manual =
        Some(ManualStatus { state: ManualState::Busy, message: None, expires_at_ms: Some(NOW + 6_000) });
    let edges = edges(&record, &rules);
    let full = |now| full_read(&record, false, false, now, &rules).0;
    let idle_edge = NOW + rules.idle_after_ms;
    assert!(edges.contains(&idle_edge) && edges.contains(&(idle_edge + 1)));
    assert_eq!((full(idle_edge).status, full(idle_edge + 1).status), (Status::Online, Status::Idle));
    let expiry = NOW + rules.session_ttl_ms;
    assert!(edges.contains(&expiry) && edges.contains(&(expiry + 1)));
    assert_eq!((full(expiry).device_count, full(expiry + 1).device_count), (1, 0));
    let grace_end = expiry + 1 + rules.offline_grace_ms;
    assert!(edges.contains(&(grace_end - 1)) && edges.contains(&grace_end));
    assert_eq!((full(grace_end - 1).status, full(grace_end).status), (Status::Idle, Status::Offline));
    assert!(edges.contains(&(NOW + 5_999)) && edges.contains(&(NOW + 6_000)));
    assert_eq!((full(NOW + 5_999).manual.is_some(), full(NOW + 6_000).manual.is_some()), (true, false));
    assert_eq!(full(NOW + 5).platforms.map(|p| p.get(Platform::Mobile)), Some(Some(Status::Online)));
}

#[test]
fn a_summary_keeps_connected_registers_and_only_the_newest_tombstone() {
    let mut state = UserState::default();
    state.apply(&event(EventKind::Connected, 1, Some("ios"), NOW));
    state.apply(&event(EventKind::Heartbeat, 1, None, NOW + 5));
    state.apply(&event(EventKind::Disconnected, 2, None, NOW + 3));
    state.apply(&event(EventKind::Disconnected, 3, None, NOW + 7));
    let summary = ReadModel::of(&state, NOW + 9);
    assert_eq!(
        summary.connections,
        vec![Connection { seen_ms: NOW + 5, active_ms: Some(NOW), platform: Some(Platform::Mobile) }]
    );
    assert_eq!(
        (summary.newest_tombstone, summary.last_active_ms, summary.written_ms),
        (Some(NOW + 7), Some(NOW), NOW + 9)
    );
}

#[test]
fn a_hide_from_the_flag_freezes_the_view_at_the_write() {
    let rules = rules_with_grace(0);
    let mut state = UserState::default();
    state.apply(&event(EventKind::Connected, 1, None, NOW));
    state.apply(&event(EventKind::Activity, 1, None, NOW + 50));
    let mut summary = ReadModel::of(&state, NOW + 20);
    assert!(summary.hide_for_flag(NOW + 100));
    assert_eq!(summary.visibility, Visibility::Hidden { since_ms: NOW + 20, last_active_ms: Some(NOW + 20) });
    assert_eq!(summary.view_for(false, NOW + 100, &rules), View::gone(Some(NOW + 20)));
    assert_eq!(summary.view_for(true, NOW + 100, &rules).status, Status::Online, "the user sees the truth");
    assert!(!summary.hide_for_flag(NOW + 200), "already hidden: nothing to adopt");
}
