//! Log lines of the esi servers (federation and webhook): one JSON object or one plain line per
//! event, filtered by an [`EnvFilter`], written to stderr directly or through a batching
//! writer thread.
//!
//! **Batched sink.** Servers write a line per request (the federation's audit line, the
//! webhook's admission line), and one `write(2)` per line was a tenth of a request's cost.
//! Lines are appended to a buffer that one thread writes out at most [`LINGER`] after its first
//! line (or at once by the logging thread when [`HIGH_WATER`] bytes wait), so under load many
//! lines share a syscall and when idle nothing wakes up. [`flush`] runs at exit and from the
//! panic hook; a `SIGKILL` can lose at most the last [`LINGER`] of lines. Processes that must
//! not hold lines back (a Lambda sandbox is frozen between invocations, CLI commands exit)
//! write directly.
//!
//! **JSON lines.** `{"timestamp":…,"level":…,<fields, message included>,"target":…}`, the
//! shape of tracing-subscriber's flattened JSON format, written by [`JsonLayer`] straight into
//! a reused per-thread buffer (tracing-subscriber's formatter goes through `fmt::Write`
//! adaptors and re-validates every fragment as UTF-8, about 3 µs per audit line).

use std::cell::RefCell;
use std::fmt;
use std::io::Write as _;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

/// How long a batched line may wait before it is written.
pub const LINGER: Duration = Duration::from_millis(5);
/// Bytes waiting at which the logging thread writes the batch itself.
pub const HIGH_WATER: usize = 256 * 1024;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// One `write(2)` to stderr per line.
    Direct,
    /// Batched writes to stderr by a background thread (see the crate docs).
    Batched,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber: `filter`, lines in `format`, written to `sink`. A second
/// call is ignored (the first subscriber stays).
pub fn install(format: LogFormat, filter: EnvFilter, sink: Sink) {
    // Without its thread the batch would only be written at HIGH_WATER: write directly then.
    let writer = match sink {
        Sink::Batched => batched().map(BoxMakeWriter::new),
        Sink::Direct => None,
    }
    .unwrap_or_else(|| BoxMakeWriter::new(std::io::stderr));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry.with(JsonLayer::new(writer)).try_init(),
        LogFormat::Plain => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(writer),
            )
            .try_init(),
    };
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

/// One event's line: the layer formats the whole line, then writes it with one `write_all`.
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

/// A [`Layer`] writing each event as one JSON object per line to `W`.
pub struct JsonLayer<W> {
    make_writer: W,
}

impl<W> JsonLayer<W> {
    /// Lines go to `make_writer`, one `write_all` per line.
    pub fn new(make_writer: W) -> Self {
        JsonLayer { make_writer }
    }
}

/// The buffers an event is formatted in.
#[derive(Default)]
struct Buffers {
    /// The line.
    line: Vec<u8>,
    /// Text of `Debug`/`Display` values before escaping.
    scratch: String,
}

thread_local! {
    /// Reused by every event of this thread.
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers {
        line: Vec::with_capacity(512),
        scratch: String::with_capacity(128),
    });
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber,
    W: for<'a> MakeWriter<'a> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let write = |buffers: &mut Buffers| {
            buffers.line.clear();
            format_line(buffers, event, jiff::Timestamp::now());
            let _ = self
                .make_writer
                .make_writer_for(event.metadata())
                .write_all(&buffers.line);
        };
        // An event logged while formatting (from a Debug impl) gets its own buffers.
        BUFFERS.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buffers) => write(&mut buffers),
            Err(_) => write(&mut Buffers::default()),
        });
    }
}

