use esi_api::ErrorCode;

/// A generator spec that cannot be used; reported at load time with the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The manifest's kind is not a generator kind this build knows.
    #[error("unknown generator kind {kind:?} (known: {known})")]
    UnknownKind {
        /// The kind found.
        kind: String,
        /// The known kinds, comma separated.
        known: String,
    },
    /// The spec does not deserialize (unknown field, wrong type, missing field), or cannot be
    /// built; an empty `path` is the spec as a whole.
    #[error("spec{}{path}: {message}", if path.is_empty() { "" } else { "." })]
    Invalid {
        /// Dotted path of the field at fault inside `spec`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A kind that signs with the federation's own OIDC issuer, on a federation without one.
    #[error(
        "{kind} signs tokens with the federation's own OIDC issuer, and this federation has none: \
         start it with --issuer-url and issuer keys (see \"The federation as an OIDC issuer\" in \
         federation-fn/README.md), or remove this generator"
    )]
    NoIssuer {
        /// The generator kind.
        kind: &'static str,
    },
}

impl SpecError {
    /// A validation failure of one field.
    pub fn field(path: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A failure while minting or revoking. The message is safe to show the caller; backend detail
/// goes to the log through `detail`.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend could not be reached, or did not answer in time.
    #[error("backend unavailable: {message}")]
    Unavailable {
        /// Safe message.
        message: String,
        /// Internal detail for the log.
        detail: String,
    },
    /// The backend refused (permission denied, role missing, bad parameters).
    #[error("backend rejected the request: {message}")]
    Rejected {
        /// Safe message.
        message: String,
        /// Internal detail for the log.
        detail: String,
    },
    /// The generator cannot serve this request (for example a lease handle of another kind).
    #[error("{0}")]
    Invalid(String),
}

impl BackendError {
    /// The API code this failure maps to.
    pub fn code(&self) -> ErrorCode {
        match self {
            BackendError::Unavailable { .. } => ErrorCode::BackendUnavailable,
            BackendError::Rejected { .. } => ErrorCode::BackendRejected,
            BackendError::Invalid(_) => ErrorCode::InvalidLease,
        }
    }

    /// Internal detail for the log (never sent to the caller).
    pub fn detail(&self) -> &str {
        match self {
            BackendError::Unavailable { detail, .. } | BackendError::Rejected { detail, .. } => {
                detail
            }
            BackendError::Invalid(m) => m,
        }
    }
}

/// `e` and its sources, `: `-separated, for an error's log detail (an SDK's or reqwest's own
/// message often hides the cause: "error sending request" / "dispatch failure").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}
