//! The `gcp` SecretStore provider: the federation's own Google credentials (through
//! gcp_auth: a service-account key file, or Application Default Credentials — the
//! `GOOGLE_APPLICATION_CREDENTIALS` file, gcloud, or the metadata server), the IAM
//! Credentials endpoint that impersonates service accounts (`GCPAccessToken`, `GCRAccessToken`,
//! and `GCPSecretManagerSecret` reading as a service account) and the Secret Manager endpoint
//! (`GCPSecretManagerSecret`).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::duration::HumanDuration;
use crate::{BackendError, SpecError};

/// Google's IAM Credentials API.
pub const DEFAULT_IAM_ENDPOINT: &str = "https://iamcredentials.googleapis.com";
/// Google's Secret Manager API.
pub const DEFAULT_SECRET_MANAGER_ENDPOINT: &str = "https://secretmanager.googleapis.com";
/// The scope the federation's own token needs to call IAM Credentials and Secret Manager.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// How the federation authenticates to Google.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcpProvider {
    /// A service-account key file (JSON) of the federation; absent means Application
    /// Default Credentials. The key file's `token_uri` is where tokens are fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_key_file: Option<PathBuf>,
    /// Overrides the IAM Credentials endpoint (a private endpoint, or a local fake in tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam_credentials_endpoint: Option<String>,
    /// Overrides the Secret Manager endpoint (a private endpoint such as Private Service
    /// Connect, or a local fake in tests), for global and regional secrets alike; without it,
    /// `https://secretmanager.googleapis.com`, or the location's regional endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_manager_endpoint: Option<String>,
    /// PEM certificates trusted for the Google endpoints (in addition to the system's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// Timeout of each call (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

impl GcpProvider {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        for (field, ep) in [
            (
                "provider.gcp.iamCredentialsEndpoint",
                &self.iam_credentials_endpoint,
            ),
            (
                "provider.gcp.secretManagerEndpoint",
                &self.secret_manager_endpoint,
            ),
        ] {
            if let Some(ep) = ep {
                check_endpoint(ep, field)?;
            }
        }
        if let Some(file) = &self.service_account_key_file {
            crate::secret::validate_file(
                file,
                "provider.gcp.serviceAccountKeyFile",
                Some(crate::secret::Owner::Gcp),
            )?;
        }
        if self.timeout.is_some_and(|t| t.get().is_zero()) {
            return Err(SpecError::field("provider.gcp.timeout", "must be positive"));
        }
        if let Some(pem) = &self.ca_bundle {
            crate::http::check_ca_bundle(pem, "provider.gcp.caBundle")?;
        }
        Ok(())
    }
}

/// Checks an endpoint override: an http(s) base URL without a query.
fn check_endpoint(ep: &str, field: &str) -> Result<(), SpecError> {
    let url = reqwest::Url::parse(ep)
        .map_err(|e| SpecError::field(field, format!("{ep:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || url.query().is_some() {
        return Err(SpecError::field(
            field,
            format!("{ep:?} is not an http(s) base URL"),
        ));
    }
    Ok(())
}

/// The federation's Google identity and an HTTP client for IAM Credentials and Secret Manager.
pub struct GcpConn {
    provider: GcpProvider,
    /// IAM Credentials' base URL without a trailing slash.
    pub(crate) endpoint: String,
    /// The store's Secret Manager endpoint override, without a trailing slash.
    secret_manager_override: Option<String>,
    pub(crate) http: reqwest::Client,
    /// The store's timeout, also the bound on obtaining the federation's own token: gcp_auth
    /// sets none of its own on the token endpoint, and retries.
    timeout: Duration,
    /// The loaded credentials; `None` until first use, and again after a refusal so that a
    /// rotated key file is read again.
    source: Mutex<Option<Arc<dyn gcp_auth::TokenProvider>>>,
}

impl fmt::Debug for GcpConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcpConn")
            .field("endpoint", &self.endpoint)
            .field("secret_manager_override", &self.secret_manager_override)
            .finish_non_exhaustive()
    }
}

impl GcpConn {
    /// Prepares the connection (credentials are loaded on first use).
    pub fn new(p: &GcpProvider) -> Result<Self, SpecError> {
        p.validate()?;
        let timeout = p
            .timeout
            .map_or(crate::http::DEFAULT_TIMEOUT, HumanDuration::get);
        Ok(GcpConn {
            endpoint: p
                .iam_credentials_endpoint
                .as_deref()
                .unwrap_or(DEFAULT_IAM_ENDPOINT)
                .trim_end_matches('/')
                .to_owned(),
            secret_manager_override: p
                .secret_manager_endpoint
                .as_deref()
                .map(|ep| ep.trim_end_matches('/').to_owned()),
            http: crate::http::client(p.ca_bundle.as_deref(), timeout, "provider.gcp.caBundle")?,
            provider: p.clone(),
            timeout,
            source: Mutex::new(None),
        })
    }

