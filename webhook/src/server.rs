//! The HTTPS server: the router (`/mutate`, `/healthz`, `/readyz`, `/metrics`), its metrics,
//! the rustls configuration and the certificate reloader that follows cert-manager rotations.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::tls_rustls::RustlsConfig;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::config::WebhookConfig;
use crate::entrypoint::{EntrypointLookup, ImageCommand, LookupError, Platform, PodPlatforms};
use crate::mutate::{Entrypoints, Outcome};
use crate::review::{self, Decision, Parsed, Reviewed};
use crate::service_account::{self, ServiceAccounts};

/// The path the `MutatingWebhookConfiguration` calls.
pub const MUTATE_PATH: &str = "/mutate";
/// Largest accepted `AdmissionReview` body (a Pod is at most ~1.5 MB in etcd).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Labels of `esi_webhook_admissions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `injected`, `skipped`, `denied` or `invalid`.
    pub result: &'static str,
}

/// Labels of `esi_webhook_service_account_lookups_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    /// `cached`, `found`, `not_found` or `error`.
    pub result: &'static str,
}

/// Labels of `esi_webhook_entrypoint_lookups_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EntrypointLabels {
    /// `cached`, `registry`, or the failure's code (`not_allowed`, `unauthorized`,
    /// `not_found`, `no_entrypoint`, `config_too_large`, `manifest_too_large`, `timeout`,
    /// `unavailable`, `invalid_reference`).
    pub result: &'static str,
}

/// Labels of `esi_webhook_tls_reloads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// The webhook's Prometheus metrics.
pub struct Metrics {
    registry: Registry,
    /// Admissions by result.
    pub admissions: Family<ResultLabels, Counter>,
    /// Admission latency.
    pub latency: Histogram,
    /// Certificate reloads by result.
    pub tls_reloads: Family<ReloadLabels, Counter>,
    /// ServiceAccount lookups by result.
    pub service_account_lookups: Family<LookupLabels, Counter>,
    /// Image entrypoint lookups by result.
    pub entrypoint_lookups: Family<EntrypointLabels, Counter>,
    /// Open connections, and those closed by a deadline or refused over the cap.
    pub connections: esi_serving::ConnectionMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("esi_webhook");
        let admissions = Family::<ResultLabels, Counter>::default();
        registry.register(
            "admissions",
            "Admission reviews answered, by result",
            admissions.clone(),
        );
        let latency = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ]);
        registry.register_with_unit(
            "admission_duration",
            "Time to answer an admission review",
            prometheus_client::registry::Unit::Seconds,
            latency.clone(),
        );
        let tls_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "tls_reloads",
            "TLS certificate reloads, by result",
            tls_reloads.clone(),
        );
        let service_account_lookups = Family::<LookupLabels, Counter>::default();
        registry.register(
            "service_account_lookups",
            "ServiceAccount reads for esi.dev/ defaults, by result",
            service_account_lookups.clone(),
        );
        let entrypoint_lookups = Family::<EntrypointLabels, Counter>::default();
        registry.register(
            "entrypoint_lookups",
            "Image entrypoints read for containers without command, by result",
            entrypoint_lookups.clone(),
        );
        let connections = esi_serving::ConnectionMetrics::default();
        connections.register(&mut registry);
        Self {
            registry,
            admissions,
            latency,
            tls_reloads,
            service_account_lookups,
            entrypoint_lookups,
            connections,
        }
    }
}

impl Metrics {
    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Shared state of the router.
#[derive(Clone)]
pub struct AppState {
    /// Injection policy.
    pub config: Arc<WebhookConfig>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Reads Pods' ServiceAccounts for their `esi.dev/` defaults; `None` disables the defaults.
    pub service_accounts: Option<Arc<ServiceAccounts>>,
    /// Reads images' entrypoints for containers without `command`; `None` when
    /// `entrypointLookup` is off.
    pub entrypoints: Option<Arc<EntrypointLookup>>,
}

impl AppState {
    /// State with fresh metrics and without ServiceAccount defaults.
    pub fn new(config: WebhookConfig) -> Self {
        Self {
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            service_accounts: None,
            entrypoints: None,
        }
    }

    /// The same state, reading images' entrypoints through `lookup`.
    #[must_use]
    pub fn with_entrypoint_lookup(mut self, lookup: EntrypointLookup) -> Self {
        self.entrypoints = Some(Arc::new(lookup));
        self
    }

