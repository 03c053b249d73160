"""The Python benchmark peers answer like the offline evaluation (``spiketrain.anytime``).

``peer_server.py`` runs as a real subprocess on a loopback port and is asked over real HTTP;
``floor.py`` runs as a subprocess too. The expected answers come from the training job's own code:
its held-out split, its ONNX stepping loop (``spiketrain.export.onnx_logits``, batch 1) and its
anytime rule, which ``models/<name>/eval.json`` was computed with.

    cd /work/main && PYTHONPATH=training .venv/bin/python -m pytest benchmarks/python -q
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from spiketrain import anytime, data, event_digits, events, export

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DIGITS = REPO / "models" / "digits"
EVENT_DIGITS = REPO / "models" / "event-digits"
DIGIT_SAMPLES = 12
EVENT_SAMPLES = 3
START_TIMEOUT_S = 30.0
#: eval.json was written on the training machine; on another CPU ONNX Runtime's SIMD paths may decide a
#: confidence this close to the threshold the other way (the Rust tests' CROSS_CPU_CONFIDENCE_TOLERANCE).
CROSS_CPU_TOLERANCE = 1e-4

# Loopback only: never through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def request(
    url: str, body: object | bytes | None = None, content_type: str = "application/json"
) -> tuple[int, dict[str, object]]:
    """GET (no body) or POST; returns the status and the JSON answer, errors included."""
    data_bytes = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data_bytes, headers={"Content-Type": content_type})
    try:
        with _OPENER.open(req, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


@contextmanager
def serving(model: Path) -> Iterator[str]:
    """Starts ``peer_server.py`` on a free loopback port; yields its base URL; always stops it."""
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "peer_server.py"), "--model", str(model), "--port", "0", "--threads", "1"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + START_TIMEOUT_S
            line = ""
            while not line and time.monotonic() < deadline and proc.poll() is None:
                ready, _, _ = select.select([proc.stdout], [], [], 0.2)
                if ready:
                    line = proc.stdout.readline()
            if not line:
                stderr.seek(0)
                pytest.fail(f"peer_server.py did not start: {stderr.read().decode(errors='replace')[-2000:]}")
            yield f"http://{json.loads(line)['listening']}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


@dataclass(frozen=True)
class Offline:
    """Held-out samples and the logits the training job's own loop gets for them."""

    frames: np.ndarray  # [T, N, *frame]
    targets: np.ndarray
    logits: np.ndarray  # [T, N, C]
    labels: list[str]


def offline(model: Path, inputs: np.ndarray, targets: np.ndarray, input_kind: str) -> Offline:
    session = export.open_session(model / "model.onnx")
    meta = session.get_modelmeta().custom_metadata_map
    timesteps = int(meta["spikeserve.timesteps"])
    frames = data.to_frames(inputs, timesteps, input_kind)
    logits = export.onnx_logits(session, frames, batch_size=1)
    return Offline(frames, targets, logits, json.loads(meta["spikeserve.labels"]))


def expected(
    off: Offline, threshold: float, min_timesteps: int = 1, max_timesteps: int | None = None
) -> list[tuple[str, int, str]]:
    """(label, exit timestep, exit reason) per sample under the contract's rule."""
    most = off.logits.shape[0] if max_timesteps is None else max_timesteps
    if min_timesteps == 1:
        # The offline evaluation itself, as eval.json was made.
        result = anytime.anytime(off.logits[:most], off.targets, threshold)
        exits, predictions = result.exit_timesteps.tolist(), result.predictions.tolist()
    else:
        # The same rule, with confident exits before min_timesteps masked out.
        confident = anytime.running_probabilities(off.logits[:most]).max(axis=2) >= threshold
        confident[: min_timesteps - 1] = False
        confident &= threshold < 1.0
        exits = [int(np.argmax(c)) + 1 if c.any() else most for c in confident.T]
        running = anytime.running_probabilities(off.logits[:most])
        predictions = [int(running[t - 1, i].argmax()) for i, t in enumerate(exits)]
    probabilities = anytime.running_probabilities(off.logits)
    out = []
    for i, (t, p) in enumerate(zip(exits, predictions, strict=True)):
        confident_exit = threshold < 1.0 and t >= min_timesteps and probabilities[t - 1, i].max() >= threshold
        out.append((off.labels[p], t, "confident" if confident_exit else "max_timesteps"))
    return out


@pytest.fixture(scope="module")
def digits_offline() -> Offline:
    held_out = data.load_digits_dataset(DIGIT_SAMPLES).held_out
    return offline(DIGITS, np.asarray(held_out.inputs), np.asarray(held_out.targets), "static")


def default_threshold(model: Path) -> float:
    """The model's default threshold (its calibrated 0.5 pt one), which a request without one runs."""
    return float(json.loads((model / "eval.json").read_text())["default_threshold"])


@pytest.fixture(scope="module")
def digits_url() -> Iterator[str]:
    with serving(DIGITS) as url:
        yield url


