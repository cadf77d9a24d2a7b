//! The `gcp` SecretStore provider: the federation's own Google credentials (through
//! gcp_auth: a service-account key file, or Application Default Credentials — the
//! `GOOGLE_APPLICATION_CREDENTIALS` file, gcloud, or the metadata server; or, with
//! `selfIssued`, a token the federation signs for itself, exchanged at Google's Security Token
//! Service through Workload Identity Federation), the IAM
//! Credentials endpoint that impersonates service accounts (`GCPAccessToken`, `GCRAccessToken`,
//! and `GCPSecretManagerSecret` reading as a service account) and the Secret Manager endpoint
//! (`GCPSecretManagerSecret`).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::duration::HumanDuration;
use crate::{BackendError, SpecError};

/// Google's IAM Credentials API.
pub const DEFAULT_IAM_ENDPOINT: &str = "https://iamcredentials.googleapis.com";
/// Google's Security Token Service, which exchanges an external token for a federated one.
pub const DEFAULT_STS_ENDPOINT: &str = "https://sts.googleapis.com";
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
    /// Instead of a key file or Application Default Credentials: the federation signs a token
    /// for itself with its own OIDC issuer (`sub` `esi-federation`, `aud` the Workload
    /// Identity provider's full name) and exchanges it at Google's Security Token Service: no
    /// Google secret, wherever it runs. The provider trusts the issuer, on that `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_issued: Option<GcpSelfIssued>,
    /// Overrides the Security Token Service endpoint of `selfIssued` (a private endpoint, or a
    /// local fake in tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts_endpoint: Option<String>,
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

/// The Workload Identity Federation the federation's own token is exchanged through
/// ([`GcpProvider::self_issued`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcpSelfIssued {
    /// The Workload Identity pool provider that trusts the federation's issuer:
    /// `projects/<project number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>`,
    /// with or without the `//iam.googleapis.com/` prefix.
    pub workload_identity_provider: String,
    /// A service account the federated identity impersonates (it holds
    /// `roles/iam.workloadIdentityUser` on it); absent, the federated identity itself calls
    /// IAM Credentials and Secret Manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// The prefix of a Workload Identity provider's full resource name.
const IAM_RESOURCE_PREFIX: &str = "//iam.googleapis.com/";

impl GcpSelfIssued {
    /// The provider's full resource name, `//iam.googleapis.com/projects/...`: the audience of
    /// the token exchange and of the token the federation signs for it (a provider without
    /// allowed audiences accepts exactly that).
    pub fn audience(&self) -> String {
        let name = &self.workload_identity_provider;
        let name = name.strip_prefix(IAM_RESOURCE_PREFIX).unwrap_or(name);
        format!("{IAM_RESOURCE_PREFIX}{name}")
    }

    fn validate(&self) -> Result<(), SpecError> {
        const FIELD: &str = "provider.gcp.selfIssued.workloadIdentityProvider";
        let given = &self.workload_identity_provider;
        let name = given.strip_prefix(IAM_RESOURCE_PREFIX).unwrap_or(given);
        let parts: Vec<&str> = name.split('/').collect();
        // Google's rule for pool and provider ids.
        let id_ok = |s: &str| {
            (4..=32).contains(&s.len())
                && !s.starts_with("gcp-")
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        let [
            "projects",
            project,
            "locations",
            "global",
            "workloadIdentityPools",
            pool,
            "providers",
            provider,
        ] = parts.as_slice()
        else {
            return Err(SpecError::field(
                FIELD,
                format!(
                    "{given:?} is not a Workload Identity provider name like \
                     projects/123456789/locations/global/workloadIdentityPools/<pool>/providers/<provider>"
                ),
            ));
        };
        if project.is_empty() || !project.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SpecError::field(
                FIELD,
                format!(
                    "names the project {project:?}, but Workload Identity Federation names it by \
                     number: `gcloud projects describe {project} --format='value(projectNumber)'`"
                ),
            ));
        }
        for (what, id) in [("pool", pool), ("provider", provider)] {
            if !id_ok(id) {
                return Err(SpecError::field(
                    FIELD,
                    format!(
                        "the {what} id {id:?} is not 4 to 32 lowercase letters, digits and hyphens \
                         (not starting with gcp-)"
                    ),
                ));
            }
        }
        if let Some(sa) = &self.service_account
            && !valid_account(sa)
        {
            return Err(SpecError::field(
                "provider.gcp.selfIssued.serviceAccount",
                format!("{sa:?} is not a service account email"),
            ));
        }
        Ok(())
    }
}

