//! `GCPAccessToken`, `GCPIdentityToken`, `GCRAccessToken` (its docker login) and
//! `GCPSecretManagerSecret` against a FAKE of Google's endpoints, served on loopback by this
//! test: the OAuth token endpoint that gcp_auth calls (the key file's `token_uri`), IAM
//! Credentials `generateAccessToken` and `generateIdToken`, and Secret Manager
//! `projects.secrets.versions.access`, and the Security Token Service's token exchange of
//! Workload Identity Federation (`selfIssued` stores), for the pool provider
//! `infra/terraform/modules/trust-gcp` makes (its attribute mapping and condition read from the
//! module and run as CEL). Google's IAM, STS and Secret Manager
//! APIs have no emulator; the fake implements exactly the four calls the generators make, in Google's shapes (base64
//! payloads with their CRC32C, `{"error": {"code", "message", "status"}}`), and records what it
//! received.

#![cfg(feature = "gcp")]

mod common;

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use esi_backends::{BackendError, Context, Generate};
use serde_json::{Value, json};

use common::{build, identity};
use esi_test_support::terraform::{self, Cel, cel};

const SOURCE_TOKEN: &str = "ya29.fake-source-token-of-the-federation";

#[derive(Default)]
struct Seen {
    assertions: Vec<Value>,
    /// The service account keys the fake knows: id and RSA public key (DER).
    keys: Vec<(String, Vec<u8>)>,
    /// Which key signed each assertion (its id; empty when none of `keys` did).
    kids: Vec<String>,
    /// Key ids the token endpoint refuses (deleted keys).
    revoked: Vec<String>,
    /// Whether the token endpoint holds every request without answering.
    hang: bool,
    /// Lifetime of the source tokens it issues (default 3600 s).
    expires_in: Option<u64>,
    /// Whether IAM Credentials and Secret Manager take every token as revoked (401).
    tokens_revoked: bool,
    /// Seconds every impersonated token lives whatever `lifetime` asks (default: as asked),
    /// as Google must never do: the generators check its `expireTime` all the same.
    fixed_lifetime: Option<i64>,
    calls: Vec<(String, String, Value)>,
    /// Secret Manager: the versions of each `projects/{p}/secrets/{s}`, version n at n - 1.
    secrets: std::collections::HashMap<String, Vec<Vec<u8>>>,
    /// Secrets only this bearer token may read (others get 403).
    readers: std::collections::HashMap<String, String>,
    /// Whether `:access` answers with a wrong CRC32C.
    corrupt: bool,
    /// Each `:access` call: the version's resource name and the Authorization header.
    accesses: Vec<(String, String)>,
    /// STS: the OIDC provider [`PROVIDER`] of the pool, when there is one.
    pool: Option<Pool>,
    /// STS: every exchange request's body.
    exchanges: Vec<Value>,
    /// STS: the federated tokens issued, all good until `tokens_revoked`, each with the
    /// principal it acts as (`principal://iam.googleapis.com/<pool>/subject/<google.subject>`).
    federated: Vec<(String, String)>,
}

/// Whether Google takes `token` (an `Authorization` header's bearer token): one it issued and
/// that is not revoked.
fn authenticated(seen: &Seen, token: &str) -> bool {
    !seen.tokens_revoked
        && (token == SOURCE_TOKEN
            || token.starts_with("ya29.impersonated-")
            || seen.federated.iter().any(|(t, _)| t == token))
}

/// The Workload Identity pool of the `selfIssued` tests, and its provider.
const POOL: &str = "projects/123456789/locations/global/workloadIdentityPools/esi-federation";
const PROVIDER: &str = "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/esi-federation/providers/esi-federation";

/// The pool's OIDC provider as `infra/terraform/modules/trust-gcp` makes it: for the
/// federation's issuer (whose JWKS Google would discover; the fake is handed it), with no
/// `allowed_audiences` (so a token's `aud` must be the provider's full name), and the module's
/// `attribute_mapping` and `attribute_condition`, read from its `main.tf` and run as CEL the
/// way Google runs them (see [`ProviderRules`]).
struct Pool {
    issuer: String,
    jwks: Value,
}

/// What `trust-gcp` writes on its provider and grants its principal, read once.
struct ProviderRules {
    /// Each mapped attribute (`google.subject`) and its CEL over `assertion`.
    mapping: Vec<(String, Cel)>,
    condition: Cel,
    /// `local.principal` with the fake's pool: the principal the module's IAM grants name.
    principal: String,
}

fn provider_rules() -> &'static ProviderRules {
    static RULES: std::sync::LazyLock<ProviderRules> = std::sync::LazyLock::new(|| {
        let body = terraform::module("trust-gcp");
        let argument = |name| {
            terraform::resource_argument(
                &body,
                "google_iam_workload_identity_pool_provider",
                "this",
                name,
            )
        };
        let mapping = terraform::entries(&argument("attribute_mapping"))
            .into_iter()
            .map(|(attribute, cel)| (attribute, Cel::compile(&terraform::string(&cel))))
            .collect();
        let principal = terraform::string(&terraform::local(&body, "principal"));
        assert!(principal.contains("${local.pool_name}"), "{principal}");
        ProviderRules {
            mapping,
            condition: Cel::compile(&terraform::string(&argument("attribute_condition"))),
            principal: principal.replace("${local.pool_name}", POOL),
        }
    });
    &RULES
}

impl Pool {
    /// The principal `subject_token` acts as once exchanged, or Google's refusal (`error`,
    /// `error_description`): the signature under the issuer's keys, `iss`, `aud` and `exp`
    /// checked (the fake's words), then the attribute mapping (`google.subject` required, at
    /// most 127 bytes) and the attribute condition (Google's words).
    fn exchange(&self, subject_token: &str) -> Result<String, (&'static str, String)> {
        let grant = |why: &str| ("invalid_grant", why.to_owned());
        let jws = common::entra::Jws::parse(subject_token)
            .ok_or_else(|| grant("Unable to parse the ID Token."))?;
        if !jws.verifies_under(&self.jwks) {
            return Err(grant(
                "Invalid JWT signature. (fake: not signed by the issuer's keys)",
            ));
        }
        if jws.claims["iss"] != self.issuer.as_str() {
            return Err(grant(
                "The issuer in ID Token does not match the expected ones.",
            ));
        }
        let full_name = PROVIDER.trim_start_matches("//");
        if ![PROVIDER.to_owned(), format!("https://{full_name}")]
            .iter()
            .any(|a| jws.audience_is(a))
        {
            return Err(grant(
                "The audience in ID Token does not match the expected audience.",
            ));
        }
        if !jws.unexpired() {
            return Err(grant("ID Token has expired."));
        }
        let rules = provider_rules();
        let assertion = [("assertion", &jws.claims)];
        let mut google = serde_json::Map::new();
        for (attribute, cel) in &rules.mapping {
            match cel.eval(&assertion) {
                Ok(cel::Value::String(v)) => {
                    let key = attribute.trim_start_matches("google.");
                    google.insert(key.to_owned(), json!(v.as_str()));
                }
                other => {
                    return Err((
                        "invalid_request",
                        format!("The attribute mapping {attribute} gives {other:?}, not a string."),
                    ));
                }
            }
        }
        let Some(subject) = google
            .get("subject")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return Err((
                "invalid_request",
                "The google.subject attribute is not mapped.".into(),
            ));
        };
        if subject.len() > 127 {
            return Err((
                "invalid_request",
                "The size of mapped attribute google.subject exceeds the 127 bytes limit.".into(),
            ));
        }
        let google = Value::Object(google);
        match rules
            .condition
            .holds(&[("assertion", &jws.claims), ("google", &google)])
        {
            Ok(true) => Ok(format!(
                "principal://iam.googleapis.com/{POOL}/subject/{subject}"
            )),
            _ => Err((
                "unauthorized_client",
                "The given credential is rejected by the attribute condition.".into(),
            )),
        }
    }
}
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Security Token Service `POST /v1/token`: the token exchange of Workload Identity
/// Federation as Google documents it (`GoogleIdentityStsV1ExchangeTokenRequest`, JSON), for the
/// one pool provider [`PROVIDER`]; refusals in OAuth's shape (`{"error",
/// "error_description"}`, 400).
async fn sts(State(seen): State<Shared>, body: axum::body::Bytes) -> (StatusCode, Json<Value>) {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut seen = seen.lock().expect("lock");
    seen.exchanges.push(body.clone());
    let field = |k: &str| body[k].as_str().unwrap_or_default();
    let refuse = |error: &str, description: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": error, "error_description": description})),
        )
    };
    if field("grantType") != TOKEN_EXCHANGE {
        return refuse("invalid_request", "Invalid value for \"grant_type\".");
    }
    if field("requestedTokenType") != ACCESS_TOKEN_TYPE {
        return refuse(
            "invalid_request",
            "Invalid value for \"requested_token_type\".",
        );
    }
    if !matches!(
        field("subjectTokenType"),
        "urn:ietf:params:oauth:token-type:jwt" | "urn:ietf:params:oauth:token-type:id_token"
    ) {
        return refuse(
            "invalid_request",
            "Invalid value for \"subject_token_type\".",
        );
    }
    if field("scope")
        .split(' ')
        .all(|s| s != "https://www.googleapis.com/auth/cloud-platform")
    {
        return refuse("invalid_scope", "The scope is not allowed.");
    }
    if field("audience") != PROVIDER {
        return refuse(
            "invalid_target",
            "The target service indicated by the \"audience\" parameters is invalid.",
        );
    }
    let principal = match &seen.pool {
        None => Err((
            "invalid_target",
            "The target service indicated by the \"audience\" parameters is invalid. (fake: the \
             pool has no provider)"
                .to_owned(),
        )),
        Some(pool) => pool.exchange(field("subjectToken")),
    };
    let principal = match principal {
        Ok(p) => p,
        Err((error, description)) => return refuse(error, &description),
    };
    let token = format!("ya29.federated-{}", seen.federated.len() + 1);
    seen.federated.push((token.clone(), principal));
    let expires_in = seen.expires_in.unwrap_or(3600);
    (
        StatusCode::OK,
        Json(json!({
            "access_token": token,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": expires_in,
        })),
    )
}

