//! The generator config enum, tagged by the manifest's `kind`.

use std::fmt;

use crate::{SpecError, fake, identity_token, password, uuid};

/// Every generator kind this build knows, in manifest spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GeneratorKind {
    /// `Password`.
    Password,
    /// `UUID`.
    Uuid,
    /// `Fake`.
    Fake,
    /// `IdentityToken`.
    IdentityToken,
    /// `VaultDynamicSecret`.
    #[cfg(feature = "vault")]
    VaultDynamicSecret,
    /// `VaultStaticSecret`.
    #[cfg(feature = "vault")]
    VaultStaticSecret,
    /// `AWSAssumeRole`.
    #[cfg(feature = "aws")]
    AwsAssumeRole,
    /// `STSSessionToken`.
    #[cfg(feature = "aws")]
    StsSessionToken,
    /// `ECRAuthorizationToken`.
    #[cfg(feature = "ecr")]
    EcrAuthorizationToken,
    /// `SecretsManagerSecret`.
    #[cfg(feature = "secretsmanager")]
    SecretsManagerSecret,
    /// `SSMParameter`.
    #[cfg(feature = "ssm")]
    SsmParameter,
    /// `RDSAuthToken`.
    #[cfg(feature = "rds")]
    RdsAuthToken,
    /// `EKSToken`.
    #[cfg(feature = "eks")]
    EksToken,
    /// `GCPAccessToken`.
    #[cfg(feature = "gcp")]
    GcpAccessToken,
    /// `GCPIdentityToken`.
    #[cfg(feature = "gcp")]
    GcpIdentityToken,
    /// `GCPSecretManagerSecret`.
    #[cfg(feature = "gcp")]
    GcpSecretManagerSecret,
    /// `GCRAccessToken`.
    #[cfg(feature = "gcr")]
    GcrAccessToken,
    /// `Webhook`.
    #[cfg(feature = "webhook")]
    Webhook,
    /// `GithubAccessToken`.
    #[cfg(feature = "github")]
    GithubAccessToken,
    /// `Grafana`.
    #[cfg(feature = "grafana")]
    Grafana,
    /// `ACRAccessToken`.
    #[cfg(feature = "acr")]
    AcrAccessToken,
    /// `AzureKeyVaultSecret`.
    #[cfg(feature = "keyvault")]
    AzureKeyVaultSecret,
    /// `AzureAccessToken`.
    #[cfg(feature = "azuretoken")]
    AzureAccessToken,
    /// `KubernetesServiceAccountToken`.
    #[cfg(feature = "k8s")]
    KubernetesServiceAccountToken,
    /// `KubernetesSecret`.
    #[cfg(feature = "k8s")]
    KubernetesSecret,
    /// `SSHKey`.
    #[cfg(feature = "sshkey")]
    SshKey,
    /// `SSHCertificate`.
    #[cfg(feature = "sshkey")]
    SshCertificate,
    /// `MFA`.
    #[cfg(feature = "mfa")]
    Mfa,
    /// `QuayAccessToken`.
    #[cfg(feature = "quay")]
    QuayAccessToken,
    /// `CloudsmithAccessToken`.
    #[cfg(feature = "cloudsmith")]
    CloudsmithAccessToken,
}

