//! Logging setup: plain or JSON lines, filtered by `ESI_LOG` (default `info`). On AWS Lambda,
//! `AWS_LAMBDA_LOG_FORMAT=JSON` and `AWS_LAMBDA_LOG_LEVEL` are honoured.
//!
//! The server writes its lines through a [`Sink::Batched`] stderr: every issuance writes an
//! audit line, and one `write(2)` per line was a tenth of a request's cost. Lines are appended
//! to a buffer that one thread writes out at most [`LINGER`] after its first line (or at once by
//! the logging thread when [`HIGH_WATER`] bytes wait), so under load many lines share a syscall
//! and when idle nothing wakes up. [`flush`] runs at exit and from the panic hook; a `SIGKILL`
//! can lose at most the last [`LINGER`] of lines. Lambda and the CLI commands write directly
//! (a frozen Lambda sandbox must not hold lines back).

use std::io::Write as _;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// How long a batched line may wait before it is written.
pub const LINGER: Duration = Duration::from_millis(5);
/// Bytes waiting at which the logging thread writes the batch itself.
pub const HIGH_WATER: usize = 256 * 1024;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// One `write(2)` to stderr per line.
    Direct,
    /// Batched writes to stderr by a background thread (see the module docs).
    Batched,
}

/// The batched writer.
struct Batch {
    pending: Mutex<Vec<u8>>,
    nonempty: Condvar,
    /// Held while a batch is taken and written, so batches reach the output in order.
    output: Mutex<Box<dyn std::io::Write + Send>>,
}

impl Batch {
    fn new(output: Box<dyn std::io::Write + Send>) -> Self {
        Batch {
            pending: Mutex::default(),
            nonempty: Condvar::new(),
            output: Mutex::new(output),
        }
    }

    fn push(&self, line: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let was_empty = pending.is_empty();
        pending.extend_from_slice(line);
        let full = pending.len() >= HIGH_WATER;
        drop(pending);
        if full {
            self.flush();
        } else if was_empty {
            self.nonempty.notify_one();
        }
    }

    fn flush(&self) {
        let mut output = self.output.lock().unwrap_or_else(|p| p.into_inner());
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if !batch.is_empty() {
            // Nowhere to report a failing stderr; the lines are dropped like eprintln! would.
            let _ = output.write_all(&batch).and_then(|()| output.flush());
        }
    }

    fn run(self: Arc<Self>) {
        loop {
            {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                while pending.is_empty() {
                    pending = self
                        .nonempty
                        .wait(pending)
                        .unwrap_or_else(|p| p.into_inner());
                }
            }
            std::thread::sleep(LINGER);
            self.flush();
        }
    }
}

static BATCH: OnceLock<Arc<Batch>> = OnceLock::new();

/// Writes out lines still waiting in the batched sink (a no-op with [`Sink::Direct`]).
pub fn flush() {
    if let Some(b) = BATCH.get() {
        b.flush();
    }
}

#[derive(Clone)]
struct BatchedStderr(Arc<Batch>);

/// One event's line: tracing-subscriber formats the whole line, then writes it with one
/// `write_all`.
struct Line<'a>(&'a Batch);

impl std::io::Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedStderr {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line(&self.0)
    }
}

/// The batched sink, starting its thread on first use; `None` when the thread cannot start.
fn batched() -> Option<BatchedStderr> {
    if let Some(b) = BATCH.get() {
        return Some(BatchedStderr(b.clone()));
    }
    let batch = Arc::new(Batch::new(Box::new(std::io::stderr())));
    let worker = batch.clone();
    std::thread::Builder::new()
        .name("esi-log".into())
        .spawn(move || worker.run())
        .ok()?;
    let batch = BATCH.get_or_init(|| batch).clone();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush();
        hook(info);
    }));
    Some(BatchedStderr(batch))
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber writing each line directly to stderr (idempotent: a second
/// call is ignored).
pub fn init(format: Option<LogFormat>) {
    init_with(format, Sink::Direct);
}

/// Installs the global subscriber with the given sink (idempotent: a second call is ignored).
pub fn init_with(format: Option<LogFormat>, sink: Sink) {
    let format = format.unwrap_or_else(|| {
        let lambda_json =
            std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
        let esi_json =
            std::env::var("ESI_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
        if lambda_json || esi_json {
            LogFormat::Json
        } else {
            LogFormat::Plain
        }
    });
    // Without an explicit ESI_LOG the backends' SDKs stay quiet (they never log bodies at these
    // levels, but their connection chatter drowns the audit lines).
    let level = std::env::var("ESI_LOG")
        .or_else(|_| {
            std::env::var("AWS_LAMBDA_LOG_LEVEL").map(|l| {
                format!(
                    "{},{}",
                    l.to_lowercase(),
                    esi_backends::QUIET_LOG_DIRECTIVES
                )
            })
        })
        .unwrap_or_else(|_| format!("info,{}", esi_backends::QUIET_LOG_DIRECTIVES));
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    // Without its thread the batch would only be written at HIGH_WATER: write directly then.
    let writer = match sink {
        Sink::Batched => batched().map(BoxMakeWriter::new),
        Sink::Direct => None,
    }
    .unwrap_or_else(|| BoxMakeWriter::new(std::io::stderr));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Plain => builder.with_ansi(false).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn batched_lines_arrive_whole_in_order_and_soon() {
        let out = Shared::default();
        let batch = Arc::new(Batch::new(Box::new(out.clone())));
        let worker = batch.clone();
        std::thread::spawn(move || worker.run());
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let b = batch.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        b.push(format!("{t} {i:05} {}\n", "x".repeat(100)).as_bytes());
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        // The thread writes the tail within LINGER, without an explicit flush.
        let deadline = Instant::now() + Duration::from_secs(5);
        while out.0.lock().unwrap().len() < 4 * 2000 * 109 {
            assert!(Instant::now() < deadline, "lines were held back");
            std::thread::sleep(Duration::from_millis(1));
        }
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let mut next = [0usize; 4];
        for line in text.lines() {
            let (t, rest) = line.split_once(' ').unwrap();
            let (i, pad) = rest.split_once(' ').unwrap();
            assert_eq!(pad.len(), 100, "a line was torn: {line:?}");
            let t: usize = t.parse().unwrap();
            assert_eq!(
                i.parse::<usize>().unwrap(),
                next[t],
                "thread {t}'s lines out of order"
            );
            next[t] += 1;
        }
        assert_eq!(next, [2000; 4]);
    }

    #[test]
    fn a_full_batch_is_written_by_the_logging_thread() {
        // No background thread: only HIGH_WATER or flush() write.
        let out = Shared::default();
        let batch = Batch::new(Box::new(out.clone()));
        batch.push(b"first\n");
        assert!(out.0.lock().unwrap().is_empty());
        batch.push(&vec![b'y'; HIGH_WATER]);
        assert_eq!(out.0.lock().unwrap().len(), HIGH_WATER + 6);
        batch.push(b"last\n");
        batch.flush();
        assert!(out.0.lock().unwrap().ends_with(b"last\n"));
    }
}
