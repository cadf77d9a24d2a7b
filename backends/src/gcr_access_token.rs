//! `GCRAccessToken`: a docker login to Google's container registries, Artifact Registry
//! (`<location>-docker.pkg.dev`) and Container Registry (`gcr.io`, `<region>.gcr.io`)
//! (External Secrets Operator parity), on a `gcp` SecretStore.
//!
//! The password is an OAuth access token of `serviceAccountEmail`, minted exactly as
//! `GCPAccessToken` mints one (IAM Credentials `generateAccessToken` with the store's identity,
//! through `delegates`, by the same code), so the registries' IAM grants
//! that service account, never the federation. The account may be templated over the caller
//! (`{{namespace}}-puller@my-project.iam.gserviceaccount.com`): one generator then gives each
//! namespace its own account's repositories. The rendered account is checked again before
//! anything is asked of Google.
//!
//! The token's scope is a Cloud Storage one, which Google's registries accept in place of
//! `cloud-platform` (as on a Compute Engine VM: <https://cloud.google.com/artifact-registry/docs/integrate-compute>):
//! `access: pull` (the default) asks for `devstorage.read_only`, `push` for
//! `devstorage.read_write`. A leaked login then reaches no other API the account is granted,
//! and a pull login cannot push whatever the account's roles.
//!
//! Google never sees the registry names: they only go into the login. They are held to
//! Google's registry domains all the same (`gcr.io`, `*.gcr.io`, `*-docker.pkg.dev`), so a
//! configuration cannot have the token presented to any other host.
//!
//! Returns `username` (`oauth2accesstoken`, which tells the registries the password is an
//! access token), `password` (the token), `registry` (the first of `registries`) and
//! `dockerconfigjson` (a `~/.docker/config.json` logging in to every one of them), plus the
//! expiry Google gives. The token lives `lifetime` (default 1h) lowered to the Authorization's
//! `maxTTL`; like every Google access token it cannot be revoked, so there is no lease. Google's
//! `expireTime` is checked as `GCPAccessToken` checks it: a login that would outlive `maxTTL`
//! is dropped, never handed out, and the request refused.
//!
//! ```yaml
//! kind: GCRAccessToken
//! spec:
//!   secretStoreRef: {name: gcp}
//!   registries: [europe-docker.pkg.dev, eu.gcr.io]
//!   serviceAccountEmail: "{{namespace}}-puller@my-project.iam.gserviceaccount.com"
//!   access: pull          # default; push for a login that can also push
//!   lifetime: 30m         # default 1h, lowered to the Authorization's maxTTL
//! ```

use std::sync::Arc;

use kube::CustomResource;
use schemars::JsonSchema;
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::gcp::GcpConn;
use crate::store::SecretStoreRef;
use crate::template::Template;
use crate::{BackendError, Context, Credential, Generate, SecretStoreSpec, SpecError};

/// The user name that tells Google's registries the password is an OAuth access token.
pub const USERNAME: &str = "oauth2accesstoken";
/// The most registries one login may list.
pub const MAX_REGISTRIES: usize = 16;
/// The scope of a pull login: Cloud Storage read-only, which Google's registries take for
/// pulling.
pub const PULL_SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_only";
/// The scope of a push login: Cloud Storage read-write, which Google's registries take for
/// pushing and pulling.
pub const PUSH_SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";

/// `spec` of a `GCRAccessToken` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "GCRAccessToken",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcrAccessTokenSpec {
    /// The `gcp` SecretStore whose identity impersonates `serviceAccountEmail`.
    pub secret_store_ref: SecretStoreRef,
    /// The registries the login is for, as host names: `gcr.io`, `<region>.gcr.io` (`us`,
    /// `eu`, `asia`) and Artifact Registry's `<location>-docker.pkg.dev`
    /// (`europe-docker.pkg.dev`, `us-central1-docker.pkg.dev`); no scheme, port or path. The
    /// first is returned as `registry`; `dockerconfigjson` logs in to every one.
    pub registries: Vec<String>,
    /// The service account whose token the login carries
    /// (`puller@my-project.iam.gserviceaccount.com`; the store's identity needs
    /// `roles/iam.serviceAccountTokenCreator` on it), templated over the caller's identity
    /// (`{{namespace}}-puller@my-project.iam.gserviceaccount.com`).
    pub service_account_email: String,
    /// Delegation chain to `serviceAccountEmail`, each granting token creation to the next.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegates: Vec<String>,
    /// What the login may do: `pull` (the default) or `push` (push and pull). The service
    /// account's roles on the repositories still decide.
    #[serde(default)]
    pub access: RegistryAccess,
    /// Token lifetime (default `1h`; more than 1h needs Google's org policy; at most 12h),
    /// lowered to the Authorization's `maxTTL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<HumanDuration>,
}

