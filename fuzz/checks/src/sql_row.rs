//! `sql_row`: a `user_status` row as the driver hands it over, column by
//! column, through the row decoder (DESIGN §5, §6, §7). A damaged column
//! costs only itself; whatever is read is in the stored range, and a row
//! written back from it reads back the same.

use chrono::{DateTime, NaiveDateTime};
use status_shared::adapters::codec::{audience_to_text, manual_to_json, sessions_to_json};
use status_shared::adapters::mysql::row::{decode, to_datetime, to_optional_datetime, Column, RawRow};
use status_shared::domain::ids::is_storable_instant;
use status_shared::domain::{Status, UserId, UserRecord, Visibility};

/// The columns [`decode`] may report damaged.
const COLUMNS: &[&str] = &[
    "sessions",
    "last_active_at",
    "visible",
    "updated_at",
    "hidden_at",
    "hidden_last_active_at",
    "announced",
    "manual_status",
    "manual_announced",
    "audience",
];

/// Reads `data` as a row (see [`raw_row`]) and decodes it. Panics when a
/// row in the id range is lost, a column is reported damaged twice or
/// under another name, a decoded instant is outside the stored range, or a
/// sound row written back from the record reads back otherwise.
pub fn check(data: &[u8]) {
    let Some(raw) = raw_row(data) else { return };
    let (user_id, version) = (raw.user_id, raw.version);
    let row = match decode(raw) {
        Ok(row) => row,
        Err(error) => {
            assert!(u64::try_from(user_id).ok().and_then(|id| UserId::new(id).ok()).is_none(), "{error}");
            return;
        }
    };
    assert_eq!(i64::try_from(row.user.get()).ok(), Some(user_id), "the row's user");
    assert_eq!(row.record.version, version, "the row's version");
    for (i, name) in row.damaged.iter().enumerate() {
        assert!(COLUMNS.contains(name), "damage in an unknown column {name}");
        assert!(!row.damaged[..i].contains(name), "{name} reported twice");
    }
    assert_instants(&row.record);

    let written = write_back(row.user, &row.record);
    let again = match decode(written) {
        Ok(again) => again,
        Err(error) => panic!("a row written back from {:?} does not read: {error}", row.record),
    };
    assert!(again.damaged.is_empty(), "a written row reads damaged: {:?}", again.damaged);
    assert_eq!(again.record, row.record, "a row written back reads otherwise");
}

/// Every instant a decoded record holds is one the stores hold (DESIGN §7).
fn assert_instants(record: &UserRecord) {
    let presence = &record.state.presence;
    let sessions = presence.sessions.values().flat_map(|s| [Some(s.register.ts()), s.active_ms]);
    let hidden = match record.state.visibility {
        Visibility::Visible => [None, None],
        Visibility::Hidden { since_ms, last_active_ms } => [Some(since_ms), last_active_ms],
    };
    let expiries = [&record.state.manual, &record.announced_manual].map(|m| m.as_ref().and_then(|m| m.expires_at_ms));
    let all = sessions.chain(hidden).chain(expiries).chain([presence.last_active_ms, Some(record.written_ms)]);
    for ms in all.flatten() {
        assert!(is_storable_instant(ms), "instant {ms} outside the stored range in {record:?}");
    }
}

/// The row the store writes for `record` (the columns `decode` reads), as
/// the driver would read it back.
fn write_back(user: UserId, record: &UserRecord) -> RawRow {
    let instant = |ms| to_datetime(ms).map(Some).map_err(|e| e.to_string());
    let optional = |ms| to_optional_datetime(ms).map_err(|e| e.to_string());
    let (hidden_at, hidden_last_active_at) = match record.state.visibility {
        Visibility::Visible => (Ok(None), Ok(None)),
        Visibility::Hidden { since_ms, last_active_ms } => (instant(since_ms), optional(last_active_ms)),
    };
    RawRow {
        user_id: user.as_i64(),
        version: record.version,
        sessions: Ok(Some(sessions_to_json(&record.state.presence.sessions))),
        last_active_at: optional(record.state.presence.last_active_ms),
        visible: Ok(Some(record.state.visibility.is_visible())),
        updated_at: instant(record.written_ms),
        hidden_at,
        hidden_last_active_at,
        announced: Ok(record.announced.map(Status::as_str).map(str::to_owned)),
        manual_status: Ok(manual_to_json(record.state.manual.as_ref())),
        manual_announced: Ok(manual_to_json(record.announced_manual.as_ref())),
        audience: Ok(audience_to_text(&record.state.audience)),
    }
}

