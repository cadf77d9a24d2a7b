//! `entrypointLookup` against a FAKE registry: what the real one (`entrypoint_registry.rs`,
//! the CNCF Distribution registry with htpasswd) cannot be made to do. The fake serves, over
//! HTTPS on 127.0.0.1, the Distribution endpoints the lookup reads (`/v2/<name>/manifests/`,
//! `/v2/<name>/blobs/`) behind a token service (`WWW-Authenticate: Bearer realm=...`, as Docker
//! Hub, GHCR and the cloud registries answer), blobs redirected to a storage host as those
//! registries do, and the hostile answers a registry on the list could give: a manifest
//! without end, a token answer without end, bytes that are not the ones their digest names,
//! a redirect to plain HTTP.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use esi_webhook::config::EntrypointLookupConfig;
use esi_webhook::entrypoint::{EntrypointLookup, LookupError, Platform, Source};
use serde_json::json;

const USER: &str = "bot";
const PASSWORD: &str = "fake-registry-password";
const ROTATED: &str = "fake-registry-password-rotated";
const CONFIG: &[u8] = br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/app/server"],"Cmd":["--port","8080"]}}"#;

/// What the fake saw.
#[derive(Default)]
struct Seen {
    /// Tokens handed out.
    tokens: AtomicU64,
    /// Bytes of endless answers sent.
    endless_bytes: AtomicU64,
    /// The `Authorization` each storage request carried.
    storage_auth: Mutex<Vec<Option<String>>>,
}

struct Fake {
    port: u16,
    seen: Seen,
}

fn sha256(data: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn manifest(config: &str, size: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config, "size": size},
        "layers": []
    }))
    .unwrap()
}

/// A body that never ends, counted.
fn endless(fake: &Arc<Fake>) -> Body {
    let fake = fake.clone();
    let chunk = axum::body::Bytes::from(vec![b' '; 64 << 10]);
    Body::from_stream(futures_util::stream::repeat_with(move || {
        fake.seen
            .endless_bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Ok::<_, std::io::Error>(chunk.clone())
    }))
}

fn answer(status: StatusCode, headers: &[(header::HeaderName, String)], body: Body) -> Response {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    for (name, value) in headers {
        res.headers_mut()
            .insert(name.clone(), value.parse().unwrap());
    }
    res
}

