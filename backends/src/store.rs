//! `SecretStore`: how the federation reaches and authenticates to a backend.
//!
//! Secrets a store needs (a Vault token, AppRole secret id, cloud keys) come from the
//! federation's environment or files, never from the manifest: the spec names where to find
//! them ([`crate::SecretRef`]). Each provider's fields are documented in its backend module:
//! [`crate::vault::VaultProvider`], [`crate::aws::AwsProvider`], [`crate::gcp::GcpProvider`],
//! [`crate::webhook::WebhookProvider`], [`crate::github::GithubProvider`],
//! [`crate::grafana::GrafanaProvider`], [`crate::azure::AzureProvider`],
//! [`crate::kubernetes_token::KubernetesProvider`].

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{BackendError, SpecError};

/// `spec` of a `SecretStore`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "SecretStore",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretStoreSpec {
    /// The backend and how to reach it: exactly one provider.
    #[serde(deserialize_with = "crate::choice::one_of")]
    pub provider: StoreProvider,
}

/// The backend of a store. Exactly one key is set, ESO-style (`provider: {vault: {...}}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum StoreProvider {
    /// A Vault or OpenBao server.
    #[cfg(feature = "vault")]
    Vault(crate::vault::VaultProvider),
    /// AWS STS.
    #[cfg(feature = "aws")]
    Aws(crate::aws::AwsProvider),
    /// Google Cloud: IAM Credentials and Secret Manager.
    #[cfg(feature = "gcp")]
    Gcp(crate::gcp::GcpProvider),
    /// Outbound HTTP endpoints for `Webhook` generators: the allow-list and secret headers.
    #[cfg(feature = "webhook")]
    Webhook(crate::webhook::WebhookProvider),
    /// A GitHub App, for `GithubAccessToken` generators.
    #[cfg(feature = "github")]
    Github(crate::github::GithubProvider),
    /// A Grafana instance, for `Grafana` generators.
    #[cfg(feature = "grafana")]
    Grafana(crate::grafana::GrafanaProvider),
    /// The federation's Microsoft Entra ID identity, for `ACRAccessToken` and
    /// `AzureKeyVaultSecret` generators.
    #[cfg(feature = "azure")]
    Azure(crate::azure::AzureProvider),
    /// A Kubernetes API server, for `KubernetesServiceAccountToken` and `KubernetesSecret`
    /// generators.
    #[cfg(feature = "k8s")]
    Kubernetes(crate::kubernetes_token::KubernetesProvider),
    /// An SSH certificate authority's key, for `SSHCertificate` generators.
    #[cfg(feature = "sshkey")]
    Ssh(crate::ssh_certificate::SshProvider),
}

impl StoreProvider {
    /// The provider's key in manifests (`vault`, `aws`, ...).
    pub fn name(&self) -> &'static str {
        match *self {
            #[cfg(feature = "vault")]
            StoreProvider::Vault(_) => "vault",
            #[cfg(feature = "aws")]
            StoreProvider::Aws(_) => "aws",
            #[cfg(feature = "gcp")]
            StoreProvider::Gcp(_) => "gcp",
            #[cfg(feature = "webhook")]
            StoreProvider::Webhook(_) => "webhook",
            #[cfg(feature = "github")]
            StoreProvider::Github(_) => "github",
            #[cfg(feature = "grafana")]
            StoreProvider::Grafana(_) => "grafana",
            #[cfg(feature = "azure")]
            StoreProvider::Azure(_) => "azure",
            #[cfg(feature = "k8s")]
            StoreProvider::Kubernetes(_) => "kubernetes",
            #[cfg(feature = "sshkey")]
            StoreProvider::Ssh(_) => "ssh",
        }
    }
}

impl SecretStoreSpec {
    /// Deserializes and validates a store `spec`.
    pub fn from_manifest(spec: serde_json::Value) -> Result<Self, SpecError> {
        let spec: SecretStoreSpec = crate::spec::parse(spec)?;
        spec.validate()?;
        Ok(spec)
    }

