//! `AWSAssumeRole`: STS `AssumeRole` into `roleArn`, tagging the session with the verified
//! identity so one role can serve every cluster with attribute-based policies
//! (`aws:PrincipalTag/kubernetes-namespace`, ...).
//!
//! Session tags set on every call (unless `identityTags: false`):
//!
//! | tag | value |
//! |---|---|
//! | `esi-cluster` | the registered Cluster that verified the token |
//! | `kubernetes-namespace` | the workload's namespace |
//! | `kubernetes-service-account` | its ServiceAccount |
//! | `kubernetes-pod-name` | its Pod, when the token is bound to one |
//!
//! plus the static `tags`. `sessionName` and `sourceIdentity` are templates over the same
//! values (see [`crate::template`]); rendered values are sanitised to STS's character set
//! and length. `durationSeconds` is validated against STS's 900..43200 (900..3600 when the
//! store assumes a role first: role chaining) and lowered to the Authorization's `maxTTL` when
//! that is shorter. Returns `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` and the expiration; STS sessions cannot be
//! revoked one by one, so there is no lease.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_sts::types::{PolicyDescriptorType, Tag};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::aws::{StsConn, map_sdk_error, sts_credential, validate_policy_arn, validate_role_arn};
use crate::store::SecretStoreRef;
use crate::template::Template;
use crate::{BackendError, Context, Credential, Generate, SecretStoreSpec, SpecError};

/// STS's shortest session.
pub const MIN_DURATION: u32 = 900;
/// STS's longest role session (the role's own maximum may be lower).
pub const MAX_DURATION: u32 = 43_200;
/// STS's longest session for a role assumed with another role's session (role chaining).
pub const MAX_CHAINED_DURATION: u32 = 3600;
/// Session tag keys carrying the identity (shared with `IdentityToken`'s AWS tags claim).
pub const TAG_CLUSTER: &str = crate::identity::AWS_TAG_CLUSTER;
/// See [`TAG_CLUSTER`].
pub const TAG_NAMESPACE: &str = crate::identity::AWS_TAG_NAMESPACE;
/// See [`TAG_CLUSTER`].
pub const TAG_SERVICE_ACCOUNT: &str = crate::identity::AWS_TAG_SERVICE_ACCOUNT;
/// See [`TAG_CLUSTER`].
pub const TAG_POD: &str = crate::identity::AWS_TAG_POD;

const DEFAULT_SESSION_NAME: &str = "esi-{{namespace}}-{{serviceAccount}}";

/// `spec` of an `AWSAssumeRole` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "AWSAssumeRole",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsAssumeRoleSpec {
    /// The `aws` SecretStore whose credentials call STS.
    pub secret_store_ref: SecretStoreRef,
    /// The role to assume.
    pub role_arn: String,
    /// Session name template (default `esi-{{namespace}}-{{serviceAccount}}`), shown in
    /// CloudTrail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    /// Session length in seconds, 900..43200 (default 3600).
    #[serde(default = "default_duration")]
    pub duration_seconds: u32,
    /// External id required by the role's trust policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Inline session policy (JSON), further restricting the role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Managed policies further restricting the role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_arns: Vec<String>,
    /// Tag the session with the verified identity (default true).
    #[serde(default = "yes")]
    pub identity_tags: bool,
    /// Extra static session tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Tag keys that pass on to chained role sessions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitive_tag_keys: Vec<String>,
    /// Source identity template (for example `{{serviceAccount}}@{{namespace}}.{{cluster}}`);
    /// sticks to the session through role chaining. Needs `sts:SetSourceIdentity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_identity: Option<String>,
}

fn default_duration() -> u32 {
    3600
}

fn yes() -> bool {
    true
}

/// A tag key as IAM accepts it.
fn valid_tag_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars().count() <= 128
        && !k.to_ascii_lowercase().starts_with("aws:")
        && k.chars()
            .all(|c| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c))
}

/// A tag value as IAM accepts it.
fn valid_tag_value(v: &str) -> bool {
    v.chars().count() <= 256
        && v.chars()
            .all(|c| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c))
}

/// Makes a rendered value fit STS's `[\w+=,.@-]` with a length limit.
fn sanitize(v: &str, max: usize) -> String {
    v.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(max)
        .collect()
}

