#!/usr/bin/env bash
# Event pipeline benchmarks (issue 14, ADR 0017; method and results in docs/benchmarks.md,
# "Event pipeline: ingest and persistence"), each against a baseline measured in the same run
# (crates/delivery/benches/event_pipeline/):
#   1. ingest: events/s through POST /v1/runs/{id}/events of the release `sba serve` (Redis
#      sequencer, SBA_WORKER__IN_PROCESS=false and no `sba worker`, SBA_RATE_LIMIT__ENABLED=false),
#      batches of 1, 10 and 100, 64 clients each on its own run, against raw XADD of the same
#      payloads through fred at the same concurrency; beside them the sequencer script alone,
#      the HTTP floor (the same requests refused with 403 after auth and JSON) and a bare
#      PUBLISH per event;
#   2. persistence: events/s of `sba worker`'s loop (in the benchmark's process) draining a
#      queue pre-filled through the sequencer into agent_events, against the raw multi-row
#      INSERT of the apply_events benchmark and apply_events called directly, same batch size;
#      then the worker's lag p50/p99 under a steady load at half its measured rate.
#
# Starts the private PostgreSQL and Redis (scripts/lib/with-services.sh; running ones are
# reused: set SBA_TEST_PG_PORT and SBA_TEST_REDIS_PORT to other ports for instances of this
# run alone), builds the release `sba` and the benchmark with one `cargo bench`, and prints
# the tables. The benchmark writes to its own Redis database (SBA_BENCH_REDIS_DB, default 13,
# emptied of its `sba:*` and `bench:*` keys before and after) and its own PostgreSQL
# database (dropped at the end). About 4 minutes after the build.
#
# Environment (defaults in brackets): SBA_BENCH_PARTS (`ingest`, `persist` [both]),
# SBA_BENCH_SECONDS (ingest load per side and round [2]), SBA_BENCH_ROUNDS [3],
# SBA_BENCH_CLIENTS [64], SBA_BENCH_BATCHES [1,10,100], SBA_BENCH_PERSIST_RUNS (runs per
# persistence side [1000]), SBA_BENCH_PERSIST_BATCH (events per run and round, so per ledger
# transaction [100]), SBA_BENCH_LAG_SECONDS (steady load of the lag measurement; 0 skips it
# [10]), SBA_BENCH_LAG_SHARE (its rate as a share of the worker's [0.5]), SBA_BENCH_REDIS_DB,
# SBA_BIN (another `sba` binary to serve, e.g. to compare two commits).
set -euo pipefail

SCRIPT_NAME="${0##*/}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

log() {
    printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
}

# shellcheck source=scripts/lib/with-services.sh
source scripts/lib/with-services.sh

start_test_services benchmark
log "building (release) and running: cargo bench -p sba-delivery --bench event_pipeline"
cargo bench -q -p sba-delivery --bench event_pipeline
