//! Where a store finds a secret: the federation's environment or a file, never the manifest.

use std::path::PathBuf;

use schemars::JsonSchema;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::{BackendError, SpecError};

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
    pub fn validate(&self, path: &str) -> Result<(), SpecError> {
        match (&self.env, &self.file) {
            (Some(e), None) if !e.is_empty() => Ok(()),
            (None, Some(f)) if !f.as_os_str().is_empty() => Ok(()),
            _ => Err(SpecError::field(path, "set exactly one of `env` or `file`")),
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
