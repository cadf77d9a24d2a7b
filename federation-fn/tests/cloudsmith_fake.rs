//! `CloudsmithAccessToken` against a FAKE of Cloudsmith's OpenID Connect exchange, with the
//! identity token's keys served by the real federation router, over a real socket, as
//! Cloudsmith would fetch them.
//!
//! Cloudsmith is a hosted service; the fake implements the one call the generator makes,
//! `POST /openid/{org}/` (the trailing slash included: the API's paths end in one) with the
//! JSON body `{"oidc_token": ..., "service_slug": ...}`, as Cloudsmith documents it (its API
//! reference `openid_create`, its OpenID Connect guide, its CLI's exchange and Terraform
//! provider): an organization's provider settings, each a provider URL (the issuer), the
//! claims a token must carry with their values (`.*` matching anything, as Cloudsmith's
//! settings allow), the service accounts it may act as, and whether it is enabled; the
//! issuer's discovery document and JWKS fetched over HTTP on every request; the signature
//! checked with aws-lc-rs under the JWKS key of the token's `kid`, RSA keys and RS256/RS384
//! only (what every provider Cloudsmith documents signs with); `exp` required and in the
//! future, `iss` the provider URL and the discovery document's `issuer`. Success is
//! `201 {"token": <a JWT>}` living 90 minutes ("around 90 minutes", Cloudsmith says); a
//! refusal is `401 {"detail": ...}`, missing parameters `422`, an unknown organization `404`
//! (Django REST framework's `{"detail": "Not found."}`). The `detail` texts of the 401s are the
//! fake's own words: Cloudsmith does not document them. Unlike Cloudsmith, it takes `http://`
//! issuers: they are on loopback here. The fake's `/v2/` (the Docker registry) accepts the
//! user name `token` with a token it issued, as Cloudsmith's Docker credential helper logs in.

#![cfg(feature = "cloudsmith")]
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
mod relying_party;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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
    basic, fake_jwt, federation, identity, random, serve, unverified_claims, verify_rsa,
};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

/// How long the fake's tokens live by default: Cloudsmith's "around 90 minutes".
const TOKEN_LIFETIME: i64 = 90 * 60;

/// One OpenID Connect provider setting of an organization.
#[derive(Clone)]
struct Provider {
    /// The issuer, without `/.well-known/openid-configuration`.
    provider_url: String,
    /// Claims a token must carry, with their values (`.*` matches any run of characters).
    claims: BTreeMap<String, String>,
    /// The service accounts a token it accepts may act as.
    service_accounts: Vec<String>,
    enabled: bool,
}

/// An organization: its service accounts and provider settings.
#[derive(Clone, Default)]
struct Org {
    services: Vec<String>,
    providers: Vec<Provider>,
}

/// The fake Cloudsmith's state.
#[derive(Default)]
struct Cloudsmith {
    orgs: HashMap<String, Org>,
    /// Tokens issued: token -> (service, exp).
    issued: HashMap<String, (String, i64)>,
    /// How long issued tokens live; `None` issues opaque tokens without `exp`.
    token_lifetime: Option<i64>,
    /// Answer every exchange with this status instead (Cloudsmith overloaded, throttling).
    status: Option<StatusCode>,
    /// Answer every exchange with 201 and this body instead.
    body: Option<String>,
    /// The claims of every identity token accepted.
    verified: Vec<Value>,
    /// Every URL fetched from an issuer.
    fetched: Vec<String>,
    /// Every request body, to check the fields and that no identity token leaks.
    requests: Vec<Value>,
}

type Fake = Arc<Mutex<Cloudsmith>>;

fn detail(status: StatusCode, detail: &str) -> Response {
    (status, Json(json!({"detail": detail}))).into_response()
}

fn refuse(why: &str) -> Response {
    detail(StatusCode::UNAUTHORIZED, why)
}

