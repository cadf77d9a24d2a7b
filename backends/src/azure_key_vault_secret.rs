//! `AzureKeyVaultSecret`: reads a secret from Azure Key Vault with the federation's Entra ID
//! identity from an `azure` SecretStore: the ESO `AzureKV` provider's job, per Pod instead of
//! through a Kubernetes Secret. Like `SecretsManagerSecret` it is a generator kind, so the
//! same Authorization decides who may read it and the same envelope carries it; nothing is
//! leased.
//!
//! A read is `GET https://{vault}/secrets/{name}[/{version}]?api-version=2025-07-01`
//! (<https://learn.microsoft.com/rest/api/keyvault/secrets/get-secret/get-secret>) with the
//! store's Entra ID token for the vault's cloud (`https://vault.azure.net/.default`, or the
//! Azure Government / Azure in China audience), cached per store and scope (see
//! [`crate::azure`]); a cached token Key Vault refuses (401) is dropped and one fresh token
//! tried. `vault` must lie under a Key Vault domain ([`KEY_VAULT_DOMAINS`]): the federation's
//! token is sent there and nowhere else.
//!
//! `name` is a template over the verified identity, so one generator can serve every
//! namespace with its own secret (`{{namespace}}-db`); it is checked against Key Vault's
//! grammar (`[0-9a-zA-Z-]{1,127}`) with placeholder values at load, and once rendered for each
//! caller, who is refused before anything is asked of Azure when it does not fit.
//!
//! Key Vault returns an expired or not-yet-valid secret on a read (its `exp` and `nbf` are
//! advisory there) and refuses a disabled one; esi refuses all three, saying which. A value
//! holding a JSON object becomes one key per member (`keys` narrows them, each must exist;
//! non-string members as JSON text); any other value is returned under `key` (default
//! `value`). The secret's `exp`, when set, is the credential's `expiresAt`: it says when the
//! secret stops being valid (it is not a lease, and an Authorization's `maxTTL` does not apply
//! to a secret that is only read).
//!
//! ```yaml
//! kind: AzureKeyVaultSecret
//! spec:
//!   secretStoreRef: {name: azure}
//!   vault: myvault                      # or myvault.vault.azure.net, https://myvault.vault.azure.net/
//!   name: "{{namespace}}-db"            # templated over the caller
//!   version: 4387e9f3d6e14c459867679a90fd0f79   # optional; default the latest
//!   keys: [username, password]          # optional, for a JSON object secret
//! ```

use std::sync::Arc;

use kube::CustomResource;
use reqwest::Url;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::azure::AzureConn;
use crate::credential::secret_text_data;
use crate::store::SecretStoreRef;
use crate::template::Template;
use crate::{BackendError, Context, Credential, Generate, SecretStoreSpec, SpecError};

const BACKEND: &str = "Azure Key Vault";

/// The Key Vault API version asked for: the current GA one (what Azure's SDKs default to).
/// The fields read (`value`, `attributes.enabled`/`nbf`/`exp`) are the same since 7.0.
pub const API_VERSION: &str = "2025-07-01";

/// The DNS suffixes of Key Vault's vaults, with the audience of the tokens each cloud's vaults
/// accept: Azure's public cloud, Azure Government, Azure operated by 21Vianet. The federation's
/// Entra ID token is only ever sent to a vault under one of them.
pub const KEY_VAULT_DOMAINS: &[(&str, &str)] = &[
    ("vault.azure.net", "https://vault.azure.net"),
    ("vault.usgovcloudapi.net", "https://vault.usgovcloudapi.net"),
    ("vault.azure.cn", "https://vault.azure.cn"),
];

/// The longest secret name Key Vault takes.
const MAX_NAME: usize = 127;

