#!/usr/bin/env bash
# Makes sure `promtool` (from Debian's `prometheus` package) is on PATH, for the deploy tests'
# `promtool check config` / `promtool check rules`; never starts the Prometheus daemon.
# Usage: scripts/ensure-prometheus.sh
exec "$(dirname "$0")/ensure-debian-package.sh" promtool prometheus
