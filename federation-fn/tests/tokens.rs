//! Table-driven token verification against local issuers served over real HTTP as OIDC
//! discovery + JWKS, with keys generated in the test.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use esi_api::ErrorCode;
use esi_federation::issuer::{LocalIssuer, SigningKey, TokenSpec};
use esi_federation::state::AppState;
use esi_federation::token;
use serde_json::json;

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

async fn verify(state: &AppState, token: &str) -> Result<esi_api::Identity, (ErrorCode, String)> {
    let snap = state.snapshot().expect("config");
    token::verify(token, |iss| snap.clusters_for(iss), now())
        .await
        .map(|(id, _)| id)
        .map_err(|r| (r.code, r.message))
}

fn claims(issuer: &LocalIssuer, spec: &TokenSpec) -> serde_json::Value {
    spec.claims(&issuer.issuer())
}

fn unsigned(header: serde_json::Value, claims: &serde_json::Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

async fn one_cluster() -> (Arc<LocalIssuer>, AppState) {
    let issuer = common::issuer().await;
    let yaml = common::cluster("alpha", &issuer.issuer()) + common::GENERATORS;
    let state = common::state(&yaml, common::settings(Duration::from_millis(300)));
    (issuer, state)
}

#[tokio::test]
async fn accepts_a_valid_token_and_derives_the_identity() {
    let (issuer, state) = one_cluster().await;
    let id = verify(&state, &common::token(&issuer, "default", "app"))
        .await
        .unwrap();
    assert_eq!(id.cluster, "alpha");
    assert_eq!(id.namespace, "default");
    assert_eq!(id.service_account.name, "app");
    assert_eq!(id.service_account.uid, "sa-uid-app");
    assert_eq!(id.pod.as_ref().unwrap().name, "app-7c9f8d-abcde");
    assert_eq!(id.subject, "system:serviceaccount:default:app");
}

#[tokio::test]
async fn rejection_table() {
    let (issuer, state) = one_cluster().await;
    let key = issuer.signing_key();
    let base = TokenSpec::new("default", "app");
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims(&issuer, &base);
        f(&mut c);
        key.sign(json!({"typ": "JWT"}), &c, true)
    };
    let stranger = SigningKey::rsa();
    let hs256 = {
        let header = json!({"alg": "HS256", "kid": key.kid});
        let c = claims(&issuer, &base);
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(c.to_string())
        );
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &key.public_bytes()),
            input.as_bytes(),
        );
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    };
    let es_confusion = {
        // Header claims ES256 under the RSA key's kid; signed with an EC key the attacker owns.
        let ec = SigningKey::es256();
        ec.sign(
            json!({"alg": "ES256", "kid": key.kid}),
            &claims(&issuer, &base),
            false,
        )
    };
    let cases: Vec<(&str, String, ErrorCode, &str)> = vec![
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://evil.example")),
            ErrorCode::UnknownIssuer,
            "not a registered cluster",
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!(["other"])),
            ErrorCode::AudienceMismatch,
            "audience",
        ),
        (
            "audience as string, wrong",
            with(&|c| c["aud"] = json!("other")),
            ErrorCode::AudienceMismatch,
            "audience",
        ),
        (
            "missing audience",
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            ErrorCode::AudienceMismatch,
            "audience",
        ),
        (
            "expired beyond leeway",
            with(&|c| c["exp"] = json!(now() as i64 - 3600)),
            ErrorCode::TokenExpired,
            "expired",
        ),
        (
            "nbf in the future",
            with(&|c| c["nbf"] = json!(now() as i64 + 3600)),
            ErrorCode::TokenNotYetValid,
            "nbf",
        ),
        (
            "iat in the future",
            with(&|c| c["iat"] = json!(now() as i64 + 3600)),
            ErrorCode::TokenNotYetValid,
            "iat",
        ),
        (
            "missing exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            ErrorCode::InvalidToken,
            "no exp",
        ),
        (
            "exp not a number",
            with(&|c| c["exp"] = json!("soon")),
            ErrorCode::InvalidToken,
            "malformed: a value of the wrong type or form at exp (line 1",
        ),
        (
            // serde_json's own message quotes the value; cut at 200 bytes, this one split the
            // `é` (and, with `panic = "abort"`, took the process down).
            "exp a long non-ASCII string",
            with(&|c| c["exp"] = json!(format!("{}é", "a".repeat(177)))),
            ErrorCode::InvalidToken,
            "malformed: a value of the wrong type or form at exp (line 1",
        ),
        (
            "kubernetes.io namespace not a string",
            with(&|c| c["kubernetes.io"]["namespace"] = json!(["default"])),
            ErrorCode::InvalidToken,
            "at kubernetes.io.namespace",
        ),
        (
            "claims not an object",
            unsigned(json!({"alg": "RS256"}), &json!([1, 2]), b"sig"),
            ErrorCode::InvalidToken,
            "malformed: not a JSON object",
        ),
        (
            "sub mismatch",
            with(&|c| c["sub"] = json!("system:serviceaccount:default:admin")),
            ErrorCode::InvalidToken,
            "sub does not match",
        ),
        (
            "no kubernetes.io claims",
            with(&|c| {
                c.as_object_mut().unwrap().remove("kubernetes.io");
            }),
            ErrorCode::InvalidToken,
            "kubernetes.io",
        ),
        (
            "signed by a stranger with a known kid",
            stranger.sign(json!({"kid": key.kid}), &claims(&issuer, &base), false),
            ErrorCode::InvalidToken,
            "signature does not verify",
        ),
        (
            "signed by a stranger, no kid",
            stranger.sign(json!({}), &claims(&issuer, &base), false),
            ErrorCode::InvalidToken,
            "signature does not verify",
        ),
        (
            "alg none",
            unsigned(json!({"alg": "none"}), &claims(&issuer, &base), b""),
            ErrorCode::InvalidToken,
            "not accepted",
        ),
        (
            "alg None",
            unsigned(
                json!({"alg": "None", "kid": key.kid}),
                &claims(&issuer, &base),
                b"",
            ),
            ErrorCode::InvalidToken,
            "not accepted",
        ),
        (
            "HS256 with the public key as secret",
            hs256,
            ErrorCode::InvalidToken,
            "not accepted",
        ),
        (
            "ES256 header on an RSA kid",
            es_confusion,
            ErrorCode::InvalidToken,
            "signature does not verify",
        ),
        (
            "crit header",
            key.sign(json!({"crit": ["exp"]}), &claims(&issuer, &base), true),
            ErrorCode::InvalidToken,
            "crit",
        ),
        (
            "crit null",
            key.sign(json!({"crit": null}), &claims(&issuer, &base), true),
            ErrorCode::InvalidToken,
            "crit",
        ),
        (
            // serde's derive reads a struct from an array by position: the verifier must not.
            "header as an array",
            key.sign(json!(["RS256", key.kid]), &claims(&issuer, &base), false),
            ErrorCode::InvalidToken,
            "not a JSON object",
        ),
        (
            "claims as an array",
            {
                let c = claims(&issuer, &base);
                let fields = ["iss", "sub", "aud", "exp", "nbf", "iat", "kubernetes.io"];
                let positional: Vec<_> = fields.iter().map(|f| c[*f].clone()).collect();
                key.sign(json!({"typ": "JWT"}), &json!(positional), true)
            },
            ErrorCode::InvalidToken,
            "not a JSON object",
        ),
        (
            "oversized",
            format!("{}.{}.{}", "a".repeat(10), "b".repeat(20_000), "c"),
            ErrorCode::InvalidToken,
            "larger than",
        ),
        (
            "two parts",
            "abc.def".to_owned(),
            ErrorCode::InvalidToken,
            "compact JWS",
        ),
        (
            "four parts",
            "a.b.c.d".to_owned(),
            ErrorCode::InvalidToken,
            "compact JWS",
        ),
        (
            "empty",
            String::new(),
            ErrorCode::InvalidToken,
            "compact JWS",
        ),
        (
            "header not base64",
            "!!!.e30.AA".to_owned(),
            ErrorCode::InvalidToken,
            "base64url",
        ),
        (
            "header not json",
            format!("{}.e30.AA", URL_SAFE_NO_PAD.encode("not json")),
            ErrorCode::InvalidToken,
            "header",
        ),
        (
            "header without alg",
            format!("{}.e30.AA", URL_SAFE_NO_PAD.encode("{}")),
            ErrorCode::InvalidToken,
            "header",
        ),
        (
            "claims not json",
            format!(
                "{}.{}.AA",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
                URL_SAFE_NO_PAD.encode("[")
            ),
            ErrorCode::InvalidToken,
            "malformed",
        ),
        (
            "signature not base64",
            format!(
                "{}.{}.***",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
                URL_SAFE_NO_PAD.encode(claims(&issuer, &base).to_string())
            ),
            ErrorCode::InvalidToken,
            "signature is not base64url",
        ),
        (
            "kid is a number",
            unsigned(
                json!({"alg": "RS256", "kid": 7}),
                &claims(&issuer, &base),
                b"x",
            ),
            ErrorCode::InvalidToken,
            "header",
        ),
    ];
    for (name, token, code, fragment) in cases {
        match verify(&state, &token).await {
            Ok(id) => panic!("{name}: accepted as {id:?}"),
            Err((got, message)) => {
                assert_eq!(got, code, "{name}: {message}");
                assert!(
                    message.contains(fragment),
                    "{name}: message {message:?} lacks {fragment:?}"
                );
            }
        }
    }
}