async fn serve(State(fake): State<Arc<Fake>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let headers: HeaderMap = req.headers().clone();
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let port = fake.port;
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();

    // The token service: Basic credentials in, a token for the asked scope out.
    if path == "/token" {
        let basic = |password: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"))
            )
        };
        if auth != Some(basic(PASSWORD)) && auth != Some(basic(ROTATED)) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        assert!(query.contains("service=fake"), "{query}");
        if query.contains("team%2Fendless-token") {
            return answer(StatusCode::OK, &[], endless(&fake));
        }
        let n = fake.seen.tokens.fetch_add(1, Ordering::Relaxed);
        let scope = query
            .split('&')
            .find_map(|p| p.strip_prefix("scope="))
            .unwrap_or_default();
        return axum::Json(json!({"token": format!("tok-{n}-{scope}"), "expires_in": 300}))
            .into_response();
    }
    // Storage, on "another host" (127.0.0.1 where the registry is localhost).
    if let Some(digest) = path.strip_prefix("/storage/") {
        fake.seen.storage_auth.lock().unwrap().push(auth);
        if digest == sha256(CONFIG) {
            return answer(StatusCode::OK, &[], Body::from(CONFIG));
        }
        return StatusCode::NOT_FOUND.into_response();
    }

    let Some(rest) = path.strip_prefix("/v2/team/") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (name, what) = rest.split_once('/').unwrap();
    let scope = format!("repository%3Ateam%2F{name}%3Apull");
    if !auth
        .as_deref()
        .is_some_and(|a| a.starts_with("Bearer tok-") && a.ends_with(&scope))
    {
        let challenge = format!(
            r#"Bearer realm="https://{host}/token",service="fake",scope="repository:team/{name}:pull""#
        );
        return answer(
            StatusCode::UNAUTHORIZED,
            &[(header::WWW_AUTHENTICATE, challenge)],
            Body::from(
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            ),
        );
    }
    let config = sha256(CONFIG);
    let good = manifest(&config, CONFIG.len());
    match (name, what) {
        ("api", w) if w.starts_with("manifests/") => {
            let digest = sha256(&good);
            answer(
                StatusCode::OK,
                &[
                    (
                        header::CONTENT_TYPE,
                        "application/vnd.oci.image.manifest.v1+json".into(),
                    ),
                    (
                        header::HeaderName::from_static("docker-content-digest"),
                        digest,
                    ),
                ],
                Body::from(good),
            )
        }
        ("api" | "liar", w) if w == format!("blobs/{config}") => answer(
            StatusCode::TEMPORARY_REDIRECT,
            &[(
                header::LOCATION,
                format!("https://127.0.0.1:{port}/storage/{config}"),
            )],
            Body::empty(),
        ),
        ("endless", _) => answer(StatusCode::OK, &[], endless(&fake)),
        // A manifest whose header names another digest than its bytes'.
        ("liar", "manifests/1.0") => answer(
            StatusCode::OK,
            &[(
                header::HeaderName::from_static("docker-content-digest"),
                sha256(b"other"),
            )],
            Body::from(good),
        ),
        // A manifest whose configuration is not the bytes its digest names.
        ("swapped", "manifests/1.0") => {
            answer(StatusCode::OK, &[], Body::from(manifest(&config, 12)))
        }
        ("swapped", w) if w.starts_with("blobs/") => {
            answer(StatusCode::OK, &[], Body::from(r#"{"config":{}"#))
        }
        ("plain", "manifests/1.0") => answer(StatusCode::OK, &[], Body::from(good)),
        ("plain", w) if w.starts_with("blobs/") => answer(
            StatusCode::FOUND,
            &[(
                header::LOCATION,
                format!("http://127.0.0.1:{port}/storage/{config}"),
            )],
            Body::empty(),
        ),
        _ => answer(
            StatusCode::NOT_FOUND,
            &[],
            Body::from(r#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#),
        ),
    }
}

/// Starts the fake on a loopback port; the lookup trusts its CA and has the credentials.
async fn start() -> (Arc<Fake>, EntrypointLookup, tempfile::TempDir) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let pki = esi_test_support::pki("fake-registry").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = Arc::new(Fake {
        port,
        seen: Seen::default(),
    });
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
        pki.cert_pem.into_bytes(),
        pki.key_pem.into_bytes(),
    )
    .await
    .unwrap();
    let app = axum::Router::new().fallback(serve).with_state(fake.clone());
    let server = axum_server::tls_rustls::from_tcp_rustls(listener, tls).unwrap();
    tokio::spawn(async move { server.serve(app.into_make_service()).await });

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, pki.ca_pem).unwrap();
    let credentials = dir.path().join("config.json");
    std::fs::write(
        &credentials,
        json!({"auths": {format!("localhost:{port}"): {"username": USER, "password": PASSWORD}}})
            .to_string(),
    )
    .unwrap();
    let lookup = EntrypointLookup::new(&EntrypointLookupConfig {
        registries: vec!["localhost:*".into()],
        ca_file: Some(ca.display().to_string()),
        credentials_file: Some(credentials.display().to_string()),
        timeout_seconds: 5,
        ..EntrypointLookupConfig::default()
    })
    .unwrap();
    (fake, lookup, dir)
}

#[tokio::test]
async fn a_token_service_is_asked_once_per_repository_and_storage_never_sees_it() {
    let (fake, lookup, _dir) = start().await;
    let own = Platform::own();
    let port = fake.port;
    for tag in ["1.0", "1.1"] {
        let (image, _) = lookup
            .lookup(&format!("localhost:{port}/team/api:{tag}"), &own)
            .await
            .unwrap();
        assert_eq!(image.command(false), ["/app/server", "--port", "8080"]);
        assert_eq!(
            image.digest,
            sha256(&manifest(&sha256(CONFIG), CONFIG.len()))
        );
    }
    // One token for team/api, kept for the second tag (its answer said 300 s).
    assert_eq!(fake.seen.tokens.load(Ordering::Relaxed), 1);
    // The blob was redirected to another host: the registry's token did not go with it.
    let storage = fake.seen.storage_auth.lock().unwrap().clone();
    assert_eq!(storage, [None, None]);
}

