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

//!
//! | feature | SecretStore provider | generator kinds |
//! |---|---|---|
//! | (always) | — | `Password`, `UUID`, `Fake`, `IdentityToken` (signed by the federation's own issuer, [`identity`]) |
//! | `vault` | `vault` | `VaultDynamicSecret`, `VaultStaticSecret` |
//! | `aws` | `aws` | `AWSAssumeRole`, `STSSessionToken` |
//! | `ecr` | `aws` | `ECRAuthorizationToken` |
//! | `secretsmanager` | `aws` | `SecretsManagerSecret` |
//! | `ssm` | `aws` | `SSMParameter` |
//! | `rds` | `aws` | `RDSAuthToken` |
//! | `eks` | `aws` | `EKSToken` |
//! | `gcp` | `gcp` | `GCPAccessToken`, `GCPIdentityToken`, `GCPSecretManagerSecret` |
//! | `gcr` | `gcp` | `GCRAccessToken` |
//! | `webhook` | `webhook` | `Webhook` |
//! | `github` | `github` | `GithubAccessToken` |
//! | `grafana` | `grafana` | `Grafana` |
//! | `azure` | `azure` | — (the store and its Entra ID token, for the two below) |
//! | `acr` | `azure` | `ACRAccessToken` |
//! | `keyvault` | `azure` | `AzureKeyVaultSecret` |
//! | `sshkey` | `ssh` (a CA key) | `SSHKey`; `SSHCertificate` (a key pair with a user certificate the store's CA signs) |
//! | `mfa` | — | `MFA` |
//! | `quay` | — | `QuayAccessToken` (exchanges an identity token of the federation's issuer at Quay's robot federation) |
//! | `cloudsmith` | — | `CloudsmithAccessToken` (exchanges an identity token of the federation's issuer at Cloudsmith's OpenID Connect endpoint) |
//! | `azuretoken` | — | `AzureAccessToken` (presents an identity token of the federation's issuer to Entra ID as an app's federated credential) |
//! | `k8s` | `kubernetes` | `KubernetesServiceAccountToken` (a TokenRequest at another cluster's API server), `KubernetesSecret` (a Secret read there) |
//!
//! Failures are classified once into [`BackendError::Unavailable`] (unreachable, slow, 5xx,
//! throttled, or the federation's own credential not accepted — HTTP 401 or its SDK
//! equivalent, a credential re-read or refreshed before the next attempt: retryable) and
//! [`BackendError::Rejected`] (the backend refused: bad parameters, nothing there, or a
//! permission it denies to the federation's accepted credential — HTTP 403, AWS
//! `AccessDenied` — which only the operator can grant, so the caller fails at once, as for the
//! federation's own `policy_denied`, instead of retrying until its deadline); their
//! `message` is safe for the caller, their `detail` is for the log and never holds a secret.
//! The SDKs log no bodies at the levels the federation enables; [`QUIET_LOG_DIRECTIVES`]
//! keeps their chatter out of the logs altogether.

mod choice;
pub mod duration;
pub mod fake;
pub mod identity;
pub mod identity_token;
pub mod password;
pub mod secret;
pub mod status;
pub mod store;
pub mod template;
pub mod uuid;

#[cfg(feature = "acr")]
pub mod acr_access_token;
#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "aws")]
pub mod aws_assume_role;
#[cfg(any(feature = "rds", feature = "eks"))]
mod aws_presign;
#[cfg(feature = "azure")]
pub mod azure;
#[cfg(feature = "azuretoken")]
pub mod azure_access_token;
#[cfg(feature = "keyvault")]
pub mod azure_key_vault_secret;
#[cfg(feature = "cloudsmith")]
pub mod cloudsmith_access_token;
#[cfg(feature = "ecr")]
pub mod ecr_authorization_token;
#[cfg(feature = "eks")]
pub mod eks_token;
#[cfg(feature = "gcp")]
pub mod gcp;
#[cfg(feature = "gcp")]
pub mod gcp_access_token;
#[cfg(feature = "gcp")]
pub mod gcp_identity_token;
#[cfg(feature = "gcp")]
pub mod gcp_secret_manager_secret;
#[cfg(feature = "gcr")]
pub mod gcr_access_token;
#[cfg(feature = "github")]
pub mod github;
#[cfg(feature = "grafana")]
pub mod grafana;
#[cfg(feature = "http-client")]
pub mod http;
#[cfg(feature = "k8s")]
pub mod kubernetes_secret;
#[cfg(feature = "k8s")]
pub mod kubernetes_token;
#[cfg(feature = "mfa")]
pub mod mfa;
#[cfg(feature = "quay")]
pub mod quay_access_token;
#[cfg(feature = "rds")]
pub mod rds_auth_token;
#[cfg(feature = "secretsmanager")]
pub mod secrets_manager_secret;
#[cfg(feature = "sshkey")]
pub mod ssh_certificate;
#[cfg(feature = "sshkey")]
pub mod ssh_key;
#[cfg(feature = "ssm")]
pub mod ssm_parameter;
#[cfg(feature = "aws")]
pub mod sts_session_token;
#[cfg(any(feature = "quay", feature = "cloudsmith", feature = "azuretoken"))]
mod token_exchange;
#[cfg(feature = "vault")]
pub mod vault;
#[cfg(feature = "vault")]
pub mod vault_dynamic_secret;
#[cfg(feature = "vault")]
pub mod vault_static_secret;
#[cfg(feature = "webhook")]
pub mod webhook;

