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
