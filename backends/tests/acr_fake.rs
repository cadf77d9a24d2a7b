//! `ACRAccessToken` against a FAKE of Microsoft Entra ID's token endpoint and of Azure
//! Container Registry's two OAuth endpoints, each served on loopback by this test (Azure has no
//! emulator). The fakes implement exactly the calls the generator makes, as Microsoft documents
//! them, and refuse the way the services do:
//!
//! - Entra ID (`common/entra.rs`, shared with `keyvault_fake.rs`):
//!   `POST /{tenant}/oauth2/v2.0/token`, the client credentials grant with a client secret or a
//!   federated client assertion (`AADSTS...` errors, 400 / 401; a token remembers its scope);
//! - IMDS (`common/entra.rs`): a VM's managed identity token endpoint issuing the same
//!   Entra ID tokens, `GET /metadata/identity/oauth2/token` with `Metadata: true`;
//! - ACR: `POST /oauth2/exchange` (an Entra ID token it issued, for the right tenant and
//!   service, becomes an ACR refresh token) and `POST /oauth2/token` (a refresh token and
//!   scopes become an access token narrowed, as ACR does silently, to the actions the identity
//!   has), both answering JWTs with ACR's claims and `{"errors": [...]}` refusals.

#![cfg(feature = "acr")]

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use base64::Engine as _;
use esi_backends::{BackendError, Generate, Generator};
use serde_json::{Value, json};

use common::entra::{self, CLIENT, CLIENT_SECRET, Entra, HasEntra, JWT_BEARER, Pairs, TENANT, get};
use common::{build, ctx, ctx_with_max_ttl, identity};

const REGISTRY: &str = "myregistry.azurecr.io";
const ACR_SCOPE: &str = "https://containerregistry.azure.net/.default";
const NULL_GUID: &str = "00000000-0000-0000-0000-000000000000";

fn all<'a>(form: &'a Pairs, key: &str) -> Vec<&'a str> {
    form.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

struct Fake {
    /// Entra ID, issuing tokens for ACR's audience.
    entra: Entra,
    /// ACR refresh tokens issued.
    refresh_tokens: HashSet<String>,
    /// How long ACR's tokens live, in seconds.
    refresh_lives: i64,
    access_lives: i64,
    /// Every request's form, by endpoint.
    exchange_forms: Vec<Pairs>,
    token_forms: Vec<Pairs>,
    /// An answer replacing the real one (status, body), for hostile-answer tests.
    exchange_answer: Option<(u16, Vec<u8>)>,
    /// The repository actions the identity has (its role assignments); `None` for all.
    repository_actions: Option<Vec<&'static str>>,
}

impl HasEntra for Fake {
    fn entra(&mut self) -> &mut Entra {
        &mut self.entra
    }
}

type Shared = Arc<Mutex<Fake>>;

fn acr_refusal(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"errors": [{"code": code, "message": message, "detail": null}]})),
    )
        .into_response()
}

