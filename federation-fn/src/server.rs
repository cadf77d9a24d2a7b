//! Serving the API as a long-running server (Kubernetes Deployment mode): plain HTTP or TLS
//! with certificate files reloaded when they change, configuration reloaded on SIGHUP and on
//! file change, graceful shutdown on SIGTERM/SIGINT.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use axum::http::Request;
use axum::response::Response;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use esi_serving::{Deadlined, stop_requested};
pub use esi_serving::{Guard, Limits};
use hyper::body::Incoming;

use crate::state::{AppState, Fingerprint, fingerprint};

/// TLS certificate and key files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Installs aws-lc-rs as rustls' process-wide crypto provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A service of hyper's requests as [`serve`] needs it.
pub trait ServiceOf<B>:
    tower::Service<Request<B>, Response = Response, Error = Infallible, Future: Send + 'static>
{
}

impl<S, B> ServiceOf<B> for S where
    S: tower::Service<Request<B>, Response = Response, Error = Infallible, Future: Send + 'static>
{
}

/// What [`serve`] serves: a cloneable tower service of hyper's requests, such as the
/// federation's [`crate::Api`] or an axum `Router`. It is handed their bodies bound by the read
/// timeout ([`Deadlined`]); axum-server, which serves TLS, also asks for it to take hyper's
/// bodies as they come.
pub trait Served:
    ServiceOf<Deadlined<Incoming>> + ServiceOf<Incoming> + Clone + Send + 'static
{
}

impl<S> Served for S where
    S: ServiceOf<Deadlined<Incoming>> + ServiceOf<Incoming> + Clone + Send + 'static
{
}

/// How a server stops on SIGTERM/SIGINT.
#[derive(Clone, Copy, Debug)]
pub struct Stopping {
    /// How long it keeps serving, new connections too, before it stops accepting (see
    /// [`esi_serving::stop_requested`]).
    pub delay: Duration,
    /// How long requests in flight then have to finish.
    pub drain: Duration,
}

/// Serves `app` (the federation's [`crate::Api`], or a `Router`) on `listener` until
/// SIGTERM/SIGINT (and `stopping.delay`), then drains in-flight requests for up to
/// `stopping.drain`. Every connection is held to `guard`'s limits (read and idle deadlines, a
/// cap on open connections: see [`esi_serving`]).
pub async fn serve<S>(
    listener: std::net::TcpListener,
    app: S,
    tls: Option<TlsFiles>,
    stopping: Stopping,
    guard: Guard,
) -> anyhow::Result<()>
where
    S: Served,
{
    listener.set_nonblocking(true)?;
    match tls {
        None => {
            serve_plain(
                tokio::net::TcpListener::from_std(listener)?,
                app,
                stopping,
                guard,
            )
            .await
        }
        Some(files) => serve_tls(listener, app, files, stopping, guard).await,
    }
}

/// Serves HTTPS with axum-server, the certificate files reloaded when they change (see
/// [`watch_tls`]).
async fn serve_tls<S>(
    listener: std::net::TcpListener,
    app: S,
    files: TlsFiles,
    stopping: Stopping,
    guard: Guard,
) -> anyhow::Result<()>
where
    S: Served,
{
    let handle: Handle<SocketAddr> = Handle::new();
    let shutdown = handle.clone();
    tokio::spawn(async move {
        stop_requested(stopping.delay).await;
        tracing::info!("shutting down: draining in-flight requests");
        shutdown.graceful_shutdown(Some(stopping.drain));
    });
    let service = tower::make::Shared::new(app);
    install_crypto_provider();
    // Stamped before the files are read: a rotation in between then shows as a change.
    let loaded = tls_stamp(&files);
    let config = RustlsConfig::from_pem_file(&files.cert, &files.key)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot load TLS certificate {} / key {}: {e}",
                files.cert.display(),
                files.key.display()
            )
        })?;
    http1_alpn(&config);
    tokio::spawn(watch_tls(config.clone(), files, loaded));
    axum_server::from_tcp_rustls(listener, config)?
        .http1_only()
        .map(|tls| tls.acceptor(guard))
        .handle(handle)
        .serve(service)
        .await?;
    Ok(())
}

