"""Writes a model card: what the model is, how it was trained, and what it measured."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_card(path: Path, name: str, metadata: Mapping[str, Any], report: Mapping[str, Any]) -> None:
    training = metadata["training"]
    at_default = report["anytime_at_default_threshold"]
    steps = report["accuracy_per_timestep"]
    lines = [
        f"# Model card: `{name}`",
        "",
        f"{metadata['input_description']}. Input kind `{metadata['input_kind']}`; "
        f"{metadata['num_classes']} classes; T = {metadata['timesteps']} timesteps; "
        f"default confidence threshold {float(metadata['default_threshold']):.4f}."
        + (f" Event binning: {metadata['events']}." if "events" in metadata else ""),
        "",
        "## Training",
        "",
        f"Convolutional LIF network (decay 0.5, threshold 1, hard reset, triangle surrogate), {_loss(training)}, "
        f"regulariser `{training['regulariser']}`, "
        f"{training['epochs']} epochs, batch {training['batch_size']}, lr {training['lr']}, seed {training['seed']}, "
        f"{training['train_samples']} training samples; trained in {report['train_seconds']:.0f} s on the CPU."
        + (
            f" Frames are binned by event count: {training['events_per_bin']} events a bin "
            f"({training['events_per_bin_chosen']})."
            if training.get("binning") == "count"
            else ""
        ),
        "",
        "Retrain with `make train-digits` (see the README).",
        "",
        f"## Held-out evaluation ({report['held_out_samples']} samples, never trained on; in `heldout.json`)",
        "",
        "Measured on the exported ONNX graph, stepped one sample at a time as the server does.",
        "",
        "| stop at t | " + " | ".join(str(t + 1) for t in range(len(steps))) + " |",
        "|---|" + "---|" * len(steps),
        "| accuracy | " + " | ".join(f"{a * 100:.2f}" for a in steps) + " |",
        "",
        f"**Anytime at the default threshold {float(report['default_threshold']):.4f}: accuracy "
        f"{at_default['accuracy'] * 100:.2f}%, mean timesteps {at_default['mean_timesteps']:.3f} "
        f"({at_default['speedup']:.2f}x fewer than T).**",
        "",
        "| threshold | accuracy % | mean timesteps | speedup T/mean |",
        "|---|---|---|---|",
    ]
    for row in report["threshold_sweep"]:
        lines.append(
            f"| {row['threshold']} | {row['accuracy'] * 100:.2f} | {row['mean_timesteps']:.3f} | "
            f"{row['speedup']:.2f}x |"
        )
    lines += [
        "",
        f"Torch versus ONNX Runtime over all T steps on the held-out set: largest |logit difference| "
        f"{report['parity']['max_abs_logit_diff']:.3g}; {report['parity']['samples_diverged']} of "
        f"{report['held_out_samples']} samples diverge by more than 1e-3 (a membrane within rounding of the "
        f"threshold spikes in one runtime only); running predictions agree on "
        f"{report['parity']['prediction_agreement'] * 100:.2f}% of (sample, timestep) pairs. The figures above "
        "are measured on the ONNX graph the server runs.",
        "",
    ]
    path.write_text("\n".join(lines))


def _loss(training: Mapping[str, Any]) -> str:
    """TET (the recipe of every model before the running-mean losses), or the loss and its options."""
    options = training.get("loss_options")
    if options is None:
        return f"TET loss (lambda = {training['tet_lambda']})"
    shown = ", ".join(f"{key} {value}" for key, value in options.items())
    return f"loss `{training['loss']}` ({shown}; TET lambda = {training['tet_lambda']})"
