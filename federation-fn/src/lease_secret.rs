//! Lease keys from AWS Secrets Manager: `ESI_LEASE_KEYS_SECRET` names the secret (ARN or name)
//! whose `SecretString` is the key ring in the [`LeaseKeys::parse`] format (`id=base64` entries,
//! comma- or newline-separated, the first seals), and `ESI_LEASE_KEYS_SECRET_VERSION` may pin one
//! of its versions.
//!
//! The Terraform Lambda module keeps the ring here instead of in the function's environment,
//! which anyone allowed `lambda:GetFunctionConfiguration` reads in plain text. The secret is read
//! once, at start-up (a Lambda cold start, or `serve`, e.g. on EKS with IRSA), through the SDK's
//! default chains: credentials (the Lambda role's variables, web identity, ...), the region
//! (`AWS_REGION`, or the ARN's) and the endpoint (`AWS_ENDPOINT_URL_SECRETS_MANAGER` or
//! `AWS_ENDPOINT_URL`, e.g. a local emulator in tests). The value never reaches an error, a log
//! line or `Debug` output: errors name the secret and the version, never what they hold.
//!
//! Without the `secrets-manager` cargo feature only the variables' names and their parsing are
//! compiled, so such a build refuses the variable instead of ignoring it.

use std::time::Duration;

use crate::lease::{LeaseError, LeaseKeys};

/// The secret (ARN or name) holding the lease keys.
pub const SECRET_ENV: &str = "ESI_LEASE_KEYS_SECRET";

/// A version of that secret (its `VersionId`) to read instead of the one labelled `AWSCURRENT`.
///
/// Why pin: every Lambda instance reads the secret at its own cold start. Following
/// `AWSCURRENT`, instances started before and after a key change would seal under different
/// rings until the old ones are recycled, and a lease sealed by a new instance would not open on
/// an old one. The Terraform module sets this variable to the version it wrote, so changing the
/// keys changes the function's configuration: Lambda then retires every instance of the old
/// configuration and all instances agree on one ring.
pub const VERSION_ENV: &str = "ESI_LEASE_KEYS_SECRET_VERSION";

/// How long start-up waits for the secret (a Lambda's init phase has 10 s in all; the issuer key
/// prefetch and the configuration load come after it).
pub const FETCH_DEADLINE: Duration = Duration::from_secs(5);

/// Which secret, and which version of it, holds the lease keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseKeysSecret {
    /// The secret's ARN or name (`SecretId` of `GetSecretValue`).
    pub id: String,
    /// A pinned `VersionId`; `None` reads the `AWSCURRENT` version.
    pub version_id: Option<String>,
}

/// Why the lease keys could not be read from Secrets Manager. No variant carries the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// `ESI_LEASE_KEYS_SECRET_VERSION` without `ESI_LEASE_KEYS_SECRET`.
    #[error("{VERSION_ENV} is set but {SECRET_ENV} is not: set the secret too, or neither")]
    VersionWithoutSecret,
    /// One of the variables is set to nothing (or to text that is not UTF-8).
    #[error("{0} is set but empty or not UTF-8: set it to the secret's ARN or name (or unset it)")]
    BadVariable(&'static str),
    /// This build cannot read Secrets Manager.
    #[error(
        "{SECRET_ENV} is set but this build has no Secrets Manager support (cargo feature `secrets-manager`)"
    )]
    Unsupported,
    /// The secret, or the pinned version, does not exist (in this region and account).
    #[error(
        "lease keys secret {secret}: not found ({detail}); check {SECRET_ENV}, {VERSION_ENV} and the region"
    )]
    NotFound {
        /// The secret and version asked for.
        secret: String,
        /// Secrets Manager's error code and message.
        detail: String,
    },
    /// The caller may not read the secret.
    #[error(
        "lease keys secret {secret}: access denied ({detail}); the role needs secretsmanager:GetSecretValue on the secret (and kms:Decrypt on its KMS key)"
    )]
    AccessDenied {
        /// The secret and version asked for.
        secret: String,
        /// Secrets Manager's error code and message.
        detail: String,
    },
    /// Secrets Manager could not decrypt the secret with its KMS key for this caller.
    #[error(
        "lease keys secret {secret}: Secrets Manager cannot decrypt it ({detail}); the role needs kms:Decrypt on the secret's KMS key"
    )]
    Decryption {
        /// The secret and version asked for.
        secret: String,
        /// Secrets Manager's error code and message.
        detail: String,
    },
    /// No answer within the deadline.
    #[error(
        "lease keys secret {secret}: no answer from Secrets Manager within {deadline:?} (is its endpoint reachable: a VPC endpoint or a NAT?)"
    )]
    Timeout {
        /// The secret and version asked for.
        secret: String,
        /// The deadline that ran out.
        deadline: Duration,
    },
    /// Secrets Manager's endpoint could not be reached.
    #[error("lease keys secret {secret}: cannot reach Secrets Manager ({detail})")]
    Unreachable {
        /// The secret and version asked for.
        secret: String,
        /// The connection error.
        detail: String,
    },
    /// The secret holds bytes (`SecretBinary`), not text.
    #[error(
        "lease keys secret {secret}: holds a binary value (SecretBinary); store the key ring as text (SecretString: `id=base64` entries)"
    )]
    Binary {
        /// The secret and version asked for.
        secret: String,
    },
    /// The secret holds neither text nor bytes.
    #[error("lease keys secret {secret}: has no value")]
    NoValue {
        /// The secret and version asked for.
        secret: String,
    },
    /// The text is not a key ring ([`LeaseKeys::parse`] says why, without quoting the value).
    #[error("lease keys secret {secret}")]
    Malformed {
        /// The secret and version asked for.
        secret: String,
        /// What is wrong with the ring.
        #[source]
        source: LeaseError,
    },
    /// Any other failure (no credentials, a throttled or refused call, an unreadable answer).
    #[error("lease keys secret {secret}: GetSecretValue failed ({detail})")]
    Failed {
        /// The secret and version asked for.
        secret: String,
        /// What failed.
        detail: String,
    },
}

