"""Requests from Python values, answers into dataclasses: shared by the gRPC and HTTP clients."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ._proto import anytime_pb2 as pb
from .results import CalibratedThreshold, ExitReason, ModelInfo, Partial, Result

_EXIT_REASONS = {
    pb.EXIT_REASON_CONFIDENT: ExitReason.CONFIDENT,
    pb.EXIT_REASON_MAX_TIMESTEPS: ExitReason.MAX_TIMESTEPS,
    pb.EXIT_REASON_DEADLINE: ExitReason.DEADLINE,
    pb.EXIT_REASON_CANCELLED: ExitReason.CANCELLED,
    pb.EXIT_REASON_POLICY: ExitReason.POLICY,
}


@dataclass(frozen=True)
class Policy:
    """When a request stops; ``None`` leaves a field to the model's metadata (see ``docs/api.md``)."""

    threshold: float | None = None
    min_timesteps: int | None = None
    max_timesteps: int | None = None
    latency_budget_ms: float | None = None
    max_accuracy_drop: float | None = None
    max_variance: float | None = None
    priority: int | None = None
    #: The exit policy by name (``cutoff``, ``schedule``, ``learned``); the model's choice when absent.
    policy: str | None = None
    #: With ``max_accuracy_drop``: the probability (e.g. 0.9) with which the budget must hold.
    guarantee: float | None = None

    def __post_init__(self) -> None:
        for name in ("threshold", "latency_budget_ms", "max_accuracy_drop", "max_variance", "guarantee"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise TypeError(f"{name} must be a number, not {type(value).__name__}")
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
        for name in ("min_timesteps", "max_timesteps", "priority"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | np.integer)):
                raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        if self.threshold is not None and not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.threshold is not None and self.max_accuracy_drop is not None:
            raise ValueError("give threshold or max_accuracy_drop, not both")
        if self.policy is not None and not isinstance(self.policy, str):
            raise TypeError(f"policy must be a string (cutoff, schedule or learned), not {type(self.policy).__name__}")
        if self.guarantee is not None and not 0.0 < self.guarantee < 1.0:
            raise ValueError(f"guarantee must lie strictly between 0 and 1, got {self.guarantee}")
        if self.guarantee is not None and self.max_accuracy_drop is None:
            raise ValueError("guarantee needs max_accuracy_drop, the budget it guarantees")
        if self.latency_budget_ms is not None and self.latency_budget_ms <= 0:
            raise ValueError(f"latency_budget_ms must be positive, got {self.latency_budget_ms}")

    def to_proto(self) -> pb.Policy:
        fields = {name: value for name, value in self.to_json().items()}
        return pb.Policy(**fields)

    def to_json(self) -> dict[str, float | int | str]:
        names = ("threshold", "min_timesteps", "max_timesteps", "latency_budget_ms")
        names += ("max_accuracy_drop", "max_variance", "priority", "policy", "guarantee")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


