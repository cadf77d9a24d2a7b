//! The federation under test: its configurations (figure 2's one cluster with 1,000 rules,
//! figure 4's 1,000 clusters with 10,000 rules and 10,000 generators), the local OIDC issuers
//! that sign the tokens, and the real `esi-federation serve` binary as a pinned subprocess.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::routing::get;
use esi_federation::issuer::{LocalIssuer, SigningKey, TokenSpec};
use serde_json::json;

use crate::logs::Log;
use crate::pin;

/// Every tenth Authorization names its generators with a namespace glob (`team-7/*/*`); the
/// others list exact `namespace/kind/name` references. Both shapes occur in real configs.
pub const GLOB_EVERY: usize = 10;

/// Figure 2's configuration: one cluster, `rules` namespaces each with a `Password/db` and a
/// lease-returning `Fake/creds` generator, and one Authorization per namespace (plus a
/// `UUID/id` in the first namespace, figure 7's third generator).
pub fn small_config(issuer: &str, rules: usize) -> String {
    let mut y = String::new();
    let _ = write!(
        y,
        "apiVersion: esi.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: bench}}\n\
         spec: {{issuer: \"{issuer}\", keys: {{discovery: {{}}}}, audiences: [esi]}}\n---\n"
    );
    for i in 0..rules {
        let ns = format!("team-{i:04}");
        generators(&mut y, &ns, true);
        if i == 0 {
            // Figure 7's third generator.
            let _ = write!(
                y,
                "apiVersion: esi.dev/v1alpha1\nkind: UUID\nmetadata: {{name: id, namespace: {ns}}}\n---\n"
            );
            authorization(
                &mut y,
                &ns,
                None,
                i,
                &["Password/db", "Fake/creds", "UUID/id"],
            );
        } else {
            authorization(&mut y, &ns, None, i, &["Password/db", "Fake/creds"]);
        }
    }
    y
}

/// Figure 2's token pool for [`small_config`]: one token per namespace, signed by `key` for
/// `issuer`.
pub fn small_tokens(key: &SigningKey, issuer: &str, rules: usize) -> Vec<(String, String)> {
    (0..rules)
        .map(|i| {
            let ns = format!("team-{i:04}");
            let t = mint(key, issuer, &ns);
            (ns, t)
        })
        .collect()
}

/// Figure 4's configuration: `clusters` clusters (distinct issuers served by a
/// [`MultiIssuer`]), `rules` namespaces each with one `Password/db` generator and one
/// Authorization bound to the namespace's cluster (`rules / clusters` namespaces per cluster).
pub fn large_config(issuers: &MultiIssuer, clusters: usize, rules: usize) -> String {
    let mut y = String::with_capacity(rules * 400);
    for c in 0..clusters {
        let _ = write!(
            y,
            "apiVersion: esi.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: c-{c:04}, labels: {{region: r{}}}}}\n\
             spec: {{issuer: \"{}\", keys: {{discovery: {{}}}}, audiences: [esi]}}\n---\n",
            c % 8,
            issuers.issuer(c)
        );
    }
    let per_cluster = rules / clusters.max(1);
    for i in 0..rules {
        let ns = format!("team-{i:05}");
        generators(&mut y, &ns, false);
        let cluster = format!("c-{:04}", i / per_cluster.max(1));
        authorization(&mut y, &ns, Some(&cluster), i, &["Password/db"]);
    }
    y
}

/// Figure 4's token pool for [`large_config`]: one token per cluster, each for a namespace
/// that cluster's Authorization covers.
pub fn large_tokens(issuers: &MultiIssuer, clusters: usize, rules: usize) -> Vec<(String, String)> {
    let per_cluster = (rules / clusters.max(1)).max(1);
    (0..clusters)
        .map(|k| {
            let i = k * per_cluster + k % per_cluster;
            let ns = format!("team-{i:05}");
            let t = mint(issuers.key(k), &issuers.issuer(k), &ns);
            (ns, t)
        })
        .collect()
}

