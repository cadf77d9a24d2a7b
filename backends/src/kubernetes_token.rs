//! `KubernetesServiceAccountToken`: a token of a ServiceAccount in another Kubernetes cluster
//! (the TokenRequest API), so a workload in any registered cluster can act on that cluster's
//! API as that ServiceAccount: a deploy job, an operator managing remote clusters, a CI runner,
//! with no long-lived kubeconfig anywhere. Plus the `kubernetes` SecretStore provider: the
//! target cluster's API server and the federation's own credential there.
//!
//! A mint is one call, `POST /api/v1/namespaces/{namespace}/serviceaccounts/{name}/token` with
//! a `TokenRequest` (`spec.audiences`, `spec.expirationSeconds`), as `kubectl create token`
//! makes it. The token is a bound ServiceAccount token signed by that cluster: its RBAC is the
//! ServiceAccount's, and its `sub` is `system:serviceaccount:<namespace>:<name>`.
//!
//! The ServiceAccount's namespace and name may use the caller's identity
//! (`namespace: "{{namespace}}"`, `name: "{{serviceAccount}}"`: each workload acts as its twin
//! in the target cluster), checked once rendered as a namespace (an RFC 1123 label) and a
//! ServiceAccount name (an RFC 1123 subdomain), so a rendered value cannot reach another path.
//!
//! The token lives `expiration` (default `1h`), lowered to the Authorization's `maxTTL`; the
//! API server refuses anything under ten minutes, so a `maxTTL` under ten minutes is refused
//! before anything is asked. `expiresAt` is the API server's `status.expirationTimestamp`
//! (`--service-account-max-token-expiration` may shorten it); a token outliving `maxTTL`
//! anyway is dropped, never handed out.
//!
//! A plain token cannot be revoked: the API server refuses a ServiceAccount token before its
//! expiry only when the object it is bound to is gone. With `revocable: true` each token is
//! bound to an object made for it: an empty, immutable Secret `esi-token-<random>` of type
//! `esi.dev/token-binding` in the ServiceAccount's namespace (labelled
//! `app.kubernetes.io/managed-by: esi-federation`, annotated with the ServiceAccount, the caller
//! and the token's expiry), created first and named with its UID in the TokenRequest's
//! `boundObjectRef`. The lease names that Secret; revoking deletes it (with a UID
//! precondition, so a later Secret of the same name is never touched), and the API server
//! refuses the token from then on. A token that cannot be handed out has its Secret deleted at
//! once. This needs `create` and `delete` on `secrets` in that namespace too.
//!
//! Tokens never revoked (a Pod killed before its revoke-on-exit, a caller that does not
//! revoke) must not leave their Secrets behind, yet the federation keeps no state and may not
//! list Secrets (that would read them all). So Kubernetes' garbage collector does it: each
//! binding Secret is owned (`ownerReferences`) by an **anchor**, a Lease
//! `esi-token-bindings-<YYYYMMDD>` in the same namespace for the UTC day its token expires
//! (Leases hold no secret). A replica creates the day's anchor on its first revocable token
//! there, or on a `409` reads the UID of the one another replica made, and keeps it for five
//! minutes. Once a day per namespace, after a revocable token, it deletes the anchors of the
//! last seven days that ended over an hour ago (`propagationPolicy: Background`): the garbage
//! collector deletes their Secrets, whose tokens had all expired. A token the API server
//! makes to outlive its anchor's day is revoked, not handed out. Deleting an anchor by hand
//! revokes every token of that day in the namespace at once; a replica that knew it binds
//! new tokens to it, dead on arrival, for up to five minutes. Without rights on `leases` the
//! token is still minted, its Secret unowned (as before anchors), and a warning logged. This
//! needs `create`, `get` and `delete` on `leases` (`coordination.k8s.io`) too.
//!
//! The credential: `token`; `server` (the store's); `namespace` and `serviceAccount` (the
//! rendered names); `kubeconfig`, a whole kubeconfig (JSON, which kubectl and every client read
//! as YAML) with the server, the store's `caBundle` when it has one, the token, and the
//! namespace as its context's default, so `kubectl --kubeconfig` needs nothing else;
//! `esi.dev/refresh` keeps the file's token fresh.
//!
//! The federation's credential in the target cluster needs `create` on
//! `serviceaccounts/token` for those ServiceAccounts (a Role per namespace, `resourceNames`
//! narrowing it to them). It is either a bearer token read from a file or the environment on
//! every call (`auth.token`), or (`auth.selfIssued`) a token the federation signs for itself
//! (`sub` `esi-federation`, `aud` the server's URL unless `audience` says otherwise, five
//! minutes), which an API server trusts through a JWT authenticator of its structured
//! authentication configuration (Kubernetes 1.30+) naming the federation's issuer URL: then
//! the federation holds no secret for that cluster at all.
//!
//! ```yaml
//! kind: SecretStore
//! spec:
//!   provider:
//!     kubernetes:
//!       server: https://api.prod-eu.example:6443
//!       caBundle: |                     # the API server's CA (PEM)
//!         -----BEGIN CERTIFICATE-----
//!         ...
//!       auth:
//!         selfIssued: {}                # or token: {file: /var/run/secrets/prod-eu/token}
//! ---
//! kind: KubernetesServiceAccountToken
//! spec:
//!   secretStoreRef: {name: prod-eu}
//!   serviceAccount: {namespace: deploy, name: "ci-{{namespace}}"}
//!   audiences: []                       # default: the API server's own
//!   expiration: 30m
//!   revocable: true                     # bind each token to a Secret the lease deletes
//! ```
//!
//! And in the target cluster's `AuthenticationConfiguration` (`--authentication-config`) for
//! `selfIssued`:
//!
//! ```yaml
//! jwt:
//!   - issuer: {url: https://esi.example.com, audiences: [https://api.prod-eu.example:6443]}
//!     claimMappings: {username: {claim: sub, prefix: "esi:"}}
//! ```
//!
//! with RBAC granting `create` on `serviceaccounts/token` to the user `esi:esi-federation`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use kube::CustomResource;
use reqwest::Url;
use reqwest::header::HeaderValue;
use schemars::JsonSchema;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::http::locked;
use crate::identity::Issuer;
use crate::store::SecretStoreRef;
use crate::template::Template;
use crate::{
    BackendError, Context, Credential, Generate, LeaseHandle, SecretRef, SecretStoreSpec, SpecError,
};

const BACKEND: &str = "Kubernetes API server";