mod credential;
mod error;
mod spec;

pub use credential::{Credential, LeaseHandle};
pub use error::{BackendError, SpecError, error_chain};
pub use secret::SecretRef;
pub use spec::{GeneratorKind, GeneratorSpec, deserialize_tracked};
pub use store::{LoginCheck, SecretStoreRef, SecretStoreSpec, StoreProvider};

/// `tracing` filter directives that silence the backend SDKs below `warn` (append them to
/// the federation's `EnvFilter`): the AWS SDK's wire logging (STS, ECR and Secrets Manager here, Secrets Manager also for the
/// federation's lease keys), hyper, reqwest, rustify and vaultrs. None of them logs bodies at
/// `info`, but `debug`/`trace` would show request metadata we do not want in production logs.
pub const QUIET_LOG_DIRECTIVES: &str = "aws_smithy_runtime=warn,aws_smithy_runtime_api=warn,aws_smithy_http_client=warn,aws_config=warn,aws_sdk_sts=warn,aws_sdk_ecr=warn,aws_sdk_secretsmanager=warn,aws_sdk_ssm=warn,aws_sigv4=warn,hyper=warn,hyper_util=warn,reqwest=warn,rustify=warn,vaultrs=warn,gcp_auth=warn";

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
    /// `IdentityToken`.
    IdentityToken(identity_token::IdentityTokenGenerator),
    /// `VaultDynamicSecret`.
    #[cfg(feature = "vault")]
    VaultDynamicSecret(Box<vault_dynamic_secret::VaultDynamicSecretGenerator>),
    /// `VaultStaticSecret`.
    #[cfg(feature = "vault")]
    VaultStaticSecret(Box<vault_static_secret::VaultStaticSecretGenerator>),
    /// `AWSAssumeRole`.
    #[cfg(feature = "aws")]
    AwsAssumeRole(Box<aws_assume_role::AwsAssumeRoleGenerator>),
    /// `STSSessionToken`.
    #[cfg(feature = "aws")]
    StsSessionToken(Box<sts_session_token::StsSessionTokenGenerator>),
    /// `ECRAuthorizationToken`.
    #[cfg(feature = "ecr")]
    EcrAuthorizationToken(Box<ecr_authorization_token::EcrAuthorizationTokenGenerator>),
    /// `SecretsManagerSecret`.
    #[cfg(feature = "secretsmanager")]
    SecretsManagerSecret(Box<secrets_manager_secret::SecretsManagerSecretGenerator>),
    /// `SSMParameter`.
    #[cfg(feature = "ssm")]
    SsmParameter(Box<ssm_parameter::SsmParameterGenerator>),
    /// `RDSAuthToken`.
    #[cfg(feature = "rds")]
    RdsAuthToken(Box<rds_auth_token::RdsAuthTokenGenerator>),
    /// `EKSToken`.
    #[cfg(feature = "eks")]
    EksToken(Box<eks_token::EksTokenGenerator>),
    /// `GCPAccessToken`.
    #[cfg(feature = "gcp")]
    GcpAccessToken(Box<gcp_access_token::GcpAccessTokenGenerator>),
    /// `GCPIdentityToken`.
    #[cfg(feature = "gcp")]
    GcpIdentityToken(Box<gcp_identity_token::GcpIdentityTokenGenerator>),
    /// `GCPSecretManagerSecret`.
    #[cfg(feature = "gcp")]
    GcpSecretManagerSecret(Box<gcp_secret_manager_secret::GcpSecretManagerSecretGenerator>),
    /// `GCRAccessToken`.
    #[cfg(feature = "gcr")]
    GcrAccessToken(Box<gcr_access_token::GcrAccessTokenGenerator>),
    /// `Webhook`.
    #[cfg(feature = "webhook")]
    Webhook(Box<webhook::WebhookGenerator>),
    /// `GithubAccessToken`.
    #[cfg(feature = "github")]
    GithubAccessToken(Box<github::GithubAccessTokenGenerator>),
    /// `Grafana`.
    #[cfg(feature = "grafana")]
    Grafana(Box<grafana::GrafanaGenerator>),
    /// `ACRAccessToken`.
    #[cfg(feature = "acr")]
    AcrAccessToken(Box<acr_access_token::AcrAccessTokenGenerator>),
    /// `AzureKeyVaultSecret`.
    #[cfg(feature = "keyvault")]
    AzureKeyVaultSecret(Box<azure_key_vault_secret::AzureKeyVaultSecretGenerator>),
    /// `SSHKey`.
    #[cfg(feature = "sshkey")]
    SshKey(ssh_key::SshKeyGenerator),
    /// `SSHCertificate`.
    #[cfg(feature = "sshkey")]
    SshCertificate(Box<ssh_certificate::SshCertificateGenerator>),
    /// `MFA`.
    #[cfg(feature = "mfa")]
    Mfa(mfa::MfaGenerator),
    /// `QuayAccessToken`.
    #[cfg(feature = "quay")]
    QuayAccessToken(Box<quay_access_token::QuayAccessTokenGenerator>),
    /// `CloudsmithAccessToken`.
    #[cfg(feature = "cloudsmith")]
    CloudsmithAccessToken(Box<cloudsmith_access_token::CloudsmithAccessTokenGenerator>),
    /// `AzureAccessToken`.
    #[cfg(feature = "azuretoken")]
    AzureAccessToken(Box<azure_access_token::AzureAccessTokenGenerator>),
    /// `KubernetesServiceAccountToken`.
    #[cfg(feature = "k8s")]
    KubernetesServiceAccountToken(Box<kubernetes_token::KubernetesServiceAccountTokenGenerator>),
    /// `KubernetesSecret`.
    #[cfg(feature = "k8s")]
    KubernetesSecret(Box<kubernetes_secret::KubernetesSecretGenerator>),
}

