//! The federation's HTTP API against a real OpenBao (started by `./scripts/test-all.sh`):
//! a Vault token minted as a dynamic secret is revoked through `POST /v1/revoke`, and a
//! backend refusal answers 502 `backend_rejected` without leaking Vault's words.
//!
//! OpenBao is also a real relying party of the federation as an OIDC issuer: its JWT auth
//! method fetches the federation's discovery document and JWKS over a real socket, checks the
//! signatures of `IdentityToken`s (RS256 and ES256), their audience and claims, and logs the
//! workload in; and it lives through a signing key rotation done by the documented steps.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
mod relying_party;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use esi_backends::identity::{Issuer, KeyAlgorithm, generate_key_pem};
use esi_federation::issuer::LocalIssuer;
use esi_federation::lease::LeaseKeys;
use esi_federation::state::Settings;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use esi_federation::config;
use esi_federation::state::AppState;
use esi_test_support::peer;

#[tokio::test(flavor = "multi_thread")]
async fn vault_token_is_issued_and_revoked_through_the_api() {
    let Some((addr, root)) = openbao("vault_token_is_issued_and_revoked_through_the_api") else {
        return;
    };
    let issuer = common::issuer().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("vault-token");
    std::fs::write(&token_file, &root).unwrap();
    let yaml = common::cluster("alpha", &issuer.issuer())
        + common::GENERATORS
        + &format!(
            r#"---
apiVersion: esi.dev/v1alpha1
kind: SecretStore
metadata: {{name: vault, namespace: default}}
spec:
  provider:
    vault:
      server: {addr}
      auth: {{token: {{file: {}}}}}
---
apiVersion: esi.dev/v1alpha1
kind: VaultDynamicSecret
metadata: {{name: token, namespace: default}}
spec:
  secretStoreRef: {{name: vault}}
  path: auth/token/create
  method: POST
  parameters: {{ttl: 10m, policies: [default]}}
  resultType: Auth
---
apiVersion: esi.dev/v1alpha1
kind: VaultDynamicSecret
metadata: {{name: nowhere, namespace: default}}
spec:
  secretStoreRef: {{name: vault}}
  path: no-such-mount/creds/app
---
apiVersion: esi.dev/v1alpha1
kind: Authorization
metadata: {{name: short}}
spec:
  subjects: [{{namespaces: [default], serviceAccounts: [short]}}]
  generators: [default/VaultDynamicSecret/token]
  maxTTL: 2m
"#,
            token_file.display()
        );
    let state = common::state(&yaml, common::settings(Duration::from_millis(300)));
    let token = common::token(&issuer, "default", "app");

    // Mints the token generator's credential for `bearer`: the envelope, and the seconds its
    // expiresAt leaves.
    let mint = |bearer: String| {
        let state = &state;
        async move {
            let (status, _, env, text) = common::send(
                state,
                common::post(
                    "/v1/generators/default/VaultDynamicSecret/token",
                    Some(&bearer),
                    None,
                ),
            )
            .await;
            assert_eq!(status, 200, "{text}");
            let expires: jiff::Timestamp = env["expiresAt"].as_str().unwrap().parse().unwrap();
            let left = expires.duration_since(jiff::Timestamp::now()).as_secs();
            (env, left)
        }
    };
    let http = reqwest::Client::new();
    let lookup = |client_token: &str| {
        http.get(format!("{addr}/v1/auth/token/lookup-self"))
            .header("x-vault-token", client_token)
            .send()
    };

    let (env, ttl) = mint(token.clone()).await;
    let client_token = env["data"]["client_token"].as_str().unwrap().to_owned();
    let lease = env["lease"].as_str().unwrap().to_owned();
    assert!(
        (500..=600).contains(&ttl),
        "expiresAt comes from Vault's lease: {ttl}s"
    );

    // Under an Authorization with maxTTL 2m, the same 10m token is renewed down to 2m.
    let (env, ttl) = mint(common::token(&issuer, "default", "short")).await;
    assert!((100..=120).contains(&ttl), "held to maxTTL 2m: {ttl}s");
    let short_token = env["data"]["client_token"].as_str().unwrap();
    let looked: serde_json::Value = lookup(short_token).await.unwrap().json().await.unwrap();
    let vault_ttl = looked["data"]["ttl"].as_i64().unwrap();
    assert!(
        (100..=120).contains(&vault_ttl),
        "OpenBao's ttl {vault_ttl}s, want <= 120s"
    );

    assert_eq!(
        lookup(&client_token).await.unwrap().status(),
        200,
        "the minted token works"
    );

    let body = serde_json::json!({ "lease": lease }).to_string();
    let (status, _, json, text) = common::send(
        &state,
        common::post("/v1/revoke", Some(&token), Some(&body)),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(json["revoked"], true);
    assert_eq!(
        lookup(&client_token).await.unwrap().status(),
        403,
        "the token is revoked in OpenBao"
    );
    // Revoking again is harmless for the client (idempotent from its point of view).
    let (status, _, _, text) = common::send(
        &state,
        common::post("/v1/revoke", Some(&token), Some(&body)),
    )
    .await;
    assert!(status == 200 || status == 502, "{text}");

    let (status, _, json, text) = common::send(
        &state,
        common::post(
            "/v1/generators/default/VaultDynamicSecret/nowhere",
            Some(&token),
            None,
        ),
    )
    .await;
    assert_eq!(
        (status, common::code(&json)),
        (502, "backend_rejected"),
        "{text}"
    );
    assert!(!text.contains(&root));
    assert!(
        !text.contains("no handler"),
        "Vault's own error text must stay in the logs: {text}"
    );
}

/// OpenBao's address and root token, or `None` after a loud skip (a failure under
/// `ESI_REQUIRE_PEERS=1`).
fn openbao(test: &str) -> Option<(String, String)> {
    Some((
        peer("ESI_TEST_OPENBAO_ADDR", test)?,
        peer("ESI_TEST_OPENBAO_TOKEN", test)?,
    ))
}

/// A KV v2 engine mounted at `kv` holding `{kv}/data/{name}` = `{password}` for each
/// `(name, password)`, and a policy named `kv` that reads them.
async fn kv_mount(addr: &str, root: &str, kv: &str, secrets: &[(&str, &str)]) {
    use reqwest::Method;
    let mount = serde_json::json!({"type": "kv", "options": {"version": "2"}});
    bao(addr, root, Method::POST, &format!("sys/mounts/{kv}"), mount).await;
    for (name, password) in secrets {
        let data = serde_json::json!({"data": {"password": password}});
        bao(addr, root, Method::POST, &format!("{kv}/data/{name}"), data).await;
    }
    let policy = format!("path \"{kv}/data/*\" {{ capabilities = [\"read\"] }}");
    let body = serde_json::json!({ "policy": policy });
    bao(
        addr,
        root,
        Method::POST,
        &format!("sys/policies/acl/{kv}"),
        body,
    )
    .await;
}

/// Calls OpenBao as root for the test's setup.
async fn bao(
    addr: &str,
    root: &str,
    method: reqwest::Method,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let resp = reqwest::Client::new()
        .request(method, format!("{addr}/v1/{path}"))
        .header("x-vault-token", root)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "{path}: {status}: {text}");
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn generators_on_one_store_log_in_once() {
    let Some((addr, root)) = openbao("generators_on_one_store_log_in_once") else {
        return;
    };
    use reqwest::Method;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let (kv, approle) = (format!("kv-{suffix}"), format!("approle-{suffix}"));
    kv_mount(&addr, &root, &kv, &[("a", "secret-a"), ("b", "secret-b")]).await;
    bao(
        &addr,
        &root,
        Method::POST,
        &format!("sys/auth/{approle}"),
        serde_json::json!({"type": "approle"}),
    )
    .await;
    // The secret id logs in once: two generators each logging in on their own would fail.
    bao(
        &addr,
        &root,
        Method::POST,
        &format!("auth/{approle}/role/esi"),
        serde_json::json!({"token_policies": [kv], "token_ttl": "10m", "secret_id_num_uses": 1}),
    )
    .await;
    let role_id = bao(
        &addr,
        &root,
        Method::GET,
        &format!("auth/{approle}/role/esi/role-id"),
        serde_json::Value::Null,
    )
    .await["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_id = bao(
        &addr,
        &root,
        Method::POST,
        &format!("auth/{approle}/role/esi/secret-id"),
        serde_json::json!({}),
    )
    .await["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret-id");
    std::fs::write(&secret_file, &secret_id).unwrap();

    let issuer = common::issuer().await;
    let mut yaml = common::cluster("alpha", &issuer.issuer())
        + common::GENERATORS
        + &format!(
            "apiVersion: esi.dev/v1alpha1\nkind: SecretStore\nmetadata: {{name: vault, namespace: default}}\nspec:\n  provider:\n    vault:\n      server: {addr}\n      auth: {{appRole: {{path: {approle}, roleId: {role_id}, secretIdRef: {{file: {}}}}}}}\n---\n",
            secret_file.display()
        );
    for app in ["a", "b"] {
        yaml += &format!(
            "apiVersion: esi.dev/v1alpha1\nkind: VaultStaticSecret\nmetadata: {{name: {app}, namespace: default}}\nspec: {{secretStoreRef: {{name: vault}}, mount: {kv}, path: {app}}}\n---\n"
        );
    }
    let state = common::state(&yaml, common::settings(Duration::from_millis(300)));
    let token = common::token(&issuer, "default", "app");
    let read_both = |state: AppState, when: &'static str| {
        let token = token.clone();
        async move {
            for app in ["a", "b"] {
                let (status, _, env, text) = common::send(
                    &state,
                    common::post(
                        &format!("/v1/generators/default/VaultStaticSecret/{app}"),
                        Some(&token),
                        None,
                    ),
                )
                .await;
                assert_eq!(status, 200, "{when}, {app}: {text}");
                assert_eq!(env["data"]["password"], format!("secret-{app}"));
            }
        }
    };
    read_both(state.clone(), "first configuration").await;
    // A reload that leaves the store unchanged (here: one more generator elsewhere) keeps its
    // connection and login: logging in again would fail, the secret id is spent.
    let reloaded = yaml.clone()
        + "apiVersion: esi.dev/v1alpha1\nkind: UUID\nmetadata: {name: extra, namespace: default}\n---\n";
    let snap = config::load_text("reloaded.yaml", &reloaded, &state).unwrap();
    state.install(snap);
    read_both(state.clone(), "after a reload").await;
    // A configuration built apart (another federation process) logs in on its own and is
    // refused: the single-use secret id is what the reload above did not spend again.
    let apart = common::state(&yaml, common::settings(Duration::from_millis(300)));
    let (status, _, _, text) = common::send(
        &apart,
        common::post(
            "/v1/generators/default/VaultStaticSecret/a",
            Some(&token),
            None,
        ),
    )
    .await;
    assert_ne!(
        status, 200,
        "a second login with the spent secret id: {text}"
    );
}

