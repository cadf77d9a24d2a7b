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
//! With `path` instead of `name`, every parameter under a hierarchy is read
//! (`GetParametersByPath`, decrypted; ESO's `find` by path): `/apps/{{namespace}}` gives
//! `/apps/payments/DB_PASSWORD` as the key `DB_PASSWORD`. `recursive` reads the hierarchies
//! below as well, a deeper `/` becoming `_` (`db/password` is the key `db_password`); two
//! parameters giving one key are refused, not one of them dropped. Each parameter's value is
//! kept whole, JSON or not, and `keys` narrows the parameters returned (each must exist). At
//! most [`MAX_PARAMETERS`] parameters are read: a wider hierarchy is refused rather than cut.
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
//! ---
//! kind: SSMParameter
//! spec:
//!   secretStoreRef: {name: aws}
//!   path: "/apps/{{namespace}}"              # every parameter under it, one key each
//!   recursive: true                          # and below (default: direct children only)
//! ```

use std::collections::BTreeMap;

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

/// The most parameters a `path` read returns: a hierarchy with more is refused, not cut short
/// (a workload missing half its settings is worse than one refused with the reason).
pub const MAX_PARAMETERS: usize = 100;

/// The most `GetParametersByPath` pages one read follows (Parameter Store returns at most 10
/// parameters a page, and may return fewer with more to come).
const MAX_PAGES: usize = 2 * MAX_PARAMETERS / PAGE_SIZE;

/// Parameters asked for per `GetParametersByPath` page (Parameter Store's maximum).
const PAGE_SIZE: usize = 10;

/// The key of a value that is not a JSON object when `key` is not set.
const DEFAULT_KEY: &str = "value";

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
    /// Exactly one of `name` and `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A hierarchy (`/apps/{{namespace}}`) whose parameters are all read, one key each: the
    /// name below the path, a deeper `/` as `_`. Exactly one of `name` and `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// With `path`: also read the hierarchies below it (default: its direct children only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recursive: bool,
    /// The version to read (default: the latest); not with `label`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The label of the version to read; not with `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Return only these members of a JSON object value (with `path`: only these parameters'
    /// keys); each must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    /// The key for a value that is not a JSON object (default `value`); not with `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A role to assume first, its session tagged with the caller's identity: the read then
    /// has that role's permissions. Without it, the store's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// External id the role's trust policy requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
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

/// Whether `path` can name a hierarchy to read: `/` then names joined by `/` (an ARN cannot
/// name one), at most 15 levels, not `/` alone (every parameter of the account), and not
/// under `/aws/reference/`. A trailing `/` is allowed ([`hierarchy`] drops it).
fn check_path(path: &str) -> Result<(), String> {
    let trimmed = hierarchy(path);
    if !path.starts_with('/') || path.contains(':') || path.contains("//") {
        return Err(format!(
            "{path:?} is not a parameter hierarchy (it starts with / and has no `:` or `//`)"
        ));
    }
    if trimmed == "/" {
        return Err(
            "\"/\" would read every parameter of the account: name a hierarchy below it".to_owned(),
        );
    }
    if trimmed.matches('/').count() > 15 {
        return Err(format!(
            "{path:?} is deeper than the 15 levels Parameter Store has"
        ));
    }
    // The reference prefix with or without its trailing `/`: `/aws/reference` holds only
    // references.
    check_name(&format!("{trimmed}/"))
}

/// A path without its trailing `/` (Parameter Store takes either; IAM and keys use this).
fn hierarchy(path: &str) -> &str {
    match path.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    }
}

/// What a generator reads: one parameter, or every parameter under a hierarchy.
#[derive(Debug)]
enum Target {
    /// `name`: `GetParameter`.
    Name(Template),
    /// `path`: `GetParametersByPath`.
    Path(Template),
}

