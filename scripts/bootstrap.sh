#!/usr/bin/env bash
# Set up geventprobe on a fresh machine: system packages it needs, then .venv with
# geventprobe and every driver build installed. Safe to run again.
#
#   PostgreSQL server programs  -> the embedded throwaway server (skip with --dsn)
#   pg_config + libpq headers   -> compiling psycopg's "c" build
#   libpq5                      -> psycopg's pure-"python" build
#   redis-server                -> the embedded throwaway broker of a celery run (skip with --broker)
set -euo pipefail
cd "$(dirname "$0")/.."

have_server() {
    command -v initdb >/dev/null 2>&1 && return 0
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

missing=()
have_server || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v pg_config >/dev/null 2>&1 || missing+=(libpq-dev)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
if ((${#missing[@]})); then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "bootstrap: installing ${missing[*]} with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" python3-venv libpq5 >/dev/null
    else
        echo "bootstrap: missing ${missing[*]}: install them (Debian/Ubuntu: sudo apt-get install" \
             "postgresql libpq-dev gcc redis-server; macOS: brew install postgresql redis)," \
             "then run me again" >&2
        exit 2
    fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The c extra compiles psycopg-c against the local libpq, pinned to psycopg's version.
if ! .venv/bin/python -m pip install -q -e ".[c,test]"; then
    echo "bootstrap: psycopg's c build did not compile; installing without it (it will show" \
         "as UNAVAILABLE with the reason)" >&2
    .venv/bin/python -m pip install -q -e ".[test]"
fi
# An editable install leaves geventprobe's own modules uncompiled, and where
# PYTHONDONTWRITEBYTECODE is set (it is on the machine this project is measured on) Python
# never caches them: every process a run starts compiled them again (0.1 s for the CLI).
.venv/bin/python -m compileall -q src >/dev/null
echo "bootstrap: ready: .venv/bin/geventprobe" >&2
