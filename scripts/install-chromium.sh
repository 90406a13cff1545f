#!/usr/bin/env bash
# Installs Debian's `chromium` and `chromium-driver` for the browser test of the playground
# (crates/delivery/tests/api/playground/): the test drives a real headless Chromium through
# chromedriver and fails, never skips, when they are missing. Needs root or sudo for apt-get,
# like services-up.sh. Idempotent: does nothing when both are installed.
#
# Environment: SBA_CHROMIUM (the browser binary the test runs, default /usr/bin/chromium) and
# SBA_CHROMEDRIVER (default /usr/bin/chromedriver): set both to use another installation,
# and this script only checks that they exist.
set -euo pipefail

SCRIPT_NAME="${0##*/}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"

chromium="${SBA_CHROMIUM:-/usr/bin/chromium}"
chromedriver="${SBA_CHROMEDRIVER:-/usr/bin/chromedriver}"

if [[ -x $chromium && -x $chromedriver ]]; then
    log "chromium and chromedriver are installed ($chromium, $chromedriver)"
    exit 0
fi
if [[ -n ${SBA_CHROMIUM:-} || -n ${SBA_CHROMEDRIVER:-} ]]; then
    die "SBA_CHROMIUM=$chromium or SBA_CHROMEDRIVER=$chromedriver is not an executable"
fi
have apt-get ||
    die "chromium and chromedriver are missing and apt-get is not available; install them yourself (the playground's browser test needs them)"

packages=(chromium chromium-driver)
log "installing ${packages[*]} with apt-get (the playground's browser test drives them)"
# The package lists of a fresh machine may be missing or stale: update once, then install.
as_root apt-get update -q >&2
as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${packages[@]}" >&2 ||
    die "apt-get could not install ${packages[*]}"
[[ -x $chromium ]] || die "chromium was installed but $chromium is not there"
[[ -x $chromedriver ]] || die "chromium-driver was installed but $chromedriver is not there"
log "installed $("$chromium" --version 2>/dev/null || echo chromium) and $("$chromedriver" --version 2>/dev/null | head -n 1)"
