//! `QuayAccessToken`: a docker login to Quay (quay.io or a self-hosted Quay) as a robot account,
//! through Quay's robot federation (External Secrets Operator parity, done the esi way).
//!
//! The federation signs an identity token for the caller with its own OIDC issuer (see
//! [`crate::identity`]; `sub` = `<cluster>:system:serviceaccount:<namespace>:<name>`) and
//! exchanges it at `GET {url}/oauth2/federation/robot/token`, HTTP Basic auth with the robot
//! account as user name and the identity token as password. Quay finds the robot's federation
//! configuration (a list of issuer and subject pairs), fetches the issuer's discovery document
//! and JWKS, checks the signature, `exp`, and that `sub` is one of the subjects configured for
//! that issuer, and answers with a short-lived robot token. So the robot trusts one workload
//! identity of one cluster, set in Quay, and nothing is stored: no robot password in the
//! federation, no SecretStore. Unlike External Secrets Operator's, which sends Quay a
//! ServiceAccount token of the workload's cluster, Quay needs to reach only the federation's
//! issuer URL, never a cluster's, and the subject names the cluster.
//!
//! The identity token lives five minutes (shortened to the Authorization's `maxTTL`); its `aud`
//! is `audience`, by default Quay's host (`quay.io`). Quay does not check `aud` unless the
//! robot's federation configuration lists audiences (newer Quay releases); then it must be one
//! of them. Quay takes only RSA-signed tokens (RS256): the federation's signing key (the first
//! of its issuer keys) must be an RSA key, or a configuration naming this kind does not load.
//! Quay must reach the federation's issuer URL over `https` (it fetches the discovery document
//! and the JWKS itself, on its first exchange and when a `kid` is new to it).
//!
//! Returns `username` (the robot account), `password` (Quay's token), `registry` (Quay's host,
//! with its port when not 443) and `dockerconfigjson` (a `~/.docker/config.json` for it), plus
//! the expiry: the `exp` claim of Quay's token, read without verifying (the token is Quay's to
//! itself); if it has none, Quay's default of one hour is assumed. Quay's robot tokens cannot
//! be revoked or shortened: one outliving the Authorization's `maxTTL` is dropped, never handed
//! out, and the request refused.
//!
//! Quay's 401 (the robot is unknown, not federated with this issuer, or the subject is not
//! among its configured ones) is the caller's refusal (`backend_rejected`) with Quay's words:
//! the federation's own signing key is not in doubt, only this robot's configuration. 403 is a
//! refusal too; 429, 5xx and timeouts are `backend_unavailable`.
//!
//! The federation must be configured as an issuer (`--issuer-url` and its keys); a
//! configuration naming this kind is refused at load by a federation that is not.
//!
//! ```yaml
//! kind: QuayAccessToken
//! spec:
//!   robotAccount: myorg+puller     # federated in Quay with the federation's issuer URL and
//!                                  # subject prod-eu:system:serviceaccount:payments:api
//!   url: quay.io                   # default; a host or https:// URL of a self-hosted Quay
//!   audience: quay.io              # default: the Quay host
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

/// The Quay a spec without `url` logs in to.
pub const DEFAULT_URL: &str = "quay.io";
/// Quay's robot federation endpoint, under its URL.
pub const TOKEN_PATH: &str = "oauth2/federation/robot/token";
/// How long the identity token shown to Quay lives (the Authorization's `maxTTL` shortens it):
/// Quay checks it once, at once.
pub const IDENTITY_TOKEN_LIFETIME: Duration = token_exchange::IDENTITY_TOKEN_LIFETIME;
/// The lifetime assumed for a Quay token whose `exp` cannot be read: Quay's default for robot
/// tokens.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// The longest part of a robot account name (Quay's limit for a namespace or a robot's name).
pub const MAX_NAME_LEN: usize = 255;

const BACKEND: &str = "Quay";

/// What the log calls the endpoint.
const ENDPOINT: &str = "quay robot federation";

/// What a token outliving maxTTL is called and what became of it.
const OVER_MAX_TTL: OverMaxTtl = (
    "the Quay robot token",
    "it was dropped, not handed out (Quay cannot revoke or shorten one)",
    "quay",
);

/// `spec` of a `QuayAccessToken` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "QuayAccessToken",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuayAccessTokenSpec {
    /// The Quay to log in to: a host (`quay.io`, the default; `quay.example.com:8443`) or an
    /// `https://` URL without a path. Its host (and port) is the login's `registry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The robot account, `<namespace>+<name>` (`myorg+puller`), whose federation in Quay
    /// lists the federation's issuer URL and the caller's subject
    /// (`<cluster>:system:serviceaccount:<namespace>:<name>`).
    pub robot_account: String,
    /// The identity token's `aud` (default: Quay's host, `quay.io`). Quay checks it only when
    /// the robot's federation lists audiences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// Where a spec's Quay is: its token endpoint, and its host as a registry name and as the
