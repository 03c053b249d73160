"""Temporal Efficient Training (TET) loss (Deng et al., ICLR 2022).

``L = (1 - lam) * mean_t CE(o_t, y) + lam * MSE(o, phi)`` with ``phi = 1`` and ``lam = 1e-3``: every
timestep's output is pushed towards the label on its own, which is what makes early exits possible.

Beside it, two losses on the running mean of the logits (what the server's exit reads), selected by
:class:`LossOptions` (``python -m spiketrain.train --running-mean-weight / --distill-weight / --no-tet``).
"""

from __future__ import annotations

from dataclasses import dataclass

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


# --- Losses on what the exit reads -------------------------------------------------------------------
#
# The server decides on ``softmax(mean_{tau <= t} o_tau)``, the running mean of the logits, while TET
# supervises each ``o_t`` on its own. The two losses below act on the running mean itself.

#: Weights over timesteps t = 1..T (normalised to sum to 1), toward early t:
#: ``linear``: ``w_t ∝ T + 1 - t`` (t = 1 weighs T times as much as t = T);
#: ``harmonic``: ``w_t ∝ 1 / t``; ``uniform``: ``w_t ∝ 1``.
SCHEDULES = ("linear", "harmonic", "uniform")
DEFAULT_SCHEDULE = "linear"
DEFAULT_DISTILL_TEMPERATURE = 2.0


@dataclass(frozen=True)
class LossOptions:
    """The training loss: ``[L_TET] + running_mean_weight * L_RM + distill_weight * L_SD``.

    The defaults are TET alone, computed exactly as :func:`tet_loss` (bit for bit)."""

    tet: bool = True
    running_mean_weight: float = 0.0
    schedule: str = DEFAULT_SCHEDULE
    distill_weight: float = 0.0
    distill_temperature: float = DEFAULT_DISTILL_TEMPERATURE

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown timestep schedule {self.schedule!r}; expected one of {SCHEDULES}")
        if self.running_mean_weight < 0 or self.distill_weight < 0:
            raise ValueError("loss weights must not be negative")
        if self.distill_temperature <= 0:
            raise ValueError("the distillation temperature must be positive")
        if not self.tet and self.running_mean_weight == 0 and self.distill_weight == 0:
            raise ValueError("without TET, a running-mean or distillation weight must be positive")

    @property
    def is_tet(self) -> bool:
        """TET alone, the recipe of every model trained before these options existed."""
        return self == LossOptions()

    def name(self) -> str:
        parts = (["tet"] if self.tet else []) + (["running-mean"] if self.running_mean_weight > 0 else [])
        return "+".join(parts + (["self-distillation"] if self.distill_weight > 0 else []))


def timestep_weights(steps: int, schedule: str = DEFAULT_SCHEDULE) -> torch.Tensor:
    """``[steps]`` weights summing to 1 (float32), per :data:`SCHEDULES`."""
    t = torch.arange(1, steps + 1, dtype=torch.float64)
    if schedule == "linear":
        raw = steps + 1 - t
    elif schedule == "harmonic":
        raw = 1.0 / t
    elif schedule == "uniform":
        raw = torch.ones_like(t)
    else:
        raise ValueError(f"unknown timestep schedule {schedule!r}; expected one of {SCHEDULES}")
    return (raw / raw.sum()).float()


def running_mean_logits(logits: torch.Tensor) -> torch.Tensor:
    """``[T, B, C]`` -> the mean of the logits up to each t, ``[T, B, C]`` (what the exit's softmax reads)."""
    counts = torch.arange(1, logits.shape[0] + 1, dtype=logits.dtype, device=logits.device)
    return logits.cumsum(0) / counts[:, None, None]


def running_mean_loss(logits: torch.Tensor, target: torch.Tensor, schedule: str = DEFAULT_SCHEDULE) -> torch.Tensor:
    """``sum_t w_t CE(mean_{tau <= t} o_tau, y)``: the exit's prediction at every t is pushed to the label,
    early t more (``schedule``). ``logits [T, B, C]``, ``target [B]``."""
    if logits.dim() != 3:
        raise ValueError(f"running_mean_loss expects logits of shape [T, B, C], got {tuple(logits.shape)}")
    running = running_mean_logits(logits)
    weights = timestep_weights(logits.shape[0], schedule).to(logits.device)
    ce = torch.stack([F.cross_entropy(running[t], target) for t in range(logits.shape[0])])
    return (weights * ce).sum()


def self_distillation_loss(
    logits: torch.Tensor, temperature: float = DEFAULT_DISTILL_TEMPERATURE, schedule: str = DEFAULT_SCHEDULE
) -> torch.Tensor:
    """``tau^2 sum_{t < T} w_t KL(p_T || q_t)``, batch mean: the running mean's distribution at each t < T
    (``q_t = softmax(m_t / tau)``) pulled toward the model's own full-T one (``p_T = softmax(m_T / tau)``,
    stop-gradient: the teacher is not pulled back toward the early answers). ``w`` is ``schedule`` over
    t = 1..T-1, renormalised; ``tau^2`` keeps the gradient's scale independent of the temperature
    (Hinton et al., 2015). Zero when T = 1."""
    if logits.dim() != 3:
        raise ValueError(f"self_distillation_loss expects logits of shape [T, B, C], got {tuple(logits.shape)}")
    steps = logits.shape[0]
    if steps < 2:
        return logits.sum() * 0.0
    running = running_mean_logits(logits)
    teacher = F.log_softmax(running[-1].detach() / temperature, dim=-1)
    weights = timestep_weights(steps - 1, schedule).to(logits.device)
    kl = torch.stack(
        [
            F.kl_div(F.log_softmax(running[t] / temperature, dim=-1), teacher, reduction="batchmean", log_target=True)
            for t in range(steps - 1)
        ]
    )
    return temperature**2 * (weights * kl).sum()


def training_loss(logits: torch.Tensor, target: torch.Tensor, options: LossOptions | None = None) -> torch.Tensor:
    """The loss :class:`LossOptions` describes; with the defaults, :func:`tet_loss` itself."""
    options = options or LossOptions()
    terms = [tet_loss(logits, target)] if options.tet else []
    if options.running_mean_weight > 0:
        terms.append(options.running_mean_weight * running_mean_loss(logits, target, options.schedule))
    if options.distill_weight > 0:
        terms.append(
            options.distill_weight * self_distillation_loss(logits, options.distill_temperature, options.schedule)
        )
    loss = terms[0]
    for term in terms[1:]:
        loss = loss + term
    return loss