/// How long a token lives when the generator sets no `expiration`.
pub const DEFAULT_EXPIRATION: Duration = Duration::from_secs(3600);
/// The shortest token the API server issues (`expirationSeconds` under 600 is invalid).
pub const MIN_EXPIRATION: Duration = Duration::from_secs(600);
/// The longest token the generator asks for (the API server may cap it lower).
pub const MAX_EXPIRATION: Duration = Duration::from_secs(48 * 3600);
/// The most audiences a generator may ask for.
pub const MAX_AUDIENCES: usize = 10;
/// The longest audience taken.
pub const MAX_AUDIENCE_LEN: usize = 512;
/// The longest token passed on (a ServiceAccount token is about 1 KB).
const MAX_TOKEN: usize = 16 * 1024;
/// The user the kubeconfig gives the token.
const KUBECONFIG_USER: &str = "esi";

/// What a token outliving maxTTL is called and what became of it.
const OVER_MAX_TTL: (&str, &str, &str) = (
    "the ServiceAccount token",
    "it was dropped, not handed out (a token bound to no object cannot be revoked)",
    "kubernetes",
);

/// The same, for a token bound to a Secret (deleted, so the token is void).
const OVER_MAX_TTL_BOUND: (&str, &str, &str) = (
    "the ServiceAccount token",
    "it was revoked (its binding Secret deleted), not handed out",
    "kubernetes",
);

/// The `kubernetes` SecretStore provider: a cluster's API server and the federation's
/// credential there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesProvider {
    /// The API server's URL (`https://api.cluster.example:6443`). `http://` only for a
    /// loopback address (a local fake).
    pub server: String,
    /// The cluster's CA (PEM), the only certificates then trusted for the API server (as a
    /// kubeconfig's `certificate-authority-data`), and handed to the workload in its
    /// kubeconfig. Without it, the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// The federation's credential at the API server: exactly one of `token`, `selfIssued` or
    /// `cert`.
    #[serde(deserialize_with = "crate::choice::one_of")]
    pub auth: KubernetesAuth,
    /// Timeout of each call (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

/// How the federation authenticates to the API server (exactly one key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum KubernetesAuth {
    /// A bearer token (a ServiceAccount token of that cluster, an OIDC token it trusts), read
    /// on every call: a rotated file needs no restart.
    Token(SecretRef),
    /// A token the federation signs for itself with its own issuer (`sub` `esi-federation`),
    /// which the API server trusts through its structured authentication configuration.
    SelfIssued(SelfIssuedLogin),
    /// A client certificate, presented in the TLS handshake of every call: the API server
    /// takes its common name as the user and its organizations as the groups (`server` must be
    /// `https://`).
    Cert(KubernetesCertAuth),
}

/// The federation's client certificate at the API server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesCertAuth {
    /// The certificate (PEM, then any intermediates), read on every call: a renewed
    /// certificate needs no restart.
    pub client_cert: SecretRef,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1), read with it.
    pub client_key: SecretRef,
}

/// The federation's own token for the API server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelfIssuedLogin {
    /// The token's `aud`, which the API server's JWT authenticator lists (default: `server`
    /// without a trailing `/`). No workload may be given an `IdentityToken` for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

impl KubernetesProvider {
    /// The server's URL as the workload gets it: `server` without a trailing `/`.
    fn address(&self) -> &str {
        self.server.trim_end_matches('/')
    }

    /// The audience of the federation's own token, when it logs in with one.
    pub fn self_issued_audience(&self) -> Option<&str> {
        match &self.auth {
            KubernetesAuth::SelfIssued(s) => Some(s.audience.as_deref().unwrap_or(self.address())),
            KubernetesAuth::Token(_) | KubernetesAuth::Cert(_) => None,
        }
    }

    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        let url = crate::http::base_url(&self.server, "provider.kubernetes.server")?;
        if url.path() != "/" {
            return Err(SpecError::field(
                "provider.kubernetes.server",
                format!(
                    "{:?} has a path; an API server is named by its scheme, host and port",
                    self.server
                ),
            ));
        }
        match &self.auth {
            KubernetesAuth::Token(r) => r.validate_for(
                "provider.kubernetes.auth.token",
                Some(crate::secret::Owner::Kubernetes),
            )?,
            KubernetesAuth::SelfIssued(s) => {
                if let Some(a) = &s.audience {
                    check_audience(a, "provider.kubernetes.auth.selfIssued.audience")?;
                }
            }
            KubernetesAuth::Cert(c) => crate::http::check_client_cert(
                &c.client_cert,
                &c.client_key,
                "provider.kubernetes.auth.cert",
                (url.scheme() != "https").then_some(("provider.kubernetes.server", &self.server)),
            )?,
        }
        if self.timeout.is_some_and(|t| t.get().is_zero()) {
            return Err(SpecError::field(
                "provider.kubernetes.timeout",
                "must be positive",
            ));
        }
        if let Some(pem) = &self.ca_bundle {
            crate::http::check_ca_bundle(pem, "provider.kubernetes.caBundle")?;
        }
        Ok(())
    }
}

/// Why `audience` cannot be a token audience.
fn check_audience(audience: &str, field: &str) -> Result<(), SpecError> {
    if audience.is_empty()
        || audience.len() > MAX_AUDIENCE_LEN
        || audience
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(SpecError::field(
            field,
            format!(
                "{audience:?} is not an audience (1 to {MAX_AUDIENCE_LEN} characters, no \
                 whitespace or control characters)"
            ),
        ));
    }
    Ok(())
}

/// The ServiceAccount whose tokens a generator mints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetServiceAccount {
    /// Its namespace in the target cluster; may use the caller's identity (`{{namespace}}`).
    pub namespace: String,
    /// Its name; may use the caller's identity (`{{serviceAccount}}`).
    pub name: String,
}

/// `spec` of a `KubernetesServiceAccountToken` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "KubernetesServiceAccountToken",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesServiceAccountTokenSpec {
    /// The `kubernetes` SecretStore (the target cluster's API server and the federation's
    /// credential there).
    pub secret_store_ref: SecretStoreRef,
    /// The ServiceAccount the token is for.
    pub service_account: TargetServiceAccount,
    /// The token's audiences (default: none given, so the API server's own: its API).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// How long the token lives (default `1h`, at least `10m`, at most `48h`), lowered to the
    /// Authorization's `maxTTL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<HumanDuration>,
    /// Bind each token to a Secret made for it (`esi-token-*`, empty, in the ServiceAccount's
    /// namespace), deleted when the lease is revoked: the API server then refuses the token.
    /// Each Secret is owned by the Lease `esi-token-bindings-<YYYYMMDD>` of the day its token
    /// expires, which the federation deletes once that day is over, so Kubernetes' garbage
    /// collector deletes the Secrets of tokens never revoked. The federation also needs
    /// `create` and `delete` on `secrets` there, and `create`, `get` and `delete` on `leases`
    /// (`coordination.k8s.io`; without them the Secrets stay after their tokens expire).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revocable: bool,
}

impl KubernetesServiceAccountTokenSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.target()?;
        if self.audiences.len() > MAX_AUDIENCES {
            return Err(SpecError::field(
                "audiences",
                format!("at most {MAX_AUDIENCES} audiences"),
            ));
        }
        for (i, a) in self.audiences.iter().enumerate() {
            check_audience(a, &format!("audiences[{i}]"))?;
            if self.audiences[..i].contains(a) {
                return Err(SpecError::field(
                    format!("audiences[{i}]"),
                    format!("{a:?} is listed twice"),
                ));
            }
        }
        if let Some(e) = self.expiration.map(HumanDuration::get)
            && !(MIN_EXPIRATION..=MAX_EXPIRATION).contains(&e)
        {
            return Err(SpecError::field(
                "expiration",
                format!(
                    "{} is outside 10m..48h (the API server issues no token under ten minutes)",
                    humantime::format_duration(e)
                ),
            ));
        }
        Ok(())
    }

    /// The ServiceAccount's namespace and name, as templates.
    fn target(&self) -> Result<ObjectName, SpecError> {
        ObjectName::parse(
            &self.service_account.namespace,
            &self.service_account.name,
            "serviceAccount.",
            "ServiceAccount",
        )
    }
}

/// The namespace and name of an object a generator reaches, as templates over the caller's
/// identity: their own text is checked at load (a character a Kubernetes name cannot hold
/// fails then), the rendered whole per request, so a rendered value cannot reach another path.
#[derive(Debug)]
pub(crate) struct ObjectName {
    namespace: Template,
    name: Template,
    /// What the object is, for messages (`ServiceAccount`, `Secret`).
    what: &'static str,
    /// The fields' prefix in the spec (`serviceAccount.`, or none).
    prefix: &'static str,
}

impl ObjectName {
    /// Parses and checks `namespace` and `name`, the spec fields `{prefix}namespace` and
    /// `{prefix}name` of an object of kind `what`.
    pub(crate) fn parse(
        namespace: &str,
        name: &str,
        prefix: &'static str,
        what: &'static str,
    ) -> Result<Self, SpecError> {
        let check = |src: &str, field: String, ok: fn(&str) -> bool, rule: String| {
            let t = Template::parse(src, &field)?;
            if !ok(&t.sample()) {
                return Err(SpecError::field(field, format!("{src:?} is not {rule}")));
            }
            Ok(t)
        };
        Ok(ObjectName {
            namespace: check(
                namespace,
                format!("{prefix}namespace"),
                esi_api::inject::is_dns_label,
                "a namespace (lowercase letters, digits and `-`, at most 63)".to_owned(),
            )?,
            name: check(
                name,
                format!("{prefix}name"),
                esi_api::inject::is_dns_subdomain,
                format!("a {what} name (lowercase letters, digits, `-` and `.`, at most 253)"),
            )?,
            what,
            prefix,
        })
    }

    /// The namespace and name for this request, rendered and checked.
    pub(crate) fn render(&self, ctx: &Context<'_>) -> Result<(String, String), BackendError> {
        let namespace = self.namespace.render(ctx, str::to_owned);
        let name = self.name.render(ctx, str::to_owned);
        let bad = |field: &str, value: &str| BackendError::Rejected {
            message: format!(
                "the generator's {} {field} for this caller, {value:?}, is not a Kubernetes name",
                self.what
            ),
            detail: format!("{BACKEND}: rendered {}{field} {value:?}", self.prefix),
        };
        if !esi_api::inject::is_dns_label(&namespace) {
            return Err(bad("namespace", &namespace));
        }
        if !esi_api::inject::is_dns_subdomain(&name) {
            return Err(bad("name", &name));
        }
        Ok((namespace, name))
    }
}

/// A store's API server: the HTTP client, the URL, the CA handed on and the credential.
pub struct KubernetesConn {
    http: reqwest::Client,
    base: Url,
    address: String,
    /// The store's `caBundle` as a kubeconfig's `certificate-authority-data` (base64 of the PEM).
    ca_data: Option<String>,
    proof: Proof,
    /// What this replica knows of the anchors of revocable tokens' binding Secrets.
    anchors: Anchors,
}

/// How the federation proves itself to the API server.
enum Proof {
    Token(SecretRef),
    /// The audience of its own token and its issuer (`None` where the configuration is only
    /// checked).
    SelfIssued(String, Option<Arc<Issuer>>),
    /// The clients presenting its certificate, used instead of the connection's `http`.
    Cert(crate::http::CertClient),
}

impl fmt::Debug for KubernetesConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubernetesConn")
            .field("server", &self.address)
            .finish_non_exhaustive()
    }
}

impl KubernetesConn {
    /// Prepares the connection (the credential is read, or signed, on each use).
    pub(crate) fn new(
        p: &KubernetesProvider,
        issuer: &crate::IssuerSlot,
    ) -> Result<Self, SpecError> {
        p.validate()?;
        let timeout = p
            .timeout
            .map_or(crate::http::DEFAULT_TIMEOUT, HumanDuration::get);
        // Like a kubeconfig's certificate-authority-data: the cluster's CA only, when given.
        let trust = p.ca_bundle.as_deref().map_or(
            crate::http::Trust::System { extra: None },
            crate::http::Trust::Only,
        );
        let proof = match &p.auth {
            KubernetesAuth::Token(r) => Proof::Token(r.clone()),
            KubernetesAuth::SelfIssued(_) => Proof::SelfIssued(
                p.self_issued_audience().unwrap_or_default().to_owned(),
                issuer.for_build("a kubernetes SecretStore logging in with auth.selfIssued")?,
            ),
            KubernetesAuth::Cert(c) => Proof::Cert(crate::http::CertClient::new(
                &c.client_cert,
                &c.client_key,
                "provider.kubernetes.auth.cert",
                trust,
                "provider.kubernetes.caBundle",
                timeout,
            )?),
        };
        Ok(KubernetesConn {
            http: crate::http::client_trusting(
                trust,
                timeout,
                "provider.kubernetes.caBundle",
                |b| b,
            )?,
            base: crate::http::base_url(&p.server, "provider.kubernetes.server")?,
            address: p.address().to_owned(),
            ca_data: p
                .ca_bundle
                .as_deref()
                .map(|pem| base64::engine::general_purpose::STANDARD.encode(pem.trim())),
            proof,
            anchors: Anchors::default(),
        })
    }