/// A row from twelve lines, in [`RawRow`]'s column order: `user_id` and
/// `version` in decimal (`None` if not), then each column as `\N` for SQL
/// `NULL`, `!reason` for a value the driver could not decode, or the
/// value: text as is, a time as epoch ms or `YYYY-MM-DD hh:mm:ss[.fff]`
/// (one outside chrono's range is a driver error), a flag as `1` or `0`.
/// Missing lines are `NULL`; one final newline ends the last line.
pub fn raw_row(data: &[u8]) -> Option<RawRow> {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.strip_suffix('\n').unwrap_or(&text).splitn(12, '\n');
    let user_id = lines.next()?.trim().parse().ok()?;
    let version = lines.next()?.trim().parse().ok()?;
    let mut next = || column(lines.next());
    let sessions = next();
    let last_active_at = time(next());
    let visible = flag(next());
    let updated_at = time(next());
    let hidden_at = time(next());
    let hidden_last_active_at = time(next());
    Some(RawRow {
        user_id,
        version,
        sessions,
        last_active_at,
        visible,
        updated_at,
        hidden_at,
        hidden_last_active_at,
        announced: next(),
        manual_status: next(),
        manual_announced: next(),
        audience: next(),
    })
}

fn column(line: Option<&str>) -> Column<String> {
    match line {
        None | Some("\\N") => Ok(None),
        Some(line) => match line.strip_prefix('!') {
            Some(reason) => Err(reason.to_owned()),
            None => Ok(Some(line.to_owned())),
        },
    }
}

fn time(column: Column<String>) -> Column<NaiveDateTime> {
    let text = column?;
    let Some(text) = text else { return Ok(None) };
    let parsed = match text.parse::<i64>() {
        Ok(ms) => DateTime::from_timestamp_millis(ms).map(|d| d.naive_utc()),
        Err(_) => NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S%.f").ok(),
    };
    parsed.map(Some).ok_or_else(|| format!("invalid date {text:?}"))
}

fn flag(column: Column<String>) -> Column<bool> {
    match column?.as_deref() {
        None => Ok(None),
        Some("1") => Ok(Some(true)),
        Some("0") => Ok(Some(false)),
        Some(other) => Err(format!("not a flag: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_read_from_lines_as_documented() {
        let raw = raw_row(b"42\n7\n\\N\n1764270000000\n1\n!unexpected null\n1970-01-01 00:00:01.5\n").unwrap();
        assert_eq!((raw.user_id, raw.version, raw.sessions), (42, 7, Ok(None)));
        assert_eq!(raw.last_active_at.unwrap().map(|d| d.and_utc().timestamp_millis()), Some(1_764_270_000_000));
        assert_eq!(raw.visible, Ok(Some(true)));
        assert_eq!(raw.updated_at, Err("unexpected null".to_owned()));
        assert_eq!(raw.hidden_at.unwrap().map(|d| d.and_utc().timestamp_millis()), Some(1500));
        assert_eq!((raw.hidden_last_active_at, raw.manual_announced), (Ok(None), Ok(None)), "missing lines");
        assert!(raw_row(b"x\n1").is_none() && raw_row(b"1").is_none());
        let full = raw_row(b"1\n0\n\\N\n\\N\n\\N\n\\N\n\\N\n\\N\n\\N\n\\N\n{}\n").unwrap();
        assert_eq!(full.manual_announced, Ok(Some("{}".to_owned())), "the last line without its newline");
        assert!(time(Ok(Some(i64::MAX.to_string()))).is_err(), "outside chrono's range");
        assert!(flag(Ok(Some("yes".into()))).is_err());
    }
}