fn generators(y: &mut String, ns: &str, fake: bool) {
    let _ = write!(
        y,
        "apiVersion: esi.dev/v1alpha1\nkind: Password\nmetadata: {{name: db, namespace: {ns}}}\n\
         spec: {{length: 24, digits: 4, symbols: 2}}\n---\n"
    );
    if fake {
        let _ = write!(
            y,
            "apiVersion: esi.dev/v1alpha1\nkind: Fake\nmetadata: {{name: creds, namespace: {ns}}}\n\
             spec: {{data: {{username: bench-user, password: bench-secret}}, leaseDuration: 15m}}\n---\n"
        );
    }
}

fn authorization(y: &mut String, ns: &str, cluster: Option<&str>, i: usize, refs: &[&str]) {
    let clusters = cluster.map_or(String::new(), |c| format!("clusters: [{c}], "));
    let generators = if i % GLOB_EVERY == GLOB_EVERY - 1 {
        format!("[\"{ns}/*/*\"]")
    } else {
        let list: Vec<String> = refs.iter().map(|r| format!("{ns}/{r}")).collect();
        format!("[{}]", list.join(", "))
    };
    let _ = write!(
        y,
        "apiVersion: esi.dev/v1alpha1\nkind: Authorization\nmetadata: {{name: {ns}}}\n\
         spec:\n  subjects: [{{{clusters}namespaces: [{ns}], serviceAccounts: [app, \"worker-*\"]}}]\n  \
         generators: {generators}\n  maxTTL: 1h\n---\n"
    );
}

/// A token for `namespace/app` from `issuer`, signed by `key`.
pub fn mint(key: &SigningKey, issuer: &str, namespace: &str) -> String {
    key.sign(
        json!({"typ": "JWT"}),
        &TokenSpec::new(namespace, "app").claims(issuer),
        true,
    )
}

/// A local issuer for figures 1–3, 5 and 6, served on the current runtime.
pub async fn single_issuer() -> anyhow::Result<Arc<LocalIssuer>> {
    let issuer = LocalIssuer::new(SigningKey::rsa());
    issuer.serve().await.context("serving the local issuer")?;
    Ok(issuer)
}

/// Many issuers on one loopback listener: issuer `i` is `http://ADDR/c/i`, with discovery and
/// JWKS under it. Keys are shared round-robin from a small set (generating 1,000 RSA keys
/// would dominate the bench); which key a cluster uses does not change the verifier's work.
pub struct MultiIssuer {
    base: String,
    keys: Vec<Arc<SigningKey>>,
    fetches: AtomicUsize,
}

