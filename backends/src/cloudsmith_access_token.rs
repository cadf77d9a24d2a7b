//! `CloudsmithAccessToken`: a short-lived Cloudsmith API token for a Cloudsmith service account,
//! through Cloudsmith's OpenID Connect exchange (External Secrets Operator parity, done the esi
//! way), with a login to Cloudsmith's Docker registry.
//!
//! The federation signs an identity token for the caller with its own OIDC issuer (see
//! [`crate::identity`]; `sub` = `<cluster>:system:serviceaccount:<namespace>:<name>`) and
//! exchanges it at `POST {apiUrl}/openid/{orgSlug}/` with the JSON body
//! `{"oidc_token": ..., "service_slug": ...}` (Cloudsmith's `openid_create`, as its API
//! bindings, its CLI and External Secrets Operator call it). Cloudsmith finds the
//! organization's OpenID Connect provider settings whose provider URL is the token's issuer,
//! fetches the issuer's discovery document and JWKS, checks the signature and `exp`, that the
//! token carries every claim the settings require (`sub`, `aud`, ... with their values), and
//! that the service account is one the settings name, and answers `201 {"token": ...}`: a JWT
//! Cloudsmith says lives "around 90 minutes". So one workload identity of one cluster, set in
//! Cloudsmith, acts as the service account, and nothing is stored: no API key in the
//! federation, no SecretStore. Unlike External Secrets Operator's, which sends Cloudsmith a
//! ServiceAccount token of the workload's cluster, Cloudsmith needs to reach only the
//! federation's issuer URL, and the subject names the cluster.
//!
//! The identity token lives five minutes (shortened to the Authorization's `maxTTL`); its `aud`
//! is `audience`, by default `cloudsmith` (what Cloudsmith's CLI asks every provider for).
//! Cloudsmith checks `aud` only when the provider settings require an `aud` claim; then it must
//! be that value. Cloudsmith documents no signing algorithm; every provider it documents
//! (GitHub Actions, GitLab, CircleCI, Google, AWS STS, which Cloudsmith's CLI asks for RS256
//! though ES384 is offered) signs RS256, so the federation's signing key (the first of its
//! issuer keys) must be an RSA key, or a configuration naming this kind does not load.
//! Cloudsmith must reach the issuer URL over `https`.
//!
//! Returns `token` (Cloudsmith's token: the `X-Api-Key` of its API, as an API key is), and a
//! login to Cloudsmith's Docker registry (`registry`, default `docker.cloudsmith.io`):
//! `username` `token` (the user name Cloudsmith's own Docker credential helper gives with an
//! OIDC token or an API key), `password` (the token), `registry` and `dockerconfigjson`. The
//! expiry is the token's `exp`, read without verifying (the token is Cloudsmith's to check);
//! if it has none, Cloudsmith's 90 minutes are assumed. A token cannot be asked to live
//! shorter: one outliving the Authorization's `maxTTL` is dropped, never handed out, and the
//! request refused.
//!
//! Cloudsmith answers a refusal with `{"detail": ...}`: 401 (the token could not be
//! authenticated: no provider settings for its issuer, a claim missing or different, the
//! service not among the settings' service accounts), 400 (no token could be made) and 422
//! (missing or invalid parameters) are the caller's refusal (`backend_rejected`) with
//! Cloudsmith's words, as are 403 and 404 (an organization Cloudsmith does not know); the
//! federation's own signing key is not in doubt, only this organization's settings. 429, 5xx
//! and timeouts are `backend_unavailable`.
//!
//! The federation must be configured as an issuer (`--issuer-url` and its keys); a
//! configuration naming this kind is refused at load by a federation that is not.
//!
//! ```yaml
//! kind: CloudsmithAccessToken
//! spec:
//!   orgSlug: my-org                  # provider settings in my-org name the federation's
//!   serviceSlug: ci-puller           # issuer URL, require sub prod-eu:system:serviceaccount:
//!                                    # payments:api, and list the service account ci-puller
//!   apiUrl: https://api.cloudsmith.io  # default; a host or https:// URL
//!   audience: cloudsmith             # default
//!   registry: docker.cloudsmith.io   # default; a custom Docker domain
//! ```

