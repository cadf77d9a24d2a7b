//! `Grafana`: a Grafana service-account token, one per request, that lives no longer than the
//! Authorization allows and is deleted through its lease (External Secrets Operator parity),
//! plus the `grafana` SecretStore provider holding how the federation reaches Grafana.
//!
//! The store holds what the platform team owns: Grafana's URL (a sub-path such as
//! `https://host/grafana` is kept), the organization to act in (`X-Grafana-Org-Id`), and the
//! federation's own credential there: a service-account token (`Authorization: Bearer`) or a
//! user's basic auth, read from the federation's environment or a file on every call (a rotated
//! file needs no restart). That credential needs the `serviceaccounts:read`, `:create` and
//! `:write` actions (an organization admin has them).
//!
//! The generator names the service account the tokens belong to, whose name may use the
//! identity's placeholders (`esi-{{namespace}}`), and its role. A mint finds the account by
//! exact name (`GET /api/serviceaccounts/search`, Grafana's query matching substrings), or
//! creates it with that role (`POST /api/serviceaccounts`), then adds a token
//! (`POST /api/serviceaccounts/{id}/tokens`) named after the caller with a random suffix
//! (token names are unique per organization) and a `secondsToLive` of the generator's
//! `lifetime` lowered to the Authorization's `maxTTL`: never 0, which Grafana reads as "never
//! expires". An existing account whose role differs from the generator's, or that is disabled,
//! is refused, not changed: esi never raises (or lowers) an account other tokens may rely on.
//!
//! The lease names the account and the token (not the token's secret): revoking deletes the
//! token (`DELETE /api/serviceaccounts/{id}/tokens/{tokenId}`); a token Grafana no longer
//! knows (deleted, or its account deleted) has nothing left to revoke. Accounts are never
//! deleted: other callers' tokens may live on them.
//!
//! Grafana keeps an expired token (refused) until it is deleted, so tokens never revoked would
//! pile up on an account. After a mint, once an hour per account, a replica lists the account's
//! tokens (`GET /api/serviceaccounts/{id}/tokens`) and deletes those Grafana says have expired
//! and whose names esi gave (`esi/...`), at most twenty at a time (a backlog is swept on the
//! following mints, faster than tokens are minted). Tokens others made are never touched.
//!
//! ```yaml
//! kind: SecretStore
//! spec:
//!   provider:
//!     grafana:
//!       url: https://grafana.example
//!       orgId: 1
//!       auth:
//!         token: {file: /var/run/secrets/grafana/token}
//! ---
//! kind: Grafana
//! spec:
//!   secretStoreRef: {name: grafana}
//!   serviceAccount: {name: "esi-{{namespace}}", role: Viewer}
//!   lifetime: 1h
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::CustomResource;
use rand::Rng as _;
use reqwest::Url;
use reqwest::header::HeaderValue;
use schemars::JsonSchema;
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::store::{SecretStoreRef, StoreProvider};
use crate::template::Template;
use crate::{
    BackendError, Context, Credential, Generate, LeaseHandle, SecretRef, SecretStoreSpec, SpecError,
};

const BACKEND: &str = "Grafana";

/// How long a token lives when the generator sets no `lifetime`.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// The longest token name: Grafana stores names in `VARCHAR(190)` columns.
pub const MAX_TOKEN_NAME: usize = 190;
/// The longest service-account name: Grafana derives the account's login,
/// `sa-<orgId>-<name>`, which must fit the same 190 characters.
pub const MAX_ACCOUNT_NAME: usize = 160;
/// Service accounts asked for per search page.
const SEARCH_PER_PAGE: u64 = 100;
/// Search pages read before giving up (Grafana's query matches substrings: a short name can
/// match many accounts).
const SEARCH_MAX_PAGES: u64 = 20;
/// The longest token Grafana may hand out that esi passes on (Grafana's are ~50 characters).
const MAX_KEY: usize = 4096;
/// How often a replica sweeps an account's expired tokens, after a mint on it.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// The most expired tokens one sweep deletes; when it deletes that many, the next mint on the
/// account sweeps again, so a backlog goes faster than tokens are minted.
const SWEEP_MAX: usize = 20;
/// How every token esi names begins ([`token_name`]): only such tokens are swept.
const TOKEN_PREFIX: &str = "esi/";

/// Grafana's error id for a service account whose name or login is taken.
const ALREADY_EXISTS: &str = "serviceaccounts.ErrAlreadyExists";

/// The `grafana` SecretStore provider: a Grafana instance and the federation's credential.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrafanaProvider {
    /// Grafana's base URL (`https://grafana.example`, or `https://host/grafana` behind a
    /// sub-path). `http://` only for a loopback address (a local fake).
    pub url: String,
    /// The organization the accounts and tokens live in, sent as `X-Grafana-Org-Id`. Unset:
    /// the credential's own (a service-account token belongs to one organization; a user's
    /// basic auth acts in the user's current one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<u64>,
    /// The federation's credential in Grafana: exactly one of `token` or `basic`.
    #[serde(deserialize_with = "crate::choice::one_of")]
    pub auth: GrafanaAuth,
    /// PEM certificates trusted (in addition to the system roots), for a Grafana behind a
    /// private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// Timeout of each call (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

