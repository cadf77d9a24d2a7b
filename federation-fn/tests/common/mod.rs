//! Shared harness of the federation's integration tests: local issuers served over real HTTP,
//! configurations built around them, and a router to drive with `oneshot`.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use esi_federation::config;
use esi_federation::issuer::{LocalIssuer, SigningKey, TokenSpec};
use esi_federation::lease::LeaseKeys;
use esi_federation::state::{AppState, Settings};
use esi_federation::token::jwks::JwksSettings;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

/// Settings with a short JWKS cooldown so refresh behaviour is observable in tests.
pub fn settings(cooldown: Duration) -> Settings {
    Settings {
        jwks: JwksSettings {
            cooldown,
            timeout: Duration::from_secs(2),
            ..JwksSettings::default()
        },
        ..Settings::default()
    }
}

/// A local issuer with an RSA key, served on loopback.
pub async fn issuer() -> Arc<LocalIssuer> {
    let issuer = LocalIssuer::new(SigningKey::rsa());
    issuer.serve().await.expect("serve issuer");
    issuer
}

/// A Cluster manifest using discovery.
pub fn cluster(name: &str, issuer: &str) -> String {
    format!(
        "apiVersion: esi.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {name}\n  labels: {{env: test, name: {name}}}\nspec:\n  issuer: {issuer}\n  keys: {{discovery: {{}}}}\n  audiences: [esi]\n---\n"
    )
}

/// A Cluster manifest with an explicit JWKS URL.
pub fn cluster_jwks_uri(name: &str, issuer: &str, jwks_uri: &str) -> String {
    format!(
        "apiVersion: esi.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {name}\nspec:\n  issuer: {issuer}\n  keys: {{jwksUri: \"{jwks_uri}\"}}\n  audiences: [esi]\n---\n"
    )
}

/// Generators and an Authorization for `default/app` (all generators in `default`) plus
/// `team-*/worker` to `team/Fake/*`.
pub const GENERATORS: &str = r#"
apiVersion: esi.dev/v1alpha1
kind: Password
metadata: {name: db, namespace: default}
spec: {length: 20, allowRepeat: true}
---
apiVersion: esi.dev/v1alpha1
kind: Fake
metadata: {name: creds, namespace: default}
spec:
  data: {username: fake-user, password: fake-secret-value-123}
  leaseDuration: 15m
---
apiVersion: esi.dev/v1alpha1
kind: UUID
metadata: {name: id, namespace: default}
---
apiVersion: esi.dev/v1alpha1
kind: Authorization
metadata: {name: app}
spec:
  subjects:
    - namespaces: [default]
      serviceAccounts: [app]
  generators: ["default/*/*"]
---
apiVersion: esi.dev/v1alpha1
kind: Authorization
metadata: {name: limited}
spec:
  subjects:
    - namespaces: [limited]
      serviceAccounts: [app]
  generators: ["default/UUID/id"]
  rateLimit: {perMinute: 1, burst: 2}
---
"#;

/// State loaded from `yaml`.
pub fn state(yaml: &str, settings: Settings) -> AppState {
    let state = AppState::new(settings, LeaseKeys::ephemeral());
    let snap = config::load_text("test.yaml", yaml, &state).unwrap_or_else(|e| panic!("{e}"));
    state.install(snap);
    state
}

/// A default token for `namespace/sa`.
pub fn token(issuer: &LocalIssuer, namespace: &str, sa: &str) -> String {
    issuer.mint(&TokenSpec::new(namespace, sa))
}

/// Sends a request through the router.
pub async fn send(
    state: &AppState,
    req: Request<Body>,
) -> (u16, axum::http::HeaderMap, serde_json::Value, String) {
    let resp: Response<Body> = esi_federation::router(state.clone())
        .oneshot(req)
        .await
        .expect("infallible");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, headers, json, text)
}

