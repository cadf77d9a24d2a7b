//! What the FAKES of relying parties share (Quay's robot federation, Cloudsmith's OpenID
//! Connect exchange): the federation as an OIDC issuer serving its discovery document and JWKS
//! from its real router on a real socket, and a relying party's check of an identity token
//! against them, fetched over HTTP as the party fetches them. Each fake answers the failures in
//! its own party's words.

#![allow(dead_code)]

use std::sync::Arc;

use aws_lc_rs::signature;
use axum::Router;
use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use esi_api::{Identity, ObjectRef};
use esi_backends::identity::{Issuer, KeyAlgorithm, generate_key_pem};
use esi_federation::config;
use esi_federation::lease::LeaseKeys;
use esi_federation::state::{AppState, Settings};
use secrecy::ExposeSecret as _;
use serde_json::Value;

/// A base64url JSON part of a compact JWS.
pub fn part(p: &str) -> Option<Value> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()
}

/// The unverified claims of a compact JWS.
pub fn unverified_claims(token: &str) -> Option<Value> {
    token.split('.').nth(1).and_then(part)
}

/// A JWT's `aud`, one string or a list of them (RFC 7519 §4.1.3), as a list.
pub fn audiences(claims: &Value) -> Vec<&str> {
    match &claims["aud"] {
        Value::String(a) => vec![a.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// The `(user, password)` of a Basic `Authorization` header.
pub fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Twelve random bytes, base64url: a fake's token ids.
pub fn random() -> String {
    let mut b = [0u8; 12];
    aws_lc_rs::rand::fill(&mut b).expect("random bytes");
    URL_SAFE_NO_PAD.encode(b)
}

/// A token a fake issues, shaped as a JWT (its signature is random bytes: only the fake checks
/// its tokens, by looking them up), with `exp` at `exp` when given.
pub fn fake_jwt(issuer: &str, sub: &str, now: i64, exp: Option<i64>) -> String {
    let mut claims = serde_json::json!({
        "iss": issuer, "aud": issuer, "sub": sub, "iat": now, "nbf": now, "jti": random(),
    });
    if let Some(exp) = exp {
        claims["exp"] = exp.into();
    }
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT","kid":"fake"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(random())
    )
}

/// Serves `app` on a loopback port; its base URL.
pub async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    base
}

/// The federation as an OIDC issuer at its own loopback URL, signing with a fresh `alg` key,
/// its router serving the discovery document and JWKS on a real socket; `yaml(url)` is the
/// configuration it loads (`None`: none, the issuer documents are served all the same).
pub async fn federation(
    alg: KeyAlgorithm,
    yaml: Option<&dyn Fn(&str) -> String>,
) -> (Arc<Issuer>, AppState, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let pem = generate_key_pem(alg).expect("key");
    let issuer = Arc::new(Issuer::new(&url, pem.expose_secret()).expect("issuer"));
    let state = AppState::serving(
        Settings::default(),
        LeaseKeys::ephemeral(),
        Some(issuer.clone()),
    );
    if let Some(yaml) = yaml {
        let snapshot =
            config::load_text("test.yaml", &yaml(&url), &state).unwrap_or_else(|e| panic!("{e}"));
        state.install(snapshot);
    }
    let router = esi_federation::router(state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    (issuer, state, url)
}

/// A verified caller `namespace/sa` of cluster `alpha`.
pub fn identity(namespace: &str, sa: &str) -> Identity {
    Identity {
        cluster: "alpha".into(),
        issuer: "https://oidc.alpha.example".into(),
        namespace: namespace.into(),
        service_account: ObjectRef {
            name: sa.into(),
            uid: "sa-uid".into(),
        },
        pod: None,
        subject: format!("system:serviceaccount:{namespace}:{sa}"),
        token_expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_secs(600),
    }
}

/// Why a relying party's check of a token's signature failed, for a fake to answer in its
/// party's words.
#[derive(Debug, PartialEq, Eq)]
pub enum SignatureFailure {
    /// Not a compact JWS: which part is wrong.
    Malformed(&'static str),
    /// The header names no `kid`.
    NoKid,
    /// The discovery document could not be fetched or read.
    Discovery(String),
    /// The JWKS could not be fetched or read.
    Jwks(String),
    /// The JWKS has no key of the token's `kid`.
    UnknownKid(String),
    /// The key of the token's `kid` is no RSA key.
    NotRsa(String),
    /// `alg` is neither RS256 nor RS384.
    Algorithm,
    /// The signature or the key's members are not base64url.
    Encoding,
    /// The signature does not verify.
    Signature,
    /// The claims are not base64url JSON.
    Payload,
}

/// A token whose signature verified: its claims, and the issuer's discovery document.
pub struct Verified {
    pub claims: Value,
    pub discovery: Value,
}

/// A relying party's signature check of `token` as an identity token of `issuer`: the
/// discovery document at `{issuer}/.well-known/openid-configuration` and the JWKS at its
/// `jwks_uri` fetched over HTTP (each URL handed to `fetched` first), the key of the header's
/// `kid` required to be RSA, `alg` RS256 or RS384, the signature checked with aws-lc-rs. The
/// claims are the party's to check.
pub async fn verify_rsa(
    token: &str,
    issuer: &str,
    fetched: impl Fn(String),
) -> Result<Verified, SignatureFailure> {
    use SignatureFailure as F;
    let (input, sig) = token
        .rsplit_once('.')
        .ok_or(F::Malformed("Not enough segments"))?;
    let (header, claims) = input
        .split_once('.')
        .ok_or(F::Malformed("Not enough segments"))?;
    let header = part(header).ok_or(F::Malformed("Invalid header padding"))?;
    let kid = header["kid"].as_str().ok_or(F::NoKid)?;
    let http = reqwest::Client::new();
    let fetch = |url: String| {
        fetched(url.clone());
        let http = http.clone();
        async move {
            let resp = http.get(&url).send().await.map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("HTTP GET error: {}", resp.status().as_u16()));
            }
            resp.json::<Value>().await.map_err(|e| e.to_string())
        }
    };
    let discovery_url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let discovery = fetch(discovery_url).await.map_err(F::Discovery)?;
    let jwks_uri = discovery["jwks_uri"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let jwks = fetch(jwks_uri).await.map_err(F::Jwks)?;
    let key = jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["kid"] == kid)
        .ok_or_else(|| F::UnknownKid(kid.to_owned()))?;
    if key["kty"] != "RSA" {
        return Err(F::NotRsa(kid.to_owned()));
    }
    let alg = match header["alg"].as_str() {
        Some("RS256") => &signature::RSA_PKCS1_2048_8192_SHA256,
        Some("RS384") => &signature::RSA_PKCS1_2048_8192_SHA384,
        _ => return Err(F::Algorithm),
    };
    let b64 = |v: &Value| URL_SAFE_NO_PAD.decode(v.as_str().unwrap_or_default());
    let (Ok(n), Ok(e), Ok(sig)) = (b64(&key["n"]), b64(&key["e"]), URL_SAFE_NO_PAD.decode(sig))
    else {
        return Err(F::Encoding);
    };
    signature::RsaPublicKeyComponents { n, e }
        .verify(alg, input.as_bytes(), &sig)
        .map_err(|_| F::Signature)?;
    let claims = part(claims).ok_or(F::Payload)?;
    Ok(Verified { claims, discovery })
}

/// A kind that signs with the federation's issuer, `spec` its spec as flow YAML (generator
/// `default/pull`): refused at load by a serving federation with no issuer, or with one signing
/// ES256 (the parties verify RS256 only), naming the resource and the fix; loaded by a
/// configuration check, which knows no issuer, and then refusing every request.
pub async fn needs_an_rsa_issuer(kind: &str, spec: &str) {
    use crate::common;
    let cluster = common::issuer().await;
    let yaml = format!(
        "{}{}apiVersion: esi.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: pull, namespace: default}}\nspec: {spec}\n",
        common::cluster("alpha", &cluster.issuer()),
        common::GENERATORS
    );
    let state = AppState::serving(Settings::default(), LeaseKeys::ephemeral(), None);
    let err = config::load_text("test.yaml", &yaml, &state)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("{kind}/default/pull")), "{err}");
    assert!(
        err.contains("has none: start it with --issuer-url"),
        "{err}"
    );
    let pem = generate_key_pem(KeyAlgorithm::Es256).unwrap();
    let es = Issuer::new("https://esi.example.com", pem.expose_secret()).unwrap();
    let state = AppState::serving(
        Settings::default(),
        LeaseKeys::ephemeral(),
        Some(Arc::new(es)),
    );
    let err = config::load_text("test.yaml", &yaml, &state)
        .unwrap_err()
        .to_string();
    assert!(err.contains("signs with ES256"), "{err}");
    let state = common::state(&yaml, Settings::default());
    let (status, _, json, _) = common::send(
        &state,
        common::post(
            &format!("/v1/generators/default/{kind}/pull"),
            Some(&common::token(&cluster, "default", "app")),
            None,
        ),
    )
    .await;
    assert_eq!(status, 502, "{json}");
    assert_eq!(common::code(&json), "backend_rejected");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not configured as an OIDC issuer"),
        "{json}"
    );
}

/// An identity token `issuer` signs at `at` for `id`, audience `audience`, living five minutes
/// (what the generators ask for), as a party would be shown it.
pub fn mint_at(issuer: &Issuer, id: &Identity, audience: &str, at: jiff::Timestamp) -> String {
    issuer
        .mint_at(
            &esi_backends::identity::TokenRequest {
                identity: id,
                generator: "g",
                audiences: &[audience.to_owned()],
                lifetime: std::time::Duration::from_secs(300),
                aws_session_tags: false,
            },
            at,
        )
        .unwrap()
        .token
        .expose_secret()
        .to_owned()
}

/// `token` with its `sub` changed after signing (the signature left as it was).
pub fn forged_sub(token: &str, sub: &str) -> String {
    let (h, rest) = token.split_once('.').unwrap();
    let (c, s) = rest.split_once('.').unwrap();
    let mut claims = part(c).unwrap();
    claims["sub"] = Value::from(sub);
    format!("{h}.{}.{s}", URL_SAFE_NO_PAD.encode(claims.to_string()))
}
