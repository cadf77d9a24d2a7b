//! `SecretStore`: how the federation reaches and authenticates to a backend.
//!
//! Secrets a store needs (a Vault token, AppRole secret id, cloud keys) come from the
//! federation's environment or files, never from the manifest: the spec names where to find
//! them.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::SpecError;

/// `spec` of a `SecretStore`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "SecretStore",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretStoreSpec {
    /// The backend and how to reach it: exactly one provider.
    pub provider: StoreProvider,
}

/// The backend of a store. Exactly one key is set, ESO-style (`provider: {vault: {...}}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum StoreProvider {
    /// A Vault or OpenBao server.
    Vault(VaultProvider),
}

/// How to reach a Vault/OpenBao server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VaultProvider {
    /// Server address, `https://vault.example:8200`.
    pub server: String,
    /// Vault Enterprise / OpenBao namespace.
    #[serde(default)]
    pub namespace: Option<String>,
}

impl SecretStoreSpec {
    /// Deserializes and validates a store `spec`.
    pub fn from_manifest(spec: serde_json::Value) -> Result<Self, SpecError> {
        let spec: SecretStoreSpec = crate::spec::parse(spec)?;
        match &spec.provider {
            StoreProvider::Vault(v) => {
                if !(v.server.starts_with("https://") || v.server.starts_with("http://")) {
                    return Err(SpecError::field(
                        "provider.vault.server",
                        format!("{:?} is not an http(s) URL", v.server),
                    ));
                }
            }
        }
        Ok(spec)
    }
}
