//! A deliberately tiny logger on stderr: plain lines or JSON lines (`ESI_LOG_FORMAT=json`).
//!
//! esi-cli logs a handful of events per run, so a tracing subscriber would cost more binary
//! size and start-up time than it saves. Callers pass only non-secret text: generator
//! references, aliases, paths, HTTP methods/paths/statuses and error codes. Request and response
//! bodies, tokens and credential values are never handed to this module.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

static VERBOSE: AtomicBool = AtomicBool::new(false);
static JSON: AtomicBool = AtomicBool::new(false);

/// Sets the verbosity and the format once, at start-up.
pub fn init(verbose: bool, json: bool) {
    VERBOSE.store(verbose, Ordering::Relaxed);
    JSON.store(json, Ordering::Relaxed);
}

/// Whether `--verbose` is on.
pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

fn emit(level: &str, message: &str) {
    let line = if JSON.load(Ordering::Relaxed) {
        serde_json::json!({
            "timestamp": jiff::Timestamp::now().to_string(),
            "level": level,
            "target": "esi-cli",
            "message": message,
        })
        .to_string()
    } else {
        format!("esi-cli: {message}")
    };
    // Logging must never fail the command.
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// An event worth seeing in the container's log.
pub fn info(message: &str) {
    emit("info", message);
}

/// A problem that does not stop the command.
pub fn warn(message: &str) {
    emit("warn", message);
}

/// Detail shown only with `--verbose` (requests, decisions).
pub fn debug(message: &str) {
    if verbose() {
        emit("debug", message);
    }
}
