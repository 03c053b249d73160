"""Exit policies: when to stop stepping a row, decided after each timestep from what the server has.

Three kinds, each a family with one calibrated parameter ``lam`` (larger: later exits):

* ``cutoff``: stop once the confidence reaches ``lam`` (the plain rule; ``lam`` is the threshold).
* ``schedule``: a threshold per timestep, ``thresholds[t] = min(1, lam * (1 - slope * (t - 1) / (T - 1)))``:
  a threshold that falls linearly with t. Two degrees of freedom (``slope`` from a grid of
  ``SLOPES``, ``lam`` exact), searched on the calibration split; why this family: accuracy climbs with t,
  so the same confidence is worth more later, and a line is the smallest family that says so. A
  free vector over t (T - 1 parameters) would fit the calibration split's noise.
* ``learned``: a stop score, a tiny MLP (``HIDDEN`` tanh units) over the features of
  :mod:`spiketrain.exit_features`, trained to predict "the answer now is the model's answer at T" (no
  labels needed). It is fit on one half of the calibration split (the *fit fold*) and calibrated on the
  other half, never on the test split; it stops once its score reaches ``lam``.

Every timestep t < T may stop; at T every row stops. Two calibrations, neither on the test split:

* **point** (:func:`point_row`): for each budget the ``lam`` with the fewest mean timesteps whose drop,
  floored at zero, + ``CALIBRATION_Z`` paired SE fits the budget (with labels); without labels the
  *disagreement* (answer at exit differs from the answer at T), which bounds the drop, takes the drop's
  place. The floor: an estimated *gain* from stopping early (more answers fixed than broken on the
  calibration data) must not pay for the margin, because it is largest exactly where the estimate is
  noisiest (many answers flipping both ways) and the fewest-timesteps choice favours such noise.
* **guarantee** (:func:`guaranteed_row`): Learn-then-Test (Angelopoulos et al. 2021) on the disagreement
  loss: for each ``lam`` of a grid fixed before looking at the data, the null "disagreement risk >
  alpha" has the exact binomial p-value ``P(Binomial(n, alpha) <= k)``; the grid is tested from the
  most conservative ``lam`` down (fixed-sequence testing) until the first null not rejected at
  ``delta = 1 - level``; the schedule's slopes share ``delta`` (Bonferroni). With probability at least
  ``level`` over the calibration data, the chosen ``lam``'s disagreement risk is at most ``alpha =
  budget / 100``, and the accuracy drop against the model at T is at most its disagreement. Needs no labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import binom

from .exit_features import Trajectories, feature_names, features

#: Accuracy-drop budgets (percentage points) every policy is calibrated for.
BUDGETS_PT = (0.1, 0.25, 0.5, 1.0, 2.0)
#: The budget that chooses the policy serving ``max_accuracy_drop``.
DEFAULT_BUDGET_PT = 0.5
#: Guarantee levels (probability over the calibration data that the promise holds).
GUARANTEE_LEVELS = (0.9, 0.95)
#: Standard errors of margin in the point rule (as :mod:`spiketrain.calibration`).
CALIBRATION_Z = 1.0
#: The point rule in words (policy files, reports, and the key of cached choices).
POINT_RULE = f"fewest mean timesteps with max(drop, 0) + {CALIBRATION_Z} x paired SE <= budget"
#: The rule before the floor (the early-answers study registered it; nothing ships with it).
UNFLOORED_POINT_RULE = f"fewest mean timesteps with drop + {CALIBRATION_Z} x paired SE <= budget"
#: The schedule's slopes: 0 is the plain cutoff; 0.9 lets the last threshold fall to a tenth.
SLOPES = tuple(round(0.05 * i, 2) for i in range(19))
#: Hidden units of the learned stop score.
HIDDEN = 16
#: Seed of the fit/calibration fold split and of the MLP's initial weights.
FOLD_SEED = 0
#: Resamples of calibration/test for the guarantee's empirical violation rate.
RESAMPLES = 200
#: Calibration samples below which the richer policies are shipped but not served by default: with
#: a few hundred samples (``digits``: 180, half of them fitting the learned score) a budget of 0.5 pt
#: cannot be resolved, and a policy with more freedom than the cutoff overfits them (measured:
#: ``event-digits-str``'s schedule and learned rows chosen on 180 samples lost 4 pt on its test half).
MIN_SERVING_SAMPLES = 500

FORMAT = "spikeserve.exit-policies"
VERSION = 1
KINDS = ("cutoff", "schedule", "learned")


# --------------------------------------------------------------------------------------------------
# Deciding


@dataclass(frozen=True)
class Mlp:
    """A stop score: standardised features through tanh layers, then one linear output (its logit)."""

    features: list[str]
    input_mean: np.ndarray  # [F]
    input_scale: np.ndarray  # [F]
    #: (weights [out, in], bias [out]); every layer but the last is followed by tanh.
    layers: list[tuple[np.ndarray, np.ndarray]]

    def score(self, all_features: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """``all_features [T, N, F_all]`` (columns ``names``) -> ``[T, N]``, in the server's order of operations."""
        index = [list(names).index(name) for name in self.features]
        x = [(all_features[..., i] - self.input_mean[j]) / self.input_scale[j] for j, i in enumerate(index)]
        for depth, (weights, bias) in enumerate(self.layers):
            out = []
            for j in range(weights.shape[0]):
                acc = np.full(x[0].shape, bias[j])
                for i, value in enumerate(x):
                    acc = acc + weights[j, i] * value
                out.append(np.tanh(acc) if depth < len(self.layers) - 1 else acc)
            x = out
        return x[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "input_mean": [float(v) for v in self.input_mean],
            "input_scale": [float(v) for v in self.input_scale],
            "layers": [
                {"weights": [[float(w) for w in row] for row in weights], "bias": [float(b) for b in bias]}
                for weights, bias in self.layers
            ],
        }

    @staticmethod
    def from_json(spec: dict[str, Any]) -> Mlp:
        return Mlp(
            features=list(spec["features"]),
            input_mean=np.asarray(spec["input_mean"], dtype=np.float64),
            input_scale=np.asarray(spec["input_scale"], dtype=np.float64),
            layers=[
                (np.asarray(layer["weights"], dtype=np.float64), np.asarray(layer["bias"], dtype=np.float64))
                for layer in spec["layers"]
            ],
        )


