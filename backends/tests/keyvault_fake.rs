//! `AzureKeyVaultSecret` against a FAKE of Microsoft Entra ID's token endpoint
//! (`common/entra.rs`, shared with `acr_fake.rs`) and of Azure Key Vault's get-secret route,
//! each served on loopback by this test (Azure has no emulator) and reached through the store's
//! `authorityHost` and `keyVaultEndpoint`. The vault implements exactly the call the generator
//! makes, as Microsoft documents it, and answers the way Key Vault does:
//!
//! - `GET /secrets/{name}[/{version}]?api-version=...` with a bearer token Entra ID issued for
//!   Key Vault's audience (a token of another audience, or none: 401 `Unauthorized`, `AKV...`);
//! - a secret bundle `{"value", "id", "contentType", "attributes": {"enabled", "nbf", "exp",
//!   "created", "updated", "recoveryLevel", ...}, "tags"}`; names match case-insensitively and
//!   without a version the latest is returned; an expired or not-yet-valid secret is returned
//!   (Key Vault does not enforce `exp`/`nbf` on reads), a disabled one refused with 403
//!   `Forbidden`/`SecretDisabled`;
//! - refusals as `{"error": {"code", "message", "innererror"}}`: 404 `SecretNotFound`, 403
//!   `Forbidden`/`ForbiddenByRbac` for an identity without a role on the vault, 400
//!   `BadParameter` without an api-version.
//!
//! With the `acr` feature, a minimal ACR `POST /oauth2/exchange` shows an `ACRAccessToken` on
//! the same store sharing its connection while each service gets a token of its own audience.

#![cfg(feature = "keyvault")]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get as get_route;
use axum::{Json, Router};
use esi_backends::{BackendError, Generate, Generator};
use serde_json::{Value, json};

use common::entra::{self, CLIENT, CLIENT_SECRET, Entra, HasEntra, TENANT};
use common::{build, ctx, identity};

const VAULT_HOST: &str = "myvault.vault.azure.net";
const KV_SCOPE: &str = "https://vault.azure.net/.default";
const GOV_KV_SCOPE: &str = "https://vault.usgovcloudapi.net/.default";
const ACR_SCOPE: &str = "https://containerregistry.azure.net/.default";
const API_VERSION: &str = "2025-07-01";
const DB_V1: &str = r#"{"username": "payments", "password": "s3cr3t-old-V1", "port": 5432}"#;
const DB_V2: &str = r#"{"username": "payments", "password": "s3cr3t-new-V2", "port": 5432}"#;
const V1: &str = "4387e9f3d6e14c459867679a90fd0f79";
const V2: &str = "b2f1c7d0e6a5493f8c1d2e3f4a5b6c7d";

/// One version of a secret.
#[derive(Clone)]
struct Version {
    id: String,
    value: String,
    content_type: Option<&'static str>,
    enabled: bool,
    nbf: Option<i64>,
    exp: Option<i64>,
}

fn version(id: &str, value: &str) -> Version {
    Version {
        id: id.to_owned(),
        value: value.to_owned(),
        content_type: None,
        enabled: true,
        nbf: None,
        exp: None,
    }
}

/// One request the vault saw.
struct Seen {
    path: String,
    api_version: Option<String>,
    bearer: Option<String>,
}

struct Fake {
    entra: Entra,
    /// The audience (scope) of the tokens the vault takes.
    vault_scope: &'static str,
    /// Secrets by lowercase name, oldest version first.
    secrets: HashMap<String, Vec<Version>>,
    /// Whether the federation's identity has no role on the vault.
    denied: bool,
    /// An answer replacing the real one (status, body), for hostile-answer tests.
    answer: Option<(u16, Vec<u8>)>,
    requests: Vec<Seen>,
    /// Entra ID tokens ACR's exchange was shown.
    #[cfg_attr(not(feature = "acr"), allow(dead_code))]
    acr_tokens: Vec<String>,
}

impl HasEntra for Fake {
    fn entra(&mut self) -> &mut Entra {
        &mut self.entra
    }
}

