//! `VaultStaticSecret`: reads a static secret from a KV engine (v1 or v2) of a `vault`
//! SecretStore. This is esi's answer to ESE's `/secretstore/{store}/secrets/{name}`: a
//! generator kind, so the same Authorization resource (`namespace/VaultStaticSecret/name`)
//! decides who may read it, and the same envelope carries it. Nothing is leased, nothing
//! to revoke; `expiresAt` is absent.
//!
//! ```yaml
//! kind: VaultStaticSecret
//! spec:
//!   secretStoreRef: {name: vault}
//!   mount: secret          # the KV engine's mount
//!   path: payments/stripe  # the secret inside it
//!   kvVersion: v2          # v1 | v2 (default v2)
//!   version: 3             # optional, v2 only: a specific version
//!   keys: [apiKey]         # optional: return only these keys (each must exist)
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::store::{SecretStoreRef, StoreProvider};
use crate::vault::{VaultConn, value_string};
use crate::{BackendError, Context, Credential, Generate, SecretStoreSpec, SpecError};

/// `spec` of a `VaultStaticSecret` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "VaultStaticSecret",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VaultStaticSecretSpec {
    /// The `vault` SecretStore to read from, in the generator's namespace.
    pub secret_store_ref: SecretStoreRef,
    /// Mount path of the KV engine (`secret`).
    pub mount: String,
    /// Path of the secret inside the mount (`payments/stripe`).
    pub path: String,
    /// KV engine version: `v1` or `v2` (default `v2`).
    #[serde(default)]
    pub kv_version: KvVersion,
    /// A specific version to read (KV v2 only; default the latest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Return only these keys; each must exist in the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
}

/// KV secrets engine version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KvVersion {
    /// KV version 1.
    V1,
    /// KV version 2 (versioned).
    #[default]
    V2,
}

impl VaultStaticSecretSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        for (field, v) in [("mount", &self.mount), ("path", &self.path)] {
            let t = v.trim_matches('/');
            if t.is_empty() || t.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
                return Err(SpecError::field(
                    field,
                    format!("{v:?} is not a Vault path"),
                ));
            }
        }
        if self.version.is_some() && self.kv_version == KvVersion::V1 {
            return Err(SpecError::field("version", "KV v1 has no versions"));
        }
        if self.keys.as_ref().is_some_and(|k| k.is_empty()) {
            return Err(SpecError::field("keys", "must not be empty when set"));
        }
        Ok(())
    }
}

/// The built `VaultStaticSecret` generator.
#[derive(Debug)]
pub struct VaultStaticSecretGenerator {
    spec: VaultStaticSecretSpec,
    conn: Arc<VaultConn>,
}

impl VaultStaticSecretGenerator {
    /// Builds the generator on its store's shared connection.
    pub fn new(
        spec: VaultStaticSecretSpec,
        store: Option<&SecretStoreSpec>,
        shared: &mut crate::Shared,
    ) -> Result<Self, SpecError> {
        spec.validate()?;
        let provider =
            crate::store::require(store, &spec.secret_store_ref, "vault", |p| match p {
                StoreProvider::Vault(v) => Some(v),
                #[allow(unreachable_patterns)]
                _ => None,
            })?;
        Ok(VaultStaticSecretGenerator {
            conn: shared
                .vault
                .get(provider, |p| VaultConn::new(p, &shared.issuer))?,
            spec,
        })
    }
}

impl Generate for VaultStaticSecretGenerator {
    async fn generate(&self, _ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let mount = self.spec.mount.trim_matches('/');
        let path = self.spec.path.trim_matches('/');
        let data: serde_json::Map<String, serde_json::Value> =
            match (self.spec.kv_version, self.spec.version) {
                (KvVersion::V1, _) => {
                    let resp = self
                        .conn
                        .with_client("kv v1 read", |c| async move {
                            vaultrs::kv1::get_raw(&c, mount, path).await
                        })
                        .await?;
                    match resp.data {
                        serde_json::Value::Object(m) => m,
                        _ => serde_json::Map::new(),
                    }
                }
                (KvVersion::V2, None) => {
                    self.conn
                        .with_client("kv v2 read", |c| async move {
                            vaultrs::kv2::read(&c, mount, path).await
                        })
                        .await?
                }
                (KvVersion::V2, Some(v)) => {
                    self.conn
                        .with_client("kv v2 read", |c| async move {
                            vaultrs::kv2::read_version(&c, mount, path, v).await
                        })
                        .await?
                }
            };
        let mut out: BTreeMap<String, String> = data
            .iter()
            .map(|(k, v)| (k.clone(), value_string(v)))
            .collect();
        if let Some(keys) = &self.spec.keys {
            let mut picked = BTreeMap::new();
            for k in keys {
                let v = out.remove(k).ok_or_else(|| BackendError::Rejected {
                    message: format!("the secret has no key {k:?}"),
                    detail: format!("{mount}/{path}: key {k:?} missing"),
                })?;
                picked.insert(k.clone(), v);
            }
            out = picked;
        }
        Ok(Credential::static_data(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GeneratorKind, GeneratorSpec};

    #[test]
    fn round_trips_and_rejects_unknown_keys() {
        let json = serde_json::json!({"secretStoreRef": {"name": "v"}, "mount": "secret", "path": "a/b", "version": 2, "keys": ["x"]});
        let spec = GeneratorSpec::from_manifest(GeneratorKind::VaultStaticSecret, json).unwrap();
        let GeneratorSpec::VaultStaticSecret(s) = &spec else {
            panic!()
        };
        assert_eq!(s.kv_version, KvVersion::V2);
        let back = serde_json::to_value(s).unwrap();
        assert_eq!(
            GeneratorSpec::from_manifest(GeneratorKind::VaultStaticSecret, back).unwrap(),
            spec
        );

        let bad = serde_json::json!({"secretStoreRef": {"name": "v"}, "mount": "secret", "path": "a", "engine": "kv"});
        let err = GeneratorSpec::from_manifest(GeneratorKind::VaultStaticSecret, bad).unwrap_err();
        assert!(err.to_string().contains("unknown field `engine`"), "{err}");
        let v1_version = serde_json::json!({"secretStoreRef": {"name": "v"}, "mount": "kv", "path": "a", "kvVersion": "v1", "version": 1});
        let err =
            GeneratorSpec::from_manifest(GeneratorKind::VaultStaticSecret, v1_version).unwrap_err();
        assert!(err.to_string().contains("spec.version"), "{err}");
    }
}
