//! `QuayAccessToken` against a FAKE of Quay's robot federation endpoint, with the identity
//! token's keys served by the real federation router, over a real socket, as Quay would fetch
//! them.
//!
//! Quay cannot run here (a Python service with PostgreSQL and Redis); the fake implements the
//! one call the generator makes, `GET /oauth2/federation/robot/token`, as Quay's sources do it
//! (`util/security/federated_robot_auth.py`, `oauth/oidc.py`): HTTP Basic auth, the user name a
//! robot account (`org+name`) and the password an OIDC token; the robot's federation
//! configuration (issuer and subject pairs, optionally audiences); the issuer's discovery
//! document and JWKS fetched over HTTP on every request; the signature checked with aws-lc-rs
//! under the JWKS key of the token's `kid`, RSA keys and RS256/RS384 only (Quay's
//! `ALLOWED_ALGORITHMS`, and an EC key is "no RSA form"); `iat` and `exp` required, `exp` with
//! Quay's 30 s leeway, `iss` the discovery document's `issuer`, `sub` among the robot's
//! subjects for that issuer, `aud` only when the configuration lists audiences, `nbf` not at
//! all. Refusals are 401 `{"error": ...}` with Quay's words; a key or discovery document it
//! cannot load is an exception Quay does not catch (500). Unlike Quay (outside its DEBUGGING
//! mode), it takes `http://` issuers: they are on loopback here. Success is
//! `{"token": <a robot JWT>}`; the fake's `/v2/auth` (the registry's docker login) accepts the
//! robot with a token it issued, to use the login.

#![cfg(feature = "quay")]
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
mod relying_party;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use esi_api::Identity;
use esi_backends::identity::{Issuer, KeyAlgorithm, generate_key_pem};
use esi_backends::{
    BackendError, Context, Generate, Generator, GeneratorKind, GeneratorSpec, Shared,
};
use esi_federation::config;
use relying_party::{
    SignatureFailure, basic, fake_jwt, federation, identity, random, serve, unverified_claims,
    verify_rsa,
};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

/// Quay's leeway on `exp` (`JWT_CLOCK_SKEW_SECONDS`).
const LEEWAY: i64 = 30;

/// One entry of a robot's federation configuration.
#[derive(Clone)]
struct Binding {
    issuer: String,
    subject: String,
    audiences: Vec<String>,
}

/// The fake Quay's state.
#[derive(Default)]
struct Quay {
    /// Robot accounts by name, with their federation configuration (empty: not federated).
    robots: HashMap<String, Vec<Binding>>,
    /// Robot tokens issued: token -> (robot, exp).
    issued: HashMap<String, (String, i64)>,
    /// How long issued robot tokens live; `None` issues opaque tokens without `exp`.
    token_lifetime: Option<i64>,
    /// Answer every exchange with this status instead (Quay overloaded, throttling, a proxy).
    status: Option<StatusCode>,
    /// The claims of every identity token accepted.
    verified: Vec<Value>,
    /// Every URL fetched from an issuer.
    fetched: Vec<String>,
    /// Every identity token presented, to check none leaks.
    presented: Vec<String>,
    /// Why the last 500 was one.
    crashed: Option<String>,
}

type Fake = Arc<Mutex<Quay>>;

fn refuse(message: &str) -> Response {
    (StatusCode::UNAUTHORIZED, Json(json!({"error": message}))).into_response()
}

