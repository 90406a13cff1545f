#!/usr/bin/env bash
# Coverage of the test suite with cargo-llvm-cov and nextest, against the same private
# PostgreSQL and Redis as scripts/test.sh, with an HTML report (target/llvm-cov/html).
# Prints the per-file summary, then applies the gate of scripts/lib/coverage.sh (lines,
# regions, functions; thresholds there), as .ci/run does (SBA_COVERAGE=1 scripts/test.sh).
#
# Arguments go to `cargo llvm-cov nextest`. Doc tests are not measured (that needs nightly).
# Services started here are stopped on exit unless SBA_KEEP_SERVICES=1.
set -euo pipefail

SCRIPT_NAME="${0##*/}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

log() {
    printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# shellcheck source=scripts/lib/coverage.sh
source scripts/lib/coverage.sh

ensure_llvm_cov
if ! cargo nextest --version >/dev/null 2>&1; then
    log "cargo-nextest is missing; installing it (cargo install --locked cargo-nextest)"
    cargo install --locked cargo-nextest
fi

already_running=0
if port_open "${SBA_TEST_PG_PORT:-55432}" && port_open "${SBA_TEST_REDIS_PORT:-56379}"; then
    already_running=1
fi
scripts/services-up.sh >/dev/null
if [[ ${SBA_KEEP_SERVICES:-0} != 1 ]] && ((already_running == 0)); then
    trap 'scripts/services-down.sh || log "warning: scripts/services-down.sh failed"' EXIT
fi
# shellcheck source=/dev/null
source target/services/env

# Profiles of an earlier run would be merged into this report.
cargo llvm-cov clean --workspace
log "cargo llvm-cov nextest --workspace --all-targets --no-report $*"
# A failing test fails the coverage run too; the nextest profile comes from
# NEXTEST_PROFILE because llvm-cov takes --profile as a cargo profile.
cargo llvm-cov nextest --workspace --all-targets --no-report "$@"

cargo llvm-cov report --html
log "HTML report: target/llvm-cov/html/index.html"
coverage_gate
