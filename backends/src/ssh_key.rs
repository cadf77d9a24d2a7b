//! `SSHKey`: a fresh SSH key pair per request, made in the federation, with External Secrets
//! Operator's output keys: `privateKey` (OpenSSH format, `-----BEGIN OPENSSH PRIVATE KEY-----`,
//! unencrypted) and `publicKey` (one `authorized_keys` line, ending with the comment when there
//! is one).
//!
//! `keyType` is `ed25519` (default), `rsa` (`keySize` 2048, 3072 (default) or 4096) or `ecdsa`
//! (`keySize` 256 (default), 384 or 521: NIST P-256/384/521). aws-lc-rs (the federation's
//! crypto library, C) generates the key from its own CSPRNG; RustCrypto's `ssh-key` only writes
//! it in OpenSSH's formats, from its components: the Ed25519 seed, the ECDSA scalar and point,
//! and for RSA the PKCS#1 integers in aws-lc-rs's PKCS#8 export. An RSA key takes from tens of
//! milliseconds to a second or more to find its primes, so it is made on Tokio's blocking pool
//! rather than on the thread serving requests. `comment` is a template over the caller's
//! identity (see [`crate::template`]); the rendered comment must fit on the key's line: no
//! control characters (a newline would start a second `authorized_keys` entry) and at most
//! [`MAX_COMMENT_LEN`] bytes.
//!
//! Nothing to revoke: the pair exists only in the answer (where it is installed decides what it
//! opens), and it does not expire.

use std::borrow::Cow;
use std::collections::BTreeMap;

use ::ssh_key::private::{
    EcdsaKeypair, EcdsaPrivateKey, Ed25519Keypair, Ed25519PrivateKey, KeypairData, RsaKeypair,
    RsaPrivateKey,
};
use ::ssh_key::public::{Ed25519PublicKey, RsaPublicKey};
use ::ssh_key::sec1::EncodedPoint;
use ::ssh_key::{EcdsaCurve, LineEnding, Mpint, PrivateKey};
use aws_lc_rs::encoding::{AsBigEndian, AsDer, Curve25519SeedBin, EcPrivateKeyBin};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, ECDSA_P521_SHA512_ASN1_SIGNING,
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use kube::CustomResource;
use schemars::JsonSchema;
use secrecy::zeroize::Zeroizing;
use serde::{Deserialize, Serialize};
use ssh_encoding::Decode as _;

use crate::template::Template;
use crate::{BackendError, Context, Credential, Generate, SpecError};

/// The longest comment (in bytes, after rendering) a key may carry.
pub const MAX_COMMENT_LEN: usize = 256;
/// RSA modulus sizes, in bits.
pub const RSA_SIZES: &[u32] = &[2048, 3072, 4096];
/// ECDSA curve sizes, in bits (NIST P-256, P-384, P-521).
pub const ECDSA_SIZES: &[u32] = &[256, 384, 521];
const DEFAULT_RSA_SIZE: u32 = 3072;
const DEFAULT_ECDSA_SIZE: u32 = 256;

/// `spec` of an `SSHKey` generator.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "SSHKey",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SshKeySpec {
    /// The key algorithm: `ed25519` (default), `rsa` or `ecdsa`.
    #[serde(default)]
    pub key_type: SshKeyType,
    /// Key size in bits: for `rsa` 2048, 3072 (default) or 4096; for `ecdsa` 256 (default),
    /// 384 or 521. Not allowed for `ed25519`, whose size is fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_size: Option<u32>,
    /// Comment of the public key, a template over the caller's identity (for example
    /// `{{serviceAccount}}@{{namespace}}.{{cluster}}`); none by default. Rendered, it must hold
    /// no control characters and at most 256 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// The algorithm of an `SSHKey`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SshKeyType {
    /// Ed25519 (`ssh-ed25519`).
    #[default]
    Ed25519,
    /// RSA (`ssh-rsa`).
    Rsa,
    /// ECDSA over a NIST curve (`ecdsa-sha2-nistp256`, `-nistp384`, `-nistp521`).
    Ecdsa,
}

/// What a request makes, resolved from the spec at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Ed25519,
    Rsa(KeySize),
    Ecdsa(EcdsaCurve),
}

