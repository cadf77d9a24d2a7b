//! The `aws` SecretStore provider: how the federation reaches AWS STS, and the SDK client
//! the AWS generators share.
//!
//! Credentials come from the SDK's default chain (environment, web identity / IRSA,
//! container and instance roles) unless `credentials` names static keys held in the
//! federation's environment or files; `assumeRole` then assumes a role with them first.
//! Static keys are read again every [`STATIC_KEYS_REREAD`], so keys rotated in a mounted
//! Secret are picked up without a restart.
//! The SDK config is loaded lazily on first use (loading is async, building generators is
//! not) and kept for the life of the generator.

use std::fmt;

use aws_sdk_sts::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
use schemars::JsonSchema;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::duration::HumanDuration;
use crate::{BackendError, SecretRef, SpecError};

/// How long static keys read from the environment or files are used before they are read
/// again (the SDK's credentials cache refreshes them shortly before this runs out).
pub const STATIC_KEYS_REREAD: std::time::Duration = std::time::Duration::from_secs(60);

/// Timeout of an STS operation when the store sets none.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How to reach AWS STS and with which credentials.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsProvider {
    /// The region whose STS endpoint is called (`eu-west-1`).
    pub region: String,
    /// Overrides the STS endpoint (a VPC endpoint, or a local emulator in tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Static keys of the federation; absent means the SDK's default credential chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<AwsStaticCredentials>,
    /// A role to assume with those credentials before calling STS for generators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assume_role: Option<AwsBaseRole>,
    /// Instead of `credentials` or the default chain: the federation assumes this role with
    /// `AssumeRoleWithWebIdentity`, presenting a token it signs for itself with its own OIDC
    /// issuer (`sub` `esi-federation`, `aud` `sts.amazonaws.com`): no AWS secret, wherever
    /// it runs. The role trusts the issuer's IAM OIDC provider, on that `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_issued: Option<AwsSelfIssued>,
    /// Timeout of each STS operation (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

/// Static AWS keys, read from the federation's environment or files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsStaticCredentials {
    /// The access key id.
    pub access_key_id: SecretRef,
    /// The secret access key.
    pub secret_access_key: SecretRef,
    /// A session token, when the keys are temporary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<SecretRef>,
}

impl AwsStaticCredentials {
    /// The keys as they are now, valid for [`STATIC_KEYS_REREAD`].
    fn read(&self) -> Result<Credentials, BackendError> {
        let token = self
            .session_token
            .as_ref()
            .map(SecretRef::read)
            .transpose()?;
        Ok(Credentials::new(
            self.access_key_id.read()?.expose_secret(),
            self.secret_access_key.read()?.expose_secret(),
            token.as_ref().map(|t| t.expose_secret().to_owned()),
            Some(std::time::SystemTime::now() + STATIC_KEYS_REREAD),
            "esi-secret-store",
        ))
    }
}

impl aws_credential_types::provider::ProvideCredentials for AwsStaticCredentials {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::ready(self.read().map_err(
            |e| {
                aws_credential_types::provider::error::CredentialsError::not_loaded(
                    e.detail().to_owned(),
                )
            },
        ))
    }
}

/// The role the federation assumes with a token it signs for itself ([`AwsProvider::self_issued`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsSelfIssued {
    /// ARN of the role.
    pub role_arn: String,
    /// Session name (default `esi-federation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
}

/// The audience of the tokens the federation presents to STS (what IAM OIDC providers list as
/// their client ID).
pub const STS_AUDIENCE: &str = "sts.amazonaws.com";

/// The role the federation assumes first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsBaseRole {
    /// ARN of the role.
    pub role_arn: String,
    /// Session name (default `esi-federation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    /// External id the role's trust policy requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// The credentials of a role the federation assumes with a token it signs for itself
