//! The real binary over real sockets: `esi-federation serve` as a subprocess with a config
//! folder, a local issuer, TLS with certificate reload, configuration reload, two replicas
//! sharing lease keys, graceful shutdown, and a scan of every log line and error body for the
//! secrets and tokens of the run.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use esi_federation::issuer::LocalIssuer;
use esi_federation::lease::LeaseKeys;
use esi_federation::testkit::ServeLogs;

const BIN: &str = env!("CARGO_BIN_EXE_esi-federation");

/// A running `esi-federation serve` whose stderr (JSON logs) is collected.
struct Server {
    child: Child,
    addr: String,
    logs: ServeLogs,
}

impl Server {
    fn start(config: &Path, lease_keys: &str, extra: &[&str]) -> Server {
        Self::start_with(Command::new(BIN), config, lease_keys, extra)
    }

    /// Started on one CPU (`taskset -c 0`), where the federation runs a single-threaded
    /// runtime: signals, reloads on the blocking pool and issuance must work there too.
    fn start_on_one_cpu(config: &Path, lease_keys: &str, extra: &[&str]) -> Server {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "0", BIN]);
        assert!(
            Command::new("taskset")
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "this test needs `taskset` (util-linux: apt-get install util-linux)"
        );
        Self::start_with(cmd, config, lease_keys, extra)
    }

    fn start_with(mut cmd: Command, config: &Path, lease_keys: &str, extra: &[&str]) -> Server {
        let interval: &[&str] = if extra.contains(&"--reload-interval") {
            &[]
        } else {
            &["--reload-interval", "200ms"]
        };
        cmd.args(["serve", "--config"])
            .arg(config)
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(interval)
            .args(extra)
            .env(
                "ESI_LOG",
                "debug,hyper=info,reqwest=info,rustls=info,h2=info",
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // None given: the command says where they come from (a secret).
        if !lease_keys.is_empty() {
            cmd.env("ESI_LEASE_KEYS", lease_keys);
        }
        let mut child = cmd.spawn().expect("spawn esi-federation");
        let logs = ServeLogs::follow(child.stderr.take().expect("stderr"));
        let addr = match logs.serving.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start; logs:\n{}", logs.text());
            }
        };
        Server { child, addr, logs }
    }

    fn logs(&self) -> String {
        self.logs.text()
    }

    /// The answer to `POST /v1/generators/{generator}` by `default/app`, which must be a 200.
    async fn generate(&self, issuer: &LocalIssuer, generator: &str) -> serde_json::Value {
        let resp = reqwest::Client::new()
            .post(format!("http://{}/v1/generators/{generator}", self.addr))
            .bearer_auth(common::token(issuer, "default", "app"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{generator}");
        resp.json().await.unwrap()
    }

    fn sigterm(&self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        self.sigterm();
        self.wait_exit()
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_dir(issuer: &LocalIssuer) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cluster.yaml"),
        common::cluster("alpha", &issuer.issuer()),
    )
    .unwrap();
    std::fs::write(dir.path().join("generators.yaml"), common::GENERATORS).unwrap();
    dir
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_reloads_shares_leases_and_never_logs_secrets() {
    let issuer = common::issuer().await;
    let dir = config_dir(&issuer);
    let keys = LeaseKeys::generate_spec("k1");
    let one = Server::start(dir.path(), &keys, &[]);
    let two = Server::start(dir.path(), &keys, &[]);
    let http = reqwest::Client::new();
    let token = common::token(&issuer, "default", "app");
    let mut secrets: Vec<String> = vec![token.clone()];
    let mut bodies: Vec<String> = Vec::new();

    // Issue from replica one.
    let resp = http
        .post(format!(
            "http://{}/v1/generators/default/Fake/creds",
            one.addr
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let env: serde_json::Value = resp.json().await.unwrap();
    let lease = env["lease"].as_str().unwrap().to_owned();
    secrets.push(env["data"]["password"].as_str().unwrap().to_owned());
    let resp = http
        .post(format!(
            "http://{}/v1/generators/default/Password/db",
            one.addr
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let env: serde_json::Value = resp.json().await.unwrap();
    secrets.push(env["data"]["password"].as_str().unwrap().to_owned());

    // Revoke through replica two: no shared state but the lease keys.
    let resp = http
        .post(format!("http://{}/v1/revoke", two.addr))
        .bearer_auth(&token)
        .json(&serde_json::json!({"lease": lease}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["revoked"],
        true
    );

    // Error paths, whose bodies are scanned too.
    for (path, tok) in [
        ("/v1/generators/default/Password/db", format!("{token}x")),
        ("/v1/generators/other/Password/db", token.clone()),
        ("/v1/generators/default/Password/none", token.clone()),
    ] {
        let resp = http
            .post(format!("http://{}{path}", one.addr))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_client_error());
        bodies.push(resp.text().await.unwrap());
    }
    let resp = http
        .post(format!("http://{}/v1/revoke", one.addr))
        .bearer_auth(&token)
        .body(format!("{{\"lease\": \"{lease}\", \"x\": 1}}"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    bodies.push(resp.text().await.unwrap());
    // The server serves the same API as the router the tests drive in-process: the issuance
    // routes' method check, and the routes behind them.
    let resp = http
        .get(format!("http://{}/v1/generators/default/UUID/id", one.addr))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            resp.status().as_u16(),
            resp.headers()["allow"].to_str().unwrap()
        ),
        (405, "POST")
    );
    let resp = http
        .get(format!("http://{}/v1/whoami", one.addr))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["namespace"],
        "default"
    );
    let resp = http
        .get(format!("http://{}/v2/nothing", one.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    bodies.push(resp.text().await.unwrap());

    // Configuration reload: a new Authorization takes effect without restart.
    let newcomer = common::token(&issuer, "ops", "runner");
    secrets.push(newcomer.clone());
    let url = format!("http://{}/v1/generators/default/UUID/id", one.addr);
    assert_eq!(
        http.post(&url)
            .bearer_auth(&newcomer)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    std::fs::write(
        dir.path().join("ops.yaml"),
        "apiVersion: esi.dev/v1alpha1\nkind: Authorization\nmetadata: {name: ops}\nspec:\n  subjects: [{namespaces: [ops], serviceAccounts: [runner]}]\n  generators: [default/UUID/id]\n",
    )
    .unwrap();
    wait_for("the new Authorization", async || {
        http.post(&url)
            .bearer_auth(&newcomer)
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    // A broken file is reported and the last good configuration keeps serving.
    std::fs::write(dir.path().join("ops.yaml"), "apiVersion: esi.dev/v1alpha1\nkind: Authorization\nmetadata: {name: ops}\nspec: {subjects: [{}], generators: [x/y/z]}\n").unwrap();
    wait_for("the reload failure", async || {
        one.logs().contains("configuration reload failed")
    })
    .await;
    assert_eq!(
        http.post(&url)
            .bearer_auth(&newcomer)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(one.logs.logged("constrains nothing"), "{}", one.logs());
    let metrics = http
        .get(format!("http://{}/metrics", one.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("esi_federation_config_reloads_total{result=\"error\"}"),
        "{metrics}"
    );

    // An unauthenticated call's path is logged at most as long as a valid reference.
    let long = "a".repeat(20_000);
    let status = http
        .post(format!(
            "http://{}/v1/generators/{long}/Password/db",
            one.addr
        ))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    let prefix = format!("\"generator\":\"{}", "a".repeat(700));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !one.logs().contains(&prefix) {
        assert!(
            std::time::Instant::now() < deadline,
            "no audit line for the long path"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !one.logs().contains(&"a".repeat(800)),
        "the caller's whole path reached the log"
    );

    // Audit lines exist and carry the identity.
    assert!(
        one.logs.logged("\"target\":\"esi::audit\""),
        "{}",
        one.logs()
    );
    let logs = one.logs() + &two.logs();
    assert!(logs.contains("\"service_account\":\"app\""), "{logs}");

    // Graceful shutdown.
    assert!(one.terminate().success());
    assert!(two.terminate().success());

    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret or token reached the logs"
        );
        for body in &bodies {
            assert!(
                !body.contains(secret.as_str()),
                "a secret or token reached an error body: {body}"
            );
        }
    }
    // The lease handle's content (the backend id) never appears either.
    assert!(!logs.contains("\"fake\":"));
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_certificate_is_reloaded_when_the_files_change() {
    esi_federation::server::install_crypto_provider();
    let issuer = common::issuer().await;
    let dir = config_dir(&issuer);
    let tls = tempfile::tempdir().unwrap();
    let esi_test_support::Pki {
        ca_pem: ca1,
        cert_pem: cert1,
        key_pem: key1,
    } = esi_test_support::pki("first").unwrap();
    std::fs::write(tls.path().join("tls.crt"), &cert1).unwrap();
    std::fs::write(tls.path().join("tls.key"), &key1).unwrap();
    let cert = tls.path().join("tls.crt");
    let key = tls.path().join("tls.key");
    let server = Server::start(
        dir.path(),
        &LeaseKeys::generate_spec("k1"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let port = server.addr.rsplit(':').next().unwrap().to_owned();
    let url = format!("https://localhost:{port}/healthz");
    let client_for = |ca: &str| {
        reqwest::Client::builder()
            .tls_certs_only(vec![reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    assert_eq!(
        client_for(&ca1).get(&url).send().await.unwrap().status(),
        200
    );
    let esi_test_support::Pki {
        ca_pem: ca2,
        cert_pem: cert2,
        key_pem: key2,
    } = esi_test_support::pki("second").unwrap();
    assert!(
        client_for(&ca2).get(&url).send().await.is_err(),
        "the second CA must not be trusted yet"
    );
    std::fs::write(tls.path().join("tls.key"), &key2).unwrap();
    std::fs::write(tls.path().join("tls.crt"), &cert2).unwrap();
    let second = client_for(&ca2);
    wait_for("the new certificate", async || {
        second
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(
        client_for(&ca1).get(&url).send().await.is_err(),
        "the old certificate is gone"
    );
    assert!(server.terminate().success());
}

#[test]
fn refuses_to_start_on_a_broken_configuration_or_without_lease_keys() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "apiVersion: esi.dev/v1alpha1\nkind: Cluster\nmetadata: {name: x}\nspec: {issuer: https://x.example}\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .env("ESI_LEASE_KEYS", LeaseKeys::generate_spec("k1"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml#1: Cluster/x: spec: missing field `audiences`"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.path())
        .env_remove("ESI_LEASE_KEYS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no lease keys"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new(BIN)
        .arg("check")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// On one CPU: the single-threaded runtime serves, reloads on SIGHUP and shuts down cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_configuration_at_once() {
    let issuer = common::issuer().await;
    let dir = config_dir(&issuer);
    let server = Server::start_on_one_cpu(
        dir.path(),
        &LeaseKeys::generate_spec("k1"),
        &["--reload-interval", "1h"],
    );
    let http = reqwest::Client::new();
    let newcomer = common::token(&issuer, "ops", "runner");
    let url = format!("http://{}/v1/generators/default/UUID/id", server.addr);
    assert_eq!(
        http.post(&url)
            .bearer_auth(&newcomer)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    std::fs::write(
        dir.path().join("ops.yaml"),
        "apiVersion: esi.dev/v1alpha1\nkind: Authorization\nmetadata: {name: ops}\nspec:\n  subjects: [{namespaces: [ops]}]\n  generators: [default/UUID/id]\n",
    )
    .unwrap();
    // With a one-hour poll interval only the signal can explain a prompt reload.
    Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    wait_for("the reload on SIGHUP", async || {
        http.post(&url)
            .bearer_auth(&newcomer)
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    assert!(server.logs.logged("SIGHUP"), "{}", server.logs());
    assert!(server.terminate().success());
}

/// SIGTERM stops new connections at once but lets a request in flight finish.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_request_in_flight_finish() {
    // The issuer answers discovery and its JWKS 2.5 s late each: the start stops waiting for
    // the keys after 3 s, and the first request waits for the fetch still running (~2 s more).
    let issuer = LocalIssuer::new(esi_federation::issuer::SigningKey::rsa());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    issuer.set_issuer(&format!("http://{}", listener.local_addr().unwrap()));
    let app = issuer.router().layer(axum::middleware::from_fn(
        |req: axum::extract::Request, next: axum::middleware::Next| async move {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            next.run(req).await
        },
    ));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = config_dir(&issuer);
    let mut server = Server::start(dir.path(), &LeaseKeys::generate_spec("k1"), &[]);
    let token = common::token(&issuer, "default", "app");
    let url = format!("http://{}/v1/generators/default/UUID/id", server.addr);
    let in_flight = tokio::spawn({
        let (url, token) = (url.clone(), token.clone());
        async move {
            let started = Instant::now();
            let resp = reqwest::Client::new()
                .post(&url)
                .bearer_auth(&token)
                .send()
                .await;
            (resp, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !in_flight.is_finished(),
        "the request did not wait for the keys"
    );
    server.sigterm();

    // New connections are refused while the request in flight is served.
    wait_for("the listener to close", async || {
        tokio::net::TcpStream::connect(&server.addr).await.is_err()
    })
    .await;
    let (resp, took) = in_flight.await.unwrap();
    let resp = resp.expect("the request in flight was cut off");
    assert_eq!(resp.status(), 200, "{}", server.logs());
    assert!(
        took > Duration::from_millis(600),
        "answered after {took:?}: the request was not in flight during the shutdown"
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["data"]["uuid"].is_string(), "{body}");
    assert!(server.wait_exit().success(), "{}", server.logs());
    assert!(
        server.logs.logged("draining in-flight requests"),
        "{}",
        server.logs()
    );
}

/// A SecretStore may not read the federation's own secrets: `serve` refuses, at start, a
/// configuration whose store names its lease-keys file (also through a link), the lease keys'
/// variable, its IRSA web identity token file, or the files of its Azure and Google identities
/// (which only an `azure` or `gcp` store may read), saying which field, and never prints them.
#[tokio::test]
async fn a_store_naming_the_federations_own_secrets_is_refused() {
    let issuer = common::issuer().await;
    let keys = LeaseKeys::generate_spec("k1");
    let secrets = tempfile::tempdir().unwrap();
    let keys_file = secrets.path().join("keys");
    std::fs::write(&keys_file, &keys).unwrap();
    let link = secrets.path().join("header");
    std::os::unix::fs::symlink(&keys_file, &link).unwrap();
    let web_identity = secrets.path().join("eks-token");
    std::fs::write(&web_identity, "eyJ.irsa.token").unwrap();
    // Files of the federation's Azure and Google identities: only their own store may read them.
    let azure_identity = secrets.path().join("azure-identity-token");
    std::fs::write(&azure_identity, "eyJ.azure.token").unwrap();
    let google_key = secrets.path().join("key.json");
    std::fs::write(&google_key, r#"{"private_key": "eyJ.google.key"}"#).unwrap();
    for (reference, field) in [
        (
            format!("{{file: {}}}", keys_file.display()),
            "headers.X-Stolen.file",
        ),
        (
            format!("{{file: {}}}", link.display()),
            "headers.X-Stolen.file",
        ),
        ("{env: ESI_LEASE_KEYS}".to_owned(), "headers.X-Stolen.env"),
        (
            format!("{{file: {}}}", web_identity.display()),
            "headers.X-Stolen.file",
        ),
        (
            format!("{{file: {}}}", azure_identity.display()),
            "headers.X-Stolen.file",
        ),
        (
            format!("{{file: {}}}", google_key.display()),
            "headers.X-Stolen.file",
        ),
    ] {
        let dir = stealing_config(&issuer, &reference);
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(dir.path())
            .arg("--lease-keys-file")
            .arg(&keys_file)
            .env("ESI_LEASE_KEYS", &keys)
            .env("AWS_WEB_IDENTITY_TOKEN_FILE", &web_identity)
            .env("AZURE_FEDERATED_TOKEN_FILE", &azure_identity)
            .env("GOOGLE_APPLICATION_CREDENTIALS", &google_key);
        let stderr = refused_to_start(cmd, &reference);
        assert!(stderr.contains(field), "{reference}: {stderr}");
        assert!(stderr.contains("federation's own"), "{reference}: {stderr}");
        let secret = keys.split_once('=').unwrap().1.trim();
        assert!(!stderr.contains(secret), "the lease key reached stderr");
        for token in ["eyJ.irsa", "eyJ.azure", "eyJ.google"] {
            assert!(!stderr.contains(token), "{token} reached stderr");
        }
    }
}

/// A reload that failed is tried once more although the files then look unchanged: a mounted
/// ConfigMap caught mid-swap lists a link whose target is already gone (a dangling link, which
/// the change detection does not see), and its removal must not leave the new files unloaded.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_failed_mid_swap_is_tried_again() {
    let issuer = common::issuer().await;
    let dir = config_dir(&issuer);
    let keys = LeaseKeys::generate_spec("k1");
    // Slow enough that the link is gone before the retry, with room to spare.
    let server = Server::start(dir.path(), &keys, &["--reload-interval", "1s"]);
    let http = reqwest::Client::new();
    let newcomer = common::token(&issuer, "ops", "runner");
    let url = format!("http://{}/v1/generators/default/UUID/id", server.addr);
    let status = async || {
        http.post(&url)
            .bearer_auth(&newcomer)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(status().await, 403);

    // The swap's middle: the old file's link is dangling, the new file is in.
    let dangling = dir.path().join("old.yaml");
    std::os::unix::fs::symlink(dir.path().join("..data/old.yaml"), &dangling).unwrap();
    std::fs::write(
        dir.path().join("ops.yaml"),
        "apiVersion: esi.dev/v1alpha1\nkind: Authorization\nmetadata: {name: ops}\nspec:\n  subjects: [{namespaces: [ops], serviceAccounts: [runner]}]\n  generators: [default/UUID/id]\n",
    )
    .unwrap();
    wait_for("the failed reload", async || {
        server.logs().contains("configuration reload failed")
    })
    .await;
    // The swap ends: the dangling link goes, which changes nothing the watcher sees.
    std::fs::remove_file(&dangling).unwrap();
    wait_for("the retried reload", async || status().await == 200).await;
    // Log lines are written in batches, up to a linger after the reload that logged them.
    wait_for("the retry's reason in the logs", async || {
        server.logs().contains("the last reload failed")
    })
    .await;
}

/// A zero period or timeout, or a cap of no connections, is refused by name: `interval(0)`
/// would abort the server, and a zero timeout or cap would serve nobody.
#[test]
fn zero_durations_and_a_zero_cap_are_refused() {
    for (flag, value, why) in [
        ("--reload-interval", "0s", "more than zero"),
        ("--backend-timeout", "0s", "more than zero"),
        ("--read-timeout", "0s", "more than zero"),
        ("--idle-timeout", "0s", "more than zero"),
        ("--max-connections", "0", "at least 1"),
    ] {
        let out = Command::new(BIN)
            .args(["serve", "--ephemeral-lease-key", "--config", "/nonexistent"])
            .args([flag, value])
            .output()
            .expect("run esi-federation");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(flag) && stderr.contains(why), "{stderr}");
    }
}

/// Slow and silent clients are cut off at `--read-timeout`, an idle keep-alive connection is
/// kept until `--idle-timeout` (not the read timeout, which a load balancer's pooled
/// connection would hit), a body that trickles in is answered `408 request_timeout`, and
/// connections over `--max-connections` wait until one closes.
#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_cut_off_and_idle_connections_kept() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let issuer = common::issuer().await;
    let dir = config_dir(&issuer);
    let server = Server::start(
        dir.path(),
        &LeaseKeys::generate_spec("k1"),
        &[
            "--read-timeout",
            "1s",
            "--idle-timeout",
            "3s",
            "--max-connections",
            "3",
        ],
    );
    let connect = || tokio::net::TcpStream::connect(server.addr.clone());

    // HTTP/2 with prior knowledge is not served (a multiplexed connection would escape the
    // deadlines): the preface is refused at once.
    let mut h2 = connect().await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let took = esi_test_support::closed_within(&mut h2, Duration::from_secs(2)).await;
    assert!(
        took < Duration::from_millis(900),
        "an HTTP/2 preface was held {took:?}"
    );

    // Sends nothing: closed after the read timeout.
    let mut silent = connect().await.unwrap();
    let took = esi_test_support::closed_within(&mut silent, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");

    // A head a byte every 300 ms: each byte in time, the head not.
    let mut slow = connect().await.unwrap();
    let started = Instant::now();
    for b in b"GET /healthz HTTP/1.1\r\nhost: x\r\n" {
        if slow.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    esi_test_support::closed_within(&mut slow, Duration::from_secs(2)).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "a trickled head was served for {:?}",
        started.elapsed()
    );

    // Idle after a request: open past the read timeout, closed by the idle timeout.
    let mut idle = connect().await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    let idle_since = Instant::now();
    tokio::time::sleep(Duration::from_millis(1800)).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let n = idle.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "an idle connection was closed at the read timeout"
    );
    let took = esi_test_support::closed_within(&mut idle, Duration::from_secs(6)).await;
    assert!(
        took >= Duration::from_millis(2700),
        "closed {took:?} after its last answer"
    );
    assert!(idle_since.elapsed() < Duration::from_secs(8));

    // A body that trickles in: 408 with the API's error shape.
    let mut trickle = connect().await.unwrap();
    let token = common::token(&issuer, "default", "app");
    trickle
        .write_all(
            format!(
                "POST /v1/revoke HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
                 content-type: application/json\r\ncontent-length: 64\r\n\r\n{{\"lease\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let started = Instant::now();
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") || !answer.ends_with(b"}}") {
        tokio::select! {
            n = trickle.read(&mut buf) => match n.unwrap() {
                0 => break,
                n => answer.extend_from_slice(&buf[..n]),
            },
            () = tokio::time::sleep(Duration::from_millis(300)) => {
                let _ = trickle.write_all(b" ").await;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no answer to a trickled body"
        );
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains(r#""code":"request_timeout""#)
            && answer.contains("request body not received within 1s"),
        "{answer}"
    );

    drop((silent, slow, idle, trickle));

    // The cap: three open, the fourth waits until one closes.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = connect().await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let n = c.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(c);
    }
    let mut fourth = connect().await.unwrap();
    fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let early = tokio::time::timeout(Duration::from_millis(500), fourth.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "a fourth connection was served over a cap of 3"
    );
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(3), fourth.read(&mut buf))
        .await
        .expect("the waiting connection was not served after one closed")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    // The closes are counted: the silent client, the trickled head and the trickled body.
    let metrics = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let read_timeouts = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"esi_federation_connections_closed_total{reason="read_timeout"} "#)
        })
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert_eq!(read_timeouts, Some(3), "{metrics}");
    assert!(
        metrics.contains("esi_federation_connections_open "),
        "{metrics}"
    );
}

/// `--shutdown-delay`: after SIGTERM the server keeps serving, new connections too, for the
/// delay (while endpoint removal spreads), then stops accepting and exits.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_keeps_serving_new_connections_for_the_shutdown_delay() {
    let issuer = common::issuer().await;
    let dir = config_dir(&issuer);
    let mut server = Server::start(
        dir.path(),
        &LeaseKeys::generate_spec("k1"),
        &["--shutdown-delay", "1500ms"],
    );
    let url = format!("http://{}/healthz", server.addr);
    let fresh = || {
        // A new connection per request, as a client sent here by a stale endpoint list has.
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    assert_eq!(fresh().get(&url).send().await.unwrap().status(), 200);
    let asked = Instant::now();
    server.sigterm();
    wait_for("the delay's log line", async || {
        server.logs.logged("asked to stop")
    })
    .await;
    let during = fresh().get(&url).send().await;
    assert!(
        asked.elapsed() < Duration::from_millis(1500),
        "the check came too late to be inside the delay"
    );
    assert_eq!(during.expect("refused inside the delay").status(), 200);
    wait_for("the listener to close", async || {
        tokio::net::TcpStream::connect(&server.addr).await.is_err()
    })
    .await;
    assert!(
        asked.elapsed() >= Duration::from_millis(1400),
        "stopped accepting after {:?}",
        asked.elapsed()
    );
    assert!(server.wait_exit().success(), "{}", server.logs());
}

// ---------------------------------------------------------------------------------------------
// The federation as an OIDC issuer: `--issuer-url` with its keys.

/// An IdentityToken generator `default/aws` for AWS STS (the GENERATORS' Authorization lets
/// `default/app` use it).
const IDENTITY_TOKEN: &str = "apiVersion: esi.dev/v1alpha1\nkind: IdentityToken\nmetadata: {name: aws, namespace: default}\nspec: {audiences: [sts.amazonaws.com], expiration: 10m}\n";

/// A loopback address free a moment ago, for a server that must know its URL before it starts.
fn free_loopback_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A fresh key from `esi-federation issuer-key --algorithm <alg>`.
fn issuer_key(alg: &str) -> String {
    let out = Command::new(BIN)
        .args(["issuer-key", "--algorithm", alg])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = String::from_utf8(out.stdout).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    pem
}

/// A configuration of `issuer`'s cluster plus a `webhook` SecretStore sending the secret
/// `reference` names (`{env: ...}` / `{file: ...}`) out in a header: what must not load.
fn stealing_config(issuer: &LocalIssuer, reference: &str) -> tempfile::TempDir {
    let dir = config_dir(issuer);
    std::fs::write(
        dir.path().join("store.yaml"),
        format!(
            "apiVersion: esi.dev/v1alpha1\nkind: SecretStore\nmetadata: {{name: out, namespace: default}}\nspec:\n  provider:\n    webhook:\n      allowedUrls: [\"https://collector.example/\"]\n      headers: {{X-Stolen: {reference}}}\n"
        ),
    )
    .unwrap();
    dir
}

/// Runs `cmd` (a `serve` that must not start) to its exit, within 20 s; returns its stderr.
fn refused_to_start(mut cmd: Command, what: &str) -> String {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn esi-federation");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what}: the federation started serving");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{what}: exited successfully: {stderr}");
    stderr
}

/// A document the issuer publishes, fetched as a relying party fetches it: 200, JSON, cacheable
/// for five minutes.
async fn published(http: &reqwest::Client, url: &str) -> serde_json::Value {
    let resp = http.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["cache-control"], "public, max-age=300");
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn as_an_issuer_it_serves_discovery_and_jwks_and_its_identity_tokens_verify_against_them() {
    let issuer = common::issuer().await;
    let dir = config_dir(&issuer);
    std::fs::write(dir.path().join("identity.yaml"), IDENTITY_TOKEN).unwrap();
    // Mid-rotation: a new ES256 key signs, the old RSA key is still published.
    let pem = issuer_key("es256") + &issuer_key("rs256");
    let addr = free_loopback_addr();
    let url = format!("http://{addr}");
    let mut cmd = Command::new(BIN);
    cmd.env("ESI_ISSUER_KEYS", &pem);
    let server = Server::start_with(
        cmd,
        dir.path(),
        &LeaseKeys::generate_spec("k1"),
        &["--listen", &addr, "--issuer-url", &url],
    );
    assert_eq!(server.addr, addr);
    let http = reqwest::Client::new();

    // What a relying party does: the discovery document, then the keys where it points.
    let doc = published(&http, &format!("{url}/.well-known/openid-configuration")).await;
    assert_eq!(doc["issuer"], url.as_str());
    assert_eq!(doc["jwks_uri"], format!("{url}/openid/v1/jwks"));
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        serde_json::json!(["ES256", "RS256"])
    );
    let jwks = published(&http, doc["jwks_uri"].as_str().unwrap()).await;
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(
        keys.iter().map(|k| k["alg"].clone()).collect::<Vec<_>>(),
        ["ES256", "RS256"]
    );
    for key in keys {
        assert!(
            key.get("d").is_none(),
            "a private member was published: {key}"
        );
    }

    // An identity token for the verified caller, checked against the JWKS fetched above.
    let sa_token = common::token(&issuer, "default", "app");
    let before = jiff::Timestamp::now().as_second();
    let resp = http
        .post(format!("{url}/v1/generators/default/IdentityToken/aws"))
        .bearer_auth(&sa_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let envelope: serde_json::Value = resp.json().await.unwrap();
    let token = envelope["data"]["token"].as_str().unwrap().to_owned();
    let (header, claims) = common::verify_jws(&jwks, &token);
    assert_eq!(header["kid"], keys[0]["kid"], "the first key signs");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(claims["iss"], url.as_str());
    assert_eq!(claims["sub"], "alpha:system:serviceaccount:default:app");
    assert_eq!(claims["aud"], "sts.amazonaws.com");
    assert_eq!(claims["esi"]["cluster"], "alpha");
    assert_eq!(claims["esi"]["namespace"], "default");
    assert_eq!(claims["esi"]["serviceAccount"]["name"], "app");
    assert_eq!(claims["esi"]["generator"], "default/IdentityToken/aws");
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!((before - 1..=before + 5).contains(&iat), "iat {iat}");
    assert_eq!(exp - iat, 600, "expiration: 10m");
    let expires_at: jiff::Timestamp = envelope["expiresAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        expires_at.as_second(),
        exp,
        "the envelope's expiry is the token's"
    );
    // The caller's own token is not what it gets back, and neither reaches the logs.
    assert_ne!(token, sa_token);
    let logs = server.logs();
    assert!(server.terminate().success());
    for secret in [token.as_str(), sa_token.as_str()] {
        assert!(!logs.contains(secret), "a token reached the logs");
    }
    for body in common::pem_bodies(&pem) {
        assert!(!logs.contains(&body), "an issuer key reached the logs");
    }
    assert!(logs.contains("serving as an OIDC issuer"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn issuer_misconfigurations_are_refused_at_start_up() {
    let issuer = common::issuer().await;
    let dir = config_dir(&issuer);
    let pem = issuer_key("rs256");
    let serve = |dir: &Path| {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(dir)
            .env("ESI_LEASE_KEYS", LeaseKeys::generate_spec("k1"))
            .env_remove("ESI_ISSUER_URL")
            .env_remove("ESI_ISSUER_KEYS")
            .env_remove("ESI_ISSUER_KEYS_FILE")
            .env_remove("ESI_ISSUER_KEYS_SECRET");
        cmd
    };
    let mut outputs = Vec::new();

    let mut cmd = serve(dir.path());
    cmd.args(["--issuer-url", "https://esi.example.com"]);
    let err = refused_to_start(cmd, "a URL without keys");
    assert!(
        err.contains("the issuer URL is set but no issuer keys")
            && err.contains("esi-federation issuer-key"),
        "{err}"
    );

    let mut cmd = serve(dir.path());
    cmd.env("ESI_ISSUER_KEYS", &pem);
    let err = refused_to_start(cmd, "keys without a URL");
    assert!(
        err.contains("issuer keys are set (ESI_ISSUER_KEYS) but no issuer URL"),
        "{err}"
    );
    outputs.push(err);

    let mut cmd = serve(dir.path());
    cmd.args(["--issuer-url", "http://esi.example.com"])
        .env("ESI_ISSUER_KEYS", &pem);
    let err = refused_to_start(cmd, "plain http on a public host");
    assert!(
        err.contains("issuer URL \"http://esi.example.com\" must use https"),
        "{err}"
    );
    outputs.push(err);

    let secrets = tempfile::tempdir().unwrap();
    let keys_file = secrets.path().join("issuer-keys.pem");
    std::fs::write(&keys_file, &pem).unwrap();
    let mut cmd = serve(dir.path());
    cmd.args([
        "--issuer-url",
        "https://esi.example.com",
        "--issuer-keys-file",
    ])
    .arg(&keys_file)
    .env("ESI_ISSUER_KEYS", &pem);
    let err = refused_to_start(cmd, "the file and the variable");
    assert!(
        err.contains("both --issuer-keys-file (ESI_ISSUER_KEYS_FILE) and ESI_ISSUER_KEYS are set"),
        "{err}"
    );
    outputs.push(err);

    // A configuration naming IdentityToken on a federation that is no issuer: refused at load,
    // naming the generator and the fix (`check`, which knows no issuer settings, accepts it).
    let with_identity = config_dir(&issuer);
    std::fs::write(with_identity.path().join("identity.yaml"), IDENTITY_TOKEN).unwrap();
    let err = refused_to_start(
        serve(with_identity.path()),
        "IdentityToken without an issuer",
    );
    assert!(
        err.contains("IdentityToken/default/aws: IdentityToken signs tokens with the federation's own OIDC issuer, and this federation has none: start it with --issuer-url"),
        "{err}"
    );
    let out = Command::new(BIN)
        .arg("check")
        .arg(with_identity.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // No SecretStore may read the issuer's keys, by variable or by file.
    for (reference, field, why) in [
        (
            "{env: ESI_ISSUER_KEYS}".to_owned(),
            "headers.X-Stolen.env",
            "is the federation's own OIDC signing key",
        ),
        (
            format!("{{file: {}}}", keys_file.display()),
            "headers.X-Stolen.file",
            "holds one of the federation's own secrets (its lease keys, OIDC signing keys",
        ),
    ] {
        let stealing = stealing_config(&issuer, &reference);
        let mut cmd = serve(stealing.path());
        cmd.args([
            "--issuer-url",
            "https://esi.example.com",
            "--issuer-keys-file",
        ])
        .arg(&keys_file);
        let err = refused_to_start(cmd, &reference);
        assert!(
            err.contains(field) && err.contains(why),
            "{reference}: {err}"
        );
        outputs.push(err);
    }

    // No SecretsManagerSecret generator may read the issuer keys' secret either, by name or ARN.
    let reading = tempfile::tempdir().unwrap();
    std::fs::write(
        reading.path().join("esi.yaml"),
        "apiVersion: esi.dev/v1alpha1\nkind: SecretStore\nmetadata: {name: aws, namespace: default}\nspec: {provider: {aws: {region: eu-west-1}}}\n---\napiVersion: esi.dev/v1alpha1\nkind: SecretsManagerSecret\nmetadata: {name: keys, namespace: default}\nspec: {secretStoreRef: {name: aws}, secretId: esi-fed-issuer-keys-AbCdEf}\n",
    )
    .unwrap();
    let check = |secret: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.arg("check").arg(reading.path());
        match secret {
            Some(s) => cmd.env("ESI_ISSUER_KEYS_SECRET", s),
            None => cmd.env_remove("ESI_ISSUER_KEYS_SECRET"),
        };
        cmd.output().unwrap()
    };
    assert!(check(None).status.success());
    let out = check(Some(
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:esi-fed-issuer-keys-AbCdEf",
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("spec.secretId")
            && err
                .contains("the federation's own OIDC signing-key secret (ESI_ISSUER_KEYS_SECRET)"),
        "{err}"
    );

    // Nor an SSMParameter through Parameter Store's references to Secrets Manager, which read
    // with the federation's own Secrets Manager permissions: refused whatever the variables
    // name.
    let through_ssm = tempfile::tempdir().unwrap();
    std::fs::write(
        through_ssm.path().join("esi.yaml"),
        "apiVersion: esi.dev/v1alpha1\nkind: SecretStore\nmetadata: {name: aws, namespace: default}\nspec: {provider: {aws: {region: eu-west-1}}}\n---\napiVersion: esi.dev/v1alpha1\nkind: SSMParameter\nmetadata: {name: keys, namespace: default}\nspec: {secretStoreRef: {name: aws}, name: /aws/reference/secretsmanager/esi-fed-issuer-keys}\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check")
        .arg(through_ssm.path())
        .env_remove("ESI_ISSUER_KEYS_SECRET")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("spec.name")
            && err.contains("read Secrets Manager secrets with SecretsManagerSecret"),
        "{err}"
    );

    for err in &outputs {
        for body in common::pem_bodies(&pem) {
            assert!(!err.contains(&body), "an issuer key reached stderr: {err}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_reads_its_issuer_keys_from_secrets_manager() {
    let test = "serve_reads_its_issuer_keys_from_secrets_manager";
    let Some(moto) = common::Moto::from_env(test) else {
        return;
    };
    let pem = issuer_key("es256");
    let (_, arn) = moto
        .create(
            "serve-issuer",
            pem.clone().into(),
            &uuid::Uuid::new_v4().to_string(),
        )
        .await;
    let issuer = common::issuer().await;
    let dir = config_dir(&issuer);
    let addr = free_loopback_addr();
    let url = format!("http://{addr}");
    let mut cmd = Command::new(BIN);
    moto.aws_env(&mut cmd);
    cmd.env("ESI_ISSUER_KEYS_SECRET", &arn)
        .env_remove("ESI_ISSUER_KEYS");
    let server = Server::start_with(
        cmd,
        dir.path(),
        &LeaseKeys::generate_spec("k1"),
        &["--listen", &addr, "--issuer-url", &url],
    );
    let jwks: serde_json::Value = reqwest::get(format!("{url}/openid/v1/jwks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected = esi_backends::identity::Issuer::new(&url, &pem).unwrap();
    assert_eq!(
        jwks,
        serde_json::from_str::<serde_json::Value>(expected.jwks_json()).unwrap()
    );
    assert!(server.logs.logged("issuer keys read from Secrets Manager"));
    let logs = server.logs();
    for body in common::pem_bodies(&pem) {
        assert!(!logs.contains(&body), "an issuer key reached the logs");
    }
}

/// `serve` reads its configuration while the lease keys' secret is fetched, as the Lambda does
/// (`lambda_reads_its_configuration_while_the_secret_is_fetched`): the configuration is a FIFO,
/// and the fake Secrets Manager holds its answer until the federation has opened it.
#[tokio::test(flavor = "multi_thread")]
async fn serve_reads_its_configuration_while_the_secret_is_fetched() {
    let issuer = common::issuer().await;
    let dir = tempfile::tempdir().unwrap();
    let (fifo, keys) = common::fifo_config_and_held_keys(dir.path(), &issuer).await;
    let mut cmd = Command::new(BIN);
    keys.give_to(&mut cmd);
    // No reload: the FIFO's reader would wait for another writer.
    let server = Server::start_with(cmd, &fifo.path, "", &["--reload-interval", "1h"]);
    fifo.join();
    keys.assert_overlapped("read its configuration");
    let env = server.generate(&issuer, "default/Fake/creds").await;
    assert!(
        env["lease"].as_str().unwrap().starts_with("v1.k1."),
        "{env}"
    );
}

/// `serve` fetches its clusters' keys while its lease keys come from Secrets Manager: the fake
/// Secrets Manager holds its answer until the cluster's JWKS has been asked for, which a start
/// that fetched the keys only after its own (and its configuration's compilation) never does.
#[tokio::test(flavor = "multi_thread")]
async fn serve_fetches_its_issuers_keys_while_the_secret_is_fetched() {
    let issuer = common::issuer().await;
    let (dir, keys) = common::watched_config_and_held_keys(&issuer).await;
    let mut cmd = Command::new(BIN);
    keys.give_to(&mut cmd);
    let server = Server::start_with(cmd, dir.path(), "", &[]);
    keys.assert_overlapped("fetch its issuer's keys");
    server.generate(&issuer, "default/Password/db").await;
    // One fetch: the start's, kept for the configuration it compiled.
    let logs = server.logs();
    assert_eq!(logs.matches("fetched JWKS").count(), 1, "{logs}");
}

/// `check --login` logs in to each store once and says how it went: a store whose backend
/// cannot be reached fails the check, naming the store; one with no login of its own, or one
/// that needs the serving federation's issuer, is said to be not checked.
#[test]
fn check_login_reports_each_store_and_fails_on_a_failed_login() {
    let closed = esi_test_support::ClosedPort::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stores.yaml"),
        format!(
            "apiVersion: esi.dev/v1alpha1
kind: SecretStore
metadata: {{name: vault, namespace: team}}
spec: {{provider: {{vault: {{server: \"http://{}\", timeout: 2s, auth: {{token: {{env: ESI_TEST_CHECK_LOGIN_TOKEN}}}}}}}}}}
---
apiVersion: esi.dev/v1alpha1
kind: SecretStore
metadata: {{name: hooks, namespace: team}}
spec: {{provider: {{webhook: {{allowedUrls: [\"https://hooks.example/\"]}}}}}}
---
apiVersion: esi.dev/v1alpha1
kind: SecretStore
metadata: {{name: own, namespace: team}}
spec: {{provider: {{vault: {{server: \"https://vault.example\", auth: {{jwt: {{role: esi, selfIssued: true}}}}}}}}}}
",
            closed.addr()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check")
        .arg("--login")
        .arg(dir.path())
        .env("ESI_TEST_CHECK_LOGIN_TOKEN", "s.not-a-real-token")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "team/vault (vault): FAILED: backend unavailable: vault could not be reached"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("team/hooks (webhook): not checked: no login of its own"),
        "{stdout}"
    );
    assert!(
        stdout.contains("team/own (vault): not checked: logs in with a token the federation signs"),
        "{stdout}"
    );
    assert!(
        stderr.contains("1 of 3 SecretStore logins failed"),
        "{stderr}"
    );
    assert!(!stdout.contains("s.not-a-real-token"), "{stdout}");
}
