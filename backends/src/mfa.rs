//! `MFA`: the current one-time code (TOTP, RFC 6238) of a seed the federation holds, with
//! External Secrets Operator's output keys: `token` (the code) and `timeLeft` (whole seconds
//! until it changes); the credential's `expiresAt` is the end of the current period.
//!
//! The seed is named by `secret`, a [`SecretRef`] (`{env: VAR}` or `{file: /path}`), and read
//! on every request, so a rotated file needs no restart. It is the base32 text an
//! authenticator app is given: upper or lower case, spaces allowed (apps show it in groups),
//! `=` padding optional; at least 16 characters (80 bits, the shortest Google Authenticator
//! takes). An `otpauth://` URI is refused with a message saying to store only its `secret`
//! parameter: its own `digits`, `period` and `algorithm` would compete with the spec's.
//!
//! `length` (6 default, 6..=8), `timePeriod` (`30s` default, whole seconds from 1s to 1h) and
//! `algorithm` (`sha1` default, `sha256`, `sha512`) must match what the verifier expects.
//! Codes are computed with `totp-rs`. A code cannot be revoked, and its lifetime is the
//! period, not something esi can shorten.
//!
//! The Authorization's `maxTTL` holds against the period: a generator whose `timePeriod` is
//! longer than `maxTTL` is refused on every request (`Rejected`, the message naming both), and
//! nothing is computed. The refusal does not depend on when in the period a request lands:
//! a code handed out late in its period lives less than maxTTL, one handed out early would not,
//! and an Authorization that works by chance (a 90 s period under a 60 s maxTTL: two requests
//! in three) would hide a configuration error until it bites. With `timePeriod` at most `maxTTL`, every code fits: it
//! lives `timeLeft`, never more than one period. (Verifiers that accept the previous period's
//! code for clock drift keep it usable a period past `expiresAt`; esi can neither see nor
//! shorten that window.)
//!
//! Errors about the seed name where it comes from and what is wrong with it (a position, a
//! length), never a character of it: a seed is a long-lived secret, unlike the codes.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::CustomResource;
use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::{BackendError, Context, Credential, Generate, SecretRef, SpecError};

/// Code lengths (digits) a verifier may ask for.
pub const LENGTHS: std::ops::RangeInclusive<u8> = 6..=8;
/// The longest period.
pub const MAX_PERIOD_SECS: u64 = 3600;
/// The fewest base32 characters a seed may have (80 bits).
pub const MIN_SEED_CHARS: usize = 16;
/// The most base32 characters a seed may have (640 bytes, ten times a SHA-512 block).
pub const MAX_SEED_CHARS: usize = 1024;

/// `spec` of an `MFA` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "MFA",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MfaSpec {
    /// Where the federation reads the base32 seed: `{env: VAR}` or `{file: /path}` (re-read on
    /// every request).
    pub secret: SecretRef,
    /// Digits of the code, 6 (default) to 8.
    #[serde(default = "default_length")]
    pub length: u8,
    /// How long a code lasts (default `30s`): whole seconds, at most `1h`.
    #[serde(default = "default_period")]
    pub time_period: HumanDuration,
    /// The HMAC hash: `sha1` (default, what authenticator apps assume), `sha256` or `sha512`.
    #[serde(default)]
    pub algorithm: MfaAlgorithm,
}

fn default_length() -> u8 {
    6
}

fn default_period() -> HumanDuration {
    HumanDuration::from_secs(30)
}

/// The HMAC hash of an `MFA` generator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MfaAlgorithm {
    /// HMAC-SHA-1.
    #[default]
    Sha1,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-512.
    Sha512,
}

impl MfaAlgorithm {
    fn totp(self) -> totp_rs::Algorithm {
        match self {
            MfaAlgorithm::Sha1 => totp_rs::Algorithm::SHA1,
            MfaAlgorithm::Sha256 => totp_rs::Algorithm::SHA256,
            MfaAlgorithm::Sha512 => totp_rs::Algorithm::SHA512,
        }
    }
}

impl MfaSpec {
    /// Checks the values serde cannot: the reference, the length and the period.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.secret.validate("secret")?;
        if !LENGTHS.contains(&self.length) {
            return Err(SpecError::field(
                "length",
                format!(
                    "must be between {} and {}, got {}",
                    LENGTHS.start(),
                    LENGTHS.end(),
                    self.length
                ),
            ));
        }
        let period = self.time_period.get();
        if period.subsec_nanos() != 0 || period.as_secs() == 0 || period.as_secs() > MAX_PERIOD_SECS
        {
            return Err(SpecError::field(
                "timePeriod",
                format!(
                    "must be whole seconds from 1s to 1h, got {}",
                    self.time_period
                ),
            ));
        }
        Ok(())
    }
}

