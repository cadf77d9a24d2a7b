//! Lambda mode: recorded Function URL and API Gateway v2 events through the same router, and
//! the real binary in Lambda mode driven end to end by a loopback fake of the Lambda Runtime API.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

fn fixture(name: &str, token: &str, body: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/lambda/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path)
        .unwrap()
        .replace("${TOKEN}", token)
        .replace(
            "${BODY_BASE64}",
            &base64::engine::general_purpose::STANDARD.encode(body),
        )
}

async fn through_router(
    state: &esi_federation::AppState,
    event: &str,
) -> (u16, HeaderMap, serde_json::Value) {
    let req = lambda_http::request::from_str(event).expect("lambda_http decodes the event");
    let resp = esi_federation::router(state.clone())
        .oneshot(req)
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn recorded_events_go_through_the_same_router() {
    let issuer = common::issuer().await;
    let yaml = common::cluster("alpha", &issuer.issuer()) + common::GENERATORS;
    let state = common::state(&yaml, common::settings(Duration::from_millis(300)));
    let token = common::token(&issuer, "default", "app");

    let (status, headers, json) =
        through_router(&state, &fixture("function-url-generate.json", &token, "")).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["data"]["password"].as_str().unwrap().len(), 20);
    assert_eq!(headers["x-request-id"], "fixture-function-url-1");
    assert_eq!(headers["content-type"], "application/json");

    let (status, _, json) =
        through_router(&state, &fixture("apigw-v2-whoami.json", &token, "")).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["cluster"], "alpha");

    // A lease from the Fake generator, revoked through a base64-bodied API Gateway event.
    let (_, _, envelope, _) = common::send(
        &state,
        common::post("/v1/generators/default/Fake/creds", Some(&token), None),
    )
    .await;
    let body = serde_json::json!({ "lease": envelope["lease"] }).to_string();
    let (status, _, json) = through_router(
        &state,
        &fixture("apigw-v2-revoke-base64.json", &token, &body),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["revoked"], true);

    // Errors keep their shape in Lambda too.
    let (status, headers, json) =
        through_router(&state, &fixture("apigw-v2-whoami.json", "not-a-token", "")).await;
    assert_eq!((status, common::code(&json)), (401, "invalid_token"));
    assert_eq!(headers["www-authenticate"], "Bearer");
}

/// A loopback fake of the Lambda Runtime API (`/2018-06-01/runtime/...`): hands out the queued
/// events one by one and records responses and errors.
#[derive(Default)]
struct FakeRuntime {
    events: Mutex<Vec<String>>,
    responses: Mutex<Vec<(String, String)>>,
    errors: Mutex<Vec<String>>,
    notify: tokio::sync::Notify,
}

async fn next(State(rt): State<Arc<FakeRuntime>>) -> Response {
    let event = rt.events.lock().unwrap().pop();
    let Some(event) = event else {
        // No more work: hold the long poll like the real service does.
        std::future::pending::<()>().await;
        unreachable!()
    };
    let id = format!("req-{}", rt.responses.lock().unwrap().len() + 1);
    let deadline = (std::time::SystemTime::now() + Duration::from_secs(30))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    (
        StatusCode::OK,
        [
            ("lambda-runtime-aws-request-id", id),
            ("lambda-runtime-deadline-ms", deadline.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:eu-west-1:123456789012:function:esi-federation".to_owned(),
            ),
            (
                "lambda-runtime-trace-id",
                "Root=1-6745a1b2-0123456789abcdef01234567;Parent=1;Sampled=0".to_owned(),
            ),
            ("content-type", "application/json".to_owned()),
        ],
        event,
    )
        .into_response()
}

async fn response(
    State(rt): State<Arc<FakeRuntime>>,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    rt.responses.lock().unwrap().push((id, body));
    rt.notify.notify_waiters();
    StatusCode::ACCEPTED
}

async fn error(State(rt): State<Arc<FakeRuntime>>, body: String) -> StatusCode {
    rt.errors.lock().unwrap().push(body);
    rt.notify.notify_waiters();
    StatusCode::ACCEPTED
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_serves_lambda_invocations_from_the_runtime_api() {
    let issuer = common::issuer().await;
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("esi.yaml"),
        common::cluster("alpha", &issuer.issuer()) + common::GENERATORS,
    )
    .unwrap();
    let token = common::token(&issuer, "default", "app");

    let rt = Arc::new(FakeRuntime::default());
    rt.events
        .lock()
        .unwrap()
        .push(fixture("function-url-generate.json", &token, ""));
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(error))
        .with_state(rt.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let runtime_api = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut child = Command::new(env!("CARGO_BIN_EXE_esi-federation"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", &runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "esi-federation")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("ESI_CONFIG", config.path())
        .env(
            "ESI_LEASE_KEYS",
            esi_federation::lease::LeaseKeys::generate_spec("k1"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let notified = rt.notify.notified();
        if !rt.responses.lock().unwrap().is_empty() || !rt.errors.lock().unwrap().is_empty() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "lambda process exited {status}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + Duration::from_millis(200)),
            notified,
        )
        .await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "no invocation response within 20s"
        );
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(
        rt.errors.lock().unwrap().is_empty(),
        "runtime errors: {:?}\n{logs}",
        rt.errors.lock().unwrap()
    );
    let (id, body) = rt.responses.lock().unwrap()[0].clone();
    assert_eq!(id, "req-1");
    let resp: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(resp["statusCode"], 200, "{resp}");
    assert_eq!(resp["headers"]["x-request-id"], "fixture-function-url-1");
    let envelope: serde_json::Value = serde_json::from_str(resp["body"].as_str().unwrap()).unwrap();
    assert_eq!(envelope["data"]["password"].as_str().unwrap().len(), 20);
    // Logs are JSON lines (AWS_LAMBDA_LOG_FORMAT=JSON) and hold neither the token nor the secret.
    assert!(
        logs.lines()
            .filter(|l| !l.is_empty())
            .all(|l| l.starts_with('{')),
        "{logs}"
    );
    assert!(!logs.contains(&token));
    assert!(!logs.contains(envelope["data"]["password"].as_str().unwrap()));
}