    /// The same state, reading ServiceAccount defaults through `lookups`.
    #[must_use]
    pub fn with_service_accounts(mut self, lookups: ServiceAccounts) -> Self {
        self.service_accounts = Some(Arc::new(lookups));
        self
    }
}

/// The webhook's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(MUTATE_PATH, post(mutate_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/metrics", get(metrics_handler))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn metrics_handler(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn mutate_handler(State(state): State<AppState>, body: Bytes) -> Response {
    let started = Instant::now();
    let reviewed = match review::parse(&body) {
        Parsed::Answered(r) => *r,
        Parsed::Pod(req) => review_pod(&state, req).await,
    };
    let decision = reviewed.decision;
    state
        .metrics
        .admissions
        .get_or_create(&ResultLabels {
            result: decision.as_str(),
        })
        .inc();
    state
        .metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
    let uid = &reviewed.response.response.uid;
    match decision {
        Decision::Denied | Decision::Invalid => tracing::warn!(
            uid = %uid, namespace = %reviewed.namespace, pod = %reviewed.pod,
            result = decision.as_str(), reason = %reviewed.detail, "admission denied"
        ),
        _ => tracing::info!(
            uid = %uid, namespace = %reviewed.namespace, pod = %reviewed.pod,
            result = decision.as_str(), reason = %reviewed.detail, "admission reviewed"
        ),
    }
    // Always 200: the API server reads the decision from the body; a non-200 would lose the
    // message (and, with failurePolicy Fail, deny anyway without saying why).
    match reviewed.response.to_json() {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(uid = %uid, error = %e, "cannot serialize the AdmissionReview answer");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Decides a Pod CREATE, first reading its ServiceAccount's defaults when they are enabled and
/// the Pod is one the webhook would inject (an unreadable ServiceAccount denies the Pod, see
/// [`crate::service_account`] for why), then as [`admit`] does.
async fn review_pod(state: &AppState, req: review::PodRequest) -> Reviewed {
    let defaults = match state.service_accounts.as_deref() {
        Some(lookups)
            if crate::mutate::wants_injection(&req.pod, &req.namespace, &state.config) =>
        {
            let name = service_account::pod_service_account(&req.pod).to_owned();
            let count = |result: &'static str| {
                state
                    .metrics
                    .service_account_lookups
                    .get_or_create(&LookupLabels { result })
                    .inc();
            };
            match lookups.defaults(&req.namespace, &name).await {
                Ok((defaults, source)) => {
                    count(source.as_str());
                    defaults
                }
                Err(e) => {
                    count("error");
                    tracing::warn!(
                        namespace = %req.namespace, service_account = %name, code = e.code(),
                        error = %e.detail(), "cannot read the Pod's ServiceAccount"
                    );
                    return review::deny_unavailable(req, &name, &e.to_string());
                }
            }
        }
        _ => None,
    };
    admit(state, req, defaults.as_deref()).await
}

/// Decides a Pod CREATE whose ServiceAccount's `esi.dev/` annotations are `sa`, reading the
/// images' entrypoints of containers without `command` when they are needed and
/// `entrypointLookup` is on.
pub async fn admit(
    state: &AppState,
    req: review::PodRequest,
    sa: Option<&BTreeMap<String, String>>,
) -> Reviewed {
    let outcome = crate::mutate::mutate(&req.pod, &req.namespace, sa, &state.config);
    let (Ok(Outcome::NeedsEntrypoints(wanted)), Some(lookup)) =
        (&outcome, state.entrypoints.as_deref())
    else {
        return review::answer(req, outcome, Vec::new());
    };
    // The platforms the Pod may run on (of the cluster's, or those it pins itself): each
    // container's image is read for all of them, all images at once.
    let pod_platforms = req
        .pod
        .spec
        .as_ref()
        .map(PodPlatforms::of)
        .unwrap_or_default();
    let platforms = match pod_platforms.resolve(lookup.platforms()) {
        Ok(platforms) => platforms,
        Err(e) => {
            state
                .metrics
                .entrypoint_lookups
                .get_or_create(&EntrypointLabels { result: e.code() })
                .inc();
            // The first container that needs its entrypoint (the outcome names at least one).
            let w = &wanted[0];
            tracing::warn!(
                namespace = %req.namespace, container = %w.container, image = %w.image,
                code = e.code(), error = %e, "the Pod may run on no platform to read its image for"
            );
            return deny_entrypoint(req, w, &e, sa);
        }
    };
    let looked_up = futures_util::future::join_all(
        wanted
            .iter()
            .map(|w| lookup.lookup_for(&w.image, &platforms)),
    )
    .await;
    let mut found: Vec<Vec<(&Platform, Arc<ImageCommand>)>> = vec![Vec::new(); wanted.len()];
    let each = looked_up
        .into_iter()
        .enumerate()
        .flat_map(|(i, results)| platforms.iter().zip(results).map(move |(p, r)| (i, p, r)));
    for (i, platform, result) in each {
        let w = &wanted[i];
        let label = match &result {
            Ok((_, source)) => source.as_str(),
            Err(e) => e.code(),
        };
        state
            .metrics
            .entrypoint_lookups
            .get_or_create(&EntrypointLabels { result: label })
            .inc();
        match result {
            Ok((image, _)) => found[i].push((platform, image)),
            Err(e) => {
                tracing::warn!(
                    namespace = %req.namespace, container = %w.container, image = %w.image,
                    %platform, code = e.code(), error = %e.detail(),
                    "cannot read the image's entrypoint"
                );
                return deny_entrypoint(req, w, &e, sa);
            }
        }
    }
    let mut entrypoints = Entrypoints::new();
    let mut warnings = Vec::new();
    for (w, images) in wanted.iter().zip(found) {
        let Some((_, first)) = images.first() else {
            continue;
        };
        let command = first.command(w.sets_args);
        if images
            .iter()
            .any(|(_, other)| other.command(w.sets_args) != command)
        {
            let each = images
                .iter()
                .map(|(p, image)| format!("{p} {:?}", image.command(w.sets_args)))
                .collect::<Vec<_>>()
                .join(", ");
            let e = LookupError::PlatformsDiffer(each);
            tracing::warn!(
                namespace = %req.namespace, container = %w.container, image = %w.image,
                code = e.code(), error = %e, "the image's platforms run different commands"
            );
            return deny_entrypoint(req, w, &e, sa);
        }
        let read = images
            .iter()
            .map(|(p, image)| format!("{} for {p}", image.digest))
            .collect::<Vec<_>>()
            .join(", ");
        warnings.push(format!(
            "esi: container {} has no command; esi-cli runs {command:?}, read from image {} ({read})",
            w.container, w.image
        ));
        entrypoints.insert(w.container.clone(), command);
    }
    let outcome = crate::mutate::mutate_with_entrypoints(
        &req.pod,
        &req.namespace,
        sa,
        &state.config,
        &entrypoints,
    );
    review::answer(req, outcome, warnings)
}

/// Denies a Pod whose container `w` has no entrypoint the webhook could read, naming the
/// keys the Pod inherits from its ServiceAccount (`sa`).
fn deny_entrypoint(
    req: review::PodRequest,
    w: &crate::mutate::EntrypointWanted,
    e: &LookupError,
    sa: Option<&BTreeMap<String, String>>,
) -> Reviewed {
    let note = crate::mutate::service_account_note(&req.pod, sa);
    review::deny_entrypoint(req, w, e, note.as_deref())
}

/// Why TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The PEM holds no usable certificate or key.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the pair.
    #[error("invalid certificate/key pair: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds a rustls server configuration (aws-lc-rs, TLS 1.2+, HTTP/1.1) from PEM bytes.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("unreadable certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Pem(
            "no certificate in the certificate file".into(),
        ));
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| TlsError::Pem(format!("unreadable key PEM: {e}")))?
        .ok_or_else(|| TlsError::Pem("no private key in the key file".into()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The certificate and key files, and the live rustls configuration they feed.
#[derive(Clone)]
pub struct TlsFiles {
    /// PEM certificate chain (e.g. cert-manager's `tls.crt`).
    pub cert: PathBuf,
    /// PEM private key (`tls.key`).
    pub key: PathBuf,
}

/// The certificate and key bytes a served configuration was built from (not printed: the
/// key is secret).
pub struct TlsPair((Vec<u8>, Vec<u8>));

impl std::fmt::Debug for TlsPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsPair")
    }
}

