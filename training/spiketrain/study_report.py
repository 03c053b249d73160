"""The STR study's report: every arm on the test split, paired differences with a bootstrap, the choices
made on the calibration split only. Written by ``python -m spiketrain.study report``.

Per run: the thresholds are chosen on that run's calibration-split logits (:mod:`spiketrain.calibration`),
then applied to its test-split logits. Per arm: mean and standard deviation over seeds. Paired
differences (arm minus TET, seed by seed): the mean over the seeds both arms have, with a 95%
interval from a bootstrap that resamples seeds (pairs) and test samples (the same samples for both
arms of a pair) and keeps every chosen threshold fixed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import anytime, calibration
from .study_protocol import (
    ABLATIONS,
    SCREEN_ALPHAS,
    SCREEN_SEEDS,
    TIMESTEPS,
    alpha_arm,
    calibration_targets,
    load_logits,
    rcs_arm,
)

BOOTSTRAP = 400
BOOTSTRAP_SEED = 0
BUDGET = calibration.DEFAULT_BUDGET_PT


@dataclass(frozen=True)
class RunFigures:
    seed: int
    accuracy_at_t: float  # test
    area: float  # test, normalised area under accuracy against mean timesteps
    threshold: float  # chosen on calibration for BUDGET
    speedup: float  # test, at that threshold
    drop_pt: float  # test, realised
    drop_se_pt: float
    calibration_mean_timesteps: float  # at BUDGET, on the calibration split (what choices are made on)
    calibration_accuracy_at_t: float
    calibration_area: float


def _runs(root: Path, arm: str) -> dict[int, Path]:
    found = {}
    for directory in sorted((root / arm).glob("seed-*")):
        if (directory / "logits.npz").is_file():
            found[int(directory.name.removeprefix("seed-"))] = directory
    return found


def run_figures(directory: Path, seed: int, cal_targets: np.ndarray, test_targets: np.ndarray) -> RunFigures:
    logits = load_logits(directory)
    on_cal = calibration.curve(logits["calibration"][None], cal_targets)
    i = calibration.choose(on_cal, BUDGET, floor=False)  # the rule the STR study registered
    threshold = float(on_cal.thresholds[i])
    on_test = calibration.evaluate(logits["test"][None], test_targets, np.array([threshold]))
    return RunFigures(
        seed=seed,
        accuracy_at_t=on_test.accuracy_at_t,
        area=calibration.curve(logits["test"][None], test_targets).area(),
        threshold=threshold,
        speedup=float(TIMESTEPS / on_test.mean_timesteps[0]),
        drop_pt=float(on_test.drop[0] * 100),
        drop_se_pt=float(on_test.standard_error[0] * 100),
        calibration_mean_timesteps=float(on_cal.mean_timesteps[i]),
        calibration_accuracy_at_t=on_cal.accuracy_at_t,
        calibration_area=on_cal.area(),
    )


def _resampled(logits: np.ndarray, targets: np.ndarray, threshold: float, sample: np.ndarray) -> tuple[float, ...]:
    test = logits[:, sample]
    y = targets[sample]
    at = calibration.evaluate(test[None], y, np.array([threshold]))
    return (at.accuracy_at_t * 100, float(TIMESTEPS / at.mean_timesteps[0]), float(at.drop[0] * 100))


def paired_bootstrap(
    root: Path,
    arm: str,
    reference: str,
    seeds: list[int],
    figures: dict[str, dict[int, RunFigures]],
    targets: np.ndarray,
) -> dict[str, tuple[float, float, float]]:
    """Mean paired difference (arm - reference) and its 95% bootstrap interval, per metric."""
    names = ("accuracy at T (pt)", "speedup at 0.5 pt (x)", "realised drop (pt)")
    logits = {(a, s): load_logits(root / a / f"seed-{s}")["test"] for a in (arm, reference) for s in seeds}
    point = []
    for s in seeds:
        mine, theirs = figures[arm][s], figures[reference][s]
        point.append(
            (
                mine.accuracy_at_t * 100 - theirs.accuracy_at_t * 100,
                mine.speedup - theirs.speedup,
                mine.drop_pt - theirs.drop_pt,
            )
        )
    means = np.mean(point, axis=0)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    draws = []
    n = len(targets)
    for _ in range(BOOTSTRAP):
        chosen = rng.choice(seeds, size=len(seeds), replace=True)
        sample = rng.integers(n, size=n)
        diffs = []
        for s in chosen:
            a = _resampled(logits[(arm, s)], targets, figures[arm][s].threshold, sample)
            b = _resampled(logits[(reference, s)], targets, figures[reference][s].threshold, sample)
            diffs.append(np.subtract(a, b))
        draws.append(np.mean(diffs, axis=0))
    low, high = np.percentile(np.asarray(draws), [2.5, 97.5], axis=0)
    return {name: (float(means[k]), float(low[k]), float(high[k])) for k, name in enumerate(names)}


def _mean_sd(values: list[float], spec: str = ".2f") -> str:
    if not values:
        return "n/a"
    return f"{np.mean(values):{spec}} ± {np.std(values):{spec}}"


def write_report(root: Path, out: Path) -> dict[str, object]:
    cal_targets, test_targets = calibration_targets()
    alpha_file = root / "alpha.json"
    chosen = json.loads(alpha_file.read_text()) if alpha_file.is_file() else {}
    best = chosen.get("best")
    screen_seeds = tuple(chosen.get("seeds", {}).get("screen", SCREEN_SEEDS))
    arms = ["tet", "tet-no-augment", *(alpha_arm(a) for a in SCREEN_ALPHAS if a > 0)]
    # Ablations at alpha*, and at any alpha an earlier (shorter) screen chose and ablated.
    ablated = [
        a
        for a in SCREEN_ALPHAS
        if a > 0 and (a == best or any((root / f"{alpha_arm(a)}-{name}").is_dir() for name in ABLATIONS))
    ]
    arms += [f"{alpha_arm(a)}-{name}" for a in ablated for name in ABLATIONS]
    arms.append(rcs_arm())
    figures: dict[str, dict[int, RunFigures]] = {}
    for arm in arms:
        runs = _runs(root, arm)
        if runs:
            figures[arm] = {s: run_figures(d, s, cal_targets, test_targets) for s, d in runs.items()}

    lines = [
        "# The STR study on `mnist-events`",
        "",
        "Reproduce with `make study` (hours of CPU; resumable). Every run: `mnist-events` (real MNIST through the "
        "simulated event camera; train 3,000 / calibration 1,000 / test 1,000, one fixed split), T = 10, 30 "
        "epochs, event augmentation (except `tet-no-augment`), one thread. Thresholds are chosen per run on its "
        "calibration split for a 0.5 pt budget (drop + 1 paired SE within the budget, fewest mean timesteps); "
        "everything below the screen is measured on the test split, which chose nothing.",
        "",
        "## Screen (calibration split: alpha* is the largest area under the curve)",
        "",
        "| arm | seeds | calibration accuracy at T % | calibrated mean timesteps at 0.5 pt | area under the curve |",
        "|---|---|---|---|---|",
    ]
    for alpha in SCREEN_ALPHAS:
        arm = alpha_arm(alpha)
        runs = [f for s, f in figures.get(arm, {}).items() if s in screen_seeds]
        accuracy = _mean_sd([r.calibration_accuracy_at_t * 100 for r in runs])
        steps = _mean_sd([r.calibration_mean_timesteps for r in runs], ".3f")
        area = _mean_sd([r.calibration_area for r in runs], ".4f")
        lines.append(f"| {arm} (alpha {alpha:g}) | {len(runs)} | {accuracy} | {steps} | {area} |")
    lines += ["", f"alpha* = {best}" if best is not None else "alpha*: the screen has not finished.", ""]

    lines += [
        "## Arms on the test split",
        "",
        "| arm | seeds | accuracy at T % | area under the curve | speedup at 0.5 pt (x) | realised drop (pt) | "
        "calibration split: mean timesteps at 0.5 pt |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, runs in figures.items():
        r = list(runs.values())
        accuracy = _mean_sd([x.accuracy_at_t * 100 for x in r])
        area = _mean_sd([x.area for x in r], ".4f")
        steps = _mean_sd([x.calibration_mean_timesteps for x in r], ".3f")
        lines.append(
            f"| {arm} | {len(r)} | {accuracy} | {area} | {_mean_sd([x.speedup for x in r])} | "
            f"{_mean_sd([x.drop_pt for x in r])} | {steps} |"
        )

    if ablated:
        lines += [
            "",
            "## Ablations of the documented reading (calibration split: the documented reading stays unless one wins)",
            "",
            "| variant | seeds | calibration accuracy at T % | area under the curve | "
            "calibrated mean timesteps at 0.5 pt |",
            "|---|---|---|---|---|",
        ]
    for alpha in ablated:
        base = alpha_arm(alpha)
        # The seeds the choice of reading was made on (alpha.json), not the paired seeds a winner adds.
        ran = sorted({s for name in ABLATIONS for s in figures.get(f"{base}-{name}", {})})
        recorded = chosen.get("seeds", {}).get("ablations")
        ablation_seeds = [s for s in ran if recorded is None or s in recorded]
        for arm in [base, *(f"{base}-{name}" for name in ABLATIONS)]:
            runs = [f for s, f in figures.get(arm, {}).items() if s in ablation_seeds]
            accuracy = _mean_sd([r.calibration_accuracy_at_t * 100 for r in runs])
            area = _mean_sd([r.calibration_area for r in runs], ".4f")
            steps = _mean_sd([r.calibration_mean_timesteps for r in runs], ".3f")
            lines.append(f"| {arm} | {len(runs)} | {accuracy} | {area} | {steps} |")
    reading = chosen.get("reading", {}).get("winner")
    if reading is not None:
        verdict = (
            "no ablation wins: the documented reading stays STR's recipe."
            if reading == alpha_arm(best)
            else f"`{reading}` wins: it replaces the documented reading as STR's recipe, runs the paired "
            "seeds, and stands for STR when the shipped recipe is chosen."
        )
        lines += ["", f"Reading at alpha* (the largest mean area over the ablation seeds): {verdict}"]

    comparisons: dict[str, object] = {}
    lines += [
        "",
        "## Paired differences against TET (same seeds)",
        "",
        f"Mean over the shared seeds, 95% interval from {BOOTSTRAP} bootstrap draws over seeds and test samples.",
        "",
        "| arm - TET | seeds | accuracy at T (pt) | speedup at 0.5 pt (x) | realised drop (pt) |",
        "|---|---|---|---|---|",
    ]
    for arm in figures:
        if arm in ("tet", "tet-no-augment"):
            continue
        seeds = sorted(set(figures[arm]) & set(figures.get("tet", {})))
        if len(seeds) < 2:
            continue
        result = paired_bootstrap(root, arm, "tet", seeds, figures, test_targets)
        comparisons[arm] = {"seeds": seeds, **{k: list(v) for k, v in result.items()}}
        cells = " | ".join(f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]" for m, lo, hi in result.values())
        lines.append(f"| {arm} | {len(seeds)} | {cells} |")

    lines += ["", "## Robustness (test split, accuracy at T %; mean over seeds)", ""]
    lines += ["| arm | clean | shifted ±2 px | shifted ±4 px | noisier |", "|---|---|---|---|---|"]
    for arm in ("tet-no-augment", "tet"):
        evals = [json.loads((root / arm / f"seed-{s}" / "eval.json").read_text()) for s in figures.get(arm, {})]
        if not evals:
            continue
        cells = []
        for variant in ("clean", "shifted ±2 px", "shifted ±4 px", "noisier"):
            cells.append(_mean_sd([e["robustness"][variant]["accuracy_at_t"] * 100 for e in evals]))
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines.append("")

    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    _plot(root, figures, out.with_suffix(".png"), test_targets)
    summary = {
        "alpha_star": best,
        "arms": {arm: [vars(f) for f in runs.values()] for arm, runs in figures.items()},
        "paired_against_tet": comparisons,
    }
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    print("\n".join(lines))
    return summary


def _plot(root: Path, figures: dict[str, dict[int, RunFigures]], path: Path, targets: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(1.0, TIMESTEPS, 91)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for arm, runs in figures.items():
        curves = []
        for seed in runs:
            points = calibration.curve(load_logits(root / arm / f"seed-{seed}")["test"][None], targets)
            order = np.argsort(points.mean_timesteps, kind="stable")
            # The best accuracy reachable within each mean-timestep budget (the curve's upper envelope).
            envelope = np.maximum.accumulate(points.accuracy[order])
            curves.append(np.interp(grid, points.mean_timesteps[order], envelope) * 100)
        axes.plot(grid, np.mean(curves, axis=0), label=f"{arm} ({len(curves)} seeds)")
    axes.set_xlabel("mean timesteps (test split)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title("mnist-events: accuracy against mean timesteps, mean over seeds")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


#: Accuracy reported at this timestep by the early-answers screen (issue 30's target: 95% at t = 3).
EARLY_T = 3


@dataclass(frozen=True)
class EarlyFigures:
    """One run of the early-answers screen, on the calibration split only (nothing here reads the test split)."""

    seed: int
    accuracy_at_t: float
    accuracy_at_early_t: float  # at EARLY_T
    area: float  # normalised area under accuracy against mean timesteps
    oracle_mean_exit: float  # mean of the first t after which the prediction never changes
    calibrated_mean_timesteps: float  # at BUDGET, chosen and measured on the calibration split
    accuracy_per_timestep: list[float]


def early_figures(directory: Path, seed: int, cal_targets: np.ndarray) -> EarlyFigures:
    logits = load_logits(directory)["calibration"]
    per_step = anytime.accuracy_per_timestep(logits, cal_targets)
    on_cal = calibration.curve(logits[None], cal_targets)
    return EarlyFigures(
        seed=seed,
        accuracy_at_t=per_step[-1],
        accuracy_at_early_t=per_step[EARLY_T - 1],
        area=on_cal.area(),
        oracle_mean_exit=float(anytime.oracle_exit_timesteps(logits).mean()),
        # The rule the screen registered (before the point rule floored the drop at zero).
        calibrated_mean_timesteps=float(on_cal.mean_timesteps[calibration.choose(on_cal, BUDGET, floor=False)]),
        accuracy_per_timestep=per_step,
    )


def write_early_screen(
    root: Path, out: Path, arms: list[str], reference: str = "tet", seeds: tuple[int, ...] = SCREEN_SEEDS
) -> dict[str, object]:
    """The early-answers screen's table (``OUT.md``, ``OUT.json``): the finished runs of ``arms`` on the
    screen's ``seeds`` (the paired stage adds more seeds to some arms; they are not the screen's), on the
    calibration split, mean ± sd over seeds, and the difference to ``reference`` seed by seed (over the
    seeds both have). A screen, not a test: two seeds choose which arm goes on to the paired comparison."""
    cal_targets, _ = calibration_targets()
    figures = {
        arm: {s: early_figures(d, s, cal_targets) for s, d in _runs(root, arm).items() if s in seeds} for arm in arms
    }
    figures = {arm: runs for arm, runs in figures.items() if runs}
    lines = [
        "| arm | seeds | accuracy at T % | accuracy at t = 3 % | area under the curve | oracle mean exit | "
        "calibrated mean timesteps at 0.5 pt |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, runs in figures.items():
        r = list(runs.values())
        lines.append(
            f"| {arm} | {', '.join(str(s) for s in runs)} | {_mean_sd([x.accuracy_at_t * 100 for x in r])} | "
            f"{_mean_sd([x.accuracy_at_early_t * 100 for x in r])} | {_mean_sd([x.area for x in r], '.4f')} | "
            f"{_mean_sd([x.oracle_mean_exit for x in r], '.3f')} | "
            f"{_mean_sd([x.calibrated_mean_timesteps for x in r], '.3f')} |"
        )
    differences: dict[str, object] = {}
    base = figures.get(reference, {})
    diff_lines = []
    for arm, runs in figures.items():
        seeds = sorted(set(runs) & set(base))
        if arm == reference or not seeds:
            continue
        per_seed = {
            s: {
                "accuracy at T (pt)": (runs[s].accuracy_at_t - base[s].accuracy_at_t) * 100,
                "accuracy at t = 3 (pt)": (runs[s].accuracy_at_early_t - base[s].accuracy_at_early_t) * 100,
                "area": runs[s].area - base[s].area,
                "oracle mean exit": runs[s].oracle_mean_exit - base[s].oracle_mean_exit,
                "calibrated mean timesteps": runs[s].calibrated_mean_timesteps - base[s].calibrated_mean_timesteps,
            }
            for s in seeds
        }
        differences[arm] = per_seed
        for s, d in per_seed.items():
            diff_lines.append(
                f"| {arm} | {s} | "
                + " | ".join(f"{v:+.4f}" if k == "area" else f"{v:+.2f}" for k, v in d.items())
                + " |"
            )
    if diff_lines:
        lines += [
            "",
            f"Seed by seed, arm minus `{reference}` (same seed: same initial weights, data order and augmentation):",
            "",
            "| arm | seed | accuracy at T (pt) | accuracy at t = 3 (pt) | area | oracle mean exit | "
            "calibrated mean timesteps |",
            "|---|---|---|---|---|---|---|",
            *diff_lines,
        ]
    lines += ["", "Accuracy per timestep (running mean, calibration split, mean over seeds, %):", ""]
    lines += ["| arm | " + " | ".join(f"t={t}" for t in range(1, TIMESTEPS + 1)) + " |"]
    lines += ["|---|" + "---|" * TIMESTEPS]
    for arm, runs in figures.items():
        mean = np.mean([x.accuracy_per_timestep for x in runs.values()], axis=0) * 100
        lines.append(f"| {arm} | " + " | ".join(f"{a:.1f}" for a in mean) + " |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    summary = {
        "split": "calibration",
        "arms": {arm: [vars(f) for f in runs.values()] for arm, runs in figures.items()},
        "against_reference": differences,
        "reference": reference,
    }
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    _plot_early(figures, out.with_suffix(".png"))
    print("\n".join(lines))
    return summary


def _plot_early(figures: dict[str, dict[int, EarlyFigures]], path: Path) -> None:
    """Accuracy of the running mean against t per arm (calibration split; mean over seeds, each seed faint)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(1, TIMESTEPS + 1)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for arm, runs in figures.items():
        curves = np.array([x.accuracy_per_timestep for x in runs.values()]) * 100
        (line,) = axes.plot(t, curves.mean(axis=0), marker="o", markersize=3, label=f"{arm} ({len(curves)} seeds)")
        for curve in curves:
            axes.plot(t, curve, color=line.get_color(), alpha=0.25, linewidth=0.8)
    axes.set_xlabel("timestep t (prediction: softmax of the running mean of the logits)")
    axes.set_ylabel("calibration-split accuracy (%)")
    axes.set_title("mnist-events early-answers screen: accuracy against t")
    axes.set_xticks(t)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
