//! Load through Kafka, shared by `status-loadtest --kafka` and the
//! benchmark's `kafka_e2e`: a stream of presence events over a population
//! of users whose expected final state is known, and the check of what the
//! HTTP API answers against it (DESIGN §10: "0 lost").

use std::collections::HashMap;

use serde_json::Value;

use crate::kafka::produce::presence_value;

/// What a user's status must read once every event is applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// The last event was not a disconnect: `online` or `idle`, not `offline`.
    pub connected: bool,
    /// The newest `ts_ms` of a connect or activity (DESIGN §4).
    pub last_active_ms: Option<i64>,
    /// The user's latest `ts_ms`, so the next event is stamped later.
    pub last_ts_ms: i64,
}

/// Events for users `first_user .. first_user + users`, each user with one
/// session and a kind drawn per event, stamped with the producer's clock
/// but strictly rising per user, so the expected state never hangs on a
/// tie and no stamp runs ahead of the service's clock-skew limit.
pub struct LoadPlan {
    pub first_user: u64,
    pub users: u64,
    expected: HashMap<u64, Expected>,
}

/// The event kinds a plan draws from.
const KINDS: [&str; 4] = ["session_connected", "activity", "session_heartbeat", "session_disconnected"];

impl LoadPlan {
    /// A plan over users `first_user..first_user + users`.
    pub fn new(first_user: u64, users: u64) -> Self {
        Self { first_user, users: users.max(1), expected: HashMap::new() }
    }

    /// The next event at producer time `now_ms`: its user and its value.
    /// `draw` picks the user (mod the population) and the kind (mod 4).
    pub fn next(&mut self, draw: (u64, u32), now_ms: i64) -> (u64, Vec<u8>) {
        let user = self.first_user + draw.0 % self.users;
        let kind = KINDS[draw.1 as usize % KINDS.len()];
        let expected = self.expected.entry(user).or_default();
        let ts_ms = now_ms.max(expected.last_ts_ms + 1);
        expected.last_ts_ms = ts_ms;
        match kind {
            "session_disconnected" => expected.connected = false,
            "session_heartbeat" => expected.connected = true,
            _ => {
                expected.connected = true;
                expected.last_active_ms = Some(ts_ms);
            }
        }
        (user, presence_value(kind, user, "load", None, ts_ms))
    }

    /// The users that got at least one event.
    pub fn users_touched(&self) -> Vec<u64> {
        let mut users: Vec<u64> = self.expected.keys().copied().collect();
        users.sort_unstable();
        users
    }

    /// How many of `statuses` (entries of a bulk read's `statuses`) differ
    /// from what this plan expects; a user missing from them counts too.
    pub fn mismatches(&self, statuses: &[Value]) -> usize {
        let mut seen = 0;
        let mut wrong = 0;
        for entry in statuses {
            let Some(user) = entry["user_id"].as_u64() else { continue };
            let Some(expected) = self.expected.get(&user) else { continue };
            seen += 1;
            if !matches(expected, entry) {
                wrong += 1;
            }
        }
        wrong + self.expected.len().saturating_sub(seen)
    }

    /// Whether `entry` (one status of a read) is what `user` should show.
    pub fn is_applied(&self, user: u64, entry: &Value) -> bool {
        self.expected.get(&user).is_some_and(|e| matches(e, entry))
    }
}

fn matches(expected: &Expected, entry: &Value) -> bool {
    let status_ok = match entry["status"].as_str() {
        Some("offline") => !expected.connected,
        // A run longer than IDLE_AFTER may see its early users idle.
        Some("online" | "idle") => expected.connected,
        _ => false,
    };
    status_ok && entry["last_active_ms"].as_i64() == expected.last_active_ms
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_plan_expects_the_last_event_and_the_newest_activity() {
        let mut plan = LoadPlan::new(1000, 10);
        plan.next((3, 0), 500); // connect at 500
        plan.next((3, 3), 500); // disconnect, stamped 501: after the connect
        plan.next((4, 2), 400); // heartbeat: connected, never active
        assert_eq!(plan.users_touched(), vec![1003, 1004]);
        let good = [
            json!({"user_id": 1003, "status": "offline", "last_active_ms": 500}),
            json!({"user_id": 1004, "status": "online", "last_active_ms": null}),
        ];
        assert_eq!(plan.mismatches(&good), 0);
        let stale = [json!({"user_id": 1003, "status": "online", "last_active_ms": 500}), good[1].clone()];
        assert_eq!(plan.mismatches(&stale), 1);
        assert_eq!(plan.mismatches(&good[..1]), 1, "a user missing from the answer counts");
    }
}