impl GcpProvider {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        if let Some(own) = &self.self_issued {
            if self.service_account_key_file.is_some() {
                return Err(SpecError::field(
                    "provider.gcp.selfIssued",
                    "the federation's Google identity comes from serviceAccountKeyFile or selfIssued, not both",
                ));
            }
            own.validate()?;
        } else if self.sts_endpoint.is_some() {
            return Err(SpecError::field(
                "provider.gcp.stsEndpoint",
                "only selfIssued calls the Security Token Service; set selfIssued, or remove it",
            ));
        }
        for (field, ep) in [
            (
                "provider.gcp.iamCredentialsEndpoint",
                &self.iam_credentials_endpoint,
            ),
            ("provider.gcp.stsEndpoint", &self.sts_endpoint),
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
    /// With `selfIssued`, where the federation's own token comes from instead.
    own: Option<OwnLogin>,
}

/// A `selfIssued` store's login: the federation's issuer, the exchange and the Google token it
/// gave, kept until shortly before it expires.
struct OwnLogin {
    issuer: Option<Arc<crate::identity::Issuer>>,
    /// The Workload Identity provider's full name, audience of the exchange.
    audience: String,
    /// Security Token Service's base URL without a trailing slash.
    sts: String,
    service_account: Option<String>,
    token: Mutex<Option<GoogleToken>>,
}

/// How long before its expiry a cached `selfIssued` token is exchanged again: every call made
/// with it is done well before it expires.
const OWN_TOKEN_MARGIN: Duration = Duration::from_secs(300);
/// The longest a `selfIssued` token is kept, whatever Google says it lives (an hour).
const OWN_TOKEN_MAX_KEEP: Duration = Duration::from_secs(3600);

impl fmt::Debug for GcpConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcpConn")
            .field("endpoint", &self.endpoint)
            .field("secret_manager_override", &self.secret_manager_override)
            .field("self_issued", &self.own.as_ref().map(|o| &o.audience))
            .finish_non_exhaustive()
    }
}