type Shared = Arc<Mutex<Seen>>;

async fn token(
    State(seen): State<Shared>,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    use base64::Engine;
    let hang = seen.lock().expect("lock").hang;
    if hang {
        tokio::time::sleep(std::time::Duration::from_secs(600)).await;
    }
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "unsupported_grant_type"})),
        );
    }
    let part = |i: usize| {
        form.get("assertion")
            .and_then(|a| a.split('.').nth(i))
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p.trim_end_matches('='))
                    .ok()
            })
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .unwrap_or(Value::Null)
    };
    let mut seen = seen.lock().expect("lock");
    // Which known key signed it, as Google checks the assertion's signature.
    let signed_by = form
        .get("assertion")
        .and_then(|a| a.rsplit_once('.'))
        .and_then(|(input, sig)| {
            let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(sig.trim_end_matches('='))
                .ok()?;
            seen.keys.iter().find_map(|(id, public)| {
                aws_lc_rs::signature::UnparsedPublicKey::new(
                    &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
                    public,
                )
                .verify(input.as_bytes(), &sig)
                .is_ok()
                .then(|| id.clone())
            })
        })
        .unwrap_or_default();
    seen.assertions.push(part(1));
    seen.kids.push(signed_by.clone());
    if signed_by.is_empty() || seen.revoked.contains(&signed_by) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})),
        );
    }
    let expires_in = seen.expires_in.unwrap_or(3600);
    (
        StatusCode::OK,
        Json(
            json!({"access_token": SOURCE_TOKEN, "token_type": "Bearer", "expires_in": expires_in}),
        ),
    )
}

async fn generate(
    State(seen): State<Shared>,
    Path(target): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let (email, id_token) = match target.split_once(':') {
        Some((email, "generateAccessToken")) => (email, false),
        Some((email, "generateIdToken")) => (email, true),
        _ => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"error": {"message": "no such method"}})),
            );
        }
    };
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    seen.lock()
        .expect("lock")
        .calls
        .push((email.to_owned(), auth.clone(), body.clone()));
    // What IAM Credentials checks before anything else: the caller's token, then the request.
    let token = auth.strip_prefix("Bearer ").unwrap_or_default();
    if !authenticated(&seen.lock().expect("lock"), token) {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.".into(),
        );
    }
    // A federated token acts as its principal, which needs the module's grants: they name
    // `local.principal` only (the roles on each service account are not modelled).
    let acting = seen
        .lock()
        .expect("lock")
        .federated
        .iter()
        .find(|(t, _)| t == token)
        .map(|(_, principal)| principal.clone());
    if acting.is_some_and(|p| p != provider_rules().principal) {
        return google_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."
                .into(),
        );
    }
    if id_token {
        return generate_id_token(&seen, email, &body);
    }
    if body["scope"].as_array().is_none_or(Vec::is_empty) {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Scope required.".into(),
        );
    }
    match email {
        "denied@proj.iam.gserviceaccount.com" => {
            return (
                StatusCode::FORBIDDEN,
                Json(
                    json!({"error": {"code": 403, "message": "Permission 'iam.serviceAccounts.getAccessToken' denied"}}),
                ),
            );
        }
        // Answers 200 in a shape Google never sends.
        "garbled@proj.iam.gserviceaccount.com" => {
            return (
                StatusCode::OK,
                Json(json!({"accessToken": {"t": "ya29.x"}, "expireTime": "2030-01-01T00:00:00Z"})),
            );
        }
        "flaky@proj.iam.gserviceaccount.com" => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": {"message": "try later"}})),
            );
        }
        _ => {}
    }
    let asked: i64 = body["lifetime"]
        .as_str()
        .and_then(|l| l.strip_suffix('s'))
        .and_then(|s| s.parse().ok())
        .unwrap_or(3600);
    let secs = seen.lock().expect("lock").fixed_lifetime.unwrap_or(asked);
    let expire = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(secs);
    (
        StatusCode::OK,
        Json(
            json!({"accessToken": format!("ya29.impersonated-{email}"), "expireTime": expire.to_string()}),
        ),
    )
}

/// IAM Credentials `generateIdToken` after authentication: a JWT shaped as Google's (`iss`
/// accounts.google.com, `aud`, `azp`, `sub`, `iat`, `exp` an hour on, `email` and
/// `email_verified` when asked), its signature a stand-in: the federation never checks it,
/// the service receiving the token does.
fn generate_id_token(seen: &Shared, email: &str, body: &Value) -> (StatusCode, Json<Value>) {
    use base64::Engine as _;
    let Some(audience) = body["audience"].as_str().filter(|a| !a.is_empty()) else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Audience required.".into(),
        );
    };
    match email {
        "denied@proj.iam.gserviceaccount.com" => {
            return google_error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "Permission 'iam.serviceAccounts.getOpenIdToken' denied".into(),
            );
        }
        "garbled@proj.iam.gserviceaccount.com" => {
            return (StatusCode::OK, Json(json!({"idToken": "eyJ"})));
        }
        _ => {}
    }
    let now = jiff::Timestamp::now().as_second();
    let lives = seen.lock().expect("lock").fixed_lifetime.unwrap_or(3600);
    let mut claims = json!({
        "iss": "https://accounts.google.com", "aud": audience, "azp": "1234567890",
        "sub": "1234567890", "iat": now, "exp": now + lives,
    });
    if email == "no-exp@proj.iam.gserviceaccount.com" {
        claims.as_object_mut().expect("object").remove("exp");
    }
    if body["includeEmail"] == true {
        claims["email"] = json!(email);
        claims["email_verified"] = json!(true);
    }
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let token = format!(
        "{}.{}.ZmFrZS1zaWduYXR1cmU",
        b64(&json!({"alg": "RS256", "kid": "fake", "typ": "JWT"})),
        b64(&claims)
    );
    (StatusCode::OK, Json(json!({"token": token})))
}

fn google_error(status: StatusCode, code: &str, message: String) -> (StatusCode, Json<Value>) {
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "message": message, "status": code}})),
    )
}

/// Secret Manager `GET /v1/projects/{project}/secrets/{secret}/versions/{version}:access`.
async fn access(
    State(seen): State<Shared>,
    Path((project, secret, version)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    access_in(
        &seen,
        &format!("projects/{project}"),
        &secret,
        &version,
        &headers,
    )
}

/// The same for a regional secret:
/// `GET /v1/projects/{project}/locations/{location}/secrets/{secret}/versions/{version}:access`.
async fn access_regional(
    State(seen): State<Shared>,
    Path((project, location, secret, version)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    access_in(
        &seen,
        &format!("projects/{project}/locations/{location}"),
        &secret,
        &version,
        &headers,
    )
}

fn access_in(
    seen: &Shared,
    parent: &str,
    secret: &str,
    version: &str,
    headers: &HeaderMap,
) -> (StatusCode, Json<Value>) {
    use base64::Engine;
    let Some(version) = version.strip_suffix(":access") else {
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such method".into());
    };
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut seen = seen.lock().expect("lock");
    let secret_name = format!("{parent}/secrets/{secret}");
    let name = format!("{secret_name}/versions/{version}");
    seen.accesses.push((name.clone(), auth.clone()));
    let token = auth.strip_prefix("Bearer ").unwrap_or_default();
    if !authenticated(&seen, token) {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.".into(),
        );
    }
    if secret == "flaky" {
        return google_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "The service is currently unavailable.".into(),
        );
    }
    let denied = || {
        google_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            format!(
                "Permission 'secretmanager.versions.access' denied for resource '{name}' (or it may not exist)."
            ),
        )
    };
    if seen
        .readers
        .get(&secret_name)
        .is_some_and(|reader| reader != token)
    {
        return denied();
    }
    let versions = seen.secrets.get(&secret_name).cloned().unwrap_or_default();
    let number = match version {
        "latest" => versions.len(),
        n => n.parse().unwrap_or(0),
    };
    let Some(data) = number.checked_sub(1).and_then(|i| versions.get(i)) else {
        return google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("Secret Version [{secret_name}/versions/{version}] not found."),
        );
    };
    let mut crc = i64::from(crc32c(data));
    if seen.corrupt {
        crc ^= 1;
    }
    (
        StatusCode::OK,
        Json(json!({
            // Google names the resolved version, and the project by its number.
            "name": format!("projects/123456789012/secrets/{secret}/versions/{number}"),
            "payload": {
                "data": base64::engine::general_purpose::STANDARD.encode(data),
                "dataCrc32c": crc.to_string(),
            },
        })),
    )
}

