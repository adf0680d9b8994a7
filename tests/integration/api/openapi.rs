//! `openapi.yaml` checked against the handler: every route, status, header and field it documents.

use super::*;
use status_tests::schema::{conforms, resolve};

/// A header value as the JSON its schema describes.
fn header_value(doc: &Value, schema: &Value, raw: &str) -> Value {
    match resolve(doc, schema).get("type").and_then(Value::as_str) {
        Some("integer") => raw.parse::<i64>().map_or_else(|_| Value::String(raw.to_owned()), Value::from),
        _ => Value::String(raw.to_owned()),
    }
}

/// Checks `response` against the documented response object `documented`:
/// its headers are sent and fit, its JSON body fits, and an error's code is
/// one of the documented examples.
fn check_documented(doc: &Value, documented: &Value, response: &ApiResponse, what: &str) {
    let documented = resolve(doc, documented);
    for (name, header) in documented.get("headers").and_then(Value::as_object).into_iter().flatten() {
        let header = resolve(doc, header);
        let raw = response.header(name).unwrap_or_else(|| panic!("{what}: documented header {name} not sent"));
        let schema = header.get("schema").expect("a header schema");
        conforms(doc, schema, &header_value(doc, schema, raw), &format!("{what} header {name}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // Headers a client must act on are documented wherever they are sent.
    let names: Vec<String> = documented
        .get("headers")
        .and_then(Value::as_object)
        .map(|h| h.keys().map(|k| k.to_ascii_lowercase()).collect())
        .unwrap_or_default();
    let must_document: &[&str] =
        if matches!(response.status, 200 | 204) { &["cache-control"] } else { &["retry-after", "allow"] };
    for name in must_document {
        if response.header(name).is_some() {
            assert!(names.iter().any(|n| n == name), "{what}: sends {name} but does not document it");
        }
    }
    if response.status == 204 {
        assert!(documented.get("content").is_none(), "{what}: a 204 documents no body");
        assert_eq!(response.body, Value::Null, "{what}: a 204 sends no body");
        return;
    }
    let content = documented.pointer("/content/application~1json").unwrap_or_else(|| panic!("{what}: no JSON body"));
    let schema = content.get("schema").unwrap_or_else(|| panic!("{what}: no schema"));
    conforms(doc, schema, &response.body, what).unwrap_or_else(|e| panic!("{e} in {}", response.body));
    if let Some(examples) = content.get("examples").and_then(Value::as_object) {
        let codes: Vec<&Value> = examples.values().map(|e| &resolve(doc, e)["value"]["error"]["code"]).collect();
        assert!(
            codes.contains(&&response.body["error"]["code"]),
            "{what}: code {} is not among {codes:?}",
            response.body
        );
    }
}

/// One request through the handler and the status it must get.
struct Probe {
    method: &'static str,
    route: &'static str,
    status: u16,
    request: ApiRequest,
    /// Sent once first: what takes an end user's polling window.
    first: Option<ApiRequest>,
    /// Send to the API with neither Redis nor the database.
    down: bool,
}

fn probe(method: &'static str, route: &'static str, status: u16, request: ApiRequest) -> Probe {
    Probe { method, route, status, request, first: None, down: false }
}

#[tokio::test]
async fn openapi_yaml_documents_exactly_the_routes_statuses_and_fields_the_handler_answers() {
    let doc: Value = serde_yaml::from_str(include_str!("../../../openapi.yaml")).expect("openapi.yaml is YAML");
    let version = doc["openapi"].as_str().expect("an openapi version");
    assert!(version.starts_with("3.0.") || version.starts_with("3.1."), "OpenAPI {version}");

    // Exactly the contract's routes.
    let methods = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];
    let mut operations: BTreeMap<(String, String), &Value> = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            if methods.contains(&method.as_str()) {
                operations.insert((method.to_uppercase(), path.clone()), operation);
            }
        }
    }
    let routes: BTreeSet<(String, String)> = operations.keys().cloned().collect();
    let contract: BTreeSet<(String, String)> = [
        ("POST", "/v1/status/bulk"),
        ("GET", "/v1/status/{user_id}"),
        ("GET", "/v1/public/status/{user_id}"),
        ("PUT", "/v1/users/{user_id}/visibility"),
        ("PUT", "/v1/users/{user_id}/manual-status"),
        ("DELETE", "/v1/users/{user_id}/manual-status"),
        ("DELETE", "/v1/users/{user_id}"),
        ("PUT", "/v1/users/{user_id}/audience"),
        ("GET", "/v1/users/{user_id}/audience"),
    ]
    .iter()
    .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
    .collect();
    assert_eq!(routes, contract);

    // The two security schemes, and who may call what.
    let schemes = doc.pointer("/components/securitySchemes").and_then(Value::as_object).expect("security schemes");
    assert_eq!(schemes.len(), 2, "{schemes:?}");
    let jwt = schemes
        .iter()
        .find(|(_, s)| s["type"] == "http" && s["scheme"] == "bearer" && s["bearerFormat"] == "JWT")
        .map(|(name, _)| name.clone())
        .expect("a JWT bearer scheme for end users");
    let sigv4 = schemes
        .iter()
        .find(|(_, s)| s["x-amazon-apigateway-authtype"] == "awsSigv4")
        .map(|(name, _)| name.clone())
        .expect("an AWS SigV4 (IAM) scheme for services");
    for ((method, path), operation) in &operations {
        let names: BTreeSet<&str> = operation["security"]
            .as_array()
            .unwrap_or_else(|| panic!("{method} {path} states its security"))
            .iter()
            .flat_map(|requirement| requirement.as_object().expect("a requirement").keys().map(String::as_str))
            .collect();
        let want: BTreeSet<&str> = if path.starts_with("/v1/public/") {
            BTreeSet::new()
        } else if (method.as_str(), path.as_str()) == ("DELETE", "/v1/users/{user_id}") {
            // Erasure is for service callers only (DESIGN §7.1).
            BTreeSet::from([sigv4.as_str()])
        } else {
            BTreeSet::from([jwt.as_str(), sigv4.as_str()])
        };
        assert_eq!(names, want, "{method} {path} security");
    }

    // Every status each route can answer, provoked through the handler.
    let stack = Stack::new().await;
    let api = api(&stack);
    let down = api_with_nothing_up(&stack).await;
    write(&stack, &[connected(90, "a", T0)], T0).await;
    let (bulk_route, single_route, public_route, visibility_route) =
        ("/v1/status/bulk", "/v1/status/{user_id}", "/v1/public/status/{user_id}", "/v1/users/{user_id}/visibility");
    let oversized = "x".repeat(MAX_BODY_BYTES + 1);
    let oversized_manual = oversized.clone();
    let manual_route = "/v1/users/{user_id}/manual-status";
    let erase_route = "/v1/users/{user_id}";
    let manual = |id: u64, body: &str, caller: Caller| {
        request("PUT", &format!("/v1/users/{id}/manual-status"), body.to_owned(), caller)
    };
    let clear_manual = |path: &str, caller: Caller| request("DELETE", path, "", caller);
    let audience_route = "/v1/users/{user_id}/audience";
    let set_audience = |id: u64, body: &str, caller: Caller| {
        request("PUT", &format!("/v1/users/{id}/audience"), body.to_owned(), caller)
    };
    let get_audience = |path: &str, caller: Caller| request("GET", path, "", caller);
    let oversized_audience = oversized.clone();
    let probes = vec![
        probe("POST", bulk_route, 200, bulk(&[90, 91], Caller::Service)),
        probe("POST", bulk_route, 400, request("POST", "/v1/status/bulk", r#"{"user_ids": []}"#, Caller::Service)),
        probe("POST", bulk_route, 401, bulk(&[90], Caller::BadSubject)),
        probe("POST", bulk_route, 413, request("POST", "/v1/status/bulk", oversized.clone(), Caller::Service)),
        Probe { first: Some(bulk(&[90], me(92))), ..probe("POST", bulk_route, 429, bulk(&[90], me(92))) },
        Probe { down: true, ..probe("POST", bulk_route, 503, bulk(&[90], Caller::Service)) },
        probe("GET", single_route, 200, single(90, me(93))),
        probe("GET", single_route, 400, single_path("/v1/status/abc")),
        probe("GET", single_route, 401, single(90, Caller::BadSubject)),
        Probe { first: Some(single(90, me(94))), ..probe("GET", single_route, 429, single(91, me(94))) },
        Probe { down: true, ..probe("GET", single_route, 503, single(90, Caller::Service)) },
        probe("GET", public_route, 200, public(90, me(95))),
        probe("GET", public_route, 400, single_path("/v1/public/status/0")),
        Probe { down: true, ..probe("GET", public_route, 503, public(90, Caller::Service)) },
        probe("PUT", visibility_route, 200, set_visible(96, false, me(96))),
        probe("PUT", visibility_route, 400, request("PUT", "/v1/users/96/visibility", "{}", me(96))),
        probe("PUT", visibility_route, 401, set_visible(96, false, Caller::BadSubject)),
        probe("PUT", visibility_route, 403, set_visible(96, false, me(97))),
        probe("PUT", visibility_route, 413, request("PUT", "/v1/users/96/visibility", oversized.clone(), me(96))),
        Probe { down: true, ..probe("PUT", visibility_route, 503, set_visible(96, true, me(96))) },
        probe("PUT", manual_route, 200, manual(98, r#"{"state": "dnd", "message": "focus"}"#, me(98))),
        probe("PUT", manual_route, 400, manual(98, r#"{"state": "asleep"}"#, me(98))),
        probe("PUT", manual_route, 401, manual(98, r#"{"state": "dnd"}"#, Caller::BadSubject)),
        probe("PUT", manual_route, 403, manual(98, r#"{"state": "dnd"}"#, me(97))),
        probe("PUT", manual_route, 413, request("PUT", "/v1/users/98/manual-status", oversized_manual, me(98))),
        Probe { down: true, ..probe("PUT", manual_route, 503, manual(98, r#"{"state": "dnd"}"#, me(98))) },
        probe("DELETE", manual_route, 200, clear_manual("/v1/users/98/manual-status", me(98))),
        probe("DELETE", manual_route, 400, clear_manual("/v1/users/abc/manual-status", Caller::Service)),
        probe("DELETE", manual_route, 401, clear_manual("/v1/users/98/manual-status", Caller::BadSubject)),
        probe("DELETE", manual_route, 403, clear_manual("/v1/users/98/manual-status", me(97))),
        Probe { down: true, ..probe("DELETE", manual_route, 503, clear_manual("/v1/users/98/manual-status", me(98))) },
        probe("DELETE", erase_route, 204, clear_manual("/v1/users/99", Caller::Service)),
        probe("DELETE", erase_route, 400, clear_manual("/v1/users/0", Caller::Service)),
        probe("DELETE", erase_route, 401, clear_manual("/v1/users/99", Caller::BadSubject)),
        probe("DELETE", erase_route, 403, clear_manual("/v1/users/99", me(99))),
        Probe { down: true, ..probe("DELETE", erase_route, 503, clear_manual("/v1/users/99", Caller::Service)) },
        probe("PUT", audience_route, 200, set_audience(89, r#"{"default": "nobody", "except": [2, 1]}"#, me(89))),
        probe("PUT", audience_route, 400, set_audience(89, r#"{"default": "friends"}"#, me(89))),
        probe("PUT", audience_route, 401, set_audience(89, r#"{"default": "nobody"}"#, Caller::BadSubject)),
        probe("PUT", audience_route, 403, set_audience(89, r#"{"default": "nobody"}"#, me(97))),
        probe("PUT", audience_route, 413, request("PUT", "/v1/users/89/audience", oversized_audience, me(89))),
        Probe { down: true, ..probe("PUT", audience_route, 503, set_audience(89, r#"{"default": "nobody"}"#, me(89))) },
        probe("GET", audience_route, 200, get_audience("/v1/users/89/audience", me(89))),
        probe("GET", audience_route, 400, get_audience("/v1/users/abc/audience", Caller::Service)),
        probe("GET", audience_route, 401, get_audience("/v1/users/89/audience", Caller::BadSubject)),
        probe("GET", audience_route, 403, get_audience("/v1/users/89/audience", me(97))),
        Probe { down: true, ..probe("GET", audience_route, 503, get_audience("/v1/users/89/audience", me(89))) },
    ];
    let mut provoked: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for p in &probes {
        let target = if p.down { &down } else { &api };
        if let Some(first) = &p.first {
            ok(target, first, T0).await;
        }
        let response = target.handle(&p.request, T0).await;
        let what = format!("{} {} -> {}", p.method, p.route, p.status);
        assert_eq!(response.status, p.status, "{what}: the handler answered {}", response.body);
        let operation = operations[&(p.method.to_owned(), p.route.to_owned())];
        let documented = operation["responses"]
            .get(p.status.to_string())
            .unwrap_or_else(|| panic!("{what}: the handler answers it but openapi.yaml does not document it"));
        check_documented(&doc, documented, &response, &what);
        if p.status == 200 {
            if let Some(body_schema) = operation.pointer("/requestBody/content/application~1json/schema") {
                let sent: Value = serde_json::from_slice(&p.request.body).expect("a JSON request");
                conforms(&doc, body_schema, &sent, &format!("{what} request")).unwrap_or_else(|e| panic!("{e}"));
            }
        } else if p.status == 400 {
            if let Some(body_schema) = operation.pointer("/requestBody/content/application~1json/schema") {
                let sent: Value = serde_json::from_slice(&p.request.body).expect("a JSON request");
                assert!(
                    conforms(&doc, body_schema, &sent, "refused").is_err(),
                    "{what}: the schema allows the refused body"
                );
            }
        }
        provoked.entry((p.method.to_owned(), p.route.to_owned())).or_default().insert(p.status.to_string());
    }
    for (key, operation) in &operations {
        let documented: BTreeSet<String> =
            operation["responses"].as_object().expect("responses").keys().cloned().collect();
        assert_eq!(provoked.get(key), Some(&documented), "{key:?}: documented statuses vs the handler's");
    }

    // Answers on no route: documented once, under components.
    let not_found = api.handle(&request("GET", "/v1/nothing", "", Caller::Service), T0).await;
    assert_eq!(not_found.status, 404);
    check_documented(&doc, &doc["components"]["responses"]["NotFound"], &not_found, "404");
    let wrong_method = api.handle(&request("DELETE", "/v1/status/90", "", Caller::Service), T0).await;
    assert_eq!(wrong_method.status, 405);
    check_documented(&doc, &doc["components"]["responses"]["MethodNotAllowed"], &wrong_method, "405");
}

fn single_path(path: &str) -> ApiRequest {
    request("GET", path, "", Caller::Service)
}

/// A request body's example is what a caller copies first, so each must be
/// accepted as it stands, today: read with the wall clock rather than `T0`,
/// since an example whose `expires_at_ms` the clock has passed is refused
/// in real use (schemathesis sends every example too).
#[tokio::test]
async fn every_request_example_in_openapi_yaml_is_accepted_now() {
    let doc: Value = serde_yaml::from_str(include_str!("../../../openapi.yaml")).expect("openapi.yaml is YAML");
    let stack = Stack::new().await;
    let api = api(&stack);
    let mut sent = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            let Some(schema) = operation.pointer("/requestBody/content/application~1json/schema") else { continue };
            let schema = resolve(&doc, schema);
            let what = format!("{} {path} example", method.to_uppercase());
            let example = schema.get("example").unwrap_or_else(|| panic!("{what}: every request schema has one"));
            conforms(&doc, schema, example, &what).unwrap_or_else(|e| panic!("{e}"));
            let concrete = path.replace("{user_id}", "1");
            let body = serde_json::to_vec(example).expect("JSON");
            let response =
                api.handle(&request(&method.to_uppercase(), &concrete, body, Caller::Service), now_ms()).await;
            assert_eq!(response.status, 200, "{what}: answered {}", response.body);
            check_documented(&doc, &operation["responses"]["200"], &response, &what);
            sent += 1;
        }
    }
    // Bulk, visibility, manual status and audience take a body.
    assert_eq!(sent, 4);
}

/// A hide must never be acknowledged while Redis could still serve the old,
/// visible copy: readers trust a Redis hit (property 4 allows no window).
#[tokio::test]
async fn a_hide_saved_while_redis_stalls_never_leaks_once_redis_answers_again() {
    let redis = PrivateRedis::start().await;
    let stack = Stack::over(&redis).await;
    let api = api(&stack);
    write(&stack, &[connected(88, "a", T0)], T0).await;
    redis.pause();
    let hidden = api.handle(&set_visible(88, false, me(88)), T0 + 1_000).await;
    redis.resume();
    // Not acknowledged while Redis stalls: the caller is told to retry and
    // nothing changed, so nothing can leak.
    assert_eq!(hidden.status, 503);
    assert_eq!(stack.durable(id(88)).await.map(|r| r.state.visibility.is_visible()), Some(true));
    let retried = api.handle(&set_visible(88, false, me(88)), T0 + 1_500).await;
    assert_eq!(retried.status, 200);
    let body = ok(&api, &single(88, Caller::Service), T0 + 2_000).await;
    assert_eq!(entry(&body), reads(88, "offline", Some(T0)), "the acknowledged hide leaked");
}