    /// The field of the store's own login with a token the federation signs for itself
    /// (`selfIssued`), and the audiences its backend takes such a token for, when that
    /// audience is the store's own (a Vault server's URL, a Workload Identity provider's
    /// name): no workload may be given a token for them.
    pub fn own_login_audiences(&self) -> Option<(&'static str, Vec<String>)> {
        match &self.provider {
            #[cfg(feature = "vault")]
            StoreProvider::Vault(v) => Some((
                "provider.vault.auth.jwt.selfIssued",
                vec![v.self_issued_audience()?.to_owned()],
            )),
            #[cfg(feature = "gcp")]
            StoreProvider::Gcp(g) => {
                let own = g.self_issued.as_ref()?;
                let audience = own.audience();
                // Google takes the provider's name with or without the `https:` prefix.
                let https = format!("https:{audience}");
                Some(("provider.gcp.selfIssued", vec![audience, https]))
            }
            #[cfg(feature = "k8s")]
            StoreProvider::Kubernetes(k) => Some((
                "provider.kubernetes.auth.selfIssued",
                vec![k.self_issued_audience()?.to_owned()],
            )),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        match &self.provider {
            #[cfg(feature = "vault")]
            StoreProvider::Vault(v) => v.validate(),
            #[cfg(feature = "aws")]
            StoreProvider::Aws(a) => a.validate(),
            #[cfg(feature = "gcp")]
            StoreProvider::Gcp(g) => g.validate(),
            #[cfg(feature = "webhook")]
            StoreProvider::Webhook(w) => w.validate(),
            #[cfg(feature = "github")]
            StoreProvider::Github(g) => g.validate(),
            #[cfg(feature = "grafana")]
            StoreProvider::Grafana(g) => g.validate(),
            #[cfg(feature = "azure")]
            StoreProvider::Azure(a) => a.validate(),
            #[cfg(feature = "k8s")]
            StoreProvider::Kubernetes(k) => k.validate(),
            #[cfg(feature = "sshkey")]
            StoreProvider::Ssh(s) => s.validate(),
            // Only reachable in builds without any provider feature.
            #[allow(unreachable_patterns)]
            _ => Ok(()),
        }
    }
}

/// What a login check of a store found ([`SecretStoreSpec::check_login`]).
#[derive(Debug)]
pub enum LoginCheck {
    /// Logged in: who the backend takes the federation for.
    LoggedIn(String),
    /// The login, or the configuration it needs, failed.
    Failed(BackendError),
    /// Not checked, and why: the provider has no login of its own here, or the login needs
    /// the issuer of a serving federation.
    NotChecked(&'static str),
}

/// Why a store logging in with the federation's own token is not checked.
#[cfg(any(
    feature = "vault",
    feature = "aws",
    feature = "gcp",
    feature = "k8s",
    feature = "azure"
))]
const NEEDS_ISSUER: &str = "logs in with a token the federation signs for itself: give the \
     serving federation's issuer (--issuer-url and its keys) to check it";

