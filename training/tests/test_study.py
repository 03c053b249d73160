"""The STR study's choices and report, on synthetic runs (the real study is ``make study``: hours)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from spiketrain import study, study_protocol, study_report


def _fake_run(directory: Path, seed: int, strength: float) -> None:
    """A run's outputs: logits whose evidence for the right class grows with ``strength``."""
    cal_targets, test_targets = study.calibration_targets()
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    logits = {}
    for split, targets in (("calibration", cal_targets), ("test", test_targets)):
        x = rng.normal(0.0, 1.0, size=(study.TIMESTEPS, len(targets), 10))
        x[:, np.arange(len(targets)), targets] += strength * np.linspace(0.5, 2.0, study.TIMESTEPS)[:, None]
        logits[split] = x.astype(np.float32)
    np.savez_compressed(directory / "logits.npz", **logits)
    variants = ("clean", "shifted ±2 px", "shifted ±4 px", "noisier")
    robustness = {v: {"accuracy_at_t": 0.9, "anytime_accuracy": 0.9, "mean_timesteps": 5.0} for v in variants}
    (directory / "eval.json").write_text(json.dumps({"robustness": robustness}))


def test_alpha_is_chosen_on_the_calibration_split_and_the_report_pairs_seeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(study_report, "BOOTSTRAP", 40)  # the report's 400 draws take a minute here
    seeds = study.Seeds(screen=(0,), paired=(0, 1), ablations=(0,), rcs=(0,))
    # alpha 0.01 gives the strongest evidence (the largest area); it must be chosen (alpha 0 is TET, never chosen).
    for alpha in study.SCREEN_ALPHAS:
        strength = 3.0 if alpha == 0.01 else 1.0
        _fake_run(tmp_path / study.alpha_arm(alpha) / "seed-0", seed=100 + int(alpha * 1000), strength=strength)
    best, scores = study.choose_alpha(tmp_path, seeds.screen)
    assert best == 0.01
    assert scores[0.01] == max(scores[a] for a in study.SCREEN_ALPHAS if a > 0)
    _fake_run(tmp_path / "tet" / "seed-1", seed=7, strength=1.0)
    _fake_run(tmp_path / study.alpha_arm(best) / "seed-1", seed=8, strength=3.0)
    _fake_run(tmp_path / "tet-no-augment" / "seed-0", seed=9, strength=1.0)
    (tmp_path / "alpha.json").write_text(json.dumps({"best": best, "scores": scores, "seeds": {"screen": [0]}}))
    summary = study_report.write_report(tmp_path, tmp_path / "out" / "report")
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "alpha* = 0.01" in markdown
    assert (tmp_path / "out" / "report.png").read_bytes()[:4] == b"\x89PNG"
    paired = summary["paired_against_tet"]
    assert isinstance(paired, dict)
    entry = paired[study.alpha_arm(best)]
    assert entry["seeds"] == [0, 1]
    mean, low, high = entry["speedup at 0.5 pt (x)"]
    assert low <= mean <= high and mean > 0  # stronger early evidence exits earlier
    arms = summary["arms"]
    assert isinstance(arms, dict) and len(arms["tet"]) == 2


def test_the_runs_of_each_phase() -> None:
    seeds = study.Seeds(screen=(0, 1), paired=(0, 1, 2), ablations=(0,), rcs=(5,))
    screen = study.screen_runs(seeds)
    assert [(r.arm, r.seed) for r in screen[:2]] == [("tet", 0), ("str-a0.001", 0)]  # seed by seed
    assert len(screen) == 2 * len(study.SCREEN_ALPHAS)
    assert [r.seed for r in study.str_runs(0.03, seeds)] == [0, 1, 2]
    assert {r.arm for r in study.ablation_runs(0.03, seeds)} == {f"str-a0.03-{n}" for n in study.ABLATIONS}
    assert study.rcs_runs(seeds)[0].args == ["--reg", "rcs", "--alpha", "0.002"]
    duplicated = study._unique([*study.tet_runs(seeds), *study.screen_runs(seeds)])
    assert len(duplicated) == len({(r.arm, r.seed) for r in duplicated})