/// What a `GCRAccessToken` login may do, as the OAuth scope of its token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RegistryAccess {
    /// Pull images (scope `devstorage.read_only`).
    #[default]
    Pull,
    /// Push and pull images (scope `devstorage.read_write`).
    Push,
}

impl RegistryAccess {
    /// The OAuth scope of the token.
    pub fn scope(self) -> &'static str {
        match self {
            RegistryAccess::Pull => PULL_SCOPE,
            RegistryAccess::Push => PUSH_SCOPE,
        }
    }
}

impl GcrAccessTokenSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        check_registries(&self.registries)?;
        self.account()?;
        crate::gcp_access_token::validate_lifetime(self.lifetime)
    }

    /// `serviceAccountEmail` parsed, with the delegates checked; with placeholders, its shape
    /// is checked with each filled in as `x` (its values once rendered, per request).
    fn account(&self) -> Result<Template, SpecError> {
        let t = Template::parse(&self.service_account_email, "serviceAccountEmail")?;
        let sample = t.sample();
        if self.service_account_email.contains("{{") && !crate::gcp::valid_account(&sample) {
            return Err(SpecError::field(
                "serviceAccountEmail",
                format!(
                    "{:?} with its placeholders filled in (as `x`) is not a service account email",
                    self.service_account_email
                ),
            ));
        }
        crate::gcp::validate_impersonation(&sample, &self.delegates)?;
        Ok(t)
    }
}

/// Checks `registries`: one to [`MAX_REGISTRIES`] Google registry hosts, none twice; errors
/// name the entry (`registries[i]`).
fn check_registries(registries: &[String]) -> Result<(), SpecError> {
    if registries.is_empty() {
        return Err(SpecError::field(
            "registries",
            "must name at least one registry (e.g. europe-docker.pkg.dev)",
        ));
    }
    if registries.len() > MAX_REGISTRIES {
        return Err(SpecError::field(
            "registries",
            format!("names more than {MAX_REGISTRIES} registries"),
        ));
    }
    for (i, r) in registries.iter().enumerate() {
        let field = format!("registries[{i}]");
        check_registry(r).map_err(|why| SpecError::field(field.as_str(), why))?;
        if registries[..i].contains(r) {
            return Err(SpecError::field(field, format!("{r:?} is listed twice")));
        }
    }
    Ok(())
}

/// Why `host` is not one of Google's docker registry hosts: `gcr.io`, `<label>.gcr.io` or
/// `<label>-docker.pkg.dev`, lowercase, nothing around it.
fn check_registry(host: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(format!(
            "{host:?} is not a registry host name (lowercase, e.g. europe-docker.pkg.dev; no \
             scheme, port or path)"
        ));
    }
    let google = host == "gcr.io"
        || host
            .strip_suffix(".gcr.io")
            .is_some_and(|l| !l.contains('.'))
        || host
            .strip_suffix("-docker.pkg.dev")
            .is_some_and(|l| !l.is_empty() && !l.contains('.'));
    if !google {
        return Err(format!(
            "{host:?} is not a Google registry (gcr.io, <region>.gcr.io or \
             <location>-docker.pkg.dev): the login carries a Google token, so it is only ever \
             made for Google's registries"
        ));
    }
    Ok(())
}

/// The built `GCRAccessToken` generator.
#[derive(Debug)]
pub struct GcrAccessTokenGenerator {
    registries: Vec<String>,
    account: Template,
    delegates: Vec<String>,
    scopes: [String; 1],
    lifetime: Option<HumanDuration>,
    conn: Arc<GcpConn>,
}

