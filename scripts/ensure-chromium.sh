#!/usr/bin/env bash
# Makes sure Debian's headless-capable `chromium` is on PATH, for the browser tests (tests/browser:
# the API page and cross-origin calls, driven over the DevTools protocol).
# Usage: scripts/ensure-chromium.sh
exec "$(dirname "$0")/ensure-debian-package.sh" chromium chromium
