//! A custom backend behind the `Webhook` generator, end to end: the endpoint mints a
//! credential per call and can revoke it by id; the generator's `revoke` call gives each
//! credential a lease; `esi-cli init` hands the credential to the app and `esi-cli revoke` (the
//! workload ending) makes the federation call the endpoint's revoke route, so the credential
//! dies with the workload as a Vault lease does.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use esi_api::inject::{ContainerSpec, EnvMapping};
use esi_tests::{Federation, Issuer, Pod, config_dir, spec};
use serde_json::{Value, json};

/// The endpoint's credentials still alive, by id.
type Live = Arc<Mutex<BTreeSet<String>>>;

async fn issue(State(live): State<Live>, Json(asked): Json<Value>) -> Json<Value> {
    let mut live = live.lock().unwrap();
    let id = format!(
        "{}/cred-{}",
        asked["namespace"].as_str().unwrap(),
        live.len()
    );
    live.insert(id.clone());
    Json(json!({
        "id": id,
        "credentials": {"token": format!("token-of-{id}")},
        "expiresAt": jiff::Timestamp::now().as_second() + 600,
    }))
}

async fn revoke(State(live): State<Live>, Path(id): Path<String>) -> StatusCode {
    if live.lock().unwrap().remove(&id) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_webhook_credential_is_revoked_with_the_workload() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let live = Live::default();
    let app = axum::Router::new()
        .route("/creds/issue", post(issue))
        .route("/creds/{id}", delete(revoke))
        .with_state(live.clone());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });

    let issuer = Issuer::start();
    let manifests = format!(
        r#"
apiVersion: esi.dev/v1alpha1
kind: SecretStore
metadata: {{name: creds-api, namespace: payments}}
spec:
  provider:
    webhook:
      allowedUrls: ["{base}/creds/"]
---
apiVersion: esi.dev/v1alpha1
kind: Webhook
metadata: {{name: api, namespace: payments}}
spec:
  secretStoreRef: {{name: creds-api}}
  url: {base}/creds/issue
  body: '{{"namespace": "{{{{namespace}}}}", "ttl": "{{{{maxTTLSeconds}}}}"}}'
  result: {{jsonPath: "$.credentials", expiresAtJsonPath: "$.expiresAt"}}
  revoke:
    leaseJsonPath: "$.id"
    url: "{base}/creds/{{{{lease}}}}"
---
apiVersion: esi.dev/v1alpha1
kind: Authorization
metadata: {{name: payments-app}}
spec:
  subjects:
    - namespaces: [payments]
      serviceAccounts: [app]
  generators: [payments/Webhook/api]
  maxTTL: 15m
"#
    );
    let config = config_dir(&issuer.url(), &manifests);
    let fed = Federation::start(config.path(), "127.0.0.1:0", None);

    let pod = Pod::new(&issuer.token("payments", "app"));
    let spec = spec(
        &fed.url(),
        &[("api", "payments/Webhook/api")],
        &[(
            "app",
            ContainerSpec {
                env: vec![EnvMapping {
                    name: "API_TOKEN".into(),
                    alias: "api".into(),
                    key: "token".into(),
                }],
                env_from: vec![],
            },
        )],
        vec![],
    );
    let init = pod.cli(&spec).arg("init").output().unwrap();
    assert!(
        init.status.success(),
        "esi-cli init: {}\nfederation logs:\n{}",
        text(&init.stderr),
        fed.logs()
    );
    // The id holds a '/': percent-encoded into one path segment of the revoke URL.
    assert_eq!(
        live.lock().unwrap().iter().collect::<Vec<_>>(),
        ["payments/cred-0"]
    );

    // The app sees the endpoint's token.
    let app = std::process::Command::new(pod.path("bin/esi-cli"))
        .env("ESI_VOLUME_DIR", &pod.volume)
        .env_remove("ESI_SPEC")
        .args([
            "exec",
            "--container",
            "app",
            "--",
            "sh",
            "-c",
            "printf %s \"$API_TOKEN\"",
        ])
        .output()
        .unwrap();
    assert!(app.status.success(), "{}", text(&app.stderr));
    assert_eq!(text(&app.stdout), "token-of-payments/cred-0");

    // The workload ends: its lease is revoked, the endpoint's credential with it.
    let out = pod.cli(&spec).arg("revoke").output().unwrap();
    assert!(
        out.status.success() && text(&out.stderr).contains("revoked 1 lease"),
        "esi-cli revoke: {}\nfederation logs:\n{}",
        text(&out.stderr),
        fed.logs()
    );
    assert!(
        live.lock().unwrap().is_empty(),
        "the endpoint still holds it"
    );
    let again = pod.cli(&spec).arg("revoke").output().unwrap();
    assert!(again.status.success());
    assert!(text(&again.stderr).contains("nothing to revoke"));
}
