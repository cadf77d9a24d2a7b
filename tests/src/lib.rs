//! Harness of the cross-crate end-to-end tests: the workspace binaries (`esi-cli`,
//! `esi-federation`) as real subprocesses, a local OIDC issuer minting Kubernetes-shaped
//! tokens, temp dirs standing for a Pod's volumes, and the peer-or-skip rule.
//!
//! Tests live in `tests/tests/*.rs`; `cargo test --workspace` builds every workspace binary
//! first, and [`bin`] finds them next to the test executable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use esi_api::inject::{
    ContainerSpec, FileOutput, GeneratorRef, InjectionSpec, Owner, RefreshSpec, SPEC_VERSION,
};
pub use esi_federation::issuer::TokenSpec;
use esi_federation::issuer::{LocalIssuer, SigningKey};
use esi_federation::testkit::ServeLogs;

/// Path of a workspace binary built next to the running test (`target/<profile>/<name>`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run cargo build --workspace --bins (cargo test --workspace does it)",
        path.display()
    );
    path
}

pub use esi_test_support::peer;

/// Sets a peer up for a test: `POST url` with `headers` and the JSON `body`, on `rt`, within
/// 30 s; panics naming `what` unless the peer answers 2xx.
pub fn peer_post(
    rt: &tokio::runtime::Runtime,
    what: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
) {
    rt.block_on(async {
        let mut req = reqwest::Client::new()
            .post(url)
            .json(body)
            .timeout(Duration::from_secs(30));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "{what}: {status}: {text}");
    });
}

/// A local OIDC issuer served on loopback by its own runtime.
pub struct Issuer {
    /// The issuer.
    pub issuer: Arc<LocalIssuer>,
    _rt: tokio::runtime::Runtime,
}

impl Issuer {
    /// Starts an RSA issuer on 127.0.0.1.
    pub fn start() -> Issuer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let issuer = LocalIssuer::new(SigningKey::rsa());
        rt.block_on(issuer.serve()).expect("serve issuer");
        Issuer { issuer, _rt: rt }
    }

    /// The issuer URL.
    pub fn url(&self) -> String {
        self.issuer.issuer()
    }

    /// A token for `namespace/sa` (audience `esi`, one hour).
    pub fn token(&self, namespace: &str, sa: &str) -> String {
        self.issuer.mint(&TokenSpec::new(namespace, sa))
    }

    /// A token with custom claims.
    pub fn mint(&self, spec: &TokenSpec) -> String {
        self.issuer.mint(spec)
    }
}

/// Generators and Authorizations of the tests (all in namespace `default`; `default/app` may
/// use all of them, `default/limited` only `Password/db` and `Fake/short`).
pub const GENERATORS: &str = r#"
apiVersion: esi.dev/v1alpha1
kind: Password
metadata: {name: db, namespace: default}
spec: {length: 24, allowRepeat: true}
---
apiVersion: esi.dev/v1alpha1
kind: Fake
metadata: {name: creds, namespace: default}
spec:
  data: {username: fake-user, password: "fake pass 'with' \"quotes\", $dollar & ünïcødé"}
  leaseDuration: 15m
---
apiVersion: esi.dev/v1alpha1
kind: Fake
metadata: {name: short, namespace: default}
spec:
  data: {username: short-user, password: short-lived-secret-9f8e7d}
  leaseDuration: 4s
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
    - namespaces: [default]
      serviceAccounts: [limited]
  generators: ["default/Password/db", "default/Fake/short"]
---
"#;

/// A federation configuration folder: one Cluster for `issuer` plus `extra` manifests.
pub fn config_dir(issuer: &str, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("cluster.yaml"),
        format!(
            "apiVersion: esi.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: alpha\nspec:\n  issuer: {issuer}\n  keys: {{discovery: {{}}}}\n  audiences: [esi]\n"
        ),
    )
    .expect("write cluster");
    std::fs::write(dir.path().join("generators.yaml"), extra).expect("write generators");
    dir
}

/// A running `esi-federation serve`; killed on drop.
pub struct Federation {
    child: Child,
    /// `127.0.0.1:port`.
    pub addr: String,
    logs: ServeLogs,
}

/// TLS files for the federation: `(cert path, key path)`.
pub type TlsFiles = (PathBuf, PathBuf);

