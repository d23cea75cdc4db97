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
  # prometheus: `loom local up --prometheus` runs it as a process of the local mesh, so its
  # system service must not start: a policy-rc.d forbidding it while the package installs.
  if ! command -v prometheus >/dev/null; then
    echo "setup: installing Debian's prometheus (its system service not started)"
    made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
      made_policy=1
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    if command -v systemctl >/dev/null; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
    if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
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