/// default audience.
struct Endpoint {
    token_url: reqwest::Url,
    registry: String,
    host: String,
}

impl QuayAccessTokenSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.endpoint()?;
        check_robot_account(&self.robot_account)
            .map_err(|why| SpecError::field("robotAccount", why))?;
        if let Some(aud) = &self.audience {
            crate::identity_token::check_audience(aud)
                .map_err(|why| SpecError::field("audience", why))?;
        }
        Ok(())
    }

    /// `url` read: `https://` (a bare host gets it), or `http://` to a loopback address only
    /// (a local fake); no path, query, fragment or user info.
    /// The identity token's `aud`: `audience`, else Quay's host (`None` for a spec whose `url`
    /// [`validate`](Self::validate) refuses).
    pub fn token_audience(&self) -> Option<String> {
        match &self.audience {
            Some(aud) => Some(aud.clone()),
            None => self.endpoint().ok().map(|e| e.host),
        }
    }

    fn endpoint(&self) -> Result<Endpoint, SpecError> {
        let text = self.url.as_deref().unwrap_or(DEFAULT_URL);
        let base = crate::http::host_or_url(text, "url")?;
        if base.path() != "/" {
            return Err(SpecError::field(
                "url",
                format!(
                    "{text:?} has a path; give Quay's host (quay.example.com) or https:// URL \
                     without one: the login is for the host"
                ),
            ));
        }
        let host = base.host_str().unwrap_or_default().to_owned();
        let registry = crate::http::authority(&base);
        let token_url = base
            .join(TOKEN_PATH)
            .map_err(|e| SpecError::field("url", format!("{text:?}: {e}")))?;
        Ok(Endpoint {
            token_url,
            registry,
            host,
        })
    }
}

