//! The outbound HTTP client shared by the Vault, GCP and Webhook backends: rustls, an
//! optional CA bundle, a bounded timeout, no redirects (a backend cannot send the
//! federation's credentials elsewhere), and fault classification into [`BackendError`].
//!
//! **Trust.** Every client (these, and the federation's JWKS clients) gets its rustls
//! configuration from [`tls_config`]. The system's root certificates are read once per process:
//! reading them (the CA bundle and every file of the certificate directory, PEM-decoded) costs
//! ~3–5 ms of CPU on a small VM, and reqwest's own verifier read them again for every client it
//! built, once per SecretStore and per Webhook generator at every cold start. A process started
//! before the system's roots change keeps the ones it read (like most servers).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret as _, SecretString};

use crate::{BackendError, SecretRef, SpecError};

/// Timeout used when a store or generator sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest response body a backend may return.
pub const MAX_BODY: usize = 1 << 20;

/// The certificates a client trusts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust<'a> {
    /// The system's root certificates, plus the PEM certificates of a CA bundle when given.
    System {
        /// A PEM bundle trusted in addition.
        extra: Option<&'a str>,
    },
    /// Only the PEM certificates of this CA bundle.
    Only(&'a str),
}

/// The rustls client configuration for `trust` (aws-lc-rs, TLS 1.2 and 1.3, HTTP/1.1). The
/// error reads after the CA bundle's field name (`spec.caBundle: is not a PEM ...`).
pub fn tls_config(trust: Trust<'_>) -> Result<rustls::ClientConfig, String> {
    tls_config_presenting(trust, None)
}

/// [`tls_config`], presenting `identity` (a certificate chain and its key) to servers that ask
/// for a client certificate.
fn tls_config_presenting(
    trust: Trust<'_>,
    identity: Option<Identity>,
) -> Result<rustls::ClientConfig, String> {
    let roots = match trust {
        Trust::System { extra: None } => system_roots()?.clone(),
        Trust::System { extra: Some(pem) } => {
            let extra = ca_bundle(pem)?;
            // Like rustls-platform-verifier: a system without roots still trusts the bundle.
            let mut roots =
                system_roots().map_or_else(|_| RootCertStore::empty(), |r| (**r).clone());
            add_anchors(&mut roots, extra)?;
            Arc::new(roots)
        }
        Trust::Only(pem) => {
            let mut roots = RootCertStore::empty();
            add_anchors(&mut roots, ca_bundle(pem)?)?;
            Arc::new(roots)
        }
    };
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot be used for TLS: {e}"))?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => config.with_no_client_auth(),
        Some(Identity { chain, key }) => config
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("cannot present the client certificate: {e}"))?,
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificates of a PEM bundle: at least one, all of them readable.
fn ca_bundle(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".to_owned());
    }
    Ok(certs)
}

fn add_anchors(
    roots: &mut RootCertStore,
    certs: Vec<CertificateDer<'static>>,
) -> Result<(), String> {
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("holds a certificate that cannot be a trust anchor: {e}"))?;
    }
    Ok(())
}

