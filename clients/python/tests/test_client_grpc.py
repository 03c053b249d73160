"""The package's gRPC clients, sync and asyncio, against the release binary serving the shipped models:
every call, the policy arguments, errors, cancellation, and exits equal to the offline evaluation
(``tests/clients/reference.py`` recomputes it on this machine from ``heldout.json`` and the same graph)."""

import asyncio
import json
import time
from typing import Any

import httpx
import numpy as np
import pytest
from reference import offline_reference
from spikeserve_client import (
    AsyncClient,
    Client,
    ExitReason,
    Partial,
    Result,
    SpikeserveError,
)
from spikeserve_process import REPO, Server

MODELS = REPO / "models"
# digits samples that exit after 1, 2, 4 timesteps and at T = 8 (offline evaluation, default threshold).
DIGITS_SAMPLES = [0, 55, 106, 15]
EVENT_SAMPLES = [0, 1, 2, 3, 4, 5]


def heldout(model: str) -> dict[str, Any]:
    return json.loads((MODELS / model / "heldout.json").read_text())


def image(index: int) -> np.ndarray:
    return np.asarray(heldout("digits")["inputs"][index], dtype=np.float32)


def events(index: int) -> np.ndarray:
    return np.asarray(heldout("event-digits")["events"][index], dtype=np.int64)


@pytest.fixture(scope="module")
def client(server: Server) -> Any:
    with Client(server.grpc_addr) as connected:
        yield connected


def test_models_are_listed_with_their_contracts(client: Client) -> None:
    models = {m.name: m for m in client.list_models()}
    assert {"digits", "event-digits", "mnist-events"} <= set(models)
    digits = client.model("digits")
    assert digits == models["digits"]
    assert (digits.input_kind, digits.timesteps, digits.frame_shape, digits.num_classes) == ("static", 8, (1, 8, 8), 10)
    assert digits.labels == tuple(str(i) for i in range(10))
    assert digits.events is None and digits.calibration
    assert client.model("event-digits").events == {
        "width": 34,
        "height": 34,
        "polarities": 2,
        "window_us": 300_000,
        "bins": 10,
    }


def test_tensors_exit_as_the_offline_evaluation(client: Client) -> None:
    reference = offline_reference("digits")
    for index in DIGITS_SAMPLES:
        answer = client.infer("digits", image(index))
        assert (answer.timesteps, answer.class_index) == (reference.exits[index], reference.predictions[index])
        expected = ExitReason.CONFIDENT if reference.exits[index] < reference.timesteps else ExitReason.MAX_TIMESTEPS
        assert answer.exit_reason == expected
        assert answer.label == str(answer.class_index) and answer.max_timesteps == reference.timesteps
        assert answer.threshold == pytest.approx(reference.threshold)
        assert sum(answer.probabilities) == pytest.approx(1.0, abs=1e-6)
        assert max(answer.probabilities) == pytest.approx(answer.confidence)


def test_raw_events_exit_as_the_offline_evaluation(client: Client) -> None:
    reference = offline_reference("event-digits")
    for index in EVENT_SAMPLES:
        answer = client.infer("event-digits", events=events(index))
        assert (answer.timesteps, answer.class_index) == (reference.exits[index], reference.predictions[index])


def test_a_stream_yields_a_partial_per_timestep_then_the_result(client: Client) -> None:
    reference = offline_reference("digits")
    items = list(client.stream("digits", image(106), return_confidences=True, request_id="py-stream-1"))
    partials, final = items[:-1], items[-1]
    assert all(isinstance(p, Partial) for p in partials) and isinstance(final, Result)
    assert [p.timestep for p in partials] == list(range(1, reference.exits[106] + 1))
    assert (final.timesteps, final.class_index) == (reference.exits[106], reference.predictions[106])
    assert final.request_id == "py-stream-1"
    assert final.probabilities == pytest.approx(partials[-1].probabilities, abs=1e-12)
    assert final.confidences == pytest.approx([p.confidence for p in partials], abs=1e-12)


