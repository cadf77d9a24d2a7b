//! `AzureAccessToken` against a FAKE of Microsoft Entra ID's token endpoint taking a federated
//! client assertion, with the identity token's keys served by the real federation router, over
//! a real socket, as Entra ID would fetch them.
//!
//! Entra ID is a hosted service; the fake implements the one call the generator makes, as
//! Microsoft documents it (the client credentials grant with a certificate or federated
//! credential, and workload identity federation): `POST /{tenant}/oauth2/v2.0/token`, a form
//! with `grant_type=client_credentials`, `client_id`, `scope` (one resource's `.default`),
//! `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and
//! `client_assertion`. Apps have federated identity credentials (issuer, subject, audience,
//! compared exactly and case-sensitively); the assertion's issuer, then subject, then audience
//! must match one, its signature must verify under the key of its `kid` in the JWKS of the
//! issuer's discovery document, fetched over HTTP on every request (RSA keys and RS256 / RS384
//! only), and `exp` must be in the future. Success is `200 {"token_type": "Bearer",
//! "expires_in", "ext_expires_in", "access_token"}`; refusals are `{"error",
//! "error_description", "error_codes", ...}` with the `AADSTS` codes Entra ID answers for each
//! case in the field (70003, 7000218, 700016, 1002012, 500011, 700211, 700213, 700212, 50166,
//! 50013, 700024, 90002), the trace and correlation ids on the description's own line or after
//! it, as Entra ID writes them. Unlike Entra ID it takes `http://` issuers: they are on
//! loopback here. The fake's `/resource` accepts a token it issued for its scope as a bearer
//! token, as a resource would.

#![cfg(feature = "azuretoken")]
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
mod relying_party;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use esi_api::Identity;
use esi_backends::identity::{Issuer, KeyAlgorithm};
use esi_backends::{
    BackendError, Context, Generate, Generator, GeneratorKind, GeneratorSpec, Shared,
};
use esi_federation::config;
use relying_party::{SignatureFailure, fake_jwt, federation, identity, serve, unverified_claims};
use serde_json::{Value, json};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const APP: &str = "3c1b7e2a-5d4f-4e8b-9a61-0f2d8c7b6e15";
const OTHER_APP: &str = "9d8e7f60-1a2b-4c3d-8e9f-0a1b2c3d4e5f";
const STORAGE: &str = "https://storage.azure.com/.default";
const EXCHANGE: &str = "api://AzureADTokenExchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const PAYMENTS_API: &str = "alpha:system:serviceaccount:payments:api";

/// A federated identity credential of an app.
#[derive(Clone)]
struct Fic {
    issuer: String,
    subject: String,
    audience: String,
}

/// The fake Entra ID's state: one tenant.
struct Entra {
    /// Apps by client ID, with their federated identity credentials.
    apps: HashMap<String, Vec<Fic>>,
    /// The resources (application ID URIs) the tenant has service principals for.
    resources: HashSet<String>,
    /// `expires_in` of the tokens issued.
    expires_in: Value,
    /// Answer every request with this status and body instead.
    answer: Option<(StatusCode, String)>,
    /// Tokens issued: token -> (client ID, scope).
    issued: HashMap<String, (String, String)>,
    /// The claims of every assertion accepted.
    verified: Vec<Value>,
    /// Every URL fetched from an issuer.
    fetched: Vec<String>,
    /// Every request's form.
    forms: Vec<Vec<(String, String)>>,
}

type Fake = Arc<Mutex<Entra>>;

/// An Entra ID refusal: the description with its trace line, as Entra ID writes it.
fn aad(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let trace = "Trace ID: 30b6df93-efd2-459c Correlation ID: dffc6012-a4af Timestamp: 2026-12-01 14:00:00Z";
    (
        status,
        Json(json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description}\r\n{trace}"),
            "error_codes": [code],
            "trace_id": "30b6df93-efd2-459c",
            "correlation_id": "dffc6012-a4af",
        })),
    )
        .into_response()
}

