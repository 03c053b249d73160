"""Training, export, evaluation and parity on a tiny configuration, and the server's view of the result."""

import json
import subprocess

import numpy as np
import onnx
import pytest

from spiketrain.data import load_dataset
from spiketrain.export import onnx_logits, open_session


def test_export_follows_the_step_model_contract(tiny_model):
    out, _ = tiny_model
    proto = onnx.load(str(out / "model.onnx"))
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    assert inputs == ["x", "state_in.0", "state_in.1", "state_in.2"]
    assert outputs == ["logits", "state_out.0", "state_out.1", "state_out.2", "synaptic_ops"]
    for value in list(proto.graph.input) + list(proto.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param, f"{value.name} has a dynamic batch"
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["spikeserve.contract_version"] == "1"
    assert meta["spikeserve.timesteps"] == "4"
    assert json.loads(meta["spikeserve.labels"]) == [str(i) for i in range(10)]
    assert meta["spikeserve.input_kind"] == "static"
    assert len(json.loads(meta["spikeserve.accuracy_per_timestep"])) == 4
    assert json.loads(meta["spikeserve.training"])["loss"] == "tet"


def test_parity_and_evaluation_are_reported(tiny_model):
    out, report = tiny_model
    parity = report["parity"]
    # One step function per neuron: a rounding difference may flip a spike on an odd sample, never many.
    assert parity["samples_diverged"] <= 2
    assert parity["prediction_agreement"] >= 0.97
    evaluation = json.loads((out / "eval.json").read_text())
    assert len(evaluation["accuracy_per_timestep"]) == 4
    at_default = evaluation["anytime_at_default_threshold"]
    assert len(at_default["exit_timesteps"]) == evaluation["held_out_samples"] == 48
    assert all(1 <= t <= 4 for t in at_default["exit_timesteps"])
    heldout = json.loads((out / "heldout.json").read_text())
    assert np.array(heldout["inputs"]).shape == (48, 1, 8, 8)
    assert "Held-out evaluation" in (out / "card.md").read_text()


def test_batched_onnx_steps_equal_one_at_a_time(tiny_model):
    out, _ = tiny_model
    session = open_session(out / "model.onnx")
    inputs = load_dataset("digits", limit=16).held_out.inputs
    frames = np.broadcast_to(inputs[None], (4, *inputs.shape))
    one = onnx_logits(session, frames, batch_size=1)
    batched = onnx_logits(session, frames, batch_size=16)
    assert np.abs(one - batched).max() < 1e-5


def test_held_out_split_is_disjoint_from_training():
    data = load_dataset("digits")
    train = {row.tobytes() for row in data.train.inputs}
    overlap = sum(row.tobytes() in train for row in data.held_out.inputs)
    # scikit-learn's digits hold a few identical images; the split itself never reuses a sample.
    assert overlap <= 2
    assert len(data.train.targets) + len(data.held_out.targets) == 1797


def test_the_server_accepts_the_exported_model(tiny_model, spikeserve_bin):
    out, _ = tiny_model
    result = subprocess.run([spikeserve_bin, "inspect", out], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    contract = json.loads(result.stdout)
    assert contract["timesteps"] == 4
    assert contract["frame_shape"] == [1, 8, 8]
    assert [s["shape"] for s in contract["states"]] == [[16, 8, 8], [32, 8, 8], [128]]


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    import torch

    from spiketrain.data import load_dataset
    from spiketrain.train import TrainConfig, train_model

    config = TrainConfig(epochs=2, limit=32, batch_size=16, timesteps=2, threads=1)
    data = load_dataset("digits", limit=32)
    straight = train_model(config, data)
    checkpoint = tmp_path / "checkpoint.pt"
    train_model(config, data, checkpoint, stop_after=1)
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 1
    resumed = train_model(config, data, checkpoint)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    other = TrainConfig(epochs=3, limit=32, batch_size=16, timesteps=2, threads=1)
    with pytest.raises(ValueError, match="another configuration"):
        train_model(other, data, checkpoint)


def test_the_exported_step_reports_its_synaptic_operations(tiny_model):
    out, _ = tiny_model
    session = open_session(out / "model.onnx")
    assert session.get_outputs()[-1].name == "synaptic_ops"
    inputs = load_dataset("digits", limit=4).held_out.inputs
    feeds = {"x": inputs, **{i.name: np.zeros((4, *i.shape[1:]), np.float32) for i in session.get_inputs()[1:]}}
    outputs = session.run(None, feeds)
    ops = outputs[-1]
    assert ops.shape == (4,)
    assert (ops >= 0).all()
