//! `VaultDynamicSecret`: calls any Vault/OpenBao path that mints a secret (database
//! credentials, PKI certificates, tokens, ...) with External Secrets Operator's fields
//! (`path`, `method`, `parameters`, `resultType`, `retrySettings`), and revokes it later.
//!
//! - `resultType: Data` (default) returns the response's `data`; `Auth` returns its `auth`
//!   block (for `auth/token/create` and login paths).
//!   An answer without that part is refused, after revoking whatever it minted anyway (a
//!   lease, a token, a certificate): `auth/token/create` read as `Data` still creates a token.
//!   What an answer mints beside the part asked for (a token beside the `data`, a lease beside
//!   the `auth`) is handed to nobody, so it is revoked at once.
//! - `retrySettings` never risks a second mint whose first cannot be revoked: every call is
//!   taken to mint (`GET database/creds/...` does), so it is sent again only when it never
//!   reached Vault (connection refused) or Vault answered 412, 429, 500, 502 or 503. A timeout
//!   or reset after sending, or a gateway's 504, ends the attempts. A success whose body cannot
//!   be read whole (cut short, oversized, odd shape) has its `lease_id`, `auth.accessor` or PKI
//!   serial pulled from what arrived and revoked; only then is the call sent again.
//! - `expiresAt` comes from the response's `lease_duration` (or, for a PKI certificate
//!   without a lease, its `expiration`); never guessed.
//! - Revocation: a lease id goes to `sys/leases/revoke`; an `Auth` result is revoked by its
//!   accessor (`auth/token/revoke-accessor`); a PKI certificate issued without a lease is
//!   revoked by serial number (`<mount>/revoke`).
//! - The Authorization's `maxTTL` holds: a revocable credential that would outlive it is
//!   renewed with `increment = maxTTL` (Vault sets a renewed lease's TTL to the increment from
//!   now, and the database plugin moves the user's `VALID UNTIL` with it). One that cannot be
//!   shortened that way (not renewable, a PKI certificate, no expiry) is revoked at once and the
//!   request refused with a message naming both lifetimes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::store::{SecretStoreRef, StoreProvider};
use crate::vault::{Fate, VaultConn, value_string};
use crate::{BackendError, Context, Credential, Generate, LeaseHandle, SecretStoreSpec, SpecError};

/// `spec` of a `VaultDynamicSecret` generator.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "esi.dev",
    version = "v1alpha1",
    kind = "VaultDynamicSecret",
    namespaced,
    status = "crate::status::ResourceStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VaultDynamicSecretSpec {
    /// The `vault` SecretStore to call, in the generator's namespace.
    pub secret_store_ref: SecretStoreRef,
    /// The Vault path, without `/v1/`: `database/creds/readonly`, `pki/issue/web`.
    pub path: String,
    /// HTTP method (default `GET`; `POST`/`PUT` send `parameters` as the JSON body).
    #[serde(default)]
    pub method: VaultMethod,
    /// Parameters of the call: the JSON body, or the query string for `GET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<BTreeMap<String, serde_json::Value>>")]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
    /// Which part of the response to return: `Data` (default) or `Auth`.
    #[serde(default)]
    pub result_type: ResultType,
    /// Retries when the call certainly minted nothing: Vault unreachable, or answering 412,
    /// 429, 500, 502 or 503 (never on a refusal, a timeout or a 504, after which Vault may
    /// have minted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_settings: Option<RetrySettings>,
}

/// HTTP method of a `VaultDynamicSecret` call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum VaultMethod {
    /// `GET` (the default; `database/creds/<role>`).
    #[default]
    Get,
    /// `POST` (`pki/issue/<role>`).
    Post,
    /// `PUT`.
    Put,
}

/// Which part of Vault's response becomes the credential.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ResultType {
    /// The response's `data`.
    #[default]
    Data,
    /// The response's `auth` (a token).
    Auth,
}

/// Bounded retries for transient failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrySettings {
    /// Retries after the first attempt (at most 5).
    pub max_retries: u32,
    /// Pause between attempts (default `1s`, at most `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<HumanDuration>,
}

