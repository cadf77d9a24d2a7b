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
//! clock), or that reports no expiry, is refused and never handed out.
//!
//! With `revoke`, the endpoint's credentials are revocable like a Vault lease: the value at
//! `revoke.leaseJsonPath` of the issuing answer (the credential's id at the endpoint) is kept
//! in the credential's lease, sealed by the federation, and revoking the lease calls
//! `revoke.url` (under the same `allowedUrls`, with the same headers) with `{{lease}}`
//! percent-encoded in the URL and JSON-escaped in the body. A credential that is minted but
//! not handed out (over `maxTTL`, an answer that cannot be mapped) is revoked at once. A
//! revoke answered 404 or 410 has nothing left to revoke. Without `revoke`, a refused
//! credential lives until it expires.
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
//!   revoke:                               # optional: the credential gets a lease
//!     leaseJsonPath: "$.id"
//!     url: "https://creds.internal.example/api/credentials/{{lease}}"
//!     method: DELETE
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
use crate::{
    BackendError, Context, Credential, Generate, LeaseHandle, SecretRef, SecretStoreSpec, SpecError,
};

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
    /// A client certificate presented to endpoints that ask for one (mutual TLS): PEM, the
    /// certificate first, then any intermediates; read on every call, so a renewed one needs no
    /// restart. Set with `clientKey`; every allowed URL must then be `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<SecretRef>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<SecretRef>,
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
        match (&self.client_cert, &self.client_key) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                let plain = self
                    .allowed_urls
                    .iter()
                    .enumerate()
                    .find(|(_, u)| !u.starts_with("https://"))
                    .map(|(i, u)| (format!("provider.webhook.allowedUrls[{i}]"), u));
                crate::http::check_client_cert(
                    cert,
                    key,
                    "provider.webhook",
                    plain.as_ref().map(|(f, u)| (f.as_str(), u.as_str())),
                )?;
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(SpecError::field(
                    "provider.webhook",
                    "set both clientCert and clientKey, or neither",
                ));
            }
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
    /// How a credential the endpoint issued is revoked; with it, each credential carries a
    /// lease, revoked when the workload ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke: Option<WebhookRevoke>,
}

/// The placeholder of a revoke call: the value `leaseJsonPath` selected when the credential
/// was issued. The request's identity is not known when a lease is revoked.
const LEASE_NAMES: &[&str] = &["lease"];

/// The longest value kept from `revoke.leaseJsonPath`: it travels, sealed, in every envelope,
/// and a sealed lease must stay well under the federation's 8 KiB limit to be opened again.
const MAX_LEASE_ID: usize = 512;

/// How a webhook's credential is revoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookRevoke {
    /// Path, in the issuing answer, to the value that names the credential at the endpoint
    /// (a string or number). It is kept in the lease, sealed, and is `{{lease}}` below.
    pub lease_json_path: String,
    /// The revoke endpoint; must fall under one of the store's `allowedUrls`. `{{lease}}`
    /// may appear in its path or query, percent-encoded.
    pub url: String,
    /// `DELETE` (default), `POST` or `PUT`.
    #[serde(default)]
    pub method: WebhookRevokeMethod,
    /// Body template; `{{lease}}` is replaced by the JSON-escaped value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// HTTP method of a revoke call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum WebhookRevokeMethod {
    /// `DELETE` (default).
    #[default]
    Delete,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
}

impl WebhookRevokeMethod {
    fn method(self) -> reqwest::Method {
        match self {
            WebhookRevokeMethod::Delete => reqwest::Method::DELETE,
            WebhookRevokeMethod::Post => reqwest::Method::POST,
            WebhookRevokeMethod::Put => reqwest::Method::PUT,
        }
    }
}

/// What the lease value may not become in a URL: everything but the unreserved characters is
/// percent-encoded, so it stays inside its path segment or query value.
const LEASE_IN_URL: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A built revoke call.
struct Revoke {
    lease_path: Vec<Step>,
    lease_json_path: String,
    url: Template,
    /// `revoke.url` as written, `{{lease}}` unrendered: what logs show of a revoke call, since
    /// the lease value may be a credential (an endpoint revoking by token).
    url_text: String,
    /// Whether `{{lease}}` appears in the URL.
    lease_in_url: bool,
    method: reqwest::Method,
    body: Option<Template>,
    allowed: WebhookProvider,
}

