//! ServiceAccount token verification: the heart of the federation.
//!
//! issuer → candidate clusters → key by `kid` from the JWKS cache → signature → `exp`/`nbf`/`iat`
//! with leeway → audience → `kubernetes.io` claims cross-checked against `sub`.
//!
//! Several clusters may share one issuer string (kind and kubeadm clusters all default to the
//! same one). The cluster is then the one whose keys verified the signature, never a guess from
//! `iss`; a token that verifies under the keys of two clusters is refused as ambiguous.
//!
//! The JWS is parsed by hand because the hot path must stay within a few percent of a bare
//! signature check: compact serialization split, base64url decode into one buffer, one
//! `serde_json` pass over the claims (and over the header only until a token with it has
//! verified: see `known_headers`), and a signature check on keys parsed once.

pub mod jwks;
pub mod keys;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use base64_simd::URL_SAFE_NO_PAD as B64;
use compact_str::CompactString;
use esi_api::{ErrorCode, Identity, ObjectRef};
use serde::Deserialize;
use smallvec::SmallVec;

use crate::config::resources::{Algorithm, AlgorithmSet};
use jwks::JwksSource;
use keys::KeyRing;

/// Largest token accepted, in bytes. Kubernetes tokens are about 1 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Leeways applied to the time claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leeways {
    /// After `exp`.
    pub expiration: Duration,
    /// Before `nbf`.
    pub not_before: Duration,
    /// `iat` in the future.
    pub issued_at: Duration,
}

impl Default for Leeways {
    fn default() -> Self {
        // Vault's JWT auth defaults: expiration_leeway 150s, not_before_leeway 150s,
        // clock_skew_leeway 60s.
        Leeways {
            expiration: Duration::from_secs(150),
            not_before: Duration::from_secs(150),
            issued_at: Duration::from_secs(60),
        }
    }
}

/// Where a cluster's keys are.
#[derive(Debug, Clone)]
pub enum ClusterKeys {
    /// Parsed once from the inline JWKS of the manifest.
    Inline(Arc<KeyRing>),
    /// Fetched and cached.
    Remote(Arc<JwksSource>),
}

/// A registered cluster, compiled for verification.
///
/// With many clusters, a verification rarely finds its cluster in the CPU's caches: the fields
/// every verification reads come first, in this order (`repr(C)`), so they share as few cache
/// lines as they can, and the name and audiences are inline (up to 24 bytes each), not behind
/// pointers.
#[derive(Debug)]
#[repr(C)]
pub struct ClusterVerifier {
    /// Keys.
    pub keys: ClusterKeys,
    /// Time leeways.
    pub leeway: Leeways,
    /// Accepted audiences.
    pub audiences: SmallVec<[CompactString; 1]>,
    /// Cluster name.
    pub name: CompactString,
    /// Allowed algorithms.
    pub algorithms: AlgorithmSet,
    /// Cluster labels (for Authorization selectors).
    pub labels: std::collections::BTreeMap<String, String>,
    /// Exact issuer.
    pub issuer: String,
}

/// Why a token was refused: the API code and a message that names the failed check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The API code.
    pub code: ErrorCode,
    /// Safe explanation for the caller.
    pub message: String,
}

impl Rejection {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
        }
    }
    fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidToken, message)
    }
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(default, borrow)]
    kid: Option<Cow<'a, str>>,
    /// Any `crit`, `null` included (RFC 7515 §4.1.11 allows only a non-empty array): present
    /// means refused.
    #[serde(default, deserialize_with = "present")]
    crit: Option<serde::de::IgnoredAny>,
}

/// `Some` whenever the member is there, whatever its value (`Option`'s own reading takes
/// `null` for absent).
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<serde::de::IgnoredAny>, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(Some)
}

/// Whether JSON text is an object. serde's derive reads a struct from an array too (by
/// position); a JOSE header and a claims set are objects (RFC 7515 §4, RFC 7519 §4).
fn is_json_object(text: &str) -> bool {
    text.trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
}

