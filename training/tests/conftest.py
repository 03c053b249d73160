"""Shared fixtures: one tiny trained-and-exported model for the whole session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from spiketrain.train import TrainConfig, run

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """One epoch on a few samples: enough to exercise training, export, evaluation and parity."""
    out = tmp_path_factory.mktemp("models") / "tiny"
    report = run(TrainConfig(epochs=1, limit=48, batch_size=16, timesteps=4, threads=1), out)
    assert json.loads((out / "eval.json").read_text())["timesteps"] == 4
    return out, report


@pytest.fixture(scope="session")
def spikeserve_bin() -> Path:
    """The server binary (``make test`` builds it and sets SPIKESERVE_BIN)."""
    path = Path(os.environ.get("SPIKESERVE_BIN", PROJECT_ROOT / "target" / "release" / "spikeserve"))
    if not path.is_file():
        pytest.fail(f"spikeserve binary not found at {path}; run the tests with `make test`")
    return path.resolve()
