#!/usr/bin/env bash
# moto's server for the tests that call AWS: STS, ECR and Secrets Manager (the backends' AWS
# generators) and Secrets Manager again (the federation's lease keys, federation-fn/tests/lambda.rs).
#   up:   installs moto[server] into a venv under $ESI_PEERS_DIR if missing, starts it on
#         127.0.0.1 with a free port and request recording on (so tests can assert what the
#         SDK sent: moto itself validates nothing), prints ESI_TEST_MOTO_URL.
#   down: stops it.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

DIR="$(peers_dir)"
STATE="$DIR/moto"
VENV="$DIR/venv-moto"

up() {
    mkdir -p "$STATE"
    if [ ! -x "$VENV/bin/moto_server" ]; then
        venv_install "$VENV" "moto[server]>=5.1,<6"
    fi
    if alive "$STATE/pid" && [ -f "$STATE/env" ]; then
        cat "$STATE/env"
        return
    fi
    local port
    port="$(free_port)"
    : >"$STATE/recording.jsonl"
    MOTO_ENABLE_RECORDING=true MOTO_RECORDER_FILEPATH="$STATE/recording.jsonl" \
        setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$STATE/server.log" 2>&1 </dev/null &
    echo $! >"$STATE/pid"
    wait_for 30 "$STATE/server.log" curl -sf "http://127.0.0.1:$port/moto-api/data.json"
    cat >"$STATE/env" <<ENV
export ESI_TEST_MOTO_URL=http://127.0.0.1:$port
ENV
    cat "$STATE/env"
}

down() {
    stop_pid "$STATE/pid"
    rm -f "$STATE/env"
}

case "${1:-}" in
up) up ;;
down) down ;;
*) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
