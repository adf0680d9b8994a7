//! What the service announces on the bus (DESIGN §8), as it is kept in the
//! transactional outbox (DESIGN §6) until the bus accepts it.
//!
//! An announcement is made by exactly one winning write of a user's record,
//! so the pair (user, version) names it: `event_id` is built from that pair
//! and is the same on every delivery, however often a drain resends it.

use serde::Serialize;

use super::ids::{Millis, UserId};
use super::manual::{ManualStatus, ManualTransition};
use super::record::Transition;
use super::status::Status;

/// The contract's detail-type of a status change (DESIGN §8).
pub const STATUS_CHANGED: &str = "status_changed";

/// The detail-type of a manual status start, change, clear or expiry
/// (DESIGN §7.1, §8).
pub const MANUAL_STATUS_CHANGED: &str = "manual_status_changed";

/// One event waiting in the outbox: which write made it, and the exact
/// detail to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEvent {
    pub user: UserId,
    /// The version of the record whose write made the event; with `user`
    /// and `detail_type` it is the event's identity and its per-user order.
    pub version: u64,
    /// The EventBridge detail-type, e.g. `status_changed`.
    pub detail_type: String,
    /// The detail as JSON text, `event_id` included, published verbatim.
    pub detail: String,
}

/// The detail of `status_changed`: `{"user_id": 42, "from": "online", "to":
/// "idle", "at_ms": 1764270300000, "event_id": "42-17-status_changed"}`.
#[derive(Serialize)]
struct StatusChangedDetail<'a> {
    user_id: UserId,
    from: Status,
    to: Status,
    at_ms: Millis,
    event_id: &'a str,
}

/// The detail of `manual_status_changed`: `{"user_id": 42, "from": null,
/// "to": {"state": "dnd", "message": null, "expires_at_ms": null}, "at_ms":
/// 1764270300000, "event_id": "42-17-manual_status_changed"}`.
#[derive(Serialize)]
struct ManualStatusChangedDetail<'a> {
    user_id: UserId,
    from: Option<&'a ManualStatus>,
    to: Option<&'a ManualStatus>,
    at_ms: Millis,
    event_id: &'a str,
}

impl OutboxEvent {
    /// The stable id of the event made by `user`'s write of `version`:
    /// `{user}-{version}-{detail_type}`.
    pub fn event_id_of(user: UserId, version: u64, detail_type: &str) -> String {
        format!("{user}-{version}-{detail_type}")
    }

    /// The id consumers deduplicate on.
    pub fn event_id(&self) -> String {
        Self::event_id_of(self.user, self.version, &self.detail_type)
    }

    /// The `status_changed` event of a transition made by the write of
    /// `version`.
    pub fn status_changed(user: UserId, version: u64, transition: &Transition) -> Self {
        let event_id = Self::event_id_of(user, version, STATUS_CHANGED);
        let detail = StatusChangedDetail {
            user_id: user,
            from: transition.from,
            to: transition.to,
            at_ms: transition.at_ms,
            event_id: &event_id,
        };
        Self {
            user,
            version,
            detail_type: STATUS_CHANGED.to_owned(),
            // A struct of numbers and fixed strings always serializes.
            detail: serde_json::to_string(&detail).unwrap_or_default(),
        }
    }

    /// The `manual_status_changed` event of a manual status change made by
    /// the write of `version`. Its id differs from a `status_changed` of
    /// the same write by the detail-type.
    pub fn manual_status_changed(user: UserId, version: u64, change: &ManualTransition) -> Self {
        let event_id = Self::event_id_of(user, version, MANUAL_STATUS_CHANGED);
        let detail = ManualStatusChangedDetail {
            user_id: user,
            from: change.from.as_ref(),
            to: change.to.as_ref(),
            at_ms: change.at_ms,
            event_id: &event_id,
        };
        Self {
            user,
            version,
            detail_type: MANUAL_STATUS_CHANGED.to_owned(),
            // Strings, numbers and enums always serialize.
            detail: serde_json::to_string(&detail).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_change_carries_the_contract_detail_and_a_stable_event_id() {
        let user = UserId::new(42).unwrap();
        let t = Transition { from: Status::Online, to: Status::Idle, at_ms: 1_764_270_300_000 };
        let event = OutboxEvent::status_changed(user, 17, &t);
        let detail: serde_json::Value = serde_json::from_str(&event.detail).unwrap();
        assert_eq!(
            detail,
            serde_json::json!({"user_id": 42, "from": "online", "to": "idle", "at_ms": 1_764_270_300_000i64,
                "event_id": "42-17-status_changed"})
        );
        assert_eq!(event.event_id(), "42-17-status_changed");
        assert_eq!(OutboxEvent::status_changed(user, 17, &t), event, "the same write always makes the same event");
        assert_ne!(OutboxEvent::status_changed(user, 18, &t).event_id(), event.event_id());
    }

    #[test]
    fn a_manual_change_carries_the_contract_detail() {
        use crate::domain::ManualState;
        let user = UserId::new(42).unwrap();
        let dnd =
            ManualStatus { state: ManualState::Dnd, message: Some("in a meeting".into()), expires_at_ms: Some(9) };
        let start = ManualTransition { from: None, to: Some(dnd), at_ms: 5 };
        let event = OutboxEvent::manual_status_changed(user, 3, &start);
        let detail: serde_json::Value = serde_json::from_str(&event.detail).unwrap();
        assert_eq!(
            detail,
            serde_json::json!({"user_id": 42, "from": null,
                "to": {"state": "dnd", "message": "in a meeting", "expires_at_ms": 9},
                "at_ms": 5, "event_id": "42-3-manual_status_changed"})
        );
        assert_eq!(event.detail_type, MANUAL_STATUS_CHANGED);
        let t = Transition { from: Status::Offline, to: Status::Online, at_ms: 5 };
        assert_ne!(event.event_id(), OutboxEvent::status_changed(user, 3, &t).event_id(), "one write, two events");
    }
}