fn field<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// `POST /{tenant}/oauth2/v2.0/token`.
async fn token(
    State(fake): State<Fake>,
    Path(tenant): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let (apps, resources) = {
        let mut entra = fake.lock().unwrap();
        entra.forms.push(form.clone());
        if let Some((status, body)) = entra.answer.clone() {
            return (status, [("content-type", "application/json")], body).into_response();
        }
        (entra.apps.clone(), entra.resources.clone())
    };
    let bad = StatusCode::BAD_REQUEST;
    let unauthorized = StatusCode::UNAUTHORIZED;
    if tenant != TENANT {
        return aad(
            bad,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    if field(&form, "grant_type") != Some("client_credentials") {
        return aad(
            bad,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let (Some(JWT_BEARER), Some(assertion)) = (
        field(&form, "client_assertion_type"),
        field(&form, "client_assertion"),
    ) else {
        return aad(
            unauthorized,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
    };
    let client = field(&form, "client_id").unwrap_or_default();
    let Some(fics) = apps.get(client) else {
        return aad(
            bad,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client}' was not found in the directory '{tenant}'."
            ),
        );
    };
    let scope = field(&form, "scope").unwrap_or_default();
    let Some(resource) = scope.strip_suffix("/.default").filter(|r| !r.contains(' ')) else {
        return aad(
            bad,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must \
                 have a scope value with /.default suffixed to the resource identifier."
            ),
        );
    };
    if !resources.contains(resource) {
        return aad(
            bad,
            "invalid_resource",
            500011,
            &format!("The resource principal named {resource} was not found in the tenant."),
        );
    }
    let Some(claims) = unverified_claims(assertion) else {
        return aad(
            bad,
            "invalid_request",
            50027,
            "JWT token is invalid or malformed.",
        );
    };
    let text = |c: &str| claims[c].as_str().unwrap_or_default().to_owned();
    let (iss, sub) = (text("iss"), text("sub"));
    let auds = relying_party::audiences(&claims);
    let by_issuer: Vec<&Fic> = fics.iter().filter(|f| f.issuer == iss).collect();
    if by_issuer.is_empty() {
        return aad(
            unauthorized,
            "invalid_client",
            700211,
            &format!(
                "No matching federated identity record found for presented assertion issuer \
                 '{iss}'. Please check your federated identity credential Subject, Audience and \
                 Issuer against the presented assertion."
            ),
        );
    }
    let by_subject: Vec<&&Fic> = by_issuer.iter().filter(|f| f.subject == sub).collect();
    if by_subject.is_empty() {
        return aad(
            unauthorized,
            "invalid_client",
            700213,
            &format!(
                "No matching federated identity record found for presented assertion subject \
                 '{sub}'. Please note that the matching is done using a case-sensitive \
                 comparison."
            ),
        );
    }
    if !by_subject
        .iter()
        .any(|f| auds.contains(&f.audience.as_str()))
    {
        return aad(
            unauthorized,
            "invalid_client",
            700212,
            &format!(
                "No matching federated identity record found for presented assertion audience \
                 '{}'.",
                auds.join(",")
            ),
        );
    }
    let record = |url: String| fake.lock().unwrap().fetched.push(url);
    let verified = match relying_party::verify_rsa(assertion, &iss, record).await {
        Ok(v) => v,
        Err(SignatureFailure::Discovery(why) | SignatureFailure::Jwks(why)) => {
            return aad(
                bad,
                "invalid_request",
                50166,
                &format!("Request to External OIDC endpoint failed: {why}"),
            );
        }
        Err(why) => {
            return aad(
                unauthorized,
                "invalid_client",
                50013,
                &format!("Assertion failed signature validation. [Reason - {why:?}]"),
            );
        }
    };
    if verified.discovery["issuer"] != iss.as_str() {
        return aad(
            unauthorized,
            "invalid_client",
            50013,
            "Assertion failed signature validation. [Reason - the issuer's metadata names another issuer]",
        );
    }
    let now = jiff::Timestamp::now().as_second();
    if claims["exp"].as_i64().is_none_or(|exp| exp <= now) {
        return aad(
            bad,
            "invalid_client",
            700024,
            "Client assertion is not within its valid time range.",
        );
    }
    let mut entra = fake.lock().unwrap();
    entra.verified.push(verified.claims);
    let access = fake_jwt("https://sts.windows.net/fake/", client, now, None);
    entra
        .issued
        .insert(access.clone(), (client.to_owned(), scope.to_owned()));
    Json(json!({
        "token_type": "Bearer",
        "expires_in": entra.expires_in,
        "ext_expires_in": entra.expires_in,
        "access_token": access,
    }))
    .into_response()
}

/// `GET /resource`: a resource of the storage scope taking a bearer token issued for it.
async fn resource(State(fake): State<Fake>, headers: HeaderMap) -> StatusCode {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let entra = fake.lock().unwrap();
    match bearer.and_then(|t| entra.issued.get(t)) {
        Some((_, scope)) if scope == STORAGE => StatusCode::OK,
        _ => StatusCode::UNAUTHORIZED,
    }
}

/// The fake Entra ID on a loopback port with `apps`: its state and base URL.
async fn entra(apps: &[(&str, Vec<Fic>)]) -> (Fake, String) {
    let fake = Arc::new(Mutex::new(Entra {
        apps: apps
            .iter()
            .map(|(a, f)| ((*a).to_owned(), f.clone()))
            .collect(),
        resources: ["https://storage.azure.com".to_owned()].into(),
        // Entra ID picks a lifetime from 60 to 90 minutes.
        expires_in: json!(4500),
        answer: None,
        issued: HashMap::new(),
        verified: Vec::new(),
        fetched: Vec::new(),
        forms: Vec::new(),
    }));
    let app = Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/resource", get(resource))
        .with_state(fake.clone());
    (fake, serve(app).await)
}

/// The federated identity credential `infra/terraform/modules/trust-azure-workloads` makes for
/// the workload `cluster`/`namespace`/`service_account` trusting `issuer`, on the public cloud
/// (its default): the subject is the module's own template (`local.subjects`) evaluated for that
/// workload, the audience the module's `local.clouds.public.audience`.
fn workload_fic(issuer: &str, cluster: &str, namespace: &str, service_account: &str) -> Fic {
    use esi_test_support::terraform::{self, hcl};
    use hcl::eval::Evaluate as _;
    let body = terraform::module("trust-azure-workloads");
    let hcl::Expression::ForExpr(subjects) = terraform::local(&body, "subjects") else {
        panic!("trust-azure-workloads' local.subjects is no longer a for expression")
    };
    let mut context = hcl::eval::Context::new();
    context.declare_var(
        subjects.value_var.clone(),
        hcl::to_value(json!({"cluster": cluster, "namespace": namespace,
                             "service_account": service_account}))
        .unwrap(),
    );
    let subject = match subjects.value_expr.evaluate(&context) {
        Ok(hcl::Value::String(s)) => s,
        other => panic!("trust-azure-workloads' subject template gave {other:?}"),
    };
    let clouds = terraform::local(&body, "clouds");
    let audience = terraform::string(&terraform::field(
        &terraform::field(&clouds, "public"),
        "audience",
    ));
    Fic {
        issuer: issuer.to_owned(),
        subject,
        audience,
    }
}

fn fic(issuer: &str, subject: &str) -> Fic {
    Fic {
        issuer: issuer.to_owned(),
        subject: subject.to_owned(),
        audience: EXCHANGE.to_owned(),
    }
}

fn ctx(id: &Identity, max_ttl: Option<Duration>) -> Context<'_> {
    Context {
        identity: id,
        generator: "payments/AzureAccessToken/storage",
        max_ttl,
    }
}

/// A generator built as a serving federation with `issuer` builds it.
fn generator(issuer: &Arc<Issuer>, spec: Value) -> Generator {
    let spec = GeneratorSpec::from_manifest(GeneratorKind::AzureAccessToken, spec).unwrap();
    Generator::build_shared(&spec, None, &mut Shared::with_issuer(Some(issuer.clone()))).unwrap()
}

/// The spec of a generator for `client` at the fake Entra ID at `base`.
fn spec(base: &str, client: &str) -> Value {
    json!({"tenantId": TENANT, "clientId": client, "scope": STORAGE, "authorityHost": base})
}

/// The refusal's caller message, for a `Rejected`; panics on anything else.
fn rejected(e: BackendError) -> String {
    match e {
        BackendError::Rejected { message, .. } => message,
        other => panic!("not a refusal: {other:?}"),
    }
}

#[tokio::test]
async fn a_workload_gets_an_entra_token_of_its_app_verified_against_the_federations_own_issuer() {
    let cluster = common::issuer().await;
    let (fake, base) = entra(&[]).await;
    let yaml = |_url: &str| {
        format!(
            "{}{}apiVersion: esi.dev/v1alpha1\nkind: AzureAccessToken\nmetadata: {{name: storage, namespace: default}}\nspec: {{tenantId: {TENANT}, clientId: {APP}, scope: \"{STORAGE}\", authorityHost: \"{base}\"}}\n",
            common::cluster("alpha", &cluster.issuer()),
            common::GENERATORS
        )
    };
    let (_issuer, state, url) = federation(KeyAlgorithm::Rs256, Some(&yaml)).await;
    fake.lock().unwrap().apps.insert(
        APP.into(),
        vec![workload_fic(&url, "alpha", "default", "app")],
    );

    let before = jiff::Timestamp::now().as_second();
    let (status, _, json, text) = common::send(
        &state,
        common::post(
            "/v1/generators/default/AzureAccessToken/storage",
            Some(&common::token(&cluster, "default", "app")),
            None,
        ),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let data = json["data"].as_object().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["access_token"]);
    let access = data["access_token"].as_str().unwrap();
    let expires: jiff::Timestamp = json["expiresAt"].as_str().unwrap().parse().unwrap();
    assert!(
        (before + 4495..=before + 4502).contains(&expires.as_second()),
        "expiresAt is Entra ID's expires_in from now: {expires}"
    );

    // Entra ID was asked as the Azure SDKs ask with a federated token, and fetched the
    // federation's own documents to verify the token it signed for the caller.
    let assertion = {
        let entra = fake.lock().unwrap();
        let form = &entra.forms[0];
        let keys: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "grant_type",
                "client_id",
                "scope",
                "client_assertion_type",
                "client_assertion"
            ]
        );
        assert_eq!(field(form, "client_id"), Some(APP));
        assert_eq!(field(form, "scope"), Some(STORAGE));
        assert_eq!(
            entra.fetched,
            [
                format!("{url}/.well-known/openid-configuration"),
                format!("{url}/openid/v1/jwks"),
            ]
        );
        let claims = &entra.verified[0];
        assert_eq!(claims["iss"], url.as_str());
        assert_eq!(claims["sub"], "alpha:system:serviceaccount:default:app");
        assert_eq!(claims["aud"], EXCHANGE, "the public cloud's audience");
        assert_eq!(
            claims["esi"]["generator"],
            "default/AzureAccessToken/storage"
        );
        let lives = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
        assert_eq!(lives, 300, "the identity token lives five minutes");
        field(form, "client_assertion").unwrap().to_owned()
    };

    // The token works at the resource; the identity token is no token for it.
    let call = |bearer: String| {
        reqwest::Client::new()
            .get(format!("{base}/resource"))
            .bearer_auth(bearer)
            .send()
    };
    assert_eq!(call(access.to_owned()).await.unwrap().status(), 200);
    assert_eq!(call(assertion.clone()).await.unwrap().status(), 401);
    assert!(
        !text.contains(&assertion),
        "the identity token in the answer"
    );
}

