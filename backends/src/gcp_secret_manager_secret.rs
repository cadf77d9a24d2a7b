//! `GCPSecretManagerSecret`: reads a secret version from Google Secret Manager
//! (`projects.secrets.versions.access`) on a `gcp` SecretStore: the ESO `GCPSM` provider's job,
//! per Pod instead of through a Kubernetes Secret. Like `SecretsManagerSecret` it is a
//! generator kind, so the same Authorization decides who may read it and the same envelope
//! carries it; nothing is leased, and `expiresAt` is absent.
//!
//! A regional secret (`location`) is read from `secretmanager.{location}.rep.googleapis.com`,
//! the only endpoint serving it, unless the store overrides the endpoint.
//!
//! `project` and `secret` are templates over the verified identity, so one generator can serve
//! every namespace with its own secret (`{{namespace}}-db`); each rendered value is checked
//! against Google's rules before it goes into the URL. The read is made with the federation's
//! own Google token, or with `serviceAccountEmail` as a service account impersonated for the
//! call through IAM Credentials `generateAccessToken`, exactly as `GCPAccessToken` mints
//! (a five-minute token): the secret's IAM policy then names that service account, not the
//! federation.
//!
//! The payload's CRC32C (`dataCrc32c`), when Google sends it, is checked before anything is
//! returned. UTF-8 text holding a JSON object becomes one key per member (`keys` narrows them,
//! each must exist; non-string members as JSON text); other text goes under `key` (default
//! `value`); bytes that are not UTF-8 under `key`, base64-encoded.
//!
//! ```yaml
//! kind: GCPSecretManagerSecret
//! spec:
//!   secretStoreRef: {name: gcp}
//!   project: my-project                      # id or number; may be templated
//!   secret: "{{namespace}}-db"               # templated over the caller
//!   version: latest                          # or a version number or alias (default: latest)
//!   location: europe-west1                   # optional, for a regional secret
//!   keys: [username, password]               # optional, for a JSON object secret
//!   serviceAccountEmail: reader@my-project.iam.gserviceaccount.com   # optional
//! ```

use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use crate::credential::{SecretPayload, secret_data};
use crate::gcp::{CLOUD_PLATFORM_SCOPE, GcpConn, google_error_message, validate_impersonation};
use crate::store::SecretStoreRef;
use crate::template::Template;
use crate::{BackendError, Context, Credential, Generate, SecretStoreSpec, SpecError};

const BACKEND: &str = "google secret manager";
/// The longest secret name Secret Manager takes.
const MAX_SECRET: usize = 255;
/// Lifetime of the impersonated token a read is made with: one call, so the shortest
/// practical; it is not handed out.
const READ_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// `spec` of a `GCPSecretManagerSecret` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "GCPSecretManagerSecret",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcpSecretManagerSecretSpec {
    /// The `gcp` SecretStore (credentials, Secret Manager and IAM Credentials endpoints).
    pub secret_store_ref: SecretStoreRef,
    /// The project holding the secret: its id (`my-project`) or number; `{{namespace}}` etc.
    /// are replaced by the caller's values.
    pub project: String,
    /// The secret's name (letters, digits, `_` and `-`, at most 255); `{{namespace}}` etc. are
    /// replaced by the caller's values (`{{namespace}}-db`).
    pub secret: String,
    /// The location of a regional secret (`europe-west1`), read from that location's endpoint;
    /// absent for a global secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The version to read: `latest` (the default), a version number or a version alias
    /// (`stable`: Google resolves it to the version it names at every read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<IntOrString>,
    /// Return only these members of a JSON object secret; each must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    /// The key for a secret that is not a JSON object (default `value`).
    #[serde(default = "value_key")]
    pub key: String,
    /// A service account to read as, impersonated for each read through IAM Credentials
    /// `generateAccessToken` (the store's identity needs `roles/iam.serviceAccountTokenCreator`
    /// on it). Without it, the store's own identity reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_email: Option<String>,
    /// Delegation chain to `serviceAccountEmail`, each granting token creation to the next.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegates: Vec<String>,
}

fn value_key() -> String {
    "value".to_owned()
}

