//! `Grafana` against a FAKE of Grafana's HTTP API, served on loopback by this test under a
//! sub-path (`/grafana`, as behind a reverse proxy). Grafana cannot run here; the fake
//! implements exactly the calls the generator makes, as Grafana's service-account API answers
//! them: `GET /api/serviceaccounts/search` (case-insensitive substring match on name or login,
//! paged by id), `POST /api/serviceaccounts` (role checked, `sa-<org>-<name>` login, 400
//! `serviceaccounts.ErrAlreadyExists` for a taken name or login), `POST .../{id}/tokens`
//! (`secondsToLive`, the optional global limit, names unique per organization, `glsa_` keys),
//! `GET .../{id}/tokens` (every token of the account, `hasExpired` by the fake's clock) and
//! `DELETE .../{id}/tokens/{tokenId}` (404 for an unknown account or token). The
//! federation's credential is checked on every call (Bearer token or basic auth; a
//! read-only token gets Grafana's 403), and `GET /api/user` lets the test use a minted token.

#![cfg(feature = "grafana")]

mod common;

use std::collections::HashMap;
use std::path::Path as FsPath;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use esi_backends::{BackendError, Credential, Generate, Generator, LeaseHandle};
use serde_json::{Value, json};

use common::{build, ctx, ctx_with_max_ttl, identity};

const ORG: u64 = 1;
const ADMIN_TOKEN: &str = "glsa_federationAdminToken0000000000_0a1b2c3d";
const VIEWER_TOKEN: &str = "glsa_federationViewerToken000000000_4e5f6a7b";
const ADMIN_USER: &str = "admin";
const ADMIN_PASSWORD: &str = "correct-horse-battery";

struct Account {
    id: u64,
    name: String,
    login: String,
    role: String,
    disabled: bool,
}

struct Token {
    id: u64,
    account: u64,
    name: String,
    key: String,
    expires: i64,
}

/// How the fake garbles its answer to a token creation (the token is created all the same).
#[derive(Clone, Copy, PartialEq)]
enum Garble {
    /// `{id, name}` without `key`.
    NoKey,
    /// A key holding a newline.
    ControlKey,
}

#[derive(Default)]
struct Fake {
    next_id: u64,
    accounts: Vec<Account>,
    tokens: Vec<Token>,
    /// Grafana's `api_key_max_seconds_to_live` (unset: -1, no limit).
    max_seconds_to_live: Option<u64>,
    /// `METHOD path` of every call, its `X-Grafana-Org-Id` and how it authenticated.
    calls: Vec<String>,
    token_bodies: Vec<Value>,
    account_bodies: Vec<Value>,
    /// Answer the next search with no match (a concurrent creation not yet seen).
    hide_next_search: bool,
    garble: Option<Garble>,
    /// Answer searches with a body that is not Grafana's.
    search_garbage: bool,
}

type Shared = Arc<Mutex<Fake>>;

fn error(status: StatusCode, message: &str, message_id: Option<&str>) -> (StatusCode, Json<Value>) {
    let mut body = json!({"message": message});
    if let Some(id) = message_id {
        body["messageId"] = json!(id);
        body["statusCode"] = json!(status.as_u16());
        body["traceID"] = json!("");
    }
    (status, Json(body))
}

enum Caller {
    Admin,
    Viewer,
    Account(u64),
}

/// Grafana's authentication of a request, and the organization header's check.
fn authenticate(
    fake: &mut Fake,
    method: &str,
    path: &str,
    headers: &HeaderMap,
) -> Result<Caller, (StatusCode, Json<Value>)> {
    let org = headers
        .get("x-grafana-org-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let caller = if let Some(token) = auth.strip_prefix("Bearer ") {
        let now = jiff::Timestamp::now().as_second();
        match token {
            ADMIN_TOKEN => Some(("bearer", Caller::Admin)),
            VIEWER_TOKEN => Some(("bearer", Caller::Viewer)),
            key => fake
                .tokens
                .iter()
                .find(|t| t.key == key && t.expires > now)
                .map(|t| ("minted", Caller::Account(t.account))),
        }
    } else if let Some(basic) = auth.strip_prefix("Basic ") {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        (decoded == format!("{ADMIN_USER}:{ADMIN_PASSWORD}")).then_some(("basic", Caller::Admin))
    } else {
        None
    };
    fake.calls.push(format!(
        "{method} {path} org={org} auth={}",
        caller.as_ref().map_or("none", |c| c.0)
    ));
    let Some((_, caller)) = caller else {
        return Err(error(StatusCode::UNAUTHORIZED, "Invalid API key", None));
    };
    if org != "-" && org != ORG.to_string() {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "user is not a member of the organization",
            None,
        ));
    }
    Ok(caller)
}

