//! The real-socket tests: AdmissionReview JSON over HTTPS (rustls, certificates generated here
//! with rcgen), and the certificate reload observed by clients that trust only the old or only
//! the new CA.

// Test helpers outside #[test] functions are not covered by clippy's allow-unwrap-in-tests.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use esi_test_support::{Pki, pki};
use esi_webhook::server::{self, TlsFiles};
use esi_webhook::{AppState, WebhookConfig};
use serde_json::{Value, json};

/// Replaces a file atomically, as the kubelet does for Secret volumes.
fn write_atomic(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn config() -> WebhookConfig {
    WebhookConfig::from_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/config.yaml"),
    )
    .unwrap()
}

struct Server {
    base: String,
    running: server::Running,
    _dir: tempfile::TempDir,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn start(p: &Pki, reload: Duration) -> Server {
    start_with(p, reload, esi_serving::Limits::DEFAULT)
}

fn start_with(p: &Pki, reload: Duration, limits: esi_serving::Limits) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, &p.cert_pem).unwrap();
    std::fs::write(&key, &p.key_pem).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let running = server::serve(
        listener,
        AppState::new(config()),
        TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        },
        reload,
        limits,
    )
    .unwrap();
    let base = format!("https://127.0.0.1:{}", running.addr.port());
    Server {
        base,
        running,
        _dir: dir,
        cert,
        key,
    }
}

fn review(pod: Value, uid: &str) -> Value {
    esi_webhook::review::pod_create_review(&pod, "payments", uid)
}

fn pod(security_context: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "api-", "labels": {"esi.dev/inject": "true"},
                     "annotations": {"esi.dev/generators": "db=payments/VaultDynamicSecret/db",
                                     "esi.dev/env": "DB_USER=db.username"}},
        "spec": {"securityContext": security_context,
                 "containers": [{"name": "app", "image": "x", "command": ["/app"], "args": ["a b", "c,d"]}]}
    })
}

