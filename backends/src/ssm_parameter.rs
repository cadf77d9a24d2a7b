//! `SSMParameter`: reads a parameter from AWS Systems Manager Parameter Store (`GetParameter`,
//! decrypted) on an `aws` SecretStore: the ESO `ParameterStore` provider's job, per Pod instead
//! of through a Kubernetes Secret. Like `SecretsManagerSecret` it is a generator kind, so the
//! same Authorization decides who may read it and the same envelope carries it; nothing is
//! leased, and `expiresAt` is absent.
//!
//! `name` (a name such as `/apps/payments/db`, or an ARN) is a template over the verified
//! identity, so one generator can serve every namespace with its own parameter
//! (`/apps/{{namespace}}/db`). `version` or `label` pins what is read (`name:3`,
//! `name:prod`); by default the latest version. A `SecureString` is decrypted (the store's
//! identity, or `roleArn`'s, needs `kms:Decrypt` on its key); `String` and `StringList` values
//! are returned as stored. With `roleArn` the read is signed by that role, assumed for the call
//! with the caller's identity as session tags, as `SecretsManagerSecret` does.
//!
//! A value holding a JSON object becomes one key per member (`keys` narrows them, each must
//! exist); any other value is returned under `key` (default `value`).
//!
//! Parameter Store also serves Secrets Manager secrets, under
//! `/aws/reference/secretsmanager/...`: those names are refused here, so that secrets are read
//! by `SecretsManagerSecret` alone, which never reads the federation's own key secrets.
//!
//! ```yaml
//! kind: SSMParameter
//! spec:
//!   secretStoreRef: {name: aws}
//!   name: "/apps/{{namespace}}/db"           # a name or ARN; templated over the caller
//!   version: 3                               # or label: prod (default: the latest)
//!   keys: [username, password]               # optional, for a JSON object value
//!   roleArn: arn:aws:iam::123456789012:role/read-app-parameters   # optional
//! ```

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::aws::{CallerRole, map_service_error, validate_caller_role};
use crate::credential::secret_text_data;
use crate::store::SecretStoreRef;
use crate::template::Template;
use crate::{BackendError, Context, Credential, Generate, SecretStoreSpec, SpecError};

/// The longest name Parameter Store takes (an ARN; a fully qualified name is at most 1,011).
const MAX_NAME: usize = 2048;

/// The longest label Parameter Store takes.
const MAX_LABEL: usize = 100;

/// The prefix under which Parameter Store serves other services' secrets.
const REFERENCE_PREFIX: &str = "aws/reference/";

/// `spec` of an `SSMParameter` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "SSMParameter",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SsmParameterSpec {
    /// The `aws` SecretStore (region, endpoint, credentials) calling Parameter Store.
    pub secret_store_ref: SecretStoreRef,
    /// The parameter's name or ARN; `{{namespace}}` etc. are replaced by the caller's values.
    pub name: String,
    /// The version to read (default: the latest); not with `label`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The label of the version to read; not with `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Return only these members of a JSON object value; each must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    /// The key for a value that is not a JSON object (default `value`).
    #[serde(default = "value_key")]
    pub key: String,
    /// A role to assume first, its session tagged with the caller's identity: the read then
    /// has that role's permissions. Without it, the store's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// External id the role's trust policy requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

fn value_key() -> String {
    "value".to_owned()
}

/// Whether `name` can name a parameter: a name (`A-Za-z0-9_.-/`) or an ARN (also `:`), at
/// most [`MAX_NAME`] characters, and not one of the secrets Parameter Store only references.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-/:".contains(&b))
        || (name.contains(':') && !name.starts_with("arn:"))
    {
        return Err(format!(
            "{name:?} is not a parameter name or ARN (letters, digits and _.-/ only, `:` in an \
             ARN, at most {MAX_NAME} characters)"
        ));
    }
    // `arn:<partition>:ssm:<region>:<account>:parameter/<name>` names `/<name>`.
    let path = match name.split_once(":parameter") {
        Some((_, rest)) if name.starts_with("arn:") => rest,
        _ => name,
    };
    if path
        .trim_start_matches('/')
        .get(..REFERENCE_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(REFERENCE_PREFIX))
    {
        return Err(format!(
            "{name:?} is a reference to another service's secret (/aws/reference/...): read \
             Secrets Manager secrets with SecretsManagerSecret"
        ));
    }
    Ok(())
}

impl SsmParameterSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.name_template()?;
        if self.version.is_some() && self.label.is_some() {
            return Err(SpecError::field(
                "label",
                "name either version or label, not both",
            ));
        }
        if self.version == Some(0) {
            return Err(SpecError::field("version", "versions start at 1"));
        }
        if let Some(label) = &self.label
            && (label.is_empty()
                || label.len() > MAX_LABEL
                || !label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                || label.starts_with(|c: char| c.is_ascii_digit())
                || ["aws", "ssm"]
                    .iter()
                    .any(|p| label.get(..3).is_some_and(|l| l.eq_ignore_ascii_case(p))))
        {
            return Err(SpecError::field(
                "label",
                format!(
                    "{label:?} is not a Parameter Store label (letters, digits and ._- only, at \
                     most {MAX_LABEL}, not starting with a digit, aws or ssm)"
                ),
            ));
        }
        crate::credential::validate_selection(self.keys.as_deref(), &self.key)?;
        validate_caller_role(self.role_arn.as_deref(), self.external_id.as_deref())
    }

    /// The parsed `name`, checked with placeholder values standing in for the caller's.
    fn name_template(&self) -> Result<Template, SpecError> {
        let t = Template::parse(&self.name, "name")?;
        check_name(&t.sample()).map_err(|e| SpecError::field("name", e))?;
        Ok(t)
    }

    /// What `GetParameter` is asked for: the name, with `:version` or `:label` when pinned.
    fn selector(&self) -> Option<String> {
        self.version
            .map(|v| v.to_string())
            .or_else(|| self.label.clone())
    }
}

