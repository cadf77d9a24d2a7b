#!/usr/bin/env bash
# The workspace's API documentation builds without warnings: a public item's doc that links a
# private one, a broken intra-doc link or a bad code block fails here instead of on docs.rs
# or a reader's `cargo doc --open`. Exits non-zero on any warning.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -D warnings" cargo doc --workspace --no-deps --quiet
