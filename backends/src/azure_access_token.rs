//! `AzureAccessToken`: a Microsoft Entra ID access token of an app registration or a
//! user-assigned managed identity, for one resource (Azure Storage, Azure Database for
//! PostgreSQL and MySQL, Azure SQL, Service Bus, Event Hubs, Key Vault, Microsoft Graph, an
//! API of one's own), through Entra ID's workload identity federation: the Azure counterpart
//! of `AWSAssumeRole` and `GCPAccessToken`, from any cluster, with no secret anywhere.
//!
//! The federation signs an identity token for the caller with its own OIDC issuer (see
//! [`crate::identity`]; `sub` = `<cluster>:system:serviceaccount:<namespace>:<name>`, `aud`
//! `audience`) and presents it to Entra ID as the app's client assertion:
//! `POST {authorityHost}{tenantId}/oauth2/v2.0/token` with `grant_type=client_credentials`,
//! `client_id`, `scope`, `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`
//! and `client_assertion` (RFC 7521/7523, as every Azure SDK sends a federated token). Entra ID
//! takes it when one of the app's federated identity credentials names the federation's issuer
//! URL, the caller's subject and the audience, and the signature verifies under the issuer's
//! published keys (it fetches the discovery document and JWKS itself, over `https`). So each
//! app trusts exactly the workloads its federated credentials name (Entra ID allows 20 per
//! app), set in Azure, and the generator's Authorization decides who may ask at all: both must
//! agree. Unlike the `azure` SecretStore's `workloadIdentity.selfIssued` (the federation's own
//! identity, `sub` `esi-federation`), the token is the caller's: no SecretStore.
//!
//! The identity token lives five minutes (shortened to the Authorization's `maxTTL`); its `aud`
//! is `audience`, by default Entra ID's for the cloud of `authorityHost`:
//! `api://AzureADTokenExchange`, `api://AzureADTokenExchangeUSGov` for
//! `https://login.microsoftonline.us/`, `api://AzureADTokenExchangeChina` for
//! `https://login.chinacloudapi.cn/`. Entra ID verifies RSA signatures only (RS256): the
//! federation's signing key (the first of its issuer keys) must be an RSA key, or a
//! configuration naming this kind does not load.
//!
//! `scope` is one resource's `.default` scope (`https://storage.azure.com/.default`): the
//! client credentials grant takes no other. The credential is `access_token`, a bearer token for
//! that resource (for Azure Database for PostgreSQL or MySQL, the password), expiring when
//! Entra ID's `expires_in` says. Entra ID's access tokens live 60 to 90 minutes (a random
//! lifetime, unless a token lifetime policy sets another) and can be neither shortened nor
//! revoked: one outliving the Authorization's `maxTTL` is dropped, never handed out, and the
//! request refused, so give this kind's Authorizations a `maxTTL` of 90 minutes or more.
//!
//! Entra ID's 400 and 401 (no federated credential matches, an unknown app or tenant, a scope
//! the app cannot ask for) refuse the caller's request (`backend_rejected`) with Entra ID's own
//! first line (`AADSTS70021: No matching federated identity record found ...`) and what the
//! app's federated credential must say; 429, 5xx and timeouts are `backend_unavailable`.
//!
//! The federation must be configured as an issuer (`--issuer-url` and its keys); a
//! configuration naming this kind is refused at load by a federation that is not.
//!
//! ```yaml
//! kind: AzureAccessToken
//! spec:
//!   tenantId: 72f988bf-86f1-41af-91ab-2d7cd011db47   # the app's tenant (or its domain)
//!   clientId: 3c1b7e2a-5d4f-4e8b-9a61-0f2d8c7b6e15   # the app registration or user-assigned
//!                                  # managed identity; its federated identity credential:
//!                                  # issuer = the federation's issuer URL, subject =
//!                                  # prod-eu:system:serviceaccount:payments:api,
//!                                  # audience = api://AzureADTokenExchange
//!   scope: https://storage.azure.com/.default
//!   authorityHost: https://login.microsoftonline.com/   # default; a sovereign cloud's
//!   audience: api://AzureADTokenExchange                 # default: the cloud's
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::CustomResource;
use schemars::JsonSchema;
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};

