import json
import subprocess

import numpy as np
import onnx
from sklearn.datasets import load_digits

from spiketrain.event_digits import SENSOR, WINDOW_US, binning, simulate
from spiketrain.events import validate
from spiketrain.train import TrainConfig, run


def test_simulation_is_deterministic_per_sample():
    image = load_digits().images[3]
    first, again = simulate(image, 3), simulate(image, 3)
    assert np.array_equal(first, again)
    other_noise = simulate(image, 4)  # same image, another sample index: other noise events
    assert not np.array_equal(first, other_noise)


def test_events_are_valid_sorted_and_of_both_polarities():
    events = simulate(load_digits().images[0], 0)
    validate(events, binning(10))  # on the sensor, in the window, in time order
    assert events[:, 0].max() < SENSOR and events[:, 2].max() < WINDOW_US
    on = (events[:, 3] == 1).mean()
    # The saccades return to the start, so brightening and darkening balance out.
    assert 0.4 < on < 0.6
    assert len(events) > 1000


def test_a_blank_scene_gives_only_background_noise():
    events = simulate(np.zeros((8, 8)), 0)
    assert 0 < len(events) < 60  # Poisson noise with mean 20
    assert set(np.unique(events[:, 3])) <= {0, 1}


def test_event_model_exports_its_binning_and_the_server_accepts_it(tmp_path, spikeserve_bin):
    out = tmp_path / "tiny-events"
    run(TrainConfig(dataset="event-digits", epochs=1, limit=24, batch_size=12, timesteps=5, threads=1), out)
    proto = onnx.load(str(out / "model.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["spikeserve.input_kind"] == "events"
    assert json.loads(meta["spikeserve.events"]) == {
        "width": 34,
        "height": 34,
        "polarities": 2,
        "window_us": 300000,
        "bins": 5,
    }
    heldout = json.loads((out / "heldout.json").read_text())
    assert len(heldout["events"]) == len(heldout["targets"]) > 0
    result = subprocess.run([spikeserve_bin, "inspect", out], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["events"]["bins"] == 5