type SharedFake = Arc<Mutex<Fake>>;

fn kv_error(status: StatusCode, code: &str, inner: Option<&str>, message: &str) -> Response {
    let mut error = json!({"code": code, "message": message});
    if let Some(inner) = inner {
        error["innererror"] = json!({"code": inner});
    }
    let mut resp = (status, Json(json!({"error": error}))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            "www-authenticate",
            format!(
                "Bearer authorization=\"https://login.microsoftonline.com/{TENANT}\", resource=\"https://vault.azure.net\""
            )
            .parse()
            .expect("header"),
        );
    }
    resp
}

/// Key Vault's `GET /secrets/{name}[/{version}]`.
async fn get_secret(
    State(fake): State<SharedFake>,
    Path(path): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut fake = fake.lock().expect("lock");
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let path: Vec<&str> = path.split('/').collect();
    fake.requests.push(Seen {
        path: format!("/secrets/{}", path.join("/")),
        api_version: query.get("api-version").cloned(),
        bearer: bearer.clone(),
    });
    if let Some((status, body)) = fake.answer.clone() {
        return entra::raw(status, body);
    }
    if query.get("api-version").map(String::as_str) != Some(API_VERSION) {
        return kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            None,
            "The request URI contains an invalid or missing api-version.",
        );
    }
    let Some(bearer) = bearer else {
        return kv_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            None,
            "AKV10000: Request is missing a Bearer or PoP token.",
        );
    };
    match fake.entra.tokens.get(&bearer) {
        None => {
            return kv_error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                None,
                "AKV10032: Invalid issuer or token.",
            );
        }
        Some(scope) if scope != fake.vault_scope => {
            let message = format!(
                "AKV10022: Invalid audience. Expected {}, found: {}.",
                fake.vault_scope.trim_end_matches("/.default"),
                scope.trim_end_matches("/.default")
            );
            return kv_error(StatusCode::UNAUTHORIZED, "Unauthorized", None, &message);
        }
        Some(_) => {}
    }
    if fake.denied {
        return kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            Some("ForbiddenByRbac"),
            &format!(
                "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid={CLIENT};oid=0b6f;iss=https://sts.windows.net/{TENANT}/\r\nAction: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'\r\nResource: '/subscriptions/x/resourcegroups/rg/providers/microsoft.keyvault/vaults/myvault/secrets/{}'\r\nAssignment: (not found)\r\nVault: myvault;location=westeurope\r\n",
                path[0]
            ),
        );
    }
    let (name, wanted) = match &path[..] {
        [name] => (name, None),
        [name, v] => (name, Some(*v)),
        _ => {
            return kv_error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                None,
                "The request URI is not valid.",
            );
        }
    };
    let not_found = || {
        kv_error(
            StatusCode::NOT_FOUND,
            "SecretNotFound",
            None,
            &format!(
                "A secret with (name/id) {} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182",
                path.join("/")
            ),
        )
    };
    let Some(versions) = fake.secrets.get(&name.to_ascii_lowercase()) else {
        return not_found();
    };
    let found = match wanted {
        None => versions.last(),
        Some(v) => versions.iter().find(|x| x.id == v),
    };
    let Some(v) = found else {
        return not_found();
    };
    if !v.enabled {
        return kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            Some("SecretDisabled"),
            "Operation get is not allowed on a disabled secret.",
        );
    }
    let now = jiff::Timestamp::now().as_second();
    let mut attributes = json!({
        "enabled": true,
        "created": now - 86_400,
        "updated": now - 3_600,
        "recoveryLevel": "Recoverable+Purgeable",
        "recoverableDays": 90,
    });
    if let Some(nbf) = v.nbf {
        attributes["nbf"] = json!(nbf);
    }
    if let Some(exp) = v.exp {
        attributes["exp"] = json!(exp);
    }
    let mut bundle = json!({
        "value": v.value,
        "id": format!("https://{VAULT_HOST}/secrets/{name}/{}", v.id),
        "attributes": attributes,
        "tags": {"owner": "payments"},
    });
    if let Some(ct) = v.content_type {
        bundle["contentType"] = json!(ct);
    }
    Json(bundle).into_response()
}