/// One code and how long it lasts.
#[derive(Clone, PartialEq, Eq)]
pub struct Code {
    /// The code, zero-padded to its length.
    pub token: String,
    /// Whole seconds until the period ends.
    pub time_left: u64,
    /// Unix time (seconds) the period ends.
    pub period_end: u64,
}

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Code")
            .field("time_left", &self.time_left)
            .field("period_end", &self.period_end)
            .finish_non_exhaustive()
    }
}

/// The code of `seed` (raw bytes) at Unix time `now` (RFC 6238: HOTP of the period counter
/// `now / period`). `digits` is checked by the spec (6..=8), `period` is at least one second.
pub fn code_at(seed: &[u8], algorithm: MfaAlgorithm, digits: u8, period: u64, now: u64) -> Code {
    let period = period.max(1);
    // Not `build()`: it refuses seeds under 128 bits (RFC 4226's MUST), and authenticator apps
    // take 80-bit seeds that services hand out; the seed's length is checked in `parse_seed`.
    let totp = totp_rs::Builder::new()
        .with_algorithm(algorithm.totp())
        .with_digits(digits)
        .with_step_duration(period)
        .with_secret(seed)
        .build_noncompliant();
    let period_end = (now / period + 1) * period;
    Code {
        token: totp.generate(now).to_string(),
        time_left: period_end - now,
        period_end,
    }
}

/// Why a seed is unusable; its messages never quote the seed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedError {
    /// An `otpauth://` URI rather than its secret.
    #[error(
        "holds an otpauth:// URI; store only the base32 value of its `secret` parameter (set length, timePeriod and algorithm in the spec)"
    )]
    Uri,
    /// A character outside base32 (after spaces are dropped).
    #[error(
        "is not base32: character {position} is not one of A-Z, 2-7 (spaces and `=` padding aside)"
    )]
    Character {
        /// 1-based position among the seed's characters.
        position: usize,
    },
    /// Padding before the end.
    #[error("is not base32: `=` padding may only end it")]
    Padding,
    /// A length base32 cannot have.
    #[error(
        "is not base32: {chars} characters do not make whole bytes (a base32 length leaves 0, 2, 4, 5 or 7 over a multiple of 8)"
    )]
    Length {
        /// Characters without spaces and padding.
        chars: usize,
    },
    /// Too short to be a seed.
    #[error("is too short: {chars} base32 characters, at least {MIN_SEED_CHARS} (80 bits) needed")]
    TooShort {
        /// Characters without spaces and padding.
        chars: usize,
    },
    /// Too long to be a seed.
    #[error("is too long: more than {MAX_SEED_CHARS} base32 characters")]
    TooLong,
}

/// Decodes a seed as authenticator apps take it: base32 in either case, spaces anywhere,
/// optional `=` padding.
pub fn parse_seed(text: &str) -> Result<SecretBox<[u8]>, SeedError> {
    let text = text.trim();
    if text
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("otpauth:"))
    {
        return Err(SeedError::Uri);
    }
    let mut clean = String::with_capacity(text.len());
    let mut padding = false;
    for (i, c) in text.chars().filter(|c| !c.is_whitespace()).enumerate() {
        match c {
            '=' => padding = true,
            _ if padding => return Err(SeedError::Padding),
            'a'..='z' | 'A'..='Z' | '2'..='7' => clean.push(c.to_ascii_uppercase()),
            _ => return Err(SeedError::Character { position: i + 1 }),
        }
        if clean.len() > MAX_SEED_CHARS {
            return Err(SeedError::TooLong);
        }
    }
    let clean = SecretString::from(clean);
    let chars = clean.expose_secret().len();
    if !matches!(chars % 8, 0 | 2 | 4 | 5 | 7) {
        return Err(SeedError::Length { chars });
    }
    if chars < MIN_SEED_CHARS {
        return Err(SeedError::TooShort { chars });
    }
    // Every character was checked above; decoding cannot fail on them.
    let secret = totp_rs::Secret::try_from_base32(clean.expose_secret())
        .map_err(|_| SeedError::Length { chars })?;
    Ok(SecretBox::from(Box::<[u8]>::from(secret.as_bytes())))
}