impl GcpConn {
    /// Prepares the connection (credentials are loaded on first use) on the federation's
    /// `issuer`, which `selfIssued` needs.
    pub(crate) fn new(p: &GcpProvider, issuer: &crate::IssuerSlot) -> Result<Self, SpecError> {
        p.validate()?;
        let timeout = p
            .timeout
            .map_or(crate::http::DEFAULT_TIMEOUT, HumanDuration::get);
        let own = match &p.self_issued {
            Some(s) => Some(OwnLogin {
                issuer: issuer
                    .for_build("a gcp SecretStore exchanging a token of its own (selfIssued)")?,
                audience: s.audience(),
                sts: p
                    .sts_endpoint
                    .as_deref()
                    .unwrap_or(DEFAULT_STS_ENDPOINT)
                    .trim_end_matches('/')
                    .to_owned(),
                service_account: s.service_account.clone(),
                token: Mutex::new(None),
            }),
            None => None,
        };
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
            own,
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

    /// A bearer token of the federation itself, for IAM Credentials and Secret Manager: from
    /// gcp_auth (see [`GcpConn::fetch_source_token`]), or with `selfIssued` from the exchange
    /// (see [`GcpConn::own_token`]).
    ///
    /// Loading the credentials and fetching the token (with its one retry) share the store's
    /// timeout: gcp_auth has none on these calls and retries on its own, holding its lock, so a
    /// token endpoint or metadata server that does not answer would hold the request for as
    /// long as its connection lives.
    pub(crate) async fn source_token(&self) -> Result<SecretString, BackendError> {
        let fetch = async {
            match &self.own {
                Some(own) => self.own_token(own).await,
                None => Ok(SecretString::from(
                    self.fetch_source_token().await?.as_str(),
                )),
            }
        };
        tokio::time::timeout(self.timeout, fetch)
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

    /// Obtains the federation's own token (as every call does) and says whose it
    /// is: the key file's service account (its `client_email`), the service account a
    /// `selfIssued` login impersonates, or the federated principal itself, or Application
    /// Default Credentials (whose account only the environment knows). For
    /// `esi-federation check --login`.
    pub async fn whoami(&self) -> Result<String, BackendError> {
        self.source_token().await?;
        if let Some(own) = &self.own {
            let pool = own.audience.split("/providers/").next().unwrap_or_default();
            let principal = format!(
                "principal:{pool}/subject/{}",
                crate::identity::FEDERATION_SUBJECT
            );
            return Ok(match &own.service_account {
                Some(sa) => format!("service account {sa}, impersonated by {principal}"),
                None => principal,
            });
        }
        let Some(path) = &self.provider.service_account_key_file else {
            return Ok("application default credentials".to_owned());
        };
        #[derive(Deserialize)]
        struct KeyFile {
            client_email: String,
        }
        // The file gcp_auth just read; only its account is taken from it.
        let email = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<KeyFile>(&b).ok())
            .map_or_else(|| "an unnamed account".to_owned(), |k| k.client_email);
        Ok(format!(
            "service account {email} (key file {})",
            path.display()
        ))
    }

    /// Drops the federation's own token after Google refused it (401), so that the next
    /// request obtains a new one: a `selfIssued` exchange again, or the key file or default
    /// credentials loaded again (gcp_auth would keep its token until it expires).
    pub(crate) async fn forget_source_token(&self) {
        match &self.own {
            Some(own) => *own.token.lock().await = None,
            None => *self.source.lock().await = None,
        }
    }

    /// gcp_auth's token. When the token endpoint refuses, the credentials are loaded again and
    /// asked once more: the connection outlives configuration reloads, so a rotated key file
    /// is picked up here (the old key deleted, the file holding the new one) rather than when
    /// the configuration is read.
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
    shared: &mut crate::Shared,
) -> Result<Arc<GcpConn>, SpecError> {
    let provider = crate::store::require(store, reference, "gcp", |p| match p {
        crate::StoreProvider::Gcp(g) => Some(g),
        #[allow(unreachable_patterns)]
        _ => None,
    })?;
    shared
        .gcp
        .get(provider, |p| GcpConn::new(p, &shared.issuer))
}

/// The backend name of the Security Token Service in errors and logs.
const STS_BACKEND: &str = "google sts";

/// The token exchange of RFC 8693 as Google's Security Token Service takes it
/// (`GoogleIdentityStsV1ExchangeTokenRequest`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExchangeRequest<'a> {
    audience: &'a str,
    grant_type: &'static str,
    requested_token_type: &'static str,
    scope: &'static str,
    subject_token: &'a str,
    subject_token_type: &'static str,
}

/// Its answer (`GoogleIdentityStsV1ExchangeTokenResponse`, in OAuth's snake case).
#[derive(Deserialize)]
struct ExchangeResponse {
    access_token: String,
    expires_in: u64,
}

impl GcpConn {
    /// The federation's own Google token with `selfIssued`: the one kept, else a new one.
    /// The federation signs a token for itself (`aud` the Workload Identity provider's full
    /// name), exchanges it at the Security Token Service for a federated token and, when the
    /// store names a service account, impersonates it with that. Requests wait on one exchange
    /// at a time rather than each starting their own.
    async fn own_token(&self, own: &OwnLogin) -> Result<SecretString, BackendError> {
        let mut kept = own.token.lock().await;
        let fresh_until = jiff::Timestamp::now() + OWN_TOKEN_MARGIN;
        if let Some(t) = kept.as_ref().filter(|t| t.expires_at > fresh_until) {
            return Ok(t.token.clone());
        }
        let federated = self.exchange(own).await?;
        let token = match &own.service_account {
            Some(email) => {
                let scopes = [CLOUD_PLATFORM_SCOPE.to_owned()];
                let body = access_request(&[], &scopes, OWN_TOKEN_MAX_KEEP);
                let (status, bytes) = self
                    .post_iam(&federated.token, email, "generateAccessToken", &body)
                    .await?;
                read_access_token(&iam_answer(email, "getAccessToken", status, &bytes)?)?
            }
            None => federated,
        };
        let keep_until = jiff::Timestamp::now() + OWN_TOKEN_MAX_KEEP;
        let out = token.token.clone();
        *kept = Some(GoogleToken {
            expires_at: token.expires_at.min(keep_until),
            token: token.token,
        });
        Ok(out)
    }

