"""Data-parallel training: two CPU processes on the gloo backend, launched by torchrun."""

import json
import subprocess
import sys
from pathlib import Path


def test_torchrun_with_two_processes_trains_and_exports_once(tmp_path):
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "spiketrain.train",
        "--dataset",
        "digits",
        "--epochs",
        "2",
        "--limit",
        "32",
        "--batch-size",
        "16",
        "--timesteps",
        "2",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "epoch 2/2" in result.stderr and "(process 0 of 2)" in result.stderr
    assert result.stderr.count("epoch 1/2") == 1, "only process 0 logs"
    assert (out / "model.onnx").is_file()
    report = json.loads((out / "eval.json").read_text())
    assert report["training"]["epochs"] == 2
    assert not (out / "checkpoint.pt").exists()