/// `aud`: one string or an array of strings (RFC 7519 §4.1.3), borrowed from the payload when
/// unescaped.
enum Audience<'a> {
    One(Cow<'a, str>),
    Many(Vec<Cow<'a, str>>),
}

/// Read in one pass: `#[serde(untagged)]` would buffer the value and try each shape, which
/// showed up in profiles of the hot path.
impl<'de: 'a, 'a> Deserialize<'de> for Audience<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// One element of the array, borrowed when the input allows it.
        struct Element<'a>(Cow<'a, str>);
        impl<'de: 'a, 'a> Deserialize<'de> for Element<'a> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Cow::deserialize(d).map(Element)
            }
        }
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Audience<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Audience::One(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Audience::One(Cow::Owned(v.to_owned())))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut all = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(16));
                while let Some(Element(a)) = seq.next_element()? {
                    all.push(a);
                }
                Ok(Audience::Many(all))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl Audience<'_> {
    fn iter(&self) -> impl Iterator<Item = &str> {
        let slice: &[Cow<'_, str>] = match self {
            Audience::One(a) => std::slice::from_ref(a),
            Audience::Many(v) => v,
        };
        slice.iter().map(|a| &**a)
    }
}

#[derive(Deserialize)]
struct Claims<'a> {
    iss: String,
    /// Only compared: borrowed from the decoded payload when it has no escapes.
    #[serde(default, borrow)]
    sub: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    aud: Option<Audience<'a>>,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    iat: Option<f64>,
    /// Objects only, as the header and the claims set are ([`is_json_object`]); read in the
    /// same pass ([`esi_api::json::Object`]).
    #[serde(
        default,
        rename = "kubernetes.io",
        deserialize_with = "esi_api::json::optional_object"
    )]
    kubernetes: Option<KubeClaims>,
}

#[derive(Deserialize)]
struct KubeClaims {
    namespace: String,
    #[serde(deserialize_with = "esi_api::json::object")]
    serviceaccount: KubeRef,
    #[serde(default, deserialize_with = "esi_api::json::optional_object")]
    pod: Option<KubeRef>,
}

#[derive(Deserialize)]
struct KubeRef {
    name: String,
    #[serde(default)]
    uid: String,
}

/// The headers of tokens that verified, by their base64url text, per thread: every token a
/// cluster's key signs carries the same header, so it is decoded and read once per key and
/// thread instead of once per token (about an eighth of the verify function's time outside
/// the signature check). Only a header whose token's signature verified is remembered, so callers
/// cannot fill the memo; it holds at most [`known_headers::CAPACITY`] headers and starts over
/// when full. A remembered header stands for exactly what reading it gave (its `alg`, its
/// `kid`, no `crit`), so a token is checked the same way with or without it.
mod known_headers {
    use std::cell::RefCell;
    use std::sync::Arc;

    use crate::config::resources::Algorithm;
    use crate::lookup::LookupMap;

    /// Headers kept per thread: one per signing key of the clusters a thread serves.
    pub(super) const CAPACITY: usize = 1024;

    /// What a verified header said.
    #[derive(Clone)]
    pub(super) struct Known {
        pub alg: Algorithm,
        pub kid: Option<Arc<str>>,
    }

    thread_local! {
        static KNOWN: RefCell<LookupMap<Box<str>, Known>> = RefCell::new(LookupMap::default());
    }

    /// The remembered header with this base64url text.
    pub(super) fn get(segment: &str) -> Option<Known> {
        KNOWN.with_borrow(|known| known.get(segment).cloned())
    }

    /// Remembers the header of a token whose signature verified.
    pub(super) fn remember(segment: &str, alg: Algorithm, kid: Option<&str>) {
        KNOWN.with_borrow_mut(|known| {
            if known.contains_key(segment) {
                return;
            }
            if known.len() >= CAPACITY {
                known.clear();
            }
            known.insert(
                segment.into(),
                Known {
                    alg,
                    kid: kid.map(Arc::from),
                },
            );
        });
    }
}

/// A token's `kid`: read from its header, or remembered with the header.
enum Kid<'t> {
    Read(Cow<'t, str>),
    Known(Arc<str>),
}

impl std::ops::Deref for Kid<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Kid::Read(kid) => kid,
            Kid::Known(kid) => kid,
        }
    }
}

/// A token split and decoded, before its signature is checked. Everything borrows the token or
/// the one buffer its parts were decoded into.
struct Parsed<'t> {
    alg: Algorithm,
    kid: Option<Kid<'t>>,
    /// The header's base64url text when it was read (not remembered): remembered once the
    /// token verifies.
    read_header: Option<&'t str>,
    signing_input: &'t [u8],
    signature: &'t [u8],
    claims: Claims<'t>,
}