impl AwsAssumeRoleSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_role_arn(&self.role_arn, "roleArn")?;
        if !(MIN_DURATION..=MAX_DURATION).contains(&self.duration_seconds) {
            return Err(SpecError::field(
                "durationSeconds",
                format!(
                    "must be between {MIN_DURATION} and {MAX_DURATION}, got {}",
                    self.duration_seconds
                ),
            ));
        }
        Template::parse(
            self.session_name.as_deref().unwrap_or(DEFAULT_SESSION_NAME),
            "sessionName",
        )?;
        if let Some(s) = &self.source_identity {
            Template::parse(s, "sourceIdentity")?;
        }
        if let Some(id) = &self.external_id
            && (id.len() < 2 || id.len() > 1224)
        {
            return Err(SpecError::field(
                "externalId",
                "must be 2 to 1224 characters",
            ));
        }
        if let Some(p) = &self.policy {
            serde_json::from_str::<serde_json::Value>(p)
                .map_err(|e| SpecError::field("policy", format!("is not JSON: {e}")))?;
            if p.len() > 2048 {
                return Err(SpecError::field(
                    "policy",
                    "is longer than STS's 2048 characters",
                ));
            }
        }
        if self.policy_arns.len() > 10 {
            return Err(SpecError::field("policyArns", "STS accepts at most 10"));
        }
        for (i, arn) in self.policy_arns.iter().enumerate() {
            validate_policy_arn(arn, &format!("policyArns[{i}]"))?;
        }
        let reserved = [TAG_CLUSTER, TAG_NAMESPACE, TAG_SERVICE_ACCOUNT, TAG_POD];
        for (k, v) in &self.tags {
            if !valid_tag_key(k) {
                return Err(SpecError::field(
                    format!("tags.{k}"),
                    "is not a valid session tag key",
                ));
            }
            if self.identity_tags && reserved.iter().any(|r| r.eq_ignore_ascii_case(k)) {
                return Err(SpecError::field(
                    format!("tags.{k}"),
                    "is set from the verified identity",
                ));
            }
            if !valid_tag_value(v) {
                return Err(SpecError::field(
                    format!("tags.{k}"),
                    "is not a valid session tag value",
                ));
            }
        }
        if self.tags.len() + 4 > 50 {
            return Err(SpecError::field(
                "tags",
                "STS accepts at most 50 session tags",
            ));
        }
        Ok(())
    }
}

/// The built `AWSAssumeRole` generator.
#[derive(Debug)]
pub struct AwsAssumeRoleGenerator {
    spec: AwsAssumeRoleSpec,
    session_name: Template,
    source_identity: Option<Template>,
    conn: std::sync::Arc<StsConn>,
}

impl AwsAssumeRoleGenerator {
    /// Builds the generator on its store's shared connection.
    pub fn new(
        spec: AwsAssumeRoleSpec,
        store: Option<&SecretStoreSpec>,
        shared: &mut crate::Shared,
    ) -> Result<Self, SpecError> {
        spec.validate()?;
        let provider = crate::aws::require_store(store, &spec.secret_store_ref)?;
        // A store that assumes a role first calls AssumeRole with that role's session: role
        // chaining, which STS caps at one hour whatever the target role's maximum.
        let first = if provider.assume_role.is_some() {
            Some("provider.aws.assumeRole")
        } else if provider.self_issued.is_some() {
            Some("provider.aws.selfIssued")
        } else {
            None
        };
        if let Some(first) = first
            && spec.duration_seconds > MAX_CHAINED_DURATION
        {
            return Err(SpecError::field(
                "durationSeconds",
                format!(
                    "must be at most {MAX_CHAINED_DURATION}, got {}: SecretStore {:?} assumes a \
                     role first ({first}), so this AssumeRole is role chaining, which STS caps \
                     at one hour",
                    spec.duration_seconds, spec.secret_store_ref.name
                ),
            ));
        }
        Ok(AwsAssumeRoleGenerator {
            session_name: Template::parse(
                spec.session_name.as_deref().unwrap_or(DEFAULT_SESSION_NAME),
                "sessionName",
            )?,
            source_identity: spec
                .source_identity
                .as_deref()
                .map(|s| Template::parse(s, "sourceIdentity"))
                .transpose()?,
            conn: shared
                .aws
                .get(provider, |p| StsConn::new(p, &shared.issuer))?,
            spec,
        })
    }