/// A POST with a bearer token.
pub fn post(path: &str, token: Option<&str>, body: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().method("POST").uri(path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    match body {
        Some(body) => b
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .expect("request"),
        None => b.body(Body::empty()).expect("request"),
    }
}

/// A GET with an optional bearer token.
pub fn get(path: &str, token: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().method("GET").uri(path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Body::empty()).expect("request")
}

/// The error code of an error body.
pub fn code(json: &serde_json::Value) -> &str {
    json["error"]["code"].as_str().unwrap_or("<no error code>")
}

// ---------------------------------------------------------------------------------------------
// AWS Secrets Manager (the federation's key secrets), against moto's server.

/// moto's server. It checks no signature, so the secrets are created with plain JSON calls; the
/// credential scope in the Authorization header routes them to Secrets Manager in eu-west-1.
pub struct Moto {
    /// The server's base URL.
    pub url: String,
}

/// The region the secrets are created in.
pub const REGION: &str = "eu-west-1";

impl Moto {
    /// moto's server from `ESI_TEST_MOTO_URL`, or `None` (a skip) without it.
    pub fn from_env(test: &str) -> Option<Self> {
        esi_test_support::peer("ESI_TEST_MOTO_URL", test).map(|url| Moto { url })
    }

    /// Calls a Secrets Manager action; returns its status and JSON answer.
    pub async fn call(&self, action: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
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
    pub async fn create(
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
    pub fn aws_env(&self, cmd: &mut std::process::Command) {
        aws_env_at(cmd, &self.url);
    }
}

/// The variables that point the SDK at `endpoint` with throwaway credentials.
pub fn aws_env_at(cmd: &mut std::process::Command, endpoint: &str) {
    cmd.env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "AKIAESITEST")
        .env("AWS_SECRET_ACCESS_KEY", "esi-test-secret-key")
        .env("AWS_SESSION_TOKEN", "esi-test-session-token")
        .env("AWS_EC2_METADATA_DISABLED", "true");
}

// ---------------------------------------------------------------------------------------------
// The federation as an OIDC issuer.

/// A fresh issuer signing key as PKCS#8 PEM (what `esi-federation issuer-key` prints).
pub fn issuer_key_pem(alg: esi_backends::identity::KeyAlgorithm) -> String {
    use secrecy::ExposeSecret as _;
    esi_backends::identity::generate_key_pem(alg)
        .expect("key generation")
        .expose_secret()
        .to_owned()
}

/// The base64 body lines of a PEM text: what must never show in logs or errors.
pub fn pem_bodies(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 24)
        .map(str::to_owned)
        .collect()
}

/// The header and claims of the compact JWS `token`, after checking its signature with the key
/// of its `kid` in `jwks` (RS256 or ES256), as a relying party does; panics when it does not
/// verify.
pub fn verify_jws(jwks: &serde_json::Value, token: &str) -> (serde_json::Value, serde_json::Value) {
    use aws_lc_rs::signature;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s).expect("base64url");
    let (input, sig) = token.rsplit_once('.').expect("a compact JWS");
    let (header, claims) = input.split_once('.').expect("a compact JWS");
    let header: serde_json::Value = serde_json::from_slice(&b64(header)).expect("JSON header");
    let jwk = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .unwrap_or_else(|| panic!("kid {} is not in the JWKS {jwks}", header["kid"]));
    assert_eq!(jwk["alg"], header["alg"], "the JWK's alg pins the token's");
    let member = |name: &str| b64(jwk[name].as_str().expect("JWK member"));
    let sig = b64(sig);
    match header["alg"].as_str() {
        Some("RS256") => signature::RsaPublicKeyComponents {
            n: member("n"),
            e: member("e"),
        }
        .verify(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            input.as_bytes(),
            &sig,
        )
        .expect("the RS256 signature verifies against the JWKS"),
        Some("ES256") => {
            let mut point = vec![4u8];
            point.extend(member("x"));
            point.extend(member("y"));
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(input.as_bytes(), &sig)
                .expect("the ES256 signature verifies against the JWKS");
        }
        other => panic!("unexpected alg {other:?}"),
    }
    let claims = serde_json::from_slice(&b64(claims)).expect("JSON claims");
    (header, claims)
}

// ---------------------------------------------------------------------------------------------
// A cold start that reads its configuration while its keys are fetched.

/// A configuration written into a FIFO, and whether the federation has opened it: the writer
/// opens the FIFO once the federation has (an open for writing without a reader fails with
/// ENXIO), then writes the configuration whole.
pub struct ConfigFifo {
    /// The FIFO, what the federation is given as its configuration.
    pub path: std::path::PathBuf,
    /// Set once the federation has opened the FIFO.
    pub opened: Arc<std::sync::atomic::AtomicBool>,
    writer: std::thread::JoinHandle<()>,
}