/// Whether `name` is a secret name Secret Manager takes: `[A-Za-z0-9_-]{1,255}`.
fn valid_secret(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SECRET
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `p` names a project: a project number, or an id (6 to 30 lowercase letters,
/// digits and hyphens, starting with a letter, not ending with a hyphen).
fn valid_project(p: &str) -> bool {
    if !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    (6..=30).contains(&p.len())
        && p.starts_with(|c: char| c.is_ascii_lowercase())
        && !p.ends_with('-')
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `p`, a project rendered with sample values, can become a valid project: the
/// alphabet and the length bound only, since the caller's values change its length.
fn plausible_project(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 30
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `l` can name a location (`europe-west1`): lowercase letters, digits and hyphens,
/// starting with a letter; it becomes part of a host name.
fn valid_location(l: &str) -> bool {
    (1..=63).contains(&l.len())
        && l.starts_with(|c: char| c.is_ascii_lowercase())
        && !l.ends_with('-')
        && l.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl GcpSecretManagerSecretSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.templates()?;
        if let Some(l) = &self.location
            && !valid_location(l)
        {
            return Err(SpecError::field(
                "location",
                format!("{l:?} is not a location (lowercase letters, digits and hyphens)"),
            ));
        }
        self.version_path()?;
        crate::credential::validate_selection(self.keys.as_deref(), &self.key)?;
        match &self.service_account_email {
            Some(email) => validate_impersonation(email, &self.delegates),
            None if !self.delegates.is_empty() => Err(SpecError::field(
                "delegates",
                "delegates lead to serviceAccountEmail: set it, or remove them",
            )),
            None => Ok(()),
        }
    }

    /// The parsed `project` and `secret`, checked with a placeholder value standing in for
    /// each of the caller's.
    fn templates(&self) -> Result<(Template, Template), SpecError> {
        let project = Template::parse(&self.project, "project")?;
        let sample = project.sample();
        let literal = !self.project.contains("{{");
        if !(if literal {
            valid_project(&sample)
        } else {
            plausible_project(&sample)
        }) {
            return Err(SpecError::field(
                "project",
                format!(
                    "{:?} is not a project id or number (6 to 30 lowercase letters, digits and \
                     hyphens, starting with a letter; or digits)",
                    self.project
                ),
            ));
        }
        let secret = Template::parse(&self.secret, "secret")?;
        let sample = secret.sample();
        if !valid_secret(&sample) {
            return Err(SpecError::field(
                "secret",
                format!(
                    "{:?} is not a secret name (letters, digits, _ and - only, at most \
                     {MAX_SECRET} characters)",
                    self.secret
                ),
            ));
        }
        Ok((project, secret))
    }

    /// The version's path segment: `latest`, a version number or a version alias.
    fn version_path(&self) -> Result<String, SpecError> {
        let bad = || {
            SpecError::field(
                "version",
                "must be latest, a version number (1, 2, ...) or a version alias (a letter, then \
                 up to 62 letters, digits, '-' or '_'; not Latest or New in another case)",
            )
        };
        match &self.version {
            None => Ok("latest".to_owned()),
            Some(IntOrString::Int(n)) if *n >= 1 => Ok(n.to_string()),
            Some(IntOrString::Int(_)) => Err(bad()),
            Some(IntOrString::String(s)) if s == "latest" => Ok(s.clone()),
            Some(IntOrString::String(s)) if s.starts_with(|c: char| c.is_ascii_digit()) => {
                match s.parse::<u64>() {
                    Ok(n) if n >= 1 && !s.starts_with('0') => Ok(s.clone()),
                    _ => Err(bad()),
                }
            }
            Some(IntOrString::String(s)) if valid_alias(s) => Ok(s.clone()),
            Some(IntOrString::String(_)) => Err(bad()),
        }
    }
}

/// Google's rule for a version alias: a letter, then up to 62 letters, digits, `-` or `_`;
/// never `latest` or `new` in any case (Google reserves them; `latest` itself is taken above).
fn valid_alias(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !s.eq_ignore_ascii_case("latest")
        && !s.eq_ignore_ascii_case("new")
}

#[derive(Deserialize)]
struct AccessResponse {
    payload: Payload,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    /// Base64 (standard alphabet), as proto3 JSON encodes bytes.
    #[serde(default)]
    data: String,
    /// An int64, which proto3 JSON writes as a string.
    #[serde(default)]
    data_crc32c: Option<Int64>,
}

/// A proto3 JSON int64: a string as Google writes it, or a number as some encoders do.
#[derive(Deserialize)]
#[serde(untagged)]
enum Int64 {
    Text(String),
    Number(i64),
}

impl Int64 {
    fn value(&self) -> Option<i64> {
        match self {
            Int64::Text(s) => s.parse().ok(),
            Int64::Number(n) => Some(*n),
        }
    }
}

/// The built `GCPSecretManagerSecret` generator.
#[derive(Debug)]
pub struct GcpSecretManagerSecretGenerator {
    spec: GcpSecretManagerSecretSpec,
    project: Template,
    secret: Template,
    version: String,
    conn: std::sync::Arc<GcpConn>,
}

impl GcpSecretManagerSecretGenerator {
    /// Builds the generator on its store's shared connection.
    pub fn new(
        spec: GcpSecretManagerSecretSpec,
        store: Option<&SecretStoreSpec>,
        shared: &mut crate::Shared,
    ) -> Result<Self, SpecError> {
        spec.validate()?;
        let (project, secret) = spec.templates()?;
        Ok(GcpSecretManagerSecretGenerator {
            project,
            secret,
            version: spec.version_path()?,
            conn: crate::gcp::shared_conn(store, &spec.secret_store_ref, shared)?,
            spec,
        })
    }

    /// The bearer token the read is made with: the impersonated service account's, else the
    /// federation's own.
    async fn token(&self) -> Result<SecretString, BackendError> {
        match &self.spec.service_account_email {
            Some(email) => Ok(self
                .conn
                .generate_access_token(
                    email,
                    &self.spec.delegates,
                    &[CLOUD_PLATFORM_SCOPE.to_owned()],
                    READ_TOKEN_LIFETIME,
                )
                .await?
                .token),
            None => self.conn.source_token().await,
        }
    }

    /// Who the read was made as, for messages.
    fn reader(&self) -> &'static str {
        if self.spec.service_account_email.is_some() {
            "the service account this generator reads as"
        } else {
            "the federation's Google identity"
        }
    }

    /// The error of an answer other than success. Google's message goes to the log only,
    /// with the secret's resource name; the caller learns what it means.
    fn answer_error(&self, name: &str, status: reqwest::StatusCode, body: &[u8]) -> BackendError {
        let summary: String = google_error_message(body)
            .chars()
            .filter(|c| !c.is_control())
            .take(300)
            .collect();
        let detail = format!("{BACKEND} access {name}: {status}: {summary}");
        match status.as_u16() {
            404 => BackendError::Rejected {
                message: "Google Secret Manager has no such secret or version".to_owned(),
                detail,
            },
            400 => BackendError::Rejected {
                message: "Google Secret Manager refused the read (400: a disabled or destroyed \
                          version, or a bad name)"
                    .to_owned(),
                detail,
            },
            // The token not accepted (401: retryable), or its identity may not read this
            // secret (403: an IAM binding only the operator can grant; rejected, as every
            // backend's 403). Google also answers 403 for a secret that does not exist when the
            // reader may not list the project's.
            401 => BackendError::Unavailable {
                message: format!(
                    "Google Secret Manager refused the token of {}",
                    self.reader()
                ),
                detail,
            },
            403 => BackendError::Rejected {
                message: format!(
                    "{} may not read this secret (or it does not exist)",
                    self.reader()
                ),
                detail,
            },
            _ => crate::http::status_error(BACKEND, status, &format!("access {name}: {summary}")),
        }
    }
}

/// The payload's bytes from Google's answer, checked against its CRC32C when given.
fn payload_bytes(body: &[u8], name: &str) -> Result<Vec<u8>, BackendError> {
    let resp: AccessResponse =
        esi_api::json::from_answer(body).map_err(|e| BackendError::Unavailable {
            message: "Google Secret Manager returned an unreadable response".to_owned(),
            detail: format!("{BACKEND} access {name}: {e}"),
        })?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(resp.payload.data.as_bytes())
        .map_err(|_| BackendError::Unavailable {
            message: "Google Secret Manager returned an unreadable response".to_owned(),
            detail: format!("{BACKEND} access {name}: payload.data is not base64"),
        })?;
    if let Some(sent) = &resp.payload.data_crc32c {
        let computed = crc32c::crc32c(&data);
        // Google encodes the unsigned 32-bit checksum as an int64.
        if sent.value() != Some(i64::from(computed)) {
            return Err(BackendError::Unavailable {
                message: "Google Secret Manager's answer failed its checksum".to_owned(),
                detail: format!(
                    "{BACKEND} access {name}: payload CRC32C mismatch (computed {computed}, the \
                     answer's dataCrc32c differs)"
                ),
            });
        }
    }
    Ok(data)
}

impl Generate for GcpSecretManagerSecretGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let project = self.project.render(ctx, str::to_owned);
        let secret = self.secret.render(ctx, str::to_owned);
        if !valid_project(&project) || !valid_secret(&secret) {
            return Err(BackendError::Rejected {
                message: "the caller's identity does not make a valid project and secret name \
                          here"
                    .to_owned(),
                detail: format!(
                    "{BACKEND}: rendered project {project:?} / secret {secret:?} is not valid"
                ),
            });
        }
        // Both checked against alphabets that need no escaping in a path.
        let location = self.spec.location.as_deref();
        let parent = match location {
            Some(l) => format!("projects/{project}/locations/{l}"),
            None => format!("projects/{project}"),
        };
        let name = format!("{parent}/secrets/{secret}/versions/{}", self.version);
        let token = self.token().await?;
        let url = format!(
            "{}/v1/{name}:access",
            self.conn.secret_manager_endpoint(location)
        );
        let req = self.conn.http.get(&url).bearer_auth(token.expose_secret());
        let (status, body) = crate::http::send(BACKEND, req).await?;
        if !status.is_success() {
            // The federation's own token refused: the next read obtains a new one. (An
            // impersonated token is minted for each read.)
            if status == reqwest::StatusCode::UNAUTHORIZED
                && self.spec.service_account_email.is_none()
            {
                self.conn.forget_source_token().await;
            }
            return Err(self.answer_error(&name, status, &body));
        }
        let bytes = payload_bytes(&body, &name)?;
        let payload = match std::str::from_utf8(&bytes) {
            Ok(text) => SecretPayload::Text(text),
            Err(_) => SecretPayload::Binary(&bytes),
        };
        let data = secret_data(payload, self.spec.keys.as_deref(), &self.spec.key, BACKEND)?;
        Ok(Credential::static_data(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GeneratorKind, GeneratorSpec};

    fn parse(j: serde_json::Value) -> Result<GeneratorSpec, SpecError> {
        GeneratorSpec::from_manifest(GeneratorKind::GcpSecretManagerSecret, j)
    }

    #[test]
    fn round_trips_and_validates() {
        let j = serde_json::json!({
            "secretStoreRef": {"name": "gcp"},
            "project": "my-project",
            "secret": "{{namespace}}-db",
            "version": 3,
            "location": "europe-west1",
            "keys": ["username", "password"],
            "serviceAccountEmail": "reader@my-project.iam.gserviceaccount.com",
            "delegates": ["mid@my-project.iam.gserviceaccount.com"],
        });
        let spec = parse(j.clone()).unwrap();
        let GeneratorSpec::GcpSecretManagerSecret(s) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(s.key, "value");
        assert_eq!(s.version_path().unwrap(), "3");
        assert_eq!(parse(serde_json::to_value(s).unwrap()).unwrap(), spec);
        for (field, value, says) in [
            ("secret", serde_json::json!(""), "spec.secret"),
            (
                "secret",
                serde_json::json!("{{namespace}}/db"),
                "spec.secret",
            ),
            ("secret", serde_json::json!("a.b"), "spec.secret"),
            (
                "secret",
                serde_json::json!("x".repeat(MAX_SECRET + 1)),
                "spec.secret",
            ),
            (
                "secret",
                serde_json::json!("{{secret}}"),
                "unknown placeholder",
            ),
            ("project", serde_json::json!("My-Project"), "spec.project"),
            ("project", serde_json::json!("proj"), "spec.project"),
            ("project", serde_json::json!("my-project-"), "spec.project"),
            (
                "project",
                serde_json::json!("{{namespace}}/x"),
                "spec.project",
            ),
            (
                "location",
                serde_json::json!("Europe West"),
                "spec.location",
            ),
            (
                "location",
                serde_json::json!("eu.evil.example/x"),
                "spec.location",
            ),
            ("version", serde_json::json!(0), "spec.version"),
            ("version", serde_json::json!(-2), "spec.version"),
            ("version", serde_json::json!("New"), "spec.version"),
            ("version", serde_json::json!("LATEST"), "spec.version"),
            ("version", serde_json::json!("_stable"), "spec.version"),
            ("version", serde_json::json!("stable.1"), "spec.version"),
            ("version", serde_json::json!("a".repeat(64)), "spec.version"),
            ("version", serde_json::json!("+1"), "spec.version"),
            ("version", serde_json::json!("01"), "spec.version"),
            ("version", serde_json::json!("1/x"), "spec.version"),
            ("version", serde_json::json!(""), "spec.version"),
            ("keys", serde_json::json!([]), "spec.keys"),
            ("keys", serde_json::json!([""]), "spec.keys"),
            ("key", serde_json::json!(""), "spec.key"),
            (
                "serviceAccountEmail",
                serde_json::json!("reader"),
                "spec.serviceAccountEmail",
            ),
            (
                "delegates",
                serde_json::json!(["bad name"]),
                "spec.delegates[0]",
            ),
            (
                "secretId",
                serde_json::json!("x"),
                "unknown field `secretId`",
            ),
        ] {
            let mut b = j.clone();
            b[field] = value;
            let err = parse(b).unwrap_err().to_string();
            assert!(err.contains(says), "{field}: {err}");
        }
        let mut b = j.clone();
        b.as_object_mut().unwrap().remove("serviceAccountEmail");
        assert!(parse(b).unwrap_err().to_string().contains("spec.delegates"));
    }

    #[test]
    fn the_store_checks_its_secret_manager_endpoint() {
        let store = |ep: &str| {
            crate::SecretStoreSpec::from_manifest(
                serde_json::json!({"provider": {"gcp": {"secretManagerEndpoint": ep}}}),
            )
        };
        assert!(store("https://secretmanager.europe-west1.rep.googleapis.com").is_ok());
        assert!(store("http://127.0.0.1:8080/").is_ok());
        for bad in ["ftp://x", "https://x/?a=b", "not a url"] {
            let err = store(bad).unwrap_err().to_string();
            assert!(
                err.contains("provider.gcp.secretManagerEndpoint"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn regional_secrets_are_read_from_their_locations_endpoint() {
        let conn = |ep: Option<&str>| {
            GcpConn::new(
                &crate::gcp::GcpProvider {
                    secret_manager_endpoint: ep.map(str::to_owned),
                    ..Default::default()
                },
                &crate::IssuerSlot::Unknown,
            )
            .unwrap()
        };
        let google = conn(None);
        assert_eq!(
            google.secret_manager_endpoint(None),
            "https://secretmanager.googleapis.com"
        );
        assert_eq!(
            google.secret_manager_endpoint(Some("europe-west1")),
            "https://secretmanager.europe-west1.rep.googleapis.com"
        );
        let private = conn(Some("https://sm.p.googleapis.com/"));
        for location in [None, Some("europe-west1")] {
            assert_eq!(
                private.secret_manager_endpoint(location),
                "https://sm.p.googleapis.com"
            );
        }
    }

    #[test]
    fn versions_are_latest_numbers_or_aliases() {
        let with = |v: serde_json::Value| {
            let mut j = serde_json::json!({
                "secretStoreRef": {"name": "gcp"}, "project": "123456789012", "secret": "db",
            });
            if !v.is_null() {
                j["version"] = v;
            }
            match parse(j).unwrap() {
                GeneratorSpec::GcpSecretManagerSecret(s) => s.version_path().unwrap(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(with(serde_json::Value::Null), "latest");
        assert_eq!(with(serde_json::json!("latest")), "latest");
        assert_eq!(with(serde_json::json!("12")), "12");
        assert_eq!(with(serde_json::json!(12)), "12");
        assert_eq!(with(serde_json::json!("stable")), "stable");
        assert_eq!(with(serde_json::json!("newest")), "newest");
        assert_eq!(with(serde_json::json!("blue-green_2")), "blue-green_2");
        let longest = format!("v{}", "1".repeat(62));
        assert_eq!(with(serde_json::json!(longest)), longest);
    }

    #[test]
    fn names_follow_googles_rules() {
        assert!(valid_secret("payments-db_2"));
        assert!(valid_secret(&"a".repeat(MAX_SECRET)));
        for bad in ["", "a b", "a/b", "a.b", "ä", "a\nb"] {
            assert!(!valid_secret(bad), "{bad:?}");
        }
        assert!(valid_project("my-project"));
        assert!(valid_project("123456789012"));
        for bad in [
            "",
            "proj",
            "1project",
            "my_project",
            "my-project-",
            "a".repeat(31).as_str(),
        ] {
            assert!(!valid_project(bad), "{bad:?}");
        }
        // A templated project is checked for its alphabet at load, in full once rendered.
        assert!(plausible_project("x-prod"));
        assert!(plausible_project("x"));
        assert!(!plausible_project("x.prod"));
    }

    #[test]
    fn payload_crc32c_is_checked() {
        let data = b"s3cr3t";
        let crc = crc32c::crc32c(data);
        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
        let ok = serde_json::json!({"name": "n", "payload": {"data": b64, "dataCrc32c": crc.to_string()}});
        assert_eq!(payload_bytes(ok.to_string().as_bytes(), "n").unwrap(), data);
        let bad = serde_json::json!({"name": "n", "payload": {"data": b64, "dataCrc32c": (crc ^ 1).to_string()}});
        let err = payload_bytes(bad.to_string().as_bytes(), "n").unwrap_err();
        assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
        assert!(!format!("{err:?}").contains("s3cr3t"));
        let absent = serde_json::json!({"name": "n", "payload": {"data": b64}});
        assert_eq!(
            payload_bytes(absent.to_string().as_bytes(), "n").unwrap(),
            data
        );
        // A known value: CRC-32C of "123456789" is 0xE3069283.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }
}
