//! `esi-cli exec --container NAME -- program args...`: replaces itself with the program, its
//! environment extended with the container's credentials.
//!
//! No shell is involved and the arguments are handed to `execve` exactly as received. The
//! child environment is built explicitly on the `Command` (the process's own environment is
//! never mutated). When the bundle is missing or expired, the credentials are fetched again if
//! this container can (a spec and a readable token); otherwise the failure says precisely why.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use esi_api::inject::ENV_SPEC;

use crate::state::{Bundle, Layout};
use crate::token::Token;
use crate::{Global, log, output, pod};

/// Runs `exec`; returns only on failure.
pub fn run(
    g: &Global,
    container: Option<String>,
    command: Vec<OsString>,
) -> anyhow::Result<ExitCode> {
    let layout = Layout::new(&g.volume_dir);
    let Some((program, args)) = command.split_first() else {
        bail!("no program given after `--`");
    };
    let name = match container {
        Some(c) => c,
        None => only_bundle(&layout)?,
    };
    let now = jiff::Timestamp::now();
    let path = layout.bundle(&name);
    let env = match layout.load_bundle(&name)? {
        Some(b) if b.expires_at.is_none_or(|t| t > now) => b.env,
        found => {
            let why = match &found {
                None => format!(
                    "no credentials for container {name}: {} does not exist (did the esi-init init container run and write to this volume?)",
                    path.display()
                ),
                Some(b) => format!(
                    "the credentials of container {name} expired at {}",
                    b.expires_at.map(|t| t.to_string()).unwrap_or_default()
                ),
            };
            refetch(g, &layout, &name).map_err(|e| anyhow!("{why}, and {e:#}"))?
        }
    };
    log::debug(&format!(
        "exec {:?} with {} credential variable(s) for container {name}",
        program,
        env.len()
    ));
    let err = std::process::Command::new(program)
        .args(args)
        .envs(&env)
        .exec();
    Err(anyhow!(
        "cannot execute {}: {err}",
        program.to_string_lossy()
    ))
}

/// The single bundle in the volume, for `exec` without `--container`.
fn only_bundle(layout: &Layout) -> anyhow::Result<String> {
    let dir = layout.root.join(esi_api::inject::ENV_DIR);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("no env bundles in {} (pass --container)", dir.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|n| !n.starts_with('.'))
                .map(str::to_owned)
        })
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no env bundle in {} (pass --container)", dir.display()),
        _ => bail!(
            "several env bundles in {} ({}); pass --container",
            dir.display(),
            names.join(", ")
        ),
    }
}

/// Fetches the container's aliases again, when this container has what it takes.
fn refetch(g: &Global, layout: &Layout, name: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let spec = match g.spec_from_env()? {
        Some(s) => s,
        None => layout.load_spec()?.ok_or_else(|| {
            anyhow!(
                "esi-cli cannot fetch them here: no {ENV_SPEC} and no {}",
                layout.spec().display()
            )
        })?,
    };
    let cspec = spec
        .containers
        .get(name)
        .ok_or_else(|| anyhow!("the injection spec has no container named {name}"))?
        .clone();
    let token_path = g.token_path(Some(&spec));
    if !token_path.exists() {
        bail!(
            "esi-cli cannot fetch them here: no ServiceAccount token at {} (only esi-cli containers mount it); restart the Pod to run esi-init again, or enable esi.dev/refresh",
            token_path.display()
        );
    }
    let token = Arc::new(Token::read(&token_path)?);
    let client = g.spec_client(&spec)?;
    let mut aliases: Vec<String> = output::container_aliases(&cspec)
        .into_iter()
        .map(str::to_owned)
        .collect();
    aliases.sort();
    aliases.dedup();
    let deadline = Instant::now() + g.deadline;
    let rt = crate::runtime()?;
    let creds = rt
        .block_on(pod::issue(&client, &token, &spec, &aliases, deadline))
        .context("re-fetching failed")?;
    let env = rt.block_on(pod::or_revoke(
        &client,
        &token,
        layout,
        &spec,
        &creds,
        || output::container_env(&cspec, &creds),
    ))?;
    log::info(&format!(
        "re-fetched {} credential(s) for container {name}",
        creds.len()
    ));
    // Best effort: app containers mount the volume read-only.
    let saved = (|| -> anyhow::Result<()> {
        layout.record_leases(&spec, &pod::fresh_pairs(&creds))?;
        let bundle = Bundle {
            version: 1,
            container: name.to_owned(),
            expires_at: output::earliest_expiry(aliases.iter().map(String::as_str), &creds),
            env: env.clone(),
        };
        output::write_atomic(
            &layout.bundle(name),
            &serde_json::to_vec(&bundle)?,
            pod::bundle_mode(&spec.owner),
            &spec.owner,
        )
    })();
    if let Err(e) = saved {
        log::debug(&format!("could not save the re-fetched bundle: {e:#}"));
    }
    Ok(env)
}