impl GeneratorKind {
    /// All kinds compiled into this build.
    pub const ALL: &'static [GeneratorKind] = &[
        GeneratorKind::Password,
        GeneratorKind::Uuid,
        GeneratorKind::Fake,
        GeneratorKind::IdentityToken,
        #[cfg(feature = "vault")]
        GeneratorKind::VaultDynamicSecret,
        #[cfg(feature = "vault")]
        GeneratorKind::VaultStaticSecret,
        #[cfg(feature = "aws")]
        GeneratorKind::AwsAssumeRole,
        #[cfg(feature = "aws")]
        GeneratorKind::StsSessionToken,
        #[cfg(feature = "ecr")]
        GeneratorKind::EcrAuthorizationToken,
        #[cfg(feature = "secretsmanager")]
        GeneratorKind::SecretsManagerSecret,
        #[cfg(feature = "ssm")]
        GeneratorKind::SsmParameter,
        #[cfg(feature = "rds")]
        GeneratorKind::RdsAuthToken,
        #[cfg(feature = "eks")]
        GeneratorKind::EksToken,
        #[cfg(feature = "gcp")]
        GeneratorKind::GcpAccessToken,
        #[cfg(feature = "gcp")]
        GeneratorKind::GcpIdentityToken,
        #[cfg(feature = "gcp")]
        GeneratorKind::GcpSecretManagerSecret,
        #[cfg(feature = "gcr")]
        GeneratorKind::GcrAccessToken,
        #[cfg(feature = "webhook")]
        GeneratorKind::Webhook,
        #[cfg(feature = "github")]
        GeneratorKind::GithubAccessToken,
        #[cfg(feature = "grafana")]
        GeneratorKind::Grafana,
        #[cfg(feature = "acr")]
        GeneratorKind::AcrAccessToken,
        #[cfg(feature = "keyvault")]
        GeneratorKind::AzureKeyVaultSecret,
        #[cfg(feature = "azuretoken")]
        GeneratorKind::AzureAccessToken,
        #[cfg(feature = "k8s")]
        GeneratorKind::KubernetesServiceAccountToken,
        #[cfg(feature = "k8s")]
        GeneratorKind::KubernetesSecret,
        #[cfg(feature = "sshkey")]
        GeneratorKind::SshKey,
        #[cfg(feature = "sshkey")]
        GeneratorKind::SshCertificate,
        #[cfg(feature = "mfa")]
        GeneratorKind::Mfa,
        #[cfg(feature = "quay")]
        GeneratorKind::QuayAccessToken,
        #[cfg(feature = "cloudsmith")]
        GeneratorKind::CloudsmithAccessToken,
    ];

    /// The manifest `kind` (and the `{kind}` path segment of the API).
    pub const fn as_str(self) -> &'static str {
        match self {
            GeneratorKind::Password => "Password",
            GeneratorKind::Uuid => "UUID",
            GeneratorKind::Fake => "Fake",
            GeneratorKind::IdentityToken => "IdentityToken",
            #[cfg(feature = "vault")]
            GeneratorKind::VaultDynamicSecret => "VaultDynamicSecret",
            #[cfg(feature = "vault")]
            GeneratorKind::VaultStaticSecret => "VaultStaticSecret",
            #[cfg(feature = "aws")]
            GeneratorKind::AwsAssumeRole => "AWSAssumeRole",
            #[cfg(feature = "aws")]
            GeneratorKind::StsSessionToken => "STSSessionToken",
            #[cfg(feature = "ecr")]
            GeneratorKind::EcrAuthorizationToken => "ECRAuthorizationToken",
            #[cfg(feature = "secretsmanager")]
            GeneratorKind::SecretsManagerSecret => "SecretsManagerSecret",
            #[cfg(feature = "ssm")]
            GeneratorKind::SsmParameter => "SSMParameter",
            #[cfg(feature = "rds")]
            GeneratorKind::RdsAuthToken => "RDSAuthToken",
            #[cfg(feature = "eks")]
            GeneratorKind::EksToken => "EKSToken",
            #[cfg(feature = "gcp")]
            GeneratorKind::GcpAccessToken => "GCPAccessToken",
            #[cfg(feature = "gcp")]
            GeneratorKind::GcpIdentityToken => "GCPIdentityToken",
            #[cfg(feature = "gcp")]
            GeneratorKind::GcpSecretManagerSecret => "GCPSecretManagerSecret",
            #[cfg(feature = "gcr")]
            GeneratorKind::GcrAccessToken => "GCRAccessToken",
            #[cfg(feature = "webhook")]
            GeneratorKind::Webhook => "Webhook",
            #[cfg(feature = "github")]
            GeneratorKind::GithubAccessToken => "GithubAccessToken",
            #[cfg(feature = "grafana")]
            GeneratorKind::Grafana => "Grafana",
            #[cfg(feature = "acr")]
            GeneratorKind::AcrAccessToken => "ACRAccessToken",
            #[cfg(feature = "keyvault")]
            GeneratorKind::AzureKeyVaultSecret => "AzureKeyVaultSecret",
            #[cfg(feature = "azuretoken")]
            GeneratorKind::AzureAccessToken => "AzureAccessToken",
            #[cfg(feature = "k8s")]
            GeneratorKind::KubernetesServiceAccountToken => "KubernetesServiceAccountToken",
            #[cfg(feature = "k8s")]
            GeneratorKind::KubernetesSecret => "KubernetesSecret",
            #[cfg(feature = "sshkey")]
            GeneratorKind::SshKey => "SSHKey",
            #[cfg(feature = "sshkey")]
            GeneratorKind::SshCertificate => "SSHCertificate",
            #[cfg(feature = "mfa")]
            GeneratorKind::Mfa => "MFA",
            #[cfg(feature = "quay")]
            GeneratorKind::QuayAccessToken => "QuayAccessToken",
            #[cfg(feature = "cloudsmith")]
            GeneratorKind::CloudsmithAccessToken => "CloudsmithAccessToken",
        }
    }

    /// Parses a manifest kind; `None` for anything that is not a generator.
    pub fn parse(kind: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == kind)
    }

    /// Comma-separated list of the known kinds, for error messages.
    pub fn known() -> String {
        Self::ALL
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for GeneratorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `spec` of a generator resource, one variant per kind.
#[derive(Clone, Debug, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "read once per configuration load; the variants' sizes differ most in builds with few kinds"
)]
pub enum GeneratorSpec {
    /// `kind: Password`.
    Password(password::PasswordSpec),
    /// `kind: UUID`.
    Uuid(uuid::UuidSpec),
    /// `kind: Fake`.
    Fake(fake::FakeSpec),
    /// `kind: IdentityToken`.
    IdentityToken(identity_token::IdentityTokenSpec),
    /// `kind: VaultDynamicSecret`.
    #[cfg(feature = "vault")]
    VaultDynamicSecret(crate::vault_dynamic_secret::VaultDynamicSecretSpec),
    /// `kind: VaultStaticSecret`.
    #[cfg(feature = "vault")]
    VaultStaticSecret(crate::vault_static_secret::VaultStaticSecretSpec),
    /// `kind: AWSAssumeRole`.
    #[cfg(feature = "aws")]
    AwsAssumeRole(crate::aws_assume_role::AwsAssumeRoleSpec),
    /// `kind: STSSessionToken`.
    #[cfg(feature = "aws")]
    StsSessionToken(crate::sts_session_token::StsSessionTokenSpec),
    /// `kind: ECRAuthorizationToken`.
    #[cfg(feature = "ecr")]
    EcrAuthorizationToken(crate::ecr_authorization_token::EcrAuthorizationTokenSpec),
    /// `kind: SecretsManagerSecret`.
    #[cfg(feature = "secretsmanager")]
    SecretsManagerSecret(crate::secrets_manager_secret::SecretsManagerSecretSpec),
    /// `kind: SSMParameter`.
    #[cfg(feature = "ssm")]
    SsmParameter(crate::ssm_parameter::SsmParameterSpec),
    /// `kind: RDSAuthToken`.
    #[cfg(feature = "rds")]
    RdsAuthToken(crate::rds_auth_token::RdsAuthTokenSpec),
    /// `kind: EKSToken`.
    #[cfg(feature = "eks")]
    EksToken(crate::eks_token::EksTokenSpec),
    /// `kind: GCPAccessToken`.
    #[cfg(feature = "gcp")]
    GcpAccessToken(crate::gcp_access_token::GcpAccessTokenSpec),
    /// `kind: GCPIdentityToken`.
    #[cfg(feature = "gcp")]
    GcpIdentityToken(crate::gcp_identity_token::GcpIdentityTokenSpec),
    /// `kind: GCPSecretManagerSecret`.
    #[cfg(feature = "gcp")]
    GcpSecretManagerSecret(crate::gcp_secret_manager_secret::GcpSecretManagerSecretSpec),
    /// `kind: GCRAccessToken`.
    #[cfg(feature = "gcr")]
    GcrAccessToken(crate::gcr_access_token::GcrAccessTokenSpec),
    /// `kind: Webhook`.
    #[cfg(feature = "webhook")]
    Webhook(crate::webhook::WebhookSpec),
    /// `kind: GithubAccessToken`.
    #[cfg(feature = "github")]
    GithubAccessToken(crate::github::GithubAccessTokenSpec),
    /// `kind: Grafana`.
    #[cfg(feature = "grafana")]
    Grafana(crate::grafana::GrafanaSpec),
    /// `kind: ACRAccessToken`.
    #[cfg(feature = "acr")]
    AcrAccessToken(crate::acr_access_token::AcrAccessTokenSpec),
    /// `kind: AzureKeyVaultSecret`.
    #[cfg(feature = "keyvault")]
    AzureKeyVaultSecret(crate::azure_key_vault_secret::AzureKeyVaultSecretSpec),
    /// `kind: AzureAccessToken`.
    #[cfg(feature = "azuretoken")]
    AzureAccessToken(crate::azure_access_token::AzureAccessTokenSpec),
    /// `kind: KubernetesServiceAccountToken`.
    #[cfg(feature = "k8s")]
    KubernetesServiceAccountToken(crate::kubernetes_token::KubernetesServiceAccountTokenSpec),
    /// `kind: KubernetesSecret`.
    #[cfg(feature = "k8s")]
    KubernetesSecret(crate::kubernetes_secret::KubernetesSecretSpec),
    /// `kind: SSHKey`.
    #[cfg(feature = "sshkey")]
    SshKey(crate::ssh_key::SshKeySpec),
    /// `kind: SSHCertificate`.
    #[cfg(feature = "sshkey")]
    SshCertificate(crate::ssh_certificate::SshCertificateSpec),
    /// `kind: MFA`.
    #[cfg(feature = "mfa")]
    Mfa(crate::mfa::MfaSpec),
    /// `kind: QuayAccessToken`.
    #[cfg(feature = "quay")]
    QuayAccessToken(crate::quay_access_token::QuayAccessTokenSpec),
    /// `kind: CloudsmithAccessToken`.
    #[cfg(feature = "cloudsmith")]
    CloudsmithAccessToken(crate::cloudsmith_access_token::CloudsmithAccessTokenSpec),
}

