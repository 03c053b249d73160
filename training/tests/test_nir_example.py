"""The shipped imported model (models/digits-snntorch: trained in snnTorch, exported to NIR, imported and
calibrated) answers with calibrated exits through /v1, gRPC and KServe v2, exactly as its eval.json says;
and `spikeserve-import calibrate` works from unlabelled recordings too."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from conftest import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
from spikeserve_process import Server, started

MODEL = "digits-snntorch"
SHIPPED = PROJECT_ROOT / "models" / MODEL
SAMPLES = range(0, 360, 24)
BUDGET = 0.5


@pytest.fixture(scope="module")
def server(spikeserve_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    models = tmp_path_factory.mktemp("served")
    shutil.copytree(SHIPPED, models / MODEL)
    with started(spikeserve_bin, models) as running:
        yield running


def _offline() -> tuple[dict, dict]:
    evaluation = json.loads((SHIPPED / "eval.json").read_text())
    heldout = json.loads((SHIPPED / "heldout.json").read_text())
    return evaluation, heldout


def _budget_threshold(evaluation: dict) -> float:
    rows = evaluation["calibration"]["table"]
    return next(r["threshold"] for r in rows if r["max_accuracy_drop"] == BUDGET)


def test_the_shipped_import_is_calibrated_and_says_where_it_came_from():
    proto = onnx.load(str(SHIPPED / "model.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["spikeserve.calibration"])
    assert json.loads(meta["spikeserve.training"])["imported_from"] == "nir"
    card = (SHIPPED / "card.md").read_text()
    for needle in ("digits-snntorch.nir", "sha256", "snntorch", "reset_timing", "## Calibrated exits", "## Anytime"):
        assert needle in card
    evaluation, _ = _offline()
    assert evaluation["accuracy_per_timestep"][-1] > 0.95


def test_calibrated_exits_through_v1_grpc_and_kserve(server):
    from spikeserve_client import Client

    evaluation, heldout = _offline()
    threshold = _budget_threshold(evaluation)
    assert threshold == evaluation["default_threshold"]
    exits = evaluation["anytime_at_default_threshold"]["exit_timesteps"]
    predictions = evaluation["anytime_at_default_threshold"]["predictions"]
    with httpx.Client(timeout=30) as http, Client(server.grpc_addr) as grpc:
        for i in SAMPLES:
            image = np.asarray(heldout["inputs"][i], dtype=np.float32)
            v1 = http.post(
                f"http://{server.http_addr}/v1/models/{MODEL}/infer",
                json={"input": image.tolist(), "max_accuracy_drop": BUDGET},
            ).json()
            assert (v1["timesteps"], v1["class_index"]) == (exits[i], predictions[i]), f"/v1 sample {i}"
            assert v1["threshold"] == pytest.approx(threshold) and v1["max_accuracy_drop"] == BUDGET
            answer = grpc.infer(MODEL, image, max_accuracy_drop=BUDGET)
            assert (answer.timesteps, answer.class_index) == (exits[i], predictions[i]), f"gRPC sample {i}"
            body = {
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": image.ravel().tolist()}],
                "parameters": {"max_accuracy_drop": BUDGET},
            }
            kserve = http.post(f"http://{server.http_addr}/v2/models/{MODEL}/infer", json=body).json()
            outputs = {o["name"]: o["data"] for o in kserve["outputs"]}
            assert (outputs["timesteps"][0], outputs["class_index"][0]) == (exits[i], predictions[i]), f"KServe {i}"
            assert kserve["parameters"]["max_accuracy_drop"] == BUDGET


def test_calibrate_without_labels_calibrates_agreement_with_the_answer_at_t(tmp_path):
    model = tmp_path / MODEL
    shutil.copytree(SHIPPED, model)
    heldout = json.loads((SHIPPED / "heldout.json").read_text())
    recordings = tmp_path / "recordings.npz"
    np.savez(recordings, inputs=np.asarray(heldout["inputs"][:200], dtype=np.float32))
    command = [sys.executable, "-m", "spiketrain.nirimport", "calibrate", str(model), "--data", str(recordings)]
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=PROJECT_ROOT / "training")
    assert result.returncode == 0, result.stderr
    evaluation = json.loads((model / "eval.json").read_text())
    assert not evaluation["labelled"] and "agreement" in evaluation["measure"]
    assert evaluation["accuracy_per_timestep"][-1] == 1.0  # the model agrees with itself at T
    meta = {p.key: p.value for p in onnx.load(str(model / "model.onnx")).metadata_props}
    table = json.loads(meta["spikeserve.calibration"])
    assert [row["max_accuracy_drop"] for row in table] == [0.1, 0.25, 0.5, 1.0, 2.0]
    assert "not measured yet" not in (model / "card.md").read_text()
