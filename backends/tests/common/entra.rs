//! A loopback FAKE of Microsoft Entra ID's token endpoint (Azure has no emulator), shared by
//! the `azure` store's generators' tests (`acr_fake.rs`, `keyvault_fake.rs`). It implements
//! the one call the store makes, as Microsoft documents it: `POST /{tenant}/oauth2/v2.0/token`,
//! the client credentials grant with a client secret or a federated client assertion,
//! answering `{"token_type", "expires_in", "access_token"}` and refusing with `AADSTS...`
//! errors (400 / 401). Each token issued remembers its scope, so a service's fake can refuse a
//! token meant for another audience, as the real services do.
//!
//! [`imds_route`] is a FAKE of the Azure Instance Metadata Service's managed identity token
//! endpoint of a VM issuing the same tokens: `GET /metadata/identity/oauth2/token` with
//! `Metadata: true`, `api-version=2018-02-01`, a `resource` (Entra ID v1: no `/.default`) and
//! an optional `client_id` of a user-assigned identity the VM has, answering with every value
//! a string (`expires_on` in seconds since the epoch) and refusing as IMDS does
//! (`{"error", "error_description"}`, 400).
//!
//! A test's fake state embeds an [`Entra`] and implements [`HasEntra`]; [`route`] serves it.
//!
//! Federated identity credentials ([`Federated`]) are checked as Entra ID checks them: the
//! assertion's `iss`, `sub` and `aud` must equal one credential's, its signature must verify
//! under the issuer's published key of its `kid` (RS256 or ES256), and it must not have
//! expired. Entra ID fetches the issuer's JWKS by OIDC discovery; the fake is handed the JWKS
//! the issuer serves instead.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{self, post};
use axum::{Form, Json, Router};
use serde_json::{Value, json};

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CLIENT: &str = "3c1b7e2a-5d4f-4e8b-9a61-0f2d8c7b6e15";
pub const CLIENT_SECRET: &str = "fake~client~secret~Q8Z";
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A form as sent, every pair in order (a key may repeat).
pub type Pairs = Vec<(String, String)>;

pub fn get<'a>(form: &'a Pairs, key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Entra ID's state.
pub struct Entra {
    /// The scopes the app may be issued tokens for (`{resource}/.default`).
    pub scopes: HashSet<String>,
    /// Federated tokens Entra ID accepts as client assertions.
    pub assertions: HashSet<String>,
    /// The federated identity credentials of the app: signed assertions they match are
    /// accepted.
    pub federated: Vec<Federated>,
    /// `expires_in` of the tokens issued.
    pub expires_in: Value,
    /// Tokens issued and still good, with the scope each was issued for.
    pub tokens: HashMap<String, String>,
    /// Every request's form.
    pub forms: Vec<Pairs>,
    /// An answer replacing the real one (status, body), for hostile-answer tests.
    pub answer: Option<(u16, Vec<u8>)>,
    /// The client IDs of the user-assigned identities the VM has (it always has a
    /// system-assigned one).
    pub user_assigned: HashSet<String>,
    /// Every IMDS request: its query and its `Metadata` header.
    pub imds_requests: Vec<(Pairs, Option<String>)>,
}

impl Entra {
    /// Entra ID issuing tokens for `scopes`, living an hour.
    pub fn new(scopes: &[&str]) -> Self {
        Entra {
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            assertions: HashSet::new(),
            federated: Vec::new(),
            expires_in: json!(3599),
            tokens: HashMap::new(),
            forms: Vec::new(),
            answer: None,
            user_assigned: HashSet::new(),
            imds_requests: Vec::new(),
        }
    }

    /// Whether `token` is a live token of this Entra ID for `scope`.
    pub fn issued_for(&self, token: &str, scope: &str) -> bool {
        self.tokens.get(token).is_some_and(|s| s == scope)
    }

    /// How many token requests asked for `scope`.
    pub fn asked_for(&self, scope: &str) -> usize {
        self.forms
            .iter()
            .filter(|f| get(f, "scope") == Some(scope))
            .count()
    }
}

/// A federated identity credential: the issuer, subject and audience an assertion must carry,
/// and the issuer's JWKS (what Entra ID would fetch from `{issuer}/.well-known/...`).
pub struct Federated {
    pub issuer: String,
    pub subject: String,
    pub audience: String,
    pub jwks: Value,
}

/// A compact JWS, unverified: its header and claims, and its signature with what it covers.
pub struct Jws {
    pub header: Value,
    pub claims: Value,
    signed: String,
    signature: Vec<u8>,
}

