//! The esi mutating admission webhook.
//!
//! Pods labelled `esi.dev/inject: "true"` are sent here by the API server on CREATE. The
//! webhook reads their `esi.dev/` annotations (the contract lives in [`esi_api::inject`]) and
//! answers with a JSON patch that adds the `esi-cli` init container (and optionally the refresh
//! sidecar), a memory-backed volume, a projected ServiceAccount token for the federation, and
//! wraps the chosen containers' commands with `esi-cli exec --`; or with a denial that names the
//! annotation at fault.
//!
//! - [`mutate`]: the pure decision (Pod + annotations + config → skip, patch or denial);
//! - [`pod`]: the parts of a Pod (and of its `AdmissionReview` request) the webhook reads;
//! - [`review`]: `AdmissionReview` v1 parsing and the response wire format;
//! - [`server`]: the axum router, metrics, rustls and certificate reload;
//! - [`service_account`]: the Pod's ServiceAccount annotations as defaults, read through the
//!   Kubernetes API with a timeout and a TTL cache (optional);
//! - [`entrypoint`]: the entrypoint of a container without `command`, read from its image's
//!   configuration in the registry (optional);
//! - [`config`]: the injection policy file;
//! - [`inject`]: the same injection applied to manifests offline (`esi-webhook inject`).

pub mod config;
pub mod entrypoint;
pub mod inject;
pub mod mutate;
pub mod patch;
pub mod pod;
pub mod review;
pub mod server;
pub mod service_account;

pub use config::WebhookConfig;

/// Locks `m`, a poisoned lock taken as is: the caches behind the webhook's locks hold plain
/// data, consistent at every step, so a panic elsewhere leaves nothing half-written.
pub(crate) fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
pub use server::{AppState, router};