    /// A request to the API server (`path` relative to its URL) with the federation's
    /// credential, and a JSON body when given.
    pub(crate) fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<reqwest::RequestBuilder, BackendError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| BackendError::Unavailable {
                message: "the kubernetes store's server URL cannot be used".to_owned(),
                detail: format!("{BACKEND}: {e}"),
            })?;
        let http = match &self.proof {
            Proof::Cert(c) => c.client()?,
            _ => self.http.clone(),
        };
        let mut req = http
            .request(method, url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(bearer) = self.authorization()? {
            req = req.header(reqwest::header::AUTHORIZATION, bearer);
        }
        Ok(match body {
            Some(body) => req.json(body),
            None => req,
        })
    }

    /// Who the API server takes the federation for (`kubectl auth whoami`: a
    /// `SelfSubjectReview`, which every authenticated user may make): its user name and
    /// groups.
    pub async fn whoami(&self) -> Result<String, BackendError> {
        let review = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
        });
        let req = self.request(
            reqwest::Method::POST,
            "apis/authentication.k8s.io/v1/selfsubjectreviews",
            Some(&review),
        )?;
        let (status, body) = crate::http::send(BACKEND, req).await?;
        if !status.is_success() {
            return Err(crate::http::status_error(
                BACKEND,
                status,
                &status_said(&body),
            ));
        }
        #[derive(Deserialize)]
        struct Review {
            status: ReviewStatus,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct ReviewStatus {
            user_info: UserInfo,
        }
        #[derive(Deserialize)]
        struct UserInfo {
            username: String,
            #[serde(default)]
            groups: Vec<String>,
        }
        let review: Review =
            esi_api::json::from_answer(&body).map_err(|e| BackendError::Unavailable {
                message: format!("the {BACKEND}'s SelfSubjectReview could not be read"),
                detail: format!("{BACKEND}: {e}"),
            })?;
        let user = review.status.user_info;
        Ok(format!(
            "user {:?}, groups [{}]",
            user.username,
            user.groups.join(", ")
        ))
    }

    /// The server's URL as the workload gets it (no trailing `/`).
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// The `Authorization` header, read or signed now (none with a certificate).
    fn authorization(&self) -> Result<Option<HeaderValue>, BackendError> {
        let token: SecretString = match &self.proof {
            Proof::Token(r) => r.read_for(Some(crate::secret::Owner::Kubernetes))?,
            Proof::SelfIssued(audience, issuer) => {
                crate::identity::own_login_token(issuer.as_ref(), audience)?
            }
            Proof::Cert(_) => return Ok(None),
        };
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .map_err(|_| BackendError::Unavailable {
                message: "the federation's Kubernetes credentials cannot be used".to_owned(),
                detail: format!(
                    "{BACKEND}: the token {} is not a valid header value",
                    match &self.proof {
                        Proof::Token(r) => format!("from {}", r.describe()),
                        Proof::SelfIssued(..) | Proof::Cert(_) => {
                            "the federation signed".to_owned()
                        }
                    }
                ),
            })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

/// The built `KubernetesServiceAccountToken` generator.
#[derive(Debug)]
pub struct KubernetesServiceAccountTokenGenerator {
    spec: KubernetesServiceAccountTokenSpec,
    target: ObjectName,
    conn: Arc<KubernetesConn>,
}

/// What the API server answers a TokenRequest (the fields used).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRequestAnswer {
    status: TokenRequestStatus,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRequestStatus {
    token: String,
    expiration_timestamp: jiff::Timestamp,
}

/// A Kubernetes `Status` answer (the fields used).
#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    message: String,
    #[serde(default)]
    reason: String,
}

/// What a `Status` body says, one line of at most 300 characters, or "no readable status".
pub(crate) fn status_said(body: &[u8]) -> String {
    match serde_json::from_slice::<Status>(body) {
        Ok(s) if !s.message.is_empty() || !s.reason.is_empty() => {
            let said = if s.reason.is_empty() {
                s.message
            } else {
                format!("{}: {}", s.reason, s.message)
            };
            said.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(300)
                .collect()
        }
        _ => "no readable status".to_owned(),
    }
}

/// A kubeconfig (JSON) with one cluster at `server` trusting `ca` (base64 PEM) or the
/// system's roots, one user holding `token`, and one context joining them in `namespace`,
/// current; all named after the server's host.
fn kubeconfig(
    server: &Url,
    address: &str,
    ca: Option<&str>,
    namespace: &str,
    token: &str,
) -> String {
    let name = server.host_str().unwrap_or("cluster");
    let mut cluster = serde_json::json!({"server": address});
    if let Some(ca) = ca {
        cluster["certificate-authority-data"] = ca.into();
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": KUBECONFIG_USER, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": KUBECONFIG_USER, "namespace": namespace}}],
        "current-context": name,
    })
    .to_string()
}

impl KubernetesServiceAccountTokenGenerator {
    /// Builds the generator on its store's shared connection.
    pub(crate) fn new(
        spec: KubernetesServiceAccountTokenSpec,
        store: Option<&SecretStoreSpec>,
        shared: &mut crate::Shared,
    ) -> Result<Self, SpecError> {
        spec.validate()?;
        let conn = shared.kubernetes_conn(store, &spec.secret_store_ref)?;
        let target = spec.target()?;
        Ok(Self { spec, target, conn })
    }

    /// The token's `expirationSeconds`: the expiration, lowered to the Authorization's
    /// `maxTTL`, never under the API server's ten minutes.
    fn expiration(&self, ctx: &Context<'_>) -> Result<Duration, BackendError> {
        let mut e = self
            .spec
            .expiration
            .map_or(DEFAULT_EXPIRATION, HumanDuration::get);
        if let Some(max) = ctx.max_ttl {
            if max < MIN_EXPIRATION {
                return Err(BackendError::Rejected {
                    message: format!(
                        "the Authorization's maxTTL of {} is under ten minutes, the shortest \
                         ServiceAccount token a Kubernetes API server issues; nothing was minted",
                        humantime::format_duration(max)
                    ),
                    detail: format!("{BACKEND}: maxTTL {max:?} < 600s"),
                });
            }
            e = e.min(max);
        }
        Ok(e)
    }
}

