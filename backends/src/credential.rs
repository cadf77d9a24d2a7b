//! The credential a generator returns and the lease handle that revokes it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A freshly minted credential, before the federation wraps it into an envelope.
///
/// `Debug` lists the keys only: values are secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// Key/value pairs handed to the workload.
    pub data: BTreeMap<String, String>,
    /// When the backend says the credential stops working; `None` when it does not expire.
    pub expires_at: Option<jiff::Timestamp>,
    /// Whether the backend lease can be renewed.
    pub renewable: bool,
    /// How to revoke it later, when the backend allows.
    pub lease: Option<LeaseHandle>,
}

impl Credential {
    /// A credential that does not expire and cannot be revoked.
    pub fn static_data(data: BTreeMap<String, String>) -> Self {
        Credential {
            data,
            expires_at: None,
            renewable: false,
            lease: None,
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("expires_at", &self.expires_at)
            .field("renewable", &self.renewable)
            .field("lease", &self.lease)
            .finish()
    }
}

/// What a backend needs to revoke a credential later: backend-defined, sealed by the
/// federation (AEAD) before it leaves, so it may name internal identifiers (a Vault lease id, a
/// minted user) but must not hold the secret itself — unless the backend revokes a credential
/// only when shown it (a GitHub installation token): then the sealed lease is no more exposed
/// than the credential it sits beside.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHandle(pub serde_json::Value);

impl fmt::Debug for LeaseHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Lease ids are not secrets in Vault's model, but they let their holder revoke; keep
        // them out of logs anyway.
        f.write_str("LeaseHandle(<redacted>)")
    }
}

/// A JSON value as the string handed to the workload: strings unquoted, the rest as JSON.
#[cfg_attr(
    not(any(
        feature = "vault",
        feature = "webhook",
        feature = "secretsmanager",
        feature = "ssm",
        feature = "gcp",
        feature = "keyvault"
    )),
    allow(dead_code)
)]
pub(crate) fn value_string(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Checks a static secret's `keys` (each a member to return; absent for all) and `key` (where
/// a secret that is not a JSON object goes).
#[cfg(any(
    feature = "secretsmanager",
    feature = "ssm",
    feature = "gcp",
    feature = "keyvault"
))]
pub(crate) fn validate_selection(
    keys: Option<&[String]>,
    key: &str,
) -> Result<(), crate::SpecError> {
    use crate::SpecError;
    if let Some(keys) = keys {
        if keys.is_empty() {
            return Err(SpecError::field(
                "keys",
                "must name at least one key (leave it out for all)",
            ));
        }
        if keys.iter().any(String::is_empty) {
            return Err(SpecError::field("keys", "must not contain an empty key"));
        }
    }
    if key.is_empty() {
        return Err(SpecError::field("key", "must not be empty"));
    }
    Ok(())
}

/// The data of a static secret read as text (`SecretsManagerSecret`, `GCPSecretManagerSecret`,
/// `AzureKeyVaultSecret`):
/// a JSON object becomes one key per member (non-string members as JSON text), narrowed to
/// `keys` when given (each must exist); any other text is returned whole under `key`. Errors
/// name the keys asked for, never a value; `backend` prefixes the log detail.
#[cfg(any(
    feature = "secretsmanager",
    feature = "ssm",
    feature = "gcp",
    feature = "keyvault"
))]
pub(crate) fn secret_text_data(
    text: &str,
    keys: Option<&[String]>,
    key: &str,
    backend: &str,
) -> Result<BTreeMap<String, String>, crate::BackendError> {
    let object = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(m)) => Some(m),
        _ => None,
    };
    let Some(object) = object else {
        if keys.is_some() {
            return Err(crate::BackendError::Rejected {
                message: "the secret is not a JSON object, so spec.keys cannot select from it"
                    .to_owned(),
                detail: format!("{backend}: keys set, the secret's text is not a JSON object"),
            });
        }
        return Ok(BTreeMap::from([(key.to_owned(), text.to_owned())]));
    };
    match keys {
        None => Ok(object
            .iter()
            .map(|(k, v)| (k.clone(), value_string(v)))
            .collect()),
        Some(keys) => keys
            .iter()
            .map(|k| {
                object
                    .get(k)
                    .map(|v| (k.clone(), value_string(v)))
                    .ok_or_else(|| crate::BackendError::Rejected {
                        message: format!("the secret has no key {k:?}"),
                        detail: format!("{backend}: key {k:?} missing"),
                    })
            })
            .collect(),
    }
}

/// How far past now + maxTTL a backend's expiry may lie: the backend computes it on its own
/// clock, from a moment between our request and its answer.
#[cfg_attr(
    not(any(
        feature = "ecr",
        feature = "acr",
        feature = "github",
        feature = "webhook",
        feature = "gcp",
        feature = "quay",
        feature = "cloudsmith"
    )),
    allow(dead_code)
)]
pub(crate) const CLOCK_LEEWAY: std::time::Duration = std::time::Duration::from_secs(5);