def test_the_offline_reference_is_the_model_cards(digits_offline: Offline) -> None:
    card = json.loads((DIGITS / "eval.json").read_text())["anytime_at_default_threshold"]
    default = default_threshold(DIGITS)
    exits = [t for _, t, _ in expected(digits_offline, default)]
    confidences = anytime.running_probabilities(digits_offline.logits).max(axis=2)  # [T, N]
    for i, (mine, stored) in enumerate(zip(exits, card["exit_timesteps"][:DIGIT_SAMPLES], strict=True)):
        # eval.json comes from the training machine; ONNX Runtime on another CPU may round differently.
        near = np.abs(confidences[: max(mine, stored), i] - default) < CROSS_CPU_TOLERANCE
        assert mine == stored or near.any(), f"sample {i}: exits at {mine} here, at {stored} in eval.json"
    heldout = json.loads((DIGITS / "heldout.json").read_text())
    assert np.array_equal(np.asarray(heldout["inputs"][:DIGIT_SAMPLES]), digits_offline.frames[0])


def test_health_and_model_description(digits_url: str) -> None:
    assert request(f"{digits_url}/health") == (200, {"status": "ok", "models": ["digits"], "refused": 0})
    status, info = request(f"{digits_url}/v1/models/digits")
    assert status == 200
    assert (info["timesteps"], info["input_kind"], info["frame_shape"]) == (8, "static", [1, 8, 8])


@pytest.mark.parametrize("threshold", [None, 0.5, 0.99, 1.0])
def test_digits_answers_equal_the_offline_evaluation(
    digits_url: str, digits_offline: Offline, threshold: float | None
) -> None:
    want = expected(digits_offline, default_threshold(DIGITS) if threshold is None else threshold)
    running = anytime.running_probabilities(digits_offline.logits)
    for i, (label, timesteps, reason) in enumerate(want):
        body: dict[str, object] = {"input": digits_offline.frames[0, i].tolist()}
        if threshold is not None:
            body["threshold"] = threshold
        status, answer = request(f"{digits_url}/v1/models/digits/infer", body)
        assert status == 200, answer
        assert (answer["label"], answer["timesteps"], answer["exit_reason"]) == (label, timesteps, reason), i
        assert answer["class_index"] == int(label)
        assert answer["max_timesteps"] == 8
        np.testing.assert_allclose(answer["probabilities"], running[timesteps - 1, i], rtol=1e-12, atol=0)
        assert answer["confidence"] == max(answer["probabilities"])


@pytest.mark.parametrize(("threshold", "least", "most"), [(0.5, 2, 3), (0.99, 1, 2), (0.9, 3, 3)])
def test_min_and_max_timesteps(
    digits_url: str, digits_offline: Offline, threshold: float, least: int, most: int
) -> None:
    want = expected(digits_offline, threshold, least, most)
    for i, (label, timesteps, reason) in enumerate(want):
        body = {
            "input": digits_offline.frames[0, i].tolist(),
            "threshold": threshold,
            "min_timesteps": least,
            "max_timesteps": most,
            "return_confidences": True,
        }
        status, answer = request(f"{digits_url}/v1/models/digits/infer", body)
        assert status == 200, answer
        assert (answer["label"], answer["timesteps"], answer["exit_reason"]) == (label, timesteps, reason), i
        assert answer["max_timesteps"] == most
        assert isinstance(answer["confidences"], list)
        assert len(answer["confidences"]) == timesteps


def test_a_flat_input_with_its_shape(digits_url: str, digits_offline: Offline) -> None:
    (label, timesteps, reason), *_ = expected(digits_offline, default_threshold(DIGITS))
    body = {"input": digits_offline.frames[0, 0].ravel().tolist(), "shape": [1, 8, 8]}
    status, answer = request(f"{digits_url}/v1/models/digits/infer", body)
    assert status == 200, answer
    assert (answer["label"], answer["timesteps"], answer["exit_reason"]) == (label, timesteps, reason)


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("digits", b'{"input": [[[1, 2]]', 400, "malformed_json"),
        ("digits", b"not json at all", 400, "malformed_json"),
        ("digits", {"inputs": [[[0] * 8] * 8]}, 400, "invalid_field"),
        ("digits", {}, 400, "invalid_field"),
        ("digits", {"input": [[[0] * 8] * 8], "threshold": 1.5}, 400, "invalid_field"),
        ("digits", {"input": [[[0] * 8] * 8], "threshold": 0}, 400, "invalid_field"),
        ("digits", {"input": [[[0] * 8] * 8], "max_timesteps": 9}, 400, "invalid_field"),
        ("digits", {"input": [[[0] * 8] * 8], "min_timesteps": 4, "max_timesteps": 3}, 400, "invalid_field"),
        ("digits", {"input": [[[0] * 8] * 8], "latency_budget_ms": -1}, 400, "invalid_field"),
        ("digits", {"input": [[[0] * 8] * 7]}, 400, "invalid_input"),
        ("digits", {"input": [[[0] * 8] * 7 + [[0] * 7]]}, 400, "invalid_input"),
        ("digits", {"input": [[["x"] * 8] * 8]}, 400, "invalid_input"),
        ("digits", {"input": [[[1e39] * 8] * 8]}, 400, "invalid_input"),
        ("digits", {"events": [[0, 0, 0, 0]]}, 400, "invalid_field"),
        ("nope", {"input": [[[0] * 8] * 8]}, 404, "model_not_found"),
    ],
)
def test_bad_requests_get_a_4xx_with_an_error_body(
    digits_url: str, path: str, body: object, status: int, code: str
) -> None:
    got, answer = request(f"{digits_url}/v1/models/{path}/infer", body)
    assert got == status, answer
    error = answer["error"]
    assert isinstance(error, dict)
    assert error["code"] == code
    assert error["message"]


