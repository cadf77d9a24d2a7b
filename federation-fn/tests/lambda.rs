//! Lambda mode: recorded Function URL and API Gateway v2 events through the same router, and
//! the real binary in Lambda mode driven end to end by a loopback fake of the Lambda Runtime API,
//! with its lease keys and its OIDC issuer's keys in the environment or in AWS Secrets Manager
//! (moto's server, from scripts/peers/moto.sh: `ESI_TEST_MOTO_URL`), and its discovery document
//! and JWKS served through the Function URL.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use common::{Moto, REGION};
use esi_federation::lease::LeaseKeys;
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

/// Starts the fake Runtime API with `events` queued; returns it and its address.
async fn fake_runtime(events: Vec<String>) -> (Arc<FakeRuntime>, String) {
    let rt = Arc::new(FakeRuntime::default());
    *rt.events.lock().unwrap() = events;
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
    (rt, runtime_api)
}

/// The binary as Lambda starts it (no arguments, the runtime's variables, JSON logs), with the
/// configuration folder `config` and nothing else from this environment; add the lease keys.
fn lambda_command(runtime_api: &str, config: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_esi-federation"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "esi-federation")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("ESI_CONFIG", config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// A configuration folder with the `alpha` cluster of `issuer` and the test generators.
fn config_dir(issuer: &esi_federation::issuer::LocalIssuer) -> tempfile::TempDir {
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("esi.yaml"),
        common::cluster("alpha", &issuer.issuer()) + common::GENERATORS,
    )
    .unwrap();
    config
}

/// Waits up to 20 s for the first invocation's response (or error), then stops the process and
/// returns its logs; panics if it exits first.
async fn first_answer(rt: &FakeRuntime, mut child: Child) -> String {
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
    let logs = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        rt.errors.lock().unwrap().is_empty(),
        "runtime errors: {:?}\n{logs}",
        rt.errors.lock().unwrap()
    );
    logs
}

/// The envelope of the first invocation's response (a 200).
fn first_envelope(rt: &FakeRuntime) -> (String, serde_json::Value, serde_json::Value) {
    let (id, body) = rt.responses.lock().unwrap()[0].clone();
    let resp: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(resp["statusCode"], 200, "{resp}");
    let envelope: serde_json::Value = serde_json::from_str(resp["body"].as_str().unwrap()).unwrap();
    (id, resp, envelope)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_serves_lambda_invocations_from_the_runtime_api() {
    let issuer = common::issuer().await;
    let config = config_dir(&issuer);
    let token = common::token(&issuer, "default", "app");
    let (rt, runtime_api) =
        fake_runtime(vec![fixture("function-url-generate.json", &token, "")]).await;

    let child = lambda_command(&runtime_api, config.path())
        .env("ESI_LEASE_KEYS", LeaseKeys::generate_spec("k1"))
        .spawn()
        .unwrap();
    let logs = first_answer(&rt, child).await;
    let (id, resp, envelope) = first_envelope(&rt);
    assert_eq!(id, "req-1");
    assert_eq!(resp["headers"]["x-request-id"], "fixture-function-url-1");
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

// ---------------------------------------------------------------------------------------------
// Lease keys from AWS Secrets Manager (ESI_LEASE_KEYS_SECRET), against moto's server.

/// A ring of two fresh keys, newline-separated as the Terraform module writes it: `first` seals.
fn ring(first: &str, second: &str) -> String {
    format!(
        "{}\n{}\n",
        LeaseKeys::generate_spec(first),
        LeaseKeys::generate_spec(second)
    )
}

/// The base64 key material of a ring, to look for where it must not be.
fn key_material(ring: &str) -> Vec<String> {
    ring.lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(_, k)| k.trim_end_matches('=').to_owned())
        })
        .collect()
}

