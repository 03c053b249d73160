"""What an exit policy reads after each timestep, computed exactly as the server computes it.

The server keeps, per request row, the members' running-mean softmax and the ensemble's mean of them
(:func:`spiketrain.anytime.ensemble_probabilities`). From that state it derives the features below after
every timestep, in float64 and in the same order of operations as ``src/engine/exit_policy.rs``, so that an
offline evaluation and the server make the same exit decisions (they can differ only where a score lies
within float rounding of a decision boundary: ``exp``, ``ln`` and ``tanh`` may round differently in
numpy and in Rust's ``libm``).

Features (``FEATURES``, plus one indicator per timestep ``step_1 .. step_{T-1}``):

* ``confidence``: the largest probability of the ensemble mean;
* ``margin``: the largest minus the second largest;
* ``entropy``: ``-sum_c p_c ln p_c`` over the classes in order (terms with ``p_c = 0`` skipped);
* ``progress``: ``t / T``;
* ``changed``: 1 when the predicted class differs from the previous timestep's (and at t = 1), else 0;
* ``run_length``: how many timesteps in a row, ending now, predicted this class, divided by T;
* ``agreement``: the fraction of members whose own running-mean prediction is the ensemble's class;
* ``variance``: the members' variance on the ensemble's class (0 for a single model).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import anytime
from .anytime import oracle_exits

__all__ = ["FEATURES", "Trajectories", "feature_names", "features", "oracle_exits", "trajectories"]

FEATURES = ("confidence", "margin", "entropy", "progress", "changed", "run_length", "agreement", "variance")
STEP_PREFIX = "step_"


def feature_names(timesteps: int) -> list[str]:
    """Every feature a learned policy of a model with ``timesteps`` may read, in a fixed order."""
    return [*FEATURES, *(f"{STEP_PREFIX}{t}" for t in range(1, timesteps))]


@dataclass(frozen=True)
class Trajectories:
    """The server's per-row state after each timestep, for ``N`` samples over ``T`` timesteps."""

    mean: np.ndarray  # float64 [T, N, C]: the ensemble's mean of running-mean softmaxes
    variance: np.ndarray  # float64 [T, N]: members' variance on the chosen class
    prediction: np.ndarray  # int [T, N]: argmax of ``mean`` (first on ties)
    member_predictions: np.ndarray  # int [K, T, N]

    @property
    def timesteps(self) -> int:
        return int(self.mean.shape[0])

    @property
    def samples(self) -> int:
        return int(self.mean.shape[1])

    @property
    def confidence(self) -> np.ndarray:
        """``[T, N]``: the largest probability (the plain cutoff's score)."""
        return np.take_along_axis(self.mean, self.prediction[..., None], axis=2)[..., 0]

    def subset(self, index: np.ndarray) -> Trajectories:
        return Trajectories(
            mean=self.mean[:, index],
            variance=self.variance[:, index],
            prediction=self.prediction[:, index],
            member_predictions=self.member_predictions[:, :, index],
        )


def trajectories(member_logits: np.ndarray) -> Trajectories:
    """``member_logits [K, T, N, C]`` (K = 1 for a single model) -> the server's per-row state."""
    mean, variance = anytime.ensemble_probabilities(member_logits)
    members = np.stack([anytime.running_probabilities(logits).argmax(axis=2) for logits in member_logits])
    return Trajectories(mean=mean, variance=variance, prediction=mean.argmax(axis=2), member_predictions=members)


def features(traj: Trajectories) -> np.ndarray:
    """``[T, N, F]`` float64, the columns of :func:`feature_names`, as the server computes them."""
    steps, n, classes = traj.mean.shape
    mean = traj.mean
    best = traj.prediction
    confidence = traj.confidence
    # The largest probability among the other classes (equal to the best one on a tie).
    others = mean.copy()
    np.put_along_axis(others, best[..., None], -np.inf, axis=2)
    margin = confidence - others.max(axis=2)
    # Summed class by class in order, like the server's loop (numpy's pairwise sum would round differently).
    acc = np.zeros((steps, n))
    for c in range(classes):
        p = mean[:, :, c]
        with np.errstate(divide="ignore", invalid="ignore"):
            term = np.where(p > 0.0, p * np.log(np.where(p > 0.0, p, 1.0)), 0.0)
        acc = acc + term
    entropy = -acc
    t = np.arange(1, steps + 1, dtype=np.float64)[:, None]
    progress = np.broadcast_to(t / steps, (steps, n))
    changed = np.ones((steps, n))
    changed[1:] = (best[1:] != best[:-1]).astype(np.float64)
    run = np.ones((steps, n))
    for step in range(1, steps):
        run[step] = np.where(best[step] == best[step - 1], run[step - 1] + 1.0, 1.0)
    members = traj.member_predictions.shape[0]
    agree = np.zeros((steps, n))
    for k in range(members):
        agree = agree + (traj.member_predictions[k] == best).astype(np.float64)
    columns = [
        confidence,
        margin,
        entropy,
        progress,
        changed,
        run / steps,
        agree / members,
        traj.variance,
    ]
    for step in range(1, steps):
        indicator = np.zeros((steps, n))
        indicator[step - 1] = 1.0
        columns.append(indicator)
    return np.stack(columns, axis=-1)
