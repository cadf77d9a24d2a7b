//! The outbound clients' trust over real TLS on loopback: a CA bundle is trusted next to the
//! system's roots (SecretStores) or instead of them (a Cluster's JWKS); a private CA is trusted
//! by neither the system's roots nor another CA's bundle.

#![cfg(feature = "http-client")]
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use esi_backends::http::{self, Trust};

/// An HTTPS server on loopback answering `ok`.
async fn https_server(cert: String, key: String) -> SocketAddr {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config =
        axum_server::tls_rustls::RustlsConfig::from_pem(cert.into_bytes(), key.into_bytes())
            .await
            .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let server = axum_server::from_tcp_rustls(listener, config).unwrap();
    tokio::spawn(async move { server.serve(app.into_make_service()).await });
    addr
}

fn client_with(trust: Trust<'_>) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .tls_backend_preconfigured(http::tls_config(trust).unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_ca_bundle_is_trusted_next_to_or_instead_of_the_system_roots() {
    let esi_test_support::Pki {
        ca_pem: ca,
        cert_pem: cert,
        key_pem: key,
    } = esi_test_support::pki("one").unwrap();
    let other_ca = esi_test_support::pki("two").unwrap().ca_pem;
    let addr = https_server(cert, key).await;
    let url = format!("https://localhost:{}/", addr.port());

    // A SecretStore's client: the system's roots and the store's bundle.
    let store = http::client(
        Some(&ca),
        Duration::from_secs(10),
        "provider.webhook.caBundle",
    )
    .unwrap();
    let resp = store.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "ok");
    // A Cluster's JWKS client with its own bundle: that bundle only.
    let only = client_with(Trust::Only(&ca))
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(only.status(), 200);

    // The system's roots do not know the private CA, nor does another CA's bundle.
    for (what, client) in [
        (
            "system roots",
            http::client(None, Duration::from_secs(10), "provider.webhook.caBundle").unwrap(),
        ),
        ("another CA only", client_with(Trust::Only(&other_ca))),
        (
            "system roots and another CA",
            client_with(Trust::System {
                extra: Some(&other_ca),
            }),
        ),
    ] {
        let err = client.get(&url).send().await.unwrap_err();
        let text = esi_backends::error_chain(&err);
        assert!(
            text.contains("UnknownIssuer") || text.contains("unknown issuer"),
            "{what}: want an untrusted-certificate failure, got: {text}"
        );
    }
}

#[test]
fn a_ca_bundle_that_cannot_be_used_is_refused_by_name() {
    let cases = [
        ("not a pem at all", "holds no PEM certificate"),
        (
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            "is not a PEM certificate bundle",
        ),
        (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "holds a certificate that cannot be a trust anchor",
        ),
    ];
    for (pem, want) in cases {
        let err = http::check_ca_bundle(pem, "provider.vault.caBundle").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("provider.vault.caBundle") && text.contains(want),
            "{pem:?}: want {want:?}, got {text:?}"
        );
        let err = http::client(Some(pem), Duration::from_secs(1), "provider.gcp.caBundle")
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{pem:?}: want {want:?}, got {err:?}");
    }
}
