#!/usr/bin/env bash
# Start or stop a throwaway PostgreSQL server for the test suite (CI uses it; so can you).
#
#   dir=$(mktemp -d)                                  # a directory the postgres user can reach
#   export TUNELAB_TEST_POSTGRES_URL=$(bash scripts/postgres.sh start "$dir" [PORT])
#   ...                                               # run the tests
#   bash scripts/postgres.sh stop "$dir"; rm -rf "$dir"
#
# `start` installs Debian's `postgresql` package with apt-get if no server binaries are found under
# /usr/lib/postgresql/<version>/bin (highest version wins), creates a cluster in DIR/data, and starts
# it listening on 127.0.0.1:PORT only (default: a free port), with its unix socket in DIR/run, its
# log in DIR/postgres.log and fsync off. It creates the role `tunelab` (random password, password
# auth over TCP) and its database `tunelab_test`, and prints the SQLAlchemy URL
# postgresql+psycopg://tunelab:PASSWORD@127.0.0.1:PORT/tunelab_test as the only line on stdout;
# everything else goes to stderr.
# PostgreSQL refuses to run as root, so as root the server runs as the `postgres` system user
# (created by the Debian package, or here if missing): DIR is chowned to it, and every directory
# above DIR must be traversable by it, which holds for `mktemp -d` under /tmp but not e.g. under
# /root. As any other user the server runs as that user. `stop` tolerates a server already stopped.
set -euo pipefail

ROLE=tunelab
DBNAME=tunelab_test
START_TIMEOUT=30

log() { echo "postgres.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

# Highest-versioned Debian server bin dir, e.g. /usr/lib/postgresql/15/bin ("" when none).
find_bindir() {
    local d best=""
    while IFS= read -r d; do
        [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && best=$d
    done < <(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V)
    echo "$best"
}

install_server() {
    [ "$(id -u)" = 0 ] || die "no PostgreSQL server under /usr/lib/postgresql/*/bin and not root;" \
        "install it with: sudo apt-get install postgresql"
    log "installing PostgreSQL with apt-get ..."
    export DEBIAN_FRONTEND=noninteractive
    local install=(apt-get install -y -qq --no-install-recommends postgresql)
    if ! "${install[@]}" >&2; then
        log "install failed; running apt-get update and retrying"
        apt-get update -qq >&2
        "${install[@]}" >&2
    fi
}

# Run a command as the user that owns the server: postgres when we are root, else ourselves.
# cd / first: the caller's working directory may be unreadable to postgres.
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    else  # no python: probe random high ports until one refuses connections
        local p
        for _ in $(seq 100); do
            p=$((20000 + RANDOM % 40000))
            if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
        done
        die "could not find a free port"
    fi
}

cmd_start() {
    local dir=${1:?usage: postgres.sh start DIR [PORT]} port=${2:-} fixed_port=1
    [ -n "$port" ] || fixed_port=0
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd -P)
    [ ! -e "$dir/data" ] || die "$dir/data already exists; use an empty directory"
    # Unix socket paths are limited to 107 bytes.
    [ ${#dir} -le 80 ] || die "directory path too long for a unix socket: $dir"

    local bindir
    bindir=$(find_bindir)
    if [ -z "$bindir" ]; then
        install_server
        bindir=$(find_bindir)
        [ -n "$bindir" ] || die "apt-get installed postgresql but no server found under /usr/lib/postgresql"
    fi
    log "using $bindir"

    if [ "$(id -u)" = 0 ]; then
        if ! id -u postgres >/dev/null 2>&1; then
            log "creating system user postgres"
            useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/sh postgres
        fi
        chown postgres: "$dir"
        as_pg test -w "$dir" -a -x "$dir" \
            || die "user postgres cannot reach $dir (use a directory under /tmp, e.g. from mktemp -d)"
    fi
    echo "$bindir" >"$dir/bindir"  # for `stop`
    as_pg mkdir -m 700 "$dir/run"

    local password
    password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    log "initdb $dir/data"
    as_pg "$bindir/initdb" -D "$dir/data" --no-locale -E UTF8 --auth-local=peer \
        --auth-host=scram-sha-256 --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; die "initdb failed"; }

    local attempt
    for attempt in 1 2 3; do
        [ "$fixed_port" = 1 ] || port=$(free_port)
        # Last setting wins, so appending overrides initdb's defaults.
        as_pg tee -a "$dir/data/postgresql.conf" >/dev/null <<EOF

# --- scripts/postgres.sh (attempt $attempt) ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/run'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
        log "starting on 127.0.0.1:$port (log: $dir/postgres.log)"
        if as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t "$START_TIMEOUT" \
            start >&2; then
            break
        fi
        tail -n 20 "$dir/postgres.log" >&2 || true
        as_pg "$bindir/pg_ctl" -D "$dir/data" stop -m immediate >/dev/null 2>&1 || true
        # A picked port may be taken between picking and binding: retry with a new one.
        [ "$fixed_port" = 0 ] && [ "$attempt" -lt 3 ] || die "server did not start"
        log "retrying with another port"
    done

    local i ready=0
    for ((i = 0; i < START_TIMEOUT * 2; i++)); do
        if "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port"; then ready=1; break; fi
        sleep 0.5
    done
    [ "$ready" = 1 ] || { tail -n 20 "$dir/postgres.log" >&2; die "server not ready after ${START_TIMEOUT}s"; }

    # As the superuser over the unix socket (peer auth); the role then logs in over TCP.
    as_pg "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir/run" -p "$port" -U postgres -d postgres \
        >&2 <<EOF
CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$password';
CREATE DATABASE $DBNAME OWNER $ROLE;
EOF
    log "ready"
    echo "postgresql+psycopg://$ROLE:$password@127.0.0.1:$port/$DBNAME"
}

cmd_stop() {
    local dir=${1:?usage: postgres.sh stop DIR}
    [ -d "$dir/data" ] || { log "no cluster in $dir"; return 0; }
    dir=$(cd "$dir" && pwd -P)
    local bindir
    bindir=$(cat "$dir/bindir" 2>/dev/null || find_bindir)
    # pg_ctl status: 0 = running; 3 = not running (also with a stale postmaster.pid).
    if ! as_pg "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        log "no server running in $dir"
        return 0
    fi
    local pid
    pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null || true)
    log "stopping server in $dir/data"
    as_pg "$bindir/pg_ctl" -D "$dir/data" stop -m fast -w >&2 \
        || ! as_pg "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1  # stopped meanwhile: fine
    # pg_ctl returns once the pid file is gone, just before the postmaster exits: wait (<= 5 s) for
    # the process itself to vanish (it is reaped by init, not by us), so none is seen left behind.
    local i
    for ((i = 0; i < 50; i++)); do
        [ -n "$pid" ] && [ -e "/proc/$pid" ] || break
        sleep 0.1
    done
}

case "${1:-}" in
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) echo "usage: $0 start DIR [PORT] | stop DIR" >&2; exit 2 ;;
esac
