//! Lambda mode: recorded Function URL and API Gateway v2 events through the same router, and
//! the real binary in Lambda mode driven end to end by a loopback fake of the Lambda Runtime API,
//! with its lease keys in the environment or in AWS Secrets Manager (moto's server, from
//! scripts/peers/moto.sh: `ESI_TEST_MOTO_URL`).

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
use esi_federation::lease::LeaseKeys;
use esi_test_support::peer;
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

/// moto's server. It checks no signature, so the secrets are created with plain JSON calls; the
/// credential scope in the Authorization header routes them to Secrets Manager in eu-west-1.
struct Moto {
    url: String,
}

const REGION: &str = "eu-west-1";

impl Moto {
    fn from_env(test: &str) -> Option<Self> {
        peer("ESI_TEST_MOTO_URL", test).map(|url| Moto { url })
    }

    /// Calls a Secrets Manager action; returns its status and JSON answer.
    async fn call(&self, action: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}/", self.url))
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", format!("secretsmanager.{action}"))
            .header(
                "authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential=AKIAESITEST/20260101/{REGION}/secretsmanager/aws4_request, SignedHeaders=host, Signature=00"
                ),
            )
            .json(&body)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap_or_else(|e| panic!("moto {action}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Creates a secret named `esi-<what>-<random>` holding `value` (`SecretString`, or
    /// `SecretBinary` for `{"SecretBinary": ...}`) as version `version`; returns its name and ARN.
    async fn create(
        &self,
        what: &str,
        value: serde_json::Value,
        version: &str,
    ) -> (String, String) {
        let name = format!("esi-{what}-{}", uuid::Uuid::new_v4().simple());
        let mut body = serde_json::json!({"Name": name, "ClientRequestToken": version});
        match value {
            serde_json::Value::String(text) => body["SecretString"] = text.into(),
            serde_json::Value::Object(o) => body.as_object_mut().unwrap().extend(o),
            other => panic!("secret value {other}"),
        }
        let (status, json) = self.call("CreateSecret", body).await;
        assert_eq!(status, 200, "CreateSecret: {json}");
        (name, json["ARN"].as_str().unwrap().to_owned())
    }

    /// The variables that point the SDK at moto with throwaway credentials.
    fn aws_env(&self, cmd: &mut Command) {
        cmd.env("AWS_ENDPOINT_URL", &self.url)
            .env("AWS_REGION", REGION)
            .env("AWS_ACCESS_KEY_ID", "AKIAESITEST")
            .env("AWS_SECRET_ACCESS_KEY", "esi-test-secret-key")
            .env("AWS_SESSION_TOKEN", "esi-test-session-token")
            .env("AWS_EC2_METADATA_DISABLED", "true");
    }
}

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
