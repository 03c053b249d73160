"""Fits and calibrates a model's exit policies, measures them, and writes what the server loads.

    python -m spiketrain.policy_calibration --model ../models/mnist-events         # the model's own splits
    python -m spiketrain.policy_calibration --model DIR --recordings a.bin b.bin ...  # your data, no labels

With the model's own data set: the learned score is fit on one half of the calibration split, every
policy is calibrated on the calibration split (the learned one on its other half), and everything is
reported on the test split, which chooses nothing. With ``--recordings`` (event files the Python client
reads) or ``--inputs`` (an ``.npz`` with ``inputs`` and, optionally, ``targets``), the user's data takes
the calibration split's place; without targets only the consistency with the model's own answer at T is
calibrated (which bounds the accuracy drop), and there is no test report.

Writes ``exit-policies.json`` into the model directory (the server reads it at load; see
docs/MODEL-CONTRACT.md), and with the model's own data also the ``exit_policies`` section of
``eval.json``, the card's "Exit policies" section and ``exit-policies.png``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import exit_policies as ep
from .exit_features import Trajectories, oracle_exits, trajectories

log = logging.getLogger("spiketrain")

POLICY_FILE = "exit-policies.json"
FIGURE_FILE = "exit-policies.png"
CARD_SECTION = "## Exit policies"
PROJECT_VERSION = "0.1.0"


@dataclass(frozen=True)
class Split:
    traj: Trajectories
    targets: np.ndarray | None
    name: str


# --------------------------------------------------------------------------------------------------
# Figures of one policy row on one split


def ceiling(traj: Trajectories) -> dict[str, float]:
    oracle = oracle_exits(traj.prediction)
    mean = float(oracle.mean())
    return {"oracle_mean_exit": mean, "ceiling_speedup": traj.timesteps / mean, "samples": traj.samples}


def figures(split: Split, kind: str, row: dict[str, Any], score: np.ndarray | None, members: int) -> dict[str, Any]:
    """A policy row's operating point on ``split``, decided exactly as the server decides."""
    traj = split.traj
    exits = ep.exits_of(ep.stops(traj, kind, row, score))
    n = traj.samples
    chosen = traj.prediction[exits, np.arange(n)]
    final = traj.prediction[-1]
    mean_timesteps = float((exits + 1).mean())
    speedup = traj.timesteps / mean_timesteps
    out: dict[str, Any] = {
        "samples": n,
        "mean_timesteps": mean_timesteps,
        "speedup": speedup,
        "fraction_of_ceiling": speedup / ceiling(traj)["ceiling_speedup"],
        "compute_reduction": traj.timesteps / (members * mean_timesteps),
        "disagreement_pt": float((chosen != final).mean() * 100),
    }
    if split.targets is not None:
        right = chosen == split.targets
        right_at_t = final == split.targets
        n10 = int((right_at_t & ~right).sum())
        n01 = int((~right_at_t & right).sum())
        out.update(
            accuracy=float(right.mean()),
            accuracy_at_t=float(right_at_t.mean()),
            drop_pt=(n10 - n01) / n * 100,
            drop_se_pt=float(np.sqrt(n10 + n01) / n * 100),
        )
    return out


# --------------------------------------------------------------------------------------------------
# Calibration


def _family_scores(kind: str, traj: Trajectories, slope: float, mlp: ep.Mlp | None) -> ep.Family:
    if kind == "cutoff":
        return ep.cutoff_family(traj)
    if kind == "schedule":
        return ep.schedule_family(traj, slope)
    assert mlp is not None
    return ep.learned_family(traj, mlp)


def _slopes(kind: str) -> tuple[float, ...]:
    return ep.SLOPES if kind == "schedule" else (0.0,)


def point_rows(
    kind: str, split: Split, mlp: ep.Mlp | None, budgets: tuple[float, ...], floor: bool = True
) -> list[dict[str, Any]]:
    """Per budget, the row with the fewest mean timesteps on ``split`` whose drop (or, without labels,
    disagreement) + z SE fits the budget; the schedule searches its slopes as well."""
    best: dict[float, tuple[float, float, dict[str, Any]]] = {}
    for slope in _slopes(kind):
        family = _family_scores(kind, split.traj, slope, mlp)
        p = ep.points(family, split.traj, split.targets, ep.candidates(family.score, positive=kind != "learned"))
        for budget in budgets:
            i = ep.point_choice(p, budget, floor)
            key = (float(p.mean_timesteps[i]), slope)
            if budget not in best or key < best[budget][:2]:
                best[budget] = (*key, family.row(float(p.lams[i])))
    return [{"max_accuracy_drop": b, **best[b][2]} for b in budgets]