#[tokio::test]
async fn entra_refuses_apps_issuers_subjects_audiences_and_scopes_its_credentials_do_not_name() {
    let (issuer, _state, url) = federation(KeyAlgorithm::Rs256, None).await;
    let (fake, base) = entra(&[
        (APP, vec![workload_fic(&url, "alpha", "payments", "api")]),
        (
            OTHER_APP,
            vec![fic(
                "https://token.actions.githubusercontent.com",
                PAYMENTS_API,
            )],
        ),
    ])
    .await;
    let api = identity("payments", "api");
    let worker = identity("payments", "worker");

    // The app's credential names the caller: a token.
    let g = generator(&issuer, spec(&base, APP));
    let cred = g.generate(&ctx(&api, None)).await.unwrap();
    assert!(cred.data["access_token"].starts_with("ey"));
    assert!(!format!("{cred:?}").contains(&cred.data["access_token"]));

    // Another workload of the same namespace is not among the app's subjects.
    let err = rejected(g.generate(&ctx(&worker, None)).await.unwrap_err());
    assert!(err.contains("AADSTS700213"), "{err}");
    assert!(
        err.contains(&format!(
            "must name issuer {url}, subject alpha:system:serviceaccount:payments:worker and \
             audience {EXCHANGE}"
        )),
        "{err}"
    );
    assert!(!err.contains("Trace ID"), "Entra ID's trace line: {err}");
    assert!(err.contains(APP) && err.contains(STORAGE), "{err}");

    // An app trusting another issuer only; an app the tenant does not have.
    let err = rejected(
        generator(&issuer, spec(&base, OTHER_APP))
            .generate(&ctx(&api, None))
            .await
            .unwrap_err(),
    );
    assert!(err.contains("AADSTS700211"), "{err}");
    let err = rejected(
        generator(&issuer, spec(&base, "00000000-0000-0000-0000-000000000001"))
            .generate(&ctx(&api, None))
            .await
            .unwrap_err(),
    );
    assert!(err.contains("AADSTS700016"), "{err}");

    // An audience the credential does not name; a resource the tenant does not know; a tenant
    // that is not this one.
    let mut other_audience = spec(&base, APP);
    other_audience["audience"] = json!("api://AzureADTokenExchangeUSGov");
    let err = rejected(
        generator(&issuer, other_audience)
            .generate(&ctx(&api, None))
            .await
            .unwrap_err(),
    );
    assert!(err.contains("AADSTS700212"), "{err}");
    let mut vault = spec(&base, APP);
    vault["scope"] = json!("https://vault.azure.net/.default");
    let err = rejected(
        generator(&issuer, vault)
            .generate(&ctx(&api, None))
            .await
            .unwrap_err(),
    );
    assert!(err.contains("AADSTS500011"), "{err}");
    let mut tenant = spec(&base, APP);
    tenant["tenantId"] = json!("contoso.onmicrosoft.com");
    let err = rejected(
        generator(&issuer, tenant)
            .generate(&ctx(&api, None))
            .await
            .unwrap_err(),
    );
    assert!(err.contains("AADSTS90002"), "{err}");

    // One token came of all this, for the one caller the app trusts.
    let entra = fake.lock().unwrap();
    assert_eq!(entra.issued.len(), 1);
    assert_eq!(entra.verified.len(), 1);
    assert_eq!(entra.verified[0]["sub"], PAYMENTS_API);
}

