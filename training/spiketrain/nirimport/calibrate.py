"""``spikeserve-import calibrate MODEL_DIR --data FILE``: calibrated exits for an imported model, from the
user's own recordings.

The data file holds samples in the formats the Python client reads: JSON ``{"inputs": [...]}`` (one
frame per sample for ``static`` models, ``[T, *frame]`` per sample for ``frames`` models) or
``{"events": [[[x, y, t_us, p], ...], ...]}`` for ``events`` models (``heldout.json`` is such a file),
or ``.npz`` with ``inputs``; ``targets`` (class indices) are optional. With targets the table
calibrates accuracy, as ``spiketrain.calibrate`` does for the native models; without them it
calibrates **agreement with the model's own answer at T** (the drop is then the share of samples whose
early answer differs from the full run). The same rule and code (:mod:`spiketrain.calibration`) choose
the thresholds on one stratified half and report on the other, so ``max_accuracy_drop`` then works
for the imported model on every door.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .. import anytime, calibration
from ..calibrate import write_calibration_card
from ..events import EventBinning, bin_events
from ..export import METADATA_PREFIX, onnx_logits_and_synaptic_ops, open_session, update_metadata
from . import GraphError
from .cli import UNCALIBRATED


def _metadata(model: Path) -> dict[str, Any]:
    proto = onnx.load(str(model), load_external_data=False)
    out: dict[str, Any] = {}
    for prop in proto.metadata_props:
        if prop.key.startswith(METADATA_PREFIX):
            try:
                out[prop.key.removeprefix(METADATA_PREFIX)] = json.loads(prop.value)
            except json.JSONDecodeError:
                out[prop.key.removeprefix(METADATA_PREFIX)] = prop.value
    return out


def read_data(path: Path, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """(frames ``[T, N, *frame]``, targets ``[N]`` or None)."""
    if not path.is_file():
        raise GraphError(f"--data {path}: no such file")
    timesteps, kind = int(meta["timesteps"]), str(meta["input_kind"])
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                raw: dict[str, Any] = {k: archive[k] for k in archive.files}
        else:
            raw = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise GraphError(f"--data {path}: not a readable .json or .npz file ({error})") from error
    if not isinstance(raw, dict):
        raise GraphError(f"--data {path}: expected an object with 'inputs' or 'events'")
    targets = None if raw.get("targets") is None else np.asarray(raw["targets"], dtype=np.int64)
    if kind == "events" and "events" in raw:
        binning = EventBinning(**meta["events"])
        samples = [bin_events(np.asarray(rows, dtype=np.int64).reshape(-1, 4), binning) for rows in raw["events"]]
        frames = np.swapaxes(np.stack(samples), 0, 1)
    elif "inputs" in raw:
        inputs = np.asarray(raw["inputs"], dtype=np.float32)
        if kind == "static":
            frames = np.broadcast_to(inputs[None], (timesteps, *inputs.shape))
        else:
            if inputs.ndim < 2 or inputs.shape[1] < timesteps:
                raise GraphError(f"--data {path}: 'inputs' must be [N, T={timesteps}, *frame] for a {kind} model")
            frames = np.swapaxes(inputs[:, :timesteps], 0, 1)
    else:
        raise GraphError(f"--data {path}: no 'inputs' (or 'events' for an events model)")
    if targets is not None and targets.shape != (frames.shape[1],):
        raise GraphError(f"--data {path}: {targets.shape[0]} targets for {frames.shape[1]} samples")
    return np.ascontiguousarray(frames, dtype=np.float32), targets


def calibrate_imported(directory: Path, data: Path) -> dict[str, Any]:
    model = directory / "model.onnx"
    if not model.is_file():
        raise GraphError(f"{directory}: no model.onnx")
    meta = _metadata(model)
    frames, targets = read_data(data, meta)
    # One sample at a time, as the server steps a request, so that exits agree with it exactly.
    logits, synops = onnx_logits_and_synaptic_ops(open_session(model), frames, batch_size=1)
    labelled = targets is not None
    if targets is None:
        # Agreement with the model's own answer at T: "accuracy" against the full run.
        targets = anytime.running_probabilities(logits)[-1].argmax(axis=1)
    first, second = calibration.halves(targets)
    ops = None if synops is None else synops[None][:, :, second]
    table = calibration.calibration_table(
        logits[None][:, :, first], targets[first], logits[None][:, :, second], targets[second], test_synaptic_ops=ops
    )
    threshold = calibration.default_threshold(table)
    measure = "accuracy" if labelled else "agreement with the model's own answer at T"
    section: dict[str, Any] = {
        "split": (
            f"chosen on one stratified half of {data.name} ({len(first)} samples), reported on the other "
            f"({len(second)} samples); measure: {measure}"
        ),
        "rule": f"fewest mean timesteps with max(drop, 0) + {calibration.CALIBRATION_Z} x paired SE <= budget",
        "table": table,
        "test_area_under_curve": calibration.curve(logits[None][:, :, second], targets[second]).area(),
    }
    per_timestep = anytime.accuracy_per_timestep(logits, targets)
    update_metadata(
        model,
        {
            "default_threshold": threshold,
            "calibration": calibration.metadata_table(table),
            "accuracy_per_timestep": per_timestep,
        },
    )
    at_default = anytime.anytime(logits, targets, threshold)
    evaluation = {
        "data": data.name,
        "data_sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
        "samples": len(targets),
        "labelled": labelled,
        "measure": measure,
        "timesteps": int(meta["timesteps"]),
        "accuracy_per_timestep": per_timestep,
        "default_threshold": threshold,
        "anytime_at_default_threshold": anytime.summary(at_default, int(meta["timesteps"]), with_samples=True),
        "anytime_sweep": [
            anytime.summary(anytime.anytime(logits, targets, t), int(meta["timesteps"])) for t in anytime.DEFAULT_SWEEP
        ],
        "calibration": section,
    }
    _replace_text(directory / "eval.json", json.dumps(evaluation, indent=1) + "\n")
    card = directory / "card.md"
    write_calibration_card(card, section, threshold)
    _append_anytime(card, evaluation)
    return evaluation


def _replace_text(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as out:
        out.write(text)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


ANYTIME_SECTION = "## Anytime figures"


def _append_anytime(card: Path, evaluation: dict[str, Any]) -> None:
    text = card.read_text()
    text = "\n\n".join(part for part in text.split("\n\n") if not part.startswith(UNCALIBRATED))
    if ANYTIME_SECTION in text:
        start = text.index(ANYTIME_SECTION)
        rest = text[start + len(ANYTIME_SECTION) :]
        end = rest.find("\n## ")
        text = text[:start] + (rest[end + 1 :] if end >= 0 else "")
    steps = ", ".join(f"{a * 100:.2f}" for a in evaluation["accuracy_per_timestep"])
    rows = [
        f"| {s['threshold']} | {s['accuracy'] * 100:.2f} | {s['mean_timesteps']:.3f} | {s['speedup']:.2f}x |"
        for s in evaluation["anytime_sweep"]
    ]
    lines = [
        "",
        ANYTIME_SECTION,
        "",
        f"On `{evaluation['data']}` ({evaluation['samples']} samples, {evaluation['measure']}), % per timestep "
        f"when every sample stops at t: {steps}.",
        "",
        "| threshold | % | mean timesteps | speedup |",
        "|---|---|---|---|",
        *rows,
        "",
    ]
    card.write_text(text.rstrip() + "\n" + "\n".join(lines))


def calibrate_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="spikeserve-import calibrate", description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="an imported model directory")
    parser.add_argument("--data", type=Path, required=True, help="recordings: .json or .npz (targets optional)")
    args = parser.parse_args(argv)
    evaluation = calibrate_imported(args.model, args.data)
    print(f"{args.model}: {evaluation['calibration']['split']}")
    print("\n".join(calibration.markdown(evaluation["calibration"]["table"], "calibration", "test")))
