//! A local OIDC issuer: signing keys generated in-process, a discovery document and a JWKS
//! served over HTTP, and Kubernetes-shaped ServiceAccount tokens.
//!
//! `esi-federation dev` uses it as its built-in dev cluster; tests use it as the issuer of
//! every cluster they register (with the fault switches: take it down, rotate keys, count
//! fetches). It is not a production issuer.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

/// A signing key of the local issuer.
pub struct SigningKey {
    /// `kid`.
    pub kid: String,
    kind: KeyKind,
}

enum KeyKind {
    Rsa(RsaKeyPair),
    Es256(EcdsaKeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg())
            .finish()
    }
}

fn random_kid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl SigningKey {
    /// A fresh RSA-2048 key (RS256).
    pub fn rsa() -> Self {
        // Key generation only fails when the OS has no entropy source.
        let kp = RsaKeyPair::generate(KeySize::Rsa2048)
            .unwrap_or_else(|e| panic!("RSA key generation failed: {e}"));
        SigningKey {
            kid: random_kid(),
            kind: KeyKind::Rsa(kp),
        }
    }

    /// A fresh P-256 key (ES256).
    pub fn es256() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap_or_else(|e| panic!("EC key generation failed: {e}"));
        let kp =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
                .unwrap_or_else(|e| panic!("EC key parse failed: {e}"));
        SigningKey {
            kid: random_kid(),
            kind: KeyKind::Es256(kp),
        }
    }

    /// The JOSE algorithm this key signs with.
    pub fn alg(&self) -> &'static str {
        match self.kind {
            KeyKind::Rsa(_) => "RS256",
            KeyKind::Es256(_) => "ES256",
        }
    }

    /// The public JWK.
    pub fn jwk(&self) -> serde_json::Value {
        match &self.kind {
            KeyKind::Rsa(kp) => {
                let public = kp.public_key();
                json!({
                    "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                    "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
                    "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
                })
            }
            KeyKind::Es256(kp) => {
                let point = kp.public_key().as_ref();
                json!({
                    "kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256", "kid": self.kid,
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
                })
            }
        }
    }

    /// The raw public key bytes (PKCS#1 DER for RSA, uncompressed point for EC), as an attacker
    /// would use them as an HMAC secret.
    pub fn public_bytes(&self) -> Vec<u8> {
        match &self.kind {
            KeyKind::Rsa(kp) => kp.public_key().as_ref().to_vec(),
            KeyKind::Es256(kp) => kp.public_key().as_ref().to_vec(),
        }
    }

    /// Signs `header.claims` and returns the compact JWS. `header` gets `alg` (and `kid` unless
    /// `with_kid` is false) filled in when absent.
    pub fn sign(
        &self,
        mut header: serde_json::Value,
        claims: &serde_json::Value,
        with_kid: bool,
    ) -> String {
        if let Some(h) = header.as_object_mut() {
            h.entry("alg").or_insert_with(|| json!(self.alg()));
            if with_kid {
                h.entry("kid").or_insert_with(|| json!(self.kid));
            }
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let sig = match &self.kind {
            KeyKind::Rsa(kp) => {
                let mut sig = vec![0u8; kp.public_modulus_len()];
                kp.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .unwrap_or_else(|e| panic!("RSA signing failed: {e}"));
                sig
            }
            KeyKind::Es256(kp) => kp
                .sign(&rng, input.as_bytes())
                .unwrap_or_else(|e| panic!("EC signing failed: {e}"))
                .as_ref()
                .to_vec(),
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

/// The claims of a Kubernetes bound ServiceAccount token.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// `aud`.
    pub audience: Vec<String>,
    /// Namespace.
    pub namespace: String,
    /// ServiceAccount name.
    pub service_account: String,
    /// Pod name, if bound to a pod.
    pub pod: Option<String>,
    /// Lifetime in seconds from now (negative for an expired token).
    pub lifetime: i64,
}

impl TokenSpec {
    /// A token for `namespace/service_account` with audience `esi`, one hour, bound to a pod.
    pub fn new(namespace: &str, service_account: &str) -> Self {
        TokenSpec {
            audience: vec!["esi".to_owned()],
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
            pod: Some(format!("{service_account}-7c9f8d-abcde")),
            lifetime: 3600,
        }
    }

    /// The claims, Kubernetes-shaped, issued by `issuer`.
    pub fn claims(&self, issuer: &str) -> serde_json::Value {
        let now = jiff::Timestamp::now().as_second();
        let mut kube = json!({
            "namespace": self.namespace,
            "serviceaccount": {"name": self.service_account, "uid": format!("sa-uid-{}", self.service_account)},
        });
        if let Some(pod) = &self.pod {
            kube["pod"] = json!({"name": pod, "uid": format!("pod-uid-{pod}")});
            kube["node"] = json!({"name": "node-1", "uid": "node-uid-1"});
        }
        json!({
            "iss": issuer,
            "sub": format!("system:serviceaccount:{}:{}", self.namespace, self.service_account),
            "aud": self.audience,
            "exp": now + self.lifetime,
            "iat": now,
            "nbf": now,
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": kube,
        })
    }
}

/// A local issuer: keys, the published JWKS, and fault switches.
pub struct LocalIssuer {
    issuer: Mutex<String>,
    signing: Mutex<Arc<SigningKey>>,
    published: Mutex<Vec<Arc<SigningKey>>>,
    fetches: AtomicUsize,
    down: AtomicBool,
}

impl std::fmt::Debug for LocalIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIssuer")
            .field("issuer", &self.issuer())
            .finish()
    }
}

