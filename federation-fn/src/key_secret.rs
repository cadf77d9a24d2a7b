//! The federation's own keys from AWS Secrets Manager, one implementation for both key sets:
//!
//! - the lease keys ([`LEASE_KEYS`]): `ESI_LEASE_KEYS_SECRET` names the secret (ARN or name)
//!   whose `SecretString` is the key ring in the [`crate::lease::LeaseKeys::parse`] format
//!   (`id=base64` entries, comma- or newline-separated, the first seals);
//! - the OIDC issuer's signing keys ([`ISSUER_KEYS`]): `ESI_ISSUER_KEYS_SECRET` names the
//!   secret whose `SecretString` is the PEM text [`esi_backends::identity::Issuer::new`] reads
//!   (one or more private keys, the first signs).
//!
//! For each, `<SECRET>_VERSION` (`ESI_LEASE_KEYS_SECRET_VERSION`,
//! `ESI_ISSUER_KEYS_SECRET_VERSION`) may pin one of the secret's versions.
//!
//! The Terraform Lambda module keeps these keys here instead of in the function's
//! environment, which anyone allowed `lambda:GetFunctionConfiguration` reads in plain text. A
//! secret is read once, at start-up (a Lambda cold start, or `serve`, e.g. on EKS with IRSA),
//! through the SDK's default chains: credentials (the Lambda role's variables, web identity,
//! ...), the region (`AWS_REGION`, or the ARN's) and the endpoint
//! (`AWS_ENDPOINT_URL_SECRETS_MANAGER` or `AWS_ENDPOINT_URL`, e.g. a local emulator in tests).
//! The value never reaches an error, a log line or `Debug` output: errors name the key set, the
//! secret and the version, never what they hold.
//!
//! Without the `secrets-manager` cargo feature only the variables' names and their parsing are
//! compiled, so such a build refuses the variables instead of ignoring them.

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;

/// One set of the federation's keys that may live in Secrets Manager: what it is called and
/// the variables that name its secret.
#[derive(Debug, PartialEq, Eq)]
pub struct KeySet {
    /// How messages name the keys (`lease keys`).
    pub what: &'static str,
    /// The variable naming the secret (ARN or name).
    pub secret_env: &'static str,
    /// The variable pinning a version of it (its `VersionId`) instead of `AWSCURRENT`.
    ///
    /// Why pin: every Lambda instance reads the secret at its own cold start. Following
    /// `AWSCURRENT`, instances started before and after a key change would hold different
    /// keys until the old ones are recycled (a lease sealed by a new instance would not open
    /// on an old one; an old instance would publish a JWKS without the new key). The Terraform
    /// module sets this variable to the version it wrote, so changing the keys changes the
    /// function's configuration: Lambda then retires every instance of the old configuration
    /// and all instances agree on one set of keys.
    pub version_env: &'static str,
    /// What the secret's text must hold, for the error about a binary value.
    pub format: &'static str,
}

/// The lease-sealing keys.
pub const LEASE_KEYS: KeySet = KeySet {
    what: "lease keys",
    secret_env: "ESI_LEASE_KEYS_SECRET",
    version_env: "ESI_LEASE_KEYS_SECRET_VERSION",
    format: "the key ring as text (SecretString: `id=base64` entries)",
};

/// The OIDC issuer's signing keys.
pub const ISSUER_KEYS: KeySet = KeySet {
    what: "issuer keys",
    secret_env: "ESI_ISSUER_KEYS_SECRET",
    version_env: "ESI_ISSUER_KEYS_SECRET_VERSION",
    format: "the PEM private keys as text (SecretString: `-----BEGIN PRIVATE KEY-----` blocks)",
};

/// How long start-up waits for a secret (a Lambda's init phase has 10 s in all; both key
/// secrets are read at once, and the clusters' JWKS prefetch and the configuration load come
/// after them).
pub const FETCH_DEADLINE: Duration = Duration::from_secs(5);

/// How errors and logs name a secret: `lease keys secret "<id>"`, or
/// `lease keys secret "<id>" version "<version>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretName {
    /// The key set it holds.
    pub set: &'static KeySet,
    id_and_version: String,
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} secret {}", self.set.what, self.id_and_version)
    }
}

/// Which secret, and which version of it, holds one set of keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeysSecret {
    /// The key set.
    pub set: &'static KeySet,
    /// The secret's ARN or name (`SecretId` of `GetSecretValue`).
    pub id: String,
    /// A pinned `VersionId`; `None` reads the `AWSCURRENT` version.
    pub version_id: Option<String>,
}