/// What generators share, built once per store rather than once per generator: a Vault
/// store's HTTP client, login and token renewal; an AWS store's SDK configuration and
/// credentials; a GCP store's HTTP client and token source; an Azure store's HTTP client and
/// Entra ID tokens (one per scope: ACR's, Key Vault's). Build a configuration's generators
/// with one `Shared` ([`Generator::build_shared`]); keep it across reloads and an unchanged store
/// keeps its connection and login (a single-use AppRole secret id logs in once, not once per
/// reload), while a store no configuration uses any more is let go with its last generator.
///
/// It also carries the federation's own OIDC issuer ([`Shared::with_issuer`]) to the
/// generators that sign with it.
#[derive(Debug, Default)]
pub struct Shared {
    issuer: IssuerSlot,
    #[cfg(feature = "vault")]
    vault: store::Conns<vault::VaultConn>,
    #[cfg(feature = "aws")]
    aws: store::Conns<aws::StsConn>,
    #[cfg(feature = "gcp")]
    gcp: store::Conns<gcp::GcpConn>,
    #[cfg(feature = "github")]
    github: store::Conns<github::GithubConn>,
    #[cfg(feature = "grafana")]
    grafana: store::Conns<grafana::GrafanaConn>,
    #[cfg(any(feature = "acr", feature = "keyvault"))]
    azure: store::Conns<azure::AzureConn>,
    #[cfg(feature = "k8s")]
    kubernetes: store::Conns<kubernetes_token::KubernetesConn>,
}

/// What [`Shared`] knows of the federation's issuer.
#[derive(Debug, Default)]
pub(crate) enum IssuerSlot {
    /// A configuration checked on its own (`esi-federation check`): kinds needing an issuer
    /// build, and would refuse requests.
    #[default]
    Unknown,
    /// A serving federation with no issuer: kinds needing one are configuration errors.
    Absent,
    /// A serving federation's issuer.
    Present(std::sync::Arc<identity::Issuer>),
}

