//! `esi-webhook`: serves the mutating admission webhook over HTTPS.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use esi_webhook::entrypoint::EntrypointLookup;
use esi_webhook::server::{self, TlsFiles};
use esi_webhook::service_account::{self, ServiceAccounts};
use esi_webhook::{AppState, WebhookConfig};

/// The esi mutating admission webhook.
#[derive(Debug, Parser)]
#[command(name = "esi-webhook", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "ESI_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    listen: String,
    /// PEM certificate chain (cert-manager's tls.crt).
    #[arg(
        long,
        env = "ESI_WEBHOOK_TLS_CERT",
        default_value = "/etc/esi-webhook/tls/tls.crt"
    )]
    tls_cert: PathBuf,
    /// PEM private key (tls.key).
    #[arg(
        long,
        env = "ESI_WEBHOOK_TLS_KEY",
        default_value = "/etc/esi-webhook/tls/tls.key"
    )]
    tls_key: PathBuf,
    /// How often the certificate files are checked for changes, e.g. 10s.
    #[arg(long, env = "ESI_WEBHOOK_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    tls_reload_interval: Duration,
    /// Injection policy file (YAML); defaults apply when absent.
    #[arg(long, env = "ESI_WEBHOOK_CONFIG")]
    config: Option<PathBuf>,
    /// Read each Pod's ServiceAccount for `esi.dev/` defaults (needs in-cluster API access and
    /// RBAC `get` on serviceaccounts). `false` disables the lookups and the API client.
    #[arg(
        long,
        env = "ESI_WEBHOOK_SERVICE_ACCOUNT_DEFAULTS",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    service_account_defaults: bool,
    /// Bound on one ServiceAccount read, e.g. 2s; the Pod is denied when it is exceeded.
    #[arg(long, env = "ESI_WEBHOOK_SERVICE_ACCOUNT_TIMEOUT", default_value = "2s", value_parser = parse_positive_duration)]
    service_account_timeout: Duration,
    /// How long a ServiceAccount's defaults are reused before it is read again, e.g. 30s.
    #[arg(long, env = "ESI_WEBHOOK_SERVICE_ACCOUNT_CACHE_TTL", default_value = "30s", value_parser = parse_duration)]
    service_account_cache_ttl: Duration,
    /// How long a client may take to send a request's head (from its first byte, or from the
    /// accept, TLS handshake included), and then its body, and to take an answer once it
    /// stops taking it, e.g. 10s.
    #[arg(long, env = "ESI_WEBHOOK_READ_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    read_timeout: Duration,
    /// How long a keep-alive connection may wait for its next review, e.g. 1h. Keep it above
    /// the API server's idle connection timeout (90 s), so the API server always closes first.
    #[arg(long, env = "ESI_WEBHOOK_IDLE_TIMEOUT", default_value = "1h", value_parser = parse_positive_duration)]
    idle_timeout: Duration,
    /// How many connections may be open at once; more are refused.
    #[arg(long, env = "ESI_WEBHOOK_MAX_CONNECTIONS", default_value_t = esi_serving::Limits::DEFAULT.max_connections, value_parser = esi_serving::parse_max_connections)]
    max_connections: usize,
    /// How long to keep serving after SIGTERM before new connections are refused, while the
    /// Service's endpoint removal spreads, e.g. 5s (what a `preStop` sleep does, where none can
    /// be set; none by default); reviews in flight then have 10 s to finish.
    #[arg(long, env = "ESI_WEBHOOK_SHUTDOWN_DELAY", value_parser = parse_positive_duration)]
    shutdown_delay: Option<Duration>,
    /// Log format: plain or json.
    #[arg(long, env = "ESI_LOG_FORMAT", default_value = "json")]
    log_format: String,
    /// Without a command: serve.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Inject esi-cli into the Pods and Pod templates of manifests as the webhook would at
    /// admission, and print them (YAML): for GitOps pipelines, clusters without the webhook,
    /// or to see what the webhook does. Exits 1, printing nothing, when a Pod is denied.
    Inject {
        /// Manifests, YAML or JSON, several documents each; `-` or none: standard input.
        files: Vec<PathBuf>,
        /// The injection policy file the webhook runs with (defaults apply when absent).
        #[arg(long, env = "ESI_WEBHOOK_CONFIG")]
        config: Option<PathBuf>,
        /// The namespace of objects that name none.
        #[arg(long, short = 'n', default_value = "default")]
        namespace: String,
    },
    /// Check an injection policy file and exit; with `--image`, read images' entrypoints as
    /// `entrypointLookup` would, and print them.
    Check {
        /// The injection policy file.
        config: PathBuf,
        /// An image to read the entrypoint of (repeatable).
        #[arg(long = "image")]
        images: Vec<String>,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    esi_api::inject::parse_duration_seconds(s).map(|n| Duration::from_secs(n.unsigned_abs()))
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be more than 0s".to_owned()),
        d => Ok(d),
    }
}