// ---------------------------------------------------------------------------------------------
// OpenBao's JWT auth method as a relying party of the federation's own issuer.

/// The configuration the federation serves `IdentityToken`s from: the cluster `alpha`, the
/// GENERATORS' Authorization for `default/app`, one for `default/worker`, and two
/// `IdentityToken`s, `default/openbao` audienced to OpenBao's role and `default/elsewhere`.
fn identity_yaml(cluster: &LocalIssuer) -> String {
    common::cluster("alpha", &cluster.issuer())
        + common::GENERATORS
        + r#"apiVersion: esi.dev/v1alpha1
kind: IdentityToken
metadata: {name: openbao, namespace: default}
spec: {audiences: [openbao], expiration: 5m}
---
apiVersion: esi.dev/v1alpha1
kind: IdentityToken
metadata: {name: elsewhere, namespace: default}
spec: {audiences: [sts.amazonaws.com], expiration: 5m}
---
apiVersion: esi.dev/v1alpha1
kind: Authorization
metadata: {name: worker}
spec:
  subjects: [{namespaces: [default], serviceAccounts: [worker]}]
  generators: [default/IdentityToken/openbao]
"#
}

/// The federation as an OIDC issuer at `url`, on a socket bound before its keys are known, so
/// that a test can roll out new keys between requests as a deployment rolls out replicas: each
/// [`Rollout::keys`] installs a federation signing with the first of its keys and publishing
/// all of them, on the same configuration.
struct Rollout {
    url: String,
    yaml: String,
    current: Arc<RwLock<Router>>,
}

