//! `esi-federation`: serve the federation (`serve`), try it on an embedded default (`dev`),
//! validate a configuration (`check`), print the CRDs (`crds`), a new lease key (`lease-key`) or a
//! new OIDC issuer key (`issuer-key`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use esi_federation::key_secret::{self, KeysSecret};
use esi_federation::lease::LeaseKeys;
use esi_federation::server::{self, TlsFiles};
use esi_federation::state::{AppState, KeyFetch, PREFETCH_DEADLINE, Settings, Starting};
use esi_federation::{config, dev, telemetry};

#[derive(Parser)]
#[command(
    name = "esi-federation",
    version,
    args_override_self = true,
    about = "The esi federation: disposable credentials for Kubernetes workloads"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of `serve`'s flags costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve the federation from a configuration file or folder, or from the CRDs.
    #[command(args_override_self = true)]
    Serve {
        /// Configuration file or folder of manifests (with `--config-source file`).
        #[arg(long, env = "ESI_CONFIG", required_if_eq("config_source", "file"))]
        config: Option<PathBuf>,
        /// Where the configuration comes from: `file` (a file or folder, reloaded on change and
        /// SIGHUP) or `kubernetes` (the esi.dev CRDs, listed and watched in-cluster).
        #[arg(long, env = "ESI_CONFIG_SOURCE", default_value = "file", value_parser = ["file", "kubernetes"])]
        config_source: String,
        /// Listen address.
        #[arg(long, env = "ESI_LISTEN", default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        /// TLS certificate chain (PEM); reloaded when it changes.
        #[arg(long, env = "ESI_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM).
        #[arg(long, env = "ESI_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// File holding the lease keys (`id=base64,...`, first seals). Else `ESI_LEASE_KEYS`,
        /// or the AWS Secrets Manager secret named by `ESI_LEASE_KEYS_SECRET` (the file or the
        /// variable, not the secret too).
        #[arg(long, env = "ESI_LEASE_KEYS_FILE")]
        lease_keys_file: Option<PathBuf>,
        /// Use a random lease key (leases then die with this process; single replica only).
        #[arg(long)]
        ephemeral_lease_key: bool,
        /// Make the federation an OIDC issuer at this public URL (`https://...`): it serves
        /// `/.well-known/openid-configuration` and `/openid/v1/jwks`, and `IdentityToken`
        /// generators sign with its keys. Needs the keys, given one way: `--issuer-keys-file`,
        /// `ESI_ISSUER_KEYS`, or `ESI_ISSUER_KEYS_SECRET`.
        #[arg(long, env = "ESI_ISSUER_URL")]
        issuer_url: Option<String>,
        /// File holding the issuer's PEM private keys (RSA or EC P-256; the first signs, all
        /// are published). Else `ESI_ISSUER_KEYS` holds the PEM text, or the AWS Secrets
        /// Manager secret named by `ESI_ISSUER_KEYS_SECRET` (`ESI_ISSUER_KEYS_SECRET_VERSION`
        /// pins a version) does.
        #[arg(long, env = "ESI_ISSUER_KEYS_FILE", requires = "issuer_url")]
        issuer_keys_file: Option<PathBuf>,
        /// How often to look for configuration changes (SIGHUP reloads at once).
        #[arg(long, default_value = "5s", value_parser = positive_duration)]
        reload_interval: Duration,
        /// How long a request waits on a backend (a mint, with its key fetch; a revoke). A
        /// mint still running then is answered 503; what it mints later is revoked.
        #[arg(long, default_value = "10s", value_parser = positive_duration)]
        backend_timeout: Duration,
        /// How long a client may take to send a request's head (from its first byte, or from
        /// the connection's accept), and then its body, and to take an answer once it stops
        /// taking it; slower clients are cut off.
        #[arg(long, env = "ESI_READ_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
        read_timeout: Duration,
        /// How long a keep-alive connection may wait for its next request. Keep it above the
        /// idle timeout of the load balancer in front (AWS ALB 60 s, Google 600 s, Envoy 1 h),
        /// so the balancer always closes first.
        #[arg(long, env = "ESI_IDLE_TIMEOUT", default_value = "1h", value_parser = positive_duration)]
        idle_timeout: Duration,
        /// How many connections may be open at once; more wait in the listen backlog (plain
        /// HTTP) or are closed at once (HTTPS).
        #[arg(long, env = "ESI_MAX_CONNECTIONS", default_value_t = server::Limits::DEFAULT.max_connections, value_parser = esi_serving::parse_max_connections)]
        max_connections: usize,
        /// How long to keep serving after SIGTERM before new connections are refused, while
        /// load balancers and kube-proxy stop sending here (what a `preStop` sleep does, where
        /// none can be set); requests in flight then have 20 s to finish.
        #[arg(long, env = "ESI_SHUTDOWN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
        shutdown_delay: Duration,
        /// Log format (`plain` or `json`; default from ESI_LOG_FORMAT).
        #[arg(long)]
        log_format: Option<String>,
    },
    /// Run on the embedded dev configuration with a built-in issuer and a dev token.
    Dev {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where to write the dev ServiceAccount token.
        #[arg(long, default_value = "esi-dev.token")]
        token_out: PathBuf,
    },
    /// Serve as an AWS Lambda function (what the `bootstrap` does without arguments).
    #[cfg(feature = "lambda")]
    Lambda,
    /// Validate a configuration file or folder and exit.
    Check {
        /// Configuration file or folder.
        config: PathBuf,
        /// Then log in to each SecretStore's backend once, as the federation would, and say as
        /// whom (or why not); fail if a login fails. Nothing is minted.
        #[arg(long)]
        login: bool,
        /// With `--login`: the serving federation's issuer URL, so that the stores logging in
        /// with its own token (`selfIssued`) are checked too; its keys as `serve` takes them
        /// (`--issuer-keys-file`, `ESI_ISSUER_KEYS` or `ESI_ISSUER_KEYS_SECRET`). Ignored
        /// without `--login`.
        #[arg(long, env = "ESI_ISSUER_URL")]
        issuer_url: Option<String>,
        /// With `--issuer-url`: the file holding the issuer's PEM private keys.
        #[arg(long, env = "ESI_ISSUER_KEYS_FILE", requires = "issuer_url")]
        issuer_keys_file: Option<PathBuf>,
    },
    /// Print the CRDs, or write one file per CRD into a folder.
    Crds {
        /// Folder to write into (default: print to stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print a fresh lease key in the ESI_LEASE_KEYS format.
    LeaseKey {
        /// Key id.
        #[arg(long, default_value = "k1")]
        id: String,
    },
    /// Print a fresh OIDC issuer signing key (PKCS#8 PEM) for ESI_ISSUER_KEYS.
    IssuerKey {
        /// `rs256` (RSA 2048, what every relying party takes) or `es256` (EC P-256).
        #[arg(long, default_value = "rs256", value_parser = ["rs256", "es256"])]
        algorithm: String,
    },
}