/// The ServiceAccount reader, with a client configured from the Pod's environment (in-cluster
/// token and CA) or a kubeconfig.
async fn service_accounts(args: &Args) -> anyhow::Result<ServiceAccounts> {
    let config = kube::Config::infer().await.context(
        "no Kubernetes API configuration (in-cluster or kubeconfig) for ServiceAccount defaults; \
         run with --service-account-defaults=false to disable them",
    )?;
    // The lookup's own timeout (tokio) bounds connect + response; kube's timeouts stay at
    // their defaults so a single, predictable deadline decides.
    let client = kube::Client::try_from(config).context("building the Kubernetes API client")?;
    Ok(ServiceAccounts::new(
        client,
        service_account::Settings {
            timeout: args.service_account_timeout,
            ttl: args.service_account_cache_ttl,
            ..service_account::Settings::default()
        },
    ))
}

/// mimalloc instead of glibc malloc: the request paths allocate many small, short-lived
/// objects (JSON values, header maps, futures), where glibc's free-list upkeep showed up at
/// 5-15 % of the server's CPU in profiles (bench/FINDINGS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Some(command) = args.command.take() {
        return match run_command(command) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("esi-webhook: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    init_tracing(&args.log_format);
    let result = run(args);
    esi_telemetry::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("esi-webhook: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one of the commands that do not serve, on a runtime of their own.
fn run_command(command: Command) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match command {
        Command::Inject {
            files,
            config,
            namespace,
        } => runtime.block_on(inject(&files, config.as_deref(), &namespace)),
        Command::Check { config, images } => runtime.block_on(check(&config, &images)),
    }
}

/// The state `esi-webhook inject` and `check` decide with: the configuration, and the
/// entrypoint lookup when it is on.
fn offline_state(config: Option<&std::path::Path>) -> anyhow::Result<AppState> {
    let config = match config {
        Some(path) => WebhookConfig::from_file(path)?,
        None => WebhookConfig::default(),
    };
    let mut state = AppState::new(config);
    if state.config.entrypoint_lookup.enabled() {
        let lookup = EntrypointLookup::new(&state.config.entrypoint_lookup)?;
        state = state.with_entrypoint_lookup(lookup);
    }
    Ok(state)
}

async fn inject(
    files: &[PathBuf],
    config: Option<&std::path::Path>,
    namespace: &str,
) -> anyhow::Result<ExitCode> {
    use std::io::{Read as _, Write as _};
    let state = offline_state(config)?;
    let stdin = [PathBuf::from("-")];
    let files = if files.is_empty() { &stdin[..] } else { files };
    let mut docs = Vec::new();
    for file in files {
        let (name, text) = if file.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading standard input")?;
            ("standard input".to_owned(), text)
        } else {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            (file.display().to_string(), text)
        };
        let read = esi_webhook::inject::parse(&text)
            .with_context(|| format!("{name}: not YAML or JSON manifests"))?;
        docs.extend(read);
    }
    let injected = esi_webhook::inject::inject(&state, docs, namespace).await;
    for note in &injected.notes {
        eprintln!("{note}");
    }
    if injected.denied {
        eprintln!("esi-webhook inject: a Pod was denied; nothing was printed");
        return Ok(ExitCode::FAILURE);
    }
    let yaml = serde_saphyr::to_string_multiple(&injected.documents)
        .context("writing the manifests as YAML")?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(yaml.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing to standard output")?;
    eprintln!(
        "esi-webhook inject: {} of {} documents injected",
        injected.injected,
        injected.documents.len()
    );
    Ok(ExitCode::SUCCESS)
}

async fn check(config: &std::path::Path, images: &[String]) -> anyhow::Result<ExitCode> {
    let state = offline_state(Some(config))?;
    let lookup = &state.config.entrypoint_lookup;
    println!(
        "{}: ok (entrypointLookup {})",
        config.display(),
        if lookup.enabled() {
            format!("on for {}", lookup.registries.join(", "))
        } else {
            "off".to_owned()
        }
    );
    if images.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let Some(lookup) = state.entrypoints.as_deref() else {
        anyhow::bail!(
            "--image needs entrypointLookup.registries in {}",
            config.display()
        );
    };
    let mut code = ExitCode::SUCCESS;
    let platforms = lookup.platforms();
    for image in images {
        let found = lookup.lookup_for(image, platforms).await;
        for (platform, found) in platforms.iter().zip(found) {
            // Each platform named when the cluster runs several.
            let name = if platforms.len() > 1 {
                format!("{image} ({platform})")
            } else {
                image.clone()
            };
            match found {
                Ok((found, _)) => println!(
                    "{name}: ENTRYPOINT {:?} CMD {:?} ({})",
                    found.entrypoint, found.cmd, found.digest
                ),
                Err(e) => {
                    // The registry's own words, which the Pod's creator is not shown.
                    match e.detail() {
                        detail if detail == e.to_string() => println!("{name}: {e}"),
                        detail => println!("{name}: {e}: {detail}"),
                    }
                    code = ExitCode::FAILURE;
                }
            }
        }
    }
    Ok(code)
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ESI_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let format = if format == "json" {
        esi_telemetry::LogFormat::Json
    } else {
        esi_telemetry::LogFormat::Plain
    };
    // One line per admission: batched, flushed at exit and on a panic (esi_telemetry).
    esi_telemetry::install(format, filter, esi_telemetry::Sink::Batched);
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => WebhookConfig::from_file(path)?,
        None => WebhookConfig::default(),
    };
    // One usable CPU (affinity or cgroup quota): the current-thread scheduler, without the
    // hand-offs of a work-stealing pool that has nothing to steal.
    let runtime = if std::thread::available_parallelism().is_ok_and(|n| n.get() == 1) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()
    .context("starting tokio")?;
    // One crypto provider for every rustls user (the server and kube's client).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    runtime.block_on(async move {
        let mut state = AppState::new(config);
        if args.service_account_defaults {
            state = state.with_service_accounts(service_accounts(&args).await?);
            tracing::info!(
                timeout = ?args.service_account_timeout,
                ttl = ?args.service_account_cache_ttl,
                "ServiceAccount defaults enabled"
            );
        } else {
            tracing::info!("ServiceAccount defaults disabled");
        }
        let lookup = &state.config.entrypoint_lookup;
        if lookup.enabled() {
            let registries = lookup.registries.clone();
            let lookup = EntrypointLookup::new(lookup)?;
            state = state.with_entrypoint_lookup(lookup);
            tracing::info!(?registries, "entrypoint lookup enabled");
        }
        let listener = std::net::TcpListener::bind(&args.listen)
            .with_context(|| format!("binding {}", args.listen))?;
        let tls = TlsFiles {
            cert: args.tls_cert,
            key: args.tls_key,
        };
        let limits = esi_serving::Limits {
            read_timeout: args.read_timeout,
            idle_timeout: args.idle_timeout,
            max_connections: args.max_connections,
        };
        let running = server::serve(listener, state, tls, args.tls_reload_interval, limits)
            .context("starting the HTTPS server")?;
        tracing::info!(addr = %running.addr, "esi-webhook listening");
        let handle = running.handle.clone();
        let delay = args.shutdown_delay.unwrap_or_default();
        tokio::spawn(async move {
            esi_serving::stop_requested(delay).await;
            // Let in-flight reviews finish; the API server times out after timeoutSeconds anyway.
            handle.graceful_shutdown(Some(Duration::from_secs(10)));
        });
        running
            .task
            .await
            .context("server task")?
            .context("serving")?;
        Ok(())
    })
}