#[tokio::test]
async fn an_image_that_is_not_an_index_is_read_once_for_every_platform() {
    let (fake, lookup, _dir) = start().await;
    let platforms: Vec<Platform> = ["linux/amd64", "linux/arm64", "linux/arm/v7"]
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    let image = format!("localhost:{}/team/api:1.0", fake.port);
    let found = lookup.lookup_for(&image, &platforms).await;
    assert_eq!(found.len(), 3);
    for f in found {
        let (f, source) = f.unwrap();
        assert_eq!(f.command(false), ["/app/server", "--port", "8080"]);
        assert_eq!(source, Source::Registry);
    }
    // One configuration read (each goes through storage), not one per platform.
    assert_eq!(fake.seen.storage_auth.lock().unwrap().len(), 1);
    // And kept for every platform, those of a later Pod pinned to one included.
    let (_, source) = lookup.lookup(&image, &platforms[1]).await.unwrap();
    assert_eq!(source, Source::Cached);
    let (_, source) = lookup
        .lookup(&image, &"linux/s390x".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(source, Source::Cached);
    assert_eq!(fake.seen.storage_auth.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_token_is_not_kept_past_a_change_of_credentials() {
    let (fake, lookup, dir) = start().await;
    let (own, lookup) = (&Platform::own(), &lookup);
    let port = fake.port;
    let read = |tag: &'static str| async move {
        lookup
            .lookup(&format!("localhost:{port}/team/api:{tag}"), own)
            .await
            .map(|(image, _)| image.command(false))
    };
    read("1.0").await.unwrap();
    assert_eq!(fake.seen.tokens.load(Ordering::Relaxed), 1);
    // The Secret's password rotates (the file is read at each lookup): the token obtained
    // with the old one is not used again, though the registry said it was good for 300 s.
    std::fs::write(
        dir.path().join("config.json"),
        json!({"auths": {format!("localhost:{port}"): {"username": USER, "password": ROTATED}}})
            .to_string(),
    )
    .unwrap();
    read("1.1").await.unwrap();
    assert_eq!(fake.seen.tokens.load(Ordering::Relaxed), 2);
    // And kept for the new one.
    read("1.2").await.unwrap();
    assert_eq!(fake.seen.tokens.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn hostile_answers_are_refused_without_reading_them_whole() {
    let (fake, lookup, _dir) = start().await;
    let own = Platform::own();
    let port = fake.port;
    let image = |name: &str| format!("localhost:{port}/team/{name}:1.0");
    let detail = |e: LookupError| (e.code(), e.detail());

    // A manifest without end: refused at 4 MiB, long before the 5 s timeout.
    let started = Instant::now();
    let e = lookup.lookup(&image("endless"), &own).await.unwrap_err();
    assert_eq!(e.code(), "manifest_too_large", "{}", e.detail());
    assert!(e.to_string().contains("larger than 4 MiB"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(4));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = fake.seen.endless_bytes.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.seen.endless_bytes.load(Ordering::Relaxed),
        sent,
        "the fake still sends: the connection was not dropped"
    );

    // A token answer without end.
    let (code, why) = detail(
        lookup
            .lookup(&image("endless-token"), &own)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, "unavailable");
    assert!(
        why.contains("token answer is larger than 65536 bytes"),
        "{why}"
    );

    // Bytes that are not the ones their digest names.
    let (code, why) = detail(lookup.lookup(&image("liar"), &own).await.unwrap_err());
    assert_eq!(code, "unavailable");
    assert!(why.contains("do not match the digest"), "{why}");
    let pinned = format!("localhost:{port}/team/api@{}", sha256(b"another manifest"));
    let (_, why) = detail(lookup.lookup(&pinned, &own).await.unwrap_err());
    assert!(why.contains("do not match the digest"), "{why}");
    let (_, why) = detail(lookup.lookup(&image("swapped"), &own).await.unwrap_err());
    assert!(why.contains("configuration's bytes do not match"), "{why}");

    // A redirect to plain HTTP is not followed.
    let (code, why) = detail(lookup.lookup(&image("plain"), &own).await.unwrap_err());
    assert_eq!(code, "unavailable");
    assert!(why.contains("not https://"), "{why}");

    // What the registry does not have.
    assert_eq!(
        lookup
            .lookup(&image("missing"), &own)
            .await
            .unwrap_err()
            .code(),
        "not_found"
    );
    // None of it leaked the password.
    for name in ["endless-token", "liar", "swapped", "plain", "missing"] {
        let e = lookup.lookup(&image(name), &own).await.unwrap_err();
        assert!(
            !e.detail().contains(PASSWORD) && !format!("{e:?}").contains(PASSWORD),
            "{e:?}"
        );
    }
}
