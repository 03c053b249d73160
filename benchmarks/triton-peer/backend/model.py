"""The Triton peers' model: a Triton Python backend model that steps spikeserve's ONNX step graph.

Copied by ``benchmarks/triton-peer/peer.py`` into a Triton model repository (``<repo>/<model>/1/model.py``),
beside ``steploop.py`` (the benchmarks' plain-Python stepping loop: the model's metadata, the request
checks, the event binning) and the graphs ``member-0.onnx`` ... (one for a single model; an ensemble's
members, stepped in lockstep on the same frames). The model configuration's parameter ``peer`` picks
the way Triton serves it:

* ``dynamic``: Triton's dynamic batcher hands ``execute`` a batch of whole requests; they are stepped
  together until each one's cutoff (a row that exits stops being stepped), and answered at the end of
  the batch. A request that arrives meanwhile waits for the next batch.
* ``iterative``: Triton's sequence batcher with ``iterative_sequence: true``. Every request is its own
  sequence (the client sends a unique ``sequence_id`` and ``sequence_start``); each ``execute`` steps
  every request it is handed by one timestep, answers those at their cutoff and hands the others back
  to Triton (``TRITONSERVER_REQUEST_RELEASE_RESCHEDULE``), so requests leave after their exit timestep
  and new ones join the running batch. The membrane states live here, keyed by the correlation id.

The cutoff is ``docs/MODEL-CONTRACT.md``'s, computed as ``steploop.py`` computes it: after timestep t
the prediction is ``softmax(mean(logits_1..t))`` in float64, and a request stops at the first
``t >= min_timesteps`` whose top probability reaches the threshold, or at ``max_timesteps``; an
ensemble's prediction is the mean of its members' (and its default threshold, the configuration's
``default_threshold``, is the ensemble's own). The request parameters ``threshold``,
``min_timesteps`` and ``max_timesteps`` are read as spikeserve's KServe door reads them; inputs and
outputs are named as spikeserve names them.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The stub embeds the system python3 but not its search path: the imports' directory comes from
# PYTHONPATH (peer.py sets it to .venv-triton/stub-site), this model's from its own directory.
for entry in [os.path.dirname(os.path.abspath(__file__)), *os.environ.get("PYTHONPATH", "").split(os.pathsep)][::-1]:
    if entry and entry not in sys.path:
        sys.path.insert(0, entry)

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402  (provided by the Python backend's stub)
from steploop import INPUT_NAME, Policy, RequestError, StepModel, running_probabilities  # noqa: E402

EVENTS_INPUT = "events"


@dataclass
class Row:
    """One request being stepped: its frames, and each member's membrane states and running logit sum."""

    frames: np.ndarray  # [1, *frame] (static) or [n, *frame]
    static: bool
    policy: Policy
    most: int
    least: int
    states: list[list[np.ndarray]]  # [member][state]
    logit_sums: list[np.ndarray]  # [member]
    step: int = 0
    best: int = 0
    confidence: float = 0.0
    probabilities: np.ndarray = field(default_factory=lambda: np.zeros(0))
    done: bool = False
    reason: str = "max_timesteps"

    def frame(self) -> np.ndarray:
        return self.frames if self.static else self.frames[self.step : self.step + 1]


def _parameters(request: Any) -> dict[str, Any]:
    raw = request.parameters()
    parsed = json.loads(raw) if raw else {}
    return parsed if isinstance(parsed, dict) else {}


def _whole(parameters: dict[str, Any], key: str) -> int | None:
    value = parameters.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value) or value < 0:
        raise RequestError("invalid_field", f"parameters.{key}: must be a whole number, found {value!r}")
    return int(value)


