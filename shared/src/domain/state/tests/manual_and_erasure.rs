//! Platforms, manual status and erasure (DESIGN §4, §7.1), with the
//! helpers of the parent module.

use proptest::prelude::*;

use super::*;

// ---- platforms and the manual status (DESIGN §7.1) ---------------------

#[test]
fn a_platform_turns_idle_one_ms_after_idle_after_of_its_own_activity() {
    let r = rules();
    let p = presence_of(&[
        on("ios", ev(EventKind::Connected, "phone", NOW)),
        on("web", ev(EventKind::Connected, "tab", NOW)),
        on("web", ev(EventKind::Activity, "tab", NOW + 1000)),
    ]);
    let at_edge = p.platforms(NOW + r.idle_after_ms, &r);
    assert_eq!((at_edge.mobile, at_edge.web, at_edge.desktop), (Some(Status::Online), Some(Status::Online), None));
    let past = p.platforms(NOW + r.idle_after_ms + 1, &r);
    assert_eq!((past.mobile, past.web), (Some(Status::Idle), Some(Status::Online)), "mobile idle, web not yet");
    assert_eq!(p.platforms(NOW + 1000 + r.idle_after_ms + 1, &r).web, Some(Status::Idle));
}

#[test]
fn a_platform_without_a_live_session_is_absent() {
    let r = rules();
    let p = presence_of(&[
        on("android", ev(EventKind::Connected, "phone", NOW)),
        on("android", ev(EventKind::Disconnected, "phone", NOW + 5)),
        on("macos", ev(EventKind::Heartbeat, "mac", NOW)),
        on("tv", ev(EventKind::Connected, "tv", NOW)),
    ]);
    let platforms = p.platforms(NOW + 10, &r);
    assert_eq!(platforms.live().collect::<Vec<_>>(), vec![(Platform::Desktop, Status::Idle)]);
    assert_eq!(p.derive(NOW + 10, &r).device_count, 2, "the tv counts for status, under no platform");
    assert_eq!(p.platforms(NOW + r.session_ttl_ms + 1, &r), Platforms::default(), "the mac expired too");
}

#[test]
fn a_session_keeps_its_platform_when_later_events_name_no_device() {
    let p = presence_of(&[on("desktop", ev(EventKind::Connected, "a", NOW)), ev(EventKind::Heartbeat, "a", NOW + 9)]);
    let session = p.sessions[&SessionId::new("a").unwrap()];
    assert_eq!(
        (session.register, session.active_ms, session.platform),
        (Register::Connected(NOW + 9), Some(NOW), Some(Platform::Desktop))
    );
}

fn dnd_until(end: Option<Millis>) -> ManualStatus {
    ManualStatus { state: crate::domain::ManualState::Dnd, message: Some("focus".into()), expires_at_ms: end }
}

#[test]
fn the_manual_status_shows_until_just_before_its_expiry() {
    let r = rules();
    let mut s = UserState::default();
    s.apply(&ev(EventKind::Connected, "a", NOW));
    s.manual = Some(dnd_until(Some(NOW + 100)));
    assert_eq!(s.view_for(false, NOW + 99, &r).manual, Some(dnd_until(Some(NOW + 100))));
    assert_eq!(s.view_for(false, NOW + 100, &r).manual, None);
    assert_eq!(s.view_for(true, NOW + 100, &r).manual, None, "expired for the user too");
}

#[test]
fn the_manual_status_and_platforms_hide_with_offline_and_hidden_users() {
    let r = rules();
    let mut s = UserState::default();
    s.apply(&on("web", ev(EventKind::Connected, "a", NOW)));
    s.manual = Some(dnd_until(None));
    let seen = s.view_for(false, NOW, &r);
    assert_eq!((seen.manual.is_some(), seen.platforms.map(|p| p.web)), (true, Some(Some(Status::Online))));
    s.set_visible(false, NOW + 1);
    let other = s.view_for(false, NOW + 2, &r);
    assert_eq!((other.status, other.manual, other.platforms), (Status::Offline, None, None), "hidden: neither");
    let own = s.view_for(true, NOW + 2, &r);
    assert_eq!((own.status, own.manual.is_some(), own.platforms.is_some()), (Status::Online, true, true));
    s.set_visible(true, NOW + 3);
    s.apply(&ev(EventKind::Disconnected, "a", NOW + 4));
    let gone = s.view_for(false, NOW + 5, &r);
    assert_eq!((gone.status, gone.manual, gone.platforms), (Status::Offline, None, None), "offline: neither");
    assert_eq!(s.view_for(true, NOW + 5, &r).manual, Some(dnd_until(None)), "the user still sees their own");
}