def test_the_floor_exits_like_the_offline_evaluation(digits_offline: Offline, tmp_path: Path) -> None:
    out = tmp_path / "floor.json"
    command = [sys.executable, str(HERE / "floor.py"), "--model", str(DIGITS), "--threshold", "0.9"]
    command += ["--limit", str(DIGIT_SAMPLES), "--warmup", "1", "--json", str(out)]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=120)
    result = json.loads(out.read_text())
    want = expected(digits_offline, 0.9)
    assert result["exit_timesteps"] == [t for _, t, _ in want]
    assert [str(p) for p in result["predictions"]] == [label for label, _, _ in want]
    assert result["samples"] == DIGIT_SAMPLES
    assert result["throughput_per_s"] > 0
    assert 0 < result["latency_ms"]["median"] <= result["latency_ms"]["p99"]


def test_event_digits_raw_events_and_binned_frames(tmp_path: Path) -> None:
    *_, images, targets, indices = data._digit_split(EVENT_SAMPLES)
    meta = json.loads((EVENT_DIGITS / "eval.json").read_text())
    binning = event_digits.binning(int(meta["timesteps"]))
    heldout = json.loads((EVENT_DIGITS / "heldout.json").read_text())
    # heldout.json's events are what both sides read; regenerating them on this CPU must give them back
    # within the simulator's stated tolerance (never bit for bit: the file may come from another CPU).
    raw = [np.asarray(e, dtype=np.int64).reshape(-1, 4) for e in heldout["events"][:EVENT_SAMPLES]]
    for i, (image, index) in enumerate(zip(images, indices, strict=True)):
        regenerated = event_digits.simulate(image[0], int(index))
        assert event_digits.regeneration_differences(raw[i], regenerated, binning.bins) == [], f"sample {i}"
    assert heldout["targets"][:EVENT_SAMPLES] == targets.tolist()
    frames = np.stack([events.bin_events(e, binning) for e in raw])  # [N, T, 2, 34, 34]
    off = offline(EVENT_DIGITS, frames, targets, "events")
    want = expected(off, default_threshold(EVENT_DIGITS))
    with serving(EVENT_DIGITS) as url:
        for i, (label, timesteps, reason) in enumerate(want):
            for body in ({"events": heldout["events"][i]}, {"input": frames[i].tolist()}):
                status, answer = request(f"{url}/v1/models/event-digits/infer", body)
                assert status == 200, answer
                assert (answer["label"], answer["timesteps"], answer["exit_reason"]) == (label, timesteps, reason)
        # Fewer frames than T cap the timesteps, as in the Rust server.
        two_frames = {"input": frames[0, :2].tolist(), "threshold": 1.0}
        status, answer = request(f"{url}/v1/models/event-digits/infer", two_frames)
        assert status == 200, answer
        assert (answer["timesteps"], answer["max_timesteps"], answer["exit_reason"]) == (2, 2, "max_timesteps")
        late = [[0, 0, 5, 0], [0, 0, 4, 1]]
        status, answer = request(f"{url}/v1/models/event-digits/infer", {"events": late})
        assert status == 400
        assert answer["error"] == {"code": "invalid_events", "message": "events[1]: t is before the previous event's"}


def test_the_peer_bins_events_as_the_shared_vectors_say() -> None:
    """The peers' own binning (steploop, copied into the Triton backend) follows the contract's rule in both
    modes, equal-time and equal-event-count bins: every binned case of tests/vectors/event_binning.json."""
    from types import SimpleNamespace

    import steploop

    cases = json.loads((REPO / "tests" / "vectors" / "event_binning.json").read_text())["cases"]
    binned = [case for case in cases if "error" not in case]
    assert {case["binning"].get("mode", "time") for case in binned} == {"time", "count"}
    for case in binned:
        spec = SimpleNamespace(events=steploop.EventBinning(**case["binning"]), name="m", input_kind="events")
        frames = steploop.StepModel.bin_events(SimpleNamespace(spec=spec), case["events"])
        expected = events.bin_events(np.asarray(case["events"]), events.EventBinning(**case["binning"]))
        assert np.array_equal(frames, expected), case["name"]
