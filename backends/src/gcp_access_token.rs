//! `GCPAccessToken`: an OAuth access token of a Google service account, minted by
//! impersonation through IAM Credentials `generateAccessToken` with the federation's own
//! credentials (the `gcp` SecretStore). Returns `access_token` and `expiresAt` from Google's
//! `expireTime`. Google access tokens cannot be revoked one by one through IAM Credentials,
//! so there is no lease; keep `lifetime` short.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::gcp::GcpConn;
use crate::store::{SecretStoreRef, StoreProvider};
use crate::{BackendError, Context, Credential, Generate, SecretStoreSpec, SpecError};

const BACKEND: &str = "google iam credentials";
/// The longest lifetime Google allows (with the org policy that extends it).
pub const MAX_LIFETIME: Duration = Duration::from_secs(12 * 3600);

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

fn valid_account(s: &str) -> bool {
    let (user, domain) = s.split_once('@').unwrap_or(("", ""));
    !user.is_empty()
        && domain.contains('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@.-_".contains(&b))
}

impl GcpAccessTokenSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !valid_account(&self.service_account_email) {
            return Err(SpecError::field(
                "serviceAccountEmail",
                format!(
                    "{:?} is not a service account email",
                    self.service_account_email
                ),
            ));
        }
        if self.scopes.is_empty() {
            return Err(SpecError::field("scopes", "must name at least one scope"));
        }
        if let Some(l) = self.lifetime
            && (l.get() < Duration::from_secs(1) || l.get() > MAX_LIFETIME)
        {
            return Err(SpecError::field("lifetime", "must be between 1s and 12h"));
        }
        for (i, d) in self.delegates.iter().enumerate() {
            let email = d.strip_prefix("projects/-/serviceAccounts/").unwrap_or(d);
            if !valid_account(email) {
                return Err(SpecError::field(
                    format!("delegates[{i}]"),
                    format!("{d:?} is not a service account email"),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct GenerateRequest<'a> {
    delegates: Vec<String>,
    scope: &'a [String],
    lifetime: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateResponse {
    access_token: String,
    expire_time: String,
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
        conns: &mut crate::store::Conns<GcpConn>,
    ) -> Result<Self, SpecError> {
        spec.validate()?;
        let provider = crate::store::require(store, &spec.secret_store_ref, "gcp", |p| match p {
            StoreProvider::Gcp(g) => Some(g),
            #[allow(unreachable_patterns)]
            _ => None,
        })?;
        Ok(GcpAccessTokenGenerator {
            conn: conns.get(provider, GcpConn::new)?,
            spec,
        })
    }
}

impl Generate for GcpAccessTokenGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let mut lifetime = self
            .spec
            .lifetime
            .map_or(Duration::from_secs(3600), HumanDuration::get);
        if let Some(max) = ctx.max_ttl {
            lifetime = lifetime.min(max);
        }
        let lifetime = lifetime.as_secs().max(1);
        let source = self.conn.source_token().await?;
        let url = format!(
            "{}/v1/projects/-/serviceAccounts/{}:generateAccessToken",
            self.conn.endpoint, self.spec.service_account_email
        );
        let body = GenerateRequest {
            delegates: self
                .spec
                .delegates
                .iter()
                .map(|d| {
                    if d.starts_with("projects/") {
                        d.clone()
                    } else {
                        format!("projects/-/serviceAccounts/{d}")
                    }
                })
                .collect(),
            scope: &self.spec.scopes,
            lifetime: format!("{lifetime}s"),
        };
        let req = self
            .conn
            .http
            .post(&url)
            .bearer_auth(source.as_str())
            .json(&body);
        let (status, bytes) = crate::http::send(BACKEND, req).await?;
        if !status.is_success() {
            let summary = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.pointer("/error/message")
                        .and_then(|m| m.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| format!("{} byte body", bytes.len()));
            return Err(crate::http::status_error(
                BACKEND,
                status,
                &format!("{}: {summary}", self.spec.service_account_email),
            ));
        }
        let resp: GenerateResponse =
            esi_api::json::from_answer(&bytes).map_err(|e| BackendError::Unavailable {
                message: "google iam credentials returned an unreadable response".to_owned(),
                detail: format!("generateAccessToken response: {e}"),
            })?;
        let expires_at =
            resp.expire_time
                .parse::<jiff::Timestamp>()
                .map_err(|e| BackendError::Unavailable {
                    message: "google iam credentials returned an unreadable expiry".to_owned(),
                    detail: format!("expireTime {:?}: {e}", resp.expire_time),
                })?;
        Ok(Credential {
            data: BTreeMap::from([("access_token".to_owned(), resp.access_token)]),
            expires_at: Some(expires_at),
            renewable: false,
            lease: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{GeneratorKind, GeneratorSpec};

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
