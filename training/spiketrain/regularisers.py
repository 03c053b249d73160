"""Regularisers that shape *when* a spiking network knows its answer.

Both look at each spiking layer's spikes ``s_t`` and post-reset membrane ``u_t`` (``[T, B, ...]``)
and only at samples the network already gets right at every timestep (a mask; no such sample, no
term), so that they reshape the dynamics of good answers instead of fighting the task loss.

STR, the Spatial-Temporal Regulariser (this project's reading of arXiv 2405.00699, whose equation is
not public): per layer l, timestep t and sample, the Spatial-Temporal Factor

    STF_{l,t} = mean(s_t) / (mean(|u_t|) / theta + eps)

is the ratio of what the layer sends on (spatial) to what it keeps in its membrane (temporal). STR
penalises how unevenly that ratio is spread over time:

    R = mean_l ( 1 - min_t STF_{l,t} / (max_t STF_{l,t} + eps) ),

averaged over the masked samples, so that early timesteps already carry as much of the answer as
late ones. The loss is ``L_TET + alpha * R``.

RCS (the same authors' earlier regulariser, arXiv 2301.09522): ``r_t = s_t + ReLU(u_t / theta)``;
the cosine similarity of each ``r_t`` to the detached mean of ``r`` over the last ``ceil(0.3 T)``
steps; per layer ``1 / (mean_t cos + 1e-5)``; the maximum over layers, averaged over masked samples.
RCS masks as the authors' code does: samples right at each of the last ``ceil(0.3 T)`` timesteps.

:class:`RegulariserOptions` holds the ablations the STR study tries (mask, t = 1, spread).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

STF_EPS = 1e-6
RCS_TAIL = 0.3


@dataclass(frozen=True)
class LayerTrace:
    spikes: torch.Tensor  # [T, B, ...]
    membrane: torch.Tensor  # [T, B, ...], after reset
    threshold: float


def correct_at_every_step(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``logits [T, B, C]`` -> bool ``[B]``: predicted right at every timestep (each step's own logits)."""
    return (logits.argmax(dim=2) == target[None]).all(dim=0)


def spatial_temporal_factor(trace: LayerTrace) -> torch.Tensor:
    """``[T, B]``: spikes sent over membrane kept, per timestep and sample."""
    steps, batch = trace.spikes.shape[:2]
    spatial = trace.spikes.reshape(steps, batch, -1).mean(dim=2)
    temporal = trace.membrane.reshape(steps, batch, -1).abs().mean(dim=2) / trace.threshold
    return spatial / (temporal + STF_EPS)


@dataclass(frozen=True)
class RegulariserOptions:
    """Ablations of the documented reading (the defaults). ``mask``: ``all`` (correct at every
    timestep) or ``tail`` (correct at each of the last ``ceil(0.3 T)`` timesteps, as the authors' RCS
    code masks); ``auto`` is ``all`` for STR and ``tail`` for RCS. ``skip_first``: leave out t = 1,
    where the membrane starts from zero. ``spread`` (STR only): ``minmax`` (1 - min/max over time) or
    ``logvar`` (the variance of log STF over time, which gives every timestep a gradient)."""

    mask: str = "auto"
    skip_first: bool = False
    spread: str = "minmax"


MASKS = ("auto", "all", "tail")
SPREADS = ("minmax", "logvar")
#: Added to STF before the log of the ``logvar`` spread: a silent layer (STF = 0) stays finite.
LOG_STF_EPS = 1e-3


def correct_at_tail(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``logits [T, B, C]`` -> bool ``[B]``: right at each of the last ``ceil(RCS_TAIL * T)`` timesteps."""
    tail = max(1, math.ceil(RCS_TAIL * logits.shape[0]))
    return (logits[-tail:].argmax(dim=2) == target[None]).all(dim=0)


def str_penalty(
    traces: list[LayerTrace], mask: torch.Tensor, options: RegulariserOptions = RegulariserOptions()
) -> torch.Tensor:
    if not bool(mask.any()):
        return torch.zeros((), device=mask.device)
    per_layer = []
    for trace in traces:
        stf = spatial_temporal_factor(trace)[:, mask]  # [T, B']
        if options.skip_first and stf.shape[0] > 1:
            stf = stf[1:]
        if options.spread == "logvar":
            per_layer.append(torch.log(stf + LOG_STF_EPS).var(dim=0, unbiased=False))
        else:
            per_layer.append(1.0 - stf.min(dim=0).values / (stf.max(dim=0).values + STF_EPS))
    return torch.stack(per_layer).mean()


def rcs_penalty(
    traces: list[LayerTrace], mask: torch.Tensor, options: RegulariserOptions = RegulariserOptions()
) -> torch.Tensor:
    if not bool(mask.any()):
        return torch.zeros((), device=mask.device)
    per_layer = []
    for trace in traces:
        r = trace.spikes + F.relu(trace.membrane / trace.threshold)
        if options.skip_first and r.shape[0] > 1:
            r = r[1:]
        steps = r.shape[0]
        r = r[:, mask].reshape(steps, int(mask.sum()), -1)  # [T, B', N]
        tail = max(1, math.ceil(RCS_TAIL * steps))
        reference = r[-tail:].mean(dim=0).detach()  # [B', N]
        cos = F.cosine_similarity(r, reference[None].expand_as(r), dim=2, eps=1e-8)  # [T, B']
        per_layer.append(1.0 / (cos.mean(dim=0) + 1e-5))  # [B']
    return torch.stack(per_layer).max(dim=0).values.mean()


def regulariser_loss(
    name: str,
    traces: list[LayerTrace],
    logits: torch.Tensor,
    target: torch.Tensor,
    options: RegulariserOptions = RegulariserOptions(),
) -> torch.Tensor:
    if name == "none":
        return torch.zeros((), device=logits.device)
    if name not in ("str", "rcs"):
        raise ValueError(f"unknown regulariser {name!r}; expected none, str or rcs")
    mask_rule = options.mask if options.mask != "auto" else ("all" if name == "str" else "tail")
    mask = correct_at_every_step(logits, target) if mask_rule == "all" else correct_at_tail(logits, target)
    if name == "str":
        return str_penalty(traces, mask, options)
    return rcs_penalty(traces, mask, options)