/// A token shaped like ACR's: a JWT with ACR's claims (the signature is never checked by the
/// generator, which reads `exp` only).
fn acr_jwt(grant: &str, lives: i64, access: Value) -> String {
    let now = jiff::Timestamp::now().as_second();
    let claims = json!({
        "jti": common::suffix(),
        "sub": CLIENT,
        "nbf": now,
        "exp": now + lives,
        "iat": now,
        "iss": "Azure Container Registry",
        "aud": REGISTRY,
        "version": "1.0",
        "grant_type": grant,
        "tenant": TENANT,
        "access": access,
    });
    format!(
        "{}.{}.{}",
        common::b64url(br#"{"alg":"RS256","typ":"JWT","kid":"FAKE"}"#),
        common::b64url(claims.to_string().as_bytes()),
        common::b64url(common::suffix().as_bytes())
    )
}

/// ACR's `POST /oauth2/exchange`.
async fn exchange(State(fake): State<Shared>, Form(form): Form<Pairs>) -> Response {
    let mut fake = fake.lock().expect("lock");
    fake.exchange_forms.push(form.clone());
    if let Some((status, body)) = fake.exchange_answer.clone() {
        return entra::raw(status, body);
    }
    if get(&form, "grant_type") != Some("access_token") {
        return acr_refusal(
            StatusCode::BAD_REQUEST,
            "UNSUPPORTED",
            "grant type not supported",
        );
    }
    if get(&form, "service") != Some(REGISTRY) || get(&form, "tenant") != Some(TENANT) {
        return acr_refusal(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "the service or tenant does not match the token",
        );
    }
    // ACR takes Entra ID tokens of its own audience only.
    if !get(&form, "access_token").is_some_and(|t| fake.entra.issued_for(t, ACR_SCOPE)) {
        return acr_refusal(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required, visit https://aka.ms/acr/authorization for more information.",
        );
    }
    let token = acr_jwt(
        "refresh_token",
        fake.refresh_lives,
        json!([{"type": "registry", "name": "catalog", "actions": ["*"]}]),
    );
    fake.refresh_tokens.insert(token.clone());
    Json(json!({"refresh_token": token})).into_response()
}

/// ACR's `POST /oauth2/token`.
async fn acr_token(State(fake): State<Shared>, Form(form): Form<Pairs>) -> Response {
    let mut fake = fake.lock().expect("lock");
    fake.token_forms.push(form.clone());
    if get(&form, "grant_type") != Some("refresh_token") || get(&form, "service") != Some(REGISTRY)
    {
        return acr_refusal(StatusCode::BAD_REQUEST, "UNSUPPORTED", "invalid request");
    }
    if !get(&form, "refresh_token").is_some_and(|t| fake.refresh_tokens.contains(t)) {
        return acr_refusal(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
        );
    }
    let mut access = Vec::new();
    for scope in all(&form, "scope") {
        let parts: Vec<&str> = scope.splitn(3, ':').collect();
        let [kind, name, actions] = parts[..] else {
            return acr_refusal(StatusCode::BAD_REQUEST, "DENIED", "invalid scope");
        };
        // ACR grants what the identity has of what was asked, and says nothing of the rest.
        let actions: Vec<&str> = actions
            .split(',')
            .filter(|a| {
                kind != "repository"
                    || fake
                        .repository_actions
                        .as_ref()
                        .is_none_or(|has| has.contains(a))
            })
            .collect();
        access.push(json!({"type": kind, "name": name, "actions": actions}));
    }
    let token = acr_jwt("access_token", fake.access_lives, Value::Array(access));
    Json(json!({"access_token": token})).into_response()
}

/// The two fakes (Entra ID and the registry, on separate ports as they are separate hosts);
/// their base URLs.
async fn azure() -> (Shared, String, String) {
    let fake = Arc::new(Mutex::new(Fake {
        entra: Entra::new(&[ACR_SCOPE]),
        refresh_tokens: HashSet::new(),
        refresh_lives: 3 * 3600,
        access_lives: 75 * 60,
        exchange_forms: Vec::new(),
        token_forms: Vec::new(),
        exchange_answer: None,
        repository_actions: None,
    }));
    let aad = entra::route(fake.clone());
    let acr = Router::new()
        .route("/oauth2/exchange", post(exchange))
        .route("/oauth2/token", post(acr_token))
        .with_state(fake.clone());
    let aad = common::serve_local(aad).await;
    let acr = common::serve_local(acr).await;
    (fake, aad, acr)
}

/// The `azure` store of these tests: the fakes' URLs and `proof` (`clientSecret` or
/// `workloadIdentity`).
fn store(aad: &str, acr: &str, proof: Value) -> Value {
    let mut azure = json!({
        "tenantId": TENANT,
        "clientId": CLIENT,
        "authorityHost": format!("{aad}/"),
        "acrEndpoint": acr,
        "timeout": "5s",
    });
    for (k, v) in proof.as_object().expect("object") {
        azure[k] = v.clone();
    }
    json!({"provider": {"azure": azure}})
}

fn generator(store: Value, scope: Option<&str>) -> Generator {
    let mut spec = json!({"secretStoreRef": {"name": "azure"}, "registry": REGISTRY});
    if let Some(s) = scope {
        spec["scope"] = json!(s);
    }
    build("ACRAccessToken", spec, Some(store))
}

/// A store proving itself with the client secret, written to a file in `dir`.
fn secret_store(dir: &tempfile::TempDir, aad: &str, acr: &str, secret: &str) -> Value {
    let file = dir.path().join("client-secret");
    std::fs::write(&file, format!("{secret}\n")).expect("write secret");
    store(aad, acr, json!({"clientSecret": {"file": file}}))
}

#[tokio::test]
async fn a_client_secret_logs_in_and_the_refresh_token_is_a_docker_login() {
    let (fake, aad, acr) = azure().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let g = generator(secret_store(&dir, &aad, &acr, CLIENT_SECRET), None);
    let id = identity();

    let cred = g
        .generate(&ctx(&id, "payments/ACRAccessToken/pull"))
        .await
        .expect("minted");
    let password = cred.data["password"].clone();
    assert_eq!(cred.data["username"], NULL_GUID);
    assert_eq!(cred.data["registry"], REGISTRY);
    assert_eq!(cred.data.len(), 4, "{cred:?}");
    assert!(cred.lease.is_none() && !cred.renewable);
    let exp = common::jwt_claims(&password)["exp"].as_i64().expect("exp");
    assert_eq!(cred.expires_at.expect("expiry").as_second(), exp);
    assert!(
        !format!("{cred:?}").contains(&password),
        "the token in Debug"
    );

    // The docker login: what docker, crane, buildah and kaniko read.
    let config: Value = serde_json::from_str(&cred.data["dockerconfigjson"]).expect("json");
    let entry = &config["auths"][REGISTRY];
    assert_eq!(entry["username"], NULL_GUID);
    assert_eq!(entry["password"], password.as_str());
    let auth = base64::engine::general_purpose::STANDARD
        .decode(entry["auth"].as_str().expect("auth"))
        .expect("base64");
    assert_eq!(
        String::from_utf8(auth).expect("utf-8"),
        format!("{NULL_GUID}:{password}")
    );

    {
        let fake = fake.lock().expect("lock");
        assert!(fake.refresh_tokens.contains(&password), "not ACR's token");
        let form = &fake.entra.forms[0];
        assert_eq!(get(form, "grant_type"), Some("client_credentials"));
        assert_eq!(get(form, "client_id"), Some(CLIENT));
        assert_eq!(get(form, "scope"), Some(ACR_SCOPE));
        assert_eq!(
            get(form, "client_secret"),
            Some(CLIENT_SECRET),
            "the secret file is trimmed"
        );
        assert_eq!(get(form, "client_assertion"), None);
        let x = &fake.exchange_forms[0];
        assert_eq!(get(x, "grant_type"), Some("access_token"));
        assert_eq!(get(x, "service"), Some(REGISTRY));
        assert_eq!(get(x, "tenant"), Some(TENANT));
        assert!(
            fake.entra
                .issued_for(get(x, "access_token").expect("token"), ACR_SCOPE)
        );
        assert!(fake.token_forms.is_empty(), "no scope, no access token");
    }

    // The federation's own Entra ID token is reused while it has time left.
    for _ in 0..2 {
        g.generate(&ctx(&id, "payments/ACRAccessToken/pull"))
            .await
            .expect("minted");
    }
    let fake = fake.lock().expect("lock");
    assert_eq!(
        fake.entra.forms.len(),
        1,
        "the Entra ID token was not cached"
    );
    assert_eq!(fake.exchange_forms.len(), 3);
}

#[tokio::test]
async fn workload_identity_presents_the_federated_token_read_again_each_time() {
    let (fake, aad, acr) = azure().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, "federated-1\n").expect("write");
    {
        let mut fake = fake.lock().expect("lock");
        fake.entra.assertions = HashSet::from(["federated-1".to_owned(), "federated-2".to_owned()]);
        // Entra ID tokens this short-lived are not worth keeping: every mint asks again, and
        // so reads the file again.
        fake.entra.expires_in = json!("240");
    }
    let g = generator(
        store(
            &aad,
            &acr,
            json!({"workloadIdentity": {"tokenFile": token_file}}),
        ),
        None,
    );
    let id = identity();
    g.generate(&ctx(&id, "g")).await.expect("minted");
    // The kubelet rotates the projected token.
    std::fs::write(&token_file, "federated-2\n").expect("write");
    g.generate(&ctx(&id, "g")).await.expect("minted");

    {
        let fake_now = fake.lock().expect("lock");
        let sent: Vec<_> = fake_now
            .entra
            .forms
            .iter()
            .map(|f| get(f, "client_assertion").expect("an assertion"))
            .collect();
        assert_eq!(sent, ["federated-1", "federated-2"]);
        for f in &fake_now.entra.forms {
            assert_eq!(get(f, "client_assertion_type"), Some(JWT_BEARER));
            assert_eq!(get(f, "client_secret"), None);
            assert_eq!(get(f, "client_id"), Some(CLIENT));
        }
    }

    // A federated token Entra ID does not trust: the federation's setup, said so.
    std::fs::write(&token_file, "federated-stale\n").expect("write");
    let e = g.generate(&ctx(&id, "g")).await.unwrap_err();
    assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("refused the federation's Azure credentials"),
        "{e}"
    );
    assert!(e.detail().contains("AADSTS70021"), "{}", e.detail());
    assert!(!format!("{e} {} {e:?}", e.detail()).contains("federated-stale"));
}