#[test]
fn a_manual_change_is_announced_once_and_never_while_hidden() {
    let mut rec = UserRecord::default();
    rec.state.manual = Some(dnd_until(Some(NOW + 50)));
    let start = rec.announce_manual(NOW).unwrap();
    assert_eq!((start.from, start.to), (None, Some(dnd_until(Some(NOW + 50)))));
    assert_eq!(rec.announce_manual(NOW + 1), None, "a replay announces nothing");
    let expiry = rec.announce_manual(NOW + 50).unwrap();
    assert_eq!((expiry.to, expiry.at_ms), (None, NOW + 50));
    rec.state.set_visible(false, NOW + 60);
    rec.state.manual = Some(dnd_until(None));
    assert!(!rec.manual_announcement_owed(NOW + 61));
    assert_eq!(rec.announce_manual(NOW + 61), None, "hidden: nothing");
    rec.state.set_visible(true, NOW + 70);
    assert!(rec.manual_announcement_owed(NOW + 70));
    assert_eq!(rec.announce_manual(NOW + 70).map(|t| t.to), Some(Some(dnd_until(None))), "announced once shown");
}

proptest! {
    #[test]
    fn platform_statuses_never_exceed_the_users_status(events in prop::collection::vec(arb_event(), 1..16), at in 0..2_000_000i64) {
        // A platform is online only if the user is, and live only if the
        // user has a live session: the per-platform rule is §4's rule on a
        // subset of the sessions.
        let r = Rules::default();
        let p = presence_of(&events);
        let now = NOW + at;
        let view = p.derive(now, &r);
        for (_, status) in p.platforms(now, &r).live() {
            prop_assert!(view.device_count > 0);
            prop_assert!(status != Status::Online || view.status == Status::Online);
        }
    }
}

#[test]
fn after_an_erasure_only_events_stamped_later_are_admitted() {
    let record = UserRecord { erased_ms: Some(NOW), ..UserRecord::default() };
    assert!(!record.admits(&ev(EventKind::Activity, "a", NOW - 1)));
    assert!(!record.admits(&ev(EventKind::Activity, "a", NOW)), "stamped at the erasure: part of the erased history");
    assert!(record.admits(&ev(EventKind::Activity, "a", NOW + 1)));
    assert!(UserRecord::default().admits(&ev(EventKind::Activity, "a", 0)), "never erased: everything counts");
}

#[test]
fn an_erasure_announces_offline_and_the_manual_clear_only_what_was_announced_and_visible() {
    let dnd = ManualStatus::new(crate::domain::ManualState::Dnd, None, None, NOW).unwrap();
    let mut record =
        UserRecord { announced: Some(Status::Idle), announced_manual: Some(dnd.clone()), ..Default::default() };
    let (status, manual) = record.erasure_announcements(NOW);
    assert_eq!(status, Some(Transition { from: Status::Idle, to: Status::Offline, at_ms: NOW }));
    assert_eq!(manual, Some(ManualTransition { from: Some(dnd), to: None, at_ms: NOW }));

    record.state.set_visible(false, NOW - 5);
    record.announced = Some(Status::Offline);
    assert_eq!(record.erasure_announcements(NOW), (None, None), "hidden: offline already, manual never announced");
    assert_eq!(UserRecord::default().erasure_announcements(NOW), (None, None), "never seen: nothing to announce");
}

#[test]
fn the_erasure_watermark_covers_every_event_merged_even_one_stamped_ahead() {
    let mut record = UserRecord::default();
    assert_eq!(record.erasure_watermark(NOW), NOW, "nothing merged: the erasure's own time");
    record.state.apply(&on("web", ev(EventKind::Connected, "a", NOW - 10)));
    record.state.apply(&ev(EventKind::Heartbeat, "a", NOW + 4_000));
    assert_eq!(record.erasure_watermark(NOW), NOW + 4_000, "a heartbeat stamped ahead of the clock");
    let erased = UserRecord { erased_ms: Some(NOW + 9_000), ..UserRecord::default() };
    assert_eq!(erased.erasure_watermark(NOW), NOW + 9_000, "never moves back");
}
