#!/usr/bin/env bash
# The README's test command (and what .ci/run calls): installs and starts every peer the tests
# need (scripts/peers/*.sh: OpenBao, PostgreSQL, moto, ...), runs the whole Rust test suite with
# ESI_REQUIRE_PEERS=1 (so a missing peer fails instead of skipping), then the non-cargo checks
# (scripts/checks/*.sh: API docs, images, manifests, Terraform), and stops the peers again.
set -euo pipefail
cd "$(dirname "$0")/.."
export ESI_PEERS_DIR="${ESI_PEERS_DIR:-$PWD/.peers}"
export ESI_REQUIRE_PEERS=1
mkdir -p "$ESI_PEERS_DIR"
# A full build and test run needs a few GB under target/ and the peers' directory; say what
# the disk had, so a "No space left on device" further down explains itself.
echo "==> disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free under $PWD"

started=()
stop_peers() {
  for name in "${started[@]}"; do
    scripts/peers/"$name".sh down >/dev/null 2>&1 || true
  done
}
trap stop_peers EXIT

for script in scripts/peers/*.sh; do
  [ -e "$script" ] || continue
  name=$(basename "$script" .sh)
  echo "==> starting peer: $name"
  exports=$("$script" up)
  started+=("$name")
  eval "$exports"
done

# The end-to-end tests in tests/ drive the real binaries (esi-cli, esi-federation) as
# subprocesses; `cargo test` builds a package's binaries only for that package's own tests.
echo "==> cargo build --workspace --bins"
cargo build --workspace --bins
echo "==> cargo test --workspace"
cargo test --workspace --all-targets

for check in scripts/checks/*.sh; do
  [ -e "$check" ] || continue
  echo "==> check: $(basename "$check" .sh)"
  "$check"
done
echo "==> all tests passed"
