"""Data sets the job trains on.

``digits`` is scikit-learn's bundled 8x8 handwritten digits (1797 images, no download). The image is
static: the same frame is fed at every timestep. ``event-digits`` shows the same digits to a
simulated event camera (:mod:`spiketrain.event_digits`) and bins its events into one frame per
timestep. The held-out split is fixed (independent of the training seed) so that every model
trained on it, and the server's tests, see the same held-out set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from . import event_digits
from .data_types import SPLIT_SEED, Dataset, Split
from .events import bin_events

__all__ = ["DATASETS", "SPLIT_SEED", "Dataset", "Split", "load_dataset", "to_frames"]

HELD_OUT_FRACTION = 0.2


def _limit(split: Split, limit: int | None) -> Split:
    if limit is None:
        return split
    return Split(split.inputs[:limit], split.targets[:limit], None if split.events is None else split.events[:limit])


def load_digits_dataset(limit: int | None = None) -> Dataset:
    bunch = load_digits()
    images = bunch.images.astype(np.float32)[:, None, :, :]  # [N, 1, 8, 8], values 0..16
    targets = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, targets, test_size=HELD_OUT_FRACTION, random_state=SPLIT_SEED, stratify=targets
    )
    return Dataset(
        name="digits",
        input_kind="static",
        labels=[str(c) for c in range(10)],
        input_description="8x8 grey-level handwritten digit, pixel values 0..16 (scikit-learn digits)",
        train=_limit(Split(x_train, y_train), limit),
        held_out=_limit(Split(x_test, y_test), limit),
    )


def _digit_split(limit: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    bunch = load_digits()
    images = bunch.images.astype(np.float32)[:, None, :, :]
    targets = bunch.target.astype(np.int64)
    order = np.arange(len(targets))
    i_train, i_test = train_test_split(order, test_size=HELD_OUT_FRACTION, random_state=SPLIT_SEED, stratify=targets)
    if limit is not None:
        i_train, i_test = i_train[:limit], i_test[:limit]
    return images[i_train], targets[i_train], i_train, images[i_test], targets[i_test], i_test


def load_event_digits(timesteps: int, limit: int | None = None) -> Dataset:
    """The digits through the simulated event camera; sample ``i`` of scikit-learn's set always
    gets the same events (the simulator's seed is the sample's index)."""
    x_train, y_train, i_train, x_test, y_test, i_test = _digit_split(limit)
    binning = event_digits.binning(timesteps)

    def split(images: np.ndarray, targets: np.ndarray, indices: np.ndarray) -> Split:
        events = [event_digits.simulate(image[0], int(i)) for image, i in zip(images, indices, strict=True)]
        frames = np.stack([bin_events(e, binning) for e in events])
        return Split(frames, targets, events)

    return Dataset(
        name="event-digits",
        input_kind="events",
        labels=[str(c) for c in range(10)],
        input_description=(
            "simulated event camera (34x34, ON/OFF) watching a scikit-learn digit during three saccades "
            "over 300 ms; raw events [x, y, t_us, p] or per-timestep count frames [2, 34, 34]"
        ),
        train=split(x_train, y_train, i_train),
        held_out=split(x_test, y_test, i_test),
        binning=binning,
    )


#: Every data set ``--dataset`` takes; the last four are read from ``--data-dir`` (:mod:`spiketrain.real_data`).
DATASETS = ("digits", "event-digits", "mnist-events", "mnist", "nmnist", "dvs-gesture", "cifar10-dvs", "cifar10")
#: Data sets built from what the environment already has (no ``--data-dir``).
BUNDLED_DATASETS = ("digits", "event-digits", "mnist-events", "mnist")


def load_dataset(name: str, limit: int | None = None, timesteps: int = 8, data_dir: Path | None = None) -> Dataset:
    if name == "digits":
        return load_digits_dataset(limit)
    if name == "event-digits":
        return load_event_digits(timesteps, limit)
    if name == "mnist-events":
        from .mnist_events import load_mnist_events

        return load_mnist_events(timesteps, limit)
    if name == "mnist":
        from .mnist_events import load_mnist_static

        return load_mnist_static(limit)
    if name in DATASETS:
        from .real_data import load_real_dataset

        return load_real_dataset(name, data_dir, timesteps, limit)
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


def to_frames(inputs: np.ndarray | Any, timesteps: int, input_kind: str) -> np.ndarray:
    """Per-timestep frames ``[T, N, *shape]`` for a batch of samples (any array-like of them)."""
    inputs = np.asarray(inputs)
    if input_kind == "static":
        return np.broadcast_to(inputs[None], (timesteps, *inputs.shape))
    if input_kind == "events":
        # Already binned, [N, T, ...]: time first.
        return np.swapaxes(inputs[:, :timesteps], 0, 1)
    raise ValueError(f"unsupported input kind {input_kind!r}")
