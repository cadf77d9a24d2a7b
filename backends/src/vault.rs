//! The `vault` SecretStore provider: a Vault or OpenBao server, and the authenticated client
//! the Vault generators share.
//!
//! Authentication is lazy and self-healing: the first request logs in (or looks up a static
//! token), later requests reuse the token, renew it once two thirds of its TTL have passed,
//! and log in again when renewal is refused or the token is near its maximum TTL (a renewal
//! granting clearly less than the login did: Vault revokes a token's leases with it, so a lease
//! is never taken under a token with less than a third of its TTL left). A `401` or
//! `403` on a token obtained by login triggers one re-login and retry (the token may have been
//! revoked behind our back: Vault answers 403 for a bad token, a proxy or OpenBao may say 401). No background task: this works the same in a Lambda.
//!
//! Vault's error statuses follow the crate's rule on every path (direct calls and vaultrs'):
//! `401` (the federation's token not accepted), `408`, `412` (a performance standby not caught
//! up yet), `429` and 5xx are [`BackendError::Unavailable`]; `403` (after the one re-login)
//! and every other 4xx [`BackendError::Rejected`].
//!
//! vaultrs drives the auth methods, token lookup/renewal, KV reads and accessor revocation;
//! the engine-agnostic calls (`VaultDynamicSecret`'s arbitrary path, `sys/leases/revoke`)
//! go through the same HTTP client directly.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use vaultrs::client::{VaultClient, VaultClientSettings, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use crate::duration::HumanDuration;
use crate::identity::Issuer;
use crate::{BackendError, SecretRef, SpecError};

const BACKEND: &str = "vault";
/// Where Kubernetes mounts a pod's service-account token.
pub const DEFAULT_SA_TOKEN_FILE: &str = crate::secret::OWN_SERVICE_ACCOUNT_TOKEN;

/// How to reach and authenticate to a Vault/OpenBao server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VaultProvider {
    /// Server address, `https://vault.example:8200`.
    pub server: String,
    /// Vault Enterprise / OpenBao namespace, sent as `X-Vault-Namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// PEM certificates trusted (in addition to the system roots) for the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// Timeout of every request to the server (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// How the federation authenticates (default: a token from the `VAULT_TOKEN` variable).
    #[serde(default, deserialize_with = "crate::choice::one_of")]
    pub auth: VaultAuth,
}

/// The auth method: exactly one key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum VaultAuth {
    /// A token, from an environment variable or a file: `token: {env: VAULT_TOKEN}`.
    /// Renewed while renewable; cannot be replaced once it expires.
    Token(SecretRef),
    /// AppRole login (`auth/<path>/login`).
    AppRole(AppRoleAuth),
    /// JWT login (`auth/<path>/login` of a `jwt` mount) with a token file the federation
    /// holds, for example its own projected service-account token.
    Jwt(JwtAuth),
    /// Kubernetes auth method login with the federation's service-account token.
    Kubernetes(JwtAuth),
    /// Username and password login (`auth/<path>/login/<username>` of a `userpass` mount).
    UserPass(UserPassAuth),
    /// AWS IAM login (`auth/<path>/login` of an `aws` mount, `auth_type=iam`): the federation
    /// signs an STS `GetCallerIdentity` request with its AWS credentials and Vault forwards it
    /// to STS, which says who signed. No secret to hand the federation where it has an AWS
    /// identity (its Lambda role, IRSA, EKS Pod Identity).
    #[cfg(feature = "vault-iam")]
    Iam(Box<IamAuth>),
    /// TLS certificate login (`auth/<path>/login` of a `cert` mount): the federation presents a
    /// client certificate, at the login and on every later call (Vault binds the token to the
    /// certificate unless the mount disables binding).
    Cert(CertAuth),
}

impl Default for VaultAuth {
    fn default() -> Self {
        VaultAuth::Token(SecretRef::env("VAULT_TOKEN"))
    }
}

/// AppRole credentials.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppRoleAuth {
    /// Mount path of the auth method (default `approle`).
    #[serde(default = "default_approle")]
    pub path: String,
    /// The role id (not a secret on its own); or use `roleIdRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_id: Option<String>,
    /// Where to read the role id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_id_ref: Option<SecretRef>,
    /// Where to read the secret id.
    pub secret_id_ref: SecretRef,
}

/// A JWT-style login (JWT or Kubernetes auth method).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtAuth {
    /// Mount path of the auth method (default `jwt` or `kubernetes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The role to log in as.
    pub role: String,
    /// File holding the JWT, re-read at every login (default: the pod's service-account
    /// token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Log in with a token the federation signs for itself with its own OIDC issuer instead of
    /// a token file (`jwt` only): no secret to hand the federation, in Lambda too. The token's
    /// `sub` is `esi-federation`, which no workload's token has, and its `aud` the store's
    /// `server` (as written, without a trailing `/`), so a token sent to one server cannot log
    /// in at another. Vault's role binds both: `bound_subject` and `bound_audiences`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub self_issued: bool,
}

/// A username and password login.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserPassAuth {
    /// Mount path of the auth method (default `userpass`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The user to log in as.
    pub username: String,
    /// Where to read the password, at every login.
    pub password_ref: SecretRef,
}

/// An AWS IAM login.
#[cfg(feature = "vault-iam")]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IamAuth {
    /// Mount path of the auth method (default `aws`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The Vault role to log in as (its `bound_iam_principal_arn` names the federation's role).
    pub role: String,
    /// The value of the `X-Vault-AWS-IAM-Server-ID` header signed into the request, which the
    /// mount's `iam_server_id_header_value` requires (the Vault server's host name, say), so a
    /// signed request sent to one Vault cannot log in at another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    /// The federation's AWS identity and the STS endpoint the request is signed for, as an
    /// `aws` SecretStore names them: `region` (its regional endpoint, or the global
    /// `sts.amazonaws.com` for `us-east-1`), `endpoint`, `credentials` (default: the SDK's
    /// default chain), `assumeRole`, `selfIssued`. The mount's `sts_endpoint` and
    /// `sts_region` must name the same endpoint.
    pub sts: crate::aws::AwsProvider,
}

/// A TLS certificate login.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertAuth {
    /// Mount path of the auth method (default `cert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The certificate role to log in as (default: whichever role's CA trusts the
    /// certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The client certificate (PEM, then any intermediates Vault needs to chain it), read at
    /// every login: a renewed certificate needs no restart.
    pub client_cert: SecretRef,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1), read with it.
    pub client_key: SecretRef,
}

fn default_approle() -> String {
    "approle".to_owned()
}

impl VaultProvider {
    /// The server's URL as calls are made to it: `server` without a trailing `/`.
    fn address(&self) -> &str {
        self.server.trim_end_matches('/')
    }

    /// The `aud` of the token the federation signs for itself to log in here
    /// (`auth.jwt.selfIssued`), if it does: the server's URL, so that the token is good at
    /// this server only.
    pub fn self_issued_audience(&self) -> Option<&str> {
        match &self.auth {
            VaultAuth::Jwt(j) if j.self_issued => Some(self.address()),
            _ => None,
        }
    }

