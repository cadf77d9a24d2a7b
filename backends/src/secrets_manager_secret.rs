//! `SecretsManagerSecret`: reads a secret from AWS Secrets Manager (`GetSecretValue`) on an
//! `aws` SecretStore: the ESO `SecretsManager` provider's job, per Pod instead of through a
//! Kubernetes Secret. Like `VaultStaticSecret` it is a generator kind, so the same
//! Authorization decides who may read it and the same envelope carries it; nothing is
//! leased, and `expiresAt` is absent.
//!
//! `secretId` (a name or an ARN) is a template over the verified identity, so one generator
//! can serve every namespace with its own secret (`apps/{{namespace}}/db`). With `roleArn`
//! the read is signed by that role, assumed for the call with the caller's identity as
//! session tags (as `ECRAuthorizationToken` does): secret resource policies or the role's
//! policy can then key on `aws:PrincipalTag/kubernetes-namespace`.
//!
//! A `SecretString` holding a JSON object becomes one key per member (`keys` narrows them,
//! each must exist; non-string members as JSON text); any other `SecretString` is returned
//! under `key` (default `value`); a `SecretBinary` under `key`, base64-encoded.
//!
//! ```yaml
//! kind: SecretsManagerSecret
//! spec:
//!   secretStoreRef: {name: aws}
//!   secretId: "apps/{{namespace}}/db"       # a name or ARN; templated over the caller
//!   versionStage: AWSCURRENT                 # or versionId (default: AWSCURRENT)
//!   keys: [username, password]               # optional, for a JSON object secret
//!   roleArn: arn:aws:iam::123456789012:role/read-app-secrets   # optional
//! ```

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::aws::{CallerRole, map_service_error, validate_caller_role};
use crate::credential::{SecretPayload, secret_data};
use crate::store::SecretStoreRef;
use crate::template::Template;
use crate::{BackendError, Context, Credential, Generate, SecretStoreSpec, SpecError};

/// The longest secret id Secrets Manager takes (an ARN; a name is at most 512).
const MAX_SECRET_ID: usize = 2048;

/// `spec` of a `SecretsManagerSecret` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "SecretsManagerSecret",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretsManagerSecretSpec {
    /// The `aws` SecretStore (region, endpoint, credentials) calling Secrets Manager.
    pub secret_store_ref: SecretStoreRef,
    /// The secret's name or ARN; `{{namespace}}` etc. are replaced by the caller's values.
    pub secret_id: String,
    /// The version stage to read (default `AWSCURRENT`); not with `versionId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_stage: Option<String>,
    /// A specific version to read; not with `versionStage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// Return only these members of a JSON object secret; each must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    /// The key for a secret that is not a JSON object (default `value`).
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

/// The variable naming the federation's own lease-key secret (its sealing keys, which forge
/// leases): no generator may read it, whatever its template renders to.
pub const LEASE_KEYS_SECRET_ENV: &str = "ESI_LEASE_KEYS_SECRET";

/// The variable naming the federation's own OIDC signing-key secret (its issuer keys, which
/// forge identity tokens any relying party trusts): no generator may read it either.
pub const ISSUER_KEYS_SECRET_ENV: &str = "ESI_ISSUER_KEYS_SECRET";

/// The federation's own key secrets, by the variable naming each, with what messages call it.
const OWN_KEY_SECRETS: &[(&str, &str)] = &[
    (LEASE_KEYS_SECRET_ENV, "lease-key secret"),
    (ISSUER_KEYS_SECRET_ENV, "OIDC signing-key secret"),
];

/// A secret's name from a name or an ARN (`arn:...:secret:NAME-AbCdEf`).
fn secret_name(id: &str) -> &str {
    if id.starts_with("arn:") {
        id.split_once(":secret:").map_or(id, |(_, name)| name)
    } else {
        id
    }
}

/// Whether `id` may name the `reserved` secret: the same name, that name plus a suffix (such
/// as the random `-XXXXXX` Secrets Manager appends in ARNs; some other secrets whose names
/// start like it are refused too, better than reading the federation's keys), or, when `reserved` is
/// an ARN, its name without that suffix.
fn may_name(id: &str, reserved: &str) -> bool {
    let (a, b) = (secret_name(id), secret_name(reserved));
    let extends = |long: &str, short: &str| {
        long.strip_prefix(short)
            .is_some_and(|rest| rest.starts_with('-'))
    };
    let random_suffix = |long: &str, short: &str| {
        long.strip_prefix(short)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|r| r.len() == 6 && r.bytes().all(|c| c.is_ascii_alphanumeric()))
    };
    !b.is_empty() && (a == b || extends(a, b) || random_suffix(b, a))
}

