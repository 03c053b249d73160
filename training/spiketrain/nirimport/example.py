"""The worked example: a spiking MLP trained in snnTorch on the project's digits, exported to NIR, imported
with ``spikeserve-import`` and calibrated with ``spikeserve-import calibrate``; shipped as
``models/digits-snntorch`` (``make train-nir-example``, about a minute of one CPU core).

    python -m spiketrain.nirimport.example --out ../models/digits-snntorch

Trained as an snnTorch user would: ``Leaky`` neurons (subtract reset, delayed), the loss on the mean
membrane of the output layer over T, Adam. The pixel scaling (0..16 -> 0..1) is folded into the first
layer's weights before export, so that the served model takes pixels in the data set's own units,
like the native ``digits`` model. Same train/held-out split as ``digits``, so the figures compare.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from ..data import load_digits_dataset
from .calibrate import calibrate_imported
from .cli import import_graph, import_parser
from .workarounds import snntorch_to_nir, write_nir

TIMESTEPS = 8
EPOCHS = 30
HIDDEN = 128
SEED = 0


def build_network() -> torch.nn.Sequential:
    import snntorch as snn

    return torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(64, HIDDEN),
        snn.Leaky(beta=0.8, init_hidden=True),
        torch.nn.Linear(HIDDEN, 10),
        snn.Leaky(beta=0.8, init_hidden=True, output=True),
    )


def unroll(net: torch.nn.Sequential, images: torch.Tensor, timesteps: int) -> torch.Tensor:
    """The output layer's membrane per timestep, ``[T, B, 10]`` (static input at every step)."""
    from snntorch import utils

    utils.reset(net)
    return torch.stack([net(images)[1] for _ in range(timesteps)])


def train(epochs: int = EPOCHS, seed: int = SEED) -> tuple[torch.nn.Sequential, float]:
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    data = load_digits_dataset()
    x = torch.from_numpy(np.asarray(data.train.inputs)) / 16.0
    y = torch.from_numpy(data.train.targets)
    net = build_network()
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(epochs):
        order = torch.randperm(len(y))
        for start in range(0, len(y), 64):
            batch = order[start : start + 64]
            membrane = unroll(net, x[batch], TIMESTEPS)
            loss = torch.nn.functional.cross_entropy(membrane.mean(0), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        test = torch.from_numpy(np.asarray(data.held_out.inputs)) / 16.0
        accuracy = float((unroll(net, test, TIMESTEPS).mean(0).argmax(1).numpy() == data.held_out.targets).mean())
        net[1].weight.div_(16.0)  # pixels in 0..16, as served
    return net, accuracy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m spiketrain.nirimport.example", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args(argv)
    net, accuracy = train(args.epochs)
    data = load_digits_dataset()
    work = args.out.parent / f".{args.out.name}.work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    graph_file = work / f"{args.out.name}.nir"
    write_nir(graph_file, snntorch_to_nir(net, torch.zeros(1, 1, 8, 8)))
    heldout = {
        "description": "scikit-learn digits held out from training (the split of models/digits), pixels 0..16",
        "input_shape": [1, 8, 8],
        "inputs": np.asarray(data.held_out.inputs).tolist(),
        "targets": data.held_out.targets.tolist(),
    }
    heldout_file = work / "heldout.json"
    heldout_file.write_text(json.dumps(heldout, separators=(",", ":")) + "\n")
    flags = ["--from", "snntorch", "--timesteps", str(TIMESTEPS), "--input", "static", "--readout", "membrane"]
    import_graph(import_parser().parse_args([str(graph_file), str(args.out), *flags, "--overwrite"]))
    shutil.copy(graph_file, args.out / graph_file.name)
    shutil.copy(heldout_file, args.out / "heldout.json")
    shutil.rmtree(work)
    evaluation = calibrate_imported(args.out, args.out / "heldout.json")
    card = args.out / "card.md"
    card.write_text(
        card.read_text()
        + "\n## How it was made\n\n"
        + f"`make train-nir-example`: {args.epochs} epochs of Adam in snnTorch (Leaky, beta 0.8; loss: cross-entropy "
        + f"of the output layer's mean membrane over T = {TIMESTEPS}), seed {SEED}, on the training split of "
        + "`digits`; exported with `workarounds.snntorch_to_nir` (snnTorch's `export_to_nir` fails at the pinned "
        + "versions), imported, and calibrated on `heldout.json` (the held-out split, labelled). snnTorch's own "
        + f"accuracy at T on the held-out split: {accuracy * 100:.2f}%; served: "
        + f"{evaluation['accuracy_per_timestep'][-1] * 100:.2f}%.\n"
    )
    print(json.dumps({"torch_accuracy": accuracy, "served_accuracy_at_t": evaluation["accuracy_per_timestep"][-1]}))


if __name__ == "__main__":
    main()
