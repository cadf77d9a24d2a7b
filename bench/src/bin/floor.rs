//! `esi-bench-floor`: what the bench's HTTP paths cost with nothing of esi in them, served the
//! way the federation and the webhook serve (axum over hyper, tokio's current-thread scheduler,
//! mimalloc; plain HTTP through the federation's own server, TLS through axum-server with the
//! webhook's rustls configuration), so figures 2 and 9 can say how far they are from the floor
//! of the same bytes on the same machine.
//!
//! ```text
//! esi-bench-floor --listen ADDR --verify-jwk '{"n":…,"e":…}'
//!     any POST: the bearer token's RS256 signature is checked with the key (nothing else of the
//!     token is read), then a fixed JSON answer the size of figure 2's Password answer
//! esi-bench-floor --listen ADDR --answer-bytes N --tls-cert F --tls-key F
//!     any POST: the body is read, then a fixed JSON answer of N bytes, over TLS
//! ```
//!
//! `GET /healthz` answers `ok` in both modes.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// About the size of figure 2's answer body (109 bytes).
const VERIFY_ANSWER: &str = r#"{"data":{"password":"floor-floor-floor-floor-"},"generator":"team-0000/Password/db","expiresAt":null}"#;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("esi-bench-floor: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Default)]
struct Args {
    listen: Option<String>,
    jwk: Option<String>,
    answer_bytes: Option<usize>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut out = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => out.listen = Some(value()?),
            "--verify-jwk" => out.jwk = Some(value()?),
            "--answer-bytes" => out.answer_bytes = Some(value()?.parse()?),
            "--tls-cert" => out.tls_cert = Some(value()?.into()),
            "--tls-key" => out.tls_key = Some(value()?.into()),
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(out)
}

fn rsa_key(jwk: &str) -> anyhow::Result<ParsedPublicKey> {
    let jwk: serde_json::Value = serde_json::from_str(jwk).context("--verify-jwk")?;
    let part = |f: &str| -> anyhow::Result<Vec<u8>> {
        let text = jwk[f].as_str().ok_or_else(|| anyhow!("JWK without {f}"))?;
        Ok(URL_SAFE_NO_PAD.decode(text)?)
    };
    let (n, e) = (part("n")?, part("e")?);
    RsaPublicKeyComponents { n: &n, e: &e }
        .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
        .map_err(|e| anyhow!("RSA key: {e}"))
}

fn signature_ok(key: &ParsedPublicKey, headers: &HeaderMap) -> bool {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some((input, sig)) = token.and_then(|t| t.rsplit_once('.')) else {
        return false;
    };
    URL_SAFE_NO_PAD
        .decode(sig)
        .is_ok_and(|sig| key.verify_sig(input.as_bytes(), &sig).is_ok())
}

fn json(body: Bytes) -> axum::response::Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn run() -> anyhow::Result<()> {
    let args = args()?;
    let listen = args
        .listen
        .ok_or_else(|| anyhow!("usage: esi-bench-floor --listen ADDR (--verify-jwk JWK | --answer-bytes N --tls-cert F --tls-key F)"))?;
    let app = Router::new().route("/healthz", get(|| async { "ok" }));
    let app = match (args.jwk, args.answer_bytes) {
        (Some(jwk), None) => {
            let key = Arc::new(rsa_key(&jwk)?);
            app.fallback(move |headers: HeaderMap| {
                let key = key.clone();
                async move {
                    if signature_ok(&key, &headers) {
                        json(Bytes::from_static(VERIFY_ANSWER.as_bytes()))
                    } else {
                        StatusCode::UNAUTHORIZED.into_response()
                    }
                }
            })
        }
        (None, Some(n)) => {
            let pad = n.saturating_sub(r#"{"pad":""}"#.len());
            let answer = Bytes::from(format!(r#"{{"pad":"{}"}}"#, "A".repeat(pad)));
            app.fallback(move |body: Bytes| {
                let answer = answer.clone();
                async move {
                    std::hint::black_box(body);
                    json(answer)
                }
            })
        }
        _ => bail!("give either --verify-jwk or --answer-bytes"),
    };
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(esi_webhook::server::server_config(
            &std::fs::read(&cert).with_context(|| format!("{}", cert.display()))?,
            &std::fs::read(&key).with_context(|| format!("{}", key.display()))?,
        )?),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(async move {
            let listener = std::net::TcpListener::bind(&listen)
                .with_context(|| format!("cannot listen on {listen}"))?;
            listener.set_nonblocking(true)?;
            eprintln!("listening on {}", listener.local_addr()?);
            match tls {
                // The webhook's way: axum-server with rustls.
                Some(cfg) => {
                    let cfg = axum_server::tls_rustls::RustlsConfig::from_config(cfg);
                    axum_server::tls_rustls::from_tcp_rustls(listener, cfg)?
                        .http1_only()
                        .map(|tls| tls.acceptor(esi_serving::Guard::new(Default::default())))
                        .serve(app.into_make_service())
                        .await
                        .context("serving")
                }
                // The federation's own plain-HTTP server.
                None => {
                    esi_federation::server::serve(
                        listener,
                        app,
                        None,
                        esi_federation::server::Stopping {
                            delay: Duration::ZERO,
                            drain: Duration::from_secs(1),
                        },
                        esi_federation::server::Guard::new(Default::default()),
                    )
                    .await
                }
            }
        })
}