use crate::azure::{FEDERATED_TOKEN_AUDIENCE, JWT_BEARER_ASSERTION};
use crate::identity::Issuer;
use crate::token_exchange::{self, OverMaxTtl};
use crate::{BackendError, Context, Credential, Generate, SpecError};

/// The federated token audience of Azure Government.
pub const US_GOV_AUDIENCE: &str = "api://AzureADTokenExchangeUSGov";
/// The federated token audience of Azure operated by 21Vianet (China).
pub const CHINA_AUDIENCE: &str = "api://AzureADTokenExchangeChina";
/// The longest `scope` taken.
pub const MAX_SCOPE_LEN: usize = 1024;

const BACKEND: &str = "Microsoft Entra ID";

/// What the log calls the endpoint.
const ENDPOINT: &str = "entra id token endpoint";

/// What a token outliving maxTTL is called and what became of it.
const OVER_MAX_TTL: OverMaxTtl = (
    "the Entra ID access token",
    "it was dropped, not handed out (Entra ID cannot revoke or shorten one; its tokens live \
     60 to 90 minutes unless a token lifetime policy says otherwise)",
    "entra id",
);

/// `spec` of an `AzureAccessToken` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "AzureAccessToken",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureAccessTokenSpec {
    /// The Entra ID tenant (directory) of the app: its ID (a GUID) or a verified domain.
    pub tenant_id: String,
    /// The application (client) ID of the app registration or user-assigned managed identity
    /// whose federated identity credential trusts the federation's issuer for the caller's
    /// subject (`<cluster>:system:serviceaccount:<namespace>:<name>`).
    pub client_id: String,
    /// The one resource's `.default` scope asked for (`https://storage.azure.com/.default`).
    pub scope: String,
    /// The Entra ID authority (default `https://login.microsoftonline.com/`; a sovereign
    /// cloud's, or an `http://` loopback URL for a local fake).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority_host: Option<String>,
    /// The identity token's `aud`, which the federated credential names (default: the cloud's,
    /// `api://AzureADTokenExchange` on the public one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

impl AzureAccessTokenSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !crate::azure::is_guid(&self.tenant_id) && !crate::azure::is_dns_name(&self.tenant_id) {
            return Err(SpecError::field(
                "tenantId",
                format!(
                    "{:?} is not a tenant ID (a GUID) or a tenant's domain name",
                    self.tenant_id
                ),
            ));
        }
        if !crate::azure::is_guid(&self.client_id) {
            return Err(SpecError::field(
                "clientId",
                format!(
                    "{:?} is not an application (client) ID (a GUID)",
                    self.client_id
                ),
            ));
        }
        check_scope(&self.scope).map_err(|why| SpecError::field("scope", why))?;
        if let Some(aud) = &self.audience {
            crate::identity_token::check_audience(aud)
                .map_err(|why| SpecError::field("audience", why))?;
        }
        self.token_url()?;
        Ok(())
    }

    /// The identity token's `aud`: `audience`, else the federated token audience of the cloud
    /// `authorityHost` names.
    pub fn token_audience(&self) -> String {
        if let Some(aud) = &self.audience {
            return aud.clone();
        }
        let host = self
            .authority_host
            .as_deref()
            .and_then(|a| reqwest::Url::parse(a).ok())
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
        match host.as_deref() {
            Some("login.microsoftonline.us") => US_GOV_AUDIENCE,
            Some("login.chinacloudapi.cn" | "login.partner.microsoftonline.cn") => CHINA_AUDIENCE,
            _ => FEDERATED_TOKEN_AUDIENCE,
        }
        .to_owned()
    }

    /// `{authorityHost}{tenantId}/oauth2/v2.0/token`.
    fn token_url(&self) -> Result<reqwest::Url, SpecError> {
        crate::azure::token_url(
            self.authority_host.as_deref(),
            &self.tenant_id,
            "authorityHost",
        )
    }
}

