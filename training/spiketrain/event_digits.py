"""``event-digits``: an event camera, simulated, looking at scikit-learn's digits (N-MNIST style).

Each 8x8 digit is upscaled to 28x28 and placed on a 34x34 sensor, which then makes three
saccades: over 300 ms the image moves along a triangle of a few pixels and back. The scene is
rendered every 5 ms; a pixel emits an event whenever its log intensity has moved by more than the
contrast threshold from the level of its last event (ON when brighter, OFF when darker), one event
per threshold crossed, timestamped by linear interpolation inside the 5 ms interval. Background
noise adds events at random pixels, times and polarities (a Poisson number per sample).

Everything is deterministic for a seed: sample ``i`` draws from ``default_rng([seed, i])``, so a
sample's events do not depend on which other samples were generated with it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .events import EventBinning

SENSOR = 34
DIGIT_SIZE = 28
WINDOW_US = 300_000
RENDER_STEP_US = 5_000
#: Saccade path: pixel offsets at 0, 100, 200 and 300 ms (a triangle and back to the start).
SACCADE = np.array([[0.0, 0.0], [2.0, 4.0], [4.0, 0.0], [0.0, 0.0]])


@dataclass(frozen=True)
class SimulatorConfig:
    contrast_threshold: float = 0.5
    #: Intensity added everywhere before the log, so that black pixels have a finite log.
    floor: float = 0.05
    #: Mean number of background-noise events per sample.
    noise_events: float = 20.0
    seed: int = 0


def binning(bins: int) -> EventBinning:
    return EventBinning(width=SENSOR, height=SENSOR, polarities=2, window_us=WINDOW_US, bins=bins)


def _offset(t_us: float) -> np.ndarray:
    leg = min(int(t_us // 100_000), len(SACCADE) - 2)
    frac = (t_us - leg * 100_000) / 100_000
    return SACCADE[leg] + (SACCADE[leg + 1] - SACCADE[leg]) * frac


def _render(digit: np.ndarray, t_us: float) -> np.ndarray:
    """The sensor's view at ``t_us``: the upscaled digit, shifted by the saccade, in [0, 1]."""
    canvas = np.zeros((SENSOR, SENSOR))
    start = (SENSOR - DIGIT_SIZE - 4) // 2
    canvas[start : start + DIGIT_SIZE, start : start + DIGIT_SIZE] = digit
    dy, dx = _offset(t_us)
    return np.clip(ndimage.shift(canvas, (dy, dx), order=1, mode="constant"), 0.0, 1.0)


def simulate(image: np.ndarray, index: int, config: SimulatorConfig = SimulatorConfig()) -> np.ndarray:
    """Events ``[N, 4]`` (int64: x, y, t_us, p) for one 8x8 digit with values 0..16, sorted by time."""
    rng = np.random.default_rng([config.seed, index])
    digit = np.clip(ndimage.zoom(image.astype(np.float64) / 16.0, DIGIT_SIZE / image.shape[0], order=1), 0.0, 1.0)
    times = np.arange(0, WINDOW_US + 1, RENDER_STEP_US)
    reference = np.log(_render(digit, 0.0) + config.floor)
    previous = reference.copy()
    chunks: list[np.ndarray] = []
    for t0, t1 in itertools.pairwise(times):
        level = np.log(_render(digit, float(t1)) + config.floor)
        change = level - reference
        crossings = np.floor(np.abs(change) / config.contrast_threshold).astype(np.int64)
        ys, xs = np.nonzero(crossings)
        if ys.size:
            n = crossings[ys, xs]
            polarity = (change[ys, xs] > 0).astype(np.int64)
            step = np.where(polarity == 1, config.contrast_threshold, -config.contrast_threshold)
            span = level[ys, xs] - previous[ys, xs]
            # One event per threshold crossed; the k-th happens where the linearly interpolated
            # level passes reference + k * step.
            repeat = np.repeat(np.arange(ys.size), n)
            k = np.arange(repeat.size) - np.repeat(np.cumsum(n) - n, n) + 1
            target = reference[ys, xs][repeat] + k * step[repeat]
            with np.errstate(divide="ignore", invalid="ignore"):
                frac = np.where(span[repeat] != 0, (target - previous[ys, xs][repeat]) / span[repeat], 1.0)
            t = np.minimum((t0 + np.clip(frac, 0.0, 1.0) * (t1 - t0)).astype(np.int64), WINDOW_US - 1)
            chunks.append(np.stack([xs[repeat], ys[repeat], t, polarity[repeat]], axis=1))
            reference[ys, xs] += n * step
        previous = level
    noise = rng.poisson(config.noise_events)
    chunks.append(
        np.stack(
            [
                rng.integers(SENSOR, size=noise),
                rng.integers(SENSOR, size=noise),
                rng.integers(WINDOW_US, size=noise),
                rng.integers(2, size=noise),
            ],
            axis=1,
        )
    )
    events = np.concatenate(chunks).astype(np.int64).reshape(-1, 4)
    return events[np.argsort(events[:, 2], kind="stable")]


def simulate_all(images: np.ndarray, first_index: int, config: SimulatorConfig = SimulatorConfig()) -> list[np.ndarray]:
    return [simulate(image[0] if image.ndim == 3 else image, first_index + i, config) for i, image in enumerate(images)]