def tensor_array(value: npt.ArrayLike, what: str = "input") -> npt.NDArray[np.float32]:
    """A numeric array-like as float32, refusing what the server would refuse anyway."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:  # ragged nested lists
        raise ValueError(f"{what}: not a rectangular numeric array ({error})") from error
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ValueError(f"{what}: expected numbers, got an array of {array.dtype}")
    if array.ndim == 0 or array.size == 0:
        raise ValueError(f"{what}: expected a non-empty array, got shape {list(array.shape)}")
    converted = array.astype(np.float32)
    if not np.all(np.isfinite(converted)):
        raise ValueError(f"{what}: every value must be finite")
    return converted


def event_array(value: npt.ArrayLike, what: str = "events") -> npt.NDArray[np.int64]:
    """Raw events as ``[N, 4]`` int64 rows ``x, y, t_us, p`` (a structured array with those fields too)."""
    array = np.asarray(value)
    if array.dtype.names is not None:
        names = set(array.dtype.names)
        t_name = "t_us" if "t_us" in names else "t"
        p_name = "p" if "p" in names else "on" if "on" in names else "polarity"
        missing = {"x", "y", t_name, p_name} - names
        if missing:
            raise ValueError(f"{what}: a structured array needs the fields x, y, t (or t_us) and p")
        array = np.stack([array[n].astype(np.int64) for n in ("x", "y", t_name, p_name)], axis=-1)
    if array.size == 0 and array.ndim <= 2:
        return np.zeros((0, 4), dtype=np.int64)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{what}: expected [N, 4] rows of x, y, t_us, p, got shape {list(array.shape)}")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{what}: expected integers, got an array of {array.dtype}")
    if not np.issubdtype(array.dtype, np.integer) and (
        not np.all(np.isfinite(array)) or not np.all(array == np.round(array))
    ):
        raise ValueError(f"{what}: every value must be an integer")
    return array.astype(np.int64)


def tensor_proto(value: npt.ArrayLike, what: str = "input") -> pb.Tensor:
    array = tensor_array(value, what)
    return pb.Tensor(shape=list(array.shape), values=array.ravel().tolist())


def events_proto(value: npt.ArrayLike, what: str = "events") -> pb.Events:
    rows = event_array(value, what)
    return pb.Events(x=rows[:, 0].tolist(), y=rows[:, 1].tolist(), t_us=rows[:, 2].tolist(), p=rows[:, 3].tolist())


def check_model(model: str) -> str:
    if not isinstance(model, str) or not model:
        raise ValueError(f"model must be a non-empty string, got {model!r}")
    return model


def one_input(input: npt.ArrayLike | None, events: npt.ArrayLike | None) -> None:
    if (input is None) == (events is None):
        raise ValueError("give exactly one of input (a tensor) and events ([N, 4] raw events)")


def infer_request(
    model: str,
    input: npt.ArrayLike | None,
    events: npt.ArrayLike | None,
    policy: Policy,
    request_id: str | None,
    return_confidences: bool,
) -> pb.InferRequest:
    one_input(input, events)
    request = pb.InferRequest(
        model=check_model(model),
        request_id=request_id or "",
        policy=policy.to_proto(),
        return_confidences=return_confidences,
    )
    if input is not None:
        request.tensor.CopyFrom(tensor_proto(input))
    else:
        request.events.CopyFrom(events_proto(events))  # type: ignore[arg-type]
    return request


def infer_body(
    input: npt.ArrayLike | None,
    events: npt.ArrayLike | None,
    policy: Policy,
    return_confidences: bool,
) -> dict[str, Any]:
    """The ``/v1/models/{name}/infer`` JSON body."""
    one_input(input, events)
    body: dict[str, Any] = dict(policy.to_json())
    if input is not None:
        array = tensor_array(input)
        body["input"] = array.ravel().tolist()
        body["shape"] = list(array.shape)
    else:
        body["events"] = event_array(events).tolist()  # type: ignore[arg-type]
    if return_confidences:
        body["return_confidences"] = True
    return body


def _optional(message: Any, name: str) -> float | None:
    return float(getattr(message, name)) if message.HasField(name) else None


def partial_from_proto(message: pb.Partial) -> Partial:
    return Partial(
        timestep=message.timestep,
        class_index=message.class_index,
        label=message.label,
        confidence=message.confidence,
        probabilities=tuple(message.probabilities),
        uncertainty=_optional(message, "uncertainty"),
    )


def result_from_proto(message: pb.InferResponse) -> Result:
    return Result(
        model=message.model,
        request_id=message.request_id,
        class_index=message.class_index,
        label=message.label,
        confidence=message.confidence,
        probabilities=tuple(message.probabilities),
        timesteps=message.timesteps,
        max_timesteps=message.max_timesteps,
        exit_reason=_EXIT_REASONS.get(message.exit_reason, ExitReason.UNSPECIFIED),
        threshold=message.threshold,
        uncertainty=_optional(message, "uncertainty"),
        max_accuracy_drop=_optional(message, "max_accuracy_drop"),
        policy=message.policy or None,
        guarantee=_optional(message, "guarantee"),
        synaptic_ops=_optional(message, "synaptic_ops"),
        confidences=tuple(message.confidences),
        compute_ms=message.compute_ms,
        queue_ms=message.queue_ms,
    )


def stream_item_from_proto(message: pb.InferStreamResponse) -> Partial | Result:
    kind = message.WhichOneof("message")
    if kind == "partial":
        return partial_from_proto(message.partial)
    if kind == "final":
        return result_from_proto(message.final)
    raise ValueError(f"the server sent a stream message this client does not know ({kind})")


def model_from_proto(message: pb.ModelInfo) -> ModelInfo:
    contract: dict[str, Any] = json.loads(message.contract_json) if message.contract_json else {}
    return ModelInfo(
        name=message.name,
        version=message.version,
        timesteps=message.timesteps,
        num_classes=message.num_classes,
        labels=tuple(message.labels),
        input_kind=message.input_kind,
        frame_shape=tuple(message.frame_shape),
        default_threshold=message.default_threshold,
        accuracy_per_timestep=tuple(message.accuracy_per_timestep),
        members=message.members,
        input_description=message.input_description or None,
        calibration=tuple(CalibratedThreshold(c.max_accuracy_drop, c.threshold) for c in message.calibration),
        contract=contract,
        exit_policies=json.loads(message.exit_policies_json) if message.exit_policies_json else None,
    )


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _exit_reason(value: Any) -> ExitReason:
    try:
        return ExitReason(value)
    except ValueError:
        return ExitReason.UNSPECIFIED


def partial_from_json(data: Mapping[str, Any]) -> Partial:
    return Partial(
        timestep=int(data["timestep"]),
        class_index=int(data["class_index"]),
        label=str(data["label"]),
        confidence=float(data["confidence"]),
        probabilities=tuple(float(p) for p in data.get("probabilities", ())),
        uncertainty=_float_or_none(data.get("uncertainty")),
    )


def result_from_json(data: Mapping[str, Any]) -> Result:
    return Result(
        model=str(data["model"]),
        request_id=str(data["request_id"]),
        class_index=int(data["class_index"]),
        label=str(data["label"]),
        confidence=float(data["confidence"]),
        probabilities=tuple(float(p) for p in data.get("probabilities", ())),
        timesteps=int(data["timesteps"]),
        max_timesteps=int(data["max_timesteps"]),
        exit_reason=_exit_reason(data.get("exit_reason")),
        threshold=float(data.get("threshold", 0.0)),
        uncertainty=_float_or_none(data.get("uncertainty")),
        max_accuracy_drop=_float_or_none(data.get("max_accuracy_drop")),
        policy=data.get("policy"),
        guarantee=_float_or_none(data.get("guarantee")),
        synaptic_ops=_float_or_none(data.get("synaptic_ops")),
        confidences=tuple(float(c) for c in data.get("confidences") or ()),
        compute_ms=float(data.get("compute_ms", 0.0)),
        queue_ms=float(data.get("queue_ms", 0.0)),
    )


def model_from_json(data: Mapping[str, Any]) -> ModelInfo:
    return ModelInfo(
        name=str(data["name"]),
        version=int(data.get("version", 0)),
        timesteps=int(data["timesteps"]),
        num_classes=int(data["num_classes"]),
        labels=tuple(str(label) for label in data.get("labels", ())),
        input_kind=str(data["input_kind"]),
        frame_shape=tuple(int(d) for d in data.get("frame_shape", ())),
        default_threshold=float(data["default_threshold"]),
        accuracy_per_timestep=tuple(float(a) for a in data.get("accuracy_per_timestep", ())),
        members=int(data.get("members", 1)),
        input_description=data.get("input_description") or None,
        calibration=tuple(
            CalibratedThreshold(float(c["max_accuracy_drop"]), float(c["threshold"]))
            for c in data.get("calibration") or ()
        ),
        contract=dict(data),
        exit_policies=data.get("exit_policies"),
    )
