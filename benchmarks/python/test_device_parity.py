"""The device parity check (run on a GPU machine by scripts/check-cuda.sh) against two CPU servers:
it must pass on the same device, read every kind of held-out file, and fail when the two disagree."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import device_parity  # noqa: E402
import spikeserve_process  # noqa: E402

REPO = HERE.parents[1]


@pytest.fixture(scope="module")
def servers() -> object:
    binary = spikeserve_process.release_binary()
    with (
        spikeserve_process.started(binary, REPO / "models") as first,
        spikeserve_process.started(binary, REPO / "models") as second,
    ):
        yield f"http://{first.http_addr}", f"http://{second.http_addr}"


def test_two_servers_on_one_device_agree_on_every_model(servers: tuple[str, str]) -> None:
    a, b = servers
    results = device_parity.parity(a, b, REPO / "models", tolerance=1e-4, limit=4)
    assert {r.model for r in results} >= {"digits", "event-digits", "mnist-events"}
    for result in results:
        assert result.samples == 4
        assert result.disagreements == [], result
        assert result.largest_difference <= 1e-6


def test_a_device_that_answers_differently_is_reported(
    servers: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = servers
    real_infer = device_parity.infer

    def drifting(base: str, model: str, body: dict[str, object]) -> dict[str, object]:
        answer = real_infer(base, model, body)
        if base == b:  # the second "device" is off by 1e-3 and exits a step later
            answer["probabilities"] = [p + 1e-3 for p in answer["probabilities"]]
            answer["timesteps"] += 1
        return answer

    monkeypatch.setattr(device_parity, "infer", drifting)
    samples = device_parity.bodies(json.loads((REPO / "models/digits/heldout.json").read_text()))[:2]
    result = device_parity.compare("digits", samples, a, b, tolerance=1e-4)
    assert result.samples == 2
    assert any("exit at" in d for d in result.disagreements), result.disagreements
    assert any("probabilities differ by 1.00e-03" in d for d in result.disagreements), result.disagreements
