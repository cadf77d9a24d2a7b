//! The `azure` SecretStore provider: the federation's own Microsoft Entra ID (Azure AD)
//! identity, an app registration or user-assigned managed identity, and the token it obtains
//! with the OAuth 2.0 client credentials grant. `ACRAccessToken` (feature `acr`) and
//! `AzureKeyVaultSecret` (feature `keyvault`) use it; each asks for a token of its own
//! audience (scope), so a token meant for one service is never shown to the other.
//!
//! The identity proves itself with one of:
//!
//! - `clientSecret`: a client secret, read through a [`SecretRef`] (its environment or a file,
//!   never the manifest) on every token request, so a rotated secret needs no restart;
//! - `workloadIdentity`: a federated token (Azure Workload Identity: a projected Kubernetes
//!   ServiceAccount token trusted by a federated identity credential), sent as a
//!   `client_assertion`. The file is `tokenFile`, else the one `AZURE_FEDERATED_TOKEN_FILE`
//!   names (the variable the Azure Workload Identity webhook sets); it is re-read on every
//!   token request, as Azure's SDKs do, since the kubelet rotates it.
//!
//! A token request is `POST {authorityHost}{tenantId}/oauth2/v2.0/token` with
//! `grant_type=client_credentials`, `client_id`, `scope` and the proof. The token is the
//! federation's own, not the caller's: it is kept per store and scope and reused until five
//! minutes before it expires (Azure's SDKs refresh at the same point), so a mint costs no
//! Entra ID round trip. A token a backend refuses is dropped and fetched again once.
//!
//! ```yaml
//! kind: SecretStore
//! spec:
//!   provider:
//!     azure:
//!       tenantId: 72f988bf-86f1-41af-91ab-2d7cd011db47
//!       clientId: 3c1b7e2a-5d4f-4e8b-9a61-0f2d8c7b6e15
//!       workloadIdentity: {}            # or clientSecret: {env: AZURE_CLIENT_SECRET}
//! ```

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Url;
use schemars::JsonSchema;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::secret::Owner;
use crate::{BackendError, SecretRef, SpecError};

const BACKEND: &str = "Microsoft Entra ID";

/// Entra ID's public cloud authority. The sovereign clouds have their own:
/// `https://login.microsoftonline.us/` (Azure Government), `https://login.chinacloudapi.cn/`
/// (Azure operated by 21Vianet).
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com/";
/// The variable naming the federated token file, set by the Azure Workload Identity webhook.
pub const FEDERATED_TOKEN_FILE_ENV: &str = "AZURE_FEDERATED_TOKEN_FILE";
/// How a federated token is presented (RFC 7521).
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Audience of the token ACR's `/oauth2/exchange` accepts that grants nothing beyond ACR: every
/// registry takes it, including those set to refuse ARM-audience tokens, and it is the same in
/// every cloud (Azure's SDKs ask for it in Azure Government and Azure in China too).
pub const DEFAULT_ACR_AUDIENCE: &str = "https://containerregistry.azure.net";
/// A cached token is fetched again once it has less than this left.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// The longest a token is kept, whatever Entra ID says (its tokens live a day at most).
const MAX_KEPT: Duration = Duration::from_secs(24 * 3600);

/// The `azure` SecretStore provider: the federation's Entra ID identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureProvider {
    /// The Entra ID tenant (directory) of the identity: its ID (a GUID) or a verified domain.
    pub tenant_id: String,
    /// The application (client) ID of the app registration or managed identity (a GUID).
    pub client_id: String,
    /// A client secret of the app registration. Exactly one of `clientSecret` and
    /// `workloadIdentity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<SecretRef>,
    /// Azure Workload Identity: a federated token presented as a client assertion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity: Option<WorkloadIdentity>,
    /// The Entra ID authority (default `https://login.microsoftonline.com/`; a sovereign
    /// cloud's, e.g. `https://login.microsoftonline.us/`). `http://` only for a loopback
    /// address (a local fake).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority_host: Option<String>,
    /// The audience of the token presented to Azure Container Registry (`{audience}/.default`
    /// is requested): `https://containerregistry.azure.net` (default, the same in every cloud),
    /// good for ACR alone;
    /// `https://management.azure.com` (ARM, what External Secrets Operator asks for) grants
    /// the whole of Azure Resource Manager to whoever holds it, and registries can be set to
    /// refuse it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr_audience: Option<String>,
    /// Where ACR calls go instead of `https://{registry}` (an egress proxy, or a local fake
    /// in tests); the registry's name is still the `service` asked for. `http://` only for a
    /// loopback address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr_endpoint: Option<String>,
    /// Where Key Vault calls go instead of `https://{vault}/` (an egress proxy, or a local
    /// fake in tests); the token is still asked for the vault's own cloud. `http://` only for
    /// a loopback address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_vault_endpoint: Option<String>,
    /// PEM certificates trusted in addition to the system roots (a TLS-inspecting proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// Timeout of each call (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