/// How the federation authenticates to Grafana (exactly one key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum GrafanaAuth {
    /// A Grafana service-account token, sent as `Authorization: Bearer` (what Grafana Cloud
    /// accepts).
    Token(SecretRef),
    /// A Grafana user's name and password (basic auth), for a self-hosted Grafana.
    Basic(GrafanaBasicAuth),
}

/// Basic auth to Grafana.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrafanaBasicAuth {
    /// The user's login (not a secret).
    pub username: String,
    /// The user's password.
    pub password: SecretRef,
}

impl GrafanaProvider {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        crate::http::base_url(&self.url, "provider.grafana.url")?;
        if self.org_id == Some(0) {
            return Err(SpecError::field(
                "provider.grafana.orgId",
                "must be positive (Grafana's organization IDs start at 1)",
            ));
        }
        match &self.auth {
            GrafanaAuth::Token(r) => r.validate("provider.grafana.auth.token")?,
            GrafanaAuth::Basic(b) => {
                let u = b.username.as_str();
                // RFC 7617: the user-id of basic auth cannot hold a colon.
                if u.is_empty() || u.contains(':') || u.chars().any(char::is_control) {
                    return Err(SpecError::field(
                        "provider.grafana.auth.basic.username",
                        format!("{u:?} is not a Grafana login usable in basic auth"),
                    ));
                }
                b.password
                    .validate("provider.grafana.auth.basic.password")?;
            }
        }
        if self.timeout.is_some_and(|t| t.get().is_zero()) {
            return Err(SpecError::field(
                "provider.grafana.timeout",
                "must be positive",
            ));
        }
        if let Some(pem) = &self.ca_bundle {
            crate::http::check_ca_bundle(pem, "provider.grafana.caBundle")?;
        }
        Ok(())
    }
}

/// A service account's basic role in its organization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum GrafanaRole {
    /// `Viewer`.
    Viewer,
    /// `Editor`.
    Editor,
    /// `Admin`.
    Admin,
    /// `None`: no basic role, only the permissions granted to the account itself.
    #[serde(rename = "None")]
    NoBasicRole,
}

impl GrafanaRole {
    /// Grafana's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            GrafanaRole::Viewer => "Viewer",
            GrafanaRole::Editor => "Editor",
            GrafanaRole::Admin => "Admin",
            GrafanaRole::NoBasicRole => "None",
        }
    }
}

/// The service account a `Grafana` generator's tokens belong to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrafanaServiceAccount {
    /// The account's name, found by exact match or created. May use the caller's identity
    /// (`{{namespace}}`, `{{serviceAccount}}`, `{{cluster}}`, ...): letters, digits, ` `, `-`,
    /// `_` and `.`, at most 160 characters (its own text checked at load time, the rendered
    /// name per request).
    pub name: String,
    /// The account's basic role: `Viewer`, `Editor`, `Admin` or `None`. Given to an account
    /// esi creates; an existing account with another role is refused, not changed.
    pub role: GrafanaRole,
}

/// `spec` of a `Grafana` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "Grafana",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrafanaSpec {
    /// The `grafana` SecretStore (the Grafana instance and the federation's credential).
    pub secret_store_ref: SecretStoreRef,
    /// The service account the token belongs to.
    pub service_account: GrafanaServiceAccount,
    /// How long the token lives (default `1h`), lowered to the Authorization's `maxTTL`;
    /// Grafana deletes nothing by itself, but refuses an expired token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<HumanDuration>,
}

impl GrafanaSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        let field = "serviceAccount.name";
        let name = &self.service_account.name;
        Template::parse(name, field)?;
        // Checked whole when it has no placeholder; else its own text now (a character Grafana
        // names cannot hold fails at load time), and the whole once rendered, per request.
        if !name.contains("{{") {
            check_account_name(name).map_err(|why| SpecError::field(field, why))?;
        } else if let Some(c) = without_placeholders(name)
            .chars()
            .find(|c| !account_char(*c))
        {
            return Err(SpecError::field(
                field,
                format!(
                    "{c:?} cannot be part of a service-account name (letters, digits, ` `, `-`, `_` and `.`)"
                ),
            ));
        }
        if self.lifetime.is_some_and(|t| t.get().as_secs() == 0) {
            return Err(SpecError::field(
                "lifetime",
                "must be at least 1s (Grafana reads 0 as a token that never expires)",
            ));
        }
        Ok(())
    }
}

/// Whether `c` may be part of a service-account name esi uses.
fn account_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.')
}

/// A template's own text, its (well-formed) `{{ ... }}` placeholders left out.
fn without_placeholders(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        rest = rest[start..]
            .find("}}")
            .map_or("", |end| &rest[start + end + 2..]);
    }
    out + rest
}

