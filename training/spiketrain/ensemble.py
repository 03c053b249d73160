"""Makes an ensemble out of models trained with different seeds, and evaluates it.

    python -m spiketrain.ensemble --out ../models/digits-tet --members seed-0 seed-1 seed-2

``--members`` are model directories (each written by ``spiketrain.train``) relative to ``--out``.
Writes ``ensemble.json`` (what the server loads), ``eval.json`` (the ensemble's anytime evaluation,
the variance that separates right from wrong answers) and ``card.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
from sklearn.metrics import roc_auc_score

from . import anytime
from .data import load_dataset, model_binning, to_frames
from .export import METADATA_PREFIX, onnx_logits, open_session

log = logging.getLogger("spiketrain")


def _metadata(path: Path) -> dict[str, str]:
    proto = onnx.load(str(path), load_external_data=False)
    return {
        p.key.removeprefix(METADATA_PREFIX): p.value for p in proto.metadata_props if p.key.startswith(METADATA_PREFIX)
    }


def build(out: Path, members: list[str], threads: int = 1, data_dir: Path | None = None) -> dict[str, object]:
    member_files = [out / m / "model.onnx" for m in members]
    metadata = [_metadata(f) for f in member_files]
    timesteps = int(metadata[0]["timesteps"])
    threshold = float(metadata[0]["default_threshold"])
    for name, meta in zip(members, metadata, strict=True):
        # The binning too: members binned differently would each need their own frames.
        for key in ("timesteps", "labels", "input_kind", "events"):
            if meta.get(key) != metadata[0].get(key):
                raise ValueError(f"member {name} differs from {members[0]} in {key}")
    dataset = json.loads(metadata[0]["training"])["dataset"]
    data = load_dataset(dataset, timesteps=timesteps, data_dir=data_dir, **model_binning(metadata[0]))
    targets = data.held_out.targets
    frames = to_frames(data.held_out.inputs, timesteps, data.input_kind)
    member_logits = np.stack([onnx_logits(open_session(f, threads), frames, batch_size=1) for f in member_files])

    mean, variance = anytime.ensemble_probabilities(member_logits)
    predictions = mean.argmax(axis=2)
    per_step = [float((predictions[t] == targets).mean()) for t in range(timesteps)]
    auroc = []
    for t in range(timesteps):
        wrong = predictions[t] != targets
        # Higher variance should flag wrong answers; undefined when every answer is right.
        auroc.append(float(roc_auc_score(wrong, variance[t])) if 0 < wrong.sum() < len(wrong) else None)
    default = anytime.anytime_ensemble(member_logits, targets, threshold)
    member_accuracy = [anytime.accuracy_per_timestep(logits, targets) for logits in member_logits]
    report: dict[str, object] = {
        "model": out.name,
        "members": members,
        "timesteps": timesteps,
        "default_threshold": threshold,
        "held_out_samples": len(targets),
        "accuracy_per_timestep": per_step,
        "member_accuracy_per_timestep": member_accuracy,
        "mean_variance_per_timestep": [float(v) for v in variance.mean(axis=1)],
        "variance_auroc_per_timestep": auroc,
        "anytime_at_default_threshold": anytime.summary(default, timesteps, with_samples=True),
        "threshold_sweep": [
            anytime.summary(anytime.anytime_ensemble(member_logits, targets, t), timesteps)
            for t in anytime.DEFAULT_SWEEP
        ],
    }
    spec = {
        "members": [f"{m}/model.onnx" for m in members],
        "accuracy_per_timestep": [round(a, 6) for a in per_step],
        "training": {"ensemble_of": [json.loads(meta.get("training", "{}")) for meta in metadata]},
    }
    (out / "ensemble.json").write_text(json.dumps(spec, indent=1) + "\n")
    (out / "eval.json").write_text(json.dumps(report, indent=1) + "\n")
    shutil.copyfile(out / members[0] / "heldout.json", out / "heldout.json")
    write_card(out, report)
    return report


def write_card(out: Path, report: dict[str, object]) -> None:
    steps = report["accuracy_per_timestep"]
    members = report["member_accuracy_per_timestep"]
    auroc = report["variance_auroc_per_timestep"]
    variance = report["mean_variance_per_timestep"]
    at_default = report["anytime_at_default_threshold"]
    assert isinstance(steps, list) and isinstance(members, list) and isinstance(at_default, dict)
    assert isinstance(auroc, list) and isinstance(variance, list)
    header = "| stop at t | " + " | ".join(str(t + 1) for t in range(len(steps))) + " |"
    rule = "|---|" + "---|" * len(steps)
    # A recipe shipped by a study names the make target that rebuilds it (recipe.json, written first).
    recipe_file = out / "recipe.json"
    recipe = json.loads(recipe_file.read_text()) if recipe_file.is_file() else {}
    rebuilt_by = (
        f"Rebuilt by `{recipe['rebuilt_by']}` (the recipe, and how it was chosen: `recipe.json`)."
        if "rebuilt_by" in recipe
        else "Rebuilt by the make target of the same name (see the README)."
    )
    lines = [
        f"# Model card: `{out.name}` (ensemble of {len(members)})",
        "",
        f"Members: {', '.join(f'`{m}`' for m in report['members'])} (see their own cards), stepped in lockstep. "
        "The answer is the mean of the members' running-mean softmax; the uncertainty is the members' "
        f"variance on the chosen class. {rebuilt_by}",
        "",
        f"## Held-out evaluation ({report['held_out_samples']} samples)",
        "",
        header,
        rule,
        "| ensemble accuracy % | " + " | ".join(f"{a * 100:.2f}" for a in steps) + " |",
    ]
    for name, accuracy in zip(report["members"], members, strict=True):  # type: ignore[call-overload]
        lines.append(f"| `{name}` accuracy % | " + " | ".join(f"{a * 100:.2f}" for a in accuracy) + " |")
    lines += [
        "| mean variance | " + " | ".join(f"{v:.2e}" for v in variance) + " |",
        "| variance AUROC (wrong vs right) | " + " | ".join("n/a" if a is None else f"{a:.3f}" for a in auroc) + " |",
        "",
        f"**Anytime at the default threshold {float(report['default_threshold']):.4f}: accuracy "
        f"{at_default['accuracy'] * 100:.2f}%, mean timesteps {at_default['mean_timesteps']:.3f} "
        f"({at_default['speedup']:.2f}x fewer than T).**",
        "",
    ]
    (out / "card.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    parser = argparse.ArgumentParser(prog="python -m spiketrain.ensemble", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the ensemble's directory")
    parser.add_argument("--members", nargs="+", required=True, help="member directories, relative to --out")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=None, help="local copy of a real data set (as for train)")
    args = parser.parse_args(argv)
    report = build(args.out, args.members, args.threads, args.data_dir)
    at_default = report["anytime_at_default_threshold"]
    assert isinstance(at_default, dict)
    log.info(
        "ensemble of %d: accuracy per timestep %s; at the default threshold accuracy %.4f, mean timesteps %.3f",
        len(args.members),
        [round(a, 4) for a in report["accuracy_per_timestep"]],  # type: ignore[union-attr]
        at_default["accuracy"],
        at_default["mean_timesteps"],
    )


if __name__ == "__main__":
    main()