/// Refuses an id that may name one of the federation's own key secrets (those its variables
/// name in this process).
fn refuse_own_keys(id: &str) -> Result<(), String> {
    OWN_KEY_SECRETS.iter().try_for_each(|&(env, what)| {
        refuse_reserved(id, std::env::var(env).ok().as_deref(), env, what)
    })
}

/// Refuses an id that may name `reserved`, the secret `env` names (`what`) when there is one.
fn refuse_reserved(id: &str, reserved: Option<&str>, env: &str, what: &str) -> Result<(), String> {
    match reserved {
        Some(reserved) if may_name(id, reserved) => Err(format!(
            "{id:?} may name the federation's own {what} ({env}), which no generator may read"
        )),
        _ => Ok(()),
    }
}

/// Whether `id` can name a secret: a name (`A-Za-z0-9/_+=.@-`) or an ARN (also `:`).
fn valid_secret_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_SECRET_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-:".contains(&b))
}

impl SecretsManagerSecretSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.secret_id_template()?;
        refuse_own_keys(&self.secret_id).map_err(|e| SpecError::field("secretId", e))?;
        if self.version_stage.is_some() && self.version_id.is_some() {
            return Err(SpecError::field(
                "versionId",
                "name either versionStage or versionId, not both",
            ));
        }
        for (field, v) in [
            ("versionStage", &self.version_stage),
            ("versionId", &self.version_id),
        ] {
            if let Some(v) = v
                && (v.is_empty() || v.len() > 256 || v.chars().any(char::is_control))
            {
                return Err(SpecError::field(
                    field,
                    "must be 1 to 256 printable characters",
                ));
            }
        }
        crate::credential::validate_selection(self.keys.as_deref(), &self.key)?;
        validate_caller_role(self.role_arn.as_deref(), self.external_id.as_deref())
    }

    /// The parsed `secretId`, checked with placeholder values standing in for the caller's.
    fn secret_id_template(&self) -> Result<Template, SpecError> {
        let t = Template::parse(&self.secret_id, "secretId")?;
        let sample = t.sample();
        if !valid_secret_id(&sample) {
            return Err(SpecError::field(
                "secretId",
                format!(
                    "{:?} is not a secret name or ARN (letters, digits and /_+=.@-: only, \
                     at most {MAX_SECRET_ID} characters)",
                    self.secret_id
                ),
            ));
        }
        Ok(t)
    }
}

/// The built `SecretsManagerSecret` generator.
#[derive(Debug)]
pub struct SecretsManagerSecretGenerator {
    spec: SecretsManagerSecretSpec,
    secret_id: Template,
    signer: CallerRole<aws_sdk_secretsmanager::Client>,
}