    /// The session tags for a request.
    pub fn tags(&self, ctx: &Context<'_>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.spec.identity_tags {
            out.extend(
                crate::identity::aws_identity_tags(ctx.identity)
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v)),
            );
        }
        out.extend(self.spec.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    }

    /// The duration to ask for: the spec's, lowered to the Authorization's max TTL.
    fn duration(&self, ctx: &Context<'_>) -> Result<u32, BackendError> {
        let want = self.spec.duration_seconds;
        match ctx.max_ttl {
            Some(max) if max < Duration::from_secs(u64::from(want)) => {
                if max < Duration::from_secs(u64::from(MIN_DURATION)) {
                    return Err(BackendError::Rejected {
                        message: format!(
                            "the authorization's maxTTL is below STS's minimum session of {MIN_DURATION}s"
                        ),
                        detail: format!("maxTTL {max:?} < {MIN_DURATION}s"),
                    });
                }
                Ok(max.as_secs() as u32)
            }
            _ => Ok(want),
        }
    }
}

fn build_tag(k: &str, v: &str) -> Result<Tag, BackendError> {
    Tag::builder()
        .key(k)
        .value(v)
        .build()
        .map_err(|e| BackendError::Invalid(format!("session tag {k}: {e}")))
}

impl Generate for AwsAssumeRoleGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let client = self.conn.client().await?;
        let mut req = client
            .assume_role()
            .role_arn(&self.spec.role_arn)
            .role_session_name(sanitize(&self.session_name.render(ctx, str::to_owned), 64))
            .duration_seconds(self.duration(ctx)? as i32);
        for (k, v) in self.tags(ctx) {
            req = req.tags(build_tag(&k, &v)?);
        }
        for k in &self.spec.transitive_tag_keys {
            req = req.transitive_tag_keys(k);
        }
        if let Some(t) = &self.source_identity {
            req = req.source_identity(sanitize(&t.render(ctx, str::to_owned), 64));
        }
        if let Some(id) = &self.spec.external_id {
            req = req.external_id(id);
        }
        if let Some(p) = &self.spec.policy {
            req = req.policy(p);
        }
        for arn in &self.spec.policy_arns {
            req = req.policy_arns(PolicyDescriptorType::builder().arn(arn).build());
        }
        let out = req
            .send()
            .await
            .map_err(|e| map_sdk_error("AssumeRole", &e))?;
        sts_credential("AssumeRole", out.credentials())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::tests::identity;
    use crate::{GeneratorKind, GeneratorSpec};

    fn json() -> serde_json::Value {
        serde_json::json!({
            "secretStoreRef": {"name": "aws"},
            "roleArn": "arn:aws:iam::123456789012:role/app",
            "sessionName": "{{cluster}}-{{namespace}}-{{pod}}",
            "durationSeconds": 1800,
            "externalId": "ext-1",
            "policy": "{\"Version\":\"2012-10-17\",\"Statement\":[]}",
            "policyArns": ["arn:aws:iam::aws:policy/ReadOnlyAccess"],
            "tags": {"team": "payments"},
            "transitiveTagKeys": ["team"],
            "sourceIdentity": "{{serviceAccount}}@{{namespace}}.{{cluster}}",
        })
    }

    #[test]
    fn round_trips_its_manifest() {
        let spec = GeneratorSpec::from_manifest(GeneratorKind::AwsAssumeRole, json()).unwrap();
        let GeneratorSpec::AwsAssumeRole(s) = &spec else {
            panic!()
        };
        assert!(s.identity_tags);
        let back = serde_json::to_value(s).unwrap();
        assert_eq!(
            GeneratorSpec::from_manifest(GeneratorKind::AwsAssumeRole, back).unwrap(),
            spec
        );
    }

    #[test]
    fn rejects_unknown_keys_and_out_of_range_values() {
        let cases = [
            (
                "roleSessionName",
                serde_json::json!("x"),
                "unknown field `roleSessionName`",
            ),
            (
                "durationSeconds",
                serde_json::json!(899),
                "spec.durationSeconds",
            ),
            (
                "durationSeconds",
                serde_json::json!(43_201),
                "spec.durationSeconds",
            ),
            (
                "roleArn",
                serde_json::json!("arn:aws:iam::1:role/x"),
                "spec.roleArn",
            ),
            ("policy", serde_json::json!("{not json"), "spec.policy"),
            (
                "policyArns",
                serde_json::json!(["arn:aws:s3:::b"]),
                "spec.policyArns[0]",
            ),
            (
                "tags",
                serde_json::json!({"kubernetes-namespace": "spoof"}),
                "spec.tags.kubernetes-namespace",
            ),
            ("tags", serde_json::json!({"aws:x": "y"}), "spec.tags.aws:x"),
            (
                "sessionName",
                serde_json::json!("{{ token }}"),
                "spec.sessionName",
            ),
        ];
        for (field, value, expect) in cases {
            let mut j = json();
            j[field] = value;
            let err = GeneratorSpec::from_manifest(GeneratorKind::AwsAssumeRole, j).unwrap_err();
            assert!(err.to_string().contains(expect), "{field}: {err}");
        }
        for ok in [900, 43_200] {
            let mut j = json();
            j["durationSeconds"] = ok.into();
            GeneratorSpec::from_manifest(GeneratorKind::AwsAssumeRole, j).unwrap();
        }
    }

    #[test]
    fn tags_carry_the_identity_and_names_are_sanitised() {
        let GeneratorSpec::AwsAssumeRole(s) =
            GeneratorSpec::from_manifest(GeneratorKind::AwsAssumeRole, json()).unwrap()
        else {
            panic!()
        };
        let store = crate::SecretStoreSpec::from_manifest(
            serde_json::json!({"provider": {"aws": {"region": "us-east-1"}}}),
        )
        .unwrap();
        let g = AwsAssumeRoleGenerator::new(s, Some(&store), &mut Default::default()).unwrap();
        let id = identity();
        let ctx = Context {
            identity: &id,
            generator: "payments/AWSAssumeRole/app",
            max_ttl: None,
        };
        let tags = g.tags(&ctx);
        assert!(tags.contains(&(TAG_CLUSTER.into(), "prod-eu".into())));
        assert!(tags.contains(&(TAG_NAMESPACE.into(), "payments".into())));
        assert!(tags.contains(&(TAG_SERVICE_ACCOUNT.into(), "api".into())));
        assert!(tags.contains(&(TAG_POD.into(), "api-7d9f".into())));
        assert!(tags.contains(&("team".into(), "payments".into())));
        assert_eq!(sanitize("a/b c:d", 64), "a-b-c-d");
        assert_eq!(sanitize(&"x".repeat(100), 64).len(), 64);
    }

    #[test]
    fn role_chaining_stores_cap_the_duration_at_one_hour() {
        let spec = |secs: u32| {
            let mut j = json();
            j["durationSeconds"] = secs.into();
            let GeneratorSpec::AwsAssumeRole(s) =
                GeneratorSpec::from_manifest(GeneratorKind::AwsAssumeRole, j).unwrap()
            else {
                panic!()
            };
            s
        };
        let store = |provider: serde_json::Value| {
            crate::SecretStoreSpec::from_manifest(
                serde_json::json!({"provider": {"aws": provider}}),
            )
            .unwrap()
        };
        let chained = store(serde_json::json!({"region": "us-east-1",
            "assumeRole": {"roleArn": "arn:aws:iam::123456789012:role/federation"}}));
        let err = AwsAssumeRoleGenerator::new(spec(7200), Some(&chained), &mut Default::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.durationSeconds")
                && err.contains("at most 3600, got 7200")
                && err.contains("role chaining"),
            "{err}"
        );
        AwsAssumeRoleGenerator::new(spec(3600), Some(&chained), &mut Default::default())
            .expect("one hour is allowed when chaining");
        let direct = store(serde_json::json!({"region": "us-east-1"}));
        AwsAssumeRoleGenerator::new(spec(43_200), Some(&direct), &mut Default::default())
            .expect("12 hours without a base role");
    }

    #[test]
    fn duration_follows_max_ttl() {
        let GeneratorSpec::AwsAssumeRole(s) =
            GeneratorSpec::from_manifest(GeneratorKind::AwsAssumeRole, json()).unwrap()
        else {
            panic!()
        };
        let store = crate::SecretStoreSpec::from_manifest(
            serde_json::json!({"provider": {"aws": {"region": "us-east-1"}}}),
        )
        .unwrap();
        let g = AwsAssumeRoleGenerator::new(s, Some(&store), &mut Default::default()).unwrap();
        let id = identity();
        let ctx = |max| Context {
            identity: &id,
            generator: "g",
            max_ttl: max,
        };
        assert_eq!(g.duration(&ctx(None)).unwrap(), 1800);
        assert_eq!(
            g.duration(&ctx(Some(Duration::from_secs(1000)))).unwrap(),
            1000
        );
        assert_eq!(
            g.duration(&ctx(Some(Duration::from_secs(7200)))).unwrap(),
            1800
        );
        assert!(matches!(
            g.duration(&ctx(Some(Duration::from_secs(60)))),
            Err(BackendError::Rejected { .. })
        ));
    }
}
