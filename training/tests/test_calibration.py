"""Calibrated exits: the exact curve against the plain anytime rule, choosing on one split only."""

from __future__ import annotations

import numpy as np
import pytest

from spiketrain import anytime, calibration


def _logits(
    seed: int, steps: int = 6, n: int = 300, classes: int = 4, members: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.integers(classes, size=n)
    # Evidence for the right class that grows over time, with noise: early exits are sometimes wrong.
    logits = rng.normal(0.0, 1.5, size=(members, steps, n, classes))
    logits[:, :, np.arange(n), targets] += np.linspace(0.3, 2.0, steps)[None, :, None]
    return logits.astype(np.float32), targets


def test_every_point_of_the_curve_is_what_the_anytime_rule_gives_at_its_threshold():
    logits, targets = _logits(0, members=2)
    points = calibration.curve(logits, targets)
    assert points.thresholds[-1] == calibration.NEVER
    assert len(points.thresholds) > 100  # every distinct confidence, not a grid
    for i in np.linspace(0, len(points.thresholds) - 1, 40).astype(int):
        reference = anytime.anytime_ensemble(logits, targets, float(points.thresholds[i]))
        assert points.accuracy[i] == pytest.approx(reference.accuracy)
        assert points.mean_timesteps[i] == pytest.approx(reference.mean_timesteps)
        right = reference.predictions == targets
        right_at_t = anytime.anytime_ensemble(logits, targets, 1.0).predictions == targets
        assert points.n10[i] == int((right_at_t & ~right).sum())
        assert points.n01[i] == int((~right_at_t & right).sum())
    # The last point never exits early: no drop at all.
    assert points.mean_timesteps[-1] == logits.shape[1]
    assert points.drop[-1] == 0 and points.standard_error[-1] == 0


def test_an_exit_happens_at_a_confidence_equal_to_the_threshold():
    confidence = np.array([[0.5, 0.7], [0.8, 0.7], [0.9, 0.9]])
    exits = calibration.exits_at(confidence, np.array([0.7, 0.8, 0.85, 1.0]))
    assert exits.tolist() == [[1, 0], [1, 2], [2, 2], [2, 2]]


def test_choosing_keeps_the_upper_bound_within_the_budget_and_takes_the_fewest_timesteps():
    logits, targets = _logits(1)
    points = calibration.curve(logits, targets)
    previous = np.inf
    for budget in (0.1, 0.5, 1.0, 2.0, 5.0):
        i = calibration.choose(points, budget)
        upper = np.maximum(points.drop, 0) + calibration.CALIBRATION_Z * points.standard_error
        assert upper[i] <= budget / 100 + 1e-12
        feasible = upper <= budget / 100 + 1e-12
        assert points.mean_timesteps[i] == points.mean_timesteps[feasible].min()
        assert points.mean_timesteps[i] <= previous  # a looser budget never costs more timesteps
        previous = points.mean_timesteps[i]


def test_the_table_is_chosen_on_calibration_and_reported_on_test():
    cal_logits, cal_targets = _logits(2)
    test_logits, test_targets = _logits(3)
    table = calibration.calibration_table(cal_logits, cal_targets, test_logits, test_targets)
    assert [row["max_accuracy_drop"] for row in table] == list(calibration.BUDGETS_PT)
    for row in table:
        threshold = float(row["threshold"])  # type: ignore[arg-type]
        on_test = anytime.anytime_ensemble(test_logits, test_targets, threshold)
        test = row["test"]
        assert isinstance(test, dict)
        assert test["accuracy"] == pytest.approx(on_test.accuracy)
        assert test["mean_timesteps"] == pytest.approx(on_test.mean_timesteps)
        assert test["speedup"] == pytest.approx(cal_logits.shape[1] / on_test.mean_timesteps)
        # Swapping the test split for another changes nothing that was chosen.
    other = calibration.calibration_table(cal_logits, cal_targets, *_logits(4))
    assert [r["threshold"] for r in other] == [r["threshold"] for r in table]
    assert calibration.default_threshold(table) == table[2]["threshold"]
    assert calibration.metadata_table(table)[0] == {"max_accuracy_drop": 0.1, "threshold": table[0]["threshold"]}


def test_an_ensembles_compute_counts_every_member():
    logits, targets = _logits(5, members=3)
    table = calibration.calibration_table(logits, targets, logits, targets)
    for row in table:
        test = row["test"]
        assert isinstance(test, dict)
        assert test["compute_reduction"] == pytest.approx(test["speedup"] / 3)


def test_the_area_is_one_for_a_model_right_at_once_and_lower_otherwise():
    steps, n = 5, 50
    targets = np.arange(n) % 3
    perfect = np.zeros((1, steps, n, 3), np.float32)
    perfect[:, :, np.arange(n), targets] = 20.0
    assert calibration.curve(perfect, targets).area() == pytest.approx(1.0)
    logits, targets = _logits(6)
    assert 0.0 < calibration.curve(logits, targets).area() < 1.0


def test_halves_are_disjoint_stratified_and_fixed():
    targets = np.repeat(np.arange(10), 36)
    first, second = calibration.halves(targets)
    assert len(first) == len(second) == 180
    assert not set(first) & set(second)
    assert np.bincount(targets[first]).tolist() == [18] * 10
    again, _ = calibration.halves(targets)
    assert again.tolist() == first.tolist()


def test_synaptic_operations_are_counted_up_to_each_exit_over_every_member():
    logits, targets = _logits(7, members=2)
    synops = np.ones((2, logits.shape[1], logits.shape[2]))  # one operation per member and step
    table = calibration.calibration_table(logits, targets, logits, targets, test_synaptic_ops=synops)
    for row in table:
        test = row["test"]
        assert isinstance(test, dict)
        assert test["synaptic_ops"] == pytest.approx(2 * test["mean_timesteps"])
        assert test["synaptic_ops_at_t"] == pytest.approx(2 * logits.shape[1])


def test_an_estimated_gain_does_not_pay_for_the_margin():
    # Two candidates on 500 samples: an early one that broke 4 answers and fixed 5 (drop -0.2 pt, SE 0.6 pt),
    # and never exiting early. Unfloored, -0.2 + 0.6 fits 0.5 pt; floored, 0 + 0.6 does not.
    curve = calibration.Curve(
        thresholds=np.array([0.5, 1.0]),
        accuracy=np.array([0.9, 0.898]),
        mean_timesteps=np.array([1.2, 10.0]),
        n10=np.array([4, 0]),
        n01=np.array([5, 0]),
        samples=500,
        timesteps=10,
        accuracy_at_t=0.898,
    )
    assert calibration.choose(curve, 0.5, floor=False) == 0
    assert calibration.choose(curve, 0.5) == 1