/// serde's derive reads a struct from an array by position: `kubernetes.io` (and the
/// ServiceAccount and Pod inside it) written as arrays of their members, in a token the
/// cluster's key signed, read as the identity `default/app` until they were read as objects
/// only. They are malformed claims, refused as a claim of the wrong type is.
#[tokio::test]
async fn a_kubernetes_io_claim_written_as_an_array_is_malformed() {
    let (issuer, state) = one_cluster().await;
    let key = issuer.signing_key();
    let base = claims(&issuer, &TokenSpec::new("default", "app"));
    let kube = base["kubernetes.io"].clone();
    let positional = |v: &serde_json::Value, fields: &[&str]| {
        json!(fields.iter().map(|f| v[*f].clone()).collect::<Vec<_>>())
    };
    // Read as objects, the same members are a valid identity.
    let as_objects = key.sign(json!({"typ": "JWT"}), &base, true);
    assert_eq!(
        verify(&state, &as_objects).await.unwrap().subject,
        "system:serviceaccount:default:app"
    );
    let object_ref = |v: &serde_json::Value| positional(v, &["name", "uid"]);
    let cases = [
        (
            "kubernetes.io",
            positional(&kube, &["namespace", "serviceaccount", "pod"]),
        ),
        (
            "kubernetes.io.serviceaccount",
            json!({"namespace": "default", "serviceaccount": object_ref(&kube["serviceaccount"]),
                   "pod": kube["pod"]}),
        ),
        (
            "kubernetes.io.pod",
            json!({"namespace": "default", "serviceaccount": kube["serviceaccount"],
                   "pod": object_ref(&kube["pod"])}),
        ),
    ];
    let exp_not_a_number = {
        let mut c = base.clone();
        c["exp"] = json!("soon");
        verify(&state, &key.sign(json!({"typ": "JWT"}), &c, true))
            .await
            .unwrap_err()
    };
    assert_eq!(exp_not_a_number.0, ErrorCode::InvalidToken);
    for (at, kubernetes) in cases {
        let mut c = base.clone();
        c["kubernetes.io"] = kubernetes;
        let token = key.sign(json!({"typ": "JWT"}), &c, true);
        let (code, message) = verify(&state, &token).await.unwrap_err();
        assert_eq!(code, exp_not_a_number.0, "{at}: {message}");
        assert!(
            message.starts_with(&format!(
                "token claims are malformed: a value of the wrong type or form at {at} (line 1"
            )),
            "{at}: {message}"
        );
        assert!(!message.contains("sa-uid-app"), "{message}");
    }
}