    /// Whether the store logs in with its AWS identity taken by a token the federation signs
    /// for itself (`auth.iam.sts.selfIssued`).
    pub fn iam_self_issued(&self) -> bool {
        #[cfg(feature = "vault-iam")]
        if let VaultAuth::Iam(i) = &self.auth {
            return i.sts.self_issued.is_some();
        }
        false
    }

    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        let url = reqwest::Url::parse(&self.server).map_err(|e| {
            SpecError::field(
                "provider.vault.server",
                format!("{:?} is not a URL: {e}", self.server),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(SpecError::field(
                "provider.vault.server",
                format!("{:?} is not an http(s) URL", self.server),
            ));
        }
        if let Some(t) = self.timeout
            && t.get().is_zero()
        {
            return Err(SpecError::field(
                "provider.vault.timeout",
                "must be positive",
            ));
        }
        let mount = match &self.auth {
            VaultAuth::Token(_) => None,
            VaultAuth::AppRole(a) => Some(("appRole", Some(a.path.as_str()))),
            VaultAuth::Jwt(j) => Some(("jwt", j.path.as_deref())),
            VaultAuth::Kubernetes(j) => Some(("kubernetes", j.path.as_deref())),
            VaultAuth::UserPass(u) => Some(("userPass", u.path.as_deref())),
            #[cfg(feature = "vault-iam")]
            VaultAuth::Iam(i) => Some(("iam", i.path.as_deref())),
            VaultAuth::Cert(c) => Some(("cert", c.path.as_deref())),
        };
        if let Some((method, Some(path))) = mount
            && !is_mount_path(path)
        {
            return Err(SpecError::field(
                format!("provider.vault.auth.{method}.path"),
                format!(
                    "{path:?} is not a mount path (letters, digits, `-`, `_` and `.`, in \
                     segments joined by `/`)"
                ),
            ));
        }
        match &self.auth {
            VaultAuth::Token(r) => r.validate("provider.vault.auth.token")?,
            VaultAuth::AppRole(a) => {
                a.secret_id_ref
                    .validate("provider.vault.auth.appRole.secretIdRef")?;
                match (&a.role_id, &a.role_id_ref) {
                    (Some(id), None) if !id.is_empty() => {}
                    (None, Some(r)) => r.validate("provider.vault.auth.appRole.roleIdRef")?,
                    _ => {
                        return Err(SpecError::field(
                            "provider.vault.auth.appRole",
                            "set exactly one of roleId or roleIdRef",
                        ));
                    }
                }
            }
            VaultAuth::Jwt(j) | VaultAuth::Kubernetes(j) => {
                let method = match &self.auth {
                    VaultAuth::Jwt(_) => "jwt",
                    _ => "kubernetes",
                };
                if j.role.is_empty() {
                    return Err(SpecError::field(
                        format!("provider.vault.auth.{method}.role"),
                        "must not be empty",
                    ));
                }
                if let Some(file) = &j.token_file {
                    crate::secret::validate_file(
                        file,
                        &format!("provider.vault.auth.{method}.tokenFile"),
                        Some(crate::secret::Owner::Kubernetes),
                    )?;
                }
                if j.self_issued {
                    let field = format!("provider.vault.auth.{method}.selfIssued");
                    if method == "kubernetes" {
                        return Err(SpecError::field(
                            field,
                            "the kubernetes auth method reviews Kubernetes ServiceAccount tokens \
                             only; a token the federation signs logs in through a jwt auth \
                             method (auth.jwt.selfIssued)",
                        ));
                    }
                    if j.token_file.is_some() {
                        return Err(SpecError::field(
                            field,
                            "set tokenFile or selfIssued, not both",
                        ));
                    }
                }
            }
            VaultAuth::UserPass(u) => {
                // Vault's userpass names: what its path pattern `login/(?P<username>.+)` takes,
                // kept to characters that cannot leave that path segment.
                if u.username.is_empty()
                    || u.username.len() > 256
                    || !u.username.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@')
                    })
                {
                    return Err(SpecError::field(
                        "provider.vault.auth.userPass.username",
                        format!(
                            "{:?} is not a user name (1 to 256 letters, digits, `-`, `_`, `.` \
                             and `@`)",
                            u.username
                        ),
                    ));
                }
                u.password_ref
                    .validate("provider.vault.auth.userPass.passwordRef")?;
            }
            #[cfg(feature = "vault-iam")]
            VaultAuth::Iam(i) => {
                if i.role.is_empty() {
                    return Err(SpecError::field(
                        "provider.vault.auth.iam.role",
                        "must not be empty",
                    ));
                }
                if let Some(id) = &i.server_id
                    && (id.is_empty()
                        || id.len() > 256
                        || !id.bytes().all(|b| b.is_ascii_graphic()))
                {
                    return Err(SpecError::field(
                        "provider.vault.auth.iam.serverId",
                        "must be 1 to 256 printable characters without spaces (a header value)",
                    ));
                }
                i.sts.validate().map_err(|e| {
                    SpecError::field(
                        "provider.vault.auth.iam.sts",
                        e.to_string()
                            .trim_start_matches("spec.")
                            .replacen("provider.aws.", "", 1),
                    )
                })?;
            }
            VaultAuth::Cert(c) => {
                if c.name.as_deref().is_some_and(str::is_empty) {
                    return Err(SpecError::field(
                        "provider.vault.auth.cert.name",
                        "must not be empty (leave it out to let Vault pick the role)",
                    ));
                }
                crate::http::check_client_cert(
                    &c.client_cert,
                    &c.client_key,
                    "provider.vault.auth.cert",
                    (url.scheme() != "https").then_some(("provider.vault.server", &self.server)),
                )?;
            }
        }
        if let Some(pem) = &self.ca_bundle {
            crate::http::check_ca_bundle(pem, "provider.vault.caBundle")?;
        }
        Ok(())
    }
}

/// The body of the STS request an IAM login signs.
#[cfg(feature = "vault-iam")]
const IAM_LOGIN_BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";

/// A signed `GetCallerIdentity` request: its URL and its headers (JSON, each name with its
/// values, as Go's `http.Header` serializes).
#[cfg(feature = "vault-iam")]
struct SignedIamRequest {
    url: String,
    headers: serde_json::Value,
}

/// Signs the `GetCallerIdentity` request of an IAM login for the STS endpoint of `sts` (its
/// `endpoint`, else the regional one of its partition, the global `sts.amazonaws.com` for
/// `us-east-1` as Vault's own default), with `server_id` as the `X-Vault-AWS-IAM-Server-ID` header when set.
#[cfg(feature = "vault-iam")]
fn iam_login_request(
    sts: &crate::aws::AwsProvider,
    server_id: Option<&str>,
    credentials: aws_credential_types::Credentials,
    time: std::time::SystemTime,
) -> Result<SignedIamRequest, String> {
    let url = match &sts.endpoint {
        Some(ep) => format!("{}/", ep.trim_end_matches('/')),
        None if sts.region == "us-east-1" => "https://sts.amazonaws.com/".to_owned(),
        None => format!("https://{}/", crate::aws::sts_host(&sts.region)),
    };
    let mut headers = vec![(
        "Content-Type",
        "application/x-www-form-urlencoded; charset=utf-8",
    )];
    if let Some(id) = server_id {
        headers.push(("X-Vault-AWS-IAM-Server-ID", id));
    }
    let instructions = crate::aws::sigv4_sign(
        ("POST", &url, &headers, IAM_LOGIN_BODY.as_bytes()),
        "sts",
        &sts.region,
        credentials,
        time,
        aws_sigv4::http_request::SigningSettings::default(),
    )?;
    let mut json = serde_json::Map::new();
    for (name, value) in headers.iter().copied().chain(instructions.headers()) {
        json.insert(name.to_owned(), serde_json::json!([value]));
    }
    Ok(SignedIamRequest {
        url,
        headers: json.into(),
    })
}

