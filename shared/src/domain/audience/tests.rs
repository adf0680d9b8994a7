use proptest::prelude::*;

use super::*;
use crate::domain::last_seen::{RECENTLY_MS, WITHIN_MONTH_MS, WITHIN_WEEK_MS};
use crate::domain::{
    EventKind, ManualState, ManualStatus, PresenceEvent, Rules, SessionId, Status, UserState, Visibility,
};

const NOW: Millis = 1_764_270_000_000;
const TARGET: u64 = 7;

fn id(raw: u64) -> UserId {
    UserId::new(raw).unwrap()
}

fn audience(default: AudienceDefault, except: &[u64], last_seen: LastSeenRule) -> Audience {
    Audience::new(default, except.iter().map(|raw| id(*raw)), last_seen).unwrap()
}

/// A user online on the web, active a minute ago, with a manual status.
fn online_user() -> UserState {
    let mut state = UserState::default();
    state.apply(&PresenceEvent {
        kind: EventKind::Activity,
        user_id: id(TARGET),
        session_id: SessionId::new("s").unwrap(),
        device: Some("web".into()),
        ts_ms: NOW - 60_000,
    });
    state.manual = Some(ManualStatus::new(ManualState::Dnd, Some("focus".into()), None, NOW - 1).unwrap());
    state
}

/// What `viewer` reads of `state` with `audience` at `now`: the path every
/// reader takes (the view after appear-offline, then the audience).
fn read(state: &UserState, audience: &Audience, viewer: ViewerClass, now: Millis) -> View {
    let allowed_entry = state.view_for(viewer == ViewerClass::Itself, now, &Rules::default());
    entry_for(audience, viewer, allowed_entry, now)
}

#[test]
fn every_viewer_class_under_both_defaults() {
    let state = online_user();
    let (excepted, other) = (ViewerClass::User(id(3)), ViewerClass::User(id(4)));
    let truth = state.view_for(true, NOW, &Rules::default());
    let public = state.view_for(false, NOW, &Rules::default());
    assert_eq!((public.status, public.manual.is_some(), public.platforms.is_some()), (Status::Online, true, true));

    let everyone_but_3 = audience(AudienceDefault::Everyone, &[3], LastSeenRule::Withheld);
    assert_eq!(read(&state, &everyone_but_3, ViewerClass::Itself, NOW), truth);
    assert_eq!(read(&state, &everyone_but_3, excepted, NOW), View::UNKNOWN, "indistinguishable from never seen");
    assert_eq!(read(&state, &everyone_but_3, other, NOW), public);
    assert_eq!(read(&state, &everyone_but_3, ViewerClass::Service, NOW), public);
    assert_eq!(read(&state, &everyone_but_3, ViewerClass::Public, NOW), public);

    let nobody_but_3 = audience(AudienceDefault::Nobody, &[3], LastSeenRule::Coarse);
    let left_out = View { last_seen: Some(LastSeen::Recently), ..View::UNKNOWN };
    assert_eq!(read(&state, &nobody_but_3, ViewerClass::Itself, NOW), truth);
    assert_eq!(read(&state, &nobody_but_3, excepted, NOW), public);
    assert_eq!(read(&state, &nobody_but_3, other, NOW), left_out);
    assert_eq!(read(&state, &nobody_but_3, ViewerClass::Service, NOW), left_out);
    assert_eq!(read(&state, &nobody_but_3, ViewerClass::Public, NOW), left_out);
}

#[test]
fn appear_offline_still_hides_from_allowed_viewers_and_freezes_the_bucket() {
    let mut state = online_user();
    state.set_visible(false, NOW);
    let coarse = audience(AudienceDefault::Nobody, &[3], LastSeenRule::Coarse);
    let later = NOW + RECENTLY_MS;
    // Active again while hidden: nobody but the user may learn of it.
    state.apply(&PresenceEvent {
        kind: EventKind::Activity,
        user_id: id(TARGET),
        session_id: SessionId::new("s").unwrap(),
        device: None,
        ts_ms: later - 1,
    });
    let allowed = read(&state, &coarse, ViewerClass::User(id(3)), later);
    assert_eq!(allowed, View::gone(Some(NOW - 60_000)), "the frozen view of §4 property 4");
    let left_out = read(&state, &coarse, ViewerClass::User(id(4)), later);
    assert_eq!(left_out.last_seen, Some(LastSeen::WithinWeek), "bucket of the frozen value, not of the activity");
    assert_eq!(read(&state, &coarse, ViewerClass::Itself, later).status, Status::Online);
}

