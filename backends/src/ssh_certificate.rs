//! `SSHCertificate`: a fresh SSH key pair per request with an OpenSSH user certificate for it,
//! signed by the certificate authority of an `ssh` SecretStore: SSH access that ends by itself.
//!
//! An `SSHKey` pair never expires; where it is installed decides what it opens, until someone
//! removes it. A certificate carries its own end: an `sshd` that trusts the CA
//! (`TrustedUserCAKeys`) lets the key in as the certificate's principals, between its
//! `valid after` and `valid before`, and not a second later, with no `authorized_keys` to
//! edit. So a CI job, a deploy Pod or an operator reaches hosts for the minutes it runs.
//!
//! - **The CA key** is the store's `caKey`: an OpenSSH private key (`ssh-keygen -t ed25519 -f
//!   ca`, unencrypted) read from a file or the environment at every request, so a rotated key
//!   signs from the next request on. Ed25519, ECDSA (P-256, P-384, P-521) and RSA CA keys sign
//!   (with aws-lc-rs; RSA as `rsa-sha2-512`, its CRT exponents, which OpenSSH's format leaves
//!   out, computed with num-bigint); an encrypted or a DSA CA key is refused, naming the fix.
//! - **The key pair** is made per request as `SSHKey` makes it (`keyType`, `keySize`).
//! - **The certificate** (OpenSSH's `PROTOCOL.certkeys`, written here: ssh-key 0.6's builder
//!   checks its own signature in debug builds with crypto this crate leaves out) is a user
//!   certificate (or a host one, below) with a random nonce and serial; `principals` are templates over the caller's
//!   identity (`{{serviceAccount}}`), each rendered to a non-empty name without `,` or control
//!   characters; `keyId` (default `esi:<cluster>:<namespace>:<serviceAccount>`), which `sshd`
//!   logs with every login, says who it was issued to; `validity` (default 1h) is lowered to
//!   the Authorization's `maxTTL`; it is valid from a minute before it was made (clocks
//!   differ). `extensions` grant what OpenSSH's `ssh-keygen` grants by default only when
//!   listed (none by default: commands run, without a terminal or any forwarding);
//!   `sourceAddress` and `forceCommand` become the `source-address` and `force-command`
//!   critical options.
//! - **`certType: host`** certifies a workload that serves SSH (a bastion, a Git server):
//!   `principals` are the host names clients dial, and a client with `@cert-authority *
//!   <CA>` in its `known_hosts` checks the host strictly with no host key pinned. A host
//!   certificate carries no extensions or critical options.
//!
//! The credential: `privateKey`, `publicKey`, `certificate` (the `-cert.pub` line, for
//! `ssh -i key -o CertificateFile=...`) and `serial`; `expiresAt` is `valid before`. Nothing
//! to revoke: the certificate ends by itself (OpenSSH's revocation lists need state).
//!
//! ```yaml
//! kind: SecretStore
//! metadata: {name: ssh-ca, namespace: deploy}
//! spec:
//!   provider:
//!     ssh:
//!       caKey: {file: /etc/esi/ssh-ca/ca}      # sshd: TrustedUserCAKeys holding ca.pub
//! ---
//! kind: SSHCertificate
//! metadata: {name: hosts, namespace: deploy}
//! spec:
//!   secretStoreRef: {name: ssh-ca}
//!   principals: ["deploy", "{{serviceAccount}}"]
//!   validity: 15m
//!   extensions: [permit-pty]
//!   sourceAddress: [10.0.0.0/8]
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ::ssh_key::private::KeypairData;
use ::ssh_key::{EcdsaCurve, HashAlg, PrivateKey};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING,
    ECDSA_P521_SHA512_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
};
use base64::Engine as _;
use kube::CustomResource;
use schemars::JsonSchema;
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use ssh_encoding::{Decode as _, Encode};

use crate::duration::HumanDuration;
use crate::ssh_key::{Algorithm, SshKeySpec, SshKeyType};
use crate::store::{SecretStoreRef, StoreProvider};
use crate::template::Template;
use crate::{BackendError, Context, Credential, Generate, SecretRef, SecretStoreSpec, SpecError};

const BACKEND: &str = "sshcertificate";

/// How long a certificate is valid when the generator sets no `validity`.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(3600);
/// The longest `validity`.
pub const MAX_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long before it was made a certificate is valid from: room for clocks that differ.
const BACKDATE: u64 = 60;
/// The most principals a generator may name.
pub const MAX_PRINCIPALS: usize = 32;
/// The longest principal or key id, rendered, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// The extensions OpenSSH defines for user certificates.
pub const EXTENSIONS: &[&str] = &[
    "no-touch-required",
    "permit-X11-forwarding",
    "permit-agent-forwarding",
    "permit-port-forwarding",
    "permit-pty",
    "permit-user-rc",
];
/// What a certificate certifies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SshCertType {
    /// A user's key (`SSH_CERT_TYPE_USER`): `sshd` trusts it through `TrustedUserCAKeys`; the
    /// principals are user names.
    #[default]
    User,
    /// A host's key (`SSH_CERT_TYPE_HOST`), for a workload serving SSH: clients trust it
    /// through a `@cert-authority` line in `known_hosts`, with no host key to pin; the
    /// principals are the host names clients connect to.
    Host,
}

impl SshCertType {
    /// The type's number in the certificate.
    fn number(self) -> u32 {
        match self {
            SshCertType::User => 1,
            SshCertType::Host => 2,
        }
    }
}

/// The `ssh` SecretStore provider: the certificate authority `SSHCertificate` generators sign
/// with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SshProvider {
    /// The CA's private key, in OpenSSH's format, unencrypted (`ssh-keygen -t ed25519 -f ca
    /// -N ''`): Ed25519, ECDSA or RSA. Read at every request.
    pub ca_key: SecretRef,
}

impl SshProvider {
    /// Checks the key's reference (the key itself is read at each request).
    pub fn validate(&self) -> Result<(), SpecError> {
        self.ca_key.validate("provider.ssh.caKey")
    }

    /// Reads the CA key and names it (`ED25519 SHA256:...`), for `check --login`.
    pub fn whoami(&self) -> Result<String, BackendError> {
        let ca = CaKey::parse(&self.ca_key, self.ca_key.read()?.expose_secret())?;
        Ok(format!(
            "CA key {} {}",
            ca.key.algorithm(),
            ca.key.public_key().fingerprint(HashAlg::Sha256)
        ))
    }
}