#[tokio::test]
async fn accepts_within_leeway_and_without_kid() {
    let (issuer, state) = one_cluster().await;
    let key = issuer.signing_key();
    let mut c = claims(&issuer, &TokenSpec::new("default", "app"));
    c["exp"] = json!(now() as i64 - 60);
    verify(&state, &key.sign(json!({}), &c, true))
        .await
        .expect("60s past exp is within the 150s leeway");
    let c = claims(&issuer, &TokenSpec::new("default", "app"));
    verify(&state, &key.sign(json!({}), &c, false))
        .await
        .expect("a token without kid is tried against the keys");
}

#[tokio::test]
async fn es256_clusters_work_and_algorithm_allow_list_applies() {
    let issuer = LocalIssuer::new(SigningKey::es256());
    issuer.serve().await.unwrap();
    let rs_only = format!(
        "apiVersion: esi.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: ec}}\nspec:\n  issuer: {}\n  audiences: [esi]\n  algorithms: [RS256]\n",
        issuer.issuer()
    );
    let state = common::state(&rs_only, common::settings(Duration::from_millis(300)));
    let (code, msg) = verify(&state, &common::token(&issuer, "default", "app"))
        .await
        .unwrap_err();
    assert_eq!(code, ErrorCode::InvalidToken);
    assert!(msg.contains("ES256 is not accepted"), "{msg}");
    let state = common::state(
        &common::cluster("ec", &issuer.issuer()),
        common::settings(Duration::from_millis(300)),
    );
    assert_eq!(
        verify(&state, &common::token(&issuer, "default", "app"))
            .await
            .unwrap()
            .cluster,
        "ec"
    );
}