def _grid(kind: str, family: ep.Family, fit: Trajectories | None, mlp: ep.Mlp | None) -> np.ndarray:
    if kind == "learned":
        assert fit is not None and mlp is not None
        return ep.learned_grid(ep.learned_family(fit, mlp).score)
    finite = family.score[np.isfinite(family.score)]
    return ep.confidence_grid(float(finite.max()) if finite.size else 1.0)


@dataclass(frozen=True)
class GuaranteeTable:
    """For one policy kind: per slope, the grid and the disagreement/exit of every sample at every lam
    (so that the guarantee can be re-run on resampled splits cheaply)."""

    kind: str
    slopes: tuple[float, ...]
    grids: list[np.ndarray]
    disagree: list[np.ndarray]  # per slope [L, N] bool
    steps: list[np.ndarray]  # per slope [L, N] int, 1-based exit
    rows: list[Any]  # per slope: lam -> row


def _guarantee_slopes(kind: str, fit: Trajectories, alpha: float, level: float) -> tuple[float, ...]:
    """The schedule's slope for a guarantee, chosen on the fit fold by the same test; (0,) otherwise."""
    if kind != "schedule":
        return (0.0,)
    table = guarantee_table(kind, fit, None, None, ep.SLOPES)
    s, _ = guaranteed_choice(table, np.arange(fit.samples), alpha, level, bonferroni=False)
    return (ep.SLOPES[s],)


def guarantee_table(
    kind: str, traj: Trajectories, fit: Trajectories | None, mlp: ep.Mlp | None, slopes: tuple[float, ...]
) -> GuaranteeTable:
    grids, disagree, steps, rows = [], [], [], []
    for slope in slopes:
        family = _family_scores(kind, traj, slope, mlp)
        grid = _grid(kind, family, fit, mlp)
        exits = ep.exits_for(family.score, grid)
        chosen = np.take_along_axis(traj.prediction, exits, axis=0)
        grids.append(grid)
        disagree.append(chosen != traj.prediction[-1][None])
        steps.append(exits + 1)
        rows.append(family.row)
    return GuaranteeTable(kind, slopes, grids, disagree, steps, rows)


def guaranteed_choice(
    table: GuaranteeTable, index: np.ndarray, alpha: float, level: float, bonferroni: bool = True
) -> tuple[int, int]:
    """(slope index, grid index) chosen by Learn-then-Test on the samples ``index``; several slopes
    share ``delta`` (Bonferroni), and among their chosen rows the fewest mean timesteps on ``index`` wins."""
    delta = (1.0 - level) / (len(table.slopes) if bonferroni else 1)
    best: tuple[float, int, int] | None = None
    for s in range(len(table.slopes)):
        k = table.disagree[s][:, index].sum(axis=1)
        i = ep.ltt_choice(k, np.zeros(len(k)), len(index), alpha, delta)
        mean = float(table.steps[s][i, index].mean())
        if best is None or mean < best[0]:
            best = (mean, s, i)
    assert best is not None
    return best[1], best[2]


def violation_rate(
    table: GuaranteeTable, n_calibration: int, alpha: float, level: float, resamples: int, seed: int = 0
) -> float:
    """How often the promise failed over random calibration/test splits of the pooled samples: the
    share of resamples whose test disagreement exceeds ``alpha`` (at most ``1 - level`` expected)."""
    rng = np.random.default_rng(seed)
    n = table.disagree[0].shape[1]
    failures = 0
    for _ in range(resamples):
        order = rng.permutation(n)
        calibration, test = order[:n_calibration], order[n_calibration:]
        s, i = guaranteed_choice(table, calibration, alpha, level)
        failures += bool(table.disagree[s][i, test].mean() > alpha)
    return failures / resamples


def _concat(a: Trajectories, b: Trajectories) -> Trajectories:
    return Trajectories(
        mean=np.concatenate([a.mean, b.mean], axis=1),
        variance=np.concatenate([a.variance, b.variance], axis=1),
        prediction=np.concatenate([a.prediction, b.prediction], axis=1),
        member_predictions=np.concatenate([a.member_predictions, b.member_predictions], axis=2),
    )