/// `spec` of an `AzureKeyVaultSecret` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "AzureKeyVaultSecret",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureKeyVaultSecretSpec {
    /// The `azure` SecretStore (the federation's Entra ID identity) reading the secret.
    pub secret_store_ref: SecretStoreRef,
    /// The vault: its name (`myvault`, in Azure's public cloud), its host
    /// (`myvault.vault.usgovcloudapi.net`) or its URI (`https://myvault.vault.azure.net/`). A
    /// host lies under `vault.azure.net`, `vault.usgovcloudapi.net` or `vault.azure.cn`.
    pub vault: String,
    /// The secret's name (`[0-9a-zA-Z-]`, at most 127 characters); `{{namespace}}` etc. are
    /// replaced by the caller's values.
    pub name: String,
    /// The version to read (32 hexadecimal digits); default the latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Return only these members of a JSON object secret; each must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    /// The key for a secret that is not a JSON object (default `value`).
    #[serde(default = "value_key")]
    pub key: String,
}

fn value_key() -> String {
    "value".to_owned()
}

/// Whether `name` can name a Key Vault secret.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Whether `label` is a vault name: 3 to 24 letters, digits and hyphens, starting with a
/// letter, ending with a letter or digit, no two hyphens in a row.
fn valid_vault_name(label: &str) -> bool {
    let b = label.as_bytes();
    (3..=24).contains(&b.len())
        && b[0].is_ascii_alphabetic()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        && !label.contains("--")
}

