"""The step time of an imported model against a native one of the same shape, in ONNX Runtime (one thread).

The native `digits` architecture (conv 1->16, conv 16->32, avgpool 2, fc 512->128, fc 128->10, three LIF
layers) exported by the training job, and the same layers built in snnTorch, exported to NIR and imported
with `spikeserve-import` (untrained weights: the cost of a step does not depend on them). Each graph is
stepped with the server's feeds (frame and states in, states fed back) at batch 1 and 64; the median of
repeated runs. The server adds the same scheduling around either graph, so the step is where an imported
model could cost more.

    PYTHONPATH=training .venv/bin/python benchmarks/nir_import_step.py
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from spiketrain.export import export_step_model
from spiketrain.models import DigitsCSNN
from spiketrain.nirimport.workarounds import snntorch_to_nir, write_nir


def snntorch_digits() -> torch.nn.Sequential:
    import snntorch as snn

    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        snn.Leaky(beta=0.5, init_hidden=True),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        snn.Leaky(beta=0.5, init_hidden=True),
        torch.nn.AvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(512, 128),
        snn.Leaky(beta=0.5, init_hidden=True),
        torch.nn.Linear(128, 10),
    )


def step_ms(path: Path, batch: int, steps: int, repeats: int) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    frame = np.random.default_rng(0).uniform(0, 16, (batch, *inputs[0].shape[1:])).astype(np.float32)
    times = []
    for _ in range(repeats):
        states = {i.name: np.zeros((batch, *i.shape[1:]), np.float32) for i in inputs[1:]}
        start = time.perf_counter()
        for _ in range(steps):
            out = session.run(None, {inputs[0].name: frame, **states})
            states = {f"state_in.{k}": v for k, v in enumerate(out[1 : 1 + len(states)])}
        times.append((time.perf_counter() - start) / steps * 1e3)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        native = root / "native.onnx"
        meta = {"timesteps": 8, "num_classes": 10, "labels": [str(i) for i in range(10)], "input_kind": "static"}
        export_step_model(DigitsCSNN().eval(), native, meta)
        write_nir(root / "digits.nir", snntorch_to_nir(snntorch_digits(), torch.zeros(1, 1, 8, 8)))
        flags = ["--from", "snntorch", "--timesteps", "8", "--input", "static"]
        command = [sys.executable, "-m", "spiketrain.nirimport", str(root / "digits.nir"), str(root / "imported")]
        subprocess.run([*command, *flags], check=True, capture_output=True)
        imported = root / "imported" / "model.onnx"
        print("| batch | native step (ms) | imported step (ms) | imported / native |")
        print("|---|---|---|---|")
        for batch in (1, 64):
            # Interleaved, so that a busy machine slows both alike.
            a = step_ms(native, batch, args.steps, args.repeats)
            b = step_ms(imported, batch, args.steps, args.repeats)
            print(f"| {batch} | {a:.4f} | {b:.4f} | {b / a:.3f} |")


if __name__ == "__main__":
    main()