impl VaultDynamicSecretSpec {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        let path = self.path.trim_matches('/');
        if path.is_empty()
            || path
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(SpecError::field(
                "path",
                format!(
                    "{:?} is not a Vault path like database/creds/role",
                    self.path
                ),
            ));
        }
        if path.starts_with("v1/") {
            return Err(SpecError::field("path", "leave out the /v1/ prefix"));
        }
        if let Some(r) = self.retry_settings {
            if r.max_retries > 5 {
                return Err(SpecError::field(
                    "retrySettings.maxRetries",
                    "must be at most 5",
                ));
            }
            if r.retry_interval
                .is_some_and(|i| i.get() > Duration::from_secs(10))
            {
                return Err(SpecError::field(
                    "retrySettings.retryInterval",
                    "must be at most 10s",
                ));
            }
        }
        Ok(())
    }
}

/// What `revoke` needs, sealed into the envelope by the federation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) enum VaultLease {
    /// A lease id for `sys/leases/revoke`.
    LeaseId(String),
    /// A token accessor for `auth/token/revoke-accessor`.
    Accessor(String),
    /// A PKI certificate issued without a lease.
    PkiSerial {
        /// The PKI mount.
        mount: String,
        /// The certificate's serial number.
        serial: String,
    },
}

impl VaultLease {
    pub(crate) fn handle(&self) -> LeaseHandle {
        LeaseHandle(serde_json::json!({ "vault": self }))
    }

    pub(crate) fn from_handle(h: &LeaseHandle) -> Result<Self, BackendError> {
        h.0.get("vault")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .ok_or_else(|| {
                BackendError::Invalid("the lease was not issued by a Vault generator".to_owned())
            })
    }
}

/// The built `VaultDynamicSecret` generator.
#[derive(Debug)]
pub struct VaultDynamicSecretGenerator {
    spec: VaultDynamicSecretSpec,
    conn: Arc<VaultConn>,
}

impl VaultDynamicSecretGenerator {
    /// Builds the generator on its store's shared connection.
    pub fn new(
        spec: VaultDynamicSecretSpec,
        store: Option<&SecretStoreSpec>,
        shared: &mut crate::Shared,
    ) -> Result<Self, SpecError> {
        spec.validate()?;
        let provider =
            crate::store::require(store, &spec.secret_store_ref, "vault", |p| match p {
                StoreProvider::Vault(v) => Some(v),
                #[allow(unreachable_patterns)]
                _ => None,
            })?;
        Ok(VaultDynamicSecretGenerator {
            conn: shared
                .vault
                .get(provider, |p| VaultConn::new(p, &shared.issuer))?,
            spec,
        })
    }

    fn path(&self) -> &str {
        self.spec.path.trim_matches('/')
    }

    async fn call_with_retries(&self) -> Result<crate::vault::VaultResponse, BackendError> {
        let method = match self.spec.method {
            VaultMethod::Get => reqwest::Method::GET,
            VaultMethod::Post => reqwest::Method::POST,
            VaultMethod::Put => reqwest::Method::PUT,
        };
        let body = self.spec.parameters.clone().map(serde_json::Value::Object);
        let (retries, interval) = self.spec.retry_settings.map_or((0, Duration::ZERO), |r| {
            (
                r.max_retries,
                r.retry_interval.map_or(Duration::from_secs(1), |i| i.get()),
            )
        });
        let mut attempt = 0;
        loop {
            let failed = match self
                .conn
                .call_detailed(method.clone(), self.path(), body.as_ref())
                .await
            {
                Ok(resp) => return Ok(resp),
                Err(e) => e,
            };
            // Every call of this generator may mint (`GET database/creds/...` does): send it
            // again only when the first cannot have minted, or minted something now revoked.
            let (again, why_not) = match &failed.fate {
                Fate::NotSent => (matches!(failed.err, BackendError::Unavailable { .. }), ""),
                // Vault's own "not now": 500 (the engine failed), 502/503 (sealed, standby,
                // plugin down), 429 (rate limit), 412 (a standby not yet caught up). A
                // gateway's 504 says nothing about whether Vault minted behind it.
                Fate::Status(code) => (
                    matches!(code, 412 | 429 | 500 | 502 | 503),
                    if *code == 504 {
                        "; not retried: a gateway timeout does not say whether vault minted"
                    } else {
                        ""
                    },
                ),
                Fate::Lost => (
                    false,
                    "; not retried: vault may have minted before the answer was lost",
                ),
                Fate::Unreadable(found) => {
                    let minted = self.minted_in(
                        found.lease_id.as_deref().unwrap_or_default(),
                        found.accessor.as_deref(),
                        found.serial.as_deref(),
                    );
                    let revoked = self.revoke_minted(&minted).await;
                    match (minted.is_empty(), revoked) {
                        (false, true) => (true, ""),
                        (false, false) => (
                            false,
                            "; not retried: what vault minted could not be revoked",
                        ),
                        (true, _) => (
                            false,
                            "; not retried: nothing revocable found in the answer, vault may have minted",
                        ),
                    }
                }
            };
            if again && attempt < retries {
                attempt += 1;
                tracing::debug!(
                    path = self.path(),
                    attempt,
                    detail = failed.err.detail(),
                    "retrying a vault call"
                );
                tokio::time::sleep(interval).await;
                continue;
            }
            let mut err = failed.err;
            if attempt < retries
                && let BackendError::Unavailable { detail, .. }
                | BackendError::Rejected { detail, .. } = &mut err
            {
                detail.push_str(why_not);
            }
            return Err(err);
        }
    }
}

