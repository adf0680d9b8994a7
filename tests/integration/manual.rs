//! The manual status and the platforms of DESIGN §7.1 through the HTTP API
//! (`StatusApi::handle`) against real Redis, MariaDB and moto: exact expiry
//! on every read path (Redis hit and SQL fallback), the hidden, self and
//! offline views, per-platform idle at `IDLE_AFTER`, old stored sessions,
//! bad input, and `manual_status_changed` through the outbox.

use std::time::Duration;

use serde_json::{json, Value};
use status_api::handler::{AppApi, MAX_BODY_BYTES};
use status_api::request::{ApiRequest, Caller};
use status_shared::domain::{EventKind, Millis};
use status_tests::stack::{
    api_request as request, service_views, session_event as event, user, wall_clock_ms, Stack, StackOptions,
};

const T0: Millis = 1_764_270_000_000;

fn put_manual(id: u64, body: Value, caller: Caller) -> ApiRequest {
    request("PUT", &format!("/v1/users/{id}/manual-status"), body.to_string(), caller)
}

async fn view_as(api: &AppApi, id: u64, caller: Caller, now: Millis) -> Value {
    let r = api.handle(&request("GET", &format!("/v1/status/{id}"), "", caller), now).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

#[tokio::test]
async fn a_dnd_shows_one_ms_before_its_expiry_and_is_gone_at_it_on_every_path() {
    let stack = Stack::new().await;
    let api = stack.api();
    stack.committer.aggregate(&[event(EventKind::Connected, 1, "a", Some("ios"), T0)], T0).await.unwrap();
    let end = T0 + 60_000;
    let set = api
        .handle(
            &put_manual(1, json!({"state": "dnd", "message": "in a meeting", "expires_at_ms": end}), Caller::Service),
            T0,
        )
        .await;
    let dnd = json!({"state": "dnd", "message": "in a meeting", "expires_at_ms": end});
    assert_eq!((set.status, &set.body), (200, &json!({"user_id": 1, "manual": dnd})));

    for cold in [false, true] {
        if cold {
            // SQL fallback: the same answers from the durable copy.
            stack.env.flush_redis().await;
        }
        for entry in service_views(&api, 1, end - 1).await {
            assert_eq!(entry["manual"], dnd, "cold={cold}: shown one ms before the expiry: {entry}");
        }
        if cold {
            stack.env.flush_redis().await;
        }
        for entry in service_views(&api, 1, end).await {
            assert_eq!(entry["status"], "online");
            assert!(entry.get("manual").is_none(), "cold={cold}: gone at the expiry, no job run: {entry}");
        }
    }
}

#[tokio::test]
async fn hidden_offline_and_self_views_of_manual_status_and_platforms() {
    let stack = Stack::new().await;
    let api = stack.api();
    stack.committer.aggregate(&[event(EventKind::Connected, 2, "a", Some("web"), T0)], T0).await.unwrap();
    let set = api.handle(&put_manual(2, json!({"state": "busy"}), Caller::User(user(2))), T0).await;
    assert_eq!(set.status, 200, "the user may set their own");
    let busy = json!({"state": "busy", "message": null, "expires_at_ms": null});
    let seen = &service_views(&api, 2, T0 + 1).await[1];
    assert_eq!((&seen["manual"], &seen["platforms"]), (&busy, &json!({"web": "online"})));

    let hide = request("PUT", "/v1/users/2/visibility", json!({"visible": false}).to_string(), Caller::Service);
    assert_eq!(api.handle(&hide, T0 + 2).await.status, 200);
    for entry in service_views(&api, 2, T0 + 3).await {
        assert_eq!(entry["status"], "offline");
        assert!(entry.get("manual").is_none() && entry.get("platforms").is_none(), "hidden: {entry}");
    }
    let own = view_as(&api, 2, Caller::User(user(2)), T0 + 3).await;
    assert_eq!(
        (&own["status"], &own["manual"], &own["platforms"]),
        (&json!("online"), &busy, &json!({"web": "online"}))
    );

    let show = request("PUT", "/v1/users/2/visibility", json!({"visible": true}).to_string(), Caller::Service);
    assert_eq!(api.handle(&show, T0 + 4).await.status, 200);
    stack.committer.aggregate(&[event(EventKind::Disconnected, 2, "a", Some("web"), T0 + 5)], T0 + 5).await.unwrap();
    for entry in service_views(&api, 2, T0 + 6).await {
        assert_eq!(entry["status"], "offline");
        assert!(entry.get("manual").is_none() && entry.get("platforms").is_none(), "offline: {entry}");
    }
    // Another end user's read is limited per window; a fresh one reads once.
    let other = view_as(&api, 2, Caller::User(user(99)), T0 + 6).await;
    assert!(other.get("manual").is_none());
    // The user's own reads are limited per window: read their view through
    // the same read service the route uses.
    let own = stack.reader.read(&[user(2)], Some(user(2)), T0 + 6).await.unwrap().remove(0);
    assert_eq!(own.status.as_str(), "offline");
    assert_eq!(own.manual.map(|m| m.state.as_str()), Some("busy"), "the user always sees their own");
    assert!(own.platforms.is_none());
}

#[tokio::test]
async fn each_platform_turns_idle_one_ms_after_idle_after_from_redis_and_from_sql() {
    let stack = Stack::new().await;
    let api = stack.api();
    let idle_after = stack.env.rules.idle_after_ms;
    stack
        .committer
        .aggregate(
            &[
                event(EventKind::Connected, 3, "phone", Some("android"), T0),
                event(EventKind::Connected, 3, "laptop", Some("macos"), T0),
                event(EventKind::Activity, 3, "laptop", Some("macos"), T0 + 10),
                event(EventKind::Heartbeat, 3, "laptop", Some("macos"), T0 + 20),
            ],
            T0 + 20,
        )
        .await
        .unwrap();
    for cold in [false, true] {
        let cases = [
            (T0 + idle_after, json!({"mobile": "online", "desktop": "online"})),
            (T0 + idle_after + 1, json!({"mobile": "idle", "desktop": "online"})),
            (T0 + 10 + idle_after, json!({"mobile": "idle", "desktop": "online"})),
            (T0 + 10 + idle_after + 1, json!({"mobile": "idle", "desktop": "idle"})),
        ];
        for (now, want) in cases {
            if cold {
                stack.env.flush_redis().await;
            }
            for entry in service_views(&api, 3, now).await {
                assert_eq!(entry["platforms"], want, "cold={cold} at T0+{}: {entry}", now - T0);
            }
        }
    }
}

#[tokio::test]
async fn sessions_stored_before_platforms_existed_still_read_in_redis_and_sql() {
    let stack = Stack::new().await;
    let api = stack.api();
    stack.committer.aggregate(&[event(EventKind::Connected, 4, "a", Some("ios"), T0)], T0).await.unwrap();
    // Rewrite both copies as the previous release wrote them.
    let old = format!(r#"{{"a":{{"c":{T0}}},"b":{{"d":{}}}}}"#, T0 - 5);
    sqlx::query("UPDATE user_status SET sessions = ? WHERE user_id = 4")
        .bind(&old)
        .execute(&stack.env.pool)
        .await
        .unwrap();
    // That release wrote no read model (`sum`) either.
    let mut raw = stack.env.raw_redis().await;
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(stack.env.keys.status(user(4)))
        .arg("sessions")
        .arg(&old)
        .cmd("HDEL")
        .arg(stack.env.keys.status(user(4)))
        .arg("sum")
        .query_async(&mut raw)
        .await
        .unwrap();
    for cold in [false, true] {
        if cold {
            stack.env.flush_redis().await;
        }
        for entry in service_views(&api, 4, T0 + 1).await {
            assert_eq!((&entry["status"], &entry["last_active_ms"]), (&json!("online"), &json!(T0)), "cold={cold}");
            assert_eq!(entry["platforms"], json!({}), "a session of unknown platform is listed under none");
        }
    }
    // A later event merges into the old record and brings its platform.
    stack.committer.aggregate(&[event(EventKind::Activity, 4, "a", Some("ios"), T0 + 2)], T0 + 2).await.unwrap();
    assert_eq!(service_views(&api, 4, T0 + 3).await[0]["platforms"], json!({"mobile": "online"}));
}

#[tokio::test]
async fn bad_manual_status_requests_are_refused_in_the_error_shape_and_change_nothing() {
    let stack = Stack::new().await;
    let api = stack.api();
    stack.committer.aggregate(&[event(EventKind::Connected, 5, "a", None, T0)], T0).await.unwrap();
    let good =
        api.handle(&put_manual(5, json!({"state": "away", "message": "é".repeat(100)}), Caller::Service), T0).await;
    assert_eq!(good.status, 200, "100 two-byte characters are allowed: {}", good.body);
    let before = stack.durable(user(5)).await.unwrap();
    let huge = format!(r#"{{"state": "dnd", "pad": "{}"}}"#, "x".repeat(MAX_BODY_BYTES));
    let cases: Vec<(ApiRequest, u16, &str)> = vec![
        (put_manual(5, json!({"state": "asleep"}), Caller::Service), 400, "invalid_manual_status"),
        (
            put_manual(5, json!({"state": "dnd", "message": "é".repeat(101)}), Caller::Service),
            400,
            "invalid_manual_status",
        ),
        (put_manual(5, json!({"state": "dnd", "expires_at_ms": T0}), Caller::Service), 400, "invalid_manual_status"),
        (
            put_manual(5, json!({"state": "dnd", "expires_at_ms": T0 - 1}), Caller::Service),
            400,
            "invalid_manual_status",
        ),
        (put_manual(5, json!({"state": "dnd", "expires_at_ms": 1.5}), Caller::Service), 400, "invalid_manual_status"),
        (
            put_manual(5, json!({"state": "dnd", "expires_at_ms": "tomorrow"}), Caller::Service),
            400,
            "invalid_manual_status",
        ),
        (request("PUT", "/v1/users/5/manual-status", huge, Caller::Service), 413, "payload_too_large"),
        (put_manual(5, json!({"state": "dnd"}), Caller::User(user(6))), 403, "forbidden"),
        (request("DELETE", "/v1/users/5/manual-status", "", Caller::User(user(6))), 403, "forbidden"),
        (request("PUT", "/v1/users/5/manual-status", "{", Caller::Service), 400, "invalid_json"),
    ];
    for (req, status, code) in cases {
        let r = api.handle(&req, T0).await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (status, Some(code)), "{} {:?}", r.body, req.caller);
        assert!(r.body["error"]["message"].is_string());
    }
    assert_eq!(stack.durable(user(5)).await.unwrap(), before, "nothing changed");
    assert_eq!(stack.cached(user(5)).await.unwrap(), before, "nothing changed in Redis either");
    let cleared = api.handle(&request("DELETE", "/v1/users/5/manual-status", "", Caller::User(user(5))), T0 + 1).await;
    assert_eq!((cleared.status, &cleared.body), (200, &json!({"user_id": 5, "manual": null})));
    let again = api.handle(&request("DELETE", "/v1/users/5/manual-status", "", Caller::User(user(5))), T0 + 2).await;
    assert_eq!(again.status, 200, "idempotent");
    assert!(stack.durable(user(5)).await.unwrap().state.manual.is_none());
}

#[tokio::test]
async fn manual_status_changed_is_published_once_per_start_change_clear_and_expiry_never_while_hidden() {
    let mut stack = Stack::with(StackOptions { events: true, ..Default::default() }).await;
    let sink = stack.sink.take().expect("a bus and queue");
    let api = stack.api();
    let t0 = wall_clock_ms();
    stack.committer.aggregate(&[event(EventKind::Connected, 7, "a", Some("web"), t0)], t0).await.unwrap();
    let me = Caller::User(user(7));
    let end = t0 + 50;
    let steps = [
        put_manual(7, json!({"state": "dnd"}), me),
        put_manual(7, json!({"state": "dnd"}), me), // a replay: nothing new
        put_manual(7, json!({"state": "busy", "message": "call"}), me),
        request("DELETE", "/v1/users/7/manual-status", "", me),
        request("DELETE", "/v1/users/7/manual-status", "", me), // nothing to clear
        put_manual(7, json!({"state": "away", "expires_at_ms": end}), me),
    ];
    for (i, step) in steps.iter().enumerate() {
        let r = api.handle(step, t0 + 1 + i as Millis).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // The expiry is announced by the scan of the user's shard at its due time.
    let shard = user(7).shard(stack.env.shards);
    stack.committer.scan_shard(shard, end).await.unwrap();
    // While hidden, a change is not announced.
    let hide = request("PUT", "/v1/users/7/visibility", json!({"visible": false}).to_string(), me);
    assert_eq!(api.handle(&hide, end + 1).await.status, 200);
    assert_eq!(api.handle(&put_manual(7, json!({"state": "dnd"}), me), end + 2).await.status, 200);

    let received = sink.drain(6, Duration::from_secs(30)).await;
    let manual: Vec<&Value> = received
        .iter()
        .filter(|d| d["event_id"].as_str().is_some_and(|id| id.ends_with("-manual_status_changed")))
        .collect();
    let path: Vec<(Value, Value)> =
        manual.iter().map(|d| (d["from"]["state"].clone(), d["to"]["state"].clone())).collect();
    assert_eq!(
        path,
        vec![
            (Value::Null, json!("dnd")),
            (json!("dnd"), json!("busy")),
            (json!("busy"), Value::Null),
            (Value::Null, json!("away")),
            (json!("away"), Value::Null),
        ],
        "start, change, clear, start, expiry; none while hidden: {received:?}"
    );
    assert_eq!(manual[4]["at_ms"], json!(end), "the expiry is announced at the scan of its due time");
    assert_eq!(manual[2]["to"], Value::Null);
    let mut ids: Vec<&str> = manual.iter().map(|d| d["event_id"].as_str().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 5, "each once");
}
