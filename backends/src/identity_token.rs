//! `IdentityToken`: an OIDC identity token signed by the federation itself (see
//! [`crate::identity`]), for a relying party that trusts the federation's issuer URL: AWS
//! `AssumeRoleWithWebIdentity`, Google workload identity federation, Entra ID federated
//! credentials, or any service taking OIDC tokens.
//!
//! Unlike the workload's own ServiceAccount token, it names the cluster in its `sub`
//! (`<cluster>:system:serviceaccount:<namespace>:<name>`), carries the audience the relying
//! party expects, and is verifiable by anyone who can reach the federation, private clusters
//! included. Output: `token`; the credential's `expiresAt` is the token's `exp`. The lifetime
//! is `expiration` (default `15m`, from `1m` to `24h`), shortened to the Authorization's
//! `maxTTL`. A signed token cannot be revoked: keep it short. With `awsSessionTags`, the token
//! carries AWS's session tags claim naming the identity (see [`crate::identity`]).
//!
//! The federation must be configured as an issuer (`--issuer-url` and its keys); a
//! configuration naming this kind is refused at load by a federation that is not.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::CustomResource;
use schemars::JsonSchema;
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::identity::{Issuer, TokenRequest};
use crate::{BackendError, Context, Credential, Generate, SpecError};

/// The most audiences one token carries.
pub const MAX_AUDIENCES: usize = 10;
/// The longest audience.
pub const MAX_AUDIENCE_LEN: usize = 256;
/// The shortest `expiration`.
pub const MIN_EXPIRATION: Duration = Duration::from_secs(60);
/// The longest `expiration`.
pub const MAX_EXPIRATION: Duration = Duration::from_secs(24 * 3600);
/// The default `expiration`.
pub const DEFAULT_EXPIRATION: Duration = Duration::from_secs(15 * 60);

/// `spec` of an `IdentityToken` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "IdentityToken",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentityTokenSpec {
    /// The token's `aud`: what the relying party expects (`sts.amazonaws.com` for AWS, the
    /// workload identity provider's URL for Google, `api://AzureADTokenExchange` for Entra
    /// ID). One to ten; one is written as a string, several as an array.
    pub audiences: Vec<String>,
    /// How long the token lives (default `15m`, from `1m` to `24h`); the Authorization's
    /// `maxTTL` shortens it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<HumanDuration>,
    /// Add AWS's session tags claim (`https://aws.amazon.com/tags`): `AssumeRoleWithWebIdentity`
    /// then tags the session `esi-cluster`, `kubernetes-namespace`,
    /// `kubernetes-service-account` and `kubernetes-pod-name`, as `AWSAssumeRole` does, for
    /// policies on `aws:PrincipalTag/...`. The role's trust policy must allow
    /// `sts:TagSession`. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub aws_session_tags: bool,
}

impl IdentityTokenSpec {
    /// Checks the audiences and the expiration.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.audiences.is_empty() || self.audiences.len() > MAX_AUDIENCES {
            return Err(SpecError::field(
                "audiences",
                format!(
                    "must name 1 to {MAX_AUDIENCES} audiences, got {}",
                    self.audiences.len()
                ),
            ));
        }
        for (i, aud) in self.audiences.iter().enumerate() {
            check_audience(aud).map_err(|why| SpecError::field(format!("audiences[{i}]"), why))?;
            if self.audiences[..i].contains(aud) {
                return Err(SpecError::field(
                    format!("audiences[{i}]"),
                    format!("{aud:?} is named twice"),
                ));
            }
        }
        if let Some(exp) = self.expiration
            && !(MIN_EXPIRATION..=MAX_EXPIRATION).contains(&exp.get())
        {
            return Err(SpecError::field(
                "expiration",
                format!("must be from 1m to 24h, got {exp}"),
            ));
        }
        Ok(())
    }

    /// The token's lifetime under `max_ttl`.
    pub fn lifetime(&self, max_ttl: Option<Duration>) -> Duration {
        let want = self
            .expiration
            .map_or(DEFAULT_EXPIRATION, HumanDuration::get);
        max_ttl.map_or(want, |m| want.min(m))
    }
}

/// Why `aud` cannot be an audience: empty or blank, over [`MAX_AUDIENCE_LEN`] bytes, or holding
/// control characters (the bounds of every kind that names an audience).
pub(crate) fn check_audience(aud: &str) -> Result<(), String> {
    if aud.trim().is_empty() || aud.len() > MAX_AUDIENCE_LEN || aud.chars().any(char::is_control) {
        return Err(format!(
            "must be 1 to {MAX_AUDIENCE_LEN} bytes without control characters, got {aud:?}"
        ));
    }
    Ok(())
}

/// The built `IdentityToken` generator.
#[derive(Debug, Clone)]
pub struct IdentityTokenGenerator {
    spec: IdentityTokenSpec,
    issuer: Option<Arc<Issuer>>,
}

impl IdentityTokenGenerator {
    /// Builds the generator on the federation's issuer (`None` where the configuration is
    /// only checked, see [`crate::Shared::with_issuer`]).
    pub fn new(spec: IdentityTokenSpec, issuer: Option<Arc<Issuer>>) -> Result<Self, SpecError> {
        spec.validate()?;
        Ok(IdentityTokenGenerator { spec, issuer })
    }
}

