//! Where a store finds a secret: the federation's environment or a file, never the manifest.

use std::path::{Component, Path, PathBuf};
use std::sync::RwLock;

use schemars::JsonSchema;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::{BackendError, SpecError};

/// The federation's own secrets in its environment: the lease-sealing keys, its OIDC signing
/// keys, the secret parts of its own AWS credentials (set by Lambda for the function's role,
/// or by an operator for the SDK's default chain), which may read the Secrets Manager secrets
/// of those keys, and the App Service managed identity's header secret. The `aws` and `azure`
/// stores do not need them named: they read them themselves.
const RESERVED_ENV: &[(&str, &str)] = &[
    (
        "ESI_LEASE_KEYS",
        "is the federation's own lease-sealing key",
    ),
    (
        "ESI_ISSUER_KEYS",
        "is the federation's own OIDC signing key",
    ),
    (
        "AWS_SECRET_ACCESS_KEY",
        "is the federation's own AWS credential (an `aws` store without `credentials` uses it \
         through the SDK's default chain)",
    ),
    (
        "AWS_SESSION_TOKEN",
        "is the federation's own AWS credential (an `aws` store without `credentials` uses it \
         through the SDK's default chain)",
    ),
    (
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "is the federation's own AWS credential (an `aws` store without `credentials` uses it \
         through the SDK's default chain)",
    ),
    (
        "IDENTITY_HEADER",
        "is the federation's own Azure managed identity secret (an `azure` store with \
         `managedIdentity` sends it to the platform's token endpoint only)",
    ),
];

/// A store that may read one of the federation's own credential files: the file of an
/// identity that one provider's SDK convention names, which that provider's store may read
/// (to prove that identity to that provider) and no other reference may (a `webhook` store's
/// header could send it anywhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The `azure` store's workload identity: the federated token `AZURE_FEDERATED_TOKEN_FILE`
    /// names, which Entra ID exchanges for the federation's Azure identity.
    Azure,
    /// The `gcp` store's key file: the one `GOOGLE_APPLICATION_CREDENTIALS` names, the
    /// federation's Google identity.
    Gcp,
    /// The federation's own ServiceAccount token in its cluster ([`OWN_SERVICE_ACCOUNT_TOKEN`]):
    /// what a `vault` store's kubernetes (or jwt) auth presents, and a `kubernetes` store's
    /// `auth.token` may name to reach the federation's own API server.
    Kubernetes,
}

/// Where the kubelet mounts a Pod's ServiceAccount token: the federation's own, when it runs in
/// Kubernetes. Reserved for [`Owner::Kubernetes`] always (a path that does not exist reserves
/// nothing that could be read).
pub const OWN_SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

impl Owner {
    /// Why a reference of another store may not name a file of this owner.
    fn refusal(self) -> &'static str {
        match self {
            Owner::Azure => {
                "is the federation's own Azure workload identity token (the file \
                 AZURE_FEDERATED_TOKEN_FILE names): only an `azure` store's workloadIdentity may \
                 read it"
            }
            Owner::Gcp => {
                "is the federation's own Google credential (the file \
                 GOOGLE_APPLICATION_CREDENTIALS names): only a `gcp` store's \
                 serviceAccountKeyFile may read it"
            }
            Owner::Kubernetes => {
                "is the federation's own Kubernetes ServiceAccount token: only a `vault` \
                 store's kubernetes or jwt auth (tokenFile) and a `kubernetes` store's \
                 auth.token may read it"
            }
        }
    }
}

/// Files of the federation's own that no reference may name (its lease keys, its TLS key, its
/// web identity token), or only its [`Owner`]'s; added by [`reserve_file`] and
/// [`reserve_own_credential_files`]. `/proc` is always refused: `/proc/self/environ` is the
/// whole environment.
static RESERVED_FILES: RwLock<Vec<(PathBuf, Option<Owner>)>> = RwLock::new(Vec::new());

/// Keeps every [`SecretRef`] from naming `path` (and what it links to), a file holding one of
/// the federation's own secrets: a SecretStore decides where the values it reads are sent, so
/// one naming the lease keys could hand them to any endpoint (and with them, forged leases).
pub fn reserve_file(path: &Path) {
    reserve(path, None);
}