/// Why keys could not be read from Secrets Manager. No variant carries the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The version variable without the secret variable.
    #[error("{} is set but {} is not: set the secret too, or neither", .0.version_env, .0.secret_env)]
    VersionWithoutSecret(&'static KeySet),
    /// One of the variables is set to nothing (or to text that is not UTF-8).
    #[error("{0} is set but empty or not UTF-8: set it to the secret's ARN or name (or unset it)")]
    BadVariable(&'static str),
    /// This build cannot read Secrets Manager.
    #[error(
        "{} is set but this build has no Secrets Manager support (cargo feature `secrets-manager`)",
        .0.secret_env
    )]
    Unsupported(&'static KeySet),
    /// The secret, or the pinned version, does not exist (in this region and account).
    #[error(
        "{secret}: not found ({detail}); check {}, {} and the region",
        .secret.set.secret_env, .secret.set.version_env
    )]
    NotFound {
        /// The secret and version asked for.
        secret: SecretName,
        /// Secrets Manager's error code and message.
        detail: String,
    },
    /// The caller may not read the secret.
    #[error(
        "{secret}: access denied ({detail}); the role needs secretsmanager:GetSecretValue on the secret (and kms:Decrypt on its KMS key)"
    )]
    AccessDenied {
        /// The secret and version asked for.
        secret: SecretName,
        /// Secrets Manager's error code and message.
        detail: String,
    },
    /// Secrets Manager could not decrypt the secret with its KMS key for this caller.
    #[error(
        "{secret}: Secrets Manager cannot decrypt it ({detail}); the role needs kms:Decrypt on the secret's KMS key"
    )]
    Decryption {
        /// The secret and version asked for.
        secret: SecretName,
        /// Secrets Manager's error code and message.
        detail: String,
    },
    /// No answer within the deadline.
    #[error(
        "{secret}: no answer from Secrets Manager within {deadline:?} (is its endpoint reachable: a VPC endpoint or a NAT?)"
    )]
    Timeout {
        /// The secret and version asked for.
        secret: SecretName,
        /// The deadline that ran out.
        deadline: Duration,
    },
    /// Secrets Manager's endpoint could not be reached.
    #[error("{secret}: cannot reach Secrets Manager ({detail})")]
    Unreachable {
        /// The secret and version asked for.
        secret: SecretName,
        /// The connection error.
        detail: String,
    },
    /// The secret holds bytes (`SecretBinary`), not text.
    #[error("{secret}: holds a binary value (SecretBinary); store {}", .secret.set.format)]
    Binary {
        /// The secret and version asked for.
        secret: SecretName,
    },
    /// The secret holds neither text nor bytes.
    #[error("{secret}: has no value")]
    NoValue {
        /// The secret and version asked for.
        secret: SecretName,
    },
    /// The text is not what the key set needs (the parser says why, without quoting it).
    #[error("{secret}")]
    Malformed {
        /// The secret and version asked for.
        secret: SecretName,
        /// What is wrong with the text.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Any other failure (no credentials, a throttled or refused call, an unreadable answer).
    #[error("{secret}: GetSecretValue failed ({detail})")]
    Failed {
        /// The secret and version asked for.
        secret: SecretName,
        /// What failed.
        detail: String,
    },
}

impl KeysSecret {
    /// The secret of `set` named by its variables, `None` when neither is set.
    pub fn from_env(set: &'static KeySet) -> Result<Option<Self>, SecretError> {
        Self::from_vars(
            set,
            std::env::var_os(set.secret_env).map(|v| v.into_string()),
            std::env::var_os(set.version_env).map(|v| v.into_string()),
        )
    }

