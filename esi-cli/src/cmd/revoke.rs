//! `esi-cli revoke`: revokes every lease this Pod obtained (recorded in the state directory),
//! for a `preStop` hook, the refresher's exit, or a final step. Idempotent: revoked leases are
//! marked, expired ones need nothing, and a second run has nothing left to do.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail};
use esi_api::inject::InjectionSpec;

use crate::client::Federation;
use crate::state::Layout;
use crate::token::Token;
use crate::{Global, log};

/// Runs `revoke`.
pub async fn run(g: &Global) -> anyhow::Result<ExitCode> {
    let layout = Layout::new(&g.volume_dir);
    let spec = match g.spec_from_env()? {
        Some(s) => Some(s),
        None => layout.load_spec()?,
    };
    let pending = layout
        .load_leases()?
        .leases
        .iter()
        .filter(|l| !l.revoked)
        .count();
    if pending == 0 {
        log::info("nothing to revoke");
        return Ok(ExitCode::SUCCESS);
    }
    let spec = spec.ok_or_else(|| {
        anyhow!(
            "{pending} lease(s) to revoke but no injection spec (ESI_SPEC or {})",
            layout.spec().display()
        )
    })?;
    let client = g.spec_client(&spec)?;
    let token = Token::read(&g.token_path(Some(&spec)))?;
    revoke_all(&layout, &spec, &client, &token, Instant::now() + g.deadline).await?;
    Ok(ExitCode::SUCCESS)
}

/// Revokes every unrevoked lease, saving progress after each; fails if any could not be
/// revoked (after trying them all).
///
/// Works from a snapshot of the records and marks each lease by its handle under the lock
/// ([`Layout::mark_revoked`]), so the lock is never held across a revocation request and a
/// refresher recording a lease meanwhile keeps its record. A lease recorded after the
/// snapshot is not revoked by this run.
pub async fn revoke_all(
    layout: &Layout,
    spec: &InjectionSpec,
    client: &Federation,
    token: &Token,
    deadline: Instant,
) -> anyhow::Result<()> {
    let leases = layout.load_leases()?;
    let now = jiff::Timestamp::now();
    let (mut revoked, mut expired, mut failed) = (0usize, 0usize, Vec::new());
    for rec in leases.leases.iter().filter(|l| !l.revoked) {
        if rec.expires_at.is_some_and(|t| t <= now) {
            expired += 1;
        } else {
            match client.revoke(token, &rec.lease, deadline).await {
                Ok(_) => revoked += 1,
                Err(e) => {
                    failed.push(format!("`{}` ({}): {e}", rec.alias, rec.generator));
                    continue;
                }
            }
        }
        layout.mark_revoked(std::slice::from_ref(&rec.lease), &spec.owner)?;
    }
    log::info(&format!(
        "revoked {revoked} lease(s){}",
        if expired > 0 {
            format!(", {expired} had already expired")
        } else {
            String::new()
        }
    ));
    if let Some(first) = failed.first() {
        bail!("could not revoke {} lease(s); first: {first}", failed.len());
    }
    Ok(())
}
