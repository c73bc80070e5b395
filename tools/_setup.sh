# Sourced by tools/run and tools/test: make sure the system packages and .venv are there.
# Works on a fresh Debian machine as root with only Python 3.11; idempotent and quick when done.
# The pip extras to install come from SETUP_EXTRAS (set by the sourcing script), never from the
# positional parameters: `source` hands this file the caller's own arguments (`tools/run --listen
# ...` once became `pip install -e .[--listen]`), and those belong to the daemon / pytest.
# Run directly (`bash tools/_setup.sh test`), its first argument names the extras.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  EXTRAS="${1:-}"
else
  EXTRAS="${SETUP_EXTRAS:-}"
fi

PY="${PYTHON:-python3}"
need_apt=()
# venv/ensurepip and Python.h (systemd-python compiles) are separate packages on Debian
"$PY" -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
"$PY" -c 'import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || need_apt+=(python3-dev)
pkg-config --exists libsystemd 2>/dev/null || need_apt+=(libsystemd-dev)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
command -v gcc >/dev/null || need_apt+=(gcc)
if [ -n "$EXTRAS" ]; then
  command -v dot >/dev/null || need_apt+=(graphviz)
  command -v systemd-analyze >/dev/null || need_apt+=(systemd)
  # the browser tests of /ui/ drive Debian's chromium (Playwright never downloads a browser)
  [ -x "${CHROMIUM:-/usr/bin/chromium}" ] || need_apt+=(chromium)
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "tools: installing Debian packages: ${need_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "tools: missing ${need_apt[*]} and cannot apt-get install them (not root?)" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "tools: creating .venv with $($PY --version)" >&2
  "$PY" -m venv .venv
fi
stamp=".venv/.installed${EXTRAS:+-$EXTRAS}"
installed() {  # an install with extras includes the plain one (tools/test, then tools/run)
  local f candidates=("$stamp")
  if [ -z "$EXTRAS" ]; then candidates+=(.venv/.installed-*); fi
  for f in "${candidates[@]}"; do
    if [ -f "$f" ] && [ ! pyproject.toml -nt "$f" ]; then return 0; fi
  done
  return 1
}
if ! installed; then
  echo "tools: installing pipelined${EXTRAS:+[$EXTRAS]} into .venv" >&2
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".${EXTRAS:+[$EXTRAS]}"
  touch "$stamp"
fi
