//! What `init`, `refresh` and `exec` share: issuing a set of aliases concurrently (all or
//! nothing: on failure the credentials already minted are revoked, never leaked) and writing
//! a Pod's env bundles and files from the current credentials.

use std::collections::BTreeSet;
use std::path::{Component, Path};
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
        revoke_unused(client, token, &creds).await;
        return Err(err);
    }
    Ok(creds)
}

/// Revokes credentials that will not be used (another alias failed); failures are logged.
async fn revoke_unused(client: &Federation, token: &Token, creds: &Credentials) {
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    for (alias, env) in creds {
        if let Some(lease) = &env.lease {
            match client.revoke(token, lease, deadline).await {
                Ok(_) => log::info(&format!(
                    "revoked the unused credential of `{alias}` (another generator failed)"
                )),
                Err(e) => log::warn(&format!(
                    "could not revoke the unused credential of `{alias}`: {e}"
                )),
            }
        }
    }
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

/// Writes the env bundles and files that read any of `changed` (all when `None`).
pub fn write_outputs(
    layout: &Layout,
    spec: &InjectionSpec,
    creds: &Credentials,
    changed: Option<&BTreeSet<String>>,
) -> anyhow::Result<()> {
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
        let path = layout.bundle(name);
        output::ensure_dir(path.parent().unwrap_or(&layout.root), 0o755)?;
        let bytes = serde_json::to_vec(&bundle)?;
        output::write_atomic(&path, &bytes, bundle_mode(&spec.owner), &spec.owner)?;
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
        let path = layout.volume_file(&file.volume_path);
        output::ensure_dir(path.parent().unwrap_or(&layout.root), 0o755)?;
        output::write_atomic(&path, &bytes, file.mode, &spec.owner)
            .with_context(|| format!("file {} ({})", file.name, file.path))?;
    }
    Ok(())
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
