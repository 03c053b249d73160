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