impl Shared {
    /// A `Shared` for a serving federation: `issuer` is its OIDC issuer, or `None` when it has
    /// none, which makes generators that sign with it (`IdentityToken`, `QuayAccessToken`,
    /// `CloudsmithAccessToken`) configuration errors instead of generators that refuse every
    /// request.
    /// [`Shared::default`] is for checking a configuration without the federation's settings:
    /// such generators build.
    #[allow(
        clippy::needless_update,
        reason = "the stores' fields exist only in builds with their features"
    )]
    pub fn with_issuer(issuer: Option<std::sync::Arc<identity::Issuer>>) -> Self {
        Shared {
            issuer: issuer.map_or(IssuerSlot::Absent, IssuerSlot::Present),
            ..Shared::default()
        }
    }

    /// The shared connection to the API server of `store`, the `kubernetes` store a
    /// generator's `reference` names.
    #[cfg(feature = "k8s")]
    fn kubernetes_conn(
        &mut self,
        store: Option<&SecretStoreSpec>,
        reference: &store::SecretStoreRef,
    ) -> Result<std::sync::Arc<kubernetes_token::KubernetesConn>, SpecError> {
        let provider = store::require(store, reference, "kubernetes", |p| match p {
            store::StoreProvider::Kubernetes(k) => Some(k),
            #[allow(unreachable_patterns)]
            _ => None,
        })?;
        let issuer = &self.issuer;
        self.kubernetes.get(provider, |p| {
            kubernetes_token::KubernetesConn::new(p, issuer)
        })
    }

    /// The issuer for a generator of `kind` being built, or the configuration error of its
    /// absence.
    fn issuer_for_build(
        &self,
        kind: &'static str,
    ) -> Result<Option<std::sync::Arc<identity::Issuer>>, SpecError> {
        self.issuer.for_build(kind)
    }
}

impl IssuerSlot {
    /// The issuer for `what` being built (a generator kind, or a store's way of logging in),
    /// or the configuration error of its absence.
    pub(crate) fn for_build(
        &self,
        what: &'static str,
    ) -> Result<Option<std::sync::Arc<identity::Issuer>>, SpecError> {
        match self {
            IssuerSlot::Unknown => Ok(None),
            IssuerSlot::Absent => Err(SpecError::NoIssuer { kind: what }),
            IssuerSlot::Present(i) => Ok(Some(i.clone())),
        }
    }
}

impl Generator {
    /// Builds the generator for a spec. `store` is the SecretStore the spec refers to, when it
    /// refers to one (the loader has checked it exists; `None` for a missing store is
    /// reported as a [`SpecError`] on `secretStoreRef.name`).
    ///
    /// Building does no I/O: backends log in and load SDK configuration lazily on the first
    /// request, so building stays synchronous and a configuration reload never blocks on a
    /// backend. Must be called inside a Tokio runtime only for the `aws` kinds' first use,
    /// not for building.
    pub fn build(spec: &GeneratorSpec, store: Option<&SecretStoreSpec>) -> Result<Self, SpecError> {
        Self::build_shared(spec, store, &mut Shared::default())
    }