impl MultiIssuer {
    /// Generates `keys` RSA keys and serves the issuers.
    pub async fn serve(keys: usize) -> anyhow::Result<Arc<Self>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let this = Arc::new(MultiIssuer {
            base,
            keys: (0..keys.max(1))
                .map(|_| Arc::new(SigningKey::rsa()))
                .collect(),
            fetches: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/c/{i}/.well-known/openid-configuration", get(discovery))
            .route("/c/{i}/openid/v1/jwks", get(jwks))
            .with_state(this.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(this)
    }

    /// Issuer URL of cluster `i`.
    pub fn issuer(&self, i: usize) -> String {
        format!("{}/c/{i}", self.base)
    }

    /// Signing key of cluster `i`.
    pub fn key(&self, i: usize) -> &SigningKey {
        &self.keys[i % self.keys.len()]
    }

    /// JWKS documents served so far.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::Relaxed)
    }
}

async fn discovery(
    State(m): State<Arc<MultiIssuer>>,
    UrlPath(i): UrlPath<usize>,
) -> axum::Json<serde_json::Value> {
    let iss = m.issuer(i);
    axum::Json(json!({
        "issuer": iss,
        "jwks_uri": format!("{iss}/openid/v1/jwks"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn jwks(
    State(m): State<Arc<MultiIssuer>>,
    UrlPath(i): UrlPath<usize>,
) -> axum::Json<serde_json::Value> {
    m.fetches.fetch_add(1, Ordering::Relaxed);
    axum::Json(json!({"keys": [m.key(i).jwk()]}))
}

/// Manifests per file when a configuration is written as a folder: big configurations are a
/// folder of files, as they would be in a repository (the loader reads larger files too).
pub const DOCS_PER_FILE: usize = 500;

/// Writes `yaml` (documents separated by `---` lines) into a new folder `dir`, in files of
/// [`DOCS_PER_FILE`] documents.
pub fn write_config_dir(dir: &Path, yaml: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let docs: Vec<&str> = yaml
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .collect();
    for (i, chunk) in docs.chunks(DOCS_PER_FILE).enumerate() {
        let mut text = String::new();
        for d in chunk {
            text.push_str(d);
            text.push_str("---\n");
        }
        std::fs::write(dir.join(format!("part-{i:03}.yaml")), text)?;
    }
    Ok(())
}

/// Writes the same configuration as one JSON `List` file, the form the Terraform modules render
/// (`jsonencode`).
pub fn write_config_json(dir: &Path, yaml: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let items: Vec<serde_json::Value> = esi_federation::config::parse_text("bench", yaml)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_iter()
        .map(|d| d.value)
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    std::fs::write(dir.join("config.json"), serde_json::to_vec(&list)?)?;
    Ok(())
}

/// A running `esi-federation serve`, killed on drop.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Writes `config` into a temp folder and starts the binary on `core`; returns once it logs
    /// that it serves (the configuration is loaded by then).
    pub async fn start(bin: &Path, config: &str, core: usize) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("config");
        write_config_dir(&conf, config)?;
        let mut cmd = serve_command(bin, &conf, "127.0.0.1:0");
        let log = Log::pipe_stderr(&mut cmd, Some(esi_federation::testkit::serving_addr))?;
        let mut child = pin::spawn_on(core, cmd)?;
        let addr = log
            .wait_picked(&mut child, "esi-federation", Duration::from_secs(120))
            .await?;
        Ok(Server {
            child,
            addr: addr.parse().context("serving address")?,
            _dir: dir,
        })
    }

    /// Resident set size and its peak, in bytes, from `/proc/PID/status`.
    pub fn memory(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
                .ok_or_else(|| anyhow!("no {name} in /proc status"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command line the bench uses for the federation (logs: JSON on stderr, level info, so
/// the audit line of every decision is written as in production, into a pipe as
/// [`Log::pipe_stderr`] makes it; `ESI_BENCH_LOG` overrides the level, to measure what logging
/// costs).
pub fn serve_command(bin: &Path, config: &Path, listen: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--config"])
        .arg(config)
        .args(["--listen", listen, "--log-format", "json"])
        .args(["--reload-interval", "1h"])
        .env("ESI_LEASE_KEYS", lease_keys())
        .env(
            "ESI_LOG",
            std::env::var("ESI_BENCH_LOG").unwrap_or_else(|_| "info".to_owned()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

fn lease_keys() -> String {
    static KEYS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| esi_federation::lease::LeaseKeys::generate_spec("bench"))
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use esi_federation::config;

    /// Figures 5 and 5j start on the same configuration, written in its two forms.
    #[test]
    fn the_yaml_folder_and_the_json_list_hold_the_same_configuration() {
        let text = small_config("http://127.0.0.1:9", 20);
        let dir = tempfile::tempdir().unwrap();
        write_config_dir(&dir.path().join("yaml"), &text).unwrap();
        write_config_json(&dir.path().join("json"), &text).unwrap();
        let read = |path: &Path| {
            let docs = config::read_documents(path).unwrap();
            config::parse_resources(docs).unwrap()
        };
        let yaml = read(&dir.path().join("yaml"));
        let json = read(&dir.path().join("json/config.json"));
        for res in [&yaml, &json] {
            assert_eq!(res.clusters.len(), 1);
            assert_eq!(res.authorizations.len(), 20);
            // Password/db and Fake/creds per namespace, and team-0000's UUID/id.
            assert_eq!(res.generators.len(), 41);
        }
        assert!(
            yaml.generators.keys().eq(json.generators.keys()),
            "the two forms name different generators"
        );
        assert!(yaml.authorizations.keys().eq(json.authorizations.keys()));
    }
}