    /// [`KeysSecret::from_env`] on given values (`Err` holds text that is not UTF-8).
    fn from_vars(
        set: &'static KeySet,
        secret: Option<Result<String, std::ffi::OsString>>,
        version: Option<Result<String, std::ffi::OsString>>,
    ) -> Result<Option<Self>, SecretError> {
        fn non_empty(
            v: Result<String, std::ffi::OsString>,
            name: &'static str,
        ) -> Result<String, SecretError> {
            match v {
                Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
                _ => Err(SecretError::BadVariable(name)),
            }
        }
        match (secret, version) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(SecretError::VersionWithoutSecret(set)),
            (Some(secret), version) => Ok(Some(KeysSecret {
                set,
                id: non_empty(secret, set.secret_env)?,
                version_id: version.map(|v| non_empty(v, set.version_env)).transpose()?,
            })),
        }
    }

    /// How errors and logs name it: `"<id>"`, or `"<id>" version "<version>"`.
    pub fn describe(&self) -> String {
        match &self.version_id {
            None => format!("{:?}", self.id),
            Some(v) => format!("{:?} version {v:?}", self.id),
        }
    }

    /// How errors name it, with its key set: `lease keys secret "<id>"`.
    pub fn name(&self) -> SecretName {
        SecretName {
            set: self.set,
            id_and_version: self.describe(),
        }
    }

    /// The region of an ARN (`arn:<partition>:secretsmanager:<region>:<account>:secret:<name>`).
    #[cfg(any(feature = "secrets-manager", test))]
    fn arn_region(&self) -> Option<&str> {
        let mut parts = self.id.splitn(6, ':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("arn"), Some(_), Some("secretsmanager"), Some(region)) if !region.is_empty() => {
                Some(region)
            }
            _ => None,
        }
    }

    /// Reads the secret and hands its text to `parse`, within `deadline` (credentials, region
    /// and endpoint resolution included); what `parse` refuses is a
    /// [`SecretError::Malformed`] naming the secret.
    pub async fn fetch_parsed<T, E>(
        &self,
        deadline: Duration,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<T, SecretError>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        use secrecy::ExposeSecret as _;
        let text = self.fetch(deadline).await?;
        parse(text.expose_secret()).map_err(|e| SecretError::Malformed {
            secret: self.name(),
            source: Box::new(e),
        })
    }

    /// Reads the secret's text, within `deadline` (credentials, region and endpoint resolution
    /// included).
    #[cfg(feature = "secrets-manager")]
    pub async fn fetch(&self, deadline: Duration) -> Result<SecretString, SecretError> {
        match tokio::time::timeout(deadline, self.fetch_unbounded(deadline)).await {
            Ok(result) => result,
            Err(_) => Err(SecretError::Timeout {
                secret: self.name(),
                deadline,
            }),
        }
    }

    /// Without the `secrets-manager` feature: refuses.
    #[cfg(not(feature = "secrets-manager"))]
    pub async fn fetch(&self, _deadline: Duration) -> Result<SecretString, SecretError> {
        Err(SecretError::Unsupported(self.set))
    }

    #[cfg(feature = "secrets-manager")]
    async fn fetch_unbounded(&self, deadline: Duration) -> Result<SecretString, SecretError> {
        use aws_sdk_secretsmanager::config::{BehaviorVersion, Region};

        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_timeout(deadline)
                .build(),
        );
        // A secret lives in the region its ARN names; a name is looked up in the default region.
        if let Some(region) = self.arn_region() {
            loader = loader.region(Region::new(region.to_owned()));
        }
        let client = aws_sdk_secretsmanager::Client::new(&loader.load().await);
        let out = client
            .get_secret_value()
            .secret_id(&self.id)
            .set_version_id(self.version_id.clone())
            .send()
            .await
            .map_err(|e| self.classify(&e, deadline))?;
        // The SDK redacts both values in the output's `Debug`; the text is held as a secret
        // until parsed and dropped with it.
        let text = match (out.secret_string, out.secret_binary) {
            (Some(text), _) => SecretString::from(text),
            (None, Some(_)) => {
                return Err(SecretError::Binary {
                    secret: self.name(),
                });
            }
            (None, None) => {
                return Err(SecretError::NoValue {
                    secret: self.name(),
                });
            }
        };
        tracing::info!(
            secret = %self.id,
            version = out.version_id.as_deref().unwrap_or(""),
            "{} read from Secrets Manager",
            self.set.what
        );
        Ok(text)
    }

    /// Classifies a failed `GetSecretValue`. A service error's code and message name the
    /// request, never the value; an unreadable answer is not rendered at all (it may hold it).
    #[cfg(feature = "secrets-manager")]
    fn classify(
        &self,
        e: &aws_sdk_secretsmanager::error::SdkError<
            aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError,
        >,
        deadline: Duration,
    ) -> SecretError {
        use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
        let secret = self.name();
        match e {
            SdkError::ServiceError(se) => {
                let err = se.err();
                let detail = format!(
                    "{} (HTTP {}): {}",
                    err.code().unwrap_or("no error code"),
                    se.raw().status().as_u16(),
                    err.message().unwrap_or("no message")
                );
                let code = err.code().unwrap_or_default();
                match code {
                    "ResourceNotFoundException" => SecretError::NotFound { secret, detail },
                    "AccessDeniedException" => SecretError::AccessDenied { secret, detail },
                    "DecryptionFailure" => SecretError::Decryption { secret, detail },
                    _ => SecretError::Failed { secret, detail },
                }
            }
            SdkError::TimeoutError(_) => SecretError::Timeout { secret, deadline },
            SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => {
                SecretError::Unreachable {
                    secret,
                    detail: chain(e),
                }
            }
            SdkError::ResponseError(_) => SecretError::Failed {
                secret,
                detail: "the answer could not be read".to_owned(),
            },
            _ => SecretError::Failed {
                secret,
                detail: chain(e),
            },
        }
    }
}

