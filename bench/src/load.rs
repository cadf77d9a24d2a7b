//! The load generator: HTTP/1.1 keep-alive connections (hyper's client connection API, over
//! TCP or rustls), a closed-loop throughput driver and an open-loop fixed-rate latency driver.
//!
//! It runs on the bench's single-threaded runtime, pinned to the client core, so that the
//! server under test has its core to itself.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One connection's request sender.
pub type Conn = SendRequest<Full<Bytes>>;

/// How to open a connection.
#[derive(Clone)]
pub enum Dialer {
    /// Plain HTTP.
    Tcp(SocketAddr),
    /// HTTPS with this client configuration; the server name is `localhost`.
    Tls(SocketAddr, Arc<rustls::ClientConfig>),
}

impl Dialer {
    /// Opens one keep-alive connection; its driver runs on the current runtime.
    pub async fn connect(&self) -> anyhow::Result<Conn> {
        match self {
            Dialer::Tcp(addr) => {
                let tcp = TcpStream::connect(addr)
                    .await
                    .with_context(|| format!("connect {addr}"))?;
                tcp.set_nodelay(true)?;
                handshake(TokioIo::new(tcp)).await
            }
            Dialer::Tls(addr, config) => handshake(TokioIo::new(tls(*addr, config).await?)).await,
        }
    }

    /// The TLS version and cipher suite the server settles on (`None` for plain HTTP).
    pub async fn tls_parameters(&self) -> anyhow::Result<Option<String>> {
        let Dialer::Tls(addr, config) = self else {
            return Ok(None);
        };
        let stream = tls(*addr, config).await?;
        let conn = stream.get_ref().1;
        Ok(Some(format!(
            "{:?} {:?}",
            conn.protocol_version().context("no TLS version")?,
            conn.negotiated_cipher_suite()
                .context("no cipher suite")?
                .suite()
        )))
    }

    /// Opens `n` connections, each used at once for a `GET /healthz`: the servers close a
    /// connection that sends no request within their read timeout of its accept (10 s), and
    /// a pool's connections may wait longer than that for their first round.
    pub async fn pool(&self, n: usize) -> anyhow::Result<Vec<Conn>> {
        let hello = Prepared::new(http::Method::GET, "/healthz", None, None)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let mut conn = self.connect().await?;
            let (status, _) = send(&mut conn, &hello).await?;
            anyhow::ensure!(status.is_success(), "GET /healthz answered {status}");
            out.push(conn);
        }
        Ok(out)
    }
}

/// A TLS connection to `addr`, whose certificate must be valid for `localhost`.
async fn tls(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {addr}"))
}

async fn handshake<T>(io: TokioIo<T>) -> anyhow::Result<Conn>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// A request prepared once and sent many times.
#[derive(Clone)]
pub struct Prepared {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Prepared {
    /// A request to `path` with an optional bearer token and JSON body.
    pub fn new(
        method: Method,
        path: &str,
        bearer: Option<&str>,
        json: Option<Bytes>,
    ) -> anyhow::Result<Self> {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("localhost"));
        if let Some(t) = bearer {
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {t}"))?,
            );
        }
        let body = match json {
            Some(b) => {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                b
            }
            None => Bytes::new(),
        };
        Ok(Prepared {
            method,
            uri: path.parse()?,
            headers,
            body,
        })
    }

    /// Size of the body.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// Sends one request and reads the whole response.
pub async fn send(conn: &mut Conn, req: &Prepared) -> anyhow::Result<(StatusCode, Bytes)> {
    conn.ready().await?;
    let resp = conn.send_request(req.request()).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Requests sent round-robin from a shared cursor, with the status every response must have.
#[derive(Clone)]
pub struct Workload {
    name: &'static str,
    requests: Arc<Vec<Prepared>>,
    cursor: Arc<AtomicUsize>,
    expect: StatusCode,
}

impl Workload {
    /// A workload over `requests`, named `name` in the round log.
    pub fn new(name: &'static str, requests: Vec<Prepared>, expect: StatusCode) -> Self {
        Workload {
            name,
            requests: Arc::new(requests),
            cursor: Arc::new(AtomicUsize::new(0)),
            expect,
        }
    }

    /// The same requests under another name in the round log (sent to a floor, say).
    pub fn renamed(&self, name: &'static str) -> Self {
        Workload {
            name,
            ..self.clone()
        }
    }

    fn next(&self) -> &Prepared {
        let i = self.cursor.fetch_add(1, Ordering::Relaxed);
        &self.requests[i % self.requests.len()]
    }

    /// The first request.
    pub fn first(&self) -> Prepared {
        self.requests[0].clone()
    }
}

static ROUND_LOG: OnceLock<Mutex<std::fs::File>> = OnceLock::new();

/// Writes every closed-loop round's workload and measured window to `path` from now on, one
/// tab-separated line each: name, start, end (wall-clock seconds since the epoch, the clock of
/// `perf record -k realtime`), responses per second. Cutting a profile of the server by these
/// windows keeps only the samples of one workload (see the profiling recipe in BENCHMARKS.md).
pub fn log_rounds_to(path: &Path) -> anyhow::Result<()> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "# workload\tstart\tend\trate")?;
    ROUND_LOG
        .set(Mutex::new(file))
        .map_err(|_| anyhow!("the round log is already open"))
}

