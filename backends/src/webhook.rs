//! `Webhook`: calls an HTTP endpoint and maps its JSON answer to the credential (External
//! Secrets Operator parity), plus the `webhook` SecretStore provider that governs it.
//!
//! The store holds what the platform team decides: `allowedUrls` (the only endpoints its
//! generators may call — no SSRF through a generator manifest), the CA bundle, the timeout
//! and secret headers read from the federation's environment or files. The generator holds
//! the call: `url` (must fall under an allowed URL), `method`, plain `headers`, a `body`
//! template over the verified identity ([`crate::template`], values JSON-escaped), and
//! `result.jsonPath` selecting what to return. Redirects are never followed.
//!
//! The Authorization's `maxTTL` holds: the body can pass it on as `{{maxTTLSeconds}}`, and an
//! answer whose `expiresAt` lies later than now + maxTTL (5 s of leeway for the endpoint's
//! clock), or that reports no expiry, is refused and never handed out (the endpoint has no
//! revoke call: its credential lives until it expires).
//!
//! ```yaml
//! kind: SecretStore
//! spec:
//!   provider:
//!     webhook:
//!       allowedUrls: ["https://creds.internal.example/api/"]
//!       headers: {Authorization: {file: /var/run/secrets/creds-api/header}}
//! ---
//! kind: Webhook
//! spec:
//!   secretStoreRef: {name: creds-api}
//!   url: https://creds.internal.example/api/issue
//!   body: '{"namespace": "{{namespace}}", "sa": "{{serviceAccount}}"}'
//!   result: {jsonPath: "$.credentials", expiresAtJsonPath: "$.expiresAt"}
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use kube::CustomResource;
use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};
use schemars::JsonSchema;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::credential::value_string;
use crate::duration::HumanDuration;
use crate::store::{SecretStoreRef, StoreProvider};
use crate::template::{Template, json_escape};
use crate::{BackendError, Context, Credential, Generate, SecretRef, SecretStoreSpec, SpecError};

const BACKEND: &str = "webhook";

/// The `webhook` SecretStore provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookProvider {
    /// URL prefixes generators on this store may call (scheme, host and port must match
    /// exactly; the path must start with the prefix's path).
    pub allowed_urls: Vec<String>,
    /// PEM certificates trusted (in addition to the system roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// Timeout of each call (default `10s`, at most `60s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Secret request headers, read from the federation's environment or files.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, SecretRef>,
}

impl WebhookProvider {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.allowed_urls.is_empty() {
            return Err(SpecError::field(
                "provider.webhook.allowedUrls",
                "must name at least one URL",
            ));
        }
        for (i, u) in self.allowed_urls.iter().enumerate() {
            parse_url(u, &format!("provider.webhook.allowedUrls[{i}]"))?;
        }
        if self
            .timeout
            .is_some_and(|t| t.get().is_zero() || t.get() > Duration::from_secs(60))
        {
            return Err(SpecError::field(
                "provider.webhook.timeout",
                "must be between 1ms and 60s",
            ));
        }
        for (name, r) in &self.headers {
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                SpecError::field(
                    format!("provider.webhook.headers.{name}"),
                    "is not a header name",
                )
            })?;
            r.validate(&format!("provider.webhook.headers.{name}"))?;
        }
        if let Some(pem) = &self.ca_bundle {
            crate::http::check_ca_bundle(pem, "provider.webhook.caBundle")?;
        }
        Ok(())
    }

    /// Whether `url` falls under one of the allowed URLs.
    pub fn allows(&self, url: &Url) -> bool {
        self.allowed_urls
            .iter()
            .filter_map(|a| Url::parse(a).ok())
            .any(|a| under(url, &a))
    }
}

