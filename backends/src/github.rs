//! `GithubAccessToken`: a GitHub App installation access token, scoped to the repositories and
//! permissions the generator names (External Secrets Operator parity), plus the `github`
//! SecretStore provider holding the App's identity.
//!
//! The store holds what the platform team owns: the API URL (github.com, or GitHub Enterprise
//! Server's `https://<host>/api/v3`), the App's ID (or Client ID) and where the federation
//! finds the App's private key (its environment or a file, never the manifest; the file is
//! re-read on every mint, so a rotated key needs no restart). The generator names the
//! installation and narrows the token: `repositories` (names, which may use the identity's
//! placeholders, e.g. `"{{namespace}}-config"`), `repositoryIds`, `permissions`.
//!
//! A mint signs a JWT for the App (RS256, issued a minute in the past for clock drift, valid
//! nine minutes, as GitHub asks) and calls `POST /app/installations/{id}/access_tokens`. GitHub
//! tokens live one hour and cannot be asked to live less: an Authorization whose `maxTTL` is
//! shorter is refused before anything is minted. A token GitHub answers with a later expiry
//! than `maxTTL` allows (were GitHub to lengthen its tokens), or in an answer that cannot be
//! read, is revoked at once and the request refused, the message saying whether the revoke
//! worked (its failure goes to the log detail). Tokens are revocable: the lease holds the
//! token itself (sealed by the federation like every lease), because GitHub revokes an
//! installation token only when presented with it (`DELETE /installation/token`).
//!
//! ```yaml
//! kind: SecretStore
//! spec:
//!   provider:
//!     github:
//!       appId: "123456"
//!       privateKey: {file: /var/run/secrets/github-app/private-key.pem}
//! ---
//! kind: GithubAccessToken
//! spec:
//!   secretStoreRef: {name: github}
//!   installationId: 7890123
//!   repositories: ["{{namespace}}-config"]
//!   permissions: {contents: read}
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kube::CustomResource;
use reqwest::Url;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject as _;
use schemars::JsonSchema;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::store::{SecretStoreRef, StoreProvider};
use crate::template::Template;
use crate::{
    BackendError, Context, Credential, Generate, LeaseHandle, SecretRef, SecretStoreSpec, SpecError,
};

const BACKEND: &str = "GitHub";

/// GitHub's public API.
pub const DEFAULT_URL: &str = "https://api.github.com";
/// The REST API version the calls are written against.
pub const API_VERSION: &str = "2022-11-28";
/// How long GitHub's installation tokens live (fixed by GitHub).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// How many repositories one token may name (GitHub's limit).
pub const MAX_REPOSITORIES: usize = 500;

/// The `github` SecretStore provider: a GitHub App.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GithubProvider {
    /// The REST API's base URL: `https://api.github.com` (default), or GitHub Enterprise
    /// Server's `https://<host>/api/v3`. `http://` only for a loopback address (a local fake).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The App's ID, or its Client ID (the JWT's issuer).
    pub app_id: String,
    /// The App's private key (PEM, as GitHub issues it, or PKCS#8).
    pub private_key: SecretRef,
    /// PEM certificates trusted (in addition to the system roots), for GitHub Enterprise
    /// Server behind a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// Timeout of each call (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

impl GithubProvider {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.base_url()?;
        let id = self.app_id.as_str();
        if id.is_empty()
            || id.len() > 64
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
        {
            return Err(SpecError::field(
                "provider.github.appId",
                format!("{id:?} is not a GitHub App ID or Client ID"),
            ));
        }
        self.private_key.validate("provider.github.privateKey")?;
        if self.timeout.is_some_and(|t| t.get().is_zero()) {
            return Err(SpecError::field(
                "provider.github.timeout",
                "must be positive",
            ));
        }
        if let Some(pem) = &self.ca_bundle {
            crate::http::check_ca_bundle(pem, "provider.github.caBundle")?;
        }
        Ok(())
    }

    /// The API's base URL, ending in `/` so that relative paths join under it.
    fn base_url(&self) -> Result<Url, SpecError> {
        crate::http::base_url(
            self.url.as_deref().unwrap_or(DEFAULT_URL),
            "provider.github.url",
        )
    }
}