#[test]
fn coarse_buckets_at_their_edges_for_a_left_out_viewer() {
    let state = online_user();
    let active = NOW - 60_000;
    let coarse = audience(AudienceDefault::Everyone, &[3], LastSeenRule::Coarse);
    let bucket = |now: Millis| read(&state, &coarse, ViewerClass::User(id(3)), now).last_seen;
    for (edge, at, past) in [
        (RECENTLY_MS, LastSeen::Recently, LastSeen::WithinWeek),
        (WITHIN_WEEK_MS, LastSeen::WithinWeek, LastSeen::WithinMonth),
        (WITHIN_MONTH_MS, LastSeen::WithinMonth, LastSeen::LongAgo),
    ] {
        assert_eq!(bucket(active + edge - 1), Some(at));
        assert_eq!(bucket(active + edge), Some(at));
        assert_eq!(bucket(active + edge + 1), Some(past));
    }
    // Never seen: no value to bucket, so the field is left out.
    assert_eq!(read(&UserState::default(), &coarse, ViewerClass::User(id(3)), NOW), View::UNKNOWN);
}

#[test]
fn the_except_list_is_counted_as_listed_then_sorted_and_collapsed() {
    let many = Audience::new(AudienceDefault::Nobody, std::iter::repeat_n(id(5), MAX_EXCEPT), LastSeenRule::Coarse);
    assert_eq!(many.map(|a| a.except().to_vec()), Ok(vec![id(5)]));
    let over = Audience::new(AudienceDefault::Nobody, (1..=1_001).map(id), LastSeenRule::Coarse);
    assert_eq!(over, Err(AudienceError::TooManyIds(1_001)));
    let mixed = audience(AudienceDefault::Everyone, &[9, 3, 9, 1], LastSeenRule::Withheld);
    assert_eq!(mixed.except(), &[id(1), id(3), id(9)]);
    let json = serde_json::to_value(&mixed).unwrap();
    assert_eq!(json, serde_json::json!({"default": "everyone", "except": [1, 3, 9], "last_seen": "none"}));
    assert_eq!(serde_json::to_value(&Audience::EVERYONE).unwrap()["except"], serde_json::json!([]));
}

#[test]
fn wire_names_parse_and_unknown_ones_are_refused() {
    assert_eq!("nobody".parse(), Ok(AudienceDefault::Nobody));
    assert_eq!("everyone".parse(), Ok(AudienceDefault::Everyone));
    assert_eq!("coarse".parse(), Ok(LastSeenRule::Coarse));
    assert_eq!("none".parse(), Ok(LastSeenRule::Withheld));
    assert_eq!("Everyone".parse::<AudienceDefault>(), Err(AudienceError::UnknownDefault("Everyone".into())));
    assert_eq!("exact".parse::<LastSeenRule>(), Err(AudienceError::UnknownLastSeen("exact".into())));
}

#[test]
fn the_rule_alone_answers_everyone_the_list_cannot_name() {
    let rule = audience(AudienceDefault::Nobody, &[3], LastSeenRule::Withheld).rule(ListTag(5));
    for viewer in [ViewerClass::Itself, ViewerClass::Service, ViewerClass::Public] {
        assert_eq!(rule.asks_about(viewer), None);
    }
    assert_eq!(rule.asks_about(ViewerClass::User(id(4))), Some(id(4)));
    assert_eq!(AudienceRule::EVERYONE.asks_about(ViewerClass::User(id(4))), None, "nobody listed: nothing to look up");
    assert!(
        AudienceRule::EVERYONE.allows(ViewerClass::User(id(4)), true),
        "a claim of listing with no list counts for nothing"
    );
    assert_eq!(ViewerClass::of(id(TARGET), Some(id(TARGET))), ViewerClass::Itself);
    assert_eq!(ViewerClass::of(id(TARGET), Some(id(3))), ViewerClass::User(id(3)));
    assert_eq!(ViewerClass::of(id(TARGET), None), ViewerClass::Service);
}

fn arb_viewer() -> impl Strategy<Value = ViewerClass> {
    prop_oneof![
        Just(ViewerClass::Itself),
        Just(ViewerClass::Service),
        Just(ViewerClass::Public),
        (1u64..12).prop_map(|raw| ViewerClass::User(id(raw))),
    ]
}

