"""Real data sets, read from a local ``--data-dir`` only: nothing is ever downloaded.

* ``nmnist``: N-MNIST (34x34 ATIS sensor, 2 polarities, 10 digits), through ``tonic``; the official
  60,000 / 10,000 train and test sets.
* ``dvs-gesture``: DVS128 Gesture (128x128, 2 polarities, 11 gestures), tonic's preprocessed version;
  the official train and test sets (users 1-23 and 24-29).
* ``cifar10-dvs``: CIFAR10-DVS (128x128, 2 polarities, 10 classes), through ``tonic``. It has no
  official split: per class, the files (sorted by path) are shuffled with ``SPLIT_SEED`` and the first
  10% (rounded, at least one of a class with two or more) are held out. The split does not depend on
  the training seed, so every model and ensemble member sees the same held-out set.
* ``cifar10``: CIFAR-10 (32x32 RGB, pixel values 0..255), through ``torchvision``; the official
  50,000 / 10,000 split, no augmentation.

The directory layouts are tonic's and torchvision's own (:data:`LAYOUTS`); the loaders check for the
files first and raise :class:`DatasetNotFoundError` naming the path they looked at and the layout
they expect. tonic's classes would otherwise try to download what they miss: they are only ever
built through :func:`_offline`, which never does.

Events are turned into the server's form (:mod:`spiketrain.events`): ``[x, y, t, p]`` rows with
``t`` in microseconds from the sample's first event, in time order, keeping only the events inside
the data set's window (:data:`WINDOWS_US`); then binned into T frames by the one shared binning,
whose parameters go into the model's metadata. The sensors stay at full resolution (the shared
binning has no downsampling, so a 128 -> 48 reduction could not be mirrored by the server).

Event samples are read from disk and binned when a batch asks for them (:class:`EventSamples`,
:class:`BinnedFrames`): a whole event data set never sits in memory. A split's samples come in an
order fixed by ``SPLIT_SEED`` (shuffled once, by sorted path), so that ``limit`` takes a mix of
classes and the held-out samples written to ``heldout.json`` are not all of one class.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from .data_types import SPLIT_SEED, Dataset, Split
from .events import EventBinning, bin_events

#: Data sets this module reads; ``digits`` and ``event-digits`` need no files.
REAL_DATASETS = ("nmnist", "dvs-gesture", "cifar10-dvs", "cifar10")

#: Fraction of each CIFAR10-DVS class held out (the data set has no official split).
CIFAR10_DVS_HELD_OUT = 0.1

#: The time window binned per sample (events after it are dropped): N-MNIST's three 100 ms saccades,
#: the first 6 s of a gesture, the first 1.3 s of a CIFAR10-DVS recording.
WINDOWS_US = {"nmnist": 300_000, "dvs-gesture": 6_000_000, "cifar10-dvs": 1_300_000}

#: Sensor (width, height, polarities) per event data set.
SENSORS = {"nmnist": (34, 34, 2), "dvs-gesture": (128, 128, 2), "cifar10-dvs": (128, 128, 2)}

CIFAR10_DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DVS_GESTURE_CLASSES = (
    "hand clapping",
    "right hand wave",
    "left hand wave",
    "right arm clockwise",
    "right arm counter-clockwise",
    "left arm clockwise",
    "left arm counter-clockwise",
    "arm roll",
    "air drums",
    "air guitar",
    "other gestures",
)
CIFAR10_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
CIFAR10_META = "batches.meta"

#: What each data set expects under ``--data-dir`` (the layouts tonic and torchvision use).
LAYOUTS = {
    "nmnist": (
        "<data-dir>/NMNIST/Train/<digit 0-9>/<nnnnn>.bin and <data-dir>/NMNIST/Test/<digit 0-9>/<nnnnn>.bin "
        "(the extracted Train and Test folders of N-MNIST's train.zip and test.zip, 5 bytes per event)"
    ),
    "dvs-gesture": (
        "<data-dir>/DVSGesture/ibmGestureTrain/user<NN>_<lighting>/<class 0-10>.npy and "
        "<data-dir>/DVSGesture/ibmGestureTest/user<NN>_<lighting>/<class 0-10>.npy "
        "(tonic's preprocessed ibmGestureTrain.tar.gz and ibmGestureTest.tar.gz, extracted)"
    ),
    "cifar10-dvs": (
        "<data-dir>/CIFAR10DVS/<class>/<name>.aedat4 for each of the classes "
        + ", ".join(CIFAR10_DVS_CLASSES)
        + " (tonic's CIFAR10DVS.zip with its ten class archives extracted)"
    ),
    "cifar10": (
        "<data-dir>/cifar-10-batches-py/{"
        + ",".join((*CIFAR10_FILES, CIFAR10_META))
        + "} (torchvision's layout: cifar-10-python.tar.gz extracted)"
    ),
}


class DatasetError(RuntimeError):
    """A data set cannot be loaded; the message says why in one line."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The files of a data set are not under ``--data-dir``; the message names the path and the layout."""


