//! The `user_status` row codec: instants to and from `DATETIME(3)` within
//! the range every store holds (DESIGN §7), and a row read back column by
//! column so that one damaged column costs only what it held.
//!
//! A row is written only by this service, from values checked at the edge,
//! so a damaged one was made by hand or by a release with a bug (the zero
//! date an out-of-range expiry once stored). Such a row must fail nothing
//! beside it (DESIGN §6): it decodes to what can still be read, the damage
//! is reported, and the user's next write replaces the whole row, as the
//! store script replaces a damaged Redis hash.

use chrono::{DateTime, NaiveDateTime};

use crate::domain::ids::{is_storable_instant, MAX_INSTANT_MS};
use crate::domain::record::MAX_VERSION;
use crate::domain::{AudienceRule, Millis, Presence, Status, UserId, UserRecord, UserState, Visibility};
use crate::ports::StoreError;

use super::super::codec::{audience_from_text, manual_from_json, sessions_from_json};

/// Converts epoch milliseconds to the UTC `DATETIME(3)` value stored.
///
/// # Errors
/// [`StoreError::Unencodable`] for an instant outside `0..=`
/// [`MAX_INSTANT_MS`] (DESIGN §7): the driver would otherwise panic on a
/// year past 65535, or store a zero date for one past 9999. Values reach
/// here checked at the edge, so this is a guard, never a clamp.
pub fn to_datetime(ms: Millis) -> Result<NaiveDateTime, StoreError> {
    is_storable_instant(ms)
        .then(|| DateTime::from_timestamp_millis(ms).map(|d| d.naive_utc()))
        .flatten()
        .ok_or_else(|| StoreError::Unencodable(format!("instant {ms} ms is outside 0..={MAX_INSTANT_MS}")))
}

/// [`to_datetime`] of an optional instant (`None` stays SQL `NULL`).
pub fn to_optional_datetime(ms: Option<Millis>) -> Result<Option<NaiveDateTime>, StoreError> {
    ms.map(to_datetime).transpose()
}

/// Epoch milliseconds of a stored `DATETIME(3)`; `None` for one outside
/// the instants the service stores (a date before 1970, which no write of
/// this service makes).
pub fn from_datetime(dt: NaiveDateTime) -> Option<Millis> {
    Some(dt.and_utc().timestamp_millis()).filter(|ms| is_storable_instant(*ms))
}

/// One column as the driver read it: `Ok(None)` for SQL `NULL`, `Err`
/// with the driver's reason for a value it could not decode (a zero date
/// reads as "unexpected null", an impossible date as "invalid date").
pub type Column<T> = Result<Option<T>, String>;

/// A `user_status` row as read, each column decoded on its own so the
/// damage of one is not the loss of the row.
#[derive(Clone, Debug, PartialEq)]
pub struct RawRow {
    pub user_id: i64,
    pub version: u64,
    pub sessions: Column<String>,
    pub last_active_at: Column<NaiveDateTime>,
    pub visible: Column<bool>,
    pub updated_at: Column<NaiveDateTime>,
    pub hidden_at: Column<NaiveDateTime>,
    pub hidden_last_active_at: Column<NaiveDateTime>,
    pub announced: Column<String>,
    pub manual_status: Column<String>,
    pub manual_announced: Column<String>,
    pub audience: Column<String>,
}

/// A row decoded: the user, their record, and the columns that could not
/// be read and were replaced by what their absence means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedRow {
    pub user: UserId,
    pub record: UserRecord,
    /// Names of the damaged columns; empty for a sound row.
    pub damaged: Vec<&'static str>,
}