def sweep(kind: str, split: Split, row: dict[str, Any], mlp: ep.Mlp | None, points: int = 120) -> list[list[float]]:
    """(mean timesteps, accuracy or agreement %) along the policy's family on ``split``, for the figure."""
    slope = float(row.get("slope", 0.0))
    family = _family_scores(kind, split.traj, slope, mlp)
    lams = ep.candidates(family.score, positive=kind != "learned")
    if len(lams) > points:
        lams = np.unique(np.concatenate([lams[np.linspace(0, len(lams) - 1, points).astype(int)], [np.inf]]))
    p = ep.points(family, split.traj, split.targets, lams)
    if p.n10 is not None and p.n01 is not None and split.targets is not None:
        at_t = float((split.traj.prediction[-1] == split.targets).mean())
        quality = (at_t - (p.n10 - p.n01) / p.samples) * 100
    else:
        quality = (1 - p.disagree / p.samples) * 100
    return [[float(m), float(q)] for m, q in zip(p.mean_timesteps, quality, strict=True)]


def _default_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row that chooses between policies: the default budget's, else the largest below it, else the first."""
    below = [r for r in rows if r["max_accuracy_drop"] <= ep.DEFAULT_BUDGET_PT]
    return max(below, key=lambda r: r["max_accuracy_drop"]) if below else rows[0]


