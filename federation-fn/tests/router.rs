//! Every route and every error code through the router with `oneshot` (no socket); the
//! issuer's keys are served over real HTTP.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use esi_federation::lease::LeaseKeys;
use esi_federation::state::{AppState, Settings};

async fn setup() -> (
    std::sync::Arc<esi_federation::issuer::LocalIssuer>,
    AppState,
) {
    let issuer = common::issuer().await;
    let yaml = common::cluster("alpha", &issuer.issuer()) + common::GENERATORS;
    (
        issuer.clone(),
        common::state(&yaml, common::settings(Duration::from_millis(300))),
    )
}

#[tokio::test]
async fn generate_returns_the_envelope() {
    let (issuer, state) = setup().await;
    let token = common::token(&issuer, "default", "app");
    let (status, headers, json, _) = common::send(
        &state,
        common::post("/v1/generators/default/Password/db", Some(&token), None),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["data"]["password"].as_str().unwrap().len(), 20);
    assert_eq!(json["renewable"], false);
    assert!(json["issuedAt"].as_str().unwrap().ends_with('Z'));
    assert!(json.get("lease").is_none() && json.get("expiresAt").is_none());
    assert!(headers.contains_key("x-request-id"));
    assert_eq!(headers["content-type"], "application/json");

    let (status, headers, json, _) = common::send(
        &state,
        common::post("/v1/generators/default/UUID/id", Some(&token), None),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(json["data"]["uuid"].as_str().unwrap().len(), 36);
    assert_eq!(headers["content-type"], "application/json");

    // The External Secrets route answers with the data alone.
    let (status, headers, json, _) = common::send(
        &state,
        common::post("/generators/default/UUID/id", Some(&token), None),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(json["uuid"].as_str().unwrap().len(), 36);
    assert_eq!(headers["content-type"], "application/json");
}

#[tokio::test]
async fn lease_round_trip_and_subject_binding() {
    let (issuer, state) = setup().await;
    let token = common::token(&issuer, "default", "app");
    let (status, _, json, _) = common::send(
        &state,
        common::post("/v1/generators/default/Fake/creds", Some(&token), None),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["data"]["username"], "fake-user");
    let lease = json["lease"].as_str().unwrap().to_owned();
    assert!(lease.starts_with("v1.ephemeral."));
    let expires: jiff::Timestamp = json["expiresAt"].as_str().unwrap().parse().unwrap();
    let issued: jiff::Timestamp = json["issuedAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires.duration_since(issued).as_secs(), 900);

    // Another workload may not revoke it.
    let other = common::token(&issuer, "default", "intruder");
    let body = serde_json::json!({ "lease": lease }).to_string();
    let (status, _, json, _) = common::send(
        &state,
        common::post("/v1/revoke", Some(&other), Some(&body)),
    )
    .await;
    assert_eq!(
        (status, common::code(&json)),
        (403, "policy_denied"),
        "{json}"
    );

    // Its subject may (a new token of the same service account, e.g. from a preStop hook).
    let again = common::token(&issuer, "default", "app");
    let (status, _, json, _) = common::send(
        &state,
        common::post("/v1/revoke", Some(&again), Some(&body)),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["revoked"], true);

    // A tampered lease is invalid. The changed character is a full one of the ciphertext (the
    // last may carry unused bits) and always differs from the original (a fixed replacement
    // equal to it left the lease intact once in 64 runs).
    let mut bytes = lease.clone().into_bytes();
    let at = bytes.len() - 3;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    assert_ne!(tampered, lease);
    let body = serde_json::json!({ "lease": tampered }).to_string();
    let (status, _, json, _) = common::send(
        &state,
        common::post("/v1/revoke", Some(&again), Some(&body)),
    )
    .await;
    assert_eq!(
        (status, common::code(&json)),
        (400, "invalid_lease"),
        "{json}"
    );
}

#[tokio::test]
async fn ese_route_returns_the_flat_map() {
    let (issuer, state) = setup().await;
    let token = common::token(&issuer, "default", "app");
    let (status, _, json, _) = common::send(
        &state,
        common::post("/generators/default/Fake/creds", Some(&token), None),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        json,
        serde_json::json!({"username": "fake-user", "password": "fake-secret-value-123"})
    );
}

#[tokio::test]
async fn whoami_health_ready_metrics() {
    let (issuer, state) = setup().await;
    let token = common::token(&issuer, "default", "app");
    let (status, _, json, _) = common::send(&state, common::get("/v1/whoami", Some(&token))).await;
    assert_eq!(status, 200);
    assert_eq!(json["cluster"], "alpha");
    assert_eq!(json["serviceAccount"]["name"], "app");
    assert_eq!(json["pod"]["name"], "app-7c9f8d-abcde");
    assert_eq!(
        common::send(&state, common::get("/healthz", None)).await.0,
        200
    );
    assert_eq!(
        common::send(&state, common::get("/readyz", None)).await.0,
        200
    );
    let (status, headers, _, text) = common::send(&state, common::get("/metrics", None)).await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(
        text.contains("esi_federation_requests_total{route=\"whoami\",code=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("esi_federation_jwks_fetches_total{cluster=\"alpha\",result=\"ok\"} 1"),
        "{text}"
    );
    assert!(text.contains("esi_federation_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn not_ready_without_configuration() {
    let state = AppState::new(Settings::default(), LeaseKeys::ephemeral());
    let (status, headers, json, _) = common::send(&state, common::get("/readyz", None)).await;
    assert_eq!((status, common::code(&json)), (503, "not_ready"));
    assert!(headers.contains_key("retry-after"));
    let (status, _, json, _) = common::send(
        &state,
        common::post("/v1/generators/default/UUID/id", Some("x"), None),
    )
    .await;
    assert_eq!((status, common::code(&json)), (503, "not_ready"));
}

#[tokio::test]
async fn every_error_code_has_its_status_and_shape() {
    let (issuer, state) = setup().await;
    let app = common::token(&issuer, "default", "app");
    let mut wrong_aud = esi_federation::issuer::TokenSpec::new("default", "app");
    wrong_aud.audience = vec!["vault".into()];
    let wrong_aud = issuer.mint(&wrong_aud);
    let mut expired = esi_federation::issuer::TokenSpec::new("default", "app");
    expired.lifetime = -3600;
    let expired = issuer.mint(&expired);
    let foreign =
        esi_federation::issuer::LocalIssuer::new(esi_federation::issuer::SigningKey::rsa());
    foreign.set_issuer("https://unknown.example");
    let foreign = common::token(&foreign, "default", "app");
    let not_yet = {
        let mut claims =
            esi_federation::issuer::TokenSpec::new("default", "app").claims(&issuer.issuer());
        claims["nbf"] = serde_json::json!(jiff::Timestamp::now().as_second() + 3600);
        issuer
            .signing_key()
            .sign(serde_json::json!({}), &claims, true)
    };
    let stranger = common::token(&issuer, "other", "app");
    let limited = common::token(&issuer, "limited", "app");
    let big = format!("{{\"lease\": \"{}\"}}", "a".repeat(100_000));

    let cases: Vec<(&str, axum::http::Request<axum::body::Body>, u16, &str)> = vec![
        (
            "no token",
            common::post("/v1/generators/default/UUID/id", None, None),
            401,
            "missing_token",
        ),
        (
            "basic auth",
            {
                let mut r = common::post("/v1/generators/default/UUID/id", None, None);
                r.headers_mut()
                    .insert("authorization", "Basic YWxhZGRpbjpvcGVu".parse().unwrap());
                r
            },
            401,
            "missing_token",
        ),
        (
            "garbage token",
            common::post("/v1/generators/default/UUID/id", Some("garbage"), None),
            401,
            "invalid_token",
        ),
        (
            "expired",
            common::post("/v1/generators/default/UUID/id", Some(&expired), None),
            401,
            "token_expired",
        ),
        (
            "not yet valid",
            common::post("/v1/generators/default/UUID/id", Some(&not_yet), None),
            401,
            "token_not_yet_valid",
        ),
        (
            "wrong audience",
            common::post("/v1/generators/default/UUID/id", Some(&wrong_aud), None),
            401,
            "audience_mismatch",
        ),
        (
            "unknown issuer",
            common::post("/v1/generators/default/UUID/id", Some(&foreign), None),
            401,
            "unknown_issuer",
        ),
        (
            "no rule for subject",
            common::post("/v1/generators/default/UUID/id", Some(&stranger), None),
            403,
            "policy_denied",
        ),
        (
            "rule but not this generator",
            common::post("/v1/generators/default/Password/db", Some(&limited), None),
            403,
            "policy_denied",
        ),
        (
            "authorized but missing",
            common::post("/v1/generators/default/Password/nope", Some(&app), None),
            404,
            "generator_not_found",
        ),
        (
            "bad path segment",
            common::post("/v1/generators/Default/UUID/id", Some(&app), None),
            400,
            "bad_request",
        ),
        (
            "percent-encoded slash in a path segment",
            common::post("/v1/generators/default%2FUUID/x/id", Some(&app), None),
            400,
            "bad_request",
        ),
        (
            "path segment not UTF-8 once decoded",
            common::post("/v1/generators/default/UUID/%FF", Some(&app), None),
            400,
            "bad_request",
        ),
        (
            "unknown route",
            common::get("/v2/nothing", None),
            404,
            "not_found",
        ),
        (
            "generator path with two segments",
            common::post("/v1/generators/default/UUID", Some(&app), None),
            404,
            "not_found",
        ),
        (
            "generator path with four segments",
            common::post("/v1/generators/default/UUID/id/x", Some(&app), None),
            404,
            "not_found",
        ),
        (
            "generator path with a trailing slash",
            common::post("/generators/default/UUID/id/", Some(&app), None),
            404,
            "not_found",
        ),
        (
            "generator path with an empty segment",
            common::post("/v1/generators/default//id", Some(&app), None),
            400,
            "bad_request",
        ),
        (
            "wrong method",
            common::get("/v1/generators/default/UUID/id", Some(&app)),
            405,
            "method_not_allowed",
        ),
        (
            "malformed json",
            common::post("/v1/revoke", Some(&app), Some("{")),
            400,
            "bad_request",
        ),
        (
            "unknown field",
            common::post("/v1/revoke", Some(&app), Some(r#"{"lease":"x","extra":1}"#)),
            400,
            "bad_request",
        ),
        (
            "garbage lease",
            common::post("/v1/revoke", Some(&app), Some(r#"{"lease":"x"}"#)),
            400,
            "invalid_lease",
        ),
        (
            "oversized body",
            common::post("/v1/revoke", Some(&app), Some(&big)),
            413,
            "payload_too_large",
        ),
    ];
    for (name, req, status, code) in cases {
        let (got, headers, json, text) = common::send(&state, req).await;
        assert_eq!((got, common::code(&json)), (status, code), "{name}: {text}");
        let rid = json["error"]["requestId"].as_str().unwrap_or_default();
        assert!(!rid.is_empty(), "{name}: no requestId");
        assert_eq!(headers["x-request-id"].to_str().unwrap(), rid, "{name}");
        assert!(
            !json["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{name}"
        );
        if status == 401 {
            assert_eq!(headers["www-authenticate"], "Bearer", "{name}");
        }
        if status == 405 {
            assert_eq!(headers["allow"], "POST", "{name}");
        }
    }
    // A route's other methods are refused alike, on both issuance routes and elsewhere.
    for (method, path, allow) in [
        ("PUT", "/v1/generators/default/UUID/id", "POST"),
        ("HEAD", "/generators/default/UUID/id", "POST"),
        ("DELETE", "/v1/revoke", "POST"),
    ] {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let (got, headers, json, text) = common::send(&state, req).await;
        assert_eq!(got, 405, "{method} {path}: {text}");
        assert_eq!(headers["allow"], allow, "{method} {path}");
        if method != "HEAD" {
            assert_eq!(common::code(&json), "method_not_allowed", "{method} {path}");
        }
    }
    // The two denials say which check failed.
    let (_, _, json, _) = common::send(
        &state,
        common::post("/v1/generators/default/UUID/id", Some(&stranger), None),
    )
    .await;
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no Authorization covers"),
        "{json}"
    );
    let (_, _, json, _) = common::send(
        &state,
        common::post("/v1/generators/default/Password/db", Some(&limited), None),
    )
    .await;
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("none allows generator"),
        "{json}"
    );
    // Each outcome is counted under its own route and code.
    let (_, _, _, metrics) = common::send(&state, common::get("/metrics", None)).await;
    for want in [
        r#"esi_federation_requests_total{route="generate",code="policy_denied"} 4"#,
        r#"esi_federation_requests_total{route="generate",code="bad_request"} 4"#,
        r#"esi_federation_requests_total{route="generate",code="not_found"} 2"#,
        r#"esi_federation_requests_total{route="ese_generate",code="not_found"} 1"#,
        r#"esi_federation_requests_total{route="generate",code="method_not_allowed"} 2"#,
        r#"esi_federation_requests_total{route="revoke",code="invalid_lease"} 1"#,
        r#"esi_federation_requests_total{route="other",code="not_found"} 1"#,
        r#"esi_federation_decisions_total{decision="denied",code="policy_denied"} 4"#,
        r#"esi_federation_decisions_total{decision="denied",code="token_expired"} 1"#,
    ] {
        assert!(metrics.contains(want), "{want} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn generator_path_segments_are_percent_decoded() {
    let (issuer, state) = setup().await;
    let app = common::token(&issuer, "default", "app");
    let (status, _, json, text) = common::send(
        &state,
        common::post("/v1/generators/defaul%74/UUI%44/i%64", Some(&app), None),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // default/UUID/id answered: its one key is a UUID.
    let id = json["data"]["uuid"].as_str().unwrap_or_default();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{json}");
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let (issuer, state) = setup().await;
    let limited = common::token(&issuer, "limited", "app");
    let mut codes = Vec::new();
    for _ in 0..3 {
        let (status, headers, json, _) = common::send(
            &state,
            common::post("/v1/generators/default/UUID/id", Some(&limited), None),
        )
        .await;
        codes.push(status);
        if status == 429 {
            assert_eq!(common::code(&json), "rate_limited");
            assert!(headers.contains_key("retry-after"));
            assert!(json["error"]["retryAfterSeconds"].as_u64().unwrap() >= 1);
        }
    }
    assert_eq!(codes, vec![200, 200, 429]);

    // A reload (here of the same resources) keeps the exhausted bucket: editing any resource
    // must not hand every workload a fresh burst.
    let yaml = common::cluster("alpha", &issuer.issuer()) + common::GENERATORS;
    let reloaded = esi_federation::config::load_text("test.yaml", &yaml, &state).unwrap();
    state.install(reloaded);
    let (status, ..) = common::send(
        &state,
        common::post("/v1/generators/default/UUID/id", Some(&limited), None),
    )
    .await;
    assert_eq!(status, 429);
}

#[tokio::test]
async fn issuer_outage_without_cache_is_503_with_its_code() {
    let issuer = common::issuer().await;
    issuer.set_down(true);
    let yaml = common::cluster("alpha", &issuer.issuer()) + common::GENERATORS;
    let state = common::state(&yaml, common::settings(Duration::from_millis(300)));
    let token = common::token(&issuer, "default", "app");
    let (status, headers, json, _) = common::send(
        &state,
        common::post("/v1/generators/default/UUID/id", Some(&token), None),
    )
    .await;
    assert_eq!(
        (status, common::code(&json)),
        (503, "backend_unavailable"),
        "{json}"
    );
    assert!(headers.contains_key("retry-after"));
}

#[tokio::test]
async fn request_id_is_propagated_or_replaced() {
    let (_, state) = setup().await;
    let mut req = common::get("/v2/none", None);
    req.headers_mut()
        .insert("x-request-id", "trace-abc.123".parse().unwrap());
    let (_, headers, json, _) = common::send(&state, req).await;
    assert_eq!(headers["x-request-id"], "trace-abc.123");
    assert_eq!(json["error"]["requestId"], "trace-abc.123");
    let mut req = common::get("/v2/none", None);
    req.headers_mut()
        .insert("x-request-id", "evil\"value{}".parse().unwrap());
    let (_, headers, json, _) = common::send(&state, req).await;
    let replaced = headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(replaced).is_ok(), "{replaced}");
    assert_eq!(json["error"]["requestId"], replaced);
}

/// A configuration with a `VaultDynamicSecret` `default/db` on a Vault store at
/// `server` (its token, which no real Vault knows, in a file under `dir`); `store_extra` adds
/// lines to the store's `vault` block.
fn with_vault_generator(
    issuer: &esi_federation::issuer::LocalIssuer,
    dir: &tempfile::TempDir,
    server: &str,
    store_extra: &str,
) -> String {
    let token_file = dir.path().join("vault-token");
    std::fs::write(&token_file, "s.not-a-real-token").unwrap();
    common::cluster("alpha", &issuer.issuer())
        + common::GENERATORS
        + &format!(
            "apiVersion: esi.dev/v1alpha1\nkind: SecretStore\nmetadata: {{name: vault, namespace: default}}\nspec:\n  provider:\n    vault:\n      server: {server}\n{store_extra}      auth: {{token: {{file: {}}}}}\n---\napiVersion: esi.dev/v1alpha1\nkind: VaultDynamicSecret\nmetadata: {{name: db, namespace: default}}\nspec:\n  secretStoreRef: {{name: vault}}\n  path: database/creds/app\n",
            token_file.display()
        )
}

/// `default/app` asks for the `VaultDynamicSecret` of [`with_vault_generator`].
async fn ask_vault(
    issuer: &esi_federation::issuer::LocalIssuer,
    state: &AppState,
) -> (u16, axum::http::HeaderMap, serde_json::Value, String) {
    let token = common::token(issuer, "default", "app");
    common::send(
        state,
        common::post(
            "/v1/generators/default/VaultDynamicSecret/db",
            Some(&token),
            None,
        ),
    )
    .await
}

#[tokio::test]
async fn unreachable_backend_is_503_backend_unavailable() {
    let issuer = common::issuer().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = with_vault_generator(&issuer, &dir, "http://127.0.0.1:1", "");
    let state = common::state(&yaml, common::settings(Duration::from_millis(300)));
    let (status, headers, json, text) = ask_vault(&issuer, &state).await;
    assert_eq!(
        (status, common::code(&json)),
        (503, "backend_unavailable"),
        "{text}"
    );
    assert!(headers.contains_key("retry-after"));
    assert!(!text.contains("not-a-real-token"));
    assert!(
        !text.contains("127.0.0.1:1"),
        "internal detail leaked: {text}"
    );
}

#[tokio::test]
async fn a_server_that_is_not_vault_is_unreadable_not_unreachable() {
    // Something answers at the store's `server`, but not as Vault does (a wrong address, a
    // proxy's page): the error must say so, not that Vault could not be reached.
    let impostor = axum::Router::new().fallback(|| async {
        axum::Json(serde_json::json!({"hello": "I am not Vault", "password": "p-abc123"}))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(async move { axum::serve(listener, impostor).await });
    let issuer = common::issuer().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = with_vault_generator(&issuer, &dir, &format!("http://{addr}"), "");
    let state = common::state(&yaml, common::settings(Duration::from_millis(300)));
    let (status, _, json, text) = ask_vault(&issuer, &state).await;
    assert_eq!(
        (status, common::code(&json)),
        (503, "backend_unavailable"),
        "{text}"
    );
    assert!(
        text.contains("vault's answer could not be read (token lookup)"),
        "{text}"
    );
    assert!(!text.contains("p-abc123"), "the answer leaked: {text}");
    served.abort();
}

#[tokio::test]
async fn silent_backend_is_cut_off_at_the_backend_timeout() {
    // A "Vault" that accepts connections and never answers: only the federation's own
    // backend timeout can end the request.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            conns.push(conn);
        }
    });
    let issuer = common::issuer().await;
    let dir = tempfile::tempdir().unwrap();
    // The store's own HTTP timeout is longer than the federation's backend timeout.
    let yaml = with_vault_generator(
        &issuer,
        &dir,
        &format!("http://{addr}"),
        "      timeout: 30s\n",
    );
    let settings = Settings {
        backend_timeout: Duration::from_millis(300),
        ..common::settings(Duration::from_millis(300))
    };
    let state = common::state(&yaml, settings);
    let started = std::time::Instant::now();
    let (status, _, json, text) = ask_vault(&issuer, &state).await;
    let took = started.elapsed();
    assert_eq!(
        (status, common::code(&json)),
        (503, "backend_unavailable"),
        "{text}"
    );
    assert!(text.contains("did not answer within"), "{text}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(10),
        "answered after {took:?}, want the 300ms backend timeout"
    );
    held.abort();
}

#[tokio::test]
async fn a_client_that_goes_away_does_not_cancel_the_mint() {
    // A slow credential endpoint: it answers 300 ms after the request, long after the client
    // below has given up and dropped its request.
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let endpoint = axum::Router::new().route(
        "/issue",
        axum::routing::post({
            let answered = answered.clone();
            move || async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                answered.store(true, std::sync::atomic::Ordering::SeqCst);
                axum::Json(serde_json::json!({"username": "u-abc123", "password": "p-abc123"}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(async move { axum::serve(listener, endpoint).await });
    let issuer = common::issuer().await;
    let yaml = common::cluster("alpha", &issuer.issuer())
        + common::GENERATORS
        + &format!(
            "apiVersion: esi.dev/v1alpha1\nkind: SecretStore\nmetadata: {{name: api, namespace: default}}\nspec:\n  provider:\n    webhook: {{allowedUrls: [\"http://{addr}/\"]}}\n---\napiVersion: esi.dev/v1alpha1\nkind: Webhook\nmetadata: {{name: api, namespace: default}}\nspec: {{secretStoreRef: {{name: api}}, url: \"http://{addr}/issue\"}}\n"
        );
    let state = common::state(&yaml, common::settings(Duration::from_millis(300)));
    let token = common::token(&issuer, "default", "app");

    let request = common::send(
        &state,
        common::post("/v1/generators/default/Webhook/api", Some(&token), None),
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(100), request)
            .await
            .is_err(),
        "the request must still be waiting for the endpoint when the client goes away"
    );
    assert!(!answered.load(std::sync::atomic::Ordering::SeqCst));

    // The mint runs to its end without the client: the endpoint answers and the decision is
    // counted (a mint cancelled half-way leaves a credential that nobody audited or revoked).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let want = r#"esi_federation_decisions_total{decision="allowed",code="ok"} 1"#;
    loop {
        let (_, _, _, metrics) = common::send(&state, common::get("/metrics", None)).await;
        if metrics.contains(want) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned mint never completed; metrics:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered.load(std::sync::atomic::Ordering::SeqCst));
    served.abort();
}

/// An issuer whose discovery and keys answer `delay` late, so that an issuance with no keys
/// cached yet waits (the handler moves it to a task), then mints with a local generator.
async fn slow_issuer(delay: Duration) -> std::sync::Arc<esi_federation::issuer::LocalIssuer> {
    let issuer =
        esi_federation::issuer::LocalIssuer::new(esi_federation::issuer::SigningKey::rsa());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    issuer.set_issuer(&format!("http://{}", listener.local_addr().unwrap()));
    let app = issuer.router().layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| async move {
            tokio::time::sleep(delay).await;
            next.run(req).await
        },
    ));
    tokio::spawn(async move { axum::serve(listener, app).await });
    issuer
}

/// Waits until `/metrics` shows `want`, for at most 10 s.
async fn await_metric(state: &esi_federation::AppState, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, _, metrics) = common::send(state, common::get("/metrics", None)).await;
        if metrics.contains(want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never saw {want}; metrics:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_lease_minted_after_the_client_left_is_revoked() {
    let issuer = slow_issuer(Duration::from_millis(150)).await;
    let yaml = common::cluster("alpha", &issuer.issuer()) + common::GENERATORS;
    let state = common::state(&yaml, common::settings(Duration::from_millis(300)));
    let token = common::token(&issuer, "default", "app");
    let request = common::send(
        &state,
        common::post("/v1/generators/default/Fake/creds", Some(&token), None),
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(50), request)
            .await
            .is_err(),
        "the request must still be waiting for the keys when the client goes away"
    );
    // The keys arrive, the Fake generator mints a lease for nobody: it is revoked, not lost.
    await_metric(
        &state,
        r#"esi_federation_undelivered_credentials_total{result="revoked"} 1"#,
    )
    .await;
    await_metric(
        &state,
        r#"esi_federation_decisions_total{decision="allowed",code="ok"} 1"#,
    )
    .await;
}

#[tokio::test]
async fn the_deadline_answers_503_and_revokes_what_is_minted_later() {
    let issuer = slow_issuer(Duration::from_millis(300)).await;
    let yaml = common::cluster("alpha", &issuer.issuer()) + common::GENERATORS;
    let mut settings = common::settings(Duration::from_millis(300));
    settings.backend_timeout = Duration::from_millis(100);
    let state = common::state(&yaml, settings);
    let token = common::token(&issuer, "default", "app");
    let started = std::time::Instant::now();
    let ((status, headers, json, text), (password_status, ..)) = tokio::join!(
        common::send(
            &state,
            common::post("/v1/generators/default/Fake/creds", Some(&token), None),
        ),
        common::send(
            &state,
            common::post("/v1/generators/default/Password/db", Some(&token), None),
        ),
    );
    assert_eq!(status, 503, "{text}");
    assert_eq!(json["error"]["code"], "backend_unavailable", "{text}");
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    assert_eq!(password_status, 503);
    assert!(
        started.elapsed() < Duration::from_millis(290),
        "answered at the deadline, not when the mint finished: {:?}",
        started.elapsed()
    );
    // The lease minted later is revoked; a password has none: counted, left to the backend.
    await_metric(
        &state,
        r#"esi_federation_undelivered_credentials_total{result="revoked"} 1"#,
    )
    .await;
    await_metric(
        &state,
        r#"esi_federation_undelivered_credentials_total{result="not_revocable"} 1"#,
    )
    .await;
}

#[tokio::test]
async fn authorize_dry_run_explains_each_generator_without_minting() {
    let (issuer, state) = setup().await;
    let limited = common::token(&issuer, "limited", "app");
    let body = serde_json::json!({"generators": [
        "default/UUID/id", "default/Password/db", "Bad/Path", "default/UUID/missing"
    ]})
    .to_string();
    // Three checks in a row: the rate limit (burst 2) is not consumed by dry runs.
    for _ in 0..3 {
        let (status, _, json, text) = common::send(
            &state,
            common::post("/v1/authorize", Some(&limited), Some(&body)),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(json["identity"]["namespace"], "limited");
        let r = json["results"].as_array().unwrap();
        assert_eq!(r[0]["allowed"], true);
        assert!(r[0]["message"].as_str().unwrap().contains("limited"));
        assert_eq!(
            (r[1]["allowed"].as_bool(), r[1]["code"].as_str()),
            (Some(false), Some("policy_denied"))
        );
        assert!(
            r[1]["message"]
                .as_str()
                .unwrap()
                .contains("none allows generator")
        );
        assert_eq!(r[2]["code"], "bad_request");
        // Not authorized for it, so its existence is not revealed.
        assert_eq!(r[3]["code"], "policy_denied");
    }
    let app = common::token(&issuer, "default", "app");
    let body = serde_json::json!({"generators": ["default/UUID/missing"]}).to_string();
    let (_, _, json, _) = common::send(
        &state,
        common::post("/v1/authorize", Some(&app), Some(&body)),
    )
    .await;
    assert_eq!(json["results"][0]["code"], "generator_not_found");
    let (status, _, json, _) =
        common::send(&state, common::post("/v1/authorize", None, Some(&body))).await;
    assert_eq!((status, common::code(&json)), (401, "missing_token"));
    // The real call still has its full burst.
    for _ in 0..2 {
        let (status, _, _, _) = common::send(
            &state,
            common::post("/v1/generators/default/UUID/id", Some(&limited), None),
        )
        .await;
        assert_eq!(status, 200);
    }
}
