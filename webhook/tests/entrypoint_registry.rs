//! `entrypointLookup` against a REAL registry: the CNCF Distribution registry (Debian's
//! `docker-registry`, the program of the `registry:2` image; `scripts/peers/registry.sh`
//! provides it as `ESI_TEST_REGISTRY`), started here on 127.0.0.1 over HTTPS with a throwaway
//! CA and htpasswd authentication. The test pushes images through the registry's HTTP API (an
//! OCI image with its configuration, and an image index of two platforms) and sends Pods
//! without `command` through the webhook's router: the wrapped command is the image's
//! `ENTRYPOINT` and `CMD` (only the `ENTRYPOINT` when the Pod sets `args`), read with the
//! credentials of the configured `config.json`; without them, or for a registry not listed,
//! for a missing tag, a configuration past 4 MiB or with the registry gone, the Pod is denied
//! saying why and how to name the entrypoint instead.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use esi_webhook::entrypoint::EntrypointLookup;
use esi_webhook::{AppState, WebhookConfig};
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// The registry's only user, in its htpasswd file.
const USER: &str = "esi-pull";
const PASSWORD: &str = "pull-password-for-tests";
/// `USER:<bcrypt of PASSWORD>`, as `htpasswd -nbB` writes it (made with Python's `bcrypt`,
/// cost 5: `bcrypt.hashpw(PASSWORD, bcrypt.gensalt(rounds=5))`).
const HTPASSWD: &str = "esi-pull:$2b$05$z1XgdeCSETmYkjRyax8GreSICzMrhNsZiesdfyAWs9Vgw7WftAvHe";

/// A registry process, stopped when dropped.
struct Registry {
    child: Child,
    /// `localhost:PORT`, as image references name it.
    host: String,
    ca_pem: String,
    dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Starts `program` on a free loopback port, waiting (10 s at most) until `/v2/` answers.
    async fn start(program: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = esi_test_support::pki("localhost").unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(path("tls.crt"), &pki.cert_pem).unwrap();
        std::fs::write(path("tls.key"), &pki.key_pem).unwrap();
        std::fs::write(path("htpasswd"), format!("{HTPASSWD}\n")).unwrap();
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {data}\n\
             http:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {cert}\n    key: {key}\n\
             auth:\n  htpasswd:\n    realm: esi-test\n    path: {htpasswd}\n",
            data = path("data"),
            cert = path("tls.crt"),
            key = path("tls.key"),
            htpasswd = path("htpasswd"),
        );
        std::fs::write(path("config.yml"), config).unwrap();
        let log = std::fs::File::create(path("registry.log")).unwrap();
        let child = Command::new(program)
            .args(["serve", &path("config.yml")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let registry = Registry {
            child,
            host: format!("localhost:{port}"),
            ca_pem: pki.ca_pem,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match registry.http().get(registry.url("/v2/")).send().await {
                // The registry wants credentials: it is up.
                Ok(r) if r.status() == 401 => break,
                _ if Instant::now() > deadline => panic!(
                    "the registry did not answer within 10 s; its log: {}",
                    std::fs::read_to_string(registry.dir.path().join("registry.log"))
                        .unwrap_or_default()
                ),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        registry
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.host)
    }

    fn http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap()])
            .build()
            .unwrap()
    }

    /// Uploads `data` as a blob of `repository` (a POST then a PUT, as the API documents a
    /// monolithic upload): its digest and size.
    async fn blob(&self, repository: &str, data: &[u8]) -> (String, usize) {
        let digest = sha256(data);
        let http = self.http();
        let started = http
            .post(self.url(&format!("/v2/{repository}/blobs/uploads/")))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(started.status(), 202, "{:?}", started.text().await);
        let location = started.headers()["location"].to_str().unwrap().to_owned();
        let location = if location.starts_with("https://") {
            location
        } else {
            self.url(&location)
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let done = http
            .put(format!("{location}{sep}digest={digest}"))
            .basic_auth(USER, Some(PASSWORD))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(done.status(), 201, "{:?}", done.text().await);
        (digest, data.len())
    }

    /// Puts `manifest` (of `media_type`) as `repository:reference`; its digest and size.
    async fn manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        manifest: &Value,
    ) -> (String, usize) {
        let body = serde_json::to_vec(manifest).unwrap();
        let put = self
            .http()
            .put(self.url(&format!("/v2/{repository}/manifests/{reference}")))
            .basic_auth(USER, Some(PASSWORD))
            .header("content-type", media_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201, "{:?}", put.text().await);
        (sha256(&body), body.len())
    }

    /// Pushes an image of one platform whose configuration holds `config` (`Entrypoint`,
    /// `Cmd`) as `repository:tag`: the manifest's digest and size.
    async fn image(
        &self,
        repository: &str,
        tag: &str,
        arch: &str,
        config: Value,
    ) -> (String, usize) {
        let configuration = json!({
            "architecture": arch, "os": "linux", "config": config,
            "rootfs": {"type": "layers", "diff_ids": [sha256(b"layer")]},
        });
        let (config_digest, config_size) = self
            .blob(repository, &serde_json::to_vec(&configuration).unwrap())
            .await;
        let (layer_digest, layer_size) = self.blob(repository, b"layer").await;
        self.manifest(
            repository,
            tag,
            "application/vnd.oci.image.manifest.v1+json",
            &json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": config_digest, "size": config_size},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            "digest": layer_digest, "size": layer_size}],
            }),
        )
        .await
    }
}

