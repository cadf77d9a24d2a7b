//! Helpers shared by the backends' peer tests: peer discovery (skip loudly, or fail when
//! `ESI_REQUIRE_PEERS=1`), a test identity, small key/PEM utilities, and the loopback fake of
//! Microsoft Entra ID ([`entra`]) the `azure` store's tests share.

#![allow(dead_code, unused_imports, unreachable_pub, missing_docs)]

pub mod entra;

use esi_api::{Identity, ObjectRef};
use esi_backends::{Context, Generator, GeneratorKind, GeneratorSpec, SecretStoreSpec};

/// The peer's address from `var`, or `None` after a loud SKIPPED line; a panic under
/// `ESI_REQUIRE_PEERS=1` so CI cannot silently skip.
pub use esi_test_support::peer;

pub fn identity() -> Identity {
    Identity {
        cluster: "prod-eu".into(),
        issuer: "https://issuer.example".into(),
        namespace: "payments".into(),
        service_account: ObjectRef {
            name: "api".into(),
            uid: "sa-uid".into(),
        },
        pod: Some(ObjectRef {
            name: "api-7d9f".into(),
            uid: "pod-uid".into(),
        }),
        subject: "system:serviceaccount:payments:api".into(),
        token_expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_secs(600),
    }
}

pub fn ctx<'a>(id: &'a Identity, generator: &'a str) -> Context<'a> {
    Context {
        identity: id,
        generator,
        max_ttl: None,
    }
}

/// [`ctx`] under an Authorization with this `maxTTL`.
pub fn ctx_with_max_ttl<'a>(
    id: &'a Identity,
    generator: &'a str,
    max_ttl: std::time::Duration,
) -> Context<'a> {
    Context {
        max_ttl: Some(max_ttl),
        ..ctx(id, generator)
    }
}

/// Builds a generator from manifest JSON, as the federation's loader would.
pub fn build(kind: &str, spec: serde_json::Value, store: Option<serde_json::Value>) -> Generator {
    let kind = GeneratorKind::parse(kind).expect("known kind");
    let spec = GeneratorSpec::from_manifest(kind, spec).expect("valid spec");
    let store = store.map(|s| SecretStoreSpec::from_manifest(s).expect("valid store"));
    Generator::build(&spec, store.as_ref()).expect("builds")
}

/// A short random suffix for mount paths and names, so tests can share one server.
pub fn suffix() -> String {
    let mut b = [0u8; 4];
    aws_lc_rs::rand::fill(&mut b).expect("rng");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// DER wrapped as PEM.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

pub fn b64url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// Waits for `f` to return true, polling, up to `secs`.
pub async fn wait_until<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if f().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Serves `app` on a loopback port for the rest of the test; its `http://` base URL.
pub async fn serve_local(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    base
}

/// The claims of a JWT, unverified.
pub fn jwt_claims(jwt: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// The issuer of the `selfIssued` tests, `https://esi.example.com`, with a fresh key of
/// `algorithm`.
pub fn own_issuer(
    algorithm: esi_backends::identity::KeyAlgorithm,
) -> std::sync::Arc<esi_backends::identity::Issuer> {
    use secrecy::ExposeSecret as _;
    let pem = esi_backends::identity::generate_key_pem(algorithm).expect("key");
    std::sync::Arc::new(
        esi_backends::identity::Issuer::new("https://esi.example.com", pem.expose_secret())
            .expect("issuer"),
    )
}
