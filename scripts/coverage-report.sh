#!/usr/bin/env bash
# Reports of the last instrumented test run (SBA_COVERAGE=1 scripts/test.sh, as .ci/run
# runs it, or scripts/coverage.sh), with the toolchain that run used (scripts/lib/coverage.sh):
# target/lcov.info, the HTML report in target/llvm-cov/html, and a Markdown summary (the
# TOTAL row and the per-file table) printed on stdout, for CI's job summary.
set -euo pipefail

SCRIPT_NAME="${0##*/}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

log() {
    printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
}

# shellcheck source=scripts/lib/coverage.sh
source scripts/lib/coverage.sh
ensure_llvm_cov

if "${LLVM_COV[@]}" report "${LLVM_COV_BRANCH[@]}" --lcov --output-path target/lcov.info; then
    log "wrote target/lcov.info"
elif ((COVERAGE_BRANCHES == 1)); then
    # The pinned nightly's `llvm-cov export` crashes on this data where its report does not.
    log "warning: no lcov file: $COVERAGE_NIGHTLY's llvm-cov export failed (the summary and HTML follow)"
else
    exit 1
fi
"${LLVM_COV[@]}" report "${LLVM_COV_BRANCH[@]}" --html
log "wrote target/llvm-cov/html/index.html"

summary=$("${LLVM_COV[@]}" report "${LLVM_COV_BRANCH[@]}" --summary-only)
echo '## Coverage'
echo
echo '```'
grep -E '^(Filename|TOTAL)' <<<"$summary"
echo '```'
echo
if ((COVERAGE_BRANCHES == 1)); then
    echo "Branches measured with $(rustup run "$COVERAGE_NIGHTLY" rustc --version): a lower bound, and its other figures undercount (docs/contributing.md, \"The gates\")."
else
    echo "Branches not measured: ${COVERAGE_NO_BRANCHES_WHY}."
fi
echo
echo '<details><summary>Per file</summary>'
echo
echo '```'
printf '%s\n' "$summary"
echo '```'
echo
echo '</details>'