fn sha256(data: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The webhook's state with `entrypointLookup` for `registries`, trusting the registry's CA,
/// with `credentials` (a Docker config.json) when given.
fn webhook(registry: &Registry, registries: &[&str], credentials: Option<Value>) -> AppState {
    let config = WebhookConfig::from_yaml(&config(registry, registries, credentials)).unwrap();
    let lookup = EntrypointLookup::new(&config.entrypoint_lookup).unwrap();
    AppState::new(config).with_entrypoint_lookup(lookup)
}

/// The webhook's configuration (JSON, which is YAML) of [`webhook`].
fn config(registry: &Registry, registries: &[&str], credentials: Option<Value>) -> String {
    let ca = registry.dir.path().join("ca.crt");
    std::fs::write(&ca, &registry.ca_pem).unwrap();
    let mut lookup = json!({"registries": registries, "caFile": ca, "timeoutSeconds": 2});
    if let Some(credentials) = credentials {
        let file = registry
            .dir
            .path()
            .join(format!("config-{}.json", registries.len()));
        std::fs::write(&file, credentials.to_string()).unwrap();
        lookup["credentialsFile"] = json!(file);
    }
    json!({
        "federation": {"defaultUrl": "https://esi.example.com"},
        "entrypointLookup": lookup,
    })
    .to_string()
}

/// A Pod whose container `app` runs `image` with `args`, and no `command`.
fn pod(image: &str, args: Option<&[&str]>) -> Value {
    let mut container = json!({"name": "app", "image": image});
    if let Some(args) = args {
        container["args"] = json!(args);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "api", "labels": {"esi.dev/inject": "true"},
                     "annotations": {"esi.dev/generators": "db=payments/Password/db",
                                     "esi.dev/env": "DB_PASS=db.password"}},
        "spec": {"securityContext": {"runAsUser": 1000}, "containers": [container]}
    })
}

/// The webhook's answer to the Pod's creation.
async fn admit(state: &AppState, pod: &Value) -> Value {
    let review = esi_webhook::review::pod_create_review(pod, "payments", "uid-1");
    let request = axum::http::Request::post("/mutate")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(review.to_string()))
        .unwrap();
    let answer = esi_webhook::router(state.clone())
        .oneshot(request)
        .await
        .unwrap();
    let body = axum::body::to_bytes(answer.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    body["response"].clone()
}

