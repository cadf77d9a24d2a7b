# Helpers shared by the peer scripts (sourced, not run). Each peer keeps its state under
# "$ESI_PEERS_DIR/<name>": pid file, log, and the `export` lines printed by `up`.

peers_dir() {
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
    local dir="${ESI_PEERS_DIR:-$root/.peers}"
    mkdir -p "$dir"
    (cd "$dir" && pwd)
}

# A TCP port the OS considers free right now on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# True when the pid file names a live process.
alive() {
    [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# Waits until the command succeeds, for at most $1 seconds; prints the log on failure.
wait_for() {
    local deadline=$((SECONDS + $1)) log="$2"
    shift 2
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "peer did not become ready in time; log follows ($log):" >&2
            tail -n 50 "$log" >&2 || true
            return 1
        fi
        sleep 0.2
    done
}

# Creates a venv at $1 and pip-installs the remaining arguments into it, quietly.
venv_install() {
    local venv="$1"
    shift
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    if ! "$venv/bin/pip" install -q --disable-pip-version-check "$@" >"$venv/pip.log" 2>&1; then
        echo "pip install $* failed; log follows:" >&2
        cat "$venv/pip.log" >&2
        return 1
    fi
}

# Stops the process named by a pid file, waiting up to 10 s.
stop_pid() {
    local pidfile="$1"
    if alive "$pidfile"; then
        local pid
        pid="$(cat "$pidfile")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

# apt-get "$@", once more after an index update when the first try fails; quiet unless both do
# (the log is "$DIR/apt.log": the calling script sets DIR to "$(peers_dir)" first, since this
# may run after a `cd`).
apt_twice() {
    local log="$DIR/apt.log"
    if ! { apt-get "$@" >"$log" 2>&1 || { apt-get update -q && apt-get "$@"; } >>"$log" 2>&1; }; then
        echo "apt-get $* failed; log follows:" >&2
        cat "$log" >&2
        return 1
    fi
}