/// The federation's issuer, or the refusal a generator needing one gives without it (reached
/// only where a configuration was checked without the issuer it would be served with).
pub(crate) fn issuer_of(issuer: Option<&Arc<Issuer>>) -> Result<&Issuer, BackendError> {
    issuer
        .map(Arc::as_ref)
        .ok_or_else(|| BackendError::Rejected {
            message: "this federation is not configured as an OIDC issuer".to_owned(),
            detail: "identity: no issuer (--issuer-url and its keys) configured".to_owned(),
        })
}

impl Generate for IdentityTokenGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let issuer = issuer_of(self.issuer.as_ref())?;
        let minted = issuer.mint(&TokenRequest {
            identity: ctx.identity,
            generator: ctx.generator,
            audiences: &self.spec.audiences,
            lifetime: self.spec.lifetime(ctx.max_ttl),
            aws_session_tags: self.spec.aws_session_tags,
        })?;
        let mut cred = Credential::static_data(BTreeMap::from([(
            "token".to_owned(),
            minted.token.expose_secret().to_owned(),
        )]));
        cred.expires_at = Some(minted.expires_at);
        Ok(cred)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{KeyAlgorithm, generate_key_pem};
    use crate::{GeneratorKind, GeneratorSpec};

    fn spec(json: serde_json::Value) -> Result<GeneratorSpec, SpecError> {
        let spec = GeneratorSpec::from_manifest(GeneratorKind::IdentityToken, json)?;
        spec.validate()?;
        Ok(spec)
    }

    fn issuer() -> Arc<Issuer> {
        let pem = generate_key_pem(KeyAlgorithm::Es256).unwrap();
        Arc::new(Issuer::new("https://esi.example.com", pem.expose_secret()).unwrap())
    }

    #[tokio::test]
    async fn mints_a_token_for_the_caller_shortened_to_max_ttl() {
        let issuer = issuer();
        let spec = IdentityTokenSpec {
            audiences: vec!["sts.amazonaws.com".to_owned()],
            expiration: Some(HumanDuration::from_secs(3600)),
            aws_session_tags: true,
        };
        let generator = IdentityTokenGenerator::new(spec, Some(issuer.clone())).unwrap();
        let id = crate::identity::tests::identity();
        let before = jiff::Timestamp::now().as_second();
        let cred = generator
            .generate(&Context {
                identity: &id,
                generator: "payments/IdentityToken/aws",
                max_ttl: Some(Duration::from_secs(600)),
            })
            .await
            .unwrap();
        assert_eq!(cred.data.keys().collect::<Vec<_>>(), ["token"]);
        assert!(cred.lease.is_none());
        let claims = crate::identity::tests::verify(&issuer, &cred.data["token"]);
        assert_eq!(claims["aud"], "sts.amazonaws.com");
        assert_eq!(claims["sub"], "prod-eu:system:serviceaccount:payments:api");
        assert_eq!(
            claims["https://aws.amazon.com/tags"]["principal_tags"]["kubernetes-namespace"],
            serde_json::json!(["payments"])
        );
        let exp = claims["exp"].as_i64().unwrap();
        assert!(
            (before + 600..=before + 602).contains(&exp),
            "maxTTL caps: {exp}"
        );
        assert_eq!(cred.expires_at.unwrap().as_second(), exp);
    }

    #[tokio::test]
    async fn without_an_issuer_the_request_is_rejected_with_the_reason() {
        let generator = IdentityTokenGenerator::new(
            IdentityTokenSpec {
                audiences: vec!["a".to_owned()],
                expiration: None,
                aws_session_tags: false,
            },
            None,
        )
        .unwrap();
        let id = crate::identity::tests::identity();
        let err = generator
            .generate(&Context {
                identity: &id,
                generator: "g",
                max_ttl: None,
            })
            .await
            .unwrap_err();
        assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");
        assert!(err.to_string().contains("not configured as an OIDC issuer"));
    }

    #[test]
    fn bad_specs_are_refused_naming_the_field() {
        for (json, field) in [
            (serde_json::json!({"audiences": []}), "audiences"),
            (serde_json::json!({"audiences": [""]}), "audiences[0]"),
            (serde_json::json!({"audiences": ["a", "a"]}), "audiences[1]"),
            (serde_json::json!({"audiences": ["a\nb"]}), "audiences[0]"),
            (
                serde_json::json!({"audiences": ["a"], "expiration": "30s"}),
                "expiration",
            ),
            (
                serde_json::json!({"audiences": ["a"], "expiration": "25h"}),
                "expiration",
            ),
        ] {
            let err = spec(json.clone()).unwrap_err();
            assert!(
                matches!(&err, SpecError::Invalid { path, .. } if path == field),
                "{json}: {err}"
            );
        }
        let err = spec(serde_json::json!({"audiences": ["a"], "audience": "b"})).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        assert!(spec(serde_json::json!({"audiences": ["a", "b"], "expiration": "1h"})).is_ok());
    }

    #[test]
    fn lifetime_defaults_to_fifteen_minutes_and_max_ttl_shortens_it() {
        let s = IdentityTokenSpec {
            audiences: vec!["a".to_owned()],
            expiration: None,
            aws_session_tags: false,
        };
        assert_eq!(s.lifetime(None), DEFAULT_EXPIRATION);
        assert_eq!(
            s.lifetime(Some(Duration::from_secs(60))),
            Duration::from_secs(60)
        );
        assert_eq!(
            s.lifetime(Some(Duration::from_secs(7200))),
            DEFAULT_EXPIRATION
        );
    }
}
