#!/usr/bin/env bash
# The project's benchmark command: throughput of RunLedger::apply_events on PostgreSQL
# against a raw multi-row INSERT of the same rows measured in the same run
# (crates/infrastructure/benches/apply_events.rs; method and results in docs/benchmarks.md).
#
# Starts the private PostgreSQL and Redis (scripts/services-up.sh), runs the benchmark, then
# prints the ledger/baseline ratio per batch size from criterion's estimates. The ratio is
# the headline: absolute times on a shared machine move from run to run.
#
# Arguments go to criterion: `scripts/bench.sh apply_events_batch_100` (a filter),
# `scripts/bench.sh --measurement-time 10`, `scripts/bench.sh --quick`.
#
# Services started here are stopped on exit unless SBA_KEEP_SERVICES=1. Services that
# already answered on their ports before the run are left running.
set -euo pipefail

SCRIPT_NAME="${0##*/}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

log() {
    printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
}

# shellcheck source=scripts/lib/with-services.sh
source scripts/lib/with-services.sh

command -v python3 >/dev/null || { log "error: python3 is needed to print the ratio table"; exit 1; }

start_test_services benchmark
log "SBA_TEST_DATABASE_URL=$SBA_TEST_DATABASE_URL"

criterion_dir="${CARGO_TARGET_DIR:-target}/criterion"
mkdir -p "$criterion_dir"
# Only estimates written after this marker belong to this run (a filter runs a subset).
started="$criterion_dir/.bench-started"
touch "$started"

log "cargo bench -p sba-infrastructure --bench apply_events -- $*"
cargo bench -p sba-infrastructure --bench apply_events -- "$@"

python3 - "$criterion_dir" "$started" <<'EOF'
"""Prints ledger vs baseline throughput per batch size from criterion's estimates."""
import json
import os
import re
import sys

criterion_dir, marker = sys.argv[1], sys.argv[2]
since = os.path.getmtime(marker)
LEDGER, BASELINE = "ledger_apply_events", "raw_multi_row_insert"


def median_ns(group, function):
    """Median time per iteration (one batch) in ns, or None when this run did not measure it."""
    path = os.path.join(criterion_dir, group, function, "new", "estimates.json")
    if not os.path.exists(path) or os.path.getmtime(path) < since:
        return None
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"]


rows = []
for group in os.listdir(criterion_dir):
    match = re.fullmatch(r"apply_events_batch_(\d+)", group)
    if match:
        n = int(match.group(1))
        rows.append((n, median_ns(group, LEDGER), median_ns(group, BASELINE)))
rows = sorted(r for r in rows if r[1] is not None or r[2] is not None)
if not rows:
    sys.exit("bench.sh: no estimates from this run under " + criterion_dir)


def rate(n, ns):
    return f"{n / ns * 1e9:,.0f}" if ns else "-"


def ms(ns):
    return f"{ns / 1e6:.3f}" if ns else "-"


print()
print("apply_events vs raw multi-row INSERT, same run (median time per batch)")
print()
print("| batch | ledger events/s | baseline events/s | ledger ms/batch | baseline ms/batch | ledger/baseline |")
print("|------:|----------------:|------------------:|----------------:|------------------:|----------------:|")
for n, ledger, baseline in rows:
    ratio = f"{baseline / ledger:.0%}" if ledger and baseline else "-"
    print(f"| {n} | {rate(n, ledger)} | {rate(n, baseline)} | {ms(ledger)} | {ms(baseline)} | {ratio} |")
goal = [r for r in rows if r[0] == 100 and r[1] and r[2]]
if goal:
    ratio = goal[0][2] / goal[0][1]
    verdict = "met" if ratio >= 0.5 else "NOT met"
    print()
    print(f"goal (batch 100 >= 50 % of baseline): {verdict} ({ratio:.0%})")
EOF