fn parse_url(s: &str, field: &str) -> Result<Url, SpecError> {
    let url =
        Url::parse(s).map_err(|e| SpecError::field(field, format!("{s:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(SpecError::field(
            field,
            format!("{s:?} is not an http(s) URL"),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SpecError::field(
            field,
            "must not carry credentials; use the store's headers",
        ));
    }
    if url.fragment().is_some() {
        return Err(SpecError::field(field, "must not have a fragment"));
    }
    Ok(url)
}

/// `url` lies under `allowed`: same scheme, host and effective port, path prefix on a
/// segment boundary.
fn under(url: &Url, allowed: &Url) -> bool {
    if url.scheme() != allowed.scheme()
        || url.host() != allowed.host()
        || url.port_or_known_default() != allowed.port_or_known_default()
    {
        return false;
    }
    let prefix = allowed.path();
    let path = url.path();
    prefix == "/"
        || path == prefix
        || (path.starts_with(prefix)
            && (prefix.ends_with('/') || path[prefix.len()..].starts_with('/')))
}

/// `spec` of a `Webhook` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "Webhook",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookSpec {
    /// The `webhook` SecretStore whose allow-list, CA and secret headers apply.
    pub secret_store_ref: SecretStoreRef,
    /// The endpoint; must fall under one of the store's `allowedUrls`.
    pub url: String,
    /// `GET`, `POST` (default) or `PUT`.
    #[serde(default)]
    pub method: WebhookMethod,
    /// Plain (non-secret) request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Body template; `{{namespace}}` etc. are replaced by JSON-escaped identity values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Timeout of the call, lower than the store's (default: the store's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// How the JSON answer maps to the credential.
    #[serde(default)]
    pub result: WebhookResult,
}

/// HTTP method of a webhook call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum WebhookMethod {
    /// `GET`.
    Get,
    /// `POST` (default).
    #[default]
    Post,
    /// `PUT`.
    Put,
}

/// How a webhook's JSON answer becomes the credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookResult {
    /// Path to the value (`$`, `$.data`, `$.items[0].secret`, `$['key.with.dots']`). An
    /// object becomes one key per member; anything else is returned under `key`.
    #[serde(default = "root")]
    pub json_path: String,
    /// The key for a non-object result (default `value`).
    #[serde(default = "value_key")]
    pub key: String,
    /// Path to the expiry (RFC 3339 string or Unix seconds), when the endpoint reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_json_path: Option<String>,
}

impl Default for WebhookResult {
    fn default() -> Self {
        WebhookResult {
            json_path: root(),
            key: value_key(),
            expires_at_json_path: None,
        }
    }
}

fn root() -> String {
    "$".to_owned()
}

fn value_key() -> String {
    "value".to_owned()
}

/// One step of a JSON path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Parses the JSON path subset: `$`, `.name`, `['name']`, `["name"]`, `[index]`.
fn parse_path(p: &str, field: &str) -> Result<Vec<Step>, SpecError> {
    let bad = |why: &str| SpecError::field(field, format!("{p:?}: {why}"));
    let mut rest = p
        .strip_prefix('$')
        .ok_or_else(|| bad("must start with $"))?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let name = &r[..end];
            if name.is_empty() {
                return Err(bad("empty member name"));
            }
            steps.push(Step::Key(name.to_owned()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or_else(|| bad("unclosed ["))?;
            let inner = r[..end].trim();
            let quoted = inner
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')));
            match quoted {
                Some(name) => steps.push(Step::Key(name.to_owned())),
                None => steps.push(Step::Index(
                    inner
                        .parse()
                        .map_err(|_| bad("index must be a number or a quoted name"))?,
                )),
            }
            rest = &r[end + 1..];
        } else {
            return Err(bad("expected . or ["));
        }
    }
    Ok(steps)
}

fn select<'a>(v: &'a serde_json::Value, steps: &[Step]) -> Option<&'a serde_json::Value> {
    steps.iter().try_fold(v, |v, s| match s {
        Step::Key(k) => v.get(k.as_str()),
        Step::Index(i) => v.get(*i),
    })
}