#[tokio::test]
async fn a_self_issued_token_logs_in_with_no_secret_where_a_federated_credential_trusts_it() {
    use esi_backends::identity::{FEDERATION_SUBJECT, Issuer, KeyAlgorithm};
    use esi_backends::{GeneratorKind, GeneratorSpec, SecretStoreSpec, Shared, SpecError};
    let (fake, aad, acr) = azure().await;
    let issuer = common::own_issuer(KeyAlgorithm::Es256);
    let credential = |subject: &str| entra::Federated {
        issuer: "https://esi.example.com".to_owned(),
        subject: subject.to_owned(),
        audience: "api://AzureADTokenExchange".to_owned(),
        jwks: serde_json::from_str(issuer.jwks_json()).expect("jwks"),
    };
    let own = SecretStoreSpec::from_manifest(store(
        &aad,
        &acr,
        json!({"workloadIdentity": {"selfIssued": true}}),
    ))
    .expect("valid store");
    let spec = GeneratorSpec::from_manifest(
        GeneratorKind::AcrAccessToken,
        json!({"secretStoreRef": {"name": "azure"}, "registry": REGISTRY}),
    )
    .expect("valid spec");
    let build = |issuer: Option<Arc<Issuer>>| {
        Generator::build_shared(&spec, Some(&own), &mut Shared::with_issuer(issuer))
    };
    let id = identity();

    // A credential for a workload's subject does not trust the federation's own token.
    fake.lock().expect("lock").entra.federated =
        vec![credential("prod-eu:system:serviceaccount:payments:api")];
    let g = build(Some(issuer.clone())).expect("builds");
    let e = g.generate(&ctx(&id, "g")).await.unwrap_err();
    assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
    assert!(e.detail().contains("AADSTS70021"), "{}", e.detail());

    // The one trust-azure makes does: no secret and no file anywhere.
    fake.lock().expect("lock").entra.federated = vec![entra::Federated::trust_azure(
        issuer.url(),
        serde_json::from_str(issuer.jwks_json()).expect("jwks"),
    )];
    let before = jiff::Timestamp::now().as_second();
    let cred = g.generate(&ctx(&id, "g")).await.expect("minted");
    assert_eq!(cred.data["registry"], REGISTRY);
    {
        let fake = fake.lock().expect("lock");
        let form = fake.entra.forms.last().expect("a token request");
        assert_eq!(get(form, "client_assertion_type"), Some(JWT_BEARER));
        assert_eq!(get(form, "client_secret"), None);
        let assertion = common::jwt_claims(get(form, "client_assertion").expect("an assertion"));
        assert_eq!(assertion["iss"], "https://esi.example.com");
        assert_eq!(assertion["sub"], FEDERATION_SUBJECT);
        assert_eq!(assertion["aud"], "api://AzureADTokenExchange");
        let iat = assertion["iat"].as_i64().expect("iat");
        assert!((before..=before + 2).contains(&iat), "{assertion}");
        assert_eq!(assertion["exp"].as_i64(), Some(iat + 300));
        assert!(assertion.get("esi").is_none(), "it names no workload");
    }

    // trust-azure's credential takes no workload's identity token of the same issuer and
    // audience (its `sub` names the workload).
    let audiences = ["api://AzureADTokenExchange".to_owned()];
    let workload = issuer
        .mint(&esi_backends::identity::TokenRequest {
            identity: &id,
            generator: "payments/IdentityToken/azure",
            audiences: &audiences,
            lifetime: std::time::Duration::from_secs(600),
            aws_session_tags: false,
        })
        .expect("signed");
    let refused = entra::check_federated(
        &fake.lock().expect("lock").entra.federated,
        secrecy::ExposeSecret::expose_secret(&workload.token),
    );
    assert_eq!(
        refused,
        Some("AADSTS70021: No matching federated identity record found for presented assertion.")
    );

    // Another issuer's key signing the same claims is refused by the signature.
    let impostor = build(Some(common::own_issuer(KeyAlgorithm::Es256))).expect("builds");
    let e = impostor.generate(&ctx(&id, "g")).await.unwrap_err();
    assert!(e.detail().contains("AADSTS50013"), "{}", e.detail());

    // A serving federation that is no issuer refuses the store at load, naming the fix.
    let e = build(None).unwrap_err();
    assert!(matches!(e, SpecError::NoIssuer { .. }), "{e:?}");
    assert!(
        e.to_string().contains("workloadIdentity.selfIssued")
            && e.to_string().contains("--issuer-url"),
        "{e}"
    );
    // And the token comes from one place only.
    let both = SecretStoreSpec::from_manifest(store(
        &aad,
        &acr,
        json!({"workloadIdentity": {"selfIssued": true, "tokenFile": "/var/run/t"}}),
    ))
    .unwrap_err();
    assert!(both.to_string().contains("not both"), "{both}");
}

