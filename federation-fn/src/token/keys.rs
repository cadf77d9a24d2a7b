//! JSON Web Keys parsed once into ready-to-verify public keys.
//!
//! A ring holds its keys inline, and a key its parsed forms: a verification reads the ring,
//! one `kid` and the key, not a hash table's control bytes, its bucket and the key behind
//! them. With 1,000 clusters, every one of those was a cache miss (figure 4 of the benchmark).
//! Issuers publish one to a few keys (Kubernetes one per signing key, rotations overlapping),
//! so finding a `kid` is a scan; a document with more keys than [`SCAN_UP_TO`] is also indexed.

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use smallvec::SmallVec;

use crate::config::resources::Algorithm;
use crate::lookup::LookupMap;

/// Up to this many keys, a `kid` is found by comparing it with each key's.
pub const SCAN_UP_TO: usize = 8;

/// One verification key, parsed for every algorithm it may be used with.
pub struct VerifyKey {
    /// `kid` from the JWKS, if any.
    pub kid: Option<String>,
    /// `alg` pinned by the JWK, if any: a token must then use exactly it.
    pub pinned_alg: Option<Algorithm>,
    /// Parsed keys by algorithm (RSA keys get RS256/384/512, a pinned one only its algorithm;
    /// EC keys the one of their curve).
    parsed: SmallVec<[(Algorithm, ParsedPublicKey); 1]>,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field(
                "algs",
                &self
                    .parsed
                    .iter()
                    .map(|(a, _)| a.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl VerifyKey {
    /// The parsed key for `alg`, when this key can verify it.
    pub fn for_alg(&self, alg: Algorithm) -> Option<&ParsedPublicKey> {
        if self.pinned_alg.is_some_and(|p| p != alg) {
            return None;
        }
        self.parsed.iter().find(|(a, _)| *a == alg).map(|(_, k)| k)
    }
}

/// A parsed JWKS: its usable keys in document order, found by `kid`.
#[derive(Debug, Default)]
#[repr(C)]
pub struct KeyRing {
    /// Index of the first key with each `kid`, when there are more than [`SCAN_UP_TO`] keys.
    by_kid: Option<Box<LookupMap<String, usize>>>,
    keys: SmallVec<[VerifyKey; 2]>,
    /// Keys of the document that were skipped (unsupported type, `use: enc`), for logs.
    pub skipped: usize,
}

impl KeyRing {
    /// Parses a JWKS document. Keys this verifier cannot use (`oct`, `use: enc`, unknown
    /// curves) are skipped; a document with no usable key at all is an error.
    pub fn from_jwks(bytes: &[u8]) -> Result<Self, String> {
        let doc: JwksDoc =
            serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS document: {e}"))?;
        Self::from_doc(doc)
    }

    /// Same as [`KeyRing::from_jwks`] from an already-decoded JSON value (inline JWKS). The
    /// document is configuration: what is wrong with it is placed by its path and said without
    /// its values, as every other configuration error ([`esi_api::json::without_values`]):
    /// serde would quote a string of the wrong type, which may be a secret pasted in the wrong
    /// place, into the log.
    pub fn from_value(value: &serde_json::Value) -> Result<Self, String> {
        let doc: JwksDoc = esi_backends::deserialize_tracked(value).map_err(|e| {
            let path = e.path().to_string();
            let why = esi_api::json::without_values(&e.into_inner().to_string());
            if path == "." {
                format!("not a JWKS document: {why}")
            } else {
                format!("not a JWKS document: {path}: {why}")
            }
        })?;
        Self::from_doc(doc)
    }

    fn from_doc(doc: JwksDoc) -> Result<Self, String> {
        let mut ring = KeyRing::default();
        let mut errors = Vec::new();
        for jwk in doc.keys {
            match parse_jwk(jwk) {
                Ok(Some(key)) => ring.keys.push(key),
                Ok(None) => ring.skipped += 1,
                Err(e) => errors.push(e),
            }
        }
        if ring.keys.is_empty() {
            return Err(if errors.is_empty() {
                "JWKS holds no usable signing key (RSA or EC P-256/P-384)".to_owned()
            } else {
                format!("JWKS holds no usable signing key: {}", errors.join("; "))
            });
        }
        ring.skipped += errors.len();
        if ring.keys.len() > SCAN_UP_TO {
            let mut by_kid = LookupMap::default();
            for (i, key) in ring.keys.iter().enumerate() {
                if let Some(kid) = &key.kid {
                    by_kid.entry(kid.clone()).or_insert(i);
                }
            }
            ring.by_kid = Some(Box::new(by_kid));
        }
        Ok(ring)
    }

    /// The key with this `kid`. A duplicate kid is ambiguous; the first one wins, like most
    /// verifiers.
    pub fn get(&self, kid: &str) -> Option<&VerifyKey> {
        match &self.by_kid {
            None => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            Some(by_kid) => by_kid.get(kid).map(|&i| &self.keys[i]),
        }
    }

    /// All keys, for tokens without `kid`.
    pub fn all(&self) -> &[VerifyKey] {
        &self.keys
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the ring is empty (never true for a successfully parsed ring).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[derive(Deserialize)]
struct JwksDoc {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

fn b64(field: &str, kid: &Option<String>, value: Option<&String>) -> Result<Vec<u8>, String> {
    let value = value.ok_or_else(|| format!("key {kid:?}: missing {field}"))?;
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|_| format!("key {kid:?}: {field} is not base64url"))
}

fn strip_leading_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let zeros = v.iter().take_while(|b| **b == 0).count();
    v.drain(..zeros.min(v.len().saturating_sub(1)));
    v
}

fn parse_jwk(jwk: Jwk) -> Result<Option<VerifyKey>, String> {
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let pinned_alg = match jwk.alg.as_deref() {
        None => None,
        Some(a) => match Algorithm::parse(a) {
            Some(alg) => Some(alg),
            // A key pinned to an algorithm we never accept (HS256, PS256, ...) is unusable.
            None => return Ok(None),
        },
    };
    let kid = jwk.kid.clone();
    let parsed = match jwk.kty.as_str() {
        "RSA" => {
            let n = strip_leading_zeros(b64("n", &kid, jwk.n.as_ref())?);
            let e = strip_leading_zeros(b64("e", &kid, jwk.e.as_ref())?);
            if n.len() * 8 < 2048 {
                return Err(format!("key {kid:?}: RSA modulus shorter than 2048 bits"));
            }
            let components = RsaPublicKeyComponents { n: &n, e: &e };
            let mut parsed = SmallVec::new();
            // A key pinned to one algorithm (Kubernetes pins RS256) is parsed for that one
            // only: a third of the memory per key and of the parsing per JWKS fetch.
            for (alg, params) in [
                (Algorithm::RS256, &signature::RSA_PKCS1_2048_8192_SHA256),
                (Algorithm::RS384, &signature::RSA_PKCS1_2048_8192_SHA384),
                (Algorithm::RS512, &signature::RSA_PKCS1_2048_8192_SHA512),
            ]
            .into_iter()
            .filter(|(alg, _)| pinned_alg.is_none_or(|p| p == *alg))
            {
                let key = components
                    .to_parsed_public_key(params)
                    .map_err(|e| format!("key {kid:?}: invalid RSA key ({e})"))?;
                parsed.push((alg, key));
            }
            parsed
        }
        "EC" => {
            let (alg, algorithm, len): (_, &'static signature::EcdsaVerificationAlgorithm, _) =
                match jwk.crv.as_deref() {
                    Some("P-256") => (Algorithm::ES256, &signature::ECDSA_P256_SHA256_FIXED, 32),
                    Some("P-384") => (Algorithm::ES384, &signature::ECDSA_P384_SHA384_FIXED, 48),
                    _ => return Ok(None),
                };
            let x = b64("x", &kid, jwk.x.as_ref())?;
            let y = b64("y", &kid, jwk.y.as_ref())?;
            if x.len() != len || y.len() != len {
                return Err(format!("key {kid:?}: EC coordinates have the wrong length"));
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let key = ParsedPublicKey::new(algorithm, &point)
                .map_err(|e| format!("key {kid:?}: invalid EC key ({e})"))?;
            smallvec::smallvec![(alg, key)]
        }
        _ => return Ok(None),
    };
    if pinned_alg.is_some_and(|p| parsed.iter().all(|(a, _)| *a != p)) {
        // Pinned to an algorithm of another key type (`kty: RSA` with `alg: ES256`): it can
        // verify nothing.
        return Ok(None);
    }
    Ok(Some(VerifyKey {
        kid,
        pinned_alg,
        parsed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issuer::SigningKey;

    fn ring(jwk: serde_json::Value) -> Result<KeyRing, String> {
        KeyRing::from_value(&serde_json::json!({ "keys": [jwk] }))
    }

    /// Found reading the configuration's error paths: an inline JWKS was the one document
    /// whose errors still quoted its values.
    #[test]
    fn a_malformed_inline_document_is_placed_without_its_values() {
        for (doc, expected) in [
            (
                serde_json::json!("s3cret-value"),
                "not a JWKS document: invalid type: a string, expected struct JwksDoc",
            ),
            (
                serde_json::json!({"keys": "s3cret-value"}),
                "not a JWKS document: keys: invalid type: a string, expected a sequence",
            ),
            (
                serde_json::json!({"keys": [SigningKey::rsa().jwk(), "s3cret-value"]}),
                "not a JWKS document: keys[1]: invalid type: a string, expected struct Jwk",
            ),
            (
                serde_json::json!({"keys": [{"kty": "RSA", "kid": ["s3cret-value"]}]}),
                "not a JWKS document: keys[0].kid: invalid type: sequence, expected a string",
            ),
        ] {
            if expected.contains("invalid type: a string") {
                let quoted = serde_json::from_value::<JwksDoc>(doc.clone())
                    .err()
                    .map(|e| e.to_string());
                assert!(
                    quoted.as_deref().is_some_and(|e| e.contains("s3cret")),
                    "serde quotes the value: {quoted:?}"
                );
            }
            assert_eq!(KeyRing::from_value(&doc).unwrap_err(), expected);
        }
    }

    #[test]
    fn a_pinned_rsa_key_is_parsed_for_its_algorithm_only() {
        let jwk = SigningKey::rsa().jwk();
        assert_eq!(jwk["alg"], "RS256");
        let ring = ring(jwk).unwrap();
        let key = &ring.all()[0];
        assert!(key.for_alg(Algorithm::RS256).is_some());
        assert!(key.for_alg(Algorithm::RS384).is_none());
        assert_eq!(key.parsed.len(), 1);
    }

    #[test]
    fn an_unpinned_rsa_key_serves_every_rsa_algorithm() {
        let mut jwk = SigningKey::rsa().jwk();
        jwk.as_object_mut().unwrap().remove("alg");
        let ring = ring(jwk).unwrap();
        let key = &ring.all()[0];
        for alg in [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512] {
            assert!(key.for_alg(alg).is_some(), "{alg:?}");
        }
        assert!(key.for_alg(Algorithm::ES256).is_none());
    }

    #[test]
    fn a_key_pinned_to_another_key_type_is_unusable() {
        let mut jwk = SigningKey::rsa().jwk();
        jwk["alg"] = "ES256".into();
        let err = ring(jwk.clone()).unwrap_err();
        assert!(err.contains("no usable signing key"), "{err}");
        let mut ec = SigningKey::es256().jwk();
        ec["alg"] = "RS256".into();
        let doc = serde_json::json!({ "keys": [jwk, ec, SigningKey::rsa().jwk()] });
        let ring = KeyRing::from_value(&doc).unwrap();
        assert_eq!((ring.len(), ring.skipped), (1, 2));
    }

    /// Small rings are scanned, large ones indexed: both find every kid, the first of a
    /// duplicated kid, and nothing for an unknown one.
    #[test]
    fn kids_are_found_by_scan_and_by_index_alike() {
        let signer = SigningKey::rsa();
        for count in [1, 2, SCAN_UP_TO, SCAN_UP_TO + 1, 3 * SCAN_UP_TO] {
            let mut keys: Vec<_> = (0..count)
                .map(|i| {
                    let mut jwk = signer.jwk();
                    jwk["kid"] = format!("kid-{i}").into();
                    jwk
                })
                .collect();
            // A duplicate of kid-0, pinned to another algorithm: the first key must win.
            let mut duplicate = signer.jwk();
            duplicate["kid"] = "kid-0".into();
            duplicate["alg"] = "RS512".into();
            keys.push(duplicate);
            let ring = KeyRing::from_value(&serde_json::json!({ "keys": keys })).unwrap();
            assert_eq!(
                ring.by_kid.is_some(),
                count + 1 > SCAN_UP_TO,
                "{count} keys"
            );
            for i in 0..count {
                let kid = format!("kid-{i}");
                let key = ring.get(&kid).unwrap_or_else(|| panic!("{kid} of {count}"));
                assert_eq!(key.kid.as_deref(), Some(kid.as_str()));
            }
            let first = ring.get("kid-0").unwrap();
            assert!(first.for_alg(Algorithm::RS256).is_some(), "{count} keys");
            assert!(ring.get("kid-unknown").is_none());
            assert!(ring.get("").is_none());
        }
    }
}
