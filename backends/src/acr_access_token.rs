//! `ACRAccessToken`: an Azure Container Registry login (External Secrets Operator parity),
//! minted with the federation's Entra ID identity from an `azure` SecretStore.
//!
//! A mint follows ACR's documented AAD-OAuth flow
//! (<https://github.com/Azure/acr/blob/main/docs/AAD-OAuth.md>):
//!
//! 1. the store's Entra ID token for ACR's audience (cached per store, see [`crate::azure`]);
//! 2. `POST https://{registry}/oauth2/exchange` with `grant_type=access_token`, `service`,
//!    `tenant` and that token: an ACR **refresh token**, good for whatever the identity's role
//!    assignments on the registry allow (`AcrPull`, `AcrPush`, ...);
//! 3. with `scope`, `POST https://{registry}/oauth2/token` with `grant_type=refresh_token`,
//!    `service`, the `scope`s and the refresh token: an ACR **access token** narrowed to those
//!    repositories and actions, which is handed out instead (the refresh token is not).
//!
//! For scoped mints the refresh token of step 2 is the federation's own, like its Entra ID
//! token: it is kept per store and registry until five minutes before its `exp` claim (read
//! without verifying: it is ACR's token to itself; one whose `exp` cannot be read is not
//! kept), so a scoped mint costs one round trip to ACR, not two. A kept refresh token ACR
//! refuses (401: the identity's roles changed, the registry's tokens were revoked) is dropped
//! and one fresh exchange tried. A mint without `scope` hands out a refresh token of its own,
//! exchanged for that mint, never the kept one.
//!
//! ACR narrows an access token silently to what the identity may do: asked for
//! `repository:app:pull,push` by an identity with `AcrPull` only, it grants `pull` and says
//! nothing. So the token's `access` claim (`[{"type", "name", "actions"}]`) is read and
//! compared with the rendered `scope`; a token granting less is dropped and the request
//! refused, what was missing named in the log (never the token).
//!
//! `scope` is a space-separated list of registry token scopes (`repository:<name>:<actions>`,
//! `registry:catalog:*`), and may use the caller's identity: `repository:{{namespace}}/app:pull`.
//! Each is checked against the grammar twice: its shape when the configuration loads (with the
//! placeholders filled in), its values once rendered for a caller, and a caller whose identity
//! renders an invalid one is refused before anything is asked of Azure. Repository names match
//! exactly (ACR has no wildcards).
//!
//! Returns `username` (`00000000-0000-0000-0000-000000000000`, which tells ACR the password is
//! one of its tokens), `password` (the token), `registry` and `dockerconfigjson` (a
//! `~/.docker/config.json` for that registry), plus the expiry read from the token's `exp`
//! claim (it is a JWT; nothing else in it is read or trusted). ACR tokens (about three hours for
//! a refresh token, an hour and a quarter for an access token) cannot be revoked or shortened:
//! under an Authorization whose `maxTTL` is shorter the token is dropped, never handed out,
//! and the request refused.
//!
//! ```yaml
//! kind: ACRAccessToken
//! spec:
//!   secretStoreRef: {name: azure}
//!   registry: myregistry.azurecr.io
//!   scope: "repository:{{namespace}}/app:pull"   # optional
//! ```

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use kube::CustomResource;
use reqwest::Url;
use schemars::JsonSchema;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use crate::azure::AzureConn;
use crate::store::SecretStoreRef;
use crate::template::Template;
use crate::{BackendError, Context, Credential, Generate, SecretStoreSpec, SpecError};

const BACKEND: &str = "Azure Container Registry";

/// The user name that tells ACR the password is one of its tokens.
pub const TOKEN_USERNAME: &str = "00000000-0000-0000-0000-000000000000";
/// The domains of ACR's login servers: Azure's public cloud, Azure Government, Azure in China.
/// The federation's Entra ID token is only ever sent to a registry under one of them.
pub const REGISTRY_DOMAINS: &[&str] = &["azurecr.io", "azurecr.us", "azurecr.cn"];
/// What a token outliving maxTTL is called and what became of it.
const OVER_MAX_TTL: (&str, &str, &str) = (
    "the Azure Container Registry token",
    "it was dropped, not handed out (ACR cannot revoke or shorten one)",
    "acr",
);
/// The longest `scope` accepted.
const MAX_SCOPE_LEN: usize = 2048;
/// A kept refresh token is exchanged again once it has less than this left (it must outlive
/// the access token requests made with it).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// The federation's own ACR refresh tokens of one `azure` store, by registry, each kept until
/// [`REFRESH_MARGIN`] before its `exp`. The lock is held while one is exchanged: concurrent
/// scoped mints wait for it rather than each asking ACR.
#[derive(Default)]
pub(crate) struct RefreshTokens(tokio::sync::Mutex<HashMap<String, KeptRefresh>>);

