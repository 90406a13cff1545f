#!/usr/bin/env bash
# Cache benchmark (issue 6; method and results in docs/benchmarks.md): reads/s and p50/p99
# through CachedNamespace on FredCache for L1 hits, L2 (Redis) hits and misses, against raw
# GET through fred in the same run (crates/infrastructure/benches/cache.rs).
#
# Starts the private Redis (scripts/services-up.sh) unless it already runs. Environment:
# SBA_BENCH_SECONDS (load per side and round, default 3).
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
cargo bench -q -p sba-infrastructure --bench cache
