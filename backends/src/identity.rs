//! The federation as an OIDC issuer: its own signing keys, its discovery document and JWKS, and
//! the identity tokens it signs for verified workloads.
//!
//! A workload's ServiceAccount token is issued by its cluster and audienced to esi; handing it
//! to a third party would let that party replay it to esi, and a private cluster's issuer is
//! not reachable by a cloud provider anyway. So the federation signs tokens of its own: one
//! issuer URL that AWS IAM, Google workload identity federation, Entra ID federated
//! credentials, Quay robot federation and any other OIDC relying party can trust once, for
//! every registered cluster.
//!
//! - **Keys** come as PEM text (from a file, an environment variable or AWS Secrets Manager,
//!   as the lease keys do): one or more private keys, RSA (2048 bits or more, RS256; PKCS#8 or
//!   PKCS#1) or EC P-256 (ES256; PKCS#8 or SEC1). The first signs; all are published in the
//!   JWKS, so a rotation adds the new key second, waits for relying parties' caches, moves it
//!   first, and later drops the old one. A key's `kid` is its RFC 7638 thumbprint, the same
//!   on every replica and after every restart.
//! - **Discovery**: [`DISCOVERY_PATH`] and [`JWKS_PATH`] under the issuer URL, which must be
//!   `https` (plain `http` only on a loopback host, for dev mode and tests).
//! - **Tokens** ([`Issuer::mint`]): `iss`, `sub` ([`subject`]:
//!   `<cluster>:system:serviceaccount:<namespace>:<name>`, unique across clusters, so a trust
//!   policy on `sub` cannot match the same name in another cluster), `aud`, `iat`, `nbf`,
//!   `exp`, a random `jti`, and an `esi` claim naming the cluster, namespace, ServiceAccount,
//!   Pod and the generator that asked; on request ([`TokenRequest::aws_session_tags`]) AWS's
//!   `https://aws.amazon.com/tags` claim, so `AssumeRoleWithWebIdentity` tags the session with
//!   the identity ([`aws_identity_tags`]) as `AWSAssumeRole` does.

use std::fmt;
use std::time::Duration;

use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use esi_api::{Identity, ObjectRef};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;
use secrecy::SecretString;
use serde::Serialize;

use crate::BackendError;

/// Where relying parties find the discovery document, under the issuer URL.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Where the discovery document points for the keys, under the issuer URL (the path a
/// Kubernetes API server uses).
pub const JWKS_PATH: &str = "/openid/v1/jwks";
/// Session tag keys carrying the identity, in `AWSAssumeRole`'s sessions and in identity
/// tokens' AWS tags claim (see [`aws_identity_tags`]).
pub const AWS_TAG_CLUSTER: &str = "esi-cluster";
/// See [`AWS_TAG_CLUSTER`].
pub const AWS_TAG_NAMESPACE: &str = "kubernetes-namespace";
/// See [`AWS_TAG_CLUSTER`].
pub const AWS_TAG_SERVICE_ACCOUNT: &str = "kubernetes-service-account";
/// See [`AWS_TAG_CLUSTER`].
pub const AWS_TAG_POD: &str = "kubernetes-pod-name";

/// The AWS session tags naming `identity`: `esi-cluster`, `kubernetes-namespace`,
/// `kubernetes-service-account` and, for a token bound to a Pod, `kubernetes-pod-name`; values
/// kept to STS's character set (letters, digits, spaces and `_.:/=+-@`) and 256 characters.
pub fn aws_identity_tags(identity: &Identity) -> Vec<(&'static str, String)> {
    let clean = |v: &str| {
        v.chars()
            .filter(|c| c.is_alphanumeric() || "_.:/=+-@".contains(*c))
            .take(256)
            .collect::<String>()
    };
    let mut tags = vec![
        (AWS_TAG_CLUSTER, clean(&identity.cluster)),
        (AWS_TAG_NAMESPACE, clean(&identity.namespace)),
        (
            AWS_TAG_SERVICE_ACCOUNT,
            clean(&identity.service_account.name),
        ),
    ];
    if let Some(pod) = &identity.pod {
        tags.push((AWS_TAG_POD, clean(&pod.name)));
    }
    tags
}

