"""``event-digits``: an event camera, simulated, looking at scikit-learn's digits (N-MNIST style).

Each 8x8 digit is upscaled to 28x28 and placed on a 34x34 sensor, which then makes three
saccades: over 300 ms the image moves along a triangle of a few pixels and back. The scene is
rendered every 5 ms; a pixel emits an event whenever its log intensity has moved by at least the
contrast threshold from the level of its last event (ON when brighter, OFF when darker), one event
per threshold crossed, timestamped by linear interpolation inside the 5 ms interval. Background
noise adds events at random pixels, times and polarities (a Poisson number per sample).

Everything is deterministic for a seed: sample ``i`` draws from ``default_rng([seed, i])``, so a
sample's events do not depend on which other samples were generated with it.

Why integer levels: numpy's ``log`` takes CPU-specific SIMD paths (AVX-512 and AVX2 differ in the last
bit), and a pixel that returns to the level of its last event sits exactly on a threshold crossing, so
a float comparison there emits one event more or less depending on the CPU. Log intensities are
therefore snapped to a grid of ``2**-LOG_GRID_BITS`` (about 1e-6) and every crossing is counted on
integer grid levels. A regenerated sample can then differ across CPUs only where a log intensity lies
within one ulp of a half grid step (odds about 1e-10 per pixel and frame); the tests regenerate the
shipped held-out samples and compare them within a stated tolerance, never bit for bit.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .events import EventBinning, bin_events

SENSOR = 34
DIGIT_SIZE = 28
WINDOW_US = 300_000
RENDER_STEP_US = 5_000
#: Saccade path: pixel offsets at 0, 100, 200 and 300 ms (a triangle and back to the start).
SACCADE = np.array([[0.0, 0.0], [2.0, 4.0], [4.0, 0.0], [0.0, 0.0]])
#: Log intensities are compared on a grid of 2**-20 (about 1e-6): see the module's docstring.
LOG_GRID_BITS = 20


@dataclass(frozen=True)
class SimulatorConfig:
    """The camera. The last three settings add a real sensor's imperfections; all off by default."""

    contrast_threshold: float = 0.5
    #: Intensity added everywhere before the log, so that black pixels have a finite log.
    floor: float = 0.05
    #: Mean number of background-noise events per sample.
    noise_events: float = 20.0
    seed: int = 0
    #: Per-pixel contrast-threshold mismatch: each pixel's threshold is the contrast threshold times
    #: ``1 + N(0, threshold_mismatch)`` (at least one grid level), fixed for the sensor (drawn from
    #: ``seed`` alone), as a real sensor's fixed-pattern mismatch is.
    threshold_mismatch: float = 0.0
    #: A pixel that fired stays silent for this long (its level keeps following the scene).
    refractory_us: int = 0
    #: Standard deviation of Gaussian timestamp jitter added to every event (clipped to the window).
    jitter_us: float = 0.0


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


def log_levels(intensity: np.ndarray, floor: float) -> np.ndarray:
    """``log(intensity + floor)`` as integer levels of ``2**-LOG_GRID_BITS`` (int64)."""
    return np.rint(np.log(intensity + floor) * 2.0**LOG_GRID_BITS).astype(np.int64)


def threshold_levels(contrast_threshold: float) -> int:
    """The contrast threshold in grid levels; at least one level."""
    return max(1, round(contrast_threshold * 2.0**LOG_GRID_BITS))


def simulate(image: np.ndarray, index: int, config: SimulatorConfig = SimulatorConfig()) -> np.ndarray:
    """Events ``[N, 4]`` (int64: x, y, t_us, p) for one 8x8 digit with values 0..16, sorted by time."""
    digit = np.clip(ndimage.zoom(image.astype(np.float64) / 16.0, DIGIT_SIZE / image.shape[0], order=1), 0.0, 1.0)
    return simulate_digit(digit, index, config)