/// Why `name` is not a service-account name esi uses.
fn check_account_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > MAX_ACCOUNT_NAME
        || name.starts_with(' ')
        || name.ends_with(' ')
        || !name.chars().all(account_char)
    {
        return Err(format!(
            "{name:?} is not a service-account name (letters, digits, ` `, `-`, `_` and `.`, \
             not starting or ending with a space, at most {MAX_ACCOUNT_NAME})"
        ));
    }
    Ok(())
}

/// A store's Grafana: the HTTP client, the base URL, the organization and the credential's
/// reference (read on each use).
pub struct GrafanaConn {
    http: reqwest::Client,
    base: Url,
    org_id: Option<u64>,
    auth: GrafanaAuth,
    /// By service account id: when this replica next sweeps its expired tokens.
    sweep_due: std::sync::Mutex<HashMap<u64, Instant>>,
}

impl fmt::Debug for GrafanaConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrafanaConn")
            .field("base", &self.base.as_str())
            .field("org_id", &self.org_id)
            .finish_non_exhaustive()
    }
}

impl GrafanaConn {
    /// Prepares the connection (the credential is read on each use).
    pub fn new(p: &GrafanaProvider) -> Result<Self, SpecError> {
        p.validate()?;
        let timeout = p
            .timeout
            .map_or(crate::http::DEFAULT_TIMEOUT, HumanDuration::get);
        Ok(GrafanaConn {
            http: crate::http::client(
                p.ca_bundle.as_deref(),
                timeout,
                "provider.grafana.caBundle",
            )?,
            base: crate::http::base_url(&p.url, "provider.grafana.url")?,
            org_id: p.org_id,
            auth: p.auth.clone(),
            sweep_due: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Which organization Grafana takes the federation's credential for (`GET /api/org`, which
    /// a service account token and a user alike may call): its name and id.
    pub async fn whoami(&self) -> Result<String, BackendError> {
        let req = self.request(reqwest::Method::GET, self.url("api/org")?)?;
        let (status, body) = crate::http::send(BACKEND, req).await?;
        if !status.is_success() {
            return Err(answer_error("GET /api/org", status, &body));
        }
        #[derive(Deserialize)]
        struct Org {
            id: u64,
            name: String,
        }
        let org: Org =
            esi_api::json::from_answer(&body).map_err(|e| BackendError::Unavailable {
                message: "Grafana's answer about the organization could not be read".to_owned(),
                detail: format!("{BACKEND} GET /api/org: {e}"),
            })?;
        Ok(format!("organization {:?} (id {})", org.name, org.id))
    }

    /// The URL handed to the workload: the base URL without its trailing `/`.
    fn public_url(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    fn url(&self, path: &str) -> Result<Url, BackendError> {
        self.base.join(path).map_err(|e| BackendError::Unavailable {
            message: "the Grafana store's URL cannot be used".to_owned(),
            detail: format!("{BACKEND}: joining {path:?} to {}: {e}", self.base),
        })
    }

    /// A request carrying the federation's credential (read now) and the organization.
    fn request(
        &self,
        method: reqwest::Method,
        url: Url,
    ) -> Result<reqwest::RequestBuilder, BackendError> {
        let mut req = self
            .http
            .request(method, url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(org) = self.org_id {
            req = req.header("X-Grafana-Org-Id", org.to_string());
        }
        Ok(match &self.auth {
            GrafanaAuth::Token(r) => {
                let token = r.read()?;
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
                    .map_err(|_| BackendError::Unavailable {
                        message: "the federation's Grafana credentials cannot be used".to_owned(),
                        detail: format!(
                            "{BACKEND}: the token from {} is not a valid header value",
                            r.describe()
                        ),
                    })?;
                value.set_sensitive(true);
                req.header(reqwest::header::AUTHORIZATION, value)
            }
            GrafanaAuth::Basic(b) => {
                let password = b.password.read()?;
                // reqwest marks the header sensitive.
                req.basic_auth(&b.username, Some(password.expose_secret()))
            }
        })
    }
}

/// The built `Grafana` generator.
#[derive(Debug)]
pub struct GrafanaGenerator {
    spec: GrafanaSpec,
    name: Template,
    conn: Arc<GrafanaConn>,
}

/// A service account as Grafana lists or creates it (the fields used).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Account {
    id: u64,
    name: String,
    #[serde(default)]
    login: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    is_disabled: bool,
}

/// What `GET /api/serviceaccounts/search` answers (the fields used).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchResponse {
    total_count: u64,
    #[serde(default)]
    service_accounts: Vec<Account>,
}

/// A token as `GET /api/serviceaccounts/{id}/tokens` lists it (the fields used).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListedToken {
    id: u64,
    name: String,
    /// Grafana's own judgement, by its clock.
    #[serde(default)]
    has_expired: bool,
}

/// What `POST /api/serviceaccounts` is sent.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateAccount<'a> {
    name: &'a str,
    role: &'static str,
    is_disabled: bool,
}

/// What `POST /api/serviceaccounts/{id}/tokens` is sent.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateToken<'a> {
    name: &'a str,
    seconds_to_live: u64,
}