/// ([`AwsProvider::self_issued`]); the SDK's identity cache keeps them until shortly before
/// they expire, then asks again.
#[derive(Debug)]
struct SelfIssuedRole {
    issuer: Option<std::sync::Arc<crate::identity::Issuer>>,
    role_arn: String,
    session_name: String,
    sts: aws_sdk_sts::Client,
}

impl SelfIssuedRole {
    async fn assume(&self) -> Result<Credentials, BackendError> {
        let token = crate::identity::own_login_token(self.issuer.as_ref(), STS_AUDIENCE)?;
        let out = self
            .sts
            .assume_role_with_web_identity()
            .role_arn(&self.role_arn)
            .role_session_name(&self.session_name)
            .web_identity_token(token.expose_secret())
            .send()
            .await
            .map_err(|e| map_sdk_error("AssumeRoleWithWebIdentity", &e))?;
        let c = out.credentials.ok_or_else(|| BackendError::Unavailable {
            message: "AWS STS answered without credentials".to_owned(),
            detail: "AssumeRoleWithWebIdentity: no Credentials".to_owned(),
        })?;
        Ok(Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_owned()),
            expiration(&c).map(std::time::SystemTime::from),
            "esi-self-issued",
        ))
    }
}

impl aws_credential_types::provider::ProvideCredentials for SelfIssuedRole {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::new(async move {
            self.assume().await.map_err(|e| {
                aws_credential_types::provider::error::CredentialsError::provider_error(format!(
                    "{e}: {}",
                    e.detail()
                ))
            })
        })
    }
}

/// Checks an IAM role ARN: `arn:<partition>:iam::<12 digits>:role/<path/name>`.
pub fn validate_role_arn(arn: &str, field: &str) -> Result<(), SpecError> {
    let bad = || {
        SpecError::field(
            field,
            format!("{arn:?} is not an IAM role ARN like arn:aws:iam::123456789012:role/name"),
        )
    };
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts.as_slice() else {
        return Err(bad());
    };
    let ok = *prefix == "arn"
        && matches!(
            *partition,
            "aws"
                | "aws-cn"
                | "aws-us-gov"
                | "aws-iso"
                | "aws-iso-b"
                | "aws-iso-e"
                | "aws-iso-f"
                | "aws-eusc"
        )
        && *service == "iam"
        && region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource
            .strip_prefix("role/")
            .is_some_and(|n| !n.is_empty() && n.len() <= 512);
    if ok { Ok(()) } else { Err(bad()) }
}

/// Checks a managed-policy ARN: `arn:<partition>:iam::<account or aws>:policy/<name>`.
pub fn validate_policy_arn(arn: &str, field: &str) -> Result<(), SpecError> {
    let bad = || SpecError::field(field, format!("{arn:?} is not an IAM policy ARN"));
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, _partition, service, region, account, resource] = parts.as_slice() else {
        return Err(bad());
    };
    let account_ok =
        *account == "aws" || (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()));
    if *prefix == "arn"
        && *service == "iam"
        && region.is_empty()
        && account_ok
        && resource.starts_with("policy/")
    {
        Ok(())
    } else {
        Err(bad())
    }
}

/// The regional STS host of `region` (`.amazonaws.com.cn` in China), which EKS takes tokens
/// for and a Vault IAM login is signed for.
#[cfg(any(feature = "eks", feature = "vault-iam"))]
pub(crate) fn sts_host(region: &str) -> String {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("sts.{region}.{suffix}")
}

/// `request` signed with SigV4 for `service` in `region` with `credentials` at `time`, as
/// `settings` say (headers, or query parameters for a presigned URL): the headers or
/// parameters to add. `request` is `(method, url, headers, body)`, the URL already encoded.
#[cfg(any(feature = "rds", feature = "eks", feature = "vault-iam"))]
pub(crate) fn sigv4_sign(
    (method, url, headers, body): (&str, &str, &[(&str, &str)], &[u8]),
    service: &str,
    region: &str,
    credentials: aws_credential_types::Credentials,
    time: std::time::SystemTime,
    settings: aws_sigv4::http_request::SigningSettings,
) -> Result<aws_sigv4::http_request::SigningInstructions, String> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, sign};
    let identity = credentials.into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let request = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    Ok(sign(request, &params)
        .map_err(|e| e.to_string())?
        .into_parts()
        .0)
}