/// The built `SSMParameter` generator.
#[derive(Debug)]
pub struct SsmParameterGenerator {
    spec: SsmParameterSpec,
    name: Template,
    signer: CallerRole<aws_sdk_ssm::Client>,
}

impl SsmParameterGenerator {
    /// Builds the generator on its store's shared connection.
    pub fn new(
        spec: SsmParameterSpec,
        store: Option<&SecretStoreSpec>,
        shared: &mut crate::Shared,
    ) -> Result<Self, SpecError> {
        spec.validate()?;
        Ok(Self {
            name: spec.name_template()?,
            signer: CallerRole::new(
                aws_sdk_ssm::Client::new,
                store,
                &spec.secret_store_ref,
                spec.role_arn.as_deref(),
                spec.external_id.as_deref(),
                shared,
            )?,
            spec,
        })
    }
}

impl Generate for SsmParameterGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let name = self.name.render(ctx, str::to_owned);
        check_name(&name).map_err(|detail| BackendError::Rejected {
            message: "the caller's identity does not make a parameter this generator may read"
                .to_owned(),
            detail: format!("ssm: rendered name: {detail}"),
        })?;
        let asked = match self.spec.selector() {
            Some(s) => format!("{name}:{s}"),
            None => name,
        };
        let out = self
            .signer
            .client(ctx)
            .await?
            .get_parameter()
            .name(&asked)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| {
                let mut err = map_service_error(
                    ("AWS Systems Manager Parameter Store", "ssm"),
                    "GetParameter",
                    &e,
                );
                if let BackendError::Rejected { detail, .. }
                | BackendError::Unavailable { detail, .. } = &mut err
                {
                    detail.push_str(&format!(" (parameter {asked})"));
                }
                err
            })?;
        let value =
            out.parameter()
                .and_then(|p| p.value())
                .ok_or_else(|| BackendError::Unavailable {
                    message: "AWS Systems Manager Parameter Store's answer could not be read"
                        .to_owned(),
                    detail: format!("ssm GetParameter: no value in the answer (parameter {asked})"),
                })?;
        let data = secret_text_data(value, self.spec.keys.as_deref(), &self.spec.key, "ssm")?;
        Ok(Credential::static_data(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GeneratorKind, GeneratorSpec};

    fn parse(j: serde_json::Value) -> Result<GeneratorSpec, SpecError> {
        GeneratorSpec::from_manifest(GeneratorKind::SsmParameter, j)
    }

    #[test]
    fn round_trips_and_validates() {
        let j = serde_json::json!({
            "secretStoreRef": {"name": "aws"},
            "name": "/apps/{{namespace}}/db",
            "label": "prod",
            "keys": ["username", "password"],
            "roleArn": "arn:aws:iam::123456789012:role/read",
            "externalId": "x",
        });
        let spec = parse(j.clone()).unwrap();
        let GeneratorSpec::SsmParameter(s) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(s.key, "value");
        assert_eq!(s.selector().as_deref(), Some("prod"));
        assert_eq!(parse(serde_json::to_value(s).unwrap()).unwrap(), spec);
        for (field, value, says) in [
            ("name", serde_json::json!(""), "spec.name"),
            (
                "name",
                serde_json::json!("/apps/{{namespace}} db"),
                "spec.name",
            ),
            ("name", serde_json::json!("/apps/db:3"), "`:` in an ARN"),
            (
                "name",
                serde_json::json!("apps/{{secret}}"),
                "unknown placeholder",
            ),
            (
                "name",
                serde_json::json!("/aws/reference/secretsmanager/esi-lease-keys"),
                "SecretsManagerSecret",
            ),
            ("version", serde_json::json!(3), "not both"),
            ("label", serde_json::json!("3rd"), "spec.label"),
            ("label", serde_json::json!("AWSCURRENT"), "spec.label"),
            ("label", serde_json::json!("pr od"), "spec.label"),
            ("keys", serde_json::json!([]), "spec.keys"),
            ("key", serde_json::json!(""), "spec.key"),
            ("roleArn", serde_json::json!("read"), "spec.roleArn"),
            (
                "withDecryption",
                serde_json::json!(false),
                "unknown field `withDecryption`",
            ),
        ] {
            let mut b = j.clone();
            b[field] = value;
            let err = parse(b).unwrap_err().to_string();
            assert!(err.contains(says), "{field}: {err}");
        }
        let mut b = j.clone();
        b.as_object_mut().unwrap().remove("label");
        b["version"] = serde_json::json!(0);
        assert!(parse(b).unwrap_err().to_string().contains("start at 1"));
    }

    #[test]
    fn names_are_parameter_names_or_arns_never_references() {
        for ok in [
            "/apps/payments/db",
            "db-password",
            "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
            "arn:aws:ssm:eu-west-1:123456789012:parameter/apps/db",
            "a_b.c-d",
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a\nb",
            "a?b",
            "ä",
            "db:3",
            "/aws/reference/secretsmanager/x",
            "aws/reference/secretsmanager/x",
            "//AWS/Reference/secretsmanager/x",
            "arn:aws:ssm:eu-west-1:123456789012:parameter/aws/reference/secretsmanager/x",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"a".repeat(MAX_NAME + 1)).is_err());
    }
}
