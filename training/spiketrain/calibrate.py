"""Calibrates a shipped model's exits without retraining it: budget -> threshold, into its metadata and card.

    python -m spiketrain.calibrate --model ../models/digits
    python -m spiketrain.calibrate --model ../models/mnist-events          # an ensemble (ensemble.json)

Runs the exported graph(s) over the data set's calibration split (or, for data sets without one, one
stratified half of the held-out set), chooses a threshold per accuracy-drop budget there
(:mod:`spiketrain.calibration`), reports it on the test split (the other half), and writes the table
into the model's metadata (``spikeserve.calibration``; an ensemble's into ``ensemble.json``), makes the
0.5 pt threshold the default, and updates ``eval.json`` and the card.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import onnx

from . import anytime, calibration, ensemble
from .cards import write_card
from .data import Dataset, load_dataset, model_binning, to_frames
from .export import METADATA_PREFIX, onnx_logits, onnx_logits_and_synaptic_ops, open_session, update_metadata

log = logging.getLogger("spiketrain")


def _metadata(path: Path) -> dict[str, str]:
    proto = onnx.load(str(path), load_external_data=False)
    return {
        p.key.removeprefix(METADATA_PREFIX): p.value for p in proto.metadata_props if p.key.startswith(METADATA_PREFIX)
    }


def calibration_section(
    data: Dataset,
    held_out: np.ndarray,
    calibration_split: np.ndarray | None = None,
    held_out_synaptic_ops: np.ndarray | None = None,
) -> tuple[dict[str, object], np.ndarray]:
    """(the calibration section of ``eval.json``, the calibration logits it chose on).

    ``held_out``: logits ``[K, T, N, C]`` of the whole held-out (test) set; ``calibration_split``: those of
    ``data.calibration`` (required when the data set has one). Without a calibration split, one stratified
    half of the held-out set chooses and the other reports."""
    targets = data.held_out.targets
    if data.calibration is not None:
        if calibration_split is None:
            raise ValueError(f"{data.name} has a calibration split: its logits are needed")
        cal, cal_targets, test, test_targets, synops = (
            calibration_split,
            data.calibration.targets,
            held_out,
            targets,
            held_out_synaptic_ops,
        )
        how = (
            f"chosen on the calibration split ({len(cal_targets)} samples), reported on the test "
            f"split ({len(test_targets)} samples)"
        )
    else:
        first, second = calibration.halves(targets)
        cal, cal_targets, test, test_targets = (
            held_out[:, :, first],
            targets[first],
            held_out[:, :, second],
            targets[second],
        )
        synops = None if held_out_synaptic_ops is None else held_out_synaptic_ops[:, :, second]
        how = (
            f"chosen on one stratified half of the held-out set ({len(first)} samples), reported on the other "
            f"({len(second)} samples)"
        )
    table = calibration.calibration_table(cal, cal_targets, test, test_targets, test_synaptic_ops=synops)
    section = {
        "split": how,
        "rule": f"fewest mean timesteps with max(drop, 0) + {calibration.CALIBRATION_Z} x paired SE <= budget",
        "table": table,
        "test_area_under_curve": calibration.curve(test, test_targets).area(),
    }
    return section, cal


def calibrate_model(directory: Path, threads: int = 1, data_dir: Path | None = None) -> dict[str, object]:
    ensemble_file = directory / "ensemble.json"
    if ensemble_file.is_file():
        spec = json.loads(ensemble_file.read_text())
        member_files = [directory / m for m in spec["members"]]
    else:
        spec = None
        member_files = [directory / "model.onnx"]
    meta = _metadata(member_files[0])
    timesteps = int(meta["timesteps"])
    dataset = json.loads(meta["training"])["dataset"]
    data = load_dataset(dataset, timesteps=timesteps, data_dir=data_dir, **model_binning(meta))
    sessions = [open_session(f, threads) for f in member_files]
    stepped = [
        onnx_logits_and_synaptic_ops(s, to_frames(data.held_out.inputs, timesteps, data.input_kind), 1)
        for s in sessions
    ]
    held_out = np.stack([logits for logits, _ in stepped])
    synops = None if any(ops is None for _, ops in stepped) else np.stack([ops for _, ops in stepped])
    calibration_split = None
    if data.calibration is not None:
        frames = to_frames(data.calibration.inputs, timesteps, data.input_kind)
        calibration_split = np.stack([onnx_logits(s, frames, batch_size=1) for s in sessions])
    section, _ = calibration_section(data, held_out, calibration_split, synops)
    table = section["table"]
    assert isinstance(table, list)
    threshold = calibration.default_threshold(table)
    rows = calibration.metadata_table(table)
    if spec is not None:
        spec["default_threshold"] = threshold
        spec["calibration"] = rows
        ensemble_file.write_text(json.dumps(spec, indent=1) + "\n")
    else:
        update_metadata(member_files[0], {"default_threshold": threshold, "calibration": rows})
    # eval.json: the default threshold's figures on the whole held-out set, as before, at the new threshold.
    evaluation_file = directory / "eval.json"
    evaluation = json.loads(evaluation_file.read_text())
    default = anytime.anytime_ensemble(held_out, data.held_out.targets, threshold)
    evaluation["default_threshold"] = threshold
    evaluation["anytime_at_default_threshold"] = anytime.summary(default, timesteps, with_samples=True)
    evaluation["calibration"] = section
    evaluation_file.write_text(json.dumps(evaluation, indent=1) + "\n")
    # The card's figures at the default threshold change with it: rewrite it whole.
    if spec is not None:
        ensemble.write_card(directory, evaluation)
    else:
        metadata = {key: _json_or_text(value) for key, value in _metadata(member_files[0]).items()}
        write_card(directory / "card.md", directory.name, metadata, evaluation)
    write_calibration_card(directory / "card.md", section, threshold)
    return section


def _json_or_text(value: str) -> object:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


CARD_SECTION = "## Calibrated exits"


def write_calibration_card(card: Path, section: dict[str, object], threshold: float) -> None:
    """Replaces (or appends) the card's calibration section."""
    text = card.read_text() if card.is_file() else ""
    if CARD_SECTION in text:
        text = text[: text.index(CARD_SECTION)].rstrip() + "\n"
    table = section["table"]
    assert isinstance(table, list)
    lines = [
        "",
        CARD_SECTION,
        "",
        f"Ask for an accuracy budget instead of a threshold (`max_accuracy_drop`, percentage points against the "
        f"model at T): the server uses the threshold chosen for the largest budget below that does not exceed "
        f"it. Thresholds {section['split']}; rule: {section['rule']}. The default threshold is the 0.5 pt one, "
        f"{threshold:.6f}. Area under the test curve (accuracy against mean timesteps over [1, T], normalised): "
        f"{section['test_area_under_curve']:.4f}.",
        "",
        *calibration.markdown(table, "calibration", "test"),
        "",
        "Compute reduction: member-timesteps against one member at T (an ensemble of K spends K per timestep).",
        "",
    ]
    card.write_text(text + "\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    parser = argparse.ArgumentParser(prog="python -m spiketrain.calibrate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, nargs="+", help="model directories")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    for directory in args.model:
        section = calibrate_model(directory, args.threads, args.data_dir)
        table = section["table"]
        assert isinstance(table, list)
        print(f"{directory}: {section['split']}")
        print("\n".join(calibration.markdown(table, "calibration", "test")))


if __name__ == "__main__":
    main()
