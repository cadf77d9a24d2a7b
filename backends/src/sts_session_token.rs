//! `STSSessionToken`: STS `GetSessionToken` with the store's own credentials (External
//! Secrets Operator parity). GetSessionToken only works with long-term IAM user keys; when
//! the store's credentials are temporary (IRSA, an assumed role, an instance profile) the
//! generator says so clearly instead of passing on STS's opaque refusal — the ESO bug users
//! hit. Returns the standard `AWS_*` keys and the expiration.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::aws::{StsConn, map_sdk_error, sts_credential};
use crate::store::SecretStoreRef;
use crate::{BackendError, Context, Credential, Generate, SecretStoreSpec, SpecError};

/// GetSessionToken's shortest session.
pub const MIN_DURATION: u32 = 900;
/// GetSessionToken's longest session for IAM users.
pub const MAX_DURATION: u32 = 129_600;

/// `spec` of an `STSSessionToken` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "STSSessionToken",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StsSessionTokenSpec {
    /// The `aws` SecretStore whose (long-term) credentials call STS.
    pub secret_store_ref: SecretStoreRef,
    /// Session length in seconds, 900..129600 (default 3600).
    #[serde(default = "default_duration")]
    pub duration_seconds: u32,
}

fn default_duration() -> u32 {
    3600
}

impl StsSessionTokenSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !(MIN_DURATION..=MAX_DURATION).contains(&self.duration_seconds) {
            return Err(SpecError::field(
                "durationSeconds",
                format!(
                    "must be between {MIN_DURATION} and {MAX_DURATION}, got {}",
                    self.duration_seconds
                ),
            ));
        }
        Ok(())
    }
}

/// The built `STSSessionToken` generator.
#[derive(Debug)]
pub struct StsSessionTokenGenerator {
    spec: StsSessionTokenSpec,
    conn: std::sync::Arc<StsConn>,
}

impl StsSessionTokenGenerator {
    /// Builds the generator on its store's shared connection.
    pub fn new(
        spec: StsSessionTokenSpec,
        store: Option<&SecretStoreSpec>,
        shared: &mut crate::Shared,
    ) -> Result<Self, SpecError> {
        spec.validate()?;
        let provider = crate::aws::require_store(store, &spec.secret_store_ref)?;
        if provider.assume_role.is_some() || provider.self_issued.is_some() {
            return Err(SpecError::field(
                "secretStoreRef.name",
                "the store assumes a role, so its credentials are temporary and GetSessionToken cannot use them; use AWSAssumeRole",
            ));
        }
        Ok(StsSessionTokenGenerator {
            conn: shared
                .aws
                .get(provider, |p| StsConn::new(p, &shared.issuer))?,
            spec,
        })
    }
}

impl Generate for StsSessionTokenGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let own = self.conn.own_credentials().await?;
        if own.session_token().is_some() {
            return Err(BackendError::Rejected {
                message: "STSSessionToken needs long-term IAM user keys, but the federation's AWS credentials are \
                          temporary (IRSA, an assumed role or an instance profile); use AWSAssumeRole instead"
                    .to_owned(),
                detail: "GetSessionToken refused locally: store credentials carry a session token".to_owned(),
            });
        }
        let mut duration = self.spec.duration_seconds;
        if let Some(max) = ctx.max_ttl {
            let max = u32::try_from(max.as_secs()).unwrap_or(u32::MAX);
            if max < MIN_DURATION {
                return Err(BackendError::Rejected {
                    message: format!(
                        "the authorization's maxTTL is below STS's minimum session of {MIN_DURATION}s"
                    ),
                    detail: format!("maxTTL {max}s < {MIN_DURATION}s"),
                });
            }
            duration = duration.min(max);
        }
        let client = self.conn.client().await?;
        let out = client
            .get_session_token()
            .duration_seconds(duration as i32)
            .send()
            .await
            .map_err(|e| map_sdk_error("GetSessionToken", &e))?;
        sts_credential("GetSessionToken", out.credentials())
    }
}

#[cfg(test)]
mod tests {
    use crate::{GeneratorKind, GeneratorSpec};

    #[test]
    fn round_trips_and_validates() {
        let j = serde_json::json!({"secretStoreRef": {"name": "aws"}, "durationSeconds": 900});
        let spec = GeneratorSpec::from_manifest(GeneratorKind::StsSessionToken, j).unwrap();
        let GeneratorSpec::StsSessionToken(s) = &spec else {
            panic!()
        };
        assert_eq!(
            GeneratorSpec::from_manifest(
                GeneratorKind::StsSessionToken,
                serde_json::to_value(s).unwrap()
            )
            .unwrap(),
            spec
        );
        let unknown = serde_json::json!({"secretStoreRef": {"name": "aws"}, "serialNumber": "x"});
        let err =
            GeneratorSpec::from_manifest(GeneratorKind::StsSessionToken, unknown).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `serialNumber`"),
            "{err}"
        );
        let short = serde_json::json!({"secretStoreRef": {"name": "aws"}, "durationSeconds": 60});
        assert!(
            GeneratorSpec::from_manifest(GeneratorKind::StsSessionToken, short)
                .unwrap_err()
                .to_string()
                .contains("spec.durationSeconds")
        );
    }
}
