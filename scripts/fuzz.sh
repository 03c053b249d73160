#!/usr/bin/env bash
# Fuzzes the request decoders for a bounded time (not part of `make test`; `make fuzz`).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 60)
#
# Targets (fuzz/fuzz_targets/): v1_json_body, kserve_http_body (JSON and binary tensor data),
# events (JSON and integer events, whole and streamed in chunks). Each runs from the seeds in
# fuzz/seeds/<target>/ plus its growing corpus in fuzz/corpus/<target>/. A crash, a panic, a
# timeout (a hang) or an allocation over 2 GiB stops the target, leaves the input in
# fuzz/artifacts/<target>/, and makes the script fail. Built with nightly, release mode with debug
# assertions (integer overflow is a crash too), without a sanitizer: the code under test is safe Rust.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

SECONDS_PER_TARGET="${1:-60}"
TARGETS=(v1_json_body kserve_http_body events)

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cargo +nightly fuzz build -O -a -s none

failed=0
for target in "${TARGETS[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    log="artifacts/$target/last-run.log"
    status=0
    cargo +nightly fuzz run -O -a -s none "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
        -max_len=65536 -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")
    speed=$(grep -Eo 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+' || echo "?")
    if [[ "$status" == 0 ]]; then
        echo "$target: ok, $runs runs in ${SECONDS_PER_TARGET} s ($speed/s), coverage $cov edges"
    else
        failed=1
        echo "$target: FAILED after $runs runs; see fuzz/$log and fuzz/artifacts/$target/"
        grep -E 'panicked|ERROR|SUMMARY' "$log" | head -5 || true
    fi
done
exit "$failed"