/// The claim AWS reads session tags from in `AssumeRoleWithWebIdentity`.
pub const AWS_TAGS_CLAIM: &str = "https://aws.amazon.com/tags";

/// The fewest bits of an RSA signing key.
pub const MIN_RSA_BITS: usize = 2048;
/// The most keys one issuer publishes.
pub const MAX_KEYS: usize = 8;
/// The longest issuer URL.
pub const MAX_URL_LEN: usize = 255;

/// Why an issuer cannot be built. Messages name the key by position, never its bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuerError {
    /// The issuer URL is unusable.
    #[error("issuer URL {url:?} {why}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// No key in the text.
    #[error(
        "the issuer keys hold no PEM private key (expected `-----BEGIN PRIVATE KEY-----` blocks)"
    )]
    NoKeys,
    /// More keys than published.
    #[error("the issuer keys hold {0} keys; at most {MAX_KEYS}")]
    TooManyKeys(usize),
    /// A key that cannot sign.
    #[error("issuer key {index} (1-based, in PEM order) {why}")]
    Key {
        /// 1-based position.
        index: usize,
        /// What is wrong with it.
        why: String,
    },
    /// The same key twice.
    #[error("issuer keys {first} and {second} are the same key")]
    Duplicate {
        /// 1-based position of the first copy.
        first: usize,
        /// 1-based position of the second.
        second: usize,
    },
}

enum KeyPair {
    Rsa(RsaKeyPair),
    Es256(EcdsaKeyPair),
}

struct SigningKey {
    kid: String,
    key: KeyPair,
}

impl SigningKey {
    fn alg(&self) -> &'static str {
        match self.key {
            KeyPair::Rsa(_) => "RS256",
            KeyPair::Es256(_) => "ES256",
        }
    }

    /// The public JWK's members, in RFC 7638's order (the thumbprint's input when `kid` and
    /// the optional members are left out).
    fn public_members(&self) -> Vec<(&'static str, String)> {
        match &self.key {
            KeyPair::Rsa(kp) => {
                let public = kp.public_key();
                vec![
                    (
                        "e",
                        URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
                    ),
                    ("kty", "RSA".to_owned()),
                    (
                        "n",
                        URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
                    ),
                ]
            }
            KeyPair::Es256(kp) => {
                // An uncompressed SEC1 point: 0x04 || x || y.
                let point = kp.public_key().as_ref();
                vec![
                    ("crv", "P-256".to_owned()),
                    ("kty", "EC".to_owned()),
                    ("x", URL_SAFE_NO_PAD.encode(&point[1..33])),
                    ("y", URL_SAFE_NO_PAD.encode(&point[33..65])),
                ]
            }
        }
    }

    fn jwk(&self) -> serde_json::Value {
        let mut jwk: serde_json::Map<String, serde_json::Value> = self
            .public_members()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into()))
            .collect();
        jwk.insert("kid".to_owned(), self.kid.clone().into());
        jwk.insert("use".to_owned(), "sig".into());
        jwk.insert("alg".to_owned(), self.alg().into());
        jwk.into()
    }

    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, aws_lc_rs::error::Unspecified> {
        let rng = SystemRandom::new();
        match &self.key {
            KeyPair::Rsa(kp) => {
                let mut sig = vec![0u8; kp.public_modulus_len()];
                kp.sign(&signature::RSA_PKCS1_SHA256, &rng, input, &mut sig)?;
                Ok(sig)
            }
            KeyPair::Es256(kp) => Ok(kp.sign(&rng, input)?.as_ref().to_vec()),
        }
    }
}