/// `spec` of an `SSHCertificate` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "SSHCertificate",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SshCertificateSpec {
    /// The `ssh` SecretStore holding the CA key.
    pub secret_store_ref: SecretStoreRef,
    /// For a user certificate, the names it lets the key log in as (user names, or what the
    /// host's `AuthorizedPrincipalsFile` lists); for a host certificate, the host names it is
    /// valid for. Templates over the caller's identity: one to 32, each rendered non-empty, at
    /// most 256 bytes, without `,` or control characters.
    pub principals: Vec<String>,
    /// `user` (default) or `host`.
    #[serde(default)]
    pub cert_type: SshCertType,
    /// How long the certificate is valid (default `1h`, at most `7d`), lowered to the
    /// Authorization's `maxTTL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity: Option<HumanDuration>,
    /// The key algorithm: `ed25519` (default), `rsa` or `ecdsa`.
    #[serde(default)]
    pub key_type: SshKeyType,
    /// Key size in bits: for `rsa` 2048, 3072 (default) or 4096; for `ecdsa` 256 (default),
    /// 384 or 521. Not allowed for `ed25519`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_size: Option<u32>,
    /// The certificate's key id, which `sshd` logs with each login: a template over the
    /// caller's identity, by default `esi:{{cluster}}:{{namespace}}:{{serviceAccount}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// What the certificate permits besides running commands: any of `permit-pty`,
    /// `permit-port-forwarding`, `permit-agent-forwarding`, `permit-X11-forwarding`,
    /// `permit-user-rc`, `no-touch-required`. None by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
    /// Addresses the key may log in from (`source-address`): IP addresses or CIDR blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_address: Vec<String>,
    /// The only command the key may run (`force-command`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_command: Option<String>,
}

/// The default `keyId`.
const DEFAULT_KEY_ID: &str = "esi:{{cluster}}:{{namespace}}:{{serviceAccount}}";

/// Why a rendered principal or key id cannot be one, if it cannot.
fn name_problem(name: &str, principal: bool) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".to_owned());
    }
    if name.chars().any(char::is_control) {
        return Some("contains a control character".to_owned());
    }
    if principal && name.contains(',') {
        return Some("contains `,` (sshd reads principals as a comma-separated list)".to_owned());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!(
            "is {} bytes long, more than {MAX_NAME_LEN}",
            name.len()
        ));
    }
    None
}

/// Whether `s` is an IP address or a CIDR block (`10.0.0.0/8`, `2001:db8::/32`).
fn is_address(s: &str) -> bool {
    let (ip, prefix) = s.split_once('/').unwrap_or((s, ""));
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    prefix.is_empty()
        || (prefix.bytes().all(|b| b.is_ascii_digit())
            && prefix.parse::<u8>().is_ok_and(|p| p <= max))
}

impl SshCertificateSpec {
    /// Checks what serde cannot: the key options, the templates, the lists.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.key_spec().algorithm()?;
        self.templates()?;
        let validity = self.validity();
        if validity.is_zero() || validity > MAX_VALIDITY {
            return Err(SpecError::field(
                "validity",
                format!(
                    "{} is not between 1s and {}",
                    humantime::format_duration(validity),
                    humantime::format_duration(MAX_VALIDITY)
                ),
            ));
        }
        for e in &self.extensions {
            if !EXTENSIONS.contains(&e.as_str()) {
                return Err(SpecError::field(
                    "extensions",
                    format!(
                        "{e:?} is not an extension OpenSSH defines (one of {})",
                        EXTENSIONS.join(", ")
                    ),
                ));
            }
        }
        if let Some(a) = self.source_address.iter().find(|a| !is_address(a)) {
            return Err(SpecError::field(
                "sourceAddress",
                format!("{a:?} is not an IP address or CIDR block"),
            ));
        }
        if self.cert_type == SshCertType::Host
            && (!self.extensions.is_empty()
                || !self.source_address.is_empty()
                || self.force_command.is_some())
        {
            return Err(SpecError::field(
                "certType",
                "a host certificate carries no extensions, sourceAddress or forceCommand \
                 (OpenSSH defines them for user certificates only)",
            ));
        }
        if let Some(c) = &self.force_command
            && (c.is_empty() || c.contains('\0'))
        {
            return Err(SpecError::field(
                "forceCommand",
                "must be a non-empty command without NUL",
            ));
        }
        Ok(())
    }

    /// The key options as an `SSHKey` spec.
    fn key_spec(&self) -> SshKeySpec {
        SshKeySpec {
            key_type: self.key_type,
            key_size: self.key_size,
            comment: None,
        }
    }

    fn validity(&self) -> Duration {
        self.validity.map_or(DEFAULT_VALIDITY, HumanDuration::get)
    }

    /// The parsed principals and key id; their literal text is held to the rendered names'
    /// rules already.
    fn templates(&self) -> Result<(Vec<Template>, Template), SpecError> {
        if self.principals.is_empty() || self.principals.len() > MAX_PRINCIPALS {
            return Err(SpecError::field(
                "principals",
                format!(
                    "names {} principals; name one to {MAX_PRINCIPALS} (an empty list would let \
                     the key log in as anyone)",
                    self.principals.len()
                ),
            ));
        }
        let parse = |src: &str, field: &str, principal: bool| {
            let template = Template::parse(src, field)?;
            let literal = template.render_with(|_| Cow::Borrowed("x"), str::to_owned);
            match name_problem(&literal, principal) {
                Some(why) => Err(SpecError::field(field, why)),
                None => Ok(template),
            }
        };
        let principals = self
            .principals
            .iter()
            .enumerate()
            .map(|(i, p)| parse(p, &format!("principals[{i}]"), true))
            .collect::<Result<_, _>>()?;
        let key_id = parse(
            self.key_id.as_deref().unwrap_or(DEFAULT_KEY_ID),
            "keyId",
            false,
        )?;
        Ok((principals, key_id))
    }
}

/// The built `SSHCertificate` generator.
#[derive(Debug)]
pub struct SshCertificateGenerator {
    ca_key: SecretRef,
    /// The CA key last read, parsed (see [`SshCertificateGenerator::ca`]).
    ca: ParsedCa,
    algorithm: Algorithm,
    principals: Vec<Template>,
    key_id: Template,
    validity: Duration,
    cert_type: SshCertType,
    /// The critical options, by name, each value as the certificate holds it.
    critical: BTreeMap<String, String>,
    extensions: Vec<String>,
}

impl SshCertificateGenerator {
    /// Builds the generator on its `ssh` store.
    pub fn new(
        spec: &SshCertificateSpec,
        store: Option<&SecretStoreSpec>,
    ) -> Result<Self, SpecError> {
        spec.validate()?;
        let provider = crate::store::require(store, &spec.secret_store_ref, "ssh", |p| match p {
            StoreProvider::Ssh(s) => Some(s),
            #[allow(unreachable_patterns)]
            _ => None,
        })?;
        let (principals, key_id) = spec.templates()?;
        let mut critical = BTreeMap::new();
        if !spec.source_address.is_empty() {
            critical.insert("source-address".to_owned(), spec.source_address.join(","));
        }
        if let Some(c) = &spec.force_command {
            critical.insert("force-command".to_owned(), c.clone());
        }
        let mut extensions = spec.extensions.clone();
        extensions.sort();
        extensions.dedup();
        Ok(SshCertificateGenerator {
            ca_key: provider.ca_key.clone(),
            ca: ParsedCa::default(),
            algorithm: spec.key_spec().algorithm()?,
            principals,
            key_id,
            validity: spec.validity(),
            cert_type: spec.cert_type,
            critical,
            extensions,
        })
    }

