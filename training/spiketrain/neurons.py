"""Leaky integrate-and-fire neurons with a triangle surrogate gradient.

The dynamics follow the paper (and the TET / SNNCutoff code it builds on):

    u_t = decay * u_{t-1} + x_t          (decay = 0.5)
    s_t = H(u_t - threshold)             (threshold = 1)
    u_t <- u_t * (1 - s_t)               (hard reset)

The Heaviside step has no useful gradient, so backpropagation uses the triangle ("ZIF") surrogate
``ds/du = max(0, gamma - |u - threshold|) / gamma**2`` with width ``gamma = 1``.
"""

from __future__ import annotations

import torch
from torch import nn

DECAY = 0.5
THRESHOLD = 1.0
SURROGATE_WIDTH = 1.0


class TriangleSpike(torch.autograd.Function):
    """Heaviside step forward, triangle surrogate backward. Input is ``u - threshold``."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, centred: torch.Tensor, width: float) -> torch.Tensor:
        ctx.save_for_backward(centred)
        ctx.width = width  # type: ignore[attr-defined]
        return (centred >= 0).to(centred.dtype)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:
        (centred,) = ctx.saved_tensors  # type: ignore[attr-defined]
        width: float = ctx.width  # type: ignore[attr-defined]
        surrogate = torch.clamp(width - centred.abs(), min=0.0) / (width * width)
        return grad_out * surrogate, None


def spike(membrane: torch.Tensor, threshold: float = THRESHOLD, width: float = SURROGATE_WIDTH) -> torch.Tensor:
    """Spikes where the membrane reaches the threshold.

    Without autograd (inference, ONNX export) this is a plain comparison, so the exported graph holds
    only standard operators (GreaterOrEqual + Cast).
    """
    if membrane.requires_grad:
        return TriangleSpike.apply(membrane - threshold, width)
    return (membrane >= threshold).to(membrane.dtype)


class LIF(nn.Module):
    """One layer of LIF neurons, stepped explicitly: the membrane is passed in and returned.

    Keeping the state outside the module is what lets one timestep be exported as a pure function
    ``(x_t, u_{t-1}) -> (s_t, u_t)``, which is the step-model contract the server runs.
    """

    def __init__(self, decay: float = DECAY, threshold: float = THRESHOLD, width: float = SURROGATE_WIDTH) -> None:
        super().__init__()
        self.decay = decay
        self.threshold = threshold
        self.width = width

    def forward(self, current: torch.Tensor, membrane: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        charged = self.decay * membrane + current
        spikes = spike(charged, self.threshold, self.width)
        # Kept for the regularisers, which look at each layer's spikes after every step.
        self.last_spikes = spikes
        return spikes, charged * (1.0 - spikes)
