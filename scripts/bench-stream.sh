#!/usr/bin/env bash
# WebSocket fan-out benchmark (issue 15; method and results in docs/benchmarks.md,
# "WebSocket fan-out"), with `sba-load` (crates/loadtest):
#   - two release `sba serve` nodes on this machine (ports chosen free), one PostgreSQL
#     database of this run and one Redis database; node A runs the in-process worker
#     (SBA_WORKER__IN_PROCESS=true, persisting events), node B does not; no demo agent;
#     SBA_RATE_LIMIT__ENABLED=false (HTTP and WebSocket ops unlimited: thousands of
#     subscriptions come from one user and one address) and the broadcast throttle raised
#     to its maximum (SBA_STREAM__TENANT_EVENTS_PER_SECOND and ..._USER_... = 1000000:
#     over it the gateway coalesces deltas by design, which the load would measure instead
#     of the fan-out). Subscribers and ingest calls alternate between the two nodes, so half
#     of all deliveries cross nodes through Redis pub/sub;
#   - the issue's matrix: 1,000 and 5,000 subscribers on one run at 100 and 1,000 events/s
#     (batches of 10), each beside `sba-load floor` with the same load (the tool's own
#     minimal tokio-tungstenite broadcast server, fed in-process: what the machine allows
#     for WebSocket fan-out with this client, no HTTP ingest, no Redis, no gateway);
#   - 1,000 × 100 again without and then with 10 slow subscribers (they stop reading), to
#     compare the other subscribers' p99 (SBA_BENCH_SLOW_SUBSCRIBERS, SBA_BENCH_SLOW_PAD: bytes
#     of filler per delta, and SBA_BENCH_SLOW_SECONDS make the slow readers' backlog outgrow
#     the kernel's socket buffers, so that the gateway's own queue fills).
#
# Starts the private PostgreSQL and Redis (scripts/lib/with-services.sh), builds the release
# `sba` and `sba-load` unless SBA_BIN / SBA_LOAD_BIN name binaries, stops both nodes, drops
# the database and deletes the run's Redis keys at the end (trap).
#
# Environment (defaults in brackets): SBA_BENCH_SECONDS (ingest time per load [10]),
# SBA_BENCH_DRAIN (seconds a load may take to deliver after its ingest [20]),
# SBA_BENCH_LOADS (which loads, among `1000x100 1000x1000 5000x100 5000x1000 slow`
# [all]), SBA_BENCH_SLOW_SUBSCRIBERS [1000], SBA_BENCH_SLOW_PAD [0], SBA_BENCH_SLOW_SECONDS
# [SBA_BENCH_SECONDS], SBA_BENCH_REDIS_DB [12], SBA_BENCH_OUT (a directory for the JSON reports,
# and each node's log and metrics at the end), SBA_BENCH_NODE_ENV (more NAME=value settings
# for both nodes, space-separated), SBA_BIN, SBA_LOAD_BIN.
set -euo pipefail

SCRIPT_NAME="${0##*/}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

log() {
    printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
}

# shellcheck source=scripts/lib/with-services.sh
source scripts/lib/with-services.sh

SECONDS_PER_LOAD=${SBA_BENCH_SECONDS:-10}
DRAIN=${SBA_BENCH_DRAIN:-20}
LOADS=${SBA_BENCH_LOADS:-1000x100 1000x1000 5000x100 5000x1000 slow}
REDIS_DB=${SBA_BENCH_REDIS_DB:-12}
SLOW_SUBSCRIBERS=${SBA_BENCH_SLOW_SUBSCRIBERS:-1000}
SLOW_PAD=${SBA_BENCH_SLOW_PAD:-0}
SLOW_SECONDS=${SBA_BENCH_SLOW_SECONDS:-$SECONDS_PER_LOAD}
SECRET=bench-secret-bench-secret-bench-secret-0002

start_test_services benchmark
if [[ -z ${SBA_BIN:-} || -z ${SBA_LOAD_BIN:-} ]]; then
    log "building (release): cargo build --release -p sba-delivery --bin sba -p sba-loadtest --bin sba-load"
    cargo build -q --release -p sba-delivery --bin sba -p sba-loadtest --bin sba-load
fi
SBA_BIN=${SBA_BIN:-target/release/sba}
SBA_LOAD_BIN=${SBA_LOAD_BIN:-target/release/sba-load}

WORK=$(mktemp -d /tmp/sba-bench-stream-XXXXXX)
DB_NAME="sba_bench_stream_$(date +%s)_$$"
REDIS_URL="${SBA_TEST_REDIS_URL%/}/$REDIS_DB"
PIDS=()

clear_redis() {
    redis-cli -u "$REDIS_URL" --scan --pattern 'sba:*' | xargs -r -n 500 redis-cli -u "$REDIS_URL" unlink >/dev/null
}