/// Why `scope` is not one resource's `.default` scope: a resource (an `https://` or `api://`
/// URI, or an application ID) followed by `/.default`, one scope, no whitespace.
fn check_scope(scope: &str) -> Result<(), String> {
    let says = "must be one resource's .default scope, such as \
                https://storage.azure.com/.default (the client credentials grant takes no other)";
    if scope.is_empty()
        || scope.len() > MAX_SCOPE_LEN
        || scope.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("{scope:?} {says}"));
    }
    let Some(resource) = scope.strip_suffix("/.default") else {
        return Err(format!("{scope:?} {says}"));
    };
    let uri = ["https://", "api://"]
        .iter()
        .find_map(|p| resource.strip_prefix(p))
        .is_some_and(|rest| {
            let host = rest.split('/').next().unwrap_or_default();
            !host.is_empty() && !rest.contains(['?', '#', '@'])
        });
    if uri || crate::azure::is_guid(resource) {
        Ok(())
    } else {
        Err(format!("{scope:?} {says}"))
    }
}

/// The built `AzureAccessToken` generator.
#[derive(Debug)]
pub struct AzureAccessTokenGenerator {
    client_id: String,
    scope: String,
    audiences: [String; 1],
    token_url: reqwest::Url,
    client: reqwest::Client,
    issuer: Option<Arc<Issuer>>,
}

impl AzureAccessTokenGenerator {
    /// Builds the generator on the federation's issuer (`None` where the configuration is
    /// only checked, see [`crate::Shared::with_issuer`]). No I/O.
    pub fn new(spec: AzureAccessTokenSpec, issuer: Option<Arc<Issuer>>) -> Result<Self, SpecError> {
        spec.validate()?;
        if let Some(issuer) = &issuer {
            token_exchange::require_rs256(issuer, BACKEND)?;
        }
        Ok(AzureAccessTokenGenerator {
            client: crate::http::client(None, crate::http::DEFAULT_TIMEOUT, "authorityHost")?,
            token_url: spec.token_url()?,
            audiences: [spec.token_audience()],
            client_id: spec.client_id,
            scope: spec.scope,
            issuer,
        })
    }
}

/// Entra ID's answer to a successful token request.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    /// Seconds; a number, or a number as text (the v1 endpoint's habit).
    expires_in: serde_json::Value,
}

/// The first line of Entra ID's `error_description` (`AADSTS70021: ...`, without the trace
/// and correlation ids that follow), control characters dropped, at most 300 characters: it
/// reaches the caller. Entra ID's refusals name the assertion's issuer, subject and audience,
/// which are the caller's own, never the assertion.
fn entra_said(body: &[u8]) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(body).ok()?;
    let text = body.get("error_description")?.as_str()?;
    // The trace ids follow on a line of their own, or (newer answers) after a space.
    let first = text.lines().next().unwrap_or_default();
    let first = first.split(" Trace ID:").next().unwrap_or_default();
    let clean: String = first
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect();
    (!clean.trim().is_empty()).then(|| clean.trim().to_owned())
}