impl Rollout {
    async fn start(yaml: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let current = Arc::new(RwLock::new(Router::new()));
        let serving = current.clone();
        let app = Router::new().fallback_service(tower::service_fn(move |req: Request<Body>| {
            let router = serving.read().unwrap().clone();
            router.oneshot(req)
        }));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, yaml, current }
    }

    /// Rolls out a federation with `pems` (the first signs); the `kid` that signs.
    fn keys(&self, pems: &[&str]) -> String {
        let issuer = Arc::new(Issuer::new(&self.url, &pems.concat()).unwrap());
        let state = AppState::serving(
            Settings::default(),
            LeaseKeys::ephemeral(),
            Some(issuer.clone()),
        );
        let snapshot =
            config::load_text("test.yaml", &self.yaml, &state).unwrap_or_else(|e| panic!("{e}"));
        state.install(snapshot);
        *self.current.write().unwrap() = esi_federation::router(state);
        issuer.signing_kid().to_owned()
    }

    /// An `IdentityToken` of `generator` for `bearer`, asked over HTTP as a workload asks.
    async fn identity_token(&self, generator: &str, bearer: &str) -> String {
        let resp = reqwest::Client::new()
            .post(format!(
                "{}/v1/generators/default/IdentityToken/{generator}",
                self.url
            ))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 200, "{body}");
        body["data"]["token"].as_str().unwrap().to_owned()
    }
}

