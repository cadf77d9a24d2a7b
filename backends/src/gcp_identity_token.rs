//! `GCPIdentityToken`: a Google-signed OpenID Connect ID token of a service account, minted by
//! impersonation through IAM Credentials `generateIdToken` with the federation's own
//! credentials (the `gcp` SecretStore), as `gcloud auth print-identity-token
//! --impersonate-service-account` makes one. It is what Cloud Run, Cloud Functions and
//! Identity-Aware Proxy take as a caller's proof: a workload in any cluster calls a private
//! Cloud Run service with `Authorization: Bearer <id_token>`, no key file anywhere.
//!
//! `audience` is what the receiving service checks (the Cloud Run service's URL, or an IAP
//! OAuth client id); `includeEmail` adds the `email` and `email_verified` claims (IAP and some
//! apps want them). The store's identity needs `iam.serviceAccounts.getOpenIdToken` on the
//! service account (`roles/iam.serviceAccountOpenIdTokenCreator`, or
//! `roles/iam.serviceAccountTokenCreator`, which holds it too), through `delegates` if any.
//!
//! Returns `id_token`, and `expiresAt` read from the token's own `exp`. Google's ID tokens live
//! one hour and cannot be shortened or revoked: an Authorization whose `maxTTL` is shorter is
//! refused before anything is minted, and a token whose `exp` outlives `maxTTL` all the same is
//! dropped, never handed out.
//!
//! ```yaml
//! kind: GCPIdentityToken
//! spec:
//!   secretStoreRef: {name: gcp}
//!   serviceAccountEmail: invoker@proj.iam.gserviceaccount.com
//!   audience: https://payments-api-abc123-ew.a.run.app
//!   includeEmail: true                        # optional (default false)
//!   delegates: [mid@proj.iam.gserviceaccount.com]   # optional
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use kube::CustomResource;
use schemars::JsonSchema;
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};

use crate::gcp::GcpConn;
use crate::store::SecretStoreRef;
use crate::{BackendError, Context, Credential, Generate, SecretStoreSpec, SpecError};

/// How long Google's ID tokens live (fixed: `generateIdToken` takes no lifetime).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// The longest `audience` taken: Google documents no limit, and an audience is a URL or a
/// client id; a longer one is a mistake, not a service.
const MAX_AUDIENCE: usize = 1024;

/// `spec` of a `GCPIdentityToken` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "GCPIdentityToken",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcpIdentityTokenSpec {
    /// The `gcp` SecretStore whose identity impersonates.
    pub secret_store_ref: SecretStoreRef,
    /// The service account whose ID token is minted (`invoker@project.iam.gserviceaccount.com`).
    pub service_account_email: String,
    /// The token's `aud`: what the receiving service checks (a Cloud Run URL, an IAP client id).
    pub audience: String,
    /// Add the `email` and `email_verified` claims (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_email: bool,
    /// Delegation chain of service accounts, each granting token creation to the next.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegates: Vec<String>,
}

impl GcpIdentityTokenSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        crate::gcp::validate_impersonation(&self.service_account_email, &self.delegates)?;
        if self.audience.is_empty()
            || self.audience.len() > MAX_AUDIENCE
            || !self.audience.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(SpecError::field(
                "audience",
                format!(
                    "must be 1 to {MAX_AUDIENCE} visible ASCII characters, such as the Cloud \
                     Run service's URL"
                ),
            ));
        }
        Ok(())
    }
}

/// The built `GCPIdentityToken` generator.
#[derive(Debug)]
pub struct GcpIdentityTokenGenerator {
    spec: GcpIdentityTokenSpec,
    conn: std::sync::Arc<GcpConn>,
}

impl GcpIdentityTokenGenerator {
    /// Builds the generator on its store's shared connection.
    pub fn new(
        spec: GcpIdentityTokenSpec,
        store: Option<&SecretStoreSpec>,
        shared: &mut crate::Shared,
    ) -> Result<Self, SpecError> {
        spec.validate()?;
        Ok(GcpIdentityTokenGenerator {
            conn: crate::gcp::shared_conn(store, &spec.secret_store_ref, shared)?,
            spec,
        })
    }
}