impl TlsFiles {
    fn load(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        Ok((read(&self.cert)?, read(&self.key)?))
    }

    /// Reads the files and builds the initial configuration, returned with the bytes it was
    /// built from (the watcher's starting point, [`TlsFiles::watch`]).
    pub fn rustls_config(&self) -> Result<(RustlsConfig, TlsPair), TlsError> {
        let (c, k) = self.load()?;
        let config = RustlsConfig::from_config(server_config(&c, &k)?);
        Ok((config, TlsPair((c, k))))
    }

    /// Polls the files every `interval` and swaps the configuration when their content differs
    /// from what is served (`served`: the bytes `config` was built from; read again here, a
    /// rotation between the two reads would never be noticed) and parses; a broken pair is
    /// logged and the previous one keeps serving. Polling rather than inotify: Secret volumes
    /// swap a symlink, which inotify watches on the files miss.
    pub async fn watch(
        self,
        config: RustlsConfig,
        served: TlsPair,
        interval: Duration,
        metrics: Arc<Metrics>,
    ) {
        let mut last = Some(served.0);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Ok(current) = self.load() else { continue };
            if last.as_ref() == Some(&current) {
                continue;
            }
            match server_config(&current.0, &current.1) {
                Ok(cfg) => {
                    config.reload_from_config(cfg);
                    metrics
                        .tls_reloads
                        .get_or_create(&ReloadLabels { result: "ok" })
                        .inc();
                    tracing::info!(cert = %self.cert.display(), "reloaded TLS certificate");
                    last = Some(current);
                }
                Err(e) => {
                    // cert-manager may be between writing the certificate and the key: retry on
                    // the next tick, keep serving the old pair.
                    metrics
                        .tls_reloads
                        .get_or_create(&ReloadLabels { result: "error" })
                        .inc();
                    tracing::warn!(error = %e, "TLS files changed but cannot be used; keeping the previous certificate");
                }
            }
        }
    }
}

