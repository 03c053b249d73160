"""Data sets the job trains on.

``digits`` is scikit-learn's bundled 8x8 handwritten digits (1797 images, no download). The image is
static: the same frame is fed at every timestep. ``event-digits`` shows the same digits to a
simulated event camera (:mod:`spiketrain.event_digits`) and bins its events into one frame per
timestep. The held-out split is fixed (independent of the training seed) so that every model
trained on it, and the server's tests, see the same held-out set.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from . import event_digits
from .data_types import SPLIT_SEED, Dataset, Split
from .events import COUNT, TIME, bin_events

__all__ = ["DATASETS", "SPLIT_SEED", "Dataset", "Split", "load_dataset", "to_frames"]

#: ``--binning`` choices (:mod:`spiketrain.events`): equal-time bins, equal-event-count bins.
BINNINGS = (TIME, COUNT)
#: Data sets whose every split holds its raw events in memory, so they can be binned by count.
COUNT_BINNABLE = ("event-digits", "mnist-events")

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


def load_dataset(
    name: str,
    limit: int | None = None,
    timesteps: int = 8,
    data_dir: Path | None = None,
    binning: str = TIME,
    events_per_bin: int | None = None,
) -> Dataset:
    """The data set; ``binning="count"`` bins an event data set's frames by event count instead
    (:func:`by_count`)."""
    data = _load(name, limit, timesteps, data_dir)
    if binning == TIME:
        return data
    if binning != COUNT or name not in COUNT_BINNABLE:
        raise ValueError(f"binning {binning!r} is for {' and '.join(COUNT_BINNABLE)}, not {name}")
    return by_count(data, events_per_bin)


def model_binning(metadata: Mapping[str, str]) -> dict[str, Any]:
    """:func:`load_dataset`'s binning arguments for a trained model, from its ``spikeserve.*`` metadata
    (keys without the prefix): the tools that re-evaluate a model (calibration, ensembles, exit policies)
    must bin its data set as the model was trained, which its ``events`` binning says."""
    events = metadata.get("events")
    if events is None:
        return {}
    binning = json.loads(events)
    if binning.get("mode", TIME) == TIME:
        return {}
    return {"binning": binning["mode"], "events_per_bin": int(binning["events_per_bin"])}


def default_events_per_bin(train_events: Sequence[np.ndarray], bins: int) -> int:
    """K such that ``bins * K`` covers the typical training sample: the median event count of the
    training split divided by ``bins``, rounded half up, at least 1. The first timestep then sees a
    ``1 / bins`` share of a typical sample's events, and half the samples fill every bin."""
    median = float(np.median([len(e) for e in train_events])) if len(train_events) else 0.0
    return max(1, int(np.floor(median / bins + 0.5)))


def by_count(data: Dataset, events_per_bin: int | None = None) -> Dataset:
    """``data`` with every split's frames binned from the same raw events by event count
    (:meth:`spiketrain.events.EventBinning.by_count`); K defaults to :func:`default_events_per_bin`."""
    if data.binning is None or data.train.events is None:
        raise ValueError(f"{data.name} has no raw events to bin by count")
    k = default_events_per_bin(data.train.events, data.binning.bins) if events_per_bin is None else events_per_bin
    binning = data.binning.by_count(k)

    def rebin(split: Split) -> Split:
        if split.events is None:
            raise ValueError(f"{data.name}: a split without raw events cannot be binned by count")
        frames = (
            np.stack([bin_events(e, binning) for e in split.events])
            if len(split.events)
            else np.zeros((0, binning.bins, *binning.frame_shape()), np.float32)
        )
        return replace(split, inputs=frames)

    calibration = None if data.calibration is None else rebin(data.calibration)
    return replace(
        data, train=rebin(data.train), held_out=rebin(data.held_out), calibration=calibration, binning=binning
    )


def _load(name: str, limit: int | None, timesteps: int, data_dir: Path | None) -> Dataset:
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