/// Decodes a row, salvaging what can be read (module docs).
///
/// Damaged columns read as absent: sessions as none, a time as unknown, an
/// announcement as never made (so the next write announces again, which
/// consumers deduplicate), a manual status as none; `updated_at` as the
/// newest instant the row still holds. A hidden row whose hide time is
/// damaged stays hidden, from its write time. A version above
/// [`MAX_VERSION`] reads as 0, as for a user never written: the next write
/// stores version 1 and replaces the row (the compare-and-set takes a
/// damaged version as replaceable), so no `version + 1` can overflow.
///
/// # Errors
/// [`StoreError::Corrupt`] only for a `user_id` outside the contract's
/// range: such a row belongs to no user anyone can ask for.
pub fn decode(raw: RawRow) -> Result<DecodedRow, StoreError> {
    let user = u64::try_from(raw.user_id)
        .ok()
        .and_then(|id| UserId::new(id).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("user_status.user_id {} out of range", raw.user_id)))?;
    let mut damaged = Vec::new();
    let version = if raw.version > MAX_VERSION {
        damaged.push("version");
        0
    } else {
        raw.version
    };
    let mut column = |name: &'static str, value: Column<String>| -> Option<String> {
        value.unwrap_or_else(|_| {
            damaged.push(name);
            None
        })
    };
    let sessions_text = column("sessions", raw.sessions);
    let announced_text = column("announced", raw.announced);
    let manual_text = column("manual_status", raw.manual_status);
    let announced_manual_text = column("manual_announced", raw.manual_announced);
    let audience_text = raw.audience.map_err(|_| ());

    let mut instant = |name: &'static str, value: Column<NaiveDateTime>| -> Option<Millis> {
        match value {
            Ok(None) => None,
            Ok(Some(dt)) => from_datetime(dt).or_else(|| {
                damaged.push(name);
                None
            }),
            Err(_) => {
                damaged.push(name);
                None
            }
        }
    };
    let last_active_ms = instant("last_active_at", raw.last_active_at);
    let updated_ms = instant("updated_at", raw.updated_at);
    let hidden_at = instant("hidden_at", raw.hidden_at);
    let hidden_last_active = instant("hidden_last_active_at", raw.hidden_last_active_at);

    let sessions = sessions_from_json(sessions_text.as_deref().unwrap_or("")).unwrap_or_else(|_| {
        damaged.push("sessions");
        Default::default()
    });
    let announced = announced_text.and_then(|s| {
        s.parse::<Status>().ok().or_else(|| {
            damaged.push("announced");
            None
        })
    });
    let mut manual_of = |name: &'static str, text: Option<String>| {
        manual_from_json(text.as_deref()).unwrap_or_else(|_| {
            damaged.push(name);
            None
        })
    };
    let manual = manual_of("manual_status", manual_text);
    let announced_manual = manual_of("manual_announced", announced_manual_text);
    let visible = raw.visible.unwrap_or_else(|_| {
        damaged.push("visible");
        // Unreadable: hidden, since showing a user who hid would leak.
        Some(false)
    });

    let presence = Presence { sessions, last_active_ms };
    let written_ms = updated_ms.unwrap_or_else(|| newest_instant(&presence));
    // A damaged audience fails closed (DESIGN §13): nobody but the user
    // sees them until their next audience is set.
    let audience =
        audience_text.and_then(|text| audience_from_text(text.as_deref()).map_err(drop)).unwrap_or_else(|()| {
            damaged.push("audience");
            AudienceRule::NOBODY
        });
    let mut state = UserState { presence, visibility: Visibility::Visible, manual, audience };
    match hidden_at {
        Some(since_ms) => state.visibility = Visibility::Hidden { since_ms, last_active_ms: hidden_last_active },
        // Hidden without the time (a row hidden by hand, or a damaged
        // time): hidden from its last write.
        None if visible != Some(true) => state.set_visible(false, written_ms),
        None => {}
    }
    damaged.dedup();
    Ok(DecodedRow {
        user,
        record: UserRecord { version, state, announced, written_ms, announced_manual, erased_ms: None },
        damaged,
    })
}

