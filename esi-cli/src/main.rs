//! `esi-cli`: the workload side of esi. It runs inside the Pod as the init container (`init`),
//! as the wrapper that starts the app with its credentials (`exec`), as the optional native
//! sidecar (`refresh`), as a final step (`revoke`), and by hand (`fetch`, `doctor`).
//!
//! The webhook passes what to do as a JSON [`esi_api::inject::InjectionSpec`] in `ESI_SPEC`;
//! the layout of the shared volume is described in [`state`]. Failures print
//! `esi-cli: <reason>` and write the one-line reason to the termination log so
//! `kubectl describe pod` shows it.

mod client;
mod cmd;
mod log;
mod output;
mod pod;
mod state;
mod token;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use esi_api::inject::{
    ENV_FEDERATION_URL, ENV_LOG_FORMAT, ENV_SPEC, ENV_TERMINATION_LOG, ENV_TOKEN_FILE,
    ENV_VOLUME_DIR, InjectionSpec, MOUNT_PATH, TERMINATION_LOG, TOKEN_PATH,
};

/// Env var: `true` allows an `http://` federation URL (tests, a loopback sidecar proxy).
pub const ENV_ALLOW_HTTP: &str = esi_api::inject::ENV_ALLOW_HTTP;

#[derive(Parser)]
#[command(
    name = "esi-cli",
    version,
    about = "Disposable, runtime-bound credentials for Kubernetes workloads: the in-Pod side of esi"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand understands.
#[derive(clap::Args, Debug)]
struct Global {
    /// Show each request (method, path, status, latency; never bodies, tokens or secrets).
    #[arg(long, short, global = true, env = "ESI_VERBOSE")]
    verbose: bool,
    /// Root of the shared volume.
    #[arg(long, global = true, env = ENV_VOLUME_DIR, default_value = MOUNT_PATH)]
    volume_dir: PathBuf,
    /// Where the one-line failure reason goes (default /dev/termination-log when it exists).
    #[arg(long, global = true, env = ENV_TERMINATION_LOG)]
    termination_log: Option<PathBuf>,
    /// Read the injection spec from this file instead of the ESI_SPEC env var.
    #[arg(long, global = true)]
    spec_file: Option<PathBuf>,
    /// The ServiceAccount token file (default: the spec's, else the projected token path).
    #[arg(long, global = true, env = ENV_TOKEN_FILE)]
    token_file: Option<PathBuf>,
    /// Accept an `http://` federation URL.
    #[arg(long, global = true, env = ENV_ALLOW_HTTP)]
    allow_http: bool,
    /// Timeout of one HTTP attempt (`500ms`, `10s`, `1m`).
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Give up retrying after this long (network errors, 429, 502, 503).
    #[arg(long, global = true, env = "ESI_DEADLINE", default_value = "2m", value_parser = parse_duration)]
    deadline: Duration,
}

