//! Figure 9: the webhook binary over HTTPS keep-alive on one core, admitting a typical
//! three-container Pod (the golden corpus' Deployment-template Pod), against its `/healthz`
//! over the same connections; then p99 latency at 1,000 admissions per second.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use esi_test_support::Pki;
use http::{Method, StatusCode};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::Plan;
use crate::bins::Bins;
use crate::load::{self, Dialer, Prepared, Workload, median};
use crate::pin;
use crate::report::{self, Row, Verdict};
use crate::served::{self, Served};

const POD: &str =
    include_str!("../../webhook/tests/golden/pods/03-deployment-template-several-containers.yaml");
const CONFIG: &str = include_str!("../../webhook/tests/golden/config.yaml");

/// The load generator's TLS, as the API server's (Go's `crypto/tls`) on a CPU with AES
/// instructions: TLS 1.3, AES-128-GCM preferred (rustls's default order prefers AES-256-GCM,
/// which costs the server 14 AES rounds per block instead of 10). The server follows the
/// client's order.
fn client_config(ca_pem: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::crypto::aws_lc_rs::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes())?)?;
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::aws_lc_rs::default_provider()
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The AdmissionReview the API server sends for the Pod's CREATE.
fn admission_review() -> anyhow::Result<Bytes> {
    let pod: serde_json::Value = serde_saphyr::from_str(POD).context("golden pod 03")?;
    let review = esi_webhook::review::pod_create_review(&pod, "payments", "0d9c3a4e-bench-0001");
    Ok(Bytes::from(serde_json::to_vec(&review)?))
}

