#!/usr/bin/env bash
# Mutation testing with cargo-mutants: each mutant is a small deliberate bug (a function
# returns a default value, a comparison flips, a match arm is deleted); the tests of the
# mutated crate run against it, and a mutant no test notices is "missed". Not part of
# .ci/run (a full run of one crate takes hours on two cores); the GitHub workflow runs the
# mutants of a pull request's changed lines (--in-diff).
#
#   scripts/mutants.sh -p sba-domain                   # every mutant of a crate
#   scripts/mutants.sh --in-diff git.diff              # the mutants of a diff's lines
#   scripts/mutants.sh -f crates/application/src/sessions.rs
#   scripts/mutants.sh --list -p sba-application       # list them, run nothing
#
# Arguments go to `cargo mutants` (installed pinned when missing); its configuration is
# .cargo/mutants.toml. Results go to mutants.out/ (caught.txt, missed.txt, timeout.txt,
# unviable.txt, outcomes.json); the script ends with their counts and the missed mutants
# (scripts/mutants-summary.sh). Starts the private PostgreSQL and Redis first, since the
# tests of sba-infrastructure and sba-delivery need them.
#
# Exit status: cargo mutants' own (0 every mutant caught, 2 some missed, 3 some timed out,
# 4 the tests fail without any mutation).
set -euo pipefail

SCRIPT_NAME="${0##*/}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

readonly MUTANTS_VERSION=27.1.0

log() {
    printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
}

if ! cargo mutants --version >/dev/null 2>&1; then
    log "cargo-mutants is missing; installing it (cargo install --locked cargo-mutants@$MUTANTS_VERSION)"
    cargo install --locked "cargo-mutants@$MUTANTS_VERSION"
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    log "cargo-nextest is missing; installing it (cargo install --locked cargo-nextest)"
    cargo install --locked cargo-nextest
fi

listing=0
out=mutants.out
previous=
for arg in "$@"; do
    case $arg in
    --list) listing=1 ;;
    --output=*) out=${arg#--output=}/mutants.out ;;
    esac
    if [[ $previous == -o || $previous == --output ]]; then
        out=$arg/mutants.out
    fi
    previous=$arg
done
if ((listing == 0)); then
    # shellcheck source=scripts/lib/with-services.sh
    source scripts/lib/with-services.sh
    start_test_services "mutation run"
fi
# A mutant is caught by its first failing test (.config/nextest.toml, profile mutants).
export NEXTEST_PROFILE=mutants

log "cargo mutants $*"
status=0
cargo mutants "$@" || status=$?
if ((listing == 0)); then
    # The counts and the missed mutants, as the pull request job's summary shows them.
    scripts/mutants-summary.sh "$out" >&2
fi
exit "$status"