/// Splits and decodes `token` into `buf` (header, payload and signature back to back, one
/// allocation), checking in this order: size, shape, header, algorithm, payload, claims,
/// signature encoding.
fn parse<'t>(token: &'t str, buf: &'t mut Vec<u8>) -> Result<Parsed<'t>, Rejection> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Rejection::invalid(format!(
            "token is larger than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    // memchr's vectorized search: `str::splitn` walked the ~1 KB token a word at a time.
    let mut dots = memchr::memchr_iter(b'.', token.as_bytes());
    let (Some(d1), Some(d2), None) = (dots.next(), dots.next(), dots.next()) else {
        return Err(Rejection::invalid(
            "token is not a compact JWS (header.payload.signature)",
        ));
    };
    // The dots are ASCII, so these are char boundaries.
    let (h, p, s) = (&token[..d1], &token[d1 + 1..d2], &token[d2 + 1..]);
    const HEADER: &str = "token header is not base64url";
    const PAYLOAD: &str = "token payload is not base64url";
    const SIGNATURE: &str = "token signature is not base64url";
    let len = |part: &str, what: &'static str| {
        B64.decoded_length(part.as_bytes())
            .map_err(|_| Rejection::invalid(what))
    };
    // A remembered header is neither decoded nor read again.
    let known = known_headers::get(h);
    let hn = if known.is_some() { 0 } else { len(h, HEADER)? };
    let (pn, sn) = (len(p, PAYLOAD)?, len(s, SIGNATURE)?);
    buf.clear();
    buf.resize(hn + pn + sn, 0);
    let (header_buf, rest) = buf.split_at_mut(hn);
    let (payload_buf, signature_buf) = rest.split_at_mut(pn);
    let decode = |part: &str, dst: &'t mut [u8], what: &'static str| {
        B64.decode(part.as_bytes(), base64_simd::Out::from_slice(dst))
            .map(|d| &*d)
            .map_err(|_| Rejection::invalid(what))
    };
    let (alg, kid, read_header) = match known {
        Some(known) => (known.alg, known.kid.map(Kid::Known), None),
        None => {
            let header_bytes = decode(h, header_buf, HEADER)?;
            // JSON is UTF-8 (RFC 8259): checked once for the whole part, so serde_json's str
            // reader does not check every string again.
            let header: Header<'t> = std::str::from_utf8(header_bytes)
                .ok()
                .filter(|text| is_json_object(text))
                .and_then(|text| serde_json::from_str(text).ok())
                .ok_or_else(|| Rejection::invalid("token header is not a JSON object with alg"))?;
            if header.crit.is_some() {
                return Err(Rejection::invalid(
                    "token header has crit extensions, which are not supported",
                ));
            }
            let alg = Algorithm::parse(&header.alg).ok_or_else(|| {
                let shown: String = header.alg.chars().take(16).collect();
                Rejection::invalid(format!(
                    "algorithm {shown:?} is not accepted (RS256/384/512, ES256/384 only)"
                ))
            })?;
            (alg, header.kid.map(Kid::Read), Some(h))
        }
    };
    let payload = decode(p, payload_buf, PAYLOAD)?;
    let payload = std::str::from_utf8(payload)
        .map_err(|_| Rejection::invalid("token claims are malformed: not UTF-8"))?;
    if !is_json_object(payload) {
        return Err(Rejection::invalid(
            "token claims are malformed: not a JSON object",
        ));
    }
    let claims: Claims<'t> = serde_json::from_str(payload).map_err(|_| {
        // Read again to name the claim at fault: serde_json's own message quotes the value.
        let why = esi_api::json::explain::<Claims<'_>>(payload);
        Rejection::invalid(format!(
            "token claims are malformed: {}",
            why.as_deref().unwrap_or("not a JSON object")
        ))
    })?;
    let signature = decode(s, signature_buf, SIGNATURE)?;
    let signing_input = &token.as_bytes()[..h.len() + 1 + p.len()];
    Ok(Parsed {
        alg,
        kid,
        read_header,
        signing_input,
        signature,
        claims,
    })
}

fn verify_with(
    ring: &KeyRing,
    kid: Option<&str>,
    alg: Algorithm,
    input: &[u8],
    sig: &[u8],
) -> bool {
    match kid {
        Some(kid) => ring
            .get(kid)
            .and_then(|k| k.for_alg(alg))
            .is_some_and(|k| k.verify_sig(input, sig).is_ok()),
        None => ring
            .all()
            .iter()
            .filter_map(|k| k.for_alg(alg))
            .any(|k| k.verify_sig(input, sig).is_ok()),
    }
}