/// Whether `region` looks like an AWS region (`eu-west-1`): lowercase letters, digits and
/// `-`. It is written into endpoints' host names and signed into credential scopes as given,
/// so `EU-WEST-1` would sign for a scope no AWS service answers to.
pub(crate) fn is_region(region: &str) -> bool {
    !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl AwsProvider {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        if !is_region(&self.region) {
            return Err(SpecError::field(
                "provider.aws.region",
                format!(
                    "{:?} is not an AWS region (lowercase letters, digits and -, such as \
                     eu-west-1)",
                    self.region
                ),
            ));
        }
        if let Some(ep) = &self.endpoint {
            let url = reqwest_free_url_check(ep);
            if !url {
                return Err(SpecError::field(
                    "provider.aws.endpoint",
                    format!("{ep:?} is not an http(s) URL"),
                ));
            }
        }
        if let Some(c) = &self.credentials {
            c.access_key_id
                .validate("provider.aws.credentials.accessKeyId")?;
            c.secret_access_key
                .validate("provider.aws.credentials.secretAccessKey")?;
            if let Some(t) = &c.session_token {
                t.validate("provider.aws.credentials.sessionToken")?;
            }
        }
        if let Some(r) = &self.assume_role {
            validate_role_arn(&r.role_arn, "provider.aws.assumeRole.roleArn")?;
        }
        if let Some(s) = &self.self_issued {
            if self.credentials.is_some() {
                return Err(SpecError::field(
                    "provider.aws.selfIssued",
                    "set credentials or selfIssued, not both",
                ));
            }
            validate_role_arn(&s.role_arn, "provider.aws.selfIssued.roleArn")?;
        }
        if self.timeout.is_some_and(|t| t.get().is_zero()) {
            return Err(SpecError::field("provider.aws.timeout", "must be positive"));
        }
        Ok(())
    }
}

fn reqwest_free_url_check(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace))
}

/// A lazily configured STS client for one store.
pub struct StsConn {
    provider: AwsProvider,
    /// The federation's issuer, for `selfIssued` (`None` otherwise, or where the configuration
    /// is only checked).
    issuer: Option<std::sync::Arc<crate::identity::Issuer>>,
    client: OnceCell<(aws_sdk_sts::Client, aws_config::SdkConfig)>,
}

impl fmt::Debug for StsConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StsConn")
            .field("region", &self.provider.region)
            .field("endpoint", &self.provider.endpoint)
            .finish_non_exhaustive()
    }
}

impl StsConn {
    /// Prepares the connection (no network traffic, no credential lookup yet) on the
    /// federation's `issuer`, which `selfIssued` needs.
    pub(crate) fn new(
        provider: &AwsProvider,
        issuer: &crate::IssuerSlot,
    ) -> Result<Self, SpecError> {
        provider.validate()?;
        let issuer = match &provider.self_issued {
            Some(_) => issuer.for_build("an aws SecretStore assuming its role with selfIssued")?,
            None => None,
        };
        Ok(StsConn {
            provider: provider.clone(),
            issuer,
            client: OnceCell::new(),
        })
    }

    /// The STS client, configuring it on first use.
    pub async fn client(&self) -> Result<&aws_sdk_sts::Client, BackendError> {
        Ok(&self.client.get_or_try_init(|| self.configure()).await?.0)
    }

    /// The store's SDK configuration (region, endpoint, credentials, timeouts), for clients
    /// of other services on the same store (ECR).
    pub async fn sdk_config(&self) -> Result<&aws_config::SdkConfig, BackendError> {
        Ok(&self.client.get_or_try_init(|| self.configure()).await?.1)
    }