fn crash(fake: &Fake, why: String) -> Response {
    fake.lock().unwrap().crashed = Some(why);
    (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response()
}

/// Why a token failed: PyJWT's `InvalidTokenError` (Quay answers 401 "Invalid token: ..."),
/// or a key or discovery document Quay could not load (an uncaught exception: 500).
enum Failure {
    Invalid(String),
    Load(String),
}

/// `oauth/oidc.py`'s `decode_user_jwt`, as the robot federation calls it.
async fn decode_user_jwt(
    fake: &Fake,
    token: &str,
    issuer: &str,
    audiences: &[String],
) -> Result<Value, Failure> {
    let invalid = |m: &str| Failure::Invalid(m.to_owned());
    let recorded = |url: String| fake.lock().unwrap().fetched.push(url);
    let verified = verify_rsa(token, issuer, recorded)
        .await
        .map_err(|failure| match failure {
            SignatureFailure::Malformed(m) => invalid(m),
            SignatureFailure::NoKid => invalid("Missing `kid` header"),
            SignatureFailure::Discovery(_) => {
                Failure::Load("Could not load OIDC discovery information".to_owned())
            }
            SignatureFailure::Jwks(e) => Failure::Load(format!("Error loading JWK set - {e}")),
            SignatureFailure::UnknownKid(kid) => {
                Failure::Load(format!("Public key {kid} not found"))
            }
            SignatureFailure::NotRsa(kid) => {
                Failure::Load(format!("No RSA form of public key {kid} not found"))
            }
            SignatureFailure::Algorithm => invalid("The specified alg value is not allowed"),
            SignatureFailure::Encoding => invalid("Invalid crypto padding"),
            SignatureFailure::Signature => invalid("Signature verification failed"),
            SignatureFailure::Payload => invalid("Invalid payload padding"),
        })?;
    let (claims, discovery) = (verified.claims, verified.discovery);
    for required in ["iat", "exp"] {
        if claims.get(required).is_none() {
            return Err(invalid(&format!(
                "Token is missing the \"{required}\" claim"
            )));
        }
    }
    let exp = claims["exp"]
        .as_i64()
        .ok_or_else(|| invalid("Expiration Time claim (exp) must be an integer."))?;
    if exp + LEEWAY <= jiff::Timestamp::now().as_second() {
        return Err(invalid("Signature has expired"));
    }
    if claims["iss"] != discovery["issuer"] {
        return Err(invalid("Invalid issuer"));
    }
    if !audiences.is_empty() {
        let aud = relying_party::audiences(&claims);
        if !aud.iter().any(|a| audiences.iter().any(|x| x == a)) {
            return Err(invalid("Audience doesn't match"));
        }
    }
    Ok(claims)
}

/// `GET /oauth2/federation/robot/token`.
async fn robot_token(State(fake): State<Fake>, headers: HeaderMap) -> Response {
    if let Some(status) = fake.lock().unwrap().status {
        return (status, Json(json!({"error": "unavailable"}))).into_response();
    }
    let Some((robot, token)) = basic(&headers) else {
        return refuse("Could not parse basic auth header");
    };
    fake.lock().unwrap().presented.push(token.clone());
    if !robot.contains('+') {
        return refuse("Invalid robot");
    }
    let Some(bindings) = fake.lock().unwrap().robots.get(&robot).cloned() else {
        return refuse(&format!("Could not find robot with username: {robot}"));
    };
    // get_jwt_issuer: the unverified `iss`.
    let Some(issuer) = unverified_claims(&token).and_then(|c| c["iss"].as_str().map(str::to_owned))
    else {
        return refuse("Token does not contain issuer");
    };
    if bindings.is_empty() {
        return refuse("Robot does not have federated login configured");
    }
    let matched: Vec<&Binding> = bindings.iter().filter(|b| b.issuer == issuer).collect();
    if matched.is_empty() {
        return refuse(&format!("issuer {issuer} not configured for this robot"));
    }
    let audiences = matched
        .iter()
        .rev()
        .find(|b| !b.audiences.is_empty())
        .map(|b| b.audiences.clone())
        .unwrap_or_default();
    let claims = match decode_user_jwt(&fake, &token, &issuer, &audiences).await {
        Ok(c) => c,
        Err(Failure::Invalid(why)) => return refuse(&format!("Invalid token: {why}")),
        Err(Failure::Load(why)) => return crash(&fake, why),
    };
    if !matched.iter().any(|b| claims["sub"] == b.subject.as_str()) {
        return refuse("Token does not match robot");
    }
    let mut quay = fake.lock().unwrap();
    quay.verified.push(claims);
    let now = jiff::Timestamp::now().as_second();
    let (robot_token, exp) = match quay.token_lifetime {
        Some(lifetime) => (
            fake_jwt("quay", &robot, now, Some(now + lifetime)),
            now + lifetime,
        ),
        None => (format!("quay-robot-{}", random()), now + 3600),
    };
    quay.issued
        .insert(robot_token.clone(), (robot.clone(), exp));
    Json(json!({"token": robot_token})).into_response()
}

/// `GET /v2/auth`: the registry's docker login, Basic auth with a robot and its token.
async fn registry_auth(State(fake): State<Fake>, headers: HeaderMap) -> Response {
    let quay = fake.lock().unwrap();
    let now = jiff::Timestamp::now().as_second();
    match basic(&headers) {
        Some((robot, token))
            if quay
                .issued
                .get(&token)
                .is_some_and(|(r, exp)| *r == robot && *exp > now) =>
        {
            Json(json!({"token": format!("registry-bearer-{}", random())})).into_response()
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"errors": [{"code": "UNAUTHORIZED", "message": "Invalid Username or Password"}]})),
        )
            .into_response(),
    }
}