/// Verifies `token` against the clusters registered for its issuer (`candidates`, looked up
/// by the caller from the snapshot), at time `now` (seconds since the epoch).
pub async fn verify<'c>(
    token: &str,
    lookup: impl FnOnce(&str) -> Option<&'c [Arc<ClusterVerifier>]>,
    now: f64,
) -> Result<(Identity, &'c Arc<ClusterVerifier>), Rejection> {
    let mut buf = Vec::new();
    let parsed = parse(token, &mut buf)?;
    let Some(candidates) = lookup(&parsed.claims.iss) else {
        let shown: String = parsed.claims.iss.chars().take(200).collect();
        return Err(Rejection::new(
            ErrorCode::UnknownIssuer,
            format!("issuer {shown:?} is not a registered cluster"),
        ));
    };
    let mut verified: Option<&'c Arc<ClusterVerifier>> = None;
    let mut alg_refused = true;
    let mut unavailable: Option<String> = None;
    for cluster in candidates.iter() {
        if !cluster.algorithms.contains(parsed.alg) {
            continue;
        }
        alg_refused = false;
        let ok = match &cluster.keys {
            ClusterKeys::Inline(ring) => verify_with(
                ring,
                parsed.kid.as_deref(),
                parsed.alg,
                parsed.signing_input,
                parsed.signature,
            ),
            ClusterKeys::Remote(source) => match source.ring_for(parsed.kid.as_deref()).await {
                Ok(fetched) => verify_with(
                    &fetched.ring,
                    parsed.kid.as_deref(),
                    parsed.alg,
                    parsed.signing_input,
                    parsed.signature,
                ),
                Err(e) => {
                    tracing::warn!(cluster = %cluster.name, error = %e, "cannot obtain keys");
                    unavailable = Some(cluster.name.to_string());
                    false
                }
            },
        };
        if ok {
            if let Some(first) = verified {
                tracing::error!(
                    first = %first.name,
                    second = %cluster.name,
                    "token verifies under the keys of two clusters sharing an issuer; refusing it"
                );
                return Err(Rejection::invalid(
                    "token verifies under the keys of more than one registered cluster; refusing an ambiguous identity",
                ));
            }
            verified = Some(cluster);
            if candidates.len() == 1 {
                break;
            }
        }
    }
    let Some(cluster) = verified else {
        if alg_refused {
            return Err(Rejection::invalid(format!(
                "algorithm {} is not accepted for this issuer",
                parsed.alg.as_str()
            )));
        }
        if let Some(name) = unavailable {
            return Err(Rejection::new(
                ErrorCode::BackendUnavailable,
                format!("keys of cluster {name:?} cannot be fetched from its issuer right now"),
            ));
        }
        return Err(Rejection::invalid(match parsed.kid {
            Some(kid) => {
                let kid: String = kid.chars().take(64).collect();
                format!(
                    "signature does not verify (kid {kid:?} unknown to the issuer's keys, or wrong key)"
                )
            }
            None => "signature does not verify with any key of the issuer".to_owned(),
        }));
    };
    if let Some(header) = parsed.read_header {
        known_headers::remember(header, parsed.alg, parsed.kid.as_deref());
    }
    let identity = check_claims(parsed.claims, cluster, now)?;
    Ok((identity, cluster))
}

