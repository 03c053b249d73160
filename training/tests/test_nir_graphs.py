"""Graphs written with ``nir``'s own API: the nodes no framework exports (Conv1d, 'same' padding, groups,
dilation, AvgPool2d, Scale, Threshold, I, IF, CubaLI, CubaLIF, nested subgraphs, scalar parameters) against
a PyTorch transcription of the documented discretisation; and every refusal of bad input: one line
naming the node, the field or the edge, exit status 2, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import PROJECT_ROOT

from spiketrain.export import onnx_logits_and_synaptic_ops, open_session
from spiketrain.nirimport.workarounds import write_nir

DT = 1e-3
STEPS = 5


def run_import(nir_file: Path, out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "spiketrain.nirimport", str(nir_file), str(out), "--from", "nir"]
    command += ["--timesteps", str(STEPS), *flags]
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=PROJECT_ROOT / "training")


def _lif_step(v, current, tau, r, v_leak, threshold=None, v_reset=0.0):
    """The "nir" preset: Euler, a spike where v > threshold, reset to v_reset right after it."""
    v = (1 - DT / tau) * v + (DT / tau) * (v_leak + r * current)
    if threshold is None:
        return v, v
    spikes = (v > threshold).float()
    return spikes, v + spikes * (v_reset - v)


def conv1d_graph() -> tuple[nir.NIRGraph, object]:
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 1.5, (4, 1, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.5, (6, 80)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 4).astype(np.float32)
    nodes = {
        "input": nir.Input(np.array([1, 20])),
        "conv": nir.Conv1d(input_shape=20, weight=w1, stride=1, padding="same", dilation=2, groups=1, bias=b1),
        "if": nir.IF(r=np.array(500.0), v_threshold=np.array(1.0)),
        "flat": nir.Flatten(input_type={"input": np.array([4, 20])}, start_dim=0, end_dim=-1),
        "fc": nir.Linear(weight=w2),
        "cuba": nir.CubaLI(
            tau_syn=np.array(5e-3), tau_mem=np.array(1e-2), r=np.array(1.0), v_leak=np.array(0.0), w_in=np.array(2.0)
        ),
        "output": nir.Output(np.array([6])),
    }
    edges = [("input", "conv"), ("conv", "if"), ("if", "flat"), ("flat", "fc"), ("fc", "cuba"), ("cuba", "output")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)

    def reference(frames: torch.Tensor) -> torch.Tensor:
        out = []
        v_if = torch.zeros(frames.shape[1], 4, 20)
        syn = torch.zeros(frames.shape[1], 6)
        v = torch.zeros(frames.shape[1], 6)
        for x in frames:
            c = F.conv1d(x, torch.from_numpy(w1), torch.from_numpy(b1), padding=2, dilation=2)
            v_if = v_if + DT * 500.0 * c
            s = (v_if > 1.0).float()
            v_if = v_if * (1 - s)
            i = torch.from_numpy(w2) @ s.flatten(1).T
            syn = (1 - DT / 5e-3) * syn + (DT / 5e-3) * 2.0 * i.T
            v = (1 - DT / 1e-2) * v + (DT / 1e-2) * syn
            out.append(v)
        return torch.stack(out)

    return graph, reference


def conv2d_graph() -> tuple[nir.NIRGraph, object]:
    """Grouped, strided, dilated convolution; Scale; Threshold; AvgPool2d; and a nested subgraph holding
    a CubaLIF and an I neuron behind an Affine."""
    rng = np.random.default_rng(1)
    w1 = rng.normal(0, 1.0, (4, 1, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.6, (8, 16)).astype(np.float32)
    b2 = rng.normal(0, 0.1, 8).astype(np.float32)
    inner = nir.NIRGraph(
        nodes={
            "in": nir.Input(np.array([8])),
            "lif": nir.CubaLIF(
                tau_syn=np.array(2e-3),
                tau_mem=np.array(4e-3),
                r=np.array(2.0),
                v_leak=np.array(0.1),
                v_threshold=np.array(0.3),
                v_reset=np.array(-0.1),
                w_in=np.array(1.0),
            ),
            "out": nir.Output(np.array([8])),
        },
        edges=[("in", "lif"), ("lif", "out")],
        type_check=False,
    )
    nodes = {
        "input": nir.Input(np.array([2, 9, 9])),
        "conv": nir.Conv2d(
            input_shape=(9, 9), weight=w1, stride=(2, 2), padding=(1, 2), dilation=(1, 2), groups=2, bias=np.zeros(4)
        ),
        "scale": nir.Scale(scale=np.array([1.0, 2.0, 0.5, 1.5])),
        "thr": nir.Threshold(threshold=np.array(0.2)),
        "pool": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([4, 2, 2])}, start_dim=0, end_dim=-1),
        "fc": nir.Affine(weight=w2, bias=b2),
        "block": inner,
        "integrator": nir.I(r=np.array(100.0)),
        "output": nir.Output(np.array([8])),
    }
    edges = [
        ("input", "conv"),
        ("conv", "scale"),
        ("scale", "thr"),
        ("thr", "pool"),
        ("pool", "flat"),
        ("flat", "fc"),
        ("fc", "block"),
        ("block", "integrator"),
        ("integrator", "output"),
    ]
    graph = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)

    def reference(frames: torch.Tensor) -> torch.Tensor:
        n = frames.shape[1]
        syn, v, acc, out = torch.zeros(n, 8), torch.zeros(n, 8), torch.zeros(n, 8), []
        for x in frames:
            c = F.conv2d(x, torch.from_numpy(w1), stride=2, padding=(1, 2), dilation=(1, 2), groups=2)
            c = c * torch.tensor([1.0, 2.0, 0.5, 1.5]).view(1, 4, 1, 1)
            s = (c > 0.2).float()
            p = F.avg_pool2d(s, 2)
            i = p.flatten(1) @ torch.from_numpy(w2).T + torch.from_numpy(b2)
            syn = (1 - DT / 2e-3) * syn + (DT / 2e-3) * i
            v = (1 - DT / 4e-3) * v + (DT / 4e-3) * (0.1 + 2.0 * syn)
            spikes = (v > 0.3).float()
            v = v + spikes * (-0.1 - v)
            acc = acc + DT * 100.0 * spikes
            out.append(acc)
        return torch.stack(out)

    return graph, reference


@pytest.mark.parametrize(("build", "frame"), [(conv1d_graph, (1, 20)), (conv2d_graph, (2, 9, 9))])
def test_nir_api_graphs_step_as_the_documented_equations(build, frame, tmp_path):
    torch.set_num_threads(1)
    graph, reference = build()
    write_nir(tmp_path / "g.nir", graph)
    result = run_import(tmp_path / "g.nir", tmp_path / "model")
    assert result.returncode == 0, result.stderr
    frames = np.random.default_rng(3).uniform(0, 2, (STEPS, 6, *frame)).astype(np.float32)
    logits, _ = onnx_logits_and_synaptic_ops(open_session(tmp_path / "model" / "model.onnx"), frames, batch_size=6)
    with torch.no_grad():
        expected = reference(torch.from_numpy(frames)).numpy()
    assert np.abs(expected).max() > 0.05, "the reference is not trivially zero"
    np.testing.assert_allclose(logits, expected, atol=2e-5, rtol=1e-4)


# -- refusals ------------------------------------------------------------------------------------------


def _mlp(**overrides: object) -> nir.NIRGraph:
    nodes = {
        "input": nir.Input(np.array([4])),
        "fc": nir.Affine(weight=np.ones((3, 4), dtype=np.float32), bias=np.zeros(3, dtype=np.float32)),
        "lif": nir.LIF(tau=np.array(1e-2), r=np.array(1.0), v_leak=np.array(0.0), v_threshold=np.array(1.0)),
        "output": nir.Output(np.array([3])),
    }
    nodes.update(overrides)  # type: ignore[arg-type]
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def _with_edges(graph: nir.NIRGraph, edges: list[tuple[str, str]]) -> nir.NIRGraph:
    return nir.NIRGraph(nodes=graph.nodes, edges=edges, type_check=False)


def _write(tmp_path: Path, graph: nir.NIRGraph) -> Path:
    path = tmp_path / "bad.nir"
    write_nir(path, graph)
    return path


def _truncated(tmp_path: Path) -> Path:
    good = _write(tmp_path, _mlp())
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    return good


def _not_hdf5(tmp_path: Path) -> Path:
    path = tmp_path / "bad.nir"
    path.write_bytes(b"this is not a NIR file\n" * 10)
    return path


def _version(tmp_path: Path) -> Path:
    import h5py

    path = _write(tmp_path, _mlp())
    with h5py.File(path, "r+") as handle:
        del handle["version"]
        handle.create_dataset("version", data="7.0.0", dtype=h5py.string_dtype())
    return path


REFUSALS = [
    ("truncated", _truncated, [], "not a readable NIR file"),
    ("not HDF5", _not_hdf5, [], "not a readable NIR file"),
    ("unknown version", _version, [], "NIR version '7.0.0' is not supported"),
    (
        "unsupported node",
        lambda p: _write(
            p,
            _with_edges(
                _mlp(delay=nir.Delay(delay=np.ones(3))),
                [("input", "fc"), ("fc", "delay"), ("delay", "lif"), ("lif", "output")],
            ),
        ),
        [],
        "node 'delay': unsupported NIR node type Delay",
    ),
    (
        "shape mismatch",
        lambda p: _write(p, _mlp(fc=nir.Affine(weight=np.ones((3, 5), dtype=np.float32), bias=np.zeros(3)))),
        [],
        "shape mismatch on edge 'input' -> 'fc'",
    ),
    (
        "NaN parameter",
        lambda p: _write(
            p,
            _mlp(
                lif=nir.LIF(
                    tau=np.array([1e-2, np.nan, 1e-2]), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3)
                )
            ),
        ),
        [],
        "node 'lif' (LIF): field 'tau' has 1 NaN or infinite value(s)",
    ),
    (
        "infinite weight",
        lambda p: _write(p, _mlp(fc=nir.Affine(weight=np.full((3, 4), np.inf, dtype=np.float32), bias=np.zeros(3)))),
        [],
        "node 'fc' (Affine): field 'weight' has 12 NaN or infinite value(s)",
    ),
    (
        "cycle with no state",
        lambda p: _write(
            p,
            _with_edges(
                _mlp(fc2=nir.Linear(weight=np.eye(3, dtype=np.float32))),
                [("input", "fc"), ("fc", "fc2"), ("fc2", "fc"), ("fc", "lif"), ("lif", "output")],
            ),
        ),
        [],
        "cycle with no state",
    ),
    (
        "missing readout",
        lambda p: _write(p, _mlp()),
        ["--readout-node", "nothere"],
        "--readout-node nothere: the graph has no node of that name",
    ),
    (
        "no membrane",
        lambda p: _write(p, _mlp()),
        ["--readout", "membrane", "--readout-node", "fc"],
        "node 'fc' (Affine) has no membrane",
    ),
]


@pytest.mark.parametrize(("make", "flags", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_bad_input_is_refused_in_one_line_and_nothing_is_written(make, flags, message, tmp_path):
    source = make(tmp_path)
    out = tmp_path / "models" / "imported"
    result = run_import(source, out, *flags)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0], lines[0]
    assert not out.exists()
    leftovers = list((tmp_path / "models").iterdir()) if (tmp_path / "models").exists() else []
    assert leftovers == [], f"half-written files left: {leftovers}"


def test_the_server_refuses_a_broken_imported_directory(tmp_path, spikeserve_bin):
    write_nir(tmp_path / "g.nir", _mlp())
    assert run_import(tmp_path / "g.nir", tmp_path / "model", "--readout", "membrane").returncode == 0
    model = tmp_path / "model" / "model.onnx"
    ok = subprocess.run([spikeserve_bin, "inspect", model], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    model.write_bytes(model.read_bytes()[:200])
    broken = subprocess.run([spikeserve_bin, "inspect", model], capture_output=True, text=True, check=False)
    assert broken.returncode != 0


def test_an_events_import_carries_its_binning_and_labels_and_the_server_accepts_it(tmp_path, spikeserve_bin):
    import json

    import onnx

    graph, _ = conv2d_graph()
    write_nir(tmp_path / "g.nir", graph)
    (tmp_path / "labels.txt").write_text("".join(f"class {i}\n" for i in range(8)))
    flags = ["--input", "events", "--window-us", "50000", "--labels", f"@{tmp_path / 'labels.txt'}"]
    result = run_import(tmp_path / "g.nir", tmp_path / "model", *flags)
    assert result.returncode == 0, result.stderr
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "model" / "model.onnx")).metadata_props}
    assert json.loads(meta["spikeserve.events"]) == {
        "width": 9,
        "height": 9,
        "polarities": 2,
        "window_us": 50000,
        "bins": STEPS,
    }
    assert json.loads(meta["spikeserve.labels"])[7] == "class 7"
    inspect = subprocess.run([spikeserve_bin, "inspect", tmp_path / "model"], capture_output=True, text=True)
    assert inspect.returncode == 0, inspect.stderr
    missing = run_import(tmp_path / "g.nir", tmp_path / "other", "--input", "events")
    assert missing.returncode == 2 and "--window-us" in missing.stderr


def test_an_affine_readout_gives_the_layer_output_as_logits(tmp_path):
    write_nir(
        tmp_path / "g.nir", _mlp(fc=nir.Affine(weight=np.arange(12, dtype=np.float32).reshape(3, 4), bias=np.ones(3)))
    )
    assert run_import(tmp_path / "g.nir", tmp_path / "model", "--readout-node", "fc").returncode == 0
    frames = np.random.default_rng(0).uniform(-1, 1, (STEPS, 4, 4)).astype(np.float32)
    logits, ops = onnx_logits_and_synaptic_ops(open_session(tmp_path / "model" / "model.onnx"), frames, batch_size=4)
    np.testing.assert_allclose(logits, frames @ np.arange(12, dtype=np.float32).reshape(3, 4).T + 1, rtol=1e-6)
    assert ops is not None and not ops.any()  # the LIF behind the readout drives no synapse
