//! The `azure` SecretStore provider: the federation's own Microsoft Entra ID (Azure AD)
//! identity, an app registration or a managed identity, and the tokens it obtains.
//! `ACRAccessToken` (feature `acr`) and `AzureKeyVaultSecret` (feature `keyvault`) use it; each
//! asks for a token of its own audience (scope), so a token meant for one service is never
//! shown to the other.
//!
//! The identity proves itself with one of:
//!
//! - `clientSecret`: a client secret, read through a [`SecretRef`] (its environment or a file,
//!   never the manifest) on every token request, so a rotated secret needs no restart;
//! - `workloadIdentity`: a federated token (Azure Workload Identity: a projected Kubernetes
//!   ServiceAccount token trusted by a federated identity credential), sent as a
//!   `client_assertion`. The file is `tokenFile`, else the one `AZURE_FEDERATED_TOKEN_FILE`
//!   names (the variable the Azure Workload Identity webhook sets); it is re-read on every
//!   token request, as Azure's SDKs do, since the kubelet rotates it. With `selfIssued`, the
//!   federation signs the token itself with its own OIDC issuer instead (`sub`
//!   `esi-federation`, `aud` `api://AzureADTokenExchange`), for a federated identity
//!   credential trusting that issuer and subject: no secret wherever it runs;
//! - `managedIdentity`: the managed identity of the Azure resource the federation runs on (a
//!   VM or scale set, an AKS node pool's kubelet identity, App Service, Functions, Container
//!   Apps); no secret at all. See below.
//!
//! With a secret or a federated token, a token request is
//! `POST {authorityHost}{tenantId}/oauth2/v2.0/token` with `grant_type=client_credentials`,
//! `client_id`, `scope` and the proof.
//!
//! With a managed identity, the platform's local token endpoint is asked instead, with the
//! scope's resource (the scope without its `/.default`: managed identity endpoints speak Entra
//! ID's v1 protocol) and, for a user-assigned identity, its `clientId`
//! (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token>,
//! <https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference>):
//!
//! - when the federation's environment sets `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` (App
//!   Service, Functions, Container Apps), `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=...`
//!   with the header `X-IDENTITY-HEADER: {IDENTITY_HEADER}` (a secret the platform rotates: read
//!   on every request, never logged);
//! - else the Azure Instance Metadata Service (IMDS) of a VM or scale set (AKS nodes):
//!   `GET http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=...`
//!   with `Metadata: true` (IMDS refuses a request without it, so a forged request relayed by
//!   some server-side request forgery cannot get a token).
//!
//! Both answer `{"access_token", "expires_on", "resource", "token_type", ...}` with every value
//! a string (`expires_on` is seconds since the epoch, as text). Neither is reached through a
//! proxy (IMDS is only on the host's own link-local address). As IMDS's guidance says, 404
//! (IMDS updating), 408, 410 (IMDS being upgraded), 429 (throttled) and 5xx are tried again, at
//! most three times, 1 s, 2 s then 4 s apart, and never past the store's `timeout` since the
//! first try (a mint waits that long at most; the caller's own retry takes over after). Azure
//! Arc and Service Fabric managed identities use other protocols and are refused, said so.
//!
//! Every token is the federation's own, not the caller's: it is kept per store and scope and
//! reused until five minutes before it expires (Azure's SDKs refresh at the same point), so a
//! mint costs no Entra ID round trip. A token a backend refuses is dropped and fetched again
//! once (a managed identity's endpoint keeps tokens of its own, so it may answer the same one,
//! and the request then fails as refused).
//!
//! ```yaml
//! kind: SecretStore
//! spec:
//!   provider:
//!     azure:
//!       tenantId: 72f988bf-86f1-41af-91ab-2d7cd011db47
//!       clientId: 3c1b7e2a-5d4f-4e8b-9a61-0f2d8c7b6e15
//!       workloadIdentity: {}            # or clientSecret: {env: AZURE_CLIENT_SECRET}
//!                                       # or managedIdentity: {} (clientId: a user-assigned
//!                                       # identity's; leave it out for the system-assigned one)
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
use crate::identity::Issuer;
use crate::secret::Owner;
use crate::{BackendError, SecretRef, SpecError};

const BACKEND: &str = "Microsoft Entra ID";

/// Entra ID's public cloud authority. The sovereign clouds have their own:
/// `https://login.microsoftonline.us/` (Azure Government), `https://login.chinacloudapi.cn/`
/// (Azure operated by 21Vianet).
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com/";

/// Entra ID's token endpoint of `tenant`: `{authority}{tenant}/oauth2/v2.0/token`, the
/// authority `authority_host` (the manifest's `field`) or the public cloud's.
pub(crate) fn token_url(
    authority_host: Option<&str>,
    tenant: &str,
    field: &str,
) -> Result<Url, SpecError> {
    let base = crate::http::base_url(authority_host.unwrap_or(DEFAULT_AUTHORITY_HOST), field)?;
    base.join(&format!("{tenant}/oauth2/v2.0/token"))
        .map_err(|e| SpecError::field(field, format!("cannot name the token endpoint: {e}")))
}
/// The variable naming the federated token file, set by the Azure Workload Identity webhook.
pub const FEDERATED_TOKEN_FILE_ENV: &str = "AZURE_FEDERATED_TOKEN_FILE";
/// How a federated token is presented (RFC 7521).
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Audience of the token ACR's `/oauth2/exchange` accepts that grants nothing beyond ACR: every
/// registry takes it, including those set to refuse ARM-audience tokens, and it is the same in
/// every cloud (Azure's SDKs ask for it in Azure Government and Azure in China too).
pub const DEFAULT_ACR_AUDIENCE: &str = "https://containerregistry.azure.net";
/// IMDS's token endpoint (a link-local address on every Azure VM and scale set instance).
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
/// The IMDS API version of the token request (the one Azure's SDKs use).
pub const IMDS_API_VERSION: &str = "2018-02-01";
/// The App Service / Functions / Container Apps token endpoint's API version.
pub const APP_SERVICE_API_VERSION: &str = "2019-08-01";
/// The variable holding the App Service managed identity endpoint's URL.
pub const IDENTITY_ENDPOINT_ENV: &str = "IDENTITY_ENDPOINT";
/// The variable holding the secret the App Service endpoint expects in `X-IDENTITY-HEADER`.
pub const IDENTITY_HEADER_ENV: &str = "IDENTITY_HEADER";
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
    /// Required with `clientSecret` and `workloadIdentity`; with `managedIdentity`, the
    /// user-assigned identity to use, or unset for the resource's system-assigned identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// A client secret of the app registration. Exactly one of `clientSecret`,
    /// `workloadIdentity` and `managedIdentity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<SecretRef>,
    /// Azure Workload Identity: a federated token presented as a client assertion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity: Option<WorkloadIdentity>,
    /// The managed identity of the Azure resource the federation runs on: tokens from IMDS
    /// (VMs, scale sets, AKS nodes), or from the endpoint `IDENTITY_ENDPOINT` names when the
    /// environment sets it and `IDENTITY_HEADER` (App Service, Functions, Container Apps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_identity: Option<ManagedIdentity>,
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

