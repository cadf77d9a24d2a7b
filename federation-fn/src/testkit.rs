//! Support for tests that need an external peer (OpenBao, PostgreSQL, moto, ...), shared by the
//! federation's own tests and the end-to-end tests in `tests/`.
//!
//! The README's test command (`./scripts/test-all.sh`) starts every peer, exports its address
//! and sets `ESI_REQUIRE_PEERS=1`; a plain `cargo test` skips peer tests loudly instead.

use std::io::Write as _;

/// The value of a peer's env var `var`. When it is absent: a panic saying how to start the peer
/// under `ESI_REQUIRE_PEERS=1`, otherwise a `SKIPPED` line and `None`.
///
/// The line is written to `/dev/stderr` directly: libtest captures `eprintln!` of passing tests,
/// which would hide the skip.
pub fn peer(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(
                std::env::var("ESI_REQUIRE_PEERS").as_deref() != Ok("1"),
                "{test}: {var} is not set and ESI_REQUIRE_PEERS=1: start the peers with ./scripts/test-all.sh (or eval \"$(scripts/peers/<name>.sh up)\")"
            );
            let line = format!(
                "SKIPPED: {test}: {var} is not set; run ./scripts/test-all.sh to start the peers\n"
            );
            match std::fs::OpenOptions::new().write(true).open("/dev/stderr") {
                Ok(mut f) => {
                    let _ = f.write_all(line.as_bytes());
                }
                Err(_) => eprint!("{line}"),
            }
            None
        }
    }
}

/// The address `esi-federation serve` announces in its JSON "serving" log line, when `line` is
/// that line.
pub fn serving_addr(line: &str) -> Option<String> {
    announced_addr(line, "esi federation serving")
}

/// The `addr` field of a JSON log line whose message is `message` (how the esi servers
/// announce where they listen), when `line` is that line.
pub fn announced_addr(line: &str, message: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    (v["message"] == message)
        .then(|| v["addr"].as_str().map(str::to_owned))
        .flatten()
}

/// Every line of a spawned `esi-federation serve`'s stderr, collected by a reader thread, and
/// the address of its "serving" line once it is logged.
pub struct ServeLogs {
    /// The lines so far.
    pub lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Receives the serving address.
    pub serving: std::sync::mpsc::Receiver<String>,
}

impl ServeLogs {
    /// Starts reading `stderr` on its own thread.
    pub fn follow(stderr: impl std::io::Read + Send + 'static) -> ServeLogs {
        use std::io::BufRead as _;
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, serving) = std::sync::mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(addr) = serving_addr(&line) {
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        ServeLogs { lines, serving }
    }

    /// Everything logged so far, one line each.
    pub fn text(&self) -> String {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// Whether a line containing `needle` is logged within 5 s (the server batches its lines:
    /// one reaches stderr up to `esi_telemetry::LINGER` after it is logged).
    pub fn logged(&self, needle: &str) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let found = self
                .lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|l| l.contains(needle));
            if found {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