def calibrate(
    calibration_logits: np.ndarray,
    calibration_targets: np.ndarray | None,
    test_logits: np.ndarray | None = None,
    test_targets: np.ndarray | None = None,
    *,
    budgets: tuple[float, ...] = ep.BUDGETS_PT,
    levels: tuple[float, ...] = ep.GUARANTEE_LEVELS,
    resamples: int = ep.RESAMPLES,
    data: dict[str, str] | None = None,
    floor: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the policy file the server loads, the report for ``eval.json`` and the card).

    ``*_logits``: ``[K, T, N, C]``; targets may be ``None`` (consistency only). ``floor``: the point rule
    floors the estimated drop at zero (:meth:`exit_policies.Points.upper`); off only to reproduce a study
    that registered the older rule."""
    members = calibration_logits.shape[0]
    cal = Split(trajectories(calibration_logits), calibration_targets, "calibration")
    steps = cal.traj.timesteps
    fit_index, fold_index = ep.folds(cal.traj.samples)
    fit = cal.traj.subset(fit_index)
    fold = Split(
        cal.traj.subset(fold_index), None if calibration_targets is None else calibration_targets[fold_index], "fold"
    )
    mlp = ep.fit_mlp(fit)
    test = None if test_logits is None else Split(trajectories(test_logits), test_targets, "test")

    policies: dict[str, Any] = {}
    report: dict[str, Any] = {"policies": {}}
    choosing: dict[str, float] = {}
    choosing_guarantee: dict[str, float] = {}
    for kind in ep.KINDS:
        on = fold if kind == "learned" else cal
        point = point_rows(kind, on, mlp if kind == "learned" else None, budgets, floor)
        # The guarantee: Learn-then-Test on the calibration fold, data that chose nothing else about the
        # rule: the learned score was fit on the fit fold, the schedule's slope is chosen there (under the
        # same test), and so is the policy that serves guaranteed requests.
        guarantee_on = fold
        guaranteed, pools = [], []
        for level in levels:
            for budget in budgets:
                slopes = _guarantee_slopes(kind, fit, budget / 100, level)
                table = guarantee_table(kind, guarantee_on.traj, fit, mlp, slopes)
                s, i = guaranteed_choice(table, np.arange(guarantee_on.traj.samples), budget / 100, level)
                row = {"level": level, "max_accuracy_drop": budget, **table.rows[s](float(table.grids[s][i]))}
                guaranteed.append(row)
                pools.append(
                    None
                    if test is None
                    else guarantee_table(kind, _concat(guarantee_on.traj, test.traj), fit, mlp, slopes)
                )
        spec: dict[str, Any] = {"kind": kind, "point": point, "guarantee": guaranteed}
        if kind == "learned":
            spec["score"] = mlp.to_json()
        policies[kind] = spec
        score_of = (
            (lambda split: ep.learned_family(split.traj, mlp).score) if kind == "learned" else (lambda split: None)
        )
        default_row = _default_row(point)
        default_guaranteed = _default_row([r for r in guaranteed if r["level"] == levels[0]]) if levels else None
        if default_guaranteed is not None:
            fit_split = Split(fit, None, "fit")
            fit_score = ep.learned_family(fit, mlp).score if kind == "learned" else None
            choosing_guarantee[kind] = figures(fit_split, kind, default_guaranteed, fit_score, members)[
                "mean_timesteps"
            ]
        choosing[kind] = figures(fold, kind, default_row, score_of(fold), members)["mean_timesteps"]
        entry: dict[str, Any] = {
            "calibrated_on": (
                f"the calibration fold ({fold.traj.samples} samples; fit on the other {fit.samples})"
                if kind == "learned"
                else f"the calibration split ({cal.traj.samples} samples)"
            ),
            "point": [],
            "guarantee": [],
        }
        for row in point:
            item: dict[str, Any] = {"max_accuracy_drop": row["max_accuracy_drop"], "row": row}
            item["calibration"] = figures(on, kind, row, score_of(on), members)
            if test is not None:
                item["test"] = figures(test, kind, row, score_of(test), members)
            entry["point"].append(item)
        for row, pool in zip(guaranteed, pools, strict=True):
            item = {"level": row["level"], "max_accuracy_drop": row["max_accuracy_drop"], "row": row}
            item["calibration"] = figures(guarantee_on, kind, row, score_of(guarantee_on), members)
            if test is not None and pool is not None:
                item["test"] = figures(test, kind, row, score_of(test), members)
                item["violation_rate"] = violation_rate(
                    pool, guarantee_on.traj.samples, row["max_accuracy_drop"] / 100, row["level"], resamples
                )
                item["violation_resamples"] = resamples
            entry["guarantee"].append(item)
        if test is not None:
            entry["test_sweep"] = sweep(kind, test, default_row, mlp if kind == "learned" else None)
        report["policies"][kind] = entry
    enough = cal.traj.samples >= ep.MIN_SERVING_SAMPLES
    serving = min(ep.KINDS, key=lambda kind: (choosing[kind], ep.KINDS.index(kind))) if enough else "cutoff"
    report["serving_policy"] = serving
    if enough:
        report["serving_chosen_by"] = (
            f"fewest mean timesteps at the {ep.DEFAULT_BUDGET_PT} pt point row on the calibration fold "
            f"({fold.traj.samples} samples, which no policy was fit on): "
            + ", ".join(f"{k} {v:.3f}" for k, v in choosing.items())
        )
    else:
        report["serving_chosen_by"] = (
            f"the cutoff: {cal.traj.samples} calibration samples are fewer than the {ep.MIN_SERVING_SAMPLES} the "
            "richer policies need to be served by default (they are shipped, and can be asked for by name)"
        )
    serving_guarantee = serving
    report["serving_guarantee_chosen_by"] = "the cutoff, as above"
    if choosing_guarantee and enough:
        serving_guarantee = min(ep.KINDS, key=lambda kind: (choosing_guarantee[kind], ep.KINDS.index(kind)))
        report["serving_guarantee_chosen_by"] = (
            f"fewest mean timesteps of the {ep.DEFAULT_BUDGET_PT} pt row at level {levels[0]} on the fit "
            f"fold ({fit.samples} samples, on which no guarantee is tested): "
            + ", ".join(f"{k} {v:.3f}" for k, v in choosing_guarantee.items())
        )
    report["serving_policy_guarantee"] = serving_guarantee
    report["ceiling"] = {"calibration": ceiling(cal.traj)}
    if test is not None:
        report["ceiling"]["test"] = ceiling(test.traj)
        if test.targets is not None:
            preds = test.traj.prediction
            report["test_accuracy_per_timestep"] = [float((preds[t] == test.targets).mean()) for t in range(steps)]
    report["rules"] = {
        "point": (ep.POINT_RULE if floor else ep.UNFLOORED_POINT_RULE)
        + ("" if calibration_targets is not None else " (no labels: disagreement with the answer at T as the drop)"),
        "guarantee": "Learn-then-Test on the disagreement with the answer at T (exact binomial p-values, "
        "fixed-sequence from the most conservative threshold, on the calibration fold; "
        "the schedule's slope and the learned score chosen on the fit fold): with "
        "probability >= level over the calibration data, disagreement (and so the accuracy drop) <= budget",
    }
    document = {
        "format": ep.FORMAT,
        "version": ep.VERSION,
        "written_by": f"spiketrain {PROJECT_VERSION} (python -m spiketrain.policy_calibration)",
        "written_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "timesteps": steps,
        "classes": int(cal.traj.mean.shape[2]),
        "members": members,
        "serving_policy": serving,
        "serving_policy_guarantee": serving_guarantee,
        "data": {
            **(data or {}),
            "labels": calibration_targets is not None,
            "fit": f"the learned score: {fit.samples} samples of the calibration data (fold seed {ep.FOLD_SEED})",
            "calibration": f"point: cutoff and schedule on all {cal.traj.samples} calibration samples, learned on the "
            f"other {fold.traj.samples}; guarantee: every policy on those {fold.traj.samples}",
        },
        "policies": policies,
    }
    return document, report


# --------------------------------------------------------------------------------------------------
# A model directory: its logits, the files written beside it


@dataclass(frozen=True)
class ModelFiles:
    directory: Path
    members: list[Path]
    metadata: dict[str, str]

    @property
    def timesteps(self) -> int:
        return int(self.metadata["timesteps"])


def model_files(directory: Path) -> ModelFiles:
    from .calibrate import _metadata

    spec_file = directory / "ensemble.json"
    if spec_file.is_file():
        members = [directory / m for m in json.loads(spec_file.read_text())["members"]]
    else:
        members = [directory / "model.onnx"]
    missing = [str(m) for m in members if not m.is_file()]
    if missing:
        raise SystemExit(f"policy_calibration: {directory}: missing {', '.join(missing)}")
    return ModelFiles(directory, members, _metadata(members[0]))


def _cache_key(files: ModelFiles, what: str) -> str:
    import hashlib

    digest = hashlib.sha256(what.encode())
    for member in files.members:
        digest.update(member.read_bytes())
    return digest.hexdigest()[:16]


def member_logits(files: ModelFiles, frames: np.ndarray, what: str, cache: Path | None) -> np.ndarray:
    """``[K, T, N, C]`` logits of every member, stepped one sample at a time as the server's offline
    evaluation does; cached under ``cache`` by the members' bytes and ``what``."""
    from .export import onnx_logits, open_session

    path = None if cache is None else cache / f"{files.directory.name}-{_cache_key(files, what)}.npy"
    if path is not None and path.is_file():
        return np.load(path)
    logits = np.stack([onnx_logits(open_session(m, 1), frames, batch_size=1) for m in files.members])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, logits)
    return logits


