//! Sealed leases: the opaque `lease` handle of an envelope.
//!
//! A lease names the generator, the backend's revocation handle and the subject it was issued
//! to, sealed with AES-256-GCM under a server key so revocation needs no server-side state and
//! any replica can open it. Keys rotate: the sealed form names its key id; the first key of the
//! ring seals, every key of the ring opens.
//!
//! Wire form: `v1.<kid>.<base64url(nonce || ciphertext || tag)>`, with `v1.<kid>` bound as
//! associated data.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use esi_backends::LeaseHandle;

/// Largest sealed lease accepted, in bytes.
pub const MAX_LEASE_BYTES: usize = 8 * 1024;

/// What a lease says once opened ([`LeaseClaimsRef`] is what is sealed).
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct LeaseClaims {
    /// `namespace/kind/name` of the generator that issued it.
    #[serde(rename = "g")]
    pub generator: String,
    /// The subject it was issued to.
    #[serde(rename = "s")]
    pub subject: LeaseSubject,
    /// The backend's revocation handle.
    #[serde(rename = "h")]
    pub handle: LeaseHandle,
    /// Issue time, seconds since the epoch.
    #[serde(rename = "t")]
    pub issued_at: i64,
}

impl fmt::Debug for LeaseClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseClaims")
            .field("generator", &self.generator)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// The subject bound to a lease: only the same cluster, namespace and service account (same uid
/// when both sides know it) may revoke it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseSubject {
    /// Cluster name.
    #[serde(rename = "c")]
    pub cluster: String,
    /// Namespace.
    #[serde(rename = "n")]
    pub namespace: String,
    /// ServiceAccount name.
    #[serde(rename = "a")]
    pub service_account: String,
    /// ServiceAccount uid (may be empty).
    #[serde(rename = "u", default)]
    pub service_account_uid: String,
}

impl LeaseSubject {
    /// This subject, borrowed.
    pub fn as_ref(&self) -> LeaseSubjectRef<'_> {
        LeaseSubjectRef {
            cluster: &self.cluster,
            namespace: &self.namespace,
            service_account: &self.service_account,
            service_account_uid: &self.service_account_uid,
        }
    }

    /// Whether `other` is the same subject.
    pub fn same_as(&self, other: LeaseSubjectRef<'_>) -> bool {
        self.cluster == other.cluster
            && self.namespace == other.namespace
            && self.service_account == other.service_account
            && (self.service_account_uid.is_empty()
                || other.service_account_uid.is_empty()
                || self.service_account_uid == other.service_account_uid)
    }
}

/// The claims of a lease to seal, borrowed from the issuance: the wire form [`LeaseClaims`]
/// reads back, written without copying the generator, the subject or the handle.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct LeaseClaimsRef<'a> {
    /// `namespace/kind/name` of the generator that issued it.
    #[serde(rename = "g")]
    pub generator: &'a str,
    /// The subject it was issued to.
    #[serde(rename = "s")]
    pub subject: LeaseSubjectRef<'a>,
    /// The backend's revocation handle.
    #[serde(rename = "h")]
    pub handle: &'a LeaseHandle,
    /// Issue time, seconds since the epoch.
    #[serde(rename = "t")]
    pub issued_at: i64,
}

/// A [`LeaseSubject`], borrowed.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct LeaseSubjectRef<'a> {
    /// Cluster name.
    #[serde(rename = "c")]
    pub cluster: &'a str,
    /// Namespace.
    #[serde(rename = "n")]
    pub namespace: &'a str,
    /// ServiceAccount name.
    #[serde(rename = "a")]
    pub service_account: &'a str,
    /// ServiceAccount uid (may be empty).
    #[serde(rename = "u")]
    pub service_account_uid: &'a str,
}

impl<'a> LeaseSubjectRef<'a> {
    /// The subject of a verified identity.
    pub fn of(identity: &'a esi_api::Identity) -> Self {
        LeaseSubjectRef {
            cluster: &identity.cluster,
            namespace: &identity.namespace,
            service_account: &identity.service_account.name,
            service_account_uid: &identity.service_account.uid,
        }
    }
}

impl<'a> From<&'a LeaseClaims> for LeaseClaimsRef<'a> {
    fn from(c: &'a LeaseClaims) -> Self {
        LeaseClaimsRef {
            generator: &c.generator,
            subject: c.subject.as_ref(),
            handle: &c.handle,
            issued_at: c.issued_at,
        }
    }
}

