"""Event streams and their binning into frames: defined once, here, and mirrored by the server.

An event is ``(x, y, t, p)``: a pixel column and row on the sensor, a timestamp in microseconds
from the start of the sample, and a polarity (0 = OFF, darker; 1 = ON, brighter). A sample's
events are binned into ``bins`` frames of shape ``[polarities, height, width]``:

* the window ``[0, window_us)`` is cut into ``bins`` equal parts; event ``(x, y, t, p)`` falls in
  bin ``(t * bins) // window_us`` (integer arithmetic, so every implementation agrees exactly);
* each frame pixel counts the events of its polarity at that pixel in that bin (float32 counts).

Events must lie on the sensor (``0 <= x < width``, ``0 <= y < height``), have a known polarity
(``0 <= p < polarities``), fall inside the window (``0 <= t < window_us``), and come in
non-decreasing time order. The model's ``metadata_props`` carry these parameters
(``spikeserve.events``) so that the server bins raw events exactly as training did;
``tests/vectors/event_binning.json`` holds shared test vectors that both sides check.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

#: Columns of an event array: x, y, t (microseconds), p.
EVENT_FIELDS = ("x", "y", "t", "p")


@dataclass(frozen=True)
class EventBinning:
    width: int
    height: int
    polarities: int
    window_us: int
    bins: int

    def frame_shape(self) -> tuple[int, int, int]:
        return (self.polarities, self.height, self.width)

    def to_metadata(self) -> dict[str, int]:
        return asdict(self)


class EventError(ValueError):
    """An event the binning cannot take; the message names the event's index and field."""


def validate(events: np.ndarray, binning: EventBinning) -> None:
    """Raises :class:`EventError` for the first event that breaks a rule."""
    if events.ndim != 2 or events.shape[1] != 4:
        raise EventError(f"events: expected an array of [x, y, t, p] rows, got shape {list(events.shape)}")
    limits = {
        "x": (0, binning.width, "outside the sensor's {} columns"),
        "y": (0, binning.height, "outside the sensor's {} rows"),
        "t": (0, binning.window_us, "outside the {} us window"),
        "p": (0, binning.polarities, "not one of the {} polarities"),
    }
    for column, name in enumerate(EVENT_FIELDS):
        low, high, message = limits[name]
        bad = np.flatnonzero((events[:, column] < low) | (events[:, column] >= high))
        if bad.size:
            i = int(bad[0])
            raise EventError(f"events[{i}]: {name} = {int(events[i, column])} is {message.format(high)}")
    backwards = np.flatnonzero(np.diff(events[:, 2]) < 0)
    if backwards.size:
        i = int(backwards[0]) + 1
        raise EventError(f"events[{i}]: t = {int(events[i, 2])} is earlier than the event before it")


def bin_events(events: np.ndarray, binning: EventBinning) -> np.ndarray:
    """``events [N, 4]`` (int64: x, y, t, p) -> frames ``[bins, polarities, height, width]`` float32."""
    events = np.asarray(events, dtype=np.int64).reshape(-1, 4)
    validate(events, binning)
    frames = np.zeros((binning.bins, *binning.frame_shape()), dtype=np.float32)
    x, y, t, p = events.T
    index = (t * binning.bins) // binning.window_us
    np.add.at(frames, (index, p, y, x), 1.0)
    return frames


def _vector_cases() -> list[dict[str, object]]:
    rng = np.random.default_rng(7)
    binning = EventBinning(width=34, height=34, polarities=2, window_us=300_000, bins=10)
    count = 500
    random_events = np.stack(
        [
            rng.integers(0, 34, count),
            rng.integers(0, 34, count),
            np.sort(rng.integers(0, 300_000, count)),
            rng.integers(0, 2, count),
        ],
        axis=1,
    )
    edges = np.array([[0, 0, 0, 0], [33, 33, 29_999, 1], [5, 6, 30_000, 1], [5, 6, 30_000, 1], [1, 2, 299_999, 0]])
    small = EventBinning(width=4, height=3, polarities=2, window_us=1000, bins=3)
    uneven = np.array([[0, 0, 332, 1], [0, 0, 333, 1], [3, 2, 334, 0], [3, 2, 666, 0], [3, 2, 667, 0], [1, 1, 999, 1]])
    cases: list[dict[str, object]] = []
    for name, b, ev in (("random", binning, random_events), ("edges", binning, edges), ("uneven", small, uneven)):
        frames = bin_events(ev, b)
        nonzero = np.argwhere(frames)
        cases.append(
            {
                "name": name,
                "binning": b.to_metadata(),
                "events": ev.tolist(),
                # Sparse expected frames: [bin, polarity, y, x, count] for every non-zero pixel.
                "expected_nonzero": [[*map(int, idx), float(frames[tuple(idx)])] for idx in nonzero],
            }
        )
    errors = [
        ("x outside", [[0, 0, 0, 0], [34, 0, 10, 1]], "events[1]: x = 34 is outside the sensor's 34 columns"),
        ("y negative", [[0, -1, 0, 0]], "events[0]: y = -1 is outside the sensor's 34 rows"),
        ("t after window", [[0, 0, 300_000, 0]], "events[0]: t = 300000 is outside the 300000 us window"),
        ("bad polarity", [[0, 0, 5, 2]], "events[0]: p = 2 is not one of the 2 polarities"),
        ("out of order", [[0, 0, 50, 0], [0, 0, 40, 1]], "events[1]: t = 40 is earlier than the event before it"),
    ]
    for name, ev, message in errors:
        cases.append({"name": name, "binning": binning.to_metadata(), "events": ev, "error": message})
    return cases


def write_vectors(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"description": __doc__.split("\n")[0], "cases": _vector_cases()}) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m spiketrain.events", description="writes the shared test vectors")
    parser.add_argument("--write-vectors", type=Path, required=True)
    args = parser.parse_args(argv)
    write_vectors(args.write_vectors)


if __name__ == "__main__":
    main()
