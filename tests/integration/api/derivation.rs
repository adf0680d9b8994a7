//! Derivation at read time (DESIGN §4): readers derive idle and offline at their own `now`.

use super::*;

#[tokio::test]
async fn an_online_user_reads_idle_one_millisecond_after_idle_after_without_any_scanner() {
    let stack = Stack::new().await;
    let api = api(&stack);
    let idle_after = stack.env.rules.idle_after_ms;
    write(&stack, &[connected(30, "a", T0)], T0).await;

    for cold in [false, true] {
        if cold {
            stack.env.flush_redis().await;
        }
        let at_edge = T0 + idle_after;
        let past = at_edge + 1;
        assert_eq!(entry(&ok(&api, &single(30, Caller::Service), at_edge).await), reads(30, "online", Some(T0)));
        assert_eq!(entry(&ok(&api, &single(30, Caller::Service), past).await), reads(30, "idle", Some(T0)));
        assert_eq!(entries(&ok(&api, &bulk(&[30], Caller::Service), past).await), vec![reads(30, "idle", Some(T0))]);
        assert_eq!(entry(&ok(&api, &public(30, Caller::Service), past).await), reads(30, "idle", Some(T0)));
    }
    // Nobody rewrote the stored status: the reader derived `idle` itself.
    assert_eq!(stack.redis_status(id(30)).await.as_deref(), Some("online"));
    assert_eq!(stack.sql_status(id(30)).await.as_deref(), Some("online"));
}

#[tokio::test]
async fn sessions_not_heard_from_for_longer_than_session_ttl_read_offline() {
    let stack = Stack::new().await;
    let api = api(&stack);
    let ttl = stack.env.rules.session_ttl_ms;
    let last_heard = T0 + 60_000;
    write(&stack, &[connected(31, "a", T0), heartbeat(31, "a", last_heard)], last_heard).await;

    for cold in [false, true] {
        if cold {
            stack.env.flush_redis().await;
        }
        // Still connected, but long inactive.
        let body = ok(&api, &bulk(&[31], Caller::Service), last_heard + ttl).await;
        assert_eq!(entries(&body), vec![reads(31, "idle", Some(T0))]);
        // Gone: a crashed presence node cannot pin the user forever. The
        // last activity stays their "last seen".
        let body = ok(&api, &bulk(&[31], Caller::Service), last_heard + ttl + 1).await;
        assert_eq!(entries(&body), vec![reads(31, "offline", Some(T0))]);
    }
}