/// Grafana's access control for the service-account endpoints (an org admin's actions).
fn require_admin(caller: &Caller, action: &str) -> Result<(), (StatusCode, Json<Value>)> {
    match caller {
        Caller::Admin => Ok(()),
        _ => Err(error(
            StatusCode::FORBIDDEN,
            &format!(
                "You'll need additional permissions to perform this action. Permissions needed: {action}"
            ),
            None,
        )),
    }
}

fn profile(a: &Account) -> Value {
    json!({
        "id": a.id, "uid": format!("uid{}", a.id), "name": a.name, "login": a.login,
        "orgId": ORG, "isDisabled": a.disabled, "role": a.role, "tokens": 0,
        "avatarUrl": "/avatar/0", "createdAt": "2026-11-30T12:00:00Z",
        "updatedAt": "2026-11-30T12:00:00Z", "teams": []
    })
}

async fn search(
    State(fake): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    let mut fake = fake.lock().expect("lock");
    let caller = match authenticate(&mut fake, "GET", "search", &headers) {
        Ok(c) => c,
        Err(e) => return e,
    };
    if let Err(e) = require_admin(&caller, "serviceaccounts:read") {
        return e;
    }
    if fake.search_garbage {
        return (
            StatusCode::OK,
            Json(json!(["not", "a", "search", "answer"])),
        );
    }
    let per_page = q
        .get("perpage")
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|p| *p > 0)
        .unwrap_or(1000);
    let page = q
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|p| *p > 0)
        .unwrap_or(1);
    let query = q.get("query").cloned().unwrap_or_default().to_lowercase();
    let hide = std::mem::take(&mut fake.hide_next_search);
    let matching: Vec<&Account> = fake
        .accounts
        .iter()
        .filter(|a| {
            !hide
                && (a.name.to_lowercase().contains(&query)
                    || a.login.to_lowercase().contains(&query))
        })
        .collect();
    let listed: Vec<Value> = matching
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|a| profile(a))
        .collect();
    (
        StatusCode::OK,
        Json(json!({
            "totalCount": matching.len(), "serviceAccounts": listed,
            "page": page, "perPage": per_page
        })),
    )
}

fn add_account(fake: &mut Fake, name: &str, role: &str, disabled: bool) -> u64 {
    fake.next_id += 1;
    let id = fake.next_id;
    let login = format!("sa-{ORG}-{}", name.to_lowercase()).replace(' ', "-");
    fake.accounts.push(Account {
        id,
        name: name.to_owned(),
        login,
        role: role.to_owned(),
        disabled,
    });
    id
}

async fn create_account(
    State(fake): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<Value>) {
    let mut fake = fake.lock().expect("lock");
    let caller = match authenticate(&mut fake, "POST", "serviceaccounts", &headers) {
        Ok(c) => c,
        Err(e) => return e,
    };
    if let Err(e) = require_admin(&caller, "serviceaccounts:create") {
        return e;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "bad request data", None);
    };
    fake.account_bodies.push(body.clone());
    let name = body["name"].as_str().unwrap_or_default().to_owned();
    if name.is_empty() {
        return error(StatusCode::BAD_REQUEST, "bad request data", None);
    }
    let role = body["role"].as_str().unwrap_or("Viewer").to_owned();
    if !["Viewer", "Editor", "Admin", "None"].contains(&role.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid role specified",
            Some("serviceaccounts.ErrInvalidRoleSpecified"),
        );
    }
    let login = format!("sa-{ORG}-{}", name.to_lowercase()).replace(' ', "-");
    if fake
        .accounts
        .iter()
        .any(|a| a.name == name || a.login == login)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "service account already exists",
            Some("serviceaccounts.ErrAlreadyExists"),
        );
    }
    let disabled = body["isDisabled"].as_bool().unwrap_or(false);
    let id = add_account(&mut fake, &name, &role, disabled);
    let created = fake.accounts.iter().find(|a| a.id == id).expect("added");
    (StatusCode::CREATED, Json(profile(created)))
}

