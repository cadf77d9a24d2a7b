//! `esi-cli refresh`: the native sidecar (an init container with `restartPolicy: Always`).
//!
//! It starts from what `init` wrote (or fetches everything itself when run alone), marks
//! itself ready, then re-issues each credential that has an expiry at a jittered fraction of
//! its lifetime: the new credential is obtained first, the files and env bundles that read it
//! are swapped atomically (the old credential stays valid until its own expiry, so the app
//! never holds a dead one), and the app is notified: a signal to every process with a given
//! name (needs `shareProcessNamespace: true`), a call to the app's reload endpoint on the Pod's
//! loopback, a command, or nothing. On SIGTERM it exits cleanly, revoking every lease first
//! when revoke-on-exit is set.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use esi_api::Envelope;
use esi_api::inject::{
    DEFAULT_REFRESH_AT_PERCENT, InjectionSpec, NOTIFY_METHODS, Notify, Owner, check_loopback_url,
};
use rustix::process::{Pid, Signal};
use tokio::signal::unix::{SignalKind, signal};

use crate::client::{Backoff, Federation};
use crate::output::{self, Credentials};
use crate::state::Layout;
use crate::token::Token;
use crate::{Global, log, pod};

/// Options from the command line (override the spec).
pub struct Options {
    /// `--at-percent`.
    pub at_percent: Option<u8>,
    /// `--notify-signal`.
    pub notify_signal: Option<String>,
    /// `--notify-process`.
    pub notify_process: Option<String>,
    /// `--notify-command`.
    pub notify_command: Option<PathBuf>,
    /// `--notify-arg`.
    pub notify_args: Vec<String>,
    /// `--notify-url`.
    pub notify_url: Option<String>,
    /// `--notify-method`.
    pub notify_method: Option<String>,
    /// `--revoke-on-exit`.
    pub revoke_on_exit: bool,
    /// `--min-interval`.
    pub min_interval: Duration,
}

/// How the app is told about a swap.
enum Notifier {
    None,
    Signal {
        signal: Signal,
        name: String,
        process: String,
    },
    Command {
        program: PathBuf,
        args: Vec<String>,
    },
    Http {
        client: reqwest::Client,
        method: reqwest::Method,
        url: reqwest::Url,
    },
}

/// How long one call of the app's reload endpoint may take, and how many are tried: the app
/// may be restarting when the files are swapped.
const NOTIFY_HTTP_TIMEOUT: Duration = Duration::from_secs(5);
const NOTIFY_HTTP_ATTEMPTS: u32 = 3;

/// Parses `SIGHUP`, `HUP` or `hup`: the signals an app may reasonably reload on.
fn parse_signal(s: &str) -> anyhow::Result<(Signal, String)> {
    let upper = s.trim().to_ascii_uppercase();
    let short = upper.strip_prefix("SIG").unwrap_or(&upper);
    let sig = match short {
        "HUP" => Signal::HUP,
        "USR1" => Signal::USR1,
        "USR2" => Signal::USR2,
        "INT" => Signal::INT,
        "QUIT" => Signal::QUIT,
        "TERM" => Signal::TERM,
        "WINCH" => Signal::WINCH,
        "ALRM" => Signal::ALARM,
        _ => bail!("signal {s:?} is not one of HUP, USR1, USR2, INT, QUIT, TERM, WINCH, ALRM"),
    };
    Ok((sig, format!("SIG{short}")))
}

