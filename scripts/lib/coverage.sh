# shellcheck shell=bash
# The coverage gate shared by scripts/test.sh (SBA_COVERAGE=1, as .ci/run runs it) and
# scripts/coverage.sh. Sourced; expects a `log` function.
#
# Thresholds (percent): SBA_COVERAGE_MIN_LINES [90], SBA_COVERAGE_MIN_REGIONS [88],
# SBA_COVERAGE_MIN_FUNCTIONS [85]; SBA_COVERAGE_MIN_BRANCHES [75] in a branch run. The plan's
# floor is 80/75/70/80 (statements, branches, functions, lines); these keep what the project
# reaches.
#
# Branches: the default (stable) toolchain cannot measure them, and the gate says so. With
# SBA_COVERAGE_BRANCHES=1 the instrumented run uses the nightly named by SBA_COVERAGE_NIGHTLY
# [nightly-2026-10-01] with `--branch` (installed with rustup when missing) and gates branches
# only: that toolchain's report undercounts code compiled into several test binaries (lines
# 88 %, regions 64 % where the stable run measures 91 % and 90 %), so its branch figure is a
# lower bound and its other figures are printed but not gated. The nightly is pinned: the
# llvm-cov of LLVM 22.1 (stable 1.95 and the nightlies of spring 2026) crashes on this
# workspace's branch data. docs/contributing.md, "The gates", has the figures.
readonly COVERAGE_NIGHTLY=${SBA_COVERAGE_NIGHTLY:-nightly-2026-10-01}

# Sets LLVM_COV (the command that runs cargo-llvm-cov, as an array), LLVM_COV_BRANCH (its
# branch option, or nothing), COVERAGE_BRANCHES (1 when branches are measured) and
# COVERAGE_NO_BRANCHES_WHY otherwise. Installs the nightly when branches are asked for.
choose_coverage_toolchain() {
    LLVM_COV=(cargo llvm-cov)
    LLVM_COV_BRANCH=()
    COVERAGE_BRANCHES=0
    local default
    default=$(rustc --version)
    if [[ ${SBA_COVERAGE_BRANCHES:-0} != 1 ]]; then
        COVERAGE_NO_BRANCHES_WHY="$default cannot measure them; SBA_COVERAGE_BRANCHES=1 scripts/coverage.sh measures them with $COVERAGE_NIGHTLY"
        return
    fi
    if ! command -v rustup >/dev/null 2>&1; then
        COVERAGE_NO_BRANCHES_WHY="SBA_COVERAGE_BRANCHES=1 needs rustup to run $COVERAGE_NIGHTLY; this run uses $default"
        return
    fi
    if ! rustup toolchain list 2>/dev/null | grep -q "^$COVERAGE_NIGHTLY-" || ! has_llvm_tools --toolchain "$COVERAGE_NIGHTLY"; then
        log "installing $COVERAGE_NIGHTLY for branch coverage (rustup toolchain install $COVERAGE_NIGHTLY --profile minimal -c llvm-tools-preview)"
        if ! rustup toolchain install "$COVERAGE_NIGHTLY" --profile minimal -c llvm-tools-preview; then
            COVERAGE_NO_BRANCHES_WHY="$COVERAGE_NIGHTLY could not be installed; this run uses $default"
            return
        fi
    fi
    LLVM_COV=(cargo "+$COVERAGE_NIGHTLY" llvm-cov)
    LLVM_COV_BRANCH=(--branch)
    COVERAGE_BRANCHES=1
    # Its own build directory: the stable run's report would otherwise pick up the nightly's
    # test binaries, whose coverage data crashes LLVM 22.1's llvm-cov.
    export CARGO_LLVM_COV_TARGET_DIR="$PWD/target/llvm-cov-branch-target"
}

# has_llvm_tools [--toolchain <name>]
has_llvm_tools() {
    rustup component list "$@" --installed 2>/dev/null | grep -q '^llvm-tools'
}