/// The built `MFA` generator. Holds the reference, never the seed.
#[derive(Debug, Clone)]
pub struct MfaGenerator {
    spec: MfaSpec,
}

impl MfaGenerator {
    /// Builds the generator; fails on a spec [`MfaSpec::validate`] refuses.
    pub fn new(spec: MfaSpec) -> Result<Self, SpecError> {
        spec.validate()?;
        Ok(MfaGenerator { spec })
    }

    /// Refuses a period longer than the Authorization's `max_ttl`, whatever the time: see the
    /// module docs.
    fn check_max_ttl(&self, max_ttl: Option<Duration>) -> Result<(), BackendError> {
        let period = self.spec.time_period.get();
        match max_ttl {
            Some(max) if period > max => {
                let human = |d: Duration| humantime::format_duration(d).to_string();
                Err(BackendError::Rejected {
                    message: format!(
                        "the generator's codes last up to its timePeriod of {}, longer than the \
                         Authorization's maxTTL of {}; no code was handed out. Raise the \
                         Authorization's maxTTL to at least {} (the period is the verifier's)",
                        human(period),
                        human(max),
                        human(period)
                    ),
                    detail: format!(
                        "mfa: timePeriod {}s over maxTTL {}ms",
                        period.as_secs(),
                        max.as_millis()
                    ),
                })
            }
            _ => Ok(()),
        }
    }

    /// The credential at `now` under an Authorization's `max_ttl`: refused when the period is
    /// longer (see the module docs), else the seed read again and the code of the period `now`
    /// falls in.
    pub fn generate_at(
        &self,
        now: jiff::Timestamp,
        max_ttl: Option<Duration>,
    ) -> Result<Credential, BackendError> {
        self.check_max_ttl(max_ttl)?;
        let unusable = |detail: String| BackendError::Unavailable {
            message: "the federation's MFA seed is not usable".to_owned(),
            detail,
        };
        let text = self.spec.secret.read()?;
        let seed = parse_seed(text.expose_secret()).map_err(|e| {
            unusable(format!(
                "mfa: the seed from {} {e}",
                self.spec.secret.describe()
            ))
        })?;
        let now = u64::try_from(now.as_second())
            .map_err(|_| unusable(format!("mfa: the clock reads {now}, before 1970")))?;
        let code = code_at(
            seed.expose_secret(),
            self.spec.algorithm,
            self.spec.length,
            self.spec.time_period.get().as_secs(),
            now,
        );
        let expires_at = i64::try_from(code.period_end)
            .ok()
            .and_then(|s| jiff::Timestamp::from_second(s).ok());
        let mut cred = Credential::static_data(BTreeMap::from([
            ("token".to_owned(), code.token),
            ("timeLeft".to_owned(), code.time_left.to_string()),
        ]));
        cred.expires_at = expires_at;
        Ok(cred)
    }
}

