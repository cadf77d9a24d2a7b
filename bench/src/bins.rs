//! The binaries under test, built with the bench's own profile so that the federation, the
//! webhook, esi-cli and the trivial baseline are compared like for like.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, anyhow, bail};

/// Paths of the binaries, next to the bench's own executable.
#[derive(Debug, Clone)]
pub struct Bins {
    /// The directory (`target/release` or `target/debug`).
    pub dir: PathBuf,
    /// Cargo profile name of that directory.
    pub profile: String,
    /// `esi-federation`.
    pub federation: PathBuf,
    /// `esi-webhook`.
    pub webhook: PathBuf,
    /// `esi-cli`.
    pub cli: PathBuf,
    /// `esi-bench-trivial`.
    pub trivial: PathBuf,
    /// `esi-bench-floor`.
    pub floor: PathBuf,
    /// Why esi-cli could not be built, if it could not.
    pub cli_error: Option<String>,
    /// Why esi-webhook could not be built, if it could not.
    pub webhook_error: Option<String>,
}

impl Bins {
    /// Locates the binaries beside the running bench (or in `dir`), building them first with
    /// the same profile unless `build` is false.
    pub fn prepare(dir: Option<PathBuf>, build: bool) -> anyhow::Result<Bins> {
        let dir = match dir {
            Some(d) => d,
            None => std::env::current_exe()?
                .parent()
                .ok_or_else(|| anyhow!("the bench executable has no directory"))?
                .to_path_buf(),
        };
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_owned(),
            Some(other) => other.to_owned(),
            None => bail!("cannot tell the cargo profile of {}", dir.display()),
        };
        let (mut cli_error, mut webhook_error) = (None, None);
        if build {
            cargo_build(&profile, &["esi-federation", "esi-bench"])?;
            // The others are measured when they build; their figures say so when they don't.
            webhook_error = cargo_build(&profile, &["esi-webhook"])
                .err()
                .map(|e| format!("{e:#}"));
            cli_error = cargo_build(&profile, &["esi-cli"])
                .err()
                .map(|e| format!("{e:#}"));
        }
        let bin = |name: &str| dir.join(name);
        let bins = Bins {
            federation: bin("esi-federation"),
            webhook: bin("esi-webhook"),
            cli: bin("esi-cli"),
            trivial: bin("esi-bench-trivial"),
            floor: bin("esi-bench-floor"),
            dir: dir.clone(),
            profile,
            cli_error,
            webhook_error,
        };
        for p in [&bins.federation, &bins.trivial, &bins.floor] {
            if !p.exists() {
                bail!(
                    "{} is missing; build it with `cargo build --release -p esi-federation -p esi-bench --bins`",
                    p.display()
                );
            }
        }
        Ok(bins)
    }

    /// The release directory (for figure 10), whatever profile runs the bench.
    pub fn release_dir(&self) -> PathBuf {
        self.dir
            .parent()
            .map_or_else(|| self.dir.clone(), |t| t.join("release"))
    }
}

fn cargo_build(profile: &str, packages: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--bins", "--profile", profile]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    if let Some(root) = workspace_root() {
        cmd.current_dir(root);
    }
    eprintln!("esi-bench: building {} ({profile})", packages.join(", "));
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build of {} failed ({status})", packages.join(", "));
    }
    Ok(())
}

fn workspace_root() -> Option<&'static Path> {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent()
}