async fn create_token(
    State(fake): State<Shared>,
    Path(account): Path<u64>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<Value>) {
    let mut fake = fake.lock().expect("lock");
    if let Err(e) = on_account(
        &mut fake,
        "POST",
        "serviceaccounts:write",
        &headers,
        account,
    ) {
        return e;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Bad request data", None);
    };
    fake.token_bodies.push(body.clone());
    let name = body["name"].as_str().unwrap_or_default().to_owned();
    let seconds = body["secondsToLive"].as_i64().unwrap_or(0);
    if name.is_empty() {
        return error(StatusCode::BAD_REQUEST, "Bad request data", None);
    }
    if let Some(max) = fake.max_seconds_to_live {
        if seconds == 0 {
            return error(
                StatusCode::BAD_REQUEST,
                "Number of seconds before expiration should be set",
                None,
            );
        }
        if seconds > i64::try_from(max).expect("small") {
            return error(
                StatusCode::BAD_REQUEST,
                "Number of seconds before expiration is greater than the global limit",
                None,
            );
        }
    }
    if seconds < 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid SecondsToLive value",
            Some("serviceaccounts.ErrInvalidInput"),
        );
    }
    if fake.tokens.iter().any(|t| t.name == name) {
        return error(
            StatusCode::BAD_REQUEST,
            "service account token with given name already exists in the organization",
            Some("serviceaccounts.ErrTokenAlreadyExists"),
        );
    }
    fake.next_id += 1;
    let id = fake.next_id;
    let key = format!(
        "glsa_{}{}{}{}_{}",
        common::suffix(),
        common::suffix(),
        common::suffix(),
        common::suffix(),
        common::suffix()
    );
    let expires = if seconds == 0 {
        i64::MAX
    } else {
        jiff::Timestamp::now().as_second() + seconds
    };
    fake.tokens.push(Token {
        id,
        account,
        name: name.clone(),
        key: key.clone(),
        expires,
    });
    let answer = match fake.garble {
        None => json!({"id": id, "name": name, "key": key}),
        Some(Garble::NoKey) => json!({"id": id, "name": name}),
        Some(Garble::ControlKey) => {
            json!({"id": id, "name": name, "key": format!("{key}\nX-Evil: 1")})
        }
    };
    (StatusCode::OK, Json(answer))
}

/// What every call on an account's tokens checks first: the federation's credential, the
/// admin's `action`, the account's existence.
fn on_account(
    fake: &mut Fake,
    method: &str,
    action: &str,
    headers: &HeaderMap,
    account: u64,
) -> Result<(), (StatusCode, Json<Value>)> {
    let caller = authenticate(fake, method, "tokens", headers)?;
    require_admin(&caller, action)?;
    if !fake.accounts.iter().any(|a| a.id == account) {
        return Err(error(
            StatusCode::NOT_FOUND,
            "service account not found",
            Some("serviceaccounts.ErrNotFound"),
        ));
    }
    Ok(())
}

/// `GET /api/serviceaccounts/{id}/tokens`: every token of the account (unpaged), each with
/// Grafana's `hasExpired` by its clock and no key.
async fn list_tokens(
    State(fake): State<Shared>,
    Path(account): Path<u64>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    let mut fake = fake.lock().expect("lock");
    if let Err(e) = on_account(&mut fake, "GET", "serviceaccounts:read", &headers, account) {
        return e;
    }
    let now = jiff::Timestamp::now().as_second();
    let list: Vec<Value> = fake
        .tokens
        .iter()
        .filter(|t| t.account == account)
        .map(|t| {
            let expiration = (t.expires != i64::MAX).then(|| {
                jiff::Timestamp::from_second(t.expires)
                    .expect("a time")
                    .to_string()
            });
            json!({"id": t.id, "name": t.name, "created": "2026-01-01T00:00:00Z",
                   "lastUsedAt": null, "expiration": expiration,
                   "secondsUntilExpiration": expiration.as_ref().map(|_| (t.expires - now).max(0)),
                   "hasExpired": t.expires <= now, "isRevoked": false})
        })
        .collect();
    (StatusCode::OK, Json(Value::Array(list)))
}

async fn delete_token(
    State(fake): State<Shared>,
    Path((account, token)): Path<(u64, u64)>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    let mut fake = fake.lock().expect("lock");
    if let Err(e) = on_account(
        &mut fake,
        "DELETE",
        "serviceaccounts:write",
        &headers,
        account,
    ) {
        return e;
    }
    let before = fake.tokens.len();
    fake.tokens
        .retain(|t| !(t.id == token && t.account == account));
    if fake.tokens.len() == before {
        return error(
            StatusCode::NOT_FOUND,
            "service account token not found",
            Some("serviceaccounts.ErrTokenNotFound"),
        );
    }
    (
        StatusCode::OK,
        Json(json!({"message": "Service account token deleted"})),
    )
}

/// `GET /api/org`: the caller's current organization.
async fn org(State(fake): State<Shared>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    let mut fake = fake.lock().expect("lock");
    match authenticate(&mut fake, "GET", "org", &headers) {
        Ok(_) => (
            StatusCode::OK,
            Json(json!({"id": ORG, "name": "Main Org."})),
        ),
        Err(e) => e,
    }
}

async fn user(State(fake): State<Shared>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    let mut fake = fake.lock().expect("lock");
    match authenticate(&mut fake, "GET", "user", &headers) {
        Ok(Caller::Account(id)) => {
            let a = fake.accounts.iter().find(|a| a.id == id).expect("account");
            (
                StatusCode::OK,
                Json(json!({"id": a.id, "login": a.login, "name": a.name, "orgId": ORG})),
            )
        }
        Ok(_) => (StatusCode::OK, Json(json!({"login": "admin"}))),
        Err(e) => e,
    }
}