/// `spec` of a `GithubAccessToken` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "GithubAccessToken",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GithubAccessTokenSpec {
    /// The `github` SecretStore (the App) minting the token.
    pub secret_store_ref: SecretStoreRef,
    /// The App installation (an organization or account) the token acts for.
    pub installation_id: u64,
    /// Repository names the token is limited to (templates over the caller's identity:
    /// `{{namespace}}`, `{{serviceAccount}}`, ...). With neither this nor `repositoryIds`, the
    /// token reaches every repository of the installation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<String>,
    /// Repository IDs the token is limited to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repository_ids: Vec<u64>,
    /// Permissions the token is limited to (`contents: read`, `pull_requests: write`, ...);
    /// empty means all the App was granted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub permissions: BTreeMap<String, String>,
}

impl GithubAccessTokenSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.installation_id == 0 {
            return Err(SpecError::field("installationId", "must be positive"));
        }
        if self.repositories.len() + self.repository_ids.len() > MAX_REPOSITORIES {
            return Err(SpecError::field(
                "repositories",
                format!("GitHub limits a token to {MAX_REPOSITORIES} repositories"),
            ));
        }
        for (i, name) in self.repositories.iter().enumerate() {
            let field = format!("repositories[{i}]");
            Template::parse(name, &field)?;
            // Checked as written when it has no placeholder; else once rendered, per request.
            if !name.contains("{{") {
                check_repository(name).map_err(|why| SpecError::field(&field, why))?;
            }
        }
        if self.repository_ids.contains(&0) {
            return Err(SpecError::field("repositoryIds", "IDs must be positive"));
        }
        for (name, level) in &self.permissions {
            if name.is_empty()
                || name.len() > 64
                || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            {
                return Err(SpecError::field(
                    format!("permissions.{name}"),
                    "is not a GitHub App permission name (lowercase letters and `_`)",
                ));
            }
            if !matches!(level.as_str(), "read" | "write" | "admin") {
                return Err(SpecError::field(
                    format!("permissions.{name}"),
                    format!("{level:?} is not read, write or admin"),
                ));
            }
        }
        Ok(())
    }
}

/// Why `name` is not a GitHub repository name (letters, digits, `-`, `_`, `.`; at most 100).
fn check_repository(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 100
        || name == "."
        || name == ".."
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "{name:?} is not a repository name (letters, digits, `-`, `_` and `.`, at most 100)"
        ));
    }
    Ok(())
}

/// A store's App: the HTTP client, the API's base URL, the App's ID and key reference.
pub struct GithubConn {
    http: reqwest::Client,
    base: Url,
    app_id: String,
    private_key: SecretRef,
}

impl fmt::Debug for GithubConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubConn")
            .field("base", &self.base.as_str())
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

impl GithubConn {
    /// Prepares the connection (the key is read on each use).
    pub fn new(p: &GithubProvider) -> Result<Self, SpecError> {
        p.validate()?;
        let timeout = p
            .timeout
            .map_or(crate::http::DEFAULT_TIMEOUT, HumanDuration::get);
        Ok(GithubConn {
            http: crate::http::client(p.ca_bundle.as_deref(), timeout, "provider.github.caBundle")?,
            base: p.base_url()?,
            app_id: p.app_id.clone(),
            private_key: p.private_key.clone(),
        })
    }

    /// Who GitHub takes the App's JWT for (`GET /app`): the App's slug and name.
    pub async fn whoami(&self) -> Result<String, BackendError> {
        let jwt = self.app_jwt()?;
        let req = self.request(reqwest::Method::GET, self.url("app")?, jwt.expose_secret());
        let (status, body) = crate::http::send(BACKEND, req).await?;
        if !status.is_success() {
            return Err(answer_error("GET /app", status, &body));
        }
        #[derive(Deserialize)]
        struct App {
            slug: String,
            #[serde(default)]
            name: String,
        }
        let app: App =
            esi_api::json::from_answer(&body).map_err(|e| BackendError::Unavailable {
                message: "GitHub's answer about the App could not be read".to_owned(),
                detail: format!("{BACKEND} GET /app: {e}"),
            })?;
        Ok(format!(
            "App {:?} ({:?}), id {}",
            app.slug, app.name, self.app_id
        ))
    }