    async fn configure(
        &self,
    ) -> Result<(aws_sdk_sts::Client, aws_config::SdkConfig), BackendError> {
        let p = &self.provider;
        let timeout = p.timeout.map_or(DEFAULT_TIMEOUT, HumanDuration::get);
        let defaults = || {
            let loader = aws_config::defaults(BehaviorVersion::latest())
                .region(Region::new(p.region.clone()))
                .timeout_config(
                    aws_config::timeout::TimeoutConfig::builder()
                        .operation_timeout(timeout)
                        .build(),
                );
            match &p.endpoint {
                Some(ep) => loader.endpoint_url(ep),
                None => loader,
            }
        };
        let mut loader = defaults();
        if let Some(c) = &p.credentials {
            // Read once now, so a missing key fails the first request with its own message.
            c.read()?;
            loader = loader.credentials_provider(c.clone());
        }
        if let Some(s) = &p.self_issued {
            // AssumeRoleWithWebIdentity is unsigned: its client needs no credentials.
            let unsigned = defaults().no_credentials().load().await;
            loader = loader.credentials_provider(SelfIssuedRole {
                issuer: self.issuer.clone(),
                role_arn: s.role_arn.clone(),
                session_name: s
                    .session_name
                    .clone()
                    .unwrap_or_else(|| "esi-federation".to_owned()),
                sts: aws_sdk_sts::Client::new(&unsigned),
            });
        }
        let base = loader.load().await;
        let conf = match &p.assume_role {
            None => base,
            Some(r) => {
                let mut b = aws_config::sts::AssumeRoleProvider::builder(&r.role_arn).session_name(
                    r.session_name
                        .clone()
                        .unwrap_or_else(|| "esi-federation".to_owned()),
                );
                if let Some(id) = &r.external_id {
                    b = b.external_id(id);
                }
                let provider = b.configure(&base).build().await;
                base.into_builder()
                    .credentials_provider(SharedCredentialsProvider::new(provider))
                    .build()
            }
        };
        Ok((aws_sdk_sts::Client::new(&conf), conf))
    }

    /// Who STS takes the store's credentials for (`GetCallerIdentity`): the caller's ARN.
    pub async fn whoami(&self) -> Result<String, BackendError> {
        let out = self
            .client()
            .await?
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| map_sdk_error("GetCallerIdentity", &e))?;
        Ok(out.arn().unwrap_or("an unnamed caller").to_owned())
    }

    /// The credentials the store itself uses, resolved now.
    pub async fn own_credentials(&self) -> Result<Credentials, BackendError> {
        use aws_sdk_sts::config::ProvideCredentials;
        self.client().await?;
        let provider = self
            .client
            .get()
            .and_then(|(_, conf)| conf.credentials_provider())
            .ok_or_else(|| BackendError::Unavailable {
                message: "the federation has no AWS credentials".to_owned(),
                detail: "no credentials provider configured".to_owned(),
            })?;
        provider
            .provide_credentials()
            .await
            .map_err(|e| BackendError::Unavailable {
                message: "the federation's AWS credentials could not be loaded".to_owned(),
                detail: format!("credentials provider: {}", crate::error_chain(&e)),
            })
    }
}

/// Classifies an STS operation failure.
pub(crate) fn map_sdk_error<E, R>(op: &str, e: &aws_sdk_sts::error::SdkError<E, R>) -> BackendError
where
    E: aws_sdk_sts::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug,
{
    map_service_error(("AWS STS", "sts"), op, e)
}

