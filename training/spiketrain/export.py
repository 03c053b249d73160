"""Export one timestep of a ``StepModel`` as an ONNX graph that follows spikeserve's step-model contract.

Contract (version 1; the full text is docs/MODEL-CONTRACT.md):

* inputs: ``x`` ``[B, *frame]`` (float32) then ``state_in.0 .. state_in.{S-1}``;
* outputs: ``logits`` ``[B, C]`` then ``state_out.0 .. state_out.{S-1}``, each ``state_out.i`` the
  same shape as ``state_in.i``; the batch dimension ``B`` is dynamic everywhere;
* an optional output ``synaptic_ops`` ``[B]``: the synaptic operations the step caused (each spiking
  layer's spikes times its fan-out), which the server adds up per request;
* ``metadata_props`` under the ``spikeserve.`` prefix describe timesteps, classes, labels, input kind,
  default threshold, training and the measured accuracy per timestep.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from .models import StepModel

CONTRACT_VERSION = "1"
METADATA_PREFIX = "spikeserve."
INPUT_NAME = "x"
LOGITS_NAME = "logits"
SYNAPTIC_OPS_NAME = "synaptic_ops"
OPSET = 18


def state_in_name(index: int) -> str:
    return f"state_in.{index}"


def state_out_name(index: int) -> str:
    return f"state_out.{index}"


class _OneStep(nn.Module):
    """Adapts ``StepModel.step`` to flat positional inputs and outputs, which is what ONNX needs."""

    def __init__(self, model: StepModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, new_states = self.model.step(x, list(states))
        return (logits, *new_states, self.model.synaptic_ops())


def export_step_model(model: StepModel, path: Path, metadata: Mapping[str, Any]) -> None:
    """Writes ``path`` (a single self-contained file) with ``metadata`` stored as ``spikeserve.*`` props."""
    model = model.eval()
    num_states = len(model.state_shapes())
    example_batch = 2  # not 1: an example batch of 1 would let the exporter specialise the batch dim
    x = torch.zeros((example_batch, *model.input_shape))
    states = model.initial_states(example_batch)
    batch = torch.export.Dim("batch", min=1)
    # torch.export sees ``forward(x, *states)`` as two arguments: x and the tuple of states.
    dynamic_shapes = ({0: batch}, tuple({0: batch} for _ in range(num_states)))
    input_names = [INPUT_NAME, *(state_in_name(i) for i in range(num_states))]
    output_names = [LOGITS_NAME, *(state_out_name(i) for i in range(num_states)), SYNAPTIC_OPS_NAME]
    with torch.no_grad():
        program = torch.onnx.export(
            _OneStep(model).eval(),
            (x, *states),
            dynamo=True,
            external_data=False,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            opset_version=OPSET,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    proto = program.model_proto
    _set_metadata(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path))


def _set_metadata(proto: onnx.ModelProto, metadata: Mapping[str, Any]) -> None:
    entries = {"contract_version": CONTRACT_VERSION, **metadata}
    del proto.metadata_props[:]
    for key, value in entries.items():
        text = value if isinstance(value, str) else json.dumps(value)
        prop = proto.metadata_props.add()
        prop.key = METADATA_PREFIX + key
        prop.value = text


def update_metadata(path: Path, metadata: Mapping[str, Any]) -> None:
    """Rewrites the ``spikeserve.*`` props of an exported model (e.g. once its accuracy is measured)."""
    proto = onnx.load(str(path))
    existing = {
        p.key.removeprefix(METADATA_PREFIX): p.value for p in proto.metadata_props if p.key.startswith(METADATA_PREFIX)
    }
    existing.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    _set_metadata(proto, existing)
    onnx.save_model(proto, str(path))


def open_session(path: Path, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(session: ort.InferenceSession, frames: np.ndarray, batch_size: int = 1) -> np.ndarray:
    """Steps the exported graph over ``frames [T, N, *shape]``; returns logits ``[T, N, C]`` (float32).

    ``batch_size = 1`` mirrors how the server steps one request, so evaluation figures computed here
    are the figures the server reproduces.
    """
    return onnx_logits_and_synaptic_ops(session, frames, batch_size)[0]


def onnx_logits_and_synaptic_ops(
    session: ort.InferenceSession, frames: np.ndarray, batch_size: int = 1
) -> tuple[np.ndarray, np.ndarray | None]:
    """As :func:`onnx_logits`, with each step's synaptic operations ``[T, N]`` (None when the graph
    does not report them)."""
    state_inputs = [i for i in session.get_inputs() if i.name != INPUT_NAME]
    reports = any(o.name == SYNAPTIC_OPS_NAME for o in session.get_outputs())
    steps, count = frames.shape[0], frames.shape[1]
    chunks, synops_chunks = [], []
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        states = {s.name: np.zeros((stop - start, *s.shape[1:]), dtype=np.float32) for s in state_inputs}
        per_step, synops = [], []
        for t in range(steps):
            feeds = {INPUT_NAME: np.ascontiguousarray(frames[t, start:stop], dtype=np.float32), **states}
            outputs = session.run(None, feeds)
            per_step.append(outputs[0])
            if reports:
                synops.append(outputs[-1])
            states = {state_in_name(i): out for i, out in enumerate(outputs[1 : 1 + len(state_inputs)])}
        chunks.append(np.stack(per_step))
        if reports:
            synops_chunks.append(np.stack(synops))
    logits = np.concatenate(chunks, axis=1)
    return logits, (np.concatenate(synops_chunks, axis=1) if reports else None)


def torch_logits(model: StepModel, frames: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """The model's own unroll over ``frames [T, N, *shape]``, ``batch_size`` samples at a time (a large
    network on a whole held-out set would not fit in memory at once)."""
    model = model.eval()
    chunks = []
    with torch.no_grad():
        for start in range(0, frames.shape[1], batch_size):
            chunk = np.ascontiguousarray(frames[:, start : start + batch_size], dtype=np.float32)
            chunks.append(model.unroll(torch.from_numpy(chunk), with_traces=False)[0].numpy())
    return np.concatenate(chunks, axis=1)


@dataclass(frozen=True)
class Parity:
    """Torch against ONNX Runtime over all T steps of the same samples."""

    max_abs_logit_diff: float
    #: Samples whose logits differ by more than 1e-3 at some step: a membrane potential within
    #: rounding of the threshold spiked in one runtime and not the other (a step function has no
    #: tolerance), and the difference then propagates through time.
    samples_diverged: int
    #: Fraction of (sample, timestep) pairs whose running-mean prediction agrees.
    prediction_agreement: float


def parity(model: StepModel, session: ort.InferenceSession, frames: np.ndarray) -> Parity:
    reference = torch_logits(model, frames)
    # Batched (as many samples per call as the unroll above takes), which one-at-a-time figures equal.
    exported = onnx_logits(session, frames, batch_size=min(frames.shape[1], 32))
    diff = np.abs(reference - exported)
    agree = np.cumsum(reference, axis=0).argmax(axis=2) == np.cumsum(exported, axis=0).argmax(axis=2)
    return Parity(
        max_abs_logit_diff=float(diff.max()),
        samples_diverged=int((diff.max(axis=(0, 2)) > 1e-3).sum()),
        prediction_agreement=float(agree.mean()),
    )