/// Why a ring or a lease was refused.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The key configuration is wrong.
    #[error("lease keys: {0}")]
    Config(String),
    /// The lease is malformed, tampered with, or sealed under a key this ring lacks.
    #[error("{0}")]
    Invalid(&'static str),
    /// Sealing failed (should not happen).
    #[error("sealing the lease failed")]
    Seal,
    /// The sealed lease would be larger than [`MAX_LEASE_BYTES`], so it could not be opened
    /// again: the backend's handle is too large.
    #[error("the sealed lease would exceed {MAX_LEASE_BYTES} bytes")]
    TooLarge,
}

struct Key {
    id: String,
    key: LessSafeKey,
}

/// The sealing keys: the first seals, all open.
pub struct LeaseKeys {
    keys: Vec<Key>,
    rng: SystemRandom,
}

impl fmt::Debug for LeaseKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseKeys")
            .field("ids", &self.keys.iter().map(|k| &k.id).collect::<Vec<_>>())
            .finish()
    }
}

impl LeaseKeys {
    /// Parses `id=base64key,id2=base64key` (32-byte keys, standard or URL-safe base64; spaces
    /// and newlines allowed between entries). The first entry seals.
    pub fn parse(spec: &str) -> Result<Self, LeaseError> {
        let mut keys: Vec<Key> = Vec::new();
        for (n, entry) in spec
            .split([',', '\n'])
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            // What failed to parse is never quoted: a bare key pasted without its id (`<base64>=`
            // splits at its padding) or a JSON object would put key material in the message.
            let (id, b64) = entry.split_once('=').ok_or_else(|| {
                LeaseError::Config(format!(
                    "entry {}: each entry must be <key-id>=<base64 32-byte key>",
                    n + 1
                ))
            })?;
            let id = id.trim();
            if id.is_empty()
                || id.len() > 32
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(LeaseError::Config(format!(
                    "entry {}: the key id must be 1-32 characters of [A-Za-z0-9_-] (each entry is <key-id>=<base64 32-byte key>)",
                    n + 1
                )));
            }
            let b64 = b64.trim();
            let bytes = STANDARD
                .decode(b64)
                .or_else(|_| URL_SAFE_NO_PAD.decode(b64.trim_end_matches('=')))
                .map_err(|_| LeaseError::Config(format!("key {id:?} is not base64")))?;
            if bytes.len() != 32 {
                return Err(LeaseError::Config(format!(
                    "key {id:?} must be 32 bytes, got {}",
                    bytes.len()
                )));
            }
            // A placeholder (all one byte: zeros, `AAAA…`) is not a key. Real keys come from
            // `esi-federation lease-key` (32 random bytes); the chance that one repeats a
            // single byte is 2^-248.
            if bytes.iter().all(|&b| b == bytes[0]) {
                return Err(LeaseError::Config(format!(
                    "key {id:?} repeats one byte: a placeholder, not a key (generate one with `esi-federation lease-key`)"
                )));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(LeaseError::Config(format!("key id {id:?} appears twice")));
            }
            let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
                .map_err(|_| LeaseError::Config(format!("key {id:?} rejected")))?;
            keys.push(Key {
                id: id.to_owned(),
                key: LessSafeKey::new(unbound),
            });
        }
        if keys.is_empty() {
            return Err(LeaseError::Config("no key given".to_owned()));
        }
        Ok(LeaseKeys {
            keys,
            rng: SystemRandom::new(),
        })
    }

    /// A ring with one random key, for dev mode and tests (leases die with the process).
    pub fn ephemeral() -> Self {
        let rng = SystemRandom::new();
        let mut bytes = [0u8; 32];
        // SystemRandom only fails when the OS has no entropy source at all.
        if rng.fill(&mut bytes).is_err() {
            panic!("no OS random source");
        }
        let spec = format!("ephemeral={}", STANDARD.encode(bytes));
        match Self::parse(&spec) {
            Ok(k) => k,
            Err(e) => panic!("ephemeral key: {e}"),
        }
    }

    /// Generates a fresh key in the `ESI_LEASE_KEYS` format (for `esi-federation lease-key`).
    pub fn generate_spec(id: &str) -> String {
        let mut bytes = [0u8; 32];
        if SystemRandom::new().fill(&mut bytes).is_err() {
            panic!("no OS random source");
        }
        format!("{id}={}", STANDARD.encode(bytes))
    }

    /// Seals `claims` under the first key.
    pub fn seal(&self, claims: LeaseClaimsRef<'_>) -> Result<String, LeaseError> {
        let key = &self.keys[0];
        // One buffer, sealed in place: nonce || claims || tag. A lease's claims are ~250 bytes.
        let mut raw = Vec::with_capacity(NONCE_LEN + 512 + AES_256_GCM.tag_len());
        raw.resize(NONCE_LEN, 0);
        self.rng
            .fill(&mut raw[..NONCE_LEN])
            .map_err(|_| LeaseError::Seal)?;
        let nonce =
            Nonce::try_assume_unique_for_key(&raw[..NONCE_LEN]).map_err(|_| LeaseError::Seal)?;
        serde_json::to_writer(&mut raw, &claims).map_err(|_| LeaseError::Seal)?;
        // The sealed form starts with the associated data, `v1.<kid>`.
        let encoded_len = (raw.len() + AES_256_GCM.tag_len()).div_ceil(3) * 4;
        let mut sealed = String::with_capacity(4 + key.id.len() + encoded_len);
        sealed.push_str("v1.");
        sealed.push_str(&key.id);
        let tag = key
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(sealed.as_bytes()), &mut raw[NONCE_LEN..])
            .map_err(|_| LeaseError::Seal)?;
        raw.extend_from_slice(tag.as_ref());
        sealed.push('.');
        URL_SAFE_NO_PAD.encode_string(&raw, &mut sealed);
        // A lease `open` refuses must never be handed out (the issuer revokes instead).
        if sealed.len() > MAX_LEASE_BYTES {
            return Err(LeaseError::TooLarge);
        }
        Ok(sealed)
    }

    /// Opens a sealed lease.
    pub fn open(&self, sealed: &str) -> Result<LeaseClaims, LeaseError> {
        if sealed.len() > MAX_LEASE_BYTES {
            return Err(LeaseError::Invalid("lease is too large"));
        }
        let mut parts = sealed.splitn(3, '.');
        let (Some("v1"), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(LeaseError::Invalid(
                "lease is not an esi lease (expected v1.<key-id>.<data>)",
            ));
        };
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or(LeaseError::Invalid(
                "lease was sealed under a key this federation does not have",
            ))?;
        let mut raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| LeaseError::Invalid("lease is not base64url"))?;
        if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(LeaseError::Invalid("lease is truncated"));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&raw[..NONCE_LEN]);
        let prefix = format!("v1.{id}");
        let plain = key
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(prefix.as_bytes()),
                &mut raw[NONCE_LEN..],
            )
            .map_err(|_| {
                LeaseError::Invalid(
                    "lease does not authenticate (tampered, or sealed by another federation)",
                )
            })?;
        serde_json::from_slice(plain).map_err(|_| LeaseError::Invalid("lease content is malformed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> LeaseClaims {
        LeaseClaims {
            generator: "ns/VaultDynamicSecret/db".to_owned(),
            subject: LeaseSubject {
                cluster: "a".to_owned(),
                namespace: "ns".to_owned(),
                service_account: "app".to_owned(),
                service_account_uid: "uid-1".to_owned(),
            },
            handle: LeaseHandle(serde_json::json!({"leaseId": "database/creds/x/abc"})),
            issued_at: 1,
        }
    }

    #[test]
    fn a_handle_too_large_to_open_again_is_not_sealed() {
        let keys = LeaseKeys::parse(&LeaseKeys::generate_spec("k1")).unwrap();
        let with = |n: usize| LeaseClaims {
            handle: LeaseHandle(serde_json::json!({ "id": "x".repeat(n) })),
            ..claims()
        };
        let sealed = keys.seal((&with(5000)).into()).unwrap();
        assert_eq!(keys.open(&sealed).unwrap(), with(5000));
        assert!(matches!(
            keys.seal((&with(7000)).into()),
            Err(LeaseError::TooLarge)
        ));
    }

    #[test]
    fn seals_and_opens_without_revealing_the_handle() {
        let keys = LeaseKeys::parse(&LeaseKeys::generate_spec("k1")).unwrap();
        let sealed = keys.seal((&claims()).into()).unwrap();
        assert!(sealed.starts_with("v1.k1."));
        assert!(!sealed.contains("database"));
        assert_eq!(keys.open(&sealed).unwrap(), claims());
        // Two seals of the same claims differ (random nonce).
        assert_ne!(keys.seal((&claims()).into()).unwrap(), sealed);
    }

    #[test]
    fn a_lease_sealed_by_an_earlier_release_still_opens() {
        // Sealed by the seal of session 16 (ad65158) under this key: leases outlive releases.
        let keys = LeaseKeys::parse("k1=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        let sealed = "v1.k1.z1M8L4gUQ9O1XAiPGnlWB3yAOE6PTq5YTrx_ypI2lrTq7kyfXeOBxEOzNqj21u6yXQM7BJeI\
                      OlnAIH1SA2EH8DBfUngoq1SAmX2QQGBckeET1XGt9dvfQ66eY1PFVBaMM66rX24W-LI654-rzdeY\
                      IoCacEIQ36l9uwQoIH2bIPcpNHiwgz1scGNSYVIkHzBEpU7ZZz61";
        assert_eq!(keys.open(sealed).unwrap(), claims());
        // And what this release seals has the same shape: prefix, then nonce || claims || tag.
        let now = keys.seal((&claims()).into()).unwrap();
        assert_eq!(now.len(), sealed.len());
        assert_eq!(keys.open(&now).unwrap(), claims());
    }

    #[test]
    fn rotation_keeps_old_leases_openable() {
        let k1 = LeaseKeys::generate_spec("k1");
        let k2 = LeaseKeys::generate_spec("k2");
        let before = LeaseKeys::parse(&k1).unwrap();
        let after = LeaseKeys::parse(&format!("{k2},{k1}")).unwrap();
        let sealed_before = before.seal((&claims()).into()).unwrap();
        assert_eq!(after.open(&sealed_before).unwrap(), claims());
        let sealed_after = after.seal((&claims()).into()).unwrap();
        assert!(sealed_after.starts_with("v1.k2."));
        assert!(matches!(
            before.open(&sealed_after),
            Err(LeaseError::Invalid(_))
        ));
    }

    #[test]
    fn rejects_tampering_and_garbage() {
        let keys = LeaseKeys::parse(&LeaseKeys::generate_spec("k1")).unwrap();
        let sealed = keys.seal((&claims()).into()).unwrap();
        let mut bytes = sealed.clone().into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        for bad in [
            tampered.as_str(),
            "",
            "v1",
            "v1.k1.",
            "v2.k1.abc",
            "v1.k1.!!!",
            "v1.other.AAAA",
        ] {
            assert!(keys.open(bad).is_err(), "{bad:?}");
        }
        // The key id is bound: relabelling the id breaks authentication.
        let relabelled = sealed.replacen("v1.k1.", "v1.k2.", 1);
        let both = LeaseKeys::parse(&format!(
            "{},{}",
            LeaseKeys::generate_spec("k2"),
            LeaseKeys::generate_spec("k1")
        ))
        .unwrap();
        assert!(both.open(&relabelled).is_err());
    }

    #[test]
    fn rejects_bad_key_specs() {
        for bad in [
            "",
            "k1",
            "k1=short",
            "=AAAA",
            "bad id=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ] {
            assert!(LeaseKeys::parse(bad).is_err(), "{bad:?}");
        }
        let k = LeaseKeys::generate_spec("k1");
        assert!(LeaseKeys::parse(&format!("{k},{k}")).is_err());
        // A key pasted without its id, or the ring wrapped in JSON: refused without quoting it.
        let bare = k.strip_prefix("k1=").unwrap();
        for pasted in [bare.to_owned(), format!("{{\"keys\": \"{k}\"}}")] {
            let e = LeaseKeys::parse(&pasted).unwrap_err().to_string();
            assert!(e.contains("entry 1: the key id"), "{e}");
            assert!(!e.contains(&bare[..20]), "the key reached the message: {e}");
        }
        // Placeholders: 32 zero bytes, 32 x 0xff.
        for placeholder in [
            "k1=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "k1=//////////////////////////////////////////8=",
        ] {
            let e = LeaseKeys::parse(placeholder).unwrap_err().to_string();
            assert!(e.contains("placeholder"), "{e}");
        }
    }

    #[test]
    fn subject_match_requires_same_service_account() {
        let a = claims().subject;
        let mut b = a.clone();
        assert!(a.same_as(b.as_ref()));
        b.service_account_uid = String::new();
        assert!(a.same_as(b.as_ref()));
        b.service_account_uid = "uid-2".to_owned();
        assert!(!a.same_as(b.as_ref()));
        let mut c = a.clone();
        c.cluster = "b".to_owned();
        assert!(!a.same_as(c.as_ref()));
    }
}
