#!/usr/bin/env bash
# Run a command with a throwaway PostgreSQL server for the workspace tests, when one can be started
# (scripts/postgres.sh: Debian's binaries, installed with apt-get as root); otherwise run it without,
# and the PostgreSQL variants of the tests skip. CI (.ci/run) requires the server instead.
set -uo pipefail
cd "$(dirname "$0")/.."
PGDIR=$(mktemp -d /tmp/tunelab-pg.XXXXXX)
trap 'bash scripts/postgres.sh stop "$PGDIR" >/dev/null 2>&1; rm -rf "$PGDIR"' EXIT
if URL=$(bash scripts/postgres.sh start "$PGDIR" 2>"$PGDIR.log"); then
    export TUNELAB_TEST_POSTGRES_URL="$URL"
else
    echo "note: no PostgreSQL server could be started (see $PGDIR.log); its tests will skip" >&2
fi
"$@"