    /// The CA key, read now (a rotated key signs from the next certificate on) and parsed
    /// only when its text changed since the last read: an RSA key's preparation (its CRT
    /// exponents, aws-lc's consistency check) is paid once per key, not per certificate.
    fn ca(&self) -> Result<Arc<CaKey>, BackendError> {
        let text = self.ca_key.read()?;
        let fingerprint =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.expose_secret().as_bytes());
        let fingerprint: [u8; 32] = fingerprint.as_ref().try_into().unwrap_or([0; 32]);
        let parsed = || self.ca.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((seen, key)) = &*parsed()
            && *seen == fingerprint
        {
            return Ok(key.clone());
        }
        let key = Arc::new(CaKey::parse(&self.ca_key, text.expose_secret())?);
        *parsed() = Some((fingerprint, key.clone()));
        Ok(key)
    }

    /// A rendered principal or key id, checked.
    fn render(
        t: &Template,
        ctx: &Context<'_>,
        what: &str,
        principal: bool,
    ) -> Result<String, BackendError> {
        let name = t.render(ctx, str::to_owned);
        match name_problem(&name, principal) {
            Some(why) => Err(BackendError::Rejected {
                message: format!("the certificate's {what} rendered for this caller {why}"),
                detail: format!("{BACKEND}: rendered {what} {why}"),
            }),
            None => Ok(name),
        }
    }
}

/// The CA key last parsed, under the SHA-256 of its text.
#[derive(Default)]
struct ParsedCa(Mutex<Option<([u8; 32], Arc<CaKey>)>>);

impl std::fmt::Debug for ParsedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ParsedCa")
    }
}

/// The CA key, read and checked, with its signer.
struct CaKey {
    key: PrivateKey,
    signer: Signer,
}

enum Signer {
    Ed25519(Ed25519KeyPair),
    Ecdsa(EcdsaKeyPair, &'static str),
    Rsa(aws_lc_rs::rsa::KeyPair),
}

/// The CA key cannot be used: the operator's to fix, `backend_unavailable` as for the
/// federation's other credentials; the detail names the reference, never the key.
fn unusable(ca: &SecretRef, why: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable {
        message: "the SSH certificate authority's key cannot be used".to_owned(),
        detail: format!("{BACKEND}: provider.ssh.caKey ({}): {why}", ca.describe()),
    }
}

impl CaKey {
    /// Parses `text`, the key `reference` holds.
    fn parse(reference: &SecretRef, text: &str) -> Result<Self, BackendError> {
        let key = PrivateKey::from_openssh(text.trim())
            .map_err(|e| unusable(reference, format!("not an OpenSSH private key: {e}")))?;
        if key.is_encrypted() {
            return Err(unusable(
                reference,
                "the key is encrypted; give the CA key without a passphrase (ssh-keygen -p -N '')",
            ));
        }
        let bad = |_| unusable(reference, "the private and public halves do not match");
        let signer = match key.key_data() {
            KeypairData::Ed25519(pair) => Signer::Ed25519(
                Ed25519KeyPair::from_seed_and_public_key(
                    secrecy::zeroize::Zeroizing::new(pair.private.to_bytes()).as_ref(),
                    pair.public.as_ref(),
                )
                .map_err(bad)?,
            ),
            KeypairData::Ecdsa(pair) => {
                let (alg, name) = match pair.curve() {
                    EcdsaCurve::NistP256 => {
                        (&ECDSA_P256_SHA256_FIXED_SIGNING, "ecdsa-sha2-nistp256")
                    }
                    EcdsaCurve::NistP384 => {
                        (&ECDSA_P384_SHA384_FIXED_SIGNING, "ecdsa-sha2-nistp384")
                    }
                    EcdsaCurve::NistP521 => {
                        (&ECDSA_P521_SHA512_FIXED_SIGNING, "ecdsa-sha2-nistp521")
                    }
                };
                Signer::Ecdsa(
                    EcdsaKeyPair::from_private_key_and_public_key(
                        alg,
                        pair.private_key_bytes(),
                        pair.public_key_bytes(),
                    )
                    .map_err(bad)?,
                    name,
                )
            }
            KeypairData::Rsa(pair) => {
                Signer::Rsa(rsa_signer(pair).map_err(|why| unusable(reference, why))?)
            }
            other => {
                return Err(unusable(
                    reference,
                    format!(
                        "a {} CA key cannot sign here; make an Ed25519 CA key (ssh-keygen -t \
                         ed25519), an ECDSA or an RSA one",
                        other
                            .algorithm()
                            .map_or_else(|_| "?".to_owned(), |a| a.to_string())
                    ),
                ));
            }
        };
        Ok(CaKey { key, signer })
    }

    /// The CA's public key blob, as the certificate names its signer.
    fn public_blob(&self) -> Result<Vec<u8>, BackendError> {
        let mut out = Vec::new();
        self.key
            .public_key()
            .key_data()
            .encode(&mut out)
            .map_err(|e| encoding(&e))?;
        Ok(out)
    }

    /// The signature blob of `data`: the algorithm's name and its signature.
    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, BackendError> {
        let mut out = Vec::new();
        match &self.signer {
            Signer::Ed25519(pair) => {
                put(&mut out, &"ssh-ed25519")?;
                put(&mut out, pair.sign(data).as_ref())?;
            }
            Signer::Rsa(pair) => {
                // rsa-sha2-512 (RFC 8332): OpenSSH refuses the SHA-1 `ssh-rsa` signature.
                let rng = aws_lc_rs::rand::SystemRandom::new();
                let mut sig = vec![0u8; pair.public_modulus_len()];
                pair.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA512,
                    &rng,
                    data,
                    &mut sig,
                )
                .map_err(|_| failed("aws-lc-rs: RSA signing failed".to_owned()))?;
                put(&mut out, &"rsa-sha2-512")?;
                put(&mut out, &sig)?;
            }
            Signer::Ecdsa(pair, name) => {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                let sig = pair
                    .sign(&rng, data)
                    .map_err(|_| failed("aws-lc-rs: ECDSA signing failed".to_owned()))?;
                // r and s, each the curve's size, as SSH mpints.
                let (r, s) = sig.as_ref().split_at(sig.as_ref().len() / 2);
                let mpint = |n| {
                    ::ssh_key::Mpint::from_positive_bytes(n)
                        .map_err(|e| failed(format!("ssh-key: {e}")))
                };
                let mut rs = Vec::new();
                put(&mut rs, &mpint(r)?)?;
                put(&mut rs, &mpint(s)?)?;
                put(&mut out, name)?;
                put(&mut out, &rs)?;
            }
        }
        Ok(out)
    }
}