/// What Grafana answers a token creation (`key` is the token, shown once).
#[derive(Deserialize)]
struct TokenResponse {
    id: u64,
    key: String,
}

/// What a Grafana error answer says (`{"message", "messageId"?, "statusCode"?, "traceID"?}`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorResponse {
    #[serde(default)]
    message: String,
    #[serde(default)]
    message_id: Option<String>,
}

/// What the lease names: the account, the token, and the organization it was minted in.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lease {
    service_account_id: u64,
    token_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    org_id: Option<u64>,
}

/// Grafana's error id, if its answer names one.
fn message_id(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<ErrorResponse>(body)
        .ok()
        .and_then(|e| e.message_id)
}

/// The error of a Grafana answer other than success. Grafana's own message goes to the log
/// only; the caller learns the status and what it means.
fn answer_error(what: &str, status: reqwest::StatusCode, body: &[u8]) -> BackendError {
    let said = match serde_json::from_slice::<ErrorResponse>(body) {
        Ok(e) => match e.message_id {
            Some(id) => format!("{id}: {}", e.message),
            None => e.message,
        },
        Err(_) => "no readable message".to_owned(),
    };
    let summary: String = said.chars().filter(|c| !c.is_control()).take(300).collect();
    match status.as_u16() {
        // The federation's own credential was refused (re-read before the next attempt: a
        // rotation in progress settles), or Grafana denies it this action (a permission only
        // the operator can grant; rejected, as AWS's AccessDenied and the federation's own
        // policy_denied): its configuration either way, which the caller cannot fix.
        401 => BackendError::Unavailable {
            message: "Grafana refused the federation's credentials".to_owned(),
            detail: format!("{BACKEND} {what}: 401: {summary}"),
        },
        403 => BackendError::Rejected {
            message: format!("the federation's Grafana credentials may not be used for {what}"),
            detail: format!("{BACKEND} {what}: 403: {summary}"),
        },
        _ => crate::http::status_error(BACKEND, status, &format!("{what}: {summary}")),
    }
}

/// An answer Grafana sent with a success status that cannot be read.
fn unreadable(what: &str, why: &str) -> BackendError {
    BackendError::Unavailable {
        message: "Grafana's answer could not be read".to_owned(),
        detail: format!("{BACKEND}: {what}: {}", esi_api::json::without_values(why)),
    }
}