impl SshKeySpec {
    /// Checks the values serde cannot: `keySize` against `keyType`, the `comment` template.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.algorithm()?;
        self.comment_template()?;
        Ok(())
    }

    /// The key to make, from `keyType` and `keySize`.
    pub(crate) fn algorithm(&self) -> Result<Algorithm, SpecError> {
        let size = |allowed: &[u32], default: u32| -> Result<u32, SpecError> {
            match self.key_size {
                None => Ok(default),
                Some(s) if allowed.contains(&s) => Ok(s),
                Some(s) => Err(SpecError::field(
                    "keySize",
                    format!(
                        "{s} is not allowed for {} keys (one of {})",
                        self.key_type.name(),
                        allowed
                            .iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            }
        };
        Ok(match self.key_type {
            SshKeyType::Ed25519 => {
                if let Some(s) = self.key_size {
                    return Err(SpecError::field(
                        "keySize",
                        format!("ed25519 keys have a fixed size; remove keySize ({s})"),
                    ));
                }
                Algorithm::Ed25519
            }
            SshKeyType::Rsa => Algorithm::Rsa(match size(RSA_SIZES, DEFAULT_RSA_SIZE)? {
                2048 => KeySize::Rsa2048,
                3072 => KeySize::Rsa3072,
                _ => KeySize::Rsa4096,
            }),
            SshKeyType::Ecdsa => Algorithm::Ecdsa(match size(ECDSA_SIZES, DEFAULT_ECDSA_SIZE)? {
                256 => EcdsaCurve::NistP256,
                384 => EcdsaCurve::NistP384,
                _ => EcdsaCurve::NistP521,
            }),
        })
    }

    /// The parsed `comment`; its literal text is held to the rendered comment's rules already.
    fn comment_template(&self) -> Result<Option<Template>, SpecError> {
        let Some(src) = &self.comment else {
            return Ok(None);
        };
        let template = Template::parse(src, "comment")?;
        let literal = template.render_with(|_| Cow::Borrowed(""), str::to_owned);
        comment_problem(&literal).map_or(Ok(Some(template)), |why| {
            Err(SpecError::field("comment", why))
        })
    }
}

impl SshKeyType {
    fn name(self) -> &'static str {
        match self {
            SshKeyType::Ed25519 => "ed25519",
            SshKeyType::Rsa => "rsa",
            SshKeyType::Ecdsa => "ecdsa",
        }
    }
}

/// Why `comment` cannot end an `authorized_keys` line, if it cannot.
fn comment_problem(comment: &str) -> Option<String> {
    if comment.chars().any(char::is_control) {
        return Some(
            "contains a control character (a newline would start another authorized_keys entry)"
                .to_owned(),
        );
    }
    if comment.len() > MAX_COMMENT_LEN {
        return Some(format!(
            "is {} bytes long, more than {MAX_COMMENT_LEN}",
            comment.len()
        ));
    }
    None
}

/// The built `SSHKey` generator. Holds no key: each request makes its own.
#[derive(Debug, Clone)]
pub struct SshKeyGenerator {
    algorithm: Algorithm,
    comment: Option<Template>,
}

impl SshKeyGenerator {
    /// Builds the generator; fails on a spec [`SshKeySpec::validate`] refuses.
    pub fn new(spec: &SshKeySpec) -> Result<Self, SpecError> {
        Ok(SshKeyGenerator {
            algorithm: spec.algorithm()?,
            comment: spec.comment_template()?,
        })
    }
}

/// A new key pair of `algorithm` with `comment`, made off the async threads when it is RSA:
/// finding two large primes takes long enough to stall every request sharing the thread;
/// Ed25519 and ECDSA keys are one scalar, made in microseconds.
pub(crate) async fn new_key(
    algorithm: Algorithm,
    comment: String,
) -> Result<PrivateKey, BackendError> {
    match algorithm {
        Algorithm::Rsa(_) => tokio::task::spawn_blocking(move || key_pair(algorithm, comment))
            .await
            .map_err(|e| failed(format!("sshkey: the blocking task failed: {e}")))?,
        _ => key_pair(algorithm, comment),
    }
}

/// A new key pair of `algorithm` with `comment`.
fn key_pair(algorithm: Algorithm, comment: String) -> Result<PrivateKey, BackendError> {
    let keypair = match algorithm {
        Algorithm::Ed25519 => ed25519()?,
        Algorithm::Rsa(size) => rsa(size)?,
        Algorithm::Ecdsa(curve) => ecdsa(curve)?,
    };
    PrivateKey::new(keypair, comment).map_err(|e| failed(format!("ssh-key: {e}")))
}

/// A key pair's private key in OpenSSH's format and its public key's `authorized_keys` line.
pub(crate) fn openssh_pair(key: &PrivateKey) -> Result<BTreeMap<String, String>, BackendError> {
    let encoding = |e: ::ssh_key::Error| failed(format!("ssh-key: {e}"));
    let private = key.to_openssh(LineEnding::LF).map_err(encoding)?;
    let public = key.public_key().to_openssh().map_err(encoding)?;
    // The PEM leaves its zeroizing buffer here: the credential's map is plain strings.
    Ok(BTreeMap::from([
        ("privateKey".to_owned(), private.as_str().to_owned()),
        ("publicKey".to_owned(), public),
    ]))
}

/// A key that could not be made or encoded: nothing the caller did, so retryable; `detail` (for
/// the log) names the step, never key material.
fn failed(detail: String) -> BackendError {
    BackendError::Unavailable {
        message: "the SSH key could not be generated".to_owned(),
        detail,
    }
}

/// aws-lc-rs's errors say nothing (`Unspecified`): the step that failed is the detail.
fn aws_lc(step: &'static str) -> impl Fn(aws_lc_rs::error::Unspecified) -> BackendError {
    move |_| failed(format!("aws-lc-rs: {step} failed"))
}

/// An Ed25519 key: its 32-byte seed (what OpenSSH stores as the private half, beside the public
/// key) and public key.
fn ed25519() -> Result<KeypairData, BackendError> {
    let pair = Ed25519KeyPair::generate().map_err(aws_lc("Ed25519 key generation"))?;
    let seed: Curve25519SeedBin<'_> = pair
        .seed()
        .and_then(|s| s.as_be_bytes())
        .map_err(aws_lc("Ed25519 seed export"))?;
    let bytes = |e: ::ssh_key::Error| failed(format!("ssh-key: Ed25519 key: {e}"));
    Ok(KeypairData::from(Ed25519Keypair {
        public: Ed25519PublicKey::try_from(pair.public_key().as_ref()).map_err(bytes)?,
        private: Ed25519PrivateKey::try_from(seed.as_ref()).map_err(bytes)?,
    }))
}

/// An ECDSA key: the private scalar (fixed length, big-endian) and the public point (SEC1,
/// uncompressed), as OpenSSH stores them.
fn ecdsa(curve: EcdsaCurve) -> Result<KeypairData, BackendError> {
    let signing = match curve {
        EcdsaCurve::NistP256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
        EcdsaCurve::NistP384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
        EcdsaCurve::NistP521 => &ECDSA_P521_SHA512_ASN1_SIGNING,
    };
    let pair = EcdsaKeyPair::generate(signing).map_err(aws_lc("ECDSA key generation"))?;
    let scalar: EcPrivateKeyBin<'_> = pair
        .private_key()
        .as_be_bytes()
        .map_err(aws_lc("ECDSA private key export"))?;
    let point = pair.public_key().as_ref();
    let bad = |e: String| failed(format!("ssh-key: {} key: {e}", curve.as_str()));
    let public = |e: ::ssh_key::sec1::Error| bad(format!("public point: {e}"));
    Ok(KeypairData::from(match curve {
        EcdsaCurve::NistP256 => EcdsaKeypair::NistP256 {
            public: EncodedPoint::from_bytes(point).map_err(public)?,
            private: ecdsa_private(scalar.as_ref()).map_err(bad)?,
        },
        EcdsaCurve::NistP384 => EcdsaKeypair::NistP384 {
            public: EncodedPoint::from_bytes(point).map_err(public)?,
            private: ecdsa_private(scalar.as_ref()).map_err(bad)?,
        },
        EcdsaCurve::NistP521 => EcdsaKeypair::NistP521 {
            public: EncodedPoint::from_bytes(point).map_err(public)?,
            private: ecdsa_private(scalar.as_ref()).map_err(bad)?,
        },
    }))
}

/// `ssh-key` 0.6 builds an ECDSA private key from a scalar only through its curve crates (which
/// it would bring with RustCrypto's curve arithmetic) or by decoding OpenSSH's wire form, a
/// length-prefixed string: this writes that string and decodes it.
fn ecdsa_private<const SIZE: usize>(scalar: &[u8]) -> Result<EcdsaPrivateKey<SIZE>, String> {
    if scalar.len() != SIZE {
        return Err(format!(
            "private scalar of {} bytes, expected {SIZE}",
            scalar.len()
        ));
    }
    let mut wire = Zeroizing::new(Vec::with_capacity(4 + SIZE));
    wire.extend_from_slice(&(SIZE as u32).to_be_bytes());
    wire.extend_from_slice(scalar);
    EcdsaPrivateKey::<SIZE>::decode(&mut wire.as_slice())
        .map_err(|e| format!("private scalar: {e}"))
}

/// An RSA key: OpenSSH stores `n`, `e`, `d`, `iqmp` (`q⁻¹ mod p`, PKCS#1's `coefficient`), `p`
/// and `q`, all read out of the PKCS#1 `RSAPrivateKey` inside aws-lc-rs's PKCS#8 export (a
/// buffer it zeroizes when dropped).
fn rsa(size: KeySize) -> Result<KeypairData, BackendError> {
    let pair = RsaKeyPair::generate(size).map_err(aws_lc("RSA key generation"))?;
    let pkcs8 = pair.as_der().map_err(aws_lc("RSA PKCS#8 export"))?;
    let der = |e: String| failed(format!("RSA PKCS#8 export: {e}"));
    let info = pkcs8::PrivateKeyInfo::try_from(pkcs8.as_ref()).map_err(|e| der(e.to_string()))?;
    if info.algorithm.oid != pkcs1::ALGORITHM_OID {
        return Err(der(format!(
            "algorithm {}, not rsaEncryption",
            info.algorithm.oid
        )));
    }
    let key = pkcs1::RsaPrivateKey::try_from(info.private_key).map_err(|e| der(e.to_string()))?;
    if key.other_prime_infos.is_some() {
        return Err(der("a multi-prime key".to_owned()));
    }
    let mpint = |n: pkcs1::UintRef<'_>| {
        Mpint::from_positive_bytes(n.as_bytes()).map_err(|e| der(format!("ssh-key: {e}")))
    };
    Ok(KeypairData::from(RsaKeypair {
        public: RsaPublicKey {
            e: mpint(key.public_exponent)?,
            n: mpint(key.modulus)?,
        },
        private: RsaPrivateKey {
            d: mpint(key.private_exponent)?,
            iqmp: mpint(key.coefficient)?,
            p: mpint(key.prime1)?,
            q: mpint(key.prime2)?,
        },
    }))
}