/// The fake Quay on a loopback port: its state and base URL.
async fn quay(robots: &[(&str, Vec<Binding>)]) -> (Fake, String) {
    let fake = Arc::new(Mutex::new(Quay {
        robots: robots
            .iter()
            .map(|(r, b)| ((*r).to_owned(), b.clone()))
            .collect(),
        token_lifetime: Some(3600),
        ..Quay::default()
    }));
    let app = Router::new()
        .route("/oauth2/federation/robot/token", get(robot_token))
        .route("/v2/auth", get(registry_auth))
        .with_state(fake.clone());
    (fake, serve(app).await)
}

fn ctx(id: &Identity, max_ttl: Option<Duration>) -> Context<'_> {
    Context {
        identity: id,
        generator: "payments/QuayAccessToken/pull",
        max_ttl,
    }
}

/// A generator built as a serving federation with `issuer` builds it.
fn generator(issuer: &Arc<Issuer>, spec: Value) -> Generator {
    let spec = GeneratorSpec::from_manifest(GeneratorKind::QuayAccessToken, spec).unwrap();
    Generator::build_shared(&spec, None, &mut Shared::with_issuer(Some(issuer.clone()))).unwrap()
}

fn binding(issuer: &str, subject: &str) -> Binding {
    Binding {
        issuer: issuer.to_owned(),
        subject: subject.to_owned(),
        audiences: Vec::new(),
    }
}

const PAYMENTS_API: &str = "alpha:system:serviceaccount:payments:api";