#[tokio::test]
async fn the_fake_checks_signatures_keys_and_expiry_as_entra_id_does() {
    let (issuer, _state, url) = federation(KeyAlgorithm::Rs256, None).await;
    let (fake, base) = entra(&[(APP, vec![workload_fic(&url, "alpha", "payments", "api")])]).await;
    let api = identity("payments", "api");
    let client = reqwest::Client::new();
    let ask = |assertion: String| {
        client
            .post(format!("{base}/{TENANT}/oauth2/v2.0/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", APP),
                ("scope", STORAGE),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", assertion.as_str()),
            ])
            .send()
    };
    let said = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        (status, body["error_codes"][0].as_u64().unwrap_or_default())
    };
    let now = jiff::Timestamp::now();
    let good = relying_party::mint_at(&issuer, &api, EXCHANGE, now);
    assert_eq!(ask(good.clone()).await.unwrap().status(), 200);

    // A forged subject that a credential names: the signature no longer holds.
    let forged = relying_party::forged_sub(
        &relying_party::mint_at(&issuer, &identity("payments", "worker"), EXCHANGE, now),
        PAYMENTS_API,
    );
    assert_eq!(said(ask(forged).await.unwrap()).await, (401, 50013));
    // Expired: signed ten minutes ago, for five.
    let old = relying_party::mint_at(
        &issuer,
        &api,
        EXCHANGE,
        now - jiff::SignedDuration::from_secs(600),
    );
    assert_eq!(said(ask(old).await.unwrap()).await, (400, 700024));
    // Another key under the same issuer URL: not in its JWKS.
    let pem = esi_backends::identity::generate_key_pem(KeyAlgorithm::Rs256).unwrap();
    let stranger = Issuer::new(&url, secrecy::ExposeSecret::expose_secret(&pem)).unwrap();
    let foreign = relying_party::mint_at(&stranger, &api, EXCHANGE, now);
    assert_eq!(said(ask(foreign).await.unwrap()).await, (401, 50013));
    // Not a JWT.
    assert_eq!(
        said(ask("not-a-jwt".into()).await.unwrap()).await,
        (400, 50027)
    );
    // Only the one good assertion got a token.
    assert_eq!(fake.lock().unwrap().issued.len(), 1);
}