/// The RFC 7638 thumbprint of a key's public members (SHA-256, base64url).
fn thumbprint(members: &[(&'static str, String)]) -> String {
    // The members are fixed names and base64url or fixed values: no JSON escaping needed.
    let canonical = members
        .iter()
        .map(|(k, v)| format!("\"{k}\":\"{v}\""))
        .collect::<Vec<_>>()
        .join(",");
    URL_SAFE_NO_PAD.encode(digest::digest(
        &digest::SHA256,
        format!("{{{canonical}}}").as_bytes(),
    ))
}

fn parse_key(index: usize, der: &PrivateKeyDer<'_>) -> Result<SigningKey, IssuerError> {
    let bad = |why: String| IssuerError::Key { index, why };
    let key = match der {
        PrivateKeyDer::Pkcs1(k) => KeyPair::Rsa(
            RsaKeyPair::from_der(k.secret_pkcs1_der())
                .map_err(|e| bad(format!("is not a usable RSA key: {e}")))?,
        ),
        PrivateKeyDer::Sec1(k) => KeyPair::Es256(
            EcdsaKeyPair::from_private_key_der(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                k.secret_sec1_der(),
            )
            .map_err(|_| bad("is not a usable EC P-256 key".to_owned()))?,
        ),
        PrivateKeyDer::Pkcs8(k) => {
            let der = k.secret_pkcs8_der();
            match RsaKeyPair::from_pkcs8(der) {
                Ok(kp) => KeyPair::Rsa(kp),
                Err(rsa) => {
                    match EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    {
                        Ok(kp) => KeyPair::Es256(kp),
                        Err(_) => {
                            return Err(bad(format!(
                                "is neither a usable RSA key ({MIN_RSA_BITS} bits or more; as RSA: {rsa}) nor an EC P-256 key (the algorithms relying parties take: RS256, ES256)"
                            )));
                        }
                    }
                }
            }
        }
        _ => return Err(bad("is of a type esi cannot sign with".to_owned())),
    };
    if let KeyPair::Rsa(kp) = &key {
        let bits = kp.public_modulus_len() * 8;
        if bits < MIN_RSA_BITS {
            return Err(bad(format!(
                "is an RSA key of {bits} bits; at least {MIN_RSA_BITS}"
            )));
        }
    }
    let mut signing = SigningKey {
        kid: String::new(),
        key,
    };
    signing.kid = thumbprint(&signing.public_members());
    Ok(signing)
}

/// `https://host[:port][/path]`, or `http://` on a loopback host; a trailing `/` is dropped.
fn check_url(url: &str) -> Result<String, IssuerError> {
    let bad = |why| IssuerError::Url {
        url: url.to_owned(),
        why,
    };
    if url.len() > MAX_URL_LEN {
        return Err(bad("is longer than 255 bytes"));
    }
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        ("https://", rest.trim_end_matches('/'))
    } else if let Some(rest) = url.strip_prefix("http://") {
        let rest = rest.trim_end_matches('/');
        let host = rest.split(['/', ':']).next().unwrap_or_default();
        let loopback = host == "localhost"
            || host == "127.0.0.1"
            || rest.starts_with("[::1]")
            || host.starts_with("127.");
        if !loopback {
            return Err(bad(
                "must use https (relying parties fetch its keys; http only on a loopback host)",
            ));
        }
        ("http://", rest)
    } else {
        return Err(bad("must start with https://"));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("has no host"));
    }
    if rest
        .bytes()
        .any(|b| matches!(b, b'?' | b'#' | b'@') || b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(bad(
            "must not hold a query, a fragment, credentials or whitespace",
        ));
    }
    Ok(format!("{scheme}{rest}"))
}