/// The newest instant `presence` holds (0 for none): the stand-in for a
/// damaged write time, since every write happened at or after the events
/// it merged, give or take the producers' clock skew.
fn newest_instant(presence: &Presence) -> Millis {
    let sessions = presence.sessions.values().flat_map(|s| [Some(s.register.ts()), s.active_ms]);
    sessions.chain([presence.last_active_ms]).flatten().max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    const NOW: Millis = 1_764_270_000_000;

    fn at(ms: Millis) -> NaiveDateTime {
        DateTime::from_timestamp_millis(ms).map(|d| d.naive_utc()).unwrap()
    }

    fn sound() -> RawRow {
        RawRow {
            user_id: 42,
            version: 7,
            sessions: Ok(Some(format!(r#"{{"s1":{{"c":{NOW},"a":{NOW},"p":"m"}}}}"#))),
            last_active_at: Ok(Some(at(NOW))),
            visible: Ok(Some(true)),
            updated_at: Ok(Some(at(NOW + 5))),
            hidden_at: Ok(None),
            hidden_last_active_at: Ok(None),
            announced: Ok(Some("online".into())),
            manual_status: Ok(Some(r#"{"state":"dnd","message":null,"expires_at_ms":null}"#.into())),
            manual_announced: Ok(None),
            audience: Ok(None),
        }
    }

    #[test]
    fn instants_convert_exactly_at_both_ends_of_the_range() {
        for ms in [0, 1, NOW, MAX_INSTANT_MS] {
            let dt = to_datetime(ms).unwrap();
            assert_eq!(from_datetime(dt), Some(ms));
        }
        assert_eq!(to_datetime(MAX_INSTANT_MS).unwrap().to_string(), "9999-12-31 23:59:59.999");
    }

    #[test]
    fn an_instant_past_the_range_is_an_error_not_a_panic_or_a_clamp() {
        for ms in [MAX_INSTANT_MS + 1, NOW * 1000, 3_000_000_000_000_000, i64::MAX, -1, i64::MIN] {
            assert!(matches!(to_datetime(ms), Err(StoreError::Unencodable(_))), "{ms}");
        }
        assert!(to_optional_datetime(None).unwrap().is_none());
        let before_epoch = NaiveDate::from_ymd_opt(1000, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap();
        assert_eq!(from_datetime(before_epoch), None);
    }

    #[test]
    fn a_sound_row_decodes_whole() {
        let row = decode(sound()).unwrap();
        assert!(row.damaged.is_empty(), "{:?}", row.damaged);
        assert_eq!(row.record.version, 7);
        assert_eq!(row.record.written_ms, NOW + 5);
        assert_eq!(row.record.state.presence.last_active_ms, Some(NOW));
        assert_eq!(row.record.announced, Some(Status::Online));
        assert!(row.record.state.manual.is_some());
    }

    #[test]
    fn each_damaged_column_costs_only_itself() {
        let zero_date = || Err("unexpected null".to_owned());
        let row = decode(RawRow { updated_at: zero_date(), ..sound() }).unwrap();
        assert_eq!(row.damaged, vec!["updated_at"]);
        assert_eq!(row.record.written_ms, NOW, "the newest instant the row still holds");
        assert_eq!(row.record.state.presence.sessions.len(), 1);

        let row = decode(RawRow { sessions: Ok(Some("{not json".into())), ..sound() }).unwrap();
        assert_eq!(row.damaged, vec!["sessions"]);
        assert!(row.record.state.presence.sessions.is_empty());
        assert_eq!(row.record.state.presence.last_active_ms, Some(NOW));

        let far = r#"{"state":"dnd","message":null,"expires_at_ms":3000000000000000}"#;
        let row = decode(RawRow { manual_status: Ok(Some(far.into())), ..sound() }).unwrap();
        assert_eq!(row.damaged, vec!["manual_status"]);
        assert_eq!(row.record.state.manual, None);

        let row =
            decode(RawRow { announced: Ok(Some("asleep".into())), last_active_at: zero_date(), ..sound() }).unwrap();
        assert_eq!(row.damaged, vec!["last_active_at", "announced"]);
        assert_eq!(row.record.announced, None);
    }

    #[test]
    fn a_hidden_row_with_a_damaged_hide_time_stays_hidden() {
        let row =
            decode(RawRow { visible: Ok(Some(false)), hidden_at: Err("unexpected null".into()), ..sound() }).unwrap();
        assert_eq!(row.damaged, vec!["hidden_at"]);
        assert!(!row.record.state.visibility.is_visible());
        let row = decode(RawRow { visible: Err("bad".into()), ..sound() }).unwrap();
        assert!(!row.record.state.visibility.is_visible(), "an unreadable flag hides");
    }

    #[test]
    fn a_damaged_audience_fails_closed() {
        let row = decode(RawRow { audience: Ok(Some("ew:9".into())), ..sound() }).unwrap();
        assert_eq!(row.record.state.audience.list.map(|t| t.0), Some(9));
        for damage in [Ok(Some("everyone".into())), Err("bad bytes".to_owned())] {
            let row = decode(RawRow { audience: damage, ..sound() }).unwrap();
            assert_eq!(row.damaged, vec!["audience"]);
            assert_eq!(row.record.state.audience, AudienceRule::NOBODY, "nobody but the user");
        }
        assert_eq!(decode(sound()).unwrap().record.state.audience, AudienceRule::EVERYONE);
    }

    #[test]
    fn a_version_past_the_bound_reads_as_never_written() {
        let row = decode(RawRow { version: u64::MAX, ..sound() }).unwrap();
        assert_eq!(row.damaged, vec!["version"]);
        assert_eq!(row.record.version, 0);
        assert_eq!(row.record.next_version(), Some(1));
        assert_eq!(row.record.state.presence.sessions.len(), 1, "the rest is salvaged");
        let row = decode(RawRow { version: MAX_VERSION, ..sound() }).unwrap();
        assert!(row.damaged.is_empty());
        assert_eq!((row.record.version, row.record.next_version()), (MAX_VERSION, None));
    }

    #[test]
    fn only_an_id_outside_the_contract_loses_the_row() {
        assert!(matches!(decode(RawRow { user_id: 0, ..sound() }), Err(StoreError::Corrupt(_))));
        assert!(matches!(decode(RawRow { user_id: -4, ..sound() }), Err(StoreError::Corrupt(_))));
    }
}