    /// Exchanges a token the federation signs for itself at the Security Token Service.
    async fn exchange(&self, own: &OwnLogin) -> Result<GoogleToken, BackendError> {
        let subject = crate::identity::own_login_token(own.issuer.as_ref(), &own.audience)?;
        let body = ExchangeRequest {
            audience: &own.audience,
            grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
            requested_token_type: "urn:ietf:params:oauth:token-type:access_token",
            scope: CLOUD_PLATFORM_SCOPE,
            subject_token: subject.expose_secret(),
            subject_token_type: "urn:ietf:params:oauth:token-type:jwt",
        };
        let req = self.http.post(format!("{}/v1/token", own.sts)).json(&body);
        let (status, bytes) = crate::http::send(STS_BACKEND, req).await?;
        if !status.is_success() {
            let detail = format!("{}: {}", own.audience, crate::http::oauth_error(&bytes));
            // Google's answer to a token it does not take (400 invalid_grant: the provider
            // does not trust the issuer, its key, `sub` or `aud`; 401/403: the pool or
            // provider disabled) is the federation's configuration, which the caller cannot
            // fix.
            return Err(if status.is_client_error() {
                BackendError::Unavailable {
                    message: format!(
                        "Google's Security Token Service refused the federation's own token ({})",
                        status.as_u16()
                    ),
                    detail: format!("{STS_BACKEND}: {}: {detail}", status.as_u16()),
                }
            } else {
                crate::http::status_error(STS_BACKEND, status, &detail)
            });
        }
        let resp: ExchangeResponse =
            esi_api::json::from_answer(&bytes).map_err(|e| BackendError::Unavailable {
                message: "google sts returned an unreadable response".to_owned(),
                detail: format!("token exchange response: {e}"),
            })?;
        let lives = Duration::from_secs(resp.expires_in).min(OWN_TOKEN_MAX_KEEP);
        Ok(GoogleToken {
            token: resp.access_token.into(),
            expires_at: jiff::Timestamp::now() + lives,
        })
    }
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

/// `generateAccessToken`'s request: `lifetime` in whole seconds, at least one.
fn access_request<'a>(
    delegates: &[String],
    scopes: &'a [String],
    lifetime: Duration,
) -> GenerateRequest<'a> {
    GenerateRequest {
        delegates: delegate_names(delegates),
        scope: scopes,
        lifetime: format!("{}s", lifetime.as_secs().max(1)),
    }
}

