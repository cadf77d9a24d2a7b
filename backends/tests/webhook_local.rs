//! `Webhook` against a local HTTP server started by the test, including the store's
//! allow-list refusing other addresses, redirects not followed, and timeouts.

#![cfg(feature = "webhook")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use esi_backends::{
    BackendError, Context, Generate, GeneratorKind, GeneratorSpec, SecretStoreSpec,
};
use serde_json::{Value, json};

use common::{build, identity};

type Seen = Arc<Mutex<Vec<(HeaderMap, String)>>>;

async fn server() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let s1 = seen.clone();
    let app = Router::new()
        .route(
            "/creds/issue",
            post(move |headers: HeaderMap, body: String| async move {
                s1.lock().expect("lock").push((headers, body));
                Json(json!({"result": {"username": "u-1", "password": "p@ss", "ttl": 60}, "expiresAt": "2031-01-02T03:04:05Z"}))
            }),
        )
        // Honours the TTL the request asks for, as `{"ttl": "<seconds>"}`.
        .route(
            "/creds/ttl",
            post(|Json(asked): Json<Value>| async move {
                let ttl: i64 = asked["ttl"].as_str().and_then(|t| t.parse().ok()).unwrap_or(86_400);
                Json(json!({"token": format!("ttl-{ttl}"), "expiresAt": jiff::Timestamp::now().as_second() + ttl}))
            }),
        )
        .route("/creds/token", get(|| async { Json(json!({"items": [{"token": "tok-123"}]})) }))
        .route("/creds/redirect", post(|| async { (StatusCode::FOUND, [("location", "http://127.0.0.1:1/steal")]).into_response() }))
        .route("/creds/slow", post(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Json(json!({}))
        }))
        .route("/creds/html", post(|| async { Response::new(axum::body::Body::from("<html>oops</html>")) }))
        .route("/creds/denied", post(|| async { (StatusCode::FORBIDDEN, "no").into_response() }))
        .route("/creds/unauthenticated", post(|| async { (StatusCode::UNAUTHORIZED, "who?").into_response() }))
        .route("/creds/down", post(|| async { (StatusCode::SERVICE_UNAVAILABLE, "later").into_response() }));
    let base = common::serve_local(app).await;
    (base, seen)
}

fn store(base: &str, header_file: &std::path::Path) -> Value {
    json!({"provider": {"webhook": {
        "allowedUrls": [format!("{base}/creds/")],
        "timeout": "5s",
        "headers": {"Authorization": {"file": header_file}},
    }}})
}

