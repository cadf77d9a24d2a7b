//! `ECRAuthorizationToken`: an Amazon ECR registry login (External Secrets Operator parity),
//! from `GetAuthorizationToken` on an `aws` SecretStore.
//!
//! The token carries the ECR permissions of whoever asked for it. By default that is the
//! store's own identity; with `roleArn` the generator first assumes that role exactly as
//! `AWSAssumeRole` does, its session tagged with the caller's identity (`esi-cluster`,
//! `kubernetes-namespace`, `kubernetes-service-account`, `kubernetes-pod-name`), so repository
//! policies can key on `aws:PrincipalTag/...` and one role serves every namespace with only its
//! own repositories.
//!
//! Returns `username` (`AWS`), `password`, `registry` (the registry's host),
//! `proxy_endpoint` (its `https://` URL) and `dockerconfigjson` (a `~/.docker/config.json`
//! for that registry, what crane, buildah, kaniko and `docker` read), plus the expiry.
//! ECR tokens live 12 hours and cannot be revoked or shortened: under an Authorization whose
//! `maxTTL` is shorter, the token is dropped, never handed out, and the request refused.
//!
//! ```yaml
//! kind: ECRAuthorizationToken
//! spec:
//!   secretStoreRef: {name: aws}
//!   roleArn: arn:aws:iam::123456789012:role/ecr-pull   # optional
//! ```

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::aws::{CallerRole, map_service_error, validate_caller_role};
use crate::store::SecretStoreRef;
use crate::{BackendError, Context, Credential, Generate, SecretStoreSpec, SpecError};

/// What a token outliving maxTTL is called and what became of it.
const OVER_MAX_TTL: (&str, &str, &str) = (
    "the Amazon ECR token",
    "it was dropped, not handed out (ECR cannot revoke or shorten one)",
    "ecr",
);

/// [`crate::credential::within_max_ttl`] for ECR tokens.
fn within_max_ttl(
    expires_at: jiff::Timestamp,
    now: jiff::Timestamp,
    max: Duration,
) -> Result<(), BackendError> {
    crate::credential::within_max_ttl(expires_at, now, max, OVER_MAX_TTL)
}

/// `spec` of an `ECRAuthorizationToken` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "ECRAuthorizationToken",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EcrAuthorizationTokenSpec {
    /// The `aws` SecretStore (region, endpoint, credentials) calling ECR.
    pub secret_store_ref: SecretStoreRef,
    /// A role to assume first, its session tagged with the caller's identity: the token then
    /// carries that role's ECR permissions. Without it, the store's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// External id the role's trust policy requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

impl EcrAuthorizationTokenSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_caller_role(self.role_arn.as_deref(), self.external_id.as_deref())
    }
}

/// The built `ECRAuthorizationToken` generator.
#[derive(Debug)]
pub struct EcrAuthorizationTokenGenerator {
    signer: CallerRole<aws_sdk_ecr::Client>,
}

impl EcrAuthorizationTokenGenerator {
    /// Builds the generator on its store's shared connection.
    pub fn new(
        spec: EcrAuthorizationTokenSpec,
        store: Option<&SecretStoreSpec>,
        shared: &mut crate::Shared,
    ) -> Result<Self, SpecError> {
        Ok(Self {
            signer: CallerRole::new(
                aws_sdk_ecr::Client::new,
                store,
                &spec.secret_store_ref,
                spec.role_arn.as_deref(),
                spec.external_id.as_deref(),
                shared,
            )?,
        })
    }
}

fn unreadable(what: &str) -> BackendError {
    BackendError::Unavailable {
        message: "Amazon ECR's answer could not be read".to_owned(),
        detail: format!("ecr GetAuthorizationToken: {what}"),
    }
}

impl Generate for EcrAuthorizationTokenGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let out = self
            .signer
            .client(ctx)
            .await?
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| map_service_error(("Amazon ECR", "ecr"), "GetAuthorizationToken", &e))?;
        let data = out
            .authorization_data()
            .first()
            .ok_or_else(|| unreadable("no authorizationData"))?;
        let token = data
            .authorization_token()
            .ok_or_else(|| unreadable("no authorizationToken"))?;
        let decoded = STANDARD
            .decode(token)
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| unreadable("authorizationToken is not base64 text"))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| unreadable("authorizationToken is not user:password"))?;
        let endpoint = data
            .proxy_endpoint()
            .ok_or_else(|| unreadable("no proxyEndpoint"))?;
        let registry = endpoint
            .strip_prefix("https://")
            .unwrap_or(endpoint)
            .trim_end_matches('/');
        let expires_at = data
            .expires_at()
            .and_then(|t| jiff::Timestamp::new(t.secs(), t.subsec_nanos() as i32).ok())
            .ok_or_else(|| unreadable("no expiresAt"))?;
        if let Some(max) = ctx.max_ttl {
            within_max_ttl(expires_at, jiff::Timestamp::now(), max)?;
        }
        let mut data = crate::credential::registry_login(username, password, &[registry]);
        data.insert("proxy_endpoint".to_owned(), endpoint.to_owned());
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
    use std::time::Duration;

    use super::within_max_ttl;
    use crate::{BackendError, GeneratorKind, GeneratorSpec};

    #[test]
    fn a_token_outliving_max_ttl_is_refused() {
        let now = jiff::Timestamp::now();
        let in_12h = now + jiff::SignedDuration::from_hours(12);
        let hours = |h: u64| Duration::from_secs(h * 3600);
        assert!(within_max_ttl(in_12h, now, hours(12)).is_ok());
        assert!(within_max_ttl(in_12h, now, hours(24)).is_ok());
        // ECR's clock may run a few seconds ahead.
        let skewed = in_12h + jiff::SignedDuration::from_secs(3);
        assert!(within_max_ttl(skewed, now, hours(12)).is_ok());
        let e = within_max_ttl(in_12h, now, hours(1)).unwrap_err();
        assert!(matches!(e, BackendError::Rejected { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("live 12h")
                && text.contains("maxTTL of 1h")
                && text.contains("not handed out"),
            "{text}"
        );
    }

    #[test]
    fn round_trips_and_validates() {
        let j = serde_json::json!({
            "secretStoreRef": {"name": "aws"},
            "roleArn": "arn:aws:iam::123456789012:role/ecr-pull",
            "externalId": "x"
        });
        let spec = GeneratorSpec::from_manifest(GeneratorKind::EcrAuthorizationToken, j).unwrap();
        let GeneratorSpec::EcrAuthorizationToken(s) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(
            GeneratorSpec::from_manifest(
                GeneratorKind::EcrAuthorizationToken,
                serde_json::to_value(s).unwrap()
            )
            .unwrap(),
            spec
        );
        for (bad, says) in [
            (
                serde_json::json!({"secretStoreRef": {"name": "aws"}, "roleArn": "ecr-pull"}),
                "spec.roleArn",
            ),
            (
                serde_json::json!({"secretStoreRef": {"name": "aws"}, "externalId": "x"}),
                "spec.externalId",
            ),
            (
                serde_json::json!({"secretStoreRef": {"name": "aws"}, "registryIds": ["1"]}),
                "unknown field `registryIds`",
            ),
        ] {
            let err = GeneratorSpec::from_manifest(GeneratorKind::EcrAuthorizationToken, bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{err}");
        }
    }
}