/// Whether `path` can be an auth mount's path: segments of ASCII letters, digits, `-`, `_`
/// and `.`, joined by `/` (never `.` or `..`, no empty segment).
fn is_mount_path(path: &str) -> bool {
    path.split('/').all(|seg| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    })
}

/// A token and what we know about its lifetime.
struct Session {
    token: SecretString,
    /// The client the token was obtained over (with `auth.cert`, presenting the certificate
    /// Vault bound the token to).
    http: reqwest::Client,
    obtained: Instant,
    ttl: Option<Duration>,
    /// The TTL the login granted: a renewal granting clearly less has met the token's max TTL.
    granted: Option<Duration>,
    renewable: bool,
    /// Whether it came from a login (and so can be replaced by another login).
    from_login: bool,
}

impl Session {
    /// Past two thirds of its TTL: time to renew or log in again.
    fn stale(&self) -> bool {
        self.ttl
            .is_some_and(|ttl| self.obtained.elapsed() >= ttl * 2 / 3)
    }
}

/// An authenticated connection to a Vault/OpenBao server, shared by the generators built on
/// one store.
pub struct VaultConn {
    address: String,
    namespace: Option<String>,
    http: reqwest::Client,
    /// With `auth.cert`: the clients presenting the certificate, used instead of `http`.
    cert: Option<crate::http::CertClient>,
    /// With `auth.iam`: the federation's AWS identity.
    #[cfg(feature = "vault-iam")]
    iam: Option<crate::aws::StsConn>,
    settings: VaultClientSettings,
    auth: VaultAuth,
    /// The federation's issuer, for `auth.jwt.selfIssued` (`None` otherwise, or where the
    /// configuration is only checked).
    issuer: Option<Arc<Issuer>>,
    session: Mutex<Option<Session>>,
}

impl fmt::Debug for VaultConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultConn")
            .field("address", &self.address)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// What a Vault call returned: the parts of Vault's response envelope the generators use.
/// Its `Debug` names the keys of `data` and `auth`, never their values (the secret).
#[derive(Default, Deserialize)]
#[serde(default)]
pub struct VaultResponse {
    /// `lease_id`, empty when nothing was leased.
    pub lease_id: String,
    /// `lease_duration` in seconds.
    pub lease_duration: u64,
    /// `renewable`.
    pub renewable: bool,
    /// `data`.
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
    /// `auth`, for auth-method responses.
    pub auth: Option<serde_json::Map<String, serde_json::Value>>,
}

impl fmt::Debug for VaultResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = |m: &Option<serde_json::Map<String, serde_json::Value>>| {
            m.as_ref().map(|m| m.keys().cloned().collect::<Vec<_>>())
        };
        f.debug_struct("VaultResponse")
            .field("lease_id", &self.lease_id)
            .field("lease_duration", &self.lease_duration)
            .field("renewable", &self.renewable)
            .field("data_keys", &keys(&self.data))
            .field("auth_keys", &keys(&self.auth))
            .finish()
    }
}

impl VaultConn {
    /// Builds the connection (no network traffic until the first request) on the federation's
    /// `issuer`, which `auth.jwt.selfIssued` needs.
    pub(crate) fn new(p: &VaultProvider, issuer: &crate::IssuerSlot) -> Result<Self, SpecError> {
        p.validate()?;
        #[cfg(feature = "vault-iam")]
        let iam = match &p.auth {
            VaultAuth::Iam(i) => Some(crate::aws::StsConn::new(&i.sts, issuer)?),
            _ => None,
        };
        let issuer = match &p.auth {
            VaultAuth::Jwt(JwtAuth {
                self_issued: true, ..
            }) => issuer.for_build("a Vault SecretStore logging in with auth.jwt.selfIssued")?,
            _ => None,
        };
        let timeout = p
            .timeout
            .map_or(crate::http::DEFAULT_TIMEOUT, HumanDuration::get);
        let http = crate::http::client(p.ca_bundle.as_deref(), timeout, "provider.vault.caBundle")?;
        if let Ok(url) = reqwest::Url::parse(&p.server)
            && url.scheme() == "http"
            && !crate::http::host_ip(&url).is_some_and(|ip| ip.is_loopback())
        {
            // Accepted (Vault's Helm chart serves plain HTTP by default, often behind a mesh
            // that encrypts it), but said: the federation's token and every secret cross the
            // network as they are unless something below HTTP protects them.
            tracing::warn!(
                server = %p.server,
                "a vault store talks plain HTTP to a server that is not loopback: its token and \
                 the secrets it reads are not encrypted by the federation"
            );
        }
        let cert = match &p.auth {
            VaultAuth::Cert(c) => Some(crate::http::CertClient::new(
                &c.client_cert,
                &c.client_key,
                "provider.vault.auth.cert",
                crate::http::Trust::System {
                    extra: p.ca_bundle.as_deref(),
                },
                "provider.vault.caBundle",
                timeout,
            )?),
            _ => None,
        };
        let address = p.address().to_owned();
        // The settings only carry the address and namespace: vaultrs' own HTTP client and
        // environment defaults are replaced by ours below.
        let mut b = VaultClientSettingsBuilder::default();
        b.address(&address)
            .token("")
            .verify(true)
            .ca_certs(Vec::new())
            .timeout(Some(timeout));
        if let Some(ns) = &p.namespace {
            b.set_namespace(ns.clone());
        }
        let settings = b.build().map_err(|e| {
            SpecError::field(
                "provider.vault.server",
                format!("rejected by the Vault client: {e}"),
            )
        })?;
        Ok(VaultConn {
            address,
            namespace: p.namespace.clone(),
            http,
            cert,
            #[cfg(feature = "vault-iam")]
            iam,
            settings,
            auth: p.auth.clone(),
            issuer,
            session: Mutex::new(None),
        })
    }

    fn client(&self, http: &reqwest::Client, token: &str) -> VaultClient {
        VaultClient {
            http: rustify::clients::reqwest::Client::new(&self.address, http.clone()),
            middle: vaultrs::api::EndpointMiddleware {
                token: token.to_owned(),
                version: "v1".to_owned(),
                wrap: None,
                namespace: self.namespace.clone(),
            },
            settings: self.settings.clone(),
        }
    }

