//! The outbound HTTP client shared by the Vault, GCP and Webhook backends: rustls, an
//! optional CA bundle, a bounded timeout, no redirects (a backend cannot send the
//! federation's credentials elsewhere), and fault classification into [`BackendError`].

use std::time::Duration;

use crate::{BackendError, SpecError};

/// Timeout used when a store or generator sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest response body a backend may return.
pub const MAX_BODY: usize = 1 << 20;

/// Builds a client; `field` names the CA bundle's manifest field for errors.
pub fn client(
    ca_bundle: Option<&str>,
    timeout: Duration,
    field: &str,
) -> Result<reqwest::Client, SpecError> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("esi-backends/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca_bundle {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
            SpecError::field(field, format!("is not a PEM certificate bundle: {e}"))
        })?;
        if certs.is_empty() {
            return Err(SpecError::field(field, "holds no PEM certificate"));
        }
        b = b.tls_certs_merge(certs);
    }
    b.build()
        .map_err(|e| SpecError::field(field, format!("cannot build an HTTP client: {e}")))
}

/// Classifies a transport failure (no response): always unavailable.
pub fn transport_error(backend: &str, e: &reqwest::Error) -> BackendError {
    let what = if e.is_timeout() {
        "did not answer in time"
    } else if e.is_connect() {
        "could not be reached"
    } else {
        "failed"
    };
    // reqwest's Display names the URL (never a body or header) and the cause.
    BackendError::Unavailable {
        message: format!("{backend} {what}"),
        detail: format!("{backend}: {e}"),
    }
}

/// Classifies an HTTP error status. `summary` is backend text for the log only.
pub fn status_error(backend: &str, status: reqwest::StatusCode, summary: &str) -> BackendError {
    let detail = format!("{backend} returned {status}: {summary}");
    if status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
    {
        BackendError::Unavailable {
            message: format!("{backend} returned {}", status.as_u16()),
            detail,
        }
    } else {
        BackendError::Rejected {
            message: format!("{backend} refused the request ({})", status.as_u16()),
            detail,
        }
    }
}

/// Reads a response body of at most [`MAX_BODY`] bytes.
pub async fn read_body(
    backend: &str,
    mut resp: reqwest::Response,
) -> Result<Vec<u8>, BackendError> {
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large(backend));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| transport_error(backend, &e))?
    {
        if out.len() + chunk.len() > MAX_BODY {
            return Err(too_large(backend));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn too_large(backend: &str) -> BackendError {
    BackendError::Rejected {
        message: format!("{backend} returned an oversized response"),
        detail: format!("{backend}: response body over {MAX_BODY} bytes"),
    }
}

/// Sends a request and returns the status and body, classifying transport failures.
pub async fn send(
    backend: &str,
    req: reqwest::RequestBuilder,
) -> Result<(reqwest::StatusCode, Vec<u8>), BackendError> {
    let resp = req.send().await.map_err(|e| transport_error(backend, &e))?;
    let status = resp.status();
    let body = read_body(backend, resp).await?;
    Ok((status, body))
}
