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
        logits, traces = self.unroll(frames)
        return (logits, traces) if with_traces else logits

    def unroll(self, frames: torch.Tensor) -> tuple[torch.Tensor, list[LayerTrace]]:
        """Logits ``[T, B, C]`` and, per spiking layer, its spikes and post-reset membrane over time."""
        states = self.initial_states(frames.shape[1], frames.device)
        layers = self.spiking_layers()
        outputs = []
        spikes: list[list[torch.Tensor]] = [[] for _ in layers]
        membranes: list[list[torch.Tensor]] = [[] for _ in layers]
        for frame in frames:
            logits, states = self.step(frame, states)
            outputs.append(logits)
            for i, (layer, membrane) in enumerate(zip(layers, states, strict=True)):
                spikes[i].append(layer.last_spikes)
                membranes[i].append(membrane)
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

    def __init__(self, num_classes: int = 10, sensor: int = 34) -> None:
        super().__init__()
        self.input_shape = (2, sensor, sensor)
        self.conv1 = nn.Sequential(nn.Conv2d(2, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16))
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
        s1, u1 = self.lif1(self.conv1(x), u1)
        s2, u2 = self.lif2(self.conv2(s1), u2)
        s3, u3 = self.lif3(self.fc1(s2.flatten(1)), u3)
        return self.fc2(s3), [u1, u2, u3]


def build_model(dataset: str, num_classes: int) -> StepModel:
    if dataset == "digits":
        return DigitsCSNN(num_classes)
    if dataset == "event-digits":
        return EventCSNN(num_classes)
    raise ValueError(f"no architecture for dataset {dataset!r}; known: digits, event-digits")