/// The system's root certificates, read on first use and kept for the process.
fn system_roots() -> Result<&'static Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "cannot read a system CA certificate");
            }
            let mut roots = RootCertStore::empty();
            let (_, ignored) = roots.add_parsable_certificates(found.certs);
            if ignored > 0 {
                tracing::warn!(ignored, "unusable system CA certificates were ignored");
            }
            if roots.is_empty() {
                return Err(
                    "is unset, and no CA certificate could be loaded from the system \
                     (install ca-certificates or set SSL_CERT_FILE)"
                        .to_owned(),
                );
            }
            Ok(Arc::new(roots))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Checks a CA bundle without building a client (or reading the system's roots).
pub fn check_ca_bundle(pem: &str, field: &str) -> Result<(), SpecError> {
    tls_config(Trust::Only(pem))
        .map(drop)
        .map_err(|e| SpecError::field(field, e))
}

/// Builds a client; `field` names the CA bundle's manifest field for errors.
pub fn client(
    ca_bundle: Option<&str>,
    timeout: Duration,
    field: &str,
) -> Result<reqwest::Client, SpecError> {
    build_client(ca_bundle, timeout, field, |b| b)
}

/// Builds a client as [`client`] does, with `adjust` applied to the builder last (a store
/// that must not use a proxy, for one).
pub fn build_client(
    ca_bundle: Option<&str>,
    timeout: Duration,
    field: &str,
    adjust: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
) -> Result<reqwest::Client, SpecError> {
    client_trusting(Trust::System { extra: ca_bundle }, timeout, field, adjust)
}

/// Builds a client trusting `trust`'s certificates, as [`build_client`] otherwise does.
pub fn client_trusting(
    trust: Trust<'_>,
    timeout: Duration,
    field: &str,
    adjust: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
) -> Result<reqwest::Client, SpecError> {
    let tls = tls_config(trust).map_err(|e| SpecError::field(field, e))?;
    client_with(tls, timeout, adjust)
        .map_err(|e| SpecError::field(field, format!("cannot build an HTTP client: {e}")))
}

fn client_with(
    tls: rustls::ClientConfig,
    timeout: Duration,
    adjust: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
) -> Result<reqwest::Client, reqwest::Error> {
    let builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("esi-backends/", env!("CARGO_PKG_VERSION")))
        .tls_backend_preconfigured(tls);
    adjust(builder).build()
}

/// Checks a client certificate's references: `field` names the object holding them
/// (`clientCert` and `clientKey` below it); `plain`, the field and URL of an endpoint the
/// certificate would go to that is not `https://`, is an error when set.
pub fn check_client_cert(
    cert: &SecretRef,
    key: &SecretRef,
    field: &str,
    plain: Option<(&str, &str)>,
) -> Result<(), SpecError> {
    let (cert_field, key_field) = (format!("{field}.clientCert"), format!("{field}.clientKey"));
    cert.validate(&cert_field)?;
    key.validate(&key_field)?;
    if cert == key {
        return Err(SpecError::field(
            key_field,
            "names the same source as clientCert; the certificate and its key are read from two",
        ));
    }
    if let Some((plain_field, url)) = plain {
        return Err(SpecError::field(
            plain_field,
            format!(
                "{url:?} is not https://: a client certificate is presented in the TLS handshake, \
                 which plain HTTP has not"
            ),
        ));
    }
    Ok(())
}

/// A client certificate chain and its private key, parsed.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Parses a PEM certificate chain (the client's certificate first) and a PEM private key
    /// (PKCS#8, PKCS#1 or SEC1). The error names neither value.
    fn from_pem(chain: &str, key: &str) -> Result<Self, String> {
        let chain = CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the certificate is not PEM: {e}"))?;
        if chain.is_empty() {
            return Err("the certificate holds no PEM certificate".to_owned());
        }
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound
                if key.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
                    || key.contains("Proc-Type: 4,ENCRYPTED") =>
            {
                "the key is encrypted; give it unencrypted (its file's mode protects it)".to_owned()
            }
            rustls::pki_types::pem::Error::NoItemsFound => {
                "the key holds no PEM private key".to_owned()
            }
            e => format!("the key is not a PEM private key: {e}"),
        })?;
        Ok(Identity { chain, key })
    }
}

/// Locks `m`, a poisoned lock taken as is: the state behind the locks of this crate (caches,
/// schedules) is consistent at every step, so a panic elsewhere leaves nothing half-written.
pub(crate) fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where a client certificate and its key come from, and the client last built with them.
///
/// The certificate and key are read on every [`CertClient::client`] call, and a client is
/// built again only when they changed: a rotated certificate (a renewed cert-manager Secret,
/// say) is presented from the next call on, with no restart, while an unchanged one keeps its
/// connections.
pub struct CertClient {
    cert: SecretRef,
    key: SecretRef,
    /// The certificate's manifest field, for messages (`provider.vault.auth.cert`).
    field: String,
    /// The CA bundle trusted (`Trust::Only` when `only`, else with the system's roots).
    ca_bundle: Option<String>,
    only: bool,
    timeout: Duration,
    built: std::sync::Mutex<Option<Built>>,
}