    /// Secret Manager's base URL (no trailing slash) for a secret in `location` (`None`: a
    /// global secret): the store's override, else Google's global endpoint or the location's
    /// regional one (`secretmanager.{location}.rep.googleapis.com`, which alone serves
    /// regional secrets).
    pub(crate) fn secret_manager_endpoint(&self, location: Option<&str>) -> String {
        match (&self.secret_manager_override, location) {
            (Some(ep), _) => ep.clone(),
            (None, Some(l)) => format!("https://secretmanager.{l}.rep.googleapis.com"),
            (None, None) => DEFAULT_SECRET_MANAGER_ENDPOINT.to_owned(),
        }
    }

    /// A bearer token of the federation itself, for IAM Credentials. When the token endpoint
    /// refuses, the credentials are loaded again and asked once more: the connection outlives
    /// configuration reloads, so a rotated key file is picked up here (the old key deleted, the
    /// file holding the new one) rather than when the configuration is read.
    ///
    /// Loading the credentials and fetching the token (with its one retry) share the store's
    /// timeout: gcp_auth has none on these calls and retries on its own, holding its lock, so a
    /// token endpoint or metadata server that does not answer would hold the request for as
    /// long as its connection lives.
    pub async fn source_token(&self) -> Result<Arc<gcp_auth::Token>, BackendError> {
        tokio::time::timeout(self.timeout, self.fetch_source_token())
            .await
            .unwrap_or_else(|_| {
                Err(BackendError::Unavailable {
                    message: "the federation could not obtain its own Google token in time"
                        .to_owned(),
                    detail: format!(
                        "source token: no token from the credentials source within the store's timeout of {}",
                        humantime::format_duration(self.timeout)
                    ),
                })
            })
    }

    async fn fetch_source_token(&self) -> Result<Arc<gcp_auth::Token>, BackendError> {
        let provider = self.credentials().await?;
        match provider.token(&[CLOUD_PLATFORM_SCOPE]).await {
            Ok(token) => Ok(token),
            Err(first) => {
                {
                    let mut cached = self.source.lock().await;
                    if cached.as_ref().is_some_and(|c| Arc::ptr_eq(c, &provider)) {
                        *cached = None;
                    }
                }
                tracing::debug!(error = %first, "google source token refused; loading the credentials again");
                self.credentials()
                    .await?
                    .token(&[CLOUD_PLATFORM_SCOPE])
                    .await
                    .map_err(|e| BackendError::Unavailable {
                        message: "the federation could not obtain its own Google token".to_owned(),
                        detail: format!("source token: {e}"),
                    })
            }
        }
    }

    /// The federation's Google credentials: the key file, else application default credentials;
    /// loaded on first use and kept.
    async fn credentials(&self) -> Result<Arc<dyn gcp_auth::TokenProvider>, BackendError> {
        let mut cached = self.source.lock().await;
        if let Some(p) = cached.as_ref() {
            return Ok(p.clone());
        }
        let p: Arc<dyn gcp_auth::TokenProvider> = match &self.provider.service_account_key_file {
            Some(path) => Arc::new(gcp_auth::CustomServiceAccount::from_file(path).map_err(
                |e| BackendError::Unavailable {
                    message: "the federation's Google credentials could not be loaded".to_owned(),
                    detail: format!("service account key file {}: {e}", path.display()),
                },
            )?),
            None => gcp_auth::provider()
                .await
                .map_err(|e| BackendError::Unavailable {
                    message: "the federation has no Google credentials".to_owned(),
                    detail: format!("application default credentials: {e}"),
                })?,
        };
        *cached = Some(p.clone());
        Ok(p)
    }
}

/// The shared connection of the `gcp` store a generator names (see [`crate::store::require`]).
pub(crate) fn shared_conn(
    store: Option<&crate::SecretStoreSpec>,
    reference: &crate::SecretStoreRef,
    conns: &mut crate::store::Conns<GcpConn>,
) -> Result<Arc<GcpConn>, SpecError> {
    let provider = crate::store::require(store, reference, "gcp", |p| match p {
        crate::StoreProvider::Gcp(g) => Some(g),
        #[allow(unreachable_patterns)]
        _ => None,
    })?;
    conns.get(provider, GcpConn::new)
}

/// The backend name of IAM Credentials in errors and logs.
const IAM_BACKEND: &str = "google iam credentials";