/// Whether a required claim's `pattern` matches `value`: literally, `.*` matching any run.
fn matches(pattern: &str, value: &str) -> bool {
    let mut pieces = pattern.split(".*");
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = value.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(i) => rest = &rest[i + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Whether `claims` has `name` with a value `pattern` matches (one of them, for a list).
fn carries(claims: &Value, name: &str, pattern: &str) -> bool {
    match &claims[name] {
        Value::String(s) => matches(pattern, s),
        Value::Array(a) => a
            .iter()
            .any(|v| v.as_str().is_some_and(|s| matches(pattern, s))),
        Value::Null => false,
        other => matches(pattern, &other.to_string()),
    }
}

/// `POST /openid/{org}/`.
async fn openid(
    State(fake): State<Fake>,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    {
        let cs = fake.lock().unwrap();
        if let Some(status) = cs.status {
            return detail(status, "Refused as the test asked.");
        }
        if let Some(body) = &cs.body {
            return (StatusCode::CREATED, body.clone()).into_response();
        }
    }
    if headers
        .get("content-type")
        .is_none_or(|v| v.as_bytes() != b"application/json")
    {
        return detail(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type in request.",
        );
    }
    let request: Value = serde_json::from_str(&body).unwrap_or_default();
    fake.lock().unwrap().requests.push(request.clone());
    let field = |name: &str| request[name].as_str().filter(|s| !s.is_empty());
    let (Some(token), Some(service)) = (field("oidc_token"), field("service_slug")) else {
        return detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "oidc_token and service_slug are required.",
        );
    };
    let Some(settings) = fake.lock().unwrap().orgs.get(&org).cloned() else {
        return detail(StatusCode::NOT_FOUND, "Not found.");
    };
    let Some(issuer) = unverified_claims(token).and_then(|c| c["iss"].as_str().map(str::to_owned))
    else {
        return refuse("OIDC token cannot be authenticated: not a JWT with an issuer.");
    };
    let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
    let providers: Vec<Provider> = settings
        .providers
        .into_iter()
        .filter(|p| p.enabled && same(&p.provider_url, &issuer))
        .collect();
    if providers.is_empty() {
        return refuse("OIDC token cannot be authenticated: no provider settings for its issuer.");
    }
    let recorded = |url: String| fake.lock().unwrap().fetched.push(url);
    let verified = match verify_rsa(token, &issuer, recorded).await {
        Ok(v) => v,
        Err(failure) => {
            return refuse(&format!("OIDC token cannot be authenticated: {failure:?}."));
        }
    };
    let claims = verified.claims;
    let now = jiff::Timestamp::now().as_second();
    if claims["exp"].as_i64().is_none_or(|exp| exp <= now) {
        return refuse("OIDC token cannot be authenticated: expired.");
    }
    if claims["iss"] != verified.discovery["issuer"] {
        return refuse("OIDC token cannot be authenticated: issuer mismatch.");
    }
    let with_claims: Vec<&Provider> = providers
        .iter()
        .filter(|p| p.claims.iter().all(|(k, v)| carries(&claims, k, v)))
        .collect();
    if with_claims.is_empty() {
        return refuse("OIDC token claims do not match the provider settings.");
    }
    if !settings.services.iter().any(|s| s == service)
        || !with_claims
            .iter()
            .any(|p| p.service_accounts.iter().any(|s| s == service))
    {
        return refuse(&format!(
            "Service account {service} is not configured for this OIDC provider."
        ));
    }
    let mut cs = fake.lock().unwrap();
    cs.verified.push(claims);
    let (issued, exp) = match cs.token_lifetime {
        Some(lifetime) => (
            fake_jwt("cloudsmith", service, now, Some(now + lifetime)),
            now + lifetime,
        ),
        None => (format!("cs-{}", random()), now + TOKEN_LIFETIME),
    };
    cs.issued.insert(issued.clone(), (service.to_owned(), exp));
    (StatusCode::CREATED, Json(json!({"token": issued}))).into_response()
}

/// `GET /v2/`: the Docker registry, Basic auth with `token` and a token the fake issued.
async fn registry(State(fake): State<Fake>, headers: HeaderMap) -> Response {
    let cs = fake.lock().unwrap();
    let now = jiff::Timestamp::now().as_second();
    match basic(&headers) {
        Some((user, token))
            if user == "token" && cs.issued.get(&token).is_some_and(|(_, exp)| *exp > now) =>
        {
            Json(json!({})).into_response()
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Basic realm=\"Cloudsmith\"")],
            Json(
                json!({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}),
            ),
        )
            .into_response(),
    }
}

