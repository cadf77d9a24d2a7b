//! `Fake`: returns the static `data` of its spec. For demos and tests; it is not a secret
//! store (the values sit in the manifest).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{BackendError, Context, Credential, Generate, LeaseHandle, SpecError};

/// `spec` of a `Fake` generator.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "Fake",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FakeSpec {
    /// The key/value pairs every call returns.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    /// Pretend each credential has a revocable lease of this lifetime (`15m`), so clients and
    /// tests can exercise expiry and `POST /v1/revoke` without a real backend.
    #[serde(default)]
    pub lease_duration: Option<String>,
}

/// The built `Fake` generator.
#[derive(Clone)]
pub struct FakeGenerator {
    data: BTreeMap<String, String>,
    lease: Option<std::time::Duration>,
}

impl std::fmt::Debug for FakeGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGenerator")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl FakeGenerator {
    /// Builds the generator.
    pub fn new(spec: FakeSpec) -> Result<Self, SpecError> {
        let lease = match &spec.lease_duration {
            None => None,
            Some(d) => Some(humantime::parse_duration(d).map_err(|e| {
                SpecError::field("leaseDuration", format!("{d:?} is not a duration ({e})"))
            })?),
        };
        Ok(FakeGenerator {
            data: spec.data,
            lease,
        })
    }
}

impl Generate for FakeGenerator {
    async fn generate(&self, _ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let mut cred = Credential::static_data(self.data.clone());
        if let Some(lease) = self.lease {
            let now = jiff::Timestamp::now();
            cred.expires_at = jiff::SignedDuration::try_from(lease)
                .ok()
                .and_then(|d| now.checked_add(d).ok());
            cred.lease = Some(LeaseHandle(
                serde_json::json!({"fake": ::uuid::Uuid::new_v4().to_string()}),
            ));
        }
        Ok(cred)
    }

    async fn revoke(&self, handle: &LeaseHandle) -> Result<bool, BackendError> {
        match handle.0.get("fake") {
            Some(serde_json::Value::String(_)) => Ok(true),
            _ => Err(BackendError::Invalid(
                "lease was not issued by a Fake generator".to_owned(),
            )),
        }
    }
}