def own_splits(files: ModelFiles, cache: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """(calibration logits, targets, test logits, targets, how): the data set's calibration and test
    splits, or one stratified half of its held-out set each where it has no calibration split."""
    from .calibration import halves
    from .data import load_dataset, model_binning, to_frames

    dataset = json.loads(files.metadata["training"])["dataset"]
    data = load_dataset(dataset, timesteps=files.timesteps, **model_binning(files.metadata))
    held_out = member_logits(
        files, to_frames(data.held_out.inputs, files.timesteps, data.input_kind), f"{dataset}/held_out", cache
    )
    targets = data.held_out.targets
    if data.calibration is not None:
        frames = to_frames(data.calibration.inputs, files.timesteps, data.input_kind)
        calibration = member_logits(files, frames, f"{dataset}/calibration", cache)
        how = (
            f"{dataset}: the calibration split ({len(data.calibration.targets)} samples) fits and calibrates; "
            f"the test split ({len(targets)} samples) reports"
        )
        return calibration, data.calibration.targets, held_out, targets, how
    first, second = halves(targets)
    how = (
        f"{dataset}: one stratified half of the held-out set ({len(first)} samples) fits and calibrates; the "
        f"other ({len(second)} samples) reports"
    )
    return held_out[:, :, first], targets[first], held_out[:, :, second], targets[second], how


def user_data(
    files: ModelFiles, recordings: list[Path], inputs: Path | None
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The user's own data as frames ``[T, N, ...]`` and targets (``None`` without labels)."""
    from .data import to_frames
    from .events import EventBinning, bin_events

    kind = files.metadata["input_kind"]
    if inputs is not None:
        with np.load(inputs, allow_pickle=False) as archive:
            if "inputs" not in archive:
                raise SystemExit(f"policy_calibration: {inputs}: no array named 'inputs'")
            array = np.asarray(archive["inputs"], dtype=np.float32)
            targets = np.asarray(archive["targets"], dtype=np.int64) if "targets" in archive else None
        if targets is not None and len(targets) != len(array):
            raise SystemExit(f"policy_calibration: {inputs}: {len(targets)} targets for {len(array)} inputs")
        return to_frames(array, files.timesteps, "static" if kind == "static" else "events"), targets, str(inputs)
    if kind != "events":
        raise SystemExit("policy_calibration: --recordings are event files, but this model takes frames (use --inputs)")
    from spikeserve_client.events import EventFileError, read_events

    binning = EventBinning(**json.loads(files.metadata["events"]))
    binned = []
    for path in recordings:
        try:
            binned.append(bin_events(read_events(path), binning))
        except EventFileError as error:
            raise SystemExit(f"policy_calibration: {error}") from error
    return to_frames(np.stack(binned), files.timesteps, "events"), None, f"{len(recordings)} recordings"


def write_card(card: Path, report: dict[str, Any]) -> None:
    """Replaces (or appends) the card's exit-policy section."""
    text = card.read_text() if card.is_file() else ""
    if CARD_SECTION in text:
        start = text.index(CARD_SECTION)
        following = text.find("\n## ", start + len(CARD_SECTION))
        text = text[:start].rstrip() + "\n" + ("" if following < 0 else text[following:])
    ceiling_test = report["ceiling"].get("test", report["ceiling"]["calibration"])
    lines = [
        "",
        CARD_SECTION,
        "",
        f"The ceiling: the answer already equals the answer at T, for good, after "
        f"{ceiling_test['oracle_mean_exit']:.3f} timesteps on average ({ceiling_test['ceiling_speedup']:.2f}x fewer "
        f"than T at zero drop; {report['ceiling']['calibration']['ceiling_speedup']:.2f}x on the calibration data). "
        f"`max_accuracy_drop` runs the **{report['serving_policy']}** policy ({report['serving_chosen_by']}); with a "
        f"`guarantee`, the **{report['serving_policy_guarantee']}** policy ({report['serving_guarantee_chosen_by']}). "
        f"Rules: point, {report['rules']['point']}; guarantee, {report['rules']['guarantee']}. Written by "
        f"`python -m spiketrain.policy_calibration` into `{POLICY_FILE}`; figure `{FIGURE_FILE}`.",
        "",
        "| policy | budget (pt) | calibration: mean timesteps | test: accuracy % | drop ± SE (pt) | mean timesteps "
        "| speedup | of the ceiling |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, entry in report["policies"].items():
        for item in entry["point"]:
            c, t = item["calibration"], item.get("test", {})
            if not t:
                continue
            lines.append(
                f"| {kind} | {item['max_accuracy_drop']} | {c['mean_timesteps']:.3f} | "
                f"{t.get('accuracy', float('nan')) * 100:.2f} | {t.get('drop_pt', float('nan')):.2f} ± "
                f"{t.get('drop_se_pt', float('nan')):.2f} | {t['mean_timesteps']:.3f} | {t['speedup']:.2f}x | "
                f"{t['fraction_of_ceiling'] * 100:.0f}% |"
            )
    lines += [
        "",
        "Guaranteed rows (Learn-then-Test on the disagreement with the answer at T, no labels needed): the test "
        "split's figures, and how often the promise failed over random calibration/test resplits of the pooled "
        "samples (at most 1 - level expected).",
        "",
        "| policy | level | budget (pt) | test: mean timesteps | speedup | drop (pt) | disagreement (pt) "
        "| violation rate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, entry in report["policies"].items():
        for item in entry["guarantee"]:
            t = item.get("test")
            if not t:
                continue
            lines.append(
                f"| {kind} | {item['level']} | {item['max_accuracy_drop']} | {t['mean_timesteps']:.3f} | "
                f"{t['speedup']:.2f}x | {t.get('drop_pt', float('nan')):.2f} | {t['disagreement_pt']:.2f} | "
                f"{item['violation_rate']:.3f} ({item['violation_resamples']} resplits) |"
            )
    card.write_text(text.rstrip() + "\n" + "\n".join(lines) + "\n")


def write_figure(path: Path, name: str, report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"cutoff": "tab:blue", "schedule": "tab:orange", "learned": "tab:green"}
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for kind, entry in report["policies"].items():
        sweep_points = sorted(entry.get("test_sweep", []))
        if sweep_points:
            ax.plot(*zip(*sweep_points, strict=True), color=colours[kind], alpha=0.5, label=f"{kind}: sweep")
        calibrated = [
            (i["test"]["mean_timesteps"], i["test"].get("accuracy", 0) * 100) for i in entry["point"] if "test" in i
        ]
        ax.plot(*zip(*calibrated, strict=True), "o", color=colours[kind], label=f"{kind}: calibrated budgets")
        guaranteed = [
            (i["test"]["mean_timesteps"], i["test"].get("accuracy", 0) * 100)
            for i in entry["guarantee"]
            if "test" in i and i["level"] == ep.GUARANTEE_LEVELS[0]
        ]
        ax.plot(
            *zip(*guaranteed, strict=True),
            "x",
            color=colours[kind],
            label=f"{kind}: guaranteed ({ep.GUARANTEE_LEVELS[0]})",
        )
    per_step = report.get("test_accuracy_per_timestep")
    if per_step:
        steps = range(1, len(per_step) + 1)
        ax.plot(steps, [a * 100 for a in per_step], "k:", marker=".", label="every sample stopped at t")
        oracle = report["ceiling"]["test"]["oracle_mean_exit"]
        ax.plot([oracle], [per_step[-1] * 100], "k*", markersize=12, label="oracle exit (answer at T)")
    ax.set_xlabel("mean timesteps (test split)")
    ax.set_ylabel("accuracy % (test split)")
    ax.set_title(f"{name}: exit policies against the ceiling")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_own(directory: Path, cache: Path | None, resamples: int) -> dict[str, Any]:
    files = model_files(directory)
    cal, cal_targets, test, test_targets, how = own_splits(files, cache)
    document, report = calibrate(cal, cal_targets, test, test_targets, resamples=resamples, data={"source": how})
    (directory / POLICY_FILE).write_text(json.dumps(document, indent=1) + "\n")
    evaluation_file = directory / "eval.json"
    if evaluation_file.is_file():
        evaluation = json.loads(evaluation_file.read_text())
        evaluation["exit_policies"] = report
        evaluation_file.write_text(json.dumps(evaluation, indent=1) + "\n")
    write_card(directory / "card.md", report)
    write_figure(directory / FIGURE_FILE, directory.name, report)
    return report


def run_user(directory: Path, recordings: list[Path], inputs: Path | None, resamples: int) -> dict[str, Any]:
    files = model_files(directory)
    frames, targets, source = user_data(files, recordings, inputs)
    if frames.shape[1] < 20:
        raise SystemExit(f"policy_calibration: {frames.shape[1]} samples are too few to calibrate on (20 at least)")
    logits = member_logits(files, frames, "user", None)
    document, report = calibrate(logits, targets, resamples=resamples, data={"source": f"the user's data: {source}"})
    (directory / POLICY_FILE).write_text(json.dumps(document, indent=1) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    parser = argparse.ArgumentParser(
        prog="python -m spiketrain.policy_calibration", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--model", type=Path, required=True, nargs="+", help="model directories")
    parser.add_argument("--recordings", type=Path, nargs="*", default=[], help="event files of your own (no labels)")
    parser.add_argument("--inputs", type=Path, default=None, help="an .npz with `inputs` (and optionally `targets`)")
    parser.add_argument("--cache", type=Path, default=Path(".cache/policies"), help="logits cache ('' for none)")
    parser.add_argument("--resamples", type=int, default=ep.RESAMPLES, help="resplits for the violation rate")
    args = parser.parse_args(argv)
    cache = args.cache if str(args.cache) else None
    for directory in args.model:
        if args.recordings or args.inputs:
            report = run_user(directory, args.recordings, args.inputs, args.resamples)
        else:
            report = run_own(directory, cache, args.resamples)
        print(f"{directory}: serves {report['serving_policy']} (guarantee: {report['serving_policy_guarantee']})")
        for kind, entry in report["policies"].items():
            for item in entry["point"]:
                figure = item.get("test", item["calibration"])
                print(
                    f"  {kind:9} {item['max_accuracy_drop']:>5} pt: {figure['mean_timesteps']:.3f} timesteps "
                    f"({figure['speedup']:.2f}x, {figure['fraction_of_ceiling'] * 100:.0f}% of the ceiling)"
                )


if __name__ == "__main__":
    main()