struct KeptRefresh {
    token: Arc<SecretString>,
    refresh_after: Instant,
}

/// `spec` of an `ACRAccessToken` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "ACRAccessToken",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AcrAccessTokenSpec {
    /// The `azure` SecretStore (the federation's Entra ID identity) asking ACR.
    pub secret_store_ref: SecretStoreRef,
    /// The registry's login server, e.g. `myregistry.azurecr.io` (a host under `azurecr.io`,
    /// `azurecr.us` or `azurecr.cn`).
    pub registry: String,
    /// Registry token scopes, space separated (`repository:<name>:pull,push`,
    /// `registry:catalog:*`), templated over the caller's identity (`{{namespace}}`, ...).
    /// With a scope the token is an ACR access token narrowed to it; without, an ACR refresh
    /// token carrying all the identity may do on the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl AcrAccessTokenSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        check_registry(&self.registry).map_err(|why| SpecError::field("registry", why))?;
        self.scopes()?;
        Ok(())
    }

    /// The scope's resource scopes, parsed; each checked as written when it has no
    /// placeholder (else once rendered, per request).
    fn scopes(&self) -> Result<Vec<Template>, SpecError> {
        let Some(scope) = &self.scope else {
            return Ok(Vec::new());
        };
        if scope.len() > MAX_SCOPE_LEN {
            return Err(SpecError::field(
                "scope",
                format!("is longer than {MAX_SCOPE_LEN} characters"),
            ));
        }
        let parts = split_scopes(scope);
        if parts.is_empty() {
            return Err(SpecError::field(
                "scope",
                "is empty (leave it out for a refresh token)",
            ));
        }
        parts
            .into_iter()
            .map(|part| {
                let t = Template::parse(part, "scope")?;
                if part.contains("{{") {
                    // Its shape is checked now, with every placeholder as a plain name; its
                    // values once rendered for each caller.
                    check_scope(&t.render(&sample_context(&sample_identity()), |_| "x".to_owned()))
                        .map_err(|why| {
                            SpecError::field(
                                "scope",
                                format!("{part:?} with its placeholders filled in (as `x`): {why}"),
                            )
                        })?;
                } else {
                    check_scope(part).map_err(|why| SpecError::field("scope", why))?;
                }
                Ok(t)
            })
            .collect()
    }
}

/// An identity to fill a scope's placeholders in at load time (its values are replaced).
fn sample_identity() -> esi_api::Identity {
    let object = || esi_api::ObjectRef {
        name: "x".to_owned(),
        uid: "x".to_owned(),
    };
    esi_api::Identity {
        cluster: "x".to_owned(),
        issuer: "x".to_owned(),
        namespace: "x".to_owned(),
        service_account: object(),
        pod: Some(object()),
        subject: "x".to_owned(),
        token_expires_at: jiff::Timestamp::UNIX_EPOCH,
    }
}

fn sample_context(identity: &esi_api::Identity) -> Context<'_> {
    Context {
        identity,
        generator: "x",
        max_ttl: Some(Duration::from_secs(1)),
    }
}

/// Why `registry` is not an ACR login server name.
fn check_registry(registry: &str) -> Result<(), String> {
    if !crate::azure::is_dns_name(registry) || registry.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "{registry:?} is not a registry host name (lowercase, e.g. myregistry.azurecr.io; no \
             scheme, port or path)"
        ));
    }
    if !REGISTRY_DOMAINS
        .iter()
        .any(|d| registry.strip_suffix(d).is_some_and(|r| r.ends_with('.')))
    {
        return Err(format!(
            "{registry:?} is not under an Azure Container Registry domain ({}): the federation \
             sends its Entra ID token only there",
            REGISTRY_DOMAINS.join(", ")
        ));
    }
    Ok(())
}