#[derive(Subcommand)]
enum Command {
    /// Init container: copy this binary into the volume, fetch every generator once, write
    /// env bundles and files.
    Init {
        /// Do not copy the binary into the volume.
        #[arg(long)]
        no_copy: bool,
    },
    /// Start a program with the credentials of a container in its environment (execve, no
    /// shell): `esi-cli exec --container app -- /app/server --flag`.
    Exec {
        /// The container whose env bundle to load (default: the only bundle).
        #[arg(long, env = "ESI_CONTAINER")]
        container: Option<String>,
        /// The program and its arguments, passed through untouched.
        #[arg(last = true, required = true, value_parser = clap::value_parser!(OsString))]
        command: Vec<OsString>,
    },
    /// Native sidecar: re-issue credentials before they expire, swap files atomically, notify
    /// the app; revoke on SIGTERM when asked.
    Refresh {
        /// Re-issue at this percentage of a credential's lifetime (default: the spec's, else 66).
        #[arg(long, value_parser = clap::value_parser!(u8).range(10..=90))]
        at_percent: Option<u8>,
        /// Signal to send after a swap (`SIGHUP`, `USR1`, ...); overrides the spec.
        #[arg(long, requires = "notify_process")]
        notify_signal: Option<String>,
        /// Name (`comm`) of the processes to signal.
        #[arg(long, requires = "notify_signal")]
        notify_process: Option<String>,
        /// Program to run after a swap (no shell), instead of a signal.
        #[arg(long, conflicts_with = "notify_signal")]
        notify_command: Option<PathBuf>,
        /// Argument of --notify-command (repeatable).
        #[arg(long, requires = "notify_command", allow_hyphen_values = true)]
        notify_arg: Vec<String>,
        /// The app's reload endpoint to call after a swap, on the Pod's loopback
        /// (`http://127.0.0.1:9090/-/reload`), instead of a signal.
        #[arg(long, conflicts_with_all = ["notify_signal", "notify_command"])]
        notify_url: Option<String>,
        /// Method of --notify-url: POST (default), PUT or GET.
        #[arg(long, requires = "notify_url")]
        notify_method: Option<String>,
        /// Revoke every lease on SIGTERM (default: the spec's revokeOnExit).
        #[arg(long)]
        revoke_on_exit: bool,
        /// Never re-issue more often than this.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        min_interval: Duration,
    },
    /// Revoke every lease this Pod obtained (idempotent).
    Revoke,
    /// Exit 0 once `refresh` has written credentials (a startupProbe for the sidecar).
    Ready,
    /// Issue one credential and print it (scripts, debugging outside Kubernetes).
    Fetch {
        /// The generator, `namespace/kind/name`.
        generator: String,
        /// Federation URL (default: the spec's).
        #[arg(long, env = ENV_FEDERATION_URL)]
        federation_url: Option<String>,
        /// Extra CA bundle (PEM) for the federation's TLS.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = FetchFormat::Json)]
        format: FetchFormat,
    },
    /// Explain a failing setup: token, federation reachability, identity, authorization.
    Doctor {
        /// Federation URL (default: the spec's).
        #[arg(long, env = ENV_FEDERATION_URL)]
        federation_url: Option<String>,
        /// Extra CA bundle (PEM) for the federation's TLS.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// A generator to check, `alias=namespace/kind/name` or `namespace/kind/name`
        /// (repeatable; default: the spec's).
        #[arg(long = "generator")]
        generators: Vec<String>,
        /// Also issue (and revoke at once) a real credential per allowed generator, to test the
        /// backend end to end; by default doctor only asks the federation's dry run.
        #[arg(long)]
        issue: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// `fetch` output formats.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FetchFormat {
    /// The flat `{key: value}` map.
    Json,
    /// Dotenv `KEY="value"` lines.
    Env,
    /// The whole envelope (with `expiresAt` and the sealed lease).
    Envelope,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_logs = std::env::var(ENV_LOG_FORMAT).is_ok_and(|v| v == "json");
    log::init(cli.global.verbose, json_logs);
    let termination_log = cli.global.termination_log.clone();
    match make_undumpable().and_then(|()| run(cli)) {
        Ok(code) => code,
        Err(err) => {
            let line = format!("{err:#}");
            eprintln!("esi-cli: {line}");
            write_termination_log(termination_log.as_deref(), &line);
            ExitCode::FAILURE
        }
    }
}

/// Makes this process non-dumpable before it reads the token or a credential.
///
/// With `shareProcessNamespace: true` the app runs as the same uid/gid as esi-cli (the webhook
/// makes it so), and the kernel lets a same-uid process read another's `/proc/<pid>/environ`,
/// `mem` and `root/` — through which the agent's projected token, mounted only into esi-cli,
/// would be one path away. A non-dumpable process's `/proc/<pid>` belongs to root and is closed
/// to ptrace-style access by anyone without `CAP_SYS_PTRACE`. `exec` hands the app a fresh
/// (dumpable) process image, as the kernel resets the flag on `execve`.
fn make_undumpable() -> anyhow::Result<()> {
    #[cfg(target_os = "linux")]
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .context("cannot make esi-cli non-dumpable (prctl PR_SET_DUMPABLE)")?;
    Ok(())
}

/// Writes the reason where Kubernetes reads it: the configured path, else
/// `/dev/termination-log` only when it exists (never created outside a container).
fn write_termination_log(configured: Option<&Path>, line: &str) {
    let path = match configured {
        Some(p) => p.to_owned(),
        None if Path::new(TERMINATION_LOG).exists() => PathBuf::from(TERMINATION_LOG),
        None => return,
    };
    // One line, within Kubernetes' 4096-byte limit.
    let mut one: String = line.replace(['\n', '\r'], " ");
    esi_api::json::truncate_at_char_boundary(&mut one, 4000);
    one.push('\n');
    if let Err(e) = std::fs::write(&path, one) {
        eprintln!("esi-cli: cannot write {}: {e}", path.display());
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Exec { container, command } => cmd::exec::run(g, container, command),
        Command::Ready => {
            let layout = state::Layout::new(&g.volume_dir);
            if layout.ready().exists() {
                Ok(ExitCode::SUCCESS)
            } else {
                bail!("refresh has not written credentials yet")
            }
        }
        Command::Init { no_copy } => runtime()?.block_on(cmd::init::run(g, no_copy)),
        Command::Refresh {
            at_percent,
            notify_signal,
            notify_process,
            notify_command,
            notify_arg,
            notify_url,
            notify_method,
            revoke_on_exit,
            min_interval,
        } => {
            let opts = cmd::refresh::Options {
                at_percent,
                notify_signal,
                notify_process,
                notify_command,
                notify_args: notify_arg,
                notify_url,
                notify_method,
                revoke_on_exit,
                min_interval,
            };
            runtime()?.block_on(cmd::refresh::run(g, opts))
        }
        Command::Revoke => runtime()?.block_on(cmd::revoke::run(g)),
        Command::Fetch {
            generator,
            federation_url,
            ca_file,
            format,
        } => runtime()?.block_on(cmd::fetch::run(
            g,
            &generator,
            federation_url,
            ca_file,
            format,
        )),
        Command::Doctor {
            federation_url,
            ca_file,
            generators,
            issue,
            json,
        } => runtime()?.block_on(cmd::doctor::run(
            g,
            cmd::doctor::Options {
                federation_url,
                ca_file,
                generators,
                issue,
                json,
            },
        )),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

impl Global {
    /// The spec from `--spec-file` or `ESI_SPEC`, if any.
    fn spec_from_env(&self) -> anyhow::Result<Option<InjectionSpec>> {
        let text = match &self.spec_file {
            Some(p) => std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the spec file {}", p.display()))?,
            None => match std::env::var(ENV_SPEC) {
                Ok(s) => s,
                Err(std::env::VarError::NotPresent) => return Ok(None),
                Err(e) => return Err(anyhow!("{ENV_SPEC}: {e}")),
            },
        };
        Ok(Some(InjectionSpec::from_json(&text)?))
    }

    /// The spec, required.
    fn spec(&self) -> anyhow::Result<InjectionSpec> {
        self.spec_from_env()?.ok_or_else(|| {
            anyhow!("no injection spec: set {ENV_SPEC} (the webhook does) or pass --spec-file")
        })
    }

    /// The token path: flag/env, else the spec's, else the projected token's.
    fn token_path(&self, spec: Option<&InjectionSpec>) -> PathBuf {
        self.token_file
            .clone()
            .or_else(|| spec.map(|s| PathBuf::from(&s.token_path)))
            .unwrap_or_else(|| PathBuf::from(TOKEN_PATH))
    }

    /// A client for `url` with an optional CA.
    fn client(&self, url: &str, ca_pem: Option<String>) -> anyhow::Result<client::Federation> {
        client::Federation::new(&client::ClientConfig {
            url: url.to_owned(),
            ca_pem,
            allow_http: self.allow_http,
            attempt_timeout: self.timeout,
        })
    }

    /// A client for the spec's federation.
    fn spec_client(&self, spec: &InjectionSpec) -> anyhow::Result<client::Federation> {
        self.client(&spec.federation_url, spec.federation_ca_pem.clone())
    }
}

/// Parses `250ms`, `10s`, `2m`, `1h` or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 10s, 2m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{s:?} is not a duration like 500ms, 10s, 2m")),
    };
    if d.is_zero() {
        return Err("duration must be positive".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn start_up_makes_the_process_non_dumpable() {
        use rustix::process::{DumpableBehavior, dumpable_behavior};
        make_undumpable().unwrap();
        assert_eq!(dumpable_behavior().unwrap(), DumpableBehavior::NotDumpable);
    }

    #[test]
    fn termination_log_is_one_bounded_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("termination-log");
        let long = format!("a\nb{}", "é".repeat(3000));
        write_termination_log(Some(&p), &long);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.len() <= 4001);
        assert!(text.starts_with("a b"));
    }
}