/// Classifies a failed AWS operation of any service (every SDK shares the error types), by the
/// rule every backend follows: throttling and server faults are unavailable (retryable), and
/// so is AWS not accepting the federation's own credentials (expired, unknown, badly signed:
/// HTTP 401's cases, which are re-read or refreshed before the next attempt); a permission
/// AWS denies to the credentials it accepted (`AccessDenied`, HTTP 403) is rejected, like the
/// federation's own `policy_denied`, as are other service errors.
/// `service` is its name for the caller and for the log (`("Amazon ECR", "ecr")`).
pub(crate) fn map_service_error<E, R>(
    service: (&str, &str),
    op: &str,
    e: &aws_sdk_sts::error::SdkError<E, R>,
) -> BackendError
where
    E: aws_sdk_sts::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug,
{
    use aws_sdk_sts::error::SdkError;
    let (name, short) = service;
    match e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            let code = err.code().unwrap_or("Unknown");
            let detail = format!("{short} {op}: {code}: {}", err.message().unwrap_or(""));
            let transient = matches!(
                code,
                "Throttling"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "ServiceUnavailable"
                    | "InternalFailure"
                    | "InternalServiceError"
                    | "ServerException"
                    | "IDPCommunicationError"
            );
            let unauthenticated = matches!(
                code,
                "ExpiredToken"
                    | "ExpiredTokenException"
                    | "InvalidClientTokenId"
                    | "UnrecognizedClientException"
                    | "SignatureDoesNotMatch"
                    | "InvalidSignatureException"
                    | "IncompleteSignature"
                    | "MissingAuthenticationToken"
                    | "RequestExpired"
            );
            if transient {
                BackendError::Unavailable {
                    message: format!("{name} is unavailable ({code})"),
                    detail,
                }
            } else if unauthenticated {
                BackendError::Unavailable {
                    message: format!(
                        "{name} did not accept the federation's AWS credentials ({code})"
                    ),
                    detail,
                }
            } else {
                BackendError::Rejected {
                    message: format!("{name} refused {op} ({code})"),
                    detail,
                }
            }
        }
        other => BackendError::Unavailable {
            message: format!("{name} could not be reached ({op})"),
            detail: format!("{short} {op}: {}", crate::error_chain(other)),
        },
    }
}

/// The `aws` store a generator was built with (see [`crate::store::require`]).
pub(crate) fn require_store<'a>(
    store: Option<&'a crate::SecretStoreSpec>,
    reference: &crate::SecretStoreRef,
) -> Result<&'a AwsProvider, SpecError> {
    crate::store::require(store, reference, "aws", |p| match p {
        crate::StoreProvider::Aws(a) => Some(a),
        #[allow(unreachable_patterns)]
        _ => None,
    })
}

/// The credential of an STS answer (`op` names the call for the log), or `Unavailable` when
/// STS answered without one.
pub(crate) fn sts_credential(
    op: &str,
    creds: Option<&aws_sdk_sts::types::Credentials>,
) -> Result<crate::Credential, BackendError> {
    let creds = creds.ok_or_else(|| BackendError::Unavailable {
        message: "AWS STS returned no credentials".to_owned(),
        detail: format!("{op} response without Credentials"),
    })?;
    Ok(crate::Credential {
        data: credential_data(creds),
        expires_at: expiration(creds),
        renewable: false,
        lease: None,
    })
}

/// The standard AWS environment variable keys of a credential.
fn credential_data(
    c: &aws_sdk_sts::types::Credentials,
) -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::from([
        ("AWS_ACCESS_KEY_ID".to_owned(), c.access_key_id().to_owned()),
        (
            "AWS_SECRET_ACCESS_KEY".to_owned(),
            c.secret_access_key().to_owned(),
        ),
        ("AWS_SESSION_TOKEN".to_owned(), c.session_token().to_owned()),
    ])
}

