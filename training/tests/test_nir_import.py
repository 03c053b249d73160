"""NIR graphs from snnTorch, Sinabs, Norse and SpikingJelly, imported and served by the real server, against the
frameworks' own forward passes: every timestep's class identical on every sample, logits within
LOGIT_TOLERANCE, synaptic operations (spikes times fan-out) equal.

Each framework builds its networks with its own layers and exports them with its own exporter
(snnTorch's and Norse's conv paths through the documented workarounds, whose need is shown below);
one server serves every imported model; the per-timestep answers come from its SSE stream.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from conftest import PROJECT_ROOT
from nir_cases import SAMPLES, Case, norse_cases, sinabs_cases, snntorch_cases, spikingjelly_cases

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
from spikeserve_process import Server, started

#: Running-mean logits, server against framework (both centred over the classes): float32 stepping in
#: ONNX Runtime against PyTorch, a few ulps of the readout's scale.
LOGIT_TOLERANCE = 1e-4


def _import(case: Case, models: Path) -> Path:
    out = models / case.name
    command = [sys.executable, "-m", "spiketrain.nirimport", str(case.nir), str(out), "--from", case.producer]
    command += ["--timesteps", str(case.inputs.shape[0]), *case.flags]
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=PROJECT_ROOT / "training")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("nir")
    return [*snntorch_cases(root), *sinabs_cases(root), *norse_cases(root), *spikingjelly_cases(root)]


@pytest.fixture(scope="module")
def served(
    cases: list[Case], spikeserve_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path]]:
    models = tmp_path_factory.mktemp("imported")
    for case in cases:
        _import(case, models)
    with started(spikeserve_bin, models) as server:
        yield server, models


def _stream(client: httpx.Client, server: Server, model: str, frames: np.ndarray) -> tuple[list[dict], dict]:
    """Every ``partial`` event of one request run for all its timesteps, and the ``final`` answer."""
    body = {"input": frames.tolist(), "threshold": 1.0}
    partials, final = [], None
    url = f"http://{server.http_addr}/v1/models/{model}/infer"
    with client.stream("POST", url, json=body, headers={"Accept": "text/event-stream"}) as response:
        assert response.status_code == 200, response.read()
        event = None
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = json.loads(line.split(":", 1)[1])
                if event == "partial":
                    partials.append(data)
                elif event == "final":
                    final = data
                else:
                    raise AssertionError(f"unexpected event {event}: {data}")
    assert final is not None
    return partials, final


def _module(node: str) -> str:
    """The framework module a NIR node came from: "1.lif" (a recurrent subgraph) is module "1", and
    SpikingJelly's exporter names module 1 "_1"."""
    return node.split(".")[0].removeprefix("_")


def _centred(values: np.ndarray) -> np.ndarray:
    return values - values.mean(axis=-1, keepdims=True)


@pytest.mark.parametrize(
    "name",
    [
        "snntorch-conv",
        "snntorch-mlp",
        "snntorch-recurrent",
        "snntorch-rsynaptic",
        "sinabs-conv",
        "sinabs-mlp",
        "norse-mlp",
        "norse-cuba",
        "norse-conv",
        "spikingjelly-conv",
        "spikingjelly-mlp",
    ],
)
def test_the_served_import_steps_as_the_framework_does(name, cases, served):
    server, models = served
    case = next(c for c in cases if c.name == name)
    source = json.loads((models / name / "source.json").read_text())
    steps = case.inputs.shape[0]
    running = np.cumsum(case.logits.astype(np.float64), axis=0) / np.arange(1, steps + 1)[:, None, None]
    worst, spiked = 0.0, 0.0
    with httpx.Client(timeout=30) as client:
        for n in range(SAMPLES):
            partials, final = _stream(client, server, name, case.inputs[:, n])
            assert [p["timestep"] for p in partials] == list(range(1, steps + 1))
            classes = [p["class_index"] for p in partials]
            assert classes == running[:, n].argmax(axis=1).tolist(), f"sample {n}: classes per timestep differ"
            # The server's probabilities are softmax(running mean): their logs, centred, are the mean itself.
            served_mean = _centred(np.log(np.array([p["probabilities"] for p in partials])))
            diff = np.abs(served_mean - _centred(running[:, n])).max()
            worst = max(worst, float(diff))
            assert diff <= LOGIT_TOLERANCE, f"sample {n}: running-mean logits differ by {diff}"
            # Spikes counted the same: the framework's spikes per layer times the synapses each drives.
            expected = sum(
                case.spikes[_module(node)][n] * per_spike for node, per_spike in source["synaptic_fanout"].items()
            )
            assert final["synaptic_ops"] == pytest.approx(expected, abs=0.5), f"sample {n}: synaptic operations"
            spiked += expected
            assert final["timesteps"] == steps
    assert spiked > 0, "the network's hidden layers spike (else the comparison of counts is empty)"
    print(f"{name}: worst running-mean logit difference {worst:.2e}, synaptic operations {spiked:.0f}")