/// Azure Workload Identity: where the federated token is read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadIdentity {
    /// The federated token's file; default the file `AZURE_FEDERATED_TOKEN_FILE` names in the
    /// federation's environment. Re-read on every token request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

/// Whether `s` is a GUID in its usual text form (`8-4-4-4-12` hex digits).
fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `s` is a DNS name (a tenant's verified domain, `contoso.onmicrosoft.com`).
pub(crate) fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').count() >= 2
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl AzureProvider {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !is_guid(&self.tenant_id) && !is_dns_name(&self.tenant_id) {
            return Err(SpecError::field(
                "provider.azure.tenantId",
                format!(
                    "{:?} is not a tenant ID (a GUID) or a tenant's domain name",
                    self.tenant_id
                ),
            ));
        }
        if !is_guid(&self.client_id) {
            return Err(SpecError::field(
                "provider.azure.clientId",
                format!(
                    "{:?} is not an application (client) ID (a GUID)",
                    self.client_id
                ),
            ));
        }
        match (&self.client_secret, &self.workload_identity) {
            (Some(secret), None) => secret.validate("provider.azure.clientSecret")?,
            (None, Some(wi)) => {
                if let Some(file) = &wi.token_file {
                    crate::secret::validate_file(
                        file,
                        "provider.azure.workloadIdentity.tokenFile",
                        Some(Owner::Azure),
                    )?;
                }
            }
            _ => {
                return Err(SpecError::field(
                    "provider.azure",
                    "set exactly one of `clientSecret` or `workloadIdentity`",
                ));
            }
        }
        self.token_url()?;
        self.acr_scope()?;
        self.acr_endpoint()?;
        self.key_vault_endpoint()?;
        if self.timeout.is_some_and(|t| t.get().is_zero()) {
            return Err(SpecError::field(
                "provider.azure.timeout",
                "must be positive",
            ));
        }
        if let Some(pem) = &self.ca_bundle {
            crate::http::check_ca_bundle(pem, "provider.azure.caBundle")?;
        }
        Ok(())
    }

    /// `{authorityHost}{tenantId}/oauth2/v2.0/token`.
    fn token_url(&self) -> Result<Url, SpecError> {
        let field = "provider.azure.authorityHost";
        let base = crate::http::base_url(
            self.authority_host
                .as_deref()
                .unwrap_or(DEFAULT_AUTHORITY_HOST),
            field,
        )?;
        base.join(&format!("{}/oauth2/v2.0/token", self.tenant_id))
            .map_err(|e| SpecError::field(field, format!("cannot name the token endpoint: {e}")))
    }

    /// The scope asked of Entra ID for ACR: `{acrAudience}/.default`.
    fn acr_scope(&self) -> Result<String, SpecError> {
        let field = "provider.azure.acrAudience";
        let audience = self.acr_audience.as_deref().unwrap_or(DEFAULT_ACR_AUDIENCE);
        let url = Url::parse(audience)
            .map_err(|e| SpecError::field(field, format!("{audience:?} is not a URL: {e}")))?;
        if url.scheme() != "https"
            || url.host().is_none()
            || url.query().is_some()
            || audience.contains(char::is_whitespace)
        {
            return Err(SpecError::field(
                field,
                format!("{audience:?} is not an https:// resource URI"),
            ));
        }
        Ok(format!("{}/.default", audience.trim_end_matches('/')))
    }

    fn acr_endpoint(&self) -> Result<Option<Url>, SpecError> {
        self.acr_endpoint
            .as_deref()
            .map(|e| crate::http::base_url(e, "provider.azure.acrEndpoint"))
            .transpose()
    }

    fn key_vault_endpoint(&self) -> Result<Option<Url>, SpecError> {
        self.key_vault_endpoint
            .as_deref()
            .map(|e| crate::http::base_url(e, "provider.azure.keyVaultEndpoint"))
            .transpose()
    }
}