/// CRC-32C (Castagnoli), bit by bit: the fake computes its checksums independently of the
/// crate the generator uses.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

struct Fake {
    base: String,
    seen: Shared,
    _dir: tempfile::TempDir,
    key_file: std::path::PathBuf,
}

async fn start_fake() -> Fake {
    let seen: Shared = Arc::default();
    let app = Router::new()
        .route("/token", post(token))
        .route("/v1/token", post(sts))
        .route("/v1/projects/-/serviceAccounts/{target}", post(generate))
        .route(
            "/v1/projects/{project}/secrets/{secret}/versions/{version}",
            get(access),
        )
        .route(
            "/v1/projects/{project}/locations/{location}/secrets/{secret}/versions/{version}",
            get(access_regional),
        )
        .with_state(seen.clone());
    let base = common::serve_local(app).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("federation-key.json");
    let public = write_key(&key_file, "k1", &base);
    seen.lock()
        .expect("lock")
        .keys
        .push(("k1".to_owned(), public));
    Fake {
        base,
        seen,
        _dir: dir,
        key_file,
    }
}

/// Writes a service account key file with a fresh RSA key named `kid`, for the fake at `base`;
/// returns its public key (DER).
fn write_key(path: &std::path::Path, kid: &str, base: &str) -> Vec<u8> {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::KeyPair as _;
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa");
    let pkcs8: aws_lc_rs::encoding::Pkcs8V1Der<'static> = key.as_der().expect("pkcs8");
    let pkcs8_der: &[u8] = pkcs8.as_ref();
    let sa_key = json!({
        "type": "service_account",
        "project_id": "proj",
        "private_key_id": kid,
        "private_key": common::pem("PRIVATE KEY", pkcs8_der),
        "client_email": "federation@proj.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": format!("{base}/token"),
    });
    std::fs::write(path, sa_key.to_string()).expect("write key");
    key.public_key().as_ref().to_vec()
}

fn store(fake: &Fake) -> Value {
    json!({"provider": {"gcp": {"serviceAccountKeyFile": fake.key_file, "iamCredentialsEndpoint": fake.base, "secretManagerEndpoint": fake.base, "timeout": "5s"}}})
}

