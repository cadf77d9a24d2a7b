//! `GithubAccessToken` against a FAKE of GitHub's REST API, served on loopback by this test
//! under GitHub Enterprise Server's `/api/v3` prefix. GitHub has no emulator; the fake
//! implements exactly the calls the generator makes, as GitHub documents them: the App's JWT
//! checked (RS256 under the App's public key, `iss`, at most 10 minutes of validity),
//! `POST /app/installations/{id}/access_tokens` narrowing to repositories and permissions the
//! installation has (else 404 / 422 with GitHub's messages), `DELETE /installation/token`
//! authenticated by the token, and `GET /installation/repositories` to use a token.

#![cfg(feature = "github")]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::{KeyPair as _, RsaKeyPair};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use esi_backends::{BackendError, Generate, Generator, LeaseHandle};
use serde_json::{Value, json};

use common::{build, ctx, ctx_with_max_ttl, identity};

const APP_ID: &str = "123456";
const INSTALLATION: u64 = 7_890_123;

struct Token {
    repositories: Vec<String>,
    revoked: bool,
}

#[derive(Default)]
struct Fake {
    /// The App's public key (PKCS#1 DER), as GitHub holds it.
    app_key: Vec<u8>,
    /// The installation's repositories and granted permissions.
    repositories: Vec<String>,
    permissions: BTreeMap<String, String>,
    tokens: HashMap<String, Token>,
    /// Claims of every App JWT received, and the request bodies.
    jwts: Vec<Value>,
    bodies: Vec<Value>,
    /// Headers GitHub asks every call to carry, as received.
    versions: Vec<String>,
    /// Answer a mint with a token but no `expires_at`.
    garbled: bool,
    /// Seconds a minted token lives (GitHub's hour when `None`).
    lifetime: Option<i64>,
    /// Whether `DELETE /installation/token` answers 503, revoking nothing.
    revoke_down: bool,
    revocations: usize,
}

type Shared = Arc<Mutex<Fake>>;

fn message(status: StatusCode, text: &str) -> (StatusCode, Json<Value>) {
    (
        status,
        Json(json!({"message": text, "documentation_url": "https://docs.github.com/rest"})),
    )
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

fn b64(part: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()
}

/// GitHub's checks of an App JWT: its claims if they pass.
fn app_claims(fake: &Fake, jwt: &str) -> Result<Value, &'static str> {
    let (input, signature) = jwt
        .rsplit_once('.')
        .ok_or("A JSON web token could not be decoded")?;
    let (header, claims) = input
        .split_once('.')
        .ok_or("A JSON web token could not be decoded")?;
    let header: Value = b64(header)
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or("A JSON web token could not be decoded")?;
    if header["alg"] != "RS256" {
        return Err("A JSON web token could not be decoded");
    }
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        &fake.app_key,
    )
    .verify(input.as_bytes(), &b64(signature).unwrap_or_default())
    .map_err(|_| "A JSON web token could not be decoded")?;
    let claims: Value = b64(claims)
        .and_then(|c| serde_json::from_slice(&c).ok())
        .ok_or("A JSON web token could not be decoded")?;
    let now = jiff::Timestamp::now().as_second();
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap_or(i64::MAX),
        claims["exp"].as_i64().unwrap_or(0),
    );
    if claims["iss"] != APP_ID {
        return Err("Integration not found");
    }
    if exp - iat > 600 || exp > now + 600 {
        return Err("'Expiration time' claim ('exp') is too far in the future");
    }
    if exp <= now || iat > now + 60 {
        return Err(
            "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
        );
    }
    Ok(claims)
}

fn level(l: &str) -> u8 {
    match l {
        "read" => 1,
        "write" => 2,
        "admin" => 3,
        _ => u8::MAX,
    }
}

/// `GET /app`: the App the JWT authenticates, as GitHub describes it (the fields used).
async fn app(State(fake): State<Shared>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    let fake = fake.lock().expect("lock");
    match app_claims(&fake, &bearer(&headers).unwrap_or_default()) {
        Ok(_) => (
            StatusCode::OK,
            Json(
                json!({"id": APP_ID.parse::<u64>().expect("id"), "slug": "esi-federation",
                "name": "esi federation", "owner": {"login": "example"}}),
            ),
        ),
        Err(why) => message(StatusCode::UNAUTHORIZED, why),
    }
}