async fn start(bin: &Path, core: usize, pki: &Pki) -> anyhow::Result<(Served, Dialer)> {
    let dir = tempfile::tempdir()?;
    let (cert, key, config) = (
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("config.yaml"),
    );
    std::fs::write(&cert, &pki.cert_pem)?;
    std::fs::write(&key, &pki.key_pem)?;
    std::fs::write(&config, CONFIG)?;
    let mut cmd = Command::new(bin);
    cmd.args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--config")
        .arg(&config)
        .args(["--log-format", "json", "--tls-reload-interval", "1h"])
        // No Kubernetes API here; in a cluster the ServiceAccount lookup is cached (30 s), so
        // steady-state admissions do not pay for it either.
        .arg("--service-account-defaults=false")
        .env("ESI_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let ca = client_config(&pki.ca_pem)?;
    served::start(
        cmd,
        core,
        "esi-webhook",
        listening_addr,
        |addr| Ok(Dialer::Tls(addr, ca)),
        Some(dir),
    )
    .await
}

/// The address of the webhook's JSON "esi-webhook listening" log line.
fn listening_addr(line: &str) -> Option<String> {
    esi_federation::testkit::announced_addr(line, "esi-webhook listening")
}

/// Microseconds per admission of `review` done in-process on `core` (parse, decide, the
/// answer's bytes: what the handler does besides metrics and the log line), for `duration`.
fn in_process(review: Bytes, core: usize, duration: Duration) -> anyhow::Result<f64> {
    let cfg = config()?;
    pin::on_core(core, move || -> anyhow::Result<f64> {
        let start = Instant::now();
        let n = admissions(&review, &cfg, |_| start.elapsed() < duration)?;
        Ok(start.elapsed().as_secs_f64() * 1e6 / n as f64)
    })?
}

/// The webhook configuration of figure 9.
fn config() -> anyhow::Result<esi_webhook::config::WebhookConfig> {
    Ok(esi_webhook::config::WebhookConfig::from_yaml(CONFIG)?)
}

/// Admits `review` while `more(i)` says so, checking that every admission injects; returns how
/// many ran. Not inlined: its name is what a profiler is told to collect.
#[inline(never)]
fn admissions(
    review: &[u8],
    cfg: &esi_webhook::config::WebhookConfig,
    more: impl Fn(usize) -> bool,
) -> anyhow::Result<usize> {
    let mut n = 0usize;
    while more(n) {
        let reviewed = esi_webhook::review::review(review, cfg);
        if reviewed.decision != esi_webhook::review::Decision::Injected {
            bail!(
                "in-process, the benchmark Pod was not injected: {:?} ({})",
                reviewed.decision,
                reviewed.detail
            );
        }
        std::hint::black_box(reviewed.response.to_json()?);
        n += 1;
    }
    Ok(n)
}

/// `--profile-loop 9`: figure 9's admission in-process, `iterations` times on this thread, for
/// `perf` or `valgrind --tool=callgrind --toggle-collect='*admissions*'`. Returns µs per
/// admission.
pub fn profile_loop(iterations: usize) -> anyhow::Result<f64> {
    let (review, cfg) = (admission_review()?, config()?);
    let start = Instant::now();
    let n = admissions(&review, &cfg, |i| i < iterations)?;
    Ok(start.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64)
}

/// Figure 9.
pub async fn fig9(plan: &Plan, bins: &Bins, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let what = "webhook admission of a 3-container Pod over HTTPS keep-alive, one core";
    let goal = ">= 0.50x; p99 <= 2 ms";
    if let Some(e) = &bins.webhook_error {
        rows.push(Row::not_measured(
            "9",
            what,
            goal,
            format!("esi-webhook did not build: {e}"),
        ));
        return Ok(());
    }
    if !bins.webhook.exists() {
        let why = format!("{} is missing", bins.webhook.display());
        rows.push(Row::not_measured("9", what, goal, why));
        return Ok(());
    }
    let pki = esi_test_support::pki("esi-webhook")?;
    let (_server, dial) = start(&bins.webhook, plan.server_core, &pki).await?;
    let tls = dial
        .tls_parameters()
        .await?
        .context("figure 9 runs over TLS")?;
    let review = admission_review()?;
    let in_process_us = in_process(review.clone(), plan.server_core, plan.round)?;
    let mutate = Prepared::new(Method::POST, "/mutate", None, Some(review))?;
    // The answer must be a real injection (allowed, with a patch), not a denial.
    let mut probe = dial.connect().await?;
    let (status, body) = load::send(&mut probe, &mutate).await?;
    let answer: serde_json::Value = serde_json::from_slice(&body)?;
    if status != StatusCode::OK
        || answer["response"]["allowed"] != true
        || !answer["response"]["patch"].is_string()
    {
        bail!(
            "the webhook did not inject the benchmark Pod: HTTP {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    let patch_len = answer["response"]["patch"].as_str().map_or(0, str::len);
    let answer_len = body.len();
    // The floor: the same stack and TLS configuration reading the same review and answering
    // the same number of bytes, with no admission in between.
    let floor_dir = tempfile::tempdir()?;
    let (cert, key) = (
        floor_dir.path().join("tls.crt"),
        floor_dir.path().join("tls.key"),
    );
    std::fs::write(&cert, &pki.cert_pem)?;
    std::fs::write(&key, &pki.key_pem)?;
    let (_floor, dial_f) = served::floor(
        &bins.floor,
        plan.server_core,
        &[
            "--answer-bytes",
            &answer_len.to_string(),
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
        ],
        |addr| Ok(Dialer::Tls(addr, client_config(&pki.ca_pem)?)),
    )
    .await?;
    let mut conns_f = dial_f.pool(plan.conns).await?;
    let mutate = Workload::new("fig9-admission", vec![mutate], StatusCode::OK);
    let floor_work = mutate.renamed("fig9-floor");
    let health = Workload::new(
        "fig9-healthz",
        vec![Prepared::new(Method::GET, "/healthz", None, None)?],
        StatusCode::OK,
    );
    let mut conns = dial.pool(plan.conns).await?;
    let (mut ratios, mut m_rates, mut h_rates) = (Vec::new(), Vec::new(), Vec::new());
    let (mut of_floor, mut f_rates) = (Vec::new(), Vec::new());
    let mut errors = 0;
    for _ in 0..plan.rounds {
        let (h, c) = load::closed_loop(conns, &health, plan.warmup, plan.round).await;
        let (m, c) = load::closed_loop(c, &mutate, plan.warmup, plan.round).await;
        conns = c;
        let (f, c) = load::closed_loop(conns_f, &floor_work, plan.warmup, plan.round).await;
        conns_f = c;
        errors += h.errors + m.errors + f.errors;
        if conns.len() < plan.conns {
            conns.extend(dial.pool(plan.conns - conns.len()).await?);
        }
        if conns_f.len() < plan.conns {
            conns_f.extend(dial_f.pool(plan.conns - conns_f.len()).await?);
        }
        of_floor.push(m.rate / f.rate);
        f_rates.push(f.rate);
        ratios.push(m.rate / h.rate);
        m_rates.push(m.rate);
        h_rates.push(h.rate);
    }
    let ratio = median(&ratios);
    let open = dial.pool(plan.open_conns).await?;
    let (lat, _) = load::open_loop(open, &mutate, 1000.0, plan.latency).await?;
    let p99 = lat.quantile(0.99);
    let ok = ratio >= 0.5 && p99 <= Duration::from_millis(2) && errors == 0 && lat.errors == 0;
    rows.push(Row::new(
        "9",
        what,
        format!(
            "{} /healthz; p99 {:.2} ms at 1,000/s",
            report::ratio(ratio, 0.5),
            p99.as_secs_f64() * 1000.0
        ),
        goal,
        Verdict::of(ok),
        format!(
            "{:.0} admissions/s vs /healthz {:.0} req/s over the same {} TLS connections ({tls}, the API server's choice; medians of {} interleaved rounds of {:?}, {errors} errors); Pod = golden 03 (3 containers, 2 generators, env for 2 containers), {} B review, {} B base64 patch; the same reviews to esi-bench-floor over the same TLS configuration (the review read, a fixed answer of the same {} bytes, no admission) {:.0}/s, admission = {:.2}x of that floor; in-process (parse, decide, answer bytes, on the server core, no sockets) {:.1} µs per admission; latency: open loop at 1,000/s for {:?} (achieved {:.0}/s), p50 {:.2} ms, p99.9 {:.2} ms, {} errors, {} released > 1 ms late",
            median(&m_rates),
            median(&h_rates),
            plan.conns,
            plan.rounds,
            plan.round,
            mutate.first().body_len(),
            patch_len,
            answer_len,
            median(&f_rates),
            median(&of_floor),
            in_process_us,
            plan.latency,
            lat.achieved_rate,
            lat.quantile(0.5).as_secs_f64() * 1000.0,
            lat.quantile(0.999).as_secs_f64() * 1000.0,
            lat.errors,
            lat.late
        ),
    ));
    Ok(())
}