/// The federation's OIDC issuer: its URL and signing keys. Built once at start-up.
///
/// `Debug` shows the URL and the keys' ids only.
pub struct Issuer {
    url: String,
    keys: Vec<SigningKey>,
    discovery: String,
    jwks: String,
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issuer")
            .field("url", &self.url)
            .field(
                "kids",
                &self.keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A signed identity token.
pub struct Minted {
    /// The compact JWS.
    pub token: SecretString,
    /// Its `exp`.
    pub expires_at: jiff::Timestamp,
}

/// What an identity token is minted for.
#[derive(Debug, Clone, Copy)]
pub struct TokenRequest<'a> {
    /// The verified caller.
    pub identity: &'a Identity,
    /// The `namespace/kind/name` of the generator asking.
    pub generator: &'a str,
    /// `aud`: one audience is written as a string, several as an array.
    pub audiences: &'a [String],
    /// How long the token lives.
    pub lifetime: Duration,
    /// Whether to add AWS's session tags claim ([`AWS_TAGS_CLAIM`]) with
    /// [`aws_identity_tags`].
    pub aws_session_tags: bool,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Audience<'a> {
    One(&'a str),
    Many(&'a [String]),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EsiClaim<'a> {
    cluster: &'a str,
    namespace: &'a str,
    service_account: &'a ObjectRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<&'a ObjectRef>,
    generator: &'a str,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: String,
    aud: Audience<'a>,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
    esi: EsiClaim<'a>,
    #[serde(
        rename = "https://aws.amazon.com/tags",
        skip_serializing_if = "Option::is_none"
    )]
    aws_tags: Option<AwsTags>,
}

/// AWS's session tags claim: every tag's value as a one-element list, as AWS documents it.
#[derive(Serialize)]
struct AwsTags {
    principal_tags: std::collections::BTreeMap<&'static str, [String; 1]>,
}

/// The claims of a token the federation signs for itself ([`Issuer::mint_own`]): no `esi`
/// claim, as it names no workload.
#[derive(Serialize)]
struct OwnClaims<'a> {
    iss: &'a str,
    sub: &'static str,
    aud: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
}

/// How long a token the federation signs for its own login lives: the login follows at once,
/// and the next one signs a new token.
pub const OWN_LOGIN_LIFETIME: Duration = Duration::from_secs(300);

/// A token for the federation's own login at a backend expecting `audience` (the `selfIssued`
/// logins of the `vault`, `aws`, `azure`, `gcp` and `kubernetes` stores), signed by `issuer`;
/// without one (a configuration only checked, never served), the refusal
/// [`crate::identity_token`] gives.
#[cfg(any(
    feature = "vault",
    feature = "aws",
    feature = "azure",
    feature = "gcp",
    feature = "k8s"
))]
pub(crate) fn own_login_token(
    issuer: Option<&std::sync::Arc<Issuer>>,
    audience: &str,
) -> Result<SecretString, BackendError> {
    Ok(crate::identity_token::issuer_of(issuer)?
        .mint_own(audience, OWN_LOGIN_LIFETIME)?
        .token)
}

/// The `sub` of the tokens the federation signs for itself, to log in to a backend (see
/// [`Issuer::mint_own`]). No workload's token can have it: theirs name a cluster and a
/// ServiceAccount ([`subject`]).
pub const FEDERATION_SUBJECT: &str = "esi-federation";

/// The `sub` of the identity tokens the federation signs for `identity`:
/// `<cluster>:system:serviceaccount:<namespace>:<name>`.
pub fn subject(identity: &Identity) -> String {
    format!(
        "{}:{}",
        identity.cluster,
        Identity::service_account_subject(&identity.namespace, &identity.service_account.name)
    )
}

