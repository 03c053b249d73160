import math

import numpy as np
import pytest

from spiketrain.anytime import accuracy_per_timestep, anytime, running_probabilities


def test_running_probabilities_are_the_softmax_of_the_running_mean():
    logits = np.array([[[2.0, 0.0]], [[0.0, 2.0]]], dtype=np.float32)  # T=2, N=1
    p = running_probabilities(logits)
    assert p[0, 0, 0] == pytest.approx(1 / (1 + math.exp(-2)))
    assert p[1, 0].tolist() == pytest.approx([0.5, 0.5])


def test_exit_at_the_first_confident_timestep():
    # sample 0 confident at t=1; sample 1 never confident; sample 2 confident at t=2
    logits = np.array(
        [
            [[5.0, 0.0], [0.0, 0.1], [0.0, 1.0]],
            [[5.0, 0.0], [0.1, 0.0], [0.0, 5.0]],
            [[5.0, 0.0], [0.0, 0.1], [0.0, 5.0]],
        ],
        dtype=np.float32,
    )
    targets = np.array([0, 1, 1])
    result = anytime(logits, targets, threshold=0.9)
    assert result.exit_timesteps.tolist() == [1, 3, 2]
    assert result.predictions.tolist() == [0, 1, 1]
    assert result.accuracy == 1.0
    assert result.mean_timesteps == pytest.approx(2.0)
    assert accuracy_per_timestep(logits, targets) == pytest.approx(
        [1.0, 2 / 3, 1.0]
    )  # t=2: sample 1 ties, argmax picks 0


def test_threshold_one_runs_every_timestep_even_when_saturated():
    logits = np.array([[[100.0, -100.0]], [[100.0, -100.0]]], dtype=np.float32)
    assert running_probabilities(logits)[0, 0, 0] == 1.0  # saturated in float64
    assert anytime(logits, np.array([0]), threshold=1.0).exit_timesteps.tolist() == [2]


def test_ensemble_mean_and_variance_by_hand():
    from spiketrain.anytime import anytime_ensemble, ensemble_probabilities

    # K=2, T=1, N=1, C=2: member 0 -> [0.5, 0.5], member 1 -> [0.75, 0.25]
    logits = np.array([[[[0.0, 0.0]]], [[[math.log(3.0), 0.0]]]])
    mean, variance = ensemble_probabilities(logits)
    assert mean[0, 0].tolist() == pytest.approx([0.625, 0.375])
    assert variance[0, 0] == pytest.approx(0.015625)
    assert anytime_ensemble(logits, np.array([0]), threshold=0.6).exit_timesteps.tolist() == [1]
    # the same answer, but the members disagree too much for a tight bound: it runs to T (= 1 here)
    bounded = anytime_ensemble(logits, np.array([0]), threshold=0.6, max_variance=0.01)
    assert bounded.exit_timesteps.tolist() == [1]
    assert bounded.variances[0] == pytest.approx(0.015625)


def test_a_variance_bound_delays_the_exit():
    from spiketrain.anytime import anytime_ensemble

    # Members disagree at t=1 and agree from t=2.
    logits = np.array(
        [
            [[[4.0, 0.0]], [[4.0, 0.0]], [[4.0, 0.0]]],
            [[[0.0, 0.0]], [[8.0, 0.0]], [[4.0, 0.0]]],
        ]
    )
    free = anytime_ensemble(logits, np.array([0]), threshold=0.7)
    bounded = anytime_ensemble(logits, np.array([0]), threshold=0.7, max_variance=1e-3)
    assert free.exit_timesteps.tolist() == [1]
    assert bounded.exit_timesteps.tolist() == [2]