impl GeneratorSpec {
    /// Deserializes the `spec` of a manifest of the given generator kind, rejecting unknown
    /// fields and naming the field at fault.
    pub fn from_manifest(kind: GeneratorKind, spec: serde_json::Value) -> Result<Self, SpecError> {
        let spec = match kind {
            GeneratorKind::Password => GeneratorSpec::Password(parse(spec)?),
            GeneratorKind::Uuid => GeneratorSpec::Uuid(parse(spec)?),
            GeneratorKind::Fake => GeneratorSpec::Fake(parse(spec)?),
            GeneratorKind::IdentityToken => GeneratorSpec::IdentityToken(parse(spec)?),
            #[cfg(feature = "vault")]
            GeneratorKind::VaultDynamicSecret => GeneratorSpec::VaultDynamicSecret(parse(spec)?),
            #[cfg(feature = "vault")]
            GeneratorKind::VaultStaticSecret => GeneratorSpec::VaultStaticSecret(parse(spec)?),
            #[cfg(feature = "aws")]
            GeneratorKind::AwsAssumeRole => GeneratorSpec::AwsAssumeRole(parse(spec)?),
            #[cfg(feature = "aws")]
            GeneratorKind::StsSessionToken => GeneratorSpec::StsSessionToken(parse(spec)?),
            #[cfg(feature = "ecr")]
            GeneratorKind::EcrAuthorizationToken => {
                GeneratorSpec::EcrAuthorizationToken(parse(spec)?)
            }
            #[cfg(feature = "secretsmanager")]
            GeneratorKind::SecretsManagerSecret => {
                GeneratorSpec::SecretsManagerSecret(parse(spec)?)
            }
            #[cfg(feature = "ssm")]
            GeneratorKind::SsmParameter => GeneratorSpec::SsmParameter(parse(spec)?),
            #[cfg(feature = "rds")]
            GeneratorKind::RdsAuthToken => GeneratorSpec::RdsAuthToken(parse(spec)?),
            #[cfg(feature = "eks")]
            GeneratorKind::EksToken => GeneratorSpec::EksToken(parse(spec)?),
            #[cfg(feature = "gcp")]
            GeneratorKind::GcpAccessToken => GeneratorSpec::GcpAccessToken(parse(spec)?),
            #[cfg(feature = "gcp")]
            GeneratorKind::GcpIdentityToken => GeneratorSpec::GcpIdentityToken(parse(spec)?),
            #[cfg(feature = "gcp")]
            GeneratorKind::GcpSecretManagerSecret => {
                GeneratorSpec::GcpSecretManagerSecret(parse(spec)?)
            }
            #[cfg(feature = "gcr")]
            GeneratorKind::GcrAccessToken => GeneratorSpec::GcrAccessToken(parse(spec)?),
            #[cfg(feature = "webhook")]
            GeneratorKind::Webhook => GeneratorSpec::Webhook(parse(spec)?),
            #[cfg(feature = "github")]
            GeneratorKind::GithubAccessToken => GeneratorSpec::GithubAccessToken(parse(spec)?),
            #[cfg(feature = "grafana")]
            GeneratorKind::Grafana => GeneratorSpec::Grafana(parse(spec)?),
            #[cfg(feature = "acr")]
            GeneratorKind::AcrAccessToken => GeneratorSpec::AcrAccessToken(parse(spec)?),
            #[cfg(feature = "keyvault")]
            GeneratorKind::AzureKeyVaultSecret => GeneratorSpec::AzureKeyVaultSecret(parse(spec)?),
            #[cfg(feature = "azuretoken")]
            GeneratorKind::AzureAccessToken => GeneratorSpec::AzureAccessToken(parse(spec)?),
            #[cfg(feature = "k8s")]
            GeneratorKind::KubernetesServiceAccountToken => {
                GeneratorSpec::KubernetesServiceAccountToken(parse(spec)?)
            }
            #[cfg(feature = "k8s")]
            GeneratorKind::KubernetesSecret => GeneratorSpec::KubernetesSecret(parse(spec)?),
            #[cfg(feature = "sshkey")]
            GeneratorKind::SshKey => GeneratorSpec::SshKey(parse(spec)?),
            #[cfg(feature = "sshkey")]
            GeneratorKind::SshCertificate => GeneratorSpec::SshCertificate(parse(spec)?),
            #[cfg(feature = "mfa")]
            GeneratorKind::Mfa => GeneratorSpec::Mfa(parse(spec)?),
            #[cfg(feature = "quay")]
            GeneratorKind::QuayAccessToken => GeneratorSpec::QuayAccessToken(parse(spec)?),
            #[cfg(feature = "cloudsmith")]
            GeneratorKind::CloudsmithAccessToken => {
                GeneratorSpec::CloudsmithAccessToken(parse(spec)?)
            }
        };
        spec.validate()?;
        Ok(spec)
    }