cleanup() {
    local pid port
    # With SBA_BENCH_OUT: each node's log and its metrics at the end, beside the reports.
    if [[ -n ${SBA_BENCH_OUT:-} ]]; then
        mkdir -p "$SBA_BENCH_OUT"
        for port in ${PORT_A:-} ${PORT_B:-}; do
            curl -fs "http://127.0.0.1:$port/metrics" >"$SBA_BENCH_OUT/metrics-$port.txt" || true
        done
        cp "$WORK"/*.log "$SBA_BENCH_OUT/" 2>/dev/null || true
    fi
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    clear_redis || log "warning: could not delete the run's Redis keys"
    psql -q "$SBA_TEST_DATABASE_URL" -c "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)" ||
        log "warning: could not drop $DB_NAME"
    rm -rf "$WORK"
}
# with-services.sh may have set an EXIT trap (stopping the services it started): keep it.
PREVIOUS_TRAP=$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT$//")
# shellcheck disable=SC2064 # the previous trap is expanded now, on purpose
trap "cleanup; ${PREVIOUS_TRAP:-true}" EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Each node holds thousands of sockets: the soft descriptor limit goes to the hard one.
ulimit -n "$(ulimit -Hn)"
psql -q "$SBA_TEST_DATABASE_URL" -c "CREATE DATABASE \"$DB_NAME\""
clear_redis
printf '%s' "$SECRET" >"$WORK/secret"

# start_node <name> <port> <in-process worker: true|false>: starts `sba serve`, waits for /healthz.
start_node() {
    local name=$1 port=$2 worker=$3 i
    mkdir -p "$WORK/$name"
    env -i PATH="$PATH" \
        SBA_DATA_DIR="$WORK/$name" \
        DATABASE_URL="${SBA_TEST_DATABASE_URL%/*}/$DB_NAME" \
        REDIS_URL="$REDIS_URL" \
        PORT="$port" \
        SBA_SERVER__HOST=127.0.0.1 \
        SBA_SERVER__SHUTDOWN_TIMEOUT_SECS=1 \
        SBA_AUTH__JWT_SECRETS="$SECRET" \
        SBA_AUTH__ISSUER=sba-bench \
        SBA_AUTH__AUDIENCE=sba-bench \
        SBA_WORKER__IN_PROCESS="$worker" \
        SBA_RATE_LIMIT__ENABLED=false \
        SBA_STREAM__TENANT_EVENTS_PER_SECOND=1000000 \
        SBA_STREAM__USER_EVENTS_PER_SECOND=1000000 \
        SBA_DEMO__ECHO_AGENT=false \
        RUST_LOG=warn \
        ${SBA_BENCH_NODE_ENV:-} \
        "$SBA_BIN" serve >"$WORK/$name.log" 2>&1 &
    PIDS+=("$!")
    for ((i = 0; i < 300; i++)); do
        if curl -fs "http://127.0.0.1:$port/healthz" >/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    log "node $name did not answer /healthz in 30 s:"
    tail -n 40 "$WORK/$name.log" >&2
    exit 1
}

PORT_A=$(free_port)
start_node a "$PORT_A" true
PORT_B=$(free_port)
# After A: A has migrated the database.
start_node b "$PORT_B" false
NODE_PIDS="${PIDS[0]},${PIDS[1]}"
log "nodes: a on $PORT_A (pid ${PIDS[0]}, in-process worker), b on $PORT_B (pid ${PIDS[1]}); load average: $(cut -d' ' -f1-3 /proc/loadavg)"

# load <label> <target: run|floor> <subscribers> <events/s> [more sba-load arguments]; LOAD_SECONDS
# overrides the ingest time.
load() {
    local label=$1 target=$2 subscribers=$3 rate=$4
    shift 4
    local args=(--subscribers "$subscribers" --rate "$rate" --batch 10 --duration "${LOAD_SECONDS:-$SECONDS_PER_LOAD}"
        --drain "$DRAIN" --label "$label" --json "$WORK/$label.json" "$@")
    if [[ $target == run ]]; then
        args+=(--nodes "http://127.0.0.1:$PORT_A,http://127.0.0.1:$PORT_B" --token-file "$WORK/secret"
            --issuer sba-bench --audience sba-bench --server-pid "$NODE_PIDS")
    fi
    log "$label: sba-load $target ${args[*]} (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    "$SBA_LOAD_BIN" "$target" "${args[@]}" | tee -a "$WORK/tables.md"
    if [[ -n ${SBA_BENCH_OUT:-} ]]; then
        mkdir -p "$SBA_BENCH_OUT"
        cp "$WORK/$label.json" "$SBA_BENCH_OUT/"
    fi
}

for shape in $LOADS; do
    case $shape in
        slow)
            LOAD_SECONDS=$SLOW_SECONDS load "slow-none-${SLOW_SUBSCRIBERS}x100" run "$SLOW_SUBSCRIBERS" 100 --pad "$SLOW_PAD"
            LOAD_SECONDS=$SLOW_SECONDS load "slow-10-${SLOW_SUBSCRIBERS}x100" run "$SLOW_SUBSCRIBERS" 100 --pad "$SLOW_PAD" --slow 10
            ;;
        *x*)
            load "floor-$shape" floor "${shape%x*}" "${shape#*x}"
            load "sba-$shape" run "${shape%x*}" "${shape#*x}"
            ;;
        *)
            log "unknown load $shape"
            exit 2
            ;;
    esac
done
log "done; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
