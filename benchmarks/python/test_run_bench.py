"""Smoke test of the side-by-side benchmark: ``benchmarks/run_bench.py --quick`` on digits.

It starts every server in turn on free loopback ports (spikeserve with batching on and off, the
Python peer), runs both floors and a few closed- and open-loop points with ``spikeserve-tools bench``, and
writes its JSON, markdown and plots into a temporary directory. Needs the release server and
``spikeserve-tools`` beside it (``cargo build --release --locked --workspace``); skipped with the
reason otherwise.

    cd /work/main && .venv/bin/python -m pytest benchmarks/python/test_run_bench.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RUN_BENCH = REPO / "benchmarks" / "run_bench.py"
BIN = Path(os.environ.get("SPIKESERVE_BIN", REPO / "target" / "release" / "spikeserve"))
if not BIN.is_absolute():
    BIN = REPO / BIN
# The load generator: $SPIKESERVE_TOOLS_BIN, else the file beside the server binary.
TOOLS = Path(os.environ.get("SPIKESERVE_TOOLS_BIN", BIN.with_name("spikeserve-tools")))
if not TOOLS.is_absolute():
    TOOLS = REPO / TOOLS
TIMEOUT_S = 85


def bench_subcommand_missing() -> str | None:
    """Why ``spikeserve-tools bench`` cannot run here, or None when it can."""
    for binary in (BIN, TOOLS):
        if not binary.exists():
            return f"{binary} is not built (cargo build --release --locked --workspace)"
    try:
        done = subprocess.run([str(TOOLS), "bench", "--help"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"`{TOOLS} bench --help` could not run: {err}"
    if done.returncode != 0:
        return f"`{TOOLS} bench --help` failed: {done.stderr.strip()[:200]}"
    return None


def run_quick(script: Path, out: Path) -> None:
    """Runs ``script --quick`` into ``out`` (skipping the test where ``spikeserve-tools bench`` is missing)."""
    missing = bench_subcommand_missing()
    if missing:
        pytest.skip(missing)
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(out), "--bin", str(BIN)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_quick_run_covers_every_server_without_errors(tmp_path: Path) -> None:
    run_quick(RUN_BENCH, tmp_path)
    result = json.loads((tmp_path / "bench-quick.json").read_text())

    assert set(result["floors"]) == {"rust", "python"}
    for floor in result["floors"].values():
        assert floor["errors"] == {} and floor["ok"] == floor["requests"] > 0
        assert floor["throughput_rps"] > 0

    runs = result["closed"] + result["open"]
    servers = {r["server"] for r in runs}
    assert servers == {"python-peer", "spikeserve-batch-off", "spikeserve-batch-on"}
    for server in servers:
        for clients in result["plan"]["clients"]:
            assert any(
                r["server"] == server and r["protocol"] == "http" and r["clients"] == clients for r in result["closed"]
            ), (server, clients)
    protocols = {r["protocol"] for r in result["closed"] if r["server"] == "spikeserve-batch-on"}
    assert protocols == {"http", "grpc-unary", "grpc-stream", "sse"}
    assert {r["mode"] for r in result["open"]} == {"open"}
    assert {r["server"] for r in result["open"]} == {"python-peer", "spikeserve-batch-on"}

    for r in runs:
        where = f"{r['server']} {r['protocol']} clients={r['clients']} rate={r['rate']}"
        assert r["errors"] == {}, where
        assert r["ok"] == r["requests"] > 0, where
        assert r["model"] == "digits" and 1.0 <= r["mean_timesteps"] <= 8.0, where
        if r["protocol"] in ("grpc-stream", "sse"):
            assert r["ttfp_ms"] is not None, where

    assert result["ratios"], "no ratios computed"
    markdown = (tmp_path / "bench-quick.md").read_text()
    assert "## Ratios" in markdown and "Python peer" in markdown
    assert (tmp_path / "bench-quick-throughput.png").stat().st_size > 0
    assert (tmp_path / "bench-quick-latency.png").stat().st_size > 0


def test_overhead_quick_compares_the_floor_and_the_server_on_the_same_requests(tmp_path: Path) -> None:
    """``benchmarks/overhead.py --quick``: digits and an untrained VGGSNN exported on the fly, each
    through the floor and one gRPC client; both sides must take the same exits."""
    run_quick(REPO / "benchmarks" / "overhead.py", tmp_path)
    result = json.loads((tmp_path / "overhead-quick.json").read_text())
    assert [r["model"] for r in result["results"]] == ["digits", "vggsnn-x0.125"]
    for r in result["results"]:
        assert r["floor_ms"] > 0 and r["served_ms"] > 0, r["model"]
        assert r["ratio"] == pytest.approx(r["served_ms"] / r["floor_ms"]), r["model"]
        for x in r["rounds"]:
            # The empty gRPC call was measured too, and the rest of the overhead is what is left.
            assert 0 < x["transport_ms"] < x["served_ms"], r["model"]
            assert x["server_ms"] == pytest.approx(x["served_ms"] - x["floor_ms"] - x["transport_ms"]), r["model"]
            # The same requests and cutoff: the server's exits are the floor's.
            assert x["served_mean_timesteps"] == pytest.approx(x["floor_mean_timesteps"]), r["model"]
            assert x["served_errors"] == {}, r["model"]
    assert "| vggsnn-x0.125" in (tmp_path / "overhead-quick.md").read_text()
