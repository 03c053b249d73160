"""The anytime stepping loop in plain Python + onnxruntime, shared by ``peer_server.py`` and ``floor.py``.

Benchmark fixture, not part of the product: this is what a Python user would write instead of
spikeserve. One ``onnxruntime.InferenceSession``, batch 1, one ``session.run`` per timestep with the
membrane states fed back, and the cutoff rule of ``docs/MODEL-CONTRACT.md``: after timestep t the
prediction is ``softmax(mean(logits_1..t))`` in float64, and the request stops at the first
``t >= min_timesteps`` whose maximum probability reaches the threshold (a threshold of 1.0 turns that
off), or at ``max_timesteps``. The arithmetic is the one of ``training/spiketrain/anytime.py`` so that
the exit timesteps agree exactly.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

METADATA_PREFIX = "spikeserve."
INPUT_NAME = "x"
LOGITS_NAME = "logits"
SYNAPTIC_OPS_NAME = "synaptic_ops"
FLOAT32_MAX = float(np.finfo(np.float32).max)


class RequestError(ValueError):
    """A request the model cannot take; ``code`` is the API's error code."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class EventBinning:
    width: int
    height: int
    polarities: int
    window_us: int
    bins: int
    #: ``time`` (equal-time bins) or ``count`` (bins of ``events_per_bin`` events; the contract's rule).
    mode: str = "time"
    events_per_bin: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    """What the model's ``spikeserve.*`` metadata and graph say."""

    name: str
    timesteps: int
    labels: list[str]
    input_kind: str  # static | frames | events
    frame_shape: tuple[int, ...]
    default_threshold: float
    accuracy_per_timestep: list[float]
    state_shapes: list[tuple[int, ...]]
    reports_synaptic_ops: bool
    events: EventBinning | None = None
    input_description: str | None = None
    training: dict[str, object] = field(default_factory=dict)

    def describe(self) -> dict[str, object]:
        """The ``GET /v1/models/{name}`` answer (a subset of the Rust server's)."""
        out: dict[str, object] = {
            "name": self.name,
            "contract_version": "1",
            "timesteps": self.timesteps,
            "num_classes": len(self.labels),
            "labels": self.labels,
            "input_kind": self.input_kind,
            "frame_shape": list(self.frame_shape),
            "default_threshold": self.default_threshold,
            "accuracy_per_timestep": self.accuracy_per_timestep,
            "training": self.training,
            "reports_synaptic_ops": self.reports_synaptic_ops,
            "members": 1,
        }
        if self.input_description is not None:
            out["input_description"] = self.input_description
        if self.events is not None:
            out["events"] = asdict(self.events)
        return out


@dataclass(frozen=True)
class Policy:
    threshold: float
    min_timesteps: int
    max_timesteps: int


@dataclass
class Answer:
    class_index: int
    confidence: float
    probabilities: np.ndarray  # float64, [C]
    timesteps: int
    max_timesteps: int  # allowed: the policy's, capped at the number of frames sent
    exit_reason: str  # confident | max_timesteps | deadline
    confidences: list[float] | None = None
    synaptic_ops: float | None = None


def running_probabilities(logit_sum: np.ndarray, steps: int) -> np.ndarray:
    """softmax(mean of the logits of the first ``steps`` timesteps), float64, in the order
    ``spiketrain.anytime`` uses, so that exits agree with the offline evaluation exactly."""
    running = logit_sum / steps
    shifted = np.exp(running - running.max())
    return shifted / shifted.sum()