use std::sync::Arc;
use std::time::Duration;

use kube::CustomResource;
use schemars::JsonSchema;
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};

use crate::identity::Issuer;
use crate::token_exchange::{self, OverMaxTtl};
use crate::{BackendError, Context, Credential, Generate, SpecError};

/// Cloudsmith's API, for a spec without `apiUrl`.
pub const DEFAULT_API_URL: &str = "https://api.cloudsmith.io";
/// Cloudsmith's Docker registry, for a spec without `registry`.
pub const DEFAULT_REGISTRY: &str = "docker.cloudsmith.io";
/// The identity token's `aud` for a spec without `audience`: what Cloudsmith's CLI asks every
/// OIDC provider for.
pub const DEFAULT_AUDIENCE: &str = "cloudsmith";
/// The user name of the Docker login: Cloudsmith's own credential helper gives it with a token.
pub const DOCKER_USERNAME: &str = "token";
/// The lifetime assumed for a Cloudsmith token whose `exp` cannot be read: Cloudsmith's
/// "around 90 minutes".
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(90 * 60);
/// The longest slug taken.
pub const MAX_SLUG_LEN: usize = 128;

const BACKEND: &str = "Cloudsmith";

/// What the log calls the endpoint.
const ENDPOINT: &str = "cloudsmith openid";

/// What a token outliving maxTTL is called and what became of it.
const OVER_MAX_TTL: OverMaxTtl = (
    "the Cloudsmith token",
    "it was dropped, not handed out (Cloudsmith's OIDC tokens cannot be asked to live shorter)",
    "cloudsmith",
);

/// `spec` of a `CloudsmithAccessToken` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "CloudsmithAccessToken",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloudsmithAccessTokenSpec {
    /// Cloudsmith's API: `https://api.cloudsmith.io` (the default), a host, or an `https://`
    /// URL (a path is kept: the exchange is `{apiUrl}/openid/{orgSlug}/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// The organization (workspace) whose OpenID Connect provider settings name the
    /// federation's issuer URL.
    pub org_slug: String,
    /// The service account to act as: one the provider settings name.
    pub service_slug: String,
    /// The identity token's `aud` (default `cloudsmith`). Cloudsmith checks it only when the
    /// provider settings require an `aud` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// The Docker registry the login is for: `docker.cloudsmith.io` (the default) or a custom
    /// Docker domain of the organization, a host with an optional port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
}

impl CloudsmithAccessTokenSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        check_slug(&self.org_slug).map_err(|why| SpecError::field("orgSlug", why))?;
        check_slug(&self.service_slug).map_err(|why| SpecError::field("serviceSlug", why))?;
        self.exchange_url()?;
        self.registry()?;
        if let Some(aud) = &self.audience {
            crate::identity_token::check_audience(aud)
                .map_err(|why| SpecError::field("audience", why))?;
        }
        Ok(())
    }

    /// `{apiUrl}/openid/{orgSlug}/`: `apiUrl` as [`crate::http::host_or_url`] reads it, its
    /// path kept.
    fn exchange_url(&self) -> Result<reqwest::Url, SpecError> {
        let text = self.api_url.as_deref().unwrap_or(DEFAULT_API_URL);
        let mut base = crate::http::host_or_url(text, "apiUrl")?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        // The slug is checked: letters, digits, `-`, `_` and `.`, so it joins as one segment.
        base.join(&format!("openid/{}/", self.org_slug))
            .map_err(|e| SpecError::field("apiUrl", format!("{text:?}: {e}")))
    }

    /// The registry's `host[:port]`.
    fn registry(&self) -> Result<String, SpecError> {
        let text = self.registry.as_deref().unwrap_or(DEFAULT_REGISTRY);
        let url = crate::http::host_or_url(text, "registry")?;
        if url.path() != "/" {
            return Err(SpecError::field(
                "registry",
                format!("{text:?} has a path; give the registry's host (docker.cloudsmith.io)"),
            ));
        }
        Ok(crate::http::authority(&url))
    }
}

