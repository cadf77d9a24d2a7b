//! The dry-run authorization check behind `esi-cli doctor`: `POST /v1/authorize`.

use serde::{Deserialize, Serialize};

use crate::{ErrorCode, Identity};

/// Most generators one check may name.
pub const MAX_GENERATORS: usize = 64;

/// Body of `POST /v1/authorize`: the generators to check, as `namespace/kind/name`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizeRequest {
    /// `namespace/kind/name` of each generator (at most [`MAX_GENERATORS`]).
    pub generators: Vec<String>,
}

/// Answer of `POST /v1/authorize`: who the caller is and, per generator, whether a call would
/// be allowed. Nothing is minted and no rate limit is consumed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizeResponse {
    /// The verified identity.
    pub identity: Identity,
    /// One result per requested generator, in order.
    pub results: Vec<AuthorizeResult>,
}

/// The verdict for one generator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizeResult {
    /// The generator, as asked.
    pub generator: String,
    /// Whether a call would be allowed (and the generator exists).
    pub allowed: bool,
    /// Why not: `policy_denied`, `generator_not_found` or `bad_request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    /// Which check failed, or the Authorization that allows the call.
    pub message: String,
}
