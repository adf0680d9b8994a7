//! Cache headers: the public route is cached at the edge, the others are not.

use super::*;

#[tokio::test]
async fn only_the_public_route_is_cacheable_by_the_cdn() {
    let stack = Stack::new().await;
    let api = api(&stack);
    write(&stack, &[connected(90, "a", T0)], T0).await;

    let response = api.handle(&public(90, Caller::Service), T0).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("cache-control"), Some("public, max-age=30"));
    // As the function returns it to API Gateway and to the local Invoke API.
    assert_eq!(response.into_apigw_json()["headers"]["cache-control"], "public, max-age=30");

    for request in [
        single(90, Caller::Service),
        bulk(&[90], Caller::Service),
        set_visible(90, true, Caller::Service),
        public(0, Caller::Service),
        request("GET", "/v1/nothing", "", Caller::Service),
    ] {
        let response = api.handle(&request, T0).await;
        let cache_control = response.header("cache-control").unwrap_or("").to_ascii_lowercase();
        assert!(
            !cache_control.contains("public") && !cache_control.contains("max-age"),
            "{} {} ({}) sent cache-control {cache_control:?}",
            request.method,
            request.path,
            response.status
        );
    }
}