/// An RSA CA key as aws-lc-rs signs with it. OpenSSH stores `n`, `e`, `d`, `iqmp`, `p` and `q`;
/// PKCS#1, which aws-lc-rs reads, also wants the CRT exponents `d mod (p-1)` and
/// `d mod (q-1)`.
fn rsa_signer(pair: &::ssh_key::private::RsaKeypair) -> Result<aws_lc_rs::rsa::KeyPair, String> {
    use num_bigint::BigUint;
    use pkcs1::der::Encode as _;
    fn bytes<'a>(m: &'a ::ssh_key::Mpint, what: &str) -> Result<&'a [u8], String> {
        m.as_positive_bytes()
            .ok_or_else(|| format!("the RSA key's {what} is not a positive integer"))
    }
    fn uint(b: &[u8]) -> Result<pkcs1::UintRef<'_>, String> {
        pkcs1::UintRef::new(b).map_err(|e| format!("PKCS#1: {e}"))
    }
    let (d, p, q) = (
        bytes(&pair.private.d, "d")?,
        bytes(&pair.private.p, "p")?,
        bytes(&pair.private.q, "q")?,
    );
    let crt = |prime: &[u8]| {
        let d = BigUint::from_bytes_be(d);
        let prime = BigUint::from_bytes_be(prime);
        if prime <= BigUint::from(1u8) {
            return Err("the RSA key has a prime under 2".to_owned());
        }
        Ok((d % (prime - 1u8)).to_bytes_be())
    };
    let (dp, dq) = (
        secrecy::zeroize::Zeroizing::new(crt(p)?),
        secrecy::zeroize::Zeroizing::new(crt(q)?),
    );
    let key = pkcs1::RsaPrivateKey {
        modulus: uint(bytes(&pair.public.n, "n")?)?,
        public_exponent: uint(bytes(&pair.public.e, "e")?)?,
        private_exponent: uint(d)?,
        prime1: uint(p)?,
        prime2: uint(q)?,
        exponent1: uint(&dp)?,
        exponent2: uint(&dq)?,
        coefficient: uint(bytes(&pair.private.iqmp, "iqmp")?)?,
        other_prime_infos: None,
    };
    let mut buf = secrecy::zeroize::Zeroizing::new(vec![0u8; 16 * 1024]);
    let der = key
        .encode_to_slice(&mut buf)
        .map_err(|e| format!("PKCS#1: {e}"))?;
    aws_lc_rs::rsa::KeyPair::from_der(der)
        .map_err(|e| format!("aws-lc-rs refused the RSA key: {e}"))
}

/// Appends `value` in SSH's wire encoding (ssh-encoding's: a string or byte string after its
/// length, an integer big-endian, an mpint without leading zeros).
fn put(out: &mut Vec<u8>, value: &(impl Encode + ?Sized)) -> Result<(), BackendError> {
    value.encode(out).map_err(|e| encoding(&e))
}

/// OpenSSH's option list: for each option, by name, its name and its data, the data of a
/// valued option being its value as a string.
fn options<'a>(
    options: impl Iterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<Vec<u8>, BackendError> {
    let mut out = Vec::new();
    for (name, value) in options {
        put(&mut out, &name)?;
        let mut data = Vec::new();
        if let Some(v) = value {
            put(&mut data, &v)?;
        }
        put(&mut out, &data)?;
    }
    Ok(out)
}

fn encoding(e: &ssh_encoding::Error) -> BackendError {
    failed(format!("ssh-encoding: {e}"))
}

/// A certificate that could not be made: nothing the caller did, so retryable.
fn failed(detail: String) -> BackendError {
    BackendError::Unavailable {
        message: "the SSH certificate could not be made".to_owned(),
        detail: format!("{BACKEND}: {detail}"),
    }
}

/// What a certificate says, beside its key and signer.
struct Contents<'a> {
    cert_type: SshCertType,
    serial: u64,
    key_id: &'a str,
    principals: &'a [String],
    valid_after: u64,
    valid_before: u64,
    critical: &'a BTreeMap<String, String>,
    extensions: &'a [String],
}

/// The certificate of `subject` signed by `ca` (OpenSSH's `PROTOCOL.certkeys`): its type
/// name and blob.
fn certify(
    ca: &CaKey,
    subject: &PrivateKey,
    c: &Contents<'_>,
) -> Result<(String, Vec<u8>), BackendError> {
    let cert_type = subject.algorithm().to_certificate_type();
    let mut nonce = [0u8; 32];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| failed("no random nonce".to_owned()))?;
    // The public key's blob is its algorithm's name and its fields: the certificate holds the
    // fields after its own type name.
    let mut key = Vec::new();
    subject
        .public_key()
        .key_data()
        .encode(&mut key)
        .map_err(|e| encoding(&e))?;
    let mut fields = key.as_slice();
    String::decode(&mut fields).map_err(|e| encoding(&e))?;

    let mut tbs = Vec::new();
    put(&mut tbs, &cert_type.as_str())?;
    put(&mut tbs, &nonce)?;
    tbs.extend_from_slice(fields);
    put(&mut tbs, &c.serial)?;
    put(&mut tbs, &c.cert_type.number())?;
    put(&mut tbs, &c.key_id)?;
    put(&mut tbs, &c.principals.to_vec())?;
    put(&mut tbs, &c.valid_after)?;
    put(&mut tbs, &c.valid_before)?;
    let critical = c
        .critical
        .iter()
        .map(|(k, v)| (k.as_str(), Some(v.as_str())));
    put(&mut tbs, &options(critical)?)?;
    put(
        &mut tbs,
        &options(c.extensions.iter().map(|e| (e.as_str(), None)))?,
    )?;
    put(&mut tbs, &"")?;
    put(&mut tbs, &ca.public_blob()?)?;
    let signature = ca.sign(&tbs)?;
    put(&mut tbs, &signature)?;
    Ok((cert_type, tbs))
}