/// The messages of `e` and its sources, joined by `: ` (the SDK's `DisplayErrorContext` would
/// append their `Debug` form, raw responses included).
#[cfg(feature = "secrets-manager")]
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(
        set: &'static KeySet,
        secret: Option<&str>,
        version: Option<&str>,
    ) -> Result<Option<KeysSecret>, SecretError> {
        KeysSecret::from_vars(
            set,
            secret.map(|s| Ok(s.to_owned())),
            version.map(|s| Ok(s.to_owned())),
        )
    }

    #[test]
    fn reads_the_secret_and_its_pinned_version_from_the_variables() {
        assert_eq!(vars(&LEASE_KEYS, None, None).unwrap(), None);
        let s = vars(&LEASE_KEYS, Some("esi-lease-keys"), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.id.as_str(), s.version_id.as_deref()),
            ("esi-lease-keys", None)
        );
        assert_eq!(s.describe(), "\"esi-lease-keys\"");
        assert_eq!(s.name().to_string(), "lease keys secret \"esi-lease-keys\"");
        let s = vars(&ISSUER_KEYS, Some(" esi-issuer-keys "), Some("v-1"))
            .unwrap()
            .unwrap();
        assert_eq!(s.version_id.as_deref(), Some("v-1"));
        assert_eq!(
            s.name().to_string(),
            "issuer keys secret \"esi-issuer-keys\" version \"v-1\""
        );
    }

    #[test]
    fn refuses_a_version_without_a_secret_and_empty_variables() {
        for set in [&LEASE_KEYS, &ISSUER_KEYS] {
            let e = vars(set, None, Some("v-1")).unwrap_err().to_string();
            assert!(
                e.starts_with(set.version_env) && e.contains(set.secret_env),
                "{e}"
            );
            let e = vars(set, Some(""), None).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{} is set", set.secret_env)), "{e}");
            let e = vars(set, Some("s"), Some(" ")).unwrap_err().to_string();
            assert!(e.starts_with(set.version_env), "{e}");
        }
    }

    #[test]
    fn errors_name_the_key_set_and_its_variables() {
        let secret = vars(&ISSUER_KEYS, Some("esi-issuer-keys"), None)
            .unwrap()
            .unwrap();
        let e = SecretError::NotFound {
            secret: secret.name(),
            detail: "ResourceNotFoundException (HTTP 400): no such secret".to_owned(),
        }
        .to_string();
        assert!(
            e.starts_with("issuer keys secret \"esi-issuer-keys\": not found")
                && e.contains("check ESI_ISSUER_KEYS_SECRET, ESI_ISSUER_KEYS_SECRET_VERSION"),
            "{e}"
        );
        let e = SecretError::Binary {
            secret: secret.name(),
        }
        .to_string();
        assert!(e.contains("store the PEM private keys as text"), "{e}");
        let e = SecretError::Unsupported(&ISSUER_KEYS).to_string();
        assert!(e.starts_with("ESI_ISSUER_KEYS_SECRET is set"), "{e}");
    }

    #[test]
    fn takes_the_region_from_an_arn_only() {
        let region = |id: &str| {
            KeysSecret {
                set: &LEASE_KEYS,
                id: id.to_owned(),
                version_id: None,
            }
            .arn_region()
            .map(str::to_owned)
        };
        assert_eq!(
            region("arn:aws:secretsmanager:eu-west-1:123456789012:secret:esi-AbCdEf").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region("esi-lease-keys"), None);
        assert_eq!(region("arn:aws:ssm:eu-west-1:1:parameter/x"), None);
    }
}
