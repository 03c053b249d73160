"""Networks built with each framework's own layers, exported with its own exporter (or the documented
workaround where the pinned exporter breaks), with the framework's own forward pass over the same inputs.

Each case gives the NIR file, the import flags, the inputs ``[T, N, *frame]``, the framework's
per-timestep readout ``[T, N, C]`` and its spikes per layer and sample (to count synaptic operations).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from spiketrain.nirimport.workarounds import norse_to_nir, snntorch_to_nir, with_conv_shapes, write_nir

T = 6
SAMPLES = 10
EVENT_FRAME = (2, 34, 34)


@dataclass
class Case:
    name: str
    producer: str
    nir: Path
    inputs: np.ndarray  # [T, N, *frame]
    logits: np.ndarray  # [T, N, C], the framework's readout per timestep
    spikes: dict[str, np.ndarray]  # module name -> spikes per sample over all T [N]
    flags: list[str] = field(default_factory=list)


def event_frames(seed: int, shape: tuple[int, ...] = EVENT_FRAME, rate: float = 0.15) -> np.ndarray:
    """Random sparse event counts (0, 1 or 2 per pixel and bin), like binned DVS frames."""
    rng = np.random.default_rng(seed)
    counts = rng.binomial(2, rate, size=(T, SAMPLES, *shape))
    return counts.astype(np.float32)


def _recorder(net: torch.nn.Module, kinds: tuple[type, ...]) -> tuple[dict[str, list[np.ndarray]], Callable[[], None]]:
    spikes: dict[str, list[np.ndarray]] = {}
    handles = []
    for name, module in net.named_modules():
        if isinstance(module, kinds):

            def hook(_module: torch.nn.Module, _inputs: object, output: object, name: str = name) -> None:
                value = output[0] if isinstance(output, tuple) else output
                spikes.setdefault(name, []).append(value.detach().flatten(1).sum(1).numpy().astype(np.float64))

            handles.append(module.register_forward_hook(hook))
    return spikes, lambda: [h.remove() for h in handles]


def _totals(recorded: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.sum(steps, axis=0) for name, steps in recorded.items()}


# -- snnTorch ------------------------------------------------------------------------------------------


def _snntorch_run(net: torch.nn.Module, inputs: np.ndarray, readout: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    import snntorch as snn
    from snntorch import utils

    utils.reset(net)
    recorded, remove = _recorder(net, (snn.Leaky, snn.Synaptic, snn.RLeaky, snn.RSynaptic))
    out = []
    with torch.no_grad():
        for frame in inputs:
            spk, *rest = net(torch.from_numpy(frame))
            out.append((spk if readout == "spikes" else rest[-1]).numpy().copy())
    remove()
    return np.stack(out), _totals(recorded)


def snntorch_cases(root: Path) -> list[Case]:
    import snntorch as snn

    torch.manual_seed(0)
    cases = []
    # A convolutional SNN on 2x34x34 event frames; the readout is the last Leaky's membrane.
    conv = torch.nn.Sequential(
        torch.nn.Conv2d(2, 8, 5, stride=2, padding=2),
        snn.Leaky(beta=0.9, init_hidden=True),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1),
        snn.Leaky(beta=0.85, init_hidden=True, threshold=0.8),
        torch.nn.AvgPool2d(3),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 3 * 3, 10),
        snn.Leaky(beta=0.8, init_hidden=True, output=True),
    )
    with torch.no_grad():
        conv[0].weight.mul_(4.0)
        conv[2].weight.mul_(3.0)
        conv[6].weight.mul_(3.0)
    inputs = event_frames(1)
    graph = snntorch_to_nir(conv, torch.zeros(1, *EVENT_FRAME))
    write_nir(root / "snntorch-conv.nir", graph)
    logits, spikes = _snntorch_run(conv, inputs, "membrane")
    cases.append(
        Case("snntorch-conv", "snntorch", root / "snntorch-conv.nir", inputs, logits, spikes, ["--readout", "membrane"])
    )
    # A spiking MLP with current-based (Synaptic) neurons; the readout counts the last layer's spikes.
    mlp = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(2 * 16 * 16, 64),
        snn.Synaptic(alpha=0.7, beta=0.9, init_hidden=True),
        torch.nn.Linear(64, 10),
        snn.Synaptic(alpha=0.6, beta=0.85, init_hidden=True, output=True),
    )
    with torch.no_grad():
        mlp[1].weight.mul_(3.0)
        mlp[3].weight.mul_(4.0)
    small = event_frames(2, (2, 16, 16), rate=0.3)
    write_nir(root / "snntorch-mlp.nir", snntorch_to_nir(mlp, torch.zeros(1, 2, 16, 16)))
    logits, spikes = _snntorch_run(mlp, small, "spikes")
    cases.append(
        Case("snntorch-mlp", "snntorch", root / "snntorch-mlp.nir", small, logits, spikes, ["--readout", "spikes"])
    )
    # A recurrent one: RLeaky (all-to-all recurrent Linear) becomes a NIR subgraph with a cycle.
    rec = torch.nn.Sequential(
        torch.nn.Linear(40, 32),
        snn.RLeaky(beta=0.9, linear_features=32, init_hidden=True),
        torch.nn.Linear(32, 5),
        snn.Leaky(beta=0.8, init_hidden=True, output=True),
    )
    with torch.no_grad():
        rec[0].weight.mul_(3.0)
        rec[1].recurrent.weight.mul_(2.0)
        rec[2].weight.mul_(3.0)
    seq = event_frames(3, (40,), rate=0.3)
    write_nir(root / "snntorch-recurrent.nir", snntorch_to_nir(rec, torch.zeros(1, 40)))
    logits, spikes = _snntorch_run(rec, seq, "membrane")
    cases.append(
        Case(
            "snntorch-recurrent",
            "snntorch",
            root / "snntorch-recurrent.nir",
            seq,
            logits,
            spikes,
            ["--readout", "membrane"],
        )
    )
    # Recurrent and current-based: RSynaptic.
    rsyn = torch.nn.Sequential(
        torch.nn.Linear(40, 32),
        snn.RSynaptic(alpha=0.7, beta=0.9, linear_features=32, init_hidden=True),
        torch.nn.Linear(32, 5),
        snn.Leaky(beta=0.8, init_hidden=True, output=True),
    )
    with torch.no_grad():
        rsyn[0].weight.mul_(3.0)
        rsyn[1].recurrent.weight.mul_(2.0)
        rsyn[2].weight.mul_(3.0)
    write_nir(root / "snntorch-rsynaptic.nir", snntorch_to_nir(rsyn, torch.zeros(1, 40)))
    logits, spikes = _snntorch_run(rsyn, seq, "membrane")
    cases.append(
        Case(
            "snntorch-rsynaptic",
            "snntorch",
            root / "snntorch-rsynaptic.nir",
            seq,
            logits,
            spikes,
            ["--readout", "membrane"],
        )
    )
    return cases


# -- Sinabs --------------------------------------------------------------------------------------------


def _sinabs_run(net: torch.nn.Module, inputs: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    import sinabs
    import sinabs.layers as sl

    sinabs.reset_states(net)
    steps, count = inputs.shape[:2]
    # Squeeze layers take [batch * time, ...], batch-major.
    squeezed = torch.from_numpy(
        np.ascontiguousarray(np.swapaxes(inputs, 0, 1)).reshape(count * steps, *inputs.shape[2:])
    )
    recorded: dict[str, np.ndarray] = {}
    handles = []
    for name, module in net.named_modules():
        if isinstance(module, (sl.IAFSqueeze, sl.LIFSqueeze)):

            def hook(_m: torch.nn.Module, _i: object, output: torch.Tensor, name: str = name) -> None:
                recorded[name] = output.detach().reshape(count, steps, -1).sum(dim=(1, 2)).numpy().astype(np.float64)

            handles.append(module.register_forward_hook(hook))
    with torch.no_grad():
        out = net(squeezed).numpy().reshape(count, steps, -1)
    for h in handles:
        h.remove()
    return np.swapaxes(out, 0, 1).copy(), recorded


def sinabs_cases(root: Path) -> list[Case]:
    import sinabs
    import sinabs.layers as sl

    torch.manual_seed(1)
    cases = []
    conv = torch.nn.Sequential(
        torch.nn.Conv2d(2, 8, 3, padding=1, bias=False),
        sl.IAFSqueeze(batch_size=SAMPLES),
        sl.SumPool2d(2),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False),
        sl.IAFSqueeze(batch_size=SAMPLES),
        sl.SumPool2d(3),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 3 * 3, 10, bias=False),
        sl.IAFSqueeze(batch_size=SAMPLES),
    )
    with torch.no_grad():
        conv[0].weight.mul_(4.0)
        conv[3].weight.mul_(2.0)
        conv[7].weight.mul_(2.0)
    inputs = event_frames(4)
    sample = torch.zeros(SAMPLES * T, *EVENT_FRAME)
    write_nir(root / "sinabs-conv.nir", with_conv_shapes(sinabs.to_nir(conv, sample), conv, sample))
    logits, spikes = _sinabs_run(conv, inputs)
    cases.append(
        Case("sinabs-conv", "sinabs", root / "sinabs-conv.nir", inputs, logits, spikes, ["--readout", "spikes"])
    )
    mlp = torch.nn.Sequential(
        torch.nn.Linear(60, 48),
        sl.LIFSqueeze(tau_mem=8.0, batch_size=SAMPLES, norm_input=False),
        torch.nn.Linear(48, 10),
        sl.ExpLeakSqueeze(tau_mem=5.0, batch_size=SAMPLES),
    )
    with torch.no_grad():
        mlp[0].weight.mul_(2.0)
    seq = event_frames(5, (60,), rate=0.3)
    write_nir(root / "sinabs-mlp.nir", sinabs.to_nir(mlp, torch.zeros(SAMPLES * T, 60)))
    logits, spikes = _sinabs_run(mlp, seq)
    cases.append(Case("sinabs-mlp", "sinabs", root / "sinabs-mlp.nir", seq, logits, spikes, []))
    return cases


# -- Norse ---------------------------------------------------------------------------------------------


def _norse_run(net: torch.nn.Module, inputs: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    import norse.torch as norse

    recorded, remove = _recorder(net, (norse.LIFBoxCell, norse.LIFCell))
    out, state = [], None
    with torch.no_grad():
        for frame in inputs:
            value, state = net(torch.from_numpy(frame), state)
            out.append(value.numpy().copy())
    remove()
    return np.stack(out), _totals(recorded)


def norse_cases(root: Path) -> list[Case]:
    import norse.torch as norse
    from norse.torch.utils.export_nir import to_nir

    torch.manual_seed(2)
    cases = []
    mlp = norse.SequentialState(
        torch.nn.Linear(60, 48),
        norse.LIFBoxCell(),
        torch.nn.Linear(48, 10),
        norse.LIBoxCell(),
    )
    with torch.no_grad():
        mlp[0].weight.mul_(20.0)
        mlp[2].weight.mul_(5.0)
    seq = event_frames(6, (60,), rate=0.3)
    write_nir(root / "norse-mlp.nir", to_nir(mlp, torch.zeros(1, 60)))  # Norse's own exporter
    logits, spikes = _norse_run(mlp, seq)
    cases.append(Case("norse-mlp", "norse", root / "norse-mlp.nir", seq, logits, spikes, []))
    cuba = norse.SequentialState(
        torch.nn.Linear(60, 32),
        norse.LIFCell(),
        torch.nn.Linear(32, 10),
        norse.LIBoxCell(),
    )
    with torch.no_grad():
        cuba[0].weight.mul_(40.0)
        cuba[2].weight.mul_(5.0)
    write_nir(root / "norse-cuba.nir", to_nir(cuba, torch.zeros(1, 60)))
    logits, spikes = _norse_run(cuba, seq)
    cases.append(Case("norse-cuba", "norse", root / "norse-cuba.nir", seq, logits, spikes, []))
    conv = norse.SequentialState(
        torch.nn.Conv2d(2, 8, 5, stride=3, padding=1),
        norse.LIFBoxCell(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 11 * 11, 10),
        norse.LIBoxCell(),
    )
    with torch.no_grad():
        conv[0].weight.mul_(30.0)
        conv[3].weight.mul_(5.0)
    inputs = event_frames(7)
    write_nir(root / "norse-conv.nir", norse_to_nir(conv, torch.zeros(1, *EVENT_FRAME)))  # Flatten: the workaround
    logits, spikes = _norse_run(conv, inputs)
    cases.append(Case("norse-conv", "norse", root / "norse-conv.nir", inputs, logits, spikes, []))
    return cases


# -- SpikingJelly --------------------------------------------------------------------------------------


def _spikingjelly_run(net: torch.nn.Module, inputs: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    from spikingjelly.activation_based import functional, neuron

    functional.reset_net(net)
    recorded, remove = _recorder(net, (neuron.BaseNode,))
    with torch.no_grad():
        out = np.stack([net(torch.from_numpy(frame)).numpy().copy() for frame in inputs])
    remove()
    return out, _totals(recorded)


def spikingjelly_cases(root: Path) -> list[Case]:
    from spikingjelly.activation_based import layer, neuron
    from spikingjelly.activation_based.nir_exchange import export_to_nir

    torch.manual_seed(3)
    cases = []
    conv = torch.nn.Sequential(
        layer.Conv2d(2, 8, 3, stride=2, padding=1),
        neuron.LIFNode(tau=3.0),
        layer.AvgPool2d(3),
        layer.Flatten(),
        layer.Linear(8 * 5 * 5, 10),
        neuron.LIFNode(tau=2.0),
    )
    mlp = torch.nn.Sequential(layer.Linear(60, 32), neuron.LIFNode(tau=2.0), layer.Linear(32, 10), neuron.IFNode())
    for net in (conv, mlp):
        with torch.no_grad():
            for module in net.modules():
                if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
                    module.weight.mul_(8.0)
    for name, net, inputs in [
        ("spikingjelly-conv", conv, event_frames(9, rate=0.3)),
        ("spikingjelly-mlp", mlp, event_frames(10, (60,), rate=0.3)),
    ]:
        write_nir(root / f"{name}.nir", export_to_nir(net, torch.zeros(1, *inputs.shape[2:])))  # its own exporter
        logits, spikes = _spikingjelly_run(net, inputs)
        cases.append(Case(name, "spikingjelly", root / f"{name}.nir", inputs, logits, spikes, ["--readout", "spikes"]))
    return cases