def open_session(path: Path, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _model_file(model: Path) -> Path:
    path = model / "model.onnx" if model.is_dir() else model
    if not path.is_file():
        raise FileNotFoundError(f"{model}: no model.onnx (ensembles are not supported by this peer)")
    return path


class StepModel:
    """One step model and its session; ``run`` answers one request at batch 1."""

    def __init__(self, model: Path, threads: int = 1) -> None:
        path = _model_file(model)
        self.session = open_session(path, threads)
        meta = {
            k.removeprefix(METADATA_PREFIX): v
            for k, v in self.session.get_modelmeta().custom_metadata_map.items()
            if k.startswith(METADATA_PREFIX)
        }
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        state_count = sum(1 for name in inputs if name.startswith("state_in."))
        self.state_in = [f"state_in.{i}" for i in range(state_count)]
        state_out = [f"state_out.{i}" for i in range(state_count)]
        reports_ops = SYNAPTIC_OPS_NAME in outputs
        self.output_names = [LOGITS_NAME, *state_out] + ([SYNAPTIC_OPS_NAME] if reports_ops else [])
        events = json.loads(meta["events"]) if "events" in meta else None
        self.spec = ModelSpec(
            name=(model if model.is_dir() else model.parent).resolve().name,
            timesteps=int(meta["timesteps"]),
            labels=list(json.loads(meta["labels"])),
            input_kind=meta["input_kind"],
            frame_shape=tuple(int(d) for d in inputs[INPUT_NAME].shape[1:]),
            default_threshold=float(meta["default_threshold"]),
            accuracy_per_timestep=[float(a) for a in json.loads(meta.get("accuracy_per_timestep", "[]"))],
            state_shapes=[tuple(int(d) for d in inputs[n].shape[1:]) for n in self.state_in],
            reports_synaptic_ops=reports_ops,
            events=None if events is None else EventBinning(**events),
            input_description=meta.get("input_description"),
            training=json.loads(meta.get("training", "{}")),
        )

    def policy(
        self,
        threshold: float | None = None,
        min_timesteps: int | None = None,
        max_timesteps: int | None = None,
    ) -> Policy:
        """The request's cutoff with the model's defaults, checked like the Rust server does."""
        spec = self.spec
        thr = spec.default_threshold if threshold is None else float(threshold)
        if not 0.0 < thr <= 1.0:
            raise RequestError("invalid_field", f"threshold: must be in (0, 1], found {thr}")
        most = spec.timesteps if max_timesteps is None else max_timesteps
        if not 1 <= most <= spec.timesteps:
            raise RequestError(
                "invalid_field",
                f"max_timesteps: must be between 1 and the model's {spec.timesteps} timesteps, found {most}",
            )
        least = 1 if min_timesteps is None else min_timesteps
        if not 1 <= least <= most:
            raise RequestError(
                "invalid_field", f"min_timesteps: must be between 1 and max_timesteps ({most}), found {least}"
            )
        return Policy(thr, least, most)

    def frames(self, value: object, shape: list[int] | None = None) -> np.ndarray:
        """A request's ``input`` as float32: the frame (static) or ``[n <= T, *frame]`` (frames, events)."""
        try:
            array = np.asarray(value)
        except ValueError as err:  # ragged nesting
            raise RequestError("invalid_input", f"input: not a regular array ({err})") from err
        if array.dtype.kind not in "iuf":
            raise RequestError("invalid_input", "input: expected nested arrays of numbers")
        if shape is not None:
            if array.ndim != 1:
                raise RequestError("invalid_input", "input: give a flat array together with shape")
            if int(np.prod(shape)) != array.size:
                raise RequestError(
                    "invalid_input", f"shape: {shape} holds {np.prod(shape)} elements, input has {array.size}"
                )
            array = array.reshape(shape)
        wide = array.astype(np.float64)
        if not np.isfinite(wide).all() or (np.abs(wide) > FLOAT32_MAX).any():
            raise RequestError("invalid_input", "input: values must be finite float32 numbers")
        spec = self.spec
        if spec.input_kind == "static":
            if array.shape != spec.frame_shape:
                raise RequestError(
                    "invalid_input", f"input: expected shape {list(spec.frame_shape)}, found {list(array.shape)}"
                )
        elif array.ndim != len(spec.frame_shape) + 1 or array.shape[1:] != spec.frame_shape or array.shape[0] < 1:
            raise RequestError(
                "invalid_input",
                f"input: expected shape [n <= {spec.timesteps}, {', '.join(map(str, spec.frame_shape))}], "
                f"found {list(array.shape)}",
            )
        elif array.shape[0] > spec.timesteps:
            raise RequestError(
                "invalid_input", f"input: {array.shape[0]} frames, the model takes at most {spec.timesteps}"
            )
        return np.ascontiguousarray(array, dtype=np.float32)

    def bin_events(self, value: object) -> np.ndarray:
        """Raw events ``[[x, y, t_us, p], ...]`` -> ``[bins, polarities, height, width]`` float32 counts."""
        binning = self.spec.events
        if binning is None:
            raise RequestError(
                "invalid_field",
                f'events: model "{self.spec.name}" takes input kind {self.spec.input_kind}, not raw events',
            )
        try:
            events = np.asarray(value)
        except ValueError as err:
            raise RequestError("invalid_events", f"events: not a regular array ({err})") from err
        if events.size == 0:
            events = np.zeros((0, 4), dtype=np.int64)
        if events.dtype.kind not in "iu" or events.ndim != 2 or events.shape[1] != 4:
            raise RequestError("invalid_events", "events: expected an array of [x, y, t_us, p] integer rows")
        events = events.astype(np.int64)
        x, y, t, p = events.T
        problems: list[tuple[int, str]] = []
        for name, column, limit in (
            ("x", x, binning.width),
            ("y", y, binning.height),
            ("t", t, binning.window_us),
            ("p", p, binning.polarities),
        ):
            bad = np.flatnonzero((column < 0) | (column >= limit))
            if bad.size:
                problems.append((int(bad[0]), f"{name} = {column[bad[0]]} is outside [0, {limit})"))
        unordered = np.flatnonzero(np.diff(t) < 0)
        if unordered.size:
            problems.append((int(unordered[0]) + 1, "t is before the previous event's"))
        if problems:
            index, what = min(problems)
            raise RequestError("invalid_events", f"events[{index}]: {what}")
        frames = np.zeros((binning.bins, binning.polarities, binning.height, binning.width), dtype=np.float32)
        if binning.mode == "count" and binning.events_per_bin:
            # Event i lands in bin i // K; events past bins * K are dropped.
            index = np.arange(len(t), dtype=np.int64) // binning.events_per_bin
        else:
            index = (t * binning.bins) // binning.window_us
        kept = index < binning.bins
        np.add.at(frames, (index[kept], p[kept], y[kept], x[kept]), 1.0)
        return frames

    def run(
        self,
        frames: np.ndarray,
        policy: Policy,
        deadline: float | None = None,
        record_confidences: bool = False,
    ) -> Answer:
        """Steps one request at batch 1 until the cutoff. ``frames``: the frame (static models) or
        ``[n, *frame]``; ``deadline``: a ``time.perf_counter()`` instant, checked before every step."""
        spec = self.spec
        if spec.input_kind == "static":
            frame = frames.reshape(1, *spec.frame_shape)
            count = None
            most = policy.max_timesteps
            least = policy.min_timesteps
        else:
            frame = frames[:1]
            count = frames.shape[0]
            most = min(policy.max_timesteps, count)  # nothing to feed after the last frame
            least = min(policy.min_timesteps, most)
        feeds: dict[str, np.ndarray] = {
            name: np.zeros((1, *shape), dtype=np.float32)
            for name, shape in zip(self.state_in, spec.state_shapes, strict=True)
        }
        states = len(self.state_in)
        logit_sum = np.zeros(len(spec.labels), dtype=np.float64)
        probabilities = logit_sum
        best = 0
        confidence = 0.0
        confidences: list[float] | None = [] if record_confidences else None
        ops = 0.0 if spec.reports_synaptic_ops else None
        reason = "max_timesteps"
        step = 0
        while step < most:
            if deadline is not None and time.perf_counter() >= deadline:
                if step == 0:
                    raise RequestError("deadline_exceeded", "the latency budget ran out before the first timestep", 504)
                reason = "deadline"
                break
            feeds[INPUT_NAME] = frame if count is None else frames[step : step + 1]
            outputs = self.session.run(self.output_names, feeds)
            for i in range(states):
                feeds[self.state_in[i]] = outputs[1 + i]
            if ops is not None:
                ops += float(outputs[-1][0])
            step += 1
            logit_sum += outputs[0][0]
            probabilities = running_probabilities(logit_sum, step)
            best = int(probabilities.argmax())
            confidence = float(probabilities[best])
            if confidences is not None:
                confidences.append(confidence)
            if policy.threshold < 1.0 and step >= least and confidence >= policy.threshold:
                reason = "confident"
                break
        return Answer(best, confidence, probabilities, step, most, reason, confidences, ops)