impl Generate for SshKeyGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let comment = match &self.comment {
            None => String::new(),
            Some(t) => {
                let comment = t.render(ctx, str::to_owned);
                if let Some(why) = comment_problem(&comment) {
                    return Err(BackendError::Rejected {
                        message: format!("the key comment rendered for this caller {why}"),
                        detail: format!("sshkey: rendered comment {why}"),
                    });
                }
                comment
            }
        };
        let key = new_key(self.algorithm, comment).await?;
        Ok(Credential::static_data(openssh_pair(&key)?))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;
    use std::process::Command;

    use ::ssh_key::{Algorithm as KeyAlgorithm, PublicKey};
    use esi_api::Identity;

    use super::*;
    use crate::{GeneratorKind, GeneratorSpec};

    fn spec(json: serde_json::Value) -> SshKeySpec {
        match GeneratorSpec::from_manifest(GeneratorKind::SshKey, json).unwrap() {
            GeneratorSpec::SshKey(s) => s,
            other => panic!("{other:?}"),
        }
    }

    async fn mint(spec: &SshKeySpec, id: &Identity) -> Result<Credential, BackendError> {
        let g = SshKeyGenerator::new(spec).unwrap();
        let ctx = Context {
            identity: id,
            generator: "payments/SSHKey/deploy",
            max_ttl: None,
        };
        g.generate(&ctx).await
    }

    /// Parses the answer back: the private key (OpenSSH PEM) derives exactly the returned
    /// public key line.
    fn check_pair(cred: &Credential, algorithm: &KeyAlgorithm, comment: &str) -> PrivateKey {
        assert_eq!(
            cred.data.keys().collect::<Vec<_>>(),
            ["privateKey", "publicKey"]
        );
        assert!(cred.expires_at.is_none() && cred.lease.is_none() && !cred.renewable);
        let pem = &cred.data["privateKey"];
        assert!(
            pem.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n")
                && pem.ends_with("-----END OPENSSH PRIVATE KEY-----\n"),
            "not an OpenSSH private key"
        );
        let private = PrivateKey::from_openssh(pem).unwrap();
        assert!(!private.is_encrypted());
        assert_eq!(private.algorithm(), *algorithm);
        assert_eq!(private.comment(), comment);
        let line = &cred.data["publicKey"];
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(private.public_key().to_openssh().unwrap(), *line);
        let public = PublicKey::from_openssh(line).unwrap();
        assert_eq!(public.key_data(), private.public_key().key_data());
        assert_eq!(public.comment(), comment);
        let fields: Vec<&str> = line.splitn(3, ' ').collect();
        assert_eq!(fields[0], algorithm.as_str());
        if comment.is_empty() {
            assert_eq!(fields.len(), 2, "{line}");
        } else {
            assert_eq!(fields[2], comment);
        }
        // The credential's Debug names the keys, never the key material.
        let debug = format!("{cred:?}");
        assert!(!debug.contains("OPENSSH") && !debug.contains(fields[1]));
        private
    }

    fn rsa_bits(key: &PrivateKey) -> usize {
        let rsa = key.key_data().rsa().unwrap();
        rsa.public.n.as_positive_bytes().unwrap().len() * 8
    }

    #[tokio::test]
    async fn ed25519_by_default_with_a_templated_comment() {
        let id = crate::template::tests::identity();
        let s =
            spec(serde_json::json!({"comment": "{{serviceAccount}}@{{namespace}}.{{cluster}}"}));
        assert_eq!(s.key_type, SshKeyType::Ed25519);
        let a = mint(&s, &id).await.unwrap();
        let key_a = check_pair(&a, &KeyAlgorithm::Ed25519, "api@payments.prod-eu");
        // A fresh key each call.
        let b = mint(&s, &id).await.unwrap();
        let key_b = check_pair(&b, &KeyAlgorithm::Ed25519, "api@payments.prod-eu");
        assert_ne!(key_a.public_key().key_data(), key_b.public_key().key_data());
        assert_ne!(a.data["privateKey"], b.data["privateKey"]);
        // Without a comment, the public key line is the algorithm and the key only.
        let plain = mint(&spec(serde_json::Value::Null), &id).await.unwrap();
        check_pair(&plain, &KeyAlgorithm::Ed25519, "");
    }

    #[tokio::test]
    async fn ecdsa_keys_of_each_curve() {
        let id = crate::template::tests::identity();
        for (size, curve) in [
            (None, EcdsaCurve::NistP256),
            (Some(256), EcdsaCurve::NistP256),
            (Some(384), EcdsaCurve::NistP384),
            (Some(521), EcdsaCurve::NistP521),
        ] {
            let s = spec(
                serde_json::json!({"keyType": "ecdsa", "keySize": size, "comment": "{{pod}}"}),
            );
            let a = mint(&s, &id).await.unwrap();
            check_pair(&a, &KeyAlgorithm::Ecdsa { curve }, "api-7d9f");
            let b = mint(&s, &id).await.unwrap();
            assert_ne!(a.data["publicKey"], b.data["publicKey"]);
        }
    }

    #[tokio::test]
    async fn rsa_keys_of_the_size_asked_made_off_the_async_threads() {
        let id = crate::template::tests::identity();
        for (size, bits) in [(None, 3072), (Some(2048), 2048), (Some(4096), 4096)] {
            let s = spec(serde_json::json!({"keyType": "rsa", "keySize": size, "comment": "ci"}));
            let a = mint(&s, &id).await.unwrap();
            let key = check_pair(&a, &KeyAlgorithm::Rsa { hash: None }, "ci");
            assert_eq!(rsa_bits(&key), bits);
            if bits == 2048 {
                let b = mint(&s, &id).await.unwrap();
                assert_ne!(a.data["publicKey"], b.data["publicKey"]);
            }
        }
    }

    /// A current-thread runtime has no other worker: an RSA key made inline would hold the
    /// only thread for its whole search, and the ticker below would not run meanwhile.
    #[tokio::test(flavor = "current_thread")]
    async fn rsa_generation_does_not_hold_the_runtime() {
        let id = crate::template::tests::identity();
        let s = spec(serde_json::json!({"keyType": "rsa", "keySize": 2048}));
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let ticker = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                loop {
                    ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            })
        };
        let started = std::time::Instant::now();
        mint(&s, &id).await.unwrap();
        let elapsed = started.elapsed();
        ticker.abort();
        let ticks = ticks.load(std::sync::atomic::Ordering::Relaxed);
        // At least a few ticks per 10 ms of key search (timer granularity and a loaded machine
        // allow far fewer than one per millisecond, but inline generation allows one).
        assert!(
            u128::from(ticks) > elapsed.as_millis() / 10,
            "{ticks} ticks in {elapsed:?}"
        );
    }

    /// aws-lc-rs makes RSA keys with the usual exponent F4 and a modulus of exactly the asked
    /// length (its top bit set, two primes of half its length), and the PKCS#1 integers land in
    /// the OpenSSH fields they belong to (OpenSSH's own reading is the peer test's).
    #[tokio::test]
    async fn rsa_keys_have_exponent_65537_and_exactly_the_asked_modulus_length() {
        let id = crate::template::tests::identity();
        for bits in RSA_SIZES {
            let s = spec(serde_json::json!({"keyType": "rsa", "keySize": bits}));
            let cred = mint(&s, &id).await.unwrap();
            let key = check_pair(&cred, &KeyAlgorithm::Rsa { hash: None }, "");
            let rsa = key.key_data().rsa().unwrap();
            assert_eq!(
                rsa.public.e.as_positive_bytes().unwrap(),
                [0x01, 0x00, 0x01]
            );
            let top_bit_set = |m: &Mpint, bits: u32| {
                let b = m.as_positive_bytes().unwrap();
                b.len() * 8 == bits as usize && b[0] & 0x80 != 0
            };
            assert!(top_bit_set(&rsa.public.n, *bits), "n of {bits} bits");
            assert!(top_bit_set(&rsa.private.p, bits / 2), "p of {bits} bits");
            assert!(top_bit_set(&rsa.private.q, bits / 2), "q of {bits} bits");
            // d and iqmp are secret integers below n and p: present, never longer.
            let len = |m: &Mpint| m.as_positive_bytes().unwrap().len();
            assert!(len(&rsa.private.d) <= len(&rsa.public.n));
            assert!(len(&rsa.private.iqmp) <= len(&rsa.private.p));
            assert_ne!(rsa.private.p, rsa.private.q);
        }
    }

    /// The public point is on the asked curve and is the private scalar's: aws-lc-rs rebuilds the
    /// key pair from the two (refusing a point off the curve or not the scalar's), signs, and
    /// the signature verifies against the point in the `authorized_keys` line. The same
    /// point is refused on the other curves.
    #[tokio::test]
    async fn ecdsa_keys_are_on_the_asked_curve_and_sign_for_their_public_line() {
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1, ECDSA_P521_SHA512_ASN1,
            UnparsedPublicKey,
        };
        let id = crate::template::tests::identity();
        let curves = [
            (
                256_usize,
                EcdsaCurve::NistP256,
                &ECDSA_P256_SHA256_ASN1_SIGNING,
                &ECDSA_P256_SHA256_ASN1,
            ),
            (
                384,
                EcdsaCurve::NistP384,
                &ECDSA_P384_SHA384_ASN1_SIGNING,
                &ECDSA_P384_SHA384_ASN1,
            ),
            (
                521,
                EcdsaCurve::NistP521,
                &ECDSA_P521_SHA512_ASN1_SIGNING,
                &ECDSA_P521_SHA512_ASN1,
            ),
        ];
        for (size, curve, signing, verifying) in curves {
            let s = spec(serde_json::json!({"keyType": "ecdsa", "keySize": size}));
            let cred = mint(&s, &id).await.unwrap();
            let key = check_pair(&cred, &KeyAlgorithm::Ecdsa { curve }, "");
            let ecdsa = key.key_data().ecdsa().unwrap();
            assert_eq!(ecdsa.curve(), curve);
            let line = PublicKey::from_openssh(&cred.data["publicKey"]).unwrap();
            let point = line.key_data().ecdsa().unwrap().as_sec1_bytes().to_vec();
            assert_eq!(point.len(), 1 + 2 * size.div_ceil(8), "{curve}");
            assert_eq!(point[0], 0x04, "an uncompressed point");
            let pair = EcdsaKeyPair::from_private_key_and_public_key(
                signing,
                ecdsa.private_key_bytes(),
                &point,
            )
            .unwrap_or_else(|e| panic!("{curve}: {e}"));
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let signature = pair.sign(&rng, b"esi").unwrap();
            UnparsedPublicKey::new(verifying, &point)
                .verify(b"esi", signature.as_ref())
                .unwrap_or_else(|e| panic!("{curve}: {e}"));
            for (_, other, other_signing, _) in curves.iter().filter(|c| c.1 != curve) {
                assert!(
                    EcdsaKeyPair::from_private_key_and_public_key(
                        other_signing,
                        ecdsa.private_key_bytes(),
                        &point
                    )
                    .is_err(),
                    "a {curve} key taken for {other}"
                );
            }
        }
    }

    /// The Ed25519 private half OpenSSH stores (the seed) derives the public key of the line.
    #[tokio::test]
    async fn ed25519_seed_derives_the_public_key_of_the_line() {
        let id = crate::template::tests::identity();
        let cred = mint(&spec(serde_json::Value::Null), &id).await.unwrap();
        let key = check_pair(&cred, &KeyAlgorithm::Ed25519, "");
        let pair = key.key_data().ed25519().unwrap();
        let line = PublicKey::from_openssh(&cred.data["publicKey"]).unwrap();
        let public = line.key_data().ed25519().unwrap();
        Ed25519KeyPair::from_seed_and_public_key(pair.private.as_ref(), public.as_ref()).unwrap();
        // And a seed that is not this key's is refused: the check can fail.
        let other = Ed25519KeyPair::generate().unwrap();
        let other_seed = other.seed().unwrap().as_be_bytes().unwrap();
        assert!(
            Ed25519KeyPair::from_seed_and_public_key(other_seed.as_ref(), public.as_ref()).is_err()
        );
    }

    #[test]
    fn rejects_bad_specs_naming_the_field() {
        let cases = [
            (serde_json::json!({"keySize": 256}), "spec.keySize"),
            (
                serde_json::json!({"keyType": "ed25519", "keySize": 4096}),
                "fixed size",
            ),
            (
                serde_json::json!({"keyType": "rsa", "keySize": 1024}),
                "spec.keySize: 1024 is not allowed for rsa keys (one of 2048, 3072, 4096)",
            ),
            (
                serde_json::json!({"keyType": "rsa", "keySize": 256}),
                "spec.keySize",
            ),
            (
                serde_json::json!({"keyType": "ecdsa", "keySize": 2048}),
                "spec.keySize: 2048 is not allowed for ecdsa keys (one of 256, 384, 521)",
            ),
            (
                serde_json::json!({"keyType": "ecdsa", "keySize": 512}),
                "spec.keySize",
            ),
            (serde_json::json!({"keyType": "dsa"}), "spec.keyType"),
            (
                serde_json::json!({"keyType": "ed25519", "keySize": "big"}),
                "spec.keySize",
            ),
            (
                serde_json::json!({"comment": "{{secret}}"}),
                "spec.comment: unknown placeholder",
            ),
            (
                serde_json::json!({"comment": "{{namespace"}),
                "spec.comment: unclosed",
            ),
            (
                serde_json::json!({"comment": "a\nssh-ed25519 AAAA attacker"}),
                "spec.comment: contains a control character",
            ),
            (
                serde_json::json!({"comment": "tab\there"}),
                "spec.comment: contains a control character",
            ),
            (
                serde_json::json!({"comment": "x".repeat(257)}),
                "spec.comment: is 257 bytes long, more than 256",
            ),
            (
                serde_json::json!({"passphrase": "x"}),
                "unknown field `passphrase`",
            ),
        ];
        for (json, expected) in cases {
            let err =
                GeneratorSpec::from_manifest(GeneratorKind::SshKey, json.clone()).unwrap_err();
            assert!(err.to_string().contains(expected), "{json}: {err}");
        }
        for ok in [
            serde_json::json!({"keyType": "rsa", "keySize": 4096}),
            serde_json::json!({"keyType": "ecdsa", "keySize": 521}),
            serde_json::json!({"comment": "x".repeat(256)}),
            serde_json::json!({"comment": "déploiement {{namespace}}"}),
        ] {
            GeneratorSpec::from_manifest(GeneratorKind::SshKey, ok.clone())
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    /// The identity's values are DNS names in practice, but a cluster name comes from the
    /// federation's configuration and nothing in the template forbids the worst case: a
    /// rendered comment that would break the line (or grow past the bound) mints nothing.
    #[tokio::test]
    async fn a_comment_rendered_into_something_hostile_mints_nothing() {
        let s = spec(serde_json::json!({"comment": "{{serviceAccount}}@{{cluster}}"}));
        let mut id = crate::template::tests::identity();
        id.cluster = "prod\nssh-ed25519 AAAAC3Nza attacker".into();
        let err = mint(&s, &id).await.unwrap_err();
        assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");
        assert!(err.to_string().contains("control character"), "{err}");
        id.cluster = "c".repeat(300);
        let err = mint(&s, &id).await.unwrap_err();
        assert!(err.to_string().contains("more than 256"), "{err}");
        // Just within the bound is fine.
        id.cluster = "c".repeat(MAX_COMMENT_LEN - "api@".len());
        let ok = mint(&s, &id).await.unwrap();
        check_pair(&ok, &KeyAlgorithm::Ed25519, &format!("api@{}", id.cluster));
    }

    #[test]
    fn the_generator_debug_holds_no_key() {
        let g = SshKeyGenerator::new(&spec(
            serde_json::json!({"keyType": "ecdsa", "comment": "{{namespace}}"}),
        ))
        .unwrap();
        let debug = format!("{g:?}");
        assert!(debug.contains("NistP256"), "{debug}");
        assert!(!debug.contains("BEGIN"), "{debug}");
    }

    /// `ssh-keygen`, the path of the test or the one on `PATH`; `None` (a `SKIPPED` line, or a
    /// failure under `ESI_REQUIRE_PEERS=1`) when there is none.
    pub(crate) fn ssh_keygen(test: &str) -> Option<std::path::PathBuf> {
        if let Some(p) = std::env::var_os("ESI_TEST_SSH_KEYGEN").filter(|p| !p.is_empty()) {
            return Some(p.into());
        }
        let on_path = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("ssh-keygen"))
                .find(|p| p.is_file())
        });
        on_path.or_else(|| esi_test_support::peer("ESI_TEST_SSH_KEYGEN", test).map(Into::into))
    }

    /// OpenSSH's own reader as the peer: `ssh-keygen -y` reads the private key we return (from
    /// a 0600 file, as it insists) and derives the same public key.
    #[tokio::test]
    async fn openssh_reads_each_key_type_and_derives_the_same_public_key() {
        let Some(keygen) =
            ssh_keygen("openssh_reads_each_key_type_and_derives_the_same_public_key")
        else {
            return;
        };
        let id = crate::template::tests::identity();
        let dir = tempfile::tempdir().unwrap();
        for (i, json) in [
            serde_json::json!({"comment": "{{serviceAccount}}@{{namespace}}.{{cluster}}"}),
            serde_json::json!({"keyType": "rsa", "keySize": 2048, "comment": "{{serviceAccount}}@{{namespace}}.{{cluster}}"}),
            serde_json::json!({"keyType": "ecdsa", "keySize": 256, "comment": "{{serviceAccount}}@{{namespace}}.{{cluster}}"}),
            serde_json::json!({"keyType": "ecdsa", "keySize": 384}),
            serde_json::json!({"keyType": "ecdsa", "keySize": 521, "comment": "{{serviceAccount}}@{{namespace}}.{{cluster}}"}),
        ]
        .into_iter()
        .enumerate()
        {
            let cred = mint(&spec(json.clone()), &id).await.unwrap();
            let path = dir.path().join(format!("id_{i}"));
            write_private(&path, &cred.data["privateKey"]);
            let out = Command::new(&keygen).arg("-y").arg("-f").arg(&path).output().unwrap();
            assert!(
                out.status.success(),
                "{json}: ssh-keygen -y failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let derived = String::from_utf8(out.stdout).unwrap();
            let derived = derived.trim_end();
            let ours = &cred.data["publicKey"];
            // OpenSSH prints the comment stored in the private key after the key (since 8.x);
            // compare the key fields always and the whole line when it printed one.
            let key_fields = |l: &str| l.split(' ').take(2).collect::<Vec<_>>().join(" ");
            assert_eq!(key_fields(derived), key_fields(ours), "{json}");
            if derived.split(' ').count() > 2 {
                assert_eq!(derived, ours, "{json}");
            }
        }
    }

    /// OpenSSH signs with each private key we return (`ssh-keygen -Y sign`, which needs every
    /// private component right: an RSA key's CRT values are derived from `d`, `p`, `q`) and
    /// verifies the signature with the public key line we return as the allowed signer.
    #[tokio::test]
    async fn openssh_signs_with_each_key_and_verifies_with_the_public_line() {
        let Some(keygen) =
            ssh_keygen("openssh_signs_with_each_key_and_verifies_with_the_public_line")
        else {
            return;
        };
        let id = crate::template::tests::identity();
        let dir = tempfile::tempdir().unwrap();
        let message = dir.path().join("message");
        std::fs::write(&message, b"esi sshkey peer test\n").unwrap();
        for (i, json) in [
            serde_json::json!({}),
            serde_json::json!({"keyType": "rsa", "keySize": 2048}),
            serde_json::json!({"keyType": "ecdsa", "keySize": 256}),
            serde_json::json!({"keyType": "ecdsa", "keySize": 384}),
            serde_json::json!({"keyType": "ecdsa", "keySize": 521}),
        ]
        .into_iter()
        .enumerate()
        {
            let cred = mint(&spec(json.clone()), &id).await.unwrap();
            let key = dir.path().join(format!("id_{i}"));
            write_private(&key, &cred.data["privateKey"]);
            let sig = dir.path().join(format!("message_{i}.sig"));
            let out = Command::new(&keygen)
                .args(["-Y", "sign", "-n", "esi-test", "-f"])
                .arg(&key)
                .stdin(std::fs::File::open(&message).unwrap())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{json}: ssh-keygen -Y sign failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::write(&sig, &out.stdout).unwrap();
            let signers = dir.path().join(format!("allowed_signers_{i}"));
            std::fs::write(&signers, format!("ci@esi {}\n", cred.data["publicKey"])).unwrap();
            let verify = |signed: &Path| {
                Command::new(&keygen)
                    .args(["-Y", "verify", "-n", "esi-test", "-I", "ci@esi", "-f"])
                    .arg(&signers)
                    .arg("-s")
                    .arg(&sig)
                    .stdin(std::fs::File::open(signed).unwrap())
                    .output()
                    .unwrap()
            };
            let out = verify(&message);
            assert!(
                out.status.success(),
                "{json}: ssh-keygen -Y verify failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // The verification can fail: another message does not verify.
            let tampered = dir.path().join(format!("tampered_{i}"));
            std::fs::write(&tampered, b"esi sshkey peer test, altered\n").unwrap();
            assert!(!verify(&tampered).status.success(), "{json}");
        }
    }

    /// Every RSA component checked against the others: OpenSSH rewrites our key as PKCS#1
    /// (`ssh-keygen -p -m PEM`, deriving the CRT exponents from `d`, `p` and `q` and keeping our
    /// `iqmp`), and aws-lc-rs accepts that only if `n = p·q`, `d` inverts `e` and
    /// `iqmp = q⁻¹ mod p`. (Signing alone would not tell: OpenSSL checks a CRT result and falls
    /// back to `d` when `iqmp` is wrong.)
    #[tokio::test]
    async fn openssh_rewrites_rsa_keys_as_pkcs1_that_pass_a_full_consistency_check() {
        use base64::Engine as _;
        let Some(keygen) =
            ssh_keygen("openssh_rewrites_rsa_keys_as_pkcs1_that_pass_a_full_consistency_check")
        else {
            return;
        };
        let id = crate::template::tests::identity();
        let dir = tempfile::tempdir().unwrap();
        for bits in RSA_SIZES {
            let s = spec(serde_json::json!({"keyType": "rsa", "keySize": bits}));
            let cred = mint(&s, &id).await.unwrap();
            let path = dir.path().join(format!("id_rsa_{bits}"));
            write_private(&path, &cred.data["privateKey"]);
            let out = Command::new(&keygen)
                .args(["-q", "-p", "-m", "PEM", "-N", "", "-P", "", "-f"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{bits}: ssh-keygen -p -m PEM failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let pem = std::fs::read_to_string(&path).unwrap();
            let body: String = pem
                .strip_prefix("-----BEGIN RSA PRIVATE KEY-----\n")
                .and_then(|b| b.trim_end().strip_suffix("-----END RSA PRIVATE KEY-----"))
                .unwrap_or_else(|| panic!("{bits}: not PKCS#1 PEM"))
                .lines()
                .collect();
            let der = base64::engine::general_purpose::STANDARD
                .decode(body)
                .unwrap();
            let pair = RsaKeyPair::from_der(&der).unwrap_or_else(|e| panic!("{bits}: {e}"));
            assert_eq!(pair.public_modulus_len() * 8, *bits as usize);
        }
    }

    fn write_private(path: &Path, pem: &str) {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .unwrap();
        f.write_all(pem.as_bytes()).unwrap();
    }
}