class MissingDependencyError(DatasetError):
    """Reading a data set's files needs a package that is not installed."""


def _not_found(dataset: str, looked_at: Path, what: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{dataset}: {what} at {looked_at}; expected {LAYOUTS[dataset]}. Nothing is downloaded: "
        "put the files there or point --data-dir at them"
    )


def _require_files(dataset: str, folder: Path, pattern: str, kind: str) -> None:
    """At least one file matching ``pattern`` under ``folder``."""
    if not folder.is_dir():
        raise _not_found(dataset, folder, "no such directory")
    if next(folder.glob(pattern), None) is None:
        raise _not_found(dataset, folder, f"no {kind} files ({pattern})")


def _refuse_download(self: Any) -> None:
    raise DatasetNotFoundError(f"{type(self).__name__}: the files are missing and nothing is downloaded")


def _offline(cls: type) -> type:
    """A subclass of a tonic data set that never downloads: it trusts the checks made here (tonic's own
    check also wants the original archives and a minimum file count) and refuses to fetch anything.
    It keeps the class name, which is the folder tonic reads (``<data-dir>/<ClassName>/...``)."""
    return type(cls.__name__, (cls,), {"_check_exists": lambda self: True, "download": _refuse_download})


def to_server_events(events: np.ndarray, window_us: int) -> np.ndarray:
    """A tonic structured event array -> ``[n, 4]`` int64 ``x, y, t, p`` rows, ``t`` in microseconds
    from the sample's first event, in time order, only those with ``t < window_us``."""
    if len(events) == 0:
        return np.zeros((0, 4), dtype=np.int64)
    t = events["t"].astype(np.int64)
    t = t - t.min()
    rows = np.stack(
        [events["x"].astype(np.int64), events["y"].astype(np.int64), t, events["p"].astype(np.int64)], axis=1
    )
    rows = rows[np.argsort(t, kind="stable")]
    return rows[rows[:, 2] < window_us]


class EventSamples(Sequence[np.ndarray]):
    """A split's raw events, read from disk sample by sample when asked for (never all in memory)."""

    def __init__(self, read: Callable[[int], np.ndarray], indices: Sequence[int], paths: Sequence[str]) -> None:
        self._read = read
        self.indices = list(indices)
        #: The file each sample comes from, in this split's order.
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.indices)

    @overload
    def __getitem__(self, key: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, key: slice) -> list[np.ndarray]: ...

    def __getitem__(self, key: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(key, slice):
            return [self._read(i) for i in self.indices[key]]
        return self._read(self.indices[key])

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in self.indices:
            yield self._read(i)


class BinnedFrames:
    """``[N, T, polarities, height, width]`` frames of :class:`EventSamples`, binned on access.

    Indexing with an int, a slice or an array of indices returns a float32 array (what a batch
    needs); ``np.asarray`` bins the whole split."""

    def __init__(self, samples: EventSamples, binning: EventBinning) -> None:
        self.samples = samples
        self.binning = binning

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.samples), self.binning.bins, *self.binning.frame_shape())

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | slice | Sequence[int] | np.ndarray) -> np.ndarray:
        if isinstance(key, int | np.integer):
            return bin_events(self.samples[int(key)], self.binning)
        picked = range(len(self.samples))[key] if isinstance(key, slice) else np.asarray(key).reshape(-1)
        frames = np.zeros((len(picked), *self.shape[1:]), dtype=np.float32)
        for row, i in enumerate(picked):
            frames[row] = bin_events(self.samples[int(i)], self.binning)
        return frames

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        frames = self[slice(None)]
        return frames if dtype is None else frames.astype(dtype)