/// A client and the certificate and key it presents.
struct Built {
    cert: SecretString,
    key: SecretString,
    client: reqwest::Client,
}

impl std::fmt::Debug for CertClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertClient")
            .field("cert", &self.cert.describe())
            .field("key", &self.key.describe())
            .finish_non_exhaustive()
    }
}

impl CertClient {
    /// Prepares clients trusting `trust` and presenting the certificate `cert` with its key
    /// `key` (read on first use). `field` names the pair's manifest field; `ca_field` the CA
    /// bundle's, whose errors are reported now.
    pub fn new(
        cert: &SecretRef,
        key: &SecretRef,
        field: &str,
        trust: Trust<'_>,
        ca_field: &str,
        timeout: Duration,
    ) -> Result<Self, SpecError> {
        tls_config(trust).map_err(|e| SpecError::field(ca_field, e))?;
        let (ca_bundle, only) = match trust {
            Trust::System { extra } => (extra.map(str::to_owned), false),
            Trust::Only(pem) => (Some(pem.to_owned()), true),
        };
        Ok(CertClient {
            cert: cert.clone(),
            key: key.clone(),
            field: field.to_owned(),
            ca_bundle,
            only,
            timeout,
            built: std::sync::Mutex::new(None),
        })
    }

    /// A client presenting the certificate as it is now.
    pub fn client(&self) -> Result<reqwest::Client, BackendError> {
        let cert = self.cert.read()?;
        let key = self.key.read()?;
        let mut built = locked(&self.built);
        if let Some(b) = built.as_ref()
            && b.cert.expose_secret() == cert.expose_secret()
            && b.key.expose_secret() == key.expose_secret()
        {
            return Ok(b.client.clone());
        }
        let unusable = |why: String| BackendError::Unavailable {
            message: "the federation's client certificate cannot be used".to_owned(),
            detail: format!(
                "{} ({} and {}): {why}",
                self.field,
                self.cert.describe(),
                self.key.describe()
            ),
        };
        let identity =
            Identity::from_pem(cert.expose_secret(), key.expose_secret()).map_err(unusable)?;
        let trust = match (&self.ca_bundle, self.only) {
            (Some(pem), true) => Trust::Only(pem),
            (extra, _) => Trust::System {
                extra: extra.as_deref(),
            },
        };
        let tls = tls_config_presenting(trust, Some(identity)).map_err(unusable)?;
        let client =
            client_with(tls, self.timeout, |b| b).map_err(|e| unusable(crate::error_chain(&e)))?;
        if built.is_some() {
            tracing::info!(field = %self.field, "the client certificate changed; presenting the new one");
        }
        *built = Some(Built {
            cert,
            key,
            client: client.clone(),
        });
        Ok(client)
    }
}

/// A backend API's base URL from a store's `url` field: `https://`, or `http://` only for a
/// loopback address (a local fake; anything else would send the federation's credentials in
/// clear), with no query, fragment or user info. The path is kept and ends in `/`, so that
/// relative paths join under it (`https://host/grafana/` + `api/...`). `field` names the
/// manifest field for the error.
pub fn base_url(text: &str, field: &str) -> Result<reqwest::Url, SpecError> {
    let mut url = endpoint_url(text, field, |ip| ip.is_loopback(), "a loopback address")?;
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// An endpoint URL from a store's field: `https://`, or `http://` only to an address
/// `plain_http` accepts (`plain_says` names them for the error); no query, fragment or user
/// info. `field` names the manifest field for the error.
pub fn endpoint_url(
    text: &str,
    field: &str,
    plain_http: impl Fn(std::net::IpAddr) -> bool,
    plain_says: &str,
) -> Result<reqwest::Url, SpecError> {
    let url = reqwest::Url::parse(text)
        .map_err(|e| SpecError::field(field, format!("{text:?} is not a URL: {e}")))?;
    let allowed = match url.scheme() {
        "https" => url.host().is_some(),
        "http" => host_ip(&url).is_some_and(plain_http),
        _ => false,
    };
    if !allowed
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(SpecError::field(
            field,
            format!("{text:?} is not an https:// URL (http:// only for {plain_says})"),
        ));
    }
    Ok(url)
}

