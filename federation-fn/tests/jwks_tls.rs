//! A Cluster whose issuer serves its keys over HTTPS with a private CA: trusted through the
//! Cluster's `caBundle` (which replaces the system's roots for that cluster's keys), not
//! without it. Real TLS on loopback.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use esi_federation::issuer::{LocalIssuer, SigningKey};

/// Serves `app(url)` over HTTPS on loopback as `url` (`https://localhost:PORT`, also made
/// `issuer`'s URL), with a certificate from a fresh private CA; returns the CA's PEM, the URL
/// and the server's task.
async fn serve_https(
    issuer: &LocalIssuer,
    app: impl FnOnce(&str) -> axum::Router,
) -> (String, String, tokio::task::JoinHandle<std::io::Result<()>>) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let esi_test_support::Pki {
        ca_pem,
        cert_pem,
        key_pem,
    } = esi_test_support::pki("issuer").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    issuer.set_issuer(&url);
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
        cert_pem.into_bytes(),
        key_pem.into_bytes(),
    )
    .await
    .unwrap();
    let server = axum_server::from_tcp_rustls(listener, tls).unwrap();
    let app = app(&url);
    let served = tokio::spawn(async move { server.serve(app.into_make_service()).await });
    (ca_pem, url, served)
}

#[tokio::test]
async fn an_issuer_behind_a_private_ca_is_trusted_through_the_clusters_ca_bundle() {
    let issuer = LocalIssuer::new(SigningKey::rsa());
    let (ca, url, served) = serve_https(&issuer, |_| issuer.router()).await;
    let token = common::token(&issuer, "default", "app");

    let cluster = |extra: &str| {
        format!(
            "apiVersion: esi.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: alpha}}\nspec:\n  issuer: {url}\n  keys: {{discovery: {{}}}}\n  audiences: [esi]\n{extra}---\n"
        )
    };
    // A JSON string is a YAML scalar: the PEM's newlines stay escaped.
    let trusted = cluster(&format!(
        "  caBundle: {}\n",
        serde_json::to_string(&ca).unwrap()
    ));
    let state = common::state(&trusted, common::settings(Duration::from_millis(300)));
    let (status, _, json, text) =
        common::send(&state, common::get("/v1/whoami", Some(&token))).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(json["cluster"], "alpha", "{text}");

    // Without the bundle the system's roots are used, and they do not know the private CA.
    let untrusted = common::state(&cluster(""), common::settings(Duration::from_millis(300)));
    let (status, _, json, text) =
        common::send(&untrusted, common::get("/v1/whoami", Some(&token))).await;
    assert_eq!(
        (status, common::code(&json)),
        (503, "backend_unavailable"),
        "{text}"
    );
    served.abort();
}

/// A key fetch that began over https stays on https: an issuer's host cannot send it to plain
/// http (keys an on-path attacker could replace, or a loopback service of the federation's
/// own), neither through its discovery document nor through a redirect. A redirect that stays
/// on https is followed.
#[tokio::test]
async fn a_key_fetch_begun_over_https_is_not_led_to_plain_http() {
    use axum::response::{IntoResponse, Redirect};
    use axum::routing::get;
    use std::sync::{Arc, Mutex};

    let issuer = LocalIssuer::new(SigningKey::rsa());
    // The same keys, also served over plain http on loopback.
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_jwks = format!("http://{}/openid/v1/jwks", plain.local_addr().unwrap());
    let plain_app = issuer.router();
    tokio::spawn(async move { axum::serve(plain, plain_app).await });

    // What discovery names as `jwks_uri`, changed between the cases below.
    let jwks_uri = Arc::new(Mutex::new(String::new()));
    let app = |url: &str| {
        axum::Router::new()
            .route(
                "/openid/v1/jwks",
                get({
                    let issuer = issuer.clone();
                    move || async move { axum::Json(issuer.jwks()) }
                }),
            )
            .route(
                "/.well-known/openid-configuration",
                get({
                    let (url, jwks_uri) = (url.to_owned(), jwks_uri.clone());
                    move || async move {
                        let jwks_uri = jwks_uri.lock().unwrap().clone();
                        axum::Json(serde_json::json!({"issuer": url, "jwks_uri": jwks_uri}))
                    }
                }),
            )
            .route(
                "/to-plain",
                get({
                    let plain_jwks = plain_jwks.clone();
                    move || async move { Redirect::temporary(&plain_jwks).into_response() }
                }),
            )
            .route(
                "/to-https",
                get(|| async { Redirect::temporary("/openid/v1/jwks").into_response() }),
            )
    };
    let (ca, url, served) = serve_https(&issuer, app).await;
    let token = common::token(&issuer, "default", "app");
    let cluster = format!(
        "apiVersion: esi.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: alpha}}\nspec:\n  issuer: {url}\n  keys: {{discovery: {{}}}}\n  audiences: [esi]\n  caBundle: {}\n---\n",
        serde_json::to_string(&ca).unwrap()
    );

    for (jwks, want) in [
        (plain_jwks.clone(), 503),
        (format!("{url}/to-plain"), 503),
        (format!("{url}/to-https"), 200),
    ] {
        *jwks_uri.lock().unwrap() = jwks.clone();
        // A fresh state: nothing cached from the case before.
        let state = common::state(&cluster, common::settings(Duration::from_millis(300)));
        let (status, _, _, text) =
            common::send(&state, common::get("/v1/whoami", Some(&token))).await;
        assert_eq!(status, want, "jwks_uri {jwks}: {text}");
    }
    served.abort();
}