def schedule_thresholds(lam: float, slope: float, timesteps: int) -> list[float]:
    """The schedule's threshold per timestep (1.0: never stop there on confidence)."""
    if not np.isfinite(lam):
        return [1.0] * timesteps
    span = max(timesteps - 1, 1)
    return [float(min(1.0, lam * (1.0 - slope * t / span))) for t in range(timesteps)]


def rule_stops(traj: Trajectories, kind: str, row: dict[str, Any], score: np.ndarray | None = None) -> np.ndarray:
    """``[T, N]``: where a policy row's own rule says stop, as the server decides (at T as well, where
    the server then names the policy as the exit's cause). ``score``: the learned policy's ``[T, N]``."""
    confidence = traj.confidence
    if kind == "cutoff":
        threshold = float(row["threshold"])
        return confidence >= threshold if threshold < 1.0 else np.zeros(confidence.shape, dtype=bool)
    if kind == "schedule":
        thresholds = np.asarray(row["thresholds"], dtype=np.float64)[:, None]
        return (confidence >= thresholds) & (thresholds < 1.0)
    if kind == "learned":
        assert score is not None
        threshold = row["threshold"]
        return score >= threshold if threshold is not None else np.zeros(score.shape, dtype=bool)
    raise ValueError(f"unknown policy kind {kind!r}")


def stops(traj: Trajectories, kind: str, row: dict[str, Any], score: np.ndarray | None = None) -> np.ndarray:
    """``[T, N]``: whether a policy row stops each sample at each timestep (the last always stops)."""
    stop = rule_stops(traj, kind, row, score).copy()
    stop[-1] = True
    return stop


