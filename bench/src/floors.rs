//! The floor servers (`esi-bench-floor`): the serving stack of the federation and the webhook
//! with nothing of esi in it, started on the server core like them, so a figure can be read
//! against what the same bytes cost on the same machine in the same minute.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::bail;
use http::{Method, StatusCode};

use crate::load::{self, Dialer, Prepared};
use crate::pin;

/// A running floor server, killed on drop.
pub struct Floor {
    child: Child,
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bin` with `args` on `core`, listening on `addr`, and waits until `dial` gets its
/// `/healthz`.
pub async fn start(
    bin: &Path,
    core: usize,
    addr: &str,
    args: &[&str],
    dial: &Dialer,
) -> anyhow::Result<Floor> {
    let mut cmd = Command::new(bin);
    cmd.args(["--listen", addr])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut floor = Floor {
        child: pin::spawn_on(core, cmd)?,
    };
    let health = Prepared::new(Method::GET, "/healthz", None, None)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = dial.connect().await
            && let Ok((StatusCode::OK, _)) = load::send(&mut c, &health).await
        {
            return Ok(floor);
        }
        if let Some(status) = floor.child.try_wait()? {
            bail!("{} exited with {status}", bin.display());
        }
        if Instant::now() > deadline {
            bail!("{} did not answer within 30 s", bin.display());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
