import json

import numpy as np
import pytest
from conftest import PROJECT_ROOT

from spiketrain.events import EventBinning, EventError, _vector_cases, bin_events, dropped_events

SMALL = EventBinning(width=3, height=2, polarities=2, window_us=100, bins=4)


def test_binning_by_hand():
    events = np.array([[0, 0, 0, 1], [2, 1, 24, 0], [2, 1, 25, 0], [2, 1, 26, 0], [1, 0, 99, 1]])
    frames = bin_events(events, SMALL)
    assert frames.shape == (4, 2, 2, 3)
    assert frames.sum() == 5
    assert frames[0, 1, 0, 0] == 1  # t=0 -> bin 0, ON
    assert frames[0, 0, 1, 2] == 1  # t=24 -> bin 0 (24*4//100 = 0), OFF
    assert frames[1, 0, 1, 2] == 2  # t=25, 26 -> bin 1
    assert frames[3, 1, 0, 1] == 1  # t=99 -> bin 3


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ([3, 0, 0, 0], "x = 3 is outside the sensor's 3 columns"),
        ([0, 2, 0, 0], "y = 2 is outside the sensor's 2 rows"),
        ([0, 0, 100, 0], "t = 100 is outside the 100 us window"),
        ([0, 0, 0, -1], "p = -1 is not one of the 2 polarities"),
    ],
)
def test_events_outside_the_sensor_or_window_are_refused(event, message):
    with pytest.raises(EventError, match=message):
        bin_events(np.array([[0, 0, 0, 0], event]), SMALL)


def test_out_of_order_timestamps_are_refused():
    with pytest.raises(EventError, match=r"events\[2\]: t = 5 is earlier"):
        bin_events(np.array([[0, 0, 1, 0], [0, 0, 9, 0], [0, 0, 5, 0]]), SMALL)


def test_shared_vectors_are_up_to_date():
    """The committed vectors are what this code produces; the Rust side checks itself against them."""
    committed = json.loads((PROJECT_ROOT / "tests" / "vectors" / "event_binning.json").read_text())
    assert committed["cases"] == json.loads(json.dumps(_vector_cases()))


COUNT = SMALL.by_count(2)


def test_count_binning_by_hand():
    """Event i lands in bin i // K, whatever its timestamp; bins after the last event stay empty."""
    events = np.array([[0, 0, 0, 1], [2, 1, 1, 0], [2, 1, 1, 0], [1, 0, 98, 1], [1, 0, 99, 1]])
    frames = bin_events(events, COUNT)
    assert frames.shape == (4, 2, 2, 3)
    assert [frames[b].sum() for b in range(4)] == [2, 2, 1, 0]
    assert frames[0, 1, 0, 0] == 1 and frames[0, 0, 1, 2] == 1  # events 0, 1
    assert frames[1, 0, 1, 2] == 1 and frames[1, 1, 0, 1] == 1  # events 2, 3: equal t split across bins
    assert frames[2, 1, 0, 1] == 1  # event 4


def test_count_binning_drops_what_has_no_timestep_left():
    events = np.array([[0, 0, t, 0] for t in range(11)])
    frames = bin_events(events, COUNT)
    assert frames.sum() == 8 and [frames[b].sum() for b in range(4)] == [2, 2, 2, 2]
    assert dropped_events(len(events), COUNT) == 3
    assert dropped_events(len(events), SMALL) == 0


def test_count_binning_refuses_what_time_binning_refuses():
    with pytest.raises(EventError, match=r"events\[2\]: t = 5 is earlier"):
        bin_events(np.array([[0, 0, 1, 0], [0, 0, 9, 0], [0, 0, 5, 0]]), COUNT)
    # An event past bins * K is dropped, but still checked.
    events = np.array([[0, 0, t, 0] for t in range(9)] + [[0, 0, 100, 0]])
    with pytest.raises(EventError, match=r"events\[9\]: t = 100 is outside the 100 us window"):
        bin_events(events, COUNT)


def test_binning_metadata_names_the_mode_only_for_count():
    assert SMALL.to_metadata() == {"width": 3, "height": 2, "polarities": 2, "window_us": 100, "bins": 4}
    assert COUNT.to_metadata() == {**SMALL.to_metadata(), "mode": "count", "events_per_bin": 2}
    assert EventBinning(**COUNT.to_metadata()) == COUNT
    assert EventBinning(**SMALL.to_metadata()) == SMALL


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mode": "frames"}, "mode: 'frames' is not a binning mode"),
        ({"mode": "count"}, "events_per_bin: count binning needs a positive number"),
        ({"mode": "count", "events_per_bin": 0}, "events_per_bin: count binning needs a positive number"),
        ({"events_per_bin": 3}, "events_per_bin: only count binning has one"),
    ],
)
def test_bad_binning_modes_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        EventBinning(**{**SMALL.to_metadata(), **fields})


@pytest.mark.parametrize("binning", [SMALL, COUNT, SMALL.by_count(1), SMALL.by_count(50)])
def test_batch_binning_is_the_one_rule(binning):
    """Training's batch binner (spiketrain.augment.bin_batch) is bin_events, sample by sample."""
    from spiketrain.augment import bin_batch

    rng = np.random.default_rng(3)
    samples = []
    for n in (0, 1, 7, 30):
        t = np.sort(rng.integers(0, 100, n))
        samples.append(np.stack([rng.integers(0, 3, n), rng.integers(0, 2, n), t, rng.integers(0, 2, n)], axis=1))
    batch = bin_batch(samples, binning)
    for i, e in enumerate(samples):
        assert np.array_equal(batch[i], bin_events(e, binning)), i
