//! ServiceAccount defaults end to end: AdmissionReview JSON through the webhook's router, whose
//! kube client talks to a loopback FAKE of the Kubernetes API server that serves exactly
//! `GET /api/v1/namespaces/{ns}/serviceaccounts/{name}` (no real API server can run here).
//!
//! Shown: the ServiceAccount's `esi.dev/` annotations are applied as defaults, the Pod's own
//! win key by key, a missing ServiceAccount (404) means no defaults, answers are cached, and an
//! API server that is down, slow or refuses the webhook denies the Pod with a clear message.

// Test helpers outside #[test] functions are not covered by clippy's allow-unwrap-in-tests.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use esi_api::inject::{ENV_SPEC, INIT_CONTAINER_NAME, InjectionSpec};
use esi_webhook::server::MUTATE_PATH;
use esi_webhook::service_account::{ServiceAccounts, Settings};
use esi_webhook::{AppState, WebhookConfig, router};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// What the fake API server does.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Serve the stored ServiceAccounts, 404 for others.
    Serve,
    /// Answer 403 like an API server without the webhook's RBAC.
    Forbid,
    /// Never answer in time.
    Hang,
}

/// A FAKE Kubernetes API server: only `GET /api/v1/namespaces/{ns}/serviceaccounts/{name}`.
#[derive(Clone)]
struct FakeApi {
    accounts: Arc<Mutex<HashMap<(String, String), Value>>>,
    hits: Arc<AtomicUsize>,
    mode: Mode,
}

impl FakeApi {
    fn new(mode: Mode) -> Self {
        Self {
            accounts: Arc::default(),
            hits: Arc::default(),
            mode,
        }
    }

    fn add(&self, ns: &str, name: &str, annotations: Value) {
        let sa = json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": ns, "uid": "0f0f", "resourceVersion": "1",
                         "annotations": annotations}
        });
        self.accounts
            .lock()
            .unwrap()
            .insert((ns.to_owned(), name.to_owned()), sa);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Serves on 127.0.0.1 and returns the base URL.
    async fn start(&self) -> String {
        let app = Router::new()
            .route(
                "/api/v1/namespaces/{ns}/serviceaccounts/{name}",
                get(fake_get_service_account),
            )
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }
}

fn status(code: u16, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code});
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

async fn fake_get_service_account(
    State(fake): State<FakeApi>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> Response {
    fake.hits.fetch_add(1, Ordering::SeqCst);
    match fake.mode {
        Mode::Hang => {
            // Far beyond the client's timeout; the test never waits for it.
            tokio::time::sleep(Duration::from_secs(60)).await;
            status(500, "InternalError", "late".into())
        }
        Mode::Forbid => status(
            403,
            "Forbidden",
            format!(
                "serviceaccounts \"{name}\" is forbidden: User \"system:serviceaccount:esi-system:esi-webhook\" cannot get resource \"serviceaccounts\" in the namespace \"{ns}\""
            ),
        ),
        Mode::Serve => match fake.accounts.lock().unwrap().get(&(ns, name.clone())) {
            Some(sa) => axum::Json(sa.clone()).into_response(),
            None => status(
                404,
                "NotFound",
                format!("serviceaccounts \"{name}\" not found"),
            ),
        },
    }
}

fn config() -> WebhookConfig {
    WebhookConfig::from_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/config.yaml"),
    )
    .unwrap()
}

fn app_against(base: &str, timeout: Duration) -> (Router, AppState) {
    let kc = kube::Config::new(base.parse().unwrap());
    let client = kube::Client::try_from(kc).unwrap();
    let settings = Settings {
        timeout,
        ..Settings::default()
    };
    let state =
        AppState::new(config()).with_service_accounts(ServiceAccounts::new(client, settings));
    (router(state.clone()), state)
}

fn pod(service_account: Option<&str>, annotations: Value) -> Value {
    let mut spec = json!({
        "securityContext": {"runAsUser": 1000},
        "containers": [{"name": "app", "image": "x", "command": ["/app"]}]
    });
    if let Some(sa) = service_account {
        spec["serviceAccountName"] = json!(sa);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "api-", "labels": {"esi.dev/inject": "true"},
                     "annotations": annotations},
        "spec": spec
    })
}

fn admission(pod: &Value, uid: &str) -> Value {
    esi_webhook::review::pod_create_review(pod, "payments", uid)
}