def test_the_policy_arguments_reach_the_server(client: Client) -> None:
    # threshold 1.0 runs every allowed timestep; max_timesteps caps them; min_timesteps delays a confident exit.
    capped = client.infer("digits", image(0), threshold=1.0, max_timesteps=3)
    assert (capped.timesteps, capped.exit_reason, capped.threshold) == (3, ExitReason.MAX_TIMESTEPS, 1.0)
    delayed = client.infer("digits", image(0), min_timesteps=5)
    assert delayed.timesteps == 5 and delayed.exit_reason == ExitReason.CONFIDENT
    calibrated = client.infer("digits", image(0), max_accuracy_drop=1.0, policy="cutoff")
    policies = client.model("digits").exit_policies
    assert policies is not None
    file = json.loads((MODELS / "digits" / "exit-policies.json").read_text())
    row = next(r for r in file["policies"]["cutoff"]["point"] if r["max_accuracy_drop"] == 1.0)
    assert (calibrated.max_accuracy_drop, calibrated.threshold, calibrated.policy) == (1.0, row["threshold"], "cutoff")
    # Without a policy the model's own choice runs; with a guarantee, a guaranteed row.
    served = client.infer("digits", image(0), max_accuracy_drop=1.0)
    assert served.policy == policies["serving_policy"] and served.guarantee is None
    guaranteed = client.infer("digits", image(0), max_accuracy_drop=1.0, guarantee=0.9)
    assert (guaranteed.policy, guaranteed.guarantee) == (policies["serving_policy_guarantee"], 0.9)
    with pytest.raises(ValueError, match="guarantee needs max_accuracy_drop"):
        client.infer("digits", image(0), guarantee=0.9)
    # A budget too small for one timestep is an error; a generous one changes nothing.
    with pytest.raises(SpikeserveError) as error:
        client.infer("digits", image(15), latency_budget_ms=1e-6)
    assert (error.value.code, error.value.grpc_status) == ("deadline_exceeded", "DEADLINE_EXCEEDED")
    assert client.infer("digits", image(15), latency_budget_ms=60_000, timeout=60).timesteps == 8


def test_server_refusals_are_one_exception_with_code_and_message(client: Client) -> None:
    with pytest.raises(SpikeserveError) as missing:
        client.infer("no-such-model", image(0))
    assert (missing.value.code, missing.value.grpc_status) == ("model_not_found", "NOT_FOUND")
    assert "no-such-model" in missing.value.message
    with pytest.raises(SpikeserveError) as shape:
        client.infer("digits", np.zeros((3, 3), dtype=np.float32))
    assert shape.value.grpc_status == "INVALID_ARGUMENT" and shape.value.code == "invalid_input"
    with pytest.raises(SpikeserveError) as both:
        client.infer("digits", image(0), threshold=0.9, max_accuracy_drop=None, max_timesteps=99)
    assert both.value.grpc_status == "INVALID_ARGUMENT"
    with pytest.raises(SpikeserveError) as outside:
        client.infer("event-digits", events=[[99, 0, 0, 0]])
    assert outside.value.grpc_status == "INVALID_ARGUMENT" and "events[0]" in outside.value.message
    with pytest.raises(SpikeserveError) as unknown:
        client.model("no-such-model")
    assert unknown.value.code == "model_not_found"
    # The connection goes on: the next request is answered.
    assert client.infer("digits", image(0)).timesteps == 1