/// OpenBao's JWT auth method mounted at a fresh path and trusting `issuer` by OIDC discovery,
/// as its documentation configures it; the mount path.
async fn jwt_auth(addr: &str, root: &str, issuer: &str) -> String {
    let path = format!("jwt-{}", uuid::Uuid::new_v4().simple());
    jwt_auth_at(addr, root, issuer, &path).await;
    path
}

/// [`jwt_auth`] at `path`, with a role `app` for `default/app` of the cluster `alpha` and the
/// audience `openbao`, mapping the `esi` claim into the token's metadata.
async fn jwt_auth_at(addr: &str, root: &str, issuer: &str, path: &str) {
    use reqwest::Method;
    bao(
        addr,
        root,
        Method::POST,
        &format!("sys/auth/{path}"),
        json!({"type": "jwt"}),
    )
    .await;
    let config = json!({"oidc_discovery_url": issuer, "bound_issuer": issuer});
    bao(
        addr,
        root,
        Method::POST,
        &format!("auth/{path}/config"),
        config,
    )
    .await;
    bao(
        addr,
        root,
        Method::POST,
        &format!("auth/{path}/role/app"),
        json!({
            "role_type": "jwt",
            "user_claim": "sub",
            "bound_audiences": ["openbao"],
            "bound_subject": "alpha:system:serviceaccount:default:app",
            "bound_claims": {"/esi/cluster": "alpha"},
            "claim_mappings": {
                "/esi/namespace": "namespace",
                "/esi/serviceAccount/name": "service_account",
                "/esi/generator": "generator",
            },
            "token_policies": ["default"],
            "token_ttl": "10m",
        }),
    )
    .await;
}

/// A login at the JWT auth method `path` as its role `app`: the status, and the body.
async fn jwt_login(addr: &str, path: &str, jwt: &str) -> (u16, Value) {
    jwt_login_as(addr, path, "app", jwt).await
}