impl SecretStoreSpec {
    /// Logs in once, as the federation would before its first call, and asks the backend who
    /// it takes the federation for: a Vault token's name and policies (`lookup-self`), the AWS
    /// caller (`GetCallerIdentity`), the Kubernetes user (`SelfSubjectReview`), the Google account
    /// a token was obtained for, the GitHub App (`GET /app`), the Grafana organization (`GET /api/org`), an
    /// Entra ID token obtained. For `esi-federation check --login`: it finds a broken credential
    /// before a workload's request does. Nothing is minted.
    ///
    /// `issuer` is the serving federation's, for the stores logging in with a token it signs
    /// for itself (`selfIssued`); without it they are not checked.
    #[cfg_attr(
        not(any(
            feature = "vault",
            feature = "aws",
            feature = "gcp",
            feature = "k8s",
            feature = "azure"
        )),
        allow(
            unused_variables,
            reason = "only these providers log in with the issuer"
        )
    )]
    pub async fn check_login(
        &self,
        issuer: Option<std::sync::Arc<crate::identity::Issuer>>,
    ) -> LoginCheck {
        let own = issuer.is_some();
        let slot = issuer.map_or(crate::IssuerSlot::Unknown, crate::IssuerSlot::Present);
        match &self.provider {
            #[cfg(feature = "vault")]
            StoreProvider::Vault(v) => {
                if !own && (v.self_issued_audience().is_some() || v.iam_self_issued()) {
                    return LoginCheck::NotChecked(NEEDS_ISSUER);
                }
                logged_in(crate::vault::VaultConn::new(v, &slot), async |conn| {
                    conn.whoami().await
                })
                .await
            }
            #[cfg(feature = "aws")]
            StoreProvider::Aws(a) => {
                if !own && a.self_issued.is_some() {
                    return LoginCheck::NotChecked(NEEDS_ISSUER);
                }
                logged_in(crate::aws::StsConn::new(a, &slot), async |conn| {
                    conn.whoami().await
                })
                .await
            }
            #[cfg(feature = "gcp")]
            StoreProvider::Gcp(g) => {
                if !own && g.self_issued.is_some() {
                    return LoginCheck::NotChecked(NEEDS_ISSUER);
                }
                logged_in(crate::gcp::GcpConn::new(g, &slot), async |conn| {
                    conn.whoami().await
                })
                .await
            }
            #[cfg(feature = "k8s")]
            StoreProvider::Kubernetes(k) => {
                if !own && k.self_issued_audience().is_some() {
                    return LoginCheck::NotChecked(NEEDS_ISSUER);
                }
                logged_in(
                    crate::kubernetes_token::KubernetesConn::new(k, &slot),
                    async |conn| conn.whoami().await,
                )
                .await
            }
            #[cfg(feature = "github")]
            StoreProvider::Github(g) => {
                logged_in(crate::github::GithubConn::new(g), async |conn| {
                    conn.whoami().await
                })
                .await
            }
            #[cfg(feature = "grafana")]
            StoreProvider::Grafana(g) => {
                logged_in(crate::grafana::GrafanaConn::new(g), async |conn| {
                    conn.whoami().await
                })
                .await
            }
            #[cfg(feature = "azure")]
            StoreProvider::Azure(a) => {
                if !own && a.workload_identity.as_ref().is_some_and(|w| w.self_issued) {
                    return LoginCheck::NotChecked(NEEDS_ISSUER);
                }
                logged_in(
                    crate::azure::AzureConn::with_issuer(a, &slot),
                    async |conn| conn.whoami().await,
                )
                .await
            }
            #[cfg(feature = "sshkey")]
            StoreProvider::Ssh(s) => match s.whoami() {
                Ok(who) => LoginCheck::LoggedIn(who),
                Err(e) => LoginCheck::Failed(e),
            },
            #[allow(unreachable_patterns)]
            _ => LoginCheck::NotChecked("no login of its own to check"),
        }
    }
}

/// The outcome of logging in on a store's connection, once `built`: who `whoami` says the
/// federation is, or why the connection could not be built or the login failed.
#[cfg(any(
    feature = "vault",
    feature = "aws",
    feature = "gcp",
    feature = "k8s",
    feature = "github",
    feature = "grafana",
    feature = "azure"
))]
async fn logged_in<C>(
    built: Result<C, SpecError>,
    whoami: impl AsyncFnOnce(&C) -> Result<String, BackendError>,
) -> LoginCheck {
    let conn = match built {
        Ok(conn) => conn,
        Err(e) => {
            return LoginCheck::Failed(BackendError::Unavailable {
                message: "the store cannot be built".to_owned(),
                detail: e.to_string(),
            });
        }
    };
    match whoami(&conn).await {
        Ok(who) => LoginCheck::LoggedIn(who),
        Err(e) => LoginCheck::Failed(e),
    }
}

