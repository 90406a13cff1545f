#!/usr/bin/env bash
# Fails when Rust, TOML or SQL under crates/ or migrations/ mentions NEXT_PUBLIC_.
# Those variables are browser configuration: nothing server-side reads one (docs/architecture.md,
# "Modes"). Only the code that reports such variables as ignored, and its tests, may name them.
set -euo pipefail

SCRIPT_NAME="${0##*/}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

# Paths relative to the repository root; an entry ending in / exempts a whole directory.
readonly EXEMPT=(
    # Configuration loading: detects NEXT_PUBLIC_* in the environment, warns, and its tests.
    crates/infrastructure/src/config/
    # API test that `sba config check` reports such variables as ignored.
    crates/delivery/tests/api/config.rs
)

log() {
    printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
}

is_exempt() {
    local path=$1 entry
    for entry in "${EXEMPT[@]}"; do
        if [[ $entry == */ && $path == "$entry"* ]] || [[ $path == "$entry" ]]; then
            return 0
        fi
    done
    return 1
}

for entry in "${EXEMPT[@]}"; do
    [[ -e $entry ]] || log "warning: exemption '$entry' no longer exists; remove it from $0"
done

matches=$(grep -rnI --include='*.rs' --include='*.toml' --include='*.sql' \
    --exclude-dir=target -e 'NEXT_PUBLIC_' crates migrations || true)

offences=0
while IFS= read -r match; do
    [[ -n $match ]] || continue
    path=${match%%:*}
    rest=${match#*:}
    line=${rest%%:*}
    text=${rest#*:}
    is_exempt "$path" && continue
    text="${text#"${text%%[![:space:]]*}"}"
    printf '%s:%s: %s\n' "$path" "$line" "$text" >&2
    offences=$((offences + 1))
done <<<"$matches"

if ((offences > 0)); then
    log "error: $offences line(s) above mention NEXT_PUBLIC_; server code must not read browser variables"
    log "(only the exempted configuration code listed in $0 may name them)"
    exit 1
fi
log "no NEXT_PUBLIC_ use outside the exempted configuration code"