impl SsmParameterSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        let target = self.target()?;
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
        match target {
            Target::Name(_) if self.recursive => {
                return Err(SpecError::field("recursive", "goes with path, not name"));
            }
            Target::Path(_) => {
                for (field, set) in [
                    ("version", self.version.is_some()),
                    ("label", self.label.is_some()),
                    ("key", self.key.is_some()),
                ] {
                    if set {
                        return Err(SpecError::field(
                            field,
                            "goes with name, not path (a path reads the latest version of each \
                             parameter, each under its own key)",
                        ));
                    }
                }
            }
            Target::Name(_) => {}
        }
        crate::credential::validate_selection(self.keys.as_deref(), self.key())?;
        validate_caller_role(self.role_arn.as_deref(), self.external_id.as_deref())
    }

    /// The key of a value that is not a JSON object.
    fn key(&self) -> &str {
        self.key.as_deref().unwrap_or(DEFAULT_KEY)
    }

    /// The parsed `name` or `path`, checked with placeholder values standing in for the
    /// caller's.
    fn target(&self) -> Result<Target, SpecError> {
        match (&self.name, &self.path) {
            (Some(name), None) => {
                let t = Template::parse(name, "name")?;
                check_name(&t.sample()).map_err(|e| SpecError::field("name", e))?;
                Ok(Target::Name(t))
            }
            (None, Some(path)) => {
                let t = Template::parse(path, "path")?;
                check_path(&t.sample()).map_err(|e| SpecError::field("path", e))?;
                Ok(Target::Path(t))
            }
            (Some(_), Some(_)) => Err(SpecError::field(
                "path",
                "name either one parameter (name) or a hierarchy (path), not both",
            )),
            (None, None) => Err(SpecError::field(
                "name",
                "name the parameter to read (name), or the hierarchy (path)",
            )),
        }
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
    target: Target,
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
            target: spec.target()?,
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

    /// Reads one parameter (`name`).
    async fn read_name(
        &self,
        client: &aws_sdk_ssm::Client,
        name: String,
    ) -> Result<BTreeMap<String, String>, BackendError> {
        check_name(&name).map_err(|detail| rendered_out_of_bounds("name", detail))?;
        let asked = match self.spec.selector() {
            Some(s) => format!("{name}:{s}"),
            None => name,
        };
        let out = client
            .get_parameter()
            .name(&asked)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| ssm_error("GetParameter", &e, &format!("parameter {asked}")))?;
        let value = out
            .parameter()
            .and_then(|p| p.value())
            .ok_or_else(|| unreadable("GetParameter", &format!("parameter {asked}")))?;
        secret_text_data(value, self.spec.keys.as_deref(), self.spec.key(), "ssm")
    }

    /// Reads every parameter under a hierarchy (`path`), one key each.
    async fn read_path(
        &self,
        client: &aws_sdk_ssm::Client,
        path: String,
    ) -> Result<BTreeMap<String, String>, BackendError> {
        check_path(&path).map_err(|detail| rendered_out_of_bounds("path", detail))?;
        let path = hierarchy(&path);
        let prefix = format!("{path}/");
        let mut data = BTreeMap::new();
        // key -> the parameter it came from, to name both when two give one key.
        let mut sources: BTreeMap<String, String> = BTreeMap::new();
        let mut next_token = None;
        for _ in 0..MAX_PAGES {
            let out = client
                .get_parameters_by_path()
                .path(path)
                .recursive(self.spec.recursive)
                .with_decryption(true)
                .max_results(PAGE_SIZE as i32)
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| ssm_error("GetParametersByPath", &e, &format!("path {path}")))?;
            for p in out.parameters() {
                let (Some(name), Some(value)) = (p.name(), p.value()) else {
                    return Err(unreadable("GetParametersByPath", &format!("path {path}")));
                };
                let Some(below) = name.strip_prefix(&prefix).filter(|b| !b.is_empty()) else {
                    return Err(BackendError::Unavailable {
                        message: "AWS Systems Manager Parameter Store answered with a parameter \
                                  outside the path asked for"
                            .to_owned(),
                        detail: format!("ssm GetParametersByPath: {name} is not under {path}"),
                    });
                };
                let key = below.replace('/', "_");
                if let Some(other) = sources.insert(key.clone(), name.to_owned()) {
                    return Err(BackendError::Rejected {
                        message: format!(
                            "parameters {other} and {name} would both be the key {key:?}: rename \
                             one, or read them with separate generators"
                        ),
                        detail: format!("ssm GetParametersByPath: key clash under {path}"),
                    });
                }
                if sources.len() > MAX_PARAMETERS {
                    return Err(too_many(path));
                }
                data.insert(key, value.to_owned());
            }
            next_token = out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if next_token.is_none() {
                return select_parameters(data, self.spec.keys.as_deref(), path);
            }
        }
        Err(too_many(path))
    }
}

/// The error for a name or path that the caller's identity rendered out of bounds.
fn rendered_out_of_bounds(field: &str, detail: String) -> BackendError {
    BackendError::Rejected {
        message: "the caller's identity does not make a parameter this generator may read"
            .to_owned(),
        detail: format!("ssm: rendered {field}: {detail}"),
    }
}

/// A Parameter Store error, its log detail naming what was asked for (`about`).
fn ssm_error<E, R>(
    operation: &str,
    err: &aws_sdk_ssm::error::SdkError<E, R>,
    about: &str,
) -> BackendError
where
    E: aws_sdk_ssm::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let mut err = map_service_error(
        ("AWS Systems Manager Parameter Store", "ssm"),
        operation,
        err,
    );
    if let BackendError::Rejected { detail, .. } | BackendError::Unavailable { detail, .. } =
        &mut err
    {
        detail.push_str(&format!(" ({about})"));
    }
    err
}

/// An answer without the value asked for.
fn unreadable(operation: &str, about: &str) -> BackendError {
    BackendError::Unavailable {
        message: "AWS Systems Manager Parameter Store's answer could not be read".to_owned(),
        detail: format!("ssm {operation}: no name or value in the answer ({about})"),
    }
}