def pixel_thresholds(config: SimulatorConfig) -> np.ndarray:
    """Each pixel's contrast threshold in grid levels, ``[SENSOR, SENSOR]`` int64 (the sensor's mismatch)."""
    base = threshold_levels(config.contrast_threshold)
    if config.threshold_mismatch <= 0.0:
        return np.full((SENSOR, SENSOR), base, dtype=np.int64)
    gain = 1.0 + config.threshold_mismatch * np.random.default_rng([config.seed, 2**31]).standard_normal(
        (SENSOR, SENSOR)
    )
    return np.maximum(1, np.rint(base * gain)).astype(np.int64)


def simulate_digit(digit: np.ndarray, index: int, config: SimulatorConfig = SimulatorConfig()) -> np.ndarray:
    """Events ``[N, 4]`` for one 28x28 digit with intensities in [0, 1] (shown at native resolution)."""
    if digit.shape != (DIGIT_SIZE, DIGIT_SIZE):
        raise ValueError(f"expected a {DIGIT_SIZE}x{DIGIT_SIZE} digit, got {list(digit.shape)}")
    rng = np.random.default_rng([config.seed, index])
    times = np.arange(0, WINDOW_US + 1, RENDER_STEP_US)
    thresholds = pixel_thresholds(config)
    # Integer levels from here on: every comparison below is exact on any CPU.
    reference = log_levels(_render(digit, 0.0), config.floor)
    previous = reference.copy()
    chunks: list[np.ndarray] = []
    for t0, t1 in itertools.pairwise(times):
        level = log_levels(_render(digit, float(t1)), config.floor)
        change = level - reference
        crossings = np.abs(change) // thresholds
        ys, xs = np.nonzero(crossings)
        if ys.size:
            n = crossings[ys, xs]
            polarity = (change[ys, xs] > 0).astype(np.int64)
            step = np.where(polarity == 1, thresholds[ys, xs], -thresholds[ys, xs])
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
    if config.jitter_us > 0.0:
        jitter = np.rint(rng.normal(0.0, config.jitter_us, size=len(events))).astype(np.int64)
        events[:, 2] = np.clip(events[:, 2] + jitter, 0, WINDOW_US - 1)
    events = events[np.argsort(events[:, 2], kind="stable")]
    if config.refractory_us > 0:
        events = _refractory(events, config.refractory_us)
    return events


def _refractory(events: np.ndarray, refractory_us: int) -> np.ndarray:
    """Drops every event that follows a kept event of the same pixel by less than ``refractory_us``
    (``events`` sorted by time)."""
    pixel = events[:, 1] * SENSOR + events[:, 0]
    last_kept = np.full(SENSOR * SENSOR, -(10**12), dtype=np.int64)
    keep = np.zeros(len(events), dtype=bool)
    for i, (p, t) in enumerate(zip(pixel.tolist(), events[:, 2].tolist(), strict=True)):
        if t - last_kept[p] >= refractory_us:
            keep[i] = True
            last_kept[p] = t
    return events[keep]


def simulate_all(images: np.ndarray, first_index: int, config: SimulatorConfig = SimulatorConfig()) -> list[np.ndarray]:
    return [simulate(image[0] if image.ndim == 3 else image, first_index + i, config) for i, image in enumerate(images)]


#: How far a regenerated sample may lie from a stored one (``heldout.json``, written on another
#: machine) and still count as the same sample: event counts within this fraction, and binned
#: frames whose summed absolute difference is within this fraction of the events. The integer
#: levels above make regenerated samples equal in practice; this states what the tests rely on.
REGENERATION_TOLERANCE = 1e-3


def regeneration_differences(stored: np.ndarray, regenerated: np.ndarray, bins: int) -> list[str]:
    """What makes ``regenerated`` more than :data:`REGENERATION_TOLERANCE` away from ``stored``
    (both ``[N, 4]`` events); empty when they count as the same sample."""
    problems = []
    allowed = REGENERATION_TOLERANCE * max(len(stored), 1)
    if abs(len(stored) - len(regenerated)) > allowed:
        problems.append(f"{len(regenerated)} events regenerated against {len(stored)} stored")
    frames = binning(bins)
    l1 = np.abs(bin_events(stored, frames) - bin_events(regenerated, frames)).sum()
    if l1 > allowed:
        problems.append(f"binned frames differ by {l1:g} events in all (at most {allowed:g} allowed)")
    return problems