impl Generate for SshCertificateGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let principals = self
            .principals
            .iter()
            .map(|t| Self::render(t, ctx, "principal", true))
            .collect::<Result<Vec<_>, _>>()?;
        let key_id = Self::render(&self.key_id, ctx, "key id", false)?;
        let mut validity = self.validity;
        if let Some(max) = ctx.max_ttl {
            validity = validity.min(max);
        }
        if validity.as_secs() == 0 {
            return Err(BackendError::Rejected {
                message: "the Authorization's maxTTL is under a second; no certificate was made"
                    .to_owned(),
                detail: format!("{BACKEND}: maxTTL {validity:?}"),
            });
        }
        // Read first: a CA key that cannot sign makes no key pair.
        let ca = self.ca()?;
        let subject = crate::ssh_key::new_key(self.algorithm, key_id.clone()).await?;
        let now = jiff::Timestamp::now().as_second().unsigned_abs();
        let valid_before = now.saturating_add(validity.as_secs());
        let mut serial = [0u8; 8];
        aws_lc_rs::rand::fill(&mut serial).map_err(|_| failed("no random serial".to_owned()))?;
        let serial = u64::from_be_bytes(serial);
        let (cert_type, blob) = certify(
            &ca,
            &subject,
            &Contents {
                cert_type: self.cert_type,
                serial,
                key_id: &key_id,
                principals: &principals,
                valid_after: now.saturating_sub(BACKDATE),
                valid_before,
                critical: &self.critical,
                extensions: &self.extensions,
            },
        )?;
        let line = format!(
            "{cert_type} {} {key_id}",
            base64::engine::general_purpose::STANDARD.encode(blob)
        );
        let mut data = crate::ssh_key::openssh_pair(&subject)?;
        data.insert("certificate".to_owned(), line);
        data.insert("serial".to_owned(), serial.to_string());
        Ok(Credential {
            data,
            expires_at: jiff::Timestamp::from_second(
                i64::try_from(valid_before).unwrap_or(i64::MAX),
            )
            .ok(),
            renewable: false,
            lease: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use ::ssh_key::Certificate;
    use ::ssh_key::certificate::CertType;

    use super::*;
    use crate::{GeneratorKind, GeneratorSpec};

    fn spec(json: serde_json::Value) -> Result<SshCertificateSpec, SpecError> {
        match GeneratorSpec::from_manifest(GeneratorKind::SshCertificate, json)? {
            GeneratorSpec::SshCertificate(s) => Ok(s),
            _ => unreachable!(),
        }
    }

    /// A CA key of `algorithm` in OpenSSH's format, written 0600 in `dir`: its path and public
    /// key line.
    pub(super) async fn ca_key(dir: &Path, algorithm: Algorithm) -> (PathBuf, String) {
        use std::os::unix::fs::PermissionsExt as _;
        let key = crate::ssh_key::new_key(algorithm, "test-ca".to_owned())
            .await
            .unwrap();
        let pair = crate::ssh_key::openssh_pair(&key).unwrap();
        let path = dir.join(format!("ca-{}", key.algorithm().as_str()));
        std::fs::write(&path, &pair["privateKey"]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        (path, pair["publicKey"].clone())
    }

    fn store(path: &Path) -> SecretStoreSpec {
        SecretStoreSpec::from_manifest(
            serde_json::json!({"provider": {"ssh": {"caKey": {"file": path}}}}),
        )
        .unwrap()
    }

    pub(super) fn generator(path: &Path, json: serde_json::Value) -> SshCertificateGenerator {
        SshCertificateGenerator::new(&spec(json).unwrap(), Some(&store(path))).unwrap()
    }

    pub(super) fn ctx<'a>(id: &'a esi_api::Identity, max_ttl: Option<Duration>) -> Context<'a> {
        Context {
            identity: id,
            generator: "deploy/SSHCertificate/hosts",
            max_ttl,
        }
    }

    #[tokio::test]
    async fn the_certificate_certifies_the_returned_key_for_the_rendered_principals() {
        let dir = tempfile::tempdir().unwrap();
        let (path, ca_public) = ca_key(dir.path(), Algorithm::Ed25519).await;
        let g = generator(
            &path,
            serde_json::json!({
                "secretStoreRef": {"name": "ssh-ca"},
                "principals": ["deploy", "{{serviceAccount}}"],
                "validity": "15m",
                "extensions": ["permit-pty", "permit-agent-forwarding", "permit-pty"],
                "sourceAddress": ["10.0.0.0/8", "2001:db8::/32"],
                "forceCommand": "/usr/local/bin/deploy",
            }),
        );
        let id = crate::template::tests::identity();
        let before = jiff::Timestamp::now().as_second().unsigned_abs();
        let cred = g.generate(&ctx(&id, None)).await.unwrap();
        let cert = Certificate::from_openssh(&cred.data["certificate"]).unwrap();
        assert_eq!(cert.cert_type(), CertType::User);
        assert_eq!(cert.valid_principals(), ["deploy", "api"]);
        assert_eq!(cert.key_id(), "esi:prod-eu:payments:api");
        assert_eq!(cert.comment(), "esi:prod-eu:payments:api");
        assert_eq!(cert.serial().to_string(), cred.data["serial"]);
        let after = cert.valid_after();
        let until = cert.valid_before();
        assert!(
            (before - BACKDATE..=before - BACKDATE + 1).contains(&after),
            "{after} vs {before}"
        );
        assert!(
            (before + 900..=before + 902).contains(&until),
            "{until} vs {before}"
        );
        assert_eq!(
            cred.expires_at.unwrap().as_second().unsigned_abs(),
            until,
            "expiresAt is valid-before"
        );
        assert_eq!(
            cert.extensions().keys().collect::<Vec<_>>(),
            ["permit-agent-forwarding", "permit-pty"]
        );
        assert_eq!(
            cert.critical_options()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
            [
                ("force-command", "/usr/local/bin/deploy"),
                ("source-address", "10.0.0.0/8,2001:db8::/32")
            ]
        );
        // It certifies the key handed out, and names the store's CA as its signer.
        let public = ::ssh_key::PublicKey::from_openssh(&cred.data["publicKey"]).unwrap();
        assert_eq!(cert.public_key(), public.key_data());
        let ca = ::ssh_key::PublicKey::from_openssh(&ca_public).unwrap();
        assert_eq!(cert.signature_key(), ca.key_data());
        let private = PrivateKey::from_openssh(&cred.data["privateKey"]).unwrap();
        assert_eq!(private.public_key().key_data(), public.key_data());
        // Nothing to revoke; no key material in Debug.
        assert!(cred.lease.is_none() && !cred.renewable);
        let debug = format!("{g:?} {cred:?}");
        assert!(
            !debug.contains("PRIVATE KEY") && !debug.contains("AAAA"),
            "{debug}"
        );
    }

    #[tokio::test]
    async fn the_ca_key_is_parsed_once_and_a_rotated_one_signs_from_the_next_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (path, first_public) =
            ca_key(dir.path(), Algorithm::Rsa(aws_lc_rs::rsa::KeySize::Rsa2048)).await;
        let g = generator(
            &path,
            serde_json::json!({"secretStoreRef": {"name": "ssh-ca"}, "principals": ["ci"]}),
        );
        let id = crate::template::tests::identity();
        let signer = |cred: &Credential| {
            Certificate::from_openssh(&cred.data["certificate"])
                .unwrap()
                .signature_key()
                .clone()
        };
        let public = |line: &str| ::ssh_key::PublicKey::from_openssh(line).unwrap();
        let cred = g.generate(&ctx(&id, None)).await.unwrap();
        assert_eq!(&signer(&cred), public(&first_public).key_data());
        // The same text: the same parsed key, not a second preparation.
        assert!(Arc::ptr_eq(&g.ca().unwrap(), &g.ca().unwrap()));

        // Rotated in place (an Ed25519 key replacing the RSA one): the next certificate is
        // signed by the new key, without rebuilding the generator.
        let (other, second_public) = ca_key(dir.path(), Algorithm::Ed25519).await;
        std::fs::copy(&other, &path).unwrap();
        let cred = g.generate(&ctx(&id, None)).await.unwrap();
        assert_eq!(&signer(&cred), public(&second_public).key_data());
        // A broken key is refused at once, not served from what was parsed before.
        std::fs::write(&path, "-----BEGIN OPENSSH PRIVATE KEY-----\nbroken\n").unwrap();
        let e = g.generate(&ctx(&id, None)).await.unwrap_err();
        assert!(e.detail().contains("not an OpenSSH private key"), "{e:?}");
        std::fs::copy(&other, &path).unwrap();
        let cred = g.generate(&ctx(&id, None)).await.unwrap();
        assert_eq!(&signer(&cred), public(&second_public).key_data());
    }

    #[tokio::test]
    async fn validity_is_lowered_to_max_ttl_and_a_second_is_the_least() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = ca_key(dir.path(), Algorithm::Ecdsa(EcdsaCurve::NistP256)).await;
        let g = generator(
            &path,
            serde_json::json!({"secretStoreRef": {"name": "ssh-ca"}, "principals": ["ci"]}),
        );
        let id = crate::template::tests::identity();
        let now = jiff::Timestamp::now().as_second().unsigned_abs();
        let cred = g
            .generate(&ctx(&id, Some(Duration::from_secs(120))))
            .await
            .unwrap();
        let cert = Certificate::from_openssh(&cred.data["certificate"]).unwrap();
        assert!((now + 120..=now + 122).contains(&cert.valid_before()));
        assert!(cert.extensions().is_empty() && cert.critical_options().is_empty());
        let e = g
            .generate(&ctx(&id, Some(Duration::from_millis(500))))
            .await
            .unwrap_err();
        assert!(matches!(e, BackendError::Rejected { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn a_ca_key_that_cannot_sign_mints_nothing_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, "-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n").unwrap();
        let missing = dir.path().join("missing");
        let id = crate::template::tests::identity();
        for (path, says) in [
            (&garbage, "not an OpenSSH private key"),
            (&missing, "missing"),
        ] {
            let g = generator(
                path,
                serde_json::json!({"secretStoreRef": {"name": "ssh-ca"}, "principals": ["ci"]}),
            );
            let e = g.generate(&ctx(&id, None)).await.unwrap_err();
            assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
            assert!(e.detail().contains(says), "{}", e.detail());
            assert!(!e.detail().contains("BEGIN"), "{}", e.detail());
        }
        // The login check names a usable CA key by its fingerprint, and fails on the others.
        let (ed, ed_public) = ca_key(dir.path(), Algorithm::Ed25519).await;
        let fingerprint = ::ssh_key::PublicKey::from_openssh(&ed_public)
            .unwrap()
            .fingerprint(HashAlg::Sha256)
            .to_string();
        match store(&ed).check_login(None).await {
            crate::LoginCheck::LoggedIn(who) => {
                assert_eq!(who, format!("CA key ssh-ed25519 {fingerprint}"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            store(&garbage).check_login(None).await,
            crate::LoginCheck::Failed(_)
        ));
    }

    #[tokio::test]
    async fn a_principal_rendered_into_something_sshd_misreads_mints_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = ca_key(dir.path(), Algorithm::Ed25519).await;
        let g = generator(
            &path,
            serde_json::json!({"secretStoreRef": {"name": "ssh-ca"}, "principals": ["{{pod}}"]}),
        );
        let mut id = crate::template::tests::identity();
        id.pod = None;
        let e = g.generate(&ctx(&id, None)).await.unwrap_err();
        assert!(
            e.to_string()
                .contains("principal rendered for this caller is empty"),
            "{e}"
        );
    }

    #[test]
    fn rejects_bad_specs_naming_the_field() {
        let base = || serde_json::json!({"secretStoreRef": {"name": "ca"}, "principals": ["ci"]});
        let with = |k: &str, v: serde_json::Value| {
            let mut j = base();
            j[k] = v;
            j
        };
        for (json, field) in [
            (with("principals", serde_json::json!([])), "principals"),
            (
                with("principals", serde_json::json!(["a,b"])),
                "principals[0]",
            ),
            (
                with("principals", serde_json::json!(["{{nope}}"])),
                "principals[0]",
            ),
            (with("validity", serde_json::json!("0s")), "validity"),
            (with("validity", serde_json::json!("8d")), "validity"),
            (
                with("extensions", serde_json::json!(["permit-everything"])),
                "extensions",
            ),
            (
                with("sourceAddress", serde_json::json!(["10.0.0.0/33"])),
                "sourceAddress",
            ),
            (
                with("sourceAddress", serde_json::json!(["example.com"])),
                "sourceAddress",
            ),
            (with("forceCommand", serde_json::json!("")), "forceCommand"),
            (with("keySize", serde_json::json!(2048)), "keySize"),
            (with("keyId", serde_json::json!("a\nb")), "keyId"),
            (with("zzUnknown", serde_json::json!(1)), "zzUnknown"),
        ] {
            let e = spec(json.clone()).unwrap_err().to_string();
            assert!(e.contains(field), "{json}: {e}");
        }
        assert!(
            spec(with(
                "sourceAddress",
                serde_json::json!(["192.0.2.7", "::1/128"])
            ))
            .is_ok()
        );
        // A host certificate has no user options.
        let mut host = with("certType", serde_json::json!("host"));
        assert!(spec(host.clone()).is_ok());
        host["extensions"] = serde_json::json!(["permit-pty"]);
        let e = spec(host).unwrap_err().to_string();
        assert!(
            e.contains("certType") && e.contains("host certificate"),
            "{e}"
        );
        let e = spec(with("certType", serde_json::json!("ca")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("certType") || e.contains("unknown variant"),
            "{e}"
        );
        // The store must be an `ssh` one.
        let other = SecretStoreSpec::from_manifest(
            serde_json::json!({"provider": {"ssh": {"caKey": {"env": "SSH_CA"}}}}),
        )
        .unwrap();
        assert!(SshCertificateGenerator::new(&spec(base()).unwrap(), Some(&other)).is_ok());
        assert!(SshCertificateGenerator::new(&spec(base()).unwrap(), None).is_err());
    }

    /// CA keys as `ssh-keygen` writes them: an RSA one signs (OpenSSH's format carries no CRT
    /// exponents; they are computed), an encrypted or a DSA one is refused naming why.
    #[tokio::test]
    async fn openssh_made_ca_keys_sign_or_are_refused_naming_why() {
        let Some(keygen) = crate::ssh_key::tests::ssh_keygen(
            "openssh_made_ca_keys_sign_or_are_refused_naming_why",
        ) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let make = |name: &str, args: &[&str]| {
            let path = dir.path().join(name);
            let made = Command::new(&keygen)
                .args(["-q", "-C", "ca"])
                .args(args)
                .arg("-f")
                .arg(&path)
                .output()
                .unwrap();
            assert!(made.status.success(), "{made:?}");
            path
        };
        let rsa = make("rsa", &["-t", "rsa", "-b", "2048", "-N", ""]);
        let encrypted = make("enc", &["-t", "ed25519", "-N", "a passphrase"]);
        let dsa = make("dsa", &["-t", "dsa", "-N", ""]);
        let id = crate::template::tests::identity();
        let json = serde_json::json!({"secretStoreRef": {"name": "ssh-ca"}, "principals": ["ci"]});
        let cred = generator(&rsa, json.clone())
            .generate(&ctx(&id, None))
            .await
            .unwrap();
        let cert = Certificate::from_openssh(&cred.data["certificate"]).unwrap();
        let public = std::fs::read_to_string(rsa.with_extension("pub")).unwrap();
        assert_eq!(
            cert.signature_key(),
            ::ssh_key::PublicKey::from_openssh(&public)
                .unwrap()
                .key_data()
        );
        assert_eq!(cert.signature().algorithm().as_str(), "rsa-sha2-512");
        for (path, says) in [(&encrypted, "encrypted"), (&dsa, "cannot sign here")] {
            let e = generator(path, json.clone())
                .generate(&ctx(&id, None))
                .await
                .unwrap_err();
            assert!(e.detail().contains(says), "{}", e.detail());
            assert!(!e.detail().contains("BEGIN"), "{}", e.detail());
        }
    }

    /// OpenSSH as the peer: `ssh-keygen -Y sign` signs with the key and its certificate (as
    /// `ssh` presents them), and `-Y verify` checks the certificate against an allowed-signers
    /// line trusting the CA (`cert-authority`), as `sshd`'s `TrustedUserCAKeys` would: the
    /// CA's signature, the validity at this moment and the principal.
    #[tokio::test]
    async fn openssh_accepts_the_certificate_for_its_principals_only_under_its_ca() {
        let Some(keygen) = crate::ssh_key::tests::ssh_keygen(
            "openssh_accepts_the_certificate_for_its_principals_only_under_its_ca",
        ) else {
            return;
        };
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let id = crate::template::tests::identity();
        let msg = dir.path().join("msg");
        std::fs::write(&msg, "deploy 2026-12-02").unwrap();
        let (other_ca, other_public) = ca_key(dir.path(), Algorithm::Ed25519).await;
        let _ = other_ca;
        for (i, (ca, key_type)) in [
            (Algorithm::Ed25519, serde_json::json!({})),
            (
                Algorithm::Ecdsa(EcdsaCurve::NistP384),
                serde_json::json!({"keyType": "rsa", "keySize": 2048}),
            ),
            (
                Algorithm::Ecdsa(EcdsaCurve::NistP521),
                serde_json::json!({"keyType": "ecdsa", "keySize": 256}),
            ),
            (
                Algorithm::Rsa(aws_lc_rs::rsa::KeySize::Rsa3072),
                serde_json::json!({}),
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let sub = dir.path().join(i.to_string());
            std::fs::create_dir(&sub).unwrap();
            let (path, ca_public) = ca_key(&sub, ca).await;
            let mut json = serde_json::json!({"secretStoreRef": {"name": "ssh-ca"},
                "principals": ["deploy", "{{serviceAccount}}"], "extensions": ["permit-pty"]});
            for (k, v) in key_type.as_object().unwrap() {
                json[k] = v.clone();
            }
            let cred = generator(&path, json)
                .generate(&ctx(&id, None))
                .await
                .unwrap();
            let key = sub.join("key");
            std::fs::write(&key, &cred.data["privateKey"]).unwrap();
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::fs::write(sub.join("key-cert.pub"), &cred.data["certificate"]).unwrap();

            let listed = Command::new(&keygen)
                .args(["-L", "-f"])
                .arg(sub.join("key-cert.pub"))
                .output()
                .unwrap();
            let listing = String::from_utf8_lossy(&listed.stdout);
            assert!(listed.status.success(), "{listing} {:?}", listed);
            assert!(listing.contains("user certificate"), "{listing}");
            assert!(
                listing.contains("Key ID: \"esi:prod-eu:payments:api\""),
                "{listing}"
            );
            assert!(listing.contains("permit-pty"), "{listing}");

            let signed = Command::new(&keygen)
                .args(["-Y", "sign", "-n", "file", "-f"])
                .arg(sub.join("key-cert.pub"))
                .arg(&msg)
                .env_remove("SSH_AUTH_SOCK")
                .output()
                .unwrap();
            assert!(signed.status.success(), "{signed:?}");
            let verify = |principal: &str, ca_line: &str| {
                let allowed = sub.join("allowed");
                std::fs::write(&allowed, format!("{principal} cert-authority {ca_line}\n"))
                    .unwrap();
                Command::new(&keygen)
                    .args(["-Y", "verify", "-n", "file", "-I", principal, "-f"])
                    .arg(&allowed)
                    .arg("-s")
                    .arg(msg.with_extension("sig"))
                    .stdin(std::fs::File::open(&msg).unwrap())
                    .output()
                    .unwrap()
            };
            for principal in ["deploy", "api"] {
                let out = verify(principal, &ca_public);
                assert!(
                    out.status.success(),
                    "{principal} (case {i}): {out:?} {listing}"
                );
            }
            assert!(
                !verify("root", &ca_public).status.success(),
                "another principal"
            );
            assert!(
                !verify("deploy", &other_public).status.success(),
                "another CA"
            );
            std::fs::remove_file(msg.with_extension("sig")).unwrap();
        }
    }
}

/// The certificates against a real `sshd` (OpenSSH's, started here on 127.0.0.1, trusting the
/// CA with `TrustedUserCAKeys`) and the real `ssh` client presenting key and certificate.
#[cfg(test)]
mod sshd {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use super::tests::{ca_key, ctx, generator};

    /// `sshd` running until dropped, and its log.
    struct Sshd {
        child: Child,
        port: u16,
        log: std::path::PathBuf,
    }

    impl Drop for Sshd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Who `sshd` runs as and lets log in: as root, `nobody` (sshd as root needs its
    /// privilege-separation user, which only the package's installation makes); else the
    /// user running the test.
    fn login_user() -> (Option<u32>, String) {
        use std::os::unix::fs::MetadataExt as _;
        let euid = std::fs::metadata("/proc/self").unwrap().uid();
        if euid == 0 {
            return (Some(65534), "nobody".to_owned());
        }
        let out = Command::new("id").arg("-un").output().unwrap();
        (
            None,
            String::from_utf8(out.stdout).unwrap().trim().to_owned(),
        )
    }

    /// Starts `sshd` trusting `ca_public` for users, with the host key and certificate of
    /// `host` when given (else a key of its own).
    fn start(
        keygen: &Path,
        sshd: &str,
        dir: &Path,
        ca_public: &str,
        uid: Option<u32>,
        host_cred: Option<&crate::Credential>,
    ) -> Sshd {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let host = dir.join("host");
        let mut host_cert = String::new();
        match host_cred {
            Some(cred) => {
                std::fs::write(&host, &cred.data["privateKey"]).unwrap();
                std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o600)).unwrap();
                let cert = dir.join("host-cert.pub");
                std::fs::write(&cert, &cred.data["certificate"]).unwrap();
                host_cert = format!("HostCertificate {}\n", cert.display());
            }
            None => {
                let made = Command::new(keygen)
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(&host)
                    .status()
                    .unwrap();
                assert!(made.success());
            }
        }
        if let Some(uid) = uid {
            std::os::unix::fs::chown(&host, Some(uid), Some(uid)).unwrap();
        }
        std::fs::write(dir.join("ca.pub"), format!("{ca_public}\n")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // PAM for the account and session checks (with `UsePAM no`, sshd takes `nobody`'s
        // `*` password for a locked account); no password or keyboard-interactive login, no
        // authorized_keys: the certificate is the only way in.
        let config = format!(
            "ListenAddress 127.0.0.1:{port}\nHostKey {}\nPidFile none\nTrustedUserCAKeys {}\n\
             AuthorizedKeysFile none\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM yes\nStrictModes no\nLogLevel VERBOSE\n{host_cert}",
            host.display(),
            dir.join("ca.pub").display()
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        let log = dir.join("sshd.log");
        let mut cmd = Command::new(sshd);
        cmd.args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid);
        }
        let server = Sshd {
            child: cmd.spawn().unwrap(),
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen: {}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    impl Sshd {
        fn log_text(&self) -> String {
            let mut text = String::new();
            let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut text));
            text
        }

        /// Whether `ssh` logs in as `user` with the key and certificate of `cred`.
        fn logs_in(&self, ssh: &str, dir: &Path, user: &str, cred: &crate::Credential) -> bool {
            let said = self.connect(ssh, dir, user, cred, None);
            let authenticated = said.contains("Authenticated to 127.0.0.1");
            assert!(
                authenticated || said.contains("Permission denied"),
                "neither in nor refused: {said}\n{}",
                self.log_text()
            );
            authenticated
        }

        /// What `ssh -v` says connecting as `user` with the key and certificate of `cred`,
        /// checking the host strictly against `@cert-authority * <host_ca>` when given (else
        /// taking any host key).
        fn connect(
            &self,
            ssh: &str,
            dir: &Path,
            user: &str,
            cred: &crate::Credential,
            host_ca: Option<&str>,
        ) -> String {
            let known = dir.join("known_hosts");
            let (strict, known) = match host_ca {
                Some(ca) => {
                    std::fs::write(&known, format!("@cert-authority * {ca}\n")).unwrap();
                    ("yes", known.display().to_string())
                }
                None => ("no", "/dev/null".to_owned()),
            };
            let key = dir.join("id");
            std::fs::write(&key, &cred.data["privateKey"]).unwrap();
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::fs::write(dir.join("id-cert.pub"), &cred.data["certificate"]).unwrap();
            let out = Command::new(ssh)
                .args(["-v", "-F", "/dev/null", "-i"])
                .arg(&key)
                .arg("-o")
                .arg(format!(
                    "CertificateFile={}",
                    dir.join("id-cert.pub").display()
                ))
                .arg("-o")
                .arg(format!("StrictHostKeyChecking={strict}"))
                .arg("-o")
                .arg(format!("UserKnownHostsFile={known}"))
                .args([
                    "-o",
                    "IdentitiesOnly=yes",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "ConnectTimeout=5",
                    "-p",
                ])
                .arg(self.port.to_string())
                .arg(format!("{user}@127.0.0.1"))
                .arg("true")
                .env_remove("SSH_AUTH_SOCK")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stderr).into_owned()
        }
    }

    /// What both tests need: OpenSSH's three programs, a directory, the user to log in as
    /// (and the uid to run sshd as), and two CA keys (path, public line): the store's and
    /// another.
    struct Setup {
        keygen: std::path::PathBuf,
        sshd: String,
        ssh: String,
        dir: tempfile::TempDir,
        uid: Option<u32>,
        user: String,
        ca: (std::path::PathBuf, String),
        other: (std::path::PathBuf, String),
    }

    async fn setup(test: &str) -> Option<Setup> {
        let (Some(keygen), Some(sshd), Some(ssh)) = (
            crate::ssh_key::tests::ssh_keygen(test),
            esi_test_support::peer("ESI_TEST_SSHD", test),
            esi_test_support::peer("ESI_TEST_SSH", test),
        ) else {
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let (uid, user) = login_user();
        let ca = ca_key(dir.path(), super::Algorithm::Ed25519).await;
        std::fs::create_dir(dir.path().join("other")).unwrap();
        let other = ca_key(
            &dir.path().join("other"),
            super::Algorithm::Ecdsa(::ssh_key::EcdsaCurve::NistP256),
        )
        .await;
        Some(Setup {
            keygen,
            sshd,
            ssh,
            dir,
            uid,
            user,
            ca,
            other,
        })
    }

    #[tokio::test]
    async fn a_certificate_logs_in_to_sshd_as_its_principals_until_it_expires() {
        let Some(Setup {
            keygen,
            sshd,
            ssh,
            dir,
            uid,
            user,
            ca: (path, ca_public),
            other: (other, _),
        }) = setup("a_certificate_logs_in_to_sshd_as_its_principals_until_it_expires").await
        else {
            return;
        };
        let server = start(&keygen, &sshd, dir.path(), &ca_public, uid, None);
        let id = crate::template::tests::identity();
        let principals =
            |p: &[&str]| serde_json::json!({"secretStoreRef": {"name": "ssh-ca"}, "principals": p});
        use crate::Generate as _;

        // Its principals include the user: in, and sshd logs who the certificate was for.
        let cred = generator(&path, principals(&["deploy", &user]))
            .generate(&ctx(&id, None))
            .await
            .unwrap();
        assert!(server.logs_in(&ssh, dir.path(), &user, &cred));
        let log = server.log_text();
        assert!(
            log.contains(&format!("Accepted publickey for {user}"))
                && log.contains("ID esi:prod-eu:payments:api"),
            "{log}"
        );
        // Another user's principal only, or another CA: refused.
        let cred = generator(&path, principals(&["deploy"]))
            .generate(&ctx(&id, None))
            .await
            .unwrap();
        assert!(!server.logs_in(&ssh, dir.path(), &user, &cred));
        let cred = generator(&other, principals(&[&user]))
            .generate(&ctx(&id, None))
            .await
            .unwrap();
        assert!(!server.logs_in(&ssh, dir.path(), &user, &cred));
        // Lowered to a maxTTL of a second: in now, refused once it has ended.
        let cred = generator(&path, principals(&[&user]))
            .generate(&ctx(&id, Some(Duration::from_secs(1))))
            .await
            .unwrap();
        let end = cred.expires_at.unwrap();
        while jiff::Timestamp::now() <= end + jiff::SignedDuration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!server.logs_in(&ssh, dir.path(), &user, &cred));
        assert!(
            server.log_text().contains("expired"),
            "{}",
            server.log_text()
        );
    }

    #[tokio::test]
    async fn a_host_certificate_lets_clients_trust_sshd_by_its_ca_alone() {
        let Some(Setup {
            keygen,
            sshd,
            ssh,
            dir,
            uid,
            user,
            ca: (path, ca_public),
            other: (_, other_public),
        }) = setup("a_host_certificate_lets_clients_trust_sshd_by_its_ca_alone").await
        else {
            return;
        };
        use crate::Generate as _;
        let id = crate::template::tests::identity();
        // The workload serving SSH gets a host certificate for the name clients dial.
        let host = generator(
            &path,
            serde_json::json!({"secretStoreRef": {"name": "ssh-ca"}, "certType": "host",
                               "principals": ["127.0.0.1", "{{pod}}.{{namespace}}"]}),
        )
        .generate(&ctx(&id, None))
        .await
        .unwrap();
        let cert = ::ssh_key::Certificate::from_openssh(&host.data["certificate"]).unwrap();
        assert_eq!(cert.cert_type(), ::ssh_key::certificate::CertType::Host);
        assert_eq!(cert.valid_principals(), ["127.0.0.1", "api-7d9f.payments"]);
        let server = start(&keygen, &sshd, dir.path(), &ca_public, uid, Some(&host));
        let client = generator(
            &path,
            serde_json::json!({"secretStoreRef": {"name": "ssh-ca"}, "principals": [&user]}),
        )
        .generate(&ctx(&id, None))
        .await
        .unwrap();
        // A client trusting the CA for hosts checks the host strictly and gets in, with no
        // host key pinned anywhere.
        let said = server.connect(&ssh, dir.path(), &user, &client, Some(&ca_public));
        assert!(said.contains("Authenticated to 127.0.0.1"), "{said}");
        assert!(said.contains("Server host certificate"), "{said}");
        // One trusting another CA refuses the host.
        let said = server.connect(&ssh, dir.path(), &user, &client, Some(&other_public));
        assert!(said.contains("Host key verification failed"), "{said}");
        assert!(!said.contains("Authenticated to"), "{said}");
    }
}