/// The refusal of a hierarchy holding more than [`MAX_PARAMETERS`] parameters.
fn too_many(path: &str) -> BackendError {
    BackendError::Rejected {
        message: format!(
            "more than {MAX_PARAMETERS} parameters under {path}: name a narrower path (or turn \
             recursive off)"
        ),
        detail: format!("ssm GetParametersByPath: over {MAX_PARAMETERS} parameters under {path}"),
    }
}

/// The parameters read under `path`, narrowed to `keys` (each must be there); none at all is
/// refused, as a missing parameter is.
fn select_parameters(
    mut data: BTreeMap<String, String>,
    keys: Option<&[String]>,
    path: &str,
) -> Result<BTreeMap<String, String>, BackendError> {
    if data.is_empty() {
        return Err(BackendError::Rejected {
            message: format!("no parameters under {path}"),
            detail: format!("ssm GetParametersByPath: nothing under {path}"),
        });
    }
    let Some(keys) = keys else {
        return Ok(data);
    };
    keys.iter()
        .map(|k| {
            data.remove_entry(k).ok_or_else(|| BackendError::Rejected {
                message: format!("no parameter under {path} gives the key {k:?}"),
                detail: format!("ssm GetParametersByPath: key {k:?} missing under {path}"),
            })
        })
        .collect()
}

impl Generate for SsmParameterGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let client = self.signer.client(ctx).await?;
        let data = match &self.target {
            Target::Name(t) => {
                self.read_name(&client, t.render(ctx, str::to_owned))
                    .await?
            }
            Target::Path(t) => {
                self.read_path(&client, t.render(ctx, str::to_owned))
                    .await?
            }
        };
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
        assert_eq!(s.key(), "value");
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
        let mut b = j.clone();
        b.as_object_mut().unwrap().remove("name");
        assert!(parse(b).unwrap_err().to_string().contains("spec.name"));
        let mut b = j.clone();
        b["recursive"] = serde_json::json!(true);
        assert!(parse(b).unwrap_err().to_string().contains("goes with path"));
    }

    #[test]
    fn a_path_reads_a_hierarchy_and_refuses_what_goes_with_one_name() {
        let j = serde_json::json!({
            "secretStoreRef": {"name": "aws"},
            "path": "/apps/{{namespace}}/",
            "recursive": true,
            "keys": ["DB_PASSWORD"],
        });
        let spec = parse(j.clone()).unwrap();
        let GeneratorSpec::SsmParameter(s) = &spec else {
            panic!("{spec:?}")
        };
        assert!(matches!(s.target(), Ok(Target::Path(_))));
        assert_eq!(parse(serde_json::to_value(s).unwrap()).unwrap(), spec);
        for (field, value, says) in [
            ("name", serde_json::json!("/apps/db"), "not both"),
            ("version", serde_json::json!(3), "goes with name, not path"),
            (
                "label",
                serde_json::json!("prod"),
                "goes with name, not path",
            ),
            (
                "key",
                serde_json::json!("token"),
                "goes with name, not path",
            ),
            (
                "path",
                serde_json::json!("apps/{{namespace}}"),
                "starts with /",
            ),
            (
                "path",
                serde_json::json!("/"),
                "every parameter of the account",
            ),
            ("path", serde_json::json!("//"), "no `:` or `//`"),
            (
                "path",
                serde_json::json!("/aws/reference"),
                "SecretsManagerSecret",
            ),
            (
                "path",
                serde_json::json!("arn:aws:ssm:eu-west-1:123456789012:parameter/apps"),
                "spec.path",
            ),
            ("path", serde_json::json!("/a//b"), "spec.path"),
            (
                "path",
                serde_json::json!("/apps/{{nope}}"),
                "unknown placeholder",
            ),
        ] {
            let mut b = j.clone();
            b[field] = value;
            let err = parse(b).unwrap_err().to_string();
            assert!(err.contains(says), "{field}: {err}");
        }
        assert!(check_path(&"/a".repeat(15)).is_ok());
        assert!(
            check_path(&"/a".repeat(16))
                .unwrap_err()
                .contains("15 levels")
        );
        assert_eq!(hierarchy("/apps/payments/"), "/apps/payments");
        assert_eq!(hierarchy("/apps"), "/apps");
    }

    #[test]
    fn parameters_read_by_path_are_narrowed_to_keys_and_never_empty() {
        let data: BTreeMap<String, String> = [("A", "1"), ("db_password", "s3cr3t")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(select_parameters(data.clone(), None, "/p").unwrap(), data);
        let only = select_parameters(data.clone(), Some(&["db_password".to_owned()]), "/p");
        assert_eq!(only.unwrap().keys().collect::<Vec<_>>(), ["db_password"]);
        let err = select_parameters(data, Some(&["B".to_owned()]), "/p").unwrap_err();
        assert!(err.to_string().contains("gives the key \"B\""), "{err}");
        assert!(!format!("{err:?}").contains("s3cr3t"));
        let err = select_parameters(BTreeMap::new(), None, "/p").unwrap_err();
        assert!(err.to_string().contains("no parameters under /p"), "{err}");
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
