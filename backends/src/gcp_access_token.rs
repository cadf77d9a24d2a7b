//! `GCPAccessToken`: an OAuth access token of a Google service account, minted by
//! impersonation through IAM Credentials `generateAccessToken` with the federation's own
//! credentials (the `gcp` SecretStore). Returns `access_token` and `expiresAt` from Google's
//! `expireTime`. Google access tokens cannot be revoked one by one through IAM Credentials,
//! so there is no lease; keep `lifetime` short.
//!
//! The Authorization's `maxTTL` holds: Google is asked for `lifetime` lowered to it (its
//! `lifetime` field), and its answer is checked all the same. A token whose `expireTime` lies
//! later than now + maxTTL (5 s of leeway for Google's clock) is dropped, never handed out, and
//! the request refused: it cannot be revoked, so it lives on unused until it expires.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::CustomResource;
use schemars::JsonSchema;
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::gcp::GcpConn;
use crate::store::SecretStoreRef;
use crate::{BackendError, Context, Credential, Generate, SecretStoreSpec, SpecError};

/// The longest lifetime Google allows (with the org policy that extends it).
pub const MAX_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The lifetime of a token whose spec sets none (Google's default, and its limit without the
/// org policy).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// `spec` of a `GCPAccessToken` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "GCPAccessToken",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcpAccessTokenSpec {
    /// The `gcp` SecretStore whose identity impersonates.
    pub secret_store_ref: SecretStoreRef,
    /// The service account to impersonate (`app@project.iam.gserviceaccount.com`).
    pub service_account_email: String,
    /// OAuth scopes of the token (default cloud-platform).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Token lifetime (default `1h`; more than 1h needs Google's org policy; at most 12h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<HumanDuration>,
    /// Delegation chain of service accounts, each granting token creation to the next.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegates: Vec<String>,
}

fn default_scopes() -> Vec<String> {
    vec![crate::gcp::CLOUD_PLATFORM_SCOPE.to_owned()]
}

impl GcpAccessTokenSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        crate::gcp::validate_impersonation(&self.service_account_email, &self.delegates)?;
        if self.scopes.is_empty() {
            return Err(SpecError::field("scopes", "must name at least one scope"));
        }
        validate_lifetime(self.lifetime)
    }
}

/// Checks a token `lifetime`: between 1s and [`MAX_LIFETIME`].
pub(crate) fn validate_lifetime(lifetime: Option<HumanDuration>) -> Result<(), SpecError> {
    match lifetime {
        Some(l) if l.get() < Duration::from_secs(1) || l.get() > MAX_LIFETIME => {
            Err(SpecError::field("lifetime", "must be between 1s and 12h"))
        }
        _ => Ok(()),
    }
}

/// What a token outliving maxTTL is called and what became of it.
const OVER_MAX_TTL: (&str, &str, &str) = (
    "Google's access token",
    "it was dropped, not handed out (IAM Credentials cannot revoke one; it expires unused)",
    "google iam credentials",
);

/// Mints an access token of the service account `email` as every `GCPAccessToken` does
/// (`GCRAccessToken` too): IAM Credentials `generateAccessToken` with the store's identity,
/// through `delegates`, for `scopes`, living `lifetime` (default [`DEFAULT_LIFETIME`]) lowered
/// to the Authorization's `max_ttl`. A token Google says outlives `max_ttl` all the same is
/// dropped and the request refused (see [`within_max_ttl`]).
pub(crate) async fn mint(
    conn: &GcpConn,
    email: &str,
    delegates: &[String],
    scopes: &[String],
    lifetime: Option<HumanDuration>,
    max_ttl: Option<Duration>,
) -> Result<crate::gcp::GoogleToken, BackendError> {
    let mut lifetime = lifetime.map_or(DEFAULT_LIFETIME, HumanDuration::get);
    if let Some(max) = max_ttl {
        lifetime = lifetime.min(max);
    }
    let token = conn
        .generate_access_token(email, delegates, scopes, lifetime)
        .await?;
    if let Some(max) = max_ttl {
        within_max_ttl(token.expires_at, jiff::Timestamp::now(), max)?;
    }
    Ok(token)
}

/// Refuses a token expiring at `expires_at` that outlives the Authorization's `max`: Google
/// was asked for no longer, but its answer is what the token lives, and no Google access token
/// can be revoked, so one that outlives `max` must not be handed out. (Google ends a token
/// early only on its own, e.g. when the service account is disabled.)
fn within_max_ttl(
    expires_at: jiff::Timestamp,
    now: jiff::Timestamp,
    max: Duration,
) -> Result<(), BackendError> {
    crate::credential::within_max_ttl(expires_at, now, max, OVER_MAX_TTL)
}