    fn url(&self, path: &str) -> Result<Url, BackendError> {
        self.base.join(path).map_err(|e| BackendError::Unavailable {
            message: "the GitHub store's URL cannot be used".to_owned(),
            detail: format!("{BACKEND}: joining {path:?} to {}: {e}", self.base),
        })
    }

    /// A request with the headers GitHub asks every REST call to carry.
    fn request(&self, method: reqwest::Method, url: Url, bearer: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
            .bearer_auth(bearer)
    }

    /// The App's JWT: RS256 over `{iat, exp, iss}`, issued 60 s in the past (GitHub's advice
    /// against clock drift) and expiring 9 minutes from now (GitHub accepts at most 10).
    fn app_jwt(&self) -> Result<SecretString, BackendError> {
        let pem = self.private_key.read()?;
        let key = app_key(pem.expose_secret()).map_err(|why| BackendError::Unavailable {
            message: "the federation's GitHub App key cannot be used".to_owned(),
            detail: format!(
                "{BACKEND}: the private key from {} {why}",
                self.private_key.describe()
            ),
        })?;
        let now = jiff::Timestamp::now().as_second();
        let claims = serde_json::json!({"iat": now - 60, "exp": now + 540, "iss": self.app_id});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0u8; key.public_modulus_len()];
        key.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            signing_input.as_bytes(),
            &mut signature,
        )
        .map_err(|_| BackendError::Unavailable {
            message: "the federation's GitHub App key cannot be used".to_owned(),
            detail: format!("{BACKEND}: signing the App's JWT failed"),
        })?;
        Ok(SecretString::from(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        )))
    }
}

/// The App's RSA key from its PEM text: PKCS#1 (`RSA PRIVATE KEY`, as GitHub issues it) or
/// PKCS#8. The error reads after the key's source, and holds nothing of the key.
fn app_key(pem: &str) -> Result<RsaKeyPair, String> {
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| "is not a PEM private key".to_owned())?;
    let key = match &der {
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        _ => return Err("is not an RSA key (GitHub App keys are RSA)".to_owned()),
    };
    key.map_err(|e| format!("is not a usable RSA key: {e}"))
}

/// The built `GithubAccessToken` generator.
#[derive(Debug)]
pub struct GithubAccessTokenGenerator {
    spec: GithubAccessTokenSpec,
    repositories: Vec<Template>,
    conn: Arc<GithubConn>,
}

/// What `POST /app/installations/{id}/access_tokens` is sent.
#[derive(Serialize)]
struct TokenRequest<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    repositories: Vec<String>,
    #[serde(skip_serializing_if = "<[u64]>::is_empty")]
    repository_ids: &'a [u64],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    permissions: &'a BTreeMap<String, String>,
}

/// What GitHub answers (the fields used).
#[derive(Deserialize)]
struct TokenResponse {
    token: String,
    expires_at: jiff::Timestamp,
}

/// What a GitHub error answer says (`{"message": ..., "documentation_url": ...}`).
#[derive(Deserialize)]
struct ErrorResponse {
    message: String,
}

