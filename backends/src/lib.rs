//! The esi generators: what mints a credential once the federation has verified the caller
//! and checked the Authorization.
//!
//! The pattern follows vector's secret backends and Vault's secrets engines:
//!
//! - one trait, [`Generate`], implemented by every generator;
//! - one config enum, [`GeneratorSpec`], tagged by the manifest's `kind`, whose variants are
//!   the `spec` structs (each `deny_unknown_fields`, each a Kubernetes `CustomResource` so the
//!   CRD and the file format come from the same type);
//! - one module per kind, named after it; heavy backends sit behind a cargo feature guarding
//!   both the module and the variant;
//! - a cheap, cloneable spec apart from the built [`Generator`] that owns clients, built once
//!   per configuration snapshot and dispatched with a plain `match`.
//!
//! Every generator returns a [`Credential`]: the string map, the expiry as reported by the
//! backend, and, when it can be revoked, a [`LeaseHandle`] the federation seals into the
//! envelope's `lease`.

pub mod fake;
pub mod password;
pub mod store;
pub mod uuid;

mod credential;
mod error;
mod spec;

pub use credential::{Credential, LeaseHandle};
pub use error::{BackendError, SpecError};
pub use spec::{GeneratorKind, GeneratorSpec};
pub use store::{SecretStoreSpec, StoreProvider};

use std::future::Future;
use std::time::Duration;

use esi_api::Identity;

/// What a generator is told about the request it serves.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The verified caller.
    pub identity: &'a Identity,
    /// The `namespace/kind/name` of the generator, for logs and templates.
    pub generator: &'a str,
    /// The longest lifetime the matching Authorization allows; generators that can choose a
    /// TTL ask for no more than this.
    pub max_ttl: Option<Duration>,
}

/// The one trait every generator implements.
pub trait Generate {
    /// Mints a fresh credential.
    fn generate(
        &self,
        ctx: &Context<'_>,
    ) -> impl Future<Output = Result<Credential, BackendError>> + Send;

    /// Revokes a credential minted earlier, named by the handle [`Generate::generate`]
    /// returned. Returns `Ok(false)` when the generator has nothing to revoke.
    fn revoke(
        &self,
        _handle: &LeaseHandle,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send {
        async { Ok(false) }
    }
}

/// A generator built from its spec, ready to serve requests.
///
/// Built once per configuration snapshot; owns whatever clients its backend needs.
#[derive(Debug)]
pub enum Generator {
    /// `Password`.
    Password(password::PasswordGenerator),
    /// `UUID`.
    Uuid(uuid::UuidGenerator),
    /// `Fake`.
    Fake(fake::FakeGenerator),
}

impl Generator {
    /// Builds the generator for a spec. `store` is the SecretStore the spec refers to, when it
    /// refers to one (the loader has checked it exists).
    pub fn build(
        spec: &GeneratorSpec,
        _store: Option<&SecretStoreSpec>,
    ) -> Result<Self, SpecError> {
        Ok(match spec {
            GeneratorSpec::Password(s) => {
                Generator::Password(password::PasswordGenerator::new(s.clone())?)
            }
            GeneratorSpec::Uuid(_) => Generator::Uuid(uuid::UuidGenerator),
            GeneratorSpec::Fake(s) => Generator::Fake(fake::FakeGenerator::new(s.clone())?),
        })
    }
}

impl Generate for Generator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        match self {
            Generator::Password(g) => g.generate(ctx).await,
            Generator::Uuid(g) => g.generate(ctx).await,
            Generator::Fake(g) => g.generate(ctx).await,
        }
    }

    async fn revoke(&self, handle: &LeaseHandle) -> Result<bool, BackendError> {
        match self {
            Generator::Password(g) => g.revoke(handle).await,
            Generator::Uuid(g) => g.revoke(handle).await,
            Generator::Fake(g) => g.revoke(handle).await,
        }
    }
}

/// The CustomResourceDefinitions of every generator kind and of `SecretStore`, generated from
/// the spec types (the same types the file loader reads), for `deploy/crds`.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![
        store::SecretStore::crd(),
        password::Password::crd(),
        uuid::UUID::crd(),
        fake::Fake::crd(),
    ]
}