    /// The kind of this spec.
    pub fn kind(&self) -> GeneratorKind {
        match self {
            GeneratorSpec::Password(_) => GeneratorKind::Password,
            GeneratorSpec::Uuid(_) => GeneratorKind::Uuid,
            GeneratorSpec::Fake(_) => GeneratorKind::Fake,
            GeneratorSpec::IdentityToken(_) => GeneratorKind::IdentityToken,
            #[cfg(feature = "vault")]
            GeneratorSpec::VaultDynamicSecret(_) => GeneratorKind::VaultDynamicSecret,
            #[cfg(feature = "vault")]
            GeneratorSpec::VaultStaticSecret(_) => GeneratorKind::VaultStaticSecret,
            #[cfg(feature = "aws")]
            GeneratorSpec::AwsAssumeRole(_) => GeneratorKind::AwsAssumeRole,
            #[cfg(feature = "aws")]
            GeneratorSpec::StsSessionToken(_) => GeneratorKind::StsSessionToken,
            #[cfg(feature = "ecr")]
            GeneratorSpec::EcrAuthorizationToken(_) => GeneratorKind::EcrAuthorizationToken,
            #[cfg(feature = "secretsmanager")]
            GeneratorSpec::SecretsManagerSecret(_) => GeneratorKind::SecretsManagerSecret,
            #[cfg(feature = "ssm")]
            GeneratorSpec::SsmParameter(_) => GeneratorKind::SsmParameter,
            #[cfg(feature = "rds")]
            GeneratorSpec::RdsAuthToken(_) => GeneratorKind::RdsAuthToken,
            #[cfg(feature = "eks")]
            GeneratorSpec::EksToken(_) => GeneratorKind::EksToken,
            #[cfg(feature = "gcp")]
            GeneratorSpec::GcpAccessToken(_) => GeneratorKind::GcpAccessToken,
            #[cfg(feature = "gcp")]
            GeneratorSpec::GcpIdentityToken(_) => GeneratorKind::GcpIdentityToken,
            #[cfg(feature = "gcp")]
            GeneratorSpec::GcpSecretManagerSecret(_) => GeneratorKind::GcpSecretManagerSecret,
            #[cfg(feature = "gcr")]
            GeneratorSpec::GcrAccessToken(_) => GeneratorKind::GcrAccessToken,
            #[cfg(feature = "webhook")]
            GeneratorSpec::Webhook(_) => GeneratorKind::Webhook,
            #[cfg(feature = "github")]
            GeneratorSpec::GithubAccessToken(_) => GeneratorKind::GithubAccessToken,
            #[cfg(feature = "grafana")]
            GeneratorSpec::Grafana(_) => GeneratorKind::Grafana,
            #[cfg(feature = "acr")]
            GeneratorSpec::AcrAccessToken(_) => GeneratorKind::AcrAccessToken,
            #[cfg(feature = "keyvault")]
            GeneratorSpec::AzureKeyVaultSecret(_) => GeneratorKind::AzureKeyVaultSecret,
            #[cfg(feature = "azuretoken")]
            GeneratorSpec::AzureAccessToken(_) => GeneratorKind::AzureAccessToken,
            #[cfg(feature = "k8s")]
            GeneratorSpec::KubernetesServiceAccountToken(_) => {
                GeneratorKind::KubernetesServiceAccountToken
            }
            #[cfg(feature = "k8s")]
            GeneratorSpec::KubernetesSecret(_) => GeneratorKind::KubernetesSecret,
            #[cfg(feature = "sshkey")]
            GeneratorSpec::SshKey(_) => GeneratorKind::SshKey,
            #[cfg(feature = "sshkey")]
            GeneratorSpec::SshCertificate(_) => GeneratorKind::SshCertificate,
            #[cfg(feature = "mfa")]
            GeneratorSpec::Mfa(_) => GeneratorKind::Mfa,
            #[cfg(feature = "quay")]
            GeneratorSpec::QuayAccessToken(_) => GeneratorKind::QuayAccessToken,
            #[cfg(feature = "cloudsmith")]
            GeneratorSpec::CloudsmithAccessToken(_) => GeneratorKind::CloudsmithAccessToken,
        }
    }

