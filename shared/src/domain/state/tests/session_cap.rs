//! The session cap (`MAX_SESSIONS`, DESIGN §6), with the helpers of the
//! parent module.

use proptest::prelude::*;

use super::*;

// ---- the session cap (MAX_SESSIONS, DESIGN §6) -------------------------

const CAP: usize = 3;

/// Events over more sessions than [`CAP`], so every property below crosses
/// the cap.
fn arb_event_many_sessions() -> impl Strategy<Value = PresenceEvent> {
    let kind = prop_oneof![Just(EventKind::Connected), Just(EventKind::Activity), Just(EventKind::Disconnected)];
    // Each session names one device on every event, as a connection does;
    // see [`Presence::cap`] for what a dropped session forgets otherwise.
    const DEVICES: [Option<&str>; 4] = [Some("ios"), Some("web"), Some("linux"), None];
    (kind, 0..8u8, 0..20i64).prop_map(|(kind, s, t)| PresenceEvent {
        device: DEVICES[usize::from(s) % DEVICES.len()].map(str::to_owned),
        ..ev(kind, &format!("s{s}"), NOW + t * 1000)
    })
}

/// What the cap must keep exact (see [`Presence::cap`]): every register,
/// the newest activity, and what reads derive, platforms included, at
/// times across `IDLE_AFTER` and `SESSION_TTL`. A dropped session's
/// activity may survive in one copy and not the other only on a
/// disconnected session, which no read counts (heartbeats, which revive a
/// session without activity, are left out on purpose: see
/// [`Presence::cap`]).
type CappedReads = (Vec<(SessionId, Register)>, Option<Millis>, Vec<(View, Platforms)>);

fn capped_reads(p: &Presence) -> CappedReads {
    let r = Rules { idle_after_ms: 5_000, session_ttl_ms: 12_000, ..Rules::default() };
    let registers = p.sessions.iter().map(|(id, s)| (id.clone(), s.register)).collect();
    let reads = (0..30).map(|i| NOW + i * 1000).map(|t| (p.derive(t, &r), p.platforms(t, &r))).collect();
    (registers, p.last_active_ms, reads)
}

fn capped_of(events: &[PresenceEvent]) -> Presence {
    let mut p = Presence::default();
    for e in events {
        p.apply(e);
        p.cap(CAP);
    }
    p
}

fn capped_join(a: &Presence, b: &Presence) -> Presence {
    let mut out = a.clone();
    out.join(b);
    out.cap(CAP);
    out
}

#[test]
fn the_cap_drops_the_oldest_sessions_then_the_lowest_ids() {
    let mut p = presence_of(&[
        ev(EventKind::Connected, "b", NOW),
        ev(EventKind::Connected, "a", NOW),
        ev(EventKind::Disconnected, "c", NOW + 5),
        ev(EventKind::Connected, "d", NOW - 5),
    ]);
    p.cap(2);
    let kept: Vec<&str> = p.sessions.keys().map(|s| s.as_str()).collect();
    // d is oldest; a and b tie on time and a sorts first, so a goes next.
    assert_eq!(kept, vec!["b", "c"]);
    assert_eq!(p.last_active_ms, Some(NOW), "the cap never moves the newest activity");
}

#[test]
fn ten_thousand_sessions_are_bounded_by_max_sessions() {
    let r = rules();
    let events: Vec<PresenceEvent> =
        (0..10_000).map(|i| ev(EventKind::Connected, &format!("sess-{i:05}"), NOW + i)).collect();
    let mut p = presence_of(&events);
    p.prune(NOW + 10_000, &r);
    assert_eq!(p.sessions.len(), r.max_sessions);
    assert!(p.sessions.keys().all(|s| s.as_str() >= "sess-09936"), "the newest 64 are kept");
}

proptest! {
    #[test]
    fn with_the_cap_any_order_and_duplication_gives_the_same_state(
        (events, shuffled) in prop::collection::vec(arb_event_many_sessions(), 0..30).prop_flat_map(|events| {
            let copies: Vec<PresenceEvent> = events.iter().chain(events.iter().step_by(3)).cloned().collect();
            (Just(events), Just(copies).prop_shuffle())
        }),
    ) {
        let mut once = presence_of(&events);
        once.cap(CAP);
        prop_assert!(once.sessions.len() <= CAP);
        prop_assert_eq!(capped_reads(&capped_of(&shuffled)), capped_reads(&once));
        prop_assert_eq!(capped_reads(&capped_of(&events)), capped_reads(&once));
    }

    #[test]
    fn with_the_cap_join_is_commutative_associative_and_idempotent(
        a in prop::collection::vec(arb_event_many_sessions(), 0..14),
        b in prop::collection::vec(arb_event_many_sessions(), 0..14),
        c in prop::collection::vec(arb_event_many_sessions(), 0..14),
    ) {
        let (a, b, c) = (capped_of(&a), capped_of(&b), capped_of(&c));
        prop_assert_eq!(capped_join(&a, &b), capped_join(&b, &a));
        prop_assert_eq!(
            capped_reads(&capped_join(&capped_join(&a, &b), &c)),
            capped_reads(&capped_join(&a, &capped_join(&b, &c)))
        );
        prop_assert_eq!(capped_join(&a, &a), a);
    }
}