impl LeaseKeysSecret {
    /// The secret named by [`SECRET_ENV`] and [`VERSION_ENV`], `None` when neither is set.
    pub fn from_env() -> Result<Option<Self>, SecretError> {
        Self::from_vars(
            std::env::var_os(SECRET_ENV).map(|v| v.into_string()),
            std::env::var_os(VERSION_ENV).map(|v| v.into_string()),
        )
    }

    /// [`LeaseKeysSecret::from_env`] on given values (`Err` holds text that is not UTF-8).
    fn from_vars(
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
            (None, Some(_)) => Err(SecretError::VersionWithoutSecret),
            (Some(secret), version) => Ok(Some(LeaseKeysSecret {
                id: non_empty(secret, SECRET_ENV)?,
                version_id: version.map(|v| non_empty(v, VERSION_ENV)).transpose()?,
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

    /// Reads the secret and parses the ring, within `deadline` (credentials, region and endpoint
    /// resolution included).
    #[cfg(feature = "secrets-manager")]
    pub async fn fetch(&self, deadline: Duration) -> Result<LeaseKeys, SecretError> {
        match tokio::time::timeout(deadline, self.fetch_unbounded(deadline)).await {
            Ok(result) => result,
            Err(_) => Err(SecretError::Timeout {
                secret: self.describe(),
                deadline,
            }),
        }
    }

    /// Without the `secrets-manager` feature: refuses.
    #[cfg(not(feature = "secrets-manager"))]
    pub async fn fetch(&self, _deadline: Duration) -> Result<LeaseKeys, SecretError> {
        Err(SecretError::Unsupported)
    }

    #[cfg(feature = "secrets-manager")]
    async fn fetch_unbounded(&self, deadline: Duration) -> Result<LeaseKeys, SecretError> {
        use aws_sdk_secretsmanager::config::{BehaviorVersion, Region};
        use secrecy::ExposeSecret as _;

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
            (Some(text), _) => secrecy::SecretString::from(text),
            (None, Some(_)) => {
                return Err(SecretError::Binary {
                    secret: self.describe(),
                });
            }
            (None, None) => {
                return Err(SecretError::NoValue {
                    secret: self.describe(),
                });
            }
        };
        let keys =
            LeaseKeys::parse(text.expose_secret()).map_err(|source| SecretError::Malformed {
                secret: self.describe(),
                source,
            })?;
        tracing::info!(
            secret = %self.id,
            version = out.version_id.as_deref().unwrap_or(""),
            "lease keys read from Secrets Manager"
        );
        Ok(keys)
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
        let secret = self.describe();
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
        secret: Option<&str>,
        version: Option<&str>,
    ) -> Result<Option<LeaseKeysSecret>, SecretError> {
        LeaseKeysSecret::from_vars(
            secret.map(|s| Ok(s.to_owned())),
            version.map(|s| Ok(s.to_owned())),
        )
    }

    #[test]
    fn reads_the_secret_and_its_pinned_version_from_the_variables() {
        assert_eq!(vars(None, None).unwrap(), None);
        let s = vars(Some("esi-lease-keys"), None).unwrap().unwrap();
        assert_eq!(
            (s.id.as_str(), s.version_id.as_deref()),
            ("esi-lease-keys", None)
        );
        assert_eq!(s.describe(), "\"esi-lease-keys\"");
        let s = vars(Some(" esi-lease-keys "), Some("v-1"))
            .unwrap()
            .unwrap();
        assert_eq!(s.version_id.as_deref(), Some("v-1"));
        assert_eq!(s.describe(), "\"esi-lease-keys\" version \"v-1\"");
    }

    #[test]
    fn refuses_a_version_without_a_secret_and_empty_variables() {
        let e = vars(None, Some("v-1")).unwrap_err().to_string();
        assert!(e.contains(VERSION_ENV) && e.contains(SECRET_ENV), "{e}");
        let e = vars(Some(""), None).unwrap_err().to_string();
        assert!(e.starts_with(SECRET_ENV), "{e}");
        let e = vars(Some("s"), Some(" ")).unwrap_err().to_string();
        assert!(e.starts_with(VERSION_ENV), "{e}");
    }

    #[test]
    fn takes_the_region_from_an_arn_only() {
        let region = |id: &str| {
            LeaseKeysSecret {
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