/// `scope` split at the spaces outside `{{ ... }}`.
fn split_scopes(scope: &str) -> Vec<&str> {
    let b = scope.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut inside, mut i) = (None, false, 0);
    while i < b.len() {
        if !inside && b[i..].starts_with(b"{{") {
            start.get_or_insert(i);
            inside = true;
            i += 2;
        } else if inside && b[i..].starts_with(b"}}") {
            inside = false;
            i += 2;
        } else if !inside && b[i].is_ascii_whitespace() {
            if let Some(s) = start.take() {
                out.push(&scope[s..i]);
            }
            i += 1;
        } else {
            start.get_or_insert(i);
            i += 1;
        }
    }
    if let Some(s) = start {
        out.push(&scope[s..]);
    }
    out
}

/// Why `part` is not one registry token scope: `repository:<name>:<actions>` (name as the
/// distribution spec's path components, lowercase; no wildcard) or `registry:catalog:*`;
/// actions comma-separated, `*` or lowercase words (`pull`, `push`, `delete`,
/// `metadata_read`, ...).
fn check_scope(part: &str) -> Result<String, String> {
    let bad = |why: &str| {
        Err(format!(
            "{part:?} is not a registry scope ({why}; e.g. repository:team/app:pull)"
        ))
    };
    let (Some((kind, rest)), Some((_, actions))) = (part.split_once(':'), part.rsplit_once(':'))
    else {
        return bad("type:name:actions");
    };
    let Some((name, _)) = rest.rsplit_once(':') else {
        return bad("type:name:actions");
    };
    match kind {
        "repository" => {
            let component_ok = |c: &str| {
                let b = c.as_bytes();
                !b.is_empty()
                    && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
                    && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
                    && b.iter().all(|&x| {
                        x.is_ascii_lowercase()
                            || x.is_ascii_digit()
                            || matches!(x, b'.' | b'_' | b'-')
                    })
                    && !c.contains("..")
                    && !c.contains("___")
                    && !c.contains("._")
                    && !c.contains("_.")
                    && !c.contains(".-")
                    && !c.contains("-.")
                    && !c.contains("_-")
                    && !c.contains("-_")
            };
            if name.is_empty() || name.len() > 255 || !name.split('/').all(component_ok) {
                return bad(
                    "a repository name is lowercase letters and digits, separated by `.`, `_`, \
                     `__`, `-` or `/`, without wildcards",
                );
            }
        }
        "registry" => {
            if name != "catalog" {
                return bad("the only registry resource is `catalog`");
            }
        }
        _ => return bad("the type is `repository` or `registry`"),
    }
    if actions.is_empty()
        || !actions.split(',').all(|a| {
            a == "*"
                || (!a.is_empty()
                    && a.as_bytes()[0].is_ascii_lowercase()
                    && a.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        })
    {
        return bad("actions are `*` or lowercase words, comma separated");
    }
    Ok(part.to_owned())
}

/// The claims of an ACR token (a JWT), read without verifying: the token is ACR's, handed
/// out as is or given back to ACR, and only `exp` and `access` are read, to keep or drop it,
/// never to trust it. The error reads after "the token" and holds nothing of the token.
fn claims(token: &str) -> Result<serde_json::Value, &'static str> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("is not a JWT (three dot-separated parts)");
    };
    // base64url as JWTs are written; the standard alphabet too, which Azure's own SDK reads
    // ACR's tokens with.
    let payload = payload.trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(payload)
        .or_else(|_| STANDARD_NO_PAD.decode(payload))
        .ok()
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or("has a payload that is not base64url JSON")
}

/// When an ACR token expires, from its `exp` claim (see [`claims`]).
fn token_expiry(token: &str) -> Result<jiff::Timestamp, &'static str> {
    let exp = claims(token)?
        .get("exp")
        .and_then(|e| e.as_i64().or_else(|| e.as_f64().map(|f| f as i64)))
        .ok_or("has no numeric `exp` claim")?;
    jiff::Timestamp::from_second(exp).map_err(|_| "has an `exp` claim out of range")
}

/// One entry of an ACR token's `access` claim.
#[derive(Deserialize)]
struct Grant {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    #[serde(default)]
    actions: Option<Vec<String>>,
}

