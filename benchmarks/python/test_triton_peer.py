"""The Triton peers answer as spikeserve does: the same step graph, the same cutoff, the same requests.

Held-out ``digits`` samples (at the model's default threshold and at 0.99), ``event-digits`` samples and
``mnist-events`` samples (a 3-member ensemble) go, as identical KServe v2 requests, to spikeserve's
``/v2`` door and to both Triton peers (``benchmarks/triton-peer``: the dynamic batcher, and iterative
sequences), eight at a time so that Triton batches them. Every answer must name the same class at the
same exit timestep as spikeserve's, and for the single models as the offline evaluation's
(``eval.json``). Runs only where the peer is installed (``make triton-peer``).
"""

from __future__ import annotations

import itertools
import json
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1]
REPO = BENCHMARKS.parent
for path in (BENCHMARKS, BENCHMARKS / "triton-peer"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import peer  # noqa: E402
import spikeserve_process  # noqa: E402

DIGITS_SAMPLES = 36
EVENT_SAMPLES = 8

pytestmark = pytest.mark.skipif(
    not peer.installed(), reason="the Triton peer is not installed (.venv-triton); run `make triton-peer`"
)

Body = dict[str, object]
Answer = tuple[int, int, str, float]  # class, timesteps, exit reason, confidence


def _flat(value: object) -> list[float]:
    if isinstance(value, list):
        return list(itertools.chain.from_iterable(_flat(v) for v in value))
    return [float(value)]  # type: ignore[arg-type]


def requests_for(model: str, threshold: float | None, count: int, sequence: bool) -> list[Body]:
    """KServe v2 bodies for the first ``count`` held-out samples, as ``spikeserve-tools bench`` sends them."""
    heldout = json.loads((REPO / "models" / model / "heldout.json").read_text())
    bodies: list[Body] = []
    for i in range(count):
        if "events" in heldout:
            events = heldout["events"][i]
            tensor: Body = {"name": "events", "datatype": "INT64", "shape": [1, len(events), 4]}
            tensor["data"] = [v for event in events for v in event]
        else:
            x = heldout["inputs"][i]
            tensor = {"name": "x", "datatype": "FP32", "shape": [1, *heldout["input_shape"]], "data": _flat(x)}
        parameters: Body = {} if threshold is None else {"threshold": threshold}
        if sequence:
            parameters |= {"sequence_id": 1000 + i, "sequence_start": True}
        bodies.append({"inputs": [tensor], "parameters": parameters})
    return bodies


def infer(http: str, model: str, body: Body) -> Answer:
    request = urllib.request.Request(
        f"{http}/v2/models/{model}/infer", data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as error:
        raise AssertionError(f"{http}: {error.code} {error.read().decode()}") from error
    outputs = {o["name"]: o["data"][0] for o in answer["outputs"]}
    return (
        int(outputs["class_index"]),
        int(outputs["timesteps"]),
        str(outputs["exit_reason"]),
        float(outputs["confidence"]),
    )


def answers(http: str, model: str, bodies: list[Body]) -> list[Answer]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda body: infer(http, model, body), bodies))


CASES = (
    ("digits", None, DIGITS_SAMPLES),
    ("digits", 0.99, DIGITS_SAMPLES),
    ("event-digits", None, EVENT_SAMPLES),
    # A 3-member ensemble: the peer steps the members in lockstep and averages their probabilities.
    ("mnist-events", None, EVENT_SAMPLES),
)
MODELS = sorted({model for model, _, _ in CASES})
# The models whose held-out file is the start of the set their eval.json reports on.
OFFLINE_PREFIX = {"digits", "event-digits"}


@pytest.fixture(scope="module")
def spikeserve_answers() -> Iterator[dict[tuple[str, float | None], list[Answer]]]:
    binary = spikeserve_process.release_binary()
    if not binary.exists():
        pytest.skip(f"{binary} is missing; build it with `cargo build --release --locked --workspace`")
    with spikeserve_process.started(binary, REPO / "models") as server:
        yield {
            (model, threshold): answers(f"http://{server.http_addr}", model, requests_for(model, threshold, n, False))
            for model, threshold, n in CASES
        }


@pytest.mark.parametrize("kind", peer.PEERS)
def test_both_triton_peers_exit_where_spikeserve_and_the_offline_evaluation_exit(
    kind: str, spikeserve_answers: dict[tuple[str, float | None], list[Answer]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repository = peer.write_repository(Path(tmp), MODELS, kind, peer.Batcher(8, 500))
        with peer.started(repository) as triton:
            for model, threshold, count in CASES:
                bodies = requests_for(model, threshold, count, sequence=kind == "iterative")
                got = answers(triton.http, model, bodies)
                expected = spikeserve_answers[(model, threshold)]
                assert len(got) == len(expected) == count
                for i, (mine, theirs) in enumerate(zip(got, expected, strict=True)):
                    # Same graph, same float64 cutoff: the same class at the same timestep, exactly.
                    assert mine[:3] == theirs[:3], (
                        f"{kind} {model} threshold {threshold} sample {i}: {mine} vs {theirs}"
                    )
                    assert mine[3] == pytest.approx(theirs[3], abs=1e-5), f"{kind} {model} sample {i}"
                if threshold is None and model in OFFLINE_PREFIX:
                    offline = json.loads((REPO / "models" / model / "eval.json").read_text())
                    at_default = offline["anytime_at_default_threshold"]
                    assert [a[1] for a in got] == at_default["exit_timesteps"][:count], f"{kind} {model}"
                    assert [a[0] for a in got] == at_default["predictions"][:count], f"{kind} {model}"


def test_a_peer_that_is_not_installed_says_so_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(peer.PeerError) as raised:
        peer.check_installed(tmp_path / "no-venv")
    assert "make triton-peer" in str(raised.value)
    assert "\n" not in str(raised.value)