def exits_of(stop: np.ndarray) -> np.ndarray:
    """0-based exit timestep ``[N]``: the first stop."""
    return stop.argmax(axis=0)


# --------------------------------------------------------------------------------------------------
# Families: a score per (t, sample) and a threshold lam on it


@dataclass(frozen=True)
class Family:
    """One policy shape whose exits are "the first t < T with score >= lam"."""

    kind: str
    score: np.ndarray  # [T, N]
    row: Callable[[float], dict[str, Any]]  # lam (inf: never) -> the row the server reads
    label: str
    extra: dict[str, Any] = field(default_factory=dict)


def cutoff_family(traj: Trajectories) -> Family:
    def row(lam: float) -> dict[str, Any]:
        return {"threshold": float(min(lam, 1.0)) if np.isfinite(lam) else 1.0}

    return Family("cutoff", traj.confidence, row, "cutoff")


def schedule_family(traj: Trajectories, slope: float) -> Family:
    steps = traj.timesteps
    span = max(steps - 1, 1)
    factor = (1.0 - slope * np.arange(steps) / span)[:, None]

    def row(lam: float) -> dict[str, Any]:
        return {"thresholds": schedule_thresholds(lam, slope, steps), "slope": slope}

    return Family("schedule", traj.confidence / factor, row, f"schedule (slope {slope:g})", {"slope": slope})


def learned_family(traj: Trajectories, mlp: Mlp) -> Family:
    score = mlp.score(features(traj), feature_names(traj.timesteps))

    def row(lam: float) -> dict[str, Any]:
        return {"threshold": float(lam) if np.isfinite(lam) else None}

    return Family("learned", score, row, "learned")


def exits_for(score: np.ndarray, lams: np.ndarray) -> np.ndarray:
    """0-based exits ``[L, N]`` for each ``lam`` (ascending or not): first t < T - 1 with score >= lam."""
    n = score.shape[1]
    running = np.maximum.accumulate(score[:-1], axis=0)  # [T-1, N], non-decreasing
    out = np.empty((len(lams), n), dtype=np.int64)
    for i in range(n):
        out[:, i] = np.searchsorted(running[:, i], lams, side="left")
    return out


def candidates(score: np.ndarray, positive: bool = False) -> np.ndarray:
    """Every distinct exit behaviour on this split, ascending: halfway below each distinct score
    before T (so that a score that rounds differently on another CPU does not move an exit here), then
    ``inf`` (never stop early). ``positive``: the score is a confidence (or one scaled by a positive
    factor), whose thresholds must stay above 0: the lowest candidate is half the lowest score."""
    values = np.unique(score[:-1])
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return np.array([np.inf])
    first = values[0] / 2 if positive else values[0] - max(1.0, abs(values[0]))
    below = np.concatenate([[first], values[:-1]])
    return np.concatenate([(below + values) / 2, [np.inf]])


@dataclass(frozen=True)
class Points:
    """Operating points of one family on one split, one per ``lam``."""

    lams: np.ndarray
    mean_timesteps: np.ndarray
    disagree: np.ndarray  # int: answer at exit != answer at T
    n10: np.ndarray | None  # int: right at T, wrong at exit (with labels)
    n01: np.ndarray | None
    samples: int

    def upper(self, z: float = CALIBRATION_Z, floor: bool = True) -> np.ndarray:
        """The point rule's upper bound on the drop (fraction): with labels the paired drop floored at
        zero (``floor``; unfloored: the rule before 2026-12-06, kept for the study that registered it)
        + z SE, without them the disagreement + z SE."""
        if self.n10 is not None and self.n01 is not None:
            drop = self.n10 - self.n01
            return ((np.maximum(drop, 0) if floor else drop) + z * np.sqrt(self.n10 + self.n01)) / self.samples
        return (self.disagree + z * np.sqrt(self.disagree)) / self.samples