impl Generate for AzureAccessTokenGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let (issuer, assertion) = token_exchange::mint(self.issuer.as_ref(), ctx, &self.audiences)?;
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("scope", self.scope.as_str()),
            ("client_assertion_type", JWT_BEARER_ASSERTION),
            ("client_assertion", assertion.token.expose_secret()),
        ];
        let (status, body) = crate::http::send(
            BACKEND,
            self.client
                .post(self.token_url.clone())
                .header(reqwest::header::ACCEPT, "application/json")
                .form(&form),
        )
        .await?;
        if status.is_client_error()
            && status != reqwest::StatusCode::TOO_MANY_REQUESTS
            && status != reqwest::StatusCode::REQUEST_TIMEOUT
        {
            // The app, its federated credentials or the scope: what the generator names, and
            // the caller's subject among the credentials. Nothing of the federation's own.
            let said = entra_said(&body).unwrap_or_else(|| "no reason given".to_owned());
            let subject = crate::identity::subject(ctx.identity);
            return Err(BackendError::Rejected {
                message: format!(
                    "Microsoft Entra ID refused the federation's identity token for app {} \
                     (scope {}): {said} (one of the app's federated identity credentials must \
                     name issuer {}, subject {subject} and audience {})",
                    self.client_id,
                    self.scope,
                    issuer.url(),
                    self.audiences[0]
                ),
                detail: format!(
                    "entra id token request {} for {}: {}: {}",
                    self.token_url,
                    self.client_id,
                    status.as_u16(),
                    crate::http::oauth_error(&body)
                ),
            });
        }
        if !status.is_success() {
            return Err(crate::http::status_error(
                BACKEND,
                status,
                &format!(
                    "token request {} for {}: {}",
                    self.token_url,
                    self.client_id,
                    crate::http::oauth_error(&body)
                ),
            ));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
            token_exchange::unreadable(
                BACKEND,
                ENDPOINT,
                "the answer is not {\"access_token\", \"expires_in\", ...} JSON",
            )
        })?;
        if answer.access_token.is_empty() {
            return Err(token_exchange::unreadable(
                BACKEND,
                ENDPOINT,
                "empty access_token",
            ));
        }
        let lives = match &answer.expires_in {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        }
        .filter(|s| *s > 0 && *s <= MAX_LIFETIME.as_secs())
        .ok_or_else(|| {
            token_exchange::unreadable(
                BACKEND,
                ENDPOINT,
                "expires_in is not a number of seconds from 1 to a day",
            )
        })?;
        let now = jiff::Timestamp::now();
        let expires_at =
            now + jiff::SignedDuration::from_secs(i64::try_from(lives).unwrap_or(i64::MAX));
        if let Some(max) = ctx.max_ttl {
            crate::credential::within_max_ttl(expires_at, now, max, OVER_MAX_TTL)?;
        }
        Ok(Credential {
            data: BTreeMap::from([("access_token".to_owned(), answer.access_token)]),
            expires_at: Some(expires_at),
            renewable: false,
            lease: None,
        })
    }
}

