//! The federation's HTTP routes, as used by clients.

/// `POST` — issue a credential from a generator: `/v1/generators/{namespace}/{kind}/{name}`.
pub const GENERATE: &str = "/v1/generators/{namespace}/{kind}/{name}";
/// `POST` — revoke a lease obtained earlier, body [`crate::RevokeRequest`].
pub const REVOKE: &str = "/v1/revoke";
/// `POST` — dry-run authorization of generators for the bearer, [`crate::AuthorizeRequest`].
pub const AUTHORIZE: &str = "/v1/authorize";
/// `GET` — the verified identity of the bearer token, [`crate::Identity`].
pub const WHOAMI: &str = "/v1/whoami";
/// `POST` — ESE-compatible issuance returning the flat `{key: value}` map.
pub const ESE_GENERATE: &str = "/generators/{namespace}/{kind}/{name}";
/// `GET` — liveness.
pub const HEALTHZ: &str = "/healthz";
/// `GET` — readiness: configuration loaded.
pub const READYZ: &str = "/readyz";
/// `GET` — Prometheus metrics.
pub const METRICS: &str = "/metrics";

/// The path a client calls to issue from `namespace/kind/name`.
///
/// The three parts are resource names (RFC 1123 labels) or kind names and never need escaping
/// once validated; callers pass them through unchanged.
pub fn generate_path(namespace: &str, kind: &str, name: &str) -> String {
    format!("/v1/generators/{namespace}/{kind}/{name}")
}