    /// A valid token and the client to use it over, logging in or renewing as needed.
    async fn token(&self) -> Result<Creds, BackendError> {
        let mut guard = self.session.lock().await;
        if let Some(s) = guard.as_mut()
            && s.stale()
        {
            let renewed = if s.renewable {
                self.renew(s).await
            } else {
                false
            };
            if !renewed {
                if s.from_login {
                    *guard = None;
                } else if s.ttl.is_some_and(|ttl| s.obtained.elapsed() >= ttl) {
                    // A static token we could not renew: read it again, an operator may have
                    // rotated the file.
                    *guard = None;
                }
            }
        }
        if guard.is_none() {
            *guard = Some(self.login().await?);
        }
        match guard.as_ref() {
            Some(s) => Ok(Creds {
                token: s.token.clone(),
                http: s.http.clone(),
            }),
            None => Err(unavailable("no vault session", String::new())),
        }
    }

    /// Renews the session's token in place; false when Vault refused.
    async fn renew(&self, s: &mut Session) -> bool {
        let client = self.client(&s.http, s.token.expose_secret());
        match vaultrs::token::renew_self(&client, None).await {
            Ok(auth) => {
                s.obtained = Instant::now();
                s.ttl = (auth.lease_duration > 0).then(|| Duration::from_secs(auth.lease_duration));
                s.renewable = auth.renewable;
                // Vault grants less than asked near the token's max TTL: log in again rather
                // than ride a token about to die. Vault revokes a token's leases with it, so a
                // token from a login is replaced as soon as a renewal falls short of what the
                // login granted: a lease taken later then lives under a token with its whole
                // TTL ahead (an Authorization's maxTTL within the role's token_ttl is never cut
                // short), not one with minutes left.
                let capped = s.from_login
                    && s.granted
                        .zip(s.ttl)
                        .is_some_and(|(granted, now)| now < granted * 9 / 10);
                if capped || s.ttl.is_some_and(|t| t < Duration::from_secs(5)) {
                    tracing::debug!(
                        backend = BACKEND,
                        ttl_secs = auth.lease_duration,
                        "vault token near its max TTL; logging in again"
                    );
                    return false;
                }
                tracing::debug!(
                    backend = BACKEND,
                    ttl_secs = auth.lease_duration,
                    "renewed vault token"
                );
                true
            }
            Err(e) => {
                tracing::warn!(backend = BACKEND, error = %client_error_summary(&e), "vault token renewal failed");
                false
            }
        }
    }

    async fn login(&self) -> Result<Session, BackendError> {
        // The certificate is read again at every login: a renewed one is presented from now on.
        let http = match &self.cert {
            Some(c) => c.client()?,
            None => self.http.clone(),
        };
        let anon = self.client(&http, "");
        let (auth, from_login) = match &self.auth {
            VaultAuth::Token(r) => {
                let token = r.read()?;
                let c = self.client(&http, token.expose_secret());
                // A token whose policies deny `lookup-self` still works for everything else:
                // use it without renewal rather than refuse it.
                let (ttl, renewable) = match vaultrs::token::lookup_self(&c).await {
                    Ok(info) => (
                        (info.ttl > 0).then(|| Duration::from_secs(info.ttl)),
                        info.renewable.unwrap_or(false),
                    ),
                    Err(ClientError::APIError { code: 403, .. }) => {
                        tracing::warn!(
                            backend = BACKEND,
                            "vault token may not look itself up; it will not be renewed"
                        );
                        (None, false)
                    }
                    Err(e) => return Err(map_client_error("token lookup", &e)),
                };
                return Ok(Session {
                    token,
                    http,
                    obtained: Instant::now(),
                    ttl,
                    granted: ttl,
                    renewable,
                    from_login: false,
                });
            }
            VaultAuth::AppRole(a) => {
                let role_id = match (&a.role_id, &a.role_id_ref) {
                    (Some(id), _) => SecretString::from(id.clone()),
                    (None, Some(r)) => r.read()?,
                    (None, None) => {
                        return Err(unavailable("approle role id missing", String::new()));
                    }
                };
                let secret_id = a.secret_id_ref.read()?;
                let auth = vaultrs::auth::approle::login(
                    &anon,
                    &a.path,
                    role_id.expose_secret(),
                    secret_id.expose_secret(),
                )
                .await
                .map_err(|e| map_client_error("approle login", &e))?;
                (auth, true)
            }
            VaultAuth::Jwt(j) => {
                let jwt = if j.self_issued {
                    crate::identity::own_login_token(self.issuer.as_ref(), &self.address)?
                } else {
                    read_token_file(j)?
                };
                let path = j.path.as_deref().unwrap_or("jwt");
                let auth = vaultrs::auth::oidc::login(
                    &anon,
                    path,
                    jwt.expose_secret(),
                    Some(j.role.clone()),
                )
                .await
                .map_err(|e| map_client_error("jwt login", &e))?;
                (auth, true)
            }
            VaultAuth::Kubernetes(j) => {
                let jwt = read_token_file(j)?;
                let path = j.path.as_deref().unwrap_or("kubernetes");
                let auth =
                    vaultrs::auth::kubernetes::login(&anon, path, &j.role, jwt.expose_secret())
                        .await
                        .map_err(|e| map_client_error("kubernetes login", &e))?;
                (auth, true)
            }
            VaultAuth::UserPass(u) => {
                let password = u.password_ref.read()?;
                let path = u.path.as_deref().unwrap_or("userpass");
                let auth = vaultrs::auth::userpass::login(
                    &anon,
                    path,
                    &u.username,
                    password.expose_secret(),
                )
                .await
                .map_err(|e| map_client_error("userpass login", &e))?;
                (auth, true)
            }
            #[cfg(feature = "vault-iam")]
            VaultAuth::Iam(i) => (self.iam_login(&http, i).await?, true),
            VaultAuth::Cert(c) => (self.cert_login(&http, c).await?, true),
        };
        tracing::debug!(
            backend = BACKEND,
            ttl_secs = auth.lease_duration,
            "logged in to vault"
        );
        Ok(Session {
            token: SecretString::from(auth.client_token),
            http,
            obtained: Instant::now(),
            ttl: (auth.lease_duration > 0).then(|| Duration::from_secs(auth.lease_duration)),
            granted: (auth.lease_duration > 0).then(|| Duration::from_secs(auth.lease_duration)),
            renewable: auth.renewable,
            from_login,
        })
    }

