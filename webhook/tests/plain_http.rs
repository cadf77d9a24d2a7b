//! A federation URL on `http://` (allowed only by the webhook's `allowHttp`, for loopback and
//! tests) must reach esi-cli together with the explicit opt-in it requires; `https://` never
//! carries it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use esi_webhook::WebhookConfig;
use esi_webhook::mutate::{Outcome, mutate};

fn config(url: &str, allow_http: bool) -> WebhookConfig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "federation:\n  defaultUrl: {url}\n  allowHttp: {allow_http}\ntoken:\n  audience: esi\n  expirationSeconds: 600\n  maxExpirationSeconds: 3600\ncli:\n  image: registry.example/esi-cli:test\n"
        ),
    )
    .unwrap();
    WebhookConfig::from_file(&path).unwrap()
}

fn pod() -> esi_webhook::pod::Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "app",
            "labels": {"esi.dev/inject": "true"},
            "annotations": {"esi.dev/generators": "db=default/Password/db", "esi.dev/env": "DB_PASS=db.password"}
        },
        "spec": {
            "securityContext": {"runAsUser": 1000},
            "containers": [{"name": "app", "image": "app:1", "command": ["/app"]}]
        }
    }))
    .unwrap()
}

fn esi_cli_env(url: &str, allow_http: bool) -> Vec<String> {
    let cfg = config(url, allow_http);
    let Ok(Outcome::Patch { patch, .. }) = mutate(&pod(), "default", None, &cfg) else {
        panic!("expected a patch for {url}");
    };
    let patch: serde_json::Value = serde_json::from_slice(patch.as_bytes()).unwrap();
    patch
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|op| {
            op["value"]
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![op["value"].clone()])
        })
        .filter(|v| v["name"] == "esi-init")
        .flat_map(|c| c["env"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            format!(
                "{}={}",
                e["name"].as_str().unwrap_or_default(),
                e["value"].as_str().unwrap_or("<ref>")
            )
        })
        .collect()
}

#[test]
fn http_federation_urls_carry_the_explicit_opt_in() {
    let env = esi_cli_env("http://127.0.0.1:8080", true);
    assert!(env.contains(&"ESI_ALLOW_HTTP=true".to_owned()), "{env:?}");
    let env = esi_cli_env("https://esi.example.com", false);
    assert!(!env.is_empty());
    assert!(
        env.iter().all(|e| !e.starts_with("ESI_ALLOW_HTTP")),
        "{env:?}"
    );
}