/// A minimal ACR `POST /oauth2/exchange`: an Entra ID token of ACR's audience becomes a
/// refresh token (a JWT living 3 h).
#[cfg(feature = "acr")]
async fn acr_exchange(
    State(fake): State<SharedFake>,
    axum::Form(form): axum::Form<entra::Pairs>,
) -> Response {
    let mut fake = fake.lock().expect("lock");
    let token = entra::get(&form, "access_token")
        .unwrap_or_default()
        .to_owned();
    fake.acr_tokens.push(token.clone());
    if !fake.entra.issued_for(&token, ACR_SCOPE) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(
                json!({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}),
            ),
        )
            .into_response();
    }
    let exp = jiff::Timestamp::now().as_second() + 3 * 3600;
    let jwt = format!(
        "{}.{}.c2ln",
        common::b64url(br#"{"alg":"RS256","typ":"JWT"}"#),
        common::b64url(
            json!({"exp": exp, "grant_type": "refresh_token"})
                .to_string()
                .as_bytes()
        )
    );
    Json(json!({"refresh_token": jwt})).into_response()
}

/// Entra ID and the vault (and ACR), on separate ports as they are separate hosts; their base
/// URLs.
async fn azure(secrets: &[(&str, Vec<Version>)]) -> (SharedFake, String, String) {
    let fake = Arc::new(Mutex::new(Fake {
        entra: Entra::new(&[KV_SCOPE, GOV_KV_SCOPE, ACR_SCOPE]),
        vault_scope: KV_SCOPE,
        secrets: secrets
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .collect(),
        denied: false,
        answer: None,
        requests: Vec::new(),
        acr_tokens: Vec::new(),
    }));
    let aad = common::serve_local(entra::route(fake.clone())).await;
    let vault = Router::new().route("/secrets/{*path}", get_route(get_secret));
    #[cfg(feature = "acr")]
    let vault = vault.route("/oauth2/exchange", axum::routing::post(acr_exchange));
    let vault = common::serve_local(vault.with_state(fake.clone())).await;
    (fake, aad, vault)
}

/// The `azure` store of these tests: the client secret in a file of `dir`, the fakes' URLs.
fn store(dir: &tempfile::TempDir, aad: &str, vault: &str) -> Value {
    let file = dir.path().join("client-secret");
    std::fs::write(&file, format!("{CLIENT_SECRET}\n")).expect("write secret");
    json!({"provider": {"azure": {
        "tenantId": TENANT,
        "clientId": CLIENT,
        "clientSecret": {"file": file},
        "authorityHost": format!("{aad}/"),
        "keyVaultEndpoint": vault,
        "acrEndpoint": vault,
        "timeout": "5s",
    }}})
}

fn generator(store: Value, extra: Value) -> Generator {
    let mut spec = json!({
        "secretStoreRef": {"name": "azure"},
        "vault": "myvault",
        "name": "{{namespace}}-db",
    });
    for (k, v) in extra.as_object().expect("object") {
        spec[k] = v.clone();
    }
    build("AzureKeyVaultSecret", spec, Some(store))
}

/// Everything an error shows: its text, its log detail, its `Debug`.
fn shown(e: &BackendError) -> String {
    format!("{e} / {} / {e:?}", e.detail())
}

