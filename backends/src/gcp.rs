//! The `gcp` SecretStore provider: the federation's own Google credentials (through
//! gcp_auth: a service-account key file, or Application Default Credentials — the
//! `GOOGLE_APPLICATION_CREDENTIALS` file, gcloud, or the metadata server) and the IAM
//! Credentials endpoint `GCPAccessToken` calls to impersonate service accounts.

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
/// The scope the federation's own token needs to call IAM Credentials.
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
    /// PEM certificates trusted for the IAM Credentials endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// Timeout of each call (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

impl GcpProvider {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        if let Some(ep) = &self.iam_credentials_endpoint {
            let url = reqwest::Url::parse(ep).map_err(|e| {
                SpecError::field(
                    "provider.gcp.iamCredentialsEndpoint",
                    format!("{ep:?} is not a URL: {e}"),
                )
            })?;
            if !matches!(url.scheme(), "http" | "https")
                || url.host().is_none()
                || url.query().is_some()
            {
                return Err(SpecError::field(
                    "provider.gcp.iamCredentialsEndpoint",
                    format!("{ep:?} is not an http(s) base URL"),
                ));
            }
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

/// The federation's Google identity and an HTTP client for IAM Credentials.
pub struct GcpConn {
    provider: GcpProvider,
    /// Base URL without a trailing slash.
    pub(crate) endpoint: String,
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
            http: crate::http::client(p.ca_bundle.as_deref(), timeout, "provider.gcp.caBundle")?,
            provider: p.clone(),
            timeout,
            source: Mutex::new(None),
        })
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
