"""Event augmentation and the robustness variants."""

from __future__ import annotations

import numpy as np

from spiketrain import augment, event_digits
from spiketrain.events import bin_events


def _events(seed: int, n: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    events = np.stack(
        [
            rng.integers(34, size=n),
            rng.integers(34, size=n),
            np.sort(rng.integers(300_000, size=n)),
            rng.integers(2, size=n),
        ],
        axis=1,
    )
    return events.astype(np.int64)


def test_batch_binning_equals_binning_each_sample():
    binning = event_digits.binning(10)
    samples = [_events(i) for i in range(3)]
    frames = augment.bin_batch(samples, binning)
    for i, events in enumerate(samples):
        np.testing.assert_array_equal(frames[i], bin_events(events, binning))


def test_a_shift_moves_events_and_drops_those_that_leave_the_sensor():
    binning = event_digits.binning(10)
    events = np.array([[0, 5, 10, 1], [33, 5, 20, 0], [10, 10, 30, 1]])
    moved = augment.shift_events(events, 2, -1, binning)
    assert moved.tolist() == [[2, 4, 10, 1], [12, 9, 30, 1]]


def test_augmentation_is_reproducible_from_its_seed_and_changes_the_frames():
    binning = event_digits.binning(10)
    samples = [_events(i) for i in range(4)]
    settings = augment.EventAugmentation()
    first = augment.augmented_frames(samples, binning, np.random.default_rng(0), settings)
    again = augment.augmented_frames(samples, binning, np.random.default_rng(0), settings)
    np.testing.assert_array_equal(first, again)
    plain = augment.bin_batch(samples, binning)
    assert not np.array_equal(first, plain)
    # Drops and shifts only ever remove events.
    assert first.sum() <= plain.sum()


def test_noise_adds_events_in_time_order():
    binning = event_digits.binning(10)
    events = _events(0, 100)
    noisy = augment.with_noise(events, 50.0, binning, seed=3)
    assert len(noisy) > len(events)
    assert np.all(np.diff(noisy[:, 2]) >= 0)
    np.testing.assert_array_equal(noisy, augment.with_noise(events, 50.0, binning, seed=3))


def test_augmented_events_stay_in_time_order_and_bin_by_count_like_the_contract():
    """Augment events, then bin: jitter may reorder events, and count binning reads their order."""
    time_binning = event_digits.binning(10)
    binning = time_binning.by_count(150)
    samples = [_events(i) for i in range(3)]
    settings = augment.EventAugmentation(jitter_us=20_000.0)
    moved = [augment.augment(e, binning, np.random.default_rng([5, i]), settings) for i, e in enumerate(samples)]
    for events in moved:
        assert np.all(np.diff(events[:, 2]) >= 0)
    frames = augment.augmented_frames(samples, binning, np.random.default_rng(9), settings)
    again = [augment.augment(e, binning, rng, settings) for rng in [np.random.default_rng(9)] for e in samples]
    for i, events in enumerate(again):
        np.testing.assert_array_equal(frames[i], bin_events(events, binning))
        assert frames[i].sum() == min(len(events), 10 * 150)
    # The same draws bin by time as before (the sort draws nothing; order within a time bin never mattered).
    time_frames = augment.augmented_frames(samples, time_binning, np.random.default_rng(9), settings)
    np.testing.assert_array_equal(time_frames, augment.bin_batch(again, time_binning))


def test_the_default_events_per_bin_covers_the_median_training_sample():
    from spiketrain.data import default_events_per_bin

    samples = [np.zeros((n, 4), np.int64) for n in (100, 205, 300, 1000)]
    assert default_events_per_bin(samples, 10) == 25  # median 252.5 / 10 = 25.25
    assert default_events_per_bin(samples[:3], 10) == 21  # 205 / 10 = 20.5, half up
    assert default_events_per_bin([np.zeros((3, 4))], 10) == 1  # never 0


def test_tools_that_re_evaluate_a_model_bin_as_it_was_trained() -> None:
    """calibrate, ensemble and policy_calibration load a model's data set with its own binning."""
    import json

    from spiketrain.data import load_dataset, model_binning

    binning = event_digits.binning(4)
    assert model_binning({"timesteps": "4"}) == {}
    assert model_binning({"events": json.dumps(binning.to_metadata())}) == {}
    count = {"events": json.dumps(binning.by_count(100).to_metadata())}
    assert model_binning(count) == {"binning": "count", "events_per_bin": 100}
    data = load_dataset("event-digits", limit=4, timesteps=4, **model_binning(count))
    assert data.binning == binning.by_count(100)
    assert data.train.events is not None
    np.testing.assert_array_equal(data.train.inputs[0], bin_events(data.train.events[0], data.binning))