/// How the identity proves itself to Entra ID.
#[derive(Clone)]
enum Proof {
    Secret(SecretRef),
    /// The federated token's file; `None` for the one the environment names.
    Assertion(Option<PathBuf>),
}

/// A token of the federation kept for reuse.
struct Cached {
    token: Arc<SecretString>,
    refresh_after: Instant,
}

/// A token of the federation's identity, and whether it came from the cache (a refused cached
/// token is worth one fresh try).
#[derive(Clone)]
pub struct AadToken {
    /// The bearer token.
    pub token: Arc<SecretString>,
    /// Whether it was reused rather than fetched for this request.
    pub cached: bool,
}

impl fmt::Debug for AadToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AadToken")
            .field("cached", &self.cached)
            .finish_non_exhaustive()
    }
}

/// A store's identity: its HTTP client, token endpoint, proof, and token cache.
pub struct AzureConn {
    pub(crate) http: reqwest::Client,
    token_url: Url,
    #[cfg_attr(not(feature = "acr"), allow(dead_code))]
    pub(crate) tenant_id: String,
    client_id: String,
    proof: Proof,
    /// `{acrAudience}/.default`.
    #[cfg_attr(not(feature = "acr"), allow(dead_code))]
    pub(crate) acr_scope: String,
    /// Overrides `https://{registry}/` for ACR calls.
    #[cfg_attr(not(feature = "acr"), allow(dead_code))]
    pub(crate) acr_endpoint: Option<Url>,
    /// Overrides `https://{vault}/` for Key Vault calls.
    #[cfg_attr(not(feature = "keyvault"), allow(dead_code))]
    pub(crate) key_vault_endpoint: Option<Url>,
    /// Tokens by scope. The lock is held while one is fetched: concurrent mints on one store
    /// wait for that token rather than each asking Entra ID.
    tokens: tokio::sync::Mutex<HashMap<String, Cached>>,
}

impl fmt::Debug for AzureConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureConn")
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// What Entra ID answers (the fields used). `expires_in` is a number on the v2.0 endpoint,
/// a string on some older ones.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: serde_json::Value,
}

/// What an Entra ID error says (`{"error": "invalid_client", "error_description": "AADSTS..."}`).
#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
    #[serde(default)]
    error_description: String,
}

