#!/usr/bin/env bash
# Knowledge search benchmark (method and results in docs/benchmarks.md): p50/p99/mean latency
# of match_knowledge with the HNSW index against the same query forced to an exact scan in the
# same run, and recall@10, for corpora of 10k and 100k chunks of dimension 384
# (crates/infrastructure/benches/knowledge_search.rs).
#
# Starts the private PostgreSQL (with pgvector) and Redis (scripts/services-up.sh) unless they
# already run. Arguments pick the corpus sizes: `scripts/bench-knowledge.sh 10000`. Environment:
# SBA_BENCH_KNOWLEDGE_SIZES (the same, comma-separated; default 10000,100000),
# SBA_BENCH_QUERIES (queries per tenant, default 200); the benchmark's other SBA_BENCH_*
# variables (shared sessions, another schema; see its module documentation) pass through.
# A run of both sizes takes about two minutes after the build on two cores.
set -euo pipefail

SCRIPT_NAME="${0##*/}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

log() {
    printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
}

# shellcheck source=scripts/lib/with-services.sh
source scripts/lib/with-services.sh

if (($# > 0)); then
    SBA_BENCH_KNOWLEDGE_SIZES="$(
        IFS=,
        echo "$*"
    )"
    export SBA_BENCH_KNOWLEDGE_SIZES
fi

start_test_services benchmark
log "sizes: ${SBA_BENCH_KNOWLEDGE_SIZES:-10000,100000}; queries per tenant: ${SBA_BENCH_QUERIES:-200}"
cargo bench -q -p sba-infrastructure --bench knowledge_search