impl Notifier {
    fn new(opts: &Options, spec: Option<&Notify>) -> anyhow::Result<Notifier> {
        if let Some(program) = &opts.notify_command {
            return Ok(Notifier::Command {
                program: program.clone(),
                args: opts.notify_args.clone(),
            });
        }
        if let Some(url) = &opts.notify_url {
            return Notifier::http(url, opts.notify_method.as_deref().unwrap_or("POST"));
        }
        // The flags (clap makes them come together) win over the spec.
        let (sig, process) = match (&opts.notify_signal, &opts.notify_process, spec) {
            (Some(s), Some(p), _) => (s.clone(), p.clone()),
            (_, _, Some(Notify::Signal { signal, process })) => (signal.clone(), process.clone()),
            (_, _, Some(Notify::Http { url, method })) => return Notifier::http(url, method),
            _ => return Ok(Notifier::None),
        };
        if process.is_empty() {
            bail!("the process name to signal is empty");
        }
        let (signal, name) = parse_signal(&sig)?;
        Ok(Notifier::Signal {
            signal,
            name,
            process,
        })
    }

    /// A call of `method url`, held to what the webhook allows ([`check_loopback_url`]): the
    /// spec may come from a file or the command line too. No proxy (loopback is this Pod's),
    /// no redirects (they could lead off the Pod).
    fn http(url: &str, method: &str) -> anyhow::Result<Notifier> {
        check_loopback_url(url).map_err(|e| anyhow!("--notify-url / refresh notify: {e}"))?;
        let method = method.to_ascii_uppercase();
        if !NOTIFY_METHODS.contains(&method.as_str()) {
            bail!(
                "notify method {method:?} is not one of {}",
                NOTIFY_METHODS.join(", ")
            );
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(NOTIFY_HTTP_TIMEOUT)
            .user_agent(concat!("esi-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the HTTP client of --notify-url")?;
        Ok(Notifier::Http {
            client,
            method: reqwest::Method::from_bytes(method.as_bytes()).context("notify method")?,
            url: reqwest::Url::parse(url).with_context(|| format!("notify url {url:?}"))?,
        })
    }

    async fn notify(&self) {
        match self {
            Notifier::None => {}
            Notifier::Signal {
                signal,
                name,
                process,
            } => {
                let pids = find_processes(process);
                if pids.is_empty() {
                    log::warn(&format!(
                        "no process named {process} to send {name} to (does the Pod set shareProcessNamespace: true?)"
                    ));
                }
                for pid in pids {
                    match Pid::from_raw(pid) {
                        Some(p) => match rustix::process::kill_process(p, *signal) {
                            Ok(()) => log::info(&format!("sent {name} to {process} (pid {pid})")),
                            Err(e) => log::warn(&format!(
                                "cannot send {name} to {process} (pid {pid}): {e}"
                            )),
                        },
                        None => continue,
                    }
                }
            }
            Notifier::Command { program, args } => {
                match std::process::Command::new(program).args(args).status() {
                    Ok(s) if s.success() => {
                        log::info(&format!("ran {}", program.display()));
                    }
                    Ok(s) => log::warn(&format!("{} exited with {s}", program.display())),
                    Err(e) => log::warn(&format!("cannot run {}: {e}", program.display())),
                }
            }
            Notifier::Http {
                client,
                method,
                url,
            } => {
                for attempt in 1..=NOTIFY_HTTP_ATTEMPTS {
                    match client.request(method.clone(), url.clone()).send().await {
                        Ok(r) if r.status().is_success() => {
                            log::info(&format!("notified the app: {method} {url}: {}", r.status()));
                            return;
                        }
                        // The app answered: trying again would only repeat its answer.
                        Ok(r) => {
                            log::warn(&format!(
                                "the app's reload endpoint answered {method} {url} with {}",
                                r.status()
                            ));
                            return;
                        }
                        Err(e) if attempt < NOTIFY_HTTP_ATTEMPTS => {
                            log::debug(&format!(
                                "{method} {url} failed (attempt {attempt}), trying again: {e}"
                            ));
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        Err(e) => log::warn(&format!(
                            "cannot notify the app: {method} {url} failed {NOTIFY_HTTP_ATTEMPTS} times, last: {e}"
                        )),
                    }
                }
            }
        }
    }
}

/// Pids whose `comm` is `name` (the kernel truncates `comm` to 15 bytes), never our own.
fn find_processes(name: &str) -> Vec<i32> {
    let want: String = name.chars().take(15).collect();
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| *pid > 1 && u32::try_from(*pid).is_ok_and(|p| p != me))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end_matches('\n') == want)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// When to re-issue `env`: at `at_percent` of its lifetime, up to 10 % earlier (jitter), never
/// sooner than `floor`. `None` for a credential without expiry.
fn due(
    env: &Envelope,
    at_percent: u8,
    jitter: f64,
    floor: jiff::Timestamp,
) -> Option<jiff::Timestamp> {
    let expires = env.expires_at?;
    let lifetime = expires.duration_since(env.issued_at).as_secs_f64().max(0.0);
    let fraction = f64::from(at_percent) / 100.0 * (1.0 - 0.1 * jitter.clamp(0.0, 1.0));
    let offset = jiff::SignedDuration::try_from_secs_f64(lifetime * fraction).ok()?;
    let at = env.issued_at.checked_add(offset).ok()?;
    Some(at.max(floor))
}

fn until(t: jiff::Timestamp) -> Duration {
    let d = t.duration_since(jiff::Timestamp::now());
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

/// Runs `refresh` until SIGTERM.
pub async fn run(g: &Global, opts: Options) -> anyhow::Result<ExitCode> {
    let layout = Layout::new(&g.volume_dir);
    let spec = match g.spec_from_env()? {
        Some(s) => s,
        None => layout.load_spec()?.ok_or_else(|| {
            anyhow!("no injection spec: set ESI_SPEC (the webhook does) or pass --spec-file")
        })?,
    };
    layout.ensure_state_dir()?;
    let at_percent = opts
        .at_percent
        .or(spec.refresh.as_ref().map(|r| r.at_percent))
        .unwrap_or(DEFAULT_REFRESH_AT_PERCENT)
        .clamp(10, 90);
    let notifier = Notifier::new(&opts, spec.refresh.as_ref().map(|r| &r.notify))?;
    let revoke_on_exit = opts.revoke_on_exit || spec.revoke_on_exit;
    let client = g.spec_client(&spec)?;
    let token_path = g.token_path(Some(&spec));
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;

    // First write (or adopt what init wrote), then readiness.
    let aliases: Vec<String> = spec.generators.keys().cloned().collect();
    let mut creds = match layout.load_credentials()? {
        Some(c) if aliases.iter().all(|a| c.contains_key(a)) => {
            // Rewrite only when something is missing, so the app sees no needless swap.
            let missing = spec
                .containers
                .iter()
                .any(|(n, cs)| cs.wants_env() && !layout.bundle(n).exists())
                || spec
                    .files
                    .iter()
                    .any(|f| !layout.volume_file(&f.volume_path).exists());
            if missing {
                pod::write_outputs(&layout, &spec, &c, None)?;
            }
            c
        }
        _ => {
            let token = Arc::new(Token::read(&token_path)?);
            let deadline = Instant::now() + g.deadline;
            let issued = tokio::select! {
                r = pod::issue(&client, &token, &spec, &aliases, deadline) => r?,
                _ = term.recv() => return Ok(ExitCode::SUCCESS),
                _ = int.recv() => return Ok(ExitCode::SUCCESS),
            };
            // The app waits for readiness, so nothing reads these yet: on any failure they
            // are revoked, rather than leaked and minted again by the restarted sidecar.
            pod::or_revoke(&client, &token, &layout, &spec, &issued, || {
                let rendered = pod::render_outputs(&layout, &spec, &issued, None)?;
                // Recorded like init's, so revoke-on-exit and `revoke` find them.
                layout.record_leases(&spec, &pod::fresh_pairs(&issued))?;
                store(&layout, &spec, &issued)?;
                pod::write_rendered(&layout, &rendered, &spec.owner)?;
                layout.save_spec(&spec)
            })
            .await?;
            issued
        }
    };
    output::write_atomic(&layout.ready(), b"ready\n", 0o600, &Owner::default())?;
    // The sidecar also runs for revoke-on-exit alone: then it only waits for SIGTERM.
    let refreshing = opts.at_percent.is_some() || spec.refresh.is_some();
    if refreshing {
        log::info(&format!(
            "refresher ready; re-issuing at about {at_percent}% of each credential's lifetime"
        ));
    } else {
        log::info("agent ready; refresh is off, waiting for SIGTERM");
    }

    let mut schedule: BTreeMap<String, jiff::Timestamp> = BTreeMap::new();
    let plan = |alias: &str, env: &Envelope, floor: jiff::Timestamp| {
        due(env, at_percent, rand::random::<f64>(), floor).map(|t| (alias.to_owned(), t))
    };
    let now = jiff::Timestamp::now();
    if refreshing {
        schedule.extend(creds.iter().filter_map(|(a, e)| plan(a, e, now)));
    }
    let mut backoff = Backoff::new();

    loop {
        let next = schedule.values().min().copied();
        let sleep_for = next.map_or(Duration::from_secs(3600), until);
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            () = tokio::time::sleep(sleep_for) => {}
        }
        let Some(next) = next else { continue };
        // Everything due within the next second goes together.
        let horizon = next + jiff::SignedDuration::from_secs(1);
        let due_now: Vec<String> = schedule
            .iter()
            .filter(|(_, t)| **t <= horizon)
            .map(|(a, _)| a.clone())
            .collect();
        let outcome = tokio::select! {
            r = reissue(g, &layout, &spec, &client, &token_path, &due_now, &creds) => r,
            _ = term.recv() => break,
            _ = int.recv() => break,
        };
        let floor = jiff::Timestamp::now()
            + jiff::SignedDuration::try_from(opts.min_interval).unwrap_or_default();
        match outcome {
            Ok(fresh) => {
                backoff = Backoff::new();
                for (alias, env) in fresh {
                    match plan(&alias, &env, floor) {
                        Some((a, t)) => schedule.insert(a, t),
                        None => schedule.remove(&alias),
                    };
                    creds.insert(alias, env);
                }
                notifier.notify().await;
            }
            Err(e) => {
                let wait = backoff.next().max(opts.min_interval);
                log::warn(&format!(
                    "re-issuing {} failed, retrying in {} ms: {e:#}",
                    due_now.join(", "),
                    wait.as_millis()
                ));
                let retry_at = jiff::Timestamp::now()
                    + jiff::SignedDuration::try_from(wait).unwrap_or_default();
                for a in &due_now {
                    schedule.insert(a.clone(), retry_at);
                }
            }
        }
    }
    log::info("SIGTERM received; stopping");
    if revoke_on_exit {
        let token = Token::read(&token_path)?;
        crate::cmd::revoke::revoke_all(
            &layout,
            &spec,
            &client,
            &token,
            Instant::now() + Duration::from_secs(20),
        )
        .await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Issues `aliases` again, stores them and swaps every output that reads them.
async fn reissue(
    g: &Global,
    layout: &Layout,
    spec: &InjectionSpec,
    client: &Federation,
    token_path: &std::path::Path,
    aliases: &[String],
    current: &Credentials,
) -> anyhow::Result<Credentials> {
    let token = Arc::new(Token::read(token_path)?);
    // Retry until the old credential is about to expire, within the global deadline.
    let deadline = Instant::now() + g.deadline;
    let fresh = pod::issue(client, &token, spec, aliases, deadline).await?;
    let mut merged = current.clone();
    merged.extend(fresh.clone());
    let changed: BTreeSet<String> = fresh.keys().cloned().collect();
    // A rendering failure (a key the backend stopped returning) would repeat on every retry,
    // each minting a credential: revoke them. Once recorded, the leases are revoke's to find
    // (and the app may already read a swapped file), so later failures keep them.
    let rendered = pod::or_revoke(client, &token, layout, spec, &fresh, || {
        let rendered = pod::render_outputs(layout, spec, &merged, Some(&changed))?;
        layout.record_leases(spec, &pod::fresh_pairs(&fresh))?;
        Ok(rendered)
    })
    .await?;
    store(layout, spec, &merged)?;
    pod::write_rendered(layout, &rendered, &spec.owner)?;
    log::info(&format!("re-issued {}", aliases.join(", ")));
    Ok(fresh)
}

fn store(layout: &Layout, spec: &InjectionSpec, creds: &Credentials) -> anyhow::Result<()> {
    layout.save_credentials(creds, &spec.owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(issued: i64, expires: Option<i64>) -> Envelope {
        Envelope {
            data: BTreeMap::new(),
            issued_at: jiff::Timestamp::from_second(issued).unwrap(),
            expires_at: expires.map(|e| jiff::Timestamp::from_second(e).unwrap()),
            renewable: false,
            lease: None,
        }
    }

    #[test]
    fn due_is_a_jittered_fraction_of_the_lifetime() {
        let floor = jiff::Timestamp::UNIX_EPOCH;
        let e = env(1000, Some(2000));
        let at = |j| due(&e, 50, j, floor).unwrap().as_second();
        assert_eq!(at(0.0), 1500);
        assert_eq!(at(1.0), 1450);
        assert!((1450..=1500).contains(&at(0.5)));
        assert!(due(&env(1000, None), 50, 0.0, floor).is_none());
        let late_floor = jiff::Timestamp::from_second(1900).unwrap();
        assert_eq!(due(&e, 50, 0.0, late_floor).unwrap().as_second(), 1900);
    }

    #[test]
    fn signals_parse_and_dangerous_ones_are_refused() {
        assert_eq!(parse_signal("SIGHUP").unwrap().1, "SIGHUP");
        assert_eq!(parse_signal("usr1").unwrap().1, "SIGUSR1");
        assert!(parse_signal("KILL").is_err());
        assert!(parse_signal("SIGSTOP").is_err());
    }

    #[test]
    fn the_notify_url_flag_wins_over_the_spec_and_is_held_to_loopback() {
        let opts = |url: Option<&str>, method: Option<&str>| Options {
            at_percent: None,
            notify_signal: None,
            notify_process: None,
            notify_command: None,
            notify_args: vec![],
            notify_url: url.map(str::to_owned),
            notify_method: method.map(str::to_owned),
            revoke_on_exit: false,
            min_interval: Duration::from_secs(1),
        };
        let signal = Notify::Signal {
            signal: "SIGHUP".into(),
            process: "nginx".into(),
        };
        let flag = Notifier::new(
            &opts(Some("http://localhost:8080/actuator/refresh"), Some("put")),
            Some(&signal),
        )
        .unwrap();
        assert!(matches!(&flag, Notifier::Http { method, url, .. }
                if method == reqwest::Method::PUT && url.as_str() == "http://localhost:8080/actuator/refresh"),);
        let from_spec = Notify::Http {
            url: "http://[::1]:9090/-/reload".into(),
            method: "POST".into(),
        };
        assert!(matches!(
            Notifier::new(&opts(None, None), Some(&from_spec)).unwrap(),
            Notifier::Http { method, .. } if method == reqwest::Method::POST
        ));
        for (url, method, want) in [
            ("http://10.1.2.3:80/", None, "the host must be"),
            (
                "http://127.0.0.1:80/",
                Some("DELETE"),
                "not one of POST, PUT, GET",
            ),
        ] {
            let e = Notifier::new(&opts(Some(url), method), None)
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn finds_processes_by_comm_but_never_itself() {
        let me = std::fs::read_to_string("/proc/self/comm").unwrap();
        let found = find_processes(me.trim());
        assert!(!found.contains(&(std::process::id() as i32)));
        assert!(find_processes("no-such-process-esi").is_empty());
    }
}