/// The fake Cloudsmith on a loopback port: its state and base URL.
async fn cloudsmith(orgs: &[(&str, Org)]) -> (Fake, String) {
    let fake = Arc::new(Mutex::new(Cloudsmith {
        orgs: orgs
            .iter()
            .map(|(name, org)| ((*name).to_owned(), org.clone()))
            .collect(),
        token_lifetime: Some(TOKEN_LIFETIME),
        ..Cloudsmith::default()
    }));
    let app = Router::new()
        .route("/openid/{org}/", post(openid))
        .route("/v2/", get(registry))
        .with_state(fake.clone());
    (fake, serve(app).await)
}

/// An organization with `services`, trusting `issuer` for `subject` as them (and `aud`
/// `cloudsmith`).
fn org(issuer: &str, subject: &str, services: &[&str]) -> Org {
    Org {
        services: services.iter().map(|s| (*s).to_owned()).collect(),
        providers: vec![provider(
            issuer,
            &[("sub", subject), ("aud", "cloudsmith")],
            services,
        )],
    }
}

fn provider(issuer: &str, claims: &[(&str, &str)], services: &[&str]) -> Provider {
    Provider {
        provider_url: issuer.to_owned(),
        claims: claims
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        service_accounts: services.iter().map(|s| (*s).to_owned()).collect(),
        enabled: true,
    }
}

fn ctx(id: &Identity, max_ttl: Option<Duration>) -> Context<'_> {
    Context {
        identity: id,
        generator: "payments/CloudsmithAccessToken/pull",
        max_ttl,
    }
}

/// A generator built as a serving federation with `issuer` builds it.
fn generator(issuer: &Arc<Issuer>, spec: Value) -> Generator {
    let spec = GeneratorSpec::from_manifest(GeneratorKind::CloudsmithAccessToken, spec).unwrap();
    Generator::build_shared(&spec, None, &mut Shared::with_issuer(Some(issuer.clone()))).unwrap()
}

const PAYMENTS_API: &str = "alpha:system:serviceaccount:payments:api";

