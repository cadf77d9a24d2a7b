//! `KubernetesSecret`: a Secret read from a Kubernetes cluster's API server, on the
//! `kubernetes` SecretStore (External Secrets Operator's `kubernetes` provider): a workload in
//! any registered cluster gets a Secret that lives in another (a shared database password kept
//! in the platform cluster, a certificate a controller renews there), with no copy of it kept
//! in its own cluster.
//!
//! One call, `GET /api/v1/namespaces/{namespace}/secrets/{name}`, needing `get` on that Secret
//! (RBAC's `resourceNames` can narrow the federation to exactly the Secrets it hands out). The
//! namespace and name may use the caller's identity (`{{namespace}}`), checked once rendered as
//! Kubernetes names. Every key of the Secret's `data` becomes a key of the credential, narrowed
//! to `keys` when given (each must exist); values are handed over as text (a value that is not
//! UTF-8 is refused, naming its key), or with `encoding: base64` as the Secret stores them (a
//! keystore or any binary value; esi-cli's `decode=base64` writes the bytes to a file).
//!
//! A Secret of type `kubernetes.io/service-account-token` is refused: it holds a ServiceAccount
//! token that never expires, the opposite of what esi hands out (`KubernetesServiceAccountToken`
//! mints a short-lived one). The credential has no expiry and no lease: a Secret is static, the
//! read mints nothing.
//!
//! ```yaml
//! kind: KubernetesSecret
//! spec:
//!   secretStoreRef: {name: platform}     # a `kubernetes` SecretStore
//!   namespace: shared
//!   name: "db-{{namespace}}"
//!   keys: [username, password]           # default: every key
//!   encoding: text                       # or base64
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::kubernetes_token::{KubernetesConn, ObjectName, refusal, unreadable};
use crate::store::SecretStoreRef;
use crate::{BackendError, Context, Credential, Generate, SecretStoreSpec, SpecError};

const BACKEND: &str = "Kubernetes API server";

/// The type of the Secrets that hold a legacy, never-expiring ServiceAccount token.
pub const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";

/// How the values of a Secret are handed over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SecretEncoding {
    /// As text: a value that is not UTF-8 is refused.
    #[default]
    Text,
    /// As the Secret stores them: base64 of the bytes.
    Base64,
}

/// `spec` of a `KubernetesSecret` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "KubernetesSecret",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesSecretSpec {
    /// The `kubernetes` SecretStore (the cluster's API server and the federation's credential
    /// there).
    pub secret_store_ref: SecretStoreRef,
    /// The Secret's namespace; may use the caller's identity (`{{namespace}}`).
    pub namespace: String,
    /// The Secret's name; may use the caller's identity.
    pub name: String,
    /// Return only these keys of the Secret; each must exist (default: every key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    /// `text` (default: values as UTF-8 text) or `base64` (as the Secret stores them).
    #[serde(default, skip_serializing_if = "is_text")]
    pub encoding: SecretEncoding,
}

fn is_text(e: &SecretEncoding) -> bool {
    *e == SecretEncoding::Text
}

