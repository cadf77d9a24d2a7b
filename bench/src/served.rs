//! Server processes the bench starts on the server core (the webhook, the floors): killed when
//! dropped, ready once their `/healthz` answers.
//!
//! The floor servers (`esi-bench-floor`) are the serving stack of the federation and the webhook
//! with nothing of esi in it, so a figure can be read against what the same bytes cost on the
//! same machine in the same minute.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use http::{Method, StatusCode};

use crate::load::{self, Dialer, Prepared};
use crate::logs::Log;
use crate::pin;

/// A running server, killed on drop (with the folder of its files, if any).
pub struct Served {
    child: Child,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to 30 s until `dial` gets `200` from `child`'s `/healthz`. If `child` exits first
/// the error names it (`what`) and shows its `log` when there is one.
pub async fn wait_healthy(
    child: Child,
    dial: &Dialer,
    what: &str,
    log: Option<&Log>,
    dir: Option<tempfile::TempDir>,
) -> anyhow::Result<Served> {
    let mut served = Served { child, _dir: dir };
    let health = Prepared::new(Method::GET, "/healthz", None, None)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = dial.connect().await
            && let Ok((StatusCode::OK, _)) = load::send(&mut c, &health).await
        {
            return Ok(served);
        }
        if let Some(status) = served.child.try_wait()? {
            let text = log.map(Log::text).unwrap_or_default();
            bail!("{what} exited with {status}: {text}");
        }
        if Instant::now() > deadline {
            bail!("{what} did not answer /healthz within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Starts `cmd`, a server told to listen on port 0, on `core`, its stderr through a [`Log`]
/// whose watcher `pick` finds the address the server announces (so no other process can take
/// the port in between); ready when the dialer `dial` makes for that address gets its
/// `/healthz`. Returns the dialer too.
pub async fn start(
    mut cmd: Command,
    core: usize,
    what: &str,
    pick: fn(&str) -> Option<String>,
    dial: impl FnOnce(SocketAddr) -> anyhow::Result<Dialer>,
    dir: Option<tempfile::TempDir>,
) -> anyhow::Result<(Served, Dialer)> {
    let log = Log::pipe_stderr(&mut cmd, Some(pick))?;
    let mut child = pin::spawn_on(core, cmd)?;
    let addr = log
        .wait_picked(&mut child, what, Duration::from_secs(30))
        .await?;
    let dial = dial(addr.parse().context("the announced listening address")?)?;
    let served = wait_healthy(child, &dial, what, Some(&log), dir).await?;
    Ok((served, dial))
}

/// Starts the floor server `bin` with `args` on `core` (see [`start`]).
pub async fn floor(
    bin: &Path,
    core: usize,
    args: &[&str],
    dial: impl FnOnce(SocketAddr) -> anyhow::Result<Dialer>,
) -> anyhow::Result<(Served, Dialer)> {
    let mut cmd = Command::new(bin);
    cmd.args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    start(
        cmd,
        core,
        &bin.display().to_string(),
        listening_addr,
        dial,
        None,
    )
    .await
}

/// The address of `esi-bench-floor`'s "listening on ADDR" line.
fn listening_addr(line: &str) -> Option<String> {
    line.strip_prefix("listening on ").map(str::to_owned)
}