/// Sends one AdmissionReview through the router and returns the `response` object.
async fn admit(app: &Router, pod: &Value, uid: &str) -> Value {
    let req = Request::post(MUTATE_PATH)
        .header("content-type", "application/json")
        .body(Body::from(
            serde_json::to_vec(&admission(pod, uid)).unwrap(),
        ))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["response"]["uid"], uid, "{v}");
    v["response"].clone()
}

/// The spec handed to esi-cli by an injected Pod.
fn injected_spec(pod: &Value, response: &Value) -> InjectionSpec {
    assert_eq!(response["allowed"], true, "{response}");
    let b64 = response["patch"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    let init = patched["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == INIT_CONTAINER_NAME)
        .unwrap()
        .clone();
    let spec = init["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == ENV_SPEC)
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_owned();
    InjectionSpec::from_json(&spec).unwrap()
}

fn env_of(spec: &InjectionSpec, container: &str) -> Vec<String> {
    serde_json::to_value(&spec.containers[container]).unwrap()["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn metrics(app: &Router) -> String {
    let resp = app
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

fn denial_message(response: &Value) -> String {
    assert_eq!(response["allowed"], false, "{response}");
    response["status"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn service_account_annotations_are_applied_as_defaults() {
    let fake = FakeApi::new(Mode::Serve);
    fake.add(
        "payments",
        "app",
        json!({
            "esi.dev/generators": "db=payments/VaultDynamicSecret/db",
            "esi.dev/env": "DB_USER=db.username, DB_PASS=db.password",
            "esi.dev/federation-url": "https://esi-eu.example.com",
            "esi.dev/revoke-on-exit": "true",
            "eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/ignored"
        }),
    );
    let (app, _) = app_against(&fake.start().await, Duration::from_secs(2));
    // The Pod asks for credentials and names nothing else: everything comes from its SA.
    let p = pod(Some("app"), json!({}));
    let r = admit(&app, &p, "sa-defaults").await;
    let spec = injected_spec(&p, &r);
    assert_eq!(spec.federation_url, "https://esi-eu.example.com");
    assert_eq!(spec.generators.keys().collect::<Vec<_>>(), ["db"]);
    assert_eq!(env_of(&spec, "app"), ["DB_USER", "DB_PASS"]);
    assert!(spec.revoke_on_exit);
    assert_eq!(fake.hits(), 1);
}

#[tokio::test]
async fn the_pods_own_annotations_win_key_by_key() {
    let fake = FakeApi::new(Mode::Serve);
    fake.add(
        "payments",
        "app",
        json!({
            "esi.dev/generators": "db=payments/VaultDynamicSecret/db",
            "esi.dev/env": "DB_USER=db.username",
            "esi.dev/federation-url": "https://esi-eu.example.com"
        }),
    );
    let (app, _) = app_against(&fake.start().await, Duration::from_secs(2));
    let p = pod(
        Some("app"),
        json!({
            "esi.dev/federation-url": "https://esi.example.com",
            "esi.dev/env": "PASSWORD=db.password"
        }),
    );
    let spec = injected_spec(&p, &admit(&app, &p, "pod-wins").await);
    assert_eq!(spec.federation_url, "https://esi.example.com");
    assert_eq!(env_of(&spec, "app"), ["PASSWORD"]);
    // Not set by the Pod: still the ServiceAccount's.
    assert_eq!(spec.generators.keys().collect::<Vec<_>>(), ["db"]);
}

#[tokio::test]
async fn a_missing_service_account_means_no_defaults() {
    let fake = FakeApi::new(Mode::Serve);
    let (app, _) = app_against(&fake.start().await, Duration::from_secs(2));
    // No serviceAccountName: the `default` ServiceAccount is asked for, and is not there.
    let complete = pod(
        None,
        json!({"esi.dev/generators": "db=payments/VaultDynamicSecret/db",
               "esi.dev/env": "DB_USER=db.username"}),
    );
    let spec = injected_spec(&complete, &admit(&app, &complete, "sa-404").await);
    assert_eq!(spec.federation_url, "https://esi.example.com");
    assert!(!spec.revoke_on_exit);
    // A Pod that counted on defaults from a ServiceAccount that does not exist is denied for
    // what it lacks, as without ServiceAccount defaults.
    let relying = pod(Some("ghost"), json!({"esi.dev/env": "DB_USER=db.username"}));
    let msg = denial_message(&admit(&app, &relying, "sa-404-relying").await);
    assert!(msg.contains("esi.dev/generators"), "{msg}");
    assert_eq!(fake.hits(), 2);
    let m = metrics(&app).await;
    assert!(
        m.contains(r#"esi_webhook_service_account_lookups_total{result="not_found"} 2"#),
        "{m}"
    );
}

#[tokio::test]
async fn answers_are_cached_and_only_injected_pods_are_looked_up() {
    let fake = FakeApi::new(Mode::Serve);
    fake.add(
        "payments",
        "app",
        json!({"esi.dev/generators": "db=payments/VaultDynamicSecret/db"}),
    );
    let (app, _) = app_against(&fake.start().await, Duration::from_secs(2));
    let p = pod(Some("app"), json!({"esi.dev/env": "DB_USER=db.username"}));
    for uid in ["c1", "c2", "c3"] {
        injected_spec(&p, &admit(&app, &p, uid).await);
    }
    assert_eq!(fake.hits(), 1, "three admissions, one API call");

    // Pods the webhook leaves alone cost no API call.
    let mut not_opted_in = p.clone();
    not_opted_in["metadata"]["labels"] = json!({});
    let mut injected = p.clone();
    injected["metadata"]["annotations"]["esi.dev/status"] = json!("injected");
    for (i, q) in [not_opted_in, injected].iter().enumerate() {
        let r = admit(&app, q, &format!("skip{i}")).await;
        assert_eq!(r["allowed"], true);
        assert!(r.get("patch").is_none(), "{r}");
    }
    assert_eq!(fake.hits(), 1);
    let m = metrics(&app).await;
    assert!(
        m.contains(r#"esi_webhook_service_account_lookups_total{result="found"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"esi_webhook_service_account_lookups_total{result="cached"} 2"#),
        "{m}"
    );
}

#[tokio::test]
async fn an_unreachable_api_server_denies_the_pod() {
    let closed = esi_test_support::ClosedPort::new();
    let base = format!("http://{}", closed.addr());
    let (app, _) = app_against(&base, Duration::from_secs(2));
    // Even a Pod whose own annotations are complete: what it gets must not depend on whether
    // the API server answered.
    let p = pod(
        Some("app"),
        json!({"esi.dev/generators": "db=payments/VaultDynamicSecret/db",
               "esi.dev/env": "DB_USER=db.username"}),
    );
    let r = admit(&app, &p, "api-down").await;
    let msg = denial_message(&r);
    assert_eq!(r["status"]["code"], 503, "{r}");
    assert_eq!(r["status"]["reason"], "ServiceUnavailable");
    assert!(
        msg.contains("cannot read ServiceAccount payments/app")
            && msg.contains("unreachable")
            && msg.contains("retry"),
        "{msg}"
    );
    // Internal detail (addresses, hyper errors) stays in the logs.
    assert!(!msg.contains("127.0.0.1"), "{msg}");
    let m = metrics(&app).await;
    assert!(
        m.contains(r#"esi_webhook_service_account_lookups_total{result="error"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"esi_webhook_admissions_total{result="denied"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn a_slow_api_server_denies_the_pod_within_the_timeout() {
    let fake = FakeApi::new(Mode::Hang);
    let (app, _) = app_against(&fake.start().await, Duration::from_millis(300));
    let p = pod(
        Some("app"),
        json!({"esi.dev/generators": "db=payments/VaultDynamicSecret/db",
               "esi.dev/env": "DB_USER=db.username"}),
    );
    let started = Instant::now();
    let msg = denial_message(&admit(&app, &p, "api-slow").await);
    let took = started.elapsed();
    assert!(msg.contains("did not answer within 300ms"), "{msg}");
    // Well inside the MutatingWebhookConfiguration's 5 s.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(fake.hits(), 1);
}

#[tokio::test]
async fn missing_rbac_denies_the_pod_saying_what_is_needed() {
    let fake = FakeApi::new(Mode::Forbid);
    let (app, _) = app_against(&fake.start().await, Duration::from_secs(2));
    let p = pod(
        Some("app"),
        json!({"esi.dev/generators": "db=payments/VaultDynamicSecret/db",
               "esi.dev/env": "DB_USER=db.username"}),
    );
    let msg = denial_message(&admit(&app, &p, "api-403").await);
    assert!(msg.contains("`get` on serviceaccounts"), "{msg}");
    // Errors are not cached: the next admission asks again.
    denial_message(&admit(&app, &p, "api-403-again").await);
    assert_eq!(fake.hits(), 2);
}

#[tokio::test]
async fn a_bad_inherited_annotation_is_named_with_its_origin() {
    let fake = FakeApi::new(Mode::Serve);
    fake.add(
        "payments",
        "app",
        json!({"esi.dev/generators": "db=payments/VaultDynamicSecret/db",
               "esi.dev/refresh-at": "150%"}),
    );
    let (app, _) = app_against(&fake.start().await, Duration::from_secs(2));
    let p = pod(Some("app"), json!({"esi.dev/env": "DB_USER=db.username"}));
    let msg = denial_message(&admit(&app, &p, "bad-inherited").await);
    assert!(msg.contains("esi.dev/refresh-at"), "{msg}");
    assert!(
        msg.contains("inherits esi.dev/generators, esi.dev/refresh-at from its ServiceAccount"),
        "{msg}"
    );
}

#[tokio::test]
async fn without_a_client_no_defaults_are_read() {
    // The golden corpus and the HTTPS tests run this way; a Pod relying on defaults is denied
    // for what it lacks.
    let app = router(AppState::new(config()));
    let p = pod(Some("app"), json!({"esi.dev/env": "DB_USER=db.username"}));
    let msg = denial_message(&admit(&app, &p, "no-client").await);
    assert!(msg.contains("esi.dev/generators"), "{msg}");
    assert!(!msg.contains("ServiceAccount"), "{msg}");
}

/// Whoever reaches the webhook chooses the names it looks up: a name that is not a
/// Kubernetes name (it would become part of the request's URL) is denied without a call.
#[tokio::test]
async fn a_name_that_is_not_a_kubernetes_name_is_never_looked_up() {
    let fake = FakeApi::new(Mode::Serve);
    let (app, _) = app_against(&fake.start().await, Duration::from_secs(2));
    for name in ["../../secrets/x", "app?watch=true", "App", "a/b"] {
        let r = admit(&app, &pod(Some(name), json!({})), "bad-name").await;
        assert!(
            denial_message(&r).contains("not a valid Kubernetes name"),
            "{name}: {r}"
        );
    }
    assert_eq!(fake.hits(), 0);
}

/// A full cache lets its oldest entry go, not all of them: a stream of made-up names must not
/// turn every real lookup into a call.
#[tokio::test]
async fn a_full_cache_drops_its_oldest_entry_only() {
    let fake = FakeApi::new(Mode::Serve);
    for name in ["a", "b", "c"] {
        fake.add("payments", name, json!({}));
    }
    let base = fake.start().await;
    let client = kube::Client::try_from(kube::Config::new(base.parse().unwrap())).unwrap();
    let settings = Settings {
        max_entries: 2,
        ..Settings::default()
    };
    let state =
        AppState::new(config()).with_service_accounts(ServiceAccounts::new(client, settings));
    let app = router(state);
    for (name, hits) in [("a", 1), ("b", 2), ("c", 3), ("b", 3), ("c", 3), ("a", 4)] {
        let _ = admit(&app, &pod(Some(name), json!({})), name).await;
        assert_eq!(fake.hits(), hits, "after {name}");
    }
}

/// At most [`MAX_CONCURRENT_LOOKUPS`] calls reach the API server at once; the others wait
/// within their timeout. A burst of made-up names cannot become a burst of API calls.
#[tokio::test]
async fn lookups_reach_the_api_server_a_bounded_number_at_once() {
    use esi_webhook::service_account::MAX_CONCURRENT_LOOKUPS;
    let fake = FakeApi::new(Mode::Hang);
    let (app, _) = app_against(&fake.start().await, Duration::from_secs(2));
    let names: Vec<String> = (0..MAX_CONCURRENT_LOOKUPS * 3)
        .map(|i| format!("made-up-{i}"))
        .collect();
    let mut admissions = tokio::task::JoinSet::new();
    for name in names {
        let app = app.clone();
        admissions.spawn(async move { admit(&app, &pod(Some(&name), json!({})), "burst").await });
    }
    // Well before the timeouts: the first calls are in, the rest wait for a permit.
    let deadline = std::time::Instant::now() + Duration::from_millis(1500);
    while fake.hits() < MAX_CONCURRENT_LOOKUPS && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fake.hits(), MAX_CONCURRENT_LOOKUPS);
    for r in admissions.join_all().await {
        assert!(denial_message(&r).contains("did not answer"), "{r}");
    }
}
