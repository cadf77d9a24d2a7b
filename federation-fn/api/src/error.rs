//! The one error shape of the federation API and its fixed set of codes.
//!
//! The code is decided once, where the failure is classified; it drives the HTTP status, the
//! metric label and the client's retry decision. Messages are written for the caller and never
//! carry internal error text or secrets.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Every failure the federation reports, as a stable machine-readable code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request is malformed (bad JSON, unknown field, bad path segment).
    BadRequest,
    /// No bearer token was sent.
    MissingToken,
    /// The token is malformed, oversized, badly signed or otherwise unacceptable.
    InvalidToken,
    /// The token's `exp` has passed (beyond the leeway).
    TokenExpired,
    /// The token's `nbf`/`iat` lies in the future (beyond the leeway).
    TokenNotYetValid,
    /// No registered cluster has the token's issuer.
    UnknownIssuer,
    /// The token's audience is not one the cluster accepts.
    AudienceMismatch,
    /// The token is valid but no Authorization allows this subject to use this generator.
    PolicyDenied,
    /// The generator does not exist.
    GeneratorNotFound,
    /// The lease is malformed, sealed under an unknown key, or not the caller's.
    InvalidLease,
    /// The request body did not arrive within the server's read timeout.
    RequestTimeout,
    /// The body exceeds the size limit.
    PayloadTooLarge,
    /// The subject exceeded its rate limit.
    RateLimited,
    /// The backend (or the issuer's JWKS endpoint) could not be reached in time.
    BackendUnavailable,
    /// The backend refused the request (permission denied, role missing).
    BackendRejected,
    /// The federation has no configuration loaded yet.
    NotReady,
    /// The route does not exist.
    NotFound,
    /// The method is not allowed on this route.
    MethodNotAllowed,
    /// An unexpected failure inside the federation; details are in its logs.
    Internal,
}

impl ErrorCode {
    /// Every code, for tests and documentation.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadRequest,
        ErrorCode::MissingToken,
        ErrorCode::InvalidToken,
        ErrorCode::TokenExpired,
        ErrorCode::TokenNotYetValid,
        ErrorCode::UnknownIssuer,
        ErrorCode::AudienceMismatch,
        ErrorCode::PolicyDenied,
        ErrorCode::GeneratorNotFound,
        ErrorCode::InvalidLease,
        ErrorCode::RequestTimeout,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::BackendUnavailable,
        ErrorCode::BackendRejected,
        ErrorCode::NotReady,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Internal,
    ];

    /// The code as it appears on the wire and in metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::MissingToken => "missing_token",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenNotYetValid => "token_not_yet_valid",
            ErrorCode::UnknownIssuer => "unknown_issuer",
            ErrorCode::AudienceMismatch => "audience_mismatch",
            ErrorCode::PolicyDenied => "policy_denied",
            ErrorCode::GeneratorNotFound => "generator_not_found",
            ErrorCode::InvalidLease => "invalid_lease",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::BackendUnavailable => "backend_unavailable",
            ErrorCode::BackendRejected => "backend_rejected",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status the federation answers with.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidLease => 400,
            ErrorCode::MissingToken
            | ErrorCode::InvalidToken
            | ErrorCode::TokenExpired
            | ErrorCode::TokenNotYetValid
            | ErrorCode::UnknownIssuer
            | ErrorCode::AudienceMismatch => 401,
            ErrorCode::PolicyDenied => 403,
            ErrorCode::GeneratorNotFound | ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::BackendRejected => 502,
            ErrorCode::BackendUnavailable | ErrorCode::NotReady => 503,
        }
    }

    /// Whether a client may retry the same request later and hope for a different answer.
    pub const fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited | ErrorCode::BackendUnavailable | ErrorCode::NotReady
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every error: `{"error": {"code", "message", "requestId"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorDetail {
    /// The stable code.
    pub code: ErrorCode,
    /// A human-readable explanation meant for the caller: which check failed, never a secret
    /// and never internal error text.
    pub message: String,
    /// The request id, to find the matching audit and log lines.
    pub request_id: String,
    /// Seconds after which a retry makes sense, for retryable codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_code_matches_as_str_for_every_code() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, code.as_str(), "{code:?}");
            let back: ErrorCode = serde_json::from_value(json).unwrap();
            assert_eq!(back, *code);
        }
    }

    #[test]
    fn statuses_are_client_or_server_errors() {
        for code in ErrorCode::ALL {
            let status = code.http_status();
            assert!((400..600).contains(&status), "{code:?} -> {status}");
            if code.retryable() {
                assert!(
                    status == 429 || status >= 500,
                    "{code:?} retryable but {status}"
                );
            }
        }
    }
}