impl LocalIssuer {
    /// An issuer signing with `key`, publishing it. Its URL is set by [`LocalIssuer::serve`]
    /// or [`LocalIssuer::set_issuer`].
    pub fn new(key: SigningKey) -> Arc<Self> {
        let key = Arc::new(key);
        Arc::new(LocalIssuer {
            issuer: Mutex::new(String::new()),
            signing: Mutex::new(key.clone()),
            published: Mutex::new(vec![key]),
            fetches: AtomicUsize::new(0),
            down: AtomicBool::new(false),
        })
    }

    /// The issuer URL (`iss`).
    pub fn issuer(&self) -> String {
        self.issuer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets the issuer URL.
    pub fn set_issuer(&self, issuer: &str) {
        *self.issuer.lock().unwrap_or_else(|p| p.into_inner()) = issuer.to_owned();
    }

    /// The key signing new tokens.
    pub fn signing_key(&self) -> Arc<SigningKey> {
        self.signing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Rotates: `key` signs from now on and is published next to the old keys.
    pub fn rotate(&self, key: SigningKey) -> Arc<SigningKey> {
        let key = Arc::new(key);
        self.published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(key.clone());
        *self.signing.lock().unwrap_or_else(|p| p.into_inner()) = key.clone();
        key
    }

    /// Stops publishing every key but the signing one.
    pub fn retire_old_keys(&self) {
        let signing = self.signing_key();
        self.published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k| Arc::ptr_eq(k, &signing));
    }

    /// The JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = self
            .published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|k| k.jwk())
            .collect();
        json!({ "keys": keys })
    }

    /// JWKS fetches served so far.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Makes discovery and JWKS answer 503 (`true`) or work again.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Mints a token with the signing key.
    pub fn mint(&self, spec: &TokenSpec) -> String {
        self.signing_key()
            .sign(json!({"typ": "JWT"}), &spec.claims(&self.issuer()), true)
    }

    /// Routes serving `/.well-known/openid-configuration` and `/openid/v1/jwks` (relative to
    /// where the router is nested).
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/openid/v1/jwks", get(jwks))
            .with_state(self.clone())
    }

    /// Serves the issuer on 127.0.0.1 on a free port, sets its URL, and returns it.
    pub async fn serve(self: &Arc<Self>) -> std::io::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        self.set_issuer(&url);
        let app = self.router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(url)
    }
}

async fn discovery(State(issuer): State<Arc<LocalIssuer>>) -> Response {
    if issuer.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let iss = issuer.issuer();
    axum::Json(json!({
        "issuer": iss,
        "jwks_uri": format!("{iss}/openid/v1/jwks"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }))
    .into_response()
}

async fn jwks(State(issuer): State<Arc<LocalIssuer>>) -> Response {
    if issuer.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    issuer.fetches.fetch_add(1, Ordering::SeqCst);
    axum::Json(issuer.jwks()).into_response()
}
