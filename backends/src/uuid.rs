//! `UUID`: a random (version 4) UUID under the key `uuid`. Nothing to revoke.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{BackendError, Context, Credential, Generate};

/// `spec` of a `UUID` generator: it has no fields.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "UUID",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(deny_unknown_fields)]
pub struct UuidSpec {}

/// The built `UUID` generator.
#[derive(Debug, Clone, Copy)]
pub struct UuidGenerator;

impl Generate for UuidGenerator {
    async fn generate(&self, _ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let value = ::uuid::Uuid::new_v4().hyphenated().to_string();
        Ok(Credential::static_data(BTreeMap::from([(
            "uuid".to_owned(),
            value,
        )])))
    }
}
