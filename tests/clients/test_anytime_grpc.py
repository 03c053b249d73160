"""spikeserve's own gRPC API (`spikeserve.anytime.v1.Anytime`) from Python, as a user would call it:
stubs generated from proto/anytime/v1/anytime.proto by the protoc that grpcio-tools bundles, the
official grpcio client and protobuf encoder, against the real release binary. The answers are the
offline evaluation's (recomputed here from heldout.json and the same ONNX graph, as eval.json was
made), raw events included: their columns packed by protobuf's
own encoder and read by the server's hand-written decoder (src/api/grpc/event_columns.rs).

Run from the repository root (`make` sets ORT_DYLIB_PATH and SPIKESERVE_BIN):

    ORT_DYLIB_PATH=... .venv/bin/python -m pytest tests/clients -q
"""

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_tools import protoc
from reference import offline_reference
from spikeserve_process import REPO, Server

MODELS = REPO / "models"
# digits samples that exit after 1, 2, 4 timesteps and at T = 8 (offline evaluation, threshold 0.9).
DIGITS_SAMPLES = [0, 55, 106, 15]


class Api:
    """The generated modules: messages (`anytime_pb2`) and the client stub (`anytime_pb2_grpc`)."""

    def __init__(self, messages: ModuleType, services: ModuleType) -> None:
        self.pb = messages
        self.services = services


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Api:
    out = tmp_path_factory.mktemp("stubs")
    well_known = Path(protoc.__file__).parent / "_proto"
    arguments = [f"-I{REPO / 'proto'}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}"]
    assert protoc.main(["protoc", *arguments, "anytime/v1/anytime.proto"]) == 0, "protoc failed"
    sys.path.insert(0, str(out))
    try:
        return Api(
            importlib.import_module("anytime.v1.anytime_pb2"), importlib.import_module("anytime.v1.anytime_pb2_grpc")
        )
    finally:
        sys.path.remove(str(out))


@pytest.fixture(scope="module")
def stub(server: Server, api: Api) -> Iterator[Any]:
    with grpc.insecure_channel(server.grpc_addr) as channel:
        yield api.services.AnytimeStub(channel)


def offline(model: str) -> tuple[int, list[int], list[int]]:
    """T, and per held-out sample the offline exit timestep and prediction at the default threshold
    (recomputed on this machine: see ``reference.py``)."""
    reference = offline_reference(model)
    return reference.timesteps, reference.exits, reference.predictions


def heldout(model: str) -> dict[str, Any]:
    return json.loads((MODELS / model / "heldout.json").read_text())


def image(api: Api, index: int) -> Any:
    pixels = np.asarray(heldout("digits")["inputs"][index], dtype=np.float32)
    return api.pb.Tensor(shape=list(pixels.shape), values=pixels.ravel().tolist())


def events(api: Api, rows: list[list[int]]) -> Any:
    x, y, t_us, p = (list(column) for column in zip(*rows, strict=True))
    return api.pb.Events(x=x, y=y, t_us=t_us, p=p)


def test_the_models_are_listed(stub: Any, api: Api) -> None:
    names = {m.name for m in stub.ListModels(api.pb.ListModelsRequest()).models}
    assert {"digits", "event-digits"} <= names
    info = stub.GetModel(api.pb.GetModelRequest(model="event-digits"))
    assert (info.input_kind, info.timesteps) == ("events", 10)


def test_tensors_are_answered_as_the_offline_evaluation(stub: Any, api: Api) -> None:
    timesteps, exits, predictions = offline("digits")
    for index in DIGITS_SAMPLES:
        answer = stub.Infer(api.pb.InferRequest(model="digits", tensor=image(api, index)), timeout=30)
        assert (answer.timesteps, answer.class_index) == (exits[index], predictions[index]), index
        if exits[index] < timesteps:
            assert answer.exit_reason == api.pb.EXIT_REASON_CONFIDENT, index
        assert answer.max_timesteps == timesteps
        assert abs(sum(answer.probabilities) - 1.0) < 1e-6


def test_raw_events_are_answered_as_the_offline_evaluation(stub: Any, api: Api) -> None:
    _, exits, predictions = offline("event-digits")
    samples = heldout("event-digits")["events"]
    assert len(samples) == 24
    for index, rows in enumerate(samples):
        request = api.pb.InferRequest(model="event-digits", events=events(api, rows))
        answer = stub.Infer(request, timeout=30)
        assert (answer.timesteps, answer.class_index) == (exits[index], predictions[index]), index


def test_a_stream_sends_a_partial_after_every_timestep(stub: Any, api: Api) -> None:
    _, exits, _ = offline("digits")
    request = api.pb.InferRequest(model="digits", tensor=image(api, 106), return_confidences=True)
    messages = list(stub.InferStream(request, timeout=30))
    partials = [m.partial for m in messages if m.WhichOneof("message") == "partial"]
    final = messages[-1]
    assert final.WhichOneof("message") == "final"
    assert [p.timestep for p in partials] == list(range(1, exits[106] + 1))
    assert final.final.timesteps == exits[106]
    assert list(final.final.probabilities) == pytest.approx(list(partials[-1].probabilities), abs=1e-12)
    assert list(final.final.confidences) == pytest.approx([p.confidence for p in partials], abs=1e-12)


def test_a_session_fed_event_chunks_answers_as_one_request(stub: Any, api: Api) -> None:
    # Sample 2 needs 4 of 10 timesteps: the answer comes while chunks are still being sent.
    rows = heldout("event-digits")["events"][2]
    whole = stub.Infer(api.pb.InferRequest(model="event-digits", events=events(api, rows)), timeout=30)

    def session() -> Iterator[Any]:
        yield api.pb.SessionRequest(start=api.pb.SessionStart(model="event-digits"))
        for chunk in np.array_split(np.asarray(rows), 5):
            yield api.pb.SessionRequest(events=events(api, chunk.tolist()))

    messages = list(stub.Session(session(), timeout=30))
    final = messages[-1].final
    assert messages[-1].WhichOneof("message") == "final"
    assert (final.timesteps, final.class_index) == (whole.timesteps, whole.class_index)
    assert list(final.probabilities) == pytest.approx(list(whole.probabilities), abs=1e-6)


def test_bad_events_are_invalid_argument_naming_the_columns(stub: Any, api: Api) -> None:
    ragged = api.pb.Events(x=[1, 2], y=[1, 2], t_us=[10], p=[0, 1])
    with pytest.raises(grpc.RpcError) as error:
        stub.Infer(api.pb.InferRequest(model="event-digits", events=ragged), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "x, y, t_us, p" in (error.value.details() or "")
    # The server goes on: the next request is answered.
    rows = heldout("event-digits")["events"][0]
    answer = stub.Infer(api.pb.InferRequest(model="event-digits", events=events(api, rows)), timeout=30)
    assert answer.timesteps >= 1
