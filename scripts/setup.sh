#!/usr/bin/env bash
# Sets up a fresh machine for `make test` / `make demo`: Debian packages (when root and
# apt-get exist) and a virtualenv in .venv with Loom installed in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."

# chromium: the browser the web UI tests drive with Playwright (never a downloaded one).
DEBS=(iptables iproute2 dnsutils dnsperf dnsmasq-base etcd-server wrk procps curl chromium)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
else
  echo "setup: not root or no apt-get: skipping Debian packages (${DEBS[*]}); tests that need them will skip"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
echo "setup: installing loom and its dependencies into .venv"
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
