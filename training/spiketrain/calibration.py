"""Calibrated exits: from "at most b points less accuracy" to a threshold, chosen on one split, reported on another.

A user thinks "I accept at most half a point less accuracy than the model at T; use as few timesteps
as you can". This module turns that budget into a confidence threshold without looking at the data
it is reported on:

* **The exact curve.** Exits change only where the threshold passes one of the confidences the
  samples reach before T, so every distinct such value is a candidate (not a grid). For each the
  accuracy, the mean timesteps and the paired counts against the same model at T: ``n10`` (right at
  T, wrong at the exit) and ``n01`` (the other way round). The drop is ``(n10 - n01) / N`` and its
  paired standard error ``sqrt(n10 + n01) / N``.
* **Choosing** (calibration split): for each budget the candidate with the fewest mean timesteps whose
  drop stays within the budget by a conservative rule: ``max(drop, 0) + CALIBRATION_Z * SE <= budget``
  (an upper confidence bound; ties go to the higher threshold). The drop is floored at zero so that an
  estimated *gain* from stopping early, which is largest where the estimate is noisiest, never pays for
  the margin (the exit policies' point rule is the same; ``floor=False`` reproduces the studies that
  registered the older rule). Threshold 1.0 (never exit early) always qualifies, so every budget has
  an answer.
* **Reporting** (test split): the chosen threshold's realised drop with its paired standard error,
  mean timesteps, speedup and compute (member-timesteps against one member at T).

Thresholds are placed halfway between neighbouring candidates, so that a confidence that differs in
its last bits on another CPU does not move an exit on the calibration split.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from . import anytime

#: Accuracy-drop budgets (percentage points) every calibration table holds.
BUDGETS_PT = (0.1, 0.25, 0.5, 1.0, 2.0)
#: The budget whose threshold becomes the model's default.
DEFAULT_BUDGET_PT = 0.5
#: Standard errors of margin in the choosing rule (one-sided upper bound on the paired drop).
CALIBRATION_Z = 1.0
#: Threshold that never exits early (the server's rule: 1.0 disables the confidence exit).
NEVER = 1.0


@dataclass(frozen=True)
class Curve:
    """Every operating point of a model (or ensemble) on one split, ascending threshold."""

    thresholds: np.ndarray  # float64 [K]: a threshold that realises each point
    accuracy: np.ndarray  # [K]
    mean_timesteps: np.ndarray  # [K]
    n10: np.ndarray  # int [K]: right at T, wrong at the exit
    n01: np.ndarray  # int [K]: wrong at T, right at the exit
    samples: int
    timesteps: int
    accuracy_at_t: float

    @property
    def drop(self) -> np.ndarray:
        return (self.n10 - self.n01) / self.samples

    @property
    def standard_error(self) -> np.ndarray:
        return np.sqrt(self.n10 + self.n01) / self.samples

    def area(self) -> float:
        """Normalised area under accuracy against mean timesteps over [1, T] (1.0: right at once, always)."""
        order = np.argsort(self.mean_timesteps, kind="stable")
        steps = np.concatenate([[1.0], self.mean_timesteps[order], [float(self.timesteps)]])
        accuracy = np.concatenate([[self.accuracy[order][0]], self.accuracy[order], [self.accuracy_at_t]])
        if self.timesteps == 1:
            return float(self.accuracy_at_t)
        return float(np.trapezoid(accuracy, steps) / (self.timesteps - 1))


def confidences(member_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``member_logits [K, T, N, C]`` -> (confidence ``[T, N]``, prediction ``[T, N]``), the server's rule."""
    mean, _ = anytime.ensemble_probabilities(member_logits)
    return mean.max(axis=2), mean.argmax(axis=2)