#[tokio::test]
async fn a_workload_gets_a_quay_login_verified_against_the_federations_own_issuer() {
    let cluster = common::issuer().await;
    let (fake, quay_url) = quay(&[]).await;
    let yaml = |_url: &str| {
        format!(
            "{}{}apiVersion: esi.dev/v1alpha1\nkind: QuayAccessToken\nmetadata: {{name: pull, namespace: default}}\nspec: {{url: \"{quay_url}\", robotAccount: \"default+puller\"}}\n",
            common::cluster("alpha", &cluster.issuer()),
            common::GENERATORS
        )
    };
    let (issuer, state, url) = federation(KeyAlgorithm::Rs256, Some(&yaml)).await;
    fake.lock().unwrap().robots.insert(
        "default+puller".into(),
        vec![binding(&url, "alpha:system:serviceaccount:default:app")],
    );

    let before = jiff::Timestamp::now().as_second();
    let (status, _, json, text) = common::send(
        &state,
        common::post(
            "/v1/generators/default/QuayAccessToken/pull",
            Some(&common::token(&cluster, "default", "app")),
            None,
        ),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let data = &json["data"];
    let registry = quay_url.strip_prefix("http://").unwrap();
    assert_eq!(data["username"], "default+puller");
    assert_eq!(data["registry"], registry);
    let password = data["password"].as_str().unwrap();
    let docker: Value = serde_json::from_str(data["dockerconfigjson"].as_str().unwrap()).unwrap();
    let auth = STANDARD
        .decode(docker["auths"][registry]["auth"].as_str().unwrap())
        .unwrap();
    assert_eq!(auth, format!("default+puller:{password}").as_bytes());
    let expires: jiff::Timestamp = json["expiresAt"].as_str().unwrap().parse().unwrap();
    assert!(
        (before + 3595..=before + 3602).contains(&expires.as_second()),
        "expiresAt is the robot token's exp: {expires}"
    );

    // Quay fetched the federation's own documents and verified the token it signed.
    {
        let quay = fake.lock().unwrap();
        assert_eq!(
            quay.fetched,
            [
                format!("{url}/.well-known/openid-configuration"),
                format!("{url}/openid/v1/jwks"),
            ]
        );
        let claims = &quay.verified[0];
        assert_eq!(claims["iss"], url.as_str());
        assert_eq!(claims["sub"], "alpha:system:serviceaccount:default:app");
        assert_eq!(
            claims["aud"], "127.0.0.1",
            "the default audience is Quay's host"
        );
        assert_eq!(claims["esi"]["generator"], "default/QuayAccessToken/pull");
        let lives = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
        assert_eq!(lives, 300, "the identity token lives five minutes");
        assert_eq!(
            quay.presented.len(),
            1,
            "one exchange, one identity token ({})",
            issuer.signing_kid()
        );
    }

    // The login works at the registry; the identity token is not a login.
    let login = |user: &str, password: &str| {
        reqwest::Client::new()
            .get(format!("{quay_url}/v2/auth?service={registry}"))
            .basic_auth(user, Some(password))
            .send()
    };
    assert_eq!(
        login("default+puller", password).await.unwrap().status(),
        200
    );
    let presented = fake.lock().unwrap().presented[0].clone();
    assert_eq!(
        login("default+puller", &presented).await.unwrap().status(),
        401
    );
    assert!(
        !text.contains(&presented),
        "the identity token in the answer"
    );
}

#[tokio::test]
async fn quay_refuses_robots_issuers_subjects_and_audiences_it_was_not_configured_for() {
    let (issuer, _state, url) = federation(KeyAlgorithm::Rs256, None).await;
    let (fake, quay_url) = quay(&[
        ("payments+puller", vec![binding(&url, PAYMENTS_API)]),
        (
            "payments+other",
            vec![binding(&url, "alpha:system:serviceaccount:payments:worker")],
        ),
        (
            "payments+elsewhere",
            vec![binding(
                "https://token.actions.githubusercontent.com",
                "repo:x",
            )],
        ),
        ("payments+plain", vec![]),
        (
            "payments+audienced",
            vec![Binding {
                audiences: vec!["quay.example".into()],
                ..binding(&url, PAYMENTS_API)
            }],
        ),
    ])
    .await;
    let id = identity("payments", "api");
    let spec = |robot: &str| json!({"url": quay_url, "robotAccount": robot});

    let subject_hint = format!("must list issuer {url} with subject {PAYMENTS_API}");
    for (robot, says) in [
        ("payments+other", "Token does not match robot"),
        (
            "payments+elsewhere",
            &*format!("issuer {url} not configured for this robot"),
        ),
        (
            "payments+nobody",
            "Could not find robot with username: payments+nobody",
        ),
        (
            "payments+plain",
            "Robot does not have federated login configured",
        ),
        (
            "payments+audienced",
            "Invalid token: Audience doesn't match",
        ),
    ] {
        let err = generator(&issuer, spec(robot))
            .generate(&ctx(&id, None))
            .await
            .unwrap_err();
        assert!(
            matches!(err, BackendError::Rejected { .. }),
            "{robot}: {err:?}"
        );
        let message = err.to_string();
        assert!(message.contains(says), "{robot}: {message}");
        assert!(message.contains(&subject_hint), "{robot}: {message}");
        assert!(message.contains(robot), "{robot}: {message}");
        assert!(err.detail().contains(says), "{robot}: {}", err.detail());
        let presented = fake.lock().unwrap().presented.last().unwrap().clone();
        let all = format!("{err} {} {err:?}", err.detail());
        assert!(!all.contains(&presented), "the identity token in {all}");
    }
    assert!(fake.lock().unwrap().verified.is_empty());

    // The audience the robot's federation lists, and the right robot, are accepted.
    let mut s = spec("payments+audienced");
    s["audience"] = json!("quay.example");
    generator(&issuer, s)
        .generate(&ctx(&id, None))
        .await
        .unwrap();
    generator(&issuer, spec("payments+puller"))
        .generate(&ctx(&id, None))
        .await
        .unwrap();
    let quay = fake.lock().unwrap();
    let auds: Vec<&Value> = quay.verified.iter().map(|c| &c["aud"]).collect();
    assert_eq!(auds, [&json!("quay.example"), &json!("127.0.0.1")]);
}

#[tokio::test]
async fn quay_down_throttling_or_failing_is_unavailable_and_forbidden_is_rejected() {
    let (issuer, _state, url) = federation(KeyAlgorithm::Rs256, None).await;
    let (fake, quay_url) = quay(&[("payments+puller", vec![binding(&url, PAYMENTS_API)])]).await;
    let id = identity("payments", "api");
    let g = generator(
        &issuer,
        json!({"url": quay_url, "robotAccount": "payments+puller"}),
    );
    for (status, unavailable) in [
        (StatusCode::SERVICE_UNAVAILABLE, true),
        (StatusCode::BAD_GATEWAY, true),
        (StatusCode::TOO_MANY_REQUESTS, true),
        (StatusCode::FORBIDDEN, false),
    ] {
        fake.lock().unwrap().status = Some(status);
        let err = g.generate(&ctx(&id, None)).await.unwrap_err();
        assert_eq!(
            matches!(err, BackendError::Unavailable { .. }),
            unavailable,
            "{status}: {err:?}"
        );
        assert!(err.to_string().contains(status.as_str()), "{status}: {err}");
    }
    // Quay unreachable.
    let closed = esi_test_support::ClosedPort::new();
    let down = generator(
        &issuer,
        json!({"url": format!("http://{}", closed.addr()), "robotAccount": "payments+puller"}),
    );
    let err = down.generate(&ctx(&id, None)).await.unwrap_err();
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
    assert!(
        err.to_string().contains("Quay could not be reached"),
        "{err}"
    );
}

#[tokio::test]
async fn a_robot_token_outliving_max_ttl_is_dropped_and_an_opaque_one_is_taken_to_live_an_hour() {
    let (issuer, _state, url) = federation(KeyAlgorithm::Rs256, None).await;
    let (fake, quay_url) = quay(&[("payments+puller", vec![binding(&url, PAYMENTS_API)])]).await;
    let id = identity("payments", "api");
    let g = generator(
        &issuer,
        json!({"url": quay_url, "robotAccount": "payments+puller"}),
    );
    let identity_lifetime = |fake: &Fake| {
        let quay = fake.lock().unwrap();
        let c = quay.verified.last().unwrap();
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap()
    };

    // Quay's hour under a 2-minute maxTTL: dropped; the identity token lived 2 minutes.
    let err = g
        .generate(&ctx(&id, Some(Duration::from_secs(120))))
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("longer than the Authorization's maxTTL of 2m; it was dropped"),
        "{err}"
    );
    assert_eq!(identity_lifetime(&fake), 120);

    // A Quay configured for 10-minute tokens fits a 20-minute maxTTL.
    fake.lock().unwrap().token_lifetime = Some(600);
    let now = jiff::Timestamp::now().as_second();
    let cred = g
        .generate(&ctx(&id, Some(Duration::from_secs(1200))))
        .await
        .unwrap();
    let exp = cred.expires_at.unwrap().as_second();
    assert!((now + 595..=now + 602).contains(&exp), "{exp} - {now}");
    assert_eq!(identity_lifetime(&fake), 300);
    assert!(!format!("{cred:?}").contains(&cred.data["password"]));

    // A token that is no JWT: Quay's default hour is assumed, and held to maxTTL.
    fake.lock().unwrap().token_lifetime = None;
    let cred = g.generate(&ctx(&id, None)).await.unwrap();
    assert!(cred.data["password"].starts_with("quay-robot-"));
    let lives = cred.expires_at.unwrap().as_second() - jiff::Timestamp::now().as_second();
    assert!((3595..=3600).contains(&lives), "{lives}");
    let err = g
        .generate(&ctx(&id, Some(Duration::from_secs(1800))))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("maxTTL of 30m"), "{err}");
}

