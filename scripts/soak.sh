#!/usr/bin/env bash
# Load and faults, bounded (not part of `make test`): figures for RELIABILITY.md.
#
#   scripts/soak.sh [SECONDS] [RUNS]   (defaults 180 and 1; `make soak SOAK_SECONDS=.. SOAK_RUNS=..`)
#
# RUNS > 1 repeats both phases, each run on fresh servers, and stops at the first that fails.
#
# 1. Soak: 256 clients for SECONDS mixing gRPC unary, server streaming and sessions, HTTP JSON and
#    SSE, 10% giving up early, 5% dropping their connection, 10% with a 5 ms budget, against a
#    server whose queue is small enough to refuse some (overload). Halfway through, a new version
#    of the model is moved into the models directory and must take over without a failed request.
#    Fails on any error other than overload refusals, if the slots and queue do not return to zero,
#    or if the server's resident memory grew.
# 2. SIGTERM under load: 256 clients on every door, waiting for their answers, then SIGTERM after a
#    few seconds: admission stops, every request in flight is answered, the process exits 0 within
#    the grace period. Every call must end with an answer or `shutting_down` / UNAVAILABLE: none
#    unexpected and none unsettled (a connection broken under an open call), and the server's
#    final counts must equal the answers the clients received, with none cancelled.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_TO_RUN="${1:-180}"
RUNS="${2:-1}"
CLIENTS="${CLIENTS:-256}"
RESULTS="${RESULTS:-benchmarks/results}"
HTTP_PORT="${HTTP_PORT:-18100}"
GRPC_PORT="${GRPC_PORT:-18101}"
# SPIKESERVE_BIN runs a binary built beforehand (nothing is built then); the load comes from the
# tools beside it (spikeserve-tools), or from SPIKESERVE_TOOLS_BIN.
BIN="${SPIKESERVE_BIN:-target/release/spikeserve}"
TOOLS="${SPIKESERVE_TOOLS_BIN:-$(dirname "$BIN")/spikeserve-tools}"

if [[ -n "${SPIKESERVE_BIN:-}" ]]; then
    make --no-print-directory venv >/dev/null
else
    make --no-print-directory venv build >/dev/null
fi
ORT_DYLIB_PATH="$(ls "$PWD"/.venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.* | sort | tail -1)"
export ORT_DYLIB_PATH
mkdir -p "$RESULTS"
work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then kill -9 "$server_pid"; fi
    rm -rf "$work"
}
trap cleanup EXIT

# The models directory the server watches: digits, whose next version is digits-tet's first seed
# (same contract, different weights).
mkdir -p "$work/models"

start_server() {
    local log="$1"
    RUST_LOG="info,spikeserve::request=warn" "$BIN" --log-format json serve \
        --models "$work/models" --http-addr "127.0.0.1:$HTTP_PORT" --grpc-addr "127.0.0.1:$GRPC_PORT" \
        --queue-capacity 64 --reload-interval-secs 1 --shutdown-grace-secs 30 2>"$log" &
    server_pid=$!
    for _ in $(seq 1 100); do
        if grep -q '"listening"' "$log" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "the server did not start; its log:" >&2
    cat "$log" >&2
    exit 1
}

soak() {
    "$TOOLS" soak --http "http://127.0.0.1:$HTTP_PORT" --grpc "http://127.0.0.1:$GRPC_PORT" \
        --inputs models/digits/heldout.json --clients "$CLIENTS" --server-pid "$server_pid" --no-progress "$@"
}

run_once() {
    rm -rf "$work/models/digits"
    cp -r models/digits "$work/models/digits"
    echo "== soak: $CLIENTS clients for $SECONDS_TO_RUN s, a model reload halfway"
    start_server "$work/soak.log"
    (
        sleep "$((SECONDS_TO_RUN / 2))"
        # The atomic way to publish a new version: write it beside the old one, then rename it in.
        cp models/digits-tet/seed-1/model.onnx "$work/models/digits/.model.onnx.new"
        mv "$work/models/digits/.model.onnx.new" "$work/models/digits/model.onnx"
    ) &
    reloader=$!
    soak --duration-secs "$SECONDS_TO_RUN" --json "$RESULTS/soak.json"
    wait "$reloader"
    if ! grep -q '"message":"model reloaded' "$work/soak.log"; then
        echo "the new model version was not loaded; server log:" >&2
        grep -v '"spikeserve::request"' "$work/soak.log" | tail -20 >&2
        exit 1
    fi
    grep '"message":"model reloaded' "$work/soak.log" | tail -1

    echo "== SIGTERM under load (a fresh server, so that its final counts are this phase's)"
    kill -TERM "$server_pid"
    wait "$server_pid" || true
    start_server "$work/sigterm.log"
    # Clients that wait for their answers: a client that cancels or drops its connection on purpose
    # cannot tell a refused call from a lost one (RELIABILITY.md, SIGTERM under load).
    soak --duration-secs 60 --until-shutdown --cancel-fraction 0 --disconnect-fraction 0 --budget-fraction 0 \
        --json "$RESULTS/soak-sigterm.json" &
    load=$!
    sleep 5
    started=$(date +%s.%N)
    kill -TERM "$server_pid"
    status=0
    wait "$server_pid" || status=$?
    stopped=$(date +%s.%N)
    server_pid=""
    load_status=0
    wait "$load" || load_status=$?
    grep -E '"(stopped: every request in flight was answered|stopped: the grace period ran out)"' "$work/sigterm.log" | tail -1
    echo "server exit status $status after $(python3 -c "print(round($stopped - $started, 2))") s; load generator exit status $load_status"
    if [[ "$status" != 0 || "$load_status" != 0 ]]; then
        exit 1
    fi
    # Every answer the server sent reached its client, and nothing it accepted was dropped.
    python3 - "$work/sigterm.log" "$RESULTS/soak-sigterm.json" <<'PY'
import json
import sys

log, report = sys.argv[1], json.load(open(sys.argv[2]))
counts = [json.loads(line)["fields"] for line in open(log) if '"final counts"' in line]
if not counts:
    sys.exit("the server logged no final counts")
answered = sum(c["answered"] for c in counts)
cancelled = sum(c["cancelled"] for c in counts)
print(
    f"server: {answered} answered, {cancelled} cancelled; clients: {report['answered']} answered, "
    f"{report['unsettled_at_shutdown']} calls unsettled at shutdown"
)
if answered != report["answered"] or cancelled != 0:
    sys.exit("the server's counts differ from the clients': an answer or an accepted request was lost")
if report["unsettled_at_shutdown"] or report["unexpected"]:
    sys.exit("calls ended without an answer or a status at shutdown: " + json.dumps(report["unexpected"]))
PY
}

for run in $(seq 1 "$RUNS"); do
    echo "=== run $run of $RUNS"
    run_once
done
echo "soak passed: results in $RESULTS/soak.json and $RESULTS/soak-sigterm.json"