/// The Secret a revocable token is bound to, as the lease names it.
#[derive(Serialize, Deserialize)]
struct Lease {
    namespace: String,
    secret: String,
    uid: String,
}

/// What the API server answers a Secret's creation (the fields used).
#[derive(Deserialize)]
struct Created {
    metadata: CreatedMeta,
}

#[derive(Deserialize)]
struct CreatedMeta {
    name: String,
    uid: String,
}

/// The label every binding Secret carries, for an operator to find them.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "esi-federation");
/// The type of the binding Secrets (they hold no data).
pub const BINDING_TYPE: &str = "esi.dev/token-binding";
/// The name of the Leases anchoring binding Secrets, before the UTC day their tokens expire
/// (`esi-token-bindings-20261202`).
pub const ANCHOR_PREFIX: &str = "esi-token-bindings-";
/// How long a replica trusts what it learned of an anchor (its UID, or that none can be made)
/// before asking again: an anchor deleted by hand, which voids the tokens bound under it, is
/// no longer bound to after that.
const ANCHOR_RECHECK: Duration = Duration::from_secs(300);
/// How long after its day ends an anchor is deleted: room for clocks that disagree.
const SWEEP_MARGIN: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);
/// How far past its anchor's day a token may live (an API server's expiry counts from its own
/// clock, a little after the federation's): far less than [`SWEEP_MARGIN`].
const ANCHOR_LEEWAY: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);
/// How many past days a sweep covers, so the anchors of a day followed by a quiet week (no
/// revocable token in the namespace) are still deleted.
const SWEEP_DAYS: i16 = 7;

/// What a replica knows of the anchors of one cluster's binding Secrets.
#[derive(Default)]
struct Anchors {
    /// By namespace and day: the anchor's UID (`None`: it could not be made), and when that
    /// was learned.
    known: std::sync::Mutex<HashMap<(String, jiff::civil::Date), Learned>>,
    /// By namespace: the last day whose anchor (and the days' before it) was deleted.
    swept: std::sync::Mutex<HashMap<String, jiff::civil::Date>>,
}

/// An anchor's UID (`None`: it could not be made), and when that was learned.
type Learned = (Option<String>, Instant);

/// A binding Secret's owner: the anchor of the day its token expires, and that day's end.
struct Anchor {
    name: String,
    uid: String,
    until: jiff::Timestamp,
}

/// The anchor's name for `day`.
fn anchor_name(day: jiff::civil::Date) -> String {
    format!("{ANCHOR_PREFIX}{}", day.strftime("%Y%m%d"))
}

/// The UTC day of `t`.
fn utc_day(t: jiff::Timestamp) -> jiff::civil::Date {
    t.to_zoned(jiff::tz::TimeZone::UTC).date()
}

/// The error of an API server answer other than success, for `what` (`"the token request"`)
/// about `who` (`"ServiceAccount deploy/ci"`). A 403 says the federation may not do `action`,
/// for want of the RBAC `rule`.
pub(crate) fn refusal(
    server: &str,
    what: &str,
    who: &str,
    (action, rule): (&str, &str),
    status: reqwest::StatusCode,
    body: &[u8],
) -> BackendError {
    let said = status_said(body);
    match status.as_u16() {
        404 => BackendError::Rejected {
            message: format!("{who} does not exist in {server}"),
            detail: format!("{BACKEND}: {what} for {who}: 404: {said}"),
        },
        403 => BackendError::Rejected {
            message: format!("the federation may not {action} in {server} (RBAC: {rule})"),
            detail: format!("{BACKEND}: {what} for {who}: 403: {said}"),
        },
        400 | 409 | 422 => BackendError::Rejected {
            message: format!("{server} refused {what} for {who}: {said}"),
            detail: format!("{BACKEND}: {what} for {who}: {status}"),
        },
        _ => crate::http::status_error(BACKEND, status, &format!("{what} for {who}: {said}")),
    }
}

/// An answer with a success status that cannot be read.
pub(crate) fn unreadable(e: &serde_json::Error) -> BackendError {
    BackendError::Unavailable {
        message: "the Kubernetes API server's answer could not be read".to_owned(),
        detail: format!(
            "{BACKEND}: {}",
            esi_api::json::without_values(&e.to_string())
        ),
    }
}