/// The fake refuses what Quay refuses: these must fail for its successes to mean anything.
#[tokio::test]
async fn the_fake_checks_signatures_keys_expiry_and_algorithms_as_quay_does() {
    let (issuer, _state, url) = federation(KeyAlgorithm::Rs256, None).await;
    let (fake, quay_url) = quay(&[("payments+puller", vec![binding(&url, PAYMENTS_API)])]).await;
    let id = identity("payments", "api");
    let mint =
        |issuer: &Issuer, at: jiff::Timestamp| relying_party::mint_at(issuer, &id, "quay", at);
    let exchange = |token: String| {
        let quay_url = quay_url.clone();
        async move {
            let resp = reqwest::Client::new()
                .get(format!("{quay_url}/oauth2/federation/robot/token"))
                .basic_auth("payments+puller", Some(token))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        }
    };
    let now = jiff::Timestamp::now();

    let good = mint(&issuer, now);
    assert_eq!(exchange(good.clone()).await.0, 200);
    // Claims changed after signing.
    let forged = relying_party::forged_sub(&good, "alpha:system:serviceaccount:payments:admin");
    assert_eq!(
        exchange(forged).await,
        (
            401,
            r#"{"error":"Invalid token: Signature verification failed"}"#.to_owned()
        )
    );
    // Expired beyond the leeway.
    let old = mint(&issuer, now - jiff::SignedDuration::from_secs(400));
    assert_eq!(
        exchange(old).await,
        (
            401,
            r#"{"error":"Invalid token: Signature has expired"}"#.to_owned()
        )
    );
    // Signed by a key the issuer does not publish, under the same issuer URL.
    let pem = generate_key_pem(KeyAlgorithm::Rs256).unwrap();
    let rogue = Issuer::new(&url, pem.expose_secret()).unwrap();
    assert_eq!(exchange(mint(&rogue, now)).await.0, 500);
    let crashed = fake.lock().unwrap().crashed.take().unwrap();
    assert_eq!(
        crashed,
        format!("Public key {} not found", rogue.signing_kid())
    );
    // An issuer signing ES256: Quay takes RSA keys only.
    let (es, _es_state, es_url) = federation(KeyAlgorithm::Es256, None).await;
    fake.lock().unwrap().robots.insert(
        "payments+puller".into(),
        vec![binding(&es_url, PAYMENTS_API)],
    );
    assert_eq!(exchange(mint(&es, now)).await.0, 500);
    let crashed = fake.lock().unwrap().crashed.take().unwrap();
    assert!(
        crashed.starts_with("No RSA form of public key"),
        "{crashed}"
    );
    // No Basic auth at all.
    let resp = reqwest::Client::new()
        .get(format!("{quay_url}/oauth2/federation/robot/token"))
        .bearer_auth(good)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn without_an_rsa_issuer_the_kind_does_not_load_and_unchecked_it_refuses_requests() {
    relying_party::needs_an_rsa_issuer("QuayAccessToken", r#"{robotAccount: "default+puller"}"#)
        .await;
}

#[tokio::test]
async fn bad_specs_are_refused_at_load_naming_the_field() {
    let (_issuer, state, _url) = federation(KeyAlgorithm::Rs256, None).await;
    for (spec, says) in [
        (
            r#"{robotAccount: "org+bot", serviceAccountRef: {name: quay}}"#,
            "unknown field `serviceAccountRef`",
        ),
        (
            r#"{robotAccount: "org"}"#,
            "spec.robotAccount: \"org\" is not a Quay robot account",
        ),
        (
            r#"{robotAccount: "Org+Bot"}"#,
            "spec.robotAccount: \"Org+Bot\" is not a Quay robot account",
        ),
        (
            r#"{robotAccount: "org+bot", url: "http://quay.example.com"}"#,
            "spec.url: \"http://quay.example.com\" is not an https:// URL (http:// only for a loopback address",
        ),
        (
            r#"{robotAccount: "org+bot", url: "http://192.168.1.10:8080"}"#,
            "spec.url",
        ),
        (
            r#"{robotAccount: "org+bot", url: "https://quay.example.com/v2"}"#,
            "has a path",
        ),
    ] {
        let yaml = format!(
            "apiVersion: esi.dev/v1alpha1\nkind: QuayAccessToken\nmetadata: {{name: pull, namespace: default}}\nspec: {spec}\n"
        );
        let err = config::load_text("test.yaml", &yaml, &state)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{spec}: {err}");
    }
}
