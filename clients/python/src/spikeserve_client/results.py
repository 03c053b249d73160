"""What the server answers, as typed, immutable dataclasses (the same for gRPC and HTTP)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class ExitReason(enum.StrEnum):
    """Why a request stopped stepping."""

    #: The confidence reached the threshold.
    CONFIDENT = "confident"
    #: It ran every allowed timestep (also: a session's input ended).
    MAX_TIMESTEPS = "max_timesteps"
    #: The latency budget ran out after at least one timestep: the answer is the best so far.
    DEADLINE = "deadline"
    #: The client went away (counted by the server, never sent).
    CANCELLED = "cancelled"
    #: An exit policy other than the plain cutoff (per-timestep thresholds, a learned stop score) said stop.
    POLICY = "policy"
    #: A reason this client does not know (a newer server).
    UNSPECIFIED = "unspecified"


@dataclass(frozen=True)
class Partial:
    """The prediction after one timestep of a streamed request or a session."""

    timestep: int
    class_index: int
    label: str
    confidence: float
    probabilities: tuple[float, ...]
    #: Ensembles: the members' variance of the chosen class's probability.
    uncertainty: float | None = None


@dataclass(frozen=True)
class Result:
    """The answer to a request: the prediction when it stopped, and why it stopped."""

    model: str
    request_id: str
    class_index: int
    label: str
    confidence: float
    probabilities: tuple[float, ...]
    timesteps: int
    max_timesteps: int
    exit_reason: ExitReason
    #: The confidence threshold the request ran with.
    threshold: float
    #: Ensembles: the members' variance of the chosen class's probability.
    uncertainty: float | None = None
    #: The calibration budget (percentage points) whose threshold was used, when asked for one.
    max_accuracy_drop: float | None = None
    #: The exit policy that ran (``cutoff``, ``schedule`` or ``learned``).
    policy: str | None = None
    #: The guarantee level of the calibration row that served it, when it was a guaranteed one.
    guarantee: float | None = None
    synaptic_ops: float | None = None
    #: The confidence after every timestep, when asked for (``return_confidences=True``).
    confidences: tuple[float, ...] = ()
    compute_ms: float = 0.0
    queue_ms: float = 0.0


@dataclass(frozen=True)
class CalibratedThreshold:
    """One row of a model's calibration table: the threshold that kept the accuracy drop within a budget."""

    max_accuracy_drop: float
    threshold: float


@dataclass(frozen=True)
class ModelInfo:
    """A served model's contract: what it takes, what it answers, and its exits."""

    name: str
    version: int
    timesteps: int
    num_classes: int
    labels: tuple[str, ...]
    #: ``"static"``, ``"frames"`` or ``"events"``.
    input_kind: str
    #: One timestep's frame, without a batch dimension.
    frame_shape: tuple[int, ...]
    default_threshold: float
    accuracy_per_timestep: tuple[float, ...]
    members: int
    input_description: str | None
    calibration: tuple[CalibratedThreshold, ...]
    #: The whole contract as the server shows it (``GET /v1/models/{name}``), binning of events included.
    contract: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: The model's exit policies (serving policy, each policy's budgets and guarantee levels), if it ships any.
    exit_policies: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def events(self) -> dict[str, int] | None:
        """Event models: how raw events are binned (``width``, ``height``, ``polarities``, ``window_us``,
        ``bins``); ``None`` for other models."""
        binning = self.contract.get("events")
        return dict(binning) if isinstance(binning, dict) else None


#: What a stream or a session yields: a :class:`Partial` after every timestep, then one :class:`Result`.
StreamItem = Partial | Result