/// The token of `generateAccessToken`'s successful answer.
fn read_access_token(bytes: &[u8]) -> Result<GoogleToken, BackendError> {
    let resp: GenerateResponse = read_answer("generateAccessToken", bytes)?;
    let expires_at =
        resp.expire_time
            .parse::<jiff::Timestamp>()
            .map_err(|e| BackendError::Unavailable {
                message: "google iam credentials returned an unreadable expiry".to_owned(),
                detail: format!("expireTime {:?}: {e}", resp.expire_time),
            })?;
    Ok(GoogleToken {
        token: resp.access_token.into(),
        expires_at,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateResponse {
    access_token: String,
    expire_time: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateIdRequest<'a> {
    delegates: Vec<String>,
    audience: &'a str,
    include_email: bool,
}

#[derive(Deserialize)]
struct GenerateIdResponse {
    token: String,
}

/// An OAuth access token Google issued: an impersonated service account's, or a federated one.
pub(crate) struct GoogleToken {
    /// The OAuth access token.
    pub(crate) token: secrecy::SecretString,
    /// When Google says it expires.
    pub(crate) expires_at: jiff::Timestamp,
}

/// The delegation chain as IAM Credentials takes it: `projects/-/serviceAccounts/{email}`.
fn delegate_names(delegates: &[String]) -> Vec<String> {
    delegates
        .iter()
        .map(|d| {
            if d.starts_with("projects/") {
                d.clone()
            } else {
                format!("projects/-/serviceAccounts/{d}")
            }
        })
        .collect()
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
    ) -> Result<GoogleToken, BackendError> {
        let body = access_request(delegates, scopes, lifetime);
        let bytes = self
            .call_iam(email, "generateAccessToken", "getAccessToken", &body)
            .await?;
        read_access_token(&bytes)
    }

    /// A Google-signed OpenID Connect ID token of the service account `email` for `audience`,
    /// minted by IAM Credentials `generateIdToken` with the federation's own token, through
    /// `delegates`; with the `email` claim when `include_email`. Its expiry is in the token.
    pub(crate) async fn generate_id_token(
        &self,
        email: &str,
        delegates: &[String],
        audience: &str,
        include_email: bool,
    ) -> Result<secrecy::SecretString, BackendError> {
        let body = GenerateIdRequest {
            delegates: delegate_names(delegates),
            audience,
            include_email,
        };
        let bytes = self
            .call_iam(email, "generateIdToken", "getOpenIdToken", &body)
            .await?;
        let resp: GenerateIdResponse = read_answer("generateIdToken", &bytes)?;
        Ok(resp.token.into())
    }

    /// IAM Credentials' `method` for `email` with `body`, called with the federation's own
    /// token: the answer's body on success, else the error it means (`permission` names the
    /// IAM permission a 403 lacks). A 401 makes the next call fetch the federation's token
    /// again.
    async fn call_iam(
        &self,
        email: &str,
        method: &str,
        permission: &str,
        body: &impl Serialize,
    ) -> Result<Vec<u8>, BackendError> {
        let source = self.source_token().await?;
        let (status, bytes) = self.post_iam(&source, email, method, body).await?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            self.forget_source_token().await;
        }
        iam_answer(email, permission, status, &bytes)
    }

    /// IAM Credentials' `method` for `email` with `body`, called with the bearer token
    /// `source`: its status and body.
    async fn post_iam(
        &self,
        source: &SecretString,
        email: &str,
        method: &str,
        body: &impl Serialize,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), BackendError> {
        let url = format!(
            "{}/v1/projects/-/serviceAccounts/{email}:{method}",
            self.endpoint
        );
        let req = self
            .http
            .post(&url)
            .bearer_auth(source.expose_secret())
            .json(body);
        crate::http::send(IAM_BACKEND, req).await
    }
}

/// The body of IAM Credentials' answer for `email` when it succeeded, else the error it means
/// (`permission` names the IAM permission a 403 lacks).
fn iam_answer(
    email: &str,
    permission: &str,
    status: reqwest::StatusCode,
    bytes: &[u8],
) -> Result<Vec<u8>, BackendError> {
    if status.is_success() {
        return Ok(bytes.to_vec());
    }
    let detail = format!("{email}: {}", google_error_message(bytes));
    // The federation's token not accepted (401: retryable, the source token is fetched again),
    // or its identity may not impersonate `email` (403: an IAM binding only the operator can
    // grant; rejected, as every backend's 403). Either way the federation's configuration,
    // which the caller cannot fix.
    Err(match status.as_u16() {
        401 => BackendError::Unavailable {
            message: "Google did not accept the federation's own token (401)".to_owned(),
            detail: format!("{IAM_BACKEND}: 401: {detail}"),
        },
        403 => BackendError::Rejected {
            message: format!(
                "the federation's Google identity may not impersonate {email} (403; it needs \
                 iam.serviceAccounts.{permission} on it)"
            ),
            detail: format!("{IAM_BACKEND}: 403: {detail}"),
        },
        _ => crate::http::status_error(IAM_BACKEND, status, &detail),
    })
}

/// IAM Credentials' successful answer to `method`, read as `T`.
fn read_answer<T: serde::de::DeserializeOwned>(
    method: &str,
    bytes: &[u8],
) -> Result<T, BackendError> {
    esi_api::json::from_answer(bytes).map_err(|e| BackendError::Unavailable {
        message: "google iam credentials returned an unreadable response".to_owned(),
        detail: format!("{method} response: {e}"),
    })
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
