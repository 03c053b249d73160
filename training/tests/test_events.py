import json

import numpy as np
import pytest
from conftest import PROJECT_ROOT

from spiketrain.events import EventBinning, EventError, _vector_cases, bin_events

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
