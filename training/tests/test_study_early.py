"""The early-answers paired stage (issue 30): its figures, paired intervals and the shipping rule, on
synthetic outcomes whose answer is known, and one real calibration of synthetic logits."""

from __future__ import annotations

import numpy as np

from spiketrain import study_early as se
from spiketrain.study_protocol import TIMESTEPS

N = 400


def _outcome(seed: int, exit_at: int, right_share: float, rng: np.random.Generator, gap: float = 0.5) -> se.Outcome:
    """A run that is right on ``right_share`` of the samples from t = 1 on and exits every policy at ``exit_at``."""
    right_rows = rng.random(N) < right_share
    right = np.repeat(right_rows[None], TIMESTEPS, axis=0)
    exits = {k: np.full(N, exit_at) for k in se.POLICIES}
    return se.Outcome(
        seed=seed,
        right=right,
        exits=exits,
        right_at_exit={k: right_rows.copy() for k in se.POLICIES},
        oracle=np.ones(N),
        served="schedule",
        calibration_served_timesteps=float(exit_at),
        calibration_accuracy_at_t=right_share,
        members=1,
        robustness={"clean": 95.0, se.SHIFT: 95.0 - gap},
        area=right_share,
    )


def test_metrics_are_the_speedup_drop_and_accuracies_of_the_exits() -> None:
    o = _outcome(0, 4, 0.9, np.random.default_rng(0))
    m = se.metrics(o)
    assert m["cutoff: speedup (x)"] == TIMESTEPS / 4
    assert m["served: drop (pt)"] == 0.0
    assert m["accuracy at T (%)"] == m["accuracy at t = 3 (%)"] == o.right[-1].mean() * 100
    assert m["oracle mean exit"] == 1.0


def test_a_faster_equally_accurate_arm_passes_and_ships() -> None:
    rng = np.random.default_rng(1)
    tet = {s: _outcome(s, 5, 0.95, rng) for s in range(4)}
    fast = {s: _outcome(s, 2, 0.95, rng) for s in range(4)}
    comparison = se.paired(fast, tet, draws=60)
    low = comparison["cutoff: speedup (x)"][1]
    assert low > 0, comparison
    assert "area under the curve" in comparison and "±2 px gap (pt)" in comparison
    chosen, failed = se.decide({"fast": fast}, {"fast": fast[0]}, {"fast": comparison})
    assert chosen == "fast" and failed == {"fast": []}


def test_the_gates_refuse_an_arm_that_loses_accuracy_or_robustness_or_speed() -> None:
    rng = np.random.default_rng(2)
    tet = {s: _outcome(s, 5, 0.95, rng) for s in range(4)}
    worse = {s: _outcome(s, 2, 0.90, rng, gap=3.0) for s in range(4)}
    slow = {s: _outcome(s, 6, 0.95, rng) for s in range(4)}
    comparisons = {"worse": se.paired(worse, tet, draws=60), "slow": se.paired(slow, tet, draws=60)}
    chosen, failed = se.decide({"worse": worse, "slow": slow}, {"worse": worse[0]}, comparisons)
    assert chosen is None
    assert any("accuracy at T" in r for r in failed["worse"])
    assert any("±2 px" in r for r in failed["worse"])
    assert any("speedup" in r for r in failed["slow"])
    assert not any("seeds" in r for r in failed["worse"]) and any("seeds" in r for r in failed["slow"])


def test_rules_come_from_the_calibration_split_and_apply_unchanged_to_the_test_split(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    classes, n = 4, 300

    def logits(targets: np.ndarray) -> np.ndarray:
        # Evidence for the target grows with t; noise keeps some samples wrong or late.
        signal = np.linspace(0.2, 2.0, TIMESTEPS)[:, None, None] * np.eye(classes)[targets][None]
        return (signal + rng.normal(0, 1.0, (TIMESTEPS, n, classes)))[None].astype(np.float32)

    cal_t, test_t = rng.integers(classes, size=n), rng.integers(classes, size=n)
    cal, test = logits(cal_t), logits(test_t)
    cache = tmp_path / "rules.json"
    first = se.outcome(cal, test, cal_t, test_t, 0, cache)
    again = se.outcome(cal, test, cal_t, test_t, 0, cache)  # from the cache: the same rules
    for kind in se.POLICIES:
        assert np.array_equal(first.exits[kind], again.exits[kind])
        assert ((first.exits[kind] >= 1) & (first.exits[kind] <= TIMESTEPS)).all()
    assert first.served in ("cutoff", "schedule", "learned")
    assert np.array_equal(first.exits["served"], first.exits[first.served])
    # The right-at-exit flags are the running-mean prediction at the exit.
    kind = "cutoff"
    picked = first.right[first.exits[kind] - 1, np.arange(n)]
    assert np.array_equal(picked, first.right_at_exit[kind])
