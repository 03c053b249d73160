"""Spiking network architectures, each written as an explicit single-timestep function.

A model maps ``(x_t, states) -> (logits_t, new_states)``. Training unrolls it over T steps; export
traces exactly one step. Using the same ``step`` for both is what makes torch/ONNX parity hold.
"""

from __future__ import annotations

import torch
from torch import nn

from .neurons import LIF
from .regularisers import LayerTrace


class StepModel(nn.Module):
    """Base class: subclasses define ``state_shapes`` and ``step``."""

    #: Per-sample shape of one timestep's input frame (no batch dimension).
    input_shape: tuple[int, ...]

    def state_shapes(self) -> list[tuple[int, ...]]:
        raise NotImplementedError

    def synaptic_fanout(self) -> list[float]:
        """Per spiking layer, the synapses one of its spikes drives in the next weighted layer
        (out channels x kernel area for a convolution, out features for a linear layer): a spike's
        synaptic operations. Borders are ignored."""
        raise NotImplementedError

    def synaptic_ops(self) -> torch.Tensor:
        """The last step's synaptic operations per sample: each layer's spikes times its fan-out."""
        total = None
        for layer, fanout in zip(self.spiking_layers(), self.synaptic_fanout(), strict=True):
            ops = layer.last_spikes.flatten(1).sum(dim=1) * fanout
            total = ops if total is None else total + ops
        if total is None:
            raise ValueError("a model without spiking layers has no synaptic operations")
        return total

    def step(self, x: torch.Tensor, states: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        raise NotImplementedError

    def initial_states(self, batch: int, device: torch.device | None = None) -> list[torch.Tensor]:
        return [torch.zeros((batch, *shape), device=device) for shape in self.state_shapes()]

    def spiking_layers(self) -> list[LIF]:
        """The LIF layers, in the order of the states they own."""
        return [m for m in self.modules() if isinstance(m, LIF)]

    def forward(
        self, frames: torch.Tensor, with_traces: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[LayerTrace]]:
        """Unrolls over time. ``frames``: ``[T, B, *input_shape]``; returns logits ``[T, B, C]`` (and,
        ``with_traces``, each spiking layer's trace, as :meth:`unroll`)."""
        logits, traces = self.unroll(frames, with_traces=with_traces)
        return (logits, traces) if with_traces else logits

    def unroll(self, frames: torch.Tensor, with_traces: bool = True) -> tuple[torch.Tensor, list[LayerTrace]]:
        """Logits ``[T, B, C]`` and, per spiking layer, its spikes and post-reset membrane over time
        (an empty list without ``with_traces``, which keeps no per-layer state over time)."""
        states = self.initial_states(frames.shape[1], frames.device)
        layers = self.spiking_layers()
        outputs = []
        spikes: list[list[torch.Tensor]] = [[] for _ in layers]
        membranes: list[list[torch.Tensor]] = [[] for _ in layers]
        for frame in frames:
            logits, states = self.step(frame, states)
            outputs.append(logits)
            if not with_traces:
                continue
            for i, (layer, membrane) in enumerate(zip(layers, states, strict=True)):
                spikes[i].append(layer.last_spikes)
                membranes[i].append(membrane)
        if not with_traces:
            return torch.stack(outputs), []
        traces = [
            LayerTrace(torch.stack(s), torch.stack(m), layer.threshold)
            for s, m, layer in zip(spikes, membranes, layers, strict=True)
        ]
        return torch.stack(outputs), traces


class DigitsCSNN(StepModel):
    """A small convolutional SNN for 8x8 digits.

    conv(1->16) -> LIF -> conv(16->32) -> LIF -> avgpool 2 -> fc(512->128) -> LIF -> fc(128->C).

    The input is taken in the data set's own units (pixel intensities 0..16) and scaled inside the
    graph, so that clients send raw pixels and cannot get the normalisation wrong.
    """

    def __init__(self, num_classes: int = 10, input_scale: float = 1.0 / 16.0) -> None:
        super().__init__()
        self.input_shape = (1, 8, 8)
        self.register_buffer("input_scale", torch.tensor(input_scale))
        self.conv1 = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.lif1 = LIF()
        self.conv2 = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32))
        self.lif2 = LIF()
        self.pool = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(32 * 4 * 4, 128)
        self.lif3 = LIF()
        self.fc2 = nn.Linear(128, num_classes)

    def state_shapes(self) -> list[tuple[int, ...]]:
        return [(16, 8, 8), (32, 8, 8), (128,)]

    def synaptic_fanout(self) -> list[float]:
        # lif1 -> conv2 (32 x 3x3); lif2 -> avgpool -> fc1 (128); lif3 -> fc2 (classes)
        return [32 * 9, 128, self.fc2.out_features]

    def step(self, x: torch.Tensor, states: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        u1, u2, u3 = states
        s1, u1 = self.lif1(self.conv1(x * self.input_scale), u1)
        s2, u2 = self.lif2(self.conv2(s1), u2)
        pooled = self.pool(s2).flatten(1)
        s3, u3 = self.lif3(self.fc1(pooled), u3)
        return self.fc2(s3), [u1, u2, u3]


class EventCSNN(StepModel):
    """A small convolutional SNN for 34x34 two-polarity event frames.

    conv(2->16, stride 2) -> LIF -> conv(16->32, stride 2) -> LIF -> fc(2592->128) -> LIF -> fc(128->C).
    Event counts go in as they are.
    """

    def __init__(
        self, num_classes: int = 10, sensor: int = 34, channels: int = 2, normalise: Normalise | None = None
    ) -> None:
        super().__init__()
        self.input_shape = (channels, sensor, sensor)
        # Images (``mnist``) are normalised inside the graph; event counts go in as they are.
        self.normalise = normalise
        self.conv1 = nn.Sequential(nn.Conv2d(channels, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16))
        self.lif1 = LIF()
        self.conv2 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32))
        self.lif2 = LIF()
        side = (sensor + 1) // 2
        side = (side + 1) // 2
        self._side = side
        self.fc1 = nn.Linear(32 * side * side, 128)
        self.lif3 = LIF()
        self.fc2 = nn.Linear(128, num_classes)

    def state_shapes(self) -> list[tuple[int, ...]]:
        half = (self.input_shape[1] + 1) // 2
        return [(16, half, half), (32, self._side, self._side), (128,)]

    def synaptic_fanout(self) -> list[float]:
        # lif1 -> conv2 (32 x 3x3); lif2 -> fc1 (128); lif3 -> fc2 (classes)
        return [32 * 9, 128, self.fc2.out_features]

    def step(self, x: torch.Tensor, states: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        u1, u2, u3 = states
        if self.normalise is not None:
            x = self.normalise(x)
        s1, u1 = self.lif1(self.conv1(x), u1)
        s2, u2 = self.lif2(self.conv2(s1), u2)
        s3, u3 = self.lif3(self.fc1(s2.flatten(1)), u3)
        return self.fc2(s3), [u1, u2, u3]


class Normalise(nn.Module):
    """Per-channel ``(x / unit - mean) / std`` inside the graph, so that clients send raw pixel values."""

    def __init__(self, unit: float, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        scale = [1.0 / (unit * s) for s in std]
        shift = [-m / s for m, s in zip(mean, std, strict=True)]
        self.register_buffer("scale", torch.tensor(scale).view(-1, 1, 1))
        self.register_buffer("shift", torch.tensor(shift).view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def _width(channels: int, multiplier: float) -> int:
    return max(1, round(channels * multiplier))


def _conv_bn(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout)
    )


#: VGGSNN (TET, STR): 64C3-128C3-AP2-256C3-256C3-AP2-512C3-512C3-AP2-512C3-512C3-AP2-FC.
VGG_CHANNELS = (64, 128, 256, 256, 512, 512, 512, 512)
#: The convolutions (0-based) whose spikes are average-pooled 2x2 before the next layer.
VGG_POOL_AFTER = (1, 3, 5, 7)


class VGGSNN(StepModel):
    """The VGGSNN of TET / STR for event frames (or images).

    Eight 3x3 convolutions (padding 1, BatchNorm, LIF), a 2x2 average pool of the spikes after every
    second one, and one linear layer from the last pooled spikes to the classes. ``width`` scales
    every convolution's channels (1.0 is the paper's network). ``normalise`` (for images) maps raw
    pixel values to the network's input inside the graph; event counts go in as they are.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, int, int],
        width: float = 1.0,
        normalise: Normalise | None = None,
    ) -> None:
        super().__init__()
        self.input_shape = input_shape
        self.normalise = normalise
        channels, height, side_w = input_shape
        widths = [_width(c, width) for c in VGG_CHANNELS]
        self.convs = nn.ModuleList()
        self._state_shapes: list[tuple[int, ...]] = []
        cin = channels
        for i, cout in enumerate(widths):
            self.convs.append(_conv_bn(cin, cout))
            self._state_shapes.append((cout, height, side_w))
            if i in VGG_POOL_AFTER:
                height, side_w = height // 2, side_w // 2
            cin = cout
        if height < 1 or side_w < 1:
            raise ValueError(f"VGGSNN: a {input_shape[1]}x{input_shape[2]} input is too small for four 2x2 pools")
        self.lifs = nn.ModuleList(LIF() for _ in widths)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(widths[-1] * height * side_w, num_classes)
        self._widths = widths

    def state_shapes(self) -> list[tuple[int, ...]]:
        return list(self._state_shapes)

    def synaptic_fanout(self) -> list[float]:
        # Each convolution's spikes (pooled or not) drive the next convolution (out x 3x3); the last
        # layer's pooled spikes drive the classifier.
        return [float(c * 9) for c in self._widths[1:]] + [float(self.fc.out_features)]

    def step(self, x: torch.Tensor, states: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = x if self.normalise is None else self.normalise(x)
        new_states = []
        for i, (conv, lif, membrane) in enumerate(zip(self.convs, self.lifs, states, strict=True)):
            spikes, membrane = lif(conv(h), membrane)
            new_states.append(membrane)
            h = self.pool(spikes) if i in VGG_POOL_AFTER else spikes
        return self.fc(h.flatten(1)), new_states


class BasicBlock(nn.Module):
    """ResNet basic block with LIF neurons (TET / tdBN): ``LIF(BN(conv(LIF(BN(conv(x))))) + shortcut(x))``,
    the shortcut the identity or, where the shape changes, a 1x1 convolution with BatchNorm."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(cin, cout, stride)
        self.lif1 = LIF()
        self.conv2 = _conv_bn(cout, cout)
        self.shortcut = _conv_bn(cin, cout, stride, kernel=1) if stride != 1 or cin != cout else None
        self.lif2 = LIF()

    def forward(
        self, x: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s1, u1 = self.lif1(self.conv1(x), u1)
        skip = x if self.shortcut is None else self.shortcut(x)
        s2, u2 = self.lif2(self.conv2(s1) + skip, u2)
        return s2, u1, u2


#: ResNet-19 (tdBN, TET): (channels, blocks, stride of the first block) per stage.
RESNET19_STAGES = ((128, 3, 1), (256, 3, 2), (512, 2, 2))
RESNET19_STEM = 128
RESNET19_HIDDEN = 256


class ResNet19(StepModel):
    """ResNet-19 of tdBN / TET: a 3x3 128-channel stem (BatchNorm, LIF), stages of 3, 3 and 2 basic
    blocks at 128, 256 and 512 channels (the last two starting with stride 2), a global average pool,
    a 256-unit linear layer with LIF and the linear classifier. ``width`` scales every hidden width."""

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, int, int],
        width: float = 1.0,
        normalise: Normalise | None = None,
    ) -> None:
        super().__init__()
        self.input_shape = input_shape
        self.normalise = normalise
        channels, height, side_w = input_shape
        stem = _width(RESNET19_STEM, width)
        self.stem = _conv_bn(channels, stem)
        self.lif_stem = LIF()
        self._state_shapes: list[tuple[int, ...]] = [(stem, height, side_w)]
        self.blocks = nn.ModuleList()
        cin = stem
        for base, count, first_stride in RESNET19_STAGES:
            cout = _width(base, width)
            for b in range(count):
                stride = first_stride if b == 0 else 1
                self.blocks.append(BasicBlock(cin, cout, stride))
                height, side_w = (height - 1) // stride + 1, (side_w - 1) // stride + 1
                self._state_shapes += [(cout, height, side_w), (cout, height, side_w)]
                cin = cout
        hidden = _width(RESNET19_HIDDEN, width)
        self.fc1 = nn.Linear(cin, hidden)
        self.lif_fc = LIF()
        self.fc2 = nn.Linear(hidden, num_classes)
        self._state_shapes.append((hidden,))

    def state_shapes(self) -> list[tuple[int, ...]]:
        return list(self._state_shapes)

    def synaptic_fanout(self) -> list[float]:
        # A spike entering a block drives its first convolution (out x 3x3) and, where there is one,
        # its 1x1 shortcut convolution (out x 1); an identity shortcut is an addition, not a synapse.
        # Inside a block, the first LIF drives the second convolution. The last block's spikes are
        # averaged into fc1 (its out features); fc1's LIF drives the classifier.
        def entering(block: BasicBlock) -> float:
            out = block.conv2[0].out_channels
            return float(out * 9 + (out if block.shortcut is not None else 0))

        blocks = list(self.blocks)
        fanout = [entering(blocks[0])]
        for i, block in enumerate(blocks):
            fanout.append(float(block.conv2[0].out_channels * 9))
            fanout.append(entering(blocks[i + 1]) if i + 1 < len(blocks) else float(self.fc1.out_features))
        fanout.append(float(self.fc2.out_features))
        return fanout

    def step(self, x: torch.Tensor, states: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = x if self.normalise is None else self.normalise(x)
        h, u = self.lif_stem(self.stem(h), states[0])
        new_states = [u]
        for i, block in enumerate(self.blocks):
            h, u1, u2 = block(h, states[1 + 2 * i], states[2 + 2 * i])
            new_states += [u1, u2]
        s, u = self.lif_fc(self.fc1(h.mean(dim=(2, 3))), states[-1])
        new_states.append(u)
        return self.fc2(s), new_states


#: Architectures ``--arch auto`` picks per data set.
AUTO_ARCH = {
    "digits": "csnn",
    "event-digits": "csnn",
    "mnist-events": "csnn",
    "mnist": "csnn",
    "nmnist": "vggsnn",
    "dvs-gesture": "vggsnn",
    "cifar10-dvs": "vggsnn",
    "cifar10": "resnet19",
}
ARCHS = ("csnn", "vggsnn", "resnet19")

#: Per-sample frame shape of each data set (channels or polarities, height, width).
INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    "digits": (1, 8, 8),
    "event-digits": (2, 34, 34),
    "mnist-events": (2, 34, 34),
    "mnist": (1, 28, 28),
    "nmnist": (2, 34, 34),
    "dvs-gesture": (2, 128, 128),
    "cifar10-dvs": (2, 128, 128),
    "cifar10": (3, 32, 32),
}

#: CIFAR-10's per-channel mean and standard deviation (of pixel values / 255, over the training set).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
#: MNIST's mean and standard deviation (pixel values / 255).
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)


