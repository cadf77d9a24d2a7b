//! Support for tests and the benchmark that run the federation's binary: reading the address
//! it announces and its log lines. (Finding an external peer is `esi_test_support::peer`.)

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