/// What `scopes` (checked registry scopes) ask for that the access token's `access` claim does
/// not grant, as `type:name:action`s. An action is granted when listed for the same type and
/// name, or when `*` is; `*` asked is granted only as `*`. No `access` claim grants nothing.
/// The error reads after "the token".
fn missing_grants(token: &str, scopes: &[String]) -> Result<Vec<String>, &'static str> {
    let access = claims(token)?
        .get("access")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let grants: Vec<Grant> = if access.is_null() {
        Vec::new()
    } else {
        serde_json::from_value(access)
            .map_err(|_| "has an `access` claim that is not a list of {type, name, actions}")?
    };
    let mut granted: HashMap<(&str, &str), BTreeSet<&str>> = HashMap::new();
    for g in &grants {
        granted
            .entry((&g.kind, &g.name))
            .or_default()
            .extend(g.actions.iter().flatten().map(String::as_str));
    }
    let mut missing = Vec::new();
    for scope in scopes {
        // Checked by `check_scope`: `type:name:actions`, the name free of `:`.
        let (Some((kind, rest)), Some((_, actions))) =
            (scope.split_once(':'), scope.rsplit_once(':'))
        else {
            missing.push(scope.clone());
            continue;
        };
        let name = rest.rsplit_once(':').map_or(rest, |(n, _)| n);
        let have = granted.get(&(kind, name));
        for action in actions.split(',') {
            if !have.is_some_and(|h| h.contains(action) || h.contains("*")) {
                missing.push(format!("{kind}:{name}:{action}"));
            }
        }
    }
    Ok(missing)
}

/// The built `ACRAccessToken` generator.
#[derive(Debug)]
pub struct AcrAccessTokenGenerator {
    registry: String,
    scopes: Vec<Template>,
    exchange_url: Url,
    token_url: Url,
    conn: Arc<AzureConn>,
}

/// What `/oauth2/exchange` answers.
#[derive(Deserialize)]
struct ExchangeResponse {
    refresh_token: String,
}

/// What `/oauth2/token` answers.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
}

/// What an ACR error answer says (`{"errors": [{"code": ..., "message": ...}]}`).
#[derive(Deserialize)]
struct ErrorResponse {
    errors: Vec<ErrorInfo>,
}

#[derive(Deserialize)]
struct ErrorInfo {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// Which of ACR's two calls failed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    Exchange,
    Token,
}

/// The error of an ACR answer other than success; ACR's own message goes to the log only.
fn answer_error(call: Call, status: reqwest::StatusCode, body: &[u8]) -> BackendError {
    let said = serde_json::from_slice::<ErrorResponse>(body)
        .ok()
        .and_then(|e| e.errors.into_iter().next())
        .map(|e| format!("{}: {}", e.code, e.message))
        .unwrap_or_else(|| "no readable message".to_owned());
    let summary: String = said.chars().take(300).collect();
    let what = match call {
        Call::Exchange => "exchanging the Entra ID token",
        Call::Token => "asking for a scoped access token",
    };
    let detail = format!("{BACKEND} {what}: {}: {summary}", status.as_u16());
    match (call, status.as_u16()) {
        // The federation's identity (or the refresh token just issued to it) not accepted
        // (401, or the exchange's 400): retryable, a fresh token is fetched. A 403 (the
        // registry's network rules, or a role the identity lacks) is a permission only the
        // operator can grant: rejected, as every backend's 403. None of them the caller's.
        (_, 401) | (Call::Exchange, 400) => BackendError::Unavailable {
            message: "Azure Container Registry refused the federation's Azure identity".to_owned(),
            detail,
        },
        (_, 403) => BackendError::Rejected {
            message: "Azure Container Registry denied the federation's Azure identity (403: the \
                      registry's network rules or the identity's roles)"
                .to_owned(),
            detail,
        },
        (Call::Token, 400) => BackendError::Rejected {
            message: "Azure Container Registry refused the token's scope".to_owned(),
            detail,
        },
        _ => crate::http::status_error(BACKEND, status, &format!("{what}: {summary}")),
    }
}

fn unreadable(what: &str) -> BackendError {
    BackendError::Unavailable {
        message: "Azure Container Registry's answer could not be read".to_owned(),
        detail: format!("{BACKEND}: {what}"),
    }
}

