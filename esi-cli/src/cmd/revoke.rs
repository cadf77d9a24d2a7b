//! `esi-cli revoke`: revokes every lease this Pod obtained (recorded in the state directory),
//! for a `preStop` hook, the refresher's exit, or a final step. Idempotent: revoked leases are
//! marked, expired ones need nothing, and a second run has nothing left to do.

use std::collections::HashSet;
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
/// Works from snapshots of the records and marks each lease by its handle under the lock
/// ([`Layout::mark_revoked`]), so the lock is never held across a revocation request and a
/// refresher recording a lease meanwhile keeps its record. Such a lease is revoked too: once a
/// snapshot is done, the records are read again, until one holds no unrevoked lease this run
/// has not tried. That ends: every further round needs a lease minted meanwhile, and a
/// refresher mints only as credentials near their expiry.
pub async fn revoke_all(
    layout: &Layout,
    spec: &InjectionSpec,
    client: &Federation,
    token: &Token,
    deadline: Instant,
) -> anyhow::Result<()> {
    let (mut revoked, mut expired, mut failed) = (0usize, 0usize, Vec::new());
    let mut tried = HashSet::new();
    loop {
        let leases = layout.load_leases()?;
        let now = jiff::Timestamp::now();
        let todo: Vec<_> = leases
            .leases
            .into_iter()
            .filter(|l| !l.revoked && tried.insert(l.lease.clone()))
            .collect();
        if todo.is_empty() {
            break;
        }
        for rec in todo {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::{Read as _, Write as _};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use esi_api::Envelope;

    use super::*;
    use crate::client::ClientConfig;

    fn envelope(lease: &str) -> Envelope {
        let now = jiff::Timestamp::now();
        Envelope {
            data: BTreeMap::new(),
            issued_at: now,
            expires_at: Some(now + jiff::SignedDuration::from_secs(600)),
            renewable: false,
            lease: Some(lease.to_owned()),
        }
    }

    /// A loopback federation whose `POST /v1/revoke` answers `revoked: true`, records each
    /// lease it was asked for, and runs `during` on the first request (while the revoker waits
    /// for the answer).
    fn federation(during: impl FnOnce() + Send + 'static) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = asked.clone();
        std::thread::spawn(move || {
            let mut during = Some(during);
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                // Head and the small JSON body: read until the body's closing brace.
                while !got.ends_with(b"}") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&got).into_owned();
                let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
                let req: esi_api::RevokeRequest = serde_json::from_str(body).unwrap();
                seen.lock().unwrap().push(req.lease);
                if let Some(f) = during.take() {
                    f();
                }
                let answer = br#"{"revoked":true}"#;
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        answer.len()
                    )
                    .as_bytes(),
                );
                let _ = conn.write_all(answer);
            }
        });
        (url, asked)
    }

    #[tokio::test]
    async fn a_lease_recorded_while_revoking_is_revoked_too() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("volume"));
        layout.ensure_state_dir().unwrap();
        let spec = InjectionSpec::from_json(
            r#"{"version":1,"federationUrl":"http://x","tokenPath":"/t","generators":{},"containers":{}}"#,
        )
        .unwrap();
        layout
            .record_leases(&spec, &[("a".into(), &envelope("first"))])
            .unwrap();
        // A refresher records a fresh lease while the first one is being revoked.
        let (url, asked) = federation({
            let (layout, spec) = (layout.clone(), spec.clone());
            move || {
                layout
                    .record_leases(&spec, &[("a".into(), &envelope("minted-meanwhile"))])
                    .unwrap();
            }
        });
        let client = Federation::new(&ClientConfig {
            url,
            ca_pem: None,
            allow_http: true,
            attempt_timeout: Duration::from_secs(5),
        })
        .unwrap();
        let token_path = dir.path().join("token");
        std::fs::write(&token_path, "t").unwrap();
        let token = Token::read(&token_path).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);

        revoke_all(&layout, &spec, &client, &token, deadline)
            .await
            .unwrap();

        assert_eq!(*asked.lock().unwrap(), ["first", "minted-meanwhile"]);
        let left: Vec<_> = layout
            .load_leases()
            .unwrap()
            .leases
            .into_iter()
            .filter(|l| !l.revoked)
            .map(|l| l.lease)
            .collect();
        assert!(left.is_empty(), "not revoked: {left:?}");
        // Nothing left to do: a second run asks for nothing.
        revoke_all(&layout, &spec, &client, &token, deadline)
            .await
            .unwrap();
        assert_eq!(asked.lock().unwrap().len(), 2);
    }
}