    /// [`Generator::build`] for one of many generators of a configuration: generators on the
    /// same store share what `shared` holds for it (see [`Shared`]).
    pub fn build_shared(
        spec: &GeneratorSpec,
        store: Option<&SecretStoreSpec>,
        shared: &mut Shared,
    ) -> Result<Self, SpecError> {
        let _ = (&store, &shared);
        Ok(match spec {
            GeneratorSpec::Password(s) => {
                Generator::Password(password::PasswordGenerator::new(s.clone())?)
            }
            GeneratorSpec::Uuid(_) => Generator::Uuid(uuid::UuidGenerator),
            GeneratorSpec::Fake(s) => Generator::Fake(fake::FakeGenerator::new(s.clone())?),
            GeneratorSpec::IdentityToken(s) => {
                Generator::IdentityToken(identity_token::IdentityTokenGenerator::new(
                    s.clone(),
                    shared.issuer_for_build(GeneratorKind::IdentityToken.as_str())?,
                )?)
            }
            #[cfg(feature = "vault")]
            GeneratorSpec::VaultDynamicSecret(s) => Generator::VaultDynamicSecret(Box::new(
                vault_dynamic_secret::VaultDynamicSecretGenerator::new(s.clone(), store, shared)?,
            )),
            #[cfg(feature = "vault")]
            GeneratorSpec::VaultStaticSecret(s) => Generator::VaultStaticSecret(Box::new(
                vault_static_secret::VaultStaticSecretGenerator::new(s.clone(), store, shared)?,
            )),
            #[cfg(feature = "aws")]
            GeneratorSpec::AwsAssumeRole(s) => Generator::AwsAssumeRole(Box::new(
                aws_assume_role::AwsAssumeRoleGenerator::new(s.clone(), store, shared)?,
            )),
            #[cfg(feature = "aws")]
            GeneratorSpec::StsSessionToken(s) => Generator::StsSessionToken(Box::new(
                sts_session_token::StsSessionTokenGenerator::new(s.clone(), store, shared)?,
            )),
            #[cfg(feature = "ecr")]
            GeneratorSpec::EcrAuthorizationToken(s) => Generator::EcrAuthorizationToken(Box::new(
                ecr_authorization_token::EcrAuthorizationTokenGenerator::new(
                    s.clone(),
                    store,
                    shared,
                )?,
            )),
            #[cfg(feature = "secretsmanager")]
            GeneratorSpec::SecretsManagerSecret(s) => Generator::SecretsManagerSecret(Box::new(
                secrets_manager_secret::SecretsManagerSecretGenerator::new(
                    s.clone(),
                    store,
                    shared,
                )?,
            )),
            #[cfg(feature = "ssm")]
            GeneratorSpec::SsmParameter(s) => Generator::SsmParameter(Box::new(
                ssm_parameter::SsmParameterGenerator::new(s.clone(), store, shared)?,
            )),
            #[cfg(feature = "rds")]
            GeneratorSpec::RdsAuthToken(s) => Generator::RdsAuthToken(Box::new(
                rds_auth_token::RdsAuthTokenGenerator::new(s.clone(), store, shared)?,
            )),
            #[cfg(feature = "eks")]
            GeneratorSpec::EksToken(s) => Generator::EksToken(Box::new(
                eks_token::EksTokenGenerator::new(s.clone(), store, shared)?,
            )),
            #[cfg(feature = "gcp")]
            GeneratorSpec::GcpAccessToken(s) => Generator::GcpAccessToken(Box::new(
                gcp_access_token::GcpAccessTokenGenerator::new(s.clone(), store, shared)?,
            )),
            #[cfg(feature = "gcp")]
            GeneratorSpec::GcpIdentityToken(s) => Generator::GcpIdentityToken(Box::new(
                gcp_identity_token::GcpIdentityTokenGenerator::new(s.clone(), store, shared)?,
            )),
            #[cfg(feature = "gcp")]
            GeneratorSpec::GcpSecretManagerSecret(s) => {
                Generator::GcpSecretManagerSecret(Box::new(
                    gcp_secret_manager_secret::GcpSecretManagerSecretGenerator::new(
                        s.clone(),
                        store,
                        shared,
                    )?,
                ))
            }
            #[cfg(feature = "gcr")]
            GeneratorSpec::GcrAccessToken(s) => Generator::GcrAccessToken(Box::new(
                gcr_access_token::GcrAccessTokenGenerator::new(s.clone(), store, shared)?,
            )),
            #[cfg(feature = "webhook")]
            GeneratorSpec::Webhook(s) => {
                Generator::Webhook(Box::new(webhook::WebhookGenerator::new(s.clone(), store)?))
            }
            #[cfg(feature = "github")]
            GeneratorSpec::GithubAccessToken(s) => Generator::GithubAccessToken(Box::new(
                github::GithubAccessTokenGenerator::new(s.clone(), store, &mut shared.github)?,
            )),
            #[cfg(feature = "grafana")]
            GeneratorSpec::Grafana(s) => Generator::Grafana(Box::new(
                grafana::GrafanaGenerator::new(s.clone(), store, &mut shared.grafana)?,
            )),
            #[cfg(feature = "acr")]
            GeneratorSpec::AcrAccessToken(s) => Generator::AcrAccessToken(Box::new(
                acr_access_token::AcrAccessTokenGenerator::new(s.clone(), store, shared)?,
            )),
            #[cfg(feature = "keyvault")]
            GeneratorSpec::AzureKeyVaultSecret(s) => Generator::AzureKeyVaultSecret(Box::new(
                azure_key_vault_secret::AzureKeyVaultSecretGenerator::new(
                    s.clone(),
                    store,
                    shared,
                )?,
            )),
            #[cfg(feature = "sshkey")]
            GeneratorSpec::SshKey(s) => Generator::SshKey(ssh_key::SshKeyGenerator::new(s)?),
            #[cfg(feature = "sshkey")]
            GeneratorSpec::SshCertificate(s) => Generator::SshCertificate(Box::new(
                ssh_certificate::SshCertificateGenerator::new(s, store)?,
            )),
            #[cfg(feature = "mfa")]
            GeneratorSpec::Mfa(s) => Generator::Mfa(mfa::MfaGenerator::new(s.clone())?),
            #[cfg(feature = "quay")]
            GeneratorSpec::QuayAccessToken(s) => Generator::QuayAccessToken(Box::new(
                quay_access_token::QuayAccessTokenGenerator::new(
                    s.clone(),
                    shared.issuer_for_build(spec.kind().as_str())?,
                )?,
            )),
            #[cfg(feature = "cloudsmith")]
            GeneratorSpec::CloudsmithAccessToken(s) => Generator::CloudsmithAccessToken(Box::new(
                cloudsmith_access_token::CloudsmithAccessTokenGenerator::new(
                    s.clone(),
                    shared.issuer_for_build(spec.kind().as_str())?,
                )?,
            )),
            #[cfg(feature = "azuretoken")]
            GeneratorSpec::AzureAccessToken(s) => Generator::AzureAccessToken(Box::new(
                azure_access_token::AzureAccessTokenGenerator::new(
                    s.clone(),
                    shared.issuer_for_build(spec.kind().as_str())?,
                )?,
            )),
            #[cfg(feature = "k8s")]
            GeneratorSpec::KubernetesServiceAccountToken(s) => {
                Generator::KubernetesServiceAccountToken(Box::new(
                    kubernetes_token::KubernetesServiceAccountTokenGenerator::new(
                        s.clone(),
                        store,
                        shared,
                    )?,
                ))
            }
            #[cfg(feature = "k8s")]
            GeneratorSpec::KubernetesSecret(s) => Generator::KubernetesSecret(Box::new(
                kubernetes_secret::KubernetesSecretGenerator::new(s.clone(), store, shared)?,
            )),
        })
    }
}