impl GithubAccessTokenGenerator {
    /// Builds the generator on its store's shared connection.
    pub fn new(
        spec: GithubAccessTokenSpec,
        store: Option<&SecretStoreSpec>,
        conns: &mut crate::store::Conns<GithubConn>,
    ) -> Result<Self, SpecError> {
        spec.validate()?;
        let provider =
            crate::store::require(store, &spec.secret_store_ref, "github", |p| match p {
                StoreProvider::Github(g) => Some(g),
                #[allow(unreachable_patterns)]
                _ => None,
            })?;
        let conn = conns.get(provider, GithubConn::new)?;
        let repositories = spec
            .repositories
            .iter()
            .enumerate()
            .map(|(i, r)| Template::parse(r, &format!("repositories[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            spec,
            repositories,
            conn,
        })
    }

    /// The repository names for this request, rendered over the identity and checked.
    fn repositories(&self, ctx: &Context<'_>) -> Result<Vec<String>, BackendError> {
        self.repositories
            .iter()
            .map(|t| {
                let name = t.render(ctx, str::to_owned);
                check_repository(&name)
                    .map(|()| name)
                    .map_err(|why| BackendError::Rejected {
                        message: format!("the generator's repository for this caller {why}"),
                        detail: format!("{BACKEND}: rendered repository {why}"),
                    })
            })
            .collect()
    }
}

/// The error of a GitHub answer other than success: GitHub's own `message` goes to the log
/// only (it may name repositories); the caller learns the status and what it means.
fn answer_error(what: &str, status: reqwest::StatusCode, body: &[u8]) -> BackendError {
    let said = serde_json::from_slice::<ErrorResponse>(body)
        .map(|e| e.message)
        .unwrap_or_else(|_| "no readable message".to_owned());
    let summary: String = said.chars().take(300).collect();
    match status.as_u16() {
        // The App's own credentials were refused: the federation's configuration, which the
        // caller cannot fix.
        401 => BackendError::Unavailable {
            message: "GitHub refused the federation's App credentials".to_owned(),
            detail: format!("{BACKEND} {what}: 401: {summary}"),
        },
        // GitHub's primary and secondary rate limits answer 403 (or 429) too: retryable,
        // unlike a 403 refusing a permission (GitHub's rule: the message says which).
        403 | 429 if said.contains("rate limit") => BackendError::Unavailable {
            message: "GitHub's rate limit for the federation's App was reached".to_owned(),
            detail: format!("{BACKEND} {what}: {}: {summary}", status.as_u16()),
        },
        404 => BackendError::Rejected {
            message: "GitHub knows no such App installation".to_owned(),
            detail: format!("{BACKEND} {what}: 404: {summary}"),
        },
        422 => BackendError::Rejected {
            message: "GitHub refused the token's repositories or permissions: the installation \
                      does not reach them"
                .to_owned(),
            detail: format!("{BACKEND} {what}: 422: {summary}"),
        },
        _ => crate::http::status_error(BACKEND, status, &format!("{what}: {summary}")),
    }
}

impl Generate for GithubAccessTokenGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        if let Some(max) = ctx.max_ttl
            && max < TOKEN_LIFETIME
        {
            return Err(BackendError::Rejected {
                message: format!(
                    "GitHub installation tokens live {}, longer than the Authorization's maxTTL \
                     of {}; nothing was minted",
                    humantime::format_duration(TOKEN_LIFETIME),
                    humantime::format_duration(max)
                ),
                detail: format!(
                    "{BACKEND}: maxTTL {}s < {}s",
                    max.as_secs(),
                    TOKEN_LIFETIME.as_secs()
                ),
            });
        }
        let body = TokenRequest {
            repositories: self.repositories(ctx)?,
            repository_ids: &self.spec.repository_ids,
            permissions: &self.spec.permissions,
        };
        let body = serde_json::to_vec(&body).map_err(|e| BackendError::Unavailable {
            message: "the GitHub token request cannot be written".to_owned(),
            detail: format!("{BACKEND}: {e}"),
        })?;
        let jwt = self.conn.app_jwt()?;
        let url = self.conn.url(&format!(
            "app/installations/{}/access_tokens",
            self.spec.installation_id
        ))?;
        let req = self
            .conn
            .request(reqwest::Method::POST, url, jwt.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let (status, body) = crate::http::send(BACKEND, req).await?;
        if status != reqwest::StatusCode::CREATED {
            return Err(answer_error(
                "creating an installation token",
                status,
                &body,
            ));
        }
        let answer: TokenResponse = match serde_json::from_slice(&body) {
            Ok(answer) => answer,
            Err(e) => {
                // A token minted that cannot be handed out: revoked, if it can be read at all.
                let minted = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| Some(v.get("token")?.as_str()?.to_owned()));
                let unreadable = BackendError::Unavailable {
                    message: "GitHub's answer could not be read".to_owned(),
                    detail: format!(
                        "{BACKEND}: installation token answer: {}",
                        esi_api::json::without_values(&e.to_string())
                    ),
                };
                return Err(match minted {
                    Some(token) => crate::credential::with_revocation(
                        unreadable,
                        self.revoke_token(&token).await,
                    ),
                    None => unreadable,
                });
            }
        };
        let token = answer.token;
        if let Some(max) = ctx.max_ttl
            && let Err(e) = crate::credential::within_max_ttl(
                answer.expires_at,
                jiff::Timestamp::now(),
                max,
                ("GitHub's token", "it was not handed out", BACKEND),
            )
        {
            // GitHub lengthened its tokens: this one must not be handed out, nor live on.
            return Err(crate::credential::with_revocation(
                e,
                self.revoke_token(&token).await,
            ));
        }
        Ok(Credential {
            data: BTreeMap::from([("token".to_owned(), token.clone())]),
            expires_at: Some(answer.expires_at),
            renewable: false,
            lease: Some(LeaseHandle(serde_json::json!({ "token": token }))),
        })
    }

    async fn revoke(&self, handle: &LeaseHandle) -> Result<bool, BackendError> {
        let token = handle
            .0
            .get("token")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| BackendError::Rejected {
                message: "the lease names no GitHub token".to_owned(),
                detail: format!("{BACKEND}: lease handle without a token"),
            })?;
        self.revoke_token(token).await
    }
}

