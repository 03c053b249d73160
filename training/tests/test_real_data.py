"""The real data sets' loaders: offline only, clear errors, tonic's and torchvision's on-disk formats."""

import importlib.util
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from spiketrain.data import load_dataset
from spiketrain.events import EventBinning, bin_events
from spiketrain.real_data import (
    CIFAR10_DVS_CLASSES,
    DatasetNotFoundError,
    MissingDependencyError,
    cifar10_dvs_split,
    to_server_events,
)
from spiketrain.train import TrainConfig, main, run

# --- tiny fakes in the real formats ---------------------------------------------------------------


def _write_nmnist_bin(path, events):
    """N-MNIST's format: 5 bytes per event, x, y, then 1 polarity bit and a 23-bit timestamp (us)."""
    x, y, t, p = (events[:, i].astype(np.uint32) for i in range(4))
    raw = np.stack([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF], axis=1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw.tobytes())


def _fake_events(rng, count, start_us, end_us):
    t = np.sort(rng.integers(start_us, end_us, count))
    return np.stack([rng.integers(0, 34, count), rng.integers(0, 34, count), t, rng.integers(0, 2, count)], axis=1)


@pytest.fixture(scope="module")
def fake_nmnist(tmp_path_factory):
    """Three digits, two training and one test sample each; some events past the 300 ms window."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(3)
    written = {}
    for folder, per_class in (("Train", 2), ("Test", 1)):
        for digit in (0, 1, 2):
            for k in range(per_class):
                events = _fake_events(rng, 400, 1_000 + 500 * k, 330_000)
                path = root / "NMNIST" / folder / str(digit) / f"{k:05d}.bin"
                _write_nmnist_bin(path, events)
                written[str(path)] = (events, digit)
    return root, written


def _expected_events(events):
    shifted = events.astype(np.int64).copy()
    shifted[:, 2] -= shifted[:, 2].min()
    return shifted[shifted[:, 2] < 300_000]


def _write_cifar10(root, per_batch=3):
    rng = np.random.default_rng(5)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)  # rows: 1024 R, 1024 G, 1024 B
        labels = rng.integers(0, 10, per_batch).tolist()
        (folder / name).write_bytes(pickle.dumps({"data": data, "labels": labels}))
        written[name] = (data, labels)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    return written


# --- missing files --------------------------------------------------------------------------------

MISSING = [
    ("nmnist", ("NMNIST", "Train"), "<data-dir>/NMNIST/Train/<digit 0-9>/<nnnnn>.bin"),
    ("dvs-gesture", ("DVSGesture", "ibmGestureTrain"), "<data-dir>/DVSGesture/ibmGestureTrain/user<NN>_<lighting>"),
    ("cifar10-dvs", ("CIFAR10DVS", "airplane"), "<data-dir>/CIFAR10DVS/<class>/<name>.aedat4"),
    ("cifar10", ("cifar-10-batches-py", "data_batch_1"), "<data-dir>/cifar-10-batches-py/{data_batch_1,"),
]


@pytest.mark.parametrize(("dataset", "looked_at", "layout"), MISSING)
def test_an_empty_data_dir_names_the_path_and_the_layout(tmp_path, dataset, looked_at, layout):
    with pytest.raises(DatasetNotFoundError) as raised:
        load_dataset(dataset, timesteps=4, data_dir=tmp_path)
    message = str(raised.value)
    assert str(tmp_path.joinpath(*looked_at)) in message
    assert layout in message
    assert "Nothing is downloaded" in message
    assert "\n" not in message


def test_a_half_present_data_set_names_the_missing_part(tmp_path):
    # Only the training folder: the error is about the test folder.
    train_only = tmp_path / "NMNIST" / "Train" / "0"
    train_only.mkdir(parents=True)
    (train_only / "00000.bin").write_bytes(bytes(5))
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "NMNIST" / "Test")):
        load_dataset("nmnist", timesteps=4, data_dir=tmp_path)


def test_a_real_data_set_needs_a_data_dir():
    with pytest.raises(DatasetNotFoundError, match="--data-dir"):
        load_dataset("cifar10", timesteps=4)


@pytest.mark.parametrize("dataset", ["nmnist", "dvs-gesture", "cifar10-dvs", "cifar10"])
def test_the_cli_turns_missing_files_into_one_line_and_status_2(tmp_path, capsys, dataset):
    with pytest.raises(SystemExit) as exited:
        main(["--dataset", dataset, "--data-dir", str(tmp_path), "--out", str(tmp_path / "out")])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("spiketrain.train: error: ")
    assert str(tmp_path) in err
    assert not (tmp_path / "out").exists()


def test_the_cli_process_exits_2_without_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "spiketrain.train", "--dataset", "nmnist", "--data-dir", str(tmp_path), "--out", "x"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"spiketrain.train: error: nmnist: no such directory at {tmp_path / 'NMNIST' / 'Train'}; expected "
        "<data-dir>/NMNIST/Train/<digit 0-9>/<nnnnn>.bin and <data-dir>/NMNIST/Test/<digit 0-9>/<nnnnn>.bin "
        "(the extracted Train and Test folders of N-MNIST's train.zip and test.zip, 5 bytes per event). "
        "Nothing is downloaded: put the files there or point --data-dir at them"
    ]


def test_the_cli_wants_a_data_dir_for_a_real_data_set(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--dataset", "cifar10", "--out", str(tmp_path / "out")])
    assert exited.value.code == 2
    assert "--data-dir" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("aedat") is not None, reason="aedat is installed here")
def test_cifar10_dvs_files_without_the_aedat_reader_are_a_clear_error(tmp_path):
    for name in CIFAR10_DVS_CLASSES:
        (tmp_path / "CIFAR10DVS" / name).mkdir(parents=True)
        (tmp_path / "CIFAR10DVS" / name / "cifar10_0.aedat4").write_bytes(b"")
    with pytest.raises(MissingDependencyError, match="`aedat` package"):
        load_dataset("cifar10-dvs", timesteps=4, data_dir=tmp_path)


# --- reading the real formats ---------------------------------------------------------------------


def test_nmnist_is_read_in_tonics_format_and_binned_by_the_shared_binning(fake_nmnist):
    root, written = fake_nmnist
    data = load_dataset("nmnist", timesteps=5, data_dir=root)
    binning = EventBinning(width=34, height=34, polarities=2, window_us=300_000, bins=5)
    assert data.binning == binning
    assert data.input_kind == "events"
    assert data.input_shape == (2, 34, 34)
    assert data.labels == [str(d) for d in range(10)]
    assert len(data.train.targets) == 6 and len(data.held_out.targets) == 3
    for split in (data.train, data.held_out):
        frames = np.asarray(split.inputs)
        assert frames.shape == (len(split.targets), 5, 2, 34, 34) and frames.dtype == np.float32
        for i, path in enumerate(split.events.paths):
            events, digit = written[path]
            expected = _expected_events(events)
            assert len(expected) < len(events)  # the window cut some off
            assert split.targets[i] == digit
            assert np.array_equal(split.events[i], expected)
            assert np.array_equal(frames[i], bin_events(expected, binning))
        # A batch, as training takes it: any rows, in any order.
        assert np.array_equal(split.inputs[np.array([2, 0])], frames[[2, 0]])
    # The split order is fixed, mixes classes, and a limit takes its first samples.
    again = load_dataset("nmnist", timesteps=5, data_dir=root, limit=2)
    assert again.train.events.paths == data.train.events.paths[:2]
    assert np.array_equal(again.train.targets, data.train.targets[:2])
    assert len(set(data.train.targets[:3].tolist())) > 1


def test_events_become_server_events():
    import numpy.lib.recfunctions as rf

    rows = np.array([[3, 4, 1_500, 1], [1, 2, 1_000, 0], [5, 6, 9_000, 1]])
    structured = rf.unstructured_to_structured(
        rows, np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", bool)])
    )
    assert to_server_events(structured, 5_000).tolist() == [[1, 2, 0, 0], [3, 4, 500, 1]]
    assert to_server_events(structured[:0], 5_000).shape == (0, 4)


def test_dvs_gesture_is_read_in_tonics_preprocessed_format(tmp_path):
    rng = np.random.default_rng(1)
    written = {}
    for folder, user, labels in (
        ("ibmGestureTrain", "user01_fluorescent", (0, 3)),
        ("ibmGestureTest", "user24_led", (10,)),
    ):
        for label in labels:
            t_ms = np.sort(rng.integers(2_000, 9_000, 50))
            rows = np.stack([rng.integers(0, 128, 50), rng.integers(0, 128, 50), rng.integers(0, 2, 50), t_ms], axis=1)
            path = tmp_path / "DVSGesture" / folder / user / f"{label}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, rows.astype(np.float64))
            written[str(path)] = (rows, label)
    data = load_dataset("dvs-gesture", timesteps=4, data_dir=tmp_path)
    assert data.binning == EventBinning(width=128, height=128, polarities=2, window_us=6_000_000, bins=4)
    assert len(data.labels) == 11
    assert len(data.train.targets) == 2 and data.held_out.targets.tolist() == [10]
    for split in (data.train, data.held_out):
        for i, path in enumerate(split.events.paths):
            rows, label = written[path]
            t_us = (rows[:, 3] - rows[:, 3].min()) * 1000
            expected = np.stack([rows[:, 0], rows[:, 1], t_us, rows[:, 2]], axis=1)
            expected = expected[t_us < 6_000_000]
            assert split.targets[i] == label
            assert np.array_equal(split.events[i], expected)
            assert np.array_equal(split.inputs[i], bin_events(expected, data.binning))


def test_cifar10_dvs_holds_out_a_tenth_of_each_class_the_same_way_every_time():
    paths = [f"/d/CIFAR10DVS/{c}/cifar10_{c}_{i}.aedat4" for c in CIFAR10_DVS_CLASSES for i in range(20)]
    targets = [k for k in range(10) for _ in range(20)]
    train, held = cifar10_dvs_split(paths, targets)
    _, again_held = cifar10_dvs_split(list(reversed(paths)), list(reversed(targets)))
    assert sorted(paths[i] for i in held) == sorted(list(reversed(paths))[i] for i in again_held)
    assert len(held) == 20 and len(train) == 180
    assert set(train.tolist()).isdisjoint(held.tolist())
    assert np.bincount([targets[i] for i in held]).tolist() == [2] * 10


def test_cifar10_is_read_through_torchvision_in_pixel_units(tmp_path):
    written = _write_cifar10(tmp_path)
    data = load_dataset("cifar10", data_dir=tmp_path)
    assert data.input_kind == "static" and data.input_shape == (3, 32, 32)
    assert data.labels[0] == "airplane" and len(data.labels) == 10
    train_rows = np.concatenate([written[f"data_batch_{k}"][0] for k in range(1, 6)])
    assert np.array_equal(data.train.inputs, train_rows.reshape(-1, 3, 32, 32).astype(np.float32))
    assert data.train.targets.tolist() == [label for k in range(1, 6) for label in written[f"data_batch_{k}"][1]]
    assert np.array_equal(data.held_out.inputs, written["test_batch"][0].reshape(-1, 3, 32, 32))
    assert data.held_out.targets.tolist() == written["test_batch"][1]
    assert len(load_dataset("cifar10", data_dir=tmp_path, limit=2).train.targets) == 2


# --- end to end -----------------------------------------------------------------------------------


def test_a_vggsnn_trained_on_nmnist_exports_its_binning_and_the_server_accepts_it(
    fake_nmnist, tmp_path, spikeserve_bin
):
    root, _ = fake_nmnist
    out = tmp_path / "nmnist"
    config = TrainConfig(
        dataset="nmnist",
        data_dir=str(root),
        arch="auto",
        width_multiplier=0.0625,
        epochs=1,
        timesteps=3,
        batch_size=3,
        threads=1,
    )
    report = run(config, out)
    assert report["parity"]["max_abs_logit_diff"] < 1e-4
    assert report["training"]["arch"] == "vggsnn"
    meta = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    assert json.loads(meta["spikeserve.events"]) == {
        "width": 34,
        "height": 34,
        "polarities": 2,
        "window_us": 300_000,
        "bins": 3,
    }
    heldout = json.loads((out / "heldout.json").read_text())
    assert len(heldout["events"]) == len(heldout["targets"]) == 3
    result = subprocess.run([spikeserve_bin, "inspect", out], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    inspected = json.loads(result.stdout)
    assert inspected["frame_shape"] == [2, 34, 34]
    assert len(inspected["states"]) == 8