impl Generate for VaultDynamicSecretGenerator {
    async fn generate(&self, ctx: &Context<'_>) -> Result<Credential, BackendError> {
        let resp = self.call_with_retries().await?;
        let wanted = match self.spec.result_type {
            ResultType::Data => resp.data.is_some(),
            ResultType::Auth => resp.auth.is_some(),
        };
        if !wanted {
            return Err(self.refuse_without_secret(&resp).await);
        }
        self.revoke_undelivered(&resp).await;
        let cred = self.credential(resp)?;
        match ctx.max_ttl {
            Some(max) => self.hold_to(max, cred).await,
            None => Ok(cred),
        }
    }

    async fn revoke(&self, handle: &LeaseHandle) -> Result<bool, BackendError> {
        self.revoke_lease(handle).await
    }
}

/// Seconds from `now` to `t` (negative when past).
fn secs_until(now: jiff::Timestamp, t: jiff::Timestamp) -> i64 {
    t.as_second() - now.as_second()
}

impl VaultDynamicSecretGenerator {
    /// The credential in Vault's answer.
    fn credential(&self, resp: crate::vault::VaultResponse) -> Result<Credential, BackendError> {
        let now = jiff::Timestamp::now();
        let in_secs = |secs: u64| {
            now.checked_add(jiff::SignedDuration::from_secs(
                secs.min(i64::MAX as u64) as i64
            ))
            .ok()
        };
        let empty = || BackendError::Rejected {
            message: "vault returned no secret".to_owned(),
            detail: format!(
                "{}: response without {:?}",
                self.path(),
                self.spec.result_type
            ),
        };
        match self.spec.result_type {
            ResultType::Data => {
                let data = resp.data.ok_or_else(empty)?;
                let mut expires_at = (resp.lease_duration > 0)
                    .then(|| in_secs(resp.lease_duration))
                    .flatten();
                let mut lease =
                    (!resp.lease_id.is_empty()).then(|| VaultLease::LeaseId(resp.lease_id.clone()));
                // A PKI certificate issued by a role without `generate_lease`: no lease, but
                // a serial number to revoke and an `expiration` to report.
                if lease.is_none()
                    && let (Some(serial), Some(mount)) = (
                        data.get("serial_number").and_then(|v| v.as_str()),
                        pki_mount(self.path()),
                    )
                {
                    lease = Some(VaultLease::PkiSerial {
                        mount: mount.to_owned(),
                        serial: serial.to_owned(),
                    });
                    if expires_at.is_none() {
                        expires_at = data
                            .get("expiration")
                            .and_then(|v| v.as_i64())
                            .and_then(|t| jiff::Timestamp::from_second(t).ok());
                    }
                }
                Ok(Credential {
                    data: data
                        .iter()
                        .map(|(k, v)| (k.clone(), value_string(v)))
                        .collect(),
                    expires_at,
                    renewable: resp.renewable && !resp.lease_id.is_empty(),
                    lease: lease.map(|l| l.handle()),
                })
            }
            ResultType::Auth => {
                let auth = resp.auth.ok_or_else(empty)?;
                let duration = auth
                    .get("lease_duration")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0);
                let accessor = auth
                    .get("accessor")
                    .and_then(|v| v.as_str())
                    .filter(|a| !a.is_empty());
                Ok(Credential {
                    data: auth
                        .iter()
                        .map(|(k, v)| (k.clone(), value_string(v)))
                        .collect(),
                    expires_at: (duration > 0).then(|| in_secs(duration)).flatten(),
                    renewable: auth
                        .get("renewable")
                        .and_then(|v| v.as_bool())
                        .unwrap_or(false),
                    lease: accessor.map(|a| VaultLease::Accessor(a.to_owned()).handle()),
                })
            }
        }
    }

    /// Everything revocable that Vault's answer carries, whichever part `resultType` names:
    /// its lease, the token of its `auth` block, and a PKI certificate's serial when it has no
    /// lease.
    fn minted_in(
        &self,
        lease_id: &str,
        accessor: Option<&str>,
        serial: Option<&str>,
    ) -> Vec<VaultLease> {
        let mut minted = Vec::new();
        if !lease_id.is_empty() {
            minted.push(VaultLease::LeaseId(lease_id.to_owned()));
        }
        if let Some(a) = accessor.filter(|a| !a.is_empty()) {
            minted.push(VaultLease::Accessor(a.to_owned()));
        }
        if lease_id.is_empty()
            && let (Some(serial), Some(mount)) = (serial, pki_mount(self.path()))
        {
            minted.push(VaultLease::PkiSerial {
                mount: mount.to_owned(),
                serial: serial.to_owned(),
            });
        }
        minted
    }

    /// Revokes what an answer carried; whether all of it was revoked (true for nothing).
    async fn revoke_minted(&self, minted: &[VaultLease]) -> bool {
        let mut all = true;
        for lease in minted {
            if let Err(e) = self.revoke_owned(lease).await {
                all = false;
                tracing::error!(
                    path = self.path(),
                    detail = e.detail(),
                    "revoking a credential vault minted but the federation cannot hand out failed; it lives until Vault expires it"
                );
            }
        }
        all
    }

    /// Revokes what an answer minted besides the part `resultType` names, which nobody is
    /// handed: the token of an `auth` block beside the `data` asked for, or the lease (or PKI
    /// serial) of a `data` beside the `auth`. Vault leases belong to the token that asked (the
    /// federation's), not to a token minted alongside, so revoking that token takes nothing
    /// from what is handed out. A failure is logged: the credential lives to its TTL.
    async fn revoke_undelivered(&self, resp: &crate::vault::VaultResponse) {
        let undelivered = match self.spec.result_type {
            ResultType::Data => {
                let accessor = resp
                    .auth
                    .as_ref()
                    .and_then(|a| a.get("accessor"))
                    .and_then(|v| v.as_str());
                self.minted_in("", accessor, None)
            }
            ResultType::Auth => {
                let serial = resp
                    .data
                    .as_ref()
                    .and_then(|d| d.get("serial_number"))
                    .and_then(|v| v.as_str());
                self.minted_in(&resp.lease_id, None, serial)
            }
        };
        if !undelivered.is_empty() {
            tracing::info!(
                path = self.path(),
                result_type = ?self.spec.result_type,
                "vault's answer also minted what resultType does not hand out; revoking it"
            );
            self.revoke_minted(&undelivered).await;
        }
    }

    /// The refusal of an answer without the part `resultType` names, after revoking whatever
    /// it minted anyway (`auth/token/create` read as `Data` creates a token all the same).
    async fn refuse_without_secret(&self, resp: &crate::vault::VaultResponse) -> BackendError {
        let accessor = resp
            .auth
            .as_ref()
            .and_then(|a| a.get("accessor"))
            .and_then(|v| v.as_str());
        let serial = resp
            .data
            .as_ref()
            .and_then(|d| d.get("serial_number"))
            .and_then(|v| v.as_str());
        let minted = self.minted_in(&resp.lease_id, accessor, serial);
        let revoked = self.revoke_minted(&minted).await;
        let (wanted, hint) = match self.spec.result_type {
            ResultType::Data if resp.auth.is_some() => {
                ("data", " (it holds a token: set resultType: Auth)")
            }
            ResultType::Data => ("data", ""),
            ResultType::Auth if resp.data.is_some() => {
                ("auth", " (it holds data: set resultType: Data)")
            }
            ResultType::Auth => ("auth", ""),
        };
        let fate = match (minted.is_empty(), revoked) {
            (true, _) => "",
            (false, true) => "; what it minted was revoked",
            (false, false) => "; what it minted could not be revoked",
        };
        BackendError::Rejected {
            message: format!(
                "vault returned no secret: the answer from {} has no {wanted}{hint}{fate}",
                self.path()
            ),
            detail: format!(
                "{}: response without {:?}; revocable parts: {}, all revoked: {revoked}",
                self.path(),
                self.spec.result_type,
                minted.len()
            ),
        }
    }

    /// Holds `cred` to `max` (the Authorization's `maxTTL`): see the module documentation.
    async fn hold_to(&self, max: Duration, cred: Credential) -> Result<Credential, BackendError> {
        // A credential without a lease handle was not minted for this caller (a plain read):
        // there is nothing to shorten or revoke.
        let Some(handle) = cred.lease.clone() else {
            return Ok(cred);
        };
        let max_secs = i64::try_from(max.as_secs()).unwrap_or(i64::MAX);
        let now = jiff::Timestamp::now();
        // One second of slack for the clock ticking between Vault's answer and this check.
        let fits = |expires: Option<jiff::Timestamp>| {
            expires.is_some_and(|t| secs_until(now, t) <= max_secs.saturating_add(1))
        };
        if fits(cred.expires_at) {
            return Ok(cred);
        }
        // The lease's new length in seconds, or why it could not be renewed.
        let renewal: Result<u64, String> = match (VaultLease::from_handle(&handle)?, cred.renewable)
        {
            (VaultLease::LeaseId(id), true) => {
                let body = serde_json::json!({ "lease_id": id, "increment": max_secs });
                self.conn
                    .call(reqwest::Method::PUT, "sys/leases/renew", Some(&body))
                    .await
                    .map(|r| r.lease_duration)
                    .map_err(|e| e.detail().to_owned())
            }
            (VaultLease::Accessor(accessor), true) => {
                let body = serde_json::json!({ "accessor": accessor, "increment": max_secs });
                self.conn
                    .call(
                        reqwest::Method::POST,
                        "auth/token/renew-accessor",
                        Some(&body),
                    )
                    .await
                    .map(|r| {
                        r.auth
                            .and_then(|a| a.get("lease_duration").and_then(|v| v.as_u64()))
                            .unwrap_or(0)
                    })
                    .map_err(|e| e.detail().to_owned())
            }
            _ => Err("not renewable".to_owned()),
        };
        let renewed_until = match &renewal {
            Ok(secs) if *secs > 0 => now
                .checked_add(jiff::SignedDuration::from_secs(
                    i64::try_from(*secs).unwrap_or(i64::MAX),
                ))
                .ok(),
            _ => None,
        };
        if fits(renewed_until) {
            return Ok(Credential {
                expires_at: renewed_until,
                ..cred
            });
        }
        let human = |secs: i64| {
            humantime::format_duration(Duration::from_secs(secs.max(0).unsigned_abs())).to_string()
        };
        let lifetime = match cred.expires_at {
            Some(t) => human(secs_until(now, t)),
            None => "without an expiry".to_owned(),
        };
        // Nothing minted may outlive its Authorization: take it back before refusing.
        let revoked = self.revoke_lease(&handle).await;
        if let Err(e) = &revoked {
            tracing::error!(
                path = self.path(),
                detail = e.detail(),
                "revoking a credential that outlives the Authorization's maxTTL failed; it lives until Vault expires it"
            );
        }
        Err(BackendError::Rejected {
            message: format!(
                "the credential from {} would live {lifetime}, longer than the Authorization's maxTTL of {}, \
                 and Vault would not shorten it; it was revoked. Lower the Vault role's TTL to at most {}",
                self.path(),
                human(max_secs),
                human(max_secs)
            ),
            detail: format!(
                "{}: lease outlives maxTTL {max_secs}s; renewal to it: {}; revoked: {}",
                self.path(),
                match &renewal {
                    Ok(secs) => format!("granted {secs}s"),
                    Err(why) => why.clone(),
                },
                revoked.is_ok()
            ),
        })
    }

    /// Revokes a handle a caller presents, once it is known to be this generator's.
    async fn revoke_lease(&self, handle: &LeaseHandle) -> Result<bool, BackendError> {
        let lease = VaultLease::from_handle(handle)?;
        let ours = match &lease {
            // Lease ids start with the path that minted them: refuse to revoke another
            // generator's lease through this one.
            VaultLease::LeaseId(id) => id.starts_with(&format!("{}/", self.path())),
            VaultLease::Accessor(_) => self.spec.result_type == ResultType::Auth,
            VaultLease::PkiSerial { mount, .. } => pki_mount(self.path()) == Some(mount.as_str()),
        };
        if !ours {
            return Err(BackendError::Invalid(
                "the lease was not issued by this generator".to_owned(),
            ));
        }
        self.revoke_owned(&lease).await?;
        Ok(true)
    }

    /// Revokes `lease` in Vault, without asking whose it is.
    async fn revoke_owned(&self, lease: &VaultLease) -> Result<(), BackendError> {
        let (path, body) = match lease {
            VaultLease::LeaseId(id) => (
                "sys/leases/revoke".to_owned(),
                serde_json::json!({ "lease_id": id }),
            ),
            VaultLease::Accessor(accessor) => (
                "auth/token/revoke-accessor".to_owned(),
                serde_json::json!({ "accessor": accessor }),
            ),
            VaultLease::PkiSerial { mount, serial } => (
                format!("{mount}/revoke"),
                serde_json::json!({ "serial_number": serial }),
            ),
        };
        let method = match lease {
            VaultLease::LeaseId(_) => reqwest::Method::PUT,
            _ => reqwest::Method::POST,
        };
        self.conn.call(method, &path, Some(&body)).await?;
        Ok(())
    }
}