def test_an_ablation_replaces_the_documented_reading_only_when_its_area_is_larger(tmp_path: Path) -> None:
    seeds = study.Seeds(screen=(0,), paired=(0, 1, 2), ablations=(0,), rcs=(0,))
    base = study.alpha_arm(0.01)
    for name in study.ABLATIONS:
        _fake_run(tmp_path / f"{base}-{name}" / "seed-0", seed=20, strength=1.0)
    _fake_run(tmp_path / base / "seed-0", seed=21, strength=2.0)
    winner, scores = study.choose_reading(tmp_path, 0.01, seeds.ablations)
    assert winner == base and scores[base] == max(scores.values())
    assert study.winner_runs(0.01, winner, seeds) == []

    shutil.rmtree(tmp_path / f"{base}-logvar" / "seed-0")
    _fake_run(tmp_path / f"{base}-logvar" / "seed-0", seed=22, strength=3.0)
    winner, scores = study.choose_reading(tmp_path, 0.01, seeds.ablations)
    assert winner == f"{base}-logvar" and scores[winner] > scores[base]
    runs = study.winner_runs(0.01, winner, seeds)
    assert [(r.arm, r.seed) for r in runs] == [(winner, 0), (winner, 1), (winner, 2)]
    assert runs[0].args == ["--reg", "str", "--alpha", "0.01", "--reg-spread", "logvar"]


@pytest.mark.parametrize("alpha", [0.0, 0.003])
def test_arm_names(alpha: float) -> None:
    assert study.alpha_arm(alpha) == ("tet" if alpha == 0 else "str-a0.003")


def test_the_report_does_not_import_the_driver() -> None:
    """study uses study_report; study_report (and the shared protocol) never import study."""
    import subprocess
    import sys

    code = "import sys, spiketrain.study_report; print('spiketrain.study' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
    assert study.TIMESTEPS == study_protocol.TIMESTEPS and study.load_logits is study_protocol.load_logits


def test_the_early_screen_runs_tet_first_then_whole_arms() -> None:
    runs = study.early_runs(["sd-w1-t2", "rm-w1"], (0, 1))
    assert [(r.arm, r.seed) for r in runs] == [
        ("tet", 0),
        ("tet", 1),
        ("sd-w1-t2", 0),
        ("sd-w1-t2", 1),
        ("rm-w1", 0),
        ("rm-w1", 1),
    ]
    assert runs[0].args == [] and runs[-1].args == study_protocol.EARLY_ARMS["rm-w1"]
    with pytest.raises(ValueError, match="unknown early arms"):
        study.early_runs(["nope"], (0,))


def test_oracle_exit_is_the_first_timestep_after_which_the_prediction_never_changes() -> None:
    from spiketrain.anytime import oracle_exit_timesteps

    # T = 4, three samples, two classes.
    logits = np.zeros((4, 3, 2))
    logits[:, 0, 0] = 1.0  # always class 0: exit at 1
    logits[0, 1, 1], logits[1:, 1, 0] = 1.0, 3.0  # class 1 at t=1, then 0: exit at 2
    logits[:3, 2, 0], logits[3, 2, 1] = 1.0, 9.0  # class 0 until t=3, class 1 at t=4: exit at 4
    assert oracle_exit_timesteps(logits).tolist() == [1, 2, 4]


def test_the_early_screen_report_reads_the_calibration_split_only(tmp_path: Path) -> None:
    _fake_run(tmp_path / "tet" / "seed-0", seed=1, strength=1.0)
    _fake_run(tmp_path / "tet" / "seed-1", seed=2, strength=1.0)
    _fake_run(tmp_path / "rm-w1" / "seed-0", seed=3, strength=3.0)
    _fake_run(tmp_path / "tet" / "seed-5", seed=4, strength=1.0)  # a paired-stage seed: not the screen's
    summary = study_report.write_early_screen(tmp_path, tmp_path / "early", ["tet", "rm-w1", "sd-w1-t2"])
    markdown = (tmp_path / "early.md").read_text()
    assert "| tet | 0, 1 |" in markdown and "| rm-w1 | 0 |" in markdown and "sd-w1-t2" not in markdown
    arms = summary["arms"]
    assert isinstance(arms, dict)
    (rm,) = arms["rm-w1"]
    cal_targets, _ = study.calibration_targets()
    expected = study_report.early_figures(tmp_path / "rm-w1" / "seed-0", 0, cal_targets)
    assert rm["area"] == expected.area and 1.0 <= rm["oracle_mean_exit"] <= study.TIMESTEPS
    difference = summary["against_reference"]["rm-w1"][0]  # type: ignore[index]
    assert difference["area"] > 0  # stronger evidence: a larger area than TET's on the same seed
    assert json.loads((tmp_path / "early.json").read_text())["split"] == "calibration"
    assert (tmp_path / "early.png").read_bytes()[:4] == b"\x89PNG"