def test_bad_arguments_are_refused_before_sending(client: Client) -> None:
    with pytest.raises(ValueError, match="exactly one of input"):
        client.infer("digits")
    with pytest.raises(ValueError, match="exactly one of input"):
        client.infer("digits", image(0), events=events(0))
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        client.infer("digits", image(0), threshold=1.5)
    with pytest.raises(ValueError, match="not both"):
        client.infer("digits", image(0), threshold=0.9, max_accuracy_drop=0.5)
    with pytest.raises(ValueError, match=r"expected \[N, 4\] rows"):
        client.infer("event-digits", events=np.zeros((5, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="must be an integer"):
        client.infer("event-digits", events=[[1.5, 2, 3, 0]])
    with pytest.raises(ValueError, match="expected numbers"):
        client.infer("digits", [["a", "b"]])
    with pytest.raises(ValueError, match="finite"):
        client.infer("digits", np.full((1, 8, 8), np.nan))
    with pytest.raises(TypeError, match="max_timesteps must be an integer"):
        client.infer("digits", image(0), max_timesteps=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        client.infer("digits", image(0), timeout=0)


def test_a_session_fed_event_chunks_answers_as_one_request(client: Client) -> None:
    rows = events(2)
    whole = client.infer("event-digits", events=rows, threshold=1.0)
    with client.session("event-digits", threshold=1.0, request_id="py-session-1") as session:
        for chunk in np.array_split(rows, 5):
            session.send_events(chunk)
        session.close_input()
        items = list(session)
    final = items[-1]
    assert isinstance(final, Result) and all(isinstance(p, Partial) for p in items[:-1])
    assert (final.timesteps, final.class_index, final.request_id) == (
        whole.timesteps,
        whole.class_index,
        "py-session-1",
    )
    assert final.probabilities == pytest.approx(whole.probabilities, abs=1e-6)
    with pytest.raises(RuntimeError, match="input is closed"):
        session.send_events(rows[:1])


def test_a_session_half_closed_early_answers_from_the_frames_sent(client: Client) -> None:
    frames = np.repeat(image(15)[np.newaxis], 3, axis=0)
    session = client.session("digits", threshold=1.0)
    for frame in frames:
        session.send_frame(frame)
    session.close_input()
    final = session.final()
    assert (final.timesteps, final.exit_reason) == (3, ExitReason.MAX_TIMESTEPS)
    assert final.class_index == client.infer("digits", image(15), threshold=1.0, max_timesteps=3).class_index


def test_a_session_that_is_confident_ends_before_its_input(client: Client) -> None:
    reference = offline_reference("digits")
    session = client.session("digits")
    session.send_frame(image(0))  # exits after one timestep offline
    final = session.final()
    assert (final.timesteps, final.exit_reason) == (reference.exits[0], ExitReason.CONFIDENT)
    session.send_frame(image(0))  # ignored: the server has answered
    assert list(session) == []


def test_a_bad_frame_ends_the_session_with_its_error(client: Client) -> None:
    session = client.session("digits")
    session.send_frame(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(SpikeserveError) as error:
        session.final()
    assert error.value.grpc_status == "INVALID_ARGUMENT"


def _exits(server: Server, model: str) -> dict[str, int]:
    response = httpx.get(f"http://{server.http_addr}/v1/models/{model}/stats", timeout=10)
    exits: dict[str, int] = response.json()["exits"]
    return exits


def test_cancelling_a_session_ends_it_without_an_answer(client: Client, server: Server) -> None:
    for _ in range(3):
        before = _exits(server, "event-digits")
        session = client.session("event-digits", threshold=1.0)
        rows = events(3)
        session.send_events(rows[rows[:, 2] < 45_000])  # the first of ten 30 ms bins, and part of the second
        assert isinstance(next(session), Partial)  # the request runs, waiting for more input
        session.cancel()
        assert list(session) == [] and session.result is None
        # The server ends the request as cancelled (not answered after the input it had, as a
        # half-close would be), and frees its slot.
        deadline = time.monotonic() + 10
        while _exits(server, "event-digits")["cancelled"] == before["cancelled"] and time.monotonic() < deadline:
            time.sleep(0.02)
        after = _exits(server, "event-digits")
        assert after["cancelled"] == before["cancelled"] + 1, (before, after)
        assert after["max_timesteps"] == before["max_timesteps"], (before, after)
    assert client.infer("digits", image(0)).timesteps == 1


def test_closing_a_stream_stops_it(client: Client) -> None:
    stream = client.stream("mnist-events", events=np.asarray(heldout("mnist-events")["events"][0]), threshold=1.0)
    first = next(stream)
    assert isinstance(first, Partial) and first.timestep == 1
    stream.close()
    assert list(stream) == [] and stream.result is None
    with pytest.raises(SpikeserveError, match="closed before its answer"):
        stream.final()
    assert client.infer("digits", image(0)).timesteps == 1


def test_the_deadline_is_the_latency_budget(client: Client) -> None:
    # A deadline far off changes nothing; the answer names its exit either way.
    answer = client.infer("digits", image(15), timeout=30)
    assert answer.timesteps == 8 and answer.exit_reason == ExitReason.MAX_TIMESTEPS


def test_no_server_is_unavailable_after_the_retries() -> None:
    with Client("127.0.0.1:1", retries=2, retry_backoff_s=0.01) as nowhere:
        with pytest.raises(SpikeserveError) as error:
            nowhere.list_models(timeout=10)
        assert (error.value.code, error.value.grpc_status) == ("unavailable", "UNAVAILABLE")
        with pytest.raises(SpikeserveError) as session_error:
            nowhere.session("digits", connect_timeout_s=0.2)
        assert session_error.value.code == "unavailable"


def test_addresses_are_checked() -> None:
    with pytest.raises(ValueError, match="scheme"):
        Client("ftp://localhost:8001")
    with pytest.raises(ValueError, match="token"):
        Client("localhost:8001", token="two words")
    with pytest.raises(ValueError, match="retries"):
        Client("localhost:8001", retries=-1)


def test_the_async_client_answers_as_the_sync_one(server: Server, client: Client) -> None:
    reference = offline_reference("digits")

    async def run() -> None:
        async with AsyncClient(f"http://{server.grpc_addr}") as aclient:
            assert [m.name for m in await aclient.list_models()] == [m.name for m in client.list_models()]
            assert (await aclient.model("digits")).timesteps == 8
            answers = await asyncio.gather(*(aclient.infer("digits", image(i)) for i in DIGITS_SAMPLES))
            assert [a.timesteps for a in answers] == [reference.exits[i] for i in DIGITS_SAMPLES]
            assert [a.class_index for a in answers] == [reference.predictions[i] for i in DIGITS_SAMPLES]
            items = [item async for item in aclient.stream("digits", image(106))]
            assert [p.timestep for p in items[:-1]] == list(range(1, reference.exits[106] + 1))
            assert isinstance(items[-1], Result) and items[-1].timesteps == reference.exits[106]

            whole = await aclient.infer("event-digits", events=events(2), threshold=1.0)
            session = await aclient.session("event-digits", threshold=1.0)
            for chunk in np.array_split(events(2), 4):
                await session.send_events(chunk)
            await session.close_input()
            final = await session.final()
            assert (final.timesteps, final.class_index) == (whole.timesteps, whole.class_index)
            assert final.probabilities == pytest.approx(whole.probabilities, abs=1e-6)

            with pytest.raises(SpikeserveError) as error:
                await aclient.infer("no-such-model", image(0))
            assert error.value.code == "model_not_found"

            stream = aclient.stream("mnist-events", events=np.asarray(heldout("mnist-events")["events"][0]))
            assert isinstance(await anext(stream), Partial)
            await stream.close()
            assert [item async for item in stream] == []

            cancelled = await aclient.session("event-digits", threshold=1.0)
            rows = events(3)
            await cancelled.send_events(rows[rows[:, 2] < 45_000])
            assert isinstance(await anext(cancelled), Partial)
            await cancelled.cancel()
            assert [item async for item in cancelled] == [] and cancelled.result is None

    asyncio.run(run())
