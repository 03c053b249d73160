"""The package's HTTP clients (``/v1`` JSON and Server-Sent Events) against the release binary: the same
answers as the offline evaluation and as the gRPC client, errors as the one exception type."""

import asyncio
import json
from typing import Any

import numpy as np
import pytest
from reference import offline_reference
from spikeserve_client import AsyncHttpClient, Client, ExitReason, HttpClient, Partial, Result, SpikeserveError
from spikeserve_process import REPO, Server

MODELS = REPO / "models"
DIGITS_SAMPLES = [0, 55, 106, 15]


def heldout(model: str) -> dict[str, Any]:
    return json.loads((MODELS / model / "heldout.json").read_text())


def image(index: int) -> np.ndarray:
    return np.asarray(heldout("digits")["inputs"][index], dtype=np.float32)


@pytest.fixture(scope="module")
def http(server: Server) -> Any:
    with HttpClient(server.http_addr) as client:
        yield client


def test_models_match_the_grpc_listing(server: Server, http: HttpClient) -> None:
    with Client(server.grpc_addr) as grpc_client:
        assert http.list_models() == grpc_client.list_models()
        assert http.model("event-digits") == grpc_client.model("event-digits")
    assert http.model("event-digits").events is not None


def test_answers_exit_as_the_offline_evaluation(http: HttpClient) -> None:
    reference = offline_reference("digits")
    for index in DIGITS_SAMPLES:
        answer = http.infer("digits", image(index), request_id=f"http-{index}", return_confidences=True)
        assert (answer.timesteps, answer.class_index) == (reference.exits[index], reference.predictions[index])
        assert answer.request_id == f"http-{index}" and len(answer.confidences) == answer.timesteps
    events = heldout("event-digits")["events"]
    reference = offline_reference("event-digits")
    for index in range(4):
        answer = http.infer("event-digits", events=events[index])
        assert (answer.timesteps, answer.class_index) == (reference.exits[index], reference.predictions[index])


def test_a_stream_of_server_sent_events(http: HttpClient) -> None:
    items = list(http.stream("digits", image(0), threshold=1.0, max_timesteps=3))
    assert [type(i) for i in items] == [Partial, Partial, Partial, Result]
    assert [p.timestep for p in items[:-1]] == [1, 2, 3]  # type: ignore[union-attr]
    final = items[-1]
    assert isinstance(final, Result) and (final.timesteps, final.exit_reason) == (3, ExitReason.MAX_TIMESTEPS)
    assert final.probabilities == pytest.approx(items[-2].probabilities, abs=1e-12)


def test_errors_carry_the_servers_code(http: HttpClient) -> None:
    with pytest.raises(SpikeserveError) as missing:
        http.infer("no-such-model", image(0), request_id="http-missing")
    assert (missing.value.code, missing.value.http_status) == ("model_not_found", 404)
    assert missing.value.request_id == "http-missing"
    with pytest.raises(SpikeserveError) as shape:
        http.infer("digits", np.zeros((2, 2)))
    assert (shape.value.code, shape.value.http_status) == ("invalid_input", 400)
    # Before the first timestep the budget ran out: in a stream, the SSE error event.
    with pytest.raises(SpikeserveError) as late:
        list(http.stream("digits", image(15), latency_budget_ms=1e-6))
    assert late.value.code == "deadline_exceeded"
    with pytest.raises(SpikeserveError) as refused:
        http.stream("digits", np.zeros((2, 2)))
    assert refused.value.http_status == 400
    with HttpClient("http://127.0.0.1:1", retries=1) as nowhere, pytest.raises(SpikeserveError) as down:
        nowhere.list_models()
    assert down.value.code == "connection_error"


def test_closing_a_stream_stops_reading(http: HttpClient) -> None:
    rows = heldout("mnist-events")["events"][0]
    stream = http.stream("mnist-events", events=rows, threshold=1.0)
    assert isinstance(next(stream), Partial)
    stream.close()
    assert list(stream) == [] and stream.result is None
    assert http.infer("digits", image(0)).timesteps == 1


def test_the_async_http_client(server: Server) -> None:
    reference = offline_reference("digits")

    async def run() -> None:
        async with AsyncHttpClient(f"http://{server.http_addr}") as client:
            assert {m.name for m in await client.list_models()} >= {"digits", "event-digits"}
            assert (await client.model("digits")).frame_shape == (1, 8, 8)
            answers = await asyncio.gather(*(client.infer("digits", image(i)) for i in DIGITS_SAMPLES))
            assert [a.timesteps for a in answers] == [reference.exits[i] for i in DIGITS_SAMPLES]
            stream = await client.stream("digits", image(106))
            items = [item async for item in stream]
            assert [p.timestep for p in items[:-1]] == list(range(1, reference.exits[106] + 1))  # type: ignore[union-attr]
            assert isinstance(items[-1], Result) and stream.result == items[-1]
            with pytest.raises(SpikeserveError) as error:
                await client.model("no-such-model")
            assert error.value.code == "model_not_found"

    asyncio.run(run())
