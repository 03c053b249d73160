"""Event streams and their binning into frames: defined once, here, and mirrored by the server.

An event is ``(x, y, t, p)``: a pixel column and row on the sensor, a timestamp in microseconds
from the start of the sample, and a polarity (0 = OFF, darker; 1 = ON, brighter). A sample's
events are binned into ``bins`` frames of shape ``[polarities, height, width]``, by one of two rules
(the binning's ``mode``):

* ``time`` (the default, and every model's before ``mode`` existed): the window ``[0, window_us)`` is
  cut into ``bins`` equal parts; event ``(x, y, t, p)`` falls in bin ``(t * bins) // window_us``
  (integer arithmetic, so every implementation agrees exactly);
* ``count`` (equal-event-count bins, ``events_per_bin`` = K > 0): event number ``i`` (0-based, in the
  sample's time order) falls in bin ``i // K``, so every bin but the last non-empty one holds exactly K
  events and the first timestep sees as much evidence as a later one. A bin also closes at the
  window's end: bins after the last event stay empty. Events past ``bins * K`` are dropped (a live
  camera keeps sending; the model has no timestep left for them); :func:`dropped_events` counts them.

Each frame pixel counts the events of its polarity at that pixel in that bin (float32 counts).

Events must lie on the sensor (``0 <= x < width``, ``0 <= y < height``), have a known polarity
(``0 <= p < polarities``), fall inside the window (``0 <= t < window_us``), and come in
non-decreasing time order, in both modes (dropped events too: a refusal never depends on the mode).
The model's ``metadata_props`` carry these parameters (``spikeserve.events``; ``mode`` and
``events_per_bin`` only for ``count``, so that a time-binned model's metadata is what it always was)
so that the server bins raw events exactly as training did; ``tests/vectors/event_binning.json``
holds shared test vectors that both sides check.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

#: Columns of an event array: x, y, t (microseconds), p.
EVENT_FIELDS = ("x", "y", "t", "p")
#: The binning rules (``EventBinning.mode``): equal-time bins and equal-event-count bins.
TIME = "time"
COUNT = "count"
BINNING_MODES = (TIME, COUNT)


@dataclass(frozen=True)
class EventBinning:
    width: int
    height: int
    polarities: int
    window_us: int
    bins: int
    mode: str = TIME
    #: K, the events of one bin (``count`` mode only).
    events_per_bin: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in BINNING_MODES:
            raise ValueError(f"mode: {self.mode!r} is not a binning mode ({' or '.join(map(repr, BINNING_MODES))})")
        if self.mode == COUNT and (self.events_per_bin is None or self.events_per_bin < 1):
            raise ValueError(f"events_per_bin: count binning needs a positive number, found {self.events_per_bin}")
        if self.mode == TIME and self.events_per_bin is not None:
            raise ValueError("events_per_bin: only count binning has one")

    def frame_shape(self) -> tuple[int, int, int]:
        return (self.polarities, self.height, self.width)

    def by_count(self, events_per_bin: int) -> EventBinning:
        """The same sensor, window and bins, with equal-event-count bins of ``events_per_bin`` events."""
        return replace(self, mode=COUNT, events_per_bin=events_per_bin)

    def event_bins(self, t: np.ndarray) -> np.ndarray:
        """The bin of each event of one sample (valid events, ``t`` their timestamps in order): the rule.
        In ``count`` mode an index ``>= bins`` means the event is dropped."""
        t = np.asarray(t, dtype=np.int64)
        if self.mode == COUNT:
            assert self.events_per_bin is not None
            return np.arange(len(t), dtype=np.int64) // self.events_per_bin
        return (t * self.bins) // self.window_us

    def to_metadata(self) -> dict[str, int | str]:
        """The ``spikeserve.events`` JSON object; a time binning's is the five numbers it always was."""
        fields: dict[str, int | str | None] = asdict(self)
        if self.mode == TIME:
            del fields["mode"], fields["events_per_bin"]
        return {key: value for key, value in fields.items() if value is not None}


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
    index = binning.event_bins(t)
    kept = index < binning.bins  # count mode: events past bins * K are dropped
    np.add.at(frames, (index[kept], p[kept], y[kept], x[kept]), 1.0)
    return frames


def dropped_events(count: int, binning: EventBinning) -> int:
    """How many of a sample's ``count`` (valid) events the binning drops: those past ``bins * K`` in
    ``count`` mode, none in ``time`` mode."""
    if binning.mode != COUNT:
        return 0
    assert binning.events_per_bin is not None
    return max(0, count - binning.bins * binning.events_per_bin)


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
    # Count mode: 500 events into 10 bins of 37 (130 dropped); 6 into 3 bins of 4 (the last bin empty);
    # 6 into 3 bins of 2 (exactly full, equal timestamps split across bins).
    same_t = np.array([[0, 0, 5, 0], [1, 0, 5, 1], [2, 0, 5, 0], [3, 1, 5, 1], [0, 2, 900, 0], [0, 2, 999, 0]])
    binned = (
        ("random", binning, random_events),
        ("edges", binning, edges),
        ("uneven", small, uneven),
        ("count random", binning.by_count(37), random_events),
        ("count short", small.by_count(4), uneven),
        ("count full", small.by_count(2), same_t),
    )
    cases: list[dict[str, object]] = []
    for name, b, ev in binned:
        frames = bin_events(ev, b)
        nonzero = np.argwhere(frames)
        cases.append(
            {
                "name": name,
                "binning": b.to_metadata(),
                "events": ev.tolist(),
                # Sparse expected frames: [bin, polarity, y, x, count] for every non-zero pixel.
                "expected_nonzero": [[*map(int, idx), float(frames[tuple(idx)])] for idx in nonzero],
                "dropped": dropped_events(len(ev), b),
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
    # Count mode refuses exactly what time mode refuses, dropped events included.
    by_count = small.by_count(1).to_metadata()
    count_errors = [
        ("count out of order", [[0, 0, 50, 0], [0, 0, 40, 1]], "events[1]: t = 40 is earlier than the event before it"),
        ("count t after window", [[0, 0, 1, 0], [0, 0, 1000, 0]], "events[1]: t = 1000 is outside the 1000 us window"),
        (
            "count dropped event off the sensor",
            [[0, 0, 1, 0], [0, 0, 2, 0], [0, 0, 3, 0], [4, 0, 4, 0]],
            "events[3]: x = 4 is outside the sensor's 4 columns",
        ),
    ]
    for name, ev, message in count_errors:
        cases.append({"name": name, "binning": by_count, "events": ev, "error": message})
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