def points(family: Family, traj: Trajectories, targets: np.ndarray | None, lams: np.ndarray) -> Points:
    exits = exits_for(family.score, lams)
    chosen = np.take_along_axis(traj.prediction, exits, axis=0)  # [L, N]
    final = traj.prediction[-1]
    n10 = n01 = None
    if targets is not None:
        right = chosen == targets[None]
        right_at_t = (final == targets)[None]
        n10 = (right_at_t & ~right).sum(axis=1)
        n01 = (~right_at_t & right).sum(axis=1)
    return Points(
        lams=lams,
        mean_timesteps=(exits + 1).mean(axis=1),
        disagree=(chosen != final[None]).sum(axis=1),
        n10=n10,
        n01=n01,
        samples=traj.samples,
    )


def point_choice(p: Points, budget_pt: float, floor: bool = True) -> int:
    """Index of the fewest mean timesteps whose upper bound fits the budget (ties: the larger lam)."""
    feasible = np.flatnonzero(p.upper(floor=floor) <= budget_pt / 100 + 1e-12)
    order = np.lexsort((-p.lams[feasible], p.mean_timesteps[feasible]))
    return int(feasible[order[0]])


def ltt_choice(disagree: np.ndarray, mean_timesteps: np.ndarray, n: int, alpha: float, delta: float) -> int:
    """Learn-then-Test over a grid ordered from the most conservative lam (index -1, never) down:
    the index of the last null rejected before the first that is not (-1: the never row)."""
    p_values = binom.cdf(disagree, n, alpha)
    chosen = len(disagree) - 1
    for i in range(len(disagree) - 1, -1, -1):
        if p_values[i] > delta:
            break
        chosen = i
    return chosen


def confidence_grid(max_score: float) -> np.ndarray:
    """The guarantee's grid for confidence-based scores, fixed before the data: fine near 1 (where the
    exits that matter are), up to the largest score a schedule can reach, then ``inf`` (never)."""
    fine = np.concatenate([np.linspace(0.05, 0.99, 189), 1.0 - np.logspace(-2.3, -8, 58)])
    above = np.linspace(1.0, max_score, 60)[1:] if max_score > 1.0 else np.array([])
    return np.unique(np.concatenate([fine, above, [np.inf]]))


def learned_grid(fit_score: np.ndarray) -> np.ndarray:
    """The guarantee's grid for the learned score: its quantiles on the *fit fold* (data the
    calibration never sees), then ``inf``."""
    return np.unique(np.concatenate([np.quantile(fit_score[:-1], np.linspace(0.0, 1.0, 401)), [np.inf]]))


# --------------------------------------------------------------------------------------------------
# Fitting the learned score


def fit_mlp(traj: Trajectories, seed: int = FOLD_SEED) -> Mlp:
    """The stop score, fit on ``traj`` (the fit fold): predicts "the answer now is the answer at T" from
    the features at t < T."""
    from sklearn.neural_network import MLPClassifier

    names = feature_names(traj.timesteps)
    table = features(traj)[:-1].reshape(-1, len(names))
    target = (traj.prediction[:-1] == traj.prediction[-1][None]).reshape(-1)
    mean = table.mean(axis=0)
    scale = table.std(axis=0)
    scale[scale < 1e-12] = 1.0
    x = (table - mean) / scale
    if target.all() or not target.any():  # nothing to tell apart: a constant score
        return Mlp(names, mean, scale, [(np.zeros((1, len(names))), np.array([1.0 if target.all() else -1.0]))])
    model = MLPClassifier(
        hidden_layer_sizes=(HIDDEN,), activation="tanh", alpha=1e-3, max_iter=3000, random_state=seed, tol=1e-6
    ).fit(x, target.astype(np.int64))
    layers = [
        (w.T.astype(np.float64).copy(), b.astype(np.float64).copy())
        for w, b in zip(model.coefs_, model.intercepts_, strict=True)
    ]
    return Mlp(names, mean, scale, layers)


def folds(n: int, seed: int = FOLD_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(fit fold, calibration fold) of a calibration split: a fixed random half each."""
    order = np.random.default_rng(seed).permutation(n)
    half = n // 2
    return np.sort(order[:half]), np.sort(order[half:])
