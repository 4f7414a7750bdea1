#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, lint, types, then pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k vehicle -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "[test] mypy (strict)"
.venv/bin/mypy
# Two pytest processes (each with its own broker, Redis, Redis Cluster and PostgreSQL,
# on free ports), tests handed out as they finish; then the tests marked `serial` (they
# measure time or kill processes, and a second process beside them made them miss
# their bounds) in one process with nothing beside them. About 12 minutes on two cores
# instead of 20. CAAS_TEST_WORKERS=0 runs everything in one process, in one go.
# pytest's exit code 5 means "no test selected" (e.g. -k matched only one of the parts).
workers="${CAAS_TEST_WORKERS:-2}"
if [ "$workers" = "0" ]; then
  echo "[test] pytest"
  exec .venv/bin/pytest "$@"
fi
status=0
echo "[test] pytest (${workers} workers; the serial tests after)"
.venv/bin/pytest -n "$workers" --dist worksteal -m "not serial" "$@" || status=$?
[ "$status" = 5 ] && status=0
echo "[test] pytest, the serial tests"
.venv/bin/pytest -m serial "$@" || { s=$?; [ "$s" = 5 ] || status=$s; }
exit "$status"