impl Jws {
    /// `token` read as a compact JWS with JSON header and claims; `None` when it is not one.
    pub fn parse(token: &str) -> Option<Jws> {
        use base64::Engine as _;
        let b64 = |s: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .ok()
        };
        let json = |s: &str| -> Option<Value> { serde_json::from_slice(&b64(s)?).ok() };
        let (signed, signature) = token.rsplit_once('.')?;
        let (header, claims) = signed.split_once('.')?;
        Some(Jws {
            header: json(header)?,
            claims: json(claims)?,
            signed: signed.to_owned(),
            signature: b64(signature)?,
        })
    }

    /// Whether the signature verifies under the key of `jwks` its header's `kid` names (RS256
    /// or ES256), as an OIDC relying party checks it.
    pub fn verifies_under(&self, jwks: &Value) -> bool {
        use aws_lc_rs::signature;
        use base64::Engine as _;
        let key = jwks["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|k| k["kid"] == self.header["kid"]);
        let member = |k: &Value, m: &str| {
            k[m].as_str()
                .and_then(|v| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(v)
                        .ok()
                })
                .unwrap_or_default()
        };
        let input = self.signed.as_bytes();
        match (key, self.header["alg"].as_str()) {
            (Some(k), Some("RS256")) => signature::RsaPublicKeyComponents {
                n: member(k, "n"),
                e: member(k, "e"),
            }
            .verify(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                input,
                &self.signature,
            )
            .is_ok(),
            (Some(k), Some("ES256")) => {
                let point = [vec![4], member(k, "x"), member(k, "y")].concat();
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(input, &self.signature)
                    .is_ok()
            }
            _ => false,
        }
    }

    /// Whether `aud` is `want` or an array holding it.
    pub fn audience_is(&self, want: &str) -> bool {
        match &self.claims["aud"] {
            Value::String(a) => a == want,
            Value::Array(all) => all.iter().any(|a| a == want),
            _ => false,
        }
    }

    /// Whether `exp` is a number of seconds still ahead.
    pub fn unexpired(&self) -> bool {
        let now = jiff::Timestamp::now().as_second();
        self.claims["exp"].as_i64().is_some_and(|exp| exp > now)
    }
}

impl Federated {
    /// The federated identity credential `infra/terraform/modules/trust-azure` makes on the
    /// app (`azuread_application_federated_identity_credential.this`, read from the module) for
    /// the issuer at `issuer_url` publishing `jwks`: its `subject` and its one audience as the
    /// module writes them, the issuer the module's `var.issuer_url`.
    pub fn trust_azure(issuer_url: &str, jwks: Value) -> Federated {
        use esi_test_support::terraform;
        let body = terraform::module("trust-azure");
        let credential = terraform::block(
            &body,
            "resource",
            &["azuread_application_federated_identity_credential", "this"],
        )
        .body();
        assert_eq!(
            terraform::argument(credential, "issuer").to_string(),
            "var.issuer_url"
        );
        let audiences = terraform::strings(&terraform::argument(credential, "audiences"));
        let [audience] = audiences.as_slice() else {
            panic!("trust-azure's credential has audiences {audiences:?}, the fake takes one")
        };
        Federated {
            issuer: issuer_url.to_owned(),
            subject: terraform::string(&terraform::argument(credential, "subject")),
            audience: audience.clone(),
            jwks,
        }
    }
}

/// Why a signed assertion is refused, in Entra ID's words; `None` when a credential matches
/// and the signature verifies. What any OIDC relying party checks (the STS tests use it for
/// the tokens AWS would verify).
pub fn check_federated(federated: &[Federated], assertion: &str) -> Option<&'static str> {
    const NO_MATCH: &str =
        "AADSTS70021: No matching federated identity record found for presented assertion.";
    // Not a JWT: no credential can match it.
    let Some(jws) = Jws::parse(assertion) else {
        return Some(NO_MATCH);
    };
    let Some(credential) = federated.iter().find(|f| {
        jws.claims["iss"] == f.issuer.as_str()
            && jws.claims["sub"] == f.subject.as_str()
            && jws.audience_is(&f.audience)
    }) else {
        return Some(NO_MATCH);
    };
    if !jws.verifies_under(&credential.jwks) {
        return Some("AADSTS50013: Assertion failed signature validation.");
    }
    if !jws.unexpired() {
        return Some("AADSTS700024: Client assertion is not within its valid time range.");
    }
    None
}

/// A test's fake state holding an [`Entra`].
pub trait HasEntra: Send + 'static {
    fn entra(&mut self) -> &mut Entra;
}

/// The answer `status` with `body` as is.
pub fn raw(status: u16, body: Vec<u8>) -> Response {
    (
        StatusCode::from_u16(status).expect("status"),
        [("content-type", "application/json")],
        body,
    )
        .into_response()
}

pub fn aad_refusal(status: StatusCode, error: &str, description: &str) -> Response {
    // "AADSTS7000215: ..." carries its code as a number too.
    let code: u64 = description
        .trim_start_matches("AADSTS")
        .split(':')
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let trace = "Trace ID: 0f3c Correlation ID: 9a1e Timestamp: 2026-11-30 14:00:00Z";
    (
        status,
        Json(json!({
            "error": error,
            "error_description": format!("{description}\r\n{trace}"),
            "error_codes": [code],
        })),
    )
        .into_response()
}