#[tokio::test]
async fn each_namespace_reads_its_own_secret_latest_or_pinned() {
    let (fake, aad, vault) = azure(&[
        ("payments-db", vec![version(V1, DB_V1), version(V2, DB_V2)]),
        (
            "billing-db",
            vec![version(
                V1,
                r#"{"username": "billing", "password": "b1ll"}"#,
            )],
        ),
    ])
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir, &aad, &vault);
    let g = generator(store.clone(), json!({}));
    let id = identity();

    let cred = g
        .generate(&ctx(&id, "payments/AzureKeyVaultSecret/db"))
        .await
        .expect("read");
    assert_eq!(cred.data["username"], "payments");
    assert_eq!(cred.data["password"], "s3cr3t-new-V2", "not the latest");
    assert_eq!(cred.data["port"], "5432", "a number as JSON text");
    assert_eq!(cred.data.len(), 3);
    assert!(cred.lease.is_none() && !cred.renewable);
    assert_eq!(cred.expires_at, None, "no exp, no expiry");
    assert!(!format!("{cred:?}").contains("s3cr3t"), "a value in Debug");
    {
        let fake = fake.lock().expect("lock");
        let seen = &fake.requests[0];
        assert_eq!(seen.path, "/secrets/payments-db");
        assert_eq!(seen.api_version.as_deref(), Some(API_VERSION));
        let bearer = seen.bearer.as_deref().expect("a bearer token");
        assert!(
            fake.entra.issued_for(bearer, KV_SCOPE),
            "not a Key Vault token"
        );
        let form = &fake.entra.forms[0];
        assert_eq!(entra::get(form, "grant_type"), Some("client_credentials"));
        assert_eq!(entra::get(form, "client_id"), Some(CLIENT));
        assert_eq!(entra::get(form, "scope"), Some(KV_SCOPE));
        assert_eq!(entra::get(form, "client_secret"), Some(CLIENT_SECRET));
    }

    // Another namespace, another secret, the same Entra ID token.
    let mut billing = identity();
    billing.namespace = "billing".into();
    let cred = g.generate(&ctx(&billing, "g")).await.expect("read");
    assert_eq!(cred.data["username"], "billing");
    assert_eq!(
        fake.lock().expect("lock").entra.forms.len(),
        1,
        "the Entra ID token was not reused"
    );

    // A pinned version.
    let pinned = generator(store, json!({"version": V1}));
    let cred = pinned.generate(&ctx(&id, "g")).await.expect("read");
    assert_eq!(cred.data["password"], "s3cr3t-old-V1");
    let fake = fake.lock().expect("lock");
    assert_eq!(fake.requests[1].path, "/secrets/billing-db");
    assert_eq!(fake.requests[2].path, format!("/secrets/payments-db/{V1}"));
}

