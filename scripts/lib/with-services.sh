# shellcheck shell=bash
# Sourced by scripts that need the private test PostgreSQL (with pgvector) and Redis for their run
# (scripts/test.sh, scripts/bench.sh). Expects `log` and the repository root as the working
# directory.

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# start_test_services <what>: starts the services and exports SBA_TEST_DATABASE_URL and
# SBA_TEST_REDIS_URL. Services started here are stopped when the script exits, unless
# SBA_KEEP_SERVICES=1; services that already answered before are left running.
start_test_services() {
    local what=$1 already_running=0
    if port_open "${SBA_TEST_PG_PORT:-55432}" && port_open "${SBA_TEST_REDIS_PORT:-56379}"; then
        already_running=1
    fi
    log "starting test services"
    scripts/services-up.sh >/dev/null
    # The Supabase schema's tests need pgvector in that PostgreSQL (a no-op once installed).
    scripts/install-pgvector.sh
    if [[ ${SBA_KEEP_SERVICES:-0} == 1 ]]; then
        log "SBA_KEEP_SERVICES=1: services stay up after the $what (scripts/services-down.sh stops them)"
    elif ((already_running)); then
        log "services were already running before this run; leaving them running"
    else
        trap 'scripts/services-down.sh || log "warning: scripts/services-down.sh failed"' EXIT
    fi
    # shellcheck source=/dev/null
    source target/services/env
}
