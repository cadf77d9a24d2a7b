//! Server processes the bench starts on the server core (the webhook, the floors): killed when
//! dropped, ready once their `/healthz` answers.
//!
//! The floor servers (`esi-bench-floor`) are the serving stack of the federation and the webhook
//! with nothing of esi in it, so a figure can be read against what the same bytes cost on the
//! same machine in the same minute.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::bail;
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

/// Starts the floor server `bin` with `args` on `core`, listening on `addr`; ready when `dial`
/// gets its `/healthz`.
pub async fn floor(
    bin: &Path,
    core: usize,
    addr: &str,
    args: &[&str],
    dial: &Dialer,
) -> anyhow::Result<Served> {
    let mut cmd = Command::new(bin);
    cmd.args(["--listen", addr])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = pin::spawn_on(core, cmd)?;
    wait_healthy(child, dial, &bin.display().to_string(), None, None).await
}
