#!/usr/bin/env bash
# Stops the private PostgreSQL and Redis started by services-up.sh from this checkout and
# removes their data. Idempotent: succeeds when nothing runs. Only servers whose data or
# pid file is ours are stopped; an instance someone else runs on the same port is left
# alone (and so are the machine's instances on 5432/6379).
#
# Environment: SBA_TEST_PG_PORT (default 55432), SBA_TEST_REDIS_PORT (default 56379).
set -euo pipefail

SCRIPT_NAME="${0##*/}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"

readonly STOP_TIMEOUT_SECS=30

stop_redis() {
    local pidfile="$REDIS_DIR/redis.pid" pid="" port_pid deadline
    [[ -f $pidfile ]] && pid=$(<"$pidfile")

    if is_redis_process "$pid"; then
        port_pid=$(redis-cli -h 127.0.0.1 -p "$SBA_TEST_REDIS_PORT" info server 2>/dev/null |
            tr -d '\r' | sed -n 's/^process_id://p' || true)
        if [[ $port_pid == "$pid" ]]; then
            log "stopping Redis on 127.0.0.1:$SBA_TEST_REDIS_PORT (pid $pid)"
            redis-cli -h 127.0.0.1 -p "$SBA_TEST_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
        else
            log "stopping Redis pid $pid (started by services-up.sh on another port)"
            kill "$pid" 2>/dev/null || true
        fi
        deadline=$((SECONDS + STOP_TIMEOUT_SECS))
        while is_redis_process "$pid" && ((SECONDS < deadline)); do
            sleep 0.2
        done
        if is_redis_process "$pid"; then
            log "warning: Redis pid $pid did not stop in ${STOP_TIMEOUT_SECS}s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    elif have redis-cli && redis_ready; then
        log "Redis on 127.0.0.1:$SBA_TEST_REDIS_PORT was not started from this checkout; leaving it running"
    else
        log "Redis is not running"
    fi
    rm -rf "${REDIS_DIR:?}"
}

stop_postgres() {
    local dir data stopped=0
    if ! find_pg_bin; then
        log "PostgreSQL is not installed, so not running"
    else
        for dir in "$PG_DIR_IN_REPO" "$PG_DIR_FALLBACK"; do
            data="$dir/data"
            [[ -f $data/PG_VERSION ]] || continue
            if as_pg "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
                log "stopping PostgreSQL (data in $data)"
                as_pg "$PG_BIN/pg_ctl" -D "$data" stop -m fast -w -t "$STOP_TIMEOUT_SECS" >/dev/null ||
                    log "warning: pg_ctl stop failed for $data"
                stopped=1
            fi
        done
        if pg_ready; then
            log "PostgreSQL on 127.0.0.1:$SBA_TEST_PG_PORT was not started from this checkout; leaving it running"
        elif ((stopped == 0)); then
            log "PostgreSQL is not running"
        fi
    fi

    rm -rf "${PG_DIR_IN_REPO:?}"
    # Only remove the /tmp fallback when it is really ours (it has a predictable name).
    if [[ -d $PG_FALLBACK_PARENT && ! -L $PG_FALLBACK_PARENT && -O $PG_FALLBACK_PARENT ]]; then
        rm -rf "${PG_FALLBACK_PARENT:?}"
    fi
}

stop_redis
stop_postgres
rm -f "$ENV_FILE"
rmdir "$SERVICES_DIR" 2>/dev/null || true
log "services are down"