/// Appends `event` as one JSON line to `buffers.line`.
fn format_line(buffers: &mut Buffers, event: &Event<'_>, now: jiff::Timestamp) {
    let meta = event.metadata();
    let out = &mut buffers.line;
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "{{\"timestamp\":\"{now:.6}\",\"level\":\"{}\"",
        meta.level()
    );
    let mut fields = JsonFields {
        out,
        scratch: &mut buffers.scratch,
    };
    event.record(&mut fields);
    let out = fields.out;
    out.extend_from_slice(b",\"target\":");
    json_str(out, meta.target());
    out.extend_from_slice(b"}\n");
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's string escaping (quotes, backslashes, control characters); a Vec cannot
    // fail to grow short of aborting.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Writes fields as `,"name":value` pairs.
struct JsonFields<'a> {
    out: &'a mut Vec<u8>,
    /// Text of `Debug`/`Display` values before escaping.
    scratch: &'a mut String,
}

impl JsonFields<'_> {
    fn key(&mut self, field: &Field) {
        self.out.push(b',');
        json_str(self.out, field.name());
        self.out.push(b':');
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        json_str(self.out, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.scratch.clear();
        // `%x` fields arrive here as Debug wrappers of Display, the message as `Arguments`.
        let _ = fmt::Write::write_fmt(&mut self.scratch, format_args!("{value:?}"));
        json_str(self.out, self.scratch);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.key(field);
        self.scratch.clear();
        let _ = fmt::Write::write_fmt(&mut self.scratch, format_args!("{value}"));
        json_str(self.out, self.scratch);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        // Non-finite numbers have no JSON form: serde_json writes null.
        let _ = serde_json::to_writer(&mut *self.out, &value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }
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

    impl<'a> MakeWriter<'a> for Shared {
        type Writer = Shared;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// Runs `f` under a subscriber with only the JSON layer; returns the lines it wrote.
    fn json_lines(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let out = Shared::default();
        let subscriber = tracing_subscriber::registry().with(JsonLayer::new(out.clone()));
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(text.ends_with('\n'), "{text:?}");
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn json_lines_carry_every_field_type_escaped() {
        let err = std::io::Error::other("disk \"full\"");
        let lines = json_lines(|| {
            tracing::info!(
                target: "esi::audit",
                request_id = %"r-1",
                namespace = "team\n\"a\"",
                allowed = true,
                code = "ok",
                count = 3u64,
                delta = -2i64,
                latency_ms = 0.25,
                nan = f64::NAN,
                debug = ?Some("x"),
                error = &err as &(dyn std::error::Error + 'static),
                "decision {}", 7
            );
            tracing::warn!("second");
        });
        assert_eq!(lines.len(), 2);
        let l = &lines[0];
        assert_eq!(l["level"], "INFO");
        assert_eq!(l["target"], "esi::audit");
        assert_eq!(l["message"], "decision 7");
        assert_eq!(l["request_id"], "r-1");
        assert_eq!(l["namespace"], "team\n\"a\"");
        assert_eq!(l["allowed"], true);
        assert_eq!(l["count"], 3);
        assert_eq!(l["delta"], -2);
        assert_eq!(l["latency_ms"], 0.25);
        assert!(l["nan"].is_null());
        assert_eq!(l["debug"], "Some(\"x\")");
        assert_eq!(l["error"], "disk \"full\"");
        let ts = l["timestamp"].as_str().unwrap();
        let parsed: jiff::Timestamp = ts.parse().unwrap_or_else(|e| panic!("{ts}: {e}"));
        assert!(
            (jiff::Timestamp::now() - parsed).get_seconds().abs() < 60,
            "{ts}"
        );
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["message"], "second");
    }

    #[test]
    fn logging_from_inside_a_field_leaves_the_line_whole() {
        struct Noisy;
        impl fmt::Debug for Noisy {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                tracing::info!("inner");
                f.write_str("noisy")
            }
        }
        // tracing drops events raised inside the subscriber; the outer line must stay intact.
        let lines = json_lines(|| tracing::info!(value = ?Noisy, "outer"));
        let outer = lines.iter().find(|l| l["message"] == "outer").unwrap();
        assert_eq!(outer["value"], "noisy");
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