impl GcrAccessTokenGenerator {
    /// Builds the generator on its store's shared connection.
    pub fn new(
        spec: GcrAccessTokenSpec,
        store: Option<&SecretStoreSpec>,
        shared: &mut crate::Shared,
    ) -> Result<Self, SpecError> {
        spec.validate()?;
        Ok(Self {
            account: spec.account()?,
            conn: crate::gcp::shared_conn(store, &spec.secret_store_ref, shared)?,
            scopes: [spec.access.scope().to_owned()],
            registries: spec.registries,
            delegates: spec.delegates,
            lifetime: spec.lifetime,
        })
    }

    /// The service account for this caller, rendered and checked.
    fn account(&self, ctx: &Context<'_>) -> Result<String, BackendError> {
        let email = self.account.render(ctx, str::to_owned);
        if !crate::gcp::valid_account(&email) {
            return Err(BackendError::Rejected {
                message: format!(
                    "the generator's serviceAccountEmail for this caller, {email:?}, is not a \
                     service account email"
                ),
                detail: format!("gcr: rendered serviceAccountEmail {email:?} is invalid"),
            });
        }
        Ok(email)
    }
}

impl Generate for GcrAccessTokenGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let email = self.account(ctx)?;
        let token = crate::gcp_access_token::mint(
            &self.conn,
            &email,
            &self.delegates,
            &self.scopes,
            self.lifetime,
            ctx.max_ttl,
        )
        .await?;
        Ok(Credential {
            data: crate::credential::registry_login(
                USERNAME,
                token.token.expose_secret(),
                &self.registries,
            ),
            expires_at: Some(token.expires_at),
            renewable: false,
            lease: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GeneratorKind, GeneratorSpec};

    #[test]
    fn registries_are_google_registry_hosts_only() {
        for ok in [
            "gcr.io",
            "us.gcr.io",
            "eu.gcr.io",
            "asia.gcr.io",
            "europe-docker.pkg.dev",
            "us-central1-docker.pkg.dev",
            "me-west1-docker.pkg.dev",
        ] {
            assert!(check_registry(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("", "not a registry host name"),
            ("https://gcr.io", "not a registry host name"),
            ("gcr.io:443", "not a registry host name"),
            ("gcr.io/my-project", "not a registry host name"),
            ("EU.gcr.io", "not a registry host name"),
            ("gcr.io.", "not a registry host name"),
            (".gcr.io", "not a registry host name"),
            ("-x.gcr.io", "not a registry host name"),
            ("user@gcr.io", "not a registry host name"),
            ("eu.gcr.io ", "not a registry host name"),
            ("gcr\u{0131}.io", "not a registry host name"),
            ("a.b.gcr.io", "not a Google registry"),
            ("evilgcr.io", "not a Google registry"),
            ("gcr.io.evil.example", "not a Google registry"),
            ("eu.gcr.io.evil.example", "not a Google registry"),
            ("docker.pkg.dev", "not a Google registry"),
            ("x.docker.pkg.dev", "not a Google registry"),
            ("evil.example-docker.pkg.dev", "not a Google registry"),
            (
                "europe-docker.pkg.dev.evil.example",
                "not a Google registry",
            ),
            ("europe-maven.pkg.dev", "not a Google registry"),
            ("registry.example.com", "not a Google registry"),
            ("docker.io", "not a Google registry"),
        ] {
            let err = check_registry(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    fn spec_json() -> serde_json::Value {
        serde_json::json!({
            "secretStoreRef": {"name": "gcp"},
            "registries": ["europe-docker.pkg.dev", "eu.gcr.io"],
            "serviceAccountEmail": "{{namespace}}-puller@proj.iam.gserviceaccount.com",
            "delegates": ["mid@proj.iam.gserviceaccount.com"],
            "access": "push",
            "lifetime": "30m",
        })
    }

    #[test]
    fn specs_round_trip_and_default_to_a_pull_login() {
        let spec =
            GeneratorSpec::from_manifest(GeneratorKind::GcrAccessToken, spec_json()).unwrap();
        let GeneratorSpec::GcrAccessToken(s) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(s.access, RegistryAccess::Push);
        assert_eq!(
            GeneratorSpec::from_manifest(
                GeneratorKind::GcrAccessToken,
                serde_json::to_value(s).unwrap()
            )
            .unwrap(),
            spec
        );
        let minimal = serde_json::json!({
            "secretStoreRef": {"name": "gcp"},
            "registries": ["gcr.io"],
            "serviceAccountEmail": "puller@proj.iam.gserviceaccount.com",
        });
        let GeneratorSpec::GcrAccessToken(s) =
            GeneratorSpec::from_manifest(GeneratorKind::GcrAccessToken, minimal).unwrap()
        else {
            panic!()
        };
        assert_eq!(s.access.scope(), PULL_SCOPE);
        assert_eq!(s.lifetime, None);
    }

    #[test]
    fn bad_values_name_their_field() {
        for (field, value, says) in [
            (
                "registries",
                serde_json::json!([]),
                "spec.registries: must name",
            ),
            (
                "registries",
                serde_json::json!(["gcr.io", "registry.example.com"]),
                "spec.registries[1]",
            ),
            (
                "registries",
                serde_json::json!(["gcr.io", "https://evil.example"]),
                "spec.registries[1]",
            ),
            (
                "registries",
                serde_json::json!(["eu.gcr.io", "gcr.io", "eu.gcr.io"]),
                "spec.registries[2]: \"eu.gcr.io\" is listed twice",
            ),
            (
                "registries",
                serde_json::json!(vec!["gcr.io"; MAX_REGISTRIES + 1]),
                "more than 16",
            ),
            ("registries", serde_json::json!("gcr.io"), "spec.registries"),
            (
                "serviceAccountEmail",
                serde_json::json!("nobody"),
                "spec.serviceAccountEmail",
            ),
            (
                "serviceAccountEmail",
                serde_json::json!("{{namespace}}"),
                "placeholders filled in",
            ),
            (
                "serviceAccountEmail",
                serde_json::json!("{{tenant}}@proj.iam.gserviceaccount.com"),
                "unknown placeholder",
            ),
            (
                "serviceAccountEmail",
                serde_json::json!("{{namespace}}/x@proj.iam.gserviceaccount.com"),
                "spec.serviceAccountEmail",
            ),
            (
                "delegates",
                serde_json::json!(["bad name"]),
                "spec.delegates[0]",
            ),
            ("access", serde_json::json!("admin"), "spec.access"),
            ("lifetime", serde_json::json!("13h"), "spec.lifetime"),
            ("lifetime", serde_json::json!("0s"), "spec.lifetime"),
            (
                "scopes",
                serde_json::json!([PUSH_SCOPE]),
                "unknown field `scopes`",
            ),
        ] {
            let mut j = spec_json();
            j[field] = value;
            let err = GeneratorSpec::from_manifest(GeneratorKind::GcrAccessToken, j)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{field}: {err}");
        }
    }

    #[test]
    fn a_caller_whose_identity_renders_no_account_is_refused() {
        let GeneratorSpec::GcrAccessToken(s) =
            GeneratorSpec::from_manifest(GeneratorKind::GcrAccessToken, spec_json()).unwrap()
        else {
            panic!()
        };
        let store = crate::SecretStoreSpec::from_manifest(serde_json::json!(
            {"provider": {"gcp": {"iamCredentialsEndpoint": "http://127.0.0.1:1"}}}
        ))
        .unwrap();
        let g = GcrAccessTokenGenerator::new(s, Some(&store), &mut Default::default()).unwrap();
        fn ctx(identity: &esi_api::Identity) -> Context<'_> {
            Context {
                identity,
                generator: "payments/GCRAccessToken/pull",
                max_ttl: None,
            }
        }
        let mut id = crate::template::tests::identity();
        assert_eq!(
            g.account(&ctx(&id)).unwrap(),
            format!("{}-puller@proj.iam.gserviceaccount.com", id.namespace)
        );
        id.namespace = "a b".to_owned();
        let err = g.account(&ctx(&id)).unwrap_err();
        assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");
        assert!(err.to_string().contains("serviceAccountEmail"), "{err}");
    }
}
