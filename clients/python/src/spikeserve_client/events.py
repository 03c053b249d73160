"""Event recordings as ``[N, 4]`` int64 rows ``x, y, t_us, p`` (time from the first event, in order).

* N-MNIST ``.bin``: 5 bytes an event (x, y, then polarity in the top bit and a 23-bit microsecond time);
* ``.npy``: the project's ``[N, 4]`` arrays (``x, y, t_us, p``), or a structured array with fields
  ``x``, ``y``, ``t`` (or ``t_us``) and ``p``;
* ``.json``: ``{"events": [[x, y, t_us, p], ...]}`` (the ``/v1`` body), a bare list of rows, or a file
  of several samples (``heldout.json``: a list of row lists; pick one with ``sample``);
* ``.aedat4``: through the ``aedat`` package, when installed.

N-MNIST and AEDAT4 times are made relative to the first event; ``.npy`` and JSON rows are taken as
they are (already relative to the sample's start).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ._convert import event_array

NMNIST_EVENT_BYTES = 5


class EventFileError(ValueError):
    """A file this reader cannot take; the message names the file and the reason."""


def read_nmnist(path: str | Path) -> npt.NDArray[np.int64]:
    """An N-MNIST ``.bin`` recording."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % NMNIST_EVENT_BYTES:
        raise EventFileError(f"{path}: {raw.size} bytes is not a whole number of 5-byte N-MNIST events")
    rows = raw.reshape(-1, NMNIST_EVENT_BYTES).astype(np.int64)
    t = ((rows[:, 2] & 0x7F) << 16) | (rows[:, 3] << 8) | rows[:, 4]
    return _normalised(np.stack([rows[:, 0], rows[:, 1], t, rows[:, 2] >> 7], axis=1))


def write_nmnist(path: str | Path, events: npt.ArrayLike) -> None:
    """Writes ``[N, 4]`` events as an N-MNIST ``.bin`` (x, y < 256, t < 2**23 us, p in {0, 1})."""
    rows = event_array(events)
    x, y, t, p = rows.T
    if rows.size and (x.min() < 0 or x.max() > 255 or y.min() < 0 or y.max() > 255):
        raise EventFileError("N-MNIST files hold x and y in 0..255")
    if rows.size and (t.min() < 0 or t.max() >= 1 << 23 or not np.isin(p, (0, 1)).all()):
        raise EventFileError("N-MNIST files hold t in 0..2**23 - 1 us and p in {0, 1}")
    out = np.stack([x, y, (p << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF], axis=1).astype(np.uint8)
    out.tofile(path)


def _from_json(data: Any, path: Path, sample: int | None) -> npt.NDArray[np.int64]:
    if isinstance(data, dict):
        if "events" not in data:
            raise EventFileError(f"{path}: a JSON object needs an 'events' field")
        data = data["events"]
    if not isinstance(data, list):
        raise EventFileError(f"{path}: expected a list of [x, y, t_us, p] rows")
    several = bool(data) and isinstance(data[0], list) and bool(data[0]) and isinstance(data[0][0], list)
    if several:
        if sample is None:
            raise EventFileError(f"{path} holds {len(data)} samples: choose one (sample / --sample)")
        if not 0 <= sample < len(data):
            raise EventFileError(f"{path}: sample {sample} is not one of its {len(data)} samples")
        data = data[sample]
    elif sample not in (None, 0):
        raise EventFileError(f"{path} holds one sample; sample {sample} does not exist")
    return np.asarray(data).reshape(-1, 4) if not data else np.asarray(data)


def read_aedat4(path: str | Path) -> npt.NDArray[np.int64]:
    """An AEDAT4 recording's polarity events (needs the ``aedat`` package)."""
    try:
        import aedat
    except ImportError:
        raise EventFileError(f"{path}: reading AEDAT4 needs the `aedat` package (pip install aedat)") from None
    chunks = [packet["events"] for packet in aedat.Decoder(str(path)) if "events" in packet]
    if not chunks:
        return np.zeros((0, 4), dtype=np.int64)
    events = np.concatenate(chunks)
    return _normalised(np.stack([events["x"], events["y"], events["t"], events["on"]], axis=1).astype(np.int64))


def _normalised(rows: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Times from the first event, in (stable) time order."""
    if rows.size == 0:
        return rows.reshape(0, 4)
    rows = rows[np.argsort(rows[:, 2], kind="stable")]
    rows[:, 2] -= rows[0, 2]
    return rows


def read_events(path: str | Path, sample: int | None = None) -> npt.NDArray[np.int64]:
    """The events of a recording, by its extension (see the module's documentation)."""
    path = Path(path)
    if not path.is_file():
        raise EventFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".bin":
            return read_nmnist(path)
        if suffix == ".aedat4":
            return read_aedat4(path)
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            if array.ndim == 3:
                if sample is None:
                    raise EventFileError(f"{path} holds {len(array)} samples: choose one (sample / --sample)")
                array = array[sample]
            return event_array(array, str(path))
        if suffix == ".json":
            return event_array(_from_json(json.loads(path.read_text()), path, sample), str(path))
    except EventFileError:
        raise
    except (ValueError, OSError) as error:
        raise EventFileError(f"{path}: {error}") from error
    raise EventFileError(f"{path}: unknown event file type {suffix!r} (.bin, .npy, .json or .aedat4)")