impl AcrAccessTokenGenerator {
    /// Builds the generator on its store's shared connection.
    pub fn new(
        spec: AcrAccessTokenSpec,
        store: Option<&SecretStoreSpec>,
        shared: &mut crate::Shared,
    ) -> Result<Self, SpecError> {
        spec.validate()?;
        let provider = crate::azure::require_store(store, &spec.secret_store_ref)?;
        let conn = shared
            .azure
            .get(provider, |p| AzureConn::with_issuer(p, &shared.issuer))?;
        let base = match &conn.acr_endpoint {
            Some(url) => url.clone(),
            None => Url::parse(&format!("https://{}/", spec.registry))
                .map_err(|e| SpecError::field("registry", format!("is not a host: {e}")))?,
        };
        let join = |path: &str| {
            base.join(path).map_err(|e| {
                SpecError::field("registry", format!("cannot name its {path} endpoint: {e}"))
            })
        };
        Ok(Self {
            scopes: spec.scopes()?,
            exchange_url: join("oauth2/exchange")?,
            token_url: join("oauth2/token")?,
            registry: spec.registry,
            conn,
        })
    }

    /// The scopes for this request, rendered over the identity and checked.
    fn scopes(&self, ctx: &Context<'_>) -> Result<Vec<String>, BackendError> {
        self.scopes
            .iter()
            .map(|t| {
                check_scope(&t.render(ctx, str::to_owned)).map_err(|why| BackendError::Rejected {
                    message: format!("the generator's scope for this caller: {why}"),
                    detail: format!("acr: rendered scope: {why}"),
                })
            })
            .collect()
    }

    /// `POST /oauth2/exchange`: the store's Entra ID token for an ACR refresh token. A cached
    /// Entra ID token ACR refuses (revoked, or the identity's roles changed since) is dropped
    /// and one fresh token tried.
    async fn exchange(&self) -> Result<String, BackendError> {
        let (status, body) = self
            .conn
            .send_with_token(&self.conn.acr_scope, BACKEND, |token| {
                let form = [
                    ("grant_type", "access_token"),
                    ("service", self.registry.as_str()),
                    ("tenant", self.conn.tenant_id.as_str()),
                    ("access_token", token),
                ];
                self.conn.http.post(self.exchange_url.clone()).form(&form)
            })
            .await?;
        if status != reqwest::StatusCode::OK {
            return Err(answer_error(Call::Exchange, status, &body));
        }
        let answer: ExchangeResponse = serde_json::from_slice(&body)
            .map_err(|_| unreadable("exchange answer has no refresh_token string"))?;
        if answer.refresh_token.is_empty() {
            return Err(unreadable("exchange answer: empty token"));
        }
        Ok(answer.refresh_token)
    }

    /// The federation's refresh token for this registry: the kept one while it has more than
    /// [`REFRESH_MARGIN`] left, else a fresh exchange (kept when its `exp` can be read); and
    /// whether it was kept (a refused kept token is worth one fresh try).
    async fn refresh_token(&self) -> Result<(Arc<SecretString>, bool), BackendError> {
        let mut kept = self.conn.acr_refresh_tokens.0.lock().await;
        if let Some(k) = kept.get(&self.registry)
            && Instant::now() < k.refresh_after
        {
            return Ok((k.token.clone(), true));
        }
        kept.remove(&self.registry);
        let token = Arc::new(SecretString::from(self.exchange().await?));
        let left = token_expiry(token.expose_secret()).map(|exp| {
            Duration::try_from(exp.duration_since(jiff::Timestamp::now())).unwrap_or_default()
        });
        match left.map(|l| l.checked_sub(REFRESH_MARGIN)) {
            Ok(Some(left)) => {
                kept.insert(
                    self.registry.clone(),
                    KeptRefresh {
                        token: token.clone(),
                        refresh_after: Instant::now() + left,
                    },
                );
            }
            Ok(None) => tracing::debug!(
                "{BACKEND}: the refresh token expires within {REFRESH_MARGIN:?}; not kept"
            ),
            Err(why) => tracing::debug!("{BACKEND}: the refresh token {why}; not kept"),
        }
        Ok((token, false))
    }

    /// Drops `token` from the kept ones (ACR refused it), unless it was replaced already.
    async fn forget(&self, token: &Arc<SecretString>) {
        let mut kept = self.conn.acr_refresh_tokens.0.lock().await;
        if kept
            .get(&self.registry)
            .is_some_and(|k| Arc::ptr_eq(&k.token, token))
        {
            kept.remove(&self.registry);
        }
    }