/// Network backends' futures are boxed: an SDK call's state machine runs to tens of KB, and
/// inlined in this enum's future it would be moved with every local mint (Password, UUID, Fake)
/// too. One allocation per network round trip costs nothing next to the round trip.
impl Generate for Generator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        match self {
            Generator::Password(g) => g.generate(ctx).await,
            Generator::Uuid(g) => g.generate(ctx).await,
            Generator::Fake(g) => g.generate(ctx).await,
            Generator::IdentityToken(g) => g.generate(ctx).await,
            #[cfg(feature = "vault")]
            Generator::VaultDynamicSecret(g) => Box::pin(g.generate(ctx)).await,
            #[cfg(feature = "vault")]
            Generator::VaultStaticSecret(g) => Box::pin(g.generate(ctx)).await,
            #[cfg(feature = "aws")]
            Generator::AwsAssumeRole(g) => Box::pin(g.generate(ctx)).await,
            #[cfg(feature = "aws")]
            Generator::StsSessionToken(g) => Box::pin(g.generate(ctx)).await,
            #[cfg(feature = "ecr")]
            Generator::EcrAuthorizationToken(g) => Box::pin(g.generate(ctx)).await,
            #[cfg(feature = "secretsmanager")]
            Generator::SecretsManagerSecret(g) => Box::pin(g.generate(ctx)).await,
            #[cfg(feature = "ssm")]
            Generator::SsmParameter(g) => Box::pin(g.generate(ctx)).await,
            #[cfg(feature = "rds")]
            Generator::RdsAuthToken(g) => Box::pin(g.generate(ctx)).await,
            #[cfg(feature = "eks")]
            Generator::EksToken(g) => Box::pin(g.generate(ctx)).await,
            #[cfg(feature = "gcp")]
            Generator::GcpAccessToken(g) => Box::pin(g.generate(ctx)).await,
            #[cfg(feature = "gcp")]
            Generator::GcpIdentityToken(g) => Box::pin(g.generate(ctx)).await,
            #[cfg(feature = "gcp")]
            Generator::GcpSecretManagerSecret(g) => Box::pin(g.generate(ctx)).await,
            #[cfg(feature = "gcr")]
            Generator::GcrAccessToken(g) => Box::pin(g.generate(ctx)).await,
            #[cfg(feature = "webhook")]
            Generator::Webhook(g) => Box::pin(g.generate(ctx)).await,
            #[cfg(feature = "github")]
            Generator::GithubAccessToken(g) => Box::pin(g.generate(ctx)).await,
            #[cfg(feature = "grafana")]
            Generator::Grafana(g) => Box::pin(g.generate(ctx)).await,
            #[cfg(feature = "acr")]
            Generator::AcrAccessToken(g) => Box::pin(g.generate(ctx)).await,
            #[cfg(feature = "keyvault")]
            Generator::AzureKeyVaultSecret(g) => Box::pin(g.generate(ctx)).await,
            #[cfg(feature = "sshkey")]
            Generator::SshKey(g) => g.generate(ctx).await,
            #[cfg(feature = "sshkey")]
            Generator::SshCertificate(g) => g.generate(ctx).await,
            #[cfg(feature = "mfa")]
            Generator::Mfa(g) => g.generate(ctx).await,
            #[cfg(feature = "quay")]
            Generator::QuayAccessToken(g) => Box::pin(g.generate(ctx)).await,
            #[cfg(feature = "cloudsmith")]
            Generator::CloudsmithAccessToken(g) => Box::pin(g.generate(ctx)).await,
            #[cfg(feature = "azuretoken")]
            Generator::AzureAccessToken(g) => Box::pin(g.generate(ctx)).await,
            #[cfg(feature = "k8s")]
            Generator::KubernetesServiceAccountToken(g) => Box::pin(g.generate(ctx)).await,
            #[cfg(feature = "k8s")]
            Generator::KubernetesSecret(g) => Box::pin(g.generate(ctx)).await,
        }
    }

    async fn revoke(&self, handle: &LeaseHandle) -> Result<bool, BackendError> {
        match self {
            Generator::Password(g) => g.revoke(handle).await,
            Generator::Uuid(g) => g.revoke(handle).await,
            Generator::Fake(g) => g.revoke(handle).await,
            Generator::IdentityToken(g) => g.revoke(handle).await,
            #[cfg(feature = "vault")]
            Generator::VaultDynamicSecret(g) => Box::pin(g.revoke(handle)).await,
            #[cfg(feature = "vault")]
            Generator::VaultStaticSecret(g) => Box::pin(g.revoke(handle)).await,
            #[cfg(feature = "aws")]
            Generator::AwsAssumeRole(g) => Box::pin(g.revoke(handle)).await,
            #[cfg(feature = "aws")]
            Generator::StsSessionToken(g) => Box::pin(g.revoke(handle)).await,
            #[cfg(feature = "ecr")]
            Generator::EcrAuthorizationToken(g) => Box::pin(g.revoke(handle)).await,
            #[cfg(feature = "secretsmanager")]
            Generator::SecretsManagerSecret(g) => Box::pin(g.revoke(handle)).await,
            #[cfg(feature = "ssm")]
            Generator::SsmParameter(g) => Box::pin(g.revoke(handle)).await,
            #[cfg(feature = "rds")]
            Generator::RdsAuthToken(g) => Box::pin(g.revoke(handle)).await,
            #[cfg(feature = "eks")]
            Generator::EksToken(g) => Box::pin(g.revoke(handle)).await,
            #[cfg(feature = "gcp")]
            Generator::GcpAccessToken(g) => Box::pin(g.revoke(handle)).await,
            #[cfg(feature = "gcp")]
            Generator::GcpIdentityToken(g) => Box::pin(g.revoke(handle)).await,
            #[cfg(feature = "gcp")]
            Generator::GcpSecretManagerSecret(g) => Box::pin(g.revoke(handle)).await,
            #[cfg(feature = "gcr")]
            Generator::GcrAccessToken(g) => Box::pin(g.revoke(handle)).await,
            #[cfg(feature = "webhook")]
            Generator::Webhook(g) => Box::pin(g.revoke(handle)).await,
            #[cfg(feature = "github")]
            Generator::GithubAccessToken(g) => Box::pin(g.revoke(handle)).await,
            #[cfg(feature = "grafana")]
            Generator::Grafana(g) => Box::pin(g.revoke(handle)).await,
            #[cfg(feature = "acr")]
            Generator::AcrAccessToken(g) => Box::pin(g.revoke(handle)).await,
            #[cfg(feature = "keyvault")]
            Generator::AzureKeyVaultSecret(g) => Box::pin(g.revoke(handle)).await,
            #[cfg(feature = "sshkey")]
            Generator::SshKey(g) => g.revoke(handle).await,
            #[cfg(feature = "sshkey")]
            Generator::SshCertificate(g) => g.revoke(handle).await,
            #[cfg(feature = "mfa")]
            Generator::Mfa(g) => g.revoke(handle).await,
            #[cfg(feature = "quay")]
            Generator::QuayAccessToken(g) => g.revoke(handle).await,
            #[cfg(feature = "cloudsmith")]
            Generator::CloudsmithAccessToken(g) => g.revoke(handle).await,
            #[cfg(feature = "azuretoken")]
            Generator::AzureAccessToken(g) => g.revoke(handle).await,
            #[cfg(feature = "k8s")]
            Generator::KubernetesServiceAccountToken(g) => Box::pin(g.revoke(handle)).await,
            #[cfg(feature = "k8s")]
            Generator::KubernetesSecret(g) => g.revoke(handle).await,
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
        identity_token::IdentityToken::crd(),
        #[cfg(feature = "vault")]
        vault_dynamic_secret::VaultDynamicSecret::crd(),
        #[cfg(feature = "vault")]
        vault_static_secret::VaultStaticSecret::crd(),
        #[cfg(feature = "aws")]
        aws_assume_role::AWSAssumeRole::crd(),
        #[cfg(feature = "aws")]
        sts_session_token::STSSessionToken::crd(),
        #[cfg(feature = "ecr")]
        ecr_authorization_token::ECRAuthorizationToken::crd(),
        #[cfg(feature = "secretsmanager")]
        secrets_manager_secret::SecretsManagerSecret::crd(),
        #[cfg(feature = "ssm")]
        ssm_parameter::SSMParameter::crd(),
        #[cfg(feature = "rds")]
        rds_auth_token::RDSAuthToken::crd(),
        #[cfg(feature = "eks")]
        eks_token::EKSToken::crd(),
        #[cfg(feature = "gcp")]
        gcp_access_token::GCPAccessToken::crd(),
        #[cfg(feature = "gcp")]
        gcp_identity_token::GCPIdentityToken::crd(),
        #[cfg(feature = "gcp")]
        gcp_secret_manager_secret::GCPSecretManagerSecret::crd(),
        #[cfg(feature = "gcr")]
        gcr_access_token::GCRAccessToken::crd(),
        #[cfg(feature = "webhook")]
        webhook::Webhook::crd(),
        #[cfg(feature = "github")]
        github::GithubAccessToken::crd(),
        #[cfg(feature = "grafana")]
        grafana::Grafana::crd(),
        #[cfg(feature = "acr")]
        acr_access_token::ACRAccessToken::crd(),
        #[cfg(feature = "keyvault")]
        azure_key_vault_secret::AzureKeyVaultSecret::crd(),
        #[cfg(feature = "sshkey")]
        ssh_key::SSHKey::crd(),
        #[cfg(feature = "sshkey")]
        ssh_certificate::SSHCertificate::crd(),
        #[cfg(feature = "mfa")]
        mfa::MFA::crd(),
        #[cfg(feature = "quay")]
        quay_access_token::QuayAccessToken::crd(),
        #[cfg(feature = "cloudsmith")]
        cloudsmith_access_token::CloudsmithAccessToken::crd(),
        #[cfg(feature = "azuretoken")]
        azure_access_token::AzureAccessToken::crd(),
        #[cfg(feature = "k8s")]
        kubernetes_token::KubernetesServiceAccountToken::crd(),
        #[cfg(feature = "k8s")]
        kubernetes_secret::KubernetesSecret::crd(),
    ]
}

