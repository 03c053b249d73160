"""``spikeserve-tools bench --protocol kserve-http`` and ``kserve-grpc`` against the real release server:
the KServe v2 requests the Triton comparison sends (``benchmarks/triton-peer``) are answered, with and
without the Triton sequence parameters (``--kserve-sequence``), which spikeserve takes and ignores."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1]
REPO = BENCHMARKS.parent
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import spikeserve_process  # noqa: E402

REQUESTS = 40


@pytest.fixture(scope="module")
def server() -> Iterator[spikeserve_process.Server]:
    binary = spikeserve_process.release_binary()
    if not binary.exists():
        pytest.skip(f"{binary} is missing; build it with `cargo build --release --locked --workspace`")
    with spikeserve_process.started(binary, REPO / "models") as running:
        yield running


@pytest.mark.parametrize(
    ("protocol", "model", "sequence"),
    [
        ("kserve-http", "digits", False),
        ("kserve-grpc", "digits", False),
        ("kserve-http", "event-digits", True),
        ("kserve-grpc", "event-digits", True),
    ],
)
def test_the_kserve_protocols_get_answers_and_no_errors(
    server: spikeserve_process.Server, protocol: str, model: str, sequence: bool, tmp_path: Path
) -> None:
    out = tmp_path / "report.json"
    tools = spikeserve_process.tools_binary(spikeserve_process.release_binary())
    command = [str(tools), "bench", "--model", model, "--inputs", str(REPO / "models" / model / "heldout.json")]
    command += ["--protocol", protocol, "--http", f"http://{server.http_addr}", "--grpc", f"http://{server.grpc_addr}"]
    command += ["--clients", "4", "--requests", str(REQUESTS), "--warmup", "2", "--no-progress", "--json", str(out)]
    if sequence:
        command.append("--kserve-sequence")
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["protocol"] == protocol
    assert (report["ok"], report["requests"], report["errors"]) == (REQUESTS, REQUESTS, {})
    assert sum(report["exit_reasons"].values()) == REQUESTS
    assert set(report["exit_reasons"]) <= {"confident", "max_timesteps"}
    assert report["mean_timesteps"] >= 1


def test_the_sequence_parameters_go_only_with_the_kserve_protocols(tmp_path: Path) -> None:
    tools = spikeserve_process.tools_binary(spikeserve_process.release_binary())
    heldout = REPO / "models" / "digits" / "heldout.json"
    command = [str(tools), "bench", "--inputs", str(heldout), "--protocol", "http", "--kserve-sequence"]
    command += ["--http", "http://127.0.0.1:9", "--warmup", "0", "--requests", "1", "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "--kserve-sequence goes with --protocol kserve-http or kserve-grpc" in done.stderr