impl Issuer {
    /// The issuer at `url` signing with the first key of `pem` and publishing all of them.
    pub fn new(url: &str, pem: &str) -> Result<Self, IssuerError> {
        let url = check_url(url)?;
        let mut keys: Vec<SigningKey> = Vec::new();
        for (i, der) in PrivateKeyDer::pem_slice_iter(pem.as_bytes()).enumerate() {
            let index = i + 1;
            let der = der.map_err(|_| IssuerError::Key {
                index,
                why: "is not valid PEM".to_owned(),
            })?;
            if index > MAX_KEYS {
                return Err(IssuerError::TooManyKeys(index));
            }
            let key = parse_key(index, &der)?;
            if let Some(first) = keys.iter().position(|k| k.kid == key.kid) {
                return Err(IssuerError::Duplicate {
                    first: first + 1,
                    second: index,
                });
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(IssuerError::NoKeys);
        }
        let mut algs: Vec<&str> = keys.iter().map(SigningKey::alg).collect();
        algs.sort_unstable();
        algs.dedup();
        let discovery = serde_json::json!({
            "issuer": url,
            "jwks_uri": format!("{url}{JWKS_PATH}"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algs,
            "claims_supported": ["iss", "sub", "aud", "iat", "nbf", "exp", "jti", "esi"],
        })
        .to_string();
        let jwks =
            serde_json::json!({"keys": keys.iter().map(SigningKey::jwk).collect::<Vec<_>>()})
                .to_string();
        Ok(Issuer {
            url,
            keys,
            discovery,
            jwks,
        })
    }

    /// The issuer URL (`iss`), without a trailing `/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `kid` of the signing key.
    pub fn signing_kid(&self) -> &str {
        &self.keys[0].kid
    }

    /// The `alg` of the tokens it signs: `RS256` (an RSA key first) or `ES256`.
    pub fn signing_alg(&self) -> &'static str {
        self.keys[0].alg()
    }

    /// The discovery document served at [`DISCOVERY_PATH`] (JSON).
    pub fn discovery_json(&self) -> &str {
        &self.discovery
    }

    /// The key set served at [`JWKS_PATH`] (JSON).
    pub fn jwks_json(&self) -> &str {
        &self.jwks
    }

    /// Signs an identity token for `req`, valid from now for `req.lifetime`.
    pub fn mint(&self, req: &TokenRequest<'_>) -> Result<Minted, BackendError> {
        self.mint_at(req, jiff::Timestamp::now())
    }

    /// Signs a token for the federation itself, to log in to a backend that trusts this
    /// issuer (the `selfIssued` logins of the `vault`, `aws`, `azure` and `gcp` stores): `sub`
    /// [`FEDERATION_SUBJECT`], `aud` `audience`, valid from now for `lifetime`, with no `esi`
    /// claim.
    pub fn mint_own(&self, audience: &str, lifetime: Duration) -> Result<Minted, BackendError> {
        let (iat, exp, expires_at) = times(jiff::Timestamp::now(), lifetime)?;
        let claims = OwnClaims {
            iss: &self.url,
            sub: FEDERATION_SUBJECT,
            aud: audience,
            iat,
            nbf: iat,
            exp,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        self.sign(&claims, expires_at)
    }

    /// [`Issuer::mint`] at `now`.
    pub fn mint_at(
        &self,
        req: &TokenRequest<'_>,
        now: jiff::Timestamp,
    ) -> Result<Minted, BackendError> {
        let (iat, exp, expires_at) = times(now, req.lifetime)?;
        let aud = match req.audiences {
            [one] => Audience::One(one),
            many => Audience::Many(many),
        };
        let claims = Claims {
            iss: &self.url,
            sub: subject(req.identity),
            aud,
            iat,
            nbf: iat,
            exp,
            jti: uuid::Uuid::new_v4().to_string(),
            esi: EsiClaim {
                cluster: &req.identity.cluster,
                namespace: &req.identity.namespace,
                service_account: &req.identity.service_account,
                pod: req.identity.pod.as_ref(),
                generator: req.generator,
            },
            aws_tags: req.aws_session_tags.then(|| AwsTags {
                principal_tags: aws_identity_tags(req.identity)
                    .into_iter()
                    .map(|(k, v)| (k, [v]))
                    .collect(),
            }),
        };
        self.sign(&claims, expires_at)
    }

    /// `claims` signed with the first key, as a token expiring at `expires_at` (their `exp`).
    fn sign(
        &self,
        claims: &impl Serialize,
        expires_at: jiff::Timestamp,
    ) -> Result<Minted, BackendError> {
        let key = &self.keys[0];
        let header = serde_json::json!({"alg": key.alg(), "kid": key.kid, "typ": "JWT"});
        let claims =
            serde_json::to_vec(claims).map_err(|_| unavailable("claims not serializable"))?;
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let sig = key
            .sign(input.as_bytes())
            .map_err(|_| unavailable("signing failed"))?;
        Ok(Minted {
            token: SecretString::from(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))),
            expires_at,
        })
    }
}