    /// The audiences of the identity tokens this generator hands workloads (`IdentityToken`'s;
    /// none for the other kinds).
    pub fn workload_token_audiences(&self) -> &[String] {
        match self {
            GeneratorSpec::IdentityToken(s) => &s.audiences,
            _ => &[],
        }
    }

    /// The audience of the identity token this generator shows a relying party for the
    /// caller, to trade it for the party's token (`QuayAccessToken`, `CloudsmithAccessToken`,
    /// `AzureAccessToken`; none for the other kinds). The party trusts the federation's issuer and the caller's
    /// subject, so a workload holding its own identity token for this audience could trade it
    /// itself, past the Authorization of this generator.
    pub fn exchange_audience(&self) -> Option<String> {
        match self {
            #[cfg(feature = "quay")]
            GeneratorSpec::QuayAccessToken(s) => s.token_audience(),
            #[cfg(feature = "cloudsmith")]
            GeneratorSpec::CloudsmithAccessToken(s) => Some(
                s.audience
                    .clone()
                    .unwrap_or_else(|| crate::cloudsmith_access_token::DEFAULT_AUDIENCE.to_owned()),
            ),
            #[cfg(feature = "azuretoken")]
            GeneratorSpec::AzureAccessToken(s) => Some(s.token_audience()),
            _ => None,
        }
    }

