"""A model that bins events by count (``events.mode = "count"``), served by the release binary, answers
every timestep as the offline evaluation does for the same raw events: through ``/v1`` (JSON), KServe v2
(HTTP, the answer after T), gRPC ``InferStream`` (event columns) and a gRPC ``Session`` fed the events in
chunks (whose frames are stepped as each bin's K-th event arrives).

The model is trained here (``spiketrain.train``, one epoch on a few event-digits samples: its accuracy
does not matter, only that server and offline evaluation agree). The offline side bins with
``spiketrain.events`` and steps the exported graph with ONNX Runtime (``spiketrain.export.onnx_logits``),
then takes the running-mean softmax (``spiketrain.anytime.running_probabilities``). Both sides run the
same graph on the same CPU, but nothing here rests on the last bit: probabilities agree within
``TOLERANCE``, and a timestep's class must agree wherever the offline top two are further apart than
that.
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
import requests
from grpc_tools import protoc
from spikeserve_process import REPO, Server, ServerStartError, release_binary, started
from spiketrain import anytime
from spiketrain.events import EventBinning, bin_events
from spiketrain.export import onnx_logits, open_session
from spiketrain.train import TrainConfig, run

MODEL = "count-digits"
TIMESTEPS = 4
TOLERANCE = 1e-5
SAMPLES = 12


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("models")
    config = TrainConfig(
        dataset="event-digits", timesteps=TIMESTEPS, epochs=1, limit=48, batch_size=16, threads=1, binning="count"
    )
    run(config, directory / MODEL)
    return directory


@pytest.fixture(scope="module")
def server(models: Path) -> Iterator[Server]:
    try:
        with started(release_binary(), models) as running:
            yield running
    except ServerStartError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    out = tmp_path_factory.mktemp("stubs")
    well_known = Path(protoc.__file__).parent / "_proto"
    arguments = [f"-I{REPO / 'proto'}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}"]
    assert protoc.main(["protoc", *arguments, "anytime/v1/anytime.proto"]) == 0, "protoc failed"
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("anytime.v1.anytime_pb2"), importlib.import_module("anytime.v1.anytime_pb2_grpc")
    finally:
        sys.path.remove(str(out))


@pytest.fixture(scope="module")
def stub(server: Server, pb: tuple[ModuleType, ModuleType]) -> Iterator[Any]:
    with grpc.insecure_channel(server.grpc_addr) as channel:
        yield pb[1].AnytimeStub(channel)


class Offline:
    """The held-out samples' raw events, the model's binning, and per sample the running-mean
    probabilities after every timestep ``[T, N, C]`` (float64)."""

    def __init__(self, directory: Path) -> None:
        session = open_session(directory / "model.onnx")
        meta = session.get_modelmeta().custom_metadata_map
        self.binning = EventBinning(**json.loads(meta["spikeserve.events"]))
        heldout = json.loads((directory / "heldout.json").read_text())
        self.events = [np.asarray(e, dtype=np.int64).reshape(-1, 4) for e in heldout["events"][:SAMPLES]]
        frames = np.stack([bin_events(e, self.binning) for e in self.events], axis=1)  # [T, N, ...]
        self.probabilities = anytime.running_probabilities(onnx_logits(session, np.ascontiguousarray(frames)))

    def check(self, sample: int, steps: list[tuple[int, list[float]]], door: str) -> None:
        """``steps``: (class, probabilities) after each timestep the server stepped, from t = 1."""
        for t, (served_class, served) in enumerate(steps):
            expected = self.probabilities[t, sample]
            assert np.allclose(served, expected, rtol=0.0, atol=TOLERANCE), f"{door}: sample {sample}, t = {t + 1}"
            top_two = np.sort(expected)[-2:]
            if top_two[1] - top_two[0] > TOLERANCE:
                assert served_class == int(np.argmax(expected)), f"{door}: sample {sample}, t = {t + 1}"


@pytest.fixture(scope="module")
def offline(models: Path) -> Offline:
    return Offline(models / MODEL)


def columns(pb: ModuleType, rows: np.ndarray) -> Any:
    x, y, t_us, p = (column.tolist() for column in rows.T)
    return pb.Events(x=x, y=y, t_us=t_us, p=p)


def test_the_model_carries_its_count_binning(server: Server, offline: Offline) -> None:
    info = requests.get(f"http://{server.http_addr}/v1/models/{MODEL}", timeout=30).json()
    assert info["events"]["mode"] == "count" and info["events"]["events_per_bin"] == offline.binning.events_per_bin
    assert offline.binning.mode == "count"
    capacity = TIMESTEPS * (offline.binning.events_per_bin or 0)
    # Both cases are covered: samples with events to drop and samples that leave bins empty.
    assert any(len(e) > capacity for e in offline.events) and any(len(e) < capacity for e in offline.events)


def test_v1_and_grpc_streams_answer_every_timestep_as_offline(
    server: Server, offline: Offline, stub: Any, pb: tuple[ModuleType, ModuleType]
) -> None:
    messages = pb[0]
    dropped = 0
    for sample, rows in enumerate(offline.events):
        body = {"events": rows.tolist(), "threshold": 1.0, "return_confidences": True}
        answer = requests.post(f"http://{server.http_addr}/v1/models/{MODEL}/infer", json=body, timeout=30).json()
        assert answer["timesteps"] == TIMESTEPS, answer
        expected = offline.probabilities[:, sample].max(axis=1)
        assert np.allclose(answer["confidences"], expected, rtol=0.0, atol=TOLERANCE), f"/v1: sample {sample}"
        final = offline.probabilities[-1, sample]
        assert np.allclose(answer["probabilities"], final, rtol=0.0, atol=TOLERANCE), f"/v1: sample {sample}"
        if np.diff(np.sort(final)[-2:])[0] > TOLERANCE:
            assert answer["class_index"] == int(np.argmax(final)), f"/v1: sample {sample}"
        body = {
            "inputs": [{"name": "events", "datatype": "INT64", "shape": [len(rows), 4], "data": rows.ravel().tolist()}],
            "parameters": {"threshold": 1.0},
        }
        kserve = requests.post(f"http://{server.http_addr}/v2/models/{MODEL}/infer", json=body, timeout=30).json()
        outputs = {output["name"]: output["data"] for output in kserve["outputs"]}
        assert outputs["timesteps"] == [TIMESTEPS], kserve
        assert np.allclose(outputs["probabilities"], final, rtol=0.0, atol=TOLERANCE), f"KServe: sample {sample}"
        dropped += max(0, len(rows) - TIMESTEPS * (offline.binning.events_per_bin or 0)) * 3  # three requests
        request = messages.InferRequest(
            model=MODEL, events=columns(messages, rows), policy=messages.Policy(threshold=1.0)
        )
        partials = [m.partial for m in stub.InferStream(request, timeout=30) if m.WhichOneof("message") == "partial"]
        assert [p.timestep for p in partials] == list(range(1, TIMESTEPS + 1))
        offline.check(sample, [(p.class_index, list(p.probabilities)) for p in partials], "InferStream")
    # Events past bins * K were dropped, not refused, and counted (no session has run yet in this module).
    metrics = requests.get(f"http://{server.http_addr}/metrics", timeout=30).text
    counted = [line for line in metrics.splitlines() if line.startswith("spikeserve_events_dropped_total{")]
    assert dropped > 0 and counted and float(counted[0].split()[-1]) == dropped, counted


def test_a_session_steps_each_count_bin_as_offline(
    offline: Offline, stub: Any, pb: tuple[ModuleType, ModuleType]
) -> None:
    messages = pb[0]
    k = offline.binning.events_per_bin or 0
    rng = np.random.default_rng(0)
    for sample, rows in enumerate(offline.events):
        cuts = np.sort(rng.choice(np.arange(1, len(rows)), size=6, replace=False))

        def session(rows: np.ndarray = rows, cuts: np.ndarray = cuts) -> Iterator[Any]:
            start = messages.SessionStart(model=MODEL, policy=messages.Policy(threshold=1.0))
            yield messages.SessionRequest(start=start)
            for chunk in np.split(rows, cuts):
                yield messages.SessionRequest(events=columns(messages, chunk))

        answers = list(stub.Session(session(), timeout=30))
        partials = [m.partial for m in answers if m.WhichOneof("message") == "partial"]
        assert answers[-1].WhichOneof("message") == "final"
        # Bins after the last event are not stepped (the input ended); the others are, one per K events.
        stepped = min(TIMESTEPS, -(-len(rows) // k))
        assert [p.timestep for p in partials] == list(range(1, stepped + 1)), f"sample {sample}"
        offline.check(sample, [(p.class_index, list(p.probabilities)) for p in partials], "Session")


def test_bad_events_are_refused_as_for_time_binning(
    server: Server, offline: Offline, stub: Any, pb: tuple[ModuleType, ModuleType]
) -> None:
    """The checks do not depend on the mode: an event the model would drop is still checked."""
    capacity = TIMESTEPS * (offline.binning.events_per_bin or 0)
    # capacity + 1 events at t = 7 (the last one dropped), then one earlier than them.
    late = np.repeat([[1, 1, 7, 0]], capacity + 2, axis=0)
    late[-1, 2] = 3
    cases = [
        (np.array([[0, 0, 5, 2]]), "events[0]: p = 2 is not one of the 2 polarities"),
        (late, f"events[{capacity + 1}]: t = 3 is earlier than the event before it"),
    ]
    for rows, message in cases:
        answer = requests.post(
            f"http://{server.http_addr}/v1/models/{MODEL}/infer", json={"events": rows.tolist()}, timeout=30
        )
        assert answer.status_code == 400 and message in answer.json()["error"]["message"], answer.text
        request = pb[0].InferRequest(model=MODEL, events=columns(pb[0], rows))
        with pytest.raises(grpc.RpcError) as refused:
            stub.Infer(request, timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in refused.value.details()