async fn mint(
    State(fake): State<Shared>,
    Path(installation): Path<u64>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<Value>) {
    let mut fake = fake.lock().expect("lock");
    fake.versions.push(format!(
        "{} {}",
        headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-"),
        headers
            .get("x-github-api-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    ));
    let claims = match app_claims(&fake, &bearer(&headers).unwrap_or_default()) {
        Ok(c) => c,
        Err(why) => return message(StatusCode::UNAUTHORIZED, why),
    };
    fake.jwts.push(claims);
    if installation != INSTALLATION {
        return message(StatusCode::NOT_FOUND, "Not Found");
    }
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(_) => return message(StatusCode::BAD_REQUEST, "Problems parsing JSON"),
        }
    };
    fake.bodies.push(body.clone());
    let asked: Vec<String> = body["repositories"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if asked.iter().any(|r| !fake.repositories.contains(r)) {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "There is at least one repository that does not exist or is not accessible to the parent installation.",
        );
    }
    let mut permissions = fake.permissions.clone();
    if let Some(wanted) = body["permissions"].as_object() {
        for (name, l) in wanted {
            let l = l.as_str().unwrap_or_default();
            match fake.permissions.get(name) {
                Some(granted) if level(l) <= level(granted) => {}
                _ => {
                    return message(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "The permissions requested are not granted to this installation.",
                    );
                }
            }
        }
        permissions = wanted
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
    }
    let token = format!("ghs_{}{}", common::suffix(), common::suffix());
    let repositories = if asked.is_empty() {
        fake.repositories.clone()
    } else {
        asked.clone()
    };
    fake.tokens.insert(
        token.clone(),
        Token {
            repositories: repositories.clone(),
            revoked: false,
        },
    );
    let expires_at =
        jiff::Timestamp::now() + jiff::SignedDuration::from_secs(fake.lifetime.unwrap_or(3600));
    let mut answer = json!({
        "token": token,
        "expires_at": expires_at.to_string(),
        "permissions": permissions,
        "repository_selection": if asked.is_empty() { "all" } else { "selected" },
        "repositories": repositories.iter().map(|r| json!({"name": r})).collect::<Vec<_>>(),
    });
    if fake.garbled {
        answer.as_object_mut().expect("object").remove("expires_at");
    }
    (StatusCode::CREATED, Json(answer))
}

async fn revoke(State(fake): State<Shared>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    let mut fake = fake.lock().expect("lock");
    fake.revocations += 1;
    if fake.revoke_down {
        return message(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
    }
    let token = bearer(&headers).unwrap_or_default();
    match fake.tokens.get_mut(&token) {
        Some(t) if !t.revoked => {
            t.revoked = true;
            (StatusCode::NO_CONTENT, Json(Value::Null))
        }
        _ => message(StatusCode::UNAUTHORIZED, "Bad credentials"),
    }
}

async fn repositories(State(fake): State<Shared>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    let fake = fake.lock().expect("lock");
    match fake.tokens.get(&bearer(&headers).unwrap_or_default()) {
        Some(t) if !t.revoked => (
            StatusCode::OK,
            Json(json!({
                "total_count": t.repositories.len(),
                "repositories": t.repositories.iter().map(|r| json!({"name": r})).collect::<Vec<_>>(),
            })),
        ),
        _ => message(StatusCode::UNAUTHORIZED, "Bad credentials"),
    }
}

/// The App's key pair and the fake GitHub knowing its public half; the API's base URL.
async fn github() -> (RsaKeyPair, Shared, String) {
    let key = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("keygen");
    let fake = Arc::new(Mutex::new(Fake {
        app_key: key.public_key().as_ref().to_vec(),
        repositories: vec![
            "payments-config".into(),
            "shared-docs".into(),
            "infra".into(),
        ],
        permissions: BTreeMap::from([
            ("contents".into(), "write".into()),
            ("metadata".into(), "read".into()),
        ]),
        ..Fake::default()
    }));
    let app = Router::new()
        .route("/api/v3/app", get(app))
        .route("/api/v3/app/installations/{id}/access_tokens", post(mint))
        .route("/api/v3/installation/token", delete(revoke))
        .route("/api/v3/installation/repositories", get(repositories))
        .with_state(fake.clone());
    let base = common::serve_local(app).await;
    (key, fake, format!("{base}/api/v3"))
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (GitHub issues App keys as
/// PKCS#1 PEM, `BEGIN RSA PRIVATE KEY`).
fn pkcs1(pkcs8: &[u8]) -> Vec<u8> {
    // One DER element: (tag, content, rest).
    fn element(d: &[u8]) -> (u8, &[u8], &[u8]) {
        let (tag, first) = (d[0], d[1]);
        let (len, at) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let n = usize::from(first & 0x7f);
            let len = d[2..2 + n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, 2 + n)
        };
        (tag, &d[at..at + len], &d[at + len..])
    }
    let (_, info, _) = element(pkcs8);
    let (_, _, rest) = element(info); // version
    let (_, _, rest) = element(rest); // algorithm
    let (tag, key, _) = element(rest);
    assert_eq!(tag, 0x04, "privateKey OCTET STRING");
    key.to_vec()
}

fn key_pem(key: &RsaKeyPair, pkcs1_form: bool) -> String {
    let der = key.as_der().expect("pkcs8");
    if pkcs1_form {
        common::pem("RSA PRIVATE KEY", &pkcs1(der.as_ref()))
    } else {
        common::pem("PRIVATE KEY", der.as_ref())
    }
}

fn generator(url: &str, key_file: &std::path::Path, spec: Value) -> Generator {
    let store = json!({"provider": {"github": {
        "url": url,
        "appId": APP_ID,
        "privateKey": {"file": key_file},
        "timeout": "5s",
    }}});
    let mut full = json!({"secretStoreRef": {"name": "github"}, "installationId": INSTALLATION});
    for (k, v) in spec.as_object().expect("object") {
        full[k] = v.clone();
    }
    build("GithubAccessToken", full, Some(store))
}

async fn listed(url: &str, token: &str) -> Result<Vec<String>, StatusCode> {
    let resp = reqwest::Client::new()
        .get(format!("{url}/installation/repositories"))
        .bearer_auth(token)
        .send()
        .await
        .expect("fake reachable");
    if resp.status() != StatusCode::OK.as_u16() {
        return Err(StatusCode::from_u16(resp.status().as_u16()).expect("status"));
    }
    let body: Value = resp.json().await.expect("json");
    Ok(body["repositories"]
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["name"].as_str().expect("name").to_owned())
        .collect())
}

#[tokio::test]
async fn a_scoped_token_works_until_its_lease_revokes_it() {
    let (key, fake, url) = github().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("app.pem");
    std::fs::write(&key_file, key_pem(&key, true)).expect("write key");
    let g = generator(
        &url,
        &key_file,
        json!({"repositories": ["{{namespace}}-config"], "permissions": {"contents": "read"}}),
    );
    let id = identity();

    let cred = g
        .generate(&ctx(&id, "payments/GithubAccessToken/config"))
        .await
        .expect("minted");
    let token = cred.data["token"].clone();
    assert!(token.starts_with("ghs_"), "not an installation token");
    assert_eq!(cred.data.len(), 1);
    let lives =
        cred.expires_at.expect("an expiry").as_second() - jiff::Timestamp::now().as_second();
    assert!((3590..=3600).contains(&lives), "lives {lives} s");
    assert!(!format!("{cred:?}").contains(&token), "the token in Debug");

    {
        let fake = fake.lock().expect("lock");
        assert_eq!(
            fake.bodies,
            [json!({"repositories": ["payments-config"], "permissions": {"contents": "read"}})]
        );
        let claims = &fake.jwts[0];
        assert_eq!(claims["iss"], APP_ID);
        let now = jiff::Timestamp::now().as_second();
        let (iat, exp) = (
            claims["iat"].as_i64().expect("iat"),
            claims["exp"].as_i64().expect("exp"),
        );
        assert!(iat <= now - 55 && exp <= now + 600, "{claims}");
        assert_eq!(fake.versions, ["application/vnd.github+json 2022-11-28"]);
    }
    assert_eq!(
        listed(&url, &token).await,
        Ok(vec!["payments-config".to_owned()])
    );

    let lease = cred.lease.expect("revocable");
    assert!(g.revoke(&lease).await.expect("revoked"));
    assert_eq!(listed(&url, &token).await, Err(StatusCode::UNAUTHORIZED));
    // Revoking again finds nothing left, and is no error.
    assert!(!g.revoke(&lease).await.expect("idempotent"));
}

#[tokio::test]
async fn without_narrowing_the_token_reaches_the_whole_installation_and_a_pkcs8_key_works() {
    let (key, fake, url) = github().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("app.pem");
    std::fs::write(&key_file, key_pem(&key, false)).expect("write key");
    let g = generator(&url, &key_file, json!({}));
    let id = identity();
    let cred = g
        .generate(&ctx_with_max_ttl(&id, "g", Duration::from_secs(7200)))
        .await
        .expect("minted");
    assert_eq!(fake.lock().expect("lock").bodies, [json!({})]);
    assert_eq!(
        listed(&url, &cred.data["token"])
            .await
            .expect("usable")
            .len(),
        3
    );
}

#[tokio::test]
async fn refusals_say_which_check_failed_and_leak_nothing() {
    let (key, fake, url) = github().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("app.pem");
    let pem = key_pem(&key, true);
    std::fs::write(&key_file, &pem).expect("write key");
    let id = identity();
    let c = ctx(&id, "g");
    let secret_bits = pem.lines().nth(1).expect("a base64 line").to_owned();
    let check = |e: &BackendError| {
        let all = format!("{e} {} {e:?}", e.detail());
        assert!(!all.contains(&secret_bits), "key material in {all}");
        assert!(!all.contains("ghs_"), "a token in {all}");
    };

    // A repository the installation does not reach: GitHub's 422, refused for the caller.
    let e = generator(&url, &key_file, json!({"repositories": ["elsewhere"]}))
        .generate(&c)
        .await
        .unwrap_err();
    assert!(matches!(e, BackendError::Rejected { .. }), "{e:?}");
    assert!(e.to_string().contains("repositories or permissions"), "{e}");
    assert!(
        e.detail()
            .contains("not accessible to the parent installation"),
        "{}",
        e.detail()
    );
    check(&e);

    // More than the App was granted.
    let e = generator(
        &url,
        &key_file,
        json!({"permissions": {"contents": "admin"}}),
    )
    .generate(&c)
    .await
    .unwrap_err();
    assert!(
        e.detail().contains("not granted to this installation"),
        "{}",
        e.detail()
    );
    check(&e);

    // An installation GitHub does not know.
    let e = generator(&url, &key_file, json!({"installationId": 1}))
        .generate(&c)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no such App installation"), "{e}");
    check(&e);

    // A key GitHub does not hold for the App: the federation's configuration, not the caller's.
    let other = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("keygen");
    std::fs::write(&key_file, key_pem(&other, true)).expect("write key");
    let g = generator(&url, &key_file, json!({}));
    let e = g.generate(&c).await.unwrap_err();
    assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("refused the federation's App credentials"),
        "{e}"
    );
    check(&e);

    // Not a key at all: named by its source, its text never shown. The file is read on every
    // mint, so putting the right key back needs no rebuild.
    std::fs::write(
        &key_file,
        "-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0\n-----END RSA PRIVATE KEY-----\n",
    )
    .expect("write");
    let e = g.generate(&c).await.unwrap_err();
    assert!(
        e.detail().contains(&key_file.display().to_string()),
        "{}",
        e.detail()
    );
    assert!(
        e.detail().contains("not a usable RSA key"),
        "{}",
        e.detail()
    );
    assert!(!format!("{e} {}", e.detail()).contains("c2VjcmV0"));
    std::fs::write(&key_file, &pem).expect("write key");
    g.generate(&c).await.expect("minted with the key back");
    assert_eq!(fake.lock().expect("lock").tokens.len(), 1);
}

#[tokio::test]
async fn a_max_ttl_under_an_hour_mints_nothing() {
    let (key, fake, url) = github().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("app.pem");
    std::fs::write(&key_file, key_pem(&key, true)).expect("write key");
    let g = generator(&url, &key_file, json!({}));
    let id = identity();
    let e = g
        .generate(&ctx_with_max_ttl(&id, "g", Duration::from_secs(1800)))
        .await
        .unwrap_err();
    assert!(matches!(e, BackendError::Rejected { .. }), "{e:?}");
    assert!(e.to_string().contains("maxTTL of 30m"), "{e}");
    assert!(
        fake.lock().expect("lock").jwts.is_empty(),
        "GitHub was called"
    );
}

#[tokio::test]
async fn a_token_outliving_max_ttl_is_revoked_and_the_refusal_says_whether_it_worked() {
    let (key, fake, url) = github().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("app.pem");
    std::fs::write(&key_file, key_pem(&key, true)).expect("write key");
    // GitHub lengthens its tokens to two hours; the Authorization allows one.
    fake.lock().expect("lock").lifetime = Some(7200);
    let g = generator(&url, &key_file, json!({}));
    let id = identity();
    let c = ctx_with_max_ttl(&id, "g", Duration::from_secs(3600));
    let e = g.generate(&c).await.unwrap_err();
    let BackendError::Rejected { message, .. } = &e else {
        panic!("{e:?}")
    };
    assert!(
        message.contains("maxTTL of 1h") && message.ends_with("(it was revoked)"),
        "{message}"
    );
    {
        let fake = fake.lock().expect("lock");
        assert_eq!(fake.tokens.len(), 1);
        assert!(fake.tokens.values().all(|t| t.revoked), "still live");
    }

    // The revoke fails: the caller is still refused, told the token lives on, and why goes
    // to the log detail, with no token anywhere.
    fake.lock().expect("lock").revoke_down = true;
    let e = g.generate(&c).await.unwrap_err();
    let BackendError::Rejected { message, detail } = &e else {
        panic!("{e:?}")
    };
    assert!(
        message.contains("maxTTL of 1h")
            && message.contains("revoking it failed, it lives until it expires")
            && !message.contains("it was revoked"),
        "{message}"
    );
    assert!(
        detail.contains("; revoke: ") && detail.contains("503"),
        "{detail}"
    );
    assert!(!format!("{e:?}").contains("ghs_"), "{e:?}");
    let fake = fake.lock().expect("lock");
    assert_eq!(fake.revocations, 2);
    assert_eq!(fake.tokens.values().filter(|t| !t.revoked).count(), 1);
}

#[tokio::test]
async fn a_token_in_an_answer_that_cannot_be_read_is_revoked() {
    let (key, fake, url) = github().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("app.pem");
    std::fs::write(&key_file, key_pem(&key, true)).expect("write key");
    fake.lock().expect("lock").garbled = true;
    let g = generator(&url, &key_file, json!({}));
    let id = identity();
    let e = g.generate(&ctx(&id, "g")).await.unwrap_err();
    assert!(e.to_string().contains("could not be read"), "{e}");
    assert!(e.to_string().ends_with("(it was revoked)"), "{e}");
    let fake = fake.lock().expect("lock");
    assert_eq!(fake.tokens.len(), 1);
    assert!(
        fake.tokens.values().all(|t| t.revoked),
        "the minted token is still live"
    );
}

#[tokio::test]
async fn a_lease_without_a_token_is_refused() {
    let (key, _fake, url) = github().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("app.pem");
    std::fs::write(&key_file, key_pem(&key, true)).expect("write key");
    let g = generator(&url, &key_file, json!({}));
    let e = g
        .revoke(&LeaseHandle(json!({"lease": "x"})))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("names no GitHub token"), "{e}");
}

#[tokio::test]
async fn a_login_check_names_the_app_its_jwt_authenticates() {
    let (key, _fake, url) = github().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("app.pem");
    let check = |pem: String| {
        std::fs::write(&key_file, pem).expect("write key");
        let store = esi_backends::SecretStoreSpec::from_manifest(json!({"provider": {"github": {
            "url": url, "appId": APP_ID, "privateKey": {"file": key_file}, "timeout": "5s",
        }}}))
        .expect("store");
        async move { store.check_login(None).await }
    };
    match check(key_pem(&key, false)).await {
        esi_backends::LoginCheck::LoggedIn(who) => {
            assert_eq!(
                who,
                format!("App \"esi-federation\" (\"esi federation\"), id {APP_ID}")
            );
        }
        other => panic!("{other:?}"),
    }
    // Another key: GitHub refuses the JWT, the federation's own credential.
    let other = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("key");
    match check(key_pem(&other, false)).await {
        esi_backends::LoginCheck::Failed(BackendError::Unavailable { message, .. }) => {
            assert!(message.contains("App credentials"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