fn reserve(path: &Path, owner: Option<Owner>) {
    let mut reserved = RESERVED_FILES.write().unwrap_or_else(|p| p.into_inner());
    for p in [Some(lexical(path)), std::fs::canonicalize(path).ok()]
        .into_iter()
        .flatten()
    {
        match reserved.iter_mut().find(|(r, _)| *r == p) {
            // Reserved for everyone, or for two owners, is reserved for everyone.
            Some((_, o)) if *o != owner => *o = None,
            Some(_) => {}
            None => reserved.push((p, owner)),
        }
    }
}

/// Variables naming files that hold the federation's own credentials, read by an SDK or by
/// their [`Owner`]'s store: the web identity token of IRSA, which AWS STS exchanges for the
/// federation's role (the one that may read the lease keys' secret; the SDK reads it, no store
/// may); Azure's federated token; Google's key file.
const OWN_CREDENTIAL_FILES: &[(&str, Option<Owner>)] = &[
    ("AWS_WEB_IDENTITY_TOKEN_FILE", None),
    ("AZURE_FEDERATED_TOKEN_FILE", Some(Owner::Azure)),
    ("GOOGLE_APPLICATION_CREDENTIALS", Some(Owner::Gcp)),
];

/// Reserves the files the federation's environment names as its own credentials
/// (`AWS_WEB_IDENTITY_TOKEN_FILE` for everyone, `AZURE_FEDERATED_TOKEN_FILE` and
/// `GOOGLE_APPLICATION_CREDENTIALS` for their [`Owner`]) and its own ServiceAccount token
/// ([`OWN_SERVICE_ACCOUNT_TOKEN`], for [`Owner::Kubernetes`]); call once at start-up, before
/// any configuration is read.
pub fn reserve_own_credential_files() {
    for (path, owner) in own_credential_files(|k| std::env::var_os(k)) {
        reserve(&path, owner);
    }
    reserve(
        Path::new(OWN_SERVICE_ACCOUNT_TOKEN),
        Some(Owner::Kubernetes),
    );
}