def _split_order(paths: Sequence[str]) -> np.ndarray:
    """Positions of ``paths`` sorted by path, then shuffled once with ``SPLIT_SEED``."""
    by_path = np.array(sorted(range(len(paths)), key=lambda i: paths[i]), dtype=np.int64)
    return by_path[np.random.default_rng(SPLIT_SEED).permutation(len(by_path))]


def _event_split(source: Any, positions: np.ndarray, window_us: int, binning: EventBinning, limit: int | None) -> Split:
    """A split over some of a tonic data set's samples (``positions``, in order), cut to ``limit``."""
    if limit is not None:
        positions = positions[:limit]

    def read(i: int) -> np.ndarray:
        events, _ = source[int(i)]
        return to_server_events(events, window_us)

    samples = EventSamples(read, [int(i) for i in positions], [str(source.data[i]) for i in positions])
    targets = np.array([source.targets[i] for i in positions], dtype=np.int64)
    return Split(BinnedFrames(samples, binning), targets, samples)


def _binning(name: str, timesteps: int) -> EventBinning:
    width, height, polarities = SENSORS[name]
    return EventBinning(width=width, height=height, polarities=polarities, window_us=WINDOWS_US[name], bins=timesteps)


def _description(name: str, sensor: str) -> str:
    width, height, polarities = SENSORS[name]
    return (
        f"{sensor}; raw events [x, y, t_us, p] with t from the sample's first event, only the first "
        f"{WINDOWS_US[name] / 1e6:g} s, or per-timestep count frames [{polarities}, {height}, {width}]"
    )


def load_nmnist(data_dir: Path, timesteps: int, limit: int | None = None) -> Dataset:
    root = data_dir / "NMNIST"
    for folder in ("Train", "Test"):
        _require_files("nmnist", root / folder, "*/*.bin", ".bin")
    from tonic.datasets import NMNIST

    nmnist = _offline(NMNIST)
    binning = _binning("nmnist", timesteps)
    train, test = nmnist(str(data_dir), train=True), nmnist(str(data_dir), train=False)
    return Dataset(
        name="nmnist",
        input_kind="events",
        labels=[str(c) for c in range(10)],
        input_description=_description("nmnist", "N-MNIST: a 34x34 ATIS event camera (ON/OFF) saccading over MNIST"),
        train=_event_split(train, _split_order(train.data), WINDOWS_US["nmnist"], binning, limit),
        held_out=_event_split(test, _split_order(test.data), WINDOWS_US["nmnist"], binning, limit),
        binning=binning,
    )


def load_dvs_gesture(data_dir: Path, timesteps: int, limit: int | None = None) -> Dataset:
    root = data_dir / "DVSGesture"
    for folder in ("ibmGestureTrain", "ibmGestureTest"):
        _require_files("dvs-gesture", root / folder, "user*_*/*.npy", ".npy")
    from tonic.datasets import DVSGesture

    gesture = _offline(DVSGesture)
    binning = _binning("dvs-gesture", timesteps)
    train, test = gesture(str(data_dir), train=True), gesture(str(data_dir), train=False)
    window = WINDOWS_US["dvs-gesture"]
    return Dataset(
        name="dvs-gesture",
        input_kind="events",
        labels=list(DVS_GESTURE_CLASSES),
        input_description=_description("dvs-gesture", "DVS128 Gesture: a 128x128 DVS (ON/OFF) watching a gesture"),
        train=_event_split(train, _split_order(train.data), window, binning, limit),
        held_out=_event_split(test, _split_order(test.data), window, binning, limit),
        binning=binning,
    )


