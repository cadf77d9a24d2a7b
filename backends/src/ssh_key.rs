//! `SSHKey`: a fresh SSH key pair per request, made in the federation, with External Secrets
//! Operator's output keys: `privateKey` (OpenSSH format, `-----BEGIN OPENSSH PRIVATE KEY-----`,
//! unencrypted) and `publicKey` (one `authorized_keys` line, ending with the comment when there
//! is one).
//!
//! `keyType` is `ed25519` (default), `rsa` (`keySize` 2048, 3072 (default) or 4096) or `ecdsa`
//! (`keySize` 256 (default), 384 or 521: NIST P-256/384/521). Keys come from RustCrypto's
//! `ssh-key` with the operating system's CSPRNG; an RSA key takes from tens of milliseconds to
//! seconds to find its primes, so it is made on Tokio's blocking pool rather than on the thread
//! serving requests. `comment` is a template over the caller's identity (see
//! [`crate::template`]); the rendered comment must fit on the key's line: no control characters
//! (a newline would start a second `authorized_keys` entry) and at most [`MAX_COMMENT_LEN`]
//! bytes.
//!
//! Nothing to revoke: the pair exists only in the answer (where it is installed decides what it
//! opens), and it does not expire.

use std::borrow::Cow;
use std::collections::BTreeMap;

use ::ssh_key::private::{EcdsaKeypair, Ed25519Keypair, KeypairData, RsaKeypair};
use ::ssh_key::rand_core::OsRng;
use ::ssh_key::{EcdsaCurve, LineEnding, PrivateKey};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
enum Algorithm {
    Ed25519,
    Rsa(usize),
    Ecdsa(EcdsaCurve),
}

impl SshKeySpec {
    /// Checks the values serde cannot: `keySize` against `keyType`, the `comment` template.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.algorithm()?;
        self.comment_template()?;
        Ok(())
    }

    fn algorithm(&self) -> Result<Algorithm, SpecError> {
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
            SshKeyType::Rsa => Algorithm::Rsa(size(RSA_SIZES, DEFAULT_RSA_SIZE)? as usize),
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

/// Makes a key pair: the private key in OpenSSH's format and the public key's
/// `authorized_keys` line.
fn make(algorithm: Algorithm, comment: String) -> Result<BTreeMap<String, String>, BackendError> {
    let failed = |e: ::ssh_key::Error| BackendError::Unavailable {
        message: "the SSH key could not be generated".to_owned(),
        detail: format!("ssh-key: {e}"),
    };
    let rng = &mut OsRng;
    let keypair = match algorithm {
        Algorithm::Ed25519 => KeypairData::from(Ed25519Keypair::random(rng)),
        Algorithm::Rsa(bits) => KeypairData::from(RsaKeypair::random(rng, bits).map_err(failed)?),
        Algorithm::Ecdsa(curve) => {
            KeypairData::from(EcdsaKeypair::random(rng, curve).map_err(failed)?)
        }
    };
    let key = PrivateKey::new(keypair, comment).map_err(failed)?;
    let private = key.to_openssh(LineEnding::LF).map_err(failed)?;
    let public = key.public_key().to_openssh().map_err(failed)?;
    // The PEM leaves its zeroizing buffer here: the credential's map is plain strings.
    Ok(BTreeMap::from([
        ("privateKey".to_owned(), private.as_str().to_owned()),
        ("publicKey".to_owned(), public),
    ]))
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
        let algorithm = self.algorithm;
        let data = match algorithm {
            // Finding two large primes takes long enough to stall every request sharing the
            // thread; Ed25519 and ECDSA keys are one scalar, made in microseconds.
            Algorithm::Rsa(_) => tokio::task::spawn_blocking(move || make(algorithm, comment))
                .await
                .map_err(|e| BackendError::Unavailable {
                    message: "the SSH key could not be generated".to_owned(),
                    detail: format!("sshkey: the blocking task failed: {e}"),
                })??,
            _ => make(algorithm, comment)?,
        };
        Ok(Credential::static_data(data))
    }
}

#[cfg(test)]
mod tests {
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
    fn ssh_keygen(test: &str) -> Option<std::path::PathBuf> {
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