/// The `exp` of a JWT, read from its payload without checking its signature: the receiving
/// service checks that; the federation only needs to say when the token stops working.
fn expiry(token: &str) -> Option<jiff::Timestamp> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    #[derive(Deserialize)]
    struct Claims {
        exp: i64,
    }
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    jiff::Timestamp::from_second(claims.exp).ok()
}

/// What a token outliving maxTTL is called and what became of it.
const OVER_MAX_TTL: (&str, &str, &str) = (
    "Google's ID token",
    "it was dropped, not handed out (Google cannot revoke one; it expires unused)",
    "google iam credentials",
);

impl Generate for GcpIdentityTokenGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        if let Some(max) = ctx.max_ttl
            && max + crate::credential::CLOCK_LEEWAY < TOKEN_LIFETIME
        {
            return Err(BackendError::Rejected {
                message: format!(
                    "Google's ID tokens live one hour and cannot be shortened; this \
                     Authorization's maxTTL is {}s",
                    max.as_secs()
                ),
                detail: format!("google iam credentials: maxTTL {max:?} below an hour"),
            });
        }
        let token = self
            .conn
            .generate_id_token(
                &self.spec.service_account_email,
                &self.spec.delegates,
                &self.spec.audience,
                self.spec.include_email,
            )
            .await?;
        let expires_at =
            expiry(token.expose_secret()).ok_or_else(|| BackendError::Unavailable {
                message: "google iam credentials returned an ID token without a readable expiry"
                    .to_owned(),
                detail: "generateIdToken response: the token's payload has no readable exp"
                    .to_owned(),
            })?;
        if let Some(max) = ctx.max_ttl {
            crate::credential::within_max_ttl(
                expires_at,
                jiff::Timestamp::now(),
                max,
                OVER_MAX_TTL,
            )?;
        }
        Ok(Credential {
            data: BTreeMap::from([("id_token".to_owned(), token.expose_secret().to_owned())]),
            expires_at: Some(expires_at),
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
    fn round_trips_and_rejects_unknown_keys_and_bad_values() {
        let j = serde_json::json!({
            "secretStoreRef": {"name": "gcp"},
            "serviceAccountEmail": "invoker@proj.iam.gserviceaccount.com",
            "audience": "https://payments-abc123-ew.a.run.app",
            "includeEmail": true,
            "delegates": ["mid@proj.iam.gserviceaccount.com"],
        });
        let parse = |j| GeneratorSpec::from_manifest(GeneratorKind::GcpIdentityToken, j);
        let spec = parse(j.clone()).unwrap();
        let GeneratorSpec::GcpIdentityToken(s) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(parse(serde_json::to_value(s).unwrap()).unwrap(), spec);
        for (field, value, expect) in [
            (
                "lifetime",
                serde_json::json!("30m"),
                "unknown field `lifetime`",
            ),
            ("audience", serde_json::json!(""), "spec.audience"),
            ("audience", serde_json::json!("a b"), "spec.audience"),
            (
                "audience",
                serde_json::json!("x".repeat(MAX_AUDIENCE + 1)),
                "spec.audience",
            ),
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
        ] {
            let mut b = j.clone();
            b[field] = value;
            let err = parse(b).unwrap_err().to_string();
            assert!(err.contains(expect), "{field}: {err}");
        }
        let mut b = j.clone();
        b.as_object_mut().unwrap().remove("audience");
        assert!(
            parse(b)
                .unwrap_err()
                .to_string()
                .contains("missing field `audience`")
        );
    }

    #[test]
    fn expiry_is_read_from_the_payload_and_anything_else_is_none() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jwt = |payload: &str| format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64(payload));
        assert_eq!(
            expiry(&jwt(r#"{"aud":"x","exp":1700003600,"iat":1700000000}"#)),
            jiff::Timestamp::from_second(1_700_003_600).ok()
        );
        for bad in [
            jwt(r#"{"aud":"x"}"#),
            jwt(r#"{"exp":"soon"}"#),
            jwt("not json"),
            "no-dots".to_owned(),
            "a.%%%.c".to_owned(),
            String::new(),
        ] {
            assert_eq!(expiry(&bad), None, "{bad}");
        }
    }
}
