//! Wire types and contract constants shared by the esi federation, `esi-cli` and the webhook.
//!
//! This crate is deliberately serde-only (no axum, no tokio) so that every component, including
//! the small `esi-cli` binary, can depend on it. Everything a client and the federation must
//! agree on lives here: routes, the credential [`Envelope`], the error shape and its fixed
//! [`ErrorCode`]s, and the verified [`Identity`].

pub mod authorize;
pub mod error;
pub mod identity;
pub mod inject;
pub mod json;
pub mod routes;

mod envelope;

pub use authorize::{AuthorizeRequest, AuthorizeResponse, AuthorizeResult};
pub use envelope::{Envelope, RevokeRequest, RevokeResponse};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use identity::{Identity, ObjectRef};

/// The API group of every esi resource (`apiVersion: esi.dev/v1alpha1`).
pub const API_GROUP: &str = "esi.dev";
/// The version of the esi resources this build understands.
pub const API_VERSION: &str = "v1alpha1";
/// `apiVersion` value of every esi resource.
pub const API_GROUP_VERSION: &str = "esi.dev/v1alpha1";

/// Header carrying the request id; taken from the client when well-formed, generated otherwise.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