/// A login at the JWT auth method `path` as `role`: the status, and the body.
async fn jwt_login_as(addr: &str, path: &str, role: &str, jwt: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{addr}/v1/auth/{path}/login"))
        .json(&json!({"role": role, "jwt": jwt}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// OpenBao's refusal text of a login.
fn refusal(body: &Value) -> String {
    body["errors"].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_tokens_log_in_to_openbaos_jwt_auth_which_checks_them_as_a_relying_party() {
    let Some((addr, root)) =
        openbao("identity_tokens_log_in_to_openbaos_jwt_auth_which_checks_them_as_a_relying_party")
    else {
        return;
    };
    let cluster = common::issuer().await;
    let app = common::token(&cluster, "default", "app");
    for (alg, name) in [
        (KeyAlgorithm::Rs256, "RS256"),
        (KeyAlgorithm::Es256, "ES256"),
    ] {
        let federation = Rollout::start(identity_yaml(&cluster)).await;
        let kid = federation.keys(&[generate_key_pem(alg).unwrap().expose_secret()]);
        let url = &federation.url;
        let token = federation.identity_token("openbao", &app).await;
        // No `jwt_supported_algs`: by discovery, OpenBao takes the algorithms the document
        // lists (`id_token_signing_alg_values_supported`), ES256 as well as RS256.
        let path = jwt_auth(&addr, &root, url).await;

        let (status, body) = jwt_login(&addr, &path, &token).await;
        assert_eq!(status, 200, "{name} ({kid}): {body}");
        let auth = &body["auth"];
        assert_eq!(
            auth["metadata"],
            json!({
                "role": "app",
                "namespace": "default",
                "service_account": "app",
                "generator": "default/IdentityToken/openbao",
            }),
            "{name}: the esi claim mapped into the Vault token"
        );
        assert_eq!(auth["lease_duration"], 600, "{name}: the role's token_ttl");
        let client_token = auth["client_token"].as_str().unwrap();
        let looked = reqwest::Client::new()
            .get(format!("{addr}/v1/auth/token/lookup-self"))
            .header("x-vault-token", client_token)
            .send()
            .await
            .unwrap();
        assert_eq!(looked.status(), 200, "{name}: the Vault token works");
        let entity: Value = looked.json().await.unwrap();
        assert_eq!(entity["data"]["path"], format!("auth/{path}/login"));

        // What OpenBao refuses, each for its own reason: another workload's token (same
        // cluster, audience and issuer), a token for another audience, a token whose signature
        // was altered (a byte of the signature's middle: its last characters may carry unused
        // bits), and a token of the federation's form from a key it does not publish.
        let worker = federation
            .identity_token("openbao", &common::token(&cluster, "default", "worker"))
            .await;
        let (status, body) = jwt_login(&addr, &path, &worker).await;
        assert_eq!(status, 400, "{name}: another workload: {body}");
        assert!(refusal(&body).contains("sub"), "{name}: {body}");
        let elsewhere = federation.identity_token("elsewhere", &app).await;
        let (status, body) = jwt_login(&addr, &path, &elsewhere).await;
        assert_eq!(status, 400, "{name}: another audience: {body}");
        assert!(refusal(&body).contains("aud"), "{name}: {body}");
        let (signed, sig) = token.rsplit_once('.').unwrap();
        let mut sig = sig.as_bytes().to_vec();
        let mid = sig.len() / 2;
        sig[mid] = if sig[mid] == b'A' { b'B' } else { b'A' };
        let altered = format!("{signed}.{}", String::from_utf8(sig).unwrap());
        let (status, body) = jwt_login(&addr, &path, &altered).await;
        assert_eq!(status, 400, "{name}: altered signature: {body}");
        assert!(refusal(&body).contains("signature"), "{name}: {body}");
        let stranger = Rollout::start(identity_yaml(&cluster)).await;
        stranger.keys(&[generate_key_pem(alg).unwrap().expose_secret()]);
        let forged = stranger.identity_token("openbao", &app).await;
        let (status, body) = jwt_login(&addr, &path, &forged).await;
        assert_eq!(status, 400, "{name}: another issuer's key: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signing_key_rotated_by_the_documented_steps_never_fails_a_login_at_openbao() {
    let Some((addr, root)) =
        openbao("a_signing_key_rotated_by_the_documented_steps_never_fails_a_login_at_openbao")
    else {
        return;
    };
    let cluster = common::issuer().await;
    let app = common::token(&cluster, "default", "app");
    let (old, new) = (
        generate_key_pem(KeyAlgorithm::Rs256).unwrap(),
        generate_key_pem(KeyAlgorithm::Rs256).unwrap(),
    );
    let (old, new) = (old.expose_secret(), new.expose_secret());
    let federation = Rollout::start(identity_yaml(&cluster)).await;
    let old_kid = federation.keys(&[old]);
    let path = jwt_auth(&addr, &root, &federation.url).await;
    let login = |jwt: String, step: &'static str| {
        let (addr, path) = (addr.clone(), path.clone());
        async move {
            let (status, body) = jwt_login(&addr, &path, &jwt).await;
            assert_eq!(status, 200, "{step}: {body}");
        }
    };
    let kid = |jwt: &str| {
        relying_party::part(jwt.split('.').next().unwrap()).unwrap()["kid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let before = federation.identity_token("openbao", &app).await;
    login(before.clone(), "before the rotation").await;

    // 1. Add the new key second: published, not signing.
    assert_eq!(federation.keys(&[old, new]), old_kid);
    let added = federation.identity_token("openbao", &app).await;
    assert_eq!(kid(&added), old_kid);
    login(added, "new key added").await;
    login(before.clone(), "new key added, an earlier token").await;

    // 3. Move it first: it signs. OpenBao has never seen its kid and fetches the JWKS again.
    let new_kid = federation.keys(&[new, old]);
    assert_ne!(new_kid, old_kid);
    let moved = federation.identity_token("openbao", &app).await;
    assert_eq!(kid(&moved), new_kid);
    login(moved, "new key signing").await;
    login(before.clone(), "new key signing, a token of the old key").await;

    // 4. Remove the old key.
    assert_eq!(federation.keys(&[new]), new_kid);
    login(
        federation.identity_token("openbao", &app).await,
        "old key removed",
    )
    .await;

    // OpenBao fetches the keys again only for a kid it does not know: a removed key's tokens
    // still log in until its copy is dropped. Writing the auth method's configuration again
    // drops it (what to do at once when a key leaked).
    login(
        before.clone(),
        "old key removed, OpenBao's copy of the keys",
    )
    .await;
    bao(
        &addr,
        &root,
        reqwest::Method::POST,
        &format!("auth/{path}/config"),
        json!({"oidc_discovery_url": federation.url, "bound_issuer": federation.url}),
    )
    .await;
    let (status, body) = jwt_login(&addr, &path, &before).await;
    assert_eq!(
        status, 400,
        "the removed key after OpenBao's refresh: {body}"
    );
    assert!(refusal(&body).contains("signature"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_federation_logs_in_to_openbao_with_a_token_it_signs_for_itself() {
    use reqwest::Method;
    let Some((addr, root)) =
        openbao("the_federation_logs_in_to_openbao_with_a_token_it_signs_for_itself")
    else {
        return;
    };
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let (kv, jwt) = (format!("kv-{suffix}"), format!("jwt-{suffix}"));
    let cluster = common::issuer().await;
    // No Vault credential anywhere in the configuration: the store names a role, and the
    // federation signs its own login token, audienced to the store's server.
    let yaml = identity_yaml(&cluster)
        + &format!(
            r#"---
apiVersion: esi.dev/v1alpha1
kind: SecretStore
metadata: {{name: vault, namespace: default}}
spec:
  provider:
    vault:
      server: {addr}
      auth: {{jwt: {{path: {jwt}, role: esi-federation, selfIssued: true}}}}
---
apiVersion: esi.dev/v1alpha1
kind: VaultStaticSecret
metadata: {{name: kv, namespace: default}}
spec: {{secretStoreRef: {{name: vault}}, mount: {kv}, path: app}}
"#
        );
    let federation = Rollout::start(yaml).await;
    let url = federation.url.clone();
    // Serving before OpenBao is configured: it checks the discovery document then.
    let key = generate_key_pem(KeyAlgorithm::Es256).unwrap();
    federation.keys(&[key.expose_secret()]);
    kv_mount(&addr, &root, &kv, &[("app", "kv-secret-1")]).await;
    // The auth method and role as infra/terraform/modules/trust-vault makes them.
    jwt_auth_at(&addr, &root, &url, &jwt).await;
    bao(
        &addr,
        &root,
        Method::POST,
        &format!("auth/{jwt}/role/esi-federation"),
        trust_vault_role(&addr, &kv),
    )
    .await;
    let app = common::token(&cluster, "default", "app");
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/generators/default/VaultStaticSecret/kv"))
        .bearer_auth(&app)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!({"password": "kv-secret-1"}));

    // The login OpenBao saw: the federation's role, by the jwt method, nothing else.
    let accessors = bao(
        &addr,
        &root,
        Method::GET,
        "auth/token/accessors?list=true",
        Value::Null,
    )
    .await;
    let mut logins = Vec::new();
    for accessor in accessors["data"]["keys"].as_array().unwrap() {
        // The other tests share this OpenBao: a token of theirs may be revoked between the list
        // and its lookup ("invalid accessor"). The federation's own login stays.
        let resp = reqwest::Client::new()
            .post(format!("{addr}/v1/auth/token/lookup-accessor"))
            .header("x-vault-token", &root)
            .json(&json!({"accessor": accessor}))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        if status == reqwest::StatusCode::BAD_REQUEST && text.contains("invalid accessor") {
            continue;
        }
        assert!(status.is_success(), "lookup-accessor: {status}: {text}");
        let looked: Value = serde_json::from_str(&text).unwrap();
        if looked["data"]["path"] == format!("auth/{jwt}/login") {
            logins.push(looked["data"]["meta"]["role"].clone());
        }
    }
    assert_eq!(logins, [json!("esi-federation")], "one login, one role");

    // A workload's identity token cannot log in as the federation: its `sub` names a workload
    // and its audience is never the federation's (the configuration refuses an
    // IdentityToken for it).
    let workload = federation.identity_token("openbao", &app).await;
    let (status, body) = jwt_login_as(&addr, &jwt, "esi-federation", &workload).await;
    assert_eq!(status, 400, "a workload's token as the federation: {body}");

    // The federation's own token is audienced to the server it is sent to: one a store sent to
    // another server (whoever reads it there) does not log in here.
    let own = Issuer::new(&url, key.expose_secret()).unwrap();
    let elsewhere = own
        .mint_own("https://vault.elsewhere.example", Duration::from_secs(60))
        .unwrap();
    let (status, body) = jwt_login_as(
        &addr,
        &jwt,
        "esi-federation",
        elsewhere.token.expose_secret(),
    )
    .await;
    assert_eq!(status, 400, "a token for another server: {body}");
    assert!(refusal(&body).contains("aud"), "{body}");
    let here = own.mint_own(&addr, Duration::from_secs(60)).unwrap();
    let (status, body) =
        jwt_login_as(&addr, &jwt, "esi-federation", here.token.expose_secret()).await;
    assert_eq!(status, 200, "the same token for this server: {body}");

    // (A build without the vault provider has no store to check.)
    #[cfg(feature = "vault")]
    {
        // `check --login`'s check of the same store: given the serving federation's issuer (its URL
        // and keys), it logs in as the federation does; without it, the store is not checked.
        let store = esi_backends::SecretStoreSpec::from_manifest(json!({"provider": {"vault": {
            "server": addr, "auth": {"jwt": {"path": jwt, "role": "esi-federation", "selfIssued": true}},
        }}}))
        .unwrap();
        let issuer =
            esi_backends::identity::Issuer::new(&url, key.expose_secret()).expect("the issuer");
        match store.check_login(Some(std::sync::Arc::new(issuer))).await {
            esi_backends::LoginCheck::LoggedIn(who) => {
                assert!(
                    who.contains("esi-federation")
                        && who.contains(&format!("policies [default, {kv}]")),
                    "{who}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            store.check_login(None).await,
            esi_backends::LoginCheck::NotChecked(_)
        ));
    }
}

/// The role `infra/terraform/modules/trust-vault` makes (`vault_jwt_auth_backend_role.this`,
/// read from the module) as OpenBao's API takes it, so that the real server holds the
/// federation's login to the module's own settings: every argument written as a literal, as is
/// (`role_type`, `user_claim`, `bound_subject`, `token_type`), `bound_audiences` the module's
/// `[local.audience]` (the store's `server`: `audience`), `token_policies` `[policy]`, a 10 minute
/// `token_ttl` for the variables'. The module's auth method is checked to be what
/// [`jwt_auth_at`] configures: `jwt`, keys by discovery at the issuer, the issuer bound.
fn trust_vault_role(audience: &str, policy: &str) -> Value {
    use esi_test_support::terraform::{self, hcl::Expression};
    let body = terraform::module("trust-vault");
    let method = terraform::block(&body, "resource", &["vault_jwt_auth_backend", "this"]).body();
    for (argument, written) in [
        ("type", "\"jwt\""),
        ("oidc_discovery_url", "local.issuer"),
        ("bound_issuer", "local.issuer"),
    ] {
        assert_eq!(
            terraform::argument(method, argument).to_string(),
            written,
            "trust-vault's auth method: {argument}; update jwt_auth_at"
        );
    }
    let role = terraform::block(&body, "resource", &["vault_jwt_auth_backend_role", "this"]);
    let mut out = serde_json::Map::new();
    for attribute in role.body().attributes() {
        let (key, expression) = (attribute.key(), attribute.expr());
        let value = match (key, expression) {
            // Where the role lives, and the module's variables.
            ("namespace" | "backend" | "role_name" | "token_ttl" | "token_max_ttl", _) => continue,
            ("token_policies", _) => json!([policy]),
            ("bound_audiences", e)
                if e.to_string()
                    .split_whitespace()
                    .eq(["[", "local.audience", "]"]) =>
            {
                json!([audience])
            }
            (_, Expression::String(literal)) => json!(literal),
            (key, other) => panic!("trust-vault's role argument {key} = {other}: teach the test"),
        };
        out.insert(key.to_owned(), value);
    }
    out.insert("token_ttl".to_owned(), json!("10m"));
    Value::Object(out)
}