fn spec(email: &str) -> Value {
    json!({
        "secretStoreRef": {"name": "gcp"},
        "serviceAccountEmail": email,
        "scopes": ["https://www.googleapis.com/auth/devstorage.read_only", "https://www.googleapis.com/auth/bigquery"],
        "lifetime": "20m",
        "delegates": ["mid@proj.iam.gserviceaccount.com", "projects/-/serviceAccounts/last@proj.iam.gserviceaccount.com"],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonates_with_scopes_lifetime_and_delegates_on_the_fake() {
    let fake = start_fake().await;
    let g = build(
        "GCPAccessToken",
        spec("app@proj.iam.gserviceaccount.com"),
        Some(store(&fake)),
    );
    let id = identity();
    let before = jiff::Timestamp::now();
    let cred = g
        .generate(&Context {
            identity: &id,
            generator: "payments/GCPAccessToken/app",
            max_ttl: None,
        })
        .await
        .expect("token");
    assert_eq!(
        cred.data["access_token"],
        "ya29.impersonated-app@proj.iam.gserviceaccount.com"
    );
    let secs = cred
        .expires_at
        .expect("expireTime")
        .duration_since(before)
        .as_secs();
    assert!((1190..=1210).contains(&secs), "{secs}");
    assert!(cred.lease.is_none());

    let seen = fake.seen.lock().expect("lock");
    let assertion = &seen.assertions[0];
    assert_eq!(assertion["iss"], "federation@proj.iam.gserviceaccount.com");
    assert_eq!(assertion["aud"], format!("{}/token", fake.base));
    assert!(
        assertion["scope"]
            .as_str()
            .unwrap_or_default()
            .contains("https://www.googleapis.com/auth/cloud-platform")
    );
    let (target, auth, body) = &seen.calls[0];
    assert_eq!(target, "app@proj.iam.gserviceaccount.com");
    assert_eq!(auth, &format!("Bearer {SOURCE_TOKEN}"));
    assert_eq!(body["lifetime"], "1200s");
    assert_eq!(
        body["scope"],
        json!([
            "https://www.googleapis.com/auth/devstorage.read_only",
            "https://www.googleapis.com/auth/bigquery"
        ])
    );
    assert_eq!(
        body["delegates"],
        json!([
            "projects/-/serviceAccounts/mid@proj.iam.gserviceaccount.com",
            "projects/-/serviceAccounts/last@proj.iam.gserviceaccount.com"
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifetime_is_capped_by_max_ttl_on_the_fake() {
    let fake = start_fake().await;
    let g = build(
        "GCPAccessToken",
        spec("app@proj.iam.gserviceaccount.com"),
        Some(store(&fake)),
    );
    let id = identity();
    let c = Context {
        identity: &id,
        generator: "g",
        max_ttl: Some(std::time::Duration::from_secs(300)),
    };
    g.generate(&c).await.expect("token");
    assert_eq!(
        fake.seen.lock().expect("lock").calls[0].2["lifetime"],
        "300s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_google_says_outlives_max_ttl_is_dropped_on_the_fake() {
    let fake = start_fake().await;
    // Asked for 300 s, Google answers an hour's expireTime.
    fake.seen.lock().expect("lock").fixed_lifetime = Some(3600);
    let g = build(
        "GCPAccessToken",
        spec("app@proj.iam.gserviceaccount.com"),
        Some(store(&fake)),
    );
    let id = identity();
    let c = Context {
        identity: &id,
        generator: "g",
        max_ttl: Some(std::time::Duration::from_secs(300)),
    };
    let err = g.generate(&c).await.expect_err("outlives maxTTL");
    let BackendError::Rejected { message, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.contains("maxTTL of 5m") && message.contains("dropped, not handed out"),
        "{message}"
    );
    assert!(!format!("{err:?}").contains("ya29"), "{err:?}");
    assert_eq!(
        fake.seen.lock().expect("lock").calls[0].2["lifetime"],
        "300s",
        "the shorter lifetime was asked"
    );
    // Within maxTTL (and its leeway for Google's clock) the same answer is handed out.
    let c = Context {
        max_ttl: Some(std::time::Duration::from_secs(3600)),
        ..c
    };
    g.generate(&c).await.expect("within maxTTL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_outages_are_classified_on_the_fake() {
    let fake = start_fake().await;
    let id = identity();
    let c = Context {
        identity: &id,
        generator: "g",
        max_ttl: None,
    };
    let fail = async |email: &str| {
        build("GCPAccessToken", spec(email), Some(store(&fake)))
            .generate(&c)
            .await
            .expect_err(email)
    };
    // The federation's IAM bindings, not the caller's, and only the operator can grant them:
    // rejected, as Secret Manager's 403.
    let err = fail("denied@proj.iam.gserviceaccount.com").await;
    assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");
    assert!(
        err.detail().contains("getAccessToken"),
        "google's reason goes to the log: {}",
        err.detail()
    );
    assert!(!err.to_string().contains(SOURCE_TOKEN));
    let err = fail("flaky@proj.iam.gserviceaccount.com").await;
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
    // The federation's own token not accepted (401): retryable, unlike the 403 above.
    fake.seen.lock().expect("lock").tokens_revoked = true;
    let err = fail("app@proj.iam.gserviceaccount.com").await;
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("did not accept"), "{err}");
    assert!(!err.to_string().contains(SOURCE_TOKEN));
    fake.seen.lock().expect("lock").tokens_revoked = false;
    // An answer of the wrong shape is placed in the log detail, its values are not.
    let err = fail("garbled@proj.iam.gserviceaccount.com").await;
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
    assert!(
        err.detail()
            .contains("a value of the wrong type or form at accessToken"),
        "{}",
        err.detail()
    );
    assert!(!format!("{err:?}").contains("ya29"), "{err:?}");
}

fn id_spec(email: &str) -> Value {
    json!({
        "secretStoreRef": {"name": "gcp"},
        "serviceAccountEmail": email,
        "audience": "https://payments-api-abc123-ew.a.run.app",
        "includeEmail": true,
        "delegates": ["mid@proj.iam.gserviceaccount.com"],
    })
}

/// The claims of a JWT, read without checking its signature.
fn jwt_claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("JSON claims")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_is_minted_for_the_audience_and_expires_when_it_says_on_the_fake() {
    let fake = start_fake().await;
    let g = build(
        "GCPIdentityToken",
        id_spec("invoker@proj.iam.gserviceaccount.com"),
        Some(store(&fake)),
    );
    let id = identity();
    let cred = g
        .generate(&Context {
            identity: &id,
            generator: "payments/GCPIdentityToken/invoke",
            max_ttl: Some(std::time::Duration::from_secs(3600)),
        })
        .await
        .expect("ID token");
    assert_eq!(cred.data.keys().collect::<Vec<_>>(), ["id_token"]);
    let claims = jwt_claims(&cred.data["id_token"]);
    assert_eq!(claims["aud"], "https://payments-api-abc123-ew.a.run.app");
    assert_eq!(claims["email"], "invoker@proj.iam.gserviceaccount.com");
    assert_eq!(
        cred.expires_at.map(|t| t.as_second()),
        claims["exp"].as_i64(),
        "expiresAt is the token's own exp"
    );
    assert!(cred.lease.is_none() && !cred.renewable);
    assert!(!format!("{cred:?}").contains(cred.data["id_token"].as_str()));

    let seen = fake.seen.lock().expect("lock");
    let (target, auth, body) = &seen.calls[0];
    assert_eq!(target, "invoker@proj.iam.gserviceaccount.com");
    assert_eq!(auth, &format!("Bearer {SOURCE_TOKEN}"));
    assert_eq!(
        body,
        &json!({
            "audience": "https://payments-api-abc123-ew.a.run.app",
            "includeEmail": true,
            "delegates": ["projects/-/serviceAccounts/mid@proj.iam.gserviceaccount.com"],
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_tokens_outliving_max_ttl_are_never_minted_or_handed_out_on_the_fake() {
    let fake = start_fake().await;
    let g = build(
        "GCPIdentityToken",
        id_spec("invoker@proj.iam.gserviceaccount.com"),
        Some(store(&fake)),
    );
    let id = identity();
    let ctx = |secs| Context {
        identity: &id,
        generator: "g",
        max_ttl: Some(std::time::Duration::from_secs(secs)),
    };
    // An hour's token for a 15-minute maxTTL: refused before Google is asked.
    let err = g
        .generate(&ctx(900))
        .await
        .expect_err("maxTTL below an hour");
    assert!(
        matches!(&err, BackendError::Rejected { message, .. } if message.contains("one hour")),
        "{err:?}"
    );
    assert!(fake.seen.lock().expect("lock").calls.is_empty());
    // A token Google says lives two hours is dropped.
    fake.seen.lock().expect("lock").fixed_lifetime = Some(7200);
    let err = g.generate(&ctx(3600)).await.expect_err("outlives maxTTL");
    assert!(
        matches!(&err, BackendError::Rejected { message, .. } if message.contains("dropped, not handed out")),
        "{err:?}"
    );
    assert!(!format!("{err:?}").contains("eyJ"), "{err:?}");
    assert_eq!(fake.seen.lock().expect("lock").calls.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_token_refusals_and_unreadable_answers_are_classified_on_the_fake() {
    let fake = start_fake().await;
    let id = identity();
    let c = Context {
        identity: &id,
        generator: "g",
        max_ttl: None,
    };
    let fail = async |email: &str| {
        build("GCPIdentityToken", id_spec(email), Some(store(&fake)))
            .generate(&c)
            .await
            .expect_err(email)
    };
    let err = fail("denied@proj.iam.gserviceaccount.com").await;
    assert!(
        matches!(&err, BackendError::Rejected { message, .. }
            if message.contains("iam.serviceAccounts.getOpenIdToken")),
        "the missing permission is named: {err:?}"
    );
    let err = fail("garbled@proj.iam.gserviceaccount.com").await;
    assert!(
        matches!(&err, BackendError::Unavailable { .. })
            && err.detail().contains("generateIdToken"),
        "{err:?}"
    );
    let err = fail("no-exp@proj.iam.gserviceaccount.com").await;
    assert!(
        matches!(&err, BackendError::Unavailable { message, .. } if message.contains("expiry")),
        "{err:?}"
    );
    assert!(!format!("{err:?}").contains("eyJ"), "{err:?}");
}

/// gcp_auth sets no timeout on the token endpoint and retries: the store's timeout bounds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_token_endpoint_is_unavailable_within_the_store_timeout_on_the_fake() {
    let fake = start_fake().await;
    fake.seen.lock().expect("lock").hang = true;
    let store = json!({"provider": {"gcp": {"serviceAccountKeyFile": fake.key_file, "iamCredentialsEndpoint": fake.base, "timeout": "1s"}}});
    let g = build(
        "GCPAccessToken",
        spec("app@proj.iam.gserviceaccount.com"),
        Some(store),
    );
    let id = identity();
    let c = Context {
        identity: &id,
        generator: "payments/GCPAccessToken/app",
        max_ttl: None,
    };
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(std::time::Duration::from_secs(10), g.generate(&c))
        .await
        .expect("the generator gave up within its store's timeout")
        .expect_err("no source token");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(&err, BackendError::Unavailable { message, .. } if message.contains("in time")),
        "{err:?}"
    );
    assert!(fake.seen.lock().expect("lock").calls.is_empty());
}

#[tokio::test]
async fn generators_on_one_store_share_its_source_token_on_the_fake() {
    let fake = start_fake().await;
    let store = esi_backends::SecretStoreSpec::from_manifest(store(&fake)).expect("store");
    let spec = |email: &str| {
        esi_backends::GeneratorSpec::from_manifest(
            esi_backends::GeneratorKind::GcpAccessToken,
            spec(email),
        )
        .expect("spec")
    };
    let id = identity();
    let ctx = Context {
        identity: &id,
        generator: "payments/GCPAccessToken/app",
        max_ttl: None,
    };
    // Held together, as a configuration's snapshot holds its generators.
    let mut shared = esi_backends::Shared::default();
    let mut held = Vec::new();
    for email in [
        "app@proj.iam.gserviceaccount.com",
        "other@proj.iam.gserviceaccount.com",
    ] {
        let g = esi_backends::Generator::build_shared(&spec(email), Some(&store), &mut shared)
            .expect("builds");
        g.generate(&ctx).await.expect("token");
        held.push(g);
    }
    let exchanges = fake.seen.lock().expect("lock").assertions.len();
    assert_eq!(
        exchanges, 1,
        "two generators on one store: one source token"
    );

    // Built apart, each generator gets its own source token.
    for email in [
        "app@proj.iam.gserviceaccount.com",
        "other@proj.iam.gserviceaccount.com",
    ] {
        esi_backends::Generator::build(&spec(email), Some(&store))
            .expect("builds")
            .generate(&ctx)
            .await
            .expect("token");
    }
    let exchanges = fake.seen.lock().expect("lock").assertions.len();
    assert_eq!(exchanges, 3);
}

/// The store's connection outlives reloads, so a rotated key file must be picked up without
/// one: when the token endpoint refuses the old key (deleted), the file is read again.
#[tokio::test]
async fn a_rotated_key_file_is_read_again_after_a_refusal_on_the_fake() {
    let fake = start_fake().await;
    // Source tokens that expire at once: every generation exchanges the key for a new one.
    fake.seen.lock().expect("lock").expires_in = Some(1);
    let g = build(
        "GCPAccessToken",
        spec("app@proj.iam.gserviceaccount.com"),
        Some(store(&fake)),
    );
    let id = identity();
    let ctx = Context {
        identity: &id,
        generator: "payments/GCPAccessToken/app",
        max_ttl: None,
    };
    g.generate(&ctx).await.expect("token with k1");
    let public = write_key(&fake.key_file, "k2", &fake.base);
    {
        let mut seen = fake.seen.lock().expect("lock");
        seen.keys.push(("k2".to_owned(), public));
        seen.revoked.push("k1".to_owned());
    }
    g.generate(&ctx).await.expect("token with the rotated key");
    let kids = fake.seen.lock().expect("lock").kids.clone();
    assert_eq!(kids.first().map(String::as_str), Some("k1"));
    assert_eq!(kids.last().map(String::as_str), Some("k2"), "{kids:?}");

    // Both keys deleted: a clear refusal, after one more try.
    fake.seen
        .lock()
        .expect("lock")
        .revoked
        .push("k2".to_owned());
    let err = g.generate(&ctx).await.expect_err("no valid key");
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
}

/// Application default credentials: a store without a key file takes the federation's own
/// Google identity from the environment (`GOOGLE_APPLICATION_CREDENTIALS`, what a Deployment
/// mounts). The variable is set for a child process running this same test, which then takes
/// the child's branch; the metadata server (GCE, GKE) has a fixed host name and is not faked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_default_credentials_from_the_environment_on_the_fake() {
    const TEST: &str = "application_default_credentials_from_the_environment_on_the_fake";
    const CHILD: &str = "ESI_TEST_GCP_ADC_ENDPOINT";
    if let Ok(endpoint) = std::env::var(CHILD) {
        let store =
            json!({"provider": {"gcp": {"iamCredentialsEndpoint": endpoint, "timeout": "5s"}}});
        let g = build(
            "GCPAccessToken",
            spec("app@proj.iam.gserviceaccount.com"),
            Some(store),
        );
        let id = identity();
        let ctx = Context {
            identity: &id,
            generator: "payments/GCPAccessToken/app",
            max_ttl: None,
        };
        let cred = g.generate(&ctx).await.expect("token through ADC");
        assert_eq!(
            cred.data["access_token"],
            "ya29.impersonated-app@proj.iam.gserviceaccount.com"
        );
        return;
    }
    let fake = start_fake().await;
    let exe = std::env::current_exe().expect("test binary");
    let (key_file, base) = (fake.key_file.clone(), fake.base.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .args(["--exact", TEST, "--test-threads=1"])
            .env("GOOGLE_APPLICATION_CREDENTIALS", key_file)
            .env(CHILD, base)
            .output()
    })
    .await
    .expect("join")
    .expect("child test runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = fake.seen.lock().expect("lock");
    assert_eq!(
        seen.kids,
        ["k1"],
        "one exchange, signed with the key file's key"
    );
    assert_eq!(seen.calls.len(), 1);
}

// --- GCPSecretManagerSecret ---------------------------------------------------------------

const DB_V1: &str = r#"{"username": "app", "password": "old-s3cr3t"}"#;
const DB_V2: &str = r#"{"username": "app", "password": "s3cr3t-v2", "port": 5432}"#;
const IMPERSONATED_READER: &str = "ya29.impersonated-reader@proj.iam.gserviceaccount.com";

/// A fake holding secrets in project `my-project`: `payments-db` (two versions of a JSON object),
/// `orders-db`, `plain` (text), `blob` (bytes that are not UTF-8) and `restricted` (readable
/// only by the `reader@` service account).
async fn start_secret_fake() -> Fake {
    let fake = start_fake().await;
    {
        let mut seen = fake.seen.lock().expect("lock");
        let mut put = |secret: &str, versions: Vec<Vec<u8>>| {
            seen.secrets
                .insert(format!("projects/my-project/secrets/{secret}"), versions);
        };
        put("payments-db", vec![DB_V1.into(), DB_V2.into()]);
        put(
            "orders-db",
            vec![br#"{"password": "orders-s3cr3t"}"#.to_vec()],
        );
        put("plain", vec![b"just text s3cr3t".to_vec()]);
        put("blob", vec![vec![0xff, 0x00, 0xfe, 0x80]]);
        put(
            "restricted",
            vec![br#"{"token": "restricted-s3cr3t"}"#.to_vec()],
        );
        seen.readers.insert(
            "projects/my-project/secrets/restricted".to_owned(),
            IMPERSONATED_READER.to_owned(),
        );
        seen.secrets.insert(
            "projects/my-project/locations/europe-west1/secrets/payments-db".to_owned(),
            vec![br#"{"password": "regional-s3cr3t"}"#.to_vec()],
        );
    }
    fake
}

fn secret_spec(extra: Value) -> Value {
    let mut spec = json!({"secretStoreRef": {"name": "gcp"}, "project": "my-project", "secret": "{{namespace}}-db"});
    for (k, v) in extra.as_object().expect("object") {
        spec[k] = v.clone();
    }
    spec
}

async fn read_secret(
    fake: &Fake,
    extra: Value,
    id: &esi_api::Identity,
) -> Result<esi_backends::Credential, BackendError> {
    let ctx = Context {
        identity: id,
        generator: "payments/GCPSecretManagerSecret/db",
        max_ttl: None,
    };
    build(
        "GCPSecretManagerSecret",
        secret_spec(extra),
        Some(store(fake)),
    )
    .generate(&ctx)
    .await
}

/// Neither the message, the log detail nor `Debug` of `err` holds a secret or a token.
fn assert_no_secret(err: &BackendError) {
    for text in [err.to_string(), err.detail().to_owned(), format!("{err:?}")] {
        assert!(
            !text.contains("s3cr3t") && !text.contains("ya29."),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_manager_reads_each_namespace_its_secret_at_latest_or_a_pinned_version_on_the_fake()
{
    let fake = start_secret_fake().await;
    let id = identity();
    let cred = read_secret(&fake, json!({}), &id).await.expect("latest");
    assert_eq!(
        cred.data.clone().into_iter().collect::<Vec<_>>(),
        [
            ("password".to_owned(), "s3cr3t-v2".to_owned()),
            ("port".to_owned(), "5432".to_owned()),
            ("username".to_owned(), "app".to_owned()),
        ]
    );
    assert!(cred.expires_at.is_none() && cred.lease.is_none() && !cred.renewable);
    assert!(!format!("{cred:?}").contains("s3cr3t"), "{cred:?}");

    let cred = read_secret(&fake, json!({"version": 1}), &id)
        .await
        .expect("version 1");
    assert_eq!(cred.data["password"], "old-s3cr3t");
    let cred = read_secret(&fake, json!({"version": "2"}), &id)
        .await
        .expect("version 2");
    assert_eq!(cred.data["password"], "s3cr3t-v2");

    // A regional secret of the same name.
    let cred = read_secret(&fake, json!({"location": "europe-west1"}), &id)
        .await
        .expect("regional");
    assert_eq!(cred.data["password"], "regional-s3cr3t");

    // The same generator, another namespace: its own secret.
    let mut orders = identity();
    orders.namespace = "orders".into();
    let cred = read_secret(&fake, json!({}), &orders)
        .await
        .expect("orders");
    assert_eq!(cred.data["password"], "orders-s3cr3t");

    let seen = fake.seen.lock().expect("lock");
    let names: Vec<&str> = seen.accesses.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "projects/my-project/secrets/payments-db/versions/latest",
            "projects/my-project/secrets/payments-db/versions/1",
            "projects/my-project/secrets/payments-db/versions/2",
            "projects/my-project/locations/europe-west1/secrets/payments-db/versions/latest",
            "projects/my-project/secrets/orders-db/versions/latest",
        ]
    );
    // Read with the federation's own token; nothing impersonated.
    assert!(
        seen.accesses
            .iter()
            .all(|(_, auth)| auth == &format!("Bearer {SOURCE_TOKEN}"))
    );
    assert!(seen.calls.is_empty(), "no generateAccessToken");
    let scope = seen.assertions[0]["scope"].as_str().unwrap_or_default();
    assert!(scope.contains("https://www.googleapis.com/auth/cloud-platform"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_manager_narrows_to_keys_and_refuses_a_missing_one_without_contents_on_the_fake() {
    let fake = start_secret_fake().await;
    let id = identity();
    let cred = read_secret(&fake, json!({"keys": ["password"]}), &id)
        .await
        .expect("narrowed");
    assert_eq!(
        cred.data.into_iter().collect::<Vec<_>>(),
        [("password".to_owned(), "s3cr3t-v2".to_owned())]
    );
    let err = read_secret(&fake, json!({"keys": ["password", "host"]}), &id)
        .await
        .expect_err("host is missing");
    assert!(
        matches!(&err, BackendError::Rejected { message, .. } if message.contains("\"host\"")),
        "{err:?}"
    );
    assert_no_secret(&err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_manager_returns_text_under_key_and_binary_as_base64_on_the_fake() {
    use base64::Engine;
    let fake = start_secret_fake().await;
    let id = identity();
    let cred = read_secret(&fake, json!({"secret": "plain", "key": "token"}), &id)
        .await
        .expect("text");
    assert_eq!(
        cred.data.into_iter().collect::<Vec<_>>(),
        [("token".to_owned(), "just text s3cr3t".to_owned())]
    );
    let cred = read_secret(&fake, json!({"secret": "blob"}), &id)
        .await
        .expect("binary");
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(&cred.data["value"])
            .expect("base64"),
        [0xff, 0x00, 0xfe, 0x80]
    );
    // keys cannot select from text or bytes.
    for secret in ["plain", "blob"] {
        let err = read_secret(&fake, json!({"secret": secret, "keys": ["a"]}), &id)
            .await
            .expect_err(secret);
        assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");
        assert_no_secret(&err);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_manager_refuses_a_payload_whose_crc32c_does_not_match_on_the_fake() {
    let fake = start_secret_fake().await;
    fake.seen.lock().expect("lock").corrupt = true;
    let err = read_secret(&fake, json!({}), &identity())
        .await
        .expect_err("corrupt payload");
    assert!(
        matches!(&err, BackendError::Unavailable { message, .. } if message.contains("checksum")),
        "{err:?}"
    );
    assert_no_secret(&err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_manager_classifies_missing_denied_and_unavailable_on_the_fake() {
    let fake = start_secret_fake().await;
    let id = identity();

    // No such secret: the caller's (or the configuration's) to fix; which secret, and
    // Google's words, only in the log detail.
    let err = read_secret(&fake, json!({"secret": "{{namespace}}-missing"}), &id)
        .await
        .expect_err("missing");
    assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");
    assert!(!err.to_string().contains("payments-missing"), "{err}");
    assert!(
        err.detail()
            .contains("projects/my-project/secrets/payments-missing/versions/latest")
            && err.detail().contains("NOT_FOUND"),
        "{}",
        err.detail()
    );
    // A version that does not exist.
    let err = read_secret(&fake, json!({"version": 9}), &id)
        .await
        .expect_err("no version 9");
    assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");

    // The federation's identity may not read it: its IAM bindings, not the caller's fault, a
    // permission only the operator can grant (rejected: the caller fails at once).
    let err = read_secret(&fake, json!({"secret": "restricted"}), &id)
        .await
        .expect_err("denied");
    assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");
    assert!(
        err.detail().contains("PERMISSION_DENIED"),
        "{}",
        err.detail()
    );
    assert!(!err.to_string().contains("restricted"), "{err}");
    assert_no_secret(&err);

    let err = read_secret(&fake, json!({"secret": "flaky"}), &id)
        .await
        .expect_err("503");
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");

    // The federation's token not accepted (401): retryable, unlike the 403 above.
    fake.seen.lock().expect("lock").tokens_revoked = true;
    let err = read_secret(&fake, json!({}), &id).await.expect_err("401");
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
    assert_no_secret(&err);
    fake.seen.lock().expect("lock").tokens_revoked = false;

    // A rendered name Google would not take never reaches it: the pod name holds a dot.
    let mut dotted = identity();
    dotted.pod = Some(esi_api::ObjectRef {
        name: "api.v2".into(),
        uid: "u".into(),
    });
    let before = fake.seen.lock().expect("lock").accesses.len();
    let err = read_secret(&fake, json!({"secret": "{{pod}}"}), &dotted)
        .await
        .expect_err("invalid rendered name");
    assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");
    assert_eq!(fake.seen.lock().expect("lock").accesses.len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_manager_reads_as_an_impersonated_service_account_on_the_fake() {
    let fake = start_secret_fake().await;
    let cred = read_secret(
        &fake,
        json!({
            "secret": "restricted",
            "serviceAccountEmail": "reader@proj.iam.gserviceaccount.com",
            "delegates": ["mid@proj.iam.gserviceaccount.com"],
        }),
        &identity(),
    )
    .await
    .expect("read as reader@");
    assert_eq!(cred.data["token"], "restricted-s3cr3t");
    assert!(
        cred.expires_at.is_none(),
        "the read token is not handed out"
    );

    let seen = fake.seen.lock().expect("lock");
    // generateAccessToken with the federation's token, for a short-lived cloud-platform token...
    let (target, auth, body) = &seen.calls[0];
    assert_eq!(target, "reader@proj.iam.gserviceaccount.com");
    assert_eq!(auth, &format!("Bearer {SOURCE_TOKEN}"));
    assert_eq!(body["lifetime"], "300s");
    assert_eq!(
        body["scope"],
        json!(["https://www.googleapis.com/auth/cloud-platform"])
    );
    assert_eq!(
        body["delegates"],
        json!(["projects/-/serviceAccounts/mid@proj.iam.gserviceaccount.com"])
    );
    // ...and the read made with that token.
    assert_eq!(
        seen.accesses,
        [(
            "projects/my-project/secrets/restricted/versions/latest".to_owned(),
            format!("Bearer {IMPERSONATED_READER}")
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_manager_impersonation_refused_is_not_a_read_on_the_fake() {
    let fake = start_secret_fake().await;
    let err = read_secret(
        &fake,
        json!({"secret": "restricted", "serviceAccountEmail": "denied@proj.iam.gserviceaccount.com"}),
        &identity(),
    )
    .await
    .expect_err("impersonation denied");
    assert!(err.detail().contains("getAccessToken"), "{}", err.detail());
    assert!(fake.seen.lock().expect("lock").accesses.is_empty());
}

// --- GCRAccessToken -------------------------------------------------------------------------

#[cfg(feature = "gcr")]
mod gcr {
    use base64::Engine as _;

    use super::*;

    const READ_ONLY: &str = "https://www.googleapis.com/auth/devstorage.read_only";
    const READ_WRITE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
    const PULLER: &str = "payments-puller@proj.iam.gserviceaccount.com";

    fn gcr_spec(extra: Value) -> Value {
        let mut spec = json!({
            "secretStoreRef": {"name": "gcp"},
            "registries": ["europe-docker.pkg.dev", "eu.gcr.io"],
            "serviceAccountEmail": "{{namespace}}-puller@proj.iam.gserviceaccount.com",
        });
        for (k, v) in extra.as_object().expect("object") {
            spec[k] = v.clone();
        }
        spec
    }

    fn ctx(id: &esi_api::Identity, max_ttl: Option<std::time::Duration>) -> Context<'_> {
        Context {
            identity: id,
            generator: "payments/GCRAccessToken/pull",
            max_ttl,
        }
    }

    /// The logins of a `dockerconfigjson`, by registry, with `auth` decoded.
    fn logins(config: &str) -> Vec<(String, Value, String)> {
        let config: Value = serde_json::from_str(config).expect("dockerconfigjson is JSON");
        let auths = config["auths"].as_object().expect("auths object");
        assert_eq!(config.as_object().expect("object").len(), 1, "{config}");
        auths
            .iter()
            .map(|(registry, login)| {
                let auth = base64::engine::general_purpose::STANDARD
                    .decode(login["auth"].as_str().expect("auth string"))
                    .expect("auth is base64");
                (
                    registry.clone(),
                    login.clone(),
                    String::from_utf8(auth).expect("auth is text"),
                )
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gcr_login_is_a_docker_login_to_every_registry_on_the_fake() {
        let fake = start_fake().await;
        let g = build(
            "GCRAccessToken",
            gcr_spec(json!({"delegates": ["mid@proj.iam.gserviceaccount.com"]})),
            Some(store(&fake)),
        );
        let id = identity();
        let before = jiff::Timestamp::now();
        let cred = g.generate(&ctx(&id, None)).await.expect("login");
        let token = format!("ya29.impersonated-{PULLER}");
        assert_eq!(
            cred.data.keys().collect::<Vec<_>>(),
            ["dockerconfigjson", "password", "registry", "username"]
        );
        assert_eq!(cred.data["username"], "oauth2accesstoken");
        assert_eq!(cred.data["password"], token);
        assert_eq!(cred.data["registry"], "europe-docker.pkg.dev");
        let logins = logins(&cred.data["dockerconfigjson"]);
        assert_eq!(
            logins.iter().map(|l| l.0.as_str()).collect::<Vec<_>>(),
            ["eu.gcr.io", "europe-docker.pkg.dev"]
        );
        for (registry, login, auth) in &logins {
            assert_eq!(login["username"], "oauth2accesstoken", "{registry}");
            assert_eq!(login["password"], token.as_str(), "{registry}");
            assert_eq!(auth, &format!("oauth2accesstoken:{token}"), "{registry}");
        }
        // Google's expireTime of a token of the default hour; nothing to revoke.
        let secs = cred
            .expires_at
            .expect("expireTime")
            .duration_since(before)
            .as_secs();
        assert!((3590..=3610).contains(&secs), "{secs}");
        assert!(cred.lease.is_none() && !cred.renewable);

        // Minted as GCPAccessToken mints: the caller's account, the store's token, a pull scope.
        let seen = fake.seen.lock().expect("lock");
        let (target, auth, body) = &seen.calls[0];
        assert_eq!(target, PULLER);
        assert_eq!(auth, &format!("Bearer {SOURCE_TOKEN}"));
        assert_eq!(body["scope"], json!([READ_ONLY]));
        assert_eq!(body["lifetime"], "3600s");
        assert_eq!(
            body["delegates"],
            json!(["projects/-/serviceAccounts/mid@proj.iam.gserviceaccount.com"])
        );
        assert_eq!(seen.calls.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gcr_push_login_lives_no_longer_than_max_ttl_on_the_fake() {
        let fake = start_fake().await;
        let g = build(
            "GCRAccessToken",
            gcr_spec(
                json!({"access": "push", "lifetime": "30m", "registries": ["us-central1-docker.pkg.dev"]}),
            ),
            Some(store(&fake)),
        );
        let id = identity();
        let before = jiff::Timestamp::now();
        let max_ttl = std::time::Duration::from_secs(300);
        let cred = g.generate(&ctx(&id, Some(max_ttl))).await.expect("login");
        let secs = cred
            .expires_at
            .expect("expireTime")
            .duration_since(before)
            .as_secs();
        assert!((290..=310).contains(&secs), "{secs}");
        assert_eq!(cred.data["registry"], "us-central1-docker.pkg.dev");
        assert_eq!(logins(&cred.data["dockerconfigjson"]).len(), 1);
        // Under a longer maxTTL the spec's lifetime holds.
        g.generate(&ctx(&id, Some(std::time::Duration::from_secs(7200))))
            .await
            .expect("login");
        let seen = fake.seen.lock().expect("lock");
        assert_eq!(seen.calls[0].2["lifetime"], "300s");
        assert_eq!(seen.calls[0].2["scope"], json!([READ_WRITE]));
        assert_eq!(seen.calls[1].2["lifetime"], "1800s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gcr_login_google_says_outlives_max_ttl_is_dropped_on_the_fake() {
        let fake = start_fake().await;
        fake.seen.lock().expect("lock").fixed_lifetime = Some(1800);
        let g = build(
            "GCRAccessToken",
            gcr_spec(json!({"lifetime": "30m"})),
            Some(store(&fake)),
        );
        let id = identity();
        let err = g
            .generate(&ctx(&id, Some(std::time::Duration::from_secs(600))))
            .await
            .expect_err("outlives maxTTL");
        let BackendError::Rejected { message, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(
            message.contains("longer than the Authorization's maxTTL of 10m")
                && message.contains("not handed out"),
            "{message}"
        );
        assert!(!format!("{err:?}").contains("ya29"), "{err:?}");
        assert_eq!(
            fake.seen.lock().expect("lock").calls[0].2["lifetime"],
            "600s"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gcr_secrets_stay_out_of_debug_and_errors_on_the_fake() {
        let fake = start_fake().await;
        let g = build("GCRAccessToken", gcr_spec(json!({})), Some(store(&fake)));
        let id = identity();
        let cred = g.generate(&ctx(&id, None)).await.expect("login");
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("oauth2accesstoken:{}", cred.data["password"]));
        for text in [format!("{cred:?}"), format!("{g:?}")] {
            assert!(
                !text.contains("ya29.") && !text.contains(&auth),
                "a token in Debug: {text}"
            );
        }

        // Impersonation denied (403): the federation's to fix, Google's words in the log only.
        let denied = build(
            "GCRAccessToken",
            gcr_spec(json!({"serviceAccountEmail": "denied@proj.iam.gserviceaccount.com"})),
            Some(store(&fake)),
        );
        let err = denied.generate(&ctx(&id, None)).await.expect_err("denied");
        assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");
        assert!(err.detail().contains("getAccessToken"), "{}", err.detail());
        assert_no_secret(&err);

        // A caller whose identity renders no service account: refused before Google is asked.
        let mut odd = identity();
        odd.namespace = "pay/ments".into();
        let calls = fake.seen.lock().expect("lock").calls.len();
        let err = g.generate(&ctx(&odd, None)).await.expect_err("no account");
        assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");
        assert_eq!(fake.seen.lock().expect("lock").calls.len(), calls);
    }
}

// --- selfIssued: Workload Identity Federation -----------------------------------------------

/// A `selfIssued` store on the fake, with `extra` fields in its `selfIssued`.
fn own_store(fake: &Fake, extra: Value) -> esi_backends::SecretStoreSpec {
    let mut own = json!({"workloadIdentityProvider": "projects/123456789/locations/global/workloadIdentityPools/esi-federation/providers/esi-federation"});
    for (k, v) in extra.as_object().expect("object") {
        own[k] = v.clone();
    }
    esi_backends::SecretStoreSpec::from_manifest(json!({"provider": {"gcp": {
        "selfIssued": own,
        "stsEndpoint": fake.base,
        "iamCredentialsEndpoint": fake.base,
        "secretManagerEndpoint": fake.base,
        "timeout": "5s",
    }}}))
    .expect("valid store")
}

/// The pool provider `trust-gcp` makes for `issuer`.
fn trusting(issuer: &esi_backends::identity::Issuer) -> Pool {
    Pool {
        issuer: issuer.url().to_owned(),
        jwks: serde_json::from_str(issuer.jwks_json()).expect("jwks"),
    }
}

#[tokio::test]
async fn a_self_issued_token_is_exchanged_for_a_google_token_with_no_secret_on_the_fake() {
    use esi_backends::identity::{FEDERATION_SUBJECT, KeyAlgorithm};
    use esi_backends::{Generator, GeneratorKind, GeneratorSpec, Shared, SpecError};
    let fake = start_fake().await;
    let issuer = common::own_issuer(KeyAlgorithm::Rs256);
    let own = own_store(&fake, json!({}));
    let spec = |email: &str| {
        GeneratorSpec::from_manifest(GeneratorKind::GcpAccessToken, spec(email)).expect("spec")
    };
    let mut shared = Shared::with_issuer(Some(issuer.clone()));
    let app = Generator::build_shared(
        &spec("app@proj.iam.gserviceaccount.com"),
        Some(&own),
        &mut shared,
    )
    .expect("builds");
    let other = Generator::build_shared(
        &spec("other@proj.iam.gserviceaccount.com"),
        Some(&own),
        &mut shared,
    )
    .expect("builds");
    let id = identity();
    let ctx = common::ctx(&id, "payments/GCPAccessToken/app");

    // A provider of another issuer does not take the federation's own token.
    fake.seen.lock().expect("lock").pool = Some(trusting(&common::own_issuer(KeyAlgorithm::Rs256)));
    let e = app.generate(&ctx).await.unwrap_err();
    assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
    assert!(e.to_string().contains("Security Token Service"), "{e}");
    assert!(e.detail().contains("invalid_grant"), "{}", e.detail());
    assert!(fake.seen.lock().expect("lock").calls.is_empty());

    // The provider trust-gcp makes for the federation's issuer does: no key file, no secret
    // anywhere.
    fake.seen.lock().expect("lock").pool = Some(trusting(&issuer));
    let before = jiff::Timestamp::now().as_second();
    let cred = app.generate(&ctx).await.expect("minted");
    assert_eq!(
        cred.data["access_token"],
        "ya29.impersonated-app@proj.iam.gserviceaccount.com"
    );
    {
        let seen = fake.seen.lock().expect("lock");
        assert!(seen.assertions.is_empty(), "no key file was used");
        let exchange = seen.exchanges.last().expect("an exchange");
        assert_eq!(exchange["grantType"], TOKEN_EXCHANGE);
        assert_eq!(exchange["audience"], PROVIDER);
        assert_eq!(exchange["requestedTokenType"], ACCESS_TOKEN_TYPE);
        assert_eq!(
            exchange["subjectTokenType"],
            "urn:ietf:params:oauth:token-type:jwt"
        );
        assert_eq!(
            exchange["scope"],
            "https://www.googleapis.com/auth/cloud-platform"
        );
        let claims =
            common::jwt_claims(exchange["subjectToken"].as_str().expect("a subject token"));
        assert_eq!(claims["iss"], "https://esi.example.com");
        assert_eq!(claims["sub"], FEDERATION_SUBJECT);
        assert_eq!(claims["aud"], PROVIDER);
        let iat = claims["iat"].as_i64().expect("iat");
        assert!((before..=before + 2).contains(&iat), "{claims}");
        assert_eq!(claims["exp"].as_i64(), Some(iat + 300));
        assert!(claims.get("esi").is_none(), "it names no workload");
        let (target, auth, _) = seen.calls.last().expect("a generateAccessToken call");
        assert_eq!(target, "app@proj.iam.gserviceaccount.com");
        assert_eq!(
            auth, "Bearer ya29.federated-1",
            "the federated token itself"
        );
    }

    // Generators on the store share the federated token until it nears its expiry.
    other.generate(&ctx).await.expect("minted");
    app.generate(&ctx).await.expect("minted");
    assert_eq!(
        fake.seen.lock().expect("lock").exchanges.len(),
        2,
        "one refused, one taken"
    );

    // Google no longer takes it (401): forgotten, and the next request exchanges again.
    fake.seen.lock().expect("lock").tokens_revoked = true;
    let e = app.generate(&ctx).await.unwrap_err();
    assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
    fake.seen.lock().expect("lock").tokens_revoked = false;
    app.generate(&ctx).await.expect("minted");
    {
        let seen = fake.seen.lock().expect("lock");
        assert_eq!(seen.exchanges.len(), 3);
        assert_eq!(
            seen.calls.last().expect("a call").1,
            "Bearer ya29.federated-2"
        );
    }

    // A token that would live under five minutes is exchanged again for every request.
    fake.seen.lock().expect("lock").expires_in = Some(120);
    let fresh = own_store(&fake, json!({}));
    let short = Generator::build_shared(
        &spec("app@proj.iam.gserviceaccount.com"),
        Some(&fresh),
        &mut Shared::with_issuer(Some(issuer.clone())),
    )
    .expect("builds");
    short.generate(&ctx).await.expect("minted");
    short.generate(&ctx).await.expect("minted");
    assert_eq!(fake.seen.lock().expect("lock").exchanges.len(), 5);

    // Another key signing the same claims is refused by the signature.
    let impostor = Generator::build_shared(
        &spec("app@proj.iam.gserviceaccount.com"),
        Some(&own),
        &mut Shared::with_issuer(Some(common::own_issuer(KeyAlgorithm::Rs256))),
    )
    .expect("builds");
    let e = impostor.generate(&ctx).await.unwrap_err();
    assert!(e.detail().contains("invalid_grant"), "{}", e.detail());
    for text in [e.to_string(), e.detail().to_owned(), format!("{e:?}")] {
        assert!(!text.contains("eyJ") && !text.contains("ya29."), "{text}");
    }

    // A serving federation that is no issuer refuses the store at load, naming the fix.
    let e = Generator::build_shared(
        &spec("app@proj.iam.gserviceaccount.com"),
        Some(&own),
        &mut Shared::with_issuer(None),
    )
    .unwrap_err();
    assert!(matches!(e, SpecError::NoIssuer { .. }), "{e:?}");
    assert!(
        e.to_string().contains("selfIssued") && e.to_string().contains("--issuer-url"),
        "{e}"
    );
}

/// The pool provider `trust-gcp` makes, with its attribute mapping and condition run as CEL on
/// the fake as Google runs them: the federation's own token becomes the principal the module's
/// grants name, while a workload's `IdentityToken` from the same issuer, for the same audience,
/// is refused by the condition, and tokens for another audience or of another issuer by the
/// provider.
#[tokio::test]
async fn trust_gcps_provider_takes_the_federations_own_token_and_no_workloads() {
    use esi_backends::identity::{KeyAlgorithm, TokenRequest};
    use secrecy::ExposeSecret as _;
    let fake = start_fake().await;
    let issuer = common::own_issuer(KeyAlgorithm::Rs256);
    fake.seen.lock().expect("lock").pool = Some(trusting(&issuer));
    let http = reqwest::Client::new();
    let exchange = |token: String| {
        let request = http.post(format!("{}/v1/token", fake.base)).json(&json!({
            "grantType": TOKEN_EXCHANGE,
            "audience": PROVIDER,
            "scope": "https://www.googleapis.com/auth/cloud-platform",
            "requestedTokenType": ACCESS_TOKEN_TYPE,
            "subjectToken": token,
            "subjectTokenType": "urn:ietf:params:oauth:token-type:jwt",
        }));
        async move {
            let answer = request.send().await.expect("the fake answers");
            let status = answer.status().as_u16();
            (status, answer.json::<Value>().await.expect("JSON"))
        }
    };
    let own = |audience: &str| {
        issuer
            .mint_own(audience, std::time::Duration::from_secs(300))
            .expect("signed")
            .token
            .expose_secret()
            .to_owned()
    };

    let (status, body) = exchange(own(PROVIDER)).await;
    assert_eq!(status, 200, "{body}");
    let principal = "principal://iam.googleapis.com/projects/123456789/locations/global/\
                     workloadIdentityPools/esi-federation/subject/esi-federation";
    assert_eq!(
        fake.seen
            .lock()
            .expect("lock")
            .federated
            .last()
            .map(|(_, p)| p.as_str()),
        Some(principal)
    );
    assert_eq!(
        provider_rules().principal,
        principal,
        "the module's grants name it"
    );

    // A workload's identity token for the provider, signed by the same issuer.
    let id = identity();
    let audiences = [PROVIDER.to_owned()];
    let workload = issuer
        .mint(&TokenRequest {
            identity: &id,
            generator: "payments/IdentityToken/gcp",
            audiences: &audiences,
            lifetime: std::time::Duration::from_secs(600),
            aws_session_tags: false,
        })
        .expect("signed");
    let (status, body) = exchange(workload.token.expose_secret().to_owned()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "unauthorized_client", "{body}");
    assert_eq!(
        body["error_description"],
        "The given credential is rejected by the attribute condition."
    );

    let (status, body) = exchange(own("https://sts.amazonaws.com")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let stranger = common::own_issuer(KeyAlgorithm::Rs256);
    let forged = stranger
        .mint_own(PROVIDER, std::time::Duration::from_secs(300))
        .expect("signed");
    let (status, body) = exchange(forged.token.expose_secret().to_owned()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert_eq!(
        fake.seen.lock().expect("lock").federated.len(),
        1,
        "only the federation's own token was exchanged"
    );
}

/// With `serviceAccount`, the federated identity impersonates the federation's service account
/// (an hour, `cloud-platform`), and that account's token makes every call: impersonating the
/// generators' accounts, and reading secrets as the federation.
#[tokio::test]
async fn a_self_issued_store_can_act_as_a_service_account_of_its_own_on_the_fake() {
    use esi_backends::identity::KeyAlgorithm;
    use esi_backends::{Generator, GeneratorKind, GeneratorSpec, Shared};
    let fake = start_secret_fake().await;
    let issuer = common::own_issuer(KeyAlgorithm::Es256);
    fake.seen.lock().expect("lock").pool = Some(trusting(&issuer));
    let own = own_store(
        &fake,
        json!({"serviceAccount": "esi-federation@proj.iam.gserviceaccount.com"}),
    );
    let mut shared = Shared::with_issuer(Some(issuer));
    let token = Generator::build_shared(
        &GeneratorSpec::from_manifest(
            GeneratorKind::GcpAccessToken,
            spec("app@proj.iam.gserviceaccount.com"),
        )
        .expect("spec"),
        Some(&own),
        &mut shared,
    )
    .expect("builds");
    let read = Generator::build_shared(
        &GeneratorSpec::from_manifest(
            GeneratorKind::GcpSecretManagerSecret,
            secret_spec(json!({})),
        )
        .expect("spec"),
        Some(&own),
        &mut shared,
    )
    .expect("builds");
    let id = identity();
    let cred = read
        .generate(&common::ctx(&id, "payments/GCPSecretManagerSecret/db"))
        .await
        .expect("read");
    assert_eq!(cred.data["password"], "s3cr3t-v2");
    token
        .generate(&common::ctx(&id, "payments/GCPAccessToken/app"))
        .await
        .expect("minted");

    let seen = fake.seen.lock().expect("lock");
    assert_eq!(seen.exchanges.len(), 1);
    let own_sa = "Bearer ya29.impersonated-esi-federation@proj.iam.gserviceaccount.com";
    let [(first, first_auth, first_body), (second, second_auth, _)] = seen.calls.as_slice() else {
        panic!("two generateAccessToken calls: {:?}", seen.calls);
    };
    assert_eq!(first, "esi-federation@proj.iam.gserviceaccount.com");
    assert_eq!(first_auth, "Bearer ya29.federated-1");
    assert_eq!(
        first_body["scope"],
        json!(["https://www.googleapis.com/auth/cloud-platform"])
    );
    assert_eq!(first_body["lifetime"], "3600s");
    assert_eq!(first_body["delegates"], json!([]));
    assert_eq!(second, "app@proj.iam.gserviceaccount.com");
    assert_eq!(second_auth, own_sa);
    assert_eq!(seen.accesses.last().expect("a read").1, own_sa);
}

/// What the store refuses at load, with the field at fault and how to fix it.
#[test]
fn a_self_issued_store_is_refused_at_load_when_its_provider_is_misnamed() {
    let load = |gcp: Value| {
        esi_backends::SecretStoreSpec::from_manifest(json!({"provider": {"gcp": gcp}}))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let named = |name: &str| json!({"selfIssued": {"workloadIdentityProvider": name}});
    let good = "projects/123456789/locations/global/workloadIdentityPools/esi-federation/providers/esi-federation";
    assert_eq!(load(named(good)), Ok(()));
    assert_eq!(load(named(&format!("//iam.googleapis.com/{good}"))), Ok(()));
    for (gcp, field, says) in [
        (
            named(
                "projects/my-project/locations/global/workloadIdentityPools/esi-federation/providers/esi-federation",
            ),
            "provider.gcp.selfIssued.workloadIdentityProvider",
            "gcloud projects describe my-project",
        ),
        (
            named(
                "projects/123456789/workloadIdentityPools/esi-federation/providers/esi-federation",
            ),
            "provider.gcp.selfIssued.workloadIdentityProvider",
            "is not a Workload Identity provider name",
        ),
        (
            named(
                "projects/123456789/locations/global/workloadIdentityPools/ESI/providers/federation",
            ),
            "provider.gcp.selfIssued.workloadIdentityProvider",
            "the pool id",
        ),
        (
            named(
                "projects/123456789/locations/global/workloadIdentityPools/esi-federation/providers/gcp-federation",
            ),
            "provider.gcp.selfIssued.workloadIdentityProvider",
            "the provider id",
        ),
        (
            json!({"selfIssued": {"workloadIdentityProvider": good, "serviceAccount": "esi-federation"}}),
            "provider.gcp.selfIssued.serviceAccount",
            "not a service account email",
        ),
        (
            json!({"selfIssued": {"workloadIdentityProvider": good}, "serviceAccountKeyFile": "/etc/esi/key.json"}),
            "provider.gcp.selfIssued",
            "not both",
        ),
        (
            json!({"stsEndpoint": "https://sts.example"}),
            "provider.gcp.stsEndpoint",
            "only selfIssued",
        ),
        (
            json!({"selfIssued": {"workloadIdentityProvider": good}, "stsEndpoint": "ftp://sts.example"}),
            "provider.gcp.stsEndpoint",
            "not an http(s) base URL",
        ),
        (
            json!({"selfIssued": {"workloadIdentityProvider": good, "audience": "x"}}),
            "selfIssued",
            "unknown field",
        ),
    ] {
        let e = load(gcp.clone()).expect_err("refused");
        assert!(e.contains(field) && e.contains(says), "{gcp}: {e}");
    }
}

/// `check --login` obtains the federation's own token and names whose it is: the key file's
/// account, the service account a `selfIssued` login impersonates, or the federated principal.
#[tokio::test]
async fn a_login_check_names_the_google_account_the_token_is_for() {
    use esi_backends::LoginCheck;
    use esi_backends::identity::KeyAlgorithm;
    let fake = start_fake().await;
    let keyed = esi_backends::SecretStoreSpec::from_manifest(json!({"provider": {"gcp": {
        "serviceAccountKeyFile": fake.key_file, "timeout": "5s"}}}))
    .expect("valid store");
    match keyed.check_login(None).await {
        LoginCheck::LoggedIn(who) => assert_eq!(
            who,
            format!(
                "service account federation@proj.iam.gserviceaccount.com (key file {})",
                fake.key_file.display()
            )
        ),
        other => panic!("{other:?}"),
    }
    assert!(
        !fake.seen.lock().expect("lock").assertions.is_empty(),
        "the key file's token was fetched"
    );

    let issuer = common::own_issuer(KeyAlgorithm::Es256);
    fake.seen.lock().expect("lock").pool = Some(trusting(&issuer));
    let principal = "principal://iam.googleapis.com/projects/123456789/locations/global/\
                     workloadIdentityPools/esi-federation/subject/esi-federation";
    match own_store(&fake, json!({}))
        .check_login(Some(issuer.clone()))
        .await
    {
        LoginCheck::LoggedIn(who) => assert_eq!(who, principal),
        other => panic!("{other:?}"),
    }
    let sa = "esi-federation@proj.iam.gserviceaccount.com";
    match own_store(&fake, json!({"serviceAccount": sa}))
        .check_login(Some(issuer.clone()))
        .await
    {
        LoginCheck::LoggedIn(who) => {
            assert_eq!(
                who,
                format!("service account {sa}, impersonated by {principal}")
            );
        }
        other => panic!("{other:?}"),
    }

    // A provider that does not trust the federation: the login fails, naming the exchange.
    fake.seen.lock().expect("lock").pool = Some(trusting(&common::own_issuer(KeyAlgorithm::Rs256)));
    match own_store(&fake, json!({})).check_login(Some(issuer)).await {
        LoginCheck::Failed(e) => assert!(e.detail().contains("invalid_grant"), "{}", e.detail()),
        other => panic!("{other:?}"),
    }
}