#[tokio::test]
async fn keys_narrow_a_json_secret_and_text_is_returned_whole() {
    let text = Version {
        content_type: Some("text/plain"),
        ..version(
            V1,
            "-----BEGIN PRIVATE KEY-----\nMIIBVQ\n-----END PRIVATE KEY-----\n",
        )
    };
    let (_fake, aad, vault) = azure(&[
        ("payments-db", vec![version(V1, DB_V1)]),
        ("payments-tls", vec![text.clone()]),
    ])
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir, &aad, &vault);
    let id = identity();
    let c = ctx(&id, "g");

    let g = generator(store.clone(), json!({"keys": ["password"]}));
    let cred = g.generate(&c).await.expect("read");
    assert_eq!(
        cred.data.into_iter().collect::<Vec<_>>(),
        [("password".to_owned(), "s3cr3t-old-V1".to_owned())]
    );

    // A key the secret lacks: refused, naming the key and nothing of the secret.
    let g = generator(store.clone(), json!({"keys": ["password", "host"]}));
    let e = g.generate(&c).await.unwrap_err();
    assert!(matches!(e, BackendError::Rejected { .. }), "{e:?}");
    assert!(e.to_string().contains(r#"no key "host""#), "{e}");
    assert!(!shown(&e).contains("s3cr3t"), "{}", shown(&e));

    // Text: under `value`, or the key asked for; keys cannot select from it.
    let g = generator(store.clone(), json!({"name": "{{namespace}}-tls"}));
    let cred = g.generate(&c).await.expect("read");
    assert_eq!(cred.data.len(), 1);
    assert_eq!(cred.data["value"], text.value);
    let g = generator(
        store.clone(),
        json!({"name": "{{namespace}}-tls", "key": "tls.key"}),
    );
    assert_eq!(
        g.generate(&c).await.expect("read").data["tls.key"],
        text.value
    );
    let g = generator(store, json!({"name": "{{namespace}}-tls", "keys": ["key"]}));
    let e = g.generate(&c).await.unwrap_err();
    assert!(e.to_string().contains("not a JSON object"), "{e}");
    assert!(!shown(&e).contains("PRIVATE KEY"), "{}", shown(&e));
}

#[tokio::test]
async fn disabled_expired_and_not_yet_valid_secrets_are_refused_and_exp_is_passed_on() {
    let now = jiff::Timestamp::now().as_second();
    let (_fake, aad, vault) = azure(&[
        (
            "payments-disabled",
            vec![Version {
                enabled: false,
                ..version(V1, "s3cr3t-disabled")
            }],
        ),
        (
            "payments-expired",
            vec![Version {
                exp: Some(now - 60),
                ..version(V1, "s3cr3t-expired")
            }],
        ),
        (
            "payments-early",
            vec![Version {
                nbf: Some(now + 3600),
                ..version(V1, "s3cr3t-early")
            }],
        ),
        (
            "payments-expiring",
            vec![Version {
                nbf: Some(now - 60),
                exp: Some(now + 7 * 86_400),
                ..version(V1, "s3cr3t-expiring")
            }],
        ),
    ])
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir, &aad, &vault);
    let id = identity();
    let c = ctx(&id, "g");
    let named = |suffix: &str| {
        generator(
            store.clone(),
            json!({"name": format!("{{{{namespace}}}}-{suffix}")}),
        )
    };

    for (suffix, says) in [
        ("disabled", "is disabled"),
        ("expired", "expired at"),
        ("early", "not valid before"),
    ] {
        let e = named(suffix).generate(&c).await.unwrap_err();
        assert!(
            matches!(e, BackendError::Rejected { .. }),
            "{suffix}: {e:?}"
        );
        assert!(e.to_string().contains(says), "{suffix}: {e}");
        assert!(!shown(&e).contains("s3cr3t"), "{suffix}: {}", shown(&e));
    }

    let cred = named("expiring").generate(&c).await.expect("read");
    assert_eq!(cred.data["value"], "s3cr3t-expiring");
    assert_eq!(
        cred.expires_at.map(|t| t.as_second()),
        Some(now + 7 * 86_400),
        "exp is the credential's expiresAt"
    );
    assert!(cred.lease.is_none());
}