    /// Logs in (or looks the configured token up) and says as whom: the token's display name,
    /// policies and TTL as `lookup-self` gives them, or only that Vault took it when its
    /// policies refuse `lookup-self`.
    pub async fn whoami(&self) -> Result<String, BackendError> {
        self.token().await?;
        match self
            .call(reqwest::Method::GET, "auth/token/lookup-self", None)
            .await
        {
            Ok(r) => {
                let data = r.data.unwrap_or_default();
                let text = |k: &str| {
                    data.get(k)
                        .and_then(|v| v.as_str())
                        .unwrap_or("?")
                        .to_owned()
                };
                let policies = data
                    .get("policies")
                    .and_then(|v| v.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|p| p.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                let ttl = data
                    .get("ttl")
                    .and_then(serde_json::Value::as_u64)
                    .filter(|t| *t > 0);
                Ok(format!(
                    "token {:?}, policies [{policies}], {}",
                    text("display_name"),
                    ttl.map_or_else(|| "no TTL".to_owned(), |t| format!("ttl {t}s"))
                ))
            }
            Err(BackendError::Rejected { .. }) => {
                Ok("a token Vault takes (its policies refuse lookup-self)".to_owned())
            }
            Err(e) => Err(e),
        }
    }

    /// Logs in with the federation's AWS identity: a `GetCallerIdentity` request signed for
    /// the STS endpoint of `i.sts`, handed to Vault in the shape Vault's own CLI sends
    /// (`iam_http_request_method`, and base64 of the URL, the body and the headers as JSON).
    #[cfg(feature = "vault-iam")]
    async fn iam_login(
        &self,
        http: &reqwest::Client,
        i: &IamAuth,
    ) -> Result<vaultrs::api::AuthInfo, BackendError> {
        use base64::Engine as _;
        let sts = self.iam.as_ref().ok_or_else(|| {
            unavailable("vault iam login without its AWS identity", String::new())
        })?;
        let credentials = sts.own_credentials().await?;
        let signed = iam_login_request(
            &i.sts,
            i.server_id.as_deref(),
            credentials,
            std::time::SystemTime::now(),
        )
        .map_err(|e| unavailable("the vault iam login could not be signed", e))?;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let body = serde_json::json!({
            "role": i.role,
            "iam_http_request_method": "POST",
            "iam_request_url": b64(signed.url.as_bytes()),
            "iam_request_body": b64(IAM_LOGIN_BODY.as_bytes()),
            "iam_request_headers": b64(signed.headers.to_string().as_bytes()),
        });
        let path = i.path.as_deref().unwrap_or("aws");
        self.direct_login(http, path, &body, "iam login").await
    }

    /// `POST auth/<path>/login` with `body`, without a token; `what` names the login in errors.
    async fn direct_login(
        &self,
        http: &reqwest::Client,
        path: &str,
        body: &serde_json::Value,
        what: &str,
    ) -> Result<vaultrs::api::AuthInfo, BackendError> {
        let mut req = http
            .post(format!("{}/v1/auth/{path}/login", self.address))
            .header("X-Vault-Request", "true")
            .json(body);
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        let (status, bytes) = crate::http::send(BACKEND, req).await?;
        if !status.is_success() {
            return Err(status_error(
                status,
                &format!("{what} at auth/{path}: {}", vault_errors(&bytes)),
            ));
        }
        #[derive(Deserialize)]
        struct Login {
            auth: vaultrs::api::AuthInfo,
        }
        esi_api::json::from_answer::<Login>(&bytes)
            .map(|l| l.auth)
            .map_err(|e| {
                unavailable(
                    &format!("vault's answer could not be read ({what})"),
                    format!("auth/{path}/login: {e}"),
                )
            })
    }

    /// Logs in with the client certificate `http` presents. vaultrs' cert login sends the
    /// role as `cert_name`, which Vault ignores (it reads `name`), so the call is made here.
    async fn cert_login(
        &self,
        http: &reqwest::Client,
        c: &CertAuth,
    ) -> Result<vaultrs::api::AuthInfo, BackendError> {
        let path = c.path.as_deref().unwrap_or("cert");
        let mut body = serde_json::Map::new();
        if let Some(name) = &c.name {
            body.insert("name".to_owned(), name.clone().into());
        }
        self.direct_login(http, path, &body.into(), "cert login")
            .await
    }

    /// Forgets a token Vault refused, so the next call logs in again. Returns whether a
    /// retry can help: the token came from a login, or it is a configured token whose source
    /// now holds another one (rotated: the connection outlives reloads, so the file or variable
    /// is read again here rather than when the configuration is).
    async fn invalidate(&self, token: &SecretString) -> bool {
        let mut guard = self.session.lock().await;
        let Some(s) = guard.as_ref() else {
            return false;
        };
        if s.token.expose_secret() != token.expose_secret() {
            return false;
        }
        let retry = s.from_login
            || match &self.auth {
                VaultAuth::Token(r) => r
                    .read()
                    .is_ok_and(|now| now.expose_secret() != token.expose_secret()),
                _ => false,
            };
        if retry {
            *guard = None;
        }
        retry
    }

    /// Runs a vaultrs call with a valid token; one re-login and retry on `401` or `403`.
    pub async fn with_client<T, F, Fut>(&self, what: &str, f: F) -> Result<T, BackendError>
    where
        F: Fn(VaultClient) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let creds = self.token().await?;
        match f(self.client(&creds.http, creds.token.expose_secret())).await {
            Err(ClientError::APIError {
                code: 401 | 403, ..
            }) if self.invalidate(&creds.token).await => {
                let creds = self.token().await?;
                f(self.client(&creds.http, creds.token.expose_secret()))
                    .await
                    .map_err(|e| map_client_error(what, &e))
            }
            r => r.map_err(|e| map_client_error(what, &e)),
        }
    }

    /// Calls `method path` (relative to `/v1/`) with an optional JSON body; one re-login and
    /// retry on `401` or `403`.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<VaultResponse, BackendError> {
        self.call_detailed(method, path, body)
            .await
            .map_err(|e| e.err)
    }

    /// [`VaultConn::call`], saying on failure what became of the request: whether Vault may
    /// have acted on it, for a caller deciding whether a retry could mint twice.
    pub(crate) async fn call_detailed(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<VaultResponse, CallError> {
        let creds = self.token().await.map_err(CallError::not_sent)?;
        match self.call_once(&method, path, body, &creds).await {
            Err(e)
                if matches!(e.fate, Fate::Status(401 | 403))
                    && self.invalidate(&creds.token).await =>
            {
                let creds = self.token().await.map_err(CallError::not_sent)?;
                self.call_once(&method, path, body, &creds).await
            }
            r => r,
        }
    }

    async fn call_once(
        &self,
        method: &reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
        creds: &Creds,
    ) -> Result<VaultResponse, CallError> {
        let mut url = format!("{}/v1/{}", self.address, path.trim_start_matches('/'));
        if let (Some(b), true) = (body, *method == reqwest::Method::GET) {
            let pairs = query_pairs(b);
            if !pairs.is_empty() {
                let mut ser = reqwest::Url::parse("http://x/")
                    .map_err(|e| CallError::not_sent(unavailable("bad url", e.to_string())))?;
                ser.query_pairs_mut().extend_pairs(pairs);
                url.push('?');
                url.push_str(ser.query().unwrap_or_default());
            }
        }
        let mut req = creds
            .http
            .request(method.clone(), &url)
            .header("X-Vault-Token", creds.token.expose_secret())
            .header("X-Vault-Request", "true");
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(b) = body
            && *method != reqwest::Method::GET
        {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| CallError {
            err: crate::http::transport_error(BACKEND, &e),
            // A connection that could not be made carried no request; any other failure
            // (timeout, reset) may have come after Vault received it.
            fate: if e.is_connect() {
                Fate::NotSent
            } else {
                Fate::Lost
            },
        })?;
        let status = resp.status();
        let bytes = match crate::http::read_body_keeping(BACKEND, resp).await {
            Ok(bytes) => bytes,
            Err((err, _)) if !status.is_success() => {
                return Err(CallError {
                    err,
                    fate: Fate::Status(status.as_u16()),
                });
            }
            Err((err, prefix)) => {
                return Err(CallError {
                    err,
                    fate: Fate::Unreadable(Salvage::from_answer(&prefix)),
                });
            }
        };
        if !status.is_success() {
            let err = status_error(
                status,
                &format!("{method} {path}: {}", vault_errors(&bytes)),
            );
            return Err(CallError {
                err,
                fate: Fate::Status(status.as_u16()),
            });
        }
        if bytes.is_empty() {
            return Ok(VaultResponse::default());
        }
        esi_api::json::from_answer(&bytes).map_err(|e| CallError {
            err: unavailable(
                "vault returned an unreadable response",
                format!("{method} {path}: {e}"),
            ),
            fate: Fate::Unreadable(Salvage::from_answer(&bytes)),
        })
    }
}

