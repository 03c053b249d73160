"""VGGSNN and ResNet-19: the papers' shapes, the step-model contract, and torch/ONNX parity."""

import numpy as np
import pytest
import torch

from spiketrain.export import export_step_model, open_session, parity
from spiketrain.models import VGGSNN, EventCSNN, ResNet19, build_model, resolve_arch
from spiketrain.train import parse_args


def _frames(model, steps, batch, seed=0, dataset="nmnist"):
    rng = np.random.default_rng(seed)
    shape = (steps, batch, *model.input_shape)
    if dataset == "cifar10":
        return rng.integers(0, 256, shape).astype(np.float32)  # raw pixel values, normalised in the graph
    return rng.poisson(0.5, shape).astype(np.float32)  # event counts


def _liven(model, seed=1):
    """Untrained BatchNorm and linear layers let activity die out a few layers in; these settings keep
    every layer spiking, so that parity is checked on spikes rather than on silence."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = 1.0 + 2.0 * torch.rand(n, generator=generator)
            module.bias.data = 0.3 * torch.rand(n, generator=generator)
            module.running_mean = 0.1 * torch.randn(n, generator=generator)
            module.running_var = 0.5 + torch.rand(n, generator=generator)
        elif isinstance(module, torch.nn.Linear):
            module.weight.data *= 4.0
    return model.eval()


SMALL = [
    ("nmnist", "vggsnn", (2, 34, 34)),
    ("dvs-gesture", "vggsnn", (2, 128, 128)),
    ("cifar10", "resnet19", (3, 32, 32)),
    ("cifar10-dvs", "resnet19", (2, 128, 128)),
]


@pytest.mark.parametrize(("dataset", "arch", "shape"), SMALL)
def test_logits_per_timestep_and_one_trace_per_state(dataset, arch, shape):
    torch.manual_seed(0)
    model = build_model(dataset, 7, arch, width=0.0625).eval()
    assert model.input_shape == shape
    frames = torch.from_numpy(_frames(model, 3, 2, dataset=dataset))
    with torch.no_grad():
        logits, traces = model.unroll(frames)
        plain = model(frames)
    assert logits.shape == (3, 2, 7)
    assert torch.equal(plain, logits)  # without traces: the same logits
    states = model.state_shapes()
    assert len(traces) == len(states) == len(model.spiking_layers()) == len(model.synaptic_fanout())
    for trace, state in zip(traces, states, strict=True):
        assert trace.spikes.shape == trace.membrane.shape == (3, 2, *state)
    assert model.synaptic_ops().shape == (2,)


def test_the_papers_layer_counts():
    vgg = build_model("cifar10-dvs", 10)
    assert isinstance(vgg, VGGSNN)
    convs = [m for m in vgg.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 256, 512, 512, 512, 512]
    assert len([m for m in vgg.modules() if isinstance(m, torch.nn.BatchNorm2d)]) == 8
    assert vgg.fc.in_features == 512 * 8 * 8  # 128 / 2^4 at full resolution
    resnet = build_model("cifar10", 10)
    assert isinstance(resnet, ResNet19)
    convs3 = [m for m in resnet.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    linears = [m for m in resnet.modules() if isinstance(m, torch.nn.Linear)]
    assert len(convs3) + len(linears) == 19  # stem + 8 blocks x 2 + fc 256 + classifier
    assert [b.conv1[0].out_channels for b in resnet.blocks] == [128] * 3 + [256] * 3 + [512] * 2
    assert (linears[0].in_features, linears[0].out_features, linears[1].out_features) == (512, 256, 10)
    assert resnet.state_shapes()[-2] == (512, 8, 8)
    assert 12.5e6 < sum(p.numel() for p in resnet.parameters()) < 12.8e6


@pytest.mark.parametrize(("dataset", "shape"), [("nmnist", (2, 34, 34)), ("cifar10", (3, 32, 32))])
def test_the_default_widths_run_a_step(dataset, shape):
    torch.manual_seed(0)
    model = build_model(dataset, 10).eval()
    frames = torch.from_numpy(_frames(model, 2, 1, dataset=dataset))
    with torch.no_grad():
        logits = model(frames)
    assert logits.shape == (2, 1, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(("dataset", "arch"), [("nmnist", "vggsnn"), ("cifar10", "resnet19")])
def test_the_unroll_equals_stepping_the_exported_graph(tmp_path, dataset, arch):
    torch.manual_seed(0)
    model = _liven(build_model(dataset, 10, arch, width=0.125))
    frames = _frames(model, 4, 6, dataset=dataset)
    with torch.no_grad():
        _, traces = model.unroll(torch.from_numpy(frames))
    assert all(float(t.spikes.mean()) > 1e-3 for t in traces), "every layer spikes"
    path = tmp_path / "model.onnx"
    export_step_model(model, path, {"timesteps": 4})
    session = open_session(path)
    names = [o.name for o in session.get_outputs()]
    states = model.state_shapes()
    assert names == ["logits", *(f"state_out.{i}" for i in range(len(states))), "synaptic_ops"]
    assert [tuple(i.shape[1:]) for i in session.get_inputs()] == [model.input_shape, *states]
    checked = parity(model, session, frames)
    assert checked.max_abs_logit_diff < 1e-4
    assert checked.samples_diverged == 0
    # The synaptic-operations output is the torch model's, for the first step.
    feeds = {"x": frames[0], **{f"state_in.{i}": np.zeros((6, *s), np.float32) for i, s in enumerate(states)}}
    ops = session.run(["synaptic_ops"], feeds)[0]
    with torch.no_grad():
        model.step(torch.from_numpy(frames[0]), model.initial_states(6))
    assert np.allclose(ops, model.synaptic_ops().numpy(), rtol=1e-5)


def test_auto_picks_the_papers_architecture_per_data_set():
    assert [resolve_arch(d) for d in ("digits", "event-digits", "nmnist", "dvs-gesture", "cifar10-dvs", "cifar10")] == [
        "csnn",
        "csnn",
        "vggsnn",
        "vggsnn",
        "vggsnn",
        "resnet19",
    ]
    assert isinstance(build_model("dvs-gesture", 11, "csnn"), EventCSNN)
    with pytest.raises(ValueError, match="csnn"):
        build_model("cifar10", 10, "csnn")
    with pytest.raises(ValueError, match="too small"):
        build_model("digits", 10, "vggsnn")


def test_the_cli_takes_an_architecture_and_a_width(tmp_path, capsys):
    config, _ = parse_args(
        [
            "--dataset",
            "nmnist",
            "--data-dir",
            str(tmp_path),
            "--arch",
            "resnet19",
            "--width-multiplier",
            "0.5",
            "--out",
            "x",
        ]
    )
    assert (config.arch, config.width_multiplier, config.data_dir) == ("resnet19", 0.5, str(tmp_path))
    with pytest.raises(SystemExit):
        parse_args(["--dataset", "digits", "--width-multiplier", "0.5", "--out", "x"])
    assert "not csnn" in capsys.readouterr().err
