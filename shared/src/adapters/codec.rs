//! The one encoding of a user record's parts shared by the Redis and SQL
//! adapters, so both stores hold byte-for-byte the same session registers
//! and manual status; and the text of the read model
//! ([`crate::domain::ReadModel`]) the hot read fetches.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::domain::ids::is_storable_instant;
use crate::domain::{
    AudienceDefault, AudienceRule, Connection, LastSeenRule, ListTag, ManualStatus, Millis, Platform, ReadModel,
    Session, SessionId, Visibility,
};

/// Sessions as compact JSON: `{"a1b2":{"c":1764270000000,"a":1764270000000,"p":"m"}}`
/// (`a` and `p` only when known; records written before they existed hold
/// `{"c": ts}` / `{"d": ts}` and read as sessions without them).
pub fn sessions_to_json(sessions: &BTreeMap<SessionId, Session>) -> String {
    // Serializing a map of strings to a two-variant enum cannot fail.
    serde_json::to_string(sessions).unwrap_or_else(|_| "{}".to_owned())
}

pub fn sessions_from_json(raw: &str) -> Result<BTreeMap<SessionId, Session>, String> {
    if raw.is_empty() {
        return Ok(BTreeMap::new());
    }
    serde_json::from_str(raw).map_err(|e| format!("sessions: {e}"))
}

/// A manual status as JSON, `{"state":"dnd","message":null,"expires_at_ms":null}`,
/// or `None` for none (a NULL column, an absent hash field).
pub fn manual_to_json(manual: Option<&ManualStatus>) -> Option<String> {
    // A struct of an enum, a string and a number always serializes.
    manual.and_then(|m| serde_json::to_string(m).ok())
}

pub fn manual_from_json(raw: Option<&str>) -> Result<Option<ManualStatus>, String> {
    raw.filter(|r| !r.is_empty())
        .map(|r| serde_json::from_str(r).map_err(|e| format!("manual status: {e}")))
        .transpose()
}

/// The first part of the summary text of a user without an audience
/// (DESIGN §13), unchanged since before audiences, so such a user's hot
/// read costs what it did. A reader that finds a format it does not know
/// (a later one) treats the summary as absent and reads the whole record.
const SUMMARY_FORMAT: &str = "1";
/// The first part of the summary text of a user with an audience: the
/// audience ([`audience_to_text`]) follows as the second part, then the
/// parts of format 1.
const SUMMARY_FORMAT_AUDIENCE: &str = "2";

/// An audience rule (DESIGN §13) as short ASCII text, or `None` for
/// [`AudienceRule::EVERYONE`] (a NULL column, an absent hash field):
/// `e` or `n` for the default, `w` (`"none"`) or `c` (`"coarse"`) for the
/// last seen, then `:tag` in decimal when anyone is listed. A user visible
/// to all but a few reads `ew:8811`; "nobody, coarse" reads `nc`.
pub fn audience_to_text(rule: &AudienceRule) -> Option<String> {
    if *rule == AudienceRule::EVERYONE {
        return None;
    }
    let default = match rule.default {
        AudienceDefault::Everyone => 'e',
        AudienceDefault::Nobody => 'n',
    };
    let last_seen = match rule.last_seen {
        LastSeenRule::Withheld => 'w',
        LastSeenRule::Coarse => 'c',
    };
    Some(match rule.list {
        Some(ListTag(tag)) => format!("{default}{last_seen}:{tag}"),
        None => format!("{default}{last_seen}"),
    })
}

/// Reads a text written by [`audience_to_text`]; `None` (or an empty text)
/// is [`AudienceRule::EVERYONE`]. `Err` says why it is not one; callers
/// then read [`AudienceRule::NOBODY`], failing closed.
pub fn audience_from_text(raw: Option<&str>) -> Result<AudienceRule, String> {
    match raw {
        None | Some("") => Ok(AudienceRule::EVERYONE),
        Some(text) => audience_from_bytes(text.as_bytes()),
    }
}

fn audience_from_bytes(raw: &[u8]) -> Result<AudienceRule, String> {
    let bad = || format!("audience {:?} is not one this release writes", String::from_utf8_lossy(raw));
    let (head, tag) = split_at_byte(raw, b':');
    let (default, last_seen) = match head {
        [d, l] => (*d, *l),
        _ => return Err(bad()),
    };
    let default = match default {
        b'e' => AudienceDefault::Everyone,
        b'n' => AudienceDefault::Nobody,
        _ => return Err(bad()),
    };
    let last_seen = match last_seen {
        b'w' => LastSeenRule::Withheld,
        b'c' => LastSeenRule::Coarse,
        _ => return Err(bad()),
    };
    let list = match tag {
        None => None,
        Some(digits) if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) => {
            Some(ListTag(std::str::from_utf8(digits).ok().and_then(|t| t.parse().ok()).ok_or_else(bad)?))
        }
        Some(_) => return Err(bad()),
    };
    Ok(AudienceRule { default, last_seen, list })
}