#[tokio::test]
async fn a_workload_gets_a_cloudsmith_token_and_docker_login_verified_against_the_federations_own_issuer()
 {
    let cluster = common::issuer().await;
    let (fake, cs_url) = cloudsmith(&[]).await;
    let registry = cs_url.strip_prefix("http://").unwrap().to_owned();
    let yaml = |_url: &str| {
        format!(
            "{}{}apiVersion: esi.dev/v1alpha1\nkind: CloudsmithAccessToken\nmetadata: {{name: pull, namespace: default}}\nspec: {{apiUrl: \"{cs_url}\", orgSlug: acme, serviceSlug: ci-puller, registry: \"{registry}\"}}\n",
            common::cluster("alpha", &cluster.issuer()),
            common::GENERATORS
        )
    };
    let (issuer, state, url) = federation(KeyAlgorithm::Rs256, Some(&yaml)).await;
    fake.lock().unwrap().orgs.insert(
        "acme".into(),
        org(
            &url,
            "alpha:system:serviceaccount:default:app",
            &["ci-puller"],
        ),
    );

    let before = jiff::Timestamp::now().as_second();
    let (status, _, json, text) = common::send(
        &state,
        common::post(
            "/v1/generators/default/CloudsmithAccessToken/pull",
            Some(&common::token(&cluster, "default", "app")),
            None,
        ),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let data = &json["data"];
    let token = data["token"].as_str().unwrap();
    assert_eq!(data["password"], token);
    assert_eq!(data["username"], "token");
    assert_eq!(data["registry"], registry.as_str());
    let docker: Value = serde_json::from_str(data["dockerconfigjson"].as_str().unwrap()).unwrap();
    let auth = STANDARD
        .decode(docker["auths"][&registry]["auth"].as_str().unwrap())
        .unwrap();
    assert_eq!(auth, format!("token:{token}").as_bytes());
    assert_eq!(
        data.as_object().unwrap().keys().collect::<Vec<_>>(),
        [
            "dockerconfigjson",
            "password",
            "registry",
            "token",
            "username"
        ]
    );
    let expires: jiff::Timestamp = json["expiresAt"].as_str().unwrap().parse().unwrap();
    assert!(
        (before + 5395..=before + 5402).contains(&expires.as_second()),
        "expiresAt is the token's exp: {expires}"
    );

    // Cloudsmith fetched the federation's own documents and verified the token it signed.
    let presented = {
        let cs = fake.lock().unwrap();
        assert_eq!(
            cs.fetched,
            [
                format!("{url}/.well-known/openid-configuration"),
                format!("{url}/openid/v1/jwks"),
            ]
        );
        let claims = &cs.verified[0];
        assert_eq!(claims["iss"], url.as_str());
        assert_eq!(claims["sub"], "alpha:system:serviceaccount:default:app");
        assert_eq!(claims["aud"], "cloudsmith", "the default audience");
        assert_eq!(
            claims["esi"]["generator"],
            "default/CloudsmithAccessToken/pull"
        );
        let lives = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
        assert_eq!(lives, 300, "the identity token lives five minutes");
        assert_eq!(
            cs.requests.len(),
            1,
            "one exchange ({})",
            issuer.signing_kid()
        );
        let request = cs.requests[0].as_object().unwrap();
        assert_eq!(
            request.keys().collect::<Vec<_>>(),
            ["oidc_token", "service_slug"]
        );
        assert_eq!(request["service_slug"], "ci-puller");
        request["oidc_token"].as_str().unwrap().to_owned()
    };

    // The login works at the registry; the identity token is not a login.
    let login = |user: &str, password: &str| {
        reqwest::Client::new()
            .get(format!("{cs_url}/v2/"))
            .basic_auth(user, Some(password))
            .send()
    };
    assert_eq!(login("token", token).await.unwrap().status(), 200);
    assert_eq!(login("token", &presented).await.unwrap().status(), 401);
    assert!(
        !text.contains(&presented),
        "the identity token in the answer"
    );
}

#[tokio::test]
async fn cloudsmith_refuses_subjects_claims_services_and_issuers_it_was_not_configured_for() {
    let (issuer, _state, url) = federation(KeyAlgorithm::Rs256, None).await;
    let worker = "alpha:system:serviceaccount:payments:worker";
    let (fake, cs_url) = cloudsmith(&[
        ("acme", org(&url, PAYMENTS_API, &["ci-puller"])),
        ("other-sub", org(&url, worker, &["ci-puller"])),
        (
            "other-claim",
            Org {
                services: vec!["ci-puller".into()],
                providers: vec![provider(
                    &url,
                    &[("sub", PAYMENTS_API), ("aud", "https://api.cloudsmith.io")],
                    &["ci-puller"],
                )],
            },
        ),
        (
            "unlisted",
            Org {
                services: vec!["ci-puller".into(), "ci-pusher".into()],
                providers: vec![provider(&url, &[("sub", PAYMENTS_API)], &["ci-puller"])],
            },
        ),
        (
            "github-only",
            org(
                "https://token.actions.githubusercontent.com",
                "repo:acme/app:ref:refs/heads/main",
                &["ci-puller"],
            ),
        ),
        (
            "disabled",
            Org {
                services: vec!["ci-puller".into()],
                providers: vec![Provider {
                    enabled: false,
                    ..provider(&url, &[("sub", PAYMENTS_API)], &["ci-puller"])
                }],
            },
        ),
        (
            "wildcard",
            Org {
                services: vec!["ci-puller".into()],
                providers: vec![provider(
                    &url,
                    &[("sub", "alpha:system:serviceaccount:payments:.*")],
                    &["ci-puller"],
                )],
            },
        ),
    ])
    .await;
    let id = identity("payments", "api");
    let spec = |org: &str, service: &str| json!({"apiUrl": cs_url, "orgSlug": org, "serviceSlug": service});

    let hint = format!(
        "must have provider URL {url}, require only claims the token carries (sub {PAYMENTS_API}, aud cloudsmith)"
    );
    for (org, service, code, says) in [
        (
            "other-sub",
            "ci-puller",
            401,
            "OIDC token claims do not match the provider settings.",
        ),
        (
            "other-claim",
            "ci-puller",
            401,
            "OIDC token claims do not match the provider settings.",
        ),
        (
            "unlisted",
            "ci-pusher",
            401,
            "Service account ci-pusher is not configured for this OIDC provider.",
        ),
        (
            "acme",
            "nobody",
            401,
            "Service account nobody is not configured for this OIDC provider.",
        ),
        (
            "github-only",
            "ci-puller",
            401,
            "no provider settings for its issuer",
        ),
        (
            "disabled",
            "ci-puller",
            401,
            "no provider settings for its issuer",
        ),
        ("nowhere", "ci-puller", 404, "Not found."),
    ] {
        let err = generator(&issuer, spec(org, service))
            .generate(&ctx(&id, None))
            .await
            .unwrap_err();
        assert!(
            matches!(err, BackendError::Rejected { .. }),
            "{org}: {err:?}"
        );
        let message = err.to_string();
        assert!(message.contains(says), "{org}: {message}");
        assert!(message.contains(&format!("({code})")), "{org}: {message}");
        assert!(
            message.contains(&format!("service {service:?} of {org:?}")),
            "{org}: {message}"
        );
        assert_eq!(message.contains(&hint), code == 401, "{org}: {message}");
        assert!(err.detail().contains(says), "{org}: {}", err.detail());
        let presented = fake.lock().unwrap().requests.last().unwrap()["oidc_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let all = format!("{err} {} {err:?}", err.detail());
        assert!(!all.contains(&presented), "the identity token in {all}");
    }
    assert!(fake.lock().unwrap().verified.is_empty());

    // The audience the settings require, a wildcard subject, and the right service are taken.
    let mut s = spec("other-claim", "ci-puller");
    s["audience"] = json!("https://api.cloudsmith.io");
    generator(&issuer, s)
        .generate(&ctx(&id, None))
        .await
        .unwrap();
    generator(&issuer, spec("wildcard", "ci-puller"))
        .generate(&ctx(&id, None))
        .await
        .unwrap();
    generator(&issuer, spec("acme", "ci-puller"))
        .generate(&ctx(&id, None))
        .await
        .unwrap();
    let cs = fake.lock().unwrap();
    let auds: Vec<&Value> = cs.verified.iter().map(|c| &c["aud"]).collect();
    assert_eq!(
        auds,
        [
            &json!("https://api.cloudsmith.io"),
            &json!("cloudsmith"),
            &json!("cloudsmith")
        ]
    );
}

#[tokio::test]
async fn cloudsmith_down_throttling_or_failing_is_unavailable_and_refusals_are_rejected() {
    let (issuer, _state, url) = federation(KeyAlgorithm::Rs256, None).await;
    let (fake, cs_url) = cloudsmith(&[("acme", org(&url, PAYMENTS_API, &["ci-puller"]))]).await;
    let id = identity("payments", "api");
    let g = generator(
        &issuer,
        json!({"apiUrl": cs_url, "orgSlug": "acme", "serviceSlug": "ci-puller"}),
    );
    for (status, unavailable) in [
        (StatusCode::SERVICE_UNAVAILABLE, true),
        (StatusCode::BAD_GATEWAY, true),
        (StatusCode::INTERNAL_SERVER_ERROR, true),
        (StatusCode::TOO_MANY_REQUESTS, true),
        (StatusCode::REQUEST_TIMEOUT, true),
        (StatusCode::FORBIDDEN, false),
        (StatusCode::BAD_REQUEST, false),
        (StatusCode::UNPROCESSABLE_ENTITY, false),
    ] {
        fake.lock().unwrap().status = Some(status);
        let err = g.generate(&ctx(&id, None)).await.unwrap_err();
        assert_eq!(
            matches!(err, BackendError::Unavailable { .. }),
            unavailable,
            "{status}: {err:?}"
        );
        assert!(err.to_string().contains(status.as_str()), "{status}: {err}");
        if !unavailable {
            assert!(
                err.to_string().contains("Refused as the test asked."),
                "Cloudsmith's words: {err}"
            );
        }
    }
    // Answers that are no token.
    fake.lock().unwrap().status = None;
    for body in ["<html>", r#"{"token": ""}"#, r#"{"detail": "ok"}"#] {
        fake.lock().unwrap().body = Some(body.to_owned());
        let err = g.generate(&ctx(&id, None)).await.unwrap_err();
        assert!(
            matches!(err, BackendError::Unavailable { .. }),
            "{body}: {err:?}"
        );
        assert!(
            err.to_string()
                .contains("Cloudsmith's answer could not be read"),
            "{body}: {err}"
        );
    }
    // Cloudsmith unreachable.
    let closed = esi_test_support::ClosedPort::new();
    let down = generator(
        &issuer,
        json!({"apiUrl": format!("http://{}", closed.addr()), "orgSlug": "acme", "serviceSlug": "ci-puller"}),
    );
    let err = down.generate(&ctx(&id, None)).await.unwrap_err();
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
    assert!(
        err.to_string().contains("Cloudsmith could not be reached"),
        "{err}"
    );
}

#[tokio::test]
async fn a_token_outliving_max_ttl_is_dropped_and_an_opaque_one_is_taken_to_live_ninety_minutes() {
    let (issuer, _state, url) = federation(KeyAlgorithm::Rs256, None).await;
    let (fake, cs_url) = cloudsmith(&[("acme", org(&url, PAYMENTS_API, &["ci-puller"]))]).await;
    let id = identity("payments", "api");
    let g = generator(
        &issuer,
        json!({"apiUrl": cs_url, "orgSlug": "acme", "serviceSlug": "ci-puller"}),
    );
    let identity_lifetime = |fake: &Fake| {
        let cs = fake.lock().unwrap();
        let c = cs.verified.last().unwrap();
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap()
    };

    // Cloudsmith's 90 minutes under a 1-hour maxTTL: dropped; the identity token lived 5 minutes.
    let err = g
        .generate(&ctx(&id, Some(Duration::from_secs(3600))))
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");
    assert!(
        err.to_string().contains(
            "the Cloudsmith token would live 1h 30m, longer than the Authorization's maxTTL of 1h; it was dropped"
        ),
        "{err}"
    );
    assert_eq!(identity_lifetime(&fake), 300);
    // Under a 2-minute maxTTL the identity token lives 2 minutes.
    let err = g
        .generate(&ctx(&id, Some(Duration::from_secs(120))))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("maxTTL of 2m"), "{err}");
    assert_eq!(identity_lifetime(&fake), 120);

    // Tokens of 10 minutes fit a 20-minute maxTTL.
    fake.lock().unwrap().token_lifetime = Some(600);
    let now = jiff::Timestamp::now().as_second();
    let cred = g
        .generate(&ctx(&id, Some(Duration::from_secs(1200))))
        .await
        .unwrap();
    let exp = cred.expires_at.unwrap().as_second();
    assert!((now + 595..=now + 602).contains(&exp), "{exp} - {now}");
    assert!(!format!("{cred:?}").contains(&cred.data["token"]));

    // A token that is no JWT: Cloudsmith's 90 minutes are assumed, and held to maxTTL.
    fake.lock().unwrap().token_lifetime = None;
    let cred = g.generate(&ctx(&id, None)).await.unwrap();
    assert!(cred.data["token"].starts_with("cs-"));
    let lives = cred.expires_at.unwrap().as_second() - jiff::Timestamp::now().as_second();
    assert!((5395..=5400).contains(&lives), "{lives}");
    let err = g
        .generate(&ctx(&id, Some(Duration::from_secs(1800))))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("maxTTL of 30m"), "{err}");
}

