//! The Pod's projected ServiceAccount token: read from its file, kept secret, and decoded
//! *without* verification for diagnostics and expiry checks (the federation is the one that
//! verifies it).

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;

/// A bearer token read from a file. `Debug` never shows it.
pub struct Token {
    secret: SecretString,
    /// Where it was read from.
    pub path: PathBuf,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Reads the token file (re-read on every call site that needs a fresh token: Kubernetes
    /// rotates projected tokens in place).
    pub fn read(path: &Path) -> anyhow::Result<Token> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the ServiceAccount token at {}: is the projected token volume mounted in this container?",
                path.display()
            )
        })?;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            bail!("the ServiceAccount token file {} is empty", path.display());
        }
        Ok(Token {
            secret: SecretString::from(trimmed.to_owned()),
            path: path.to_owned(),
        })
    }

    /// The token for the `Authorization` header.
    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }

    /// The token's claims, decoded without verifying the signature.
    pub fn claims(&self) -> anyhow::Result<Claims> {
        Claims::decode(self.expose())
    }
}

/// What the token says about itself (unverified). Never holds the signature.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    /// JOSE `alg` of the header.
    pub alg: String,
    /// `kid` of the header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `iss`.
    pub issuer: Option<String>,
    /// `aud`, always as a list.
    pub audiences: Vec<String>,
    /// `sub`.
    pub subject: Option<String>,
    /// `kubernetes.io.namespace`.
    pub namespace: Option<String>,
    /// `kubernetes.io.serviceaccount.name`.
    pub service_account: Option<String>,
    /// `kubernetes.io.pod.name`.
    pub pod: Option<String>,
    /// `iat`.
    pub issued_at: Option<jiff::Timestamp>,
    /// `nbf`.
    pub not_before: Option<jiff::Timestamp>,
    /// `exp`.
    pub expires_at: Option<jiff::Timestamp>,
}

impl Claims {
    /// Decodes a compact JWS's header and claims.
    pub fn decode(jwt: &str) -> anyhow::Result<Claims> {
        let mut parts = jwt.split('.');
        let (Some(h), Some(c), Some(_sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            bail!("the token is not a JWT (expected three dot-separated parts)");
        };
        let part = |b64: &str, what: &str| -> anyhow::Result<serde_json::Value> {
            let bytes = URL_SAFE_NO_PAD
                .decode(b64.trim_end_matches('='))
                .with_context(|| format!("the token's {what} is not base64url"))?;
            serde_json::from_slice(&bytes)
                .with_context(|| format!("the token's {what} is not JSON"))
        };
        let header = part(h, "header")?;
        let claims = part(c, "claims")?;
        let s = |v: &serde_json::Value| v.as_str().map(str::to_owned);
        let ts = |v: &serde_json::Value| {
            v.as_i64()
                .and_then(|n| jiff::Timestamp::from_second(n).ok())
        };
        let audiences = match &claims["aud"] {
            serde_json::Value::String(a) => vec![a.clone()],
            serde_json::Value::Array(list) => list.iter().filter_map(s).collect(),
            _ => Vec::new(),
        };
        let kube = &claims["kubernetes.io"];
        Ok(Claims {
            alg: s(&header["alg"]).unwrap_or_default(),
            kid: s(&header["kid"]),
            issuer: s(&claims["iss"]),
            audiences,
            subject: s(&claims["sub"]),
            namespace: s(&kube["namespace"]),
            service_account: s(&kube["serviceaccount"]["name"]),
            pod: s(&kube["pod"]["name"]),
            issued_at: ts(&claims["iat"]),
            not_before: ts(&claims["nbf"]),
            expires_at: ts(&claims["exp"]),
        })
    }

    /// Whether `exp` has passed.
    pub fn expired(&self, now: jiff::Timestamp) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(header: &str, claims: &str) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    #[test]
    fn decodes_kubernetes_claims_without_verifying() {
        let t = jwt(
            r#"{"alg":"RS256","kid":"k1"}"#,
            r#"{"iss":"https://i","aud":["esi","x"],"sub":"system:serviceaccount:ns:sa","exp":2000000000,"iat":1,"kubernetes.io":{"namespace":"ns","serviceaccount":{"name":"sa"},"pod":{"name":"p"}}}"#,
        );
        let c = Claims::decode(&t).unwrap();
        assert_eq!(c.alg, "RS256");
        assert_eq!(c.issuer.as_deref(), Some("https://i"));
        assert_eq!(c.audiences, ["esi", "x"]);
        assert_eq!(c.namespace.as_deref(), Some("ns"));
        assert_eq!(c.service_account.as_deref(), Some("sa"));
        assert_eq!(c.pod.as_deref(), Some("p"));
        assert!(!c.expired(jiff::Timestamp::now()));
        let single =
            Claims::decode(&jwt(r#"{"alg":"ES256"}"#, r#"{"aud":"esi","exp":5}"#)).unwrap();
        assert_eq!(single.audiences, ["esi"]);
        assert!(single.expired(jiff::Timestamp::now()));
    }

    #[test]
    fn rejects_what_is_not_a_jwt() {
        assert!(Claims::decode("abc").is_err());
        assert!(Claims::decode("a.b.c.d").is_err());
        assert!(Claims::decode("!!.e30.x").is_err());
    }

    #[test]
    fn debug_hides_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "secret-token-value\n").unwrap();
        let t = Token::read(&p).unwrap();
        assert_eq!(t.expose(), "secret-token-value");
        assert!(!format!("{t:?}").contains("secret-token-value"));
    }
}