impl WebhookSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        parse_url(&self.url, "url")?;
        for (name, value) in &self.headers {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| SpecError::field(format!("headers.{name}"), "is not a header name"))?;
            HeaderValue::from_str(value).map_err(|_| {
                SpecError::field(format!("headers.{name}"), "is not a header value")
            })?;
        }
        if let Some(b) = &self.body {
            Template::parse(b, "body")?;
            if self.method == WebhookMethod::Get {
                return Err(SpecError::field("body", "a GET request has no body"));
            }
        }
        if self
            .timeout
            .is_some_and(|t| t.get().is_zero() || t.get() > Duration::from_secs(60))
        {
            return Err(SpecError::field("timeout", "must be between 1ms and 60s"));
        }
        parse_path(&self.result.json_path, "result.jsonPath")?;
        if let Some(p) = &self.result.expires_at_json_path {
            parse_path(p, "result.expiresAtJsonPath")?;
        }
        if self.result.key.is_empty() {
            return Err(SpecError::field("result.key", "must not be empty"));
        }
        Ok(())
    }
}

/// The built `Webhook` generator.
pub struct WebhookGenerator {
    spec: WebhookSpec,
    url: Url,
    body: Option<Template>,
    path: Vec<Step>,
    expires_path: Option<Vec<Step>>,
    secret_headers: BTreeMap<String, SecretRef>,
    http: reqwest::Client,
}

impl fmt::Debug for WebhookGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookGenerator")
            .field("url", &self.url.as_str())
            .field(
                "secret_headers",
                &self.secret_headers.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl WebhookGenerator {
    /// Builds the generator on its store; fails when the URL is not allowed by the store.
    pub fn new(spec: WebhookSpec, store: Option<&SecretStoreSpec>) -> Result<Self, SpecError> {
        spec.validate()?;
        let provider =
            crate::store::require(store, &spec.secret_store_ref, "webhook", |p| match p {
                StoreProvider::Webhook(w) => Some(w),
                #[allow(unreachable_patterns)]
                _ => None,
            })?;
        provider.validate()?;
        let url = parse_url(&spec.url, "url")?;
        if !provider.allows(&url) {
            return Err(SpecError::field(
                "url",
                format!(
                    "{} is not under any of the store's allowedUrls ({})",
                    url,
                    provider.allowed_urls.join(", ")
                ),
            ));
        }
        let store_timeout = provider
            .timeout
            .map_or(crate::http::DEFAULT_TIMEOUT, HumanDuration::get);
        let timeout = spec
            .timeout
            .map_or(store_timeout, |t| t.get().min(store_timeout));
        Ok(WebhookGenerator {
            http: crate::http::client(
                provider.ca_bundle.as_deref(),
                timeout,
                "provider.webhook.caBundle",
            )?,
            body: spec
                .body
                .as_deref()
                .map(|b| Template::parse(b, "body"))
                .transpose()?,
            path: parse_path(&spec.result.json_path, "result.jsonPath")?,
            expires_path: spec
                .result
                .expires_at_json_path
                .as_deref()
                .map(|p| parse_path(p, "result.expiresAtJsonPath"))
                .transpose()?,
            secret_headers: provider.headers.clone(),
            url,
            spec,
        })
    }
}

fn parse_expiry(v: &serde_json::Value) -> Option<jiff::Timestamp> {
    match v {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n
            .as_i64()
            .and_then(|s| jiff::Timestamp::from_second(s).ok()),
        _ => None,
    }
}

impl Generate for WebhookGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let method = match self.spec.method {
            WebhookMethod::Get => reqwest::Method::GET,
            WebhookMethod::Post => reqwest::Method::POST,
            WebhookMethod::Put => reqwest::Method::PUT,
        };
        let mut req = self
            .http
            .request(method, self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        for (k, v) in &self.spec.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        for (k, r) in &self.secret_headers {
            let secret = r.read()?;
            let mut value = HeaderValue::from_str(secret.expose_secret()).map_err(|_| {
                BackendError::Unavailable {
                    message: "the federation's webhook credentials are malformed".to_owned(),
                    detail: format!(
                        "secret header {k} from {} is not a valid header value",
                        r.describe()
                    ),
                }
            })?;
            value.set_sensitive(true);
            req = req.header(k.as_str(), value);
        }
        if let Some(t) = &self.body {
            if !self
                .spec
                .headers
                .keys()
                .any(|k| k.eq_ignore_ascii_case("content-type"))
            {
                req = req.header(reqwest::header::CONTENT_TYPE, "application/json");
            }
            req = req.body(t.render(ctx, json_escape));
        }
        let (status, bytes) = crate::http::send(BACKEND, req).await?;
        if status.is_redirection() {
            return Err(BackendError::Rejected {
                message: "the webhook answered with a redirect, which is not followed".to_owned(),
                detail: format!("{}: {status}", self.url),
            });
        }
        if !status.is_success() {
            return Err(crate::http::status_error(
                BACKEND,
                status,
                &format!("{}: {} byte body", self.url, bytes.len()),
            ));
        }
        let json: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| BackendError::Rejected {
                message: "the webhook did not answer JSON".to_owned(),
                detail: format!("{}: {e}", self.url),
            })?;
        let selected = select(&json, &self.path).ok_or_else(|| BackendError::Rejected {
            message: format!(
                "the webhook's answer has nothing at {}",
                self.spec.result.json_path
            ),
            detail: format!(
                "{}: jsonPath {} matched nothing",
                self.url, self.spec.result.json_path
            ),
        })?;
        let data: BTreeMap<String, String> = match selected {
            serde_json::Value::Object(m) => m
                .iter()
                .map(|(k, v)| (k.clone(), value_string(v)))
                .collect(),
            other => BTreeMap::from([(self.spec.result.key.clone(), value_string(other))]),
        };
        let expires_at = match &self.expires_path {
            None => None,
            Some(p) => Some(select(&json, p).and_then(parse_expiry).ok_or_else(|| {
                BackendError::Rejected {
                    message: "the webhook's answer has no readable expiry".to_owned(),
                    detail: format!("{}: expiresAtJsonPath matched nothing readable", self.url),
                }
            })?),
        };
        if let Some(max) = ctx.max_ttl {
            self.check_max_ttl(max, expires_at)?;
        }
        Ok(Credential {
            data,
            expires_at,
            renewable: false,
            lease: None,
        })
    }
}

