//! `Fake`: returns the static `data` of its spec. For demos and tests; it is not a secret
//! store (the values sit in the manifest).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{BackendError, Context, Credential, Generate};

/// `spec` of a `Fake` generator.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "esi.dev", version = "v1alpha1", kind = "Fake", namespaced)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FakeSpec {
    /// The key/value pairs every call returns.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

/// The built `Fake` generator.
#[derive(Clone)]
pub struct FakeGenerator {
    data: BTreeMap<String, String>,
}

impl std::fmt::Debug for FakeGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGenerator").field("keys", &self.data.keys().collect::<Vec<_>>()).finish()
    }
}

impl FakeGenerator {
    /// Builds the generator.
    pub fn new(spec: FakeSpec) -> Self {
        FakeGenerator { data: spec.data }
    }
}

impl Generate for FakeGenerator {
    async fn generate(&self, _ctx: &Context<'_>) -> Result<Credential, BackendError> {
        Ok(Credential::static_data(self.data.clone()))
    }
}