/// A signing failure (nothing the caller did).
fn unavailable(detail: &str) -> BackendError {
    BackendError::Unavailable {
        message: "the federation could not sign an identity token".to_owned(),
        detail: format!("identity: {detail}"),
    }
}

/// The `iat` and `exp` of a token issued at `now` for `lifetime`, and its `exp` as a timestamp.
fn times(
    now: jiff::Timestamp,
    lifetime: Duration,
) -> Result<(i64, i64, jiff::Timestamp), BackendError> {
    let iat = now.as_second();
    let exp = iat.saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX));
    let expires_at =
        jiff::Timestamp::from_second(exp).map_err(|_| unavailable("expiry out of range"))?;
    Ok((iat, exp, expires_at))
}

/// Which kind of key [`generate_key_pem`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// RSA 2048 bits, signing RS256 (what every relying party takes).
    Rs256,
    /// EC P-256, signing ES256 (smaller tokens; AWS and Google take it, Quay does not).
    Es256,
}

/// A fresh private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), for
/// `esi-federation issuer-key`.
pub fn generate_key_pem(alg: KeyAlgorithm) -> Result<SecretString, aws_lc_rs::error::Unspecified> {
    let der: Vec<u8> = match alg {
        KeyAlgorithm::Rs256 => RsaKeyPair::generate(KeySize::Rsa2048)?
            .as_der()?
            .as_ref()
            .to_vec(),
        KeyAlgorithm::Es256 => EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &SystemRandom::new(),
        )?
        .as_ref()
        .to_vec(),
    };
    let b64 = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 is ASCII.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(SecretString::from(pem))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    pub(crate) fn identity() -> Identity {
        Identity {
            cluster: "prod-eu".to_owned(),
            issuer: "https://oidc.prod-eu.example".to_owned(),
            namespace: "payments".to_owned(),
            service_account: ObjectRef {
                name: "api".to_owned(),
                uid: "sa-uid".to_owned(),
            },
            pod: Some(ObjectRef {
                name: "api-7d9f".to_owned(),
                uid: "pod-uid".to_owned(),
            }),
            subject: "system:serviceaccount:payments:api".to_owned(),
            token_expires_at: jiff::Timestamp::now(),
        }
    }

    fn pem(alg: KeyAlgorithm) -> String {
        generate_key_pem(alg).unwrap().expose_secret().to_owned()
    }

    /// The claims of a compact JWS, after checking its signature with the JWKS's key of its
    /// `kid`, the way a relying party does.
    pub(crate) fn verify(issuer: &Issuer, token: &str) -> serde_json::Value {
        let jwks: serde_json::Value = serde_json::from_str(issuer.jwks_json()).unwrap();
        let (input, sig) = token.rsplit_once('.').unwrap();
        let (header, claims) = input.split_once('.').unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == header["kid"])
            .expect("kid published");
        let b64 = |s: &serde_json::Value| URL_SAFE_NO_PAD.decode(s.as_str().unwrap()).unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        match header["alg"].as_str().unwrap() {
            "RS256" => signature::RsaPublicKeyComponents {
                n: b64(&jwk["n"]),
                e: b64(&jwk["e"]),
            }
            .verify(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                input.as_bytes(),
                &sig,
            )
            .expect("RS256 signature verifies"),
            "ES256" => {
                let mut point = vec![4u8];
                point.extend(b64(&jwk["x"]));
                point.extend(b64(&jwk["y"]));
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(input.as_bytes(), &sig)
                    .expect("ES256 signature verifies");
            }
            other => panic!("unexpected alg {other}"),
        }
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap()
    }

    #[test]
    fn the_federations_own_tokens_name_no_workload_and_verify_against_the_published_keys() {
        for alg in [KeyAlgorithm::Rs256, KeyAlgorithm::Es256] {
            let issuer = Issuer::new("https://esi.example.com", &pem(alg)).unwrap();
            let before = jiff::Timestamp::now().as_second();
            let minted = issuer.mint_own("vault", Duration::from_secs(300)).unwrap();
            let claims = verify(&issuer, minted.token.expose_secret());
            let iat = claims["iat"].as_i64().unwrap();
            assert!((before..=before + 2).contains(&iat), "{claims}");
            assert_eq!(
                claims,
                serde_json::json!({
                    "iss": "https://esi.example.com",
                    "sub": FEDERATION_SUBJECT,
                    "aud": "vault",
                    "iat": iat, "nbf": iat, "exp": iat + 300,
                    "jti": claims["jti"],
                })
            );
            assert_eq!(minted.expires_at.as_second(), iat + 300);
            assert_ne!(
                FEDERATION_SUBJECT,
                subject(&identity()),
                "no workload's subject"
            );
        }
    }

    #[test]
    fn minted_tokens_verify_against_the_published_keys_with_the_documented_claims() {
        for alg in [KeyAlgorithm::Rs256, KeyAlgorithm::Es256] {
            let issuer = Issuer::new("https://esi.example.com/", &pem(alg)).unwrap();
            assert_eq!(issuer.url(), "https://esi.example.com");
            let id = identity();
            let auds = vec!["sts.amazonaws.com".to_owned()];
            let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
            let minted = issuer
                .mint_at(
                    &TokenRequest {
                        identity: &id,
                        generator: "payments/IdentityToken/aws",
                        audiences: &auds,
                        lifetime: Duration::from_secs(900),
                        aws_session_tags: false,
                    },
                    now,
                )
                .unwrap();
            let claims = verify(&issuer, minted.token.expose_secret());
            assert_eq!(claims["iss"], "https://esi.example.com");
            assert_eq!(claims["sub"], "prod-eu:system:serviceaccount:payments:api");
            assert_eq!(
                claims["aud"], "sts.amazonaws.com",
                "one audience is a string"
            );
            assert_eq!(claims["iat"], 1_800_000_000);
            assert_eq!(claims["nbf"], 1_800_000_000);
            assert_eq!(claims["exp"], 1_800_000_900);
            assert_eq!(minted.expires_at.as_second(), 1_800_000_900);
            assert_eq!(claims["esi"]["cluster"], "prod-eu");
            assert_eq!(claims["esi"]["serviceAccount"]["name"], "api");
            assert_eq!(claims["esi"]["pod"]["uid"], "pod-uid");
            assert_eq!(claims["esi"]["generator"], "payments/IdentityToken/aws");
            assert_eq!(claims["jti"].as_str().unwrap().len(), 36);
            assert!(claims.get("https://aws.amazon.com/tags").is_none());
        }
    }

    #[test]
    fn several_audiences_are_an_array_aws_tags_on_request_and_every_token_has_its_own_jti() {
        let issuer = Issuer::new("https://esi.example.com", &pem(KeyAlgorithm::Es256)).unwrap();
        let id = identity();
        let auds = vec!["a".to_owned(), "b".to_owned()];
        let req = TokenRequest {
            identity: &id,
            generator: "g",
            audiences: &auds,
            lifetime: Duration::from_secs(60),
            aws_session_tags: true,
        };
        let one = verify(&issuer, issuer.mint(&req).unwrap().token.expose_secret());
        let two = verify(&issuer, issuer.mint(&req).unwrap().token.expose_secret());
        assert_eq!(one["aud"], serde_json::json!(["a", "b"]));
        assert_eq!(
            one["https://aws.amazon.com/tags"],
            serde_json::json!({"principal_tags": {
                "esi-cluster": ["prod-eu"],
                "kubernetes-namespace": ["payments"],
                "kubernetes-pod-name": ["api-7d9f"],
                "kubernetes-service-account": ["api"],
            }})
        );
        assert_ne!(one["jti"], two["jti"]);
    }

    #[test]
    fn the_first_key_signs_and_every_key_is_published_under_its_thumbprint() {
        let (first, second) = (pem(KeyAlgorithm::Es256), pem(KeyAlgorithm::Rs256));
        let issuer = Issuer::new("https://esi.example.com", &format!("{first}{second}")).unwrap();
        let jwks: serde_json::Value = serde_json::from_str(issuer.jwks_json()).unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0]["kid"], issuer.signing_kid());
        assert_eq!(keys[0]["alg"], "ES256");
        assert_eq!(keys[1]["alg"], "RS256");
        for k in keys {
            assert!(
                k.get("d").is_none() && k.get("p").is_none(),
                "no private member"
            );
        }
        // The kid is the thumbprint: the same key gives the same kid in another process.
        let again = Issuer::new("https://other.example", &first).unwrap();
        assert_eq!(again.signing_kid(), issuer.signing_kid());
        let disco: serde_json::Value = serde_json::from_str(issuer.discovery_json()).unwrap();
        assert_eq!(disco["issuer"], "https://esi.example.com");
        assert_eq!(disco["jwks_uri"], "https://esi.example.com/openid/v1/jwks");
        assert_eq!(
            disco["id_token_signing_alg_values_supported"],
            serde_json::json!(["ES256", "RS256"])
        );
    }

    /// RFC 7638 section 3.1's example key and thumbprint.
    #[test]
    fn thumbprint_matches_rfc_7638() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let members = [
            ("e", "AQAB".to_owned()),
            ("kty", "RSA".to_owned()),
            ("n", n.to_owned()),
        ];
        assert_eq!(
            thumbprint(&members),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn bad_urls_and_keys_are_refused_with_what_is_wrong() {
        let key = pem(KeyAlgorithm::Es256);
        for (url, want) in [
            ("http://esi.example.com", "must use https"),
            ("esi.example.com", "must start with https://"),
            ("https://", "has no host"),
            ("https://esi.example.com/?a=b", "query"),
            ("https://user@esi.example.com", "credentials"),
            ("https://esi.example.com/x y", "whitespace"),
        ] {
            let err = Issuer::new(url, &key).unwrap_err().to_string();
            assert!(err.contains(want), "{url}: {err}");
        }
        for url in [
            "http://127.0.0.1:8080",
            "http://localhost:1/dev",
            "http://[::1]:9",
        ] {
            assert!(Issuer::new(url, &key).is_ok(), "{url}");
        }
        assert_eq!(
            Issuer::new("https://e.x", "").unwrap_err(),
            IssuerError::NoKeys
        );
        assert_eq!(
            Issuer::new("https://e.x", "not a key").unwrap_err(),
            IssuerError::NoKeys
        );
        assert_eq!(
            Issuer::new("https://e.x", &format!("{key}{key}")).unwrap_err(),
            IssuerError::Duplicate {
                first: 1,
                second: 2
            }
        );
        // A PKCS#8 key of another type (Ed25519) is named, without its bytes.
        let ed =
            aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let ed_pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(ed.as_ref())
        );
        let err = Issuer::new("https://e.x", &format!("{key}{ed_pem}"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("issuer key 2 "), "{err}");
        assert!(err.contains("neither a usable RSA key"), "{err}");
        let many = (0..=MAX_KEYS)
            .map(|_| pem(KeyAlgorithm::Es256))
            .collect::<String>();
        assert_eq!(
            Issuer::new("https://e.x", &many).unwrap_err(),
            IssuerError::TooManyKeys(MAX_KEYS + 1)
        );
    }

    #[test]
    fn debug_shows_no_key_material() {
        let key = pem(KeyAlgorithm::Rs256);
        let issuer = Issuer::new("https://esi.example.com", &key).unwrap();
        let dbg = format!("{issuer:?}");
        assert!(dbg.contains(issuer.signing_kid()));
        let body: String = key.lines().nth(1).unwrap().to_owned();
        assert!(!dbg.contains(&body));
    }
}
