#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the backends' tests (OpenBao's database engine).
#   up:   installs postgresql from apt if missing, creates a cluster under
#         $ESI_PEERS_DIR/postgres (initdb + pg_ctl as user postgres, never the system
#         cluster), listening on 127.0.0.1 with a free port and password auth, and prints
#         ESI_TEST_PG_URL (the superuser's URL).
#   down: stops it and removes the cluster.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

DIR="$(peers_dir)"
STATE="$DIR/postgres"
DATA="$STATE/data"

pg_bin() {
    local bin
    bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$bin" ] && [ -x "$bin/initdb" ] && echo "$bin"
}

# Runs a command as the postgres user when we are root (initdb refuses root).
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

up() {
    if ! pg_bin >/dev/null; then
        if ! { apt-get install -y -q postgresql >"$DIR/apt-postgres.log" 2>&1 ||
            { apt-get update -q && apt-get install -y -q postgresql; } >>"$DIR/apt-postgres.log" 2>&1; }; then
            echo "apt-get install postgresql failed; log follows:" >&2
            cat "$DIR/apt-postgres.log" >&2
            return 1
        fi
    fi
    local bin
    bin="$(pg_bin)"
    if [ -f "$STATE/env" ] && as_pg "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        cat "$STATE/env"
        return
    fi
    rm -rf "$STATE"
    mkdir -p "$STATE"
    # The postgres user must reach its data folder through ours.
    chmod 755 "$DIR" "$STATE"
    local password port
    password="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
    port="$(free_port)"
    printf '%s\n' "$password" >"$STATE/pwfile"
    if [ "$(id -u)" = 0 ]; then chown -R postgres: "$STATE"; fi
    as_pg "$bin/initdb" -D "$DATA" -U postgres --pwfile="$STATE/pwfile" \
        --auth-host=scram-sha-256 --auth-local=trust -E UTF8 >"$STATE/initdb.log" 2>&1 ||
        { cat "$STATE/initdb.log" >&2; return 1; }
    rm -f "$STATE/pwfile"
    as_pg "$bin/pg_ctl" -D "$DATA" -l "$STATE/server.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$STATE -c max_connections=200" \
        start >/dev/null
    wait_for 30 "$STATE/server.log" "$bin/pg_isready" -h 127.0.0.1 -p "$port"
    cat >"$STATE/env" <<ENV
export ESI_TEST_PG_URL=postgres://postgres:$password@127.0.0.1:$port/postgres
ENV
    cat "$STATE/env"
}

down() {
    local bin
    if bin="$(pg_bin)" && [ -d "$DATA" ]; then
        as_pg "$bin/pg_ctl" -D "$DATA" -m fast -w -t 30 stop >/dev/null 2>&1 || true
    fi
    rm -rf "$STATE"
}

case "${1:-}" in
up) up ;;
down) down ;;
*) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
