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