    /// `POST /oauth2/token`: the federation's refresh token for an access token narrowed to
    /// `scopes`. A kept refresh token ACR refuses (401) is dropped and one fresh exchange
    /// tried. A token granting less than `scopes` ask is dropped and the request refused.
    async fn access_token(&self, scopes: &[String]) -> Result<String, BackendError> {
        let (mut refresh, mut kept) = self.refresh_token().await?;
        let mut retried = false;
        let (status, body) = loop {
            let mut form = vec![
                ("grant_type", "refresh_token"),
                ("service", self.registry.as_str()),
            ];
            form.extend(scopes.iter().map(|s| ("scope", s.as_str())));
            form.push(("refresh_token", refresh.expose_secret()));
            let req = self.conn.http.post(self.token_url.clone()).form(&form);
            let (status, body) = crate::http::send(BACKEND, req).await?;
            if status == reqwest::StatusCode::UNAUTHORIZED && kept && !retried {
                self.forget(&refresh).await;
                tracing::debug!("{BACKEND} refused a kept refresh token; exchanging again");
                (refresh, kept) = self.refresh_token().await?;
                retried = true;
                continue;
            }
            break (status, body);
        };
        if status != reqwest::StatusCode::OK {
            return Err(answer_error(Call::Token, status, &body));
        }
        let answer: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| unreadable("token answer has no access_token string"))?;
        let missing = missing_grants(&answer.access_token, scopes).map_err(|why| {
            unreadable(&format!(
                "the access token {why}, so what it grants is unknown; it was dropped"
            ))
        })?;
        if !missing.is_empty() {
            return Err(BackendError::Rejected {
                message: "Azure Container Registry granted the federation's identity less than \
                          the generator's scope asks; the token was dropped"
                    .to_owned(),
                detail: format!(
                    "{BACKEND} narrowed the access token on {}: not granted {} (the \
                     federation's identity lacks them there); the token was dropped",
                    self.registry,
                    missing.join(" ")
                ),
            });
        }
        Ok(answer.access_token)
    }
}