# Installs cargo-llvm-cov when missing, chooses the toolchain (choose_coverage_toolchain) and,
# without branches, installs the default toolchain's llvm-tools component (llvm-profdata and
# llvm-cov of its own LLVM) when missing.
ensure_llvm_cov() {
    if ! cargo llvm-cov --version >/dev/null 2>&1; then
        log "cargo-llvm-cov is missing; installing it (cargo install --locked cargo-llvm-cov)"
        cargo install --locked cargo-llvm-cov
    fi
    choose_coverage_toolchain
    if ((COVERAGE_BRANCHES == 1)); then
        log "coverage: $(rustup run "$COVERAGE_NIGHTLY" rustc --version): branches are measured"
    else
        if command -v rustup >/dev/null 2>&1 && ! has_llvm_tools; then
            log "the llvm-tools component is missing; installing it (rustup component add llvm-tools-preview)"
            rustup component add llvm-tools-preview
        fi
        log "coverage: branches not measured (${COVERAGE_NO_BRANCHES_WHY})"
    fi
}

# run_instrumented_tests [nextest arguments]: every test of the workspace, instrumented, with
# the profiles of an earlier run cleared first (they would be merged into this report). A
# failing test fails it. The nextest profile comes from NEXTEST_PROFILE: llvm-cov takes
# --profile as a cargo one.
run_instrumented_tests() {
    "${LLVM_COV[@]}" clean --workspace
    log "${LLVM_COV[*]} nextest ${LLVM_COV_BRANCH[*]} --workspace --all-targets --no-report $*"
    "${LLVM_COV[@]}" nextest "${LLVM_COV_BRANCH[@]}" --workspace --all-targets --no-report "$@"
}

# Prints the per-file summary table, then fails (status 1) naming each measure under its
# threshold; `--fail-under-*` alone exits 1 without saying why.
coverage_gate() {
    local min_lines=${SBA_COVERAGE_MIN_LINES:-90}
    local min_regions=${SBA_COVERAGE_MIN_REGIONS:-88}
    local min_functions=${SBA_COVERAGE_MIN_FUNCTIONS:-85}
    local min_branches=${SBA_COVERAGE_MIN_BRANCHES:-75}
    local summary total failed=0
    summary=$("${LLVM_COV[@]}" report "${LLVM_COV_BRANCH[@]}" --summary-only) || return 1
    printf '%s\n' "$summary"
    total=$(grep '^TOTAL' <<<"$summary") || {
        log "error: no TOTAL line in the coverage summary"
        return 1
    }
    # TOTAL regions missed cover functions missed executed lines missed cover
    #       [branches missed cover]
    local regions functions lines branches
    regions=$(awk '{print $4}' <<<"$total" | tr -d '%')
    functions=$(awk '{print $7}' <<<"$total" | tr -d '%')
    lines=$(awk '{print $10}' <<<"$total" | tr -d '%')
    if ((COVERAGE_BRANCHES == 1)); then
        branches=$(awk '{print $13}' <<<"$total" | tr -d '%')
        log "coverage: branches ${branches}% (min ${min_branches}; a lower bound, see docs/contributing.md)"
        log "coverage: lines ${lines}%, regions ${regions}%, functions ${functions}%: not gated in a branch run (this toolchain's report undercounts them)"
        if ! [[ $branches =~ ^[0-9.]+$ ]]; then
            log "error: no branch figure in the coverage summary"
            failed=1
        elif below "$branches" "$min_branches"; then
            log "error: branch coverage ${branches}% is under ${min_branches}%"
            failed=1
        fi
        return "$failed"
    fi
    log "coverage: lines ${lines}% (min ${min_lines}), regions ${regions}% (min ${min_regions}), functions ${functions}% (min ${min_functions})"
    log "coverage: branches not measured (${COVERAGE_NO_BRANCHES_WHY})"
    if below "$lines" "$min_lines"; then
        log "error: line coverage ${lines}% is under ${min_lines}%"
        failed=1
    fi
    if below "$regions" "$min_regions"; then
        log "error: region coverage ${regions}% is under ${min_regions}%"
        failed=1
    fi
    if below "$functions" "$min_functions"; then
        log "error: function coverage ${functions}% is under ${min_functions}%"
        failed=1
    fi
    return "$failed"
}

# below <value> <minimum>: whether a percentage is under its threshold.
below() {
    awk -v v="$1" -v m="$2" 'BEGIN { exit !(v < m) }'
}
