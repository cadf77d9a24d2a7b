//! `esi-cli init`: the init container.
//!
//! Copies this binary into the shared volume (so app containers can run `esi-cli exec`
//! without a shell), fetches every alias once and concurrently, renders the env bundles and
//! files, records the leases, writes the outputs, then a marker; when anything after issuing
//! fails, the fresh credentials are revoked. A second run in the same Pod (the init container
//! re-runs when the Pod sandbox is recreated) finds the marker and valid credentials and does
//! not mint new ones.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use esi_api::inject::{InjectionSpec, Owner};

use crate::state::Layout;
use crate::token::Token;
use crate::{Global, log, output, pod};

/// Runs `init`.
pub async fn run(g: &Global, no_copy: bool) -> anyhow::Result<ExitCode> {
    let spec = g.spec()?;
    let layout = Layout::new(&g.volume_dir);
    if !layout.root.is_dir() {
        bail!(
            "the shared volume {} does not exist (set {} to where it is mounted)",
            layout.root.display(),
            esi_api::inject::ENV_VOLUME_DIR
        );
    }
    layout.ensure_state_dir()?;
    if !no_copy {
        copy_self(&layout)?;
    }
    if layout.marker().exists() {
        match reusable(&layout, &spec) {
            Ok(()) => {
                log::info(
                    "credentials were already fetched for this Pod start; not fetching again",
                );
                return Ok(ExitCode::SUCCESS);
            }
            Err(why) => log::info(&format!("fetching again: {why}")),
        }
    }
    let client = g.spec_client(&spec)?;
    let token = Arc::new(Token::read(&g.token_path(Some(&spec)))?);
    // Before minting anything: a volume or ownership problem fails here, for free.
    layout.save_spec(&spec)?;
    let aliases: Vec<String> = spec.generators.keys().cloned().collect();
    let deadline = Instant::now() + g.deadline;
    let creds = pod::issue(&client, &token, &spec, &aliases, deadline).await?;
    // From here a failure would leak the credentials and the next init (a restart of the init
    // container) would mint new ones: render everything first, and revoke on any error.
    pod::or_revoke(&client, &token, &layout, &spec, &creds, || {
        let rendered = pod::render_outputs(&layout, &spec, &creds, None)?;
        // Leases first, so `revoke` finds them even if esi-cli dies during a later write.
        layout.record_leases(&spec, &pod::fresh_pairs(&creds))?;
        layout.save_credentials(&creds, &spec.owner)?;
        pod::write_rendered(&layout, &rendered, &spec.owner)?;
        output::write_atomic(
            &layout.marker(),
            jiff::Timestamp::now().to_string().as_bytes(),
            0o600,
            &Owner::default(),
        )
    })
    .await?;
    let bundles = spec.containers.values().filter(|c| c.wants_env()).count();
    log::info(&format!(
        "fetched {} credential(s) from {}; wrote {bundles} env bundle(s) and {} file(s)",
        creds.len(),
        client.base(),
        spec.files.len()
    ));
    Ok(ExitCode::SUCCESS)
}

/// Copies the running binary to `<volume>/bin/esi-cli` (mode 0555), atomically.
fn copy_self(layout: &Layout) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot locate the running esi-cli binary")?;
    let dest = layout.binary();
    if std::fs::canonicalize(&dest).ok() == std::fs::canonicalize(&exe).ok() && dest.exists() {
        return Ok(());
    }
    let mut src =
        std::fs::File::open(&exe).with_context(|| format!("cannot read {}", exe.display()))?;
    output::ensure_dir(dest.parent().unwrap_or(&layout.root), 0o755)?;
    // std::io::copy between files copies in the kernel (copy_file_range/sendfile).
    output::replace_with(&dest, 0o555, &Owner::default(), |f| {
        std::io::copy(&mut src, f).map(drop)
    })
    .with_context(|| format!("cannot copy esi-cli to {}", dest.display()))?;
    log::debug(&format!("copied esi-cli to {}", dest.display()));
    Ok(())
}

/// Why the credentials of an earlier run cannot be reused, if they cannot.
fn reusable(layout: &Layout, spec: &InjectionSpec) -> Result<(), String> {
    match layout.load_spec() {
        Ok(Some(old)) if &old == spec => {}
        Ok(_) => return Err("the injection spec changed".into()),
        Err(e) => return Err(format!("{e:#}")),
    }
    let creds = match layout.load_credentials() {
        Ok(Some(c)) => c,
        Ok(None) => return Err("no stored credentials".into()),
        Err(e) => return Err(format!("{e:#}")),
    };
    // Keep a margin so the app does not start with a credential about to die.
    let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(30);
    for alias in spec.generators.keys() {
        match creds.get(alias) {
            None => return Err(format!("no stored credential for `{alias}`")),
            Some(e) if e.expires_at.is_some_and(|t| t <= soon) => {
                return Err(format!("the credential of `{alias}` expires soon"));
            }
            Some(_) => {}
        }
    }
    for (name, c) in &spec.containers {
        if c.wants_env() && !layout.bundle(name).exists() {
            return Err(format!("the env bundle of container {name} is missing"));
        }
    }
    for f in &spec.files {
        if !layout.volume_file(&f.volume_path).exists() {
            return Err(format!("file {} is missing", f.name));
        }
    }
    Ok(())
}
