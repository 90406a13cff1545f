#!/usr/bin/env bash
# Rate-limiter benchmarks (issue 5; method and results in docs/benchmarks.md):
#   1. decisions/s and p50/p99 of FredRateLimiter at concurrency 1, 16, 64 against raw
#      EVALSHA of a trivial script through fred, same run (crates/infrastructure/benches/
#      rate_limiter.rs);
#   2. HTTP requests/s on GET /v1/me (authenticated, no storage) of the release binary with
#      the Redis limiter on versus off, measured with wrk (64 connections), alternating
#      off/on so drift hits both.
#
# Starts the private PostgreSQL and Redis (scripts/services-up.sh) and installs wrk when it
# is missing (apt-get, as root or through sudo). Environment: SBA_BENCH_SECONDS (limiter
# load per side and round, default 3), SBA_BENCH_HTTP_SECONDS (wrk duration, default 10),
# SBA_BIN (an `sba` binary for the HTTP part instead of building one, e.g. to compare two
# commits in one session), SBA_BENCH_ROUNDS (HTTP rounds per mode, default 3),
# SBA_BENCH_PARTS (`limiter`, `http` or both, the default: `limiter http`),
# SBA_BENCH_LIMITER (`redis`, the default, or `memory`: the HTTP part's limiter is the
# in-process one, the server started without REDIS_URL).
set -euo pipefail

SCRIPT_NAME="${0##*/}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

log() {
    printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
}

# shellcheck source=scripts/lib/with-services.sh
source scripts/lib/with-services.sh

if ! command -v wrk >/dev/null; then
    log "wrk is missing; installing it (apt-get install wrk)"
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get install -y wrk >/dev/null || {
        "${sudo_cmd[@]}" apt-get update >/dev/null && "${sudo_cmd[@]}" apt-get install -y wrk >/dev/null
    }
fi

start_test_services benchmark

parts="${SBA_BENCH_PARTS:-limiter http}"
if [[ $parts == *limiter* ]]; then
    log "limiter decisions vs raw EVALSHA (cargo bench -p sba-infrastructure --bench rate_limiter)"
    cargo bench -q -p sba-infrastructure --bench rate_limiter
fi
[[ $parts == *http* ]] || exit 0

if [[ -n ${SBA_BIN:-} ]]; then
    SBA="$SBA_BIN"
    log "using $SBA"
else
    log "building the release binary"
    cargo build -q --release -p sba-delivery
    SBA="${CARGO_TARGET_DIR:-target}/release/sba"
fi

work="$(mktemp -d)"
server_pid=""
cleanup_server() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap 'cleanup_server; rm -rf "$work"; scripts/services-down.sh >/dev/null 2>&1 || true' EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export SBA_DATA_DIR="$work" DATABASE_URL="sqlite://$work/sba.db" REDIS_URL="$SBA_TEST_REDIS_URL" PORT="$port"
limiter="${SBA_BENCH_LIMITER:-redis}"
case $limiter in
    redis) ;;
    memory) unset REDIS_URL ;;
    *) log "error: SBA_BENCH_LIMITER must be redis or memory, not $limiter"; exit 2 ;;
esac
export SBA_AUTH__JWT_SECRETS="bench-secret-bench-secret-bench-secret-0001" RUST_LOG=warn
# A quota no benchmark reaches: every request is decided by Redis and allowed.
export SBA_RATE_LIMIT__DEFAULT="4000000000/60"
token=$("$SBA" dev-token --tenant 0b7e8f3c-2f0a-4c55-9d2e-3f1a5b6c7d8e --user bench --ttl-secs 3600)

run_wrk() {
    local enabled=$1
    SBA_RATE_LIMIT__ENABLED=$enabled "$SBA" serve >"$work/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fs -H "Authorization: Bearer $token" "http://127.0.0.1:$port/v1/me" >/dev/null ||
        { log "error: the server does not answer /v1/me"; cat "$work/server.log" >&2; exit 1; }
    wrk -t2 -c64 -d"${SBA_BENCH_HTTP_SECONDS:-10}s" -H "Authorization: Bearer $token" \
        "http://127.0.0.1:$port/v1/me" | awk '/Requests\/sec/ {print $2}'
    cleanup_server
}

declare -a off on
for round in $(seq "${SBA_BENCH_ROUNDS:-3}"); do
    off+=("$(run_wrk false)")
    on+=("$(run_wrk true)")
    log "round $round: limiter off ${off[-1]} req/s, on ${on[-1]} req/s"
done

python3 - "${off[*]}" "${on[*]}" "$limiter" <<'PY'
import statistics, sys
off = [float(x) for x in sys.argv[1].split()]
on = [float(x) for x in sys.argv[2].split()]
m_off, m_on = statistics.median(off), statistics.median(on)
print()
print(f"| GET /v1/me, wrk -t2 -c64 | limiter off | limiter on ({sys.argv[3]}) | on/off |")
print("|---|---:|---:|---:|")
print(f"| median requests/s over {len(off)} rounds | {m_off:,.0f} | {m_on:,.0f} | {m_on / m_off:.0%} |")
print(f"| all rounds | {', '.join(f'{x:,.0f}' for x in off)} | {', '.join(f'{x:,.0f}' for x in on)} | |")
PY