/// `part` with anything but letters, digits, `.`, `_` and `-` replaced by `_`.
fn name_part(part: &str) -> String {
    part.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A token name saying who it was minted for, unique by its random suffix (Grafana refuses a
/// name already used in the organization): `esi/<cluster>/<namespace>/<serviceAccount>[/<pod>]/<16 hex>`,
/// the identity shortened to fit Grafana's 190 characters.
fn token_name(ctx: &Context<'_>, suffix: u64) -> String {
    let id = ctx.identity;
    let mut who = format!(
        "{TOKEN_PREFIX}{}/{}/{}",
        name_part(&id.cluster),
        name_part(&id.namespace),
        name_part(&id.service_account.name)
    );
    if let Some(pod) = &id.pod {
        who.push('/');
        who.push_str(&name_part(&pod.name));
    }
    let suffix = format!("/{suffix:016x}");
    // ASCII only (name_part), so bytes are characters.
    who.truncate(MAX_TOKEN_NAME - suffix.len());
    who + &suffix
}

impl GrafanaGenerator {
    /// Builds the generator on its store's shared connection.
    pub fn new(
        spec: GrafanaSpec,
        store: Option<&SecretStoreSpec>,
        conns: &mut crate::store::Conns<GrafanaConn>,
    ) -> Result<Self, SpecError> {
        spec.validate()?;
        let provider =
            crate::store::require(store, &spec.secret_store_ref, "grafana", |p| match p {
                StoreProvider::Grafana(g) => Some(g),
                #[allow(unreachable_patterns)]
                _ => None,
            })?;
        let conn = conns.get(provider, GrafanaConn::new)?;
        let name = Template::parse(&spec.service_account.name, "serviceAccount.name")?;
        Ok(Self { spec, name, conn })
    }

    /// The account's name for this request, rendered over the identity and checked.
    fn account_name(&self, ctx: &Context<'_>) -> Result<String, BackendError> {
        let name = self.name.render(ctx, str::to_owned);
        check_account_name(&name)
            .map(|()| name)
            .map_err(|why| BackendError::Rejected {
                message: format!("the generator's service account for this caller: {why}"),
                detail: format!("{BACKEND}: rendered serviceAccount.name: {why}"),
            })
    }

    /// The token's `secondsToLive`: the lifetime, lowered to the Authorization's `maxTTL`.
    fn seconds_to_live(&self, ctx: &Context<'_>) -> Result<u64, BackendError> {
        let mut lifetime = self
            .spec
            .lifetime
            .map_or(DEFAULT_LIFETIME, HumanDuration::get);
        if let Some(max) = ctx.max_ttl {
            lifetime = lifetime.min(max);
        }
        match lifetime.as_secs() {
            // 0 would be a token that never expires.
            0 => Err(BackendError::Rejected {
                message: "the Authorization's maxTTL is under a second, Grafana's shortest token; \
                          nothing was minted"
                    .to_owned(),
                detail: format!("{BACKEND}: maxTTL {lifetime:?} < 1s"),
            }),
            secs => Ok(secs),
        }
    }

    /// The account named `name`, if Grafana lists one (exact match among the search's
    /// substring matches, page after page).
    async fn find_account(&self, name: &str) -> Result<Option<Account>, BackendError> {
        let what = "searching service accounts";
        for page in 1..=SEARCH_MAX_PAGES {
            let mut url = self.conn.url("api/serviceaccounts/search")?;
            url.query_pairs_mut()
                .append_pair("perpage", &SEARCH_PER_PAGE.to_string())
                .append_pair("page", &page.to_string())
                .append_pair("query", name);
            let req = self.conn.request(reqwest::Method::GET, url)?;
            let (status, body) = crate::http::send(BACKEND, req).await?;
            if status != reqwest::StatusCode::OK {
                return Err(answer_error(what, status, &body));
            }
            let answer: SearchResponse = serde_json::from_slice(&body)
                .map_err(|e| unreadable("service-account search answer", &e.to_string()))?;
            let listed = answer.service_accounts.len();
            let mut exact = answer
                .service_accounts
                .into_iter()
                .filter(|a| a.name == name);
            if let Some(found) = exact.next() {
                if exact.next().is_some() {
                    return Err(BackendError::Unavailable {
                        message: format!("Grafana lists two service accounts named {name:?}"),
                        detail: format!("{BACKEND}: search for {name:?}: two exact matches"),
                    });
                }
                return Ok(Some(found));
            }
            let seen = page.saturating_mul(SEARCH_PER_PAGE);
            if listed == 0 || seen >= answer.total_count {
                return Ok(None);
            }
        }
        Err(BackendError::Rejected {
            message: format!(
                "more than {} Grafana service accounts match {name:?}; give the generator's \
                 account a more distinctive name",
                SEARCH_PER_PAGE * SEARCH_MAX_PAGES
            ),
            detail: format!("{BACKEND}: search for {name:?}: over {SEARCH_MAX_PAGES} pages"),
        })
    }

    /// `POST /api/serviceaccounts` with the generator's role. `None` when Grafana says one
    /// of that name or login exists (created meanwhile by another request).
    async fn create_account(&self, name: &str) -> Result<Option<Account>, BackendError> {
        let body = serde_json::to_vec(&CreateAccount {
            name,
            role: self.spec.service_account.role.as_str(),
            is_disabled: false,
        })
        .map_err(|e| BackendError::Unavailable {
            message: "the Grafana request cannot be written".to_owned(),
            detail: format!("{BACKEND}: {e}"),
        })?;
        let url = self.conn.url("api/serviceaccounts")?;
        let req = self
            .conn
            .request(reqwest::Method::POST, url)?
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let (status, body) = crate::http::send(BACKEND, req).await?;
        match status.as_u16() {
            200 | 201 => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| unreadable("created service account", &e.to_string())),
            // Grafana 10 and later answer 400 with this id; earlier ones 409.
            400 if message_id(&body).as_deref() == Some(ALREADY_EXISTS) => Ok(None),
            409 => Ok(None),
            _ => Err(answer_error("creating a service account", status, &body)),
        }
    }

    /// The account for this request, found or created, checked against the spec.
    async fn account(&self, name: &str) -> Result<Account, BackendError> {
        let account = match self.find_account(name).await? {
            Some(a) => a,
            None => match self.create_account(name).await? {
                Some(a) => a,
                // Created by a concurrent request: read it back. Still none means a login
                // Grafana derived from another name (logins are lowercased) holds it.
                None => self
                    .find_account(name)
                    .await?
                    .ok_or_else(|| BackendError::Rejected {
                        message: format!(
                            "Grafana refused to create service account {name:?}: another account's \
                         name or login collides with it"
                        ),
                        detail: format!("{BACKEND}: create {name:?}: already exists, not found"),
                    })?,
            },
        };
        if account.id == 0 || account.name != name {
            return Err(unreadable(
                "service account",
                &format!("id {} named {:?}", account.id, account.name),
            ));
        }
        if account.is_disabled {
            return Err(BackendError::Rejected {
                message: format!(
                    "Grafana service account {name:?} is disabled; nothing was minted"
                ),
                detail: format!("{BACKEND}: service account {} is disabled", account.id),
            });
        }
        let wanted = self.spec.service_account.role.as_str();
        if account.role != wanted {
            // Never changed: other tokens of the account may rely on its role, and raising it
            // from a generator spec would let whoever writes generators escalate.
            let role: String = account
                .role
                .chars()
                .filter(|c| !c.is_control())
                .take(40)
                .collect();
            return Err(BackendError::Rejected {
                message: format!(
                    "Grafana service account {name:?} has role {role:?}, the generator asks for \
                     {wanted}; nothing was minted (align the account's role or the generator's)"
                ),
                detail: format!(
                    "{BACKEND}: service account {} role {role:?} != {wanted}",
                    account.id
                ),
            });
        }
        Ok(account)
    }

    /// `DELETE /api/serviceaccounts/{id}/tokens/{tokenId}`: `false` when Grafana no longer
    /// knows the token (or its account).
    async fn delete_token(&self, account: u64, token: u64) -> Result<bool, BackendError> {
        let url = self
            .conn
            .url(&format!("api/serviceaccounts/{account}/tokens/{token}"))?;
        let req = self.conn.request(reqwest::Method::DELETE, url)?;
        let (status, body) = crate::http::send(BACKEND, req).await?;
        match status.as_u16() {
            200 | 204 => Ok(true),
            404 => Ok(false),
            _ => Err(answer_error(
                "deleting a service-account token",
                status,
                &body,
            )),
        }
    }

    /// Deletes the expired tokens esi minted on `account` (Grafana keeps them, refused, for
    /// ever): at most [`SWEEP_MAX`], when this replica last swept it [`SWEEP_EVERY`] ago or left
    /// some. A failure is logged and ends the sweep (the next one tries again).
    async fn sweep(&self, account: u64) {
        let now = Instant::now();
        {
            let mut due = crate::http::locked(&self.conn.sweep_due);
            if due.get(&account).is_some_and(|at| *at > now) {
                return;
            }
            due.insert(account, now + SWEEP_EVERY);
        }
        let swept = async {
            let url = self
                .conn
                .url(&format!("api/serviceaccounts/{account}/tokens"))?;
            let req = self.conn.request(reqwest::Method::GET, url)?;
            let (status, body) = crate::http::send(BACKEND, req).await?;
            if status != reqwest::StatusCode::OK {
                return Err(answer_error(
                    "listing service-account tokens",
                    status,
                    &body,
                ));
            }
            let tokens: Vec<ListedToken> = serde_json::from_slice(&body)
                .map_err(|e| unreadable("token list", &e.to_string()))?;
            let expired: Vec<u64> = tokens
                .into_iter()
                .filter(|t| t.has_expired && t.name.starts_with(TOKEN_PREFIX) && t.id != 0)
                .map(|t| t.id)
                .take(SWEEP_MAX)
                .collect();
            for token in &expired {
                self.delete_token(account, *token).await?;
            }
            Ok::<_, BackendError>(expired.len())
        };
        match swept.await {
            Ok(SWEEP_MAX) => {
                // More may be left: the next mint sweeps again.
                crate::http::locked(&self.conn.sweep_due).insert(account, now);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(
                service_account_id = account,
                detail = e.detail(),
                "the expired Grafana tokens of a service account could not be swept; the next \
                 sweep tries again"
            ),
        }
    }

    /// Deletes a token that was minted but cannot be handed out; a failure is logged (the
    /// request fails anyway, with the reason it could not be handed out).
    async fn discard(&self, account: u64, token: u64) {
        if let Err(e) = self.delete_token(account, token).await {
            tracing::warn!(
                service_account_id = account,
                token_id = token,
                detail = e.detail(),
                "a Grafana token that could not be handed out could not be deleted"
            );
        }
    }
}

impl Generate for GrafanaGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let seconds_to_live = self.seconds_to_live(ctx)?;
        let name = self.account_name(ctx)?;
        let account = self.account(&name).await?;
        let token_name = token_name(ctx, rand::rng().random());
        let body = serde_json::to_vec(&CreateToken {
            name: &token_name,
            seconds_to_live,
        })
        .map_err(|e| BackendError::Unavailable {
            message: "the Grafana request cannot be written".to_owned(),
            detail: format!("{BACKEND}: {e}"),
        })?;
        let url = self
            .conn
            .url(&format!("api/serviceaccounts/{}/tokens", account.id))?;
        let req = self
            .conn
            .request(reqwest::Method::POST, url)?
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        // Grafana computes the expiry from its own clock once the request arrives: taken
        // before sending, ours is never later than Grafana's.
        let sent = jiff::Timestamp::now();
        let (status, body) = crate::http::send(BACKEND, req).await?;
        if !matches!(status.as_u16(), 200 | 201) {
            return Err(answer_error(
                "creating a service-account token",
                status,
                &body,
            ));
        }
        let answer: TokenResponse = match serde_json::from_slice(&body) {
            Ok(a) => a,
            Err(e) => {
                // A token minted that cannot be handed out: deleted, if its id can be read.
                let id = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("id")?.as_u64());
                if let Some(id) = id {
                    self.discard(account.id, id).await;
                }
                return Err(unreadable("token answer", &e.to_string()));
            }
        };
        let key = answer.key;
        if answer.id == 0
            || key.is_empty()
            || key.len() > MAX_KEY
            || !key.bytes().all(|b| b.is_ascii_graphic())
        {
            if answer.id != 0 {
                self.discard(account.id, answer.id).await;
            }
            return Err(unreadable(
                "token answer",
                &format!(
                    "token id {} with an unusable key of {} bytes",
                    answer.id,
                    key.len()
                ),
            ));
        }
        let expires_at = sent
            + jiff::SignedDuration::from_secs(i64::try_from(seconds_to_live).unwrap_or(i64::MAX));
        self.sweep(account.id).await;
        let lease = serde_json::to_value(Lease {
            service_account_id: account.id,
            token_id: answer.id,
            org_id: self.conn.org_id,
        })
        .map_err(|e| BackendError::Unavailable {
            message: "the Grafana lease cannot be written".to_owned(),
            detail: format!("{BACKEND}: {e}"),
        })?;
        Ok(Credential {
            data: BTreeMap::from([
                ("token".to_owned(), key),
                ("url".to_owned(), self.conn.public_url()),
                ("login".to_owned(), account.login),
                ("serviceAccountId".to_owned(), account.id.to_string()),
            ]),
            expires_at: Some(expires_at),
            renewable: false,
            lease: Some(LeaseHandle(lease)),
        })
    }

    async fn revoke(&self, handle: &LeaseHandle) -> Result<bool, BackendError> {
        let lease = serde_json::from_value::<Lease>(handle.0.clone())
            .ok()
            .filter(|l| l.service_account_id != 0 && l.token_id != 0)
            .ok_or_else(|| BackendError::Rejected {
                message: "the lease names no Grafana token".to_owned(),
                detail: format!("{BACKEND}: lease handle without serviceAccountId and tokenId"),
            })?;
        if lease.org_id != self.conn.org_id {
            // Token ids are global in Grafana: deleting in another organization would answer
            // 404, read as "already gone", and leave the token live.
            return Err(BackendError::Rejected {
                message: "the lease's Grafana token was minted in another organization than the \
                          store names now; delete it in Grafana"
                    .to_owned(),
                detail: format!(
                    "{BACKEND}: lease orgId {:?}, store orgId {:?}, token {} of service account {}",
                    lease.org_id, self.conn.org_id, lease.token_id, lease.service_account_id
                ),
            });
        }
        self.delete_token(lease.service_account_id, lease.token_id)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GeneratorKind, GeneratorSpec};

    fn provider(url: &str) -> GrafanaProvider {
        GrafanaProvider {
            url: url.to_owned(),
            org_id: Some(1),
            auth: GrafanaAuth::Token(SecretRef::env("GRAFANA_TOKEN")),
            ca_bundle: None,
            timeout: None,
        }
    }

    #[test]
    fn the_url_is_https_or_loopback_http_and_keeps_its_sub_path() {
        assert!(provider("https://grafana.example").validate().is_ok());
        assert!(provider("http://127.0.0.1:3000/").validate().is_ok());
        let conn = GrafanaConn::new(&provider("https://host.example/grafana")).unwrap();
        assert_eq!(
            conn.url("api/serviceaccounts").unwrap().as_str(),
            "https://host.example/grafana/api/serviceaccounts"
        );
        assert_eq!(conn.public_url(), "https://host.example/grafana");
        for bad in [
            "http://grafana.example",
            "ftp://grafana.example",
            "https://admin:admin@grafana.example",
            "https://grafana.example/?orgId=1",
            "grafana.example",
        ] {
            let err = provider(bad).validate().unwrap_err().to_string();
            assert!(err.contains("provider.grafana.url"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_store_takes_exactly_one_credential_and_checks_it() {
        let store = |auth: serde_json::Value| {
            crate::SecretStoreSpec::from_manifest(serde_json::json!({"provider": {"grafana": {
                "url": "https://grafana.example", "auth": auth
            }}}))
        };
        assert!(store(serde_json::json!({"token": {"env": "GRAFANA_TOKEN"}})).is_ok());
        assert!(
            store(
                serde_json::json!({"basic": {"username": "admin", "password": {"file": "/run/pw"}}})
            )
            .is_ok()
        );
        for (bad, says) in [
            (serde_json::json!({}), "auth"),
            (
                serde_json::json!({"token": {"env": "A"}, "basic": {"username": "u", "password": {"env": "B"}}}),
                "auth",
            ),
            (serde_json::json!({"token": "glsa_inline"}), "auth.token"),
            (
                serde_json::json!({"basic": {"username": "a:b", "password": {"env": "B"}}}),
                "provider.grafana.auth.basic.username",
            ),
            (
                serde_json::json!({"token": {"env": "ESI_LEASE_KEYS"}}),
                "provider.grafana.auth.token.env",
            ),
        ] {
            let err = store(bad.clone()).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
            assert!(!err.contains("glsa_inline"), "{err}");
        }
        let err =
            crate::SecretStoreSpec::from_manifest(serde_json::json!({"provider": {"grafana": {
                "url": "https://grafana.example", "orgId": 0, "auth": {"token": {"env": "T"}}
            }}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("provider.grafana.orgId"), "{err}");
    }

    #[test]
    fn specs_round_trip_and_bad_values_name_their_field() {
        let j = serde_json::json!({
            "secretStoreRef": {"name": "grafana"},
            "serviceAccount": {"name": "esi-{{namespace}}", "role": "None"},
            "lifetime": "15m"
        });
        let spec = GeneratorSpec::from_manifest(GeneratorKind::Grafana, j).unwrap();
        let GeneratorSpec::Grafana(s) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(s.service_account.role, GrafanaRole::NoBasicRole);
        assert_eq!(
            GeneratorSpec::from_manifest(GeneratorKind::Grafana, serde_json::to_value(s).unwrap())
                .unwrap(),
            spec
        );
        for (bad, field) in [
            (
                serde_json::json!({"serviceAccount": {"name": "esi/{{namespace}}", "role": "Viewer"}}),
                "'/' cannot be part",
            ),
            (
                serde_json::json!({"serviceAccount": {"name": "a/b", "role": "Viewer"}}),
                "spec.serviceAccount.name",
            ),
            (
                serde_json::json!({"serviceAccount": {"name": "{{nope}}", "role": "Viewer"}}),
                "spec.serviceAccount.name",
            ),
            (
                serde_json::json!({"serviceAccount": {"name": "x".repeat(MAX_ACCOUNT_NAME + 1), "role": "Viewer"}}),
                "spec.serviceAccount.name",
            ),
            (
                serde_json::json!({"serviceAccount": {"name": "ok", "role": "viewer"}}),
                "spec.serviceAccount.role",
            ),
            (
                serde_json::json!({"serviceAccount": {"name": "ok", "role": "GrafanaAdmin"}}),
                "spec.serviceAccount.role",
            ),
            (serde_json::json!({"lifetime": "0s"}), "spec.lifetime"),
            (serde_json::json!({"lifetime": "500ms"}), "spec.lifetime"),
            (serde_json::json!({"token": "x"}), "unknown field `token`"),
        ] {
            let mut j = serde_json::json!({
                "secretStoreRef": {"name": "grafana"},
                "serviceAccount": {"name": "esi", "role": "Viewer"}
            });
            for (k, v) in bad.as_object().unwrap() {
                j[k] = v.clone();
            }
            let err = GeneratorSpec::from_manifest(GeneratorKind::Grafana, j)
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{bad}: {err}");
        }
    }

    #[test]
    fn token_names_say_who_and_fit_grafanas_column() {
        let id = crate::template::tests::identity();
        let ctx = Context {
            identity: &id,
            generator: "payments/Grafana/dash",
            max_ttl: None,
        };
        assert_eq!(
            token_name(&ctx, 0xab),
            "esi/prod-eu/payments/api/api-7d9f/00000000000000ab"
        );
        let mut long = id.clone();
        long.cluster = "c".repeat(300);
        long.namespace = "ns with spaces/and:colons".into();
        long.pod = None;
        let ctx = Context {
            identity: &long,
            ..ctx
        };
        let name = token_name(&ctx, u64::MAX);
        assert_eq!(name.len(), MAX_TOKEN_NAME);
        assert!(name.ends_with("/ffffffffffffffff"), "{name}");
        let mut short = long.clone();
        short.cluster = "k".into();
        let ctx = Context {
            identity: &short,
            ..ctx
        };
        assert_eq!(
            token_name(&ctx, 1),
            "esi/k/ns_with_spaces_and_colons/api/0000000000000001"
        );
    }

    #[test]
    fn grafana_errors_keep_grafanas_words_in_the_log_only() {
        let body = br#"{"message":"can not assign a role higher than user's role","messageId":"serviceaccounts.ErrRoleForbidden","statusCode":403}"#;
        let e = answer_error(
            "creating a service account",
            reqwest::StatusCode::FORBIDDEN,
            body,
        );
        assert!(matches!(e, BackendError::Rejected { .. }), "{e:?}");
        assert!(!e.to_string().contains("higher than"), "{e}");
        assert!(e.detail().contains("ErrRoleForbidden"), "{}", e.detail());
        let e = answer_error("x", reqwest::StatusCode::UNAUTHORIZED, b"not json");
        assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("refused the federation's credentials"),
            "{e}"
        );
        let e = answer_error(
            "x",
            reqwest::StatusCode::BAD_REQUEST,
            br#"{"message":"Bad request data"}"#,
        );
        assert!(matches!(e, BackendError::Rejected { .. }), "{e:?}");
        let e = answer_error("x", reqwest::StatusCode::BAD_GATEWAY, b"");
        assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
    }
}