/// Converts STS's expiration into a timestamp.
fn expiration(c: &aws_sdk_sts::types::Credentials) -> Option<jiff::Timestamp> {
    let e = c.expiration();
    jiff::Timestamp::new(e.secs(), e.subsec_nanos() as i32).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_errors_are_classed_by_the_rule_every_backend_follows() {
        use aws_sdk_sts::error::{ErrorMetadata, SdkError};
        use aws_sdk_sts::operation::assume_role::AssumeRoleError;
        let class = |code: &str| {
            let err = AssumeRoleError::generic(
                ErrorMetadata::builder()
                    .code(code)
                    .message("User: arn:aws:sts::1:assumed-role/esi is not authorized")
                    .build(),
            );
            let e: SdkError<AssumeRoleError, ()> = SdkError::service_error(err, ());
            map_sdk_error("AssumeRole", &e)
        };
        for code in [
            "Throttling",
            "InternalFailure",
            "ExpiredToken",
            "InvalidClientTokenId",
        ] {
            let e = class(code);
            assert!(
                matches!(e, BackendError::Unavailable { .. }),
                "{code}: {e:?}"
            );
            assert!(e.to_string().contains(code), "{e}");
        }
        assert!(
            class("SignatureDoesNotMatch")
                .to_string()
                .contains("did not accept the federation's AWS credentials")
        );
        for code in [
            "AccessDenied",
            "AccessDeniedException",
            "MalformedPolicyDocument",
        ] {
            let e = class(code);
            assert!(matches!(e, BackendError::Rejected { .. }), "{code}: {e:?}");
            // AWS's message (it names the federation's role) goes to the log only.
            assert!(!e.to_string().contains("arn:aws"), "{e}");
            assert!(e.detail().contains("not authorized"), "{}", e.detail());
        }
    }

    #[tokio::test]
    async fn static_keys_in_files_are_read_again_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let (id_file, secret_file) = (dir.path().join("id"), dir.path().join("secret"));
        let write = |id: &str, secret: &str| {
            std::fs::write(&id_file, id).unwrap();
            std::fs::write(&secret_file, secret).unwrap();
        };
        write("AKIAFIRST", "first-secret");
        let provider: AwsProvider = serde_json::from_value(serde_json::json!({
            "region": "eu-west-1",
            "endpoint": "http://127.0.0.1:1",
            "credentials": {"accessKeyId": {"file": id_file}, "secretAccessKey": {"file": secret_file}},
        }))
        .unwrap();
        let conn = StsConn::new(&provider, &crate::IssuerSlot::Unknown).unwrap();
        let first = conn.own_credentials().await.unwrap();
        assert_eq!(first.access_key_id(), "AKIAFIRST");
        assert_eq!(first.secret_access_key(), "first-secret");
        let expiry = first.expiry().expect("static keys carry a re-read time");
        assert!(expiry <= std::time::SystemTime::now() + STATIC_KEYS_REREAD);

        write("AKIASECOND", "second-secret");
        let second = conn.own_credentials().await.unwrap();
        assert_eq!(second.access_key_id(), "AKIASECOND");
        assert_eq!(second.secret_access_key(), "second-secret");

        // A key file that disappears fails with the file named, never a key.
        std::fs::remove_file(&secret_file).unwrap();
        let err = conn.own_credentials().await.unwrap_err();
        assert!(
            err.detail().contains("missing or empty") && !err.detail().contains("second-secret"),
            "{}",
            err.detail()
        );
    }

    #[test]
    fn validates_arns() {
        assert!(validate_role_arn("arn:aws:iam::123456789012:role/app", "f").is_ok());
        assert!(validate_role_arn("arn:aws:iam::123456789012:role/path/app", "f").is_ok());
        for bad in [
            "",
            "arn:aws:iam::12345:role/app",
            "arn:aws:s3:::bucket",
            "arn:aws:iam::123456789012:user/bob",
            "arn:aws:iam::123456789012:role/",
        ] {
            assert!(validate_role_arn(bad, "f").is_err(), "{bad}");
        }
        assert!(validate_policy_arn("arn:aws:iam::aws:policy/ReadOnlyAccess", "f").is_ok());
        assert!(validate_policy_arn("arn:aws:iam::aws:role/x", "f").is_err());
    }

    #[test]
    fn store_round_trips_and_rejects_unknown_keys() {
        let json = serde_json::json!({"provider": {"aws": {
            "region": "eu-west-1",
            "endpoint": "http://127.0.0.1:5000",
            "credentials": {"accessKeyId": {"env": "AK"}, "secretAccessKey": {"file": "/s"}},
            "assumeRole": {"roleArn": "arn:aws:iam::123456789012:role/base", "externalId": "x"},
            "timeout": "5s",
        }}});
        let spec = crate::SecretStoreSpec::from_manifest(json).unwrap();
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(crate::SecretStoreSpec::from_manifest(back).unwrap(), spec);

        let unknown =
            serde_json::json!({"provider": {"aws": {"region": "eu-west-1", "accessKey": "AKIA"}}});
        let err = crate::SecretStoreSpec::from_manifest(unknown).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `accessKey`"),
            "{err}"
        );
        let bad_role = serde_json::json!({"provider": {"aws": {"region": "eu-west-1", "assumeRole": {"roleArn": "nope"}}}});
        let err = crate::SecretStoreSpec::from_manifest(bad_role).unwrap_err();
        assert!(
            err.to_string().contains("provider.aws.assumeRole.roleArn"),
            "{err}"
        );
        for region in ["EU-WEST-1", "", "eu_west_1", "eu-west-1.evil.example"] {
            let store = serde_json::json!({"provider": {"aws": {"region": region}}});
            let err = crate::SecretStoreSpec::from_manifest(store).unwrap_err();
            assert!(
                err.to_string().contains("is not an AWS region"),
                "{region}: {err}"
            );
        }
    }
}