#[tokio::test]
async fn a_scope_is_rendered_for_the_caller_and_narrows_the_token() {
    let (fake, aad, acr) = azure().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let g = generator(
        secret_store(&dir, &aad, &acr, CLIENT_SECRET),
        Some("repository:{{ namespace }}/app:pull registry:catalog:*"),
    );
    let id = identity();
    let cred = g.generate(&ctx(&id, "g")).await.expect("minted");
    let password = &cred.data["password"];
    let access = common::jwt_claims(password);
    assert_eq!(access["grant_type"], "access_token");
    assert_eq!(
        access["access"],
        json!([
            {"type": "repository", "name": "payments/app", "actions": ["pull"]},
            {"type": "registry", "name": "catalog", "actions": ["*"]},
        ])
    );
    let lives = cred.expires_at.expect("expiry").as_second() - jiff::Timestamp::now().as_second();
    assert!((75 * 60 - 10..=75 * 60).contains(&lives), "lives {lives} s");
    {
        let fake = fake.lock().expect("lock");
        let form = &fake.token_forms[0];
        assert_eq!(get(form, "grant_type"), Some("refresh_token"));
        assert_eq!(get(form, "service"), Some(REGISTRY));
        assert_eq!(
            all(form, "scope"),
            ["repository:payments/app:pull", "registry:catalog:*"]
        );
        assert!(
            fake.refresh_tokens
                .contains(get(form, "refresh_token").expect("refresh token"))
        );
        assert!(
            !fake.refresh_tokens.contains(password),
            "the refresh token was handed out"
        );
    }

    // A caller whose identity renders no valid scope is refused before Azure is asked.
    let mut odd = identity();
    odd.namespace = "Payments Team".into();
    let e = g.generate(&ctx(&odd, "g")).await.unwrap_err();
    assert!(matches!(e, BackendError::Rejected { .. }), "{e:?}");
    assert!(e.to_string().contains("not a registry scope"), "{e}");
    let fake = fake.lock().expect("lock");
    assert_eq!(fake.entra.forms.len(), 1, "Entra ID was asked");
    assert_eq!(fake.exchange_forms.len(), 1, "ACR was asked");
}