/// The fake refuses what Cloudsmith refuses: these must fail for its successes to mean
/// anything.
#[tokio::test]
async fn the_fake_checks_signatures_keys_expiry_and_parameters_as_cloudsmith_does() {
    let (issuer, _state, url) = federation(KeyAlgorithm::Rs256, None).await;
    let (fake, cs_url) = cloudsmith(&[("acme", org(&url, PAYMENTS_API, &["ci-puller"]))]).await;
    let id = identity("payments", "api");
    let mint = |issuer: &Issuer, at: jiff::Timestamp| {
        relying_party::mint_at(issuer, &id, "cloudsmith", at)
    };
    let exchange = |path: &str, body: Value| {
        let url = format!("{cs_url}{path}");
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let json: Value = resp.json().await.unwrap_or_default();
            (
                status,
                json["detail"].as_str().unwrap_or_default().to_owned(),
            )
        }
    };
    let body = |token: &str| json!({"oidc_token": token, "service_slug": "ci-puller"});
    let now = jiff::Timestamp::now();

    let good = mint(&issuer, now);
    assert_eq!(exchange("/openid/acme/", body(&good)).await.0, 201);
    // Claims changed after signing.
    let forged = relying_party::forged_sub(&good, "alpha:system:serviceaccount:payments:admin");
    assert_eq!(
        exchange("/openid/acme/", body(&forged)).await,
        (
            401,
            "OIDC token cannot be authenticated: Signature.".to_owned()
        )
    );
    // Expired.
    let old = mint(&issuer, now - jiff::SignedDuration::from_secs(400));
    assert_eq!(
        exchange("/openid/acme/", body(&old)).await,
        (
            401,
            "OIDC token cannot be authenticated: expired.".to_owned()
        )
    );
    // Signed by a key the issuer does not publish, under the same issuer URL.
    let pem = generate_key_pem(KeyAlgorithm::Rs256).unwrap();
    let rogue = Issuer::new(&url, pem.expose_secret()).unwrap();
    let (status, said) = exchange("/openid/acme/", body(&mint(&rogue, now))).await;
    assert_eq!(status, 401);
    assert!(
        said.contains(&format!("UnknownKid(\"{}\")", rogue.signing_kid())),
        "{said}"
    );
    // An issuer signing ES256: RSA only.
    let (es, _es_state, es_url) = federation(KeyAlgorithm::Es256, None).await;
    fake.lock()
        .unwrap()
        .orgs
        .insert("acme".into(), org(&es_url, PAYMENTS_API, &["ci-puller"]));
    let (status, said) = exchange("/openid/acme/", body(&mint(&es, now))).await;
    assert_eq!(status, 401);
    assert!(said.contains("NotRsa"), "{said}");
    // Missing parameters, the path without its slash, a body that is not JSON.
    assert_eq!(
        exchange("/openid/acme/", json!({"oidc_token": good}))
            .await
            .0,
        422
    );
    assert_eq!(exchange("/openid/acme", body(&good)).await.0, 404);
    let resp = reqwest::Client::new()
        .post(format!("{cs_url}/openid/acme/"))
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    assert_eq!(fake.lock().unwrap().verified.len(), 1);
    // Wildcards match runs, nothing else.
    for (pattern, value, ok) in [
        ("repo:acme/.*", "repo:acme/app:ref:main", true),
        ("repo:acme/.*:ref:main", "repo:acme/app:ref:main", true),
        ("repo:acme/.*", "repo:other/app", false),
        ("a.*c.*e", "abcde", true),
        ("a.*c.*e", "abde", false),
        ("exact", "exact", true),
        ("exact", "exactly", false),
        (".*", "", true),
    ] {
        assert_eq!(matches(pattern, value), ok, "{pattern} ~ {value}");
    }
}