def input_normalisation(dataset: str) -> Normalise | None:
    """How a data set's raw values become the network's input (inside the graph); None for event counts."""
    if dataset == "digits":
        return Normalise(16.0, (0.0,), (1.0,))
    if dataset == "cifar10":
        return Normalise(255.0, CIFAR10_MEAN, CIFAR10_STD)
    if dataset == "mnist":
        return Normalise(255.0, MNIST_MEAN, MNIST_STD)
    return None


def resolve_arch(dataset: str, arch: str = "auto") -> str:
    if arch == "auto":
        if dataset not in AUTO_ARCH:
            raise ValueError(f"no architecture for dataset {dataset!r}; known: {', '.join(AUTO_ARCH)}")
        return AUTO_ARCH[dataset]
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; expected auto, {', '.join(ARCHS)}")
    return arch


def build_model(
    dataset: str,
    num_classes: int,
    arch: str = "auto",
    width: float = 1.0,
    input_shape: tuple[int, ...] | None = None,
) -> StepModel:
    """The network for ``dataset``: ``arch`` ``auto`` picks the small CSNN for the digits sets, VGGSNN
    for the event data sets and ResNet-19 for CIFAR-10. ``width`` scales VGGSNN's and ResNet-19's
    channels; ``input_shape`` defaults to the data set's."""
    arch = resolve_arch(dataset, arch)
    if input_shape is None:
        if dataset not in INPUT_SHAPES:
            raise ValueError(f"no input shape known for dataset {dataset!r}; pass input_shape")
        input_shape = INPUT_SHAPES[dataset]
    if len(input_shape) != 3:
        raise ValueError(f"expected a [channels, height, width] frame, got {list(input_shape)}")
    shape = (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))
    if arch == "csnn":
        if width != 1.0:
            raise ValueError("the width multiplier applies to vggsnn and resnet19, not csnn")
        if dataset == "digits":
            return DigitsCSNN(num_classes)
        if shape[0] in (1, 2) and shape[1] == shape[2]:
            return EventCSNN(num_classes, sensor=shape[1], channels=shape[0], normalise=input_normalisation(dataset))
        raise ValueError(
            f"csnn takes 8x8 digits or square one-channel / two-polarity frames, not {dataset!r} {list(shape)}"
        )
    if width <= 0:
        raise ValueError(f"the width multiplier must be positive, got {width}")
    normalise = input_normalisation(dataset)
    if arch == "vggsnn":
        return VGGSNN(num_classes, shape, width, normalise)
    return ResNet19(num_classes, shape, width, normalise)