/// Why `name` is not a Quay robot account name: `<namespace>+<robot>`, each part 2 to 255
/// lowercase letters, digits, `.`, `_` or `-`, starting with a letter or digit (what Quay
/// accepts for namespaces and robots).
fn check_robot_account(name: &str) -> Result<(), String> {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let part_ok = |p: &str| {
        (2..=MAX_NAME_LEN).contains(&p.len())
            && p.bytes().next().is_some_and(alnum)
            && p.bytes()
                .all(|b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
    };
    match name.split_once('+') {
        Some((namespace, robot)) if part_ok(namespace) && part_ok(robot) => Ok(()),
        _ => Err(format!(
            "{name:?} is not a Quay robot account: <namespace>+<name> (myorg+puller), \
             lowercase letters, digits, `.`, `_` and `-`"
        )),
    }
}

/// The built `QuayAccessToken` generator.
#[derive(Debug)]
pub struct QuayAccessTokenGenerator {
    robot_account: String,
    audiences: [String; 1],
    token_url: reqwest::Url,
    registry: String,
    client: reqwest::Client,
    issuer: Option<Arc<Issuer>>,
}

impl QuayAccessTokenGenerator {
    /// Builds the generator on the federation's issuer (`None` where the configuration is
    /// only checked, see [`crate::Shared::with_issuer`]). No I/O.
    pub fn new(spec: QuayAccessTokenSpec, issuer: Option<Arc<Issuer>>) -> Result<Self, SpecError> {
        spec.validate()?;
        if let Some(issuer) = &issuer {
            token_exchange::require_rs256(issuer, BACKEND)?;
        }
        let Endpoint {
            token_url,
            registry,
            host,
        } = spec.endpoint()?;
        Ok(QuayAccessTokenGenerator {
            client: crate::http::client(None, crate::http::DEFAULT_TIMEOUT, "url")?,
            audiences: [spec.audience.unwrap_or(host)],
            robot_account: spec.robot_account,
            token_url,
            registry,
            issuer,
        })
    }
}

/// Quay's answer to a successful exchange.
#[derive(Deserialize)]
struct TokenAnswer {
    token: String,
}

/// Quay's `error` text, if its answer has one (cleaned, bounded: it reaches the caller).
fn quay_error(body: &[u8]) -> Option<String> {
    token_exchange::said(body, "error")
}

impl Generate for QuayAccessTokenGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let (issuer, identity_token) =
            token_exchange::mint(self.issuer.as_ref(), ctx, &self.audiences)?;
        let (status, body) = crate::http::send(
            BACKEND,
            self.client
                .get(self.token_url.clone())
                .basic_auth(
                    &self.robot_account,
                    Some(identity_token.token.expose_secret()),
                )
                .header(reqwest::header::ACCEPT, "application/json"),
        )
        .await?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            // Quay verified the token against the federation's published keys, or could not:
            // either way the robot's federation (issuer, subject, audiences) is what to fix.
            let said = quay_error(&body).unwrap_or_else(|| "no reason given".to_owned());
            let subject = crate::identity::subject(ctx.identity);
            return Err(BackendError::Rejected {
                message: format!(
                    "Quay refused the federation's identity token for robot account {:?}: {said} \
                     (the robot's federation must list issuer {} with subject {subject})",
                    self.robot_account,
                    issuer.url()
                ),
                detail: format!(
                    "quay robot federation {} as {}: 401: {said}",
                    self.token_url, self.robot_account
                ),
            });
        }
        if !status.is_success() {
            let said = quay_error(&body).unwrap_or_default();
            return Err(crate::http::status_error(
                BACKEND,
                status,
                &format!(
                    "robot federation {} as {}: {said}",
                    self.token_url, self.robot_account
                ),
            ));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
            token_exchange::unreadable(BACKEND, ENDPOINT, "the answer is not {\"token\": ...} JSON")
        })?;
        if answer.token.is_empty() {
            return Err(token_exchange::unreadable(BACKEND, ENDPOINT, "empty token"));
        }
        let expires_at = token_exchange::expiry(
            &answer.token,
            DEFAULT_TOKEN_LIFETIME,
            ctx.max_ttl,
            OVER_MAX_TTL,
            (BACKEND, ENDPOINT),
        )?;
        Ok(Credential {
            data: crate::credential::registry_login(
                &self.robot_account,
                &answer.token,
                &[&self.registry],
            ),
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

    fn spec(json: serde_json::Value) -> Result<QuayAccessTokenSpec, SpecError> {
        match GeneratorSpec::from_manifest(GeneratorKind::QuayAccessToken, json)? {
            GeneratorSpec::QuayAccessToken(s) => Ok(s),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_to_quay_io_with_its_host_as_registry_and_audience() {
        let s = spec(serde_json::json!({"robotAccount": "myorg+puller"})).unwrap();
        let g = QuayAccessTokenGenerator::new(s.clone(), None).unwrap();
        assert_eq!(
            g.token_url.as_str(),
            "https://quay.io/oauth2/federation/robot/token"
        );
        assert_eq!(g.registry, "quay.io");
        assert_eq!(g.audiences, ["quay.io".to_owned()]);
        assert_eq!(
            GeneratorSpec::from_manifest(
                GeneratorKind::QuayAccessToken,
                serde_json::to_value(&s).unwrap()
            )
            .unwrap(),
            GeneratorSpec::QuayAccessToken(s)
        );
    }

    #[test]
    fn urls_may_be_hosts_or_https_urls_and_keep_their_port() {
        for (url, token_url, registry, aud) in [
            (
                "quay.example.com",
                "https://quay.example.com/oauth2/federation/robot/token",
                "quay.example.com",
                "quay.example.com",
            ),
            (
                "https://quay.example.com/",
                "https://quay.example.com/oauth2/federation/robot/token",
                "quay.example.com",
                "quay.example.com",
            ),
            (
                "quay.example.com:8443",
                "https://quay.example.com:8443/oauth2/federation/robot/token",
                "quay.example.com:8443",
                "quay.example.com",
            ),
            (
                "https://quay.io:443",
                "https://quay.io/oauth2/federation/robot/token",
                "quay.io",
                "quay.io",
            ),
            (
                "http://127.0.0.1:8080",
                "http://127.0.0.1:8080/oauth2/federation/robot/token",
                "127.0.0.1:8080",
                "127.0.0.1",
            ),
        ] {
            let s = spec(serde_json::json!({"url": url, "robotAccount": "org+bot"})).unwrap();
            let g = QuayAccessTokenGenerator::new(s, None).unwrap();
            assert_eq!(g.token_url.as_str(), token_url, "{url}");
            assert_eq!(g.registry, registry, "{url}");
            assert_eq!(g.audiences[0], aud, "{url}");
        }
        let s =
            spec(serde_json::json!({"robotAccount": "org+bot", "audience": "esi-quay"})).unwrap();
        let g = QuayAccessTokenGenerator::new(s, None).unwrap();
        assert_eq!(g.audiences[0], "esi-quay");
    }

    #[test]
    fn bad_specs_are_refused_naming_the_field() {
        for (json, says) in [
            (
                serde_json::json!({"robotAccount": "org+bot", "serviceAccountRef": {"name": "x"}}),
                "unknown field `serviceAccountRef`",
            ),
            (serde_json::json!({}), "missing field `robotAccount`"),
            (
                serde_json::json!({"robotAccount": "puller"}),
                "spec.robotAccount: \"puller\" is not a Quay robot account",
            ),
            (
                serde_json::json!({"robotAccount": "MyOrg+puller"}),
                "spec.robotAccount",
            ),
            (
                serde_json::json!({"robotAccount": "org+"}),
                "spec.robotAccount",
            ),
            (
                serde_json::json!({"robotAccount": "org+bot+x"}),
                "spec.robotAccount",
            ),
            (
                serde_json::json!({"robotAccount": "org+bot:pw"}),
                "spec.robotAccount",
            ),
            (
                serde_json::json!({"robotAccount": "org+-bot"}),
                "spec.robotAccount",
            ),
            (
                serde_json::json!({"robotAccount": format!("org+{}", "b".repeat(256))}),
                "spec.robotAccount",
            ),
            (
                serde_json::json!({"robotAccount": "org+bot", "url": "http://quay.example.com"}),
                "spec.url: \"http://quay.example.com\" is not an https:// URL (http:// only for a loopback address",
            ),
            (
                serde_json::json!({"robotAccount": "org+bot", "url": "http://10.0.0.1:8080"}),
                "spec.url",
            ),
            (
                serde_json::json!({"robotAccount": "org+bot", "url": "https://quay.example.com/quay"}),
                "spec.url: \"https://quay.example.com/quay\" has a path",
            ),
            (
                serde_json::json!({"robotAccount": "org+bot", "url": "quay.io?x=1"}),
                "spec.url",
            ),
            (
                serde_json::json!({"robotAccount": "org+bot", "url": "https://u:p@quay.io"}),
                "spec.url",
            ),
            (
                serde_json::json!({"robotAccount": "org+bot", "url": "ftp://quay.io"}),
                "spec.url",
            ),
            (
                serde_json::json!({"robotAccount": "org+bot", "url": ""}),
                "spec.url",
            ),
            (
                serde_json::json!({"robotAccount": "org+bot", "audience": " "}),
                "spec.audience",
            ),
            (
                serde_json::json!({"robotAccount": "org+bot", "audience": "a\nb"}),
                "spec.audience",
            ),
        ] {
            let err = spec(json.clone()).unwrap_err().to_string();
            assert!(err.contains(says), "{json}: {err}");
        }
        for ok in ["myorg+puller", "my-org.x+ci_bot", "u1+r2", "org+a__b"] {
            assert!(check_robot_account(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn a_serving_federation_without_an_issuer_refuses_the_kind_at_load() {
        let s = GeneratorSpec::from_manifest(
            GeneratorKind::QuayAccessToken,
            serde_json::json!({"robotAccount": "org+bot"}),
        )
        .unwrap();
        let err = crate::Generator::build_shared(&s, None, &mut crate::Shared::with_issuer(None))
            .unwrap_err()
            .to_string();
        assert!(err.contains("OIDC issuer"), "{err}");
        // Checked on its own (no federation settings), it builds, and refuses requests.
        assert!(crate::Generator::build(&s, None).is_ok());
    }

    #[test]
    fn an_issuer_signing_with_an_ec_key_is_refused_at_load() {
        use crate::identity::{KeyAlgorithm, generate_key_pem};
        let s = GeneratorSpec::from_manifest(
            GeneratorKind::QuayAccessToken,
            serde_json::json!({"robotAccount": "org+bot"}),
        )
        .unwrap();
        let issuer = |algs: &[KeyAlgorithm]| {
            let pem: String = algs
                .iter()
                .map(|a| generate_key_pem(*a).unwrap().expose_secret().to_owned())
                .collect();
            Arc::new(Issuer::new("https://esi.example.com", &pem).unwrap())
        };
        let build =
            |i| crate::Generator::build_shared(&s, None, &mut crate::Shared::with_issuer(Some(i)));
        let err = build(issuer(&[KeyAlgorithm::Es256, KeyAlgorithm::Rs256]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("signs with ES256"), "{err}");
        assert!(build(issuer(&[KeyAlgorithm::Rs256, KeyAlgorithm::Es256])).is_ok());
    }

    #[tokio::test]
    async fn without_an_issuer_a_request_is_rejected_before_quay_is_asked() {
        let s = spec(serde_json::json!({"robotAccount": "org+bot", "url": "http://127.0.0.1:1"}))
            .unwrap();
        let g = QuayAccessTokenGenerator::new(s, None).unwrap();
        let id = crate::identity::tests::identity();
        let err = g
            .generate(&Context {
                identity: &id,
                generator: "payments/QuayAccessToken/pull",
                max_ttl: None,
            })
            .await
            .unwrap_err();
        assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");
        assert!(err.to_string().contains("not configured as an OIDC issuer"));
    }

    #[test]
    fn quays_words_are_its_error_member() {
        assert_eq!(
            quay_error(br#"{"error": "Token does not match robot"}"#).as_deref(),
            Some("Token does not match robot")
        );
        assert_eq!(quay_error(br#"{"detail": "Not found"}"#), None);
    }
}