/// Azure Workload Identity: where the federated token is read, or that the federation signs
/// it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadIdentity {
    /// The federated token's file; default the file `AZURE_FEDERATED_TOKEN_FILE` names in the
    /// federation's environment. Re-read on every token request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Present a token the federation signs for itself with its own OIDC issuer instead of a
    /// file: `sub` `esi-federation`, `aud` `api://AzureADTokenExchange`, five minutes. The app
    /// registration or managed identity trusts it with a federated identity credential of the
    /// federation's issuer URL and that subject. No secret, wherever the federation runs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub self_issued: bool,
}

/// The audience Entra ID expects of federated tokens (a federated identity credential's
/// default).
pub const FEDERATED_TOKEN_AUDIENCE: &str = "api://AzureADTokenExchange";

/// A managed identity: where its tokens are asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagedIdentity {
    /// An IMDS token endpoint to ask instead of IMDS's own
    /// (`http://169.254.169.254/metadata/identity/oauth2/token`), for a local fake in tests;
    /// when set, the environment's `IDENTITY_ENDPOINT` is not consulted. `http://` only for
    /// a loopback address or IMDS's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// Whether `s` is a GUID in its usual text form (`8-4-4-4-12` hex digits).
pub(crate) fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `s` is a DNS name of two labels or more (a tenant's verified domain,
/// `contoso.onmicrosoft.com`).
pub(crate) fn is_dns_name(s: &str) -> bool {
    s.split('.').count() >= 2 && crate::is_host_name(s)
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
        if let Some(id) = &self.client_id
            && !is_guid(id)
        {
            return Err(SpecError::field(
                "provider.azure.clientId",
                format!("{id:?} is not an application (client) ID (a GUID)"),
            ));
        }
        match (
            &self.client_secret,
            &self.workload_identity,
            &self.managed_identity,
        ) {
            (Some(secret), None, None) => secret.validate("provider.azure.clientSecret")?,
            (None, Some(wi), None) => {
                if wi.self_issued && wi.token_file.is_some() {
                    return Err(SpecError::field(
                        "provider.azure.workloadIdentity.selfIssued",
                        "set tokenFile or selfIssued, not both",
                    ));
                }
                if let Some(file) = &wi.token_file {
                    crate::secret::validate_file(
                        file,
                        "provider.azure.workloadIdentity.tokenFile",
                        Some(Owner::Azure),
                    )?;
                }
            }
            (None, None, Some(_)) => {
                self.msi_endpoint()?;
            }
            _ => return Err(SpecError::field("provider.azure", ONE_PROOF)),
        }
        if self.client_id.is_none() && self.managed_identity.is_none() {
            return Err(SpecError::field(
                "provider.azure.clientId",
                "is required with `clientSecret` and `workloadIdentity` (only a managed \
                 identity may leave it out, for the system-assigned one)",
            ));
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
        token_url(
            self.authority_host.as_deref(),
            &self.tenant_id,
            "provider.azure.authorityHost",
        )
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

    /// `managedIdentity.endpoint`, checked: `https://`, or `http://` only for a loopback
    /// address (a local fake) or IMDS's own; no query, fragment or user info.
    fn msi_endpoint(&self) -> Result<Option<Url>, SpecError> {
        let field = "provider.azure.managedIdentity.endpoint";
        let Some(text) = self
            .managed_identity
            .as_ref()
            .and_then(|m| m.endpoint.as_deref())
        else {
            return Ok(None);
        };
        crate::http::endpoint_url(
            text,
            field,
            |ip| ip.is_loopback() || ip == std::net::IpAddr::from([169, 254, 169, 254]),
            "a loopback address or IMDS's 169.254.169.254",
        )
        .map(Some)
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

/// What the validation of the three proofs says when not exactly one is set.
const ONE_PROOF: &str =
    "set exactly one of `clientSecret`, `workloadIdentity` or `managedIdentity`";

/// How the identity proves itself to Entra ID.
#[derive(Clone)]
enum Proof {
    Secret(SecretRef),
    /// The federated token's file; `None` for the one the environment names.
    Assertion(Option<PathBuf>),
    /// A token the federation signs for itself, with its issuer (`None` where the
    /// configuration is only checked).
    SelfIssued(Option<Arc<Issuer>>),
    /// A managed identity.
    ManagedIdentity(Msi),
}

/// A managed identity's endpoint and client.
#[derive(Clone)]
struct Msi {
    /// IMDS's token endpoint, or the one given instead.
    imds: Url,
    /// Whether `imds` was given (then the environment's `IDENTITY_ENDPOINT` is not used).
    explicit: bool,
    /// No proxy (IMDS and the App Service endpoint are the host's own), no redirect.
    http: reqwest::Client,
}

/// Where a managed identity's token is asked for, as the environment says.
enum MsiSource {
    /// IMDS (or a fake of it) at this URL.
    Imds(Url),
    /// The App Service endpoint, and the secret it expects in `X-IDENTITY-HEADER`.
    AppService(Url, SecretString),
}

impl MsiSource {
    fn name(&self) -> &'static str {
        match self {
            MsiSource::Imds(_) => "Azure Instance Metadata Service",
            MsiSource::AppService(..) => "the App Service managed identity endpoint",
        }
    }
}

/// Reads the federation's environment (a test gives its own).
type EnvReader = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

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
    client_id: Option<String>,
    proof: Proof,
    /// How long the first retry of a managed identity request waits (doubled for each next).
    msi_retry_base: Duration,
    /// The store's `timeout`: a managed identity request is not tried again past it.
    timeout: Duration,
    /// The federation's environment.
    env: EnvReader,
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
    /// ACR refresh tokens by registry (see `crate::acr_access_token`).
    #[cfg(feature = "acr")]
    pub(crate) acr_refresh_tokens: crate::acr_access_token::RefreshTokens,
}

impl fmt::Debug for AzureConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proof = match &self.proof {
            Proof::Secret(_) => "clientSecret",
            Proof::Assertion(_) => "workloadIdentity",
            Proof::SelfIssued(_) => "workloadIdentity.selfIssued",
            Proof::ManagedIdentity(_) => "managedIdentity",
        };
        f.debug_struct("AzureConn")
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.client_id)
            .field("proof", &proof)
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

impl AzureConn {
    /// Prepares the connection (nothing is read or fetched until first use), where the
    /// federation's issuer is not known (a configuration only checked).
    pub fn new(p: &AzureProvider) -> Result<Self, SpecError> {
        Self::with_issuer(p, &crate::IssuerSlot::Unknown)
    }

    /// [`AzureConn::new`] on the federation's `issuer`, which `workloadIdentity.selfIssued`
    /// needs.
    pub(crate) fn with_issuer(
        p: &AzureProvider,
        issuer: &crate::IssuerSlot,
    ) -> Result<Self, SpecError> {
        p.validate()?;
        let timeout = p
            .timeout
            .map_or(crate::http::DEFAULT_TIMEOUT, HumanDuration::get);
        let proof = match (&p.client_secret, &p.workload_identity, &p.managed_identity) {
            (Some(secret), None, None) => Proof::Secret(secret.clone()),
            (None, Some(wi), None) if wi.self_issued => Proof::SelfIssued(
                issuer.for_build("an azure SecretStore presenting workloadIdentity.selfIssued")?,
            ),
            (None, Some(wi), None) => Proof::Assertion(wi.token_file.clone()),
            (None, None, Some(_)) => {
                let (imds, explicit) = match p.msi_endpoint()? {
                    Some(url) => (url, true),
                    None => (
                        Url::parse(IMDS_ENDPOINT).map_err(|e| {
                            SpecError::field("provider.azure.managedIdentity", e.to_string())
                        })?,
                        false,
                    ),
                };
                Proof::ManagedIdentity(Msi {
                    imds,
                    explicit,
                    http: msi_client(p.ca_bundle.as_deref(), timeout)?,
                })
            }
            _ => return Err(SpecError::field("provider.azure", ONE_PROOF)),
        };
        Ok(AzureConn {
            http: crate::http::client(p.ca_bundle.as_deref(), timeout, "provider.azure.caBundle")?,
            token_url: p.token_url()?,
            tenant_id: p.tenant_id.clone(),
            client_id: p.client_id.clone(),
            proof,
            msi_retry_base: Duration::from_secs(1),
            timeout,
            env: Arc::new(|k| std::env::var(k).ok()),
            acr_scope: p.acr_scope()?,
            acr_endpoint: p.acr_endpoint()?,
            key_vault_endpoint: p.key_vault_endpoint()?,
            tokens: tokio::sync::Mutex::new(HashMap::new()),
            #[cfg(feature = "acr")]
            acr_refresh_tokens: crate::acr_access_token::RefreshTokens::default(),
        })
    }

    /// Whether Entra ID (or the managed identity endpoint) gives the federation a token: one
    /// for the store's cloud's container registry scope, which every tenant's identities may
    /// ask for, as a check that the store's credential works.
    pub async fn whoami(&self) -> Result<String, BackendError> {
        self.token(&self.acr_scope).await?;
        let who = match (&self.proof, &self.client_id) {
            (Proof::ManagedIdentity(_), None) => "the system-assigned managed identity".to_owned(),
            (_, Some(id)) => format!("client {id:?}"),
            (_, None) => "the default client".to_owned(),
        };
        Ok(format!(
            "obtained a Microsoft Entra ID token as {who} of tenant {:?} (scope {})",
            self.tenant_id, self.acr_scope
        ))
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
        env: &dyn Fn(&str) -> Option<String>,
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

    /// A token for `scope` and how long it lives: from Entra ID, or from the managed
    /// identity's endpoint.
    async fn fetch(&self, scope: &str) -> Result<(SecretString, Duration), BackendError> {
        // Read on every request: a rotated secret, and the kubelet's refreshed federated token,
        // are picked up without a restart.
        match &self.proof {
            Proof::ManagedIdentity(msi) => self.fetch_msi(msi, scope).await,
            Proof::Secret(r) => {
                let secret = r.read()?;
                self.fetch_aad(scope, &[("client_secret", secret.expose_secret())])
                    .await
            }
            Proof::SelfIssued(issuer) => {
                let assertion =
                    crate::identity::own_login_token(issuer.as_ref(), FEDERATED_TOKEN_AUDIENCE)?;
                self.fetch_aad(
                    scope,
                    &[
                        ("client_assertion_type", JWT_BEARER_ASSERTION),
                        ("client_assertion", assertion.expose_secret()),
                    ],
                )
                .await
            }
            Proof::Assertion(file) => {
                let assertion = Self::assertion_file(file.as_ref(), &*self.env)?
                    .read_for(Some(Owner::Azure))?;
                self.fetch_aad(
                    scope,
                    &[
                        ("client_assertion_type", JWT_BEARER_ASSERTION),
                        ("client_assertion", assertion.expose_secret()),
                    ],
                )
                .await
            }
        }
    }

    /// One client credentials request with `proof`'s fields; the token and how long Entra ID
    /// says it lives.
    async fn fetch_aad(
        &self,
        scope: &str,
        proof: &[(&str, &str)],
    ) -> Result<(SecretString, Duration), BackendError> {
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_deref().unwrap_or_default()),
            ("scope", scope),
        ];
        form.extend_from_slice(proof);
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

    /// Where the managed identity's tokens come from: the `endpoint` given (as IMDS), else the
    /// App Service endpoint when the environment names one, else IMDS.
    fn msi_source(
        msi: &Msi,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<MsiSource, BackendError> {
        if msi.explicit {
            return Ok(MsiSource::Imds(msi.imds.clone()));
        }
        let var = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let not_set_up = |detail: String| BackendError::Unavailable {
            message: "the federation's Azure managed identity is not set up".to_owned(),
            detail: format!("managed identity: {detail}"),
        };
        match (var(IDENTITY_ENDPOINT_ENV), var(IDENTITY_HEADER_ENV)) {
            (Some(_), Some(_)) if var("IDENTITY_SERVER_THUMBPRINT").is_some() => Err(not_set_up(
                "IDENTITY_SERVER_THUMBPRINT is set: a Service Fabric managed identity, which \
                 the azure store does not support"
                    .to_owned(),
            )),
            (Some(endpoint), Some(header)) => {
                let url = app_service_endpoint(&endpoint)
                    .map_err(|why| not_set_up(format!("{IDENTITY_ENDPOINT_ENV} {why}")))?;
                Ok(MsiSource::AppService(url, SecretString::from(header)))
            }
            (Some(_), None) if var("IMDS_ENDPOINT").is_some() => Err(not_set_up(format!(
                "{IDENTITY_ENDPOINT_ENV} and IMDS_ENDPOINT are set without \
                 {IDENTITY_HEADER_ENV}: an Azure Arc managed identity, which the azure store \
                 does not support"
            ))),
            _ => Ok(MsiSource::Imds(msi.imds.clone())),
        }
    }

    /// A managed identity's token for `scope`, from IMDS or the App Service endpoint; 404
    /// (IMDS only), 408, 410 (IMDS only), 429 and 5xx tried again as IMDS's guidance says, at
    /// most three times and within the store's `timeout`.
    async fn fetch_msi(
        &self,
        msi: &Msi,
        scope: &str,
    ) -> Result<(SecretString, Duration), BackendError> {
        let source = Self::msi_source(msi, &*self.env)?;
        let backend = source.name();
        let resource = resource_of(scope).ok_or_else(|| BackendError::Unavailable {
            message: "the federation's Azure managed identity cannot ask for this token".to_owned(),
            detail: format!(
                "managed identity: scope {scope:?} is not `{{resource}}/.default`, the only \
                 kind a managed identity endpoint (Entra ID v1) can name"
            ),
        })?;
        let (endpoint, api_version) = match &source {
            MsiSource::Imds(url) => (url, IMDS_API_VERSION),
            MsiSource::AppService(url, _) => (url, APP_SERVICE_API_VERSION),
        };
        let mut url = endpoint.clone();
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("api-version", api_version)
                .append_pair("resource", resource);
            if let Some(id) = &self.client_id {
                query.append_pair("client_id", id);
            }
        }
        let started = Instant::now();
        let mut delay = self.msi_retry_base;
        let mut retries = 0;
        loop {
            let req = msi
                .http
                .get(url.clone())
                .header(reqwest::header::ACCEPT, "application/json");
            let req = match &source {
                MsiSource::Imds(_) => req.header("Metadata", "true"),
                MsiSource::AppService(_, secret) => {
                    let mut value = reqwest::header::HeaderValue::from_str(secret.expose_secret())
                        .map_err(|_| BackendError::Unavailable {
                            message: "the federation's Azure managed identity is not set up"
                                .to_owned(),
                            detail: format!(
                                "managed identity: {IDENTITY_HEADER_ENV} is not a valid header \
                                 value"
                            ),
                        })?;
                    value.set_sensitive(true);
                    req.header("X-IDENTITY-HEADER", value)
                }
            };
            let (status, body) = crate::http::send(backend, req).await?;
            if status == reqwest::StatusCode::OK {
                return msi_answer(backend, &body);
            }
            let code = status.as_u16();
            let imds = matches!(source, MsiSource::Imds(_));
            let transient = matches!(code, 408 | 429)
                || status.is_server_error()
                || (imds && matches!(code, 404 | 410));
            if transient && retries < 3 && started.elapsed() + delay < self.timeout {
                tracing::debug!(
                    status = code,
                    "{backend} answered a token request with {code}; trying again in {delay:?}"
                );
                tokio::time::sleep(delay).await;
                delay *= 2;
                retries += 1;
                continue;
            }
            return Err(msi_error(backend, status, &body));
        }
    }
}

/// A scope's resource, as managed identity endpoints (Entra ID's v1 protocol) name it: the
/// scope without its `/.default` (`https://vault.azure.net/.default` is
/// `https://vault.azure.net`). Other scopes have no v1 form.
fn resource_of(scope: &str) -> Option<&str> {
    scope
        .strip_suffix("/.default")
        .filter(|r| !r.is_empty() && !r.contains(char::is_whitespace))
}

/// The client for a managed identity's endpoint. No proxy: IMDS is only on the host's own
/// link-local address and the App Service endpoint is the host's or its sandbox's (Azure:
/// "IMDS is not intended to be used behind a proxy").
fn msi_client(ca_bundle: Option<&str>, timeout: Duration) -> Result<reqwest::Client, SpecError> {
    crate::http::build_client(ca_bundle, timeout, "provider.azure.caBundle", |b| {
        b.no_proxy()
    })
}

/// Whether `ip` is the host's own or its private network's: loopback, link-local, private
/// (RFC 1918) or unique local (IPv6).
fn is_local(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_private(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// `IDENTITY_ENDPOINT`, checked: the platform sets it to its local token service
/// (`http://127.0.0.1:41741/MSI/token/` on Windows App Service, `http://localhost:42356/msi/token`
/// on Container Apps, a private address such as `http://172.16.5.3:8081/msi/token/` in a
/// Linux App Service container), so `http://` is taken only to a loopback, link-local or
/// private address, never to a public one or a DNS name. The error reads after the variable's
/// name.
fn app_service_endpoint(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("is not a URL: {e}"))?;
    let allowed = match url.scheme() {
        "https" => url.host().is_some(),
        "http" => crate::http::host_ip(&url).is_some_and(is_local),
        _ => false,
    };
    if !allowed
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(format!(
            "{text:?} is not an https:// URL, nor an http:// one to a loopback, link-local or \
             private address"
        ));
    }
    Ok(url)
}

/// What a managed identity endpoint answers (the fields used). Every value is a string,
/// `expires_on` too (seconds since the epoch); a number is taken as well.
#[derive(Deserialize)]
struct MsiTokenResponse {
    access_token: String,
    expires_on: serde_json::Value,
}

/// A managed identity endpoint's token and how long it lives (from its `expires_on`).
fn msi_answer(backend: &str, body: &[u8]) -> Result<(SecretString, Duration), BackendError> {
    let unreadable = |what: &str| BackendError::Unavailable {
        message: "the Azure managed identity endpoint's answer could not be read".to_owned(),
        detail: format!("{backend}: token answer: {what}"),
    };
    let answer: MsiTokenResponse = serde_json::from_slice(body)
        .map_err(|e| unreadable(&esi_api::json::without_values(&e.to_string())))?;
    let expires_on = match &answer.expires_on {
        serde_json::Value::String(s) => s.trim().parse::<i64>().ok(),
        serde_json::Value::Number(n) => n.as_i64(),
        _ => None,
    }
    .ok_or_else(|| unreadable("expires_on is not a number of seconds since the epoch"))?;
    let lives = expires_on
        .checked_sub(jiff::Timestamp::now().as_second())
        .and_then(|left| u64::try_from(left).ok())
        .filter(|&left| left > 0)
        .ok_or_else(|| unreadable("the token expired already (expires_on is past)"))?;
    if answer.access_token.is_empty() {
        return Err(unreadable("empty access_token"));
    }
    Ok((
        SecretString::from(answer.access_token),
        Duration::from_secs(lives),
    ))
}

/// The error of a managed identity endpoint's answer other than success: unavailable, the
/// federation's setup (an identity not assigned to the resource, a wrong `clientId`) or the
/// platform's trouble, never the caller's. What the endpoint said goes to the log only.
fn msi_error(backend: &str, status: reqwest::StatusCode, body: &[u8]) -> BackendError {
    let said = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
            // IMDS: {"error", "error_description"}; App Service: {"statusCode", "message"}.
            match (text("error"), text("error_description"), text("message")) {
                (Some(e), d, _) => Some(format!("{e}: {}", d.unwrap_or_default())),
                (None, _, Some(m)) => Some(m),
                _ => None,
            }
        })
        .unwrap_or_else(|| "no readable error".to_owned());
    let summary: String = said.chars().take(400).collect();
    let code = status.as_u16();
    if status.is_client_error() && !matches!(code, 408 | 429) {
        return BackendError::Unavailable {
            message: format!("{backend} refused the federation's managed identity ({code})"),
            detail: format!("{backend} token request: {code}: {summary}"),
        };
    }
    crate::http::status_error(backend, status, &format!("token request: {summary}"))
}