/// A token and the client it is used over.
struct Creds {
    token: SecretString,
    http: reqwest::Client,
}

/// A failed call, and what became of the request.
pub(crate) struct CallError {
    /// The failure, classified.
    pub(crate) err: BackendError,
    /// Whether Vault may have acted on the request.
    pub(crate) fate: Fate,
}

impl CallError {
    fn not_sent(err: BackendError) -> Self {
        CallError {
            err,
            fate: Fate::NotSent,
        }
    }
}

/// What became of a request that failed: whether Vault may have acted on it.
pub(crate) enum Fate {
    /// It never reached Vault (no token, the connection could not be made).
    NotSent,
    /// Vault (or something in front of it) answered with this error status.
    Status(u16),
    /// It was sent, and no answer came back (timeout, connection reset): Vault may have
    /// acted on it.
    Lost,
    /// Vault answered success, but the answer could not be read whole (unexpected shape,
    /// cut short, oversized): what could be found in it.
    Unreadable(Salvage),
}

/// The revocable parts found in an answer that could not be read whole. Lease ids, accessors
/// and serial numbers name credentials without being them.
#[derive(Default, PartialEq, Eq)]
pub(crate) struct Salvage {
    /// The top-level `lease_id`.
    pub(crate) lease_id: Option<String>,
    /// `auth.accessor`.
    pub(crate) accessor: Option<String>,
    /// `data.serial_number` (a PKI certificate).
    pub(crate) serial: Option<String>,
}

impl fmt::Debug for Salvage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Salvage")
            .field("lease_id", &self.lease_id.is_some())
            .field("accessor", &self.accessor.is_some())
            .field("serial", &self.serial.is_some())
            .finish()
    }
}

impl Salvage {
    /// Walks `answer`'s JSON as far as it goes (it may be cut short anywhere) and keeps the
    /// string values at `lease_id`, `auth.accessor` and `data.serial_number`; the same keys
    /// deeper down (a secret's own data) are not Vault's and are ignored.
    pub(crate) fn from_answer(answer: &[u8]) -> Self {
        // One open object or array: in an object, the key being read or whose value is.
        struct Open {
            object: bool,
            key: Option<String>,
            want_key: bool,
        }
        let mut open: Vec<Open> = Vec::new();
        let mut found = Salvage::default();
        let mut i = 0;
        while i < answer.len() {
            match answer[i] {
                c @ (b'{' | b'[') => open.push(Open {
                    object: c == b'{',
                    key: None,
                    want_key: c == b'{',
                }),
                b'}' | b']' => {
                    open.pop();
                    if open.is_empty() {
                        break;
                    }
                }
                b',' => {
                    if let Some(o) = open.last_mut().filter(|o| o.object) {
                        o.want_key = true;
                        o.key = None;
                    }
                }
                b':' => {
                    if let Some(o) = open.last_mut() {
                        o.want_key = false;
                    }
                }
                b'"' => {
                    let Some(end) = string_end(answer, i) else {
                        break;
                    };
                    let text = serde_json::from_slice::<String>(&answer[i..=end]).ok();
                    match open.last_mut() {
                        Some(o) if o.object && o.want_key => o.key = text,
                        Some(_) => {
                            let keys: Vec<Option<&str>> =
                                open.iter().map(|o| o.key.as_deref()).collect();
                            let slot = match keys.as_slice() {
                                [Some("lease_id")] => &mut found.lease_id,
                                [Some("auth"), Some("accessor")] => &mut found.accessor,
                                [Some("data"), Some("serial_number")] => &mut found.serial,
                                _ => &mut None,
                            };
                            if slot.is_none() {
                                *slot = text.filter(|t| !t.is_empty());
                            }
                        }
                        None => {}
                    }
                    i = end;
                }
                _ => {}
            }
            i += 1;
        }
        found
    }
}

/// The index of the quote closing the JSON string opening at `start`, if the text holds it.
fn string_end(text: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < text.len() {
        match text[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn read_token_file(j: &JwtAuth) -> Result<SecretString, BackendError> {
    let path = j
        .token_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SA_TOKEN_FILE));
    SecretRef::file(path).read_for(Some(crate::secret::Owner::Kubernetes))
}

/// Vault's `{"errors": [...]}` as one line, for the log.
fn vault_errors(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<String>,
    }
    match serde_json::from_slice::<Errors>(body) {
        Ok(e) => e.errors.join("; "),
        Err(_) => format!("{} byte body", body.len()),
    }
}

fn query_pairs(v: &serde_json::Value) -> Vec<(String, String)> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), value_string(v)))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) use crate::credential::value_string;

/// Whether a Vault error status is worth retrying, by the rule every backend follows (see
/// the crate docs), with Vault's one addition: `401` (the federation's token not accepted),
/// `408`, `412` (Vault's "not now": a performance standby not yet caught up with the request's
/// index), `429` and every 5xx are unavailable; `403` and every other status rejected. Every
/// path that classifies a Vault status (the direct calls and vaultrs' two error shapes) asks
/// this one function.
fn retryable_status(code: u16) -> bool {
    matches!(code, 401 | 408 | 412 | 429 | 500..=599)
}

/// A Vault error status as a backend error, classified by [`retryable_status`].
fn status_error(status: reqwest::StatusCode, summary: &str) -> BackendError {
    let detail = format!("{BACKEND} returned {status}: {summary}");
    match status.as_u16() {
        412 => unavailable(
            &format!("{BACKEND} returned 412 (not caught up yet)"),
            detail,
        ),
        401 => unavailable(
            &format!("{BACKEND} did not accept the federation's token (401)"),
            detail,
        ),
        code if retryable_status(code) => {
            unavailable(&format!("{BACKEND} returned {code}"), detail)
        }
        code => BackendError::Rejected {
            message: format!("{BACKEND} refused the request ({code})"),
            detail,
        },
    }
}

fn unavailable(message: &str, detail: String) -> BackendError {
    BackendError::Unavailable {
        message: message.to_owned(),
        detail,
    }
}

fn client_error_summary(e: &ClientError) -> String {
    match e {
        ClientError::APIError { code, errors } => format!("status {code}: {}", errors.join("; ")),
        ClientError::RestClientError { source } => format!("{e}: {source}"),
        other => other.to_string(),
    }
}