/// A read model as one short ASCII text (DESIGN §10's hot read), seven parts
/// split by `|`, integers in decimal, an absent value empty:
///
/// `1|last_active_ms|newest_tombstone_ms|written_ms|hidden|connections|manual`
///
/// - `hidden`: empty while visible, else `since_ms` or
///   `since_ms:last_active_ms`;
/// - `connections`: one `seen_ms[:active_ms][m|w|d]` per connected session
///   (activity when known, platform letter when known), split by `,`;
/// - `manual`: the manual status's JSON ([`manual_to_json`]) or empty; last,
///   so a `|` in its message needs no escaping.
///
/// A user online on a phone reads
/// `1|1764270000000||1764270000100||1764270000000:1764270000000m|`.
pub fn summary_to_text(summary: &ReadModel) -> String {
    let mut out = String::with_capacity(64 + 32 * summary.connections.len());
    match audience_to_text(&summary.audience) {
        None => out.push_str(SUMMARY_FORMAT),
        Some(audience) => {
            out.push_str(SUMMARY_FORMAT_AUDIENCE);
            out.push('|');
            out.push_str(&audience);
        }
    }
    // Writing to a String cannot fail.
    let _ = write!(out, "|{}|{}|{}|", Opt(summary.last_active_ms), Opt(summary.newest_tombstone), summary.written_ms);
    if let Visibility::Hidden { since_ms, last_active_ms } = summary.visibility {
        let _ = write!(out, "{since_ms}");
        if let Some(active) = last_active_ms {
            let _ = write!(out, ":{active}");
        }
    }
    out.push('|');
    for (i, connection) in summary.connections.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}", connection.seen_ms);
        if let Some(active) = connection.active_ms {
            let _ = write!(out, ":{active}");
        }
        if let Some(platform) = connection.platform {
            out.push(char::from(platform.letter()));
        }
    }
    out.push('|');
    if let Some(manual) = manual_to_json(summary.manual.as_ref()) {
        out.push_str(&manual);
    }
    out
}

/// Reads a text written by [`summary_to_text`]. `Err` says why it is not
/// one (another format, a damaged value); the caller then reads the whole
/// record.
pub fn summary_from_text(raw: &str) -> Result<ReadModel, String> {
    summary_from_bytes(raw.as_bytes())
}

/// [`summary_from_text`] straight from the bytes Redis answered: the hot
/// read parses one of these per user, so this walks the bytes once,
/// allocating nothing but the connections (and a manual status, if any).
pub fn summary_from_bytes(raw: &[u8]) -> Result<ReadModel, String> {
    let mut rest = raw;
    let mut next = |name: &str| -> Result<&[u8], String> {
        let end = rest.iter().position(|b| *b == b'|').ok_or_else(|| format!("summary has no part after {name}"))?;
        let (part, tail) = (&rest[..end], &rest[end + 1..]);
        rest = tail;
        Ok(part)
    };
    let format = next("format")?;
    let audience = if format == SUMMARY_FORMAT.as_bytes() {
        AudienceRule::EVERYONE
    } else if format == SUMMARY_FORMAT_AUDIENCE.as_bytes() {
        // Format 2 is written only for an audience other than everyone's.
        Some(audience_from_bytes(next("audience")?)?)
            .filter(|rule| *rule != AudienceRule::EVERYONE)
            .ok_or_else(|| "summary format 2 holds the default audience".to_owned())?
    } else {
        return Err(format!("summary format {:?} is not one this release reads", String::from_utf8_lossy(format)));
    };
    let last_active_ms = optional_instant(next("last_active")?)?;
    let newest_tombstone = optional_instant(next("tombstone")?)?;
    let written_ms = instant(next("written")?)?;
    let visibility = match next("hidden")? {
        [] => Visibility::Visible,
        hidden => {
            let (since, active) = split_at_byte(hidden, b':');
            Visibility::Hidden { since_ms: instant(since)?, last_active_ms: active.map(instant).transpose()? }
        }
    };
    let connections = match next("connections")? {
        [] => Vec::new(),
        list => list.split(|b| *b == b',').map(connection_from_bytes).collect::<Result<_, _>>()?,
    };
    let manual = match rest {
        [] => None,
        json => Some(serde_json::from_slice(json).map_err(|e| format!("manual status: {e}"))?),
    };
    Ok(ReadModel { last_active_ms, connections, newest_tombstone, visibility, manual, written_ms, audience })
}