#[tokio::test]
async fn entra_down_throttling_or_answering_nonsense_is_unavailable() {
    let (issuer, _state, url) = federation(KeyAlgorithm::Rs256, None).await;
    let (fake, base) = entra(&[(APP, vec![workload_fic(&url, "alpha", "payments", "api")])]).await;
    let api = identity("payments", "api");
    let g = generator(&issuer, spec(&base, APP));
    for (status, body, says) in [
        (503, "{}", "returned 503"),
        (429, "{}", "returned 429"),
        (200, "<html>", "could not be read"),
        (
            200,
            r#"{"access_token": "", "expires_in": 3600}"#,
            "could not be read",
        ),
        (
            200,
            r#"{"access_token": "t", "expires_in": 0}"#,
            "could not be read",
        ),
        (
            200,
            r#"{"access_token": "t", "expires_in": -5}"#,
            "could not be read",
        ),
        (
            200,
            r#"{"access_token": "t", "expires_in": "soon"}"#,
            "could not be read",
        ),
        (
            200,
            r#"{"access_token": "t", "expires_in": 864000}"#,
            "could not be read",
        ),
        (200, r#"{"access_token": "t"}"#, "could not be read"),
    ] {
        fake.lock().unwrap().answer = Some((StatusCode::from_u16(status).unwrap(), body.into()));
        match g.generate(&ctx(&api, None)).await.unwrap_err() {
            BackendError::Unavailable { message, .. } => {
                assert!(message.contains(says), "{status} {body}: {message}");
            }
            other => panic!("{status} {body}: {other:?}"),
        }
    }
    // The v1 endpoints' habit: expires_in as text.
    fake.lock().unwrap().answer = Some((
        StatusCode::OK,
        r#"{"token_type": "Bearer", "access_token": "t", "expires_in": "3599"}"#.into(),
    ));
    let cred = g.generate(&ctx(&api, None)).await.unwrap();
    let lives = cred.expires_at.unwrap().as_second() - jiff::Timestamp::now().as_second();
    assert!((3590..=3600).contains(&lives), "{lives}");
}

#[tokio::test]
async fn a_token_outliving_max_ttl_is_dropped_and_the_identity_token_never_outlives_it() {
    let (issuer, _state, url) = federation(KeyAlgorithm::Rs256, None).await;
    let (fake, base) = entra(&[(APP, vec![workload_fic(&url, "alpha", "payments", "api")])]).await;
    let api = identity("payments", "api");
    let g = generator(&issuer, spec(&base, APP));

    // Entra ID's 75-minute token under a 1-hour maxTTL: dropped, saying why.
    let err = rejected(
        g.generate(&ctx(&api, Some(Duration::from_secs(3600))))
            .await
            .unwrap_err(),
    );
    assert!(
        err.contains("longer than the Authorization's maxTTL of 1h") && err.contains("60 to 90"),
        "{err}"
    );
    // Under 90 minutes it is handed out.
    g.generate(&ctx(&api, Some(Duration::from_secs(5400))))
        .await
        .unwrap();
    // A two-minute maxTTL shortens the identity token Entra ID is shown too.
    g.generate(&ctx(&api, Some(Duration::from_secs(120))))
        .await
        .unwrap_err();
    let entra = fake.lock().unwrap();
    let last = entra.verified.last().unwrap();
    assert_eq!(
        last["exp"].as_i64().unwrap() - last["iat"].as_i64().unwrap(),
        120
    );
    assert_eq!(entra.verified.len(), 3);
}

#[tokio::test]
async fn without_an_rsa_issuer_the_kind_does_not_load_and_unchecked_it_refuses_requests() {
    relying_party::needs_an_rsa_issuer(
        "AzureAccessToken",
        &format!("{{tenantId: {TENANT}, clientId: {APP}, scope: \"{STORAGE}\"}}"),
    )
    .await;
}

#[tokio::test]
async fn bad_specs_are_refused_at_load_naming_the_resource_and_field() {
    let (_issuer, state, _url) = federation(KeyAlgorithm::Rs256, None).await;
    for (spec, field) in [
        (
            format!("{{tenantId: {TENANT}, clientId: payments, scope: \"{STORAGE}\"}}"),
            "spec.clientId",
        ),
        (
            format!("{{tenantId: {TENANT}, clientId: {APP}, scope: \"{STORAGE} openid\"}}"),
            "spec.scope",
        ),
        (
            format!(
                "{{tenantId: {TENANT}, clientId: {APP}, scope: \"{STORAGE}\", authorityHost: \"http://login.example\"}}"
            ),
            "spec.authorityHost",
        ),
        (
            format!(
                "{{tenantId: {TENANT}, clientId: {APP}, scope: \"{STORAGE}\", clientSecret: x}}"
            ),
            "clientSecret",
        ),
    ] {
        let yaml = format!(
            "apiVersion: esi.dev/v1alpha1\nkind: AzureAccessToken\nmetadata: {{name: storage, namespace: payments}}\nspec: {spec}\n"
        );
        let err = config::load_text("test.yaml", &yaml, &state)
            .unwrap_err()
            .to_string();
        assert!(err.contains("AzureAccessToken/payments/storage"), "{err}");
        assert!(err.contains(field), "{field}: {err}");
    }
}