/// The longest lifetime taken from Entra ID's `expires_in` (a token lifetime policy allows a
/// day at most).
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GeneratorKind, GeneratorSpec};

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const CLIENT: &str = "3c1b7e2a-5d4f-4e8b-9a61-0f2d8c7b6e15";

    fn spec(json: serde_json::Value) -> Result<AzureAccessTokenSpec, SpecError> {
        match GeneratorSpec::from_manifest(GeneratorKind::AzureAccessToken, json)? {
            GeneratorSpec::AzureAccessToken(s) => Ok(s),
            other => panic!("{other:?}"),
        }
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "tenantId": TENANT,
            "clientId": CLIENT,
            "scope": "https://storage.azure.com/.default",
        })
    }

    #[test]
    fn defaults_to_the_public_cloud_and_its_exchange_audience() {
        let s = spec(base()).unwrap();
        let g = AzureAccessTokenGenerator::new(s.clone(), None).unwrap();
        assert_eq!(
            g.token_url.as_str(),
            format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token")
        );
        assert_eq!(g.audiences, ["api://AzureADTokenExchange".to_owned()]);
        assert_eq!(
            GeneratorSpec::from_manifest(
                GeneratorKind::AzureAccessToken,
                serde_json::to_value(&s).unwrap()
            )
            .unwrap(),
            GeneratorSpec::AzureAccessToken(s)
        );
    }

    #[test]
    fn a_sovereign_cloud_brings_its_own_audience_unless_one_is_given() {
        for (authority, audience) in [
            ("https://login.microsoftonline.us/", US_GOV_AUDIENCE),
            ("https://login.chinacloudapi.cn", CHINA_AUDIENCE),
            (
                "https://login.microsoftonline.com/",
                FEDERATED_TOKEN_AUDIENCE,
            ),
        ] {
            let mut j = base();
            j["authorityHost"] = authority.into();
            let s = spec(j.clone()).unwrap();
            assert_eq!(s.token_audience(), audience, "{authority}");
            assert!(
                s.token_url()
                    .unwrap()
                    .as_str()
                    .ends_with(&format!("/{TENANT}/oauth2/v2.0/token")),
                "{authority}"
            );
            j["audience"] = "api://custom".into();
            assert_eq!(spec(j).unwrap().token_audience(), "api://custom");
        }
    }

    #[test]
    fn scopes_are_one_resources_default_scope() {
        for ok in [
            "https://storage.azure.com/.default",
            "https://ossrdbms-aad.database.windows.net/.default",
            "https://graph.microsoft.com/.default",
            "api://payments-api/.default",
            "https://contoso.onmicrosoft.com/api/.default",
            "00000003-0000-0000-c000-000000000000/.default",
        ] {
            assert_eq!(check_scope(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "https://storage.azure.com",
            "https://storage.azure.com/user_impersonation",
            "https://storage.azure.com/.default openid",
            "https://storage.azure.com/.default offline_access",
            "/.default",
            "https:///.default",
            "storage/.default",
            "https://u@storage.azure.com/.default",
            "https://storage.azure.com/?x=1/.default",
            "https://storage.azure.com/\n/.default",
        ] {
            let err = check_scope(bad).unwrap_err();
            assert!(
                err.contains("one resource's .default scope"),
                "{bad}: {err}"
            );
        }
        assert!(check_scope(&format!("https://{}/.default", "a".repeat(MAX_SCOPE_LEN))).is_err());
    }

    #[test]
    fn bad_specs_name_their_field() {
        for (field, value, says) in [
            (
                "tenantId",
                serde_json::json!("not a tenant"),
                "spec.tenantId",
            ),
            (
                "clientId",
                serde_json::json!("payments-app"),
                "spec.clientId",
            ),
            ("scope", serde_json::json!("openid"), "spec.scope"),
            ("audience", serde_json::json!(""), "spec.audience"),
            (
                "authorityHost",
                serde_json::json!("http://login.example/"),
                "spec.authorityHost",
            ),
            (
                "clientSecret",
                serde_json::json!("x"),
                "unknown field `clientSecret`",
            ),
        ] {
            let mut j = base();
            j[field] = value;
            let err = spec(j).unwrap_err().to_string();
            assert!(err.contains(says), "{field}: {err}");
        }
        let mut j = base();
        j.as_object_mut().unwrap().remove("scope");
        assert!(spec(j).unwrap_err().to_string().contains("scope"));
    }

    #[test]
    fn entras_words_reach_the_caller_without_its_trace_lines() {
        let body = serde_json::json!({
            "error": "invalid_client",
            "error_description": "AADSTS70021: No matching federated identity record found for presented assertion.\r\nTrace ID: 0f3c\r\nCorrelation ID: 9a1e",
            "error_codes": [70021],
        });
        assert_eq!(
            entra_said(body.to_string().as_bytes()).as_deref(),
            Some(
                "AADSTS70021: No matching federated identity record found for presented assertion."
            )
        );
        let inline = serde_json::json!({"error_description": "AADSTS700211: No matching federated identity record found for presented assertion issuer 'https://esi.example'. Trace ID: 93eb Correlation ID: 8f04 Timestamp: 2024-03-01 07:41:07Z"});
        assert_eq!(
            entra_said(inline.to_string().as_bytes()).as_deref(),
            Some(
                "AADSTS700211: No matching federated identity record found for presented assertion issuer 'https://esi.example'."
            )
        );
        assert_eq!(entra_said(b"<html>"), None);
        assert_eq!(entra_said(br#"{"error_description": " "}"#), None);
        let long = serde_json::json!({"error_description": "x\u{7}".repeat(400)});
        assert_eq!(entra_said(long.to_string().as_bytes()).unwrap().len(), 300);
    }
}