/// Classifies a vaultrs failure; an error status by [`retryable_status`].
pub(crate) fn map_client_error(what: &str, e: &ClientError) -> BackendError {
    let detail = format!("{what}: {}", client_error_summary(e));
    match e {
        ClientError::APIError { code, .. }
        | ClientError::RestClientError {
            source: rustify::errors::ClientError::ServerResponseError { code, .. },
        } => match *code {
            401 => BackendError::Unavailable {
                message: format!("vault did not accept the federation's token (401, {what})"),
                detail,
            },
            code if retryable_status(code) => BackendError::Unavailable {
                message: format!("vault returned {code} ({what})"),
                detail,
            },
            code => BackendError::Rejected {
                message: format!("vault refused the request ({what}, status {code})"),
                detail,
            },
        },
        // Something answered, but not what Vault answers (a wrong `server`, a proxy's page).
        // The parse error's own cause stays out of the detail: serde quotes the values it
        // could not read, and a Vault answer can hold a secret.
        ClientError::RestClientError {
            source:
                rustify::errors::ClientError::ResponseParseError { .. }
                | rustify::errors::ClientError::ResponseConversionError { .. },
        }
        | ClientError::JsonParseError { .. }
        | ClientError::ResponseEmptyError
        | ClientError::ResponseDataEmptyError => BackendError::Unavailable {
            message: format!("vault's answer could not be read ({what})"),
            detail,
        },
        _ => BackendError::Unavailable {
            message: format!("vault could not be reached ({what})"),
            detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Why `provider` (the `vault` key's value, as JSON) is refused: the field and the text.
    fn refusal(provider: serde_json::Value) -> String {
        let p: VaultProvider = serde_json::from_value(provider).expect("well-formed");
        p.validate().expect_err("refused").to_string()
    }

    #[test]
    fn cert_login_needs_tls_two_sources_and_a_named_role() {
        let pair = serde_json::json!({"clientCert": {"file": "/etc/esi/tls.crt"},
            "clientKey": {"file": "/etc/esi/tls.key"}});
        let ok = serde_json::json!({"server": "https://vault:8200", "auth": {"cert": pair}});
        serde_json::from_value::<VaultProvider>(ok)
            .expect("well-formed")
            .validate()
            .expect("a certificate login over TLS");
        let plain = refusal(serde_json::json!({"server": "http://127.0.0.1:8200",
            "auth": {"cert": pair}}));
        assert!(
            plain.contains("provider.vault.server") && plain.contains("TLS handshake"),
            "{plain}"
        );
        let same = refusal(
            serde_json::json!({"server": "https://vault", "auth": {"cert": {
            "clientCert": {"file": "/etc/esi/tls.pem"}, "clientKey": {"file": "/etc/esi/tls.pem"}}}}),
        );
        assert!(
            same.contains("clientKey") && same.contains("same source"),
            "{same}"
        );
        let mut unnamed = pair.clone();
        unnamed["name"] = "".into();
        let unnamed =
            refusal(serde_json::json!({"server": "https://vault", "auth": {"cert": unnamed}}));
        assert!(
            unnamed.contains("provider.vault.auth.cert.name"),
            "{unnamed}"
        );
        let mut reserved = pair.clone();
        reserved["clientKey"] = serde_json::json!({"file": "/proc/self/environ"});
        let reserved =
            refusal(serde_json::json!({"server": "https://vault", "auth": {"cert": reserved}}));
        assert!(reserved.contains("clientKey.file"), "{reserved}");
    }

    #[test]
    fn an_auth_mount_path_stays_under_auth() {
        for (method, auth) in [
            (
                "cert",
                serde_json::json!({"cert": {"path": "../sys/x", "clientCert": {"env": "C"},
                "clientKey": {"env": "K"}}}),
            ),
            (
                "appRole",
                serde_json::json!({"appRole": {"path": "a//b", "roleId": "r",
                "secretIdRef": {"env": "S"}}}),
            ),
            (
                "jwt",
                serde_json::json!({"jwt": {"path": "jwt/./x", "role": "r"}}),
            ),
            (
                "kubernetes",
                serde_json::json!({"kubernetes": {"path": "k8s?x=1", "role": "r"}}),
            ),
        ] {
            let e = refusal(serde_json::json!({"server": "https://vault", "auth": auth}));
            assert!(
                e.contains(&format!("provider.vault.auth.{method}.path")),
                "{e}"
            );
        }
        for good in ["jwt", "clusters/eu-west-1.prod", "k8s_a-b"] {
            assert!(is_mount_path(good), "{good}");
        }
    }

    /// The signed request of an IAM login, held to what botocore's `SigV4Auth` signs for the
    /// same request, credentials and time (the headers and signature below are botocore's).
    #[cfg(feature = "vault-iam")]
    #[test]
    fn an_iam_login_is_signed_as_botocore_signs_it() {
        let sts: crate::aws::AwsProvider =
            serde_json::from_value(serde_json::json!({"region": "eu-west-1"})).unwrap();
        let credentials = aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("session-token-1".to_owned()),
            None,
            "test",
        );
        let time = std::time::UNIX_EPOCH + Duration::from_secs(1_796_184_088);
        let signed =
            iam_login_request(&sts, Some("vault.example.com"), credentials.clone(), time).unwrap();
        assert_eq!(signed.url, "https://sts.eu-west-1.amazonaws.com/");
        assert_eq!(
            signed.headers,
            serde_json::json!({
                "Content-Type": ["application/x-www-form-urlencoded; charset=utf-8"],
                "X-Vault-AWS-IAM-Server-ID": ["vault.example.com"],
                "x-amz-date": ["20261202T040128Z"],
                "x-amz-security-token": ["session-token-1"],
                "authorization": ["AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261202/eu-west-1/sts/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-vault-aws-iam-server-id, Signature=4e01a8c7ab60c5b8721064548f30d752f6d2f638cafbf3e445594a96a10d492d"],
            })
        );
        // us-east-1 is Vault's default, the global endpoint; an endpoint given is kept.
        let global: crate::aws::AwsProvider =
            serde_json::from_value(serde_json::json!({"region": "us-east-1"})).unwrap();
        let url = |p| {
            iam_login_request(p, None, credentials.clone(), time)
                .unwrap()
                .url
        };
        assert_eq!(url(&global), "https://sts.amazonaws.com/");
        let vpc: crate::aws::AwsProvider = serde_json::from_value(serde_json::json!({
            "region": "eu-west-1", "endpoint": "https://vpce-1.sts.eu-west-1.vpce.amazonaws.com"
        }))
        .unwrap();
        assert_eq!(
            url(&vpc),
            "https://vpce-1.sts.eu-west-1.vpce.amazonaws.com/"
        );
        let china: crate::aws::AwsProvider =
            serde_json::from_value(serde_json::json!({"region": "cn-north-1"})).unwrap();
        assert_eq!(url(&china), "https://sts.cn-north-1.amazonaws.com.cn/");
    }

    #[cfg(feature = "vault-iam")]
    #[test]
    fn an_iam_login_names_its_sts_fields() {
        let e = refusal(
            serde_json::json!({"server": "https://vault", "auth": {"iam": {
            "role": "esi", "sts": {"region": "EU"}}}}),
        );
        assert!(
            e.contains("provider.vault.auth.iam.sts") && e.contains("region"),
            "{e}"
        );
        let e = refusal(
            serde_json::json!({"server": "https://vault", "auth": {"iam": {
            "role": "esi", "serverId": "a b", "sts": {"region": "eu-west-1"}}}}),
        );
        assert!(e.contains("provider.vault.auth.iam.serverId"), "{e}");
    }

    #[test]
    fn a_userpass_name_stays_in_its_path_segment() {
        for bad in ["", "../sys", "a/b", "a b", "a?x=1", "%2e%2e"] {
            let e = refusal(
                serde_json::json!({"server": "https://vault", "auth": {"userPass": {
                "username": bad, "passwordRef": {"env": "VAULT_PASSWORD"}}}}),
            );
            assert!(
                e.contains("provider.vault.auth.userPass.username"),
                "{bad:?}: {e}"
            );
        }
        let e = refusal(
            serde_json::json!({"server": "https://vault", "auth": {"userPass": {
            "path": "up/", "username": "esi", "passwordRef": {"env": "VAULT_PASSWORD"}}}}),
        );
        assert!(e.contains("provider.vault.auth.userPass.path"), "{e}");
    }

    /// The rule, status by status, for every path a Vault status takes: the direct calls'
    /// [`status_error`] and vaultrs' `APIError` (errors parsed) and `ServerResponseError`
    /// (errors not parsed).
    #[test]
    fn vault_statuses_follow_the_backend_error_rule_on_every_path() {
        const UNAVAILABLE: bool = true;
        const REJECTED: bool = false;
        let table = [
            (400, REJECTED),
            (401, UNAVAILABLE), // the federation's own token not accepted
            (403, REJECTED),    // permission denied (after one re-login)
            (404, REJECTED),
            (405, REJECTED),
            (408, UNAVAILABLE), // a timeout
            (409, REJECTED),
            (412, UNAVAILABLE), // a standby not caught up yet
            (413, REJECTED),
            (422, REJECTED),
            (429, UNAVAILABLE),
            (451, REJECTED),
            (500, UNAVAILABLE),
            (502, UNAVAILABLE),
            (503, UNAVAILABLE),
            (504, UNAVAILABLE),
            (599, UNAVAILABLE),
        ];
        for (code, want) in table {
            let status = reqwest::StatusCode::from_u16(code).unwrap();
            let api = ClientError::APIError {
                code,
                errors: vec!["permission denied".into()],
            };
            let raw = ClientError::RestClientError {
                source: rustify::errors::ClientError::ServerResponseError {
                    code,
                    content: Some("<html>".into()),
                },
            };
            for (path, err) in [
                ("status_error", status_error(status, "GET x: errors")),
                ("APIError", map_client_error("x", &api)),
                ("ServerResponseError", map_client_error("x", &raw)),
            ] {
                let unavailable = match &err {
                    BackendError::Unavailable { .. } => true,
                    BackendError::Rejected { .. } => false,
                    BackendError::Invalid(_) => panic!("{code} {path}: {err:?}"),
                };
                assert_eq!(unavailable, want, "{code} by {path}: {err:?}");
                assert!(err.to_string().contains(&code.to_string()), "{err}");
            }
            assert_eq!(retryable_status(code), want, "{code}");
        }
    }

    #[test]
    fn a_412_is_vault_not_caught_up_yet_not_a_refusal() {
        let not_yet = status_error(reqwest::StatusCode::PRECONDITION_FAILED, "PUT x: index");
        assert!(
            matches!(not_yet, BackendError::Unavailable { .. }),
            "{not_yet:?}"
        );
        let api = map_client_error(
            "x",
            &ClientError::APIError {
                code: 412,
                errors: vec![],
            },
        );
        assert!(matches!(api, BackendError::Unavailable { .. }), "{api:?}");
        let refused = status_error(reqwest::StatusCode::FORBIDDEN, "PUT x: denied");
        assert!(
            matches!(refused, BackendError::Rejected { .. }),
            "{refused:?}"
        );
    }

    fn salvage(text: &str) -> (Option<String>, Option<String>, Option<String>) {
        let s = Salvage::from_answer(text.as_bytes());
        (s.lease_id, s.accessor, s.serial)
    }

    #[test]
    fn salvages_revocable_parts_of_a_whole_answer() {
        let answer = r#"{"request_id":"r","lease_id":"database/creds/ro/abc","renewable":true,
            "lease_duration":60,"data":{"username":"u","password":"p\"w","serial_number":"0a:0b"},
            "auth":{"client_token":"s.x","accessor":"acc1","policies":["default"]}}"#;
        assert_eq!(
            salvage(answer),
            (
                Some("database/creds/ro/abc".into()),
                Some("acc1".into()),
                Some("0a:0b".into())
            )
        );
    }

    #[test]
    fn salvages_what_precedes_the_cut_of_a_truncated_answer() {
        let answer = r#"{"request_id":"r","lease_id":"pki/issue/web/xyz","renewable":false,"data":{"certificate":"-----BEGIN CERT"#;
        assert_eq!(
            salvage(answer),
            (Some("pki/issue/web/xyz".into()), None, None)
        );
        // Cut inside the lease id itself: nothing half-read is trusted.
        assert_eq!(salvage(r#"{"lease_id":"pki/iss"#), (None, None, None));
    }

    #[test]
    fn ignores_the_same_keys_inside_a_secret() {
        // A KV secret may hold keys named like Vault's; an escaped quote may imitate a key.
        let answer = r#"{"lease_id":"","data":{"lease_id":"x/y","auth":{"accessor":"a"},
            "note":"\"lease_id\":\"fake\"","list":[{"serial_number":"s"}],
            "data":{"serial_number":"nested"}},"auth":null}"#;
        assert_eq!(salvage(answer), (None, None, None));
        assert_eq!(salvage("<html>bad gateway</html>"), (None, None, None));
        assert_eq!(salvage(r#"["lease_id","x"]"#), (None, None, None));
    }

    #[test]
    fn response_debug_names_keys_not_values() {
        let resp: VaultResponse = serde_json::from_value(serde_json::json!({
            "lease_id": "database/creds/ro/abc",
            "lease_duration": 60,
            "renewable": true,
            "data": {"username": "v-user-1", "password": "db-pass-s3cr3t"},
            "auth": {"client_token": "hvs.token-s3cr3t", "accessor": "acc-s3cr3t"},
        }))
        .unwrap();
        let shown = format!("{resp:?}");
        for key in ["username", "password", "client_token", "accessor"] {
            assert!(shown.contains(key), "{key} missing: {shown}");
        }
        for value in ["v-user-1", "s3cr3t"] {
            assert!(!shown.contains(value), "{value} shown: {shown}");
        }
        assert!(format!("{:#?}", VaultResponse::default()).contains("data_keys: None"));
    }

    #[test]
    fn salvage_debug_shows_no_values() {
        let s = Salvage::from_answer(br#"{"lease_id":"database/creds/ro/abc"}"#);
        let shown = format!("{s:?}");
        assert!(!shown.contains("abc"), "{shown}");
        assert!(shown.contains("lease_id: true"), "{shown}");
    }
}