impl Generate for MfaGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        self.generate_at(jiff::Timestamp::now(), ctx.max_ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GeneratorKind, GeneratorSpec};

    /// RFC 6238 Appendix B: the seeds are ASCII digits repeated to the hash's length.
    const SEED_SHA1: &[u8] = b"12345678901234567890";
    const SEED_SHA256: &[u8] = b"12345678901234567890123456789012";
    const SEED_SHA512: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    #[test]
    fn rfc_6238_appendix_b_test_vectors() {
        // (time, SHA-1, SHA-256, SHA-512), 8 digits, 30 s period.
        let vectors = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for (t, sha1, sha256, sha512) in vectors {
            for (seed, algorithm, expected) in [
                (SEED_SHA1, MfaAlgorithm::Sha1, sha1),
                (SEED_SHA256, MfaAlgorithm::Sha256, sha256),
                (SEED_SHA512, MfaAlgorithm::Sha512, sha512),
            ] {
                let code = code_at(seed, algorithm, 8, 30, t);
                assert_eq!(code.token, expected, "{algorithm:?} at {t}");
                assert_eq!(code.period_end, (t / 30 + 1) * 30);
                assert_eq!(code.time_left, code.period_end - t);
            }
            // Six digits are the last six of the eight (the modulus is applied to the same
            // truncated value).
            assert_eq!(
                code_at(SEED_SHA1, MfaAlgorithm::Sha1, 6, 30, t).token,
                sha1[2..]
            );
        }
    }

    fn base32(bytes: &[u8]) -> String {
        totp_rs::Secret::from(bytes).to_base32()
    }

    fn generator(dir: &std::path::Path, seed: &str, spec: serde_json::Value) -> MfaGenerator {
        let path = dir.join("seed");
        std::fs::write(&path, seed).unwrap();
        let mut json = serde_json::json!({"secret": {"file": path}});
        json.as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        match GeneratorSpec::from_manifest(GeneratorKind::Mfa, json).unwrap() {
            GeneratorSpec::Mfa(s) => MfaGenerator::new(s).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(second).unwrap()
    }

    #[test]
    fn the_generator_answers_as_eso_at_a_fixed_time() {
        let dir = tempfile::tempdir().unwrap();
        let seed = base32(SEED_SHA256);
        let g = generator(
            dir.path(),
            &seed,
            serde_json::json!({"length": 8, "algorithm": "sha256"}),
        );
        let cred = g.generate_at(at(1111111111), None).unwrap();
        assert_eq!(
            cred.data,
            BTreeMap::from([
                ("token".to_owned(), "67062674".to_owned()),
                // 1111111111 = 37037037 * 30 + 1: 29 s of the period left.
                ("timeLeft".to_owned(), "29".to_owned()),
            ])
        );
        assert_eq!(cred.expires_at, Some(at(1111111140)));
        assert!(cred.lease.is_none() && !cred.renewable);
        // The period's last second still has one second left; the next second is a new code.
        let last = g.generate_at(at(1111111139), None).unwrap();
        assert_eq!(last.data["token"], "67062674");
        assert_eq!(last.data["timeLeft"], "1");
        let next = g.generate_at(at(1111111140), None).unwrap();
        assert_ne!(next.data["token"], "67062674");
        assert_eq!(next.data["timeLeft"], "30");
        assert_eq!(next.expires_at, Some(at(1111111170)));
    }

    #[test]
    fn a_period_longer_than_max_ttl_is_refused_whenever_asked() {
        let dir = tempfile::tempdir().unwrap();
        let g = generator(
            dir.path(),
            &base32(SEED_SHA1),
            serde_json::json!({"timePeriod": "1m"}),
        );
        let secs = Duration::from_secs;
        // At every point of the period, even its last second (a code living 1 s): the answer
        // depends on the configuration, not on when the request lands.
        for t in [60, 61, 89, 119] {
            let err = g.generate_at(at(t), Some(secs(30))).unwrap_err();
            let BackendError::Rejected { message, detail } = &err else {
                panic!("{t}: {err:?}")
            };
            assert!(
                message.contains("timePeriod of 1m") && message.contains("maxTTL of 30s"),
                "{message}"
            );
            assert_eq!(detail, "mfa: timePeriod 60s over maxTTL 30000ms");
        }
        // Refused before the seed is read: a missing seed does not change the answer.
        std::fs::remove_file(dir.path().join("seed")).unwrap();
        let err = g.generate_at(at(60), Some(secs(59))).unwrap_err();
        assert!(matches!(err, BackendError::Rejected { .. }), "{err:?}");
        std::fs::write(dir.path().join("seed"), base32(SEED_SHA1)).unwrap();
        // A maxTTL of at least the period: every code fits, whenever asked.
        for max in [secs(60), secs(61), secs(3600)] {
            for t in [60, 119] {
                let cred = g.generate_at(at(t), Some(max)).unwrap();
                assert_eq!(cred.expires_at, Some(at(120)), "{max:?} at {t}");
            }
        }
        let cred = g.generate_at(at(60), None).unwrap();
        assert_eq!(cred.data["timeLeft"], "60");
    }

    #[tokio::test]
    async fn generate_holds_the_authorization_max_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let g = generator(dir.path(), &base32(SEED_SHA1), serde_json::json!({}));
        let id = crate::template::tests::identity();
        let ctx = |max_ttl| Context {
            identity: &id,
            generator: "payments/MFA/vendor",
            max_ttl,
        };
        let err = g
            .generate(&ctx(Some(Duration::from_secs(29))))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("timePeriod of 30s"), "{err}");
        let cred = g
            .generate(&ctx(Some(Duration::from_secs(30))))
            .await
            .unwrap();
        assert_eq!(cred.data["token"].len(), 6);
    }

    #[test]
    fn defaults_are_six_digits_sha1_and_30s() {
        let dir = tempfile::tempdir().unwrap();
        let g = generator(dir.path(), &base32(SEED_SHA1), serde_json::json!({}));
        let cred = g.generate_at(at(59), None).unwrap();
        assert_eq!(cred.data["token"], "287082");
        assert_eq!(cred.data["timeLeft"], "1");
        let g = generator(
            dir.path(),
            &base32(SEED_SHA1),
            serde_json::json!({"timePeriod": "1m", "length": 7}),
        );
        let cred = g.generate_at(at(59), None).unwrap();
        assert_eq!(cred.data["timeLeft"], "1");
        assert_eq!(cred.expires_at, Some(at(60)));
        assert_eq!(
            cred.data["token"],
            code_at(SEED_SHA1, MfaAlgorithm::Sha1, 7, 60, 59).token
        );
        assert_eq!(cred.data["token"].len(), 7);
    }

    #[test]
    fn seeds_are_read_as_authenticator_apps_take_them() {
        let canonical = base32(SEED_SHA1);
        assert_eq!(canonical, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        let grouped = "gezd gnbv gy3t qojq GEZD GNBV GY3T QOJQ\n";
        for text in [
            canonical.as_str(),
            grouped,
            " GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ ",
        ] {
            assert_eq!(
                parse_seed(text).unwrap().expose_secret(),
                SEED_SHA1,
                "{text}"
            );
        }
        // Padding, optional: 10 bytes are 16 characters exactly, 11 need 18 (+6 `=`).
        let eleven = base32(b"hello world");
        assert_eq!(eleven.len(), 18);
        for text in [
            eleven.clone(),
            format!("{eleven}======"),
            format!("{eleven}="),
        ] {
            assert_eq!(parse_seed(&text).unwrap().expose_secret(), b"hello world");
        }
        // The shortest common seed (80 bits, 16 characters).
        assert_eq!(
            parse_seed("JBSWY3DPEHPK3PXP")
                .unwrap()
                .expose_secret()
                .len(),
            10
        );
    }

    #[test]
    fn unusable_seeds_are_named_without_their_value() {
        let seed = "JBSWY3DPEHPK3PXPJBSWY3DP";
        let cases = [
            (
                format!("otpauth://totp/Example:alice?secret={seed}&issuer=Example"),
                "otpauth:// URI",
            ),
            (format!("OTPAUTH://TOTP/x?secret={seed}"), "otpauth:// URI"),
            (
                format!("{}1{}", &seed[..5], &seed[5..]),
                "character 6 is not one of A-Z, 2-7",
            ),
            (format!("{seed}-"), "character 25"),
            (
                format!("{}={}", &seed[..8], &seed[8..]),
                "padding may only end it",
            ),
            (format!("{seed}J"), "25 characters do not make whole bytes"),
            (
                "JBSWY3DPEHPK3PX".to_owned(),
                "too short: 15 base32 characters",
            ),
            ("JBSWY3DP".to_owned(), "too short: 8"),
            ("A".repeat(MAX_SEED_CHARS + 8), "too long"),
            ("é".repeat(20), "character 1"),
        ];
        for (text, expected) in cases {
            let err = parse_seed(&text).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(shown.contains(expected), "{text}: {shown}");
            assert!(
                !shown.contains(&seed[..8]) && !shown.contains("Example"),
                "{shown}"
            );
        }
    }

    #[test]
    fn a_bad_missing_or_empty_seed_mints_nothing_and_says_where_not_what() {
        let dir = tempfile::tempdir().unwrap();
        let g = generator(dir.path(), "JBSWY3DPEHPK3PXP0000", serde_json::json!({}));
        let err = g.generate_at(at(59), None).unwrap_err();
        assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "backend unavailable: the federation's MFA seed is not usable"
        );
        assert!(err.detail().contains("seed from file"), "{}", err.detail());
        assert!(err.detail().contains("character 17"), "{}", err.detail());
        assert!(!format!("{err:?}").contains("JBSWY3DP"), "{err:?}");
        // Empty (whitespace only), then gone.
        let g = generator(dir.path(), " \n", serde_json::json!({}));
        let err = g.generate_at(at(59), None).unwrap_err();
        assert!(
            err.detail().contains("missing or empty"),
            "{}",
            err.detail()
        );
        std::fs::remove_file(dir.path().join("seed")).unwrap();
        let err = g.generate_at(at(59), None).unwrap_err();
        assert!(
            err.detail().contains("missing or empty"),
            "{}",
            err.detail()
        );
        let g = MfaGenerator::new(MfaSpec {
            secret: SecretRef::env("ESI_SURELY_UNSET_MFA_SEED_1234"),
            length: 6,
            time_period: default_period(),
            algorithm: MfaAlgorithm::Sha1,
        })
        .unwrap();
        let err = g.generate_at(at(59), None).unwrap_err();
        assert!(
            err.detail()
                .contains("environment variable ESI_SURELY_UNSET_MFA_SEED_1234"),
            "{}",
            err.detail()
        );
    }

    #[test]
    fn a_rotated_seed_file_is_used_without_rebuilding() {
        let dir = tempfile::tempdir().unwrap();
        let g = generator(
            dir.path(),
            &base32(SEED_SHA1),
            serde_json::json!({"length": 8}),
        );
        assert_eq!(
            g.generate_at(at(59), None).unwrap().data["token"],
            "94287082"
        );
        std::fs::write(dir.path().join("seed"), base32(b"another seed of 20 b")).unwrap();
        let rotated = g.generate_at(at(59), None).unwrap();
        assert_eq!(
            rotated.data["token"],
            code_at(b"another seed of 20 b", MfaAlgorithm::Sha1, 8, 30, 59).token
        );
        assert_ne!(rotated.data["token"], "94287082");
    }

    #[test]
    fn the_seed_appears_in_no_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let seed = base32(SEED_SHA1);
        let g = generator(dir.path(), &seed, serde_json::json!({}));
        let cred = g.generate_at(at(59), None).unwrap();
        let parsed = parse_seed(&seed).unwrap();
        let code = code_at(SEED_SHA1, MfaAlgorithm::Sha1, 6, 30, 59);
        for shown in [
            format!("{g:?}"),
            format!("{cred:?}"),
            format!("{parsed:?}"),
            format!("{code:?}"),
        ] {
            assert!(!shown.contains(&seed[..8]), "{shown}");
            assert!(!shown.contains("1234567890"), "{shown}");
            assert!(!shown.contains("287082"), "{shown}");
        }
    }

    #[test]
    fn rejects_bad_specs_naming_the_field() {
        let cases = [
            (serde_json::json!({}), "missing field `secret`"),
            (
                serde_json::json!({"secret": {}}),
                "spec.secret: set exactly one of `env` or `file`",
            ),
            (
                serde_json::json!({"secret": {"env": "ESI_LEASE_KEYS"}}),
                "spec.secret.env",
            ),
            (
                serde_json::json!({"secret": {"file": "/proc/self/environ"}}),
                "spec.secret.file",
            ),
            (
                serde_json::json!({"secret": {"value": "JBSWY3DPEHPK3PXP"}}),
                "unknown field `value`",
            ),
            (
                serde_json::json!({"secret": {"env": "SEED"}, "length": 5}),
                "spec.length: must be between 6 and 8, got 5",
            ),
            (
                serde_json::json!({"secret": {"env": "SEED"}, "length": 9}),
                "spec.length",
            ),
            (
                serde_json::json!({"secret": {"env": "SEED"}, "length": 300}),
                "spec.length",
            ),
            (
                serde_json::json!({"secret": {"env": "SEED"}, "timePeriod": "0s"}),
                "spec.timePeriod: must be whole seconds from 1s to 1h",
            ),
            (
                serde_json::json!({"secret": {"env": "SEED"}, "timePeriod": "1500ms"}),
                "spec.timePeriod",
            ),
            (
                serde_json::json!({"secret": {"env": "SEED"}, "timePeriod": "2h"}),
                "spec.timePeriod",
            ),
            (
                serde_json::json!({"secret": {"env": "SEED"}, "timePeriod": 30}),
                "spec.timePeriod",
            ),
            (
                serde_json::json!({"secret": {"env": "SEED"}, "algorithm": "md5"}),
                "spec.algorithm",
            ),
            (
                serde_json::json!({"secret": {"env": "SEED"}, "when": "2024-01-01T00:00:00Z"}),
                "unknown field `when`",
            ),
        ];
        for (json, expected) in cases {
            let err = GeneratorSpec::from_manifest(GeneratorKind::Mfa, json.clone()).unwrap_err();
            assert!(err.to_string().contains(expected), "{json}: {err}");
        }
        let ok = GeneratorSpec::from_manifest(
            GeneratorKind::Mfa,
            serde_json::json!({"secret": {"env": "SEED"}, "length": 8, "timePeriod": "1h", "algorithm": "sha512"}),
        )
        .unwrap();
        assert!(matches!(
            ok,
            GeneratorSpec::Mfa(MfaSpec {
                length: 8,
                algorithm: MfaAlgorithm::Sha512,
                ..
            })
        ));
    }
}