#[tokio::test]
async fn refusals_are_classified_and_a_refused_token_is_fetched_again_once() {
    let (fake, aad, vault) = azure(&[("payments-db", vec![version(V1, DB_V1)])]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir, &aad, &vault);
    let id = identity();
    let c = ctx(&id, "g");

    // No such secret, no such version: the caller's request, Key Vault's words in the log.
    for extra in [
        json!({"name": "{{namespace}}-nope"}),
        json!({"version": V2}),
    ] {
        let e = generator(store.clone(), extra.clone())
            .generate(&c)
            .await
            .unwrap_err();
        assert!(matches!(e, BackendError::Rejected { .. }), "{extra}: {e:?}");
        assert!(e.to_string().contains("no such secret"), "{e}");
        assert!(e.detail().contains("SecretNotFound"), "{}", e.detail());
        assert!(!e.to_string().contains("payments-"), "the name in {e}");
    }

    let g = generator(store.clone(), json!({}));
    let asked = fake.lock().expect("lock").entra.forms.len();
    g.generate(&c).await.expect("read");
    g.generate(&c).await.expect("read with the cached token");
    assert_eq!(fake.lock().expect("lock").entra.forms.len(), asked + 1);

    // Key Vault stops taking the cached token (revoked, roles changed): it is dropped and one
    // fresh token tried.
    fake.lock().expect("lock").entra.tokens.clear();
    g.generate(&c).await.expect("read with a fresh token");
    {
        let fake = fake.lock().expect("lock");
        assert_eq!(fake.entra.forms.len(), asked + 2);
        let n = fake.requests.len();
        assert_ne!(fake.requests[n - 1].bearer, fake.requests[n - 2].bearer);
    }

    // Key Vault refuses every token: one retry, then the federation's setup, said so.
    let before = {
        let mut fake = fake.lock().expect("lock");
        fake.answer = Some((
            401,
            br#"{"error":{"code":"Unauthorized","message":"AKV10032: Invalid issuer."}}"#.to_vec(),
        ));
        (fake.requests.len(), fake.entra.forms.len())
    };
    let e = g.generate(&c).await.unwrap_err();
    assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("refused the federation's Azure identity"),
        "{e}"
    );
    assert!(e.detail().contains("AKV10032"), "{}", e.detail());
    assert!(!e.to_string().contains("AKV"), "Key Vault's words: {e}");
    {
        let mut fake = fake.lock().expect("lock");
        assert_eq!(fake.requests.len(), before.0 + 2, "not exactly one retry");
        assert_eq!(fake.entra.forms.len(), before.1 + 1);
        fake.answer = None;
    }

    // No role on the vault: the federation's, not the caller's, and only the operator can
    // grant it (rejected: the caller fails at once).
    fake.lock().expect("lock").denied = true;
    let e = g.generate(&c).await.unwrap_err();
    assert!(matches!(e, BackendError::Rejected { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("denied the federation's Azure identity"),
        "{e}"
    );
    assert!(e.detail().contains("ForbiddenByRbac"), "{}", e.detail());
    fake.lock().expect("lock").denied = false;

    // Throttled, or down: unavailable.
    for (status, body) in [
        (
            429,
            br#"{"error":{"code":"Throttled","message":"Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached"}}"#.to_vec(),
        ),
        (503, b"<html>Service Unavailable</html>".to_vec()),
    ] {
        fake.lock().expect("lock").answer = Some((status, body));
        let e = g.generate(&c).await.unwrap_err();
        assert!(matches!(e, BackendError::Unavailable { .. }), "{status}: {e:?}");
        assert!(e.to_string().contains(&status.to_string()), "{e}");
        assert!(!shown(&e).contains(CLIENT_SECRET), "{}", shown(&e));
        assert!(!shown(&e).contains("aad-"), "a token in {}", shown(&e));
    }
}

#[tokio::test]
async fn a_caller_whose_identity_makes_no_secret_name_is_refused_before_azure_is_asked() {
    let (fake, aad, vault) = azure(&[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let g = generator(store(&dir, &aad, &vault), json!({"name": "{{cluster}}-db"}));
    let mut odd = identity();
    odd.cluster = "prod.eu".into();
    let e = g.generate(&ctx(&odd, "g")).await.unwrap_err();
    assert!(matches!(e, BackendError::Rejected { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("not make a valid Key Vault secret name"),
        "{e}"
    );
    let fake = fake.lock().expect("lock");
    assert!(fake.entra.forms.is_empty() && fake.requests.is_empty());
}

#[tokio::test]
async fn a_sovereign_cloud_vault_gets_a_token_of_its_own_audience() {
    let (fake, aad, vault) = azure(&[("payments-db", vec![version(V1, DB_V1)])]).await;
    fake.lock().expect("lock").vault_scope = GOV_KV_SCOPE;
    let dir = tempfile::tempdir().expect("tempdir");
    let g = generator(
        store(&dir, &aad, &vault),
        json!({"vault": "https://myvault.vault.usgovcloudapi.net/"}),
    );
    let id = identity();
    g.generate(&ctx(&id, "g")).await.expect("read");
    let fake = fake.lock().expect("lock");
    assert_eq!(
        entra::get(&fake.entra.forms[0], "scope"),
        Some(GOV_KV_SCOPE)
    );
}

#[tokio::test]
async fn unreadable_answers_are_clear_errors_that_echo_nothing() {
    let (fake, aad, vault) = azure(&[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let g = generator(store(&dir, &aad, &vault), json!({}));
    let id = identity();
    let c = ctx(&id, "g");
    let now = jiff::Timestamp::now().as_second();
    for (answer, unavailable, says) in [
        (
            json!({"value": 12345678, "attributes": {}}).to_string(),
            true,
            "could not be read",
        ),
        (
            json!({"id": "x", "attributes": {"enabled": true}}).to_string(),
            true,
            "could not be read",
        ),
        ("<html>s3cr3t</html>".to_owned(), true, "could not be read"),
        (
            json!({"value": "s3cr3t", "attributes": {"enabled": false}}).to_string(),
            false,
            "is disabled",
        ),
        (
            json!({"value": "s3cr3t", "attributes": {"exp": i64::MAX}}).to_string(),
            true,
            "could not be read",
        ),
        (
            json!({"value": "s3cr3t", "attributes": {"enabled": true, "exp": now - 1}}).to_string(),
            false,
            "expired",
        ),
    ] {
        fake.lock().expect("lock").answer = Some((200, answer.clone().into_bytes()));
        let e = g.generate(&c).await.unwrap_err();
        assert_eq!(
            matches!(e, BackendError::Unavailable { .. }),
            unavailable,
            "{answer}: {e:?}"
        );
        assert!(e.to_string().contains(says), "{answer}: {e}");
        let all = shown(&e);
        assert!(
            !all.contains("s3cr3t") && !all.contains("12345678"),
            "{all}"
        );
    }
    fake.lock().expect("lock").answer = Some((200, vec![b' '; 2 << 20]));
    let e = g.generate(&c).await.unwrap_err();
    assert!(e.to_string().contains("oversized"), "{e}");
}

#[tokio::test]
async fn an_unreachable_vault_is_unavailable() {
    let (_fake, aad, _vault) = azure(&[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let g = generator(store(&dir, &aad, &closed), json!({}));
    let id = identity();
    let e = g.generate(&ctx(&id, "g")).await.unwrap_err();
    assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
    assert!(e.to_string().contains("could not be reached"), "{e}");
}

/// One store, two services: the connection (and its client secret read, its HTTP client) is
/// shared, but each service's token is cached under its own scope and shown only to it.
#[cfg(feature = "acr")]
#[tokio::test]
async fn an_acr_generator_on_the_same_store_shares_it_but_not_its_token() {
    use esi_backends::{GeneratorKind, GeneratorSpec, SecretStoreSpec, Shared};
    let (fake, aad, vault) = azure(&[("payments-db", vec![version(V1, DB_V1)])]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SecretStoreSpec::from_manifest(store(&dir, &aad, &vault)).expect("valid store");
    let mut shared = Shared::default();
    let mut build = |kind, spec: Value| {
        let spec = GeneratorSpec::from_manifest(kind, spec).expect("valid spec");
        Generator::build_shared(&spec, Some(&store), &mut shared).expect("builds")
    };
    let kv = build(
        GeneratorKind::AzureKeyVaultSecret,
        json!({"secretStoreRef": {"name": "azure"}, "vault": "myvault", "name": "{{namespace}}-db"}),
    );
    let acr = build(
        GeneratorKind::AcrAccessToken,
        json!({"secretStoreRef": {"name": "azure"}, "registry": "myregistry.azurecr.io"}),
    );
    let id = identity();
    for _ in 0..2 {
        kv.generate(&ctx(&id, "g")).await.expect("read");
        acr.generate(&ctx(&id, "g")).await.expect("minted");
    }
    let fake = fake.lock().expect("lock");
    assert_eq!(
        fake.entra.forms.len(),
        2,
        "one token per scope, each reused"
    );
    assert_eq!(fake.entra.asked_for(KV_SCOPE), 1);
    assert_eq!(fake.entra.asked_for(ACR_SCOPE), 1);
    assert_eq!(fake.requests.len(), 2);
    for seen in &fake.requests {
        let bearer = seen.bearer.as_deref().expect("bearer");
        assert!(
            fake.entra.issued_for(bearer, KV_SCOPE),
            "Key Vault was shown another token"
        );
    }
    assert_eq!(fake.acr_tokens.len(), 2);
    for t in &fake.acr_tokens {
        assert!(
            fake.entra.issued_for(t, ACR_SCOPE),
            "ACR was shown another token"
        );
    }
}