fn check_claims(
    claims: Claims<'_>,
    cluster: &ClusterVerifier,
    now: f64,
) -> Result<Identity, Rejection> {
    let exp = claims.exp.ok_or_else(|| {
        Rejection::invalid("token has no exp claim; only expiring tokens are accepted")
    })?;
    if !exp.is_finite() || now > exp + cluster.leeway.expiration.as_secs_f64() {
        return Err(Rejection::new(ErrorCode::TokenExpired, "token has expired"));
    }
    if let Some(nbf) = claims.nbf
        && (!nbf.is_finite() || now + cluster.leeway.not_before.as_secs_f64() < nbf)
    {
        return Err(Rejection::new(
            ErrorCode::TokenNotYetValid,
            "token is not valid yet (nbf in the future)",
        ));
    }
    if let Some(iat) = claims.iat
        && (!iat.is_finite() || now + cluster.leeway.issued_at.as_secs_f64() < iat)
    {
        return Err(Rejection::new(
            ErrorCode::TokenNotYetValid,
            "token was issued in the future (iat)",
        ));
    }
    let audience_ok = claims.aud.as_ref().is_some_and(|aud| {
        aud.iter()
            .any(|a| cluster.audiences.iter().any(|ok| ok == a))
    });
    if !audience_ok {
        return Err(Rejection::new(
            ErrorCode::AudienceMismatch,
            format!(
                "token audience is not accepted by cluster {:?} (expected one of {:?})",
                cluster.name, cluster.audiences
            ),
        ));
    }
    let kube = claims.kubernetes.ok_or_else(|| {
        Rejection::invalid(
            "token has no kubernetes.io claims; use a projected ServiceAccount token",
        )
    })?;
    let subject = match claims.sub {
        Some(sub)
            if Identity::is_service_account_subject(
                &sub,
                &kube.namespace,
                &kube.serviceaccount.name,
            ) =>
        {
            sub.into_owned()
        }
        _ => {
            return Err(Rejection::invalid(
                "token sub does not match its kubernetes.io namespace and service account",
            ));
        }
    };
    let token_expires_at = jiff::Timestamp::from_second(exp as i64).unwrap_or(jiff::Timestamp::MAX);
    Ok(Identity {
        cluster: cluster.name.to_string(),
        issuer: claims.iss,
        namespace: kube.namespace,
        service_account: ObjectRef {
            name: kube.serviceaccount.name,
            uid: kube.serviceaccount.uid,
        },
        pod: kube.pod.map(|p| ObjectRef {
            name: p.name,
            uid: p.uid,
        }),
        subject,
        token_expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issuer::{SigningKey, TokenSpec};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use futures_util::FutureExt as _;
    use serde_json::json;

    const ISSUER: &str = "https://memo.esi.test";

    fn clusters(key: &SigningKey) -> Arc<[Arc<ClusterVerifier>]> {
        let ring = KeyRing::from_value(&json!({"keys": [key.jwk()]})).unwrap();
        Arc::from(vec![Arc::new(ClusterVerifier {
            name: "memo".into(),
            labels: Default::default(),
            issuer: ISSUER.to_owned(),
            audiences: smallvec::smallvec!["esi".into()],
            algorithms: [Algorithm::RS256].into_iter().collect(),
            leeway: Leeways::default(),
            keys: ClusterKeys::Inline(Arc::new(ring)),
        })])
    }

    fn check(token: &str, clusters: &Arc<[Arc<ClusterVerifier>]>) -> Result<Identity, Rejection> {
        let now = jiff::Timestamp::now().as_second() as f64;
        verify(token, |_| Some(&clusters[..]), now)
            .now_or_never()
            .expect("inline keys answer at once")
            .map(|(identity, _)| identity)
    }

    /// The memo of headers (thread-local, and a test runs on one thread) is filled only by
    /// tokens that verify, and a remembered header never stands in for a signature check.
    #[test]
    fn a_header_is_remembered_once_its_token_verifies_and_the_signature_is_still_checked() {
        let key = SigningKey::rsa();
        let clusters = clusters(&key);
        let token = key.sign(
            json!({"typ": "JWT"}),
            &TokenSpec::new("team", "app").claims(ISSUER),
            true,
        );
        let header = token.split('.').next().unwrap();
        let signed = &token[..token.rfind('.').unwrap()];
        let forged = format!("{signed}.{}", URL_SAFE_NO_PAD.encode([7u8; 256]));

        let refused = check(&forged, &clusters).unwrap_err();
        assert!(
            refused.message.contains("signature does not verify"),
            "{refused:?}"
        );
        assert!(
            known_headers::get(header).is_none(),
            "remembered unverified"
        );

        let identity = check(&token, &clusters).unwrap();
        assert_eq!(identity.namespace, "team");
        let known = known_headers::get(header).expect("the verified header is remembered");
        assert_eq!(known.alg, Algorithm::RS256);
        assert_eq!(known.kid.as_deref(), Some(key.kid.as_str()));

        let refused = check(&forged, &clusters).unwrap_err();
        assert!(
            refused.message.contains("signature does not verify"),
            "{refused:?}"
        );
        assert_eq!(check(&token, &clusters).unwrap(), identity);

        // Another key's token under the same kid and header is refused by the signature check.
        let other = SigningKey::rsa();
        let impostor = other.sign(
            json!({"typ": "JWT", "kid": key.kid}),
            &TokenSpec::new("team", "app").claims(ISSUER),
            true,
        );
        assert!(impostor.starts_with(&format!("{header}.")));
        let refused = check(&impostor, &clusters).unwrap_err();
        assert!(
            refused.message.contains("signature does not verify"),
            "{refused:?}"
        );
    }

    #[test]
    fn the_memo_of_headers_is_bounded() {
        for i in 0..=known_headers::CAPACITY {
            known_headers::remember(&format!("h{i}"), Algorithm::ES256, None);
        }
        assert!(known_headers::get("h0").is_none());
        let last = format!("h{}", known_headers::CAPACITY);
        assert!(known_headers::get(&last).is_some());
    }
}