/// A generator's reference to a `SecretStore` in its own namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretStoreRef {
    /// Name of the `SecretStore`.
    pub name: String,
}

/// The store a generator was built with, checked to be of the provider it needs.
#[cfg(any(
    feature = "vault",
    feature = "aws",
    feature = "gcp",
    feature = "webhook",
    feature = "github",
    feature = "grafana",
    feature = "acr",
    feature = "keyvault",
    feature = "k8s",
    feature = "sshkey"
))]
pub(crate) fn require<'a, T>(
    store: Option<&'a SecretStoreSpec>,
    reference: &SecretStoreRef,
    wanted: &str,
    pick: impl FnOnce(&'a StoreProvider) -> Option<&'a T>,
) -> Result<&'a T, SpecError> {
    let store = store.ok_or_else(|| {
        SpecError::field(
            "secretStoreRef.name",
            format!("SecretStore {:?} not found", reference.name),
        )
    })?;
    pick(&store.provider).ok_or_else(|| {
        SpecError::field(
            "secretStoreRef.name",
            format!(
                "SecretStore {:?} has provider {}, this generator needs {wanted}",
                reference.name,
                store.provider.name()
            ),
        )
    })
}

/// One connection per distinct provider: the generators built on one store share its
/// connection (HTTP client, login, token renewal, SDK configuration) however many there are.
///
/// Held weakly: a connection lives as long as a generator holds it, so the same `Conns` kept
/// across configuration reloads hands an unchanged store's live connection (and its login) to
/// the new generators, and lets go of the connections no configuration uses any more.
#[derive(Debug)]
pub struct Conns<C>(std::collections::HashMap<String, std::sync::Weak<C>>);

impl<C> Default for Conns<C> {
    fn default() -> Self {
        Conns(std::collections::HashMap::new())
    }
}

impl<C> Conns<C> {
    /// The live connection for `provider`, else a new one built by `build`.
    pub fn get<P: Serialize>(
        &mut self,
        provider: &P,
        build: impl FnOnce(&P) -> Result<C, SpecError>,
    ) -> Result<std::sync::Arc<C>, SpecError> {
        // Providers hold secrets only by reference ({env}/{file}), so the key holds none.
        let key = serde_json::to_string(provider)
            .map_err(|e| SpecError::field("provider", e.to_string()))?;
        if let Some(conn) = self.0.get(&key).and_then(std::sync::Weak::upgrade) {
            return Ok(conn);
        }
        let conn = std::sync::Arc::new(build(provider)?);
        self.0.retain(|_, c| c.strong_count() > 0);
        self.0.insert(key, std::sync::Arc::downgrade(&conn));
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_shared_while_held_and_rebuilt_after() {
        let mut conns: Conns<String> = Conns::default();
        let builds = std::cell::Cell::new(0);
        let build = |p: &&str| {
            builds.set(builds.get() + 1);
            Ok(format!("conn to {p}"))
        };
        let a = conns.get(&"vault-a", build).unwrap();
        let again = conns.get(&"vault-a", build).unwrap();
        assert!(
            std::sync::Arc::ptr_eq(&a, &again),
            "one connection per provider"
        );
        let b = conns.get(&"vault-b", build).unwrap();
        assert_ne!(a, b);
        assert_eq!(builds.get(), 2);
        // Nothing holds vault-a any more (its configuration was replaced): a new one is built,
        // and the dead entry does not linger.
        drop((a, again));
        let fresh = conns.get(&"vault-a", build).unwrap();
        assert_eq!(builds.get(), 3);
        assert_eq!(*fresh, "conn to vault-a");
        assert_eq!(conns.0.len(), 2);
        drop(b);
        let _c = conns.get(&"vault-c", build).unwrap();
        assert_eq!(
            conns.0.len(),
            2,
            "vault-b's entry was dropped: {:?}",
            conns.0.keys()
        );
    }
}
