#!/usr/bin/env bash
# Line coverage of the test suite with cargo-llvm-cov and nextest, against the same
# private PostgreSQL and Redis as scripts/test.sh. Prints the per-file summary, then fails
# when line coverage is under SBA_COVERAGE_MIN_LINES percent (default 70): on its own,
# `--fail-under-lines` exits 1 without saying why.
#
# Arguments go to `cargo llvm-cov nextest`. Doc tests are not measured (that needs nightly).
# Services started here are stopped on exit unless SBA_KEEP_SERVICES=1.
set -euo pipefail

SCRIPT_NAME="${0##*/}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

readonly MIN_LINES="${SBA_COVERAGE_MIN_LINES:-70}"

log() {
    printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

if ! cargo llvm-cov --version >/dev/null 2>&1; then
    log "cargo-llvm-cov is missing; installing it (cargo install --locked cargo-llvm-cov)"
    cargo install --locked cargo-llvm-cov
fi
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

cargo llvm-cov report --summary-only
if ! cargo llvm-cov report --summary-only --fail-under-lines "$MIN_LINES" >/dev/null 2>&1; then
    log "error: line coverage is under ${MIN_LINES}% (see the TOTAL line above)"
    exit 1
fi
log "line coverage is at least ${MIN_LINES}%"