/// Why `slug` is not a Cloudsmith slug: 1 to [`MAX_SLUG_LEN`] ASCII letters, digits, `-`, `_`
/// or `.`, starting with a letter or digit (it is a path segment of the exchange URL).
fn check_slug(slug: &str) -> Result<(), String> {
    let ok = (1..=MAX_SLUG_LEN).contains(&slug.len())
        && slug
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && slug
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{slug:?} is not a Cloudsmith slug: 1 to {MAX_SLUG_LEN} letters, digits, `-`, `_` \
             and `.`, starting with a letter or digit"
        ))
    }
}

/// The built `CloudsmithAccessToken` generator.
#[derive(Debug)]
pub struct CloudsmithAccessTokenGenerator {
    org_slug: String,
    service_slug: String,
    audiences: [String; 1],
    exchange_url: reqwest::Url,
    registry: String,
    client: reqwest::Client,
    issuer: Option<Arc<Issuer>>,
}

impl CloudsmithAccessTokenGenerator {
    /// Builds the generator on the federation's issuer (`None` where the configuration is
    /// only checked, see [`crate::Shared::with_issuer`]). No I/O.
    pub fn new(
        spec: CloudsmithAccessTokenSpec,
        issuer: Option<Arc<Issuer>>,
    ) -> Result<Self, SpecError> {
        spec.validate()?;
        if let Some(issuer) = &issuer {
            token_exchange::require_rs256(issuer, BACKEND)?;
        }
        Ok(CloudsmithAccessTokenGenerator {
            client: crate::http::client(None, crate::http::DEFAULT_TIMEOUT, "apiUrl")?,
            exchange_url: spec.exchange_url()?,
            registry: spec.registry()?,
            audiences: [spec.audience.unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned())],
            org_slug: spec.org_slug,
            service_slug: spec.service_slug,
            issuer,
        })
    }
}

/// What Cloudsmith's `openid_create` takes.
#[derive(Serialize)]
struct Exchange<'a> {
    oidc_token: &'a str,
    service_slug: &'a str,
}

/// Cloudsmith's answer to a successful exchange.
#[derive(Deserialize)]
struct TokenAnswer {
    token: String,
}

impl Generate for CloudsmithAccessTokenGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let (issuer, identity_token) =
            token_exchange::mint(self.issuer.as_ref(), ctx, &self.audiences)?;
        let (status, body) = crate::http::send(
            BACKEND,
            self.client
                .post(self.exchange_url.clone())
                .header(reqwest::header::ACCEPT, "application/json")
                .json(&Exchange {
                    oidc_token: identity_token.token.expose_secret(),
                    service_slug: &self.service_slug,
                }),
        )
        .await?;
        let code = status.as_u16();
        let refused_by_cloudsmith = status.is_client_error()
            && status != reqwest::StatusCode::TOO_MANY_REQUESTS
            && status != reqwest::StatusCode::REQUEST_TIMEOUT;
        if refused_by_cloudsmith {
            // Cloudsmith verified the token against the federation's published keys, or could
            // not: either way the organization's provider settings are what to fix, or the
            // spec's slugs.
            let said = token_exchange::said(&body, "detail")
                .unwrap_or_else(|| "no reason given".to_owned());
            let hint = if status == reqwest::StatusCode::UNAUTHORIZED {
                format!(
                    " (the organization's OpenID Connect provider settings must have provider \
                     URL {}, require only claims the token carries (sub {}, aud {}) and list \
                     the service account)",
                    issuer.url(),
                    crate::identity::subject(ctx.identity),
                    self.audiences[0]
                )
            } else {
                String::new()
            };
            return Err(BackendError::Rejected {
                message: format!(
                    "Cloudsmith refused the federation's identity token for service {:?} of \
                     {:?} ({code}): {said}{hint}",
                    self.service_slug, self.org_slug
                ),
                detail: format!(
                    "{ENDPOINT} {} for {}: {code}: {said}",
                    self.exchange_url, self.service_slug
                ),
            });
        }
        if !status.is_success() {
            let said = token_exchange::said(&body, "detail").unwrap_or_default();
            return Err(crate::http::status_error(
                BACKEND,
                status,
                &format!(
                    "openid {} for {}: {said}",
                    self.exchange_url, self.service_slug
                ),
            ));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
            token_exchange::unreadable(BACKEND, ENDPOINT, "the answer is not {\"token\": ...} JSON")
        })?;
        if answer.token.trim().is_empty() {
            return Err(token_exchange::unreadable(BACKEND, ENDPOINT, "empty token"));
        }
        let expires_at = token_exchange::expiry(
            &answer.token,
            DEFAULT_TOKEN_LIFETIME,
            ctx.max_ttl,
            OVER_MAX_TTL,
            (BACKEND, ENDPOINT),
        )?;
        let mut data =
            crate::credential::registry_login(DOCKER_USERNAME, &answer.token, &[&self.registry]);
        data.insert("token".to_owned(), answer.token);
        Ok(Credential {
            data,
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

    fn spec(json: serde_json::Value) -> Result<CloudsmithAccessTokenSpec, SpecError> {
        match GeneratorSpec::from_manifest(GeneratorKind::CloudsmithAccessToken, json)? {
            GeneratorSpec::CloudsmithAccessToken(s) => Ok(s),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_to_cloudsmiths_api_registry_and_audience() {
        let s = spec(serde_json::json!({"orgSlug": "my-org", "serviceSlug": "ci-puller"})).unwrap();
        let g = CloudsmithAccessTokenGenerator::new(s.clone(), None).unwrap();
        assert_eq!(
            g.exchange_url.as_str(),
            "https://api.cloudsmith.io/openid/my-org/"
        );
        assert_eq!(g.registry, "docker.cloudsmith.io");
        assert_eq!(g.audiences, ["cloudsmith".to_owned()]);
        assert_eq!(
            GeneratorSpec::from_manifest(
                GeneratorKind::CloudsmithAccessToken,
                serde_json::to_value(&s).unwrap()
            )
            .unwrap(),
            GeneratorSpec::CloudsmithAccessToken(s)
        );
    }

    #[test]
    fn api_urls_may_be_hosts_or_https_urls_with_a_path_and_registries_hosts() {
        for (api_url, exchange_url) in [
            ("api.cloudsmith.io", "https://api.cloudsmith.io/openid/org/"),
            (
                "https://api.cloudsmith.io/",
                "https://api.cloudsmith.io/openid/org/",
            ),
            (
                "https://proxy.example.com/cloudsmith",
                "https://proxy.example.com/cloudsmith/openid/org/",
            ),
            (
                "api.example.com:8443",
                "https://api.example.com:8443/openid/org/",
            ),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/openid/org/"),
        ] {
            let s = spec(serde_json::json!({
                "apiUrl": api_url, "orgSlug": "org", "serviceSlug": "svc"
            }))
            .unwrap();
            let g = CloudsmithAccessTokenGenerator::new(s, None).unwrap();
            assert_eq!(g.exchange_url.as_str(), exchange_url, "{api_url}");
        }
        for (registry, name) in [
            ("docker.example.com", "docker.example.com"),
            ("https://docker.example.com", "docker.example.com"),
            ("docker.example.com:5000", "docker.example.com:5000"),
            ("https://docker.cloudsmith.io:443", "docker.cloudsmith.io"),
        ] {
            let s = spec(serde_json::json!({
                "registry": registry, "orgSlug": "org", "serviceSlug": "svc", "audience": "aud"
            }))
            .unwrap();
            let g = CloudsmithAccessTokenGenerator::new(s, None).unwrap();
            assert_eq!(g.registry, name, "{registry}");
            assert_eq!(g.audiences[0], "aud");
        }
    }

    #[test]
    fn bad_specs_are_refused_naming_the_field() {
        let base = |extra: serde_json::Value| {
            let mut json = serde_json::json!({"orgSlug": "org", "serviceSlug": "svc"});
            for (k, v) in extra.as_object().unwrap() {
                json[k] = v.clone();
            }
            json
        };
        for (json, says) in [
            (
                base(serde_json::json!({"serviceAccountRef": {"name": "default"}})),
                "unknown field `serviceAccountRef`",
            ),
            (
                base(serde_json::json!({"apiHost": "api.cloudsmith.io"})),
                "unknown field `apiHost`",
            ),
            (
                serde_json::json!({"serviceSlug": "svc"}),
                "missing field `orgSlug`",
            ),
            (
                serde_json::json!({"orgSlug": "org"}),
                "missing field `serviceSlug`",
            ),
            (
                base(serde_json::json!({"orgSlug": "my/org"})),
                "spec.orgSlug: \"my/org\" is not a Cloudsmith slug",
            ),
            (base(serde_json::json!({"orgSlug": ".."})), "spec.orgSlug"),
            (base(serde_json::json!({"orgSlug": ""})), "spec.orgSlug"),
            (base(serde_json::json!({"orgSlug": "a?b"})), "spec.orgSlug"),
            (base(serde_json::json!({"orgSlug": "a%2f"})), "spec.orgSlug"),
            (
                base(serde_json::json!({"serviceSlug": "x".repeat(129)})),
                "spec.serviceSlug",
            ),
            (
                base(serde_json::json!({"serviceSlug": "svc\n"})),
                "spec.serviceSlug",
            ),
            (
                base(serde_json::json!({"apiUrl": "http://api.cloudsmith.io"})),
                "spec.apiUrl: \"http://api.cloudsmith.io\" is not an https:// URL (http:// only for a loopback address",
            ),
            (
                base(serde_json::json!({"apiUrl": "http://10.0.0.1:8080"})),
                "spec.apiUrl",
            ),
            (
                base(serde_json::json!({"apiUrl": "https://api.cloudsmith.io?x=1"})),
                "spec.apiUrl",
            ),
            (
                base(serde_json::json!({"apiUrl": "https://u:p@api.cloudsmith.io"})),
                "spec.apiUrl",
            ),
            (base(serde_json::json!({"apiUrl": ""})), "spec.apiUrl"),
            (
                base(serde_json::json!({"registry": "docker.example.com/org"})),
                "spec.registry: \"docker.example.com/org\" has a path",
            ),
            (
                base(serde_json::json!({"registry": "http://docker.example.com"})),
                "spec.registry",
            ),
            (base(serde_json::json!({"audience": " "})), "spec.audience"),
            (
                base(serde_json::json!({"audience": "a\nb"})),
                "spec.audience",
            ),
        ] {
            let err = spec(json.clone()).unwrap_err().to_string();
            assert!(err.contains(says), "{json}: {err}");
        }
        for ok in ["my-org", "org_1", "a", "service-XXXX", "v1.2"] {
            assert!(check_slug(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn a_serving_federation_without_an_rsa_issuer_refuses_the_kind_at_load() {
        use crate::identity::{KeyAlgorithm, generate_key_pem};
        let s = GeneratorSpec::from_manifest(
            GeneratorKind::CloudsmithAccessToken,
            serde_json::json!({"orgSlug": "org", "serviceSlug": "svc"}),
        )
        .unwrap();
        let build =
            |i| crate::Generator::build_shared(&s, None, &mut crate::Shared::with_issuer(i));
        let err = build(None).unwrap_err().to_string();
        assert!(err.contains("OIDC issuer"), "{err}");
        let issuer = |alg| {
            let pem = generate_key_pem(alg).unwrap();
            Some(Arc::new(
                Issuer::new("https://esi.example.com", pem.expose_secret()).unwrap(),
            ))
        };
        let err = build(issuer(KeyAlgorithm::Es256)).unwrap_err().to_string();
        assert!(
            err.contains("Cloudsmith verifies only RSA-signed identity tokens"),
            "{err}"
        );
        assert!(build(issuer(KeyAlgorithm::Rs256)).is_ok());
        // Checked on its own (no federation settings), it builds, and refuses requests.
        assert!(crate::Generator::build(&s, None).is_ok());
    }

    #[tokio::test]
    async fn without_an_issuer_a_request_is_rejected_before_cloudsmith_is_asked() {
        let s = spec(serde_json::json!({
            "orgSlug": "org", "serviceSlug": "svc", "apiUrl": "http://127.0.0.1:1"
        }))
        .unwrap();
        let g = CloudsmithAccessTokenGenerator::new(s, None).unwrap();
        let id = crate::identity::tests::identity();
        let err = g
            .generate(&Context {
                identity: &id,
                generator: "payments/CloudsmithAccessToken/pull",
                max_ttl: None,
            })
            .await
            .unwrap_err();
        assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");
        assert!(err.to_string().contains("not configured as an OIDC issuer"));
    }
}