#[tokio::test]
async fn unknown_kid_refreshes_once_then_fails() {
    let (issuer, state) = one_cluster().await;
    verify(&state, &common::token(&issuer, "default", "app"))
        .await
        .unwrap();
    let before = issuer.fetches();
    tokio::time::sleep(Duration::from_millis(350)).await; // let the cooldown since the first fetch pass
    let stranger = SigningKey::rsa();
    let forged = stranger.sign(
        json!({}),
        &claims(&issuer, &TokenSpec::new("default", "app")),
        true,
    );
    let (code, msg) = verify(&state, &forged).await.unwrap_err();
    assert_eq!(code, ErrorCode::InvalidToken);
    assert!(msg.contains("unknown"), "{msg}");
    assert_eq!(
        issuer.fetches(),
        before + 1,
        "exactly one refresh for an unknown kid"
    );
    // Same kid again at once: negative cache, no fetch.
    verify(&state, &forged).await.unwrap_err();
    assert_eq!(issuer.fetches(), before + 1);
}

#[tokio::test]
async fn random_kid_flood_is_bounded_by_the_cooldown() {
    let issuer = common::issuer().await;
    let yaml = common::cluster("alpha", &issuer.issuer()) + common::GENERATORS;
    let state = common::state(&yaml, common::settings(Duration::from_secs(30)));
    verify(&state, &common::token(&issuer, "default", "app"))
        .await
        .unwrap();
    let base = issuer.fetches();
    let key = issuer.signing_key();
    let c = claims(&issuer, &TokenSpec::new("default", "app"));
    let mut tasks = Vec::new();
    for i in 0..2000 {
        let token = key.sign(json!({"kid": format!("random-{i}")}), &c, false);
        let state = state.clone();
        tasks.push(tokio::spawn(async move {
            verify(&state, &token).await.is_err()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap(), "a random kid must not verify");
    }
    assert!(
        issuer.fetches() <= base + 1,
        "{} fetches for 2000 random kids",
        issuer.fetches() - base
    );
    // Valid tokens keep working during the flood.
    verify(&state, &common::token(&issuer, "default", "app"))
        .await
        .unwrap();
}

#[tokio::test]
async fn clusters_sharing_an_issuer_are_told_apart_by_their_keys() {
    // Two kind clusters: same issuer string, different keys, each published at its own URL.
    let a = common::issuer().await;
    let b = common::issuer().await;
    let shared = "https://kubernetes.default.svc.cluster.local";
    let a_jwks = format!("{}/openid/v1/jwks", a.issuer());
    let b_jwks = format!("{}/openid/v1/jwks", b.issuer());
    a.set_issuer(shared);
    b.set_issuer(shared);
    let yaml = common::cluster_jwks_uri("kind-a", shared, &a_jwks)
        + &common::cluster_jwks_uri("kind-b", shared, &b_jwks)
        + common::GENERATORS;
    let state = common::state(&yaml, common::settings(Duration::from_millis(300)));
    assert_eq!(
        verify(&state, &common::token(&a, "default", "app"))
            .await
            .unwrap()
            .cluster,
        "kind-a"
    );
    assert_eq!(
        verify(&state, &common::token(&b, "default", "app"))
            .await
            .unwrap()
            .cluster,
        "kind-b"
    );
    // A token from a third cluster with the same issuer but unregistered keys is refused.
    let c = LocalIssuer::new(SigningKey::rsa());
    c.set_issuer(shared);
    let (code, _) = verify(&state, &common::token(&c, "default", "app"))
        .await
        .unwrap_err();
    assert_eq!(code, ErrorCode::InvalidToken);
}

#[tokio::test]
async fn issuer_down_with_cached_keys_still_verifies() {
    let (issuer, state) = one_cluster().await;
    verify(&state, &common::token(&issuer, "default", "app"))
        .await
        .unwrap();
    issuer.set_down(true);
    tokio::time::sleep(Duration::from_millis(350)).await;
    verify(&state, &common::token(&issuer, "default", "app"))
        .await
        .expect("stale-if-error");
    // An unknown kid while the issuer is down is a bad token, not an outage.
    let forged = SigningKey::rsa().sign(
        json!({}),
        &claims(&issuer, &TokenSpec::new("default", "app")),
        true,
    );
    assert_eq!(
        verify(&state, &forged).await.unwrap_err().0,
        ErrorCode::InvalidToken
    );
}

#[tokio::test]
async fn issuer_down_without_cached_keys_is_unavailable() {
    let issuer = common::issuer().await;
    issuer.set_down(true);
    let state = common::state(
        &common::cluster("alpha", &issuer.issuer()),
        common::settings(Duration::from_millis(300)),
    );
    let (code, msg) = verify(&state, &common::token(&issuer, "default", "app"))
        .await
        .unwrap_err();
    assert_eq!(code, ErrorCode::BackendUnavailable, "{msg}");
    assert_eq!(code.http_status(), 503);
    // The issuer comes back: after the cooldown the next request fetches and succeeds.
    issuer.set_down(false);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match verify(&state, &common::token(&issuer, "default", "app")).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e.0, ErrorCode::BackendUnavailable);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("issuer back up but still failing: {e:?}"),
        }
    }
}