fn own_credential_files(
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Vec<(PathBuf, Option<Owner>)> {
    OWN_CREDENTIAL_FILES
        .iter()
        .filter_map(|(k, owner)| {
            env(k)
                .filter(|v| !v.is_empty())
                .map(|v| (PathBuf::from(v), *owner))
        })
        .collect()
}

/// `path` made absolute against the working directory, `.` and `..` resolved by name (no
/// file system access: a reference is checked at load time, when its file may not exist).
fn lexical(path: &Path) -> PathBuf {
    let absolute = match path.is_relative().then(std::env::current_dir) {
        Some(Ok(cwd)) => cwd.join(path),
        _ => path.to_path_buf(),
    };
    let mut out = PathBuf::from("/");
    for c in absolute.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Why `path` may not be read as a secret by `reader` (a store's own credential, or any
/// other reference), if it may not.
///
/// A reserved file is matched by name (as given, and resolved through links) and by what it
/// is now: the same device and inode reached by another name. A Kubernetes volume swaps the
/// targets of its files' links on every update, so the resolved name recorded at start-up goes
/// stale, and `dir/..data/token` reaches the same file as the reserved `dir/token`.
fn refused_file(path: &Path, reader: Option<Owner>) -> Option<&'static str> {
    use std::os::unix::fs::MetadataExt as _;
    let named = lexical(path);
    let resolved = std::fs::canonicalize(path).ok();
    if std::iter::once(&named)
        .chain(resolved.as_ref())
        .any(|p| p.starts_with("/proc"))
    {
        return Some("is under /proc, which exposes the federation's own process");
    }
    let identity = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let file = identity(path);
    let reserved = RESERVED_FILES.read().unwrap_or_else(|p| p.into_inner());
    let mut refusal = None;
    for (r, owner) in reserved.iter() {
        let same = *r == named
            || resolved.as_ref() == Some(r)
            || file.is_some_and(|f| identity(r) == Some(f));
        match owner {
            _ if !same => {}
            None => {
                return Some(
                    "holds one of the federation's own secrets (its lease keys, OIDC signing \
                     keys, TLS key or web identity token)",
                );
            }
            Some(owner) if reader != Some(*owner) => refusal = Some(owner.refusal()),
            Some(_) => {}
        }
    }
    refusal
}

/// Checks a field naming a file a store reads itself (a token file, a key file): the rules of
/// a [`SecretRef`]'s `file`, with `owner` the store's own identity (whose files it may name).
#[cfg(any(feature = "vault", feature = "azure", feature = "gcp", test))]
pub(crate) fn validate_file(
    file: &Path,
    field: &str,
    owner: Option<Owner>,
) -> Result<(), SpecError> {
    if file.as_os_str().is_empty() {
        return Err(SpecError::field(field, "must not be empty"));
    }
    refused_file(file, owner).map_or(Ok(()), |why| Err(SpecError::field(field, why)))
}

/// A reference to a secret value: exactly one of `env` or `file`.
///
/// Files are re-read on every use, so a rotated file (a projected token, a mounted
/// Kubernetes Secret) is picked up without a restart. Surrounding whitespace is trimmed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// Name of an environment variable of the federation holding the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Path of a file readable by the federation holding the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

impl SecretRef {
    /// A reference to an environment variable.
    pub fn env(name: impl Into<String>) -> Self {
        SecretRef {
            env: Some(name.into()),
            file: None,
        }
    }

    /// A reference to a file.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        SecretRef {
            env: None,
            file: Some(path.into()),
        }
    }

    /// Checks that exactly one source is named; `path` is the field, for the error.
    /// Also refuses the federation's own secrets: the lease keys' variable and its own AWS
    /// credentials' secret variables, the files given to [`reserve_file`], anything under
    /// `/proc`.
    pub fn validate(&self, path: &str) -> Result<(), SpecError> {
        self.validate_for(path, None)
    }

    /// [`SecretRef::validate`] for a reference `owner`'s store reads to prove its own
    /// identity, which may name the files of that owner.
    pub(crate) fn validate_for(&self, path: &str, owner: Option<Owner>) -> Result<(), SpecError> {
        let refusal = self.refusal(owner);
        match (&self.env, &self.file) {
            (Some(e), None) if !e.is_empty() => refusal.map_or(Ok(()), |why| {
                Err(SpecError::field(format!("{path}.env"), why))
            }),
            (None, Some(f)) if !f.as_os_str().is_empty() => refusal.map_or(Ok(()), |why| {
                Err(SpecError::field(format!("{path}.file"), why))
            }),
            _ => Err(SpecError::field(path, "set exactly one of `env` or `file`")),
        }
    }

    /// Why this reference names something `reader` may not read, if it does.
    fn refusal(&self, reader: Option<Owner>) -> Option<&'static str> {
        match (&self.env, &self.file) {
            (Some(name), _) => RESERVED_ENV
                .iter()
                .find(|(reserved, _)| reserved == name)
                .map(|(_, why)| *why),
            (_, Some(file)) => refused_file(file, reader),
            _ => None,
        }
    }

    /// Where the value comes from, for messages (never the value).
    pub fn describe(&self) -> String {
        match (&self.env, &self.file) {
            (Some(e), _) => format!("environment variable {e}"),
            (_, Some(f)) => format!("file {}", f.display()),
            _ => "nothing".to_owned(),
        }
    }

    /// Reads the value now. A missing or empty value is a [`BackendError::Unavailable`]: the
    /// federation is misconfigured, which the caller cannot fix.
    pub fn read(&self) -> Result<SecretString, BackendError> {
        self.read_for(None)
    }

    /// [`SecretRef::read`] for `owner`'s store (see [`SecretRef::validate_for`]).
    pub(crate) fn read_for(&self, owner: Option<Owner>) -> Result<SecretString, BackendError> {
        // Checked again here: a file may have become a link to a refused one since loading.
        if let Some(why) = self.refusal(owner) {
            return Err(BackendError::Unavailable {
                message: "the federation's backend credentials are missing".to_owned(),
                detail: format!("refused to read {}: it {why}", self.describe()),
            });
        }
        let raw = match (&self.env, &self.file) {
            (Some(name), _) => std::env::var(name).ok(),
            (_, Some(path)) => std::fs::read_to_string(path).ok(),
            _ => None,
        };
        match raw.map(|v| v.trim().to_owned()) {
            Some(v) if !v.is_empty() => Ok(SecretString::from(v)),
            _ => Err(BackendError::Unavailable {
                message: "the federation's backend credentials are missing".to_owned(),
                detail: format!("secret from {} is missing or empty", self.describe()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn reads_trimmed_file_and_rejects_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tok");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(
            SecretRef::file(&path).read().unwrap().expose_secret(),
            "s3cret"
        );
        std::fs::write(&path, " \n").unwrap();
        let err = SecretRef::file(&path).read().unwrap_err();
        assert!(err.detail().contains("missing or empty"), "{err:?}");
        assert!(
            SecretRef::env("ESI_SURELY_UNSET_VARIABLE_1234")
                .read()
                .is_err()
        );
    }

    #[test]
    fn the_environments_credential_files_are_the_federations_own() {
        let env = |k: &str| match k {
            "AWS_WEB_IDENTITY_TOKEN_FILE" => {
                Some("/var/run/secrets/eks.amazonaws.com/serviceaccount/token".into())
            }
            "AZURE_FEDERATED_TOKEN_FILE" => {
                Some("/var/run/secrets/azure/tokens/azure-identity-token".into())
            }
            "GOOGLE_APPLICATION_CREDENTIALS" => Some("/etc/gcp/key.json".into()),
            _ => None,
        };
        assert_eq!(
            own_credential_files(env),
            [
                (
                    PathBuf::from("/var/run/secrets/eks.amazonaws.com/serviceaccount/token"),
                    None
                ),
                (
                    PathBuf::from("/var/run/secrets/azure/tokens/azure-identity-token"),
                    Some(Owner::Azure)
                ),
                (PathBuf::from("/etc/gcp/key.json"), Some(Owner::Gcp)),
            ]
        );
        assert!(own_credential_files(|_| Some("".into())).is_empty());
        assert!(own_credential_files(|_| None).is_empty());
    }

    #[test]
    fn an_owned_file_is_read_only_by_its_owners_store() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("azure-identity-token");
        std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n").unwrap();
        let link = dir.path().join("innocent");
        std::os::unix::fs::symlink(&token, &link).unwrap();
        reserve(&token, Some(Owner::Azure));
        for path in [&token, &link] {
            let r = SecretRef::file(path);
            // Any other reference (a `webhook` store's header, a Vault token) is refused.
            let err = r
                .validate("provider.webhook.headers.x")
                .unwrap_err()
                .to_string();
            assert!(err.contains("AZURE_FEDERATED_TOKEN_FILE"), "{err}");
            assert!(r.read().unwrap_err().detail().contains("refused to read"));
            assert!(validate_file(path, "provider.vault.auth.jwt.tokenFile", None).is_err());
            assert!(
                validate_file(path, "provider.gcp.serviceAccountKeyFile", Some(Owner::Gcp))
                    .is_err()
            );
            // Its owner's store reads it.
            assert!(r.validate_for("x", Some(Owner::Azure)).is_ok());
            assert!(validate_file(path, "x", Some(Owner::Azure)).is_ok());
            assert_eq!(
                r.read_for(Some(Owner::Azure)).unwrap().expose_secret(),
                "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"
            );
        }
        // Reserved for everyone stays so, whichever comes first.
        reserve(&token, None);
        reserve(&token, Some(Owner::Azure));
        assert!(
            SecretRef::file(&token)
                .read_for(Some(Owner::Azure))
                .is_err()
        );
        let both = dir.path().join("both");
        reserve(&both, Some(Owner::Azure));
        reserve(&both, Some(Owner::Gcp));
        assert!(validate_file(&both, "x", Some(Owner::Azure)).is_err());
        assert!(validate_file(&both, "x", Some(Owner::Gcp)).is_err());
        assert!(validate_file(Path::new(""), "x", None).is_err());
    }

    #[test]
    fn the_federations_own_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("lease-keys");
        std::fs::write(&keys, "k1=c2VjcmV0\n").unwrap();
        let link = dir.path().join("innocent");
        std::os::unix::fs::symlink(&keys, &link).unwrap();
        let dotted = dir.path().join("sub/../lease-keys");
        let environ = dir.path().join("env");
        std::os::unix::fs::symlink("/proc/self/environ", &environ).unwrap();
        // Before the file is reserved, it reads like any other.
        assert!(SecretRef::file(&link).read().is_ok());
        reserve_file(&keys);
        for r in [
            SecretRef::env("ESI_LEASE_KEYS"),
            SecretRef::env("ESI_ISSUER_KEYS"),
            SecretRef::env("AWS_SECRET_ACCESS_KEY"),
            SecretRef::env("AWS_SESSION_TOKEN"),
            SecretRef::env("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
            SecretRef::env("IDENTITY_HEADER"),
            SecretRef::file(&keys),
            SecretRef::file(&link),
            SecretRef::file(&dotted),
            SecretRef::file("/proc/self/environ"),
            SecretRef::file("/proc/1/../self/environ"),
            SecretRef::file(&environ),
        ] {
            let err = r.validate("spec.token").unwrap_err().to_string();
            assert!(err.contains("spec.token."), "{err}");
            let err = r.read().unwrap_err();
            assert!(err.detail().contains("refused to read"), "{}", err.detail());
            assert!(!err.to_string().contains("c2VjcmV0"));
        }
        assert!(SecretRef::env("VAULT_TOKEN").validate("x").is_ok());
        assert!(
            SecretRef::file(dir.path().join("other"))
                .validate("x")
                .is_ok()
        );
    }

    #[test]
    fn a_reserved_file_is_refused_by_any_name_that_reaches_it() {
        // A Kubernetes volume: `token` -> `..data/token`, `..data` -> the current timestamped
        // directory, swapped on every update.
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (dir.path().join("..2026_01"), dir.path().join("..2026_02"));
        for d in [&first, &second] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("token"), "eyJ.volume.token").unwrap();
        }
        let data = dir.path().join("..data");
        std::os::unix::fs::symlink(&first, &data).unwrap();
        let token = dir.path().join("token");
        std::os::unix::fs::symlink("..data/token", &token).unwrap();
        reserve_file(&token);
        // The kubelet's update: a new `..data` renamed over the old one.
        let next = dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&second, &next).unwrap();
        std::fs::rename(&next, &data).unwrap();
        let hard = dir.path().join("hard");
        std::fs::hard_link(second.join("token"), &hard).unwrap();
        for other in [data.join("token"), second.join("token"), hard] {
            let err = SecretRef::file(&other)
                .validate("x")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("federation's own"),
                "{}: {err}",
                other.display()
            );
            assert!(SecretRef::file(&other).read().is_err());
        }
        // The target recorded at start-up stays refused (harmless: the kubelet removes it).
        assert!(SecretRef::file(first.join("token")).read().is_err());
        // Another file of the volume is not the reserved one.
        std::fs::write(second.join("other"), "x").unwrap();
        assert!(SecretRef::file(data.join("other")).read().is_ok());
    }

    #[test]
    fn the_own_service_account_token_is_read_by_kubernetes_logins_only() {
        reserve_own_credential_files();
        let token = SecretRef::file(OWN_SERVICE_ACCOUNT_TOKEN);
        let err = token.validate("headers.x").unwrap_err().to_string();
        assert!(err.contains("own Kubernetes ServiceAccount token"), "{err}");
        // Reached through the volume's `..data` link it is the same file (by name here: the
        // path does not exist on a test machine; the inode check is the test above's).
        assert!(
            token
                .validate_for("auth.token", Some(Owner::Kubernetes))
                .is_ok()
        );
        assert!(token.validate_for("x", Some(Owner::Azure)).is_err());
        assert!(
            validate_file(
                Path::new(OWN_SERVICE_ACCOUNT_TOKEN),
                "tokenFile",
                Some(Owner::Kubernetes)
            )
            .is_ok()
        );
    }

    #[test]
    fn requires_exactly_one_source() {
        let both = SecretRef {
            env: Some("A".into()),
            file: Some("/b".into()),
        };
        assert!(both.validate("x").is_err());
        assert!(
            SecretRef {
                env: None,
                file: None
            }
            .validate("x")
            .is_err()
        );
        assert!(SecretRef::env("A").validate("x").is_ok());
        let err: Result<SecretRef, _> =
            serde_json::from_value(serde_json::json!({"env": "A", "value": "inline"}));
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("unknown field `value`")
        );
    }
}