/// Issues a lease of the Fake generator through the binary in Lambda mode, configured by
/// `setup`; returns the sealed lease and the logs.
async fn lease_from_lambda(setup: impl FnOnce(&mut Command)) -> (String, String) {
    let issuer = common::issuer().await;
    let config = config_dir(&issuer);
    let token = common::token(&issuer, "default", "app");
    let event =
        fixture("function-url-generate.json", &token, "").replace("Password/db", "Fake/creds");
    let (rt, runtime_api) = fake_runtime(vec![event]).await;
    let mut cmd = lambda_command(&runtime_api, config.path());
    setup(&mut cmd);
    let logs = first_answer(&rt, cmd.spawn().unwrap()).await;
    let (_, _, envelope) = first_envelope(&rt);
    let lease = envelope["lease"]
        .as_str()
        .unwrap_or_else(|| panic!("no lease in {envelope}"))
        .to_owned();
    (lease, logs)
}

/// Runs the binary to its exit (at most 15 s; the secret's fetch deadline is 5 s).
fn exits_within(mut cmd: Command, what: &str) -> Output {
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what}: still running after 15s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Runs the binary to its exit and returns its stderr; it must have failed.
fn refused(cmd: Command, what: &str) -> String {
    let out = exits_within(cmd, what);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{what}: started: {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread")]
async fn lambda_seals_with_the_keys_of_its_secret() {
    let test = "lambda_seals_with_the_keys_of_its_secret";
    let Some(moto) = Moto::from_env(test) else {
        return;
    };
    let keys = ring("k7", "k6");
    let (_, arn) = moto
        .create(
            "ring",
            keys.clone().into(),
            &uuid::Uuid::new_v4().to_string(),
        )
        .await;

    // Only the secret's ARN: no ESI_LEASE_KEYS, no file.
    let (lease, logs) = lease_from_lambda(|cmd| {
        moto.aws_env(cmd);
        cmd.env("ESI_LEASE_KEYS_SECRET", &arn);
    })
    .await;
    assert!(lease.starts_with("v1.k7."), "{lease}");
    let claims = LeaseKeys::parse(&keys).unwrap().open(&lease).unwrap();
    assert_eq!(claims.generator, "default/Fake/creds");
    assert_eq!(
        (
            claims.subject.cluster.as_str(),
            claims.subject.service_account.as_str()
        ),
        ("alpha", "app")
    );
    // A ring of other keys with the same ids does not open it: the keys are the secret's.
    assert!(
        LeaseKeys::parse(&ring("k7", "k6"))
            .unwrap()
            .open(&lease)
            .is_err()
    );
    assert!(
        logs.contains("lease keys read from Secrets Manager"),
        "{logs}"
    );
    for key in key_material(&keys) {
        assert!(!logs.contains(&key), "a lease key reached the logs: {logs}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lambda_reads_the_pinned_version_of_its_secret() {
    let test = "lambda_reads_the_pinned_version_of_its_secret";
    let Some(moto) = Moto::from_env(test) else {
        return;
    };
    let (old, new) = (ring("k1", "k0"), ring("k2", "k1"));
    let (old_version, new_version) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let (name, _) = moto
        .create("pinned", old.clone().into(), &old_version)
        .await;
    let (status, json) = moto
        .call(
            "PutSecretValue",
            serde_json::json!({"SecretId": name, "SecretString": new, "ClientRequestToken": new_version}),
        )
        .await;
    assert_eq!(status, 200, "PutSecretValue: {json}");
    // The newer version is AWSCURRENT: an unpinned read would get the `k2` ring.
    let (_, current) = moto
        .call("GetSecretValue", serde_json::json!({"SecretId": name}))
        .await;
    assert_eq!(current["VersionId"], new_version.as_str(), "{current}");

    // By name (the region from AWS_REGION), through the service-specific endpoint variable.
    let (lease, _) = lease_from_lambda(|cmd| {
        moto.aws_env(cmd);
        cmd.env_remove("AWS_ENDPOINT_URL")
            .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", &moto.url)
            .env("ESI_LEASE_KEYS_SECRET", &name)
            .env("ESI_LEASE_KEYS_SECRET_VERSION", &old_version);
    })
    .await;
    assert!(lease.starts_with("v1.k1."), "{lease}");
    LeaseKeys::parse(&old).unwrap().open(&lease).unwrap();
    // `k1` of the current version is another key: the pinned version's `k1` sealed it.
    assert!(LeaseKeys::parse(&new).unwrap().open(&lease).is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn lambda_refuses_to_start_on_a_missing_or_unusable_secret() {
    let test = "lambda_refuses_to_start_on_a_missing_or_unusable_secret";
    let Some(moto) = Moto::from_env(test) else {
        return;
    };
    let config = tempfile::tempdir().unwrap();
    // A runtime with no events: a process that wrongly started would wait on it, not exit.
    let (rt, runtime_api) = fake_runtime(Vec::new()).await;
    let start = |secret: &str, version: Option<&str>| {
        let mut cmd = lambda_command(&runtime_api, config.path());
        moto.aws_env(&mut cmd);
        cmd.env("ESI_LEASE_KEYS_SECRET", secret);
        if let Some(v) = version {
            cmd.env("ESI_LEASE_KEYS_SECRET_VERSION", v);
        }
        cmd
    };

    let missing = format!("esi-missing-{}", uuid::Uuid::new_v4().simple());
    let stderr = refused(start(&missing, None), "missing secret");
    assert!(
        stderr.contains(&format!("lease keys secret \"{missing}\": not found")),
        "{stderr}"
    );

    let version = uuid::Uuid::new_v4().to_string();
    let (name, _) = moto
        .create("versioned", ring("k1", "k0").into(), &version)
        .await;
    let other = uuid::Uuid::new_v4().to_string();
    let stderr = refused(start(&name, Some(&other)), "missing version");
    assert!(
        stderr.contains(&format!("\"{name}\" version \"{other}\": not found")),
        "{stderr}"
    );

    // A key pasted without its id: refused, and the message does not quote it.
    let spec = LeaseKeys::generate_spec("k1");
    let bare = spec.strip_prefix("k1=").unwrap();
    let (name, _) = moto.create("bare", bare.into(), &version).await;
    let stderr = refused(start(&name, None), "malformed secret");
    assert!(
        stderr.contains(&format!(
            "lease keys secret \"{name}\": lease keys: entry 1:"
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&bare[..24]),
        "the secret's value reached stderr: {stderr}"
    );

    let (name, _) = moto
        .create(
            "binary",
            serde_json::json!({"SecretBinary": base64::engine::general_purpose::STANDARD.encode(&spec)}),
            &version,
        )
        .await;
    let stderr = refused(start(&name, None), "binary secret");
    assert!(
        stderr.contains("holds a binary value (SecretBinary)"),
        "{stderr}"
    );
    assert!(!stderr.contains(bare), "{stderr}");

    assert!(rt.responses.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn lambda_gives_up_on_an_unreachable_secrets_manager_within_its_deadline() {
    let config = tempfile::tempdir().unwrap();
    let (_rt, runtime_api) = fake_runtime(Vec::new()).await;
    let closed = esi_test_support::ClosedPort::new();
    let mut cmd = lambda_command(&runtime_api, config.path());
    cmd.env("AWS_ENDPOINT_URL", format!("http://{}", closed.addr()))
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "AKIAESITEST")
        .env("AWS_SECRET_ACCESS_KEY", "esi-test-secret-key")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("ESI_LEASE_KEYS_SECRET", "esi-lease-keys");
    let started = std::time::Instant::now();
    let stderr = refused(cmd, "unreachable Secrets Manager");
    assert!(
        stderr.contains("lease keys secret \"esi-lease-keys\": cannot reach Secrets Manager")
            || stderr.contains(
                "lease keys secret \"esi-lease-keys\": no answer from Secrets Manager within"
            ),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// A cold start reads its configuration while the lease keys' secret is fetched. The
/// configuration is a FIFO, and a loopback fake of Secrets Manager holds its answer (up to 3 s)
/// until the federation has opened it: a start that fetched the keys first and only then read
/// its configuration gets the secret late, after the hold, and fails here.
#[tokio::test(flavor = "multi_thread")]
async fn lambda_reads_its_configuration_while_the_secret_is_fetched() {
    let issuer = common::issuer().await;
    let dir = tempfile::tempdir().unwrap();
    let (fifo, keys) = common::fifo_config_and_held_keys(dir.path(), &issuer).await;
    let (rt, mut cmd) = lambda_generating(&issuer, &fifo.path).await;
    keys.give_to(&mut cmd);
    first_answer(&rt, cmd.spawn().unwrap()).await;
    fifo.join();
    let (_, _, envelope) = first_envelope(&rt);
    assert_eq!(envelope["data"]["password"].as_str().unwrap().len(), 20);
    keys.assert_overlapped("read its configuration");
}

/// A cold start fetches its clusters' keys while the lease keys' secret is fetched: the fake
/// Secrets Manager holds its answer until the cluster's JWKS has been asked for.
#[tokio::test(flavor = "multi_thread")]
async fn lambda_fetches_its_issuers_keys_while_the_secret_is_fetched() {
    let issuer = common::issuer().await;
    let (dir, keys) = common::watched_config_and_held_keys(&issuer).await;
    let (rt, mut cmd) = lambda_generating(&issuer, dir.path()).await;
    keys.give_to(&mut cmd);
    first_answer(&rt, cmd.spawn().unwrap()).await;
    let (_, _, envelope) = first_envelope(&rt);
    assert_eq!(envelope["data"]["password"].as_str().unwrap().len(), 20);
    keys.assert_overlapped("fetch its issuer's keys");
}

/// A fake runtime with one event, a Function URL `POST` of `default/Password/db` by
/// `default/app`, and the Lambda command on `config`.
async fn lambda_generating(
    issuer: &esi_federation::issuer::LocalIssuer,
    config: &std::path::Path,
) -> (Arc<FakeRuntime>, Command) {
    let token = common::token(issuer, "default", "app");
    let (rt, runtime_api) =
        fake_runtime(vec![fixture("function-url-generate.json", &token, "")]).await;
    (rt, lambda_command(&runtime_api, config))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_sources_of_lease_keys_are_refused_naming_both() {
    let config = tempfile::tempdir().unwrap();
    let (_rt, runtime_api) = fake_runtime(Vec::new()).await;
    let secret = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:esi-AbCdEf";

    let mut cmd = lambda_command(&runtime_api, config.path());
    cmd.env("ESI_LEASE_KEYS", LeaseKeys::generate_spec("k1"))
        .env("ESI_LEASE_KEYS_SECRET", secret);
    let stderr = refused(cmd, "ESI_LEASE_KEYS and the secret");
    assert!(
        stderr.contains("both ESI_LEASE_KEYS and ESI_LEASE_KEYS_SECRET are set"),
        "{stderr}"
    );

    let mut cmd = lambda_command(&runtime_api, config.path());
    cmd.env("ESI_LEASE_KEYS", LeaseKeys::generate_spec("k1"))
        .env("ESI_LEASE_KEYS_SECRET_VERSION", "v1");
    let stderr = refused(cmd, "a version without a secret");
    assert!(
        stderr.contains("ESI_LEASE_KEYS_SECRET_VERSION is set but ESI_LEASE_KEYS_SECRET is not"),
        "{stderr}"
    );

    // `serve`: the file flag and the secret.
    let keys = config.path().join("lease-keys");
    std::fs::write(&keys, LeaseKeys::generate_spec("k1")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_esi-federation"));
    cmd.env_clear()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config.path())
        .arg("--lease-keys-file")
        .arg(&keys)
        .env("ESI_LEASE_KEYS_SECRET", secret)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let stderr = refused(cmd, "--lease-keys-file and the secret");
    assert!(
        stderr.contains(
            "both --lease-keys-file (ESI_LEASE_KEYS_FILE) and ESI_LEASE_KEYS_SECRET are set"
        ),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// The federation as an OIDC issuer in Lambda: its signing keys from AWS Secrets Manager
// (ESI_ISSUER_KEYS_SECRET), its discovery document and JWKS through the Function URL.

const ISSUER_URL: &str = "https://esi.example.com";

/// A Function URL `GET path` without a token, as a relying party sends it.
fn oidc_event(path: &str) -> String {
    fixture("function-url-discovery.json", "", "")
        .replace(esi_backends::identity::DISCOVERY_PATH, path)
}

/// The binary's answer in Lambda mode to `event` (the Function URL response: `statusCode`,
/// `headers`, `body`) with the body parsed as JSON, and its logs; `setup` configures it.
async fn oidc_answer(
    event: String,
    setup: impl FnOnce(&mut Command),
) -> (serde_json::Value, serde_json::Value, String) {
    let issuer = common::issuer().await;
    let config = config_dir(&issuer);
    let (rt, runtime_api) = fake_runtime(vec![event]).await;
    let mut cmd = lambda_command(&runtime_api, config.path());
    setup(&mut cmd);
    let logs = first_answer(&rt, cmd.spawn().unwrap()).await;
    let (_, body) = rt.responses.lock().unwrap()[0].clone();
    let resp: serde_json::Value = serde_json::from_str(&body).unwrap();
    let text = match resp["isBase64Encoded"].as_bool() {
        Some(true) => String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(resp["body"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap(),
        _ => resp["body"].as_str().unwrap_or_default().to_owned(),
    };
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (resp, json, logs)
}

/// The JWKS an issuer at [`ISSUER_URL`] with `pem` publishes.
fn jwks_of(pem: &str) -> serde_json::Value {
    let issuer = esi_backends::identity::Issuer::new(ISSUER_URL, pem).unwrap();
    serde_json::from_str(issuer.jwks_json()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn lambda_publishes_the_issuer_keys_of_its_secret() {
    use esi_backends::identity::{DISCOVERY_PATH, JWKS_PATH, KeyAlgorithm};
    let test = "lambda_publishes_the_issuer_keys_of_its_secret";
    let Some(moto) = Moto::from_env(test) else {
        return;
    };
    // A rotation in progress: the current version signs with a new ES256 key and still
    // publishes the old RSA one; the previous version held the old key alone.
    let old = common::issuer_key_pem(KeyAlgorithm::Rs256);
    let current = format!("{}{old}", common::issuer_key_pem(KeyAlgorithm::Es256));
    let (old_version, current_version) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let (name, arn) = moto
        .create("issuer", old.clone().into(), &old_version)
        .await;
    let (status, json) = moto
        .call(
            "PutSecretValue",
            serde_json::json!({"SecretId": name, "SecretString": current, "ClientRequestToken": current_version}),
        )
        .await;
    assert_eq!(status, 200, "PutSecretValue: {json}");
    // The lease keys from their own secret: both secrets are read at start-up.
    let (_, lease_arn) = moto
        .create(
            "ring",
            ring("k2", "k1").into(),
            &uuid::Uuid::new_v4().to_string(),
        )
        .await;
    let by_arn = |cmd: &mut Command| {
        moto.aws_env(cmd);
        cmd.env("ESI_LEASE_KEYS_SECRET", &lease_arn)
            .env("ESI_ISSUER_URL", ISSUER_URL)
            .env("ESI_ISSUER_KEYS_SECRET", &arn);
    };

    // The discovery document through the Function URL: every path reaches the router.
    let (resp, doc, logs) = oidc_answer(oidc_event(DISCOVERY_PATH), by_arn).await;
    assert_eq!(resp["statusCode"], 200, "{resp}\n{logs}");
    assert_eq!(
        resp["headers"]["content-type"], "application/json",
        "{resp}"
    );
    assert_eq!(
        resp["headers"]["cache-control"], "public, max-age=300",
        "{resp}"
    );
    assert_eq!(doc["issuer"], ISSUER_URL);
    assert_eq!(doc["jwks_uri"], format!("{ISSUER_URL}{JWKS_PATH}"));
    assert!(
        logs.contains("issuer keys read from Secrets Manager")
            && logs.contains("lease keys read from Secrets Manager"),
        "{logs}"
    );
    for body in common::pem_bodies(&current) {
        assert!(
            !logs.contains(&body),
            "an issuer key reached the logs: {logs}"
        );
    }

    // The JWKS: the current version's two keys, the new one first (it signs).
    let (resp, jwks, _) = oidc_answer(oidc_event(JWKS_PATH), by_arn).await;
    assert_eq!(resp["statusCode"], 200, "{resp}");
    assert_eq!(jwks, jwks_of(&current));
    assert_eq!(jwks["keys"][0]["alg"], "ES256");

    // A pinned version, the secret by name through the service's own endpoint variable.
    let (_, jwks, _) = oidc_answer(oidc_event(JWKS_PATH), |cmd| {
        moto.aws_env(cmd);
        cmd.env_remove("AWS_ENDPOINT_URL")
            .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", &moto.url)
            .env("ESI_LEASE_KEYS", LeaseKeys::generate_spec("k1"))
            .env("ESI_ISSUER_URL", ISSUER_URL)
            .env("ESI_ISSUER_KEYS_SECRET", &name)
            .env("ESI_ISSUER_KEYS_SECRET_VERSION", &old_version);
    })
    .await;
    assert_eq!(jwks, jwks_of(&old));
}

#[tokio::test(flavor = "multi_thread")]
async fn lambda_refuses_to_start_on_an_unusable_issuer_keys_secret_without_showing_it() {
    use esi_backends::identity::KeyAlgorithm;
    let test = "lambda_refuses_to_start_on_an_unusable_issuer_keys_secret_without_showing_it";
    let Some(moto) = Moto::from_env(test) else {
        return;
    };
    let config = tempfile::tempdir().unwrap();
    // A runtime with no events: a process that wrongly started would wait on it, not exit.
    let (rt, runtime_api) = fake_runtime(Vec::new()).await;
    let start = |secret: &str, url: &str| {
        let mut cmd = lambda_command(&runtime_api, config.path());
        moto.aws_env(&mut cmd);
        cmd.env("ESI_LEASE_KEYS", LeaseKeys::generate_spec("k1"))
            .env("ESI_ISSUER_URL", url)
            .env("ESI_ISSUER_KEYS_SECRET", secret);
        cmd
    };
    let pem = common::issuer_key_pem(KeyAlgorithm::Rs256);
    let bodies = common::pem_bodies(&pem);
    let shows_no_key = |stderr: &str| {
        for body in &bodies {
            assert!(
                !stderr.contains(body.as_str()),
                "the issuer key reached stderr: {stderr}"
            );
        }
    };
    let version = uuid::Uuid::new_v4().to_string();

    let missing = format!("esi-missing-{}", uuid::Uuid::new_v4().simple());
    let stderr = refused(start(&missing, ISSUER_URL), "missing secret");
    assert!(
        stderr.contains(&format!("issuer keys secret \"{missing}\": not found"))
            && stderr.contains("check ESI_ISSUER_KEYS_SECRET, ESI_ISSUER_KEYS_SECRET_VERSION"),
        "{stderr}"
    );

    // The key's base64 pasted without its PEM armour.
    let (name, _) = moto
        .create("bare", bodies.join("\n").into(), &version)
        .await;
    let stderr = refused(start(&name, ISSUER_URL), "bare key");
    assert!(
        stderr.contains(&format!(
            "cannot serve as an OIDC issuer (keys from issuer keys secret \"{name}\"): the issuer keys hold no PEM private key"
        )),
        "{stderr}"
    );
    shows_no_key(&stderr);

    // A damaged key: its DER no longer parses.
    let damaged = pem.replacen(&bodies[1], &"A".repeat(bodies[1].len()), 1);
    let (name, _) = moto.create("damaged", damaged.into(), &version).await;
    let stderr = refused(start(&name, ISSUER_URL), "damaged key");
    assert!(stderr.contains("issuer key 1 "), "{stderr}");
    shows_no_key(&stderr);

    let (name, _) = moto
        .create(
            "binary",
            serde_json::json!({"SecretBinary": base64::engine::general_purpose::STANDARD.encode(&pem)}),
            &version,
        )
        .await;
    let stderr = refused(start(&name, ISSUER_URL), "binary secret");
    assert!(
        stderr.contains(&format!(
            "issuer keys secret \"{name}\": holds a binary value (SecretBinary); store the PEM private keys as text"
        )),
        "{stderr}"
    );
    shows_no_key(&stderr);

    // A good key at a URL relying parties would not fetch keys from.
    let (name, _) = moto.create("good", pem.clone().into(), &version).await;
    let stderr = refused(start(&name, "http://esi.example.com"), "plain http URL");
    assert!(stderr.contains("must use https"), "{stderr}");
    shows_no_key(&stderr);

    assert!(rt.responses.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_sources_of_issuer_keys_or_keys_without_a_url_are_refused_naming_them() {
    let config = tempfile::tempdir().unwrap();
    let (_rt, runtime_api) = fake_runtime(Vec::new()).await;
    let secret = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:esi-issuer-AbCdEf";
    let pem = common::issuer_key_pem(esi_backends::identity::KeyAlgorithm::Es256);
    let lambda = || {
        let mut cmd = lambda_command(&runtime_api, config.path());
        cmd.env("ESI_LEASE_KEYS", LeaseKeys::generate_spec("k1"));
        cmd
    };

    let mut cmd = lambda();
    cmd.env("ESI_ISSUER_URL", ISSUER_URL)
        .env("ESI_ISSUER_KEYS", &pem)
        .env("ESI_ISSUER_KEYS_SECRET", secret);
    let stderr = refused(cmd, "ESI_ISSUER_KEYS and the secret");
    assert!(
        stderr.contains(
            "both ESI_ISSUER_KEYS and ESI_ISSUER_KEYS_SECRET are set: give the issuer keys one way"
        ),
        "{stderr}"
    );

    let mut cmd = lambda();
    cmd.env("ESI_ISSUER_URL", ISSUER_URL)
        .env("ESI_ISSUER_KEYS", &pem)
        .env("ESI_ISSUER_KEYS_SECRET_VERSION", "v1");
    let stderr = refused(cmd, "a version without a secret");
    assert!(
        stderr.contains("ESI_ISSUER_KEYS_SECRET_VERSION is set but ESI_ISSUER_KEYS_SECRET is not"),
        "{stderr}"
    );

    let mut cmd = lambda();
    cmd.env("ESI_ISSUER_KEYS_SECRET", secret);
    let stderr = refused(cmd, "the secret without a URL");
    assert!(
        stderr.contains("issuer keys are set (ESI_ISSUER_KEYS_SECRET) but no issuer URL"),
        "{stderr}"
    );

    // `serve`: the file flag and the secret, then all three.
    let keys = config.path().join("issuer-keys.pem");
    std::fs::write(&keys, &pem).unwrap();
    let serve = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_esi-federation"));
        cmd.env_clear()
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config.path())
            .args(["--issuer-url", ISSUER_URL, "--issuer-keys-file"])
            .arg(&keys)
            .env("ESI_LEASE_KEYS", LeaseKeys::generate_spec("k1"))
            .env("ESI_ISSUER_KEYS_SECRET", secret)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    };
    let stderr = refused(serve(), "--issuer-keys-file and the secret");
    assert!(
        stderr.contains(
            "both --issuer-keys-file (ESI_ISSUER_KEYS_FILE) and ESI_ISSUER_KEYS_SECRET are set"
        ),
        "{stderr}"
    );
    let mut cmd = serve();
    cmd.env("ESI_ISSUER_KEYS", &pem);
    let stderr = refused(cmd, "three sources");
    assert!(
        stderr.contains("--issuer-keys-file (ESI_ISSUER_KEYS_FILE), ESI_ISSUER_KEYS, ESI_ISSUER_KEYS_SECRET are all set"),
        "{stderr}"
    );
    for body in common::pem_bodies(&pem) {
        assert!(!stderr.contains(&body), "{stderr}");
    }
}