/// Serves plain HTTP/1.1 straight with hyper: one task
/// per connection, watched for a graceful shutdown on SIGTERM/SIGINT, then a drain of up to
/// `stopping.drain` before the remaining connections are dropped. While `guard`'s cap is reached, no
/// connection is accepted: the next ones wait in the listen backlog.
///
/// axum-server, which serves TLS ([`serve_tls`]), wraps every connection in a `select!` over three
/// shutdown signals, each taking a lock when polled, and stores a shutdown handle in every
/// request's extensions (three allocations): per request, on the issuance hot path. hyper-util's
/// graceful watcher polls one signal per wake and touches no request.
async fn serve_plain<S>(
    listener: tokio::net::TcpListener,
    app: S,
    stopping: Stopping,
    guard: Guard,
) -> anyhow::Result<()>
where
    S: Served,
{
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    // HTTP/1.1 only (see esi_serving).
    let builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    let graceful = GracefulShutdown::new();
    let mut signal = std::pin::pin!(stop_requested(stopping.delay));
    loop {
        let slot = tokio::select! {
            slot = guard.admit() => slot,
            () = &mut signal => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: retry without spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        // Requests and answers are small: do not hold them back (Nagle).
        let _ = stream.set_nodelay(true);
        let (io, service) = guard.open(stream, app.clone(), slot);
        let conn = builder
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A connection's I/O errors (a client gone mid-request) end only that connection.
            let _ = conn.await;
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    if tokio::time::timeout(stopping.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(drain = ?stopping.drain, "connections still open after the drain; closing them");
    }
    Ok(())
}

/// Offers only HTTP/1.1 in ALPN: axum-server's PEM loading also offers `h2`, which the server
/// does not speak (see [`esi_serving`]: HTTP/1.1 only).
fn http1_alpn(config: &RustlsConfig) {
    let mut inner = (*config.get_inner()).clone();
    inner.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.reload_from_config(std::sync::Arc::new(inner));
}

/// The certificate and key files' modification times.
fn tls_stamp(f: &TlsFiles) -> Option<(SystemTime, SystemTime)> {
    Some((
        std::fs::metadata(&f.cert).ok()?.modified().ok()?,
        std::fs::metadata(&f.key).ok()?.modified().ok()?,
    ))
}

/// Reloads the certificate when the files' times differ from `loaded`, taken before the
/// serving configuration was read from them.
async fn watch_tls(
    config: RustlsConfig,
    files: TlsFiles,
    loaded: Option<(SystemTime, SystemTime)>,
) {
    let mut last = loaded;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let now = tls_stamp(&files);
        if now.is_some() && now != last {
            match config.reload_from_pem_file(&files.cert, &files.key).await {
                Ok(()) => {
                    http1_alpn(&config);
                    tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
                    last = now;
                }
                // A half-written pair (cert rotated, key not yet) fails; retry next tick.
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate reload failed; keeping the current one")
                }
            }
        }
    }
}

/// Reloads the configuration at `path` on SIGHUP and when its files change (polled every
/// `interval`); a failed reload keeps the last good configuration.
///
/// `loaded` is the files' fingerprint taken before the serving configuration was read, so a
/// change made while it loaded is noticed. A reload that fails is tried once more at the next
/// tick even if nothing changed since: a ConfigMap caught mid-swap (a link already gone that
/// was still listed) fails once and then looks unchanged; a configuration that is really
/// broken is not retried again until its files change.
pub fn spawn_config_watch(state: AppState, path: PathBuf, interval: Duration, loaded: Fingerprint) {
    tokio::spawn(async move {
        let mut last = loaded;
        let mut retry = false;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let forced = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            #[cfg(not(unix))]
            let forced = {
                tick.tick().await;
                false
            };
            let p = path.clone();
            let now = tokio::task::spawn_blocking(move || fingerprint(&p))
                .await
                .unwrap_or_default();
            let again = std::mem::take(&mut retry) && now == last;
            if !forced && !again && now == last {
                continue;
            }
            last = now;
            let reason = if forced {
                "SIGHUP"
            } else if again {
                "the last reload failed"
            } else {
                "files changed"
            };
            tracing::info!(path = %path.display(), reason, "reloading configuration");
            let st = state.clone();
            let p = path.clone();
            let failed = tokio::task::spawn_blocking(move || st.reload_from(&p).is_err())
                .await
                .unwrap_or(true);
            retry = failed && !again;
        }
    });
}
