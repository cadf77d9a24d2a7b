use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The normalized credential envelope every generator returns, whatever the backend.
///
/// `Debug` prints the keys of `data` but never their values, and never the lease.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Envelope {
    /// The credential: a flat map of string keys to string values (`username`, `password`,
    /// `AWS_ACCESS_KEY_ID`, ...). Keys depend on the generator and are documented with it.
    pub data: BTreeMap<String, String>,
    /// When the federation issued the credential.
    pub issued_at: jiff::Timestamp,
    /// When the credential stops working, as reported by the backend; absent when the backend
    /// gives no expiry (a password, a UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<jiff::Timestamp>,
    /// Whether the backend allows renewing the credential's lease.
    pub renewable: bool,
    /// Opaque sealed handle naming the backend lease and its subject; present when the
    /// credential can be revoked with `POST /v1/revoke`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("renewable", &self.renewable)
            .field("lease", &self.lease.as_ref().map(|_| "<sealed>"))
            .finish()
    }
}

/// Body of `POST /v1/revoke`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevokeRequest {
    /// The `lease` of an [`Envelope`] issued to the same subject.
    pub lease: String,
}

impl fmt::Debug for RevokeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevokeRequest")
            .field("lease", &"<sealed>")
            .finish()
    }
}

/// Answer of `POST /v1/revoke`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevokeResponse {
    /// `true` when the backend revoked something; `false` when the generator has nothing to
    /// revoke (the call is still a success, so clients can revoke unconditionally).
    pub revoked: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_values_or_lease() {
        let env = Envelope {
            data: BTreeMap::from([("password".to_owned(), "hunter2-secret".to_owned())]),
            issued_at: jiff::Timestamp::UNIX_EPOCH,
            expires_at: None,
            renewable: false,
            lease: Some("sealed-lease-value".to_owned()),
        };
        let rendered = format!("{env:?}");
        assert!(rendered.contains("password"));
        assert!(!rendered.contains("hunter2-secret"));
        assert!(!rendered.contains("sealed-lease-value"));
    }

    #[test]
    fn envelope_wire_format_is_camel_case() {
        let env = Envelope {
            data: BTreeMap::new(),
            issued_at: jiff::Timestamp::UNIX_EPOCH,
            expires_at: Some(jiff::Timestamp::UNIX_EPOCH),
            renewable: true,
            lease: None,
        };
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(json["issuedAt"], "1970-01-01T00:00:00Z");
        assert_eq!(json["expiresAt"], "1970-01-01T00:00:00Z");
        assert_eq!(json["renewable"], true);
        assert!(json.get("lease").is_none());
    }
}