class TritonPythonModel:
    """Triton's Python backend entry point."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.peer = config["parameters"]["peer"]["string_value"]
        here = Path(args["model_repository"]) / args["model_version"]
        # member-0.onnx ... member-{K-1}.onnx: one graph, or an ensemble's members stepped in lockstep.
        graphs = sorted(here.glob("member-*.onnx"), key=lambda p: int(p.stem.removeprefix("member-")))
        self.members = [StepModel(graph, threads=1) for graph in graphs]
        self.model = self.members[0]
        self.spec = self.model.spec
        override = config["parameters"].get("default_threshold", {}).get("string_value")
        self.default_threshold = None if override is None else float(override)
        self.rows: dict[object, Row] = {}  # iterative: the requests in flight, by correlation id

    # --- requests -----------------------------------------------------------------------------------

    def _row(self, request: Any) -> Row:
        spec = self.spec
        parameters = _parameters(request)
        threshold = parameters.get("threshold")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
            raise RequestError("invalid_field", f"parameters.threshold: must be a number, found {threshold!r}")
        policy = self.model.policy(
            self.default_threshold if threshold is None else float(threshold),
            _whole(parameters, "min_timesteps"),
            _whole(parameters, "max_timesteps"),
        )
        events = pb_utils.get_input_tensor_by_name(request, EVENTS_INPUT)
        tensor = pb_utils.get_input_tensor_by_name(request, INPUT_NAME)
        if events is not None:
            values = events.as_numpy()
            frames = self.model.bin_events(values.reshape(-1, 4) if values.size else values.reshape(0, 4))
        elif tensor is not None:
            values = tensor.as_numpy()
            rank = len(spec.frame_shape) + (0 if spec.input_kind == "static" else 1)
            if values.ndim == rank + 1 and values.shape[0] == 1:
                values = values[0]  # the batch dimension of 1 KServe clients send
            frames = self.model.frames(values)
        else:
            raise RequestError("invalid_field", f'inputs: the model takes "{INPUT_NAME}" or "{EVENTS_INPUT}"')
        static = spec.input_kind == "static" and events is None
        if static:
            frames = frames.reshape(1, *spec.frame_shape)
            most, least = policy.max_timesteps, policy.min_timesteps
        else:
            most = min(policy.max_timesteps, frames.shape[0])
            least = min(policy.min_timesteps, most)
        states = [[np.zeros((1, *shape), dtype=np.float32) for shape in m.spec.state_shapes] for m in self.members]
        sums = [np.zeros(len(spec.labels), dtype=np.float64) for _ in self.members]
        return Row(frames, static, policy, most, least, states, sums)

    def _step(self, rows: list[Row]) -> None:
        """One timestep of every row, at one batch, through every member."""
        frames = np.concatenate([r.frame() for r in rows])
        logits = []
        for k, member in enumerate(self.members):
            feeds: dict[str, np.ndarray] = {INPUT_NAME: frames}
            for i, name in enumerate(member.state_in):
                feeds[name] = np.concatenate([r.states[k][i] for r in rows])
            outputs = member.session.run(member.output_names, feeds)
            logits.append(outputs[0])
            states = len(member.state_in)
            for b, row in enumerate(rows):
                row.states[k] = [outputs[1 + i][b : b + 1] for i in range(states)]
        members = len(self.members)
        for b, row in enumerate(rows):
            row.step += 1
            # Each member's running probabilities, summed in member order and divided by K, as the
            # server combines an ensemble.
            total = np.zeros(len(self.spec.labels), dtype=np.float64)
            for k in range(members):
                row.logit_sums[k] += logits[k][b]
                total += running_probabilities(row.logit_sums[k], row.step)
            row.probabilities = total / members
            row.best = int(row.probabilities.argmax())
            row.confidence = float(row.probabilities[row.best])
            policy = row.policy
            if policy.threshold < 1.0 and row.step >= row.least and row.confidence >= policy.threshold:
                row.done, row.reason = True, "confident"
            elif row.step >= row.most:
                row.done = True

    def _answer(self, row: Row) -> Any:
        def bytes_tensor(name: str, text: str) -> Any:
            return pb_utils.Tensor(name, np.array([text.encode()], dtype=np.object_))

        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("probabilities", row.probabilities.astype(np.float32).reshape(1, -1)),
                pb_utils.Tensor("class_index", np.array([row.best], dtype=np.int64)),
                bytes_tensor("label", self.spec.labels[row.best]),
                pb_utils.Tensor("confidence", np.array([row.confidence], dtype=np.float32)),
                pb_utils.Tensor("timesteps", np.array([row.step], dtype=np.int64)),
                bytes_tensor("exit_reason", row.reason),
            ]
        )

    @staticmethod
    def _refusal(error: RequestError) -> Any:
        return pb_utils.InferenceResponse(
            output_tensors=[], error=pb_utils.TritonError(f"{error.code}: {error.message}")
        )

    # --- the two ways of serving ------------------------------------------------------------------------

    def execute(self, requests: list[Any]) -> list[Any]:
        return self._iterative(requests) if self.peer == "iterative" else self._dynamic(requests)

    def _dynamic(self, requests: list[Any]) -> list[Any]:
        """The whole batch runs to its last exit; finished rows stop being stepped."""
        responses: list[Any] = [None] * len(requests)
        rows: list[tuple[int, Row]] = []
        for i, request in enumerate(requests):
            try:
                rows.append((i, self._row(request)))
            except RequestError as error:
                responses[i] = self._refusal(error)
        active = rows
        while active:
            self._step([row for _, row in active])
            for i, row in active:
                if row.done:
                    responses[i] = self._answer(row)
            active = [(i, row) for i, row in active if not row.done]
        return responses

    def _iterative(self, requests: list[Any]) -> list[Any]:
        """One timestep of every request handed in; the unfinished ones go back to Triton."""
        responses: list[Any] = [None] * len(requests)
        stepping: list[tuple[int, Any, object, Row]] = []
        for i, request in enumerate(requests):
            key = request.correlation_id()
            row = self.rows.get(key)
            if row is None:
                try:
                    row = self._row(request)
                except RequestError as error:
                    responses[i] = self._refusal(error)
                    continue
                self.rows[key] = row
            stepping.append((i, request, key, row))
        if stepping:
            self._step([row for _, _, _, row in stepping])
        for i, request, key, row in stepping:
            if row.done:
                responses[i] = self._answer(row)
                del self.rows[key]
            else:
                request.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)
        return responses

    def finalize(self) -> None:
        self.rows.clear()
