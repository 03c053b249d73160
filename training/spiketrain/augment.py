"""Event augmentation for training, and the shifted / noisier variants the robustness report uses.

A real camera is never pixel-aligned with the training data: a model that has only seen digits at
one position loses half its accuracy two pixels off. Training therefore sees each sample's events
moved and thinned as event-vision work does (random translation by a few pixels, event drop,
timestamp and polarity jitter), re-binned every batch. Everything draws from a generator the caller
seeds (per epoch), so a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .events import EventBinning


@dataclass(frozen=True)
class EventAugmentation:
    #: Events move by the same random (dx, dy), each uniform in [-max_shift, max_shift] pixels;
    #: those that leave the sensor are dropped.
    max_shift: int = 3
    #: Each sample drops a random share of its events, uniform in [0, max_drop].
    max_drop: float = 0.2
    #: Gaussian timestamp jitter (standard deviation, microseconds), clipped to the window.
    jitter_us: float = 3000.0
    #: Share of events whose polarity flips.
    polarity_flip: float = 0.02


#: ``--augment`` names: none, or the settings above.
AUGMENTATIONS = {"none": None, "events": EventAugmentation()}


def bin_batch(events: Sequence[np.ndarray], binning: EventBinning) -> np.ndarray:
    """Frames ``[B, bins, polarities, height, width]`` (float32) for already valid events (in time order),
    one array per sample: :func:`spiketrain.events.bin_events` for a batch, without its checks."""
    frame = binning.polarities * binning.height * binning.width
    per_sample = binning.bins * frame
    flat = []
    for b, e in enumerate(events):
        e = np.asarray(e, dtype=np.int64).reshape(-1, 4)
        x, y, t, p = e.T
        index = binning.event_bins(t)  # the one rule (spiketrain.events), either mode
        kept = index < binning.bins  # count mode: events past bins * K are dropped
        x, y, p, index = x[kept], y[kept], p[kept], index[kept]
        flat.append(b * per_sample + index * frame + (p * binning.height + y) * binning.width + x)
    index = np.concatenate(flat) if flat else np.zeros(0, np.int64)
    counts = np.bincount(index, minlength=len(events) * per_sample).astype(np.float32)
    return counts.reshape(len(events), binning.bins, *binning.frame_shape())


def shift_events(events: np.ndarray, dx: int, dy: int, binning: EventBinning) -> np.ndarray:
    """The events moved by ``(dx, dy)`` pixels; those that leave the sensor are dropped."""
    moved = np.asarray(events, dtype=np.int64).reshape(-1, 4).copy()
    moved[:, 0] += dx
    moved[:, 1] += dy
    inside = (moved[:, 0] >= 0) & (moved[:, 0] < binning.width) & (moved[:, 1] >= 0) & (moved[:, 1] < binning.height)
    return moved[inside]


def augment(
    events: np.ndarray, binning: EventBinning, rng: np.random.Generator, settings: EventAugmentation
) -> np.ndarray:
    e = np.asarray(events, dtype=np.int64).reshape(-1, 4)
    dx, dy = rng.integers(-settings.max_shift, settings.max_shift + 1, size=2)
    e = shift_events(e, int(dx), int(dy), binning)
    keep = rng.random(len(e)) >= rng.uniform(0.0, settings.max_drop)
    e = e[keep]
    if settings.jitter_us > 0:
        jitter = np.rint(rng.normal(0.0, settings.jitter_us, size=len(e))).astype(np.int64)
        e[:, 2] = np.clip(e[:, 2] + jitter, 0, binning.window_us - 1)
    flip = rng.random(len(e)) < settings.polarity_flip
    e[flip, 3] = binning.polarities - 1 - e[flip, 3]
    # Jitter can reorder events; count binning reads their order, so they go back in time order (after
    # every draw: the random stream, and time-binned frames, are what they were before count binning).
    return e[np.argsort(e[:, 2], kind="stable")]


def augmented_frames(
    events: Sequence[np.ndarray], binning: EventBinning, rng: np.random.Generator, settings: EventAugmentation
) -> np.ndarray:
    """Frames ``[B, bins, ...]`` of freshly augmented events (the order inside a bin does not matter)."""
    return bin_batch([augment(e, binning, rng, settings) for e in events], binning)


def with_noise(events: np.ndarray, extra: float, binning: EventBinning, seed: int) -> np.ndarray:
    """The events plus a Poisson(``extra``) number of uniform background-noise events, sorted by time."""
    rng = np.random.default_rng([seed, 7])
    n = rng.poisson(extra)
    noise = np.stack(
        [
            rng.integers(binning.width, size=n),
            rng.integers(binning.height, size=n),
            rng.integers(binning.window_us, size=n),
            rng.integers(binning.polarities, size=n),
        ],
        axis=1,
    )
    merged = np.concatenate([np.asarray(events, dtype=np.int64).reshape(-1, 4), noise])
    return merged[np.argsort(merged[:, 2], kind="stable")]


#: The robustness report's test variants: name -> list of (dx, dy) shifts averaged over, or extra noise.
SHIFTS = {
    "shifted ±2 px": [(2, 0), (-2, 0), (0, 2), (0, -2)],
    "shifted ±4 px": [(4, 0), (-4, 0), (0, 4), (0, -4)],
}
#: Extra background-noise events per sample for the noisier variant (10x the simulator's default).
NOISIER_EXTRA_EVENTS = 180.0