impl Generate for AcrAccessTokenGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let scopes = self.scopes(ctx)?;
        let password = if scopes.is_empty() {
            // Handed out: exchanged for this mint alone, never the kept one.
            self.exchange().await?
        } else {
            self.access_token(&scopes).await?
        };
        if password.is_empty() {
            return Err(unreadable("empty token"));
        }
        let expires_at = token_expiry(&password)
            .map_err(|why| unreadable(&format!("the token {why}, so its expiry is unknown")))?;
        let now = jiff::Timestamp::now();
        if expires_at <= now {
            return Err(unreadable(&format!(
                "the token expired already ({expires_at})"
            )));
        }
        if let Some(max) = ctx.max_ttl {
            crate::credential::within_max_ttl(expires_at, now, max, OVER_MAX_TTL)?;
        }
        Ok(Credential {
            data: crate::credential::registry_login(TOKEN_USERNAME, &password, &[&self.registry]),
            expires_at: Some(expires_at),
            renewable: false,
            lease: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GeneratorKind, GeneratorSpec};

    fn jwt(claims: &serde_json::Value) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    #[test]
    fn the_expiry_is_read_from_exp_and_nothing_else() {
        let exp = jiff::Timestamp::now().as_second() + 3600;
        assert_eq!(
            token_expiry(&jwt(
                &serde_json::json!({"exp": exp, "iss": "Azure Container Registry"})
            ))
            .unwrap()
            .as_second(),
            exp
        );
        assert_eq!(
            token_expiry(&jwt(&serde_json::json!({"exp": 1.7e9})))
                .unwrap()
                .as_second(),
            1_700_000_000
        );
        // A payload in the standard alphabet, padded: read too.
        let claims = (0..)
            .map(|i| serde_json::json!({"exp": 1_700_000_000, "pad": "~".repeat(i)}).to_string())
            .find(|c| {
                base64::engine::general_purpose::STANDARD
                    .encode(c)
                    .contains(['+', '/'])
            })
            .unwrap();
        let token = format!(
            "h.{}.s",
            base64::engine::general_purpose::STANDARD.encode(&claims)
        );
        assert_eq!(token_expiry(&token).unwrap().as_second(), 1_700_000_000);
        for (token, why) in [
            ("opaque-token".to_owned(), "not a JWT"),
            ("a.b.c.d".to_owned(), "not a JWT"),
            ("x.!!!.y".to_owned(), "not base64url JSON"),
            (jwt(&serde_json::json!({"iat": 1})), "no numeric `exp`"),
            (jwt(&serde_json::json!({"exp": "soon"})), "no numeric `exp`"),
            (jwt(&serde_json::json!({"exp": i64::MAX})), "out of range"),
        ] {
            let err = token_expiry(&token).unwrap_err();
            assert!(err.contains(why), "{token}: {err}");
        }
    }

    #[test]
    fn what_an_access_token_grants_is_compared_with_the_scopes() {
        let scopes = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        let token =
            |access: serde_json::Value| jwt(&serde_json::json!({"exp": 1, "access": access}));
        let asked = scopes(&[
            "repository:team/app:pull,push",
            "repository:base:pull",
            "registry:catalog:*",
        ]);
        // All of it, in entries split or merged as ACR may write them.
        let all = token(serde_json::json!([
            {"type": "repository", "name": "team/app", "actions": ["pull"]},
            {"type": "repository", "name": "team/app", "actions": ["push", "delete"]},
            {"type": "repository", "name": "base", "actions": ["*"]},
            {"type": "registry", "name": "catalog", "actions": ["*"]},
        ]));
        assert_eq!(missing_grants(&all, &asked), Ok(Vec::new()));
        // Narrowed: push on team/app dropped, base not granted at all, catalog's actions null.
        let narrowed = token(serde_json::json!([
            {"type": "repository", "name": "team/app", "actions": ["pull"]},
            {"type": "repository", "name": "team/app-other", "actions": ["push"]},
            {"type": "registry", "name": "catalog", "actions": null},
        ]));
        assert_eq!(
            missing_grants(&narrowed, &asked),
            Ok(scopes(&[
                "repository:team/app:push",
                "repository:base:pull",
                "registry:catalog:*",
            ]))
        );
        // `*` asked is granted only as `*`.
        let listed = token(serde_json::json!([
            {"type": "repository", "name": "app", "actions": ["pull", "push", "delete"]},
        ]));
        assert_eq!(
            missing_grants(&listed, &scopes(&["repository:app:*"])),
            Ok(scopes(&["repository:app:*"]))
        );
        // No `access` claim (or null) grants nothing; another shape cannot be read.
        for none in [
            jwt(&serde_json::json!({"exp": 1})),
            token(serde_json::Value::Null),
        ] {
            assert_eq!(
                missing_grants(&none, &scopes(&["repository:app:pull"])),
                Ok(scopes(&["repository:app:pull"]))
            );
        }
        for bad in [
            token(serde_json::json!({"repository": "app"})),
            token(serde_json::json!([{"type": "repository", "actions": ["pull"]}])),
            token(serde_json::json!([{"type": "repository", "name": "app", "actions": "pull"}])),
        ] {
            let err = missing_grants(&bad, &scopes(&["repository:app:pull"])).unwrap_err();
            assert!(err.contains("`access` claim"), "{err}");
        }
        assert!(missing_grants("opaque", &asked).is_err());
    }

    #[test]
    fn a_token_outliving_max_ttl_is_refused() {
        let within = |exp, now, max| crate::credential::within_max_ttl(exp, now, max, OVER_MAX_TTL);
        let now = jiff::Timestamp::now();
        let in_3h = now + jiff::SignedDuration::from_hours(3);
        let hours = |h: u64| Duration::from_secs(h * 3600);
        assert!(within(in_3h, now, hours(3)).is_ok());
        assert!(within(in_3h + jiff::SignedDuration::from_secs(3), now, hours(3)).is_ok());
        let e = within(in_3h, now, hours(1)).unwrap_err();
        assert!(matches!(e, BackendError::Rejected { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("live 3h") && text.contains("maxTTL of 1h") && text.contains("dropped"),
            "{text}"
        );
    }

    #[test]
    fn registries_are_acr_login_servers() {
        for ok in [
            "myregistry.azurecr.io",
            "myregistry.westeurope.geo.azurecr.io",
            "govreg.azurecr.us",
            "cnreg.azurecr.cn",
        ] {
            assert!(check_registry(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("https://myregistry.azurecr.io", "not a registry host name"),
            ("myregistry.azurecr.io:443", "not a registry host name"),
            ("myregistry.azurecr.io/app", "not a registry host name"),
            ("MyRegistry.azurecr.io", "lowercase"),
            ("azurecr.io", "not under an Azure Container Registry domain"),
            (
                "evilazurecr.io",
                "not under an Azure Container Registry domain",
            ),
            (
                "registry.example.com",
                "not under an Azure Container Registry domain",
            ),
            ("myregistry.azurecr.io.evil.example", "not under an Azure"),
        ] {
            let err = check_registry(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn scopes_follow_the_registry_scope_grammar() {
        for ok in [
            "repository:app:pull",
            "repository:team/app:pull,push",
            "repository:team/my-app.v2/sub__x:metadata_read",
            "repository:app:*",
            "registry:catalog:*",
        ] {
            assert_eq!(check_scope(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in [
            "app:pull",
            "repository:app",
            "repository:App:pull",
            "repository:team/*:pull",
            "repository:team//app:pull",
            "repository:-app:pull",
            "repository:a:b:pull",
            "repository:app:Pull",
            "repository:app:pull,",
            "repository::pull",
            "registry:other:*",
            "image:app:pull",
        ] {
            let err = check_scope(bad).unwrap_err();
            assert!(err.contains("not a registry scope"), "{bad}: {err}");
        }
        assert_eq!(
            split_scopes(" repository:{{ namespace }}/app:pull  registry:catalog:* "),
            ["repository:{{ namespace }}/app:pull", "registry:catalog:*"]
        );
    }

    #[test]
    fn specs_round_trip_and_bad_values_name_their_field() {
        let j = serde_json::json!({
            "secretStoreRef": {"name": "azure"},
            "registry": "myregistry.azurecr.io",
            "scope": "repository:{{namespace}}/app:pull registry:catalog:*"
        });
        let spec = GeneratorSpec::from_manifest(GeneratorKind::AcrAccessToken, j).unwrap();
        let GeneratorSpec::AcrAccessToken(s) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(
            GeneratorSpec::from_manifest(
                GeneratorKind::AcrAccessToken,
                serde_json::to_value(s).unwrap()
            )
            .unwrap(),
            spec
        );
        for (bad, says) in [
            (
                serde_json::json!({"registry": "docker.io"}),
                "spec.registry",
            ),
            (serde_json::json!({"scope": "repository:app"}), "spec.scope"),
            (serde_json::json!({"scope": "  "}), "spec.scope"),
            (
                serde_json::json!({"scope": "repository:{{nope}}:pull"}),
                "spec.scope",
            ),
            (
                serde_json::json!({"scope": "repository:{{namespace}}"}),
                "placeholders filled in",
            ),
            (
                serde_json::json!({"scope": "repository:{{namespace}}/*:pull"}),
                "without wildcards",
            ),
            (
                serde_json::json!({"scope": "x".repeat(MAX_SCOPE_LEN + 1)}),
                "spec.scope",
            ),
            (
                serde_json::json!({"tenantId": "x"}),
                "unknown field `tenantId`",
            ),
        ] {
            let mut j = serde_json::json!({
                "secretStoreRef": {"name": "azure"},
                "registry": "myregistry.azurecr.io"
            });
            for (k, v) in bad.as_object().unwrap() {
                j[k] = v.clone();
            }
            let err = GeneratorSpec::from_manifest(GeneratorKind::AcrAccessToken, j)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn acr_refusals_are_classified_and_keep_acrs_words_in_the_log() {
        let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
        let status = |s| reqwest::StatusCode::from_u16(s).unwrap();
        for (call, s, retryable) in [
            (Call::Exchange, 401, true),
            (Call::Exchange, 400, true),
            (Call::Token, 401, true),
            (Call::Exchange, 403, false),
            (Call::Token, 403, false),
        ] {
            let e = answer_error(call, status(s), body);
            assert_eq!(
                matches!(e, BackendError::Unavailable { .. }),
                retryable,
                "{s}: {e:?}"
            );
            assert!(!e.to_string().contains("authentication required"), "{e}");
            assert!(e.detail().contains("UNAUTHORIZED: authentication required"));
        }
        let e = answer_error(Call::Token, status(400), b"not json");
        assert!(matches!(e, BackendError::Rejected { .. }), "{e:?}");
        assert!(e.to_string().contains("scope"), "{e}");
        let e = answer_error(Call::Exchange, status(503), b"");
        assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
    }
}