impl GithubAccessTokenGenerator {
    /// `DELETE /installation/token`, authenticated by the token itself. A token GitHub no
    /// longer accepts (revoked before, or expired) has nothing left to revoke.
    async fn revoke_token(&self, token: &str) -> Result<bool, BackendError> {
        let url = self.conn.url("installation/token")?;
        let req = self.conn.request(reqwest::Method::DELETE, url, token);
        let (status, body) = crate::http::send(BACKEND, req).await?;
        match status.as_u16() {
            204 => Ok(true),
            401 => Ok(false),
            _ => Err(answer_error(
                "revoking an installation token",
                status,
                &body,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GeneratorKind, GeneratorSpec};

    fn provider(url: Option<&str>) -> GithubProvider {
        GithubProvider {
            url: url.map(str::to_owned),
            app_id: "123456".into(),
            private_key: SecretRef::env("GITHUB_APP_KEY"),
            ca_bundle: None,
            timeout: None,
        }
    }

    #[test]
    fn github_errors_follow_the_rule_every_backend_follows() {
        let class = |status: u16, message: &str| {
            let body = serde_json::json!({ "message": message }).to_string();
            answer_error(
                "creating an installation token",
                reqwest::StatusCode::from_u16(status).unwrap(),
                body.as_bytes(),
            )
        };
        let e = class(401, "A JSON web token could not be decoded");
        assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
        let e = class(403, "Resource not accessible by integration");
        assert!(matches!(e, BackendError::Rejected { .. }), "{e:?}");
        for (status, limit) in [
            (403, "API rate limit exceeded for installation ID 7."),
            (
                403,
                "You have exceeded a secondary rate limit. Please wait a few minutes.",
            ),
            (429, "You have exceeded a secondary rate limit."),
        ] {
            let e = class(status, limit);
            assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
            assert!(e.to_string().contains("rate limit"), "{e}");
            assert!(!e.to_string().contains("installation ID"), "{e}");
        }
    }

    #[test]
    fn the_api_url_is_https_or_loopback_http_and_keeps_its_path() {
        let base = |u: Option<&str>| provider(u).base_url().map(|u| u.to_string());
        assert_eq!(base(None).unwrap(), "https://api.github.com/");
        assert_eq!(
            base(Some("https://ghe.example/api/v3")).unwrap(),
            "https://ghe.example/api/v3/"
        );
        assert_eq!(
            base(Some("http://127.0.0.1:8080/api/v3/")).unwrap(),
            "http://127.0.0.1:8080/api/v3/"
        );
        for bad in [
            "http://ghe.example/api/v3",
            "ftp://ghe.example",
            "https://ghe.example/api?x=1",
            "https://user:pw@ghe.example/",
            "not a url",
        ] {
            let err = base(Some(bad)).unwrap_err().to_string();
            assert!(err.contains("provider.github.url"), "{bad}: {err}");
        }
        let joined = provider(Some("https://ghe.example/api/v3"))
            .base_url()
            .unwrap()
            .join("app/installations/1/access_tokens")
            .unwrap();
        assert_eq!(
            joined.as_str(),
            "https://ghe.example/api/v3/app/installations/1/access_tokens"
        );
    }

    #[test]
    fn the_store_checks_the_app_id_and_the_key_reference() {
        assert!(provider(None).validate().is_ok());
        for id in ["", "12 34", "123/456", "Iv1.abc\n"] {
            let p = GithubProvider {
                app_id: id.into(),
                ..provider(None)
            };
            let err = p.validate().unwrap_err().to_string();
            assert!(err.contains("provider.github.appId"), "{id:?}: {err}");
        }
        let client_id = GithubProvider {
            app_id: "Iv23liAbCdEf.1".into(),
            ..provider(None)
        };
        assert!(client_id.validate().is_ok());
        let lease_keys = GithubProvider {
            private_key: SecretRef::env("ESI_LEASE_KEYS"),
            ..provider(None)
        };
        let err = lease_keys.validate().unwrap_err().to_string();
        assert!(err.contains("provider.github.privateKey.env"), "{err}");
    }

    #[test]
    fn specs_round_trip_and_bad_values_name_their_field() {
        let j = serde_json::json!({
            "secretStoreRef": {"name": "github"},
            "installationId": 42,
            "repositories": ["{{namespace}}-config", "shared.docs"],
            "repositoryIds": [7],
            "permissions": {"contents": "read", "pull_requests": "write"}
        });
        let spec = GeneratorSpec::from_manifest(GeneratorKind::GithubAccessToken, j).unwrap();
        let GeneratorSpec::GithubAccessToken(s) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(
            GeneratorSpec::from_manifest(
                GeneratorKind::GithubAccessToken,
                serde_json::to_value(s).unwrap()
            )
            .unwrap(),
            spec
        );
        for (bad, field) in [
            (
                serde_json::json!({"installationId": 0}),
                "spec.installationId",
            ),
            (
                serde_json::json!({"repositories": ["a/b"]}),
                "spec.repositories[0]",
            ),
            (
                serde_json::json!({"repositories": ["{{nope}}"]}),
                "spec.repositories[0]",
            ),
            (
                serde_json::json!({"repositoryIds": [0]}),
                "spec.repositoryIds",
            ),
            (
                serde_json::json!({"permissions": {"contents": "all"}}),
                "spec.permissions.contents",
            ),
            (
                serde_json::json!({"permissions": {"Contents": "read"}}),
                "spec.permissions.Contents",
            ),
            (serde_json::json!({"token": "x"}), "unknown field `token`"),
        ] {
            let mut j =
                serde_json::json!({"secretStoreRef": {"name": "github"}, "installationId": 42});
            for (k, v) in bad.as_object().unwrap() {
                j[k] = v.clone();
            }
            let err = GeneratorSpec::from_manifest(GeneratorKind::GithubAccessToken, j)
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{bad}: {err}");
        }
        let many: Vec<String> = (0..=MAX_REPOSITORIES).map(|i| format!("r{i}")).collect();
        let j = serde_json::json!({"secretStoreRef": {"name": "github"}, "installationId": 1, "repositories": many});
        assert!(
            GeneratorSpec::from_manifest(GeneratorKind::GithubAccessToken, j)
                .unwrap_err()
                .to_string()
                .contains("500")
        );
    }

    #[test]
    fn a_key_that_is_not_an_rsa_pem_key_is_named_without_its_text() {
        for (pem, why) in [
            ("not a key", "not a PEM private key"),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
                "not a usable RSA key",
            ),
        ] {
            let err = app_key(pem).err().unwrap_or_default();
            assert!(err.contains(why), "{err}");
            assert!(!err.contains("AAAA"), "{err}");
        }
    }
}
