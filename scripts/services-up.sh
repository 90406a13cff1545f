#!/usr/bin/env bash
# Starts private PostgreSQL and Redis instances for the test suite, on their own ports and
# data directories under target/services (never the machine's instances on 5432/6379),
# installing them from apt when missing. Idempotent: running instances are reused.
#
# Writes target/services/env and prints its lines on stdout:
#   export SBA_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:<pg port>/postgres
#   export SBA_TEST_REDIS_URL=redis://127.0.0.1:<redis port>
# so `source target/services/env` or `eval "$(scripts/services-up.sh)"` both work.
#
# Environment: SBA_TEST_PG_PORT (default 55432), SBA_TEST_REDIS_PORT (default 56379).
set -euo pipefail

SCRIPT_NAME="${0##*/}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"

readonly READY_TIMEOUT_SECS=30

install_missing() {
    local packages=()
    find_pg_bin || packages+=(postgresql)
    if ! have redis-server || ! have redis-cli; then
        packages+=(redis-server)
    fi
    ((${#packages[@]} == 0)) && return 0

    have apt-get ||
        die "missing ${packages[*]} and apt-get is not available; install them yourself"
    log "installing ${packages[*]} with apt-get (the packages' own instances are not used)"
    as_root apt-get update -q >&2
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${packages[@]}" >&2
    find_pg_bin || die "PostgreSQL is installed but initdb/pg_ctl were not found"
    have redis-server || die "redis-server was not found after install"
}

# Waits until "$@" succeeds; returns 1 after READY_TIMEOUT_SECS.
wait_until() {
    local deadline=$((SECONDS + READY_TIMEOUT_SECS))
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

wait_until_not() {
    local deadline=$((SECONDS + READY_TIMEOUT_SECS))
    while "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# Whether something accepts connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Waits for a port that another process still holds (typically a server of a previous run
# that is shutting down) before a server is started on it; fails naming the port otherwise.
wait_for_free_port() {
    local port=$1 what=$2
    port_open "$port" || return 0
    log "port $port is still in use (a $what of a previous run shutting down?); waiting up to ${READY_TIMEOUT_SECS}s"
    wait_until_not port_open "$port" ||
        die "port $port stays in use by something that is not a ready $what; free it or set the port variable"
}

fail_with_log() {
    local what=$1 logfile=$2
    log "error: $what"
    if [[ -f $logfile ]]; then
        log "last lines of $logfile:"
        tail -n 40 "$logfile" >&2
    fi
    exit 1
}

# Sets PG_DIR: target/services/pg when the PostgreSQL user can reach it, otherwise a
# per-clone directory under /tmp.
choose_pg_dir() {
    mkdir -p "$PG_DIR_IN_REPO"
    if ! is_root; then
        PG_DIR=$PG_DIR_IN_REPO
        return
    fi
    id -u postgres >/dev/null 2>&1 || die "user 'postgres' does not exist"
    chown postgres: "$PG_DIR_IN_REPO"
    chmod 0700 "$PG_DIR_IN_REPO"
    if as_pg test -w "$PG_DIR_IN_REPO" 2>/dev/null; then
        PG_DIR=$PG_DIR_IN_REPO
        return
    fi

    rmdir "$PG_DIR_IN_REPO" 2>/dev/null || true
    log "user postgres cannot reach $PG_DIR_IN_REPO (a parent directory is not traversable)"
    # A predictable path in /tmp: refuse one that someone else prepared.
    if [[ -e $PG_FALLBACK_PARENT || -L $PG_FALLBACK_PARENT ]]; then
        [[ -d $PG_FALLBACK_PARENT && ! -L $PG_FALLBACK_PARENT && -O $PG_FALLBACK_PARENT ]] ||
            die "$PG_FALLBACK_PARENT exists and is not a directory owned by $(id -un)"
    else
        mkdir -m 0755 "$PG_FALLBACK_PARENT"
    fi
    mkdir -p "$PG_DIR_FALLBACK"
    chown postgres: "$PG_DIR_FALLBACK"
    chmod 0700 "$PG_DIR_FALLBACK"
    as_pg test -w "$PG_DIR_FALLBACK" || die "user postgres cannot write $PG_DIR_FALLBACK either"
    PG_DIR=$PG_DIR_FALLBACK
}

pg_major() {
    "$PG_BIN/pg_ctl" --version | sed -E 's/^[^0-9]*([0-9]+).*/\1/'
}

write_pg_settings() {
    local data=$1 socket_dir=$PG_DIR
    # A unix socket path is limited to ~107 bytes; a deep checkout falls back to /tmp.
    if ((${#socket_dir} + 20 > 100)); then
        socket_dir=/tmp
    fi
    # Rewritten before every start so a changed SBA_TEST_PG_PORT takes effect.
    as_pg tee "$data/sba-test.conf" >/dev/null <<EOF
# Written by scripts/services-up.sh before each start; test-only settings.
listen_addresses = '127.0.0.1'
port = $SBA_TEST_PG_PORT
unix_socket_directories = '${socket_dir//\'/\'\'}'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
}

start_postgres() {
    local data logfile
    if pg_ready; then
        log "PostgreSQL already answers on 127.0.0.1:$SBA_TEST_PG_PORT; reusing it"
        return
    fi

    choose_pg_dir
    data="$PG_DIR/data"
    logfile="$PG_DIR/postgresql.log"
    log "PostgreSQL $(pg_major) from $PG_BIN, data in $data"

    if [[ -f $data/PG_VERSION && $(<"$data/PG_VERSION") != "$(pg_major)" ]]; then
        log "data directory was made by PostgreSQL $(<"$data/PG_VERSION"); recreating it"
        rm -rf "${data:?}"
    fi
    if [[ ! -f $data/PG_VERSION ]]; then
        log "initialising a new cluster"
        rm -rf "${data:?}"
        as_pg "$PG_BIN/initdb" -D "$data" --auth=trust -U postgres --encoding=UTF8 \
            --locale=C --no-sync >"$SERVICES_DIR/initdb.log" 2>&1 ||
            fail_with_log "initdb failed" "$SERVICES_DIR/initdb.log"
        rm -f "$SERVICES_DIR/initdb.log"
        printf "\ninclude_if_exists = 'sba-test.conf'\n" |
            as_pg tee -a "$data/postgresql.conf" >/dev/null
    fi

    # Our cluster may still run on another port (SBA_TEST_PG_PORT changed): restart it.
    if as_pg "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        log "our cluster runs on another port; restarting it on $SBA_TEST_PG_PORT"
        as_pg "$PG_BIN/pg_ctl" -D "$data" stop -m fast -w >/dev/null
    fi

    write_pg_settings "$data"
    wait_for_free_port "$SBA_TEST_PG_PORT" PostgreSQL
    log "starting PostgreSQL on 127.0.0.1:$SBA_TEST_PG_PORT"
    as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$logfile" -w -t "$READY_TIMEOUT_SECS" start >/dev/null ||
        fail_with_log "PostgreSQL did not start" "$logfile"
    wait_until pg_ready ||
        fail_with_log "PostgreSQL not ready on port $SBA_TEST_PG_PORT after ${READY_TIMEOUT_SECS}s" "$logfile"
}

start_redis() {
    if redis_ready; then
        log "Redis already answers on 127.0.0.1:$SBA_TEST_REDIS_PORT; reusing it"
        return
    fi
    mkdir -p "$REDIS_DIR"
    # Our Redis may still run on another port (SBA_TEST_REDIS_PORT changed): stop it.
    if [[ -f $REDIS_DIR/redis.pid ]] && is_redis_process "$(<"$REDIS_DIR/redis.pid")"; then
        log "our Redis runs on another port; stopping it"
        kill "$(<"$REDIS_DIR/redis.pid")"
        wait_until_not is_redis_process "$(<"$REDIS_DIR/redis.pid")" ||
            die "Redis pid $(<"$REDIS_DIR/redis.pid") did not stop"
    fi
    wait_for_free_port "$SBA_TEST_REDIS_PORT" Redis
    log "starting Redis on 127.0.0.1:$SBA_TEST_REDIS_PORT, files in $REDIS_DIR"
    redis-server --port "$SBA_TEST_REDIS_PORT" --bind 127.0.0.1 --daemonize yes \
        --save '' --appendonly no --dir "$REDIS_DIR" \
        --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" ||
        fail_with_log "redis-server did not start" "$REDIS_DIR/redis.log"
    # The daemonised server reports a bind failure only in its log, hence the plain wait.
    wait_until redis_ready ||
        fail_with_log "Redis not ready on port $SBA_TEST_REDIS_PORT after ${READY_TIMEOUT_SECS}s" \
            "$REDIS_DIR/redis.log"
}

write_env() {
    mkdir -p "$SERVICES_DIR"
    cat >"$ENV_FILE" <<EOF
export SBA_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$SBA_TEST_PG_PORT/postgres
export SBA_TEST_REDIS_URL=redis://127.0.0.1:$SBA_TEST_REDIS_PORT
EOF
    log "ready; environment written to $ENV_FILE:"
    cat "$ENV_FILE"
}

mkdir -p "$SERVICES_DIR"
install_missing
start_postgres
start_redis
write_env