/// Whom a generator's call to another AWS service (ECR, Secrets Manager) is signed as: the
/// store's own identity, or `roleArn` assumed exactly as `AWSAssumeRole` does, for one call,
/// its session tagged with the caller's identity (`esi-cluster`, `kubernetes-namespace`,
/// `kubernetes-service-account`, `kubernetes-pod-name`), so resource policies can key on
/// `aws:PrincipalTag/...` and one role serves every namespace with only its own resources.
#[derive(Debug)]
#[cfg(any(
    feature = "ecr",
    feature = "secretsmanager",
    feature = "ssm",
    feature = "rds",
    feature = "eks"
))]
pub(crate) struct CallerRole<C> {
    conn: std::sync::Arc<StsConn>,
    /// Assumes `roleArn` (with the identity's session tags) before the call.
    role: Option<crate::aws_assume_role::AwsAssumeRoleGenerator>,
    /// The service's client signing as the store, built on first use (without a role).
    store_client: OnceCell<C>,
    /// Builds the service's client from an SDK configuration.
    make: fn(&aws_config::SdkConfig) -> C,
}

/// The session a `roleArn` is assumed for: STS's shortest, since it only signs one call.
#[cfg(any(
    feature = "ecr",
    feature = "secretsmanager",
    feature = "ssm",
    feature = "rds",
    feature = "eks"
))]
const ROLE_SESSION_SECONDS: u32 = 900;

/// Checks a generator's `roleArn` and `externalId` fields (see `CallerRole`).
#[cfg(any(
    feature = "ecr",
    feature = "secretsmanager",
    feature = "ssm",
    feature = "rds",
    feature = "eks"
))]
pub(crate) fn validate_caller_role(
    role_arn: Option<&str>,
    external_id: Option<&str>,
) -> Result<(), SpecError> {
    if let Some(arn) = role_arn {
        validate_role_arn(arn, "roleArn")?;
    }
    if external_id.is_some() && role_arn.is_none() {
        return Err(SpecError::field(
            "externalId",
            "needs roleArn (it is sent when assuming that role)",
        ));
    }
    Ok(())
}