/// The command of container `app` once the answer's patch is applied.
fn command(pod: &Value, answer: &Value) -> Vec<String> {
    assert_eq!(answer["allowed"], true, "{answer}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(answer["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    serde_json::from_value(patched["spec"]["containers"][0]["command"].clone()).unwrap()
}

fn wrapped(program: &[&str]) -> Vec<String> {
    ["/esi/bin/esi-cli", "exec", "--container", "app", "--"]
        .iter()
        .chain(program)
        .map(|s| (*s).to_owned())
        .collect()
}

#[tokio::test]
async fn a_container_without_command_runs_its_images_entrypoint_read_from_a_real_registry() {
    let Some(program) = esi_test_support::peer(
        "ESI_TEST_REGISTRY",
        "a_container_without_command_runs_its_images_entrypoint_read_from_a_real_registry",
    ) else {
        return;
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let registry = Registry::start(&program).await;
    let host = registry.host.clone();
    let (digest, _) = registry
        .image(
            "team/api",
            "1.0",
            "amd64",
            json!({"Entrypoint": ["/app/server"], "Cmd": ["--port", "8080"]}),
        )
        .await;
    registry
        .image(
            "team/cmd-only",
            "1.0",
            "amd64",
            json!({"Cmd": ["nginx", "-g", "daemon off;"]}),
        )
        .await;
    registry
        .image("team/empty", "1.0", "amd64", json!({"Env": ["A=b"]}))
        .await;
    // An index of two platforms, whose entrypoints differ: the webhook's own is read.
    let mut platforms = Vec::new();
    for arch in ["amd64", "arm64"] {
        let (d, size) = registry
            .image(
                "team/multi",
                &format!("1.0-{arch}"),
                arch,
                json!({"Entrypoint": [format!("/app/{arch}")]}),
            )
            .await;
        platforms.push(
            json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                              "digest": d, "size": size,
                              "platform": {"architecture": arch, "os": "linux"}}),
        );
    }
    registry
        .manifest(
            "team/multi",
            "1.0",
            "application/vnd.oci.image.index.v1+json",
            &json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": platforms}),
        )
        .await;
    let credentials = json!({"auths": {host.clone(): {
        "auth": base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))}}});
    let state = webhook(&registry, &["localhost:*"], Some(credentials.clone()));

    // ENTRYPOINT then CMD; only ENTRYPOINT with the Pod's args (which follow it as they are).
    let image = format!("{host}/team/api:1.0");
    let p = pod(&image, None);
    let answer = admit(&state, &p).await;
    assert_eq!(
        command(&p, &answer),
        wrapped(&["/app/server", "--port", "8080"])
    );
    let warnings = answer["warnings"].to_string();
    assert!(
        warnings.contains(&image) && warnings.contains(&digest),
        "{warnings}"
    );
    let p = pod(&image, Some(&["--port", "9090"]));
    let answer = admit(&state, &p).await;
    assert_eq!(command(&p, &answer), wrapped(&["/app/server"]));
    // Pinned by digest: the same image.
    let p = pod(&format!("{host}/team/api@{digest}"), None);
    let answer = admit(&state, &p).await;
    assert_eq!(
        command(&p, &answer),
        wrapped(&["/app/server", "--port", "8080"])
    );
    // CMD alone is the program.
    let p = pod(&format!("{host}/team/cmd-only:1.0"), None);
    let answer = admit(&state, &p).await;
    assert_eq!(
        command(&p, &answer),
        wrapped(&["nginx", "-g", "daemon off;"])
    );
    // The index: this machine's platform.
    let p = pod(&format!("{host}/team/multi:1.0"), None);
    let answer = admit(&state, &p).await;
    let own = if cfg!(target_arch = "aarch64") {
        "/app/arm64"
    } else {
        "/app/amd64"
    };
    assert_eq!(command(&p, &answer), wrapped(&[own]));
    // The annotation wins and nothing is read.
    let mut p = pod(&format!("{host}/team/missing:1.0"), None);
    p["metadata"]["annotations"]["esi.dev/entrypoint.app"] = json!(r#"["/bin/own"]"#);
    let answer = admit(&state, &p).await;
    assert_eq!(command(&p, &answer), wrapped(&["/bin/own"]));

    // Denied, saying why and what to do instead.
    let denied = |answer: &Value, why: &str| {
        assert_eq!(answer["allowed"], false, "{answer}");
        let message = answer["status"]["message"].as_str().unwrap();
        assert!(
            message.contains(why) && message.contains("esi.dev/entrypoint.app"),
            "{message}"
        );
        assert!(!message.contains(PASSWORD), "{message}");
    };
    let answer = admit(&state, &pod(&format!("{host}/team/missing:1.0"), None)).await;
    denied(&answer, "no such image");
    let answer = admit(&state, &pod(&format!("{host}/team/empty:1.0"), None)).await;
    denied(&answer, "no ENTRYPOINT or CMD");
    // A configuration past 4 MiB is not read (real ones are a few KB).
    let padding = format!("PAD={}", "x".repeat(4 << 20));
    registry
        .image(
            "team/huge",
            "1.0",
            "amd64",
            json!({"Entrypoint": ["/huge"], "Env": [padding]}),
        )
        .await;
    let answer = admit(&state, &pod(&format!("{host}/team/huge:1.0"), None)).await;
    denied(&answer, "the webhook reads at most 4 MiB");
    assert_eq!(count(&state, "config_too_large"), 1);
    let answer = admit(&state, &pod("ghcr.io/team/api:1.0", None)).await;
    denied(&answer, "registry ghcr.io is not one the webhook may read");
    let anonymous = webhook(&registry, &["localhost:*"], None);
    let answer = admit(&anonymous, &pod(&image, None)).await;
    denied(&answer, "refused access");
    let wrong = json!({"auths": {host.clone(): {"username": USER, "password": "wrong"}}});
    let answer = admit(
        &webhook(&registry, &["localhost:*", "x"], Some(wrong)),
        &pod(&image, None),
    )
    .await;
    denied(&answer, "refused access");

    // `esi-webhook inject` reads the same way.
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                            "metadata": {"name": "api", "namespace": "payments"},
                            "spec": {"template": pod(&image, None)}});
    let injected = esi_webhook::inject::inject(&state, vec![deployment], "payments").await;
    assert_eq!(injected.injected, 1, "{:?}", injected.notes);
    assert_eq!(
        injected.documents[0]["spec"]["template"]["spec"]["containers"][0]["command"],
        json!(wrapped(&["/app/server", "--port", "8080"]))
    );
    assert!(
        injected.notes.iter().any(|n| n.contains(&digest)),
        "{:?}",
        injected.notes
    );
    // `esi-webhook check --image` says what an image runs, or why it cannot tell.
    let file = registry.dir.path().join("webhook.yaml");
    std::fs::write(
        &file,
        config(&registry, &["localhost:*"], Some(credentials.clone())),
    )
    .unwrap();
    let missing = format!("{host}/team/missing:1.0");
    let checked = std::process::Command::new(env!("CARGO_BIN_EXE_esi-webhook"))
        .arg("check")
        .arg(&file)
        .args(["--image", &image, "--image", &missing])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert_eq!(checked.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "{image}: ENTRYPOINT [\"/app/server\"] CMD [\"--port\", \"8080\"] ({digest})"
        )) && stdout.contains(&format!("{missing}: the registry has no such image")),
        "{stdout}"
    );

    // A rollout's Pods admitted at once: one read.
    registry
        .image(
            "team/burst",
            "1.0",
            "amd64",
            json!({"Entrypoint": ["/burst"]}),
        )
        .await;
    let (read, kept) = (count(&state, "registry"), count(&state, "cached"));
    let burst = pod(&format!("{host}/team/burst:1.0"), None);
    let answers = tokio::join!(
        admit(&state, &burst),
        admit(&state, &burst),
        admit(&state, &burst),
        admit(&state, &burst),
        admit(&state, &burst),
    );
    for answer in [answers.0, answers.1, answers.2, answers.3, answers.4] {
        assert_eq!(command(&burst, &answer), wrapped(&["/burst"]));
    }
    assert_eq!(count(&state, "registry"), read + 1);
    assert_eq!(count(&state, "cached"), kept + 4);

    // Read once: the registry gone, the tag is still known; another one is not.
    drop(registry);
    let answer = admit(&state, &pod(&image, None)).await;
    assert_eq!(
        command(&pod(&image, None), &answer),
        wrapped(&["/app/server", "--port", "8080"])
    );
    let answer = admit(&state, &pod(&format!("{host}/team/other:1.0"), None)).await;
    assert_eq!(answer["status"]["code"], 503, "{answer}");
    denied(&answer, "could not be read");
    assert_eq!(count(&state, "unavailable"), 1);
}