/// The mount of a PKI issue/sign path (`pki/issue/web` → `pki`).
fn pki_mount(path: &str) -> Option<&str> {
    let (mount, rest) = path
        .rsplit_once('/')
        .and_then(|(head, _role)| head.rsplit_once('/'))?;
    matches!(rest, "issue" | "sign").then_some(mount)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GeneratorKind, GeneratorSpec};

    fn spec_json() -> serde_json::Value {
        serde_json::json!({
            "secretStoreRef": {"name": "vault"},
            "path": "pki/issue/web",
            "method": "POST",
            "parameters": {"common_name": "a.example", "ttl": "1h"},
            "resultType": "Data",
            "retrySettings": {"maxRetries": 2, "retryInterval": "500ms"},
        })
    }

    #[test]
    fn round_trips_its_manifest() {
        let spec =
            GeneratorSpec::from_manifest(GeneratorKind::VaultDynamicSecret, spec_json()).unwrap();
        let GeneratorSpec::VaultDynamicSecret(s) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(s.method, VaultMethod::Post);
        assert_eq!(spec.store_ref(), Some("vault"));
        let back = serde_json::to_value(s).unwrap();
        assert_eq!(
            GeneratorSpec::from_manifest(GeneratorKind::VaultDynamicSecret, back).unwrap(),
            spec
        );
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let mut unknown = spec_json();
        unknown["ttl"] = "1h".into();
        let err =
            GeneratorSpec::from_manifest(GeneratorKind::VaultDynamicSecret, unknown).unwrap_err();
        assert!(err.to_string().contains("unknown field `ttl`"), "{err}");
        let mut nested = spec_json();
        nested["retrySettings"]["backoff"] = 1.into();
        assert!(GeneratorSpec::from_manifest(GeneratorKind::VaultDynamicSecret, nested).is_err());
        for (field, value, expect) in [
            ("path", serde_json::json!("../sys/raw"), "spec.path"),
            (
                "path",
                serde_json::json!("v1/database/creds/x"),
                "spec.path",
            ),
            ("method", serde_json::json!("DELETE"), "spec.method"),
            ("resultType", serde_json::json!("Lease"), "spec.resultType"),
        ] {
            let mut s = spec_json();
            s[field] = value;
            let err =
                GeneratorSpec::from_manifest(GeneratorKind::VaultDynamicSecret, s).unwrap_err();
            assert!(err.to_string().contains(expect), "{field}: {err}");
        }
    }

    #[test]
    fn needs_a_vault_store() {
        let GeneratorSpec::VaultDynamicSecret(s) =
            GeneratorSpec::from_manifest(GeneratorKind::VaultDynamicSecret, spec_json()).unwrap()
        else {
            unreachable!()
        };
        let err =
            VaultDynamicSecretGenerator::new(s, None, &mut crate::Shared::default()).unwrap_err();
        assert!(err.to_string().contains("secretStoreRef.name"), "{err}");
    }

    #[test]
    fn finds_pki_mounts() {
        assert_eq!(pki_mount("pki/issue/web"), Some("pki"));
        assert_eq!(pki_mount("team/pki/sign/web"), Some("team/pki"));
        assert_eq!(pki_mount("database/creds/ro"), None);
    }

    #[test]
    fn foreign_lease_handles_are_invalid() {
        let h = LeaseHandle(serde_json::json!({"aws": {"x": 1}}));
        assert!(matches!(
            VaultLease::from_handle(&h),
            Err(BackendError::Invalid(_))
        ));
        let l = VaultLease::LeaseId("database/creds/ro/abc".into());
        assert_eq!(VaultLease::from_handle(&l.handle()).unwrap(), l);
    }
}