impl Revoke {
    fn new(spec: &WebhookRevoke, provider: &WebhookProvider) -> Result<Self, SpecError> {
        let url = Template::parse_names(&spec.url, "revoke.url", LEASE_NAMES)?;
        // Two different values must give the same scheme, host and port, both allowed: the
        // lease can then only move the path or query.
        let probe = |v: &str| {
            let rendered = url.render_with(|_| v.into(), str::to_owned);
            parse_url(&rendered, "revoke.url")
        };
        let (a, b) = (probe("lease-a")?, probe("lease-b")?);
        if (a.scheme(), a.host(), a.port()) != (b.scheme(), b.host(), b.port()) {
            return Err(SpecError::field(
                "revoke.url",
                "{{lease}} may only appear in the path or the query",
            ));
        }
        for u in [&a, &b] {
            if !provider.allows(u) {
                return Err(SpecError::field(
                    "revoke.url",
                    format!(
                        "{u} is not under any of the store's allowedUrls ({})",
                        provider.allowed_urls.join(", ")
                    ),
                ));
            }
        }
        Ok(Revoke {
            lease_path: parse_path(&spec.lease_json_path, "revoke.leaseJsonPath")?,
            lease_json_path: spec.lease_json_path.clone(),
            url,
            url_text: spec.url.clone(),
            lease_in_url: a != b,
            method: spec.method.method(),
            body: spec
                .body
                .as_deref()
                .map(|b| Template::parse_names(b, "revoke.body", LEASE_NAMES))
                .transpose()?,
            allowed: provider.clone(),
        })
    }

    /// The revoke URL for `lease`, checked again against the allow-list.
    fn url(&self, lease: &str) -> Result<Url, String> {
        if self.lease_in_url && matches!(lease, "" | "." | "..") {
            return Err(format!("lease value {lease:?} cannot name a URL part"));
        }
        let rendered = self.url.render_with(
            |_| lease.into(),
            |v| percent_encoding::utf8_percent_encode(v, LEASE_IN_URL).to_string(),
        );
        let url = Url::parse(&rendered).map_err(|e| format!("revoke URL: {e}"))?;
        if self.allowed.allows(&url) {
            Ok(url)
        } else {
            Err("the revoke URL left the store's allowedUrls".to_owned())
        }
    }

    /// The lease value of an issuing answer.
    fn lease_of(&self, json: &serde_json::Value) -> Result<String, String> {
        let v = select(json, &self.lease_path)
            .ok_or_else(|| format!("nothing at revoke.leaseJsonPath {}", self.lease_json_path))?;
        let lease = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => {
                return Err(format!(
                    "revoke.leaseJsonPath {} is not a string or number",
                    self.lease_json_path
                ));
            }
        };
        if lease.len() > MAX_LEASE_ID || lease.chars().any(char::is_control) {
            return Err(format!(
                "the value at revoke.leaseJsonPath is over {MAX_LEASE_ID} bytes or holds control \
                 characters"
            ));
        }
        self.url(&lease)?;
        Ok(lease)
    }
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
        if let Some(r) = &self.revoke {
            parse_path(&r.lease_json_path, "revoke.leaseJsonPath")?;
            Template::parse_names(&r.url, "revoke.url", LEASE_NAMES)?;
            if let Some(b) = &r.body {
                Template::parse_names(b, "revoke.body", LEASE_NAMES)?;
            }
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
    revoke: Option<Revoke>,
    secret_headers: BTreeMap<String, SecretRef>,
    http: reqwest::Client,
    /// With the store's client certificate: the clients presenting it, used instead of `http`.
    cert: Option<crate::http::CertClient>,
}

