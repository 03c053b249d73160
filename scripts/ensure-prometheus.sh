#!/usr/bin/env bash
# Makes sure `promtool` (from Debian's `prometheus` package) is on PATH, for the deploy tests'
# `promtool check config` / `promtool check rules`. Installs the package with apt-get when missing;
# never starts the Prometheus daemon. Exits non-zero, saying why, when it cannot.
# Usage: scripts/ensure-prometheus.sh
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
  echo "promtool: $(command -v promtool) ($(promtool --version 2>&1 | head -n 1))"
  exit 0
fi

fail() {
  echo "ensure-prometheus: $*" >&2
  echo "ensure-prometheus: install Debian's 'prometheus' package by hand (it provides promtool)," >&2
  echo "ensure-prometheus: or put a promtool binary on PATH; the deploy tests skip promtool checks without it." >&2
  exit 1
}

command -v apt-get >/dev/null 2>&1 || fail "promtool is missing and apt-get is not available on this machine"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    fail "promtool is missing and installing it needs root (run as root or with password-less sudo)"
  fi
fi

# Keep the package's post-install script from starting the daemon (standard policy-rc.d hook):
# only when no policy is in place already, and removed again afterwards.
POLICY=/usr/sbin/policy-rc.d
ADDED_POLICY=0
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod 0755 "$POLICY"
  ADDED_POLICY=1
fi
cleanup() {
  if [ "$ADDED_POLICY" -eq 1 ]; then
    $SUDO rm -f "$POLICY"
  fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || fail "apt-get update failed (no access to the Debian archive?)"
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
  || fail "apt-get install prometheus failed"

command -v promtool >/dev/null 2>&1 || fail "the prometheus package was installed but promtool is not on PATH"
echo "promtool: $(command -v promtool) ($(promtool --version 2>&1 | head -n 1))"
