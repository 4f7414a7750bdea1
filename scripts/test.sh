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
echo "[test] pytest"
exec .venv/bin/pytest "$@"