    /// The SecretStore (in the generator's namespace) this generator needs, if any.
    pub fn store_ref(&self) -> Option<&str> {
        match self {
            GeneratorSpec::Password(_)
            | GeneratorSpec::Uuid(_)
            | GeneratorSpec::Fake(_)
            | GeneratorSpec::IdentityToken(_) => None,
            #[cfg(feature = "sshkey")]
            GeneratorSpec::SshKey(_) => None,
            #[cfg(feature = "mfa")]
            GeneratorSpec::Mfa(_) => None,
            #[cfg(feature = "quay")]
            GeneratorSpec::QuayAccessToken(_) => None,
            #[cfg(feature = "cloudsmith")]
            GeneratorSpec::CloudsmithAccessToken(_) => None,
            #[cfg(feature = "azuretoken")]
            GeneratorSpec::AzureAccessToken(_) => None,
            #[cfg(feature = "vault")]
            GeneratorSpec::VaultDynamicSecret(s) => Some(&s.secret_store_ref.name),
            #[cfg(feature = "vault")]
            GeneratorSpec::VaultStaticSecret(s) => Some(&s.secret_store_ref.name),
            #[cfg(feature = "aws")]
            GeneratorSpec::AwsAssumeRole(s) => Some(&s.secret_store_ref.name),
            #[cfg(feature = "aws")]
            GeneratorSpec::StsSessionToken(s) => Some(&s.secret_store_ref.name),
            #[cfg(feature = "ecr")]
            GeneratorSpec::EcrAuthorizationToken(s) => Some(&s.secret_store_ref.name),
            #[cfg(feature = "secretsmanager")]
            GeneratorSpec::SecretsManagerSecret(s) => Some(&s.secret_store_ref.name),
            #[cfg(feature = "ssm")]
            GeneratorSpec::SsmParameter(s) => Some(&s.secret_store_ref.name),
            #[cfg(feature = "rds")]
            GeneratorSpec::RdsAuthToken(s) => Some(&s.secret_store_ref.name),
            #[cfg(feature = "eks")]
            GeneratorSpec::EksToken(s) => Some(&s.secret_store_ref.name),
            #[cfg(feature = "gcp")]
            GeneratorSpec::GcpAccessToken(s) => Some(&s.secret_store_ref.name),
            #[cfg(feature = "gcp")]
            GeneratorSpec::GcpIdentityToken(s) => Some(&s.secret_store_ref.name),
            #[cfg(feature = "gcp")]
            GeneratorSpec::GcpSecretManagerSecret(s) => Some(&s.secret_store_ref.name),
            #[cfg(feature = "gcr")]
            GeneratorSpec::GcrAccessToken(s) => Some(&s.secret_store_ref.name),
            #[cfg(feature = "webhook")]
            GeneratorSpec::Webhook(s) => Some(&s.secret_store_ref.name),
            #[cfg(feature = "github")]
            GeneratorSpec::GithubAccessToken(s) => Some(&s.secret_store_ref.name),
            #[cfg(feature = "grafana")]
            GeneratorSpec::Grafana(s) => Some(&s.secret_store_ref.name),
            #[cfg(feature = "acr")]
            GeneratorSpec::AcrAccessToken(s) => Some(&s.secret_store_ref.name),
            #[cfg(feature = "keyvault")]
            GeneratorSpec::AzureKeyVaultSecret(s) => Some(&s.secret_store_ref.name),
            #[cfg(feature = "k8s")]
            GeneratorSpec::KubernetesServiceAccountToken(s) => Some(&s.secret_store_ref.name),
            #[cfg(feature = "k8s")]
            GeneratorSpec::KubernetesSecret(s) => Some(&s.secret_store_ref.name),
            #[cfg(feature = "sshkey")]
            GeneratorSpec::SshCertificate(s) => Some(&s.secret_store_ref.name),
        }
    }