/// Whether `s` is a host name: labels of 1 to 63 letters, digits and `-` (not at either end),
/// dot-separated, at most 253 characters.
#[cfg(any(feature = "azure", feature = "rds", feature = "eks"))]
pub(crate) fn is_host_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_back_and_has_a_crd() {
        let crds = crds();
        for k in GeneratorKind::ALL {
            assert_eq!(GeneratorKind::parse(k.as_str()), Some(*k));
            assert!(
                crds.iter().any(|c| c.spec.names.kind == k.as_str()),
                "no CRD for {k}"
            );
        }
        assert!(crds.iter().any(|c| c.spec.names.kind == "SecretStore"));
        assert_eq!(crds.len(), GeneratorKind::ALL.len() + 1);
    }

    #[test]
    fn an_identity_token_needs_an_issuer_only_on_a_serving_federation() {
        use secrecy::ExposeSecret as _;
        let spec = GeneratorSpec::IdentityToken(identity_token::IdentityTokenSpec {
            audiences: vec!["sts.amazonaws.com".to_owned()],
            expiration: None,
            aws_session_tags: false,
        });
        // A configuration checked on its own builds.
        assert!(Generator::build_shared(&spec, None, &mut Shared::default()).is_ok());
        // A serving federation without an issuer: refused, naming the kind and the fix.
        let err = Generator::build_shared(&spec, None, &mut Shared::with_issuer(None))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("IdentityToken signs tokens with the federation's own OIDC issuer")
                && err.contains("start it with --issuer-url"),
            "{err}"
        );
        let pem = identity::generate_key_pem(identity::KeyAlgorithm::Es256).unwrap();
        let issuer = identity::Issuer::new("https://esi.example.com", pem.expose_secret()).unwrap();
        let mut shared = Shared::with_issuer(Some(std::sync::Arc::new(issuer)));
        assert!(Generator::build_shared(&spec, None, &mut shared).is_ok());
    }

    /// The enum's mint future stays small whatever backends are compiled in: a local mint
    /// must not move an SDK's state machine around (it showed up as memcpy in profiles).
    #[test]
    fn local_mints_do_not_carry_network_futures() {
        let g = Generator::build(
            &GeneratorSpec::Password(password::PasswordSpec::default()),
            None,
        )
        .unwrap();
        let id = template::tests::identity();
        let ctx = Context {
            identity: &id,
            generator: "payments/Password/db",
            max_ttl: None,
        };
        let mint = g.generate(&ctx);
        let size = std::mem::size_of_val(&mint);
        assert!(size <= 1024, "Generator::generate's future is {size} bytes");
        let handle = LeaseHandle(serde_json::Value::Null);
        let size = std::mem::size_of_val(&g.revoke(&handle));
        assert!(size <= 1024, "Generator::revoke's future is {size} bytes");
    }
}