/// Entra ID's `POST /{tenant}/oauth2/v2.0/token`, client credentials grant.
async fn token<F: HasEntra>(
    State(fake): State<Arc<Mutex<F>>>,
    Path(tenant): Path<String>,
    Form(form): Form<Pairs>,
) -> Response {
    let mut fake = fake.lock().expect("lock");
    let entra = fake.entra();
    entra.forms.push(form.clone());
    if let Some((status, body)) = entra.answer.clone() {
        return raw(status, body);
    }
    if tenant != TENANT {
        return aad_refusal(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS90002: Tenant not found.",
        );
    }
    if get(&form, "grant_type") != Some("client_credentials") {
        return aad_refusal(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
        );
    }
    if get(&form, "client_id") != Some(CLIENT) {
        return aad_refusal(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "AADSTS700016: Application was not found in the directory.",
        );
    }
    let Some(scope) = get(&form, "scope").filter(|s| entra.scopes.contains(*s)) else {
        return aad_refusal(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS70011: The provided value for the input parameter 'scope' is not valid.",
        );
    };
    match (get(&form, "client_secret"), get(&form, "client_assertion")) {
        (Some(secret), None) => {
            if secret != CLIENT_SECRET {
                return aad_refusal(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "AADSTS7000215: Invalid client secret provided.",
                );
            }
        }
        (None, Some(assertion)) => {
            if get(&form, "client_assertion_type") != Some(JWT_BEARER) {
                return aad_refusal(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "AADSTS700027: Client assertion type is not supported.",
                );
            }
            if !entra.assertions.contains(assertion)
                && let Some(why) = check_federated(&entra.federated, assertion)
            {
                return aad_refusal(StatusCode::BAD_REQUEST, "invalid_client", why);
            }
        }
        _ => {
            return aad_refusal(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "AADSTS7000218: The request body must contain exactly one of client_assertion or client_secret.",
            );
        }
    }
    let token = format!(
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.aad-{}",
        super::suffix()
    );
    entra.tokens.insert(token.clone(), scope.to_owned());
    let expires_in = entra.expires_in.clone();
    Json(json!({
        "token_type": "Bearer",
        "expires_in": expires_in,
        "ext_expires_in": expires_in,
        "access_token": token,
    }))
    .into_response()
}

/// The token endpoint as a router over `fake`; serve it on its own port (Entra ID is its own
/// host) and use `{base}/` as the store's `authorityHost`.
pub fn route<F: HasEntra>(fake: Arc<Mutex<F>>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token::<F>))
        .with_state(fake)
}

/// The client ID of the VM's system-assigned identity.
pub const SYSTEM_ASSIGNED: &str = "0d5e2c1f-6a7b-4c8d-9e0f-111122223333";

fn imds_refusal(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// IMDS's `GET /metadata/identity/oauth2/token`.
async fn imds_token<F: HasEntra>(
    State(fake): State<Arc<Mutex<F>>>,
    Query(query): Query<Pairs>,
    headers: HeaderMap,
) -> Response {
    let mut fake = fake.lock().expect("lock");
    let entra = fake.entra();
    let metadata = headers
        .get("metadata")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    entra.imds_requests.push((query.clone(), metadata.clone()));
    if metadata.as_deref() != Some("true") {
        return imds_refusal("invalid_request", "Required metadata header not specified");
    }
    if get(&query, "api-version") != Some("2018-02-01") {
        return imds_refusal("invalid_request", "Invalid API version");
    }
    let client_id = match get(&query, "client_id") {
        None => SYSTEM_ASSIGNED,
        Some(id) if entra.user_assigned.contains(id) => id,
        Some(_) => return imds_refusal("invalid_request", "Identity not found"),
    };
    let scope = get(&query, "resource").map(|r| format!("{r}/.default"));
    let Some(scope) = scope.filter(|s| entra.scopes.contains(s)) else {
        return imds_refusal(
            "invalid_resource",
            "AADSTS500011: The resource principal named was not found in the tenant.",
        );
    };
    let token = format!(
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.msi-{}",
        super::suffix()
    );
    entra.tokens.insert(token.clone(), scope);
    let now = jiff::Timestamp::now().as_second();
    Json(json!({
        "access_token": token,
        "client_id": client_id,
        "expires_in": "86399",
        "expires_on": (now + 86_399).to_string(),
        "ext_expires_in": "86399",
        "not_before": now.to_string(),
        "resource": get(&query, "resource"),
        "token_type": "Bearer",
    }))
    .into_response()
}

/// IMDS's token endpoint as a router over `fake`; serve it on its own port and use
/// `{base}/metadata/identity/oauth2/token` as the store's `managedIdentity.endpoint`.
pub fn imds_route<F: HasEntra>(fake: Arc<Mutex<F>>) -> Router {
    Router::new()
        .route(
            "/metadata/identity/oauth2/token",
            routing::get(imds_token::<F>),
        )
        .with_state(fake)
}