prop_compose! {
    /// Audiences over a small id space, so viewers are often listed and
    /// often not, under both defaults and both last-seen rules.
    fn arb_audience()(
        nobody in any::<bool>(),
        coarse in any::<bool>(),
        listed in prop::collection::vec(1u64..12, 0..8),
    ) -> Audience {
        let default = if nobody { AudienceDefault::Nobody } else { AudienceDefault::Everyone };
        let last_seen = if coarse { LastSeenRule::Coarse } else { LastSeenRule::Withheld };
        audience(default, &listed, last_seen)
    }
}

prop_compose! {
    /// Users never seen, online, idle or gone, hidden or not, with or
    /// without a manual status, read up to 40 days after their activity.
    fn arb_user()(
        events in prop::collection::vec((0u8..3, 0i64..(40 * 86_400_000), any::<bool>()), 0..5),
        hide in prop::option::of(0i64..(40 * 86_400_000)),
        manual in any::<bool>(),
        read_after in 0i64..(40 * 86_400_000),
    ) -> (UserState, Millis) {
        let mut state = UserState::default();
        let start = NOW - 40 * 86_400_000;
        let mut latest = start;
        for (kind, at, web) in events {
            let kind = [EventKind::Connected, EventKind::Activity, EventKind::Disconnected][kind as usize];
            state.apply(&PresenceEvent {
                kind,
                user_id: id(TARGET),
                session_id: SessionId::new("s").unwrap(),
                device: web.then(|| "web".to_owned()),
                ts_ms: start + at,
            });
            latest = latest.max(start + at);
        }
        if let Some(at) = hide {
            state.set_visible(false, start + at);
        }
        if manual {
            state.manual = Some(ManualStatus::new(ManualState::Busy, None, None, start).unwrap());
        }
        (state, latest + read_after)
    }
}

proptest! {
    /// DESIGN §13: an allowed viewer reads exactly what they would read
    /// with no audience; anyone else reads a user never seen, plus, under
    /// `coarse`, the bucket of the `last_active_ms` an allowed viewer
    /// reads, and nothing else.
    #[test]
    fn a_viewer_never_learns_more_than_the_rule_allows(
        audience in arb_audience(),
        viewer in arb_viewer(),
        (state, now) in arb_user(),
    ) {
        let rules = Rules::default();
        let listed = matches!(viewer, ViewerClass::User(v) if audience.except().contains(&v));
        let allowed = match (viewer, audience.default_audience()) {
            (ViewerClass::Itself, _) => true,
            (_, AudienceDefault::Everyone) => !listed,
            (_, AudienceDefault::Nobody) => listed,
        };
        prop_assert_eq!(audience.allows(viewer), allowed);
        let got = read(&state, &audience, viewer, now);
        if allowed {
            prop_assert_eq!(got, state.view_for(viewer == ViewerClass::Itself, now, &rules));
        } else {
            let other = state.view_for(false, now, &rules);
            let bucket = other.last_active_ms.map(|a| LastSeen::of(a, now));
            let want = match audience.last_seen() {
                LastSeenRule::Coarse => bucket,
                LastSeenRule::Withheld => None,
            };
            prop_assert_eq!(got, View { last_seen: want, ..View::UNKNOWN });
        }
        // The rule with a looked-up place on the list decides as the whole
        // audience does, for every viewer.
        let rule = audience.rule(ListTag(1));
        let looked_up = rule.asks_about(viewer).is_some_and(|v| audience.except().contains(&v));
        prop_assert_eq!(rule.allows(viewer, looked_up), allowed);
    }

    /// Whatever happens after the user hides, a left-out viewer's entry
    /// stays what it was at the hide (the bucket moves only with `now`).
    #[test]
    fn a_left_out_viewer_learns_nothing_of_what_happens_while_hidden(
        audience in arb_audience(),
        (mut state, now) in arb_user(),
        later in 0i64..86_400_000,
    ) {
        let Visibility::Hidden { since_ms, .. } = state.visibility else {
            return Ok(());
        };
        let viewer = ViewerClass::User(id(99));
        let before = read(&state, &audience, viewer, now);
        state.apply(&PresenceEvent {
            kind: EventKind::Activity,
            user_id: id(TARGET),
            session_id: SessionId::new("t").unwrap(),
            device: None,
            ts_ms: since_ms.max(now) + 1 + later,
        });
        prop_assert_eq!(read(&state, &audience, viewer, now), before);
    }
}
