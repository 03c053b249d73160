"""Data sets the job trains on.

``digits`` is scikit-learn's bundled 8x8 handwritten digits (1797 images, no download). The image is
static: the same frame is fed at every timestep. The held-out split is fixed (independent of the
training seed) so that every model trained on it, and the server's tests, see the same held-out set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HELD_OUT_FRACTION = 0.2
SPLIT_SEED = 0


@dataclass(frozen=True)
class Split:
    inputs: np.ndarray  # float32, [N, *input_shape], in the data set's own units
    targets: np.ndarray  # int64, [N]


@dataclass(frozen=True)
class Dataset:
    name: str
    input_kind: str  # "static": one frame fed at every timestep
    labels: list[str]
    input_description: str
    train: Split
    held_out: Split

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.inputs.shape[1:])


def _limit(split: Split, limit: int | None) -> Split:
    if limit is None:
        return split
    return Split(split.inputs[:limit], split.targets[:limit])


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


def load_dataset(name: str, limit: int | None = None) -> Dataset:
    if name == "digits":
        return load_digits_dataset(limit)
    raise ValueError(f"unknown dataset {name!r}; known: digits")


def to_frames(inputs: np.ndarray, timesteps: int, input_kind: str) -> np.ndarray:
    """Per-timestep frames ``[T, N, *shape]`` for a batch of samples."""
    if input_kind == "static":
        return np.broadcast_to(inputs[None], (timesteps, *inputs.shape))
    raise ValueError(f"unsupported input kind {input_kind!r}")