#[tokio::test]
async fn without_an_rsa_issuer_the_kind_does_not_load_and_unchecked_it_refuses_requests() {
    relying_party::needs_an_rsa_issuer(
        "CloudsmithAccessToken",
        r#"{orgSlug: acme, serviceSlug: ci-puller}"#,
    )
    .await;
}

#[tokio::test]
async fn bad_specs_are_refused_at_load_naming_the_field() {
    let (_issuer, state, _url) = federation(KeyAlgorithm::Rs256, None).await;
    for (spec, says) in [
        (
            r#"{orgSlug: acme, serviceSlug: svc, serviceAccountRef: {name: default}}"#,
            "unknown field `serviceAccountRef`",
        ),
        (r#"{orgSlug: acme}"#, "missing field `serviceSlug`"),
        (
            r#"{orgSlug: "acme/x", serviceSlug: svc}"#,
            "spec.orgSlug: \"acme/x\" is not a Cloudsmith slug",
        ),
        (
            r#"{orgSlug: acme, serviceSlug: "-svc"}"#,
            "spec.serviceSlug: \"-svc\" is not a Cloudsmith slug",
        ),
        (
            r#"{orgSlug: acme, serviceSlug: svc, apiUrl: "http://api.cloudsmith.io"}"#,
            "spec.apiUrl: \"http://api.cloudsmith.io\" is not an https:// URL (http:// only for a loopback address",
        ),
        (
            r#"{orgSlug: acme, serviceSlug: svc, registry: "docker.cloudsmith.io/acme/repo"}"#,
            "spec.registry: \"docker.cloudsmith.io/acme/repo\" has a path",
        ),
        (
            r#"{orgSlug: acme, serviceSlug: svc, audience: ""}"#,
            "spec.audience",
        ),
    ] {
        let yaml = format!(
            "apiVersion: esi.dev/v1alpha1\nkind: CloudsmithAccessToken\nmetadata: {{name: pull, namespace: default}}\nspec: {spec}\n"
        );
        let err = config::load_text("test.yaml", &yaml, &state)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{spec}: {err}");
    }
}