def exits_at(confidence: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """0-based exit timestep ``[K, N]`` for each threshold: the first t < T-1 whose confidence reaches
    it (a threshold of 1.0 never exits early), else T-1."""
    steps = confidence.shape[0]
    running = np.maximum.accumulate(confidence[:-1], axis=0)  # [T-1, N], non-decreasing in t
    exits = np.empty((len(thresholds), confidence.shape[1]), dtype=np.int64)
    for n in range(confidence.shape[1]):
        exits[:, n] = np.searchsorted(running[:, n], thresholds, side="left")
    exits[np.asarray(thresholds) >= NEVER] = steps - 1
    return exits


def curve(member_logits: np.ndarray, targets: np.ndarray) -> Curve:
    """The exact accuracy-against-timesteps curve over every distinct confidence before T."""
    confidence, prediction = confidences(member_logits)
    values = np.unique(confidence[:-1])
    values = values[values < NEVER]
    # A threshold halfway below each candidate realises it; 1.0 closes the list.
    below = np.concatenate([[values[0] / 2 if len(values) else 0.5], values[:-1]])
    thresholds = np.concatenate([(below + values) / 2, [NEVER]])
    return _points(confidence, prediction, targets, thresholds)


def evaluate(member_logits: np.ndarray, targets: np.ndarray, thresholds: np.ndarray) -> Curve:
    confidence, prediction = confidences(member_logits)
    return _points(confidence, prediction, targets, np.asarray(thresholds, dtype=np.float64))


def _points(confidence: np.ndarray, prediction: np.ndarray, targets: np.ndarray, thresholds: np.ndarray) -> Curve:
    steps, n = confidence.shape
    exits = exits_at(confidence, thresholds)
    chosen = np.take_along_axis(prediction, exits, axis=0)  # [K, N]
    right = chosen == targets[None]
    right_at_t = prediction[-1] == targets
    return Curve(
        thresholds=thresholds,
        accuracy=right.mean(axis=1),
        mean_timesteps=(exits + 1).mean(axis=1),
        n10=(right_at_t[None] & ~right).sum(axis=1),
        n01=(~right_at_t[None] & right).sum(axis=1),
        samples=n,
        timesteps=steps,
        accuracy_at_t=float(right_at_t.mean()),
    )


def choose(calibration: Curve, budget_pt: float, z: float = CALIBRATION_Z, floor: bool = True) -> int:
    """Index of the point with the fewest mean timesteps whose drop's upper bound (the drop floored at
    zero, unless ``floor`` is off) fits the budget."""
    drop = np.maximum(calibration.drop, 0.0) if floor else calibration.drop
    upper = drop + z * calibration.standard_error
    feasible = np.flatnonzero(upper <= budget_pt / 100 + 1e-12)
    best = feasible[np.lexsort((-calibration.thresholds[feasible], calibration.mean_timesteps[feasible]))[0]]
    return int(best)


@dataclass(frozen=True)
class Operating:
    """One threshold on one split."""

    accuracy: float
    accuracy_at_t: float
    drop_pt: float
    drop_se_pt: float
    mean_timesteps: float
    speedup: float
    #: Member-timesteps against one member at T (an ensemble of K spends K per timestep).
    compute_reduction: float
    samples: int
    #: Mean synaptic operations per sample up to its exit (all members), and at T, when known.
    synaptic_ops: float | None = None
    synaptic_ops_at_t: float | None = None


def _synaptic_ops(synops: np.ndarray, confidence_exits: np.ndarray) -> tuple[float, float]:
    """(mean synaptic operations up to each sample's exit, mean over all T), ``synops [K, T, N]``."""
    cumulative = np.cumsum(synops.sum(axis=0), axis=0)  # [T, N], all members
    at_exit = np.take_along_axis(cumulative, confidence_exits[None], axis=0)[0]
    return float(at_exit.mean()), float(cumulative[-1].mean())


def _operating(points: Curve, i: int, members: int, synops: tuple[float, float] | None = None) -> Operating:
    return Operating(
        accuracy=float(points.accuracy[i]),
        accuracy_at_t=points.accuracy_at_t,
        drop_pt=float(points.drop[i] * 100),
        drop_se_pt=float(points.standard_error[i] * 100),
        mean_timesteps=float(points.mean_timesteps[i]),
        speedup=float(points.timesteps / points.mean_timesteps[i]),
        compute_reduction=float(points.timesteps / (members * points.mean_timesteps[i])),
        samples=points.samples,
        synaptic_ops=None if synops is None else synops[0],
        synaptic_ops_at_t=None if synops is None else synops[1],
    )


def calibration_table(
    calibration_logits: np.ndarray,
    calibration_targets: np.ndarray,
    test_logits: np.ndarray,
    test_targets: np.ndarray,
    budgets_pt: tuple[float, ...] = BUDGETS_PT,
    test_synaptic_ops: np.ndarray | None = None,
) -> list[dict[str, object]]:
    """For each budget: the threshold chosen on the calibration split, its figures there and on the
    test split. ``*_logits`` are ``[K, T, N, C]`` (K members; 1 for a single model);
    ``test_synaptic_ops`` ``[K, T, N]``, when given, adds the synaptic operations spent."""
    members = calibration_logits.shape[0]
    on_calibration = curve(calibration_logits, calibration_targets)
    rows = []
    for budget in budgets_pt:
        i = choose(on_calibration, budget)
        threshold = float(on_calibration.thresholds[i])
        on_test = evaluate(test_logits, test_targets, np.array([threshold]))
        synops = None
        if test_synaptic_ops is not None:
            confidence, _ = confidences(test_logits)
            synops = _synaptic_ops(test_synaptic_ops, exits_at(confidence, np.array([threshold]))[0])
        rows.append(
            {
                "max_accuracy_drop": budget,
                "threshold": threshold,
                "calibration": asdict(_operating(on_calibration, i, members)),
                "test": asdict(_operating(on_test, 0, members, synops)),
            }
        )
    return rows


def default_threshold(table: list[dict[str, object]], budget_pt: float = DEFAULT_BUDGET_PT) -> float:
    for row in table:
        if row["max_accuracy_drop"] == budget_pt:
            return float(row["threshold"])  # type: ignore[arg-type]
    raise ValueError(f"no {budget_pt} pt row in the calibration table")


def metadata_table(table: list[dict[str, object]]) -> list[dict[str, float]]:
    """What the server reads: budget -> threshold, ascending budget."""
    return [{"max_accuracy_drop": float(r["max_accuracy_drop"]), "threshold": float(r["threshold"])} for r in table]  # type: ignore[arg-type]


def halves(targets: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A stratified split of a held-out set into (calibration, test) index halves, for data sets that
    have no calibration split of their own (digits, event-digits)."""
    from sklearn.model_selection import train_test_split

    order = np.arange(len(targets))
    if len(order) < 2:  # nothing to split (quick runs on a sample or two): both halves are the set
        return order, order
    counts = np.bincount(targets)
    # Stratified where every class can go both ways; quick runs on a few samples split plainly.
    stratify = targets if counts[counts > 0].min() >= 2 else None
    first, second = train_test_split(order, test_size=0.5, random_state=seed, stratify=stratify)
    return np.sort(first), np.sort(second)


def markdown(table: list[dict[str, object]], calibration_name: str, test_name: str) -> list[str]:
    first = table[0]["test"] if table else {}
    synops = isinstance(first, dict) and first.get("synaptic_ops") is not None
    lines = [
        f"| budget (pt) | threshold | {calibration_name}: drop (pt) | mean timesteps | {test_name}: accuracy % | "
        "drop ± SE (pt) | mean timesteps | speedup | compute reduction |"
        + (" synaptic ops (at T) |" if synops else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if synops else ""),
    ]
    for row in table:
        c, t = row["calibration"], row["test"]
        assert isinstance(c, dict) and isinstance(t, dict)
        lines.append(
            f"| {row['max_accuracy_drop']} | {row['threshold']:.6f} | {c['drop_pt']:.2f} | {c['mean_timesteps']:.3f} | "
            f"{t['accuracy'] * 100:.2f} | {t['drop_pt']:.2f} ± {t['drop_se_pt']:.2f} | {t['mean_timesteps']:.3f} | "
            f"{t['speedup']:.2f}x | {t['compute_reduction']:.2f}x |"
            + (
                ""
                if t.get("synaptic_ops") is None
                else f" {t['synaptic_ops'] / 1e6:.2f}M of {t['synaptic_ops_at_t'] / 1e6:.2f}M |"
            )
        )
    return lines
