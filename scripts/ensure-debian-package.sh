#!/usr/bin/env bash
# Makes sure COMMAND is on PATH, installing Debian's PACKAGE with apt-get (no recommended packages)
# when it is missing. A package's post-install script may not start a daemon. Exits non-zero, saying
# why, when it cannot.
# Usage: scripts/ensure-debian-package.sh COMMAND PACKAGE
set -euo pipefail

if [ "$#" -ne 2 ]; then
  echo "usage: $0 COMMAND PACKAGE" >&2
  exit 2
fi
COMMAND=$1
PACKAGE=$2
NAME=$(basename "$0" .sh)

version() {
  echo "$COMMAND: $(command -v "$COMMAND") ($("$COMMAND" --version 2>/dev/null | head -n 1))"
}

if command -v "$COMMAND" >/dev/null 2>&1; then
  version
  exit 0
fi

fail() {
  echo "$NAME: $*" >&2
  echo "$NAME: install Debian's '$PACKAGE' package by hand (it provides $COMMAND), or put $COMMAND on PATH;" >&2
  echo "$NAME: the tests that need it skip without it." >&2
  exit 1
}

command -v apt-get >/dev/null 2>&1 || fail "$COMMAND is missing and apt-get is not available on this machine"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    fail "$COMMAND is missing and installing it needs root (run as root or with password-less sudo)"
  fi
fi

# Keep the package's post-install script from starting a daemon (standard policy-rc.d hook): only
# when no policy is in place already, and removed again afterwards.
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
# --no-install-recommends and a clean cache afterwards: CI machines have little disk.
$SUDO apt-get install -y -qq --no-install-recommends "$PACKAGE" >/dev/null || fail "apt-get install $PACKAGE failed"
$SUDO apt-get clean

command -v "$COMMAND" >/dev/null 2>&1 || fail "the $PACKAGE package was installed but $COMMAND is not on PATH"
version
