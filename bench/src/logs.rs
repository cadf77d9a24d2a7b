//! A server's log lines, taken the way deployments take them: through a pipe.
//!
//! A container runtime (the containerd shim, CRI-O's conmon) and Lambda read a process's stderr
//! from a pipe, on other cores than the process's. The bench reads it in a thread of its own
//! (on the load generator's core, where the bench runs), picks out the line that says where
//! the server listens, and keeps the first and the last 64 KB, which it shows when a server
//! fails. A file instead would be hundreds of MB of audit lines per full run, and ext4's
//! page-cache writes on the server's core for every batch of lines (6 % of figure 2's server
//! core in a profile, see bench/FINDINGS.md, session 14), which no deployment pays.
//! (`esi_federation::testkit::ServeLogs` reads a server's stderr for the tests too, but keeps
//! every line: a bench run writes millions.)

use std::io::BufRead as _;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Bytes kept of the start and of the end of a server's log.
const KEPT_BYTES: usize = 64 * 1024;

/// Capacity asked of the pipe (`/proc/sys/fs/pipe-max-size`'s default): the reader shares its
/// core with the load generator, and a 64 KB pipe holds about one 5 ms batch of figure 2's
/// audit lines, so a reader waiting for its turn would stall the server's writes.
const PIPE_BYTES: usize = 1024 * 1024;

/// A server's stderr, read through a pipe until the server exits: its first and last 64 KB,
/// and what a watcher picked out of the first line it recognised (where the server listens).
#[derive(Default)]
pub struct Log {
    shared: Arc<Mutex<Kept>>,
}

#[derive(Default)]
struct Kept {
    head: Vec<u8>,
    /// Everything after the first line that did not fit the head (never empty again once a
    /// line went there).
    tail: Vec<u8>,
    left_out: usize,
    picked: Option<String>,
}

impl Kept {
    fn keep(&mut self, line: &[u8]) {
        if self.tail.is_empty() && self.head.len() + line.len() <= KEPT_BYTES {
            self.head.extend_from_slice(line);
            return;
        }
        self.tail.extend_from_slice(line);
        if self.tail.len() > 2 * KEPT_BYTES {
            // Drop whole lines from the front, down to the last 64 KB.
            let cut = self.tail.len() - KEPT_BYTES;
            let cut = self.tail[cut..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(cut, |i| cut + i + 1);
            self.left_out += cut;
            self.tail.drain(..cut);
        }
    }
}

impl Log {
    /// Points `cmd`'s stderr at a new pipe and starts reading it, line by line; `pick`, when
    /// given, is asked about each line until it returns something, which [`Log::picked`] then
    /// holds. The write end is `cmd`'s, so it closes in this process when `cmd` is dropped
    /// after the spawn; the reading thread ends when the server has exited.
    pub fn pipe_stderr(
        cmd: &mut Command,
        mut pick: Option<fn(&str) -> Option<String>>,
    ) -> anyhow::Result<Log> {
        let (reader, writer) = std::io::pipe().context("creating the log pipe")?;
        // A smaller pipe still works; the note above says what it risks.
        let _ = rustix::pipe::fcntl_setpipe_size(&writer, PIPE_BYTES);
        cmd.stderr(writer);
        let log = Log::default();
        let shared = log.shared.clone();
        std::thread::Builder::new()
            .name("server-log".into())
            .spawn(move || {
                let mut reader = std::io::BufReader::with_capacity(64 * 1024, reader);
                let mut line = Vec::with_capacity(1024);
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    }
                    let picked =
                        pick.and_then(|pick| pick(String::from_utf8_lossy(&line).trim_end()));
                    let mut kept = shared.lock().unwrap_or_else(|e| e.into_inner());
                    if picked.is_some() {
                        pick = None;
                        kept.picked = picked;
                    }
                    kept.keep(&line);
                }
            })
            .context("starting the log reader")?;
        Ok(log)
    }

    /// What the watcher picked out, once a line gave it.
    pub fn picked(&self) -> Option<String> {
        self.lock().picked.clone()
    }

    /// Waits up to `within` for the watcher to pick something out of `child`'s log. If `child`
    /// exits or the time runs out first (then `child` is killed), the error names it (`what`)
    /// and shows the log.
    pub async fn wait_picked(
        &self,
        child: &mut Child,
        what: &str,
        within: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(picked) = self.picked() {
                return Ok(picked);
            }
            if let Some(status) = child.try_wait()? {
                bail!("{what} exited with {status}:\n{}", self.text());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{what} did not say where it listens within {within:?}:\n{}",
                    self.text()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The first and the last 64 KB the server wrote so far, and how much was left out between.
    pub fn text(&self) -> String {
        let kept = self.lock();
        let mut text = String::from_utf8_lossy(&kept.head).into_owned();
        if kept.left_out > 0 {
            text.push_str(&format!("[… {} bytes left out …]\n", kept.left_out));
        }
        text.push_str(&String::from_utf8_lossy(&kept.tail));
        text
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_start_and_the_end_of_what_a_process_writes_and_drains_the_rest() {
        let mut cmd = Command::new("sh");
        // 2 MB of lines between a first and a last line: more than is kept and than the pipe
        // holds, so the process only exits if the reader drains everything.
        cmd.args([
            "-c",
            "echo first line >&2; yes 0123456789abcdef | head -n 120000 >&2; echo ready at 1.2.3.4 >&2; echo last line >&2",
        ]);
        let log = Log::pipe_stderr(
            &mut cmd,
            Some(|line| line.strip_prefix("ready at ").map(str::to_owned)),
        )
        .unwrap();
        let mut child = cmd.spawn().unwrap();
        drop(cmd);
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() || !log.text().ends_with("last line\n") {
            assert!(
                Instant::now() < deadline,
                "the log was not drained to its end"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(log.picked().as_deref(), Some("1.2.3.4"));
        let text = log.text();
        assert!(
            text.starts_with("first line\n0123456789abcdef\n"),
            "{:?}",
            text.chars().take(40).collect::<String>()
        );
        assert!(text.contains(" bytes left out …]\n"));
        assert!(text.len() < 3 * KEPT_BYTES, "{} bytes kept", text.len());
    }
}