/// The vault's host (lowercase) and the audience of its cloud, from `spec.vault`; the error
/// says why it is none.
fn vault_host(vault: &str) -> Result<(String, &'static str), String> {
    let host = match vault.strip_prefix("https://") {
        Some(rest) => rest.strip_suffix('/').unwrap_or(rest),
        None => vault,
    };
    let host = host.to_ascii_lowercase();
    let host = if host.contains('.') {
        host
    } else {
        format!("{host}.{}", KEY_VAULT_DOMAINS[0].0)
    };
    if !crate::azure::is_dns_name(&host) {
        return Err(format!(
            "{vault:?} is not a vault name, host or URI (e.g. myvault, myvault.vault.azure.net or \
             https://myvault.vault.azure.net/; no port, path or other scheme)"
        ));
    }
    let Some((name, audience)) = KEY_VAULT_DOMAINS.iter().find_map(|(domain, audience)| {
        host.strip_suffix(domain)
            .and_then(|n| n.strip_suffix('.'))
            .map(|n| (n, *audience))
    }) else {
        return Err(format!(
            "{vault:?} is not under an Azure Key Vault domain ({}): the federation sends its \
             Entra ID token only there",
            KEY_VAULT_DOMAINS
                .iter()
                .map(|(d, _)| *d)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    if !valid_vault_name(name) {
        return Err(format!(
            "{name:?} is not a vault name (3 to 24 letters, digits and single hyphens, starting \
             with a letter)"
        ));
    }
    Ok((host, audience))
}

impl AzureKeyVaultSecretSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        vault_host(&self.vault).map_err(|why| SpecError::field("vault", why))?;
        self.name_template()?;
        if let Some(v) = &self.version
            && (v.len() != 32 || !v.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(SpecError::field(
                "version",
                format!(
                    "{v:?} is not a Key Vault secret version (32 hexadecimal digits; leave it \
                     out for the latest)"
                ),
            ));
        }
        crate::credential::validate_selection(self.keys.as_deref(), &self.key)?;
        Ok(())
    }

    /// The parsed `name`, checked with placeholder values standing in for the caller's.
    fn name_template(&self) -> Result<Template, SpecError> {
        let t = Template::parse(&self.name, "name")?;
        let sample = t.sample();
        if !valid_name(&sample) {
            let filled = if self.name.contains("{{") {
                " with its placeholders filled in (as `x`)"
            } else {
                ""
            };
            return Err(SpecError::field(
                "name",
                format!(
                    "{:?}{filled} is not a Key Vault secret name (letters, digits and `-` only, \
                     1 to {MAX_NAME} characters)",
                    self.name
                ),
            ));
        }
        Ok(t)
    }
}

/// The built `AzureKeyVaultSecret` generator.
#[derive(Debug)]
pub struct AzureKeyVaultSecretGenerator {
    spec: AzureKeyVaultSecretSpec,
    name: Template,
    /// `https://{vault}/`, or the store's `keyVaultEndpoint`.
    base: Url,
    /// `{audience of the vault's cloud}/.default`.
    scope: String,
    conn: Arc<AzureConn>,
}

/// What Key Vault answers (the fields used; `id`, `contentType`, `tags`, ... are not).
/// No `Debug`: it holds the secret.
#[derive(Deserialize)]
struct SecretBundle {
    value: String,
    #[serde(default)]
    attributes: Attributes,
}

#[derive(Default, Deserialize)]
struct Attributes {
    enabled: Option<bool>,
    nbf: Option<i64>,
    exp: Option<i64>,
}

/// What a Key Vault error says
/// (`{"error": {"code": "Forbidden", "message": ..., "innererror": {"code": "SecretDisabled"}}}`).
#[derive(Deserialize)]
struct ErrorResponse {
    error: ErrorInfo,
}

#[derive(Deserialize)]
struct ErrorInfo {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    innererror: Option<InnerError>,
}

#[derive(Deserialize)]
struct InnerError {
    #[serde(default)]
    code: String,
}

/// The error of a Key Vault answer other than success. Key Vault's own message goes to the
/// log only, as does the secret's name.
fn answer_error(status: reqwest::StatusCode, body: &[u8], secret: &str) -> BackendError {
    let (code, inner, said) = match serde_json::from_slice::<ErrorResponse>(body) {
        Ok(e) => {
            let inner = e.error.innererror.map(|i| i.code).unwrap_or_default();
            (e.error.code, inner, e.error.message)
        }
        Err(_) => (String::new(), String::new(), "no readable error".to_owned()),
    };
    let said: String = said.chars().take(300).collect();
    let codes = if inner.is_empty() {
        code.clone()
    } else {
        format!("{code}/{inner}")
    };
    let detail = format!(
        "{BACKEND} get secret {secret:?}: {} {codes}: {said}",
        status.as_u16()
    );
    match status.as_u16() {
        404 => BackendError::Rejected {
            message: "Azure Key Vault has no such secret (or version), or it was deleted"
                .to_owned(),
            detail,
        },
        400 => BackendError::Rejected {
            message: "Azure Key Vault refused the request (400)".to_owned(),
            detail,
        },
        // A disabled secret is the secret's state, not the federation's access.
        403 if inner == "SecretDisabled" => BackendError::Rejected {
            message: "the Azure Key Vault secret is disabled".to_owned(),
            detail,
        },
        // The federation's identity: its token not accepted (401: retryable, a fresh one is
        // fetched), or its role assignments, the vault's access policies or network rules
        // (403: a permission only the operator can grant, rejected as every backend's 403);
        // none of them the caller's.
        401 => BackendError::Unavailable {
            message: "Azure Key Vault refused the federation's Azure identity".to_owned(),
            detail,
        },
        403 => BackendError::Rejected {
            message: "Azure Key Vault denied the federation's Azure identity access to the secret"
                .to_owned(),
            detail,
        },
        _ => crate::http::status_error(
            BACKEND,
            status,
            &format!("get secret {secret:?}: {codes}: {said}"),
        ),
    }
}

fn unreadable(what: &str) -> BackendError {
    BackendError::Unavailable {
        message: "Azure Key Vault's answer could not be read".to_owned(),
        detail: format!("{BACKEND}: {what}"),
    }
}

/// An attribute's time (`nbf`, `exp`: seconds since the epoch).
fn attribute_time(field: &str, secs: i64) -> Result<jiff::Timestamp, BackendError> {
    jiff::Timestamp::from_second(secs)
        .map_err(|_| unreadable(&format!("attributes.{field} {secs} is out of range")))
}

impl AzureKeyVaultSecretGenerator {
    /// Builds the generator on its store's shared connection.
    pub fn new(
        spec: AzureKeyVaultSecretSpec,
        store: Option<&SecretStoreSpec>,
        shared: &mut crate::Shared,
    ) -> Result<Self, SpecError> {
        spec.validate()?;
        let provider = crate::azure::require_store(store, &spec.secret_store_ref)?;
        let conn = shared
            .azure
            .get(provider, |p| AzureConn::with_issuer(p, &shared.issuer))?;
        let (host, audience) =
            vault_host(&spec.vault).map_err(|why| SpecError::field("vault", why))?;
        let base = match &conn.key_vault_endpoint {
            Some(url) => url.clone(),
            None => Url::parse(&format!("https://{host}/"))
                .map_err(|e| SpecError::field("vault", format!("is not a host: {e}")))?,
        };
        Ok(Self {
            name: spec.name_template()?,
            scope: format!("{audience}/.default"),
            base,
            conn,
            spec,
        })
    }

    /// `{base}secrets/{name}[/{version}]?api-version=...`.
    fn url(&self, name: &str) -> Result<Url, BackendError> {
        let path = match &self.spec.version {
            Some(v) => format!("secrets/{name}/{v}"),
            None => format!("secrets/{name}"),
        };
        let mut url = self
            .base
            .join(&path)
            .map_err(|e| unreadable(&format!("cannot name the secret's URL: {e}")))?;
        url.query_pairs_mut()
            .append_pair("api-version", API_VERSION);
        Ok(url)
    }

    /// The GET, with one fresh token when Key Vault refuses a cached one.
    async fn get(&self, url: &Url) -> Result<(reqwest::StatusCode, Vec<u8>), BackendError> {
        self.conn
            .send_with_token(&self.scope, BACKEND, |token| {
                self.conn
                    .http
                    .get(url.clone())
                    .header(reqwest::header::ACCEPT, "application/json")
                    .bearer_auth(token)
            })
            .await
    }
}

impl Generate for AzureKeyVaultSecretGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let name = self.name.render(ctx, str::to_owned);
        if !valid_name(&name) {
            return Err(BackendError::Rejected {
                message: "the caller's identity does not make a valid Key Vault secret name here"
                    .to_owned(),
                detail: format!("keyvault: rendered name {name:?} is not valid"),
            });
        }
        let (status, body) = self.get(&self.url(&name)?).await?;
        if status != reqwest::StatusCode::OK {
            return Err(answer_error(status, &body, &name));
        }
        // The parse error is not logged: serde's message can quote the value.
        let bundle: SecretBundle = serde_json::from_slice(&body).map_err(|_| {
            unreadable(&format!(
                "the answer for secret {name:?} is not a secret bundle with a string `value`"
            ))
        })?;
        let refused = |message: String, why: String| BackendError::Rejected {
            message,
            detail: format!("keyvault: secret {name:?} {why}"),
        };
        let now = jiff::Timestamp::now();
        let a = &bundle.attributes;
        if a.enabled == Some(false) {
            return Err(refused(
                "the Azure Key Vault secret is disabled".to_owned(),
                "is disabled".to_owned(),
            ));
        }
        if let Some(nbf) = a.nbf {
            let nbf = attribute_time("nbf", nbf)?;
            if nbf > now {
                return Err(refused(
                    format!("the Azure Key Vault secret is not valid before {nbf}"),
                    format!("not valid before {nbf} (nbf)"),
                ));
            }
        }
        let expires_at = a.exp.map(|exp| attribute_time("exp", exp)).transpose()?;
        if let Some(exp) = expires_at
            && exp <= now
        {
            return Err(refused(
                format!("the Azure Key Vault secret expired at {exp}"),
                format!("expired at {exp} (exp)"),
            ));
        }
        let data = secret_text_data(
            &bundle.value,
            self.spec.keys.as_deref(),
            &self.spec.key,
            "keyvault",
        )?;
        Ok(Credential {
            expires_at,
            ..Credential::static_data(data)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GeneratorKind, GeneratorSpec};

    fn parse(j: serde_json::Value) -> Result<GeneratorSpec, SpecError> {
        GeneratorSpec::from_manifest(GeneratorKind::AzureKeyVaultSecret, j)
    }

    #[test]
    fn specs_round_trip_and_bad_values_name_their_field() {
        let j = serde_json::json!({
            "secretStoreRef": {"name": "azure"},
            "vault": "myvault",
            "name": "{{namespace}}-db",
            "version": "4387e9f3d6e14c459867679a90fd0f79",
            "keys": ["username", "password"],
        });
        let spec = parse(j.clone()).unwrap();
        let GeneratorSpec::AzureKeyVaultSecret(s) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(s.key, "value");
        assert_eq!(parse(serde_json::to_value(s).unwrap()).unwrap(), spec);
        assert!(parse(serde_json::json!({"secretStoreRef": {"name": "azure"}, "vault": "v01", "name": "db"})).is_ok());
        for (field, value, says) in [
            ("vault", serde_json::json!("example.com"), "spec.vault"),
            ("name", serde_json::json!(""), "spec.name"),
            (
                "name",
                serde_json::json!("apps/db"),
                "not a Key Vault secret name",
            ),
            ("name", serde_json::json!("db_password"), "spec.name"),
            (
                "name",
                serde_json::json!("{{namespace}}.db"),
                "placeholders filled in",
            ),
            ("name", serde_json::json!("x".repeat(128)), "spec.name"),
            (
                "name",
                serde_json::json!("{{secret}}"),
                "unknown placeholder",
            ),
            ("version", serde_json::json!("latest"), "spec.version"),
            ("version", serde_json::json!(""), "spec.version"),
            ("keys", serde_json::json!([]), "spec.keys"),
            ("keys", serde_json::json!([""]), "spec.keys"),
            ("key", serde_json::json!(""), "spec.key"),
            (
                "vaultUrl",
                serde_json::json!("x"),
                "unknown field `vaultUrl`",
            ),
            (
                "tenantId",
                serde_json::json!("x"),
                "unknown field `tenantId`",
            ),
        ] {
            let mut b = j.clone();
            b[field] = value;
            let err = parse(b).unwrap_err().to_string();
            assert!(err.contains(says), "{field}: {err}");
        }
        let mut b = j.clone();
        b.as_object_mut().unwrap().remove("vault");
        assert!(parse(b).unwrap_err().to_string().contains("vault"));
    }

    #[test]
    fn vaults_are_names_hosts_or_uris_under_key_vault_domains() {
        for (vault, host, audience) in [
            (
                "myvault",
                "myvault.vault.azure.net",
                "https://vault.azure.net",
            ),
            (
                "My-Vault-01",
                "my-vault-01.vault.azure.net",
                "https://vault.azure.net",
            ),
            (
                "myvault.vault.azure.net",
                "myvault.vault.azure.net",
                "https://vault.azure.net",
            ),
            (
                "https://myvault.vault.azure.net/",
                "myvault.vault.azure.net",
                "https://vault.azure.net",
            ),
            (
                "govvault.vault.usgovcloudapi.net",
                "govvault.vault.usgovcloudapi.net",
                "https://vault.usgovcloudapi.net",
            ),
            (
                "https://cnvault.vault.azure.cn",
                "cnvault.vault.azure.cn",
                "https://vault.azure.cn",
            ),
        ] {
            assert_eq!(
                vault_host(vault),
                Ok((host.to_owned(), audience)),
                "{vault}"
            );
        }
        for (bad, why) in [
            ("vault.azure.net", "not under an Azure Key Vault domain"),
            ("evilvault.azure.net", "not under an Azure Key Vault domain"),
            (
                "myvault.vault.azure.net.evil.example",
                "not under an Azure Key Vault domain",
            ),
            ("myvault.example.com", "not under an Azure Key Vault domain"),
            (
                "myhsm.managedhsm.azure.net",
                "not under an Azure Key Vault domain",
            ),
            ("a.b.vault.azure.net", "not a vault name"),
            ("my--vault", "not a vault name"),
            ("1vault", "not a vault name"),
            ("vault-", "not a vault name"),
            ("kv", "not a vault name"),
            ("a234567890123456789012345", "not a vault name"),
            (
                "http://myvault.vault.azure.net",
                "not a vault name, host or URI",
            ),
            (
                "https://myvault.vault.azure.net/secrets",
                "not a vault name, host or URI",
            ),
            (
                "https://myvault.vault.azure.net:443/",
                "not a vault name, host or URI",
            ),
            (
                "myvault.vault.azure.net:8443",
                "not a vault name, host or URI",
            ),
            ("my vault", "not a vault name, host or URI"),
            ("", "not a vault name, host or URI"),
        ] {
            let err = vault_host(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn secret_names_follow_key_vaults_grammar() {
        for ok in ["db", "payments-db", "A1-b2", &"x".repeat(MAX_NAME)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a_b",
            "a.b",
            "a/b",
            "a b",
            "ä",
            &"x".repeat(MAX_NAME + 1),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn key_vault_refusals_are_classified_and_keep_its_words_in_the_log() {
        let status = |s| reqwest::StatusCode::from_u16(s).unwrap();
        let body = |code: &str, inner: Option<&str>, message: &str| {
            let mut e = serde_json::json!({"error": {"code": code, "message": message}});
            if let Some(i) = inner {
                e["error"]["innererror"] = serde_json::json!({"code": i});
            }
            e.to_string().into_bytes()
        };
        let not_found = body(
            "SecretNotFound",
            None,
            "A secret with (name/id) payments-db was not found in this key vault.",
        );
        let cases: Vec<(u16, Vec<u8>, bool, &str)> = vec![
            (404, not_found, false, "no such secret"),
            (
                400,
                body("BadParameter", None, "bad"),
                false,
                "refused the request",
            ),
            (
                403,
                body(
                    "Forbidden",
                    Some("SecretDisabled"),
                    "Operation get is not allowed on a disabled secret.",
                ),
                false,
                "disabled",
            ),
            (
                403,
                body(
                    "Forbidden",
                    Some("ForbiddenByRbac"),
                    "Caller is not authorized to perform action on resource.",
                ),
                false,
                "denied the federation's Azure identity",
            ),
            (
                401,
                body("Unauthorized", None, "AKV10022: Invalid audience."),
                true,
                "refused the federation's Azure identity",
            ),
            (
                429,
                body(
                    "Throttled",
                    None,
                    "Request was not processed because too many requests were received.",
                ),
                true,
                "429",
            ),
            (503, b"<html>".to_vec(), true, "503"),
        ];
        for (s, b, unavailable, says) in cases {
            let e = answer_error(status(s), &b, "payments-db");
            assert_eq!(
                matches!(e, BackendError::Unavailable { .. }),
                unavailable,
                "{s}: {e:?}"
            );
            assert!(e.to_string().contains(says), "{s}: {e}");
            assert!(!e.to_string().contains("payments-db"), "{s}: {e}");
            assert!(e.detail().contains("payments-db"), "{s}: {}", e.detail());
        }
        let e = answer_error(status(404), br#"{"error":{"code":"SecretNotFound","message":"A secret with (name/id) x was not found"}}"#, "x");
        assert!(
            e.detail().contains("SecretNotFound: A secret"),
            "{}",
            e.detail()
        );
        assert!(!e.to_string().contains("SecretNotFound"), "{e}");
    }
}
