from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExitReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXIT_REASON_UNSPECIFIED: _ClassVar[ExitReason]
    EXIT_REASON_CONFIDENT: _ClassVar[ExitReason]
    EXIT_REASON_MAX_TIMESTEPS: _ClassVar[ExitReason]
    EXIT_REASON_DEADLINE: _ClassVar[ExitReason]
    EXIT_REASON_CANCELLED: _ClassVar[ExitReason]
    EXIT_REASON_POLICY: _ClassVar[ExitReason]
EXIT_REASON_UNSPECIFIED: ExitReason
EXIT_REASON_CONFIDENT: ExitReason
EXIT_REASON_MAX_TIMESTEPS: ExitReason
EXIT_REASON_DEADLINE: ExitReason
EXIT_REASON_CANCELLED: ExitReason
EXIT_REASON_POLICY: ExitReason

class Tensor(_message.Message):
    __slots__ = ("shape", "values")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class Events(_message.Message):
    __slots__ = ("x", "y", "t_us", "p")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    T_US_FIELD_NUMBER: _ClassVar[int]
    P_FIELD_NUMBER: _ClassVar[int]
    x: _containers.RepeatedScalarFieldContainer[int]
    y: _containers.RepeatedScalarFieldContainer[int]
    t_us: _containers.RepeatedScalarFieldContainer[int]
    p: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, x: _Optional[_Iterable[int]] = ..., y: _Optional[_Iterable[int]] = ..., t_us: _Optional[_Iterable[int]] = ..., p: _Optional[_Iterable[int]] = ...) -> None: ...

