#!/usr/bin/env bash
# Fails when a crate of the workspace declares a dependency it does not use (normal, dev or
# build), with cargo-machete: it searches each crate's sources for the dependency's name, so
# it needs no build. cargo-machete is installed (pinned, `cargo install --locked`) when
# missing. A dependency used only in a way the search cannot see (a macro that names it
# under another path) goes in the crate's `[package.metadata.cargo-machete] ignored`, with a
# comment saying why.
set -euo pipefail

SCRIPT_NAME="${0##*/}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

readonly MACHETE_VERSION=0.9.2

log() {
    printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
}

if ! cargo machete --version >/dev/null 2>&1; then
    log "cargo-machete is missing; installing it (cargo install --locked cargo-machete@$MACHETE_VERSION)"
    cargo install --locked "cargo-machete@$MACHETE_VERSION"
fi

log "checking for unused dependencies: cargo machete ($(cargo machete --version 2>/dev/null || echo "version unknown"))"
if ! cargo machete; then
    log "error: unused dependencies (listed above): remove them from the crate's Cargo.toml"
    exit 1
fi
log "ok: every declared dependency is used"