/// The fake Grafana and its base URL (with the `/grafana` sub-path).
async fn grafana() -> (Shared, String) {
    let fake: Shared = Arc::new(Mutex::new(Fake::default()));
    let api = Router::new()
        .route("/api/serviceaccounts/search", get(search))
        .route("/api/serviceaccounts", post(create_account))
        .route(
            "/api/serviceaccounts/{id}/tokens",
            post(create_token).get(list_tokens),
        )
        .route(
            "/api/serviceaccounts/{id}/tokens/{token}",
            delete(delete_token),
        )
        .route("/api/user", get(user))
        .route("/api/org", get(org))
        .with_state(fake.clone());
    let base = common::serve_local(Router::new().nest("/grafana", api)).await;
    (fake, format!("{base}/grafana"))
}

/// The federation's credentials, as files (read on every call).
struct Creds {
    _dir: tempfile::TempDir,
    admin: std::path::PathBuf,
    viewer: std::path::PathBuf,
    password: std::path::PathBuf,
}

fn creds() -> Creds {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, value: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("{value}\n")).expect("write");
        p
    };
    let admin = write("admin-token", ADMIN_TOKEN);
    let viewer = write("viewer-token", VIEWER_TOKEN);
    let password = write("password", ADMIN_PASSWORD);
    Creds {
        _dir: dir,
        admin,
        viewer,
        password,
    }
}

fn token_auth(file: &FsPath) -> Value {
    json!({"token": {"file": file}})
}

fn generator(url: &str, auth: Value, spec: Value) -> Generator {
    generator_in(url, auth, Some(ORG), spec)
}

fn generator_in(url: &str, auth: Value, org: Option<u64>, spec: Value) -> Generator {
    let mut provider = json!({"url": url, "auth": auth, "timeout": "5s"});
    if let Some(org) = org {
        provider["orgId"] = json!(org);
    }
    let store = json!({"provider": {"grafana": provider}});
    let mut full = json!({
        "secretStoreRef": {"name": "grafana"},
        "serviceAccount": {"name": "esi-{{namespace}}", "role": "Viewer"}
    });
    for (k, v) in spec.as_object().expect("object") {
        full[k] = v.clone();
    }
    build("Grafana", full, Some(store))
}

/// `GET /api/user` with a minted token: its login, or the status Grafana answered.
async fn whoami(url: &str, token: &str) -> Result<String, u16> {
    let resp = reqwest::Client::new()
        .get(format!("{url}/api/user"))
        .bearer_auth(token)
        .send()
        .await
        .expect("fake reachable");
    if resp.status() != reqwest::StatusCode::OK {
        return Err(resp.status().as_u16());
    }
    let body: Value = resp.json().await.expect("json");
    Ok(body["login"].as_str().expect("login").to_owned())
}

fn lives(cred: &Credential) -> i64 {
    cred.expires_at.expect("an expiry").as_second() - jiff::Timestamp::now().as_second()
}

#[tokio::test]
async fn a_token_of_the_templated_account_works_until_its_lease_deletes_it() {
    let (fake, url) = grafana().await;
    let c = creds();
    let g = generator(&url, token_auth(&c.admin), json!({}));
    let id = identity();

    let cred = g
        .generate(&ctx(&id, "payments/Grafana/dashboards"))
        .await
        .expect("minted");
    let token = cred.data["token"].clone();
    assert!(token.starts_with("glsa_"), "not a service-account token");
    assert_eq!(cred.data["url"], url);
    assert_eq!(cred.data["login"], "sa-1-esi-payments");
    assert_eq!(
        cred.data.keys().collect::<Vec<_>>(),
        ["login", "serviceAccountId", "token", "url"]
    );
    assert!((3590..=3600).contains(&lives(&cred)), "{}", lives(&cred));
    assert!(!cred.renewable);
    let shown = format!("{cred:?}");
    assert!(!shown.contains(&token), "the token in Debug: {shown}");
    let lease = cred.lease.clone().expect("revocable");
    assert!(
        !lease.0.to_string().contains(&token),
        "the token in the lease"
    );

    {
        let fake = fake.lock().expect("lock");
        // Created with the generator's role, not disabled.
        assert_eq!(
            fake.account_bodies,
            [json!({"name": "esi-payments", "role": "Viewer", "isDisabled": false})]
        );
        assert_eq!(
            cred.data["serviceAccountId"],
            fake.accounts[0].id.to_string()
        );
        let body = &fake.token_bodies[0];
        assert_eq!(body["secondsToLive"], 3600);
        let name = body["name"].as_str().expect("name");
        assert!(
            name.starts_with("esi/prod-eu/payments/api/api-7d9f/") && name.len() <= 190,
            "{name}"
        );
        // Every call carried the organization and the federation's token; the first mint on
        // the account swept it of expired tokens (none).
        assert_eq!(
            fake.calls,
            [
                "GET search org=1 auth=bearer",
                "POST serviceaccounts org=1 auth=bearer",
                "POST tokens org=1 auth=bearer",
                "GET tokens org=1 auth=bearer",
            ]
        );
    }
    assert_eq!(
        whoami(&url, &token).await,
        Ok("sa-1-esi-payments".to_owned())
    );

    // A second caller of the namespace gets its own token of the same account, found this time.
    let again = g.generate(&ctx(&id, "g")).await.expect("minted");
    assert_ne!(again.data["token"], token);
    assert_eq!(
        again.data["serviceAccountId"],
        cred.data["serviceAccountId"]
    );
    {
        let fake = fake.lock().expect("lock");
        assert_eq!(fake.accounts.len(), 1, "the account was created twice");
        assert_eq!(fake.tokens.len(), 2);
        assert_ne!(fake.tokens[0].name, fake.tokens[1].name);
    }

    assert!(g.revoke(&lease).await.expect("deleted"));
    assert_eq!(whoami(&url, &token).await, Err(401));
    // The other token lives on.
    assert!(whoami(&url, &again.data["token"]).await.is_ok());
    // Revoking again: Grafana's 404, nothing left to revoke, no error.
    assert!(!g.revoke(&lease).await.expect("idempotent"));
}