impl Federation {
    /// Starts the federation on `listen` (`127.0.0.1:0` for any port), with TLS when given.
    pub fn start(config: &Path, listen: &str, tls: Option<&TlsFiles>) -> Federation {
        let mut cmd = Command::new(bin("esi-federation"));
        cmd.args(["serve", "--config"])
            .arg(config)
            .args(["--listen", listen, "--log-format", "json"])
            .env(
                "ESI_LEASE_KEYS",
                esi_federation::lease::LeaseKeys::generate_spec("k1"),
            )
            .env("ESI_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((cert, key)) = tls {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        let mut child = cmd.spawn().expect("spawn esi-federation");
        let logs = ServeLogs::follow(child.stderr.take().expect("stderr"));
        let Ok(addr) = logs.serving.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("esi-federation did not start; logs:\n{}", logs.text());
        };
        Federation { child, addr, logs }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr
            .parse::<SocketAddr>()
            .map(|a| a.port())
            .expect("addr")
    }

    /// Everything logged so far.
    pub fn logs(&self) -> String {
        self.logs.text()
    }

    /// Whether a line containing `needle` is logged within 5 s.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs.logged(needle)
    }
}

impl Drop for Federation {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temp dir standing for a Pod: the shared volume, the token, the termination log.
pub struct Pod {
    /// Holds everything.
    pub dir: tempfile::TempDir,
    /// The shared volume (`/esi`).
    pub volume: PathBuf,
    /// The projected token file.
    pub token: PathBuf,
    /// The termination log.
    pub termination_log: PathBuf,
}

impl Pod {
    /// A fresh Pod with `token` written to its token file.
    pub fn new(token: &str) -> Pod {
        let dir = tempfile::tempdir().expect("tempdir");
        let volume = dir.path().join("volume");
        std::fs::create_dir(&volume).expect("volume");
        let token_path = dir.path().join("token");
        std::fs::write(&token_path, token).expect("token");
        let termination_log = dir.path().join("termination-log");
        Pod {
            volume,
            token: token_path,
            termination_log,
            dir,
        }
    }

    /// An `esi-cli` command with the Pod's env (volume, token, termination log, `spec`) and
    /// plain HTTP allowed (the test federation is on loopback).
    pub fn cli(&self, spec: &InjectionSpec) -> Command {
        let mut cmd = Command::new(bin("esi-cli"));
        cmd.env("ESI_VOLUME_DIR", &self.volume)
            .env("ESI_TOKEN_FILE", &self.token)
            .env("ESI_TERMINATION_LOG", &self.termination_log)
            .env("ESI_ALLOW_HTTP", "true")
            .env("ESI_SPEC", spec.to_json())
            .env_remove("ESI_FEDERATION_URL")
            .env_remove("ESI_LOG_FORMAT");
        cmd
    }

    /// The termination log's content ("" when absent).
    pub fn termination_reason(&self) -> String {
        std::fs::read_to_string(&self.termination_log).unwrap_or_default()
    }

    /// A path inside the volume.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.volume.join(rel)
    }
}

/// `namespace/kind/name` as a [`GeneratorRef`].
pub fn gen_ref(s: &str) -> GeneratorRef {
    let mut it = s.split('/');
    let (Some(namespace), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
        panic!("{s} is not namespace/kind/name");
    };
    GeneratorRef {
        namespace: namespace.into(),
        kind: kind.into(),
        name: name.into(),
    }
}

/// A spec for `federation_url` with the given aliases, containers and files.
pub fn spec(
    federation_url: &str,
    generators: &[(&str, &str)],
    containers: &[(&str, ContainerSpec)],
    files: Vec<FileOutput>,
) -> InjectionSpec {
    InjectionSpec {
        version: SPEC_VERSION,
        federation_url: federation_url.into(),
        federation_ca_pem: None,
        token_path: "/nonexistent/token".into(),
        generators: generators
            .iter()
            .map(|(a, g)| ((*a).to_owned(), gen_ref(g)))
            .collect(),
        containers: containers
            .iter()
            .map(|(n, c)| ((*n).to_owned(), c.clone()))
            .collect(),
        files,
        owner: Owner::default(),
        refresh: None::<RefreshSpec>,
        revoke_on_exit: false,
    }
}

/// Polls `check` until it holds or `timeout` passes (then panics naming `what`).
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `child` to exit within `timeout`, killing it otherwise.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops `child` with SIGTERM, waits for it (see [`wait_exit`]) and returns its status and
/// what it wrote to its (piped) stderr.
pub fn terminate(child: &mut Child, timeout: Duration) -> (std::process::ExitStatus, String) {
    use std::io::Read as _;
    send_signal(child.id(), "TERM");
    let status = wait_exit(child, timeout);
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr piped")
        .read_to_string(&mut err)
        .expect("read stderr");
    (status, err)
}

/// Sends `signal` (`TERM`, `USR1`, ...) to `pid` with `kill(1)`.
pub fn send_signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{signal} {pid} failed");
}