/// A running server, for the binary and for tests.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// Stops the server.
    pub handle: axum_server::Handle<SocketAddr>,
    /// The server task.
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The certificate watcher task.
    pub watcher: tokio::task::JoinHandle<()>,
}

/// Binds `listener`, serves the router over TLS, every connection held to `limits` (read and
/// idle deadlines, a cap on open connections: see [`esi_serving`]), and starts the certificate
/// watcher.
pub fn serve(
    listener: std::net::TcpListener,
    state: AppState,
    tls: TlsFiles,
    reload_interval: Duration,
    limits: esi_serving::Limits,
) -> Result<Running, std::io::Error> {
    let addr = listener.local_addr()?;
    let (rustls, served) = tls.rustls_config().map_err(std::io::Error::other)?;
    let handle = axum_server::Handle::new();
    let watcher = tokio::spawn(tls.watch(
        rustls.clone(),
        served,
        reload_interval,
        state.metrics.clone(),
    ));
    let connections = state.metrics.connections.clone();
    let server = axum_server::tls_rustls::from_tcp_rustls(listener, rustls)?
        .http1_only()
        .map(|tls| tls.acceptor(esi_serving::Guard::new(limits).with_metrics(connections.clone())))
        .handle(handle.clone());
    let app = router(state);
    let task = tokio::spawn(async move { server.serve(app.into_make_service()).await });
    Ok(Running {
        addr,
        handle,
        task,
        watcher,
    })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;

    async fn call(app: Router, req: Request<Body>) -> (StatusCode, String) {
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_rotation_before_the_watcher_starts_is_still_loaded() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        };
        let write = |pki: &esi_test_support::Pki| {
            std::fs::write(&files.cert, &pki.cert_pem).unwrap();
            std::fs::write(&files.key, &pki.key_pem).unwrap();
        };
        write(&esi_test_support::pki("first").unwrap());
        let (config, served) = files.rustls_config().unwrap();
        // cert-manager rotates the Secret before the watcher first looks at the files.
        write(&esi_test_support::pki("second").unwrap());
        let metrics = Arc::new(Metrics::default());
        let watcher =
            tokio::spawn(files.watch(config, served, Duration::from_millis(10), metrics.clone()));
        let reloaded = || {
            metrics
                .tls_reloads
                .get_or_create(&ReloadLabels { result: "ok" })
                .get()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while reloaded() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the rotated certificate was never loaded"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        watcher.abort();
    }

    #[tokio::test]
    async fn probes_answer_and_metrics_count_admissions() {
        let state = AppState::new(WebhookConfig::default());
        let app = router(state.clone());
        let (s, b) = call(
            app.clone(),
            Request::get("/healthz").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!((s, b.as_str()), (StatusCode::OK, "ok"));
        let (s, _) = call(
            app.clone(),
            Request::get("/readyz").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let (s, b) = call(
            app.clone(),
            Request::post(MUTATE_PATH).body(Body::from("{")).unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert!(b.contains(r#""allowed":false"#), "{b}");
        let (_, m) = call(app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
        assert!(
            m.contains(r#"esi_webhook_admissions_total{result="invalid"} 1"#),
            "{m}"
        );
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused() {
        let app = router(AppState::new(WebhookConfig::default()));
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        let (s, _) = call(
            app,
            Request::post(MUTATE_PATH).body(Body::from(big)).unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn broken_tls_material_is_a_clear_error() {
        let e = server_config(b"", b"").unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
    }
}
