//! The federation client: TLS with system roots (plus an optional CA), bearer auth, bounded
//! retries with exponential backoff and full jitter, and errors that carry the federation's code
//! and message.
//!
//! Only network failures and HTTP 429/502/503 are retried, until a deadline; when the
//! federation's own error body marks a 502/503 as not retryable (`backend_rejected`), or answers
//! 401/403/404 or any other status, the call fails at once. Bodies are never logged.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use esi_api::inject::GeneratorRef;
use esi_api::{Envelope, ErrorBody, ErrorCode, Identity, RevokeRequest, RevokeResponse, routes};
use serde::de::DeserializeOwned;

use crate::log;
use crate::token::Token;

/// How the client reaches the federation.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Base URL, `https://...` (or `http://` with `allow_http`).
    pub url: String,
    /// Extra PEM CA bundle trusted next to the system roots.
    pub ca_pem: Option<String>,
    /// Accept an `http://` URL.
    pub allow_http: bool,
    /// Timeout of one HTTP attempt.
    pub attempt_timeout: Duration,
}

/// A federation client.
#[derive(Clone, Debug)]
pub struct Federation {
    http: reqwest::Client,
    base: String,
    attempt_timeout: Duration,
}

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// The federation answered with an error it says is final (or a non-retryable status).
    Refused {
        /// HTTP status.
        status: u16,
        /// The federation's code, when the body had the standard shape.
        code: Option<ErrorCode>,
        /// The federation's message (never secret), or the status text.
        message: String,
        /// The request id, for the federation's logs.
        request_id: Option<String>,
    },
    /// Retryable failures lasted until the deadline; the last one is kept.
    Deadline {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The answer was not what the API promises.
    Protocol(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Refused {
                status,
                code,
                message,
                request_id,
            } => {
                match code {
                    Some(c) => write!(f, "{c}: {message}")?,
                    None => write!(f, "HTTP {status}: {message}")?,
                }
                if let Some(id) = request_id {
                    write!(f, " (request id {id})")?;
                }
                Ok(())
            }
            CallError::Deadline { attempts, last } => write!(
                f,
                "gave up after {attempts} attempt(s) at the deadline; last error: {last}"
            ),
            CallError::Protocol(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CallError {}

/// One attempt's outcome.
enum Attempt<T> {
    Done(T),
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    Fail(CallError),
}

impl Federation {
    /// Builds the client; refuses `http://` unless allowed and any other scheme.
    pub fn new(cfg: &ClientConfig) -> anyhow::Result<Federation> {
        let base = cfg.url.trim_end_matches('/').to_owned();
        if let Some(rest) = base.strip_prefix("http://") {
            if !cfg.allow_http {
                bail!(
                    "refusing plain-HTTP federation URL http://{rest}: credentials would cross the network unencrypted; use https:// or allow it explicitly (--allow-http / ESI_ALLOW_HTTP=true)"
                );
            }
        } else if !base.starts_with("https://") {
            bail!("federation URL {base:?} must start with https://");
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(cfg.attempt_timeout.min(Duration::from_secs(5)))
            .timeout(cfg.attempt_timeout)
            .user_agent(concat!("esi-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &cfg.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .context("the federation CA bundle is not valid PEM")?;
            if certs.is_empty() {
                bail!("the federation CA bundle holds no certificate");
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().context("cannot build the HTTPS client")?;
        Ok(Federation {
            http,
            base,
            attempt_timeout: cfg.attempt_timeout,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `POST /v1/generators/{ns}/{kind}/{name}`.
    pub async fn generate(
        &self,
        token: &Token,
        generator: &GeneratorRef,
        deadline: Instant,
    ) -> Result<Envelope, CallError> {
        self.call(
            reqwest::Method::POST,
            &generator.path(),
            Some(token),
            None,
            deadline,
        )
        .await
    }

    /// `POST /v1/revoke`.
    pub async fn revoke(
        &self,
        token: &Token,
        lease: &str,
        deadline: Instant,
    ) -> Result<bool, CallError> {
        let body = serde_json::to_vec(&RevokeRequest {
            lease: lease.to_owned(),
        })
        .map_err(|e| CallError::Protocol(format!("cannot encode the revoke request: {e}")))?;
        let r: RevokeResponse = self
            .call(
                reqwest::Method::POST,
                routes::REVOKE,
                Some(token),
                Some(body),
                deadline,
            )
            .await?;
        Ok(r.revoked)
    }

    /// `POST /v1/authorize`: the dry-run verdict per generator (nothing minted).
    pub async fn authorize(
        &self,
        token: &Token,
        generators: &[String],
        deadline: Instant,
    ) -> Result<esi_api::AuthorizeResponse, CallError> {
        let body = serde_json::to_vec(&esi_api::AuthorizeRequest {
            generators: generators.to_vec(),
        })
        .map_err(|e| CallError::Protocol(format!("cannot encode the authorize request: {e}")))?;
        self.call(
            reqwest::Method::POST,
            routes::AUTHORIZE,
            Some(token),
            Some(body),
            deadline,
        )
        .await
    }

    /// `GET /v1/whoami`.
    pub async fn whoami(&self, token: &Token, deadline: Instant) -> Result<Identity, CallError> {
        self.call(
            reqwest::Method::GET,
            routes::WHOAMI,
            Some(token),
            None,
            deadline,
        )
        .await
    }

    /// `GET path` without auth (health probes); the status, or the network error.
    pub async fn probe(&self, path: &str) -> Result<u16, String> {
        let url = format!("{}{path}", self.base);
        let started = Instant::now();
        let res = self.http.get(&url).send().await;
        match res {
            Ok(r) => {
                log::debug(&format!(
                    "GET {path} -> {} ({} ms)",
                    r.status().as_u16(),
                    started.elapsed().as_millis()
                ));
                Ok(r.status().as_u16())
            }
            Err(e) => Err(describe(&e)),
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&Token>,
        body: Option<Vec<u8>>,
        deadline: Instant,
    ) -> Result<T, CallError> {
        let mut backoff = Backoff::new();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let timeout = self
                .attempt_timeout
                .min(remaining.max(Duration::from_millis(100)));
            let outcome = self
                .attempt(method.clone(), path, token, body.clone(), timeout)
                .await;
            let (reason, hint) = match outcome {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry { reason, after } => (reason, after),
            };
            let wait = retry_wait(hint, &mut backoff);
            if Instant::now() + wait >= deadline {
                return Err(CallError::Deadline {
                    attempts,
                    last: reason,
                });
            }
            log::info(&format!(
                "{method} {path}: {reason}; retrying in {} ms",
                wait.as_millis()
            ));
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&Token>,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Attempt<T> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url).timeout(timeout);
        if let Some(t) = token {
            req = req.bearer_auth(t.expose());
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let started = Instant::now();
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let reason = describe(&e);
                log::debug(&format!("{method} {path} -> {reason}"));
                return Attempt::Retry {
                    reason,
                    after: None,
                };
            }
        };
        let status = resp.status().as_u16();
        let request_id = resp
            .headers()
            .get(esi_api::REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        log::debug(&format!(
            "{method} {path} -> {status} ({} ms{})",
            started.elapsed().as_millis(),
            request_id
                .as_deref()
                .map(|id| format!(", request id {id}"))
                .unwrap_or_default()
        ));
        let bytes = match read_body(resp, MAX_ANSWER_BYTES).await {
            Ok(Some(b)) => b,
            Ok(None) => {
                return Attempt::Fail(CallError::Protocol(format!(
                    "the federation's answer to {path} is larger than {} KiB; is the federation URL right?",
                    MAX_ANSWER_BYTES / 1024
                )));
            }
            Err(e) => {
                return Attempt::Retry {
                    reason: format!("reading the response failed: {}", describe(&e)),
                    after: None,
                };
            }
        };
        if (200..300).contains(&status) {
            return match esi_api::json::from_answer(&bytes) {
                Ok(v) => Attempt::Done(v),
                // The message names the field, never the value (it may be a credential).
                Err(e) => Attempt::Fail(CallError::Protocol(format!(
                    "the federation's answer to {path} is not the expected JSON: {e}"
                ))),
            };
        }
        let parsed: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
        let code = parsed.as_ref().map(|b| b.error.code);
        let message = parsed
            .as_ref()
            .map(|b| b.error.message.clone())
            .unwrap_or_else(|| status_text(status));
        let request_id = parsed
            .as_ref()
            .map(|b| b.error.request_id.clone())
            .or(request_id);
        let retry_status = matches!(status, 429 | 502 | 503);
        let final_by_code = code.is_some_and(|c| !c.retryable());
        if retry_status && !final_by_code {
            let after = parsed
                .as_ref()
                .and_then(|b| b.error.retry_after_seconds)
                .map(|s| Duration::from_secs(s.min(30)));
            let what = code.map_or_else(|| format!("HTTP {status}"), |c| c.to_string());
            return Attempt::Retry {
                reason: format!("{what}: {message}"),
                after,
            };
        }
        Attempt::Fail(CallError::Refused {
            status,
            code,
            message,
            request_id,
        })
    }
}

/// The largest answer read: envelopes and errors are a few KiB; more is not the federation
/// (a misdirected URL, a hostile proxy) and must not grow esi-cli's small memory limit.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// The body, read chunk by chunk; `None` as soon as it exceeds `max` bytes.
async fn read_body(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > max {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// How long to wait before the next attempt: the federation's `retryAfterSeconds` when it asks
/// for longer, never less than the backoff (a hint of 0 must not turn into a tight loop).
fn retry_wait(hint: Option<Duration>, backoff: &mut Backoff) -> Duration {
    let floor = backoff.next();
    hint.map_or(floor, |h| h.max(floor))
}

fn status_text(status: u16) -> String {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map_or_else(|| format!("HTTP {status}"), str::to_owned)
}

/// A reqwest error with its causes on one line (URLs carry no credentials here).
fn describe(e: &reqwest::Error) -> String {
    let mut out = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Exponential backoff with full jitter: a random wait in `[0, min(cap, base * 2^n)]`, at
/// least a floor so a tight loop cannot hammer the federation.
pub struct Backoff {
    attempt: u32,
    base: Duration,
    cap: Duration,
}

impl Backoff {
    /// Starts at 200 ms, capped at 5 s.
    pub fn new() -> Self {
        Backoff {
            attempt: 0,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(5),
        }
    }

    /// The next wait.
    pub fn next(&mut self) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.cap);
        self.attempt += 1;
        let jittered = exp.mul_f64(rand::random::<f64>());
        jittered.max(Duration::from_millis(50))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut b = Backoff::new();
        for i in 0..40 {
            let d = b.next();
            assert!(d >= Duration::from_millis(50), "{i}: {d:?}");
            assert!(d <= Duration::from_secs(5), "{i}: {d:?}");
        }
    }

    #[test]
    fn refuses_http_unless_allowed_and_other_schemes() {
        let cfg = |url: &str, allow_http| ClientConfig {
            url: url.into(),
            ca_pem: None,
            allow_http,
            attempt_timeout: Duration::from_secs(1),
        };
        let e = Federation::new(&cfg("http://x", false)).unwrap_err();
        assert!(e.to_string().contains("--allow-http"), "{e}");
        assert!(Federation::new(&cfg("http://x", true)).is_ok());
        assert!(Federation::new(&cfg("ftp://x", true)).is_err());
        assert!(Federation::new(&cfg("https://x/", false)).is_ok());
        let bad_ca = ClientConfig {
            ca_pem: Some("not pem".into()),
            ..cfg("https://x", false)
        };
        assert!(Federation::new(&bad_ca).is_err());
    }

    /// A loopback HTTP server answering every request with `answer`; counts the requests.
    fn serve(answer: Vec<u8>) -> (String, Arc<AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                counted.fetch_add(1, Ordering::Relaxed);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let _ = conn.write_all(&answer);
            }
        });
        (url, hits)
    }

    fn answer(status: &str, body: &[u8]) -> Vec<u8> {
        let mut a = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        a.extend_from_slice(body);
        a
    }

    fn client_and_token(url: &str) -> (Federation, Token, tempfile::TempDir) {
        let client = Federation::new(&ClientConfig {
            url: url.into(),
            ca_pem: None,
            allow_http: true,
            attempt_timeout: Duration::from_secs(2),
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "t").unwrap();
        (client, Token::read(&path).unwrap(), dir)
    }

    #[tokio::test]
    async fn a_zero_retry_after_still_backs_off() {
        let body = br#"{"error":{"code":"rate_limited","message":"slow down","requestId":"r","retryAfterSeconds":0}}"#;
        let (url, hits) = serve(answer("429 Too Many Requests", body));
        let (client, token, _dir) = client_and_token(&url);
        let err = client
            .whoami(&token, Instant::now() + Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, CallError::Deadline { .. }), "{err}");
        // 200 ms, 400 ms, 800 ms ceilings with jitter and a 50 ms floor: a handful, not hundreds.
        let n = hits.load(Ordering::Relaxed);
        assert!((2..=21).contains(&n), "{n} attempts in one second");
    }

    #[test]
    fn the_federations_hint_is_a_minimum_over_the_backoff() {
        let mut b = Backoff::new();
        assert!(retry_wait(Some(Duration::ZERO), &mut b) >= Duration::from_millis(50));
        assert!(retry_wait(Some(Duration::from_secs(7)), &mut b) >= Duration::from_secs(7));
        assert!(retry_wait(None, &mut b) >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn an_oversized_answer_is_refused_with_a_clear_error() {
        // What `whoami` fails with against a server sending `raw`.
        async fn refusal(raw: Vec<u8>) -> String {
            let (url, _) = serve(raw);
            let (client, token, _dir) = client_and_token(&url);
            client
                .whoami(&token, Instant::now() + Duration::from_secs(5))
                .await
                .unwrap_err()
                .to_string()
        }
        let huge = vec![b' '; MAX_ANSWER_BYTES + 1];
        let err = refusal(answer("200 OK", &huge)).await;
        assert!(err.contains("larger than 1024 KiB"), "{err}");
        // Without a content-length, the body is cut off while it streams.
        let mut streamed =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n"
                .to_vec();
        streamed.extend_from_slice(&huge);
        let err = refusal(streamed).await;
        assert!(err.contains("larger than 1024 KiB"), "{err}");
        // Just under the limit is read (and then judged on its content).
        let err = refusal(answer("200 OK", &vec![b' '; MAX_ANSWER_BYTES - 1])).await;
        assert!(err.contains("not the expected JSON"), "{err}");
    }

    #[test]
    fn refusal_display_carries_code_message_and_request_id() {
        let e = CallError::Refused {
            status: 403,
            code: Some(ErrorCode::PolicyDenied),
            message: "no Authorization allows x".into(),
            request_id: Some("r1".into()),
        };
        assert_eq!(
            e.to_string(),
            "policy_denied: no Authorization allows x (request id r1)"
        );
    }
}