/// `Some(n)` as `n`, `None` as nothing.
struct Opt(Option<Millis>);

impl std::fmt::Display for Opt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => Ok(()),
        }
    }
}

/// `(before, Some(after))` around the first `byte`, or `(raw, None)`.
fn split_at_byte(raw: &[u8], byte: u8) -> (&[u8], Option<&[u8]>) {
    match raw.iter().position(|b| *b == byte) {
        Some(at) => (&raw[..at], Some(&raw[at + 1..])),
        None => (raw, None),
    }
}

/// A decimal `i64` (optional `-`, then digits only), as `write!` prints it.
fn int(raw: &[u8]) -> Result<Millis, String> {
    let bad = || format!("summary value {:?} is not an integer", String::from_utf8_lossy(raw));
    let (negative, digits) = match raw {
        [b'-', digits @ ..] => (true, digits),
        digits => (false, digits),
    };
    if digits.is_empty() {
        return Err(bad());
    }
    // Accumulated below zero, so `i64::MIN` reads too.
    let mut value: i64 = 0;
    for byte in digits {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return Err(bad());
        }
        value = value.checked_mul(10).and_then(|v| v.checked_sub(i64::from(digit))).ok_or_else(bad)?;
    }
    if negative {
        Ok(value)
    } else {
        value.checked_neg().ok_or_else(bad)
    }
}

/// An [`int`] that is an instant the service stores (DESIGN §7): every
/// number in a summary is one, so anything else is a damaged summary.
fn instant(raw: &[u8]) -> Result<Millis, String> {
    let ms = int(raw)?;
    if is_storable_instant(ms) {
        Ok(ms)
    } else {
        Err(format!("summary instant {ms} is outside the instants the service stores"))
    }
}

fn optional_instant(raw: &[u8]) -> Result<Option<Millis>, String> {
    if raw.is_empty() {
        Ok(None)
    } else {
        instant(raw).map(Some)
    }
}