def cifar10_dvs_split(paths: Sequence[str], targets: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the training and held-out samples: per class, the files sorted by path and
    shuffled with ``default_rng([SPLIT_SEED, class])``; the first ``round(10%)`` (at least one where the
    class has two or more) are held out. Both lists come back in the split order of :func:`_split_order`."""
    held: list[int] = []
    for label in sorted(set(targets)):
        members = sorted((i for i, t in enumerate(targets) if t == label), key=lambda i: paths[i])
        order = np.random.default_rng([SPLIT_SEED, int(label)]).permutation(len(members))
        count = max(1, round(len(members) * CIFAR10_DVS_HELD_OUT)) if len(members) > 1 else 0
        held += [members[j] for j in order[:count]]
    held_set = set(held)
    ordered = _split_order(paths)
    train = np.array([i for i in ordered if i not in held_set], dtype=np.int64)
    test = np.array([i for i in ordered if i in held_set], dtype=np.int64)
    return train, test


def load_cifar10_dvs(data_dir: Path, timesteps: int, limit: int | None = None) -> Dataset:
    root = data_dir / "CIFAR10DVS"
    for name in CIFAR10_DVS_CLASSES:
        _require_files("cifar10-dvs", root / name, "*.aedat4", ".aedat4")
    if importlib.util.find_spec("aedat") is None:
        raise MissingDependencyError(
            "cifar10-dvs: reading the .aedat4 files needs the `aedat` package (tonic's optional "
            "dependency), which is not installed in this environment"
        )
    from tonic.datasets import CIFAR10DVS

    source = _offline(CIFAR10DVS)(str(data_dir))
    binning = _binning("cifar10-dvs", timesteps)
    train, test = cifar10_dvs_split([str(p) for p in source.data], source.targets)
    window = WINDOWS_US["cifar10-dvs"]
    return Dataset(
        name="cifar10-dvs",
        input_kind="events",
        labels=list(CIFAR10_DVS_CLASSES),
        input_description=_description(
            "cifar10-dvs", "CIFAR10-DVS: a 128x128 DVS (ON/OFF) watching a moving CIFAR-10 image"
        ),
        train=_event_split(source, train, window, binning, limit),
        held_out=_event_split(source, test, window, binning, limit),
        binning=binning,
    )


def load_cifar10(data_dir: Path, limit: int | None = None) -> Dataset:
    """CIFAR-10 through torchvision: images ``[N, 3, 32, 32]`` float32 with pixel values 0..255 (the
    model normalises inside its graph). The batches are already shuffled; ``limit`` takes the first."""
    folder = data_dir / "cifar-10-batches-py"
    for name in (*CIFAR10_FILES, CIFAR10_META):
        if not (folder / name).is_file():
            raise _not_found("cifar10", folder / name, "no such file")
    from torchvision.datasets import CIFAR10

    class LocalCIFAR10(CIFAR10):
        """torchvision's reader with a presence check instead of its MD5 check (the files were found
        above; a corrupt one fails to unpickle)."""

        def _check_integrity(self) -> bool:
            return all((folder / name).is_file() for name in CIFAR10_FILES)

        def _load_meta(self) -> None:
            import pickle

            with open(folder / CIFAR10_META, "rb") as meta:
                self.classes = pickle.load(meta, encoding="latin1")["label_names"]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    def split(train: bool) -> Split:
        source = LocalCIFAR10(str(data_dir), train=train, download=False)
        images = np.asarray(source.data).transpose(0, 3, 1, 2)  # torchvision keeps HWC; the model takes CHW
        targets = np.asarray(source.targets, dtype=np.int64)
        if limit is not None:
            images, targets = images[:limit], targets[:limit]
        return Split(images.astype(np.float32), targets)

    train, held_out = split(True), split(False)
    labels = LocalCIFAR10(str(data_dir), train=False, download=False).classes
    return Dataset(
        name="cifar10",
        input_kind="static",
        labels=[str(c) for c in labels],
        input_description="32x32 RGB CIFAR-10 image [3, 32, 32], pixel values 0..255 (channels R, G, B)",
        train=train,
        held_out=held_out,
    )


def load_real_dataset(name: str, data_dir: Path | None, timesteps: int, limit: int | None = None) -> Dataset:
    if data_dir is None:
        raise DatasetNotFoundError(f"{name}: is read from local files; give their directory (--data-dir)")
    data_dir = Path(data_dir).expanduser().absolute()
    if name == "nmnist":
        return load_nmnist(data_dir, timesteps, limit)
    if name == "dvs-gesture":
        return load_dvs_gesture(data_dir, timesteps, limit)
    if name == "cifar10-dvs":
        return load_cifar10_dvs(data_dir, timesteps, limit)
    if name == "cifar10":
        return load_cifar10(data_dir, limit)
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(REAL_DATASETS)}")