fn log_round(name: &str, start: SystemTime, end: SystemTime, rate: f64) {
    let Some(log) = ROUND_LOG.get() else {
        return;
    };
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
    };
    let mut file = log.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = writeln!(
        file,
        "{name}\t{:.6}\t{:.6}\t{rate:.0}",
        secs(start),
        secs(end)
    ) {
        eprintln!("esi-bench: round log: {e}");
    }
}

/// Outcome of a closed-loop run.
#[derive(Debug, Clone)]
pub struct Throughput {
    /// Responses with the expected status per second over the measured window.
    pub rate: f64,
    /// Responses with another status (or transport errors) in the whole run.
    pub errors: u64,
    /// The first unexpected answer, for the report.
    pub first_error: Option<String>,
}

/// Closed loop: every connection sends its next request as soon as the previous answer is
/// read. Counts answers during `measure` after `warmup`. The connections are returned.
pub async fn closed_loop(
    conns: Vec<Conn>,
    work: &Workload,
    warmup: Duration,
    measure: Duration,
) -> (Throughput, Vec<Conn>) {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let mut tasks = Vec::new();
    for mut conn in conns {
        let (stop, ok, bad, first_error, work) = (
            stop.clone(),
            ok.clone(),
            bad.clone(),
            first_error.clone(),
            work.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match send(&mut conn, work.next()).await {
                    Ok((status, _)) if status == work.expect => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        bad.fetch_add(1, Ordering::Relaxed);
                        let text = match other {
                            Ok((s, b)) => format!("HTTP {s}: {}", String::from_utf8_lossy(&b)),
                            Err(e) => format!("{e:#}"),
                        };
                        let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        first.get_or_insert(text);
                        if conn.is_closed() {
                            return None;
                        }
                    }
                }
            }
            Some(conn)
        }));
    }
    // The load generator never sleeps while it measures. On loopback the server's send runs
    // the client's TCP input on the server core, and waking a client blocked in `epoll_wait`
    // costs the server an IPI to a halted vCPU (this VM does not halt-poll: its
    // `guest_halt_poll_ns` is 0): ~6 µs of the server core per answer when the client idles
    // between slow answers, next to nothing for fast ones whose client stays busy, a loopback
    // artifact that a server answering over a network does not pay. A task that always yields
    // keeps the runtime polling its sockets (`epoll_wait` with a zero timeout) instead.
    let spinner = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::task::yield_now().await;
            }
        })
    };
    tokio::time::sleep(warmup).await;
    let (n0, t0, w0) = (
        ok.load(Ordering::Relaxed),
        Instant::now(),
        SystemTime::now(),
    );
    tokio::time::sleep(measure).await;
    let (n1, t1, w1) = (
        ok.load(Ordering::Relaxed),
        Instant::now(),
        SystemTime::now(),
    );
    stop.store(true, Ordering::Relaxed);
    let rate = (n1 - n0) as f64 / (t1 - t0).as_secs_f64();
    log_round(work.name, w0, w1, rate);
    let _ = spinner.await;
    let mut back = Vec::new();
    for t in tasks {
        if let Ok(Some(c)) = t.await {
            back.push(c);
        }
    }
    let first_error = first_error.lock().unwrap_or_else(|p| p.into_inner()).take();
    (
        Throughput {
            rate,
            errors: bad.load(Ordering::Relaxed),
            first_error,
        },
        back,
    )
}