#[tokio::test]
async fn key_rotation_is_picked_up_and_old_tokens_stay_valid() {
    let (issuer, state) = one_cluster().await;
    let old_token = common::token(&issuer, "default", "app");
    verify(&state, &old_token).await.unwrap();
    issuer.rotate(SigningKey::rsa());
    let new_token = common::token(&issuer, "default", "app");
    let deadline = Instant::now() + Duration::from_secs(5);
    while verify(&state, &new_token).await.is_err() {
        assert!(Instant::now() < deadline, "new key never picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    verify(&state, &old_token)
        .await
        .expect("old key still published");
    // Once the old key is retired and the cache refreshed, old tokens stop verifying.
    issuer.retire_old_keys();
    let newer = issuer.rotate(SigningKey::rsa());
    let _ = newer;
    let newest_token = common::token(&issuer, "default", "app");
    let deadline = Instant::now() + Duration::from_secs(5);
    while verify(&state, &newest_token).await.is_err() {
        assert!(Instant::now() < deadline, "newest key never picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        verify(&state, &old_token).await.unwrap_err().0,
        ErrorCode::InvalidToken
    );
}

#[tokio::test]
async fn inline_jwks_needs_no_network() {
    let issuer = LocalIssuer::new(SigningKey::rsa());
    issuer.set_issuer("https://private.cluster.internal");
    let yaml = format!(
        "apiVersion: esi.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: private}}\nspec:\n  issuer: https://private.cluster.internal\n  keys:\n    jwks: {}\n  audiences: [esi]\n",
        issuer.jwks()
    );
    let state = common::state(&yaml, common::settings(Duration::from_millis(300)));
    assert_eq!(
        verify(&state, &common::token(&issuer, "default", "app"))
            .await
            .unwrap()
            .cluster,
        "private"
    );
}

/// Requests an issuer is answering now, and the most it answered at once.
#[derive(Default)]
struct Gauge {
    now: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

/// Serves `issuer` on loopback with every answer `delay` late, counted in `gauge`.
async fn serve_slowly(issuer: &Arc<LocalIssuer>, delay: Duration, gauge: Arc<Gauge>) {
    use std::sync::atomic::Ordering::SeqCst;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    issuer.set_issuer(&format!("http://{}", listener.local_addr().unwrap()));
    let app = issuer.router().layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let gauge = gauge.clone();
            async move {
                let now = gauge.now.fetch_add(1, SeqCst) + 1;
                gauge.most.fetch_max(now, SeqCst);
                tokio::time::sleep(delay).await;
                let answer = next.run(req).await;
                gauge.now.fetch_sub(1, SeqCst);
                answer
            }
        },
    ));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
}

#[tokio::test]
async fn a_start_waits_for_a_slow_issuer_only_until_its_deadline() {
    let fast = common::issuer().await;
    let slow = LocalIssuer::new(SigningKey::rsa());
    // Discovery and then the JWKS, each 800 ms late: 1.6 s, well within the fetch timeout.
    serve_slowly(&slow, Duration::from_millis(800), Arc::default()).await;
    let yaml = common::cluster("alpha", &fast.issuer())
        + &common::cluster("beta", &slow.issuer())
        + common::GENERATORS;
    let state = common::state(&yaml, common::settings(Duration::from_millis(300)));

    let started = Instant::now();
    let got = state.prefetch_keys(Duration::from_millis(300)).await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1200), "waited {took:?}");
    assert_eq!(
        got,
        esi_federation::state::Prefetched {
            issuers: 2,
            cached: 1
        }
    );
    assert_eq!(fast.fetches(), 1);

    // The slow issuer's fetch goes on without anyone waiting for it ...
    let deadline = Instant::now() + Duration::from_secs(10);
    while slow.fetches() == 0 {
        assert!(
            Instant::now() < deadline,
            "the background fetch never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... and its keys serve the first request without another fetch.
    verify(&state, &common::token(&slow, "default", "app"))
        .await
        .unwrap();
    assert_eq!(slow.fetches(), 1);
}

#[tokio::test]
async fn a_start_fetches_from_a_bounded_number_of_issuers_at_once() {
    use std::sync::atomic::Ordering::SeqCst;
    let gauge = Arc::new(Gauge::default());
    let mut issuers = Vec::new();
    let mut yaml = String::new();
    for i in 0..40 {
        let issuer = LocalIssuer::new(SigningKey::es256());
        serve_slowly(&issuer, Duration::from_millis(50), gauge.clone()).await;
        yaml += &common::cluster(&format!("c{i}"), &issuer.issuer());
        issuers.push(issuer);
    }
    let state = common::state(&yaml, common::settings(Duration::from_millis(300)));

    let got = state.prefetch_keys(Duration::from_secs(20)).await;
    assert_eq!(
        got,
        esi_federation::state::Prefetched {
            issuers: 40,
            cached: 40
        }
    );
    let most = gauge.most.load(SeqCst);
    assert!(
        (2..=esi_federation::state::PREFETCH_CONCURRENCY).contains(&most),
        "{most} fetches at once"
    );
    assert!(issuers.iter().all(|i| i.fetches() == 1));
    // Nothing is left to fetch: a second prefetch has nothing to do.
    assert_eq!(
        state.prefetch_keys(Duration::from_secs(1)).await,
        Default::default()
    );
}
