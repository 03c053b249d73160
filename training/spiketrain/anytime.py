"""Offline anytime evaluation: the cutoff rule the server applies, computed over recorded logits.

After timestep t the prediction is ``softmax(mean_{tau <= t} logits_tau)``; a sample exits at the first
t whose maximum probability reaches the threshold, or at T. Computed in float64, like the server, so
that exit timesteps agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_SWEEP = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


@dataclass(frozen=True)
class AnytimeResult:
    threshold: float
    exit_timesteps: np.ndarray  # int, [N], 1-based
    predictions: np.ndarray  # int, [N]
    accuracy: float
    mean_timesteps: float


def running_probabilities(logits: np.ndarray) -> np.ndarray:
    """``logits [T, N, C]`` -> softmax of the running mean ``[T, N, C]`` (float64)."""
    running = np.cumsum(logits.astype(np.float64), axis=0)
    running /= np.arange(1, logits.shape[0] + 1, dtype=np.float64)[:, None, None]
    shifted = running - running.max(axis=2, keepdims=True)
    expd = np.exp(shifted)
    return expd / expd.sum(axis=2, keepdims=True)


def accuracy_per_timestep(logits: np.ndarray, targets: np.ndarray) -> list[float]:
    """Accuracy when every sample is stopped at t, for t = 1..T."""
    predictions = running_probabilities(logits).argmax(axis=2)
    return [float((predictions[t] == targets).mean()) for t in range(logits.shape[0])]


def _exit_where(confident: np.ndarray) -> np.ndarray:
    """First confident timestep per sample (0-based), T - 1 where none is: ``confident [T, N]``."""
    confident = confident.copy()
    confident[-1] = True  # everyone stops at T
    return confident.argmax(axis=0)


def _confident(best: np.ndarray, threshold: float) -> np.ndarray:
    # A threshold of 1.0 disables the confidence exit (the server does the same): a saturated
    # softmax can round to exactly 1.0, and "1.0" is how a caller asks for all T steps.
    if threshold < 1.0:
        return best >= threshold
    return np.zeros(best.shape, dtype=bool)


def anytime(logits: np.ndarray, targets: np.ndarray, threshold: float) -> AnytimeResult:
    """A single model is an ensemble of one: the same rule, the same arithmetic."""
    return anytime_ensemble(logits[None], targets, threshold)


def summary(result: AnytimeResult, timesteps: int, with_samples: bool = False) -> dict[str, object]:
    """The JSON form of a result, as ``eval.json`` stores it."""
    out: dict[str, object] = {
        "threshold": result.threshold,
        "accuracy": result.accuracy,
        "mean_timesteps": result.mean_timesteps,
        "speedup": timesteps / result.mean_timesteps,
    }
    if with_samples:
        out["exit_timesteps"] = result.exit_timesteps.tolist()
        out["predictions"] = result.predictions.tolist()
    return out


@dataclass(frozen=True)
class EnsembleAnytimeResult(AnytimeResult):
    variances: np.ndarray  # float64, [N]: members' variance on the chosen class at exit


def ensemble_probabilities(member_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``member_logits [K, T, N, C]`` -> (mean probabilities ``[T, N, C]``, variance on the best class ``[T, N]``).

    Each member's prediction is its own running-mean softmax; the ensemble's is their mean, and
    its uncertainty the members' variance on the class the mean picks. Summed member by member, in
    order, as the server does.
    """
    members = [running_probabilities(logits) for logits in member_logits]
    total = np.zeros_like(members[0])
    for p in members:
        total += p
    mean = total / len(members)
    best = mean.argmax(axis=2)[..., None]  # [T, N, 1]
    centre = np.take_along_axis(mean, best, axis=2)[..., 0]
    spread = np.zeros_like(centre)
    for p in members:
        spread += (np.take_along_axis(p, best, axis=2)[..., 0] - centre) ** 2
    return mean, spread / len(members)


def anytime_ensemble(
    member_logits: np.ndarray, targets: np.ndarray, threshold: float, max_variance: float | None = None
) -> EnsembleAnytimeResult:
    mean, variance = ensemble_probabilities(member_logits)
    confident = _confident(mean.max(axis=2), threshold)
    if max_variance is not None:
        confident &= variance <= max_variance
    exit_index = _exit_where(confident)
    samples = np.arange(mean.shape[1])
    predictions = mean[exit_index, samples].argmax(axis=1)
    exits = exit_index + 1
    return EnsembleAnytimeResult(
        threshold=threshold,
        exit_timesteps=exits,
        predictions=predictions,
        accuracy=float((predictions == targets).mean()),
        mean_timesteps=float(exits.mean()),
        variances=variance[exit_index, samples],
    )


def oracle_exits(predictions: np.ndarray) -> np.ndarray:
    """Per sample, the first t (1-based) from which the prediction equals the one at T at every later step:
    the earliest exit an oracle could take without changing the answer at T. ``predictions [T, N]`` -> ``[N]``."""
    differs = predictions != predictions[-1][None]  # [T, N]; never true at T
    steps = predictions.shape[0]
    # The last timestep that differs (0-based) + 2, or 1 when none does.
    last_differing = steps - 1 - differs[::-1].argmax(axis=0)
    return np.where(differs.any(axis=0), last_differing + 2, 1)


def oracle_exit_timesteps(logits: np.ndarray) -> np.ndarray:
    """:func:`oracle_exits` of a single model's running-mean predictions: ``logits [T, N, C]`` -> ``[N]``."""
    return oracle_exits(running_probabilities(logits).argmax(axis=2))