impl ConfigFifo {
    /// A FIFO `esi.yaml` in `dir` that will hold `text` (under the pipe's 64 KiB, so one write
    /// needs no reader to drain it first).
    pub fn new(dir: &std::path::Path, text: String) -> Self {
        use std::io::Write as _;
        use std::sync::atomic::Ordering;

        assert!(text.len() < 60_000);
        let path = dir.join("esi.yaml");
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo {}", path.display());
        let opened = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (path, opened) = (path.clone(), opened.clone());
            std::thread::spawn(move || {
                use rustix::fs::{Mode, OFlags};
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                let fd = loop {
                    match rustix::fs::open(&path, OFlags::WRONLY | OFlags::NONBLOCK, Mode::empty())
                    {
                        Ok(fd) => break fd,
                        Err(rustix::io::Errno::NXIO) if std::time::Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(e) => panic!("the federation never opened its configuration: {e}"),
                    }
                };
                opened.store(true, Ordering::SeqCst);
                std::fs::File::from(fd).write_all(text.as_bytes()).unwrap();
            })
        };
        ConfigFifo {
            path,
            opened,
            writer,
        }
    }

    /// Waits for the configuration to have been written.
    pub fn join(self) {
        self.writer.join().unwrap();
    }
}

/// Lease keys from a loopback fake of Secrets Manager (`GetSecretValue`, any name) that holds
/// its answer (up to 3 s) until a flag is set: a start that waits for the answer before doing
/// what sets the flag gets its keys late, after the hold.
pub struct HeldKeys {
    endpoint: String,
    answered: Arc<std::sync::Mutex<Option<bool>>>,
}

impl HeldKeys {
    /// The fake, holding its answer until `until` is set.
    pub async fn until(until: Arc<std::sync::atomic::AtomicBool>) -> Self {
        use std::sync::atomic::Ordering;

        let secret = LeaseKeys::generate_spec("k1");
        let answered = Arc::new(std::sync::Mutex::new(None));
        let seen = answered.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |headers: axum::http::HeaderMap| async move {
                assert_eq!(
                    headers["x-amz-target"], "secretsmanager.GetSecretValue",
                    "{headers:?}"
                );
                let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
                while !until.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                *seen.lock().unwrap() = Some(until.load(Ordering::SeqCst));
                (
                    [("content-type", "application/x-amz-json-1.1")],
                    serde_json::json!({
                        "ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:esi-lease-keys-AbCdEf",
                        "Name": "esi-lease-keys",
                        "VersionId": "v1",
                        "SecretString": secret,
                        "VersionStages": ["AWSCURRENT"],
                    })
                    .to_string(),
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        HeldKeys { endpoint, answered }
    }

    /// Points `cmd` at the fake with throwaway credentials, its lease keys in the secret
    /// `esi-lease-keys`.
    pub fn give_to(&self, cmd: &mut std::process::Command) {
        aws_env_at(cmd, &self.endpoint);
        cmd.env("ESI_LEASE_KEYS_SECRET", "esi-lease-keys");
    }

    /// Asserts that the fake answered, and that the flag was set by then: the start did
    /// `what` while its keys were being fetched.
    pub fn assert_overlapped(&self, what: &str) {
        assert_eq!(
            *self.answered.lock().unwrap(),
            Some(true),
            "the start did not {what} while the lease keys' secret was fetched"
        );
    }
}

/// A FIFO configuration of `issuer`'s `alpha` cluster (discovery) and [`GENERATORS`] in `dir`,
/// and lease keys held until the federation has opened it.
pub async fn fifo_config_and_held_keys(
    dir: &std::path::Path,
    issuer: &LocalIssuer,
) -> (ConfigFifo, HeldKeys) {
    let fifo = ConfigFifo::new(dir, cluster("alpha", &issuer.issuer()) + GENERATORS);
    let keys = HeldKeys::until(fifo.opened.clone()).await;
    (fifo, keys)
}

/// A configuration folder of `issuer`'s `alpha` cluster, its keys at a watched `jwksUri` (see
/// [`watched_jwks`]), and [`GENERATORS`]; and lease keys held until that JWKS is asked for.
pub async fn watched_config_and_held_keys(issuer: &LocalIssuer) -> (tempfile::TempDir, HeldKeys) {
    let (jwks_uri, asked) = watched_jwks(issuer).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("esi.yaml"),
        cluster_jwks_uri("alpha", &issuer.issuer(), &jwks_uri) + GENERATORS,
    )
    .unwrap();
    (dir, HeldKeys::until(asked).await)
}

/// `issuer`'s JWKS served again on loopback, and whether it has been asked for: returns the
/// JWKS URL (for a Cluster's `keys.jwksUri`) and the flag.
pub async fn watched_jwks(issuer: &LocalIssuer) -> (String, Arc<std::sync::atomic::AtomicBool>) {
    let asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let jwks = issuer.jwks();
    let flag = asked.clone();
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || async move {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            axum::Json(jwks)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, asked)
}
