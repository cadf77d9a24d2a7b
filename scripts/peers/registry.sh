#!/usr/bin/env bash
# The CNCF Distribution registry (Debian's docker-registry, the `registry:2` image's program),
# the real registry the webhook's entrypoint lookup reads image configurations from. The test
# starts it itself on 127.0.0.1 (HTTPS with a throwaway CA, optionally htpasswd auth) and
# pushes the images it needs through the registry's HTTP API.
#   up:   unpacks the docker-registry package from apt into the peers' directory without
#         installing it (no maintainer scripts: no system user, no service started on port
#         5000). Prints ESI_TEST_REGISTRY, the program.
#   down: nothing to stop (the test stops its registry).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

DIR="$(peers_dir)"

up() {
    local registry
    if command -v docker-registry >/dev/null 2>&1; then
        registry="$(command -v docker-registry)"
    else
        local root="$DIR/docker-registry"
        registry="$root/tree/usr/bin/docker-registry"
        if [ ! -x "$registry" ]; then
            rm -rf "$root" && mkdir -p "$root/pkg"
            # `apt-get download` writes into the working directory.
            (cd "$root/pkg" && apt_twice download -q docker-registry)
            dpkg -x "$root"/pkg/docker-registry_*.deb "$root/tree"
        fi
    fi
    "$registry" --version >/dev/null
    echo "export ESI_TEST_REGISTRY=$registry"
}

case "${1:-}" in
up) up ;;
down) ;;
*) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
