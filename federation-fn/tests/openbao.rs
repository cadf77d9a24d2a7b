//! The federation's HTTP API against a real OpenBao (started by `./scripts/test-all.sh`):
//! a Vault token minted as a dynamic secret is revoked through `POST /v1/revoke`, and a
//! backend refusal answers 502 `backend_rejected` without leaking Vault's words.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use esi_federation::testkit::peer;

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
"#,
            token_file.display()
        );
    let state = common::state(&yaml, common::settings(Duration::from_millis(300)));
    let token = common::token(&issuer, "default", "app");

    let (status, _, env, text) = common::send(
        &state,
        common::post(
            "/v1/generators/default/VaultDynamicSecret/token",
            Some(&token),
            None,
        ),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let client_token = env["data"]["client_token"].as_str().unwrap().to_owned();
    let lease = env["lease"].as_str().unwrap().to_owned();
    let expires: jiff::Timestamp = env["expiresAt"].as_str().unwrap().parse().unwrap();
    let ttl = expires.duration_since(jiff::Timestamp::now()).as_secs();
    assert!(
        (500..=600).contains(&ttl),
        "expiresAt comes from Vault's lease: {ttl}s"
    );

    let http = reqwest::Client::new();
    let lookup = || {
        http.get(format!("{addr}/v1/auth/token/lookup-self"))
            .header("x-vault-token", &client_token)
            .send()
    };
    assert_eq!(
        lookup().await.unwrap().status(),
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
        lookup().await.unwrap().status(),
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