/// `esi_webhook_entrypoint_lookups_total{result}`.
fn count(state: &AppState, result: &str) -> u64 {
    let metrics = state.metrics.encode();
    let line = format!("esi_webhook_entrypoint_lookups_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |n| n.parse().unwrap())
}

/// [`webhook`] for a cluster whose nodes run `platforms`.
fn webhook_on(registry: &Registry, platforms: &[&str], credentials: Value) -> AppState {
    let mut config: Value =
        serde_json::from_str(&config(registry, &["localhost:*"], Some(credentials))).unwrap();
    config["entrypointLookup"]["platforms"] = json!(platforms);
    let config = WebhookConfig::from_yaml(&config.to_string()).unwrap();
    let lookup = EntrypointLookup::new(&config.entrypoint_lookup).unwrap();
    AppState::new(config).with_entrypoint_lookup(lookup)
}

/// Pushes an index `repository:tag` of one image per architecture, each running
/// `entrypoint(arch)`; returns the images' digests.
async fn index(
    registry: &Registry,
    repository: &str,
    tag: &str,
    entrypoint: impl Fn(&str) -> String,
) -> Vec<String> {
    let (mut entries, mut digests) = (Vec::new(), Vec::new());
    for arch in ["amd64", "arm64"] {
        let (d, size) = registry
            .image(
                repository,
                &format!("{tag}-{arch}"),
                arch,
                json!({"Entrypoint": [entrypoint(arch)]}),
            )
            .await;
        entries.push(
            json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": d, "size": size,
                            "platform": {"architecture": arch, "os": "linux"}}),
        );
        digests.push(d);
    }
    registry
        .manifest(
            repository,
            tag,
            "application/vnd.oci.image.index.v1+json",
            &json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": entries}),
        )
        .await;
    digests
}