impl AzureConn {
    /// Prepares the connection (nothing is read or fetched until first use).
    pub fn new(p: &AzureProvider) -> Result<Self, SpecError> {
        p.validate()?;
        let timeout = p
            .timeout
            .map_or(crate::http::DEFAULT_TIMEOUT, HumanDuration::get);
        let proof = match (&p.client_secret, &p.workload_identity) {
            (Some(secret), _) => Proof::Secret(secret.clone()),
            (None, Some(wi)) => Proof::Assertion(wi.token_file.clone()),
            (None, None) => {
                return Err(SpecError::field(
                    "provider.azure",
                    "set exactly one of `clientSecret` or `workloadIdentity`",
                ));
            }
        };
        Ok(AzureConn {
            http: crate::http::client(p.ca_bundle.as_deref(), timeout, "provider.azure.caBundle")?,
            token_url: p.token_url()?,
            tenant_id: p.tenant_id.clone(),
            client_id: p.client_id.clone(),
            proof,
            acr_scope: p.acr_scope()?,
            acr_endpoint: p.acr_endpoint()?,
            key_vault_endpoint: p.key_vault_endpoint()?,
            tokens: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// A token of the federation for `scope`: the cached one while it has more than five
    /// minutes left, else a fresh one.
    pub async fn token(&self, scope: &str) -> Result<AadToken, BackendError> {
        let mut tokens = self.tokens.lock().await;
        if let Some(c) = tokens.get(scope)
            && Instant::now() < c.refresh_after
        {
            return Ok(AadToken {
                token: c.token.clone(),
                cached: true,
            });
        }
        tokens.remove(scope);
        let (token, lives) = self.fetch(scope).await?;
        let token = Arc::new(token);
        if let Some(left) = lives.min(MAX_KEPT).checked_sub(REFRESH_MARGIN) {
            tokens.insert(
                scope.to_owned(),
                Cached {
                    token: token.clone(),
                    refresh_after: Instant::now() + left,
                },
            );
        }
        Ok(AadToken {
            token,
            cached: false,
        })
    }

    /// Drops `token` from the cache (a backend refused it), unless it was replaced already.
    pub async fn forget(&self, scope: &str, token: &AadToken) {
        let mut tokens = self.tokens.lock().await;
        if tokens
            .get(scope)
            .is_some_and(|c| Arc::ptr_eq(&c.token, &token.token))
        {
            tokens.remove(scope);
        }
    }

    /// Sends the request `build` makes with a token for `scope` (given the token's text).
    /// When `backend` answers 401 to a cached token (revoked, or the identity's roles changed
    /// since), the token is dropped and the request sent once more with a fresh one.
    #[cfg(any(feature = "acr", feature = "keyvault"))]
    pub(crate) async fn send_with_token(
        &self,
        scope: &str,
        backend: &str,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), BackendError> {
        let mut aad = self.token(scope).await?;
        let mut retried = false;
        loop {
            let req = build(aad.token.expose_secret());
            let (status, body) = crate::http::send(backend, req).await?;
            if status == reqwest::StatusCode::UNAUTHORIZED && aad.cached && !retried {
                self.forget(scope, &aad).await;
                tracing::debug!("{backend} refused a cached Entra ID token; fetching a fresh one");
                aad = self.token(scope).await?;
                retried = true;
                continue;
            }
            return Ok((status, body));
        }
    }

    /// The federated token file: `tokenFile`, else the one the environment names.
    fn assertion_file(
        explicit: Option<&PathBuf>,
        env: impl FnOnce(&str) -> Option<String>,
    ) -> Result<SecretRef, BackendError> {
        if let Some(file) = explicit {
            return Ok(SecretRef::file(file));
        }
        match env(FEDERATED_TOKEN_FILE_ENV).filter(|v| !v.is_empty()) {
            Some(path) => Ok(SecretRef::file(path)),
            None => Err(BackendError::Unavailable {
                message: "the federation's Azure workload identity is not set up".to_owned(),
                detail: format!(
                    "{BACKEND}: workloadIdentity has no tokenFile and {FEDERATED_TOKEN_FILE_ENV} \
                     is not set in the federation's environment"
                ),
            }),
        }
    }

    /// One client credentials request; the token and how long Entra ID says it lives.
    async fn fetch(&self, scope: &str) -> Result<(SecretString, Duration), BackendError> {
        // Read on every request: a rotated secret, and the kubelet's refreshed federated token,
        // are picked up without a restart.
        let secret = match &self.proof {
            Proof::Secret(r) => r.read()?,
            Proof::Assertion(file) => {
                Self::assertion_file(file.as_ref(), |k| std::env::var(k).ok())?
                    .read_for(Some(Owner::Azure))?
            }
        };
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "client_credentials"),
            ("client_id", &self.client_id),
            ("scope", scope),
        ];
        match &self.proof {
            Proof::Secret(_) => form.push(("client_secret", secret.expose_secret())),
            Proof::Assertion(_) => {
                form.push(("client_assertion_type", JWT_BEARER_ASSERTION));
                form.push(("client_assertion", secret.expose_secret()));
            }
        }
        let req = self
            .http
            .post(self.token_url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form);
        let (status, body) = crate::http::send(BACKEND, req).await?;
        if status != reqwest::StatusCode::OK {
            return Err(aad_error(status, &body));
        }
        let answer: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| BackendError::Unavailable {
                message: "Microsoft Entra ID's answer could not be read".to_owned(),
                detail: format!(
                    "{BACKEND}: token answer: {}",
                    esi_api::json::without_values(&e.to_string())
                ),
            })?;
        let lives = match &answer.expires_in {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        }
        .ok_or_else(|| BackendError::Unavailable {
            message: "Microsoft Entra ID's answer could not be read".to_owned(),
            detail: format!("{BACKEND}: token answer: expires_in is not a number of seconds"),
        })?;
        if answer.access_token.is_empty() {
            return Err(BackendError::Unavailable {
                message: "Microsoft Entra ID's answer could not be read".to_owned(),
                detail: format!("{BACKEND}: token answer: empty access_token"),
            });
        }
        Ok((
            SecretString::from(answer.access_token),
            Duration::from_secs(lives),
        ))
    }
}

