#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian/Ubuntu machine with only Python:
#   - system packages the platform runs on (mosquitto, redis-server, postgresql) when missing,
#     and redis-tools (redis-cli, which builds the tests' Redis Cluster; redis-server needs it)
#     and mosquitto-clients (tests/deploy/test_compose.py runs the broker's healthcheck)
#     (the tests start their own private instances of each; no system service is used)
#   - prometheus (Debian's package: prometheus and promtool), which the tests use to check
#     deploy/prometheus/ (promtool) and to run the Grafana dashboard's queries
#   - gcc and the mosquitto plugin headers (mosquitto-dev, libmosquitto-dev), then the
#     broker's auth plugin (mosquitto/plugin/caas_auth.c, built into mosquitto/plugin/build/)
#   - chromium (Debian's package), which the console's browser tests drive through
#     Playwright (Playwright's own browser downloads are never used)
#   - the project's virtualenv at .venv with pinned dependencies (constraints.txt)
# Called by scripts/demo.sh and scripts/test.sh; safe to run again (skips what is done).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*"; }

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

missing=()
have mosquitto || missing+=(mosquitto)
have mosquitto_pub || missing+=(mosquitto-clients)  # the compose broker healthcheck's test
have redis-server || missing+=(redis-server)
have redis-cli || missing+=(redis-tools)  # `redis-cli --cluster create`: the test cluster
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || have initdb || missing+=(postgresql)
{ have prometheus && have promtool; } || missing+=(prometheus)
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
have gcc || missing+=(gcc)
[ -f /usr/include/mosquitto_plugin.h ] || missing+=(mosquitto-dev)
[ -f /usr/include/mosquitto.h ] || missing+=(libmosquitto-dev)
have chromium || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  log "installing ${missing[*]} with apt-get"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi

# Reinstall only when the dependency files changed since the last successful install.
stamp=.venv/.caas-deps
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python dependencies into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
  echo "$want" > "$stamp"
fi
plugin=$(.venv/bin/python -m launcher build-plugin)
log "broker plugin: $plugin"
log "ready: mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}' || true), \
$(redis-server --version | awk '{print $3}'), $(.venv/bin/python --version)"
