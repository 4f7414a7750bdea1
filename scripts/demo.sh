#!/usr/bin/env bash
# The platform's main job, from a fresh clone: set-up, then the demo.
# Extra arguments go to `python -m launcher demo` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m launcher demo "$@"