/// Sends every request of `work` once, one after the other, on `conn` (warms caches such as
/// the JWKS of every cluster). Fails on the first unexpected answer.
pub async fn each_once(conn: &mut Conn, work: &Workload) -> anyhow::Result<()> {
    for req in work.requests.iter() {
        let (status, body) = send(conn, req).await?;
        if status != work.expect {
            bail!(
                "warm-up request {} answered HTTP {status}: {}",
                req.uri,
                String::from_utf8_lossy(&body)
            );
        }
    }
    Ok(())
}

/// Outcome of an open-loop run.
#[derive(Debug, Clone)]
pub struct Latencies {
    /// Sorted latencies of the answers with the expected status.
    pub sorted: Vec<Duration>,
    /// Answers with another status.
    pub errors: u64,
    /// Requests actually sent per second.
    pub achieved_rate: f64,
    /// Requests released more than [`LATE`] after they fell due (the load generator was not
    /// running).
    pub late: u64,
}

/// Lateness of a release that [`Latencies::late`] counts.
pub const LATE: Duration = Duration::from_millis(1);

impl Latencies {
    /// The `q` quantile (0..=1).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::MAX;
        }
        let i = ((self.sorted.len() as f64 - 1.0) * q).round() as usize;
        self.sorted[i.min(self.sorted.len() - 1)]
    }
}

/// Open loop at `rate` requests per second for `duration`: request `i` is due at
/// `start + i / rate` and is released then, on an idle connection of the pool. Latency runs
/// from the release, so time spent waiting for a free connection (the server falling behind) is
/// counted, not hidden.
///
/// The runtime's timer ticks in milliseconds, which would release the arrivals of a millisecond
/// as one burst; the last 1.5 ms before a due time are waited out by yielding instead (the load
/// generator has its core to itself), so arrivals keep their spacing at any rate. When the host
/// pauses the load generator's vCPU (steal time: pauses of ~8 ms about once a second were seen on
/// the shared VM), the requests that fell due meanwhile are released together as soon as it
/// runs again, and counted in [`Latencies::late`]: the server, which was idle, is not charged
/// for the pause, but it does get the burst.
pub async fn open_loop(
    conns: Vec<Conn>,
    work: &Workload,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<(Latencies, Vec<Conn>)> {
    if rate <= 0.0 || conns.is_empty() {
        bail!("open loop needs a positive rate and connections");
    }
    let n_conns = conns.len();
    let (idle_tx, mut idle_rx) = tokio::sync::mpsc::unbounded_channel::<Conn>();
    for c in conns {
        let _ = idle_tx.send(c);
    }
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Option<Duration>>();
    let spin = Duration::from_micros(1500);
    let started = Instant::now();
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let mut sent = 0u64;
    let mut late = 0u64;
    while sent < total {
        let due = started + Duration::from_secs_f64(sent as f64 / rate);
        let now = Instant::now();
        if due > now + spin {
            tokio::time::sleep_until((due - spin).into()).await;
        }
        while Instant::now() < due {
            tokio::task::yield_now().await;
        }
        let released = Instant::now();
        if released - due > LATE {
            late += 1;
        }
        sent += 1;
        let mut conn = idle_rx
            .recv()
            .await
            .ok_or_else(|| anyhow!("every connection of the pool failed"))?;
        let (idle_tx, done_tx, work) = (idle_tx.clone(), done_tx.clone(), work.clone());
        tokio::spawn(async move {
            let r = send(&mut conn, work.next()).await;
            let latency = released.elapsed();
            let _ = done_tx.send(match r {
                Ok((s, _)) if s == work.expect => Some(latency),
                _ => None,
            });
            if !conn.is_closed() {
                let _ = idle_tx.send(conn);
            }
        });
    }
    let achieved_rate = sent as f64 / started.elapsed().as_secs_f64();
    drop(done_tx);
    let mut sorted = Vec::with_capacity(total as usize);
    let mut errors = 0;
    while let Some(r) = done_rx.recv().await {
        match r {
            Some(l) => sorted.push(l),
            None => errors += 1,
        }
    }
    sorted.sort_unstable();
    drop(idle_tx);
    let mut back = Vec::with_capacity(n_conns);
    while let Ok(c) = idle_rx.try_recv() {
        back.push(c);
    }
    Ok((
        Latencies {
            sorted,
            errors,
            achieved_rate,
            late,
        },
        back,
    ))
}

/// Median of `values` (NaN-free).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
