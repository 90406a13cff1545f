#!/usr/bin/env bash
# Coverage of the test suite with cargo-llvm-cov and nextest, against the same private
# PostgreSQL and Redis as scripts/test.sh, with an HTML report (target/llvm-cov/html).
# Prints the per-file summary, then applies the gate of scripts/lib/coverage.sh (lines,
# regions, functions; thresholds there), as .ci/run does (SBA_COVERAGE=1 scripts/test.sh).
# SBA_COVERAGE_BRANCHES=1 measures branches instead, with the pinned nightly of that file.
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

# shellcheck source=scripts/lib/with-services.sh
source scripts/lib/with-services.sh
# shellcheck source=scripts/lib/coverage.sh
source scripts/lib/coverage.sh

ensure_llvm_cov
if ! cargo nextest --version >/dev/null 2>&1; then
    log "cargo-nextest is missing; installing it (cargo install --locked cargo-nextest)"
    cargo install --locked cargo-nextest
fi

start_test_services "coverage run"
# The playground's browser test needs chromium and chromedriver, as in scripts/test.sh.
scripts/install-chromium.sh

run_instrumented_tests "$@"

"${LLVM_COV[@]}" report "${LLVM_COV_BRANCH[@]}" --html
log "HTML report: target/llvm-cov/html/index.html"
coverage_gate