impl fmt::Debug for WebhookGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookGenerator")
            .field("url", &self.url.as_str())
            .field("revocable", &self.revoke.is_some())
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
        let cert = match (&provider.client_cert, &provider.client_key) {
            (Some(cert), Some(key)) => Some(crate::http::CertClient::new(
                cert,
                key,
                "provider.webhook.clientCert",
                crate::http::Trust::System {
                    extra: provider.ca_bundle.as_deref(),
                },
                "provider.webhook.caBundle",
                timeout,
            )?),
            _ => None,
        };
        Ok(WebhookGenerator {
            http: crate::http::client(
                provider.ca_bundle.as_deref(),
                timeout,
                "provider.webhook.caBundle",
            )?,
            cert,
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
            revoke: spec
                .revoke
                .as_ref()
                .map(|r| Revoke::new(r, provider))
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

impl WebhookGenerator {
    /// A request to the endpoint with the generator's headers and the store's secret ones,
    /// and `body` (JSON unless the headers say otherwise).
    fn request(
        &self,
        method: reqwest::Method,
        url: Url,
        body: Option<String>,
    ) -> Result<reqwest::RequestBuilder, BackendError> {
        let http = match &self.cert {
            Some(c) => c.client()?,
            None => self.http.clone(),
        };
        let mut req = http
            .request(method, url)
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
        if let Some(body) = body {
            if !self
                .spec
                .headers
                .keys()
                .any(|k| k.eq_ignore_ascii_case("content-type"))
            {
                req = req.header(reqwest::header::CONTENT_TYPE, "application/json");
            }
            req = req.body(body);
        }
        Ok(req)
    }

    /// The credential in an issuing answer, held to the Authorization's `maxTTL`.
    fn credential(
        &self,
        json: &serde_json::Value,
        ctx: &Context<'_>,
    ) -> Result<Credential, BackendError> {
        let selected = select(json, &self.path).ok_or_else(|| BackendError::Rejected {
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
            Some(p) => Some(select(json, p).and_then(parse_expiry).ok_or_else(|| {
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

    /// Calls the revoke endpoint for `lease`. 404 and 410 mean nothing is left to revoke.
    /// Errors name the revoke URL as configured, never the lease value.
    async fn revoke_lease(&self, revoke: &Revoke, lease: &str) -> Result<bool, BackendError> {
        let url = revoke.url(lease).map_err(|detail| BackendError::Rejected {
            message: "the lease cannot name a revoke URL".to_owned(),
            detail: format!("{}: {detail}", self.url),
        })?;
        let body = revoke
            .body
            .as_ref()
            .map(|t| t.render_with(|_| lease.into(), json_escape));
        let shown = &revoke.url_text;
        let req = self.request(revoke.method.clone(), url.clone(), body)?;
        let (status, bytes) = crate::http::send(BACKEND, req).await.map_err(|e| match e {
            // reqwest names the URL it called, the lease in it.
            BackendError::Unavailable { message, detail } => BackendError::Unavailable {
                message,
                detail: detail.replace(url.as_str(), shown),
            },
            other => other,
        })?;
        match status.as_u16() {
            200..=299 => Ok(true),
            404 | 410 => Ok(false),
            300..=399 => Err(BackendError::Rejected {
                message: "the webhook answered the revoke with a redirect, which is not followed"
                    .to_owned(),
                detail: format!("revoke {shown}: {status}"),
            }),
            _ => Err(crate::http::status_error(
                BACKEND,
                status,
                &format!("revoke {shown}: {} byte body", bytes.len()),
            )),
        }
    }
}

impl Generate for WebhookGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let method = match self.spec.method {
            WebhookMethod::Get => reqwest::Method::GET,
            WebhookMethod::Post => reqwest::Method::POST,
            WebhookMethod::Put => reqwest::Method::PUT,
        };
        let body = self.body.as_ref().map(|t| t.render(ctx, json_escape));
        let req = self.request(method, self.url.clone(), body)?;
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
        let Some(revoke) = &self.revoke else {
            return self.credential(&json, ctx);
        };
        let lease = revoke
            .lease_of(&json)
            .map_err(|detail| BackendError::Rejected {
                message: "the webhook's answer names no lease to revoke its credential by; \
                          it was not handed out, and lives until it expires"
                    .to_owned(),
                detail: format!("{}: {detail}", self.url),
            })?;
        match self.credential(&json, ctx) {
            Ok(mut cred) => {
                cred.lease = Some(LeaseHandle(serde_json::json!({ "id": lease })));
                Ok(cred)
            }
            // Minted but not handed out: nobody may hold it, so it goes now.
            Err(e) => Err(crate::credential::with_revocation(
                e,
                self.revoke_lease(revoke, &lease).await,
            )),
        }
    }

    async fn revoke(&self, handle: &LeaseHandle) -> Result<bool, BackendError> {
        let Some(revoke) = &self.revoke else {
            return Ok(false);
        };
        let lease = handle
            .0
            .get("id")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| BackendError::Invalid("the lease names no webhook credential".into()))?;
        self.revoke_lease(revoke, lease).await
    }
}

impl WebhookGenerator {
    /// Refuses a credential that could outlive the Authorization's `maxTTL`: one whose
    /// `expiresAt` lies later, or that reports none. It is never handed out (and revoked when
    /// the generator has a revoke call); the endpoint can be told the limit through
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
        let leeway = i64::try_from(crate::credential::CLOCK_LEEWAY.as_secs()).unwrap_or(0);
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
            client_cert: None,
            client_key: None,
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
            "revoke": {"leaseJsonPath": "$.id", "url": "https://api.example/creds/{{lease}}", "method": "POST", "body": "{\"id\": \"{{lease}}\"}"},
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
            (
                "revoke",
                serde_json::json!({"leaseJsonPath": "$.id", "url": "https://api.example/x", "body": "{{namespace}}"}),
                "spec.revoke.body",
            ),
            (
                "revoke",
                serde_json::json!({"url": "https://api.example/x"}),
                "missing field `leaseJsonPath`",
            ),
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