def test_snntorch_export_to_nir_is_broken_at_the_pinned_versions_and_the_workaround_is_not(tmp_path):
    """snnTorch 1.0.0's own exporter fails in NIR's type inference on a convolution and on an MLP; the
    documented workaround (``workarounds.snntorch_to_nir`` + ``write_nir``) exports both."""
    import snntorch as snn
    from snntorch.export_nir import export_to_nir

    from spiketrain.nirimport import reader
    from spiketrain.nirimport.workarounds import snntorch_to_nir, write_nir

    conv = torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3, padding=1), snn.Leaky(beta=0.9, init_hidden=True))
    mlp = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(64, 32),
        snn.Leaky(beta=0.9, init_hidden=True),
        torch.nn.Linear(32, 10),
        snn.Leaky(beta=0.9, init_hidden=True),
    )
    with pytest.raises(IndexError):
        export_to_nir(conv, torch.zeros(1, 2, 34, 34))
    with pytest.raises(ValueError, match="type mismatch"):
        export_to_nir(mlp, torch.zeros(1, 1, 8, 8))
    for i, (net, sample) in enumerate([(conv, torch.zeros(1, 2, 34, 34)), (mlp, torch.zeros(1, 1, 8, 8))]):
        write_nir(tmp_path / f"{i}.nir", snntorch_to_nir(net, sample))
        graph = reader.read(tmp_path / f"{i}.nir")
        assert {n.kind for n in graph.nodes.values()} >= {"Input", "LIF", "Output"}


def test_norse_to_nir_drops_flatten_and_the_workaround_keeps_it():
    import norse.torch as norse
    from norse.torch.utils.export_nir import to_nir

    from spiketrain.nirimport.workarounds import norse_to_nir

    net = norse.SequentialState(
        torch.nn.Conv2d(2, 4, 3), norse.LIFBoxCell(), torch.nn.Flatten(), torch.nn.Linear(4 * 32 * 32, 10)
    )
    assert to_nir(net, torch.zeros(1, 2, 34, 34)).nodes["2"] is None
    assert type(norse_to_nir(net, torch.zeros(1, 2, 34, 34)).nodes["2"]).__name__ == "Flatten"


@pytest.mark.parametrize(
    ("options", "flags"),
    [
        ({"reset_mechanism": "zero"}, ["--reset", "zero"]),
        ({"reset_delay": False}, ["--reset-timing", "both"]),
        ({"reset_mechanism": "zero", "reset_delay": False}, ["--reset", "zero", "--reset-timing", "both"]),
    ],
    ids=["zero", "no-delay", "zero-no-delay"],
)
def test_snntorch_resets_the_file_does_not_record_are_flags(options, flags, tmp_path):
    """snnTorch writes v_reset = 0 whatever the layer does; the flags docs/import.md names restore the
    layer's reset (stepped in ONNX Runtime here: the served path is the same graph, checked above)."""
    import snntorch as snn
    from nir_cases import T, _snntorch_run, event_frames

    from spiketrain.export import onnx_logits_and_synaptic_ops, open_session
    from spiketrain.nirimport.workarounds import snntorch_to_nir, write_nir

    torch.manual_seed(5)
    net = torch.nn.Sequential(
        torch.nn.Linear(40, 32),
        snn.Leaky(beta=0.9, init_hidden=True, **options),
        torch.nn.Linear(32, 6),
        snn.Leaky(beta=0.8, init_hidden=True, output=True, **options),
    )
    with torch.no_grad():
        net[0].weight.mul_(4.0)
        net[2].weight.mul_(3.0)
    inputs = event_frames(8, (40,), rate=0.4)
    write_nir(tmp_path / "g.nir", snntorch_to_nir(net, torch.zeros(1, 40)))
    expected, spikes = _snntorch_run(net, inputs, "membrane")
    case = Case("variant", "snntorch", tmp_path / "g.nir", inputs, expected, spikes, ["--readout", "membrane", *flags])
    out = _import(case, tmp_path)
    logits, ops = onnx_logits_and_synaptic_ops(open_session(out / "model.onnx"), inputs, batch_size=SAMPLES)
    assert spikes["1"].sum() > 0, "the hidden layer spikes"
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    assert ops is not None and np.array_equal(ops.sum(axis=0), spikes["1"] * 6)
    assert logits.shape[0] == T


def test_the_exported_files_read_back_with_nir_itself(cases):
    """The workaround's files are ordinary NIR: ``nir.read`` takes them (without its type check, which
    is what breaks at the pinned versions)."""
    import nir

    for case in cases:
        graph = nir.read(case.nir, type_check=False)
        kinds = {type(node).__name__ for node in graph.nodes.values()}
        assert {"Input", "Output"} <= kinds, case.name
