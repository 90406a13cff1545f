#!/usr/bin/env bash
# Enforces the crate dependency rules of docs/architecture.md ("Rules and how they are enforced"):
#   1. `cargo deny check bans` with deny.toml: banned crates only as direct dependencies
#      of their allowed wrappers (sea-orm, sqlx, fred, reqwest, actix-web, ...);
#   2. `cargo tree` checks of whole dependency trees (transitive dependencies included):
#      sba-domain only on crates in scripts/domain-allowlist.txt and never on I/O crates,
#      sba-application never on web/database/Redis/HTTP-client crates, and so on.
# Every violation is reported with the crate it names; the exit status is 1 if any.
#
# Only normal dependencies count: dev-dependencies do not reach the binary.
# SBA_ARCH_TARGET (default x86_64-unknown-linux-gnu) is the target whose dependency tree
# is checked, so the result does not depend on the developer's machine.
set -euo pipefail

SCRIPT_NAME="${0##*/}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

readonly ALLOWLIST=scripts/domain-allowlist.txt
readonly TREE_TARGET="${SBA_ARCH_TARGET:-x86_64-unknown-linux-gnu}"

# Crates a layer must never depend on, directly or not (shell glob patterns).
readonly DOMAIN_FORBIDDEN=(tokio 'tokio-*' 'actix-*' 'sea-orm*' 'sea-query*' 'sqlx*' fred
    reqwest jsonwebtoken 'sba-*')
readonly APPLICATION_FORBIDDEN=('actix-*' 'sea-orm*' 'sea-query*' 'sqlx*' fred reqwest
    jsonwebtoken sba-infrastructure sba-delivery sba-migration)
readonly INFRASTRUCTURE_FORBIDDEN=('actix-*' sba-delivery)
readonly MIGRATION_FORBIDDEN=(sba-application sba-delivery sba-infrastructure)
# The load tool (sba-load) is an outside client of the public API: no server code or adapter.
readonly LOADTEST_FORBIDDEN=(sba-application sba-infrastructure sba-delivery sba-migration
    'actix-*' 'sea-orm*' 'sqlx*' fred)

violations=0

log() {
    printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
}

error() {
    printf 'error: %s\n' "$*" >&2
    violations=$((violations + 1))
}

# Names of every crate in the normal-dependency tree of package $1 (itself excluded).
tree_names() {
    local out
    out=$(cargo tree -p "$1" -e normal --prefix none --all-features --target "$TREE_TARGET") || {
        log "error: cargo tree -p $1 failed"
        exit 2
    }
    awk '{print $1}' <<<"$out" | sort -u | grep -vxF -- "$1" || true
}

# Prints how package $1 reaches crate $2 (the inverted tree, shortened).
show_path() {
    cargo tree -p "$1" -e normal --all-features --target "$TREE_TARGET" -i "$2" \
        --prefix indent 2>/dev/null | head -n 8 | sed 's/^/    /' >&2 || true
}

# check_forbidden <package> <dependency names> <pattern>...
check_forbidden() {
    local package=$1 names=$2 name pattern
    shift 2
    while IFS= read -r name; do
        [[ -n $name ]] || continue
        for pattern in "$@"; do
            # shellcheck disable=SC2254 # the pattern is a glob on purpose
            case $name in
                $pattern)
                    error "$package depends on '$name', which docs/architecture.md forbids ($package must never depend on $pattern); dependency path:"
                    show_path "$package" "$name"
                    break
                    ;;
            esac
        done
    done <<<"$names"
}

check_deny() {
    if ! cargo deny --version >/dev/null 2>&1; then
        log "cargo-deny is missing; installing it (cargo install --locked cargo-deny)"
        cargo install --locked cargo-deny
    fi
    log "checking deny.toml bans: cargo deny --all-features check --allow unused-wrapper bans"
    # deny.toml lists wrappers a rule allows even before they are in the graph (e.g.
    # utoipa-actix-web for actix-web); those are not worth a warning.
    if ! cargo deny --all-features check --allow unused-wrapper bans; then
        error "cargo deny check bans failed: a banned crate is used directly by a crate that is not among its wrappers in deny.toml (see the report above)"
    fi
}

check_domain() {
    local names allowed name
    log "checking that every dependency of sba-domain is in $ALLOWLIST"
    names=$(tree_names sba-domain)
    allowed=$(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$ALLOWLIST" | grep -v '^$' | sort -u)

    check_forbidden sba-domain "$names" "${DOMAIN_FORBIDDEN[@]}"
    while IFS= read -r name; do
        [[ -n $name ]] || continue
        if ! grep -qxF -- "$name" <<<"$allowed"; then
            error "sba-domain depends on '$name' which is not in $ALLOWLIST"
        fi
    done <<<"$names"
    # A stale entry would silently allow the crate back in later.
    while IFS= read -r name; do
        if ! grep -qxF -- "$name" <<<"$names"; then
            log "warning: $ALLOWLIST lists '$name' but sba-domain no longer depends on it; remove it"
        fi
    done <<<"$allowed"
}

check_layer() {
    local package=$1 names
    shift
    log "checking $package for forbidden dependencies"
    names=$(tree_names "$package")
    check_forbidden "$package" "$names" "$@"
}

check_deny
check_domain
check_layer sba-application "${APPLICATION_FORBIDDEN[@]}"
check_layer sba-infrastructure "${INFRASTRUCTURE_FORBIDDEN[@]}"
check_layer sba-migration "${MIGRATION_FORBIDDEN[@]}"
check_layer sba-loadtest "${LOADTEST_FORBIDDEN[@]}"

if ((violations > 0)); then
    log "error: $violations architecture violation(s); see the rules in docs/architecture.md"
    exit 1
fi
log "crate dependency rules hold"