fn spec(url: String, extra: Value) -> Value {
    let mut s = json!({"secretStoreRef": {"name": "hooks"}, "url": url});
    if let (Some(o), Some(e)) = (s.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    s
}

fn ctx(id: &esi_api::Identity) -> Context<'_> {
    Context {
        identity: id,
        generator: "payments/Webhook/creds",
        max_ttl: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_the_identity_and_maps_the_json_result() {
    let (base, seen) = server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let header_file = dir.path().join("auth");
    std::fs::write(&header_file, "Bearer hook-secret\n").expect("write");
    let g = build(
        "Webhook",
        spec(
            format!("{base}/creds/issue"),
            json!({
                "headers": {"X-Team": "payments"},
                "body": "{\"cluster\": \"{{cluster}}\", \"ns\": \"{{namespace}}\", \"sa\": \"{{serviceAccount}}\", \"pod\": \"{{pod}}\"}",
                "result": {"jsonPath": "$.result", "expiresAtJsonPath": "$.expiresAt"},
            }),
        ),
        Some(store(&base, &header_file)),
    );
    let id = identity();
    let cred = g.generate(&ctx(&id)).await.expect("webhook call");
    assert_eq!(cred.data["username"], "u-1");
    assert_eq!(cred.data["password"], "p@ss");
    assert_eq!(cred.data["ttl"], "60");
    assert_eq!(
        cred.expires_at,
        Some("2031-01-02T03:04:05Z".parse().expect("ts"))
    );
    assert!(!format!("{g:?}").contains("hook-secret"));

    let seen = seen.lock().expect("lock");
    let (headers, body) = &seen[0];
    assert_eq!(headers["authorization"], "Bearer hook-secret");
    assert_eq!(headers["x-team"], "payments");
    assert_eq!(headers["content-type"], "application/json");
    let body: Value = serde_json::from_str(body).expect("the rendered body is JSON");
    assert_eq!(
        body,
        json!({"cluster": "prod-eu", "ns": "payments", "sa": "api", "pod": "api-7d9f"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_with_a_scalar_result() {
    let (base, _) = server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let header_file = dir.path().join("auth");
    std::fs::write(&header_file, "Bearer x").expect("write");
    let g = build(
        "Webhook",
        spec(
            format!("{base}/creds/token"),
            json!({"method": "GET", "result": {"jsonPath": "$.items[0].token", "key": "token"}}),
        ),
        Some(store(&base, &header_file)),
    );
    let id = identity();
    let cred = g.generate(&ctx(&id)).await.expect("webhook call");
    assert_eq!(
        cred.data.into_iter().collect::<Vec<_>>(),
        vec![("token".to_owned(), "tok-123".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_list_refuses_other_addresses() {
    let (base, _) = server().await;
    let port = base.rsplit(':').next().expect("port").to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        SecretStoreSpec::from_manifest(store(&base, &dir.path().join("auth"))).expect("store");
    let kind = GeneratorKind::parse("Webhook").expect("kind");
    for url in [
        format!("http://127.0.0.2:{port}/creds/issue"),
        format!("http://localhost:{port}/creds/issue"),
        format!("https://127.0.0.1:{port}/creds/issue"),
        format!("http://127.0.0.1:{port}/admin"),
        format!("http://127.0.0.1:{port}/credsx"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    ] {
        let s = GeneratorSpec::from_manifest(kind, spec(url.clone(), json!({}))).expect("spec");
        let err = esi_backends::Generator::build(&s, Some(&store)).expect_err(&url);
        assert!(
            err.to_string().contains("spec.url") && err.to_string().contains("allowedUrls"),
            "{url}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_timeouts_and_bad_answers_are_classified() {
    let (base, _) = server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let header_file = dir.path().join("auth");
    std::fs::write(&header_file, "Bearer x").expect("write");
    let id = identity();
    let call = |path: &str, extra: Value| {
        let g = build(
            "Webhook",
            spec(format!("{base}/creds/{path}"), extra),
            Some(store(&base, &header_file)),
        );
        let id = &id;
        async move { g.generate(&ctx(id)).await }
    };
    let err = call("redirect", json!({})).await.expect_err("redirect");
    assert!(
        matches!(err, BackendError::Rejected { .. }) && err.to_string().contains("redirect"),
        "{err:?}"
    );
    let err = call("slow", json!({"timeout": "300ms"}))
        .await
        .expect_err("timeout");
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
    let err = call("html", json!({})).await.expect_err("not json");
    assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");
    // A permission refused (403) is rejected; the federation's credential not accepted (401)
    // is retryable, by the rule every backend follows.
    let err = call("denied", json!({})).await.expect_err("403");
    assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");
    let err = call("unauthenticated", json!({})).await.expect_err("401");
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("did not accept"), "{err}");
    let err = call("down", json!({})).await.expect_err("503");
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
    let err = call("issue", json!({"result": {"jsonPath": "$.nothing"}}))
        .await
        .expect_err("no match");
    assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");

    std::fs::remove_file(&header_file).expect("rm");
    let err = call("issue", json!({}))
        .await
        .expect_err("missing secret header");
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
    assert!(err.detail().contains("auth"), "{}", err.detail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ttl_is_asked_for_and_enforced() {
    let (base, _) = server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let header_file = dir.path().join("auth");
    std::fs::write(&header_file, "Bearer x").expect("write");
    let id = identity();
    let call = |path: &str, extra: Value, max_ttl: Option<Duration>| {
        let g = build(
            "Webhook",
            spec(format!("{base}/creds/{path}"), extra),
            Some(store(&base, &header_file)),
        );
        let id = &id;
        async move { g.generate(&Context { max_ttl, ..ctx(id) }).await }
    };
    let ten_minutes = Some(Duration::from_secs(600));

    // The endpoint is told the limit and honours it.
    let honours = json!({"body": "{\"ttl\": \"{{maxTTLSeconds}}\"}", "result": {"jsonPath": "$.token", "key": "token", "expiresAtJsonPath": "$.expiresAt"}});
    let before = jiff::Timestamp::now();
    let cred = call("ttl", honours.clone(), ten_minutes)
        .await
        .expect("a credential within maxTTL");
    assert_eq!(cred.data["token"], "ttl-600");
    let lives = cred.expires_at.expect("expiry").as_second() - before.as_second();
    assert!((599..=601).contains(&lives), "lives {lives}s");

    // An expiry past now + maxTTL is refused, not handed out.
    let err = call(
        "issue",
        json!({"result": {"jsonPath": "$.result", "expiresAtJsonPath": "$.expiresAt"}}),
        ten_minutes,
    )
    .await
    .expect_err("a credential outliving maxTTL");
    let BackendError::Rejected { message, .. } = &err else {
        panic!("want Rejected, got {err:?}")
    };
    assert!(
        message.contains("maxTTL of 10m") && message.contains("not handed out"),
        "{message}"
    );
    assert!(!message.contains("p@ss"), "{message}");

    // No expiry at all cannot be held to a maxTTL.
    let err = call(
        "token",
        json!({"method": "GET", "result": {"jsonPath": "$.items[0].token"}}),
        ten_minutes,
    )
    .await
    .expect_err("a credential without expiry under maxTTL");
    assert!(
        matches!(&err, BackendError::Rejected { message, .. } if message.contains("no expiry")),
        "{err:?}"
    );

    // Without a maxTTL, both are handed out as before.
    call(
        "token",
        json!({"method": "GET", "result": {"jsonPath": "$.items[0].token"}}),
        None,
    )
    .await
    .expect("no maxTTL, no expiry needed");
    let cred = call("ttl", honours, None).await.expect("no maxTTL");
    assert_eq!(cred.data["token"], "ttl-86400", "an empty maxTTLSeconds");
}

/// An endpoint whose credentials can be revoked: `POST /creds/mint` issues one named by `id`
/// (taken from the request, so a test can pick hostile ids), `/creds/revoke/...` revokes it
/// (any method; 404 once gone, 500 for the id `stuck`). Every revoke call is recorded as
/// (method, raw path and query, authorization header, body).
#[derive(Clone, Default)]
struct Revocable {
    live: Arc<Mutex<Vec<String>>>,
    calls: Arc<Mutex<Vec<RevokeCall>>>,
}

/// Method, raw path and query, `Authorization` header, body.
type RevokeCall = (String, String, String, String);

async fn revocable_server() -> (String, Revocable) {
    let state = Revocable::default();
    let (mint, rev) = (state.clone(), state.clone());
    let app = Router::new()
        .route(
            "/creds/mint",
            post(move |Json(asked): Json<Value>| async move {
                let id = asked["id"].as_str().expect("id").to_owned();
                mint.live.lock().expect("lock").push(id.clone());
                let lives = asked["lives"].as_i64().unwrap_or(300);
                Json(json!({"lease": {"id": id}, "token": format!("tok-{id}"),
                            "expiresAt": jiff::Timestamp::now().as_second() + lives}))
            }),
        )
        .fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: HeaderMap,
                  body: String| async move {
                let path = uri.path_and_query().map_or("", |p| p.as_str()).to_owned();
                if !path.starts_with("/creds/revoke") {
                    return StatusCode::NOT_FOUND;
                }
                let auth = headers
                    .get("authorization")
                    .map_or("", |v| v.to_str().expect("ascii"))
                    .to_owned();
                rev.calls.lock().expect("lock").push((
                    method.to_string(),
                    path.clone(),
                    auth,
                    body.clone(),
                ));
                let id = match path.strip_prefix("/creds/revoke/") {
                    Some(segment) => percent_encoding::percent_decode_str(segment)
                        .decode_utf8()
                        .expect("utf-8")
                        .into_owned(),
                    None => serde_json::from_str::<Value>(&body)
                        .ok()
                        .and_then(|b| b["id"].as_str().map(str::to_owned))
                        .unwrap_or_default(),
                };
                if id == "stuck" {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                let mut live = rev.live.lock().expect("lock");
                match live.iter().position(|l| *l == id) {
                    Some(i) => {
                        live.remove(i);
                        StatusCode::NO_CONTENT
                    }
                    None => StatusCode::NOT_FOUND,
                }
            },
        );
    (common::serve_local(app).await, state)
}

/// A `Webhook` generator minting `id` at the revocable server, revoked as `revoke` says.
fn revocable(
    base: &str,
    header_file: &std::path::Path,
    id: &str,
    revoke: Value,
) -> esi_backends::Generator {
    build(
        "Webhook",
        spec(
            format!("{base}/creds/mint"),
            json!({
                "body": format!("{{\"id\": {}, \"lives\": 300}}", serde_json::to_string(id).expect("json")),
                "result": {"jsonPath": "$.token", "key": "token", "expiresAtJsonPath": "$.expiresAt"},
                "revoke": revoke,
            }),
        ),
        Some(store(base, header_file)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_call_gives_each_credential_a_lease_that_revokes_it() {
    let (base, server) = revocable_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let header_file = dir.path().join("auth");
    std::fs::write(&header_file, "Bearer hook-secret").expect("write");
    let id = identity();

    // The id is percent-encoded into one path segment: '/', '?', '%' and spaces cannot move
    // the call elsewhere.
    let hostile = "cred/../../admin?x=1 %2F#";
    let g = revocable(
        &base,
        &header_file,
        hostile,
        json!({"leaseJsonPath": "$.lease.id", "url": format!("{base}/creds/revoke/{{{{lease}}}}")}),
    );
    let cred = g.generate(&ctx(&id)).await.expect("mint");
    assert_eq!(cred.data["token"], format!("tok-{hostile}"));
    let lease = cred
        .lease
        .clone()
        .expect("a revocable credential carries a lease");
    assert_eq!(format!("{lease:?}"), "LeaseHandle(<redacted>)");
    assert!(g.revoke(&lease).await.expect("revoke"), "revoked");
    assert!(
        server.live.lock().expect("lock").is_empty(),
        "gone at the endpoint"
    );
    {
        let calls = server.calls.lock().expect("lock");
        let (method, path, auth, body) = &calls[0];
        assert_eq!(method, "DELETE", "the default method");
        assert_eq!(
            path,
            "/creds/revoke/cred%2F..%2F..%2Fadmin%3Fx%3D1%20%252F%23"
        );
        assert_eq!(
            auth, "Bearer hook-secret",
            "the store's secret headers go along"
        );
        assert!(body.is_empty());
    }
    // Revoked before: nothing left to revoke.
    assert!(
        !g.revoke(&lease).await.expect("second revoke"),
        "404 is nothing left"
    );

    // POST with the id in a JSON body, escaped.
    let quoted = "a \"quoted\" id";
    let g = revocable(
        &base,
        &header_file,
        quoted,
        json!({"leaseJsonPath": "$.lease.id", "url": format!("{base}/creds/revoke"), "method": "POST",
               "body": "{\"id\": \"{{lease}}\"}"}),
    );
    let cred = g.generate(&ctx(&id)).await.expect("mint");
    assert!(g.revoke(&cred.lease.expect("lease")).await.expect("revoke"));
    let calls = server.calls.lock().expect("lock");
    let (method, path, _, body) = calls.last().expect("call");
    assert_eq!((method.as_str(), path.as_str()), ("POST", "/creds/revoke"));
    let body: Value = serde_json::from_str(body).expect("the rendered body is JSON");
    assert_eq!(body, json!({"id": quoted}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_not_handed_out_is_revoked_at_once() {
    let (base, server) = revocable_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let header_file = dir.path().join("auth");
    std::fs::write(&header_file, "Bearer x").expect("write");
    let id = identity();
    let revoke =
        json!({"leaseJsonPath": "$.lease.id", "url": format!("{base}/creds/revoke/{{{{lease}}}}")});
    let minute = Context {
        max_ttl: Some(Duration::from_secs(60)),
        ..ctx(&id)
    };

    // It would outlive maxTTL (300 s against 60 s): refused and revoked.
    let g = revocable(&base, &header_file, "over-ttl", revoke.clone());
    let err = g.generate(&minute).await.expect_err("over maxTTL");
    let BackendError::Rejected { message, .. } = &err else {
        panic!("want Rejected, got {err:?}")
    };
    assert!(
        message.contains("maxTTL") && message.contains("it was revoked"),
        "{message}"
    );
    assert!(!message.contains("tok-over-ttl"), "{message}");
    assert!(
        server.live.lock().expect("lock").is_empty(),
        "revoked at the endpoint"
    );

    // The revoke fails too: the caller is told the credential lives on; the log detail says
    // why, naming the revoke URL as configured, not the lease value (an endpoint may revoke
    // by the credential itself).
    let g = revocable(&base, &header_file, "stuck", revoke.clone());
    let err = g.generate(&minute).await.expect_err("over maxTTL");
    assert!(
        matches!(&err, BackendError::Rejected { message, .. }
            if message.contains("maxTTL") && message.contains("revoking it failed")),
        "{err:?}"
    );
    assert!(
        err.detail().contains("; revoke: ")
            && err.detail().contains("500")
            && err.detail().contains("/creds/revoke/{{lease}}"),
        "{}",
        err.detail()
    );
    assert!(!format!("{err:?}").contains("stuck"), "{err:?}");
    // The revoke endpoint unreachable: the same, reqwest's own words without the lease.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let unreachable = build(
        "Webhook",
        spec(
            format!("{base}/creds/mint"),
            json!({
                "body": "{\"id\": \"over-ttl-2\", \"lives\": 300}",
                "result": {"jsonPath": "$.token", "key": "token", "expiresAtJsonPath": "$.expiresAt"},
                "revoke": {"leaseJsonPath": "$.lease.id", "url": format!("http://127.0.0.1:{gone}/creds/revoke/{{{{lease}}}}")},
            }),
        ),
        Some(json!({"provider": {"webhook": {
            "allowedUrls": [format!("{base}/"), format!("http://127.0.0.1:{gone}/")],
            "headers": {"Authorization": {"file": header_file}},
        }}})),
    );
    let err = unreachable
        .generate(&minute)
        .await
        .expect_err("over maxTTL");
    assert!(err.to_string().contains("revoking it failed"), "{err}");
    assert!(
        err.detail().contains("; revoke: ") && err.detail().contains("/creds/revoke/{{lease}}"),
        "{}",
        err.detail()
    );
    assert!(!format!("{err:?}").contains("over-ttl-2"), "{err:?}");

    // An answer without the lease value cannot be revoked later: refused.
    let g = revocable(
        &base,
        &header_file,
        "no-lease",
        json!({"leaseJsonPath": "$.lease.name", "url": format!("{base}/creds/revoke/{{{{lease}}}}")}),
    );
    let err = g.generate(&ctx(&id)).await.expect_err("no lease value");
    assert!(
        matches!(&err, BackendError::Rejected { message, .. } if message.contains("names no lease")),
        "{err:?}"
    );
    assert!(err.detail().contains("$.lease.name"), "{}", err.detail());

    // Nor one too long to seal into a lease that opens again, or holding control characters.
    let caller = identity();
    for id in ["x".repeat(513), "line\nbreak".to_owned()] {
        let g = revocable(&base, &header_file, &id, revoke.clone());
        let err = g.generate(&ctx(&caller)).await.expect_err("an unusable id");
        assert!(err.detail().contains("over 512 bytes"), "{}", err.detail());
    }

    // Nor can a value that would be a dot segment.
    let g = revocable(&base, &header_file, "..", revoke);
    let err = g.generate(&ctx(&id)).await.expect_err("a dot-segment id");
    assert!(
        err.detail().contains("cannot name a URL part"),
        "{}",
        err.detail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_urls_are_held_to_the_allow_list_at_load() {
    let (base, _) = revocable_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        SecretStoreSpec::from_manifest(store(&base, &dir.path().join("auth"))).expect("store");
    let kind = GeneratorKind::parse("Webhook").expect("kind");
    let port = base.rsplit(':').next().expect("port").to_owned();
    for (revoke, expect) in [
        (
            json!({"leaseJsonPath": "$.id", "url": format!("http://127.0.0.2:{port}/creds/{{{{lease}}}}")}),
            "allowedUrls",
        ),
        (
            json!({"leaseJsonPath": "$.id", "url": format!("{base}/admin/{{{{lease}}}}")}),
            "allowedUrls",
        ),
        (
            json!({"leaseJsonPath": "$.id", "url": "http://h{{lease}}.localhost/creds/"}),
            "path or the query",
        ),
        (
            json!({"leaseJsonPath": "$.id", "url": format!("{base}/creds/{{{{namespace}}}}")}),
            "unknown placeholder",
        ),
        (
            json!({"leaseJsonPath": "id", "url": format!("{base}/creds/x")}),
            "revoke.leaseJsonPath",
        ),
        (
            json!({"leaseJsonPath": "$.id", "url": format!("{base}/creds/x"), "method": "GET"}),
            "unknown variant `GET`",
        ),
    ] {
        let err = GeneratorSpec::from_manifest(
            kind,
            spec(format!("{base}/creds/mint"), json!({"revoke": revoke})),
        )
        .map_err(|e| e.to_string())
        .and_then(|s| esi_backends::Generator::build(&s, Some(&store)).map_err(|e| e.to_string()))
        .expect_err(&revoke.to_string());
        assert!(err.contains(expect), "{revoke}: {err}");
    }
}

/// An HTTPS endpoint that takes only client certificates `client_ca` (PEM) signed, as an
/// internal API behind mutual TLS does, and answers `{"token": <which of `known` the client
/// presented>}`: its URL (`https://localhost:PORT`) and its own CA.
async fn mtls_server(client_ca: &str, known: Vec<(String, &'static str)>) -> (String, String) {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let pki = esi_test_support::pki("localhost").expect("pki");
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(client_ca.as_bytes()) {
        roots.add(ca.expect("CA")).expect("trust anchor");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .expect("verifier");
    let chain = CertificateDer::pem_slice_iter(pki.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("chain");
    let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).expect("key");
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let known: Vec<(Vec<u8>, &'static str)> = known
        .into_iter()
        .map(|(pem, name)| {
            let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("cert");
            (der.to_vec(), name)
        })
        .collect();
    let app = Router::new().route(
        "/creds/issue",
        post(
            move |tls: axum::Extension<Arc<axum_server::tls::TlsInfo>>| async move {
                let presented = tls.peer_certificates.first().cloned().unwrap_or_default();
                let who = known
                    .iter()
                    .find(|(der, _)| *der == presented)
                    .map_or("unknown", |(_, name)| *name);
                Json(json!({"token": who}))
            },
        ),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().expect("addr").port()
    );
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
    let server = axum_server::from_tcp_rustls(listener, tls).expect("server");
    tokio::spawn(async move { server.serve(app.into_make_service()).await });
    (url, pki.ca_pem)
}

#[tokio::test]
async fn the_store_presents_its_client_certificate_and_a_renewed_one_from_the_next_call() {
    let clients = esi_test_support::ClientCa::new("internal API clients").expect("CA");
    let first = clients.issue("esi-federation", &[]).expect("cert");
    let renewed = clients.issue("esi-federation", &[]).expect("cert");
    let (base, ca) = mtls_server(
        &clients.ca_pem(),
        vec![(first.0.clone(), "first"), (renewed.0.clone(), "renewed")],
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |(cert, key): &(String, String)| {
        std::fs::write(dir.path().join("tls.crt"), cert).expect("write");
        std::fs::write(dir.path().join("tls.key"), key).expect("write");
    };
    write(&first);
    let store = |allowed: &str| {
        json!({"provider": {"webhook": {
            "allowedUrls": [allowed], "caBundle": ca, "timeout": "5s",
            "clientCert": {"file": dir.path().join("tls.crt")},
            "clientKey": {"file": dir.path().join("tls.key")},
        }}})
    };
    let spec = spec(
        format!("{base}/creds/issue"),
        json!({"result": {"jsonPath": "$"}}),
    );
    let g = build(
        "Webhook",
        spec.clone(),
        Some(store(&format!("{base}/creds/"))),
    );
    let id = identity();
    assert_eq!(
        g.generate(&ctx(&id)).await.expect("mTLS call").data["token"],
        "first"
    );
    write(&renewed);
    assert_eq!(
        g.generate(&ctx(&id)).await.expect("renewed").data["token"],
        "renewed"
    );

    // Without a certificate the endpoint's handshake refuses the federation.
    let bare = json!({"provider": {"webhook": {"allowedUrls": [format!("{base}/creds/")],
        "caBundle": ca, "timeout": "5s"}}});
    let err = build("Webhook", spec.clone(), Some(bare))
        .generate(&ctx(&id))
        .await
        .expect_err("no client certificate");
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");

    // A certificate over plain HTTP would never be presented: refused at load.
    let err = SecretStoreSpec::from_manifest(store("http://127.0.0.1:9/creds/"))
        .and_then(|s| s.validate().map(|()| s))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("allowedUrls[0]") && err.contains("client certificate"),
        "{err:?}"
    );
}