/// Whether `s` looks like a service account email (`name@project.iam.gserviceaccount.com`).
pub(crate) fn valid_account(s: &str) -> bool {
    let (user, domain) = s.split_once('@').unwrap_or(("", ""));
    !user.is_empty()
        && domain.contains('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@.-_".contains(&b))
}

/// Checks a service account to impersonate and its delegation chain (each an email, or
/// `projects/-/serviceAccounts/{email}`), naming the spec fields `serviceAccountEmail` and
/// `delegates[i]`.
pub(crate) fn validate_impersonation(email: &str, delegates: &[String]) -> Result<(), SpecError> {
    if !valid_account(email) {
        return Err(SpecError::field(
            "serviceAccountEmail",
            format!("{email:?} is not a service account email"),
        ));
    }
    for (i, d) in delegates.iter().enumerate() {
        let email = d.strip_prefix("projects/-/serviceAccounts/").unwrap_or(d);
        if !valid_account(email) {
            return Err(SpecError::field(
                format!("delegates[{i}]"),
                format!("{d:?} is not a service account email"),
            ));
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct GenerateRequest<'a> {
    delegates: Vec<String>,
    scope: &'a [String],
    lifetime: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateResponse {
    access_token: String,
    expire_time: String,
}

/// An access token of an impersonated service account.
pub(crate) struct ImpersonatedToken {
    /// The OAuth access token.
    pub(crate) token: secrecy::SecretString,
    /// When Google says it expires.
    pub(crate) expires_at: jiff::Timestamp,
}

impl GcpConn {
    /// An access token of the service account `email`, minted by IAM Credentials
    /// `generateAccessToken` with the federation's own token, through the delegation chain
    /// `delegates` (checked by [`validate_impersonation`]), for `scopes` and `lifetime`
    /// (whole seconds, at least one).
    pub(crate) async fn generate_access_token(
        &self,
        email: &str,
        delegates: &[String],
        scopes: &[String],
        lifetime: Duration,
    ) -> Result<ImpersonatedToken, BackendError> {
        let source = self.source_token().await?;
        let url = format!(
            "{}/v1/projects/-/serviceAccounts/{email}:generateAccessToken",
            self.endpoint
        );
        let body = GenerateRequest {
            delegates: delegates
                .iter()
                .map(|d| {
                    if d.starts_with("projects/") {
                        d.clone()
                    } else {
                        format!("projects/-/serviceAccounts/{d}")
                    }
                })
                .collect(),
            scope: scopes,
            lifetime: format!("{}s", lifetime.as_secs().max(1)),
        };
        let req = self
            .http
            .post(&url)
            .bearer_auth(source.as_str())
            .json(&body);
        let (status, bytes) = crate::http::send(IAM_BACKEND, req).await?;
        if !status.is_success() {
            let detail = format!("{email}: {}", google_error_message(&bytes));
            // The federation's token not accepted (401: retryable, the source token is
            // fetched again), or its identity may not impersonate `email` (403: an IAM binding
            // only the operator can grant; rejected, as every backend's 403). Either way the
            // federation's configuration, which the caller cannot fix.
            return Err(match status.as_u16() {
                401 => BackendError::Unavailable {
                    message: "Google did not accept the federation's own token (401)".to_owned(),
                    detail: format!("{IAM_BACKEND}: 401: {detail}"),
                },
                403 => BackendError::Rejected {
                    message: format!(
                        "the federation's Google identity may not impersonate {email} (403)"
                    ),
                    detail: format!("{IAM_BACKEND}: 403: {detail}"),
                },
                _ => crate::http::status_error(IAM_BACKEND, status, &detail),
            });
        }
        let resp: GenerateResponse =
            esi_api::json::from_answer(&bytes).map_err(|e| BackendError::Unavailable {
                message: "google iam credentials returned an unreadable response".to_owned(),
                detail: format!("generateAccessToken response: {e}"),
            })?;
        let expires_at =
            resp.expire_time
                .parse::<jiff::Timestamp>()
                .map_err(|e| BackendError::Unavailable {
                    message: "google iam credentials returned an unreadable expiry".to_owned(),
                    detail: format!("expireTime {:?}: {e}", resp.expire_time),
                })?;
        Ok(ImpersonatedToken {
            token: resp.access_token.into(),
            expires_at,
        })
    }
}

/// Google's `error.message` of an error answer (`{"error": {"code", "message", "status"}}`),
/// with its `status` when given, for the log; else the body's size.
pub(crate) fn google_error_message(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return format!("{} byte body", body.len());
    };
    let text = |p: &str| v.pointer(p).and_then(|m| m.as_str());
    match (text("/error/status"), text("/error/message")) {
        (Some(status), Some(message)) => format!("{status}: {message}"),
        (None, Some(message)) => message.to_owned(),
        _ => format!("{} byte body", body.len()),
    }
}