/// mimalloc instead of glibc malloc: the request paths allocate many small, short-lived
/// objects (JSON values, header maps, futures), where glibc's free-list upkeep showed up at
/// 5-15 % of the server's CPU in profiles (bench/FINDINGS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long requests in flight have to finish after `serve` stops accepting (the Deployment's
/// grace period must exceed it plus `--shutdown-delay`).
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(20);

fn main() -> ExitCode {
    // Inside AWS Lambda the binary is the function's `bootstrap`, started without arguments.
    #[cfg(feature = "lambda")]
    if esi_federation::lambda::is_lambda() && std::env::args_os().len() <= 1 {
        return report(run_lambda());
    }
    let result = run(Cli::parse());
    telemetry::flush();
    report(result)
}

/// `check --login`: each SecretStore of the configuration at `path` logs in once, one line
/// each (`namespace/name (provider): ...`), those logging in with the federation's own token
/// with `issuer`'s; an error when any login failed.
fn check_logins(path: &std::path::Path, issuer: Option<IssuerSource>) -> anyhow::Result<()> {
    use esi_backends::LoginCheck;
    let stores = config::parse_resources(config::read_documents(path)?)?.stores;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let issuer = runtime.block_on(IssuerSource::load(issuer))?;
    let mut failed = 0;
    for ((namespace, name), (spec, _)) in &stores {
        let provider = spec.provider.name();
        match runtime.block_on(spec.check_login(issuer.clone())) {
            LoginCheck::LoggedIn(who) => {
                println!("{namespace}/{name} ({provider}): logged in: {who}");
            }
            LoginCheck::NotChecked(why) => {
                println!("{namespace}/{name} ({provider}): not checked: {why}");
            }
            LoginCheck::Failed(e) => {
                failed += 1;
                println!(
                    "{namespace}/{name} ({provider}): FAILED: {e} ({})",
                    e.detail()
                );
            }
        }
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} SecretStore logins failed",
        stores.len()
    );
    Ok(())
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("esi-federation: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Lambda mode: configuration from `ESI_CONFIG` (default `/opt/esi`), lease keys from the
/// secret `ESI_LEASE_KEYS_SECRET` (or `ESI_LEASE_KEYS`), and, as an OIDC issuer
/// (`ESI_ISSUER_URL`), its signing keys from `ESI_ISSUER_KEYS_SECRET` (or `ESI_ISSUER_KEYS`),
/// all read once per cold start, before the first invocation (the two secrets at once); the
/// registered clusters' keys fetched then too (waiting at most [`PREFETCH_DEADLINE`]).
#[cfg(feature = "lambda")]
fn run_lambda() -> anyhow::Result<()> {
    use esi_federation::lambda;
    telemetry::init(None);
    let config = std::env::var_os("ESI_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(lambda::DEFAULT_CONFIG));
    let source = LeaseKeySource::choose(None, false)?;
    let issuer = IssuerSource::choose(std::env::var("ESI_ISSUER_URL").ok(), None)?;
    runtime()?.block_on(async move {
        // Read, then fetch the registered issuers' keys, while the own keys are fetched: a cold
        // start pays the longer of the two.
        let starting = Starting::new(Settings::default());
        let own_url = issuer.as_ref().map(|i| i.url.clone());
        let path = config.clone();
        let (keys, read) = tokio::join!(
            async { tokio::try_join!(source.load(), IssuerSource::load(issuer)) },
            read_then_fetch_keys(&starting, path, own_url.as_deref()),
        );
        let (leases, issuer) = keys?;
        let (res, fetch) = read?;
        let state = starting.serving(leases, issuer);
        let snap = config::build_snapshot(res, &state, config.display().to_string())?;
        state.install(snap);
        fetch.wait(PREFETCH_DEADLINE).await;
        lambda::run(esi_federation::router(state))
            .await
            .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"))
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // No SecretStore may read the files of the federation's own credentials (IRSA's token).
    esi_backends::secret::reserve_own_credential_files();
    match cli.command {
        #[cfg(feature = "lambda")]
        Command::Lambda => run_lambda(),
        Command::Check {
            config,
            login,
            issuer_url,
            issuer_keys_file,
        } => {
            let state = AppState::new(Settings::default(), LeaseKeys::ephemeral());
            let snap = config::load_path(&config, &state)?;
            println!(
                "{}: ok ({} clusters, {} authorizations, {} generators)",
                config.display(),
                snap.clusters.len(),
                snap.authorizer.len(),
                snap.generators.len()
            );
            if login {
                check_logins(&config, IssuerSource::choose(issuer_url, issuer_keys_file)?)?;
            }
            Ok(())
        }
        Command::Crds { out } => {
            let files = esi_federation::crd_files().map_err(anyhow::Error::msg)?;
            match out {
                None => {
                    for (_, yaml) in files {
                        print!("---\n{yaml}");
                    }
                }
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    for (name, yaml) in files {
                        std::fs::write(dir.join(&name), yaml)
                            .with_context(|| format!("writing {name}"))?;
                    }
                }
            }
            Ok(())
        }
        Command::IssuerKey { algorithm } => {
            use esi_backends::identity::{KeyAlgorithm, generate_key_pem};
            use secrecy::ExposeSecret as _;
            let alg = match algorithm.as_str() {
                "es256" => KeyAlgorithm::Es256,
                _ => KeyAlgorithm::Rs256,
            };
            let pem = generate_key_pem(alg)
                .map_err(|_| anyhow::anyhow!("cannot generate a key: no entropy source"))?;
            print!("{}", pem.expose_secret());
            Ok(())
        }
        Command::LeaseKey { id } => {
            let spec = LeaseKeys::generate_spec(&id);
            LeaseKeys::parse(&spec)?;
            println!("{spec}");
            Ok(())
        }
        Command::Dev { listen, token_out } => {
            telemetry::init(None);
            runtime()?.block_on(async move {
                let listener = std::net::TcpListener::bind(listen)
                    .with_context(|| format!("cannot listen on {listen}"))?;
                let addr = listener.local_addr()?;
                let dev = dev::build(addr)?;
                let token = dev::dev_token(&dev.issuer);
                dev::write_token(&token_out, &token)
                    .with_context(|| format!("cannot write {}", token_out.display()))?;
                println!("{}", dev::instructions(&dev.base_url, &token_out));
                server::serve(
                    listener,
                    dev.app,
                    None,
                    server::Stopping {
                        delay: Duration::ZERO,
                        drain: Duration::from_secs(5),
                    },
                    server::Guard::new(server::Limits::DEFAULT),
                )
                .await
            })
        }
        Command::Serve {
            config,
            config_source,
            listen,
            tls_cert,
            tls_key,
            lease_keys_file,
            ephemeral_lease_key,
            issuer_url,
            issuer_keys_file,
            reload_interval,
            backend_timeout,
            read_timeout,
            idle_timeout,
            max_connections,
            shutdown_delay,
            log_format,
        } => {
            let format = match log_format.as_deref() {
                None => None,
                Some("json") => Some(telemetry::LogFormat::Json),
                Some("plain") => Some(telemetry::LogFormat::Plain),
                Some(other) => anyhow::bail!("--log-format {other:?}: use plain or json"),
            };
            telemetry::init_with(format, telemetry::Sink::Batched);
            // No SecretStore may read the federation's own secrets (see SecretRef::validate).
            for own in [&lease_keys_file, &tls_key, &issuer_keys_file]
                .into_iter()
                .flatten()
            {
                esi_backends::secret::reserve_file(own);
            }
            let source = LeaseKeySource::choose(lease_keys_file, ephemeral_lease_key)?;
            let issuer = IssuerSource::choose(issuer_url, issuer_keys_file)?;
            let settings = Settings {
                backend_timeout,
                ..Settings::default()
            };
            let tls = tls_cert
                .zip(tls_key)
                .map(|(cert, key)| TlsFiles { cert, key });
            runtime()?.block_on(async move {
                let file = match (config_source.as_str(), config) {
                    ("kubernetes", _) => None,
                    // Taken first: a change while the configuration loads is then seen.
                    (_, Some(config)) => Some((esi_federation::state::fingerprint(&config), config)),
                    (_, None) => anyhow::bail!("--config (or ESI_CONFIG) is required with --config-source file"),
                };
                let starting = Starting::new(settings);
                let own_url = issuer.as_ref().map(|i| i.url.clone());
                // The two secrets, when both come from Secrets Manager, are read at once; a
                // configuration file is read, and its issuers' keys fetched, meanwhile.
                let secrets = async { tokio::try_join!(source.load(), IssuerSource::load(issuer)) };
                let (keys, read) = match &file {
                    None => (secrets.await, None),
                    Some((_, config)) => {
                        let reading = read_then_fetch_keys(&starting, config.clone(), own_url.as_deref());
                        let (keys, read) = tokio::join!(secrets, reading);
                        (keys, Some(read))
                    }
                };
                let (leases, issuer) = keys?;
                let state = starting.serving(leases, issuer);
                match file.zip(read) {
                    None => start_kubernetes_source(&state).await?,
                    Some(((loaded, config), read)) => {
                        let (res, fetch) = read?;
                        let snap = {
                            let (st, origin) = (state.clone(), config.display().to_string());
                            tokio::task::spawn_blocking(move || config::build_snapshot(res, &st, origin))
                                .await??
                        };
                        state.install(snap);
                        fetch.wait(PREFETCH_DEADLINE).await;
                        server::spawn_config_watch(state.clone(), config, reload_interval, loaded);
                    }
                }
                let listener = std::net::TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
                tracing::info!(addr = %listener.local_addr()?, tls = tls.is_some(), "esi federation serving");
                let limits = server::Limits { read_timeout, idle_timeout, max_connections };
                let stopping = server::Stopping { delay: shutdown_delay, drain: SHUTDOWN_DRAIN };
                let guard = server::Guard::new(limits).with_metrics(state.metrics.connections());
                server::serve(listener, esi_federation::api(state), tls, stopping, guard).await
            })
        }
    }
}

/// Reads the configuration at `path` on the blocking pool, then starts fetching the keys of the
/// issuers it registers (see [`Starting::fetch_keys`]).
async fn read_then_fetch_keys(
    starting: &Starting,
    path: PathBuf,
    own_issuer: Option<&str>,
) -> anyhow::Result<(config::Resources, KeyFetch)> {
    let res = tokio::task::spawn_blocking(move || config::read_resources(&path)).await??;
    let fetch = starting.fetch_keys(&res, own_issuer);
    Ok((res, fetch))
}

#[cfg(feature = "kubernetes")]
async fn start_kubernetes_source(state: &AppState) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    tokio::spawn(esi_federation::kube_source::run(
        state.clone(),
        client,
        Duration::from_millis(500),
    ));
    Ok(())
}

#[cfg(not(feature = "kubernetes"))]
async fn start_kubernetes_source(_: &AppState) -> anyhow::Result<()> {
    anyhow::bail!("this build has no Kubernetes support (cargo feature `kubernetes`)")
}

/// A duration such as `5s` or `250ms`, above zero (a zero period would stop the reload
/// watcher's timer, a zero timeout fail every request that waits).
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be more than zero".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// The federation's OIDC issuer as configured: its URL (`--issuer-url` / `ESI_ISSUER_URL`)
/// and where its signing keys come from. `--issuer-keys-file`, `ESI_ISSUER_KEYS` and the
/// secret are never combined or ranked: two are refused, naming both.
struct IssuerSource {
    url: String,
    keys: IssuerKeys,
}

enum IssuerKeys {
    File(PathBuf),
    Env(secrecy::SecretString),
    Secret(KeysSecret),
}

/// The variable holding the issuer's PEM keys.
const ISSUER_KEYS_ENV: &str = "ESI_ISSUER_KEYS";

impl IssuerSource {
    /// The issuer `url` and its keys, `None` without a URL. Keys without a URL, a URL without
    /// keys, and two sources of keys are refused.
    fn choose(url: Option<String>, keys_file: Option<PathBuf>) -> anyhow::Result<Option<Self>> {
        let env = std::env::var(ISSUER_KEYS_ENV)
            .ok()
            .map(secrecy::SecretString::from);
        let secret = KeysSecret::from_env(&key_secret::ISSUER_KEYS)?;
        let given: Vec<&str> = [
            keys_file
                .is_some()
                .then_some("--issuer-keys-file (ESI_ISSUER_KEYS_FILE)"),
            env.is_some().then_some(ISSUER_KEYS_ENV),
            secret
                .is_some()
                .then_some(key_secret::ISSUER_KEYS.secret_env),
        ]
        .into_iter()
        .flatten()
        .collect();
        let Some(url) = url.filter(|u| !u.trim().is_empty()) else {
            anyhow::ensure!(
                given.is_empty(),
                "issuer keys are set ({}) but no issuer URL: set --issuer-url (ESI_ISSUER_URL) too, \
                 or unset the keys",
                given.join(", ")
            );
            return Ok(None);
        };
        let keys = match (keys_file, env, secret) {
            (Some(path), None, None) => IssuerKeys::File(path),
            (None, Some(text), None) => IssuerKeys::Env(text),
            (None, None, Some(secret)) => IssuerKeys::Secret(secret),
            (None, None, None) => anyhow::bail!(
                "the issuer URL is set but no issuer keys: set {ISSUER_KEYS_ENV}, \
                 --issuer-keys-file or {} (generate a key with `esi-federation issuer-key`)",
                key_secret::ISSUER_KEYS.secret_env
            ),
            _ => anyhow::bail!(
                "{}: give the issuer keys one way",
                match given.as_slice() {
                    [a, b] => format!("both {a} and {b} are set"),
                    _ => format!("{} are all set", given.join(", ")),
                }
            ),
        };
        Ok(Some(IssuerSource { url, keys }))
    }

    /// Reads the keys (at start-up: reading a file blocks the runtime only then; the secret
    /// within [`key_secret::FETCH_DEADLINE`]) and builds the issuer.
    async fn load(
        source: Option<Self>,
    ) -> anyhow::Result<Option<std::sync::Arc<esi_backends::identity::Issuer>>> {
        use secrecy::ExposeSecret as _;
        let Some(IssuerSource { url, keys }) = source else {
            return Ok(None);
        };
        let (pem, from) = match keys {
            IssuerKeys::File(path) => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read issuer keys {}", path.display()))?;
                (
                    secrecy::SecretString::from(text),
                    path.display().to_string(),
                )
            }
            IssuerKeys::Env(text) => (text, ISSUER_KEYS_ENV.to_owned()),
            IssuerKeys::Secret(secret) => (
                secret.fetch(key_secret::FETCH_DEADLINE).await?,
                secret.name().to_string(),
            ),
        };
        let issuer = esi_backends::identity::Issuer::new(&url, pem.expose_secret())
            .with_context(|| format!("cannot serve as an OIDC issuer (keys from {from})"))?;
        tracing::info!(
            issuer = issuer.url(),
            kid = issuer.signing_kid(),
            "serving as an OIDC issuer"
        );
        Ok(Some(std::sync::Arc::new(issuer)))
    }
}

/// Where the lease keys come from. `--lease-keys-file` (or `ESI_LEASE_KEYS`) and the secret
/// are never combined or ranked: two sources are refused, naming both.
enum LeaseKeySource {
    File(PathBuf),
    Env(String),
    Secret(KeysSecret),
    Ephemeral,
}

impl LeaseKeySource {
    fn choose(file: Option<PathBuf>, ephemeral: bool) -> anyhow::Result<Self> {
        let secret = KeysSecret::from_env(&key_secret::LEASE_KEYS)?;
        let env = std::env::var("ESI_LEASE_KEYS").ok();
        Ok(match (file, env, secret) {
            (Some(_), _, Some(_)) => anyhow::bail!(
                "both --lease-keys-file (ESI_LEASE_KEYS_FILE) and {} are set: give the lease keys one way",
                key_secret::LEASE_KEYS.secret_env
            ),
            (None, Some(_), Some(_)) => anyhow::bail!(
                "both ESI_LEASE_KEYS and {} are set: give the lease keys one way",
                key_secret::LEASE_KEYS.secret_env
            ),
            // The file wins over ESI_LEASE_KEYS, as documented on `--lease-keys-file`.
            (Some(path), _, None) => Self::File(path),
            (None, Some(spec), None) => Self::Env(spec),
            (None, None, Some(secret)) => Self::Secret(secret),
            (None, None, None) if ephemeral => Self::Ephemeral,
            (None, None, None) => anyhow::bail!(
                "no lease keys: set ESI_LEASE_KEYS, --lease-keys-file or {} (generate a key with `esi-federation lease-key`), \
                 or pass --ephemeral-lease-key for a single throwaway instance",
                key_secret::LEASE_KEYS.secret_env
            ),
        })
    }

    /// Reads the keys (at start-up: reading a file blocks the runtime only then).
    async fn load(self) -> anyhow::Result<LeaseKeys> {
        match self {
            Self::File(path) => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read lease keys {}", path.display()))?;
                LeaseKeys::parse(&text).with_context(|| format!("lease keys in {}", path.display()))
            }
            Self::Env(spec) => LeaseKeys::parse(&spec).context("ESI_LEASE_KEYS"),
            Self::Secret(secret) => Ok(secret
                .fetch_parsed(key_secret::FETCH_DEADLINE, LeaseKeys::parse)
                .await?),
            Self::Ephemeral => {
                tracing::warn!(
                    "using an ephemeral lease key: leases are revocable only through this process"
                );
                Ok(LeaseKeys::ephemeral())
            }
        }
    }
}

/// The async runtime: tokio's current-thread scheduler when the process may use one CPU (a
/// 1-vCPU Lambda, a container limited to one CPU, a pinned process), where a work-stealing pool
/// would only add hand-offs between its worker and the blocking pool; otherwise the
/// multi-thread scheduler over the usable CPUs. `available_parallelism` reads both the affinity
/// mask and the cgroup CPU quota.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
