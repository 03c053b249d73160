"""The types every data set is made of (a module of its own, so that the loaders import it and not each other)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .events import EventBinning


class BinnedOnAccess(Protocol):
    """Frames binned from events when indexed (the real event data sets), used like an array."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: Any) -> np.ndarray: ...


#: Seed of every fixed split: the same held-out (and calibration) samples for every model and seed.
SPLIT_SEED = 0


@dataclass(frozen=True)
class Split:
    #: float32, [N, *input_shape] (static) or [N, T, *frame_shape] (events); the real event data sets
    #: bin on access (:class:`spiketrain.real_data.BinnedFrames`), indexed like an array.
    inputs: np.ndarray | BinnedOnAccess
    targets: np.ndarray  # int64, [N]
    #: Raw events per sample ([n, 4] integers: x, y, t, p), for event data sets.
    events: Sequence[np.ndarray] | None = None
    #: Each sample's index in the source's own order (where the source has one worth naming).
    indices: np.ndarray | None = None


@dataclass(frozen=True)
class Dataset:
    name: str
    input_kind: str  # "static": one frame fed at every timestep; "events": raw events binned per timestep
    labels: list[str]
    input_description: str
    train: Split
    held_out: Split
    binning: EventBinning | None = None
    #: Chooses thresholds (calibrated exits); ``held_out`` then only reports. Data sets without one
    #: calibrate on one half of ``held_out`` and report on the other (:mod:`spiketrain.calibration`).
    calibration: Split | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one timestep's frame."""
        if self.input_kind == "events":
            return tuple(self.train.inputs.shape[2:])
        return tuple(self.train.inputs.shape[1:])