impl KubernetesServiceAccountTokenGenerator {
    /// Creates the empty Secret a revocable token is bound to, owned by `owner` when there
    /// is one: its name and UID.
    async fn create_binding(
        &self,
        ctx: &Context<'_>,
        namespace: &str,
        name: &str,
        expires: jiff::Timestamp,
        owner: Option<&Anchor>,
    ) -> Result<Lease, BackendError> {
        let mut body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "generateName": "esi-token-",
                "labels": {MANAGED_BY.0: MANAGED_BY.1},
                "annotations": {
                    "esi.dev/service-account": name,
                    "esi.dev/issued-to": crate::identity::subject(ctx.identity),
                    "esi.dev/expires-at": expires.to_string(),
                },
            },
            "type": BINDING_TYPE,
            "immutable": true,
        });
        if let Some(a) = owner {
            // Neither `controller` nor `blockOwnerDeletion`: the anchor is deleted at once, the
            // garbage collector deleting the Secrets after it.
            body["metadata"]["ownerReferences"] = serde_json::json!([{
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "name": a.name, "uid": a.uid,
            }]);
        }
        let path = format!("api/v1/namespaces/{namespace}/secrets");
        let req = self
            .conn
            .request(reqwest::Method::POST, &path, Some(&body))?;
        let (status, body) = crate::http::send(BACKEND, req).await?;
        if !matches!(status.as_u16(), 200 | 201) {
            return Err(refusal(
                &self.conn.address,
                "the binding Secret",
                &format!("namespace {namespace}"),
                (
                    &format!("create Secrets in namespace {namespace}"),
                    "`create` on `secrets`, which `revocable` needs",
                ),
                status,
                &body,
            ));
        }
        let created: Created = serde_json::from_slice(&body).map_err(|e| unreadable(&e))?;
        let CreatedMeta { name: secret, uid } = created.metadata;
        if !esi_api::inject::is_dns_subdomain(&secret) || uid.is_empty() || uid.len() > 64 {
            return Err(BackendError::Unavailable {
                message: "the Kubernetes API server's answer could not be read".to_owned(),
                detail: format!("{BACKEND}: a created Secret without a usable name or uid"),
            });
        }
        Ok(Lease {
            namespace: namespace.to_owned(),
            secret,
            uid,
        })
    }

    /// The anchor of `day`'s binding Secrets in `namespace`, made or learned when this replica
    /// does not know it (or knew it over [`ANCHOR_RECHECK`] ago); `None` when it cannot be
    /// made, which is logged: the Secret is then made without an owner and stays.
    async fn anchor(&self, namespace: &str, day: jiff::civil::Date) -> Option<Anchor> {
        let key = (namespace.to_owned(), day);
        let known = locked(&self.conn.anchors.known)
            .get(&key)
            .filter(|(_, at)| at.elapsed() < ANCHOR_RECHECK)
            .map(|(uid, _)| uid.clone());
        let uid = match known {
            Some(uid) => uid,
            None => {
                let uid = match self.create_anchor(namespace, day).await {
                    Ok(uid) => Some(uid),
                    Err(e) => {
                        tracing::warn!(
                            namespace,
                            anchor = anchor_name(day),
                            detail = e.detail(),
                            "the Lease anchoring revocable tokens' binding Secrets could not be \
                             made; the Secrets made meanwhile stay after their tokens expire"
                        );
                        None
                    }
                };
                let mut known = locked(&self.conn.anchors.known);
                known.retain(|_, (_, at)| at.elapsed() < ANCHOR_RECHECK);
                known.insert(key, (uid.clone(), Instant::now()));
                uid
            }
        }?;
        Some(Anchor {
            name: anchor_name(day),
            uid,
            until: day
                .tomorrow()
                .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC))
                .map_or(jiff::Timestamp::MAX, |z| z.timestamp()),
        })
    }

    /// Creates the Lease anchoring `day`'s binding Secrets in `namespace`, or reads the one
    /// another replica made: its UID.
    async fn create_anchor(
        &self,
        namespace: &str,
        day: jiff::civil::Date,
    ) -> Result<String, BackendError> {
        let name = anchor_name(day);
        let body = serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": name,
                "labels": {MANAGED_BY.0: MANAGED_BY.1},
                "annotations": {
                    "esi.dev/anchors": "the binding Secrets of the ServiceAccount tokens expiring \
                        on this UTC day; deleting it deletes them, revoking their tokens",
                },
            },
            "spec": {},
        });
        let path = format!("apis/coordination.k8s.io/v1/namespaces/{namespace}/leases");
        let req = self
            .conn
            .request(reqwest::Method::POST, &path, Some(&body))?;
        let (mut status, mut answer) = crate::http::send(BACKEND, req).await?;
        if status == reqwest::StatusCode::CONFLICT {
            // Another replica made it today: learn its UID.
            let req = self
                .conn
                .request(reqwest::Method::GET, &format!("{path}/{name}"), None)?;
            (status, answer) = crate::http::send(BACKEND, req).await?;
        }
        if !matches!(status.as_u16(), 200 | 201) {
            return Err(refusal(
                &self.conn.address,
                "the anchor Lease",
                &format!("namespace {namespace}"),
                (
                    &format!("create and get Leases in namespace {namespace}"),
                    "`create` and `get` on `leases` (coordination.k8s.io), which revocable \
                     tokens' clean-up needs",
                ),
                status,
                &answer,
            ));
        }
        let made: Created = serde_json::from_slice(&answer).map_err(|e| unreadable(&e))?;
        if made.metadata.name != name
            || made.metadata.uid.is_empty()
            || made.metadata.uid.len() > 64
        {
            return Err(BackendError::Unavailable {
                message: "the Kubernetes API server's answer could not be read".to_owned(),
                detail: format!(
                    "{BACKEND}: the anchor Lease {name} without its name or a usable uid"
                ),
            });
        }
        Ok(made.metadata.uid)
    }

    /// Deletes the anchors of the days ended over [`SWEEP_MARGIN`] ago in `namespace`, the
    /// last [`SWEEP_DAYS`] of them, once a day per namespace: the garbage collector then
    /// deletes their binding Secrets, whose tokens have expired. The deletes go out at once
    /// (the request that triggers the sweep waits for one round trip, not seven: on a cold
    /// start, every namespace's first revocable token pays it); failures are logged, the first
    /// with their count, and the next day's sweep tries again.
    async fn sweep(&self, namespace: &str, now: jiff::Timestamp) {
        let Ok(last) = utc_day(now - SWEEP_MARGIN).yesterday() else {
            return;
        };
        {
            let mut swept = locked(&self.conn.anchors.swept);
            if swept.get(namespace).is_some_and(|d| *d >= last) {
                return;
            }
            swept.insert(namespace.to_owned(), last);
        }
        let days: Vec<jiff::civil::Date> = (0..SWEEP_DAYS)
            .map_while(|back| last.checked_sub(jiff::Span::new().days(back)).ok())
            .collect();
        let deleted = futures_util::future::join_all(
            days.iter().map(|day| self.delete_anchor(namespace, *day)),
        )
        .await;
        let mut failed = days
            .iter()
            .zip(deleted)
            .filter_map(|(day, result)| result.err().map(|e| (day, e)));
        if let Some((day, e)) = failed.next() {
            tracing::warn!(
                namespace,
                anchor = anchor_name(*day),
                failed = 1 + failed.count(),
                detail = e.detail(),
                "past days' anchor Leases could not be deleted; their binding Secrets stay \
                 until a later sweep deletes them"
            );
        }
    }

    /// Deletes `day`'s anchor in `namespace`, if there is one.
    async fn delete_anchor(
        &self,
        namespace: &str,
        day: jiff::civil::Date,
    ) -> Result<(), BackendError> {
        let name = anchor_name(day);
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
        });
        let path = format!("apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}");
        let req = self
            .conn
            .request(reqwest::Method::DELETE, &path, Some(&body))?;
        let (status, answer) = crate::http::send(BACKEND, req).await?;
        match status.as_u16() {
            200 | 202 | 404 => Ok(()),
            _ => Err(refusal(
                &self.conn.address,
                "deleting a past day's anchor Lease",
                &format!("Lease {namespace}/{name}"),
                (
                    &format!("delete Leases in namespace {namespace}"),
                    "`delete` on `leases` (coordination.k8s.io), which revocable tokens' \
                     clean-up needs",
                ),
                status,
                &answer,
            )),
        }
    }

    /// Deletes a binding Secret, only if it is still the one of `lease.uid`: `false` when it
    /// is gone (or another Secret took its name).
    async fn delete_binding(&self, lease: &Lease) -> Result<bool, BackendError> {
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": lease.uid},
        });
        let path = format!(
            "api/v1/namespaces/{}/secrets/{}",
            lease.namespace, lease.secret
        );
        let req = self
            .conn
            .request(reqwest::Method::DELETE, &path, Some(&body))?;
        let (status, body) = crate::http::send(BACKEND, req).await?;
        match status.as_u16() {
            200 | 202 => Ok(true),
            // Gone, or a Secret of the same name but another UID: ours no longer exists.
            404 | 409 => Ok(false),
            _ => Err(refusal(
                &self.conn.address,
                "deleting the binding Secret",
                &format!("Secret {}/{}", lease.namespace, lease.secret),
                (
                    &format!("delete Secrets in namespace {}", lease.namespace),
                    "`delete` on `secrets`, which `revocable` needs",
                ),
                status,
                &body,
            )),
        }
    }

    /// Deletes the binding Secret of a token that cannot be handed out (which voids the
    /// token); a failure is logged, the request failing anyway with its own reason.
    async fn discard(&self, lease: &Lease) {
        if let Err(e) = self.delete_binding(lease).await {
            tracing::warn!(
                namespace = lease.namespace,
                secret = lease.secret,
                detail = e.detail(),
                "the binding Secret of a ServiceAccount token that could not be handed out could \
                 not be deleted; the token lives until it expires"
            );
        }
    }

    /// The TokenRequest: the token and its expiry.
    async fn token_request(
        &self,
        namespace: &str,
        name: &str,
        expiration: Duration,
        bound: Option<&Lease>,
    ) -> Result<(String, jiff::Timestamp), BackendError> {
        let mut spec = serde_json::json!({
            "audiences": self.spec.audiences,
            "expirationSeconds": expiration.as_secs(),
        });
        if let Some(lease) = bound {
            spec["boundObjectRef"] = serde_json::json!({
                "apiVersion": "v1", "kind": "Secret", "name": lease.secret, "uid": lease.uid,
            });
        }
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": spec,
        });
        let path = format!("api/v1/namespaces/{namespace}/serviceaccounts/{name}/token");
        let req = self
            .conn
            .request(reqwest::Method::POST, &path, Some(&body))?;
        let (status, body) = crate::http::send(BACKEND, req).await?;
        if !matches!(status.as_u16(), 200 | 201) {
            let who = format!("ServiceAccount {namespace}/{name}");
            return Err(refusal(
                &self.conn.address,
                "the token request",
                &who,
                (
                    &format!("create tokens for {who}"),
                    "`create` on `serviceaccounts/token`",
                ),
                status,
                &body,
            ));
        }
        let answer: TokenRequestAnswer =
            serde_json::from_slice(&body).map_err(|e| unreadable(&e))?;
        let TokenRequestStatus {
            token,
            expiration_timestamp,
        } = answer.status;
        if token.is_empty()
            || token.len() > MAX_TOKEN
            || !token.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(BackendError::Unavailable {
                message: "the Kubernetes API server's answer could not be read".to_owned(),
                detail: format!("{BACKEND}: an unusable token of {} bytes", token.len()),
            });
        }
        Ok((token, expiration_timestamp))
    }
}

impl Generate for KubernetesServiceAccountTokenGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let (namespace, name) = self.target.render(ctx)?;
        let expiration = self.expiration(ctx)?;
        let now = jiff::Timestamp::now();
        let (lease, anchor) = if self.spec.revocable {
            let lives = i64::try_from(expiration.as_secs()).unwrap_or(i64::MAX);
            let expires = now + jiff::SignedDuration::from_secs(lives);
            let anchor = self.anchor(&namespace, utc_day(expires)).await;
            let lease = self
                .create_binding(ctx, &namespace, &name, expires, anchor.as_ref())
                .await?;
            (Some(lease), anchor)
        } else {
            (None, None)
        };
        let over = if lease.is_some() {
            OVER_MAX_TTL_BOUND
        } else {
            OVER_MAX_TTL
        };
        let minted = self
            .token_request(&namespace, &name, expiration, lease.as_ref())
            .await
            .and_then(|(token, expires_at)| {
                if expires_at <= now {
                    return Err(BackendError::Unavailable {
                        message: "the Kubernetes API server handed out a token already expired"
                            .to_owned(),
                        detail: format!("{BACKEND}: expirationTimestamp {expires_at} is past"),
                    });
                }
                if let Some(max) = ctx.max_ttl {
                    crate::credential::within_max_ttl(expires_at, now, max, over)?;
                }
                if let Some(a) = anchor
                    .as_ref()
                    .filter(|a| expires_at > a.until + ANCHOR_LEEWAY)
                {
                    return Err(BackendError::Unavailable {
                        message: "the Kubernetes API server handed out a token living past the \
                                  day it was asked to end on; it was revoked (its binding Secret \
                                  deleted), not handed out"
                            .to_owned(),
                        detail: format!(
                            "{BACKEND}: expirationTimestamp {expires_at} after the end of the \
                             anchor {} ({})",
                            a.name, a.until
                        ),
                    });
                }
                Ok((token, expires_at))
            });
        let (token, expires_at) = match minted {
            Ok(minted) => minted,
            Err(e) => {
                // The binding Secret deleted, a token minted on it is void.
                if let Some(lease) = &lease {
                    self.discard(lease).await;
                }
                return Err(e);
            }
        };
        if anchor.is_some() {
            self.sweep(&namespace, now).await;
        }
        let kubeconfig = kubeconfig(
            &self.conn.base,
            &self.conn.address,
            self.conn.ca_data.as_deref(),
            &namespace,
            &token,
        );
        let lease = match lease {
            Some(l) => Some(LeaseHandle(serde_json::to_value(&l).map_err(|e| {
                BackendError::Unavailable {
                    message: "the Kubernetes lease cannot be written".to_owned(),
                    detail: format!("{BACKEND}: {e}"),
                }
            })?)),
            None => None,
        };
        Ok(Credential {
            data: BTreeMap::from([
                ("token".to_owned(), token),
                ("server".to_owned(), self.conn.address.clone()),
                ("namespace".to_owned(), namespace),
                ("serviceAccount".to_owned(), name),
                ("kubeconfig".to_owned(), kubeconfig),
            ]),
            expires_at: Some(expires_at),
            renewable: false,
            lease,
        })
    }

    async fn revoke(&self, handle: &LeaseHandle) -> Result<bool, BackendError> {
        let lease = serde_json::from_value::<Lease>(handle.0.clone())
            .ok()
            .filter(|l| {
                esi_api::inject::is_dns_label(&l.namespace)
                    && esi_api::inject::is_dns_subdomain(&l.secret)
                    && !l.uid.is_empty()
            })
            .ok_or_else(|| BackendError::Rejected {
                message: "the lease names no binding Secret".to_owned(),
                detail: format!("{BACKEND}: lease handle without namespace, secret and uid"),
            })?;
        self.delete_binding(&lease).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GeneratorKind, GeneratorSpec};

    fn provider(server: &str) -> KubernetesProvider {
        KubernetesProvider {
            server: server.to_owned(),
            ca_bundle: None,
            auth: KubernetesAuth::Token(SecretRef::env("K8S_TOKEN")),
            timeout: None,
        }
    }

    fn spec(v: serde_json::Value) -> Result<GeneratorSpec, SpecError> {
        GeneratorSpec::from_manifest(GeneratorKind::KubernetesServiceAccountToken, v)
    }

    #[test]
    fn the_server_is_https_or_loopback_http_without_a_path() {
        assert!(provider("https://api.c.example:6443").validate().is_ok());
        assert!(provider("https://api.c.example:6443/").validate().is_ok());
        assert!(provider("http://127.0.0.1:8443").validate().is_ok());
        for bad in [
            "http://api.c.example",
            "https://api.c.example/k8s",
            "https://user:pw@api.c.example",
            "ftp://api.c.example",
        ] {
            let e = provider(bad).validate().unwrap_err().to_string();
            assert!(e.contains("provider.kubernetes.server"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_self_issued_audience_is_the_server_unless_given() {
        let mut p = provider("https://api.c.example:6443/");
        assert_eq!(p.self_issued_audience(), None);
        p.auth = KubernetesAuth::SelfIssued(SelfIssuedLogin::default());
        assert_eq!(p.self_issued_audience(), Some("https://api.c.example:6443"));
        p.auth = KubernetesAuth::SelfIssued(SelfIssuedLogin {
            audience: Some("esi-prod".into()),
        });
        assert_eq!(p.self_issued_audience(), Some("esi-prod"));
        p.auth = KubernetesAuth::SelfIssued(SelfIssuedLogin {
            audience: Some("two words".into()),
        });
        assert!(
            p.validate()
                .unwrap_err()
                .to_string()
                .contains("selfIssued.audience")
        );
    }

    #[test]
    fn names_are_checked_as_kubernetes_names_with_placeholders_allowed() {
        let ok = spec(serde_json::json!({
            "secretStoreRef": {"name": "c"},
            "serviceAccount": {"namespace": "{{namespace}}", "name": "ci-{{serviceAccount}}"},
        }));
        assert!(ok.is_ok(), "{ok:?}");
        for (sa, field) in [
            (
                serde_json::json!({"namespace": "Deploy", "name": "ci"}),
                "serviceAccount.namespace",
            ),
            (
                serde_json::json!({"namespace": "a/b", "name": "ci"}),
                "serviceAccount.namespace",
            ),
            (
                serde_json::json!({"namespace": "d", "name": "../x"}),
                "serviceAccount.name",
            ),
            (
                serde_json::json!({"namespace": "d", "name": "ci_{{namespace}}"}),
                "serviceAccount.name",
            ),
            (
                serde_json::json!({"namespace": "{{nope}}", "name": "ci"}),
                "serviceAccount.namespace",
            ),
        ] {
            let e =
                spec(serde_json::json!({"secretStoreRef": {"name": "c"}, "serviceAccount": sa}))
                    .unwrap_err()
                    .to_string();
            assert!(e.contains(field), "{sa}: {e}");
        }
    }

    #[test]
    fn expiration_and_audiences_are_bounded() {
        let with = |extra: serde_json::Value| {
            let mut v = serde_json::json!({
                "secretStoreRef": {"name": "c"},
                "serviceAccount": {"namespace": "d", "name": "ci"},
            });
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            spec(v).map(drop).map_err(|e| e.to_string())
        };
        assert!(with(serde_json::json!({"expiration": "10m", "audiences": ["vault"]})).is_ok());
        assert!(
            with(serde_json::json!({"expiration": "9m"}))
                .unwrap_err()
                .contains("10m..48h")
        );
        assert!(
            with(serde_json::json!({"expiration": "49h"}))
                .unwrap_err()
                .contains("10m..48h")
        );
        assert!(
            with(serde_json::json!({"audiences": ["a", "a"]}))
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            with(serde_json::json!({"audiences": [""]}))
                .unwrap_err()
                .contains("audiences[0]")
        );
        let many: Vec<String> = (0..11).map(|i| format!("a{i}")).collect();
        assert!(
            with(serde_json::json!({"audiences": many}))
                .unwrap_err()
                .contains("at most 10")
        );
        assert!(
            with(serde_json::json!({"lifetime": "1h"}))
                .unwrap_err()
                .contains("lifetime")
        );
    }

    #[test]
    fn a_status_is_summarised_on_one_line() {
        let body = br#"{"kind":"Status","status":"Failure","message":"serviceaccounts \"ci\" not found\nsecond","reason":"NotFound","code":404}"#;
        assert_eq!(
            status_said(body),
            "NotFound: serviceaccounts \"ci\" not found second"
        );
        assert_eq!(status_said(b"<html>"), "no readable status");
    }

    #[test]
    fn the_kubeconfig_names_the_server_ca_token_and_namespace() {
        let server = Url::parse("https://api.c.example:6443/").unwrap();
        let k: serde_json::Value = serde_json::from_str(&kubeconfig(
            &server,
            "https://api.c.example:6443",
            Some("Q0E="),
            "deploy",
            "tok",
        ))
        .unwrap();
        assert_eq!(k["current-context"], "api.c.example");
        assert_eq!(
            k["clusters"][0]["cluster"]["server"],
            "https://api.c.example:6443"
        );
        assert_eq!(
            k["clusters"][0]["cluster"]["certificate-authority-data"],
            "Q0E="
        );
        assert_eq!(k["users"][0]["user"]["token"], "tok");
        assert_eq!(k["contexts"][0]["context"]["namespace"], "deploy");
        assert_eq!(k["contexts"][0]["context"]["user"], k["users"][0]["name"]);
    }
}