class Policy(_message.Message):
    __slots__ = ("threshold", "min_timesteps", "max_timesteps", "latency_budget_ms", "max_variance", "priority", "max_accuracy_drop", "policy", "guarantee")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MIN_TIMESTEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_TIMESTEPS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_VARIANCE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    MAX_ACCURACY_DROP_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    GUARANTEE_FIELD_NUMBER: _ClassVar[int]
    threshold: float
    min_timesteps: int
    max_timesteps: int
    latency_budget_ms: float
    max_variance: float
    priority: int
    max_accuracy_drop: float
    policy: str
    guarantee: float
    def __init__(self, threshold: _Optional[float] = ..., min_timesteps: _Optional[int] = ..., max_timesteps: _Optional[int] = ..., latency_budget_ms: _Optional[float] = ..., max_variance: _Optional[float] = ..., priority: _Optional[int] = ..., max_accuracy_drop: _Optional[float] = ..., policy: _Optional[str] = ..., guarantee: _Optional[float] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("model", "request_id", "tensor", "events", "policy", "return_confidences")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    RETURN_CONFIDENCES_FIELD_NUMBER: _ClassVar[int]
    model: str
    request_id: str
    tensor: Tensor
    events: Events
    policy: Policy
    return_confidences: bool
    def __init__(self, model: _Optional[str] = ..., request_id: _Optional[str] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ..., events: _Optional[_Union[Events, _Mapping]] = ..., policy: _Optional[_Union[Policy, _Mapping]] = ..., return_confidences: bool = ...) -> None: ...

class Partial(_message.Message):
    __slots__ = ("timestep", "class_index", "label", "confidence", "uncertainty", "probabilities")
    TIMESTEP_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    timestep: int
    class_index: int
    label: str
    confidence: float
    uncertainty: float
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, timestep: _Optional[int] = ..., class_index: _Optional[int] = ..., label: _Optional[str] = ..., confidence: _Optional[float] = ..., uncertainty: _Optional[float] = ..., probabilities: _Optional[_Iterable[float]] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("model", "request_id", "class_index", "label", "confidence", "uncertainty", "probabilities", "timesteps", "max_timesteps", "exit_reason", "synaptic_ops", "confidences", "compute_ms", "queue_ms", "threshold", "max_accuracy_drop", "policy", "guarantee")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    TIMESTEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_TIMESTEPS_FIELD_NUMBER: _ClassVar[int]
    EXIT_REASON_FIELD_NUMBER: _ClassVar[int]
    SYNAPTIC_OPS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCES_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MAX_ACCURACY_DROP_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    GUARANTEE_FIELD_NUMBER: _ClassVar[int]
    model: str
    request_id: str
    class_index: int
    label: str
    confidence: float
    uncertainty: float
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    timesteps: int
    max_timesteps: int
    exit_reason: ExitReason
    synaptic_ops: float
    confidences: _containers.RepeatedScalarFieldContainer[float]
    compute_ms: float
    queue_ms: float
    threshold: float
    max_accuracy_drop: float
    policy: str
    guarantee: float
    def __init__(self, model: _Optional[str] = ..., request_id: _Optional[str] = ..., class_index: _Optional[int] = ..., label: _Optional[str] = ..., confidence: _Optional[float] = ..., uncertainty: _Optional[float] = ..., probabilities: _Optional[_Iterable[float]] = ..., timesteps: _Optional[int] = ..., max_timesteps: _Optional[int] = ..., exit_reason: _Optional[_Union[ExitReason, str]] = ..., synaptic_ops: _Optional[float] = ..., confidences: _Optional[_Iterable[float]] = ..., compute_ms: _Optional[float] = ..., queue_ms: _Optional[float] = ..., threshold: _Optional[float] = ..., max_accuracy_drop: _Optional[float] = ..., policy: _Optional[str] = ..., guarantee: _Optional[float] = ...) -> None: ...

class InferStreamResponse(_message.Message):
    __slots__ = ("partial", "final")
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    partial: Partial
    final: InferResponse
    def __init__(self, partial: _Optional[_Union[Partial, _Mapping]] = ..., final: _Optional[_Union[InferResponse, _Mapping]] = ...) -> None: ...

class SessionStart(_message.Message):
    __slots__ = ("model", "request_id", "policy", "return_confidences")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    RETURN_CONFIDENCES_FIELD_NUMBER: _ClassVar[int]
    model: str
    request_id: str
    policy: Policy
    return_confidences: bool
    def __init__(self, model: _Optional[str] = ..., request_id: _Optional[str] = ..., policy: _Optional[_Union[Policy, _Mapping]] = ..., return_confidences: bool = ...) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("start", "frame", "events")
    START_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    start: SessionStart
    frame: Tensor
    events: Events
    def __init__(self, start: _Optional[_Union[SessionStart, _Mapping]] = ..., frame: _Optional[_Union[Tensor, _Mapping]] = ..., events: _Optional[_Union[Events, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "timesteps", "num_classes", "labels", "input_kind", "frame_shape", "default_threshold", "accuracy_per_timestep", "members", "input_description", "contract_json", "version", "calibration", "exit_policies_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TIMESTEPS_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    INPUT_KIND_FIELD_NUMBER: _ClassVar[int]
    FRAME_SHAPE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_PER_TIMESTEP_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    INPUT_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_JSON_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    EXIT_POLICIES_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    timesteps: int
    num_classes: int
    labels: _containers.RepeatedScalarFieldContainer[str]
    input_kind: str
    frame_shape: _containers.RepeatedScalarFieldContainer[int]
    default_threshold: float
    accuracy_per_timestep: _containers.RepeatedScalarFieldContainer[float]
    members: int
    input_description: str
    contract_json: str
    version: int
    calibration: _containers.RepeatedCompositeFieldContainer[CalibratedThreshold]
    exit_policies_json: str
    def __init__(self, name: _Optional[str] = ..., timesteps: _Optional[int] = ..., num_classes: _Optional[int] = ..., labels: _Optional[_Iterable[str]] = ..., input_kind: _Optional[str] = ..., frame_shape: _Optional[_Iterable[int]] = ..., default_threshold: _Optional[float] = ..., accuracy_per_timestep: _Optional[_Iterable[float]] = ..., members: _Optional[int] = ..., input_description: _Optional[str] = ..., contract_json: _Optional[str] = ..., version: _Optional[int] = ..., calibration: _Optional[_Iterable[_Union[CalibratedThreshold, _Mapping]]] = ..., exit_policies_json: _Optional[str] = ...) -> None: ...

class CalibratedThreshold(_message.Message):
    __slots__ = ("max_accuracy_drop", "threshold")
    MAX_ACCURACY_DROP_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    max_accuracy_drop: float
    threshold: float
    def __init__(self, max_accuracy_drop: _Optional[float] = ..., threshold: _Optional[float] = ...) -> None: ...