/// The error of an Entra ID answer other than success. Every refusal is the federation's
/// configuration (the caller has no part in this request): its tenant, client, secret or
/// federated credential. Entra ID's own description (`AADSTS...`) goes to the log only.
fn aad_error(status: reqwest::StatusCode, body: &[u8]) -> BackendError {
    let said = serde_json::from_slice::<ErrorResponse>(body)
        .map(|e| format!("{}: {}", e.error, e.error_description))
        .unwrap_or_else(|_| "no readable error".to_owned());
    let summary: String = said.chars().take(400).collect();
    if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
        return BackendError::Unavailable {
            message: "Microsoft Entra ID refused the federation's Azure credentials".to_owned(),
            detail: format!("{BACKEND} token request: {}: {summary}", status.as_u16()),
        };
    }
    crate::http::status_error(BACKEND, status, &format!("token request: {summary}"))
}

/// The `azure` store a generator was built with (see `crate::store::require`).
#[cfg(any(feature = "acr", feature = "keyvault"))]
pub(crate) fn require_store<'a>(
    store: Option<&'a crate::SecretStoreSpec>,
    reference: &crate::SecretStoreRef,
) -> Result<&'a AzureProvider, SpecError> {
    crate::store::require(store, reference, "azure", |p| match p {
        crate::StoreProvider::Azure(a) => Some(a),
        #[allow(unreachable_patterns)]
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const CLIENT: &str = "3c1b7e2a-5d4f-4e8b-9a61-0f2d8c7b6e15";

    fn provider() -> AzureProvider {
        AzureProvider {
            tenant_id: TENANT.into(),
            client_id: CLIENT.into(),
            client_secret: Some(SecretRef::env("AZURE_CLIENT_SECRET")),
            workload_identity: None,
            authority_host: None,
            acr_audience: None,
            acr_endpoint: None,
            key_vault_endpoint: None,
            ca_bundle: None,
            timeout: None,
        }
    }

    #[test]
    fn the_token_url_and_scope_follow_the_authority_and_audience() {
        let p = provider();
        assert_eq!(
            p.token_url().unwrap().as_str(),
            format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token")
        );
        assert_eq!(
            p.acr_scope().unwrap(),
            "https://containerregistry.azure.net/.default"
        );
        let gov = AzureProvider {
            authority_host: Some("https://login.microsoftonline.us".into()),
            tenant_id: "contoso.onmicrosoft.us".into(),
            acr_audience: Some("https://management.usgovcloudapi.net/".into()),
            ..provider()
        };
        assert_eq!(
            gov.token_url().unwrap().as_str(),
            "https://login.microsoftonline.us/contoso.onmicrosoft.us/oauth2/v2.0/token"
        );
        assert_eq!(
            gov.acr_scope().unwrap(),
            "https://management.usgovcloudapi.net/.default"
        );
        let local = AzureProvider {
            authority_host: Some("http://127.0.0.1:9/".into()),
            ..provider()
        };
        assert!(local.validate().is_ok());
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases: Vec<(AzureProvider, &str)> = vec![
            (
                AzureProvider {
                    tenant_id: "../common".into(),
                    ..provider()
                },
                "provider.azure.tenantId",
            ),
            (
                AzureProvider {
                    client_id: "my-app".into(),
                    ..provider()
                },
                "provider.azure.clientId",
            ),
            (
                AzureProvider {
                    client_secret: None,
                    ..provider()
                },
                "exactly one of `clientSecret` or `workloadIdentity`",
            ),
            (
                AzureProvider {
                    workload_identity: Some(WorkloadIdentity::default()),
                    ..provider()
                },
                "exactly one of `clientSecret` or `workloadIdentity`",
            ),
            (
                AzureProvider {
                    client_secret: Some(SecretRef::env("ESI_LEASE_KEYS")),
                    ..provider()
                },
                "provider.azure.clientSecret.env",
            ),
            (
                AzureProvider {
                    client_secret: None,
                    workload_identity: Some(WorkloadIdentity {
                        token_file: Some("/proc/self/environ".into()),
                    }),
                    ..provider()
                },
                "provider.azure.workloadIdentity.tokenFile",
            ),
            (
                AzureProvider {
                    authority_host: Some("http://login.example/".into()),
                    ..provider()
                },
                "provider.azure.authorityHost",
            ),
            (
                AzureProvider {
                    acr_audience: Some("containerregistry".into()),
                    ..provider()
                },
                "provider.azure.acrAudience",
            ),
            (
                AzureProvider {
                    acr_endpoint: Some("http://10.0.0.1:8080".into()),
                    ..provider()
                },
                "provider.azure.acrEndpoint",
            ),
            (
                AzureProvider {
                    key_vault_endpoint: Some("http://vault.example/".into()),
                    ..provider()
                },
                "provider.azure.keyVaultEndpoint",
            ),
            (
                AzureProvider {
                    timeout: Some(HumanDuration::from_secs(0)),
                    ..provider()
                },
                "provider.azure.timeout",
            ),
        ];
        for (p, says) in cases {
            let err = p.validate().unwrap_err().to_string();
            assert!(err.contains(says), "{p:?}: {err}");
        }
    }

    #[test]
    fn stores_round_trip_and_unknown_keys_are_refused() {
        let j = serde_json::json!({"provider": {"azure": {
            "tenantId": TENANT,
            "clientId": CLIENT,
            "workloadIdentity": {"tokenFile": "/var/run/secrets/azure/tokens/azure-identity-token"},
            "authorityHost": "https://login.microsoftonline.us/",
            "acrAudience": "https://containerregistry.azure.net",
            "timeout": "5s"
        }}});
        let store = crate::SecretStoreSpec::from_manifest(j).unwrap();
        assert_eq!(
            crate::SecretStoreSpec::from_manifest(serde_json::to_value(&store).unwrap()).unwrap(),
            store
        );
        for (bad, says) in [
            (
                serde_json::json!({"tenantId": TENANT, "clientId": CLIENT, "clientSecret": {"env": "S"}, "secret": "inline"}),
                "unknown field `secret`",
            ),
            (
                serde_json::json!({"tenantId": TENANT, "clientId": CLIENT, "workloadIdentity": {"audience": "x"}}),
                "unknown field `audience`",
            ),
            (
                serde_json::json!({"tenantId": TENANT, "clientId": CLIENT, "clientSecret": {"value": "inline"}}),
                "unknown field `value`",
            ),
        ] {
            let err = crate::SecretStoreSpec::from_manifest(
                serde_json::json!({"provider": {"azure": bad}}),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn the_federated_token_file_defaults_to_the_environments() {
        let explicit = PathBuf::from("/var/run/secrets/azure/token");
        let r = AzureConn::assertion_file(Some(&explicit), |_| None).unwrap();
        assert_eq!(r, SecretRef::file(&explicit));
        let r = AzureConn::assertion_file(None, |k| {
            (k == FEDERATED_TOKEN_FILE_ENV).then(|| "/azure/token".to_owned())
        })
        .unwrap();
        assert_eq!(r, SecretRef::file("/azure/token"));
        let e = AzureConn::assertion_file(None, |_| None).unwrap_err();
        assert!(e.detail().contains(FEDERATED_TOKEN_FILE_ENV), "{e:?}");
        assert!(matches!(e, BackendError::Unavailable { .. }));
    }

    #[test]
    fn entra_refusals_are_the_federations_and_say_why_in_the_log_only() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#;
        for status in [400, 401] {
            let e = aad_error(reqwest::StatusCode::from_u16(status).unwrap(), body);
            assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
            assert!(!e.to_string().contains("AADSTS"), "{e}");
            assert!(e.detail().contains("AADSTS7000215"), "{}", e.detail());
        }
        let e = aad_error(reqwest::StatusCode::SERVICE_UNAVAILABLE, b"<html>");
        assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
        assert!(e.detail().contains("no readable error"), "{}", e.detail());
    }
}