/// How far past `now + maxTTL` an endpoint's `expiresAt` may lie: the endpoint computes it on
/// its own clock, from a moment between our request and its answer.
const CLOCK_LEEWAY: Duration = Duration::from_secs(5);

impl WebhookGenerator {
    /// Refuses a credential that could outlive the Authorization's `maxTTL`: one whose
    /// `expiresAt` lies later, or that reports none. The endpoint has no revoke call, so the
    /// credential is dropped, never handed out; the endpoint can be told the limit through
    /// `{{maxTTLSeconds}}`.
    fn check_max_ttl(
        &self,
        max: Duration,
        expires_at: Option<jiff::Timestamp>,
    ) -> Result<(), BackendError> {
        let human = |d: Duration| humantime::format_duration(d).to_string();
        let max_secs = i64::try_from(max.as_secs()).unwrap_or(i64::MAX);
        let Some(expires_at) = expires_at else {
            return Err(BackendError::Rejected {
                message: format!(
                    "the webhook's credential has no expiry, and the Authorization's maxTTL of {} \
                     needs one; it was not handed out. Set result.expiresAtJsonPath to the \
                     answer's expiry",
                    human(max)
                ),
                detail: format!("{}: no expiresAt under maxTTL {max_secs}s", self.url),
            });
        };
        let now = jiff::Timestamp::now();
        let lives = expires_at.as_second().saturating_sub(now.as_second());
        let leeway = i64::try_from(CLOCK_LEEWAY.as_secs()).unwrap_or(0);
        if lives > max_secs.saturating_add(leeway) {
            return Err(BackendError::Rejected {
                message: format!(
                    "the webhook's credential would live {}, longer than the Authorization's \
                     maxTTL of {}; it was not handed out. Have the endpoint honour \
                     {{{{maxTTLSeconds}}}} in the request body",
                    human(Duration::from_secs(lives.unsigned_abs())),
                    human(max)
                ),
                detail: format!(
                    "{}: expiresAt {expires_at} is {lives}s away, over maxTTL {max_secs}s",
                    self.url
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GeneratorKind, GeneratorSpec};

    #[test]
    fn json_paths_select_values() {
        let v = serde_json::json!({"a": {"b": [{"c": 1}], "d.e": "x"}});
        let get = |p: &str| select(&v, &parse_path(p, "f").unwrap()).cloned();
        assert_eq!(get("$"), Some(v.clone()));
        assert_eq!(get("$.a.b[0].c"), Some(1.into()));
        assert_eq!(get("$.a['d.e']"), Some("x".into()));
        assert_eq!(get("$.a[\"d.e\"]"), Some("x".into()));
        assert_eq!(get("$.missing"), None);
        for bad in ["a.b", "$..a", "$[x]", "$.a[0"] {
            assert!(parse_path(bad, "f").is_err(), "{bad}");
        }
    }

    #[test]
    fn allow_list_matches_scheme_host_port_and_path_prefix() {
        let p = WebhookProvider {
            allowed_urls: vec![
                "https://api.example/creds/".into(),
                "http://127.0.0.1:8080/x".into(),
            ],
            ca_bundle: None,
            timeout: None,
            headers: BTreeMap::new(),
        };
        let ok = |u: &str| p.allows(&Url::parse(u).unwrap());
        assert!(ok("https://api.example/creds/issue"));
        assert!(ok("https://api.example:443/creds/a?b=c"));
        assert!(ok("http://127.0.0.1:8080/x"));
        assert!(ok("http://127.0.0.1:8080/x/y"));
        assert!(!ok("http://api.example/creds/issue"));
        assert!(!ok("https://api.example.evil/creds/issue"));
        assert!(!ok("https://api.example/credsx"));
        assert!(!ok("http://127.0.0.1:8081/x"));
        assert!(!ok("http://127.0.0.1:8080/xy"));
        assert!(!ok("http://127.0.0.2:8080/x"));
        assert!(
            !ok("https://api.example/creds/../admin"),
            "url normalises dot segments before matching"
        );
    }

    #[test]
    fn round_trips_and_rejects_unknown_keys() {
        let j = serde_json::json!({
            "secretStoreRef": {"name": "hooks"},
            "url": "https://api.example/creds/issue",
            "method": "PUT",
            "headers": {"X-Team": "payments"},
            "body": "{\"ns\": \"{{namespace}}\"}",
            "timeout": "3s",
            "result": {"jsonPath": "$.data", "key": "token", "expiresAtJsonPath": "$.exp"},
        });
        let spec = GeneratorSpec::from_manifest(GeneratorKind::Webhook, j.clone()).unwrap();
        let GeneratorSpec::Webhook(s) = &spec else {
            panic!()
        };
        assert_eq!(
            GeneratorSpec::from_manifest(GeneratorKind::Webhook, serde_json::to_value(s).unwrap())
                .unwrap(),
            spec
        );
        for (field, value, expect) in [
            (
                "secretHeaders",
                serde_json::json!({}),
                "unknown field `secretHeaders`",
            ),
            ("url", serde_json::json!("ftp://x/"), "spec.url"),
            (
                "url",
                serde_json::json!("https://user:pw@api.example/"),
                "spec.url",
            ),
            (
                "result",
                serde_json::json!({"jsonPath": "data"}),
                "spec.result.jsonPath",
            ),
            (
                "result",
                serde_json::json!({"path": "$"}),
                "unknown field `path`",
            ),
            ("body", serde_json::json!("{{ secret }}"), "spec.body"),
        ] {
            let mut b = j.clone();
            b[field] = value;
            let err = GeneratorSpec::from_manifest(GeneratorKind::Webhook, b).unwrap_err();
            assert!(err.to_string().contains(expect), "{field}: {err}");
        }
        let store = serde_json::json!({"provider": {"webhook": {"allowedUrls": ["https://a.example/"], "insecure": true}}});
        assert!(
            crate::SecretStoreSpec::from_manifest(store)
                .unwrap_err()
                .to_string()
                .contains("unknown field `insecure`")
        );
        let empty = serde_json::json!({"provider": {"webhook": {"allowedUrls": []}}});
        assert!(
            crate::SecretStoreSpec::from_manifest(empty)
                .unwrap_err()
                .to_string()
                .contains("allowedUrls")
        );
    }
}