#[tokio::test]
async fn a_token_outliving_max_ttl_is_dropped_not_handed_out() {
    let (fake, aad, acr) = azure().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = secret_store(&dir, &aad, &acr, CLIENT_SECRET);
    let id = identity();
    let hours = |h: u64| Duration::from_secs(h * 3600);

    // A refresh token lives 3 h.
    let g = generator(store.clone(), None);
    let e = g
        .generate(&ctx_with_max_ttl(&id, "g", hours(1)))
        .await
        .unwrap_err();
    assert!(matches!(e, BackendError::Rejected { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("maxTTL of 1h") && text.contains("dropped, not handed out"),
        "{text}"
    );
    assert!(!text.contains("eyJ"), "a token in {text}");
    g.generate(&ctx_with_max_ttl(&id, "g", hours(4)))
        .await
        .expect("within maxTTL");

    // A scoped access token lives 75 min.
    let g = generator(store, Some("repository:app:pull"));
    let e = g
        .generate(&ctx_with_max_ttl(&id, "g", hours(1)))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("maxTTL of 1h"), "{e}");
    g.generate(&ctx_with_max_ttl(&id, "g", hours(2)))
        .await
        .expect("within maxTTL");
    assert_eq!(fake.lock().expect("lock").token_forms.len(), 2);
}

#[tokio::test]
async fn refusals_are_the_federations_and_leak_no_secret() {
    let (fake, aad, acr) = azure().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let id = identity();
    let c = ctx(&id, "g");
    let check = |e: &BackendError| {
        let all = format!("{e} {} {e:?}", e.detail());
        assert!(!all.contains(CLIENT_SECRET), "the secret in {all}");
        assert!(!all.contains("wrong~secret"), "the secret in {all}");
        assert!(!all.contains("aad-"), "an Entra ID token in {all}");
    };

    // A wrong client secret: Entra ID's 401 is the federation's configuration.
    let g = generator(secret_store(&dir, &aad, &acr, "wrong~secret"), None);
    let e = g.generate(&c).await.unwrap_err();
    assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("refused the federation's Azure credentials"),
        "{e}"
    );
    assert!(e.detail().contains("AADSTS7000215"), "{}", e.detail());
    assert!(!e.to_string().contains("AADSTS"), "Entra ID's words: {e}");
    check(&e);

    // The secret file is read on every request: fixing it needs no rebuild.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let g = generator(secret_store(&dir2, &aad, &acr, CLIENT_SECRET), None);
    g.generate(&c).await.expect("minted");
    assert_eq!(fake.lock().expect("lock").entra.forms.len(), 2);

    // ACR stops taking the cached Entra ID token (revoked, roles changed): it is dropped and
    // one fresh token tried.
    fake.lock().expect("lock").entra.tokens.clear();
    g.generate(&c).await.expect("minted with a fresh token");
    assert_eq!(fake.lock().expect("lock").entra.forms.len(), 3);
    assert_eq!(fake.lock().expect("lock").exchange_forms.len(), 3);

    // ACR refuses the identity outright (no role on the registry): unavailable, ACR's words
    // in the log only, and only one retry.
    fake.lock().expect("lock").exchange_answer = Some((
        401,
        br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required, visit https://aka.ms/acr/authorization"}]}"#.to_vec(),
    ));
    let e = g.generate(&c).await.unwrap_err();
    assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("refused the federation's Azure identity"),
        "{e}"
    );
    assert!(e.detail().contains("UNAUTHORIZED"), "{}", e.detail());
    assert!(!e.to_string().contains("aka.ms"), "{e}");
    check(&e);
    let fake = fake.lock().expect("lock");
    assert_eq!(fake.exchange_forms.len(), 5, "more than one retry");
    assert_eq!(fake.entra.forms.len(), 4);
}

