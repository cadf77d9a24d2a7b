//! Figures 7 and 8: `esi-cli init` with three generators against the local federation, and
//! `esi-cli exec -- /bin/true`, each exec → exit against its baseline (`esi-cli --version`,
//! `/bin/true` run directly). Written against esi-cli's documented interface: the
//! `InjectionSpec` in `ESI_SPEC`, the token file, the volume folder.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::bail;
use esi_api::inject::{
    ContainerSpec, ENV_SPEC, ENV_TERMINATION_LOG, ENV_TOKEN_FILE, ENV_VOLUME_DIR, EnvImport,
    EnvMapping, GeneratorRef, InjectionSpec, Owner, SPEC_VERSION,
};

use crate::Plan;
use crate::bins::Bins;
use crate::figures::{Fig2, exec_time};
use crate::load::median;
use crate::report::{Row, Verdict};

/// The three generators of figure 7 (present in figure 2's configuration, authorized for
/// `team-0000/app`).
fn spec(federation_url: &str, token_path: &Path) -> InjectionSpec {
    let g = |kind: &str, name: &str| GeneratorRef {
        namespace: "team-0000".to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
    };
    let generators = BTreeMap::from([
        ("db".to_owned(), g("Password", "db")),
        ("creds".to_owned(), g("Fake", "creds")),
        ("id".to_owned(), g("UUID", "id")),
    ]);
    let app = ContainerSpec {
        env: vec![EnvMapping {
            name: "DB_PASSWORD".to_owned(),
            alias: "db".to_owned(),
            key: "password".to_owned(),
        }],
        env_from: vec![
            EnvImport {
                alias: "creds".to_owned(),
                prefix: "APP_".to_owned(),
            },
            EnvImport {
                alias: "id".to_owned(),
                prefix: "RUN_".to_owned(),
            },
        ],
    };
    InjectionSpec {
        version: SPEC_VERSION,
        federation_url: federation_url.to_owned(),
        federation_ca_pem: None,
        token_path: token_path.display().to_string(),
        generators,
        containers: BTreeMap::from([("app".to_owned(), app)]),
        files: Vec::new(),
        owner: Owner::default(),
        refresh: None,
        revoke_on_exit: false,
    }
}

/// Why esi-cli cannot be measured, if it cannot.
fn not_ready(bins: &Bins) -> Option<String> {
    if let Some(e) = &bins.cli_error {
        return Some(format!("esi-cli not ready: {e}"));
    }
    let out = Command::new(&bins.cli)
        .arg("--version")
        .stderr(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("esi-cli") => {
            None
        }
        Ok(_) => Some("esi-cli not ready: `esi-cli --version` does not answer".to_owned()),
        Err(e) => Some(format!("esi-cli not ready: {e}")),
    }
}

fn cli_command(bins: &Bins, spec_json: &str, volume: &Path, token: &Path) -> Command {
    let mut cmd = Command::new(&bins.cli);
    cmd.env(ENV_SPEC, spec_json)
        .env(ENV_VOLUME_DIR, volume)
        .env(ENV_TOKEN_FILE, token)
        .env(ENV_TERMINATION_LOG, volume.join("termination-log"))
        .env("ESI_ALLOW_HTTP", "true")
        .stderr(Stdio::null());
    cmd
}

/// Figures 7 and 8.
pub async fn fig7_8(
    plan: &Plan,
    bins: &Bins,
    f2: &Fig2,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    const G7: &str = "<= 25 ms above baseline";
    const G8: &str = "<= 5 ms above baseline";
    if let Some(why) = not_ready(bins) {
        rows.push(Row::not_measured(
            "7",
            "esi-cli init, 3 generators",
            G7,
            why.clone(),
        ));
        rows.push(Row::not_measured("8", "esi-cli exec -- /bin/true", G8, why));
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let token = dir.path().join("token");
    std::fs::write(&token, &f2.tokens[0])?;
    let spec_json = spec(&format!("http://{}", f2.server.addr), &token).to_json();
    let core = plan.client_core;
    let runs = plan.cli_runs;

    // Figure 7: a fresh volume per run (init fetches once per Pod start).
    let (mut init, mut version) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let volume = dir.path().join(format!("vol-{i}"));
        std::fs::create_dir(&volume)?;
        let mut cmd = cli_command(bins, &spec_json, &volume, &token);
        cmd.arg("init");
        let (t, ok) = exec_time(core, cmd)?;
        if !ok {
            let reason =
                std::fs::read_to_string(volume.join("termination-log")).unwrap_or_default();
            bail!("esi-cli init failed: {reason}");
        }
        init.push(t);
        let mut cmd = Command::new(&bins.cli);
        cmd.arg("--version");
        version.push(exec_time(core, cmd)?.0);
    }
    let (a, b) = (median(&init), median(&version));
    let over = (a - b) * 1000.0;
    rows.push(Row::new(
        "7",
        "esi-cli init, 3 generators, exec → exit",
        format!("+{over:.1} ms over esi-cli --version"),
        G7,
        Verdict::of(over <= 25.0),
        format!(
            "init {:.1} ms vs --version {:.1} ms (medians of {runs} alternating runs on the client core; federation of figure 2 over loopback http; Password + Fake (sealed lease) + UUID, concurrent; copies its binary into a fresh volume each run)",
            a * 1000.0,
            b * 1000.0
        ),
    ));

    // Figure 8: exec from an initialized volume.
    let volume = dir.path().join("vol-0");
    let (mut wrapped, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let mut cmd = cli_command(bins, &spec_json, &volume, &token);
        cmd.args(["exec", "--container", "app", "--", "/bin/true"]);
        let (t, ok) = exec_time(core, cmd)?;
        if !ok {
            bail!("esi-cli exec -- /bin/true failed");
        }
        wrapped.push(t);
        direct.push(exec_time(core, Command::new("/bin/true"))?.0);
    }
    let (a, b) = (median(&wrapped), median(&direct));
    let over = (a - b) * 1000.0;
    rows.push(Row::new(
        "8",
        "esi-cli exec -- /bin/true, exec → exit",
        format!("+{over:.2} ms over /bin/true"),
        G8,
        Verdict::of(over <= 5.0),
        format!(
            "esi-cli exec {:.2} ms vs /bin/true {:.2} ms (medians of {runs} alternating runs on the client core)",
            a * 1000.0,
            b * 1000.0
        ),
    ));
    Ok(())
}