#[tokio::test]
async fn the_lifetime_is_lowered_to_max_ttl_and_never_zero() {
    let (fake, url) = grafana().await;
    let c = creds();
    let id = identity();
    let seconds = |fake: &Shared| {
        fake.lock()
            .expect("lock")
            .token_bodies
            .last()
            .expect("a mint")["secondsToLive"]
            .clone()
    };

    let g = generator(&url, token_auth(&c.admin), json!({}));
    let cred = g
        .generate(&ctx_with_max_ttl(&id, "g", Duration::from_secs(900)))
        .await
        .expect("minted");
    assert_eq!(seconds(&fake), 900);
    assert!((890..=900).contains(&lives(&cred)), "{}", lives(&cred));

    let short = generator(&url, token_auth(&c.admin), json!({"lifetime": "10m"}));
    short
        .generate(&ctx_with_max_ttl(&id, "g", Duration::from_secs(3600)))
        .await
        .expect("minted");
    assert_eq!(seconds(&fake), 600);
    // A fraction of a second is dropped, never rounded up past maxTTL.
    short
        .generate(&ctx_with_max_ttl(&id, "g", Duration::from_millis(90_500)))
        .await
        .expect("minted");
    assert_eq!(seconds(&fake), 90);

    // Under a second would be 0, Grafana's "never expires": nothing is asked of Grafana.
    let calls = fake.lock().expect("lock").calls.len();
    let e = g
        .generate(&ctx_with_max_ttl(&id, "g", Duration::from_millis(500)))
        .await
        .unwrap_err();
    assert!(matches!(e, BackendError::Rejected { .. }), "{e:?}");
    assert!(e.to_string().contains("nothing was minted"), "{e}");
    assert_eq!(
        fake.lock().expect("lock").calls.len(),
        calls,
        "Grafana was called"
    );

    // Grafana's own limit (api_key_max_seconds_to_live) refuses: the caller learns it was
    // refused, the log learns why.
    fake.lock().expect("lock").max_seconds_to_live = Some(1800);
    let e = g.generate(&ctx(&id, "g")).await.unwrap_err();
    assert!(matches!(e, BackendError::Rejected { .. }), "{e:?}");
    assert!(
        e.to_string().contains("Grafana refused the request (400)"),
        "{e}"
    );
    assert!(
        e.detail().contains("greater than the global limit"),
        "{}",
        e.detail()
    );
    g.generate(&ctx_with_max_ttl(&id, "g", Duration::from_secs(1800)))
        .await
        .expect("within Grafana's limit");
}