/// Refuses a credential expiring at `expires_at` that outlives the Authorization's `max`
/// (beyond [`CLOCK_LEEWAY`]), for backends that cannot shorten it or that were asked for a
/// shorter one and must be checked (Google). `what` names it for the caller ("the Amazon ECR
/// token"), `fate` says what became of it ("it was dropped, not handed out"), `backend` prefixes
/// the log detail.
#[cfg_attr(
    not(any(
        feature = "ecr",
        feature = "acr",
        feature = "github",
        feature = "gcp",
        feature = "quay",
        feature = "cloudsmith",
        feature = "azuretoken",
        feature = "k8s"
    )),
    allow(dead_code)
)]
pub(crate) fn within_max_ttl(
    expires_at: jiff::Timestamp,
    now: jiff::Timestamp,
    max: std::time::Duration,
    (what, fate, backend): (&str, &str, &str),
) -> Result<(), crate::BackendError> {
    let lives = expires_at.as_second().saturating_sub(now.as_second());
    // Saturating: the loader accepts any maxTTL humantime reads, up to `u64::MAX` seconds,
    // and `Duration`'s `+` panics past its end (an abort of the whole server in release).
    if lives <= i64::try_from(max.saturating_add(CLOCK_LEEWAY).as_secs()).unwrap_or(i64::MAX) {
        return Ok(());
    }
    let human = |d: std::time::Duration| humantime::format_duration(d).to_string();
    Err(crate::BackendError::Rejected {
        message: format!(
            "{what} would live {}, longer than the Authorization's maxTTL of {}; {fate}",
            human(std::time::Duration::from_secs(lives.unsigned_abs())),
            human(max)
        ),
        detail: format!(
            "{backend}: expiry {expires_at} over maxTTL {}s",
            max.as_secs()
        ),
    })
}

/// `e`, the refusal of a credential minted but not handed out, saying whether revoking it
/// worked: the caller's message says so ("it was revoked", or that it lives until it expires),
/// and the revoke's failure joins the detail the federation logs (backend details never hold a
/// credential). `Ok(false)`, nothing left to revoke, counts as revoked.
#[cfg(any(feature = "webhook", feature = "github"))]
pub(crate) fn with_revocation(
    e: crate::BackendError,
    revoked: Result<bool, crate::BackendError>,
) -> crate::BackendError {
    use crate::BackendError;
    let (said, log) = match &revoked {
        Ok(_) => ("it was revoked", String::new()),
        Err(r) => (
            "revoking it failed, it lives until it expires",
            format!("; revoke: {}", r.detail()),
        ),
    };
    match e {
        BackendError::Rejected { message, detail } => BackendError::Rejected {
            message: format!("{message} ({said})"),
            detail: format!("{detail}{log}"),
        },
        BackendError::Unavailable { message, detail } => BackendError::Unavailable {
            message: format!("{message} ({said})"),
            detail: format!("{detail}{log}"),
        },
        BackendError::Invalid(m) => BackendError::Invalid(format!("{m} ({said})")),
    }
}

/// A container registry login as the registry generators hand it out (`ECRAuthorizationToken`,
/// `ACRAccessToken`, `GCRAccessToken`, `QuayAccessToken`, `CloudsmithAccessToken`): `username`,
/// `password`, `registry` (the first of `registries`) and `dockerconfigjson`, a
/// `~/.docker/config.json` (what docker, crane, buildah, kaniko and the kubelet's
/// `kubernetes.io/dockerconfigjson` Secrets read) logging in to every one of `registries` with
/// `auth` = base64 of `username:password`.
#[cfg(any(
    feature = "ecr",
    feature = "acr",
    feature = "gcr",
    feature = "quay",
    feature = "cloudsmith"
))]
pub(crate) fn registry_login<R: AsRef<str>>(
    username: &str,
    password: &str,
    registries: &[R],
) -> BTreeMap<String, String> {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let login = serde_json::json!({"username": username, "password": password, "auth": auth});
    let auths: serde_json::Map<String, serde_json::Value> = registries
        .iter()
        .map(|r| (r.as_ref().to_owned(), login.clone()))
        .collect();
    let mut data = BTreeMap::from([
        ("username".to_owned(), username.to_owned()),
        ("password".to_owned(), password.to_owned()),
        (
            "dockerconfigjson".to_owned(),
            serde_json::json!({ "auths": auths }).to_string(),
        ),
    ]);
    if let Some(first) = registries.first() {
        data.insert("registry".to_owned(), first.as_ref().to_owned());
    }
    data
}

