"""Smoke runs of every early-answers arm (issue 30) through the training CLI: a real, tiny training that
exports and evaluates a model. The real screen is ``python -m spiketrain.study early-screen`` (hours)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from spiketrain import train
from spiketrain.study_protocol import EARLY_ARMS

TINY = ["--dataset", "digits", "--epochs", "1", "--limit", "48", "--batch-size", "16", "--timesteps", "4"]
#: Arms that bin events by count need raw events: the study's own data set, a few samples per split.
TINY_EVENTS = ["--dataset", "mnist-events", "--epochs", "1", "--limit", "16", "--batch-size", "16", "--timesteps", "4"]


def tiny(arm: str) -> list[str]:
    return TINY_EVENTS if "--binning" in EARLY_ARMS[arm] else TINY


@pytest.mark.parametrize("arm", list(EARLY_ARMS))
def test_each_early_arm_trains_exports_and_evaluates_through_the_cli(
    arm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPIKETRAIN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / arm
    train.main([*tiny(arm), "--threads", "1", "--seed", "0", *EARLY_ARMS[arm], "--out", str(out)])
    report = json.loads((out / "eval.json").read_text())
    steps = report["accuracy_per_timestep"]
    assert len(steps) == 4 and all(0.0 <= a <= 1.0 for a in steps)
    at_default = report["anytime_at_default_threshold"]
    assert 1.0 <= at_default["mean_timesteps"] <= 4.0 and 0.0 <= at_default["accuracy"] <= 1.0
    assert report["calibration"]["table"], "the calibration table is written"
    # The exported graph computes what was trained (a rounding difference may flip an odd spike).
    assert report["parity"]["samples_diverged"] <= 2 and report["parity"]["prediction_agreement"] >= 0.97
    assert math.isfinite(report["train_seconds"])
    training = report["training"]
    options = training["loss_options"]  # the recipe is recorded, so the model says how it was trained
    config, _ = train.parse_args([*tiny(arm), *EARLY_ARMS[arm], "--out", "x"])
    assert options == {
        "tet": config.tet,
        "running_mean_weight": config.running_mean_weight,
        "schedule": config.running_mean_schedule,
        "distill_weight": config.distill_weight,
        "distill_temperature": config.distill_temperature,
    }
    assert training["loss"] == config.loss_options().name() != "tet"
    assert training["loss"] in (out / "card.md").read_text()
    assert not (out / "checkpoint.pt").exists()
    if config.binning == "count":
        # The exported model carries the count binning, so the server bins its raw events the same way.
        from spiketrain.export import open_session

        meta = open_session(out / "model.onnx").get_modelmeta().custom_metadata_map
        binning = json.loads(meta["spikeserve.events"])
        assert binning["mode"] == "count" and binning["events_per_bin"] == training["events_per_bin"] >= 1
        assert "binned by event count" in (out / "card.md").read_text()


def test_the_tet_recipe_is_recorded_as_before(tmp_path: Path) -> None:
    """With the new flags off, the model's training record is the one every earlier model has."""
    config, _ = train.parse_args(["--out", "x"])
    assert config.loss_options().is_tet
    assert config == train.TrainConfig()
    assert config.binning == "time" and config.events_per_bin is None


@pytest.mark.parametrize(
    "flags",
    [
        ["--binning", "count"],  # digits is not an event data set
        ["--dataset", "mnist-events", "--events-per-bin", "5"],  # K without count binning
        ["--dataset", "mnist-events", "--binning", "count", "--events-per-bin", "0"],
    ],
)
def test_bad_binning_flags_are_refused(flags: list[str]) -> None:
    with pytest.raises(SystemExit):
        train.parse_args([*flags, "--out", "x"])


@pytest.mark.parametrize(
    "flags",
    [
        ["--no-tet"],
        ["--running-mean-weight", "-1"],
        ["--distill-weight", "1", "--distill-temperature", "0"],
    ],
)
def test_bad_loss_flags_are_refused(flags: list[str]) -> None:
    with pytest.raises(SystemExit):
        train.parse_args([*flags, "--out", "x"])


def test_the_new_options_at_weight_zero_train_the_tet_weights_bit_for_bit() -> None:
    import torch

    from spiketrain.data import load_dataset

    data = load_dataset("digits", limit=32)
    base = train.TrainConfig(epochs=1, limit=32, batch_size=16, timesteps=2, threads=1)
    off = train.TrainConfig(epochs=1, limit=32, batch_size=16, timesteps=2, threads=1, running_mean_schedule="harmonic")
    a, b = train.train_model(base, data).state_dict(), train.train_model(off, data).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