/// The error of an Entra ID answer other than success. Every refusal is the federation's
/// configuration (the caller has no part in this request): its tenant, client, secret or
/// federated credential. Entra ID's own description (`AADSTS...`) goes to the log only.
fn aad_error(status: reqwest::StatusCode, body: &[u8]) -> BackendError {
    // `{"error": "invalid_client", "error_description": "AADSTS..."}`.
    let summary = crate::http::oauth_error(body);
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
            client_id: Some(CLIENT.into()),
            client_secret: Some(SecretRef::env("AZURE_CLIENT_SECRET")),
            workload_identity: None,
            managed_identity: None,
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
                    client_id: Some("my-app".into()),
                    ..provider()
                },
                "provider.azure.clientId",
            ),
            (
                AzureProvider {
                    client_secret: None,
                    ..provider()
                },
                "exactly one of `clientSecret`, `workloadIdentity` or `managedIdentity`",
            ),
            (
                AzureProvider {
                    workload_identity: Some(WorkloadIdentity::default()),
                    ..provider()
                },
                "exactly one of `clientSecret`, `workloadIdentity` or `managedIdentity`",
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
                        self_issued: false,
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
        let r = AzureConn::assertion_file(Some(&explicit), &|_| None).unwrap();
        assert_eq!(r, SecretRef::file(&explicit));
        let r = AzureConn::assertion_file(None, &|k| {
            (k == FEDERATED_TOKEN_FILE_ENV).then(|| "/azure/token".to_owned())
        })
        .unwrap();
        assert_eq!(r, SecretRef::file("/azure/token"));
        let e = AzureConn::assertion_file(None, &|_| None).unwrap_err();
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

    /// A loopback FAKE of a managed identity's token endpoint, playing either IMDS
    /// (`GET /metadata/identity/oauth2/token`, `Metadata: true`, `api-version=2018-02-01`) or
    /// the App Service endpoint (`GET /msi/token`, `X-IDENTITY-HEADER`, `api-version=2019-08-01`)
    /// as Microsoft documents them: a `resource` (never a v2 scope), an optional `client_id` of
    /// an identity assigned to the resource, every value of the answer a string.
    mod fake_msi {
        use std::collections::VecDeque;
        use std::sync::{Arc, Mutex};

        use axum::extract::{RawQuery, State};
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::{IntoResponse, Response};
        use axum::routing::get;
        use axum::{Json, Router};
        use serde_json::json;

        pub const HEADER_SECRET: &str = "fake-identity-header-7Qk2";
        pub const USER_ASSIGNED: &str = "5e1a9c3b-7d2f-4b8e-a0c6-9f3e2d1b4a77";

        #[derive(Default)]
        pub struct Fake {
            /// Answers (status, body) given before any real one, in order.
            pub script: VecDeque<(u16, String)>,
            /// Every request: its query pairs and its headers.
            pub requests: Vec<(Vec<(String, String)>, HeaderMap)>,
            /// Tokens issued, with their resource.
            pub issued: Vec<(String, String)>,
        }

        pub type Shared = Arc<Mutex<Fake>>;

        fn pairs(q: Option<String>) -> Vec<(String, String)> {
            let url = reqwest::Url::parse(&format!("http://x/?{}", q.unwrap_or_default()))
                .expect("query");
            url.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        }

        fn get_one<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
            q.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str())
        }

        fn imds_refusal(error: &str, description: &str) -> Response {
            (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": error, "error_description": description})),
            )
                .into_response()
        }

        fn app_service_refusal(status: u16, message: &str) -> Response {
            (
                StatusCode::from_u16(status).expect("status"),
                Json(json!({"statusCode": status, "message": message,
                            "correlationId": "0f3c9a1e-0000-4000-8000-000000000000"})),
            )
                .into_response()
        }

        async fn token(
            fake: &Shared,
            app_service: bool,
            q: Option<String>,
            headers: HeaderMap,
        ) -> Response {
            let q = pairs(q);
            let mut f = fake.lock().expect("lock");
            f.requests.push((q.clone(), headers.clone()));
            if let Some((status, body)) = f.script.pop_front() {
                return (StatusCode::from_u16(status).expect("status"), body).into_response();
            }
            let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
            if app_service {
                if header("x-identity-header") != Some(HEADER_SECRET) {
                    return app_service_refusal(401, "Unauthorized");
                }
                if get_one(&q, "api-version") != Some(super::APP_SERVICE_API_VERSION) {
                    return app_service_refusal(400, "Unsupported api-version");
                }
            } else {
                if header("metadata") != Some("true") {
                    return imds_refusal(
                        "invalid_request",
                        "Required metadata header not specified",
                    );
                }
                if get_one(&q, "api-version") != Some(super::IMDS_API_VERSION) {
                    return imds_refusal("invalid_request", "Invalid API version");
                }
            }
            let Some(resource) = get_one(&q, "resource").filter(|r| !r.ends_with("/.default"))
            else {
                return if app_service {
                    app_service_refusal(400, "Resource is not a valid resource identifier")
                } else {
                    imds_refusal("invalid_resource", "AADSTS500011: resource not found")
                };
            };
            let client_id = match get_one(&q, "client_id") {
                None => "0d5e2c1f-aaaa-4bbb-8ccc-111122223333",
                Some(USER_ASSIGNED) => USER_ASSIGNED,
                Some(_) => {
                    return if app_service {
                        app_service_refusal(400, "Unable to load the proper Managed Identity.")
                    } else {
                        imds_refusal("invalid_request", "Identity not found")
                    };
                }
            };
            let now = jiff::Timestamp::now().as_second();
            let token = format!("msi-token-{}", f.issued.len());
            f.issued.push((token.clone(), resource.to_owned()));
            let mut answer = json!({
                "access_token": token,
                "client_id": client_id,
                "expires_on": (now + 86_399).to_string(),
                "resource": resource,
                "token_type": "Bearer",
            });
            if !app_service {
                answer["expires_in"] = json!("86399");
                answer["ext_expires_in"] = json!("86399");
                answer["not_before"] = json!(now.to_string());
            }
            Json(answer).into_response()
        }

        /// Both endpoints over one state; the base URL.
        pub async fn serve(fake: Shared) -> String {
            let imds = fake.clone();
            let app =
                Router::new()
                    .route(
                        "/metadata/identity/oauth2/token",
                        get(move |RawQuery(q): RawQuery, h: HeaderMap| {
                            let fake = imds.clone();
                            async move { token(&fake, false, q, h).await }
                        }),
                    )
                    .route(
                        "/msi/token",
                        get(
                            move |State(fake): State<Shared>,
                                  RawQuery(q): RawQuery,
                                  h: HeaderMap| async move {
                                token(&fake, true, q, h).await
                            },
                        ),
                    )
                    .with_state(fake);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let base = format!("http://{}", listener.local_addr().expect("addr"));
            tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
            base
        }
    }

    const KV_SCOPE: &str = "https://vault.azure.net/.default";

    fn msi_provider(client_id: Option<&str>, endpoint: Option<String>) -> AzureProvider {
        AzureProvider {
            client_id: client_id.map(str::to_owned),
            client_secret: None,
            managed_identity: Some(ManagedIdentity { endpoint }),
            ..provider()
        }
    }

    /// A connection whose environment is `vars` and whose retries wait `base`, doubled.
    fn msi_conn(p: &AzureProvider, vars: Vec<(&'static str, String)>, base: Duration) -> AzureConn {
        let mut conn = AzureConn::new(p).expect("conn");
        conn.env = Arc::new(move |k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.clone())
        });
        conn.msi_retry_base = base;
        conn
    }

    fn app_service_env(base: &str) -> Vec<(&'static str, String)> {
        vec![
            (IDENTITY_ENDPOINT_ENV, format!("{base}/msi/token")),
            (IDENTITY_HEADER_ENV, fake_msi::HEADER_SECRET.to_owned()),
        ]
    }

    fn query(fake: &fake_msi::Shared, i: usize) -> HashMap<String, String> {
        fake.lock().unwrap().requests[i].0.iter().cloned().collect()
    }

    #[tokio::test]
    async fn app_service_is_asked_with_its_secret_header_and_the_tokens_are_kept() {
        let fake = fake_msi::Shared::default();
        let base = fake_msi::serve(fake.clone()).await;
        let conn = msi_conn(
            &msi_provider(Some(fake_msi::USER_ASSIGNED), None),
            app_service_env(&base),
            Duration::from_millis(10),
        );
        let t = conn.token(KV_SCOPE).await.expect("a token");
        assert!(!t.cached);
        assert_eq!(t.token.expose_secret(), "msi-token-0");
        let q = query(&fake, 0);
        assert_eq!(q["api-version"], APP_SERVICE_API_VERSION);
        assert_eq!(q["resource"], "https://vault.azure.net");
        assert_eq!(q["client_id"], fake_msi::USER_ASSIGNED);
        {
            let f = fake.lock().unwrap();
            let headers = &f.requests[0].1;
            assert_eq!(headers["x-identity-header"], fake_msi::HEADER_SECRET);
            assert!(headers.get("metadata").is_none());
        }
        // Kept per scope: the same scope costs no request, another scope one.
        let again = conn.token(KV_SCOPE).await.expect("a token");
        assert!(again.cached);
        conn.token(&conn.acr_scope).await.expect("a token");
        assert_eq!(fake.lock().unwrap().requests.len(), 2);
        assert_eq!(query(&fake, 1)["resource"], DEFAULT_ACR_AUDIENCE);
        // IDENTITY_HEADER is a secret: not in the connection's Debug.
        let debug = format!("{conn:?} {t:?}");
        assert!(!debug.contains(fake_msi::HEADER_SECRET), "{debug}");
        assert!(!debug.contains("msi-token"), "{debug}");

        // A wrong header (rotated since): the platform's refusal, said in the log only, and
        // the secret nowhere.
        let conn = msi_conn(
            &msi_provider(None, None),
            vec![
                (IDENTITY_ENDPOINT_ENV, format!("{base}/msi/token")),
                (IDENTITY_HEADER_ENV, "stale-header-secret".to_owned()),
            ],
            Duration::from_millis(10),
        );
        let e = conn.token(KV_SCOPE).await.unwrap_err();
        assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("refused the federation's managed identity (401)"),
            "{e}"
        );
        assert!(e.detail().contains("Unauthorized"), "{}", e.detail());
        let all = format!("{e} {} {e:?} {conn:?}", e.detail());
        assert!(!all.contains("stale-header-secret"), "{all}");
        // The system-assigned identity: no client_id.
        assert!(!query(&fake, 2).contains_key("client_id"));
    }

    #[tokio::test]
    async fn imds_is_asked_with_the_metadata_header_and_a_resource() {
        let fake = fake_msi::Shared::default();
        let base = fake_msi::serve(fake.clone()).await;
        let endpoint = format!("{base}/metadata/identity/oauth2/token");
        // The endpoint given wins over the environment's App Service endpoint.
        let conn = msi_conn(
            &msi_provider(None, Some(endpoint.clone())),
            app_service_env(&base),
            Duration::from_millis(10),
        );
        let t = conn.token(KV_SCOPE).await.expect("a token");
        assert_eq!(t.token.expose_secret(), "msi-token-0");
        let q = query(&fake, 0);
        assert_eq!(q["api-version"], IMDS_API_VERSION);
        assert_eq!(q["resource"], "https://vault.azure.net");
        assert!(!q.contains_key("client_id"), "{q:?}");
        {
            let f = fake.lock().unwrap();
            assert_eq!(f.requests[0].1["metadata"], "true");
            assert!(f.requests[0].1.get("x-identity-header").is_none());
        }
        // A user-assigned identity the VM does not have: IMDS's 400, not tried again.
        let conn = msi_conn(
            &msi_provider(Some(CLIENT), Some(endpoint)),
            Vec::new(),
            Duration::from_millis(10),
        );
        let e = conn.token(KV_SCOPE).await.unwrap_err();
        assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
        assert!(e.detail().contains("Identity not found"), "{}", e.detail());
        assert_eq!(query(&fake, 1)["client_id"], CLIENT);
        assert_eq!(fake.lock().unwrap().requests.len(), 2);
    }

    #[tokio::test]
    async fn transient_answers_are_tried_again_as_imds_advises_within_the_timeout() {
        let fake = fake_msi::Shared::default();
        let base = fake_msi::serve(fake.clone()).await;
        let imds = msi_provider(None, Some(format!("{base}/metadata/identity/oauth2/token")));
        let script = |answers: &[u16]| {
            let mut f = fake.lock().unwrap();
            f.requests.clear();
            f.script = answers
                .iter()
                .map(|s| {
                    (
                        *s,
                        r#"{"error":"busy","error_description":"try later"}"#.to_owned(),
                    )
                })
                .collect();
        };
        let asked = || fake.lock().unwrap().requests.len();

        // Throttled, a server error, IMDS updating (404) and being upgraded (410): each
        // tried again.
        for (i, answers) in [[429, 503], [500, 410], [404, 504]].iter().enumerate() {
            script(answers);
            let conn = msi_conn(&imds, Vec::new(), Duration::from_millis(10));
            let t = conn.token(KV_SCOPE).await.expect("a token after retries");
            assert!(!t.cached, "{i}");
            assert_eq!(asked(), 3, "{answers:?}");
        }
        // At most three retries.
        script(&[500; 6]);
        let conn = msi_conn(&imds, Vec::new(), Duration::from_millis(10));
        let e = conn.token(KV_SCOPE).await.unwrap_err();
        assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
        assert!(e.to_string().contains("returned 500"), "{e}");
        assert!(e.detail().contains("busy: try later"), "{}", e.detail());
        assert_eq!(asked(), 4);
        // A refusal is not tried again.
        script(&[400]);
        let conn = msi_conn(&imds, Vec::new(), Duration::from_millis(10));
        assert!(conn.token(KV_SCOPE).await.is_err());
        assert_eq!(asked(), 1);
        // Never past the store's timeout: with 1s, waits of 400 ms then 800 ms leave room for
        // the first only.
        script(&[503; 6]);
        let short = AzureProvider {
            timeout: Some(HumanDuration::from_secs(1)),
            ..imds.clone()
        };
        let conn = msi_conn(&short, Vec::new(), Duration::from_millis(400));
        let started = Instant::now();
        assert!(conn.token(KV_SCOPE).await.is_err());
        assert_eq!(asked(), 2);
        assert!(started.elapsed() < Duration::from_secs(1));
        // 404 and 410 are IMDS's: the App Service endpoint's 404 is final.
        script(&[404]);
        let conn = msi_conn(
            &msi_provider(None, None),
            app_service_env(&base),
            Duration::from_millis(10),
        );
        let e = conn.token(KV_SCOPE).await.unwrap_err();
        assert!(e.to_string().contains("(404)"), "{e}");
        assert_eq!(asked(), 1);
    }

    #[test]
    fn the_environment_chooses_the_managed_identity_endpoint() {
        let p = msi_provider(None, None);
        let conn = AzureConn::new(&p).unwrap();
        let Proof::ManagedIdentity(msi) = &conn.proof else {
            panic!("not a managed identity")
        };
        let source = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            AzureConn::msi_source(msi, &move |k| {
                vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
            })
        };
        let Ok(MsiSource::Imds(url)) = source(&[]) else {
            panic!("not IMDS")
        };
        assert_eq!(url.as_str(), IMDS_ENDPOINT);
        // IDENTITY_ENDPOINT alone (no header) is not App Service.
        assert!(matches!(
            source(&[(IDENTITY_ENDPOINT_ENV, "http://127.0.0.1:41741/MSI/token/")]),
            Ok(MsiSource::Imds(_))
        ));
        for endpoint in [
            "http://127.0.0.1:41741/MSI/token/",
            "http://localhost:42356/msi/token",
            "http://172.16.5.3:8081/msi/token/",
            "http://169.254.129.3:8081/msi/token",
            "https://msi.example/token",
        ] {
            let Ok(MsiSource::AppService(url, header)) = source(&[
                (IDENTITY_ENDPOINT_ENV, endpoint),
                (IDENTITY_HEADER_ENV, "h"),
            ]) else {
                panic!("{endpoint} is not App Service")
            };
            assert_eq!(url.as_str(), endpoint);
            assert_eq!(header.expose_secret(), "h");
        }
        for (vars, says) in [
            (
                vec![
                    (IDENTITY_ENDPOINT_ENV, "http://203.0.113.7/msi/token"),
                    (IDENTITY_HEADER_ENV, "h"),
                ],
                "IDENTITY_ENDPOINT \"http://203.0.113.7/msi/token\" is not an https:// URL",
            ),
            (
                vec![
                    (IDENTITY_ENDPOINT_ENV, "http://msi.example/token"),
                    (IDENTITY_HEADER_ENV, "h"),
                ],
                "private address",
            ),
            (
                vec![
                    (
                        IDENTITY_ENDPOINT_ENV,
                        "https://127.0.0.1:2377/metadata/identity/oauth2/token",
                    ),
                    (IDENTITY_HEADER_ENV, "h"),
                    ("IDENTITY_SERVER_THUMBPRINT", "A6F2"),
                ],
                "Service Fabric",
            ),
            (
                vec![
                    (
                        IDENTITY_ENDPOINT_ENV,
                        "http://localhost:40342/metadata/identity/oauth2/token",
                    ),
                    ("IMDS_ENDPOINT", "http://localhost:40342"),
                ],
                "Azure Arc",
            ),
        ] {
            let Err(e) = source(&vars) else {
                panic!("{vars:?} accepted")
            };
            assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
            assert!(e.to_string().contains("not set up"), "{e}");
            assert!(e.detail().contains(says), "{}", e.detail());
            assert!(!format!("{e:?}").contains("\"h\""), "{e:?}");
        }
    }

    #[test]
    fn a_scope_is_asked_of_a_managed_identity_as_its_resource() {
        assert_eq!(
            resource_of("https://vault.azure.net/.default"),
            Some("https://vault.azure.net")
        );
        assert_eq!(
            resource_of("https://containerregistry.azure.net/.default"),
            Some("https://containerregistry.azure.net")
        );
        assert_eq!(
            resource_of("api://3c1b7e2a-5d4f-4e8b-9a61-0f2d8c7b6e15/.default"),
            Some("api://3c1b7e2a-5d4f-4e8b-9a61-0f2d8c7b6e15")
        );
        for scope in [
            "https://vault.azure.net/user_impersonation",
            "/.default",
            "https://vault.azure.net",
            "a b/.default",
        ] {
            assert_eq!(resource_of(scope), None, "{scope}");
        }
    }

    #[test]
    fn managed_identity_answers_are_read_strictly() {
        let now = jiff::Timestamp::now().as_second();
        let answer = |j: serde_json::Value| msi_answer("IMDS", j.to_string().as_bytes());
        let (token, lives) = answer(
            serde_json::json!({"access_token": "t1", "expires_on": (now + 3600).to_string(),
                "expires_in": "3600", "resource": "r", "token_type": "Bearer"}),
        )
        .unwrap();
        assert_eq!(token.expose_secret(), "t1");
        assert!((3590..=3600).contains(&lives.as_secs()), "{lives:?}");
        let (_, lives) =
            answer(serde_json::json!({"access_token": "t2", "expires_on": now + 60})).unwrap();
        assert!(lives.as_secs() <= 60);
        for (bad, says) in [
            (
                serde_json::json!({"access_token": "t3", "expires_on": "04/15/2020 21:05:35 +00:00"}),
                "expires_on is not a number",
            ),
            (
                serde_json::json!({"access_token": "t3", "expires_on": (now - 5).to_string()}),
                "expired already",
            ),
            (
                serde_json::json!({"access_token": "t3", "expires_on": i64::MIN.to_string()}),
                "expired already",
            ),
            (serde_json::json!({"access_token": "t3"}), "expires_on"),
            (
                serde_json::json!({"access_token": "", "expires_on": (now + 60).to_string()}),
                "empty access_token",
            ),
            (serde_json::json!({"token": "t3"}), "access_token"),
        ] {
            let e = answer(bad.clone()).unwrap_err();
            assert!(
                matches!(e, BackendError::Unavailable { .. }),
                "{bad}: {e:?}"
            );
            assert!(e.detail().contains(says), "{bad}: {}", e.detail());
            assert!(!e.detail().contains("t3"), "{}", e.detail());
        }
        let imds = msi_error(
            "IMDS",
            reqwest::StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_request","error_description":"Identity not found"}"#,
        );
        assert!(
            imds.detail()
                .contains("invalid_request: Identity not found")
        );
        let app = msi_error(
            "App Service",
            reqwest::StatusCode::BAD_REQUEST,
            br#"{"statusCode":400,"message":"Unable to load requested managed identity.","correlationId":"x"}"#,
        );
        assert!(
            app.detail()
                .contains("Unable to load requested managed identity")
        );
        assert!(!app.to_string().contains("Unable to load"), "{app}");
    }

    #[test]
    fn managed_identity_settings_are_checked() {
        assert!(msi_provider(None, None).validate().is_ok());
        for ok in [
            "http://169.254.169.254/metadata/identity/oauth2/token",
            "http://127.0.0.1:8080/metadata/identity/oauth2/token",
            "http://[::1]:8080/token",
            "https://imds-proxy.example/metadata/identity/oauth2/token",
        ] {
            let p = msi_provider(None, Some(ok.to_owned()));
            assert!(p.validate().is_ok(), "{ok}");
            // The path is kept as given (no `/` added).
            let Proof::ManagedIdentity(msi) = AzureConn::new(&p).unwrap().proof else {
                panic!("not a managed identity")
            };
            assert_eq!(msi.imds.as_str(), ok);
        }
        for (p, says) in [
            (
                msi_provider(
                    None,
                    Some("http://10.0.0.1/metadata/identity/oauth2/token".into()),
                ),
                "provider.azure.managedIdentity.endpoint",
            ),
            (
                msi_provider(None, Some("http://imds.example/token".into())),
                "provider.azure.managedIdentity.endpoint",
            ),
            (
                msi_provider(
                    None,
                    Some("https://imds.example/token?api-version=1".into()),
                ),
                "provider.azure.managedIdentity.endpoint",
            ),
            (
                msi_provider(Some("not-a-guid"), None),
                "provider.azure.clientId",
            ),
            (
                AzureProvider {
                    managed_identity: Some(ManagedIdentity::default()),
                    ..provider()
                },
                "exactly one of `clientSecret`, `workloadIdentity` or `managedIdentity`",
            ),
            (
                AzureProvider {
                    client_id: None,
                    ..provider()
                },
                "provider.azure.clientId: is required with `clientSecret` and `workloadIdentity`",
            ),
        ] {
            let err = p.validate().unwrap_err().to_string();
            assert!(err.contains(says), "{p:?}: {err}");
        }
        let j = serde_json::json!({"provider": {"azure": {
            "tenantId": TENANT,
            "managedIdentity": {"clientId": CLIENT},
        }}});
        let err = crate::SecretStoreSpec::from_manifest(j)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `clientId`"), "{err}");
        let j = serde_json::json!({"provider": {"azure": {
            "tenantId": TENANT,
            "managedIdentity": {},
        }}});
        let store = crate::SecretStoreSpec::from_manifest(j).unwrap();
        assert_eq!(
            crate::SecretStoreSpec::from_manifest(serde_json::to_value(&store).unwrap()).unwrap(),
            store
        );
    }
}