#[tokio::test]
async fn hostile_or_malformed_answers_give_clear_errors() {
    let (fake, aad, acr) = azure().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let g = generator(secret_store(&dir, &aad, &acr, CLIENT_SECRET), None);
    let id = identity();
    let c = ctx(&id, "g");
    let now = jiff::Timestamp::now().as_second();
    let jwt_with = |claims: Value| {
        format!(
            "{}.{}.c2ln",
            common::b64url(br#"{"alg":"none"}"#),
            common::b64url(claims.to_string().as_bytes())
        )
    };

    for (answer, says) in [
        (
            json!({"refresh_token": "opaque-token"}).to_string(),
            "not a JWT",
        ),
        (
            json!({"refresh_token": jwt_with(json!({"iss": "x"}))}).to_string(),
            "no numeric `exp`",
        ),
        (
            json!({"refresh_token": jwt_with(json!({"exp": now - 60}))}).to_string(),
            "expired already",
        ),
        (
            json!({"refresh_token": "x.bm90IGpzb24.y"}).to_string(),
            "not base64url JSON",
        ),
        (json!({"refresh_token": 42}).to_string(), "no refresh_token"),
        (json!({"token": "x"}).to_string(), "no refresh_token"),
        ("<html>gateway</html>".to_owned(), "no refresh_token"),
        (json!({"refresh_token": ""}).to_string(), "empty token"),
    ] {
        fake.lock().expect("lock").exchange_answer = Some((200, answer.clone().into_bytes()));
        let e = g.generate(&c).await.unwrap_err();
        assert!(
            matches!(e, BackendError::Unavailable { .. }),
            "{answer}: {e:?}"
        );
        assert!(e.to_string().contains("could not be read"), "{answer}: {e}");
        assert!(e.detail().contains(says), "{answer}: {}", e.detail());
        assert!(!e.detail().contains("opaque-token"), "{}", e.detail());
    }

    // An answer larger than any token: refused without reading it all.
    fake.lock().expect("lock").exchange_answer = Some((200, vec![b' '; 2 << 20]));
    let e = g.generate(&c).await.unwrap_err();
    assert!(e.to_string().contains("oversized"), "{e}");
    fake.lock().expect("lock").exchange_answer = None;

    // Entra ID answering nonsense (a new store, so nothing is cached).
    let dir2 = tempfile::tempdir().expect("tempdir");
    let g = generator(secret_store(&dir2, &aad, &acr, CLIENT_SECRET), None);
    for (answer, says) in [
        (
            json!({"access_token": "aad-x", "token_type": "Bearer"}).to_string(),
            "could not be read",
        ),
        (
            json!({"access_token": "aad-x", "expires_in": "soon"}).to_string(),
            "expires_in",
        ),
        ("{}".to_owned(), "could not be read"),
    ] {
        fake.lock().expect("lock").entra.answer = Some((200, answer.clone().into_bytes()));
        let e = g.generate(&c).await.unwrap_err();
        assert!(
            matches!(e, BackendError::Unavailable { .. }),
            "{answer}: {e:?}"
        );
        assert!(
            format!("{e} {}", e.detail()).contains(says),
            "{answer}: {e} / {}",
            e.detail()
        );
        assert!(!e.detail().contains("aad-x"), "{}", e.detail());
    }
    // A lifetime no token has is kept a day at most, not trusted into an overflow.
    fake.lock().expect("lock").entra.answer = None;
    fake.lock().expect("lock").entra.expires_in = json!(u64::MAX);
    let asked = fake.lock().expect("lock").entra.forms.len();
    g.generate(&c).await.expect("minted");
    g.generate(&c).await.expect("minted with the kept token");
    assert_eq!(fake.lock().expect("lock").entra.forms.len(), asked + 1);
    fake.lock().expect("lock").entra.answer = Some((503, b"<html>busy</html>".to_vec()));
    let g = generator(secret_store(&dir, &aad, &acr, CLIENT_SECRET), None);
    let e = g.generate(&c).await.unwrap_err();
    assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
    assert!(e.to_string().contains("503"), "{e}");
}

#[tokio::test]
async fn an_unreachable_registry_is_unavailable() {
    let (_fake, aad, _acr) = azure().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let g = generator(secret_store(&dir, &aad, &closed, CLIENT_SECRET), None);
    let id = identity();
    let e = g.generate(&ctx(&id, "g")).await.unwrap_err();
    assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
    assert!(e.to_string().contains("could not be reached"), "{e}");
}

#[tokio::test]
async fn generators_on_one_store_share_its_entra_id_token() {
    use esi_backends::{GeneratorKind, GeneratorSpec, SecretStoreSpec, Shared};
    let (fake, aad, acr) = azure().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SecretStoreSpec::from_manifest(secret_store(&dir, &aad, &acr, CLIENT_SECRET))
        .expect("valid store");
    let mut shared = Shared::default();
    let mut build = |scope: &str| {
        let spec = GeneratorSpec::from_manifest(
            GeneratorKind::AcrAccessToken,
            json!({"secretStoreRef": {"name": "azure"}, "registry": REGISTRY, "scope": scope}),
        )
        .expect("valid spec");
        Generator::build_shared(&spec, Some(&store), &mut shared).expect("builds")
    };
    let (pull, push) = (
        build("repository:app:pull"),
        build("repository:app:pull,push"),
    );
    let id = identity();
    pull.generate(&ctx(&id, "g")).await.expect("minted");
    push.generate(&ctx(&id, "g")).await.expect("minted");
    let fake = fake.lock().expect("lock");
    assert_eq!(fake.entra.forms.len(), 1, "one Entra ID token per store");
    assert_eq!(
        fake.exchange_forms.len(),
        1,
        "one refresh token per store and registry"
    );
    assert_eq!(fake.token_forms.len(), 2);
}

/// Builds generators sharing one store connection, as the federation does for one store.
fn shared_builder(store: Value) -> impl FnMut(Option<&str>) -> Generator {
    use esi_backends::{GeneratorKind, GeneratorSpec, SecretStoreSpec, Shared};
    let store = SecretStoreSpec::from_manifest(store).expect("valid store");
    let mut shared = Shared::default();
    move |scope| {
        let mut spec = json!({"secretStoreRef": {"name": "azure"}, "registry": REGISTRY});
        if let Some(s) = scope {
            spec["scope"] = json!(s);
        }
        let spec =
            GeneratorSpec::from_manifest(GeneratorKind::AcrAccessToken, spec).expect("valid spec");
        Generator::build_shared(&spec, Some(&store), &mut shared).expect("builds")
    }
}

#[tokio::test]
async fn scoped_mints_exchange_once_and_a_mint_without_scope_gets_its_own_refresh_token() {
    let (fake, aad, acr) = azure().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut build = shared_builder(secret_store(&dir, &aad, &acr, CLIENT_SECRET));
    let (pull, push, unscoped) = (
        build(Some("repository:app:pull")),
        build(Some("repository:{{namespace}}/app:pull,push")),
        build(None),
    );
    let id = identity();
    let c = ctx(&id, "g");
    for g in [&pull, &push, &pull] {
        let cred = g.generate(&c).await.expect("minted");
        assert_eq!(
            common::jwt_claims(&cred.data["password"])["grant_type"],
            "access_token"
        );
    }
    let kept = {
        let fake = fake.lock().expect("lock");
        assert_eq!(
            fake.exchange_forms.len(),
            1,
            "the refresh token was not kept"
        );
        assert_eq!(fake.token_forms.len(), 3);
        let used: HashSet<&str> = fake
            .token_forms
            .iter()
            .map(|f| get(f, "refresh_token").expect("a refresh token"))
            .collect();
        assert_eq!(used.len(), 1, "{used:?}");
        used.into_iter().next().expect("one").to_owned()
    };
    // Without a scope the refresh token is handed out: one exchanged for that mint, never the
    // kept one, which stays kept.
    let cred = unscoped.generate(&c).await.expect("minted");
    let handed_out = &cred.data["password"];
    assert_ne!(handed_out, &kept, "the kept refresh token was handed out");
    assert_eq!(
        common::jwt_claims(handed_out)["grant_type"],
        "refresh_token"
    );
    push.generate(&c).await.expect("minted");
    let fake = fake.lock().expect("lock");
    assert_eq!(fake.exchange_forms.len(), 2);
    assert_eq!(
        get(fake.token_forms.last().expect("a form"), "refresh_token"),
        Some(kept.as_str())
    );
    assert_eq!(fake.entra.forms.len(), 1, "one Entra ID token per store");
}

#[tokio::test]
async fn a_kept_refresh_token_acr_refuses_is_replaced_once() {
    let (fake, aad, acr) = azure().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let g = generator(
        secret_store(&dir, &aad, &acr, CLIENT_SECRET),
        Some("repository:app:pull"),
    );
    let id = identity();
    let c = ctx(&id, "g");
    g.generate(&c).await.expect("minted");

    // ACR stops taking the kept refresh token (the identity's roles changed): dropped, one
    // fresh exchange, and the new one kept.
    fake.lock().expect("lock").refresh_tokens.clear();
    g.generate(&c)
        .await
        .expect("minted with a fresh refresh token");
    g.generate(&c).await.expect("minted with the new kept one");
    {
        let fake = fake.lock().expect("lock");
        assert_eq!(fake.exchange_forms.len(), 2);
        assert_eq!(fake.token_forms.len(), 4);
        let refused = get(&fake.token_forms[1], "refresh_token");
        assert_eq!(refused, get(&fake.token_forms[0], "refresh_token"));
        assert_ne!(refused, get(&fake.token_forms[2], "refresh_token"));
        assert_eq!(
            get(&fake.token_forms[2], "refresh_token"),
            get(&fake.token_forms[3], "refresh_token")
        );
    }

    // ACR refusing every refresh token: one fresh exchange only, then the refusal.
    fake.lock().expect("lock").refresh_tokens.clear();
    {
        // Exchanged tokens are no longer taken either.
        let mut f = fake.lock().expect("lock");
        f.exchange_answer = Some((
            200,
            json!({"refresh_token": acr_jwt("refresh_token", 3 * 3600, json!([]))})
                .to_string()
                .into_bytes(),
        ));
    }
    let e = g.generate(&c).await.unwrap_err();
    assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("refused the federation's Azure identity"),
        "{e}"
    );
    assert!(
        !format!("{e} {} {e:?}", e.detail()).contains("eyJ"),
        "a token in {e:?}"
    );
    let fake = fake.lock().expect("lock");
    assert_eq!(fake.exchange_forms.len(), 3, "more than one fresh exchange");
    assert_eq!(fake.token_forms.len(), 6);
}