    /// Checks the values serde cannot (ranges, consistency).
    pub fn validate(&self) -> Result<(), SpecError> {
        match self {
            GeneratorSpec::Password(s) => s.validate(),
            GeneratorSpec::Uuid(_) => Ok(()),
            GeneratorSpec::Fake(s) => crate::fake::FakeGenerator::new(s.clone()).map(|_| ()),
            GeneratorSpec::IdentityToken(s) => s.validate(),
            #[cfg(feature = "vault")]
            GeneratorSpec::VaultDynamicSecret(s) => s.validate(),
            #[cfg(feature = "vault")]
            GeneratorSpec::VaultStaticSecret(s) => s.validate(),
            #[cfg(feature = "aws")]
            GeneratorSpec::AwsAssumeRole(s) => s.validate(),
            #[cfg(feature = "aws")]
            GeneratorSpec::StsSessionToken(s) => s.validate(),
            #[cfg(feature = "ecr")]
            GeneratorSpec::EcrAuthorizationToken(s) => s.validate(),
            #[cfg(feature = "secretsmanager")]
            GeneratorSpec::SecretsManagerSecret(s) => s.validate(),
            #[cfg(feature = "ssm")]
            GeneratorSpec::SsmParameter(s) => s.validate(),
            #[cfg(feature = "rds")]
            GeneratorSpec::RdsAuthToken(s) => s.validate(),
            #[cfg(feature = "eks")]
            GeneratorSpec::EksToken(s) => s.validate(),
            #[cfg(feature = "gcp")]
            GeneratorSpec::GcpAccessToken(s) => s.validate(),
            #[cfg(feature = "gcp")]
            GeneratorSpec::GcpIdentityToken(s) => s.validate(),
            #[cfg(feature = "gcp")]
            GeneratorSpec::GcpSecretManagerSecret(s) => s.validate(),
            #[cfg(feature = "gcr")]
            GeneratorSpec::GcrAccessToken(s) => s.validate(),
            #[cfg(feature = "webhook")]
            GeneratorSpec::Webhook(s) => s.validate(),
            #[cfg(feature = "github")]
            GeneratorSpec::GithubAccessToken(s) => s.validate(),
            #[cfg(feature = "grafana")]
            GeneratorSpec::Grafana(s) => s.validate(),
            #[cfg(feature = "acr")]
            GeneratorSpec::AcrAccessToken(s) => s.validate(),
            #[cfg(feature = "keyvault")]
            GeneratorSpec::AzureKeyVaultSecret(s) => s.validate(),
            #[cfg(feature = "azuretoken")]
            GeneratorSpec::AzureAccessToken(s) => s.validate(),
            #[cfg(feature = "k8s")]
            GeneratorSpec::KubernetesServiceAccountToken(s) => s.validate(),
            #[cfg(feature = "k8s")]
            GeneratorSpec::KubernetesSecret(s) => s.validate(),
            #[cfg(feature = "sshkey")]
            GeneratorSpec::SshKey(s) => s.validate(),
            #[cfg(feature = "sshkey")]
            GeneratorSpec::SshCertificate(s) => s.validate(),
            #[cfg(feature = "mfa")]
            GeneratorSpec::Mfa(s) => s.validate(),
            #[cfg(feature = "quay")]
            GeneratorSpec::QuayAccessToken(s) => s.validate(),
            #[cfg(feature = "cloudsmith")]
            GeneratorSpec::CloudsmithAccessToken(s) => s.validate(),
        }
    }
}

/// Reads `value` as a `T` without path bookkeeping (serde_path_to_error allocates a segment
/// per key it enters, most of validating a large configuration); only a value that fails is
/// read again with its path tracked, for the message.
pub fn deserialize_tracked<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
    T::deserialize(value).or_else(|_| serde_path_to_error::deserialize(value))
}

/// Deserializes `value` into `T`, reporting the path of the failing field.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, SpecError> {
    // An absent `spec` means "all defaults".
    let value = if value.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        value
    };
    deserialize_tracked(&value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        SpecError::field(
            path,
            esi_api::json::without_values(&e.into_inner().to_string()),
        )
    })
}
