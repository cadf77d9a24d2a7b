//! The federation's HTTP API against a real OpenBao (started by `./scripts/test-all.sh`):
//! a Vault token minted as a dynamic secret is revoked through `POST /v1/revoke`, and a
//! backend refusal answers 502 `backend_rejected` without leaking Vault's words.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use esi_federation::config;
use esi_federation::state::AppState;
use esi_test_support::peer;

#[tokio::test(flavor = "multi_thread")]
async fn vault_token_is_issued_and_revoked_through_the_api() {
    let test = "vault_token_is_issued_and_revoked_through_the_api";
    let (Some(addr), Some(root)) = (
        peer("ESI_TEST_OPENBAO_ADDR", test),
        peer("ESI_TEST_OPENBAO_TOKEN", test),
    ) else {
        return;
    };
    let issuer = common::issuer().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("vault-token");
    std::fs::write(&token_file, &root).unwrap();
    let yaml = common::cluster("alpha", &issuer.issuer())
        + common::GENERATORS
        + &format!(
            r#"apiVersion: esi.dev/v1alpha1
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
    let test = "generators_on_one_store_log_in_once";
    let (Some(addr), Some(root)) = (
        peer("ESI_TEST_OPENBAO_ADDR", test),
        peer("ESI_TEST_OPENBAO_TOKEN", test),
    ) else {
        return;
    };
    use reqwest::Method;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let (kv, approle) = (format!("kv-{suffix}"), format!("approle-{suffix}"));
    bao(
        &addr,
        &root,
        Method::POST,
        &format!("sys/mounts/{kv}"),
        serde_json::json!({"type": "kv", "options": {"version": "2"}}),
    )
    .await;
    for app in ["a", "b"] {
        bao(
            &addr,
            &root,
            Method::POST,
            &format!("{kv}/data/{app}"),
            serde_json::json!({"data": {"password": format!("secret-{app}")}}),
        )
        .await;
    }
    bao(&addr, &root, Method::POST, &format!("sys/policies/acl/{kv}"), serde_json::json!({"policy": format!("path \"{kv}/data/*\" {{ capabilities = [\"read\"] }}")})).await;
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
