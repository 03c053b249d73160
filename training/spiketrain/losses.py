"""Temporal Efficient Training (TET) loss (Deng et al., ICLR 2022).

``L = (1 - lam) * mean_t CE(o_t, y) + lam * MSE(o, phi)`` with ``phi = 1`` and ``lam = 1e-3``: every
timestep's output is pushed towards the label on its own, which is what makes early exits possible.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

TET_LAMBDA = 1e-3
TET_PHI = 1.0


def tet_loss(logits: torch.Tensor, target: torch.Tensor, lam: float = TET_LAMBDA, phi: float = TET_PHI) -> torch.Tensor:
    """``logits``: ``[T, B, C]``, ``target``: ``[B]`` class indices."""
    if logits.dim() != 3:
        raise ValueError(f"tet_loss expects logits of shape [T, B, C], got {tuple(logits.shape)}")
    steps = logits.shape[0]
    ce = torch.stack([F.cross_entropy(logits[t], target) for t in range(steps)]).mean()
    mse = F.mse_loss(logits, torch.full_like(logits, phi))
    return (1.0 - lam) * ce + lam * mse
