#!/usr/bin/env bash
# Installs zapgate and its development tools into .venv and runs the whole test suite.
# The PostgreSQL half of the store tests needs PostgreSQL's server binaries (Debian package
# `postgresql`); as root this script installs them, otherwise it says how.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${ZAPGATE_TEST_DATABASE_URL:-}" ] && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  else
    echo "note: PostgreSQL tests will be skipped; run 'sudo apt-get install postgresql'" \
         "or set ZAPGATE_TEST_DATABASE_URL to an admin URL" >&2
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev]'
exec .venv/bin/pytest "$@"
