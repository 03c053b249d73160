"""The offline evaluation the client tests compare with, recomputed on this machine.

The training job's own code steps the shipped ONNX graph one sample at a time over ``heldout.json``'s
inputs (``spiketrain.export.onnx_logits``, then the cutoff rule of ``spiketrain.anytime``), exactly as
``eval.json`` was made. The server steps the same graph over the same inputs on the same CPU, so the two
must agree exactly. ``eval.json`` itself was written on the training machine, whose ONNX Runtime may take
other SIMD paths: comparing with it would hinge on the last bit of floating point.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import numpy as np
from spikeserve_process import REPO
from spiketrain import anytime, data
from spiketrain.events import EventBinning, bin_events
from spiketrain.export import onnx_logits, open_session

METADATA = "spikeserve."


@dataclass(frozen=True)
class Reference:
    timesteps: int
    threshold: float  # the model's default, eval.json's
    exits: list[int]  # per heldout.json sample, at the default threshold
    predictions: list[int]


@functools.cache
def offline_reference(model: str) -> Reference:
    """Per ``heldout.json`` sample of ``models/<model>`` (a single model), its exit timestep and class."""
    directory = REPO / "models" / model
    session = open_session(directory / "model.onnx")
    meta = session.get_modelmeta().custom_metadata_map
    timesteps = int(meta[f"{METADATA}timesteps"])
    threshold = float(json.loads((directory / "eval.json").read_text())["default_threshold"])
    heldout = json.loads((directory / "heldout.json").read_text())
    if meta[f"{METADATA}input_kind"] == "events":
        binning = EventBinning(**json.loads(meta[f"{METADATA}events"]))
        binned = [bin_events(np.asarray(e, dtype=np.int64).reshape(-1, 4), binning) for e in heldout["events"]]
        frames = data.to_frames(np.stack(binned), timesteps, "events")
    else:
        frames = data.to_frames(np.asarray(heldout["inputs"], dtype=np.float32), timesteps, "static")
    samples = frames.shape[1]
    targets = np.asarray(heldout["targets"][:samples], dtype=np.int64)
    result = anytime.anytime(onnx_logits(session, np.ascontiguousarray(frames), batch_size=1), targets, threshold)
    return Reference(timesteps, threshold, result.exit_timesteps.tolist(), result.predictions.tolist())
