#!/usr/bin/env bash
# OpenSSH's ssh-keygen, the real reader the SSHKey generator's keys are checked against
# (`ssh-keygen -y` derives the public key from the private key the generator returns, `-Y sign`
# and `-Y verify` sign with it and check against the public key line, `-p -m PEM` rewrites RSA
# keys as PKCS#1 for a full consistency check).
#   up:   installs openssh-client from apt if ssh-keygen is missing, prints ESI_TEST_SSH_KEYGEN.
#   down: nothing to stop.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

DIR="$(peers_dir)"

up() {
    if ! command -v ssh-keygen >/dev/null 2>&1; then
        if ! { apt-get install -y -q openssh-client >"$DIR/apt-openssh.log" 2>&1 ||
            { apt-get update -q && apt-get install -y -q openssh-client; } >>"$DIR/apt-openssh.log" 2>&1; }; then
            echo "apt-get install openssh-client failed; log follows:" >&2
            cat "$DIR/apt-openssh.log" >&2
            return 1
        fi
    fi
    echo "export ESI_TEST_SSH_KEYGEN=$(command -v ssh-keygen)"
}

case "${1:-}" in
up) up ;;
down) ;;
*) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