#[tokio::test]
async fn admission_review_over_https() {
    let p = pki("esi-webhook").unwrap();
    let s = start(&p, Duration::from_secs(3600));
    let c = client(&p.ca_pem);
    let url = format!("{}/mutate", s.base);

    // Injected: uid echoed, base64 patch (not an array of numbers), applies to the Pod.
    let original = pod(json!({"runAsUser": 1000}));
    let resp = c
        .post(&url)
        .json(&review(original.clone(), "7d3c-ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    let r = &body["response"];
    assert_eq!(r["uid"], "7d3c-ok");
    assert_eq!(r["allowed"], true);
    assert_eq!(r["patchType"], "JSONPatch");
    assert!(
        r["patch"].is_string(),
        "patch must be a base64 string: {}",
        r["patch"]
    );
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(r["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut patched = original.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(patched.clone()).unwrap();
    let app = &typed.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        app.command.as_deref().unwrap(),
        [
            "/esi/bin/esi-cli",
            "exec",
            "--container",
            "app",
            "--",
            "/app"
        ]
    );
    assert_eq!(app.args.as_deref().unwrap(), ["a b", "c,d"]);
    assert_eq!(
        typed
            .spec
            .as_ref()
            .unwrap()
            .init_containers
            .as_ref()
            .unwrap()[0]
            .name,
        "esi-init"
    );

    // Denied: uid echoed, message names what to fix.
    let resp = c
        .post(&url)
        .json(&review(pod(json!({})), "7d3c-deny"))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["response"]["uid"], "7d3c-deny");
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(body["response"]["status"]["code"], 403);
    let msg = body["response"]["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("runAsUser") && msg.contains("esi.dev/run-as"),
        "{msg}"
    );
    assert!(body["response"].get("patch").is_none());

    // Malformed: still an AdmissionReview, denied, uid kept when readable.
    let resp = c
        .post(&url)
        .header("content-type", "application/json")
        .body(r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"7d3c-bad","object":42}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["response"]["uid"], "7d3c-bad");
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(body["response"]["status"]["code"], 400);
    let resp = c.post(&url).body("not json").send().await.unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["response"]["allowed"], false);

    // UPDATE is never mutated.
    let mut upd = review(original, "7d3c-upd");
    upd["request"]["operation"] = json!("UPDATE");
    let body: Value = c
        .post(&url)
        .json(&upd)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["response"]["allowed"], true);
    assert!(body["response"].get("patch").is_none());

    // Probes and metrics.
    assert_eq!(
        c.get(format!("{}/healthz", s.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{}/readyz", s.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = c
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"esi_webhook_admissions_total{result="injected"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"esi_webhook_admissions_total{result="denied"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"esi_webhook_admissions_total{result="invalid"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("esi_webhook_admission_duration_seconds_count 5"),
        "{metrics}"
    );
    s.running.handle.shutdown();
}

async fn handshake_ok(ca_pem: &str, base: &str) -> bool {
    client(ca_pem)
        .get(format!("{base}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn certificate_reload_is_seen_by_clients() {
    let old = pki("old").unwrap();
    let new = pki("new").unwrap();
    let s = start(&old, Duration::from_millis(50));
    assert!(
        handshake_ok(&old.ca_pem, &s.base).await,
        "serves the initial certificate"
    );
    assert!(
        !handshake_ok(&new.ca_pem, &s.base).await,
        "a client trusting only the new CA fails at first"
    );

    // cert-manager rotates the Secret.
    write_atomic(&s.key, &new.key_pem);
    write_atomic(&s.cert, &new.cert_pem);
    wait_until("the new certificate", || handshake_ok(&new.ca_pem, &s.base)).await;
    assert!(
        !handshake_ok(&old.ca_pem, &s.base).await,
        "the old certificate is no longer served"
    );

    // A broken file is not loaded: the last good certificate keeps serving.
    write_atomic(
        &s.cert,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    );
    let c = client(&new.ca_pem);
    let metrics_url = format!("{}/metrics", s.base);
    wait_until("the reload error metric", || {
        let c = c.clone();
        let u = metrics_url.clone();
        async move {
            let Ok(r) = c.get(u).send().await else {
                return false;
            };
            r.text()
                .await
                .is_ok_and(|t| t.contains(r#"esi_webhook_tls_reloads_total{result="error"}"#))
        }
    })
    .await;
    assert!(
        handshake_ok(&new.ca_pem, &s.base).await,
        "still serving the last good certificate"
    );
    let metrics = c
        .get(&metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"esi_webhook_tls_reloads_total{result="ok"} 1"#),
        "{metrics}"
    );
    s.running.handle.shutdown();
}

/// Limits small enough for a test to reach: a 1 s read timeout and two connections.
const TIGHT: esi_serving::Limits = esi_serving::Limits {
    read_timeout: Duration::from_secs(1),
    idle_timeout: Duration::from_secs(3600),
    max_connections: 2,
};

/// A client that connects and never starts TLS is cut off at the read timeout; over the cap a
/// connection is closed at once, and reviews are served again when the cap frees up.
#[tokio::test]
async fn silent_connections_are_closed_and_the_cap_turns_more_away() {
    let p = pki("esi-webhook").unwrap();
    let s = start_with(&p, Duration::from_secs(3600), TIGHT);
    let connect = || tokio::net::TcpStream::connect(s.running.addr);

    let mut silent = connect().await.unwrap();
    let took = esi_test_support::closed_within(&mut silent, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");

    let held = [connect().await.unwrap(), connect().await.unwrap()];
    // Both accepted before the third arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = connect().await.unwrap();
    let took = esi_test_support::closed_within(&mut third, Duration::from_millis(800)).await;
    assert!(took < Duration::from_millis(800));

    drop(held);
    let c = client(&p.ca_pem);
    let metrics = loop {
        // Once a slot is free again, the refusal and the silent client's close are counted.
        if let Ok(r) = c.get(format!("{}/metrics", s.base)).send().await {
            break r.text().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for counted in [
        r#"esi_webhook_connections_closed_total{reason="read_timeout"} 1"#,
        r#"esi_webhook_connections_closed_total{reason="refused"} 1"#,
    ] {
        assert!(metrics.contains(counted), "{counted} not in:\n{metrics}");
    }
    let url = format!("{}/mutate", s.base);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let sent = c
            .post(&url)
            .json(&review(pod(json!({"runAsUser": 1000})), "after-cap"))
            .send()
            .await;
        if sent.as_ref().is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no review served after the cap freed up: {sent:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// While the cap is reached, a keep-alive connection idle for longer than the read timeout is
/// closed to make room: a connection turned away wakes it, and the next one gets in.
#[tokio::test]
async fn an_idle_connection_makes_room_when_the_cap_turns_one_away() {
    let p = pki("esi-webhook").unwrap();
    let s = start_with(&p, Duration::from_secs(3600), TIGHT);
    let connect = || tokio::net::TcpStream::connect(s.running.addr);

    // A pooled keep-alive connection, answered and then idle past the read timeout.
    let pooled = client(&p.ca_pem);
    let r = pooled
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(1300)).await;

    let _held = connect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut turned_away = connect().await.unwrap();
    let took = esi_test_support::closed_within(&mut turned_away, Duration::from_millis(800)).await;
    assert!(took < Duration::from_millis(800));

    // The idle connection was closed at once, so there is room while `_held` still holds its
    // slot (its read timeout has not run out yet). The close runs on the idle connection's
    // task: a connection made before it is done is turned away too (and counted).
    let c = client(&p.ca_pem);
    let deadline = Instant::now() + Duration::from_millis(500);
    let metrics = loop {
        if let Ok(r) = c.get(format!("{}/metrics", s.base)).send().await {
            break r.text().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no room made for a new connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        metrics.contains(r#"esi_webhook_connections_closed_total{reason="evicted"} 1"#),
        "no eviction in:\n{metrics}"
    );
    assert!(
        !metrics.contains(r#"reason="read_timeout""#),
        "the held connection was closed first:\n{metrics}"
    );
    s.running.handle.shutdown();
}