#[cfg(any(
    feature = "ecr",
    feature = "secretsmanager",
    feature = "ssm",
    feature = "rds",
    feature = "eks"
))]
impl<C: Clone> CallerRole<C> {
    /// Builds on the store's shared connection; `role_arn` and `external_id` are the
    /// generator's fields (validated here under those names); `make` builds the service's
    /// client (`aws_sdk_ecr::Client::new`).
    pub(crate) fn new(
        make: fn(&aws_config::SdkConfig) -> C,
        store: Option<&crate::SecretStoreSpec>,
        store_ref: &crate::SecretStoreRef,
        role_arn: Option<&str>,
        external_id: Option<&str>,
        shared: &mut crate::Shared,
    ) -> Result<Self, SpecError> {
        validate_caller_role(role_arn, external_id)?;
        let provider = require_store(store, store_ref)?;
        let role = role_arn
            .map(|arn| {
                let spec = crate::aws_assume_role::AwsAssumeRoleSpec {
                    secret_store_ref: store_ref.clone(),
                    role_arn: arn.to_owned(),
                    session_name: None,
                    duration_seconds: ROLE_SESSION_SECONDS,
                    external_id: external_id.map(str::to_owned),
                    policy: None,
                    policy_arns: Vec::new(),
                    identity_tags: true,
                    tags: std::collections::BTreeMap::new(),
                    transitive_tag_keys: Vec::new(),
                    source_identity: None,
                };
                crate::aws_assume_role::AwsAssumeRoleGenerator::new(spec, store, shared)
            })
            .transpose()?;
        Ok(CallerRole {
            conn: shared
                .aws
                .get(provider, |p| StsConn::new(p, &shared.issuer))?,
            role,
            store_client: OnceCell::new(),
            make,
        })
    }

    /// Whether `client` signs with a session of the generator's `roleArn`, assumed for the
    /// caller in each call.
    #[cfg(any(feature = "rds", feature = "eks"))]
    pub(crate) fn signs_as_role(&self) -> bool {
        self.role.is_some()
    }

    /// Whether `client` signs with the store's static keys, whose `expiry` is when they are
    /// read again ([`STATIC_KEYS_REREAD`]), not when they stop working (unknown here).
    #[cfg(any(feature = "rds", feature = "eks"))]
    pub(crate) fn signs_with_static_keys(&self) -> bool {
        self.role.is_none()
            && self.conn.provider.credentials.is_some()
            && self.conn.provider.assume_role.is_none()
    }

    /// The service's client for the caller in `ctx`: the store's, kept, or one signing as the
    /// role, assumed now.
    pub(crate) async fn client(&self, ctx: &crate::Context<'_>) -> Result<C, BackendError> {
        if self.role.is_some() {
            return Ok((self.make)(&*self.sdk_config(ctx).await?));
        }
        let client = self
            .store_client
            .get_or_try_init(|| async {
                Ok::<_, BackendError>((self.make)(&*self.sdk_config(ctx).await?))
            })
            .await?;
        Ok(client.clone())
    }

    /// The SDK configuration to build the service's client from: the store's own, or (with
    /// a role) one signing with a session assumed now for the caller in `ctx`.
    async fn sdk_config(
        &self,
        ctx: &crate::Context<'_>,
    ) -> Result<std::borrow::Cow<'_, aws_config::SdkConfig>, BackendError> {
        let conf = self.conn.sdk_config().await?;
        let Some(role) = &self.role else {
            return Ok(std::borrow::Cow::Borrowed(conf));
        };
        // The session only signs the one call: whatever the Authorization's maxTTL bounds is
        // the generator's to check, not this session's.
        let session = crate::Generate::generate(
            role,
            &crate::Context {
                max_ttl: None,
                ..*ctx
            },
        )
        .await?;
        let key = |k: &str| session.data.get(k).cloned().unwrap_or_default();
        // The session's expiry goes with it: a token presigned with it dies with it.
        let credentials = Credentials::new(
            key("AWS_ACCESS_KEY_ID"),
            key("AWS_SECRET_ACCESS_KEY"),
            Some(key("AWS_SESSION_TOKEN")),
            session.expires_at.map(std::time::SystemTime::from),
            "esi-caller-role-session",
        );
        Ok(std::borrow::Cow::Owned(
            conf.to_builder()
                .credentials_provider(SharedCredentialsProvider::new(credentials))
                .build(),
        ))
    }
}
