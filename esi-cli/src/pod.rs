//! What `init`, `refresh` and `exec` share: issuing a set of aliases concurrently (all or
//! nothing: on failure the credentials already minted are revoked, never leaked), revoking
//! fresh credentials when a later step fails, and rendering then writing a Pod's env bundles
//! and files from the current credentials.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, anyhow};
use esi_api::Envelope;
use esi_api::inject::{InjectionSpec, Owner};
use tokio::task::JoinSet;

use crate::client::Federation;
use crate::log;
use crate::output::{self, Credentials};
use crate::state::{Bundle, Layout};
use crate::token::Token;

/// Issues `aliases` concurrently. If any fails, the ones that succeeded are revoked (best
/// effort) and the first failure is returned, naming the alias and generator.
pub async fn issue(
    client: &Federation,
    token: &Arc<Token>,
    spec: &InjectionSpec,
    aliases: &[String],
    deadline: Instant,
) -> anyhow::Result<Credentials> {
    let mut set = JoinSet::new();
    for alias in aliases {
        let generator = spec
            .generators
            .get(alias)
            .ok_or_else(|| anyhow!("the spec has no generator with alias `{alias}`"))?
            .clone();
        let client = client.clone();
        let token = token.clone();
        let alias = alias.clone();
        set.spawn(async move {
            let res = client.generate(&token, &generator, deadline).await;
            (alias, generator, res)
        });
    }
    let mut creds = Credentials::new();
    let mut first_err: Option<anyhow::Error> = None;
    while let Some(joined) = set.join_next().await {
        let (alias, generator, res) = joined.context("an issuing task failed")?;
        match res {
            Ok(env) => {
                log::debug(&format!(
                    "issued `{alias}` from {generator} (keys: {})",
                    env.data.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
                creds.insert(alias, env);
            }
            Err(e) if first_err.is_none() => {
                first_err = Some(anyhow!("generator `{alias}` ({generator}): {e}"));
            }
            Err(_) => {}
        }
    }
    if let Some(err) = first_err {
        revoke_unused(client, token, &creds, "another generator failed").await;
        return Err(err);
    }
    Ok(creds)
}

/// Revokes credentials that will not be used because `why`, best effort: failures are logged,
/// never returned (the caller reports its own error). The leases revoked are returned.
pub async fn revoke_unused(
    client: &Federation,
    token: &Token,
    creds: &Credentials,
    why: &str,
) -> Vec<String> {
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let mut revoked = Vec::new();
    for (alias, env) in creds {
        if let Some(lease) = &env.lease {
            match client.revoke(token, lease, deadline).await {
                Ok(_) => {
                    log::info(&format!(
                        "revoked the unused credential of `{alias}` ({why})"
                    ));
                    revoked.push(lease.clone());
                }
                Err(e) => log::warn(&format!(
                    "could not revoke the unused credential of `{alias}`: {e}"
                )),
            }
        }
    }
    revoked
}

/// Runs `step` on freshly issued `creds`; when it fails, revokes them (they will never be
/// used, and the caller would mint new ones on its next try), marks them revoked in the lease
/// records when `step` got as far as recording them, and returns the step's error.
pub async fn or_revoke<T>(
    client: &Federation,
    token: &Token,
    layout: &Layout,
    spec: &InjectionSpec,
    creds: &Credentials,
    step: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let err = match step() {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let revoked = revoke_unused(client, token, creds, "a later step failed").await;
    if !revoked.is_empty()
        && let Err(e) = layout.mark_revoked(&revoked, &spec.owner)
    {
        log::debug(&format!("could not mark the leases revoked: {e:#}"));
    }
    Err(err)
}

/// The mode of env bundles: like files, owner-only unless the group is what serves the app:
/// when only the group is known, or when the app runs as root (esi-cli, not root, owns the
/// bundle, and a root app without capabilities reads it through the group; see
/// [`output::apply_owner`]).
pub fn bundle_mode(owner: &Owner) -> u32 {
    let uid_serves = owner.uid.is_some_and(|u| u != 0);
    if !uid_serves && owner.gid.is_some() {
        0o440
    } else {
        0o400
    }
}

/// One env bundle or file, rendered and not yet written. No `Debug`: it holds credentials.
pub struct Rendered {
    /// Where it goes.
    path: PathBuf,
    /// Its content.
    bytes: Vec<u8>,
    /// Its mode.
    mode: u32,
    /// What it is, for errors (`file NAME (PATH)` or `env bundle of container NAME`).
    what: String,
}

/// Writes the env bundles and files that read any of `changed` (all when `None`).
pub fn write_outputs(
    layout: &Layout,
    spec: &InjectionSpec,
    creds: &Credentials,
    changed: Option<&BTreeSet<String>>,
) -> anyhow::Result<()> {
    let rendered = render_outputs(layout, spec, creds, changed)?;
    write_rendered(layout, &rendered, &spec.owner)
}

/// Writes what [`render_outputs`] produced, each atomically.
pub fn write_rendered(layout: &Layout, rendered: &[Rendered], owner: &Owner) -> anyhow::Result<()> {
    for r in rendered {
        output::ensure_dir(r.path.parent().unwrap_or(&layout.root), 0o755)
            .with_context(|| r.what.clone())?;
        output::write_atomic(&r.path, &r.bytes, r.mode, owner).with_context(|| r.what.clone())?;
    }
    Ok(())
}

/// Renders, in memory, the env bundles and files that read any of `changed` (all when
/// `None`): every missing key or invalid name is found before anything is written.
pub fn render_outputs(
    layout: &Layout,
    spec: &InjectionSpec,
    creds: &Credentials,
    changed: Option<&BTreeSet<String>>,
) -> anyhow::Result<Vec<Rendered>> {
    let mut out = Vec::new();
    let touches = |aliases: &[&str]| match changed {
        None => true,
        Some(set) => aliases.iter().any(|a| set.contains(*a)),
    };
    for (name, cspec) in &spec.containers {
        if !cspec.wants_env() {
            continue;
        }
        let aliases = output::container_aliases(cspec);
        if !touches(&aliases) {
            continue;
        }
        let env = output::container_env(cspec, creds)
            .with_context(|| format!("env of container {name}"))?;
        let bundle = Bundle {
            version: 1,
            container: name.clone(),
            expires_at: output::earliest_expiry(aliases, creds),
            env,
        };
        out.push(Rendered {
            path: layout.bundle(name),
            bytes: serde_json::to_vec(&bundle)?,
            mode: bundle_mode(&spec.owner),
            what: format!("env bundle of container {name}"),
        });
    }
    for file in &spec.files {
        let aliases = file.content.aliases();
        let refs: Vec<&str> = aliases.iter().map(String::as_str).collect();
        if !touches(&refs) {
            continue;
        }
        let bytes = output::render_file(&file.content, creds)
            .with_context(|| format!("file {} ({})", file.name, file.path))?;
        let rel = Path::new(&file.volume_path);
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            anyhow::bail!(
                "file {}: volumePath {:?} must be a relative path inside the volume",
                file.name,
                file.volume_path
            );
        }
        out.push(Rendered {
            path: layout.volume_file(&file.volume_path),
            bytes,
            mode: file.mode,
            what: format!("file {} ({})", file.name, file.path),
        });
    }
    Ok(out)
}

/// Pairs of (alias, envelope) for lease recording.
pub fn fresh_pairs(creds: &Credentials) -> Vec<(String, &Envelope)> {
    creds.iter().map(|(a, e)| (a.clone(), e)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_are_group_readable_when_the_group_serves_the_app() {
        let owner = |uid, gid| Owner { uid, gid };
        assert_eq!(bundle_mode(&owner(Some(1000), Some(2000))), 0o400);
        assert_eq!(bundle_mode(&owner(None, Some(2000))), 0o440);
        // A root app without capabilities reads through its group.
        assert_eq!(bundle_mode(&owner(Some(0), Some(0))), 0o440);
        assert_eq!(bundle_mode(&owner(Some(0), None)), 0o400);
    }
}