/// A service's URL from a spec field taking a host (`quay.io`, `quay.example.com:8443`) or a
/// URL: a bare host gets `https://`; then as [`endpoint_url`], `http://` only to a loopback
/// address (a local fake). The path is kept as given.
pub fn host_or_url(text: &str, field: &str) -> Result<reqwest::Url, SpecError> {
    let full = if text.contains("://") {
        text.to_owned()
    } else {
        format!("https://{text}")
    };
    let url = endpoint_url(
        &full,
        field,
        |ip| ip.is_loopback(),
        "a loopback address (a local fake)",
    )?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(SpecError::field(field, format!("{text:?} has no host")));
    }
    Ok(url)
}

/// A URL's `host[:port]`, the port only when it is not the scheme's default: how a docker
/// login names its registry.
pub fn authority(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// The IP address a URL's host is (`localhost` is loopback), if it is one.
pub fn host_ip(url: &reqwest::Url) -> Option<std::net::IpAddr> {
    match url.host_str()? {
        "localhost" => Some(std::net::Ipv4Addr::LOCALHOST.into()),
        host => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok(),
    }
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
    // reqwest's Display names the URL (never a body or header); its sources name the cause
    // (refused, TLS: unknown issuer, ...).
    BackendError::Unavailable {
        message: format!("{backend} {what}"),
        detail: format!("{backend}: {}", crate::error_chain(e)),
    }
}

/// What an OAuth 2.0 error answer says (RFC 6749 §5.2: `{"error": "invalid_grant",
/// "error_description": ...}`), as `error: description`, at most 400 characters, for the log;
/// "no readable error" when the body is not one. Entra ID and Google's Security Token Service
/// answer this way.
#[cfg(any(feature = "azure", feature = "gcp"))]
pub(crate) fn oauth_error(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct OAuthError {
        error: String,
        #[serde(default)]
        error_description: String,
    }
    serde_json::from_slice::<OAuthError>(body)
        .map(|e| format!("{}: {}", e.error, e.error_description))
        .unwrap_or_else(|_| "no readable error".to_owned())
        .chars()
        .take(400)
        .collect()
}

/// Classifies an HTTP error status by the rule every backend follows (see the crate docs):
/// 5xx, 429, 408 and 401 (the federation's own credential not accepted) are unavailable, other
/// statuses (403 included) rejected. `summary` is backend text for the log only.
pub fn status_error(backend: &str, status: reqwest::StatusCode, summary: &str) -> BackendError {
    let detail = format!("{backend} returned {status}: {summary}");
    if status == reqwest::StatusCode::UNAUTHORIZED {
        BackendError::Unavailable {
            message: format!("{backend} did not accept the federation's credentials (401)"),
            detail,
        }
    } else if status.is_server_error()
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

/// Why [`read_limited`] stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The body is longer than the limit (said by its length, or found reading it).
    TooLarge,
    /// The connection failed while reading.
    Failed(reqwest::Error),
}

/// Reads a response body of at most `limit` bytes, refused before reading when its length
/// says more, and as soon as it passes the limit otherwise (the connection is then dropped).
pub async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, ReadError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ReadError::TooLarge);
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Failed)? {
        if out.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Reads a response body of at most [`MAX_BODY`] bytes.
pub async fn read_body(backend: &str, resp: reqwest::Response) -> Result<Vec<u8>, BackendError> {
    read_limited(resp, MAX_BODY).await.map_err(|e| match e {
        ReadError::TooLarge => too_large(backend),
        ReadError::Failed(e) => transport_error(backend, &e),
    })
}

/// Reads a response body like [`read_body`], but a failure (cut short, over [`MAX_BODY`])
/// keeps what arrived, at most [`MAX_BODY`] bytes: for a caller that must learn what an answer
/// it cannot read whole would have handed out.
pub async fn read_body_keeping(
    backend: &str,
    mut resp: reqwest::Response,
) -> Result<Vec<u8>, (BackendError, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) if out.len() + chunk.len() > MAX_BODY => {
                let room = MAX_BODY - out.len();
                out.extend_from_slice(&chunk[..room]);
                return Err((too_large(backend), out));
            }
            Ok(Some(chunk)) => out.extend_from_slice(&chunk),
            Ok(None) => return Ok(out),
            Err(e) => return Err((transport_error(backend, &e), out)),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pair_in(dir: &std::path::Path, cert: &str, key: &str) -> (SecretRef, SecretRef) {
        std::fs::write(dir.join("tls.crt"), cert).unwrap();
        std::fs::write(dir.join("tls.key"), key).unwrap();
        (
            SecretRef::file(dir.join("tls.crt")),
            SecretRef::file(dir.join("tls.key")),
        )
    }

    fn cert_client(cert: &SecretRef, key: &SecretRef) -> CertClient {
        CertClient::new(
            cert,
            key,
            "provider.test.auth.cert",
            Trust::System { extra: None },
            "provider.test.caBundle",
            DEFAULT_TIMEOUT,
        )
        .unwrap()
    }

    /// Which certificate the client last built presents (its PEM).
    fn presented(c: &CertClient) -> Option<String> {
        let built = c.built.lock().unwrap();
        built.as_ref().map(|b| b.cert.expose_secret().to_owned())
    }

    #[test]
    fn a_changed_certificate_builds_a_new_client_and_an_unchanged_one_does_not() {
        let ca = esi_test_support::ClientCa::new("test").unwrap();
        let (cert_a, key_a) = ca.issue("a", &[]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair_in(dir.path(), &cert_a, &key_a);
        let c = cert_client(&cert, &key);
        assert!(presented(&c).is_none(), "nothing is read before first use");
        c.client().unwrap();
        assert_eq!(presented(&c).as_deref(), Some(cert_a.trim()));
        let (cert_b, key_b) = ca.issue("b", &[]).unwrap();
        pair_in(dir.path(), &cert_b, &key_b);
        c.client().unwrap();
        assert_eq!(presented(&c).as_deref(), Some(cert_b.trim()));
        let shown = format!("{c:?}");
        assert!(
            shown.contains("tls.key") && !shown.contains("PRIVATE"),
            "{shown}"
        );
    }

    #[test]
    fn an_unusable_certificate_or_key_is_named_without_its_content() {
        let ca = esi_test_support::ClientCa::new("test").unwrap();
        let (cert_a, key_a) = ca.issue("a", &[]).unwrap();
        let (_, key_b) = ca.issue("b", &[]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (cert, key, says) in [
            ("not a certificate", key_a.as_str(), "no PEM certificate"),
            (cert_a.as_str(), "not a key", "no PEM private key"),
            (
                cert_a.as_str(),
                key_b.as_str(),
                "cannot present the client certificate",
            ),
            (
                cert_a.as_str(),
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "the key is encrypted",
            ),
        ] {
            let (c, k) = pair_in(dir.path(), cert, key);
            let err = cert_client(&c, &k).client().unwrap_err();
            assert!(
                matches!(err, BackendError::Unavailable { .. }) && err.detail().contains(says),
                "{says}: {}",
                err.detail()
            );
            assert!(
                err.detail().contains("provider.test.auth.cert") && !err.detail().contains("-----"),
                "{}",
                err.detail()
            );
        }
    }
}
