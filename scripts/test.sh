#!/usr/bin/env bash
# The project's test command. Starts the private PostgreSQL and Redis
# (scripts/services-up.sh), installs chromium and chromedriver when missing
# (scripts/install-chromium.sh), runs every test with cargo-nextest, then the doc tests
# (nextest does not run those), then scripts/schemathesis.sh (the service against its
# OpenAPI document), then scripts/check-deploy.sh (the alert rules and dashboard queries of
# deploy/ with promtool, installed when missing). Exits non-zero when any of them fails.
#
# Arguments go to `cargo nextest run`: `scripts/test.sh -p sba-domain`,
# `scripts/test.sh --profile ci`, `scripts/test.sh -E 'test(/cancel/)'`.
#
# With SBA_COVERAGE=1 (as .ci/run runs it) the tests run once, instrumented
# (`cargo llvm-cov nextest`, installed when missing), and the coverage gate of
# scripts/lib/coverage.sh follows: the summary table, then a failure naming each measure
# under its threshold.
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
# shellcheck source=scripts/lib/coverage.sh
source scripts/lib/coverage.sh

readonly COVERAGE=${SBA_COVERAGE:-0}

if ! cargo nextest --version >/dev/null 2>&1; then
    log "cargo-nextest is missing; installing it (cargo install --locked cargo-nextest)"
    cargo install --locked cargo-nextest
fi
if [[ $COVERAGE == 1 ]]; then
    ensure_llvm_cov
fi

start_test_services tests
# The playground's browser test drives Debian's chromium through chromedriver; it fails
# (never skips) without them.
scripts/install-chromium.sh
log "SBA_TEST_DATABASE_URL=$SBA_TEST_DATABASE_URL SBA_TEST_REDIS_URL=$SBA_TEST_REDIS_URL"

status=0
if [[ $COVERAGE == 1 ]]; then
    run_instrumented_tests "$@" || status=$?
else
    log "cargo nextest run --workspace --all-targets $*"
    cargo nextest run --workspace --all-targets "$@" || status=$?
fi
coverage_status=0
if [[ $COVERAGE == 1 ]] && ((status == 0)); then
    coverage_gate || coverage_status=$?
fi

log "cargo test --workspace --doc"
doc_status=0
cargo test --workspace --doc || doc_status=$?

# The served OpenAPI document against the service, as a client generator reads it.
log "scripts/schemathesis.sh"
contract_status=0
scripts/schemathesis.sh || contract_status=$?

# The monitoring files of deploy/: alert rules, their unit tests, the dashboard's PromQL.
log "scripts/check-deploy.sh"
deploy_status=0
scripts/check-deploy.sh || deploy_status=$?

if ((status != 0)); then
    log "error: tests failed (cargo nextest exited with $status)"
elif ((coverage_status != 0)); then
    log "error: coverage is under its thresholds (see the summary above)"
    status=$coverage_status
elif ((doc_status != 0)); then
    log "error: doc tests failed (cargo test --doc exited with $doc_status)"
    status=$doc_status
elif ((contract_status != 0)); then
    log "error: the service does not answer as its OpenAPI document says (scripts/schemathesis.sh exited with $contract_status)"
    status=$contract_status
elif ((deploy_status != 0)); then
    log "error: the monitoring files of deploy/ are invalid (scripts/check-deploy.sh exited with $deploy_status)"
    status=$deploy_status
else
    log "all tests passed"
fi
exit "$status"