/// Whether `key` can be a key of a Secret's `data`: 1 to 253 letters, digits, `-`, `_`, `.`.
fn is_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl KubernetesSecretSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.target()?;
        if let Some(keys) = &self.keys {
            if keys.is_empty() {
                return Err(SpecError::field(
                    "keys",
                    "must name at least one key (leave it out for all)",
                ));
            }
            for (i, k) in keys.iter().enumerate() {
                if !is_secret_key(k) {
                    return Err(SpecError::field(
                        format!("keys[{i}]"),
                        format!(
                            "{k:?} is not a Secret key (letters, digits, `-`, `_` and `.`, at most 253)"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The Secret's namespace and name, as templates.
    fn target(&self) -> Result<ObjectName, SpecError> {
        ObjectName::parse(&self.namespace, &self.name, "", "Secret")
    }
}

/// The built `KubernetesSecret` generator.
#[derive(Debug)]
pub struct KubernetesSecretGenerator {
    spec: KubernetesSecretSpec,
    target: ObjectName,
    conn: Arc<KubernetesConn>,
}

/// A Secret as the API server answers it (the fields used).
#[derive(Deserialize)]
struct Secret {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

impl KubernetesSecretGenerator {
    /// Builds the generator on its store's shared connection.
    pub(crate) fn new(
        spec: KubernetesSecretSpec,
        store: Option<&SecretStoreSpec>,
        shared: &mut crate::Shared,
    ) -> Result<Self, SpecError> {
        spec.validate()?;
        let conn = shared.kubernetes_conn(store, &spec.secret_store_ref)?;
        let target = spec.target()?;
        Ok(Self { spec, target, conn })
    }

    /// The credential's data from the Secret's: narrowed to `keys`, decoded per `encoding`.
    /// Errors name keys, never values.
    fn data(&self, who: &str, secret: Secret) -> Result<BTreeMap<String, String>, BackendError> {
        let chosen: Vec<(String, String)> = match &self.spec.keys {
            None => secret.data.into_iter().collect(),
            Some(keys) => {
                let mut data = secret.data;
                keys.iter()
                    .map(|k| {
                        data.remove_entry(k).ok_or_else(|| BackendError::Rejected {
                            message: format!("{who} has no key {k:?}"),
                            detail: format!("{BACKEND}: {who}: key {k:?} missing"),
                        })
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        if chosen.is_empty() {
            return Err(BackendError::Rejected {
                message: format!("{who} holds no data"),
                detail: format!("{BACKEND}: {who}: no data"),
            });
        }
        let engine = base64::engine::general_purpose::STANDARD;
        chosen
            .into_iter()
            .map(|(k, v)| {
                let bytes = engine.decode(&v).map_err(|_| BackendError::Unavailable {
                    message: "the Kubernetes API server's answer could not be read".to_owned(),
                    detail: format!("{BACKEND}: {who}: key {k:?} is not base64"),
                })?;
                let value = match self.spec.encoding {
                    SecretEncoding::Base64 => v,
                    SecretEncoding::Text => {
                        String::from_utf8(bytes).map_err(|_| BackendError::Rejected {
                            message: format!(
                                "{who}'s key {k:?} is not text; set encoding: base64 (and decode \
                                 it with esi-cli's decode=base64)"
                            ),
                            detail: format!("{BACKEND}: {who}: key {k:?} is not UTF-8"),
                        })?
                    }
                };
                Ok((k, value))
            })
            .collect()
    }
}

impl Generate for KubernetesSecretGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let (namespace, name) = self.target.render(ctx)?;
        let who = format!("Secret {namespace}/{name}");
        let path = format!("api/v1/namespaces/{namespace}/secrets/{name}");
        let req = self.conn.request(reqwest::Method::GET, &path, None)?;
        let (status, body) = crate::http::send(BACKEND, req).await?;
        if status != reqwest::StatusCode::OK {
            return Err(refusal(
                self.conn.address(),
                "reading",
                &who,
                (&format!("read {who}"), "`get` on `secrets`"),
                status,
                &body,
            ));
        }
        let secret: Secret = serde_json::from_slice(&body).map_err(|e| unreadable(&e))?;
        if secret.kind == SERVICE_ACCOUNT_TOKEN_TYPE {
            return Err(BackendError::Rejected {
                message: format!(
                    "{who} holds a ServiceAccount token that never expires; esi hands out none \
                     (a KubernetesServiceAccountToken generator mints a short-lived one)"
                ),
                detail: format!("{BACKEND}: {who}: type {SERVICE_ACCOUNT_TOKEN_TYPE}"),
            });
        }
        Ok(Credential::static_data(self.data(&who, secret)?))
    }
}

#[cfg(test)]
mod tests {
    use crate::{GeneratorKind, GeneratorSpec};

    fn spec(v: serde_json::Value) -> Result<GeneratorSpec, String> {
        GeneratorSpec::from_manifest(GeneratorKind::KubernetesSecret, v).map_err(|e| e.to_string())
    }

    #[test]
    fn names_keys_and_encoding_are_checked_at_load() {
        let base = |extra: serde_json::Value| {
            let mut v = serde_json::json!({
                "secretStoreRef": {"name": "platform"},
                "namespace": "{{namespace}}",
                "name": "db-{{serviceAccount}}",
            });
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            spec(v)
        };
        assert!(base(serde_json::json!({})).is_ok());
        assert!(
            base(serde_json::json!({"keys": ["tls.crt", "user_name"], "encoding": "base64"}))
                .is_ok()
        );
        assert!(
            base(serde_json::json!({"namespace": "Shared"}))
                .unwrap_err()
                .contains("namespace")
        );
        assert!(
            base(serde_json::json!({"name": "db/{{namespace}}"}))
                .unwrap_err()
                .contains("name")
        );
        assert!(
            base(serde_json::json!({"keys": []}))
                .unwrap_err()
                .contains("at least one")
        );
        assert!(
            base(serde_json::json!({"keys": ["a b"]}))
                .unwrap_err()
                .contains("keys[0]")
        );
        assert!(
            base(serde_json::json!({"encoding": "hex"}))
                .unwrap_err()
                .contains("encoding")
        );
    }
}