#[tokio::test]
async fn an_existing_account_is_used_as_it_is_or_refused_never_changed() {
    let (fake, url) = grafana().await;
    let c = creds();
    let id = identity();
    let (editor, disabled) = {
        let mut fake = fake.lock().expect("lock");
        // Accounts whose names contain the wanted one, listed before it (and over a page).
        for i in 0..120 {
            add_account(&mut fake, &format!("shared-{i}"), "Viewer", false);
        }
        let editor = add_account(&mut fake, "shared", "Editor", false);
        let disabled = add_account(&mut fake, "frozen", "Viewer", true);
        (editor, disabled)
    };

    // Found on the search's second page, exactly by name, with its role: used.
    let g = generator(
        &url,
        token_auth(&c.admin),
        json!({"serviceAccount": {"name": "shared", "role": "Editor"}}),
    );
    let cred = g.generate(&ctx(&id, "g")).await.expect("minted");
    assert_eq!(cred.data["serviceAccountId"], editor.to_string());
    assert_eq!(cred.data["login"], "sa-1-shared");
    assert!(fake.lock().expect("lock").account_bodies.is_empty());

    // Another role: refused, the account left as it is, no token.
    let tokens = fake.lock().expect("lock").tokens.len();
    let g = generator(
        &url,
        token_auth(&c.admin),
        json!({"serviceAccount": {"name": "shared", "role": "Viewer"}}),
    );
    let e = g.generate(&ctx(&id, "g")).await.unwrap_err();
    assert!(matches!(e, BackendError::Rejected { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains(r#"has role "Editor", the generator asks for Viewer"#),
        "{e}"
    );
    {
        let fake = fake.lock().expect("lock");
        assert_eq!(fake.tokens.len(), tokens);
        let a = fake.accounts.iter().find(|a| a.id == editor).expect("kept");
        assert_eq!(a.role, "Editor");
    }

    // Disabled: refused.
    let g = generator(
        &url,
        token_auth(&c.admin),
        json!({"serviceAccount": {"name": "frozen", "role": "Viewer"}}),
    );
    let e = g.generate(&ctx(&id, "g")).await.unwrap_err();
    assert!(e.to_string().contains("is disabled"), "{e}");
    assert!(e.detail().contains(&disabled.to_string()), "{}", e.detail());

    // `None` (no basic role) is a role like the others.
    let g = generator(
        &url,
        token_auth(&c.admin),
        json!({"serviceAccount": {"name": "esi-{{namespace}}-none", "role": "None"}}),
    );
    g.generate(&ctx(&id, "g")).await.expect("minted");
    assert_eq!(
        fake.lock().expect("lock").account_bodies,
        [json!({"name": "esi-payments-none", "role": "None", "isDisabled": false})]
    );
}

#[tokio::test]
async fn a_concurrent_creation_is_read_back_and_a_login_collision_refused() {
    let (fake, url) = grafana().await;
    let c = creds();
    let id = identity();
    {
        let mut fake = fake.lock().expect("lock");
        add_account(&mut fake, "esi-payments", "Viewer", false);
        // Another federation replica created it between our search and our creation.
        fake.hide_next_search = true;
    }
    let g = generator(&url, token_auth(&c.admin), json!({}));
    let cred = g.generate(&ctx(&id, "g")).await.expect("minted");
    assert_eq!(cred.data["login"], "sa-1-esi-payments");
    assert_eq!(fake.lock().expect("lock").accounts.len(), 1);

    // "ESI-Payments" would get the login of "esi-payments": Grafana refuses, and no account of
    // that exact name exists to fall back on.
    let g = generator(
        &url,
        token_auth(&c.admin),
        json!({"serviceAccount": {"name": "ESI-Payments", "role": "Viewer"}}),
    );
    let e = g.generate(&ctx(&id, "g")).await.unwrap_err();
    assert!(matches!(e, BackendError::Rejected { .. }), "{e:?}");
    assert!(e.to_string().contains("collides"), "{e}");
}

#[tokio::test]
async fn basic_auth_works_and_the_federations_credential_problems_are_unavailable() {
    let (fake, url) = grafana().await;
    let c = creds();
    let id = identity();
    let secrets = [ADMIN_TOKEN, VIEWER_TOKEN, ADMIN_PASSWORD, "glsa_"];
    let check = |e: &BackendError| {
        let all = format!("{e} {} {e:?}", e.detail());
        for s in secrets {
            assert!(!all.contains(s), "{s} in {all}");
        }
    };

    let basic = json!({"basic": {"username": ADMIN_USER, "password": {"file": c.password}}});
    let g = generator(&url, basic, json!({}));
    g.generate(&ctx(&id, "g"))
        .await
        .expect("minted with basic auth");
    assert!(
        fake.lock()
            .expect("lock")
            .calls
            .iter()
            .all(|c| c.ends_with("auth=basic")),
        "{:?}",
        fake.lock().expect("lock").calls
    );

    // A wrong password: Grafana's 401, the federation's configuration.
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = dir.path().join("pw");
    std::fs::write(&wrong, "not-the-password").expect("write");
    let g = generator(
        &url,
        json!({"basic": {"username": ADMIN_USER, "password": {"file": wrong}}}),
        json!({}),
    );
    let e = g.generate(&ctx(&id, "g")).await.unwrap_err();
    assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("refused the federation's credentials"),
        "{e}"
    );
    check(&e);
    // The file is read on every call: the right password needs no rebuild.
    std::fs::write(&wrong, ADMIN_PASSWORD).expect("write");
    g.generate(&ctx(&id, "g")).await.expect("minted");

    // A token without the service-account permissions: Grafana's 403, also the federation's,
    // but a permission only the operator can grant: rejected, the caller fails at once.
    let g = generator(&url, token_auth(&c.viewer), json!({}));
    let e = g.generate(&ctx(&id, "g")).await.unwrap_err();
    assert!(matches!(e, BackendError::Rejected { .. }), "{e:?}");
    assert!(
        e.to_string().contains("may not be used for searching"),
        "{e}"
    );
    assert!(
        e.detail().contains("serviceaccounts:read"),
        "{}",
        e.detail()
    );
    check(&e);

    // An organization the credential is not in.
    let g = generator_in(&url, token_auth(&c.admin), Some(7), json!({}));
    let e = g.generate(&ctx(&id, "g")).await.unwrap_err();
    assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
    check(&e);

    // A credential file gone: named, unavailable, nothing sent.
    let calls = fake.lock().expect("lock").calls.len();
    let g = generator(&url, token_auth(&dir.path().join("missing")), json!({}));
    let e = g.generate(&ctx(&id, "g")).await.unwrap_err();
    assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
    assert!(e.detail().contains("missing"), "{}", e.detail());
    assert_eq!(fake.lock().expect("lock").calls.len(), calls);

    // A token that cannot be a header value: refused before sending, its text not shown.
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "glsa_SECRETMARK\u{7f}x").expect("write");
    let g = generator(&url, token_auth(&bad), json!({}));
    let e = g.generate(&ctx(&id, "g")).await.unwrap_err();
    assert!(
        e.detail().contains("not a valid header value"),
        "{}",
        e.detail()
    );
    assert!(!format!("{e} {}", e.detail()).contains("SECRETMARK"), "{e}");

    // Without orgId, no header is sent: the credential's own organization.
    let g = generator_in(&url, token_auth(&c.admin), None, json!({}));
    g.generate(&ctx(&id, "g")).await.expect("minted");
    let calls = fake.lock().expect("lock").calls.clone();
    assert!(calls.last().expect("a call").contains("org=-"), "{calls:?}");
}

#[tokio::test]
async fn a_name_rendered_for_this_caller_is_checked_before_grafana_is_called() {
    let (fake, url) = grafana().await;
    let c = creds();
    let mut id = identity();
    id.pod = None;
    let g = generator(
        &url,
        token_auth(&c.admin),
        json!({"serviceAccount": {"name": "{{pod}}", "role": "Viewer"}}),
    );
    let e = g.generate(&ctx(&id, "g")).await.unwrap_err();
    assert!(matches!(e, BackendError::Rejected { .. }), "{e:?}");
    assert!(e.to_string().contains("not a service-account name"), "{e}");

    id.cluster = "x".repeat(200);
    let g = generator(
        &url,
        token_auth(&c.admin),
        json!({"serviceAccount": {"name": "esi-{{cluster}}", "role": "Viewer"}}),
    );
    let e = g.generate(&ctx(&id, "g")).await.unwrap_err();
    assert!(e.to_string().contains("at most 160"), "{e}");
    assert!(
        fake.lock().expect("lock").calls.is_empty(),
        "Grafana was called"
    );
}

#[tokio::test]
async fn a_token_in_an_answer_that_cannot_be_used_is_deleted() {
    for garble in [Garble::NoKey, Garble::ControlKey] {
        let (fake, url) = grafana().await;
        let c = creds();
        fake.lock().expect("lock").garble = Some(garble);
        let g = generator(&url, token_auth(&c.admin), json!({}));
        let e = g.generate(&ctx(&identity(), "g")).await.unwrap_err();
        assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
        assert!(e.to_string().contains("could not be read"), "{e}");
        assert!(!format!("{e} {}", e.detail()).contains("glsa_"), "{e:?}");
        let fake = fake.lock().expect("lock");
        assert_eq!(fake.token_bodies.len(), 1, "no token was minted");
        assert!(fake.tokens.is_empty(), "the minted token is still live");
    }
}

#[tokio::test]
async fn a_search_answer_that_is_not_grafanas_is_a_clear_error() {
    let (fake, url) = grafana().await;
    let c = creds();
    fake.lock().expect("lock").search_garbage = true;
    let g = generator(&url, token_auth(&c.admin), json!({}));
    let e = g.generate(&ctx(&identity(), "g")).await.unwrap_err();
    assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
    assert!(e.to_string().contains("could not be read"), "{e}");
    assert!(e.detail().contains("search answer"), "{}", e.detail());
    assert!(fake.lock().expect("lock").account_bodies.is_empty());
}

#[tokio::test]
async fn revoking_checks_the_lease_and_its_organization() {
    let (fake, url) = grafana().await;
    let c = creds();
    let g = generator(&url, token_auth(&c.admin), json!({}));
    let cred = g.generate(&ctx(&identity(), "g")).await.expect("minted");
    let lease = cred.lease.expect("revocable");

    for bad in [
        json!({"lease": "x"}),
        json!({"serviceAccountId": 0, "tokenId": 3}),
        json!(null),
    ] {
        let e = g.revoke(&LeaseHandle(bad.clone())).await.unwrap_err();
        assert!(
            e.to_string().contains("names no Grafana token"),
            "{bad}: {e}"
        );
    }

    // The store now names another organization: the token is not looked for there (Grafana
    // would answer 404 and it would read as gone), the caller is told.
    let elsewhere = generator_in(&url, token_auth(&c.admin), Some(2), json!({}));
    let e = elsewhere.revoke(&lease).await.unwrap_err();
    assert!(e.to_string().contains("another organization"), "{e}");
    assert!(whoami(&url, &cred.data["token"]).await.is_ok());

    // The account deleted in Grafana (its tokens with it): nothing left to revoke.
    fake.lock().expect("lock").accounts.clear();
    assert!(!g.revoke(&lease).await.expect("gone is fine"));

    // The federation's credential lacking the permission while revoking: Grafana's 403, a
    // refusal (never taken for "gone").
    let viewer = generator(&url, token_auth(&c.viewer), json!({}));
    let e = viewer.revoke(&lease).await.unwrap_err();
    assert!(matches!(e, BackendError::Rejected { .. }), "{e:?}");
    assert!(
        e.detail().contains("serviceaccounts:write"),
        "{}",
        e.detail()
    );
}

/// Puts a token on `account` that expired (or expires) `expires` from now, named `name`.
fn put_token(fake: &Shared, account: u64, name: &str, expires: i64) -> u64 {
    let mut fake = fake.lock().expect("lock");
    fake.next_id += 1;
    let id = fake.next_id;
    fake.tokens.push(Token {
        id,
        account,
        name: name.to_owned(),
        key: format!("glsa_put{id}_0000"),
        expires: jiff::Timestamp::now().as_second() + expires,
    });
    id
}

#[tokio::test]
async fn expired_tokens_esi_minted_are_swept_from_the_account_hourly_others_never() {
    let (fake, url) = grafana().await;
    let creds = creds();
    let g = generator(
        &url,
        token_auth(&creds.admin),
        json!({"serviceAccount": {"name": "esi-{{namespace}}", "role": "Viewer"}}),
    );
    let (mine, other) = {
        let mut f = fake.lock().expect("lock");
        (
            add_account(&mut f, "esi-payments", "Viewer", false),
            add_account(&mut f, "esi-other", "Viewer", false),
        )
    };
    // On the caller's account: esi's expired tokens (25, more than one sweep takes), one of
    // esi's still live, and an expired one someone else made; an expired esi token on another
    // account.
    let expired: Vec<u64> = (0..25)
        .map(|i| put_token(&fake, mine, &format!("esi/c/payments/api/{i:016x}"), -60))
        .collect();
    let live = put_token(&fake, mine, "esi/c/payments/api/live", 600);
    let theirs = put_token(&fake, mine, "deploy-bot", -60);
    let elsewhere = put_token(&fake, other, "esi/c/other/api/0", -60);
    let ids = |fake: &Shared| -> Vec<u64> {
        fake.lock()
            .expect("lock")
            .tokens
            .iter()
            .map(|t| t.id)
            .collect()
    };

    // The first mint sweeps twenty of the expired, the second the five left.
    let id = identity();
    let first = g
        .generate(&ctx(&id, "payments/Grafana/g"))
        .await
        .expect("a token");
    let left = ids(&fake);
    assert_eq!(
        expired.iter().filter(|id| left.contains(id)).count(),
        5,
        "{left:?}"
    );
    let second = g
        .generate(&ctx(&id, "payments/Grafana/g"))
        .await
        .expect("a token");
    let left = ids(&fake);
    assert!(expired.iter().all(|id| !left.contains(id)), "{left:?}");
    for kept in [live, theirs, elsewhere] {
        assert!(left.contains(&kept), "token {kept} was deleted");
    }
    // The minted tokens are live and kept.
    for cred in [&first, &second] {
        assert!(whoami(&url, &cred.data["token"]).await.is_ok());
    }

    // Swept clean: no list again within the hour.
    put_token(&fake, mine, "esi/c/payments/api/late", -60);
    let calls = fake.lock().expect("lock").calls.len();
    g.generate(&ctx(&id, "payments/Grafana/g"))
        .await
        .expect("a token");
    let after: Vec<String> = fake.lock().expect("lock").calls[calls..].to_vec();
    assert!(
        !after.iter().any(|c| c.starts_with("GET tokens")),
        "{after:?}"
    );
}

#[tokio::test]
async fn a_login_check_names_the_organization_the_credential_is_for() {
    let (_fake, url) = grafana().await;
    let c = creds();
    let check = |auth: Value| {
        let store = esi_backends::SecretStoreSpec::from_manifest(json!({"provider": {"grafana": {
            "url": url, "orgId": ORG, "auth": auth, "timeout": "5s",
        }}}))
        .expect("store");
        async move { store.check_login(None).await }
    };
    match check(json!({"token": {"file": c.admin}})).await {
        esi_backends::LoginCheck::LoggedIn(who) => {
            assert_eq!(who, format!("organization \"Main Org.\" (id {ORG})"));
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(&c.admin, "glsa_notATokenGrafanaKnows_00000000_00000000").expect("write");
    match check(json!({"token": {"file": c.admin}})).await {
        esi_backends::LoginCheck::Failed(BackendError::Unavailable { message, .. }) => {
            assert_eq!(message, "Grafana refused the federation's credentials");
        }
        other => panic!("{other:?}"),
    }
}