/// The built `GCPAccessToken` generator.
#[derive(Debug)]
pub struct GcpAccessTokenGenerator {
    spec: GcpAccessTokenSpec,
    conn: std::sync::Arc<GcpConn>,
}

impl GcpAccessTokenGenerator {
    /// Builds the generator on its store's shared connection.
    pub fn new(
        spec: GcpAccessTokenSpec,
        store: Option<&SecretStoreSpec>,
        shared: &mut crate::Shared,
    ) -> Result<Self, SpecError> {
        spec.validate()?;
        Ok(GcpAccessTokenGenerator {
            conn: crate::gcp::shared_conn(store, &spec.secret_store_ref, shared)?,
            spec,
        })
    }
}

impl Generate for GcpAccessTokenGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let token = mint(
            &self.conn,
            &self.spec.service_account_email,
            &self.spec.delegates,
            &self.spec.scopes,
            self.spec.lifetime,
            ctx.max_ttl,
        )
        .await?;
        Ok(Credential {
            data: BTreeMap::from([(
                "access_token".to_owned(),
                token.token.expose_secret().to_owned(),
            )]),
            expires_at: Some(token.expires_at),
            renewable: false,
            lease: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::within_max_ttl;
    use crate::{BackendError, GeneratorKind, GeneratorSpec};

    #[test]
    fn a_token_outliving_max_ttl_is_refused() {
        let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let mins = |m: u64| std::time::Duration::from_secs(m * 60);
        let in_20m = now + jiff::SignedDuration::from_mins(20);
        assert!(within_max_ttl(in_20m, now, mins(20)).is_ok());
        assert!(within_max_ttl(in_20m, now, mins(60)).is_ok());
        // Google's clock a few seconds ahead of ours.
        let skewed = in_20m + jiff::SignedDuration::from_secs(4);
        assert!(within_max_ttl(skewed, now, mins(20)).is_ok());
        let e = within_max_ttl(in_20m, now, mins(5)).unwrap_err();
        let BackendError::Rejected { message, detail } = &e else {
            panic!("{e:?}")
        };
        assert!(
            message.contains("would live 20m")
                && message.contains("maxTTL of 5m")
                && message.contains("dropped, not handed out"),
            "{message}"
        );
        assert!(detail.starts_with("google iam credentials: "), "{detail}");
    }

    #[test]
    fn round_trips_and_rejects_unknown_keys() {
        let j = serde_json::json!({
            "secretStoreRef": {"name": "gcp"},
            "serviceAccountEmail": "app@proj.iam.gserviceaccount.com",
            "scopes": ["https://www.googleapis.com/auth/devstorage.read_only"],
            "lifetime": "15m",
            "delegates": ["mid@proj.iam.gserviceaccount.com"],
        });
        let spec = GeneratorSpec::from_manifest(GeneratorKind::GcpAccessToken, j.clone()).unwrap();
        let GeneratorSpec::GcpAccessToken(s) = &spec else {
            panic!()
        };
        assert_eq!(
            GeneratorSpec::from_manifest(
                GeneratorKind::GcpAccessToken,
                serde_json::to_value(s).unwrap()
            )
            .unwrap(),
            spec
        );
        for (field, value, expect) in [
            (
                "audience",
                serde_json::json!("x"),
                "unknown field `audience`",
            ),
            ("lifetime", serde_json::json!("13h"), "spec.lifetime"),
            ("lifetime", serde_json::json!("soon"), "spec.lifetime"),
            (
                "serviceAccountEmail",
                serde_json::json!("nobody"),
                "spec.serviceAccountEmail",
            ),
            (
                "delegates",
                serde_json::json!(["bad name"]),
                "spec.delegates[0]",
            ),
            ("scopes", serde_json::json!([]), "spec.scopes"),
        ] {
            let mut b = j.clone();
            b[field] = value;
            let err = GeneratorSpec::from_manifest(GeneratorKind::GcpAccessToken, b).unwrap_err();
            assert!(err.to_string().contains(expect), "{field}: {err}");
        }
        let store = serde_json::json!({"provider": {"gcp": {"iamCredentialsEndpoint": "http://127.0.0.1:1", "keyFile": "/x"}}});
        assert!(
            crate::SecretStoreSpec::from_manifest(store)
                .unwrap_err()
                .to_string()
                .contains("unknown field `keyFile`")
        );
    }
}