fn connection_from_bytes(raw: &[u8]) -> Result<Connection, String> {
    let (numbers, platform) = match raw.split_last() {
        Some((last, numbers)) => match Platform::of_letter(*last) {
            Some(platform) => (numbers, Some(platform)),
            None => (raw, None),
        },
        None => (raw, None),
    };
    let (seen, active) = split_at_byte(numbers, b':');
    Ok(Connection { seen_ms: instant(seen)?, active_ms: active.map(instant).transpose()?, platform })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ManualState, Platform, Register};

    #[test]
    fn sessions_round_trip_compactly() {
        let mut sessions = BTreeMap::new();
        sessions.insert(SessionId::new("a\"b").unwrap(), Session::from(Register::Connected(5)));
        sessions.insert(SessionId::new("z").unwrap(), Session::from(Register::Disconnected(7)));
        sessions.insert(
            SessionId::new("m").unwrap(),
            Session { register: Register::Connected(9), active_ms: Some(8), platform: Some(Platform::Mobile) },
        );
        let json = sessions_to_json(&sessions);
        assert_eq!(json, r#"{"a\"b":{"c":5},"m":{"c":9,"a":8,"p":"m"},"z":{"d":7}}"#);
        assert_eq!(sessions_from_json(&json).unwrap(), sessions);
        assert!(sessions_from_json(r#"{"":{"c":1}}"#).is_err(), "an empty session id is refused");
        assert!(sessions_from_json(r#"{"x":{"c":1,"d":2}}"#).is_err(), "one register kind per session");
        assert!(sessions_from_json(r#"{"x":{"a":1}}"#).is_err(), "a session without a register is refused");
    }

    #[test]
    fn sessions_stored_before_platforms_still_read() {
        let old = sessions_from_json(r#"{"a":{"c":1764270000000},"b":{"d":1764270000005}}"#).unwrap();
        assert_eq!(old[&SessionId::new("a").unwrap()], Session::from(Register::Connected(1_764_270_000_000)));
        assert_eq!(old[&SessionId::new("b").unwrap()].register, Register::Disconnected(1_764_270_000_005));
        assert!(old.values().all(|s| s.active_ms.is_none() && s.platform.is_none()));
    }

    #[test]
    fn a_manual_status_round_trips() {
        let m = ManualStatus { state: ManualState::Busy, message: Some("é \"q\"".into()), expires_at_ms: Some(3) };
        let json = manual_to_json(Some(&m));
        assert_eq!(json.as_deref(), Some(r#"{"state":"busy","message":"é \"q\"","expires_at_ms":3}"#));
        assert_eq!(manual_from_json(json.as_deref()).unwrap(), Some(m));
        assert_eq!(manual_from_json(None).unwrap(), None);
        assert!(manual_from_json(Some(r#"{"state":"gone"}"#)).is_err());
    }

    #[test]
    fn a_summary_reads_back_as_written() {
        let summary = ReadModel {
            last_active_ms: Some(1_764_270_000_000),
            connections: vec![
                Connection {
                    seen_ms: 1_764_270_000_100,
                    active_ms: Some(1_764_270_000_000),
                    platform: Some(Platform::Mobile),
                },
                Connection { seen_ms: 5, active_ms: None, platform: Some(Platform::Desktop) },
                Connection { seen_ms: 7, active_ms: Some(0), platform: None },
                Connection { seen_ms: 6, active_ms: None, platform: None },
            ],
            newest_tombstone: Some(3),
            visibility: Visibility::Hidden { since_ms: 10, last_active_ms: Some(9) },
            manual: Some(ManualStatus {
                state: ManualState::Away,
                message: Some("a|b:c,d".into()),
                expires_at_ms: None,
            }),
            written_ms: 11,
            audience: AudienceRule::EVERYONE,
        };
        let text = summary_to_text(&summary);
        assert_eq!(
            text,
            r#"1|1764270000000|3|11|10:9|1764270000100:1764270000000m,5d,7:0,6|{"state":"away","message":"a|b:c,d","expires_at_ms":null}"#
        );
        assert_eq!(summary_from_text(&text).unwrap(), summary);
        // An instant no store holds (DESIGN §7) is a damaged summary.
        assert!(summary_from_text("1|||0||-7:9|").is_err());
        assert!(summary_from_text("1|253402300800000||0|||").is_err());
        let empty = ReadModel::default();
        assert_eq!(summary_to_text(&empty), "1|||0|||");
        assert_eq!(summary_from_text("1|||0|||").unwrap(), empty);
        let hidden = ReadModel { visibility: Visibility::Hidden { since_ms: 4, last_active_ms: None }, ..empty };
        assert_eq!(summary_from_text(&summary_to_text(&hidden)).unwrap(), hidden);
    }

    #[test]
    fn an_audience_rule_round_trips_and_everyone_costs_nothing() {
        assert_eq!(audience_to_text(&AudienceRule::EVERYONE), None);
        for (rule, text) in [
            (AudienceRule { list: Some(ListTag(8811)), ..AudienceRule::EVERYONE }, "ew:8811"),
            (AudienceRule { last_seen: LastSeenRule::Coarse, ..AudienceRule::NOBODY }, "nc"),
            (AudienceRule { list: Some(ListTag(u64::MAX)), ..AudienceRule::NOBODY }, "nw:18446744073709551615"),
            (AudienceRule { last_seen: LastSeenRule::Coarse, ..AudienceRule::EVERYONE }, "ec"),
        ] {
            assert_eq!(audience_to_text(&rule).as_deref(), Some(text));
            assert_eq!(audience_from_text(Some(text)), Ok(rule));
            let summary = ReadModel { audience: rule, last_active_ms: Some(5), ..ReadModel::default() };
            let written = summary_to_text(&summary);
            assert_eq!(written, format!("2|{text}|5||0|||"));
            assert_eq!(summary_from_text(&written), Ok(summary));
        }
        assert_eq!(audience_from_text(None), Ok(AudienceRule::EVERYONE));
        for bad in ["x", "e", "eww", "ew:", "ew:-1", "ew:1x", "ew:18446744073709551616", "ne", "ew:1:2"] {
            assert!(audience_from_text(Some(bad)).is_err(), "{bad:?} was read");
        }
        for bad in ["2||5||0|||", "2|ew||5||0|||"] {
            assert!(summary_from_text(bad).is_err(), "{bad:?} was read");
        }
    }

    #[test]
    fn summary_integers_read_as_written_across_the_whole_range() {
        for n in [0, 1, -1, 9, 10, 1_764_270_000_000, i64::MAX, i64::MIN, i64::MIN + 1] {
            assert_eq!(int(n.to_string().as_bytes()), Ok(n), "{n}");
        }
        for bad in ["", "-", "+1", "1 ", " 1", "1.0", "0x1", "9223372036854775808", "-9223372036854775809", "１"] {
            assert!(int(bad.as_bytes()).is_err(), "{bad:?} was read");
        }
    }

    #[test]
    fn a_summary_of_another_format_or_damaged_is_refused() {
        for bad in
            ["", "2|||0|||", "1|||0||", "1|x||0|||", "1|||||||", "1|||0|1:|||", "1|||0||5x|", "1|||0||5:|", "1|||0|||{"]
        {
            assert!(summary_from_text(bad).is_err(), "{bad:?} was read");
        }
    }
}
