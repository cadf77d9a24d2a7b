//! AWS Lambda mode: the same [`crate::router`] served through `lambda_http`, for Function URL
//! and API Gateway HTTP API (v2) events.
//!
//! The mode is chosen at run time from `AWS_LAMBDA_RUNTIME_API` (set by the Lambda service),
//! never from the build profile: `lambda_http::run` cannot work outside Lambda. Configuration
//! is loaded once per cold start from `ESI_CONFIG` (default [`DEFAULT_CONFIG`], where the
//! Terraform module's layer lands), keys of the registered issuers are fetched before the first
//! invocation, and lease keys come from the AWS Secrets Manager secret `ESI_LEASE_KEYS_SECRET`
//! (see [`crate::key_secret`]; what the Terraform module sets) or from `ESI_LEASE_KEYS`. As an
//! OIDC issuer (`ESI_ISSUER_URL`), its signing keys come from the secret
//! `ESI_ISSUER_KEYS_SECRET` or from `ESI_ISSUER_KEYS`; the Function URL or HTTP API hands every
//! path to the router, the discovery document's and the JWKS's included.

use axum::Router;

/// Where the configuration bundle is read from when `ESI_CONFIG` is not set.
pub const DEFAULT_CONFIG: &str = "/opt/esi";

/// Whether this process runs inside AWS Lambda.
pub fn is_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}

/// Serves `app` to the Lambda Runtime API until the environment is shut down.
pub async fn run(app: Router) -> Result<(), lambda_http::Error> {
    lambda_http::run(app).await
}
