//! The credential a generator returns and the lease handle that revokes it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A freshly minted credential, before the federation wraps it into an envelope.
///
/// `Debug` lists the keys only: values are secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// Key/value pairs handed to the workload.
    pub data: BTreeMap<String, String>,
    /// When the backend says the credential stops working; `None` when it does not expire.
    pub expires_at: Option<jiff::Timestamp>,
    /// Whether the backend lease can be renewed.
    pub renewable: bool,
    /// How to revoke it later, when the backend allows.
    pub lease: Option<LeaseHandle>,
}

impl Credential {
    /// A credential that does not expire and cannot be revoked.
    pub fn static_data(data: BTreeMap<String, String>) -> Self {
        Credential {
            data,
            expires_at: None,
            renewable: false,
            lease: None,
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("expires_at", &self.expires_at)
            .field("renewable", &self.renewable)
            .field("lease", &self.lease)
            .finish()
    }
}

/// What a backend needs to revoke a credential later: backend-defined, sealed by the
/// federation (AEAD) before it leaves, so it may name internal identifiers (a Vault lease id, a
/// minted user) but must not hold the secret itself — unless the backend revokes a credential
/// only when shown it (a GitHub installation token): then the sealed lease is no more exposed
/// than the credential it sits beside.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHandle(pub serde_json::Value);

impl fmt::Debug for LeaseHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Lease ids are not secrets in Vault's model, but they let their holder revoke; keep
        // them out of logs anyway.
        f.write_str("LeaseHandle(<redacted>)")
    }
}

/// A JSON value as the string handed to the workload: strings unquoted, the rest as JSON.
#[cfg_attr(
    not(any(
        feature = "vault",
        feature = "webhook",
        feature = "secretsmanager",
        feature = "gcp"
    )),
    allow(dead_code)
)]
pub(crate) fn value_string(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A static secret as a secret manager holds it: text, or bytes that are not UTF-8.
#[cfg(any(feature = "secretsmanager", feature = "gcp"))]
pub(crate) enum SecretPayload<'a> {
    /// UTF-8 text.
    Text(&'a str),
    /// Anything else.
    Binary(&'a [u8]),
}

/// The credential's keys from a static secret (`SecretsManagerSecret`, `GCPSecretManagerSecret`):
/// text holding a JSON object becomes one key per member (`keys` narrows them, each must exist;
/// non-string members as JSON text); other text goes under `key`; bytes under `key`,
/// base64-encoded. Errors name the keys, never the secret's contents; `backend` prefixes
/// their log detail.
#[cfg(any(feature = "secretsmanager", feature = "gcp"))]
pub(crate) fn secret_data(
    payload: SecretPayload<'_>,
    keys: Option<&[String]>,
    key: &str,
    backend: &str,
) -> Result<BTreeMap<String, String>, crate::BackendError> {
    use base64::Engine as _;
    let text = match payload {
        SecretPayload::Text(text) => text,
        SecretPayload::Binary(bytes) => {
            if keys.is_some() {
                return Err(crate::BackendError::Rejected {
                    message: "the secret is binary, so spec.keys cannot select from it".to_owned(),
                    detail: format!("{backend}: keys set, the secret is binary"),
                });
            }
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
            return Ok(BTreeMap::from([(key.to_owned(), encoded)]));
        }
    };
    let object = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => {
            if keys.is_some() {
                return Err(crate::BackendError::Rejected {
                    message: "the secret is not a JSON object, so spec.keys cannot select from \
                              it"
                    .to_owned(),
                    detail: format!("{backend}: keys set, the secret's text is not a JSON object"),
                });
            }
            return Ok(BTreeMap::from([(key.to_owned(), text.to_owned())]));
        }
    };
    match keys {
        None => Ok(object
            .iter()
            .map(|(k, v)| (k.clone(), value_string(v)))
            .collect()),
        Some(keys) => keys
            .iter()
            .map(|k| {
                object
                    .get(k)
                    .map(|v| (k.clone(), value_string(v)))
                    .ok_or_else(|| crate::BackendError::Rejected {
                        message: format!("the secret has no key {k:?}"),
                        detail: format!("{backend}: key {k:?} missing"),
                    })
            })
            .collect(),
    }
}