/// A static secret as a secret manager holds it: text, or bytes that are not UTF-8.
#[cfg(any(feature = "secretsmanager", feature = "gcp"))]
pub(crate) enum SecretPayload<'a> {
    /// UTF-8 text.
    Text(&'a str),
    /// Anything else.
    Binary(&'a [u8]),
}

/// The credential's keys from a static secret (`SecretsManagerSecret`, `GCPSecretManagerSecret`):
/// text holding a JSON object becomes one key per member (`keys` narrows them, each must exist;
/// non-string members as JSON text); other text goes under `key`; bytes under `key`,
/// base64-encoded. Errors name the keys, never the secret's contents; `backend` prefixes
/// their log detail.
#[cfg(any(feature = "secretsmanager", feature = "gcp"))]
pub(crate) fn secret_data(
    payload: SecretPayload<'_>,
    keys: Option<&[String]>,
    key: &str,
    backend: &str,
) -> Result<BTreeMap<String, String>, crate::BackendError> {
    use base64::Engine as _;
    let text = match payload {
        SecretPayload::Text(text) => text,
        SecretPayload::Binary(bytes) => {
            if keys.is_some() {
                return Err(crate::BackendError::Rejected {
                    message: "the secret is binary, so spec.keys cannot select from it".to_owned(),
                    detail: format!("{backend}: keys set, the secret is binary"),
                });
            }
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
            return Ok(BTreeMap::from([(key.to_owned(), encoded)]));
        }
    };
    secret_text_data(text, keys, key, backend)
}

#[cfg(all(
    test,
    any(
        feature = "secretsmanager",
        feature = "gcp",
        feature = "keyvault",
        feature = "ecr",
        feature = "acr"
    )
))]
mod tests {
    use super::*;

    #[test]
    fn a_max_ttl_at_the_end_of_duration_allows_without_overflowing() {
        // What `maxTTL: 18446744073709551615s` becomes; `max + CLOCK_LEEWAY` panicked.
        let max = humantime::parse_duration("18446744073709551615s").unwrap();
        let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let far = jiff::Timestamp::MAX;
        assert!(within_max_ttl(far, now, max, ("the token", "dropped", "test")).is_ok());
        assert!(within_max_ttl(far, now, std::time::Duration::MAX, ("t", "d", "b")).is_ok());
    }

    #[cfg(any(feature = "ecr", feature = "acr", feature = "gcr"))]
    #[test]
    fn a_registry_login_logs_in_to_every_registry_with_base64_user_colon_password() {
        use base64::Engine as _;
        let data = registry_login("oauth2accesstoken", "ya29.s3cr3t", &["gcr.io", "eu.gcr.io"]);
        assert_eq!(data["username"], "oauth2accesstoken");
        assert_eq!(data["password"], "ya29.s3cr3t");
        assert_eq!(data["registry"], "gcr.io");
        let config: serde_json::Value = serde_json::from_str(&data["dockerconfigjson"]).unwrap();
        let auths = config["auths"].as_object().unwrap();
        assert_eq!(auths.keys().collect::<Vec<_>>(), ["eu.gcr.io", "gcr.io"]);
        for login in auths.values() {
            assert_eq!(login["username"], "oauth2accesstoken");
            assert_eq!(login["password"], "ya29.s3cr3t");
            let auth = base64::engine::general_purpose::STANDARD
                .decode(login["auth"].as_str().unwrap())
                .unwrap();
            assert_eq!(auth, b"oauth2accesstoken:ya29.s3cr3t");
        }
        assert_eq!(data.len(), 4);
    }

    #[cfg(any(
        feature = "secretsmanager",
        feature = "ssm",
        feature = "gcp",
        feature = "keyvault"
    ))]
    #[test]
    fn secret_text_is_split_into_members_or_kept_whole_and_errors_hold_no_value() {
        let text =
            r#"{"username": "app", "password": "s3cr3t", "port": 5432, "tls": {"on": true}}"#;
        let all = secret_text_data(text, None, "value", "test").unwrap();
        assert_eq!(all["password"], "s3cr3t");
        assert_eq!(all["port"], "5432");
        assert_eq!(all["tls"], r#"{"on":true}"#);
        assert_eq!(all.len(), 4);
        let keys = ["username".to_owned()];
        let some = secret_text_data(text, Some(&keys), "value", "test").unwrap();
        assert_eq!(some.keys().collect::<Vec<_>>(), ["username"]);
        let keys = ["username".to_owned(), "host".to_owned()];
        let e = secret_text_data(text, Some(&keys), "value", "test").unwrap_err();
        assert!(e.to_string().contains(r#"no key "host""#), "{e}");
        assert!(!format!("{e} {e:?}").contains("s3cr3t"), "{e:?}");
        for plain in ["s3cr3t", "[1, 2]", "\"quoted\"", ""] {
            let kept = secret_text_data(plain, None, "password", "test").unwrap();
            assert_eq!(
                kept,
                BTreeMap::from([("password".to_owned(), plain.to_owned())])
            );
            let e = secret_text_data(plain, Some(&keys), "value", "test").unwrap_err();
            assert!(e.to_string().contains("not a JSON object"), "{e}");
            assert!(!format!("{e} {e:?}").contains("s3cr3t"), "{e:?}");
        }
    }
}