impl SecretsManagerSecretGenerator {
    /// Builds the generator on its store's shared connection.
    pub fn new(
        spec: SecretsManagerSecretSpec,
        store: Option<&SecretStoreSpec>,
        shared: &mut crate::Shared,
    ) -> Result<Self, SpecError> {
        spec.validate()?;
        Ok(Self {
            secret_id: spec.secret_id_template()?,
            signer: CallerRole::new(
                aws_sdk_secretsmanager::Client::new,
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

impl Generate for SecretsManagerSecretGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let secret_id = self.secret_id.render(ctx, str::to_owned);
        if !valid_secret_id(&secret_id) {
            return Err(BackendError::Rejected {
                message: "the caller's identity does not make a valid secret id here".to_owned(),
                detail: format!("secretsmanager: rendered secretId {secret_id:?} is not valid"),
            });
        }
        refuse_own_keys(&secret_id).map_err(|detail| BackendError::Rejected {
            message: "this generator may not read that secret".to_owned(),
            detail: format!("secretsmanager: {detail}"),
        })?;
        let out = self
            .signer
            .client(ctx)
            .await?
            .get_secret_value()
            .secret_id(&secret_id)
            .set_version_stage(self.spec.version_stage.clone())
            .set_version_id(self.spec.version_id.clone())
            .send()
            .await
            .map_err(|e| {
                let mut err = map_service_error(
                    ("AWS Secrets Manager", "secretsmanager"),
                    "GetSecretValue",
                    &e,
                );
                if let BackendError::Rejected { detail, .. }
                | BackendError::Unavailable { detail, .. } = &mut err
                {
                    detail.push_str(&format!(" (secret {secret_id})"));
                }
                err
            })?;
        let payload = match (out.secret_string(), out.secret_binary()) {
            (Some(text), _) => SecretPayload::Text(text),
            (None, Some(blob)) => SecretPayload::Binary(blob.as_ref()),
            (None, None) => {
                return Err(BackendError::Unavailable {
                    message: "AWS Secrets Manager's answer could not be read".to_owned(),
                    detail: "secretsmanager GetSecretValue: neither SecretString nor SecretBinary"
                        .to_owned(),
                });
            }
        };
        let data = secret_data(
            payload,
            self.spec.keys.as_deref(),
            &self.spec.key,
            "secretsmanager",
        )?;
        Ok(Credential::static_data(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GeneratorKind, GeneratorSpec};

    fn parse(j: serde_json::Value) -> Result<GeneratorSpec, SpecError> {
        GeneratorSpec::from_manifest(GeneratorKind::SecretsManagerSecret, j)
    }

    #[test]
    fn round_trips_and_validates() {
        let j = serde_json::json!({
            "secretStoreRef": {"name": "aws"},
            "secretId": "apps/{{namespace}}/db",
            "versionStage": "AWSPREVIOUS",
            "keys": ["username", "password"],
            "roleArn": "arn:aws:iam::123456789012:role/read",
            "externalId": "x",
        });
        let spec = parse(j.clone()).unwrap();
        let GeneratorSpec::SecretsManagerSecret(s) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(s.key, "value");
        assert_eq!(parse(serde_json::to_value(s).unwrap()).unwrap(), spec);
        for (field, value, says) in [
            ("secretId", serde_json::json!(""), "spec.secretId"),
            (
                "secretId",
                serde_json::json!("apps/{{namespace}} db"),
                "spec.secretId",
            ),
            (
                "secretId",
                serde_json::json!("apps/{{secret}}"),
                "unknown placeholder",
            ),
            ("versionId", serde_json::json!("v1"), "not both"),
            ("keys", serde_json::json!([]), "spec.keys"),
            ("key", serde_json::json!(""), "spec.key"),
            ("roleArn", serde_json::json!("read"), "spec.roleArn"),
            (
                "versionStages",
                serde_json::json!("x"),
                "unknown field `versionStages`",
            ),
        ] {
            let mut b = j.clone();
            b[field] = value;
            let err = parse(b).unwrap_err().to_string();
            assert!(err.contains(says), "{field}: {err}");
        }
        let mut b = j.clone();
        b.as_object_mut().unwrap().remove("roleArn");
        assert!(
            parse(b)
                .unwrap_err()
                .to_string()
                .contains("spec.externalId")
        );
    }

    #[test]
    fn the_federations_own_key_secrets_are_never_named() {
        let reserved = "esi-fed-lease-keys";
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:esi-fed-lease-keys-AbCdEf";
        for id in [reserved, "esi-fed-lease-keys-AbCdEf", arn] {
            assert!(may_name(id, reserved), "{id}");
            assert!(may_name(id, arn), "{id} against the ARN");
        }
        for id in [
            "esi-fed-lease",
            "apps/esi-fed-lease-keys",
            "esi-fed-lease-keysx",
        ] {
            assert!(!may_name(id, reserved), "{id}");
            assert!(!may_name(id, arn), "{id} against the ARN");
        }
        assert!(!may_name("anything", ""));
        for &(env, what) in OWN_KEY_SECRETS {
            let err = refuse_reserved("esi-fed-lease-keys-AbCdEf", Some(reserved), env, what)
                .unwrap_err();
            assert!(err.contains(env) && err.contains(what), "{err}");
            assert!(refuse_reserved("esi-fed-lease-keys", None, env, what).is_ok());
        }
        assert_eq!(
            OWN_KEY_SECRETS
                .iter()
                .map(|(env, _)| *env)
                .collect::<Vec<_>>(),
            ["ESI_LEASE_KEYS_SECRET", "ESI_ISSUER_KEYS_SECRET"]
        );
    }

    #[test]
    fn secret_ids_are_names_or_arns() {
        assert!(valid_secret_id("apps/payments/db"));
        assert!(valid_secret_id(
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:apps/db-AbCdEf"
        ));
        assert!(valid_secret_id("a+b=c.d@e_f-g"));
        for bad in ["", "a b", "a\nb", "a?b", "a#b", "ä"] {
            assert!(!valid_secret_id(bad), "{bad:?}");
        }
        assert!(!valid_secret_id(&"a".repeat(MAX_SECRET_ID + 1)));
    }
}