#[tokio::test]
async fn on_a_cluster_of_several_platforms_the_pod_pins_one_or_the_images_must_agree() {
    let Some(program) = esi_test_support::peer(
        "ESI_TEST_REGISTRY",
        "on_a_cluster_of_several_platforms_the_pod_pins_one_or_the_images_must_agree",
    ) else {
        return;
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let registry = Registry::start(&program).await;
    let host = registry.host.clone();
    index(&registry, "team/multi", "1.0", |arch| {
        format!("/app/{arch}")
    })
    .await;
    let same = index(&registry, "team/same", "1.0", |_| "/app/server".to_owned()).await;
    registry
        .image(
            "team/single",
            "1.0",
            "amd64",
            json!({"Entrypoint": ["/app/single"]}),
        )
        .await;
    let credentials = json!({"auths": {host.clone(): {"username": USER, "password": PASSWORD}}});
    let mixed = webhook_on(
        &registry,
        &["linux/amd64", "linux/arm64"],
        credentials.clone(),
    );
    let pinned = |image: &str, arch: &str| {
        let mut p = pod(image, None);
        p["spec"]["nodeSelector"] = json!({"kubernetes.io/arch": arch, "disktype": "ssd"});
        p
    };

    // The Pod pins its platform: that image's command, whatever the others run.
    let multi = format!("{host}/team/multi:1.0");
    for arch in ["amd64", "arm64"] {
        let p = pinned(&multi, arch);
        let answer = admit(&mixed, &p).await;
        assert_eq!(command(&p, &answer), wrapped(&[&format!("/app/{arch}")]));
    }
    // Or with required node affinity: the platforms its terms allow.
    let by_affinity = |image: &str, operator: &str, arch: &str| {
        let mut p = pod(image, None);
        p["spec"]["affinity"] = json!({"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [
                    {"key": "topology.kubernetes.io/zone", "operator": "Exists"},
                    {"key": "kubernetes.io/arch", "operator": operator, "values": [arch]}
                ]}
            ]}
        }});
        p
    };
    for (operator, arch, runs) in [("In", "arm64", "arm64"), ("NotIn", "arm64", "amd64")] {
        let p = by_affinity(&multi, operator, arch);
        let answer = admit(&mixed, &p).await;
        assert_eq!(
            command(&p, &answer),
            wrapped(&[&format!("/app/{runs}")]),
            "{operator} {arch}"
        );
    }
    // An affinity no platform of the cluster meets, naming none: denied, saying so.
    let mut p = by_affinity(&multi, "DoesNotExist", "arm64");
    p["spec"]["nodeSelector"] = json!({"kubernetes.io/os": "linux"});
    let answer = admit(&mixed, &p).await;
    assert_eq!(answer["allowed"], false, "{answer}");
    let message = answer["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("allow none of the cluster's platforms (linux/amd64, linux/arm64"),
        "{message}"
    );
    // It pins none, and the cluster's platforms run different commands: denied, saying so.
    let answer = admit(&mixed, &pod(&multi, None)).await;
    assert_eq!(answer["allowed"], false, "{answer}");
    let message = answer["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            r#"the image runs different commands on linux/amd64 ["/app/amd64"], linux/arm64 ["/app/arm64"]"#
        ) && message.contains("nodeSelector kubernetes.io/arch")
            && message.contains("esi.dev/entrypoint.app"),
        "{message}"
    );
    // They agree: the command, and each platform's image named.
    let p = pod(&format!("{host}/team/same:1.0"), None);
    let answer = admit(&mixed, &p).await;
    assert_eq!(command(&p, &answer), wrapped(&["/app/server"]));
    let warnings = answer["warnings"].to_string();
    assert!(
        warnings.contains(&format!("{} for linux/amd64", same[0]))
            && warnings.contains(&format!("{} for linux/arm64", same[1])),
        "{warnings}"
    );
    // An image that is not an index serves every platform.
    let p = pod(&format!("{host}/team/single:1.0"), None);
    let answer = admit(&mixed, &p).await;
    assert_eq!(command(&p, &answer), wrapped(&["/app/single"]));
    // A platform the index has no image for.
    let answer = admit(&mixed, &pinned(&multi, "s390x")).await;
    assert_eq!(answer["allowed"], false, "{answer}");
    let message = answer["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("the image has no linux/s390x variant"),
        "{message}"
    );

    // `check --image` names each platform.
    let file = registry.dir.path().join("mixed.yaml");
    let mut config: Value =
        serde_json::from_str(&config(&registry, &["localhost:*"], Some(credentials))).unwrap();
    config["entrypointLookup"]["platforms"] = json!(["linux/amd64", "linux/arm64"]);
    std::fs::write(&file, config.to_string()).unwrap();
    let checked = std::process::Command::new(env!("CARGO_BIN_EXE_esi-webhook"))
        .arg("check")
        .arg(&file)
        .args(["--image", &multi])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert_eq!(checked.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "{multi} (linux/amd64): ENTRYPOINT [\"/app/amd64\"] CMD []"
        )) && stdout.contains(&format!(
            "{multi} (linux/arm64): ENTRYPOINT [\"/app/arm64\"] CMD []"
        )),
        "{stdout}"
    );
}