#[tokio::test]
async fn a_refresh_token_without_a_readable_or_long_enough_exp_is_not_kept() {
    let (fake, aad, acr) = azure().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = secret_store(&dir, &aad, &acr, CLIENT_SECRET);
    let id = identity();
    let c = ctx(&id, "g");

    // Four minutes left: less than the margin kept before expiry.
    fake.lock().expect("lock").refresh_lives = 240;
    let g = generator(store.clone(), Some("repository:app:pull"));
    g.generate(&c).await.expect("minted");
    g.generate(&c).await.expect("minted");
    assert_eq!(fake.lock().expect("lock").exchange_forms.len(), 2);

    // An opaque refresh token ACR takes: used, but not kept.
    {
        let mut f = fake.lock().expect("lock");
        f.refresh_tokens.insert("opaque-refresh-token".to_owned());
        f.exchange_answer = Some((200, br#"{"refresh_token":"opaque-refresh-token"}"#.to_vec()));
    }
    let g = generator(store, Some("repository:app:pull"));
    g.generate(&c).await.expect("minted");
    g.generate(&c).await.expect("minted");
    let fake = fake.lock().expect("lock");
    assert_eq!(fake.exchange_forms.len(), 4);
    assert_eq!(
        get(fake.token_forms.last().expect("a form"), "refresh_token"),
        Some("opaque-refresh-token")
    );
}

#[tokio::test]
async fn a_grant_narrower_than_the_scope_is_refused_and_the_token_dropped() {
    let (fake, aad, acr) = azure().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = secret_store(&dir, &aad, &acr, CLIENT_SECRET);
    // The identity has AcrPull only.
    fake.lock().expect("lock").repository_actions = Some(vec!["pull"]);
    let id = identity();
    let c = ctx(&id, "g");

    let g = generator(
        store.clone(),
        Some("repository:{{namespace}}/app:pull,push registry:catalog:*"),
    );
    let e = g.generate(&c).await.unwrap_err();
    assert!(matches!(e, BackendError::Rejected { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("granted the federation's identity less"),
        "{e}"
    );
    assert!(
        e.detail()
            .contains("not granted repository:payments/app:push ("),
        "{}",
        e.detail()
    );
    assert!(!e.detail().contains("registry:catalog"), "{}", e.detail());
    let all = format!("{e} {} {e:?}", e.detail());
    assert!(!all.contains("eyJ"), "a token in {all}");
    assert_eq!(
        fake.lock().expect("lock").token_forms.len(),
        1,
        "asked again"
    );

    // What the identity may do is granted and handed out.
    let g = generator(store, Some("repository:{{namespace}}/app:pull"));
    let cred = g.generate(&c).await.expect("minted");
    assert_eq!(
        common::jwt_claims(&cred.data["password"])["access"],
        json!([{"type": "repository", "name": "payments/app", "actions": ["pull"]}])
    );
}

#[tokio::test]
async fn a_managed_identity_gets_its_token_from_imds() {
    let (fake, aad, acr) = azure().await;
    let imds = common::serve_local(entra::imds_route(fake.clone())).await;
    let user_assigned = "5e1a9c3b-7d2f-4b8e-a0c6-9f3e2d1b4a77";
    fake.lock()
        .expect("lock")
        .entra
        .user_assigned
        .insert(user_assigned.to_owned());
    let msi_store = |client_id: Option<&str>| {
        let mut azure = json!({
            "tenantId": TENANT,
            "managedIdentity": {"endpoint": format!("{imds}/metadata/identity/oauth2/token")},
            // Entra ID's token endpoint is never asked: a managed identity has no secret.
            "authorityHost": format!("{aad}/"),
            "acrEndpoint": acr,
            "timeout": "5s",
        });
        if let Some(id) = client_id {
            azure["clientId"] = json!(id);
        }
        json!({"provider": {"azure": azure}})
    };
    let id = identity();
    let c = ctx(&id, "g");

    // The VM's system-assigned identity.
    let g = generator(msi_store(None), Some("repository:app:pull"));
    g.generate(&c).await.expect("minted");
    g.generate(&c).await.expect("minted");
    {
        let fake = fake.lock().expect("lock");
        assert_eq!(
            fake.entra.imds_requests.len(),
            1,
            "the IMDS token was not kept"
        );
        let (query, metadata) = &fake.entra.imds_requests[0];
        assert_eq!(metadata.as_deref(), Some("true"));
        assert_eq!(get(query, "api-version"), Some("2018-02-01"));
        assert_eq!(
            get(query, "resource"),
            Some("https://containerregistry.azure.net")
        );
        assert_eq!(get(query, "client_id"), None);
        assert!(
            fake.entra.issued_for(
                get(&fake.exchange_forms[0], "access_token").expect("a token"),
                ACR_SCOPE
            ),
            "ACR was not given the IMDS token"
        );
        assert!(fake.entra.forms.is_empty(), "Entra ID was asked");
    }

    // A user-assigned identity: its client ID is sent.
    let g = generator(msi_store(Some(user_assigned)), None);
    g.generate(&c).await.expect("minted");
    assert_eq!(
        get(
            &fake.lock().expect("lock").entra.imds_requests[1].0,
            "client_id"
        ),
        Some(user_assigned)
    );

    // One the VM does not have: IMDS's refusal, the federation's setup.
    let g = generator(msi_store(Some(CLIENT)), None);
    let e = g.generate(&c).await.unwrap_err();
    assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("refused the federation's managed identity (400)"),
        "{e}"
    );
    assert!(e.detail().contains("Identity not found"), "{}", e.detail());
}

#[tokio::test]
async fn a_login_check_gets_a_token_with_the_stores_credential() {
    let (fake, aad, acr) = azure().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |secret: &str| {
        let store =
            esi_backends::SecretStoreSpec::from_manifest(secret_store(&dir, &aad, &acr, secret))
                .expect("store");
        async move { store.check_login(None).await }
    };
    match check(CLIENT_SECRET).await {
        esi_backends::LoginCheck::LoggedIn(who) => assert_eq!(
            who,
            format!(
                "obtained a Microsoft Entra ID token as client {CLIENT:?} of tenant {TENANT:?} \
                 (scope {ACR_SCOPE})"
            )
        ),
        other => panic!("{other:?}"),
    }
    {
        let fake = fake.lock().expect("lock");
        assert_eq!(get(&fake.entra.forms[0], "scope"), Some(ACR_SCOPE));
        assert!(
            fake.exchange_forms.is_empty(),
            "nothing asked of the registry"
        );
    }
    // A wrong secret: Entra ID refuses the federation's own credential.
    match check("not-the-client-secret").await {
        esi_backends::LoginCheck::Failed(BackendError::Unavailable { detail, .. }) => {
            assert!(!detail.contains("not-the-client-secret"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}
