#!/usr/bin/env bash
# Dependency hygiene. Fails when
#   - a crate of the workspace declares a dependency it does not use (normal, dev or build),
#     with cargo-machete: it searches each crate's sources for the dependency's name, so it
#     needs no build. A dependency used only in a way the search cannot see (a macro that
#     names it under another path) goes in the crate's
#     `[package.metadata.cargo-machete] ignored`, with a comment saying why;
#   - a crate that ships has a licence outside deny.toml's allow-list, or comes from anywhere
#     but the public crate registry (`cargo deny check licenses sources`).
# Security advisories are not checked here: the RustSec database is fetched from GitHub,
# which these machines cannot reach; the GitHub workflow checks them. The script says so.
# cargo-machete and cargo-deny are installed (`cargo install --locked`) when missing.
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

if ! cargo deny --version >/dev/null 2>&1; then
    log "cargo-deny is missing; installing it (cargo install --locked cargo-deny)"
    cargo install --locked cargo-deny
fi
log "checking licences and sources: cargo deny --all-features check licenses sources"
if ! cargo deny --all-features check licenses sources; then
    log "error: a licence outside deny.toml's allow-list, or a crate from another source (report above)"
    exit 1
fi
log "note: security advisories are not checked by this script (the RustSec database cannot be fetched here); the GitHub workflow runs cargo deny check advisories"
