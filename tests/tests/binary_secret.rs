//! A binary secret reaches the app as its bytes, end to end: an AWS Secrets Manager
//! `SecretBinary` (moto, from `scripts/peers/moto.sh`) read by a `SecretsManagerSecret`
//! generator in the federation binary arrives base64-encoded, as every binary credential does;
//! `esi-cli init` writes the file of a `raw` output with `decode=base64` holding exactly the
//! secret's bytes, and the same output without `decode` holds the base64 text. A text secret
//! behind `decode=base64` fails `init`, naming the file and key, never the value.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use esi_api::inject::{Decoding, FileContent, FileOutput};
use esi_tests::{Federation, Issuer, Pod, config_dir, peer, peer_post, spec};
use serde_json::{Value, json};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Creates a secret in moto with Secrets Manager's JSON protocol (moto checks no signature;
/// the header names the region the federation's store uses).
fn create_secret(rt: &tokio::runtime::Runtime, moto: &str, body: Value) {
    peer_post(
        rt,
        "CreateSecret on moto",
        moto,
        &[
            ("X-Amz-Target", "secretsmanager.CreateSecret"),
            ("Content-Type", "application/x-amz-json-1.1"),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAESITESTKEY000001/20260101/eu-west-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=0",
            ),
        ],
        &body,
    );
}

fn file(name: &str, key: &str, decode: Option<Decoding>) -> FileOutput {
    FileOutput {
        name: name.into(),
        path: format!("/etc/ks/{name}"),
        volume_path: format!("files/ks/{name}"),
        content: FileContent::Raw {
            alias: "ks".into(),
            key: key.into(),
            decode,
        },
        mode: 0o400,
    }
}

#[test]
fn a_secrets_manager_binary_secret_is_written_as_its_bytes() {
    let test = "a_secrets_manager_binary_secret_is_written_as_its_bytes";
    let Some(moto) = peer("ESI_TEST_MOTO_URL", test) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // What a PKCS#12 keystore holds: every byte value, NUL and bytes that are not UTF-8.
    let keystore: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let run = std::process::id();
    let binary = format!("esi-tests/keystore-{run}");
    let textual = format!("esi-tests/not-base64-{run}");
    create_secret(
        &rt,
        &moto,
        json!({"Name": binary, "SecretBinary": STANDARD.encode(&keystore)}),
    );
    create_secret(
        &rt,
        &moto,
        json!({"Name": textual, "SecretString": "hunter2 is not base64!"}),
    );

    let keys = tempfile::tempdir().unwrap();
    std::fs::write(keys.path().join("ak"), "AKIAESITESTKEY000001").unwrap();
    std::fs::write(keys.path().join("sk"), "esi-test-secret-key").unwrap();
    let issuer = Issuer::start();
    let manifests = format!(
        r#"
apiVersion: esi.dev/v1alpha1
kind: SecretStore
metadata: {{name: aws, namespace: payments}}
spec:
  provider:
    aws:
      region: eu-west-1
      endpoint: {moto}
      timeout: 10s
      credentials:
        accessKeyId: {{file: {ak}}}
        secretAccessKey: {{file: {sk}}}
---
apiVersion: esi.dev/v1alpha1
kind: SecretsManagerSecret
metadata: {{name: keystore, namespace: payments}}
spec: {{secretStoreRef: {{name: aws}}, secretId: "{binary}"}}
---
apiVersion: esi.dev/v1alpha1
kind: SecretsManagerSecret
metadata: {{name: password, namespace: payments}}
spec: {{secretStoreRef: {{name: aws}}, secretId: "{textual}"}}
---
apiVersion: esi.dev/v1alpha1
kind: Authorization
metadata: {{name: payments-app}}
spec:
  subjects:
    - namespaces: [payments]
      serviceAccounts: [app]
  generators: ["payments/SecretsManagerSecret/*"]
"#,
        ak = keys.path().join("ak").display(),
        sk = keys.path().join("sk").display(),
    );
    let config = config_dir(&issuer.url(), &manifests);
    let fed = Federation::start(config.path(), "127.0.0.1:0", None);

    let pod = Pod::new(&issuer.token("payments", "app"));
    let spec_ok = spec(
        &fed.url(),
        &[("ks", "payments/SecretsManagerSecret/keystore")],
        &[],
        vec![
            file("app.p12", "value", Some(Decoding::Base64)),
            file("app.p12.b64", "value", None),
        ],
    );
    let init = pod.cli(&spec_ok).arg("init").output().unwrap();
    assert!(
        init.status.success(),
        "esi-cli init: {}\nfederation logs:\n{}",
        text(&init.stderr),
        fed.logs()
    );
    let written = pod.path("files/ks/app.p12");
    assert_eq!(std::fs::read(&written).unwrap(), keystore);
    assert_eq!(
        std::fs::metadata(&written).unwrap().permissions().mode() & 0o7777,
        0o400
    );
    assert_eq!(
        std::fs::read_to_string(pod.path("files/ks/app.p12.b64")).unwrap(),
        STANDARD.encode(&keystore)
    );

    // A text secret is not base64: init fails before writing anything, naming the file and
    // the key, without a character of the secret.
    let pod = Pod::new(&issuer.token("payments", "app"));
    let spec_bad = spec(
        &fed.url(),
        &[("ks", "payments/SecretsManagerSecret/password")],
        &[],
        vec![file("app.p12", "value", Some(Decoding::Base64))],
    );
    let init = pod.cli(&spec_bad).arg("init").output().unwrap();
    let stderr = text(&init.stderr);
    assert!(!init.status.success(), "{stderr}");
    assert!(
        stderr.contains("file app.p12 (/etc/ks/app.p12)")
            && stderr.contains("decode=base64: the value of `ks.value` is not base64")
            && stderr.contains("byte 22 of the value"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(!pod.path("files/ks/app.p12").exists());
    assert!(!fed.logs().contains("hunter2"));
}
