//! SigV4 presigning for the tokens the federation signs without calling AWS: RDS IAM
//! authentication tokens ([`crate::rds_auth_token`]) and EKS cluster tokens
//! ([`crate::eks_token`]). Both are presigned URLs, made here as the AWS SDKs make them; the
//! modules' tests hold them to tokens botocore made.

use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{SignatureLocation, SigningSettings};

/// `url` (already encoded, with its query) presigned for `service` in `region` with
/// `credentials` at `time`, valid `expires`, the `headers` signed too: `url` with the signing
/// parameters appended, form-encoded as the SDKs encode them.
pub(crate) fn presigned_url(
    url: &str,
    headers: &[(&str, &str)],
    service: &str,
    region: &str,
    credentials: aws_credential_types::Credentials,
    time: SystemTime,
    expires: Duration,
) -> Result<String, String> {
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(expires);
    let instructions = crate::aws::sigv4_sign(
        ("GET", url, headers, &[]),
        service,
        region,
        credentials,
        time,
        settings,
    )?;
    let mut out = url.to_owned();
    for (name, value) in instructions.params() {
        out.push('&');
        out.push_str(name);
        out.push('=');
        out.extend(form_urlencoded::byte_serialize(value.as_bytes()));
    }
    Ok(out)
}

/// What a token is signed with, for the caller in `ctx`.
pub(crate) struct Signing {
    /// The credentials: the store's, or a session of the generator's `roleArn`.
    pub(crate) credentials: aws_credential_types::Credentials,
    /// The generator's region, else the store's.
    pub(crate) region: String,
    /// The time of signing, in whole seconds as `X-Amz-Date` says it.
    pub(crate) at: SystemTime,
    /// How long the credentials still work, when they are temporary and say so (the store's
    /// static keys carry the time they are read again, not an expiry).
    pub(crate) left: Option<Duration>,
}

impl Signing {
    /// The signing time as a timestamp.
    pub(crate) fn signed_at(&self) -> jiff::Timestamp {
        jiff::Timestamp::try_from(self.at).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }
}

/// How long the store's temporary credentials must still work to be signed with again: a
/// token's longest life (RDS's 15 minutes) and a minute.
const KEEP_WHILE_LEFT: Duration = Duration::from_secs(16 * 60);

/// The store's credentials a generator signed with last, kept while they still work longer
/// than a token lives ([`KEEP_WHILE_LEFT`]; static keys until they are read again): the
/// provider behind a store (a base role, a web identity, `selfIssued`) may ask STS each time
/// it is called, and the SDK's cache only serves its own clients.
#[derive(Debug, Default)]
pub(crate) struct KeptCredentials(tokio::sync::Mutex<Option<aws_credential_types::Credentials>>);

/// The credentials and region `signer` signs with for the caller in `ctx` (`region` the
/// generator's, when set); `what` names the token in errors (`the RDS token`).
pub(crate) async fn signing(
    signer: &crate::aws::CallerRole<aws_config::SdkConfig>,
    kept: &KeptCredentials,
    region: Option<&str>,
    ctx: &crate::Context<'_>,
    what: &str,
    backend: &str,
) -> Result<Signing, crate::BackendError> {
    use aws_credential_types::provider::ProvideCredentials as _;
    let unavailable = |detail: String| crate::BackendError::Unavailable {
        message: format!("the federation's AWS credentials could not sign {what}"),
        detail: format!("{backend}: {detail}"),
    };
    let conf = signer.client(ctx).await?;
    let region = match (region, conf.region()) {
        (Some(r), _) => r.to_owned(),
        (None, Some(r)) => r.to_string(),
        (None, None) => return Err(unavailable("no region".to_owned())),
    };
    let provide = || async {
        conf.credentials_provider()
            .ok_or_else(|| unavailable("the store has no credentials provider".to_owned()))?
            .provide_credentials()
            .await
            .map_err(|e| unavailable(crate::error_chain(&e)))
    };
    let credentials = if signer.signs_as_role() {
        // A session assumed for this caller alone.
        provide().await?
    } else {
        let mut kept = kept.0.lock().await;
        let static_keys = signer.signs_with_static_keys();
        let usable = |c: &aws_credential_types::Credentials| {
            c.expiry().is_none_or(|until| {
                let left = until.duration_since(SystemTime::now()).unwrap_or_default();
                if static_keys {
                    left > Duration::ZERO
                } else {
                    left >= KEEP_WHILE_LEFT
                }
            })
        };
        match kept.as_ref().filter(|c| usable(c)) {
            Some(c) => c.clone(),
            None => {
                let fresh = provide().await?;
                *kept = Some(fresh.clone());
                fresh
            }
        }
    };
    let now = SystemTime::now();
    // X-Amz-Date is in whole seconds: a token lives from the second it was signed in.
    let at = SystemTime::UNIX_EPOCH
        + Duration::from_secs(
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        );
    let left = match credentials
        .expiry()
        .filter(|_| !signer.signs_with_static_keys())
    {
        Some(until) => {
            let left = until.duration_since(now).unwrap_or_default();
            if left < Duration::from_secs(1) {
                return Err(unavailable(
                    "the signing credentials have expired".to_owned(),
                ));
            }
            Some(left)
        }
        None => None,
    };
    Ok(Signing {
        credentials,
        region,
        at,
        left,
    })
}

/// A presigned URL's path and its query parameters in order, for comparing tokens whose
/// parameters come in another order (botocore puts the session token before the signature,
/// the signer after it; AWS reads the query by name).
#[cfg(test)]
pub(crate) fn sorted_query(url: &str) -> (String, Vec<String>) {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<String> = query.split('&').map(str::to_owned).collect();
    params.sort();
    (path.to_owned(), params)
}
