"""Exit policies: the features the server reads, the oracle exit, the learned score's arithmetic, the two
calibrations (point and Learn-then-Test), and the user-data path that writes a file the server loads."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binom

from spiketrain import exit_policies as ep
from spiketrain import policy_calibration as pc
from spiketrain.exit_features import feature_names, features, oracle_exits, trajectories

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_the_oracle_exit_is_the_first_step_after_the_last_change() -> None:
    prediction = np.array([[1, 2, 2, 0], [2, 2, 1, 0], [2, 2, 2, 0]])  # [T=3, N=4]
    assert oracle_exits(prediction).tolist() == [2, 1, 3, 1]


def test_features_by_hand() -> None:
    # One member, two classes, logits chosen so that the prediction flips at t = 2 and stays.
    logits = np.array([[[[2.0, 0.0]], [[0.0, 6.0]], [[0.0, 2.0]]]])  # [K=1, T=3, N=1, C=2]
    traj = trajectories(logits)
    table = features(traj)
    names = feature_names(3)
    column = {name: table[:, 0, i] for i, name in enumerate(names)}
    mean = np.cumsum(logits[0, :, 0], axis=0) / np.arange(1, 4)[:, None]
    p = np.exp(mean - mean.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert column["confidence"] == pytest.approx(p.max(axis=1), abs=1e-15)
    assert column["margin"] == pytest.approx(np.abs(p[:, 0] - p[:, 1]), abs=1e-15)
    assert column["entropy"] == pytest.approx(-(p * np.log(p)).sum(axis=1), abs=1e-15)
    assert column["changed"].tolist() == [1.0, 1.0, 0.0]
    assert column["run_length"] * 3 == pytest.approx([1.0, 1.0, 2.0])
    assert column["agreement"].tolist() == [1.0, 1.0, 1.0]
    assert column["variance"].tolist() == [0.0, 0.0, 0.0]
    assert column["step_1"].tolist() == [1.0, 0.0, 0.0] and column["step_2"].tolist() == [0.0, 1.0, 0.0]


def _logits(seed: int, n: int, steps: int = 6, classes: int = 4, members: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose evidence for the true class grows with t: early answers are noisy, late ones right."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, classes, n)
    signal = np.zeros((members, steps, n, classes))
    signal[:, :, np.arange(n), targets] = np.linspace(0.2, 1.5, steps)[None, :, None]
    return signal + rng.normal(0, 1.0, signal.shape), targets


def test_the_learned_score_is_the_mlp_sklearn_fit() -> None:
    logits, _ = _logits(0, 300)
    traj = trajectories(logits)
    mlp = ep.fit_mlp(traj)
    score = mlp.score(features(traj), feature_names(traj.timesteps))
    # The same network in plain matrix algebra (another order of summation: equal to rounding).
    x = (features(traj) - mlp.input_mean) / mlp.input_scale
    (w1, b1), (w2, b2) = mlp.layers
    expected = (np.tanh(x @ w1.T + b1) @ w2.T + b2)[..., 0]
    assert score == pytest.approx(expected, abs=1e-10)
    # It learned what it was asked: the score ranks "the answer now is the answer at T" above the rest.
    same = (traj.prediction == traj.prediction[-1][None])[:-1]
    assert score[:-1][same].mean() > score[:-1][~same].mean()


def test_learn_then_test_stops_at_the_first_null_it_cannot_reject() -> None:
    n, alpha, delta = 500, 0.01, 0.1
    # Disagreements from the most aggressive lam (index 0) to never (index -1); at n = 500 and alpha = 1%,
    # 0 and 1 disagreements reject "risk > alpha" at delta = 0.1 (p = 0.0066, 0.040); 2 does not (0.12).
    disagree = np.array([30, 9, 5, 1, 0, 0, 0])
    chosen = ep.ltt_choice(disagree, np.zeros(7), n, alpha, delta)
    p = binom.cdf(disagree, n, alpha)
    assert chosen == 3 and all(p[chosen:] <= delta) and p[chosen - 1] > delta
    # Fixed-sequence: a null that is not rejected ends the testing, even if a later one would pass.
    assert ep.ltt_choice(np.array([0, 0, 2, 0, 0]), np.zeros(5), n, alpha, delta) == 3


def test_calibration_with_and_without_labels_holds_its_promises() -> None:
    cal, cal_targets = _logits(1, 800)
    test, test_targets = _logits(2, 800)
    document, report = pc.calibrate(
        cal, cal_targets, test, test_targets, budgets=(1.0, 5.0), levels=(0.9,), resamples=40
    )
    assert document["format"] == ep.FORMAT and document["version"] == ep.VERSION
    assert set(document["policies"]) == {"cutoff", "schedule", "learned"}
    assert document["serving_policy"] in document["policies"]
    for kind, entry in report["policies"].items():
        spec = document["policies"][kind]
        assert [r["max_accuracy_drop"] for r in spec["point"]] == [1.0, 5.0]
        for item in entry["point"]:
            # The point rule on the data it chose on: drop + 1 SE within the budget.
            c = item["calibration"]
            assert c["drop_pt"] + c["drop_se_pt"] <= item["max_accuracy_drop"] + 1e-9, (kind, item)
            assert 1.0 <= item["test"]["mean_timesteps"] <= 6.0
            assert item["test"]["fraction_of_ceiling"] <= 1.0 + 1e-9 or item["test"]["drop_pt"] > 0
        for item in entry["guarantee"]:
            assert item["violation_resamples"] == 40
            assert 0.0 <= item["violation_rate"] <= 1.0
            row = item["row"]
            assert row["level"] == 0.9
        # Looser budgets never take more timesteps.
        means = [item["test"]["mean_timesteps"] for item in entry["point"]]
        assert means[1] <= means[0] + 1e-9
    # Without labels: consistency with the model's own answer at T is what is calibrated.
    unlabelled, report = pc.calibrate(cal, None, budgets=(1.0,), levels=(0.9,), resamples=0)
    assert unlabelled["data"]["labels"] is False
    for entry in report["policies"].values():
        item = entry["point"][0]
        assert "accuracy" not in item["calibration"]
        assert item["calibration"]["disagreement_pt"] <= 1.0


def test_your_own_data_writes_a_policy_file_the_server_loads(tmp_path: Path, spikeserve_bin: Path) -> None:
    """``--inputs`` (no targets): the consistency calibration of the user's data, served as it is written."""
    models = tmp_path / "models"
    shutil.copytree(PROJECT_ROOT / "models" / "digits", models / "digits")
    (models / "digits" / "exit-policies.json").unlink()
    heldout = json.loads((models / "digits" / "heldout.json").read_text())
    inputs = np.asarray(heldout["inputs"], dtype=np.float32)[:120]
    np.savez(tmp_path / "mine.npz", inputs=inputs)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "spiketrain.policy_calibration",
            "--model",
            str(models / "digits"),
            "--inputs",
            str(tmp_path / "mine.npz"),
            "--resamples",
            "20",
        ],
        cwd=PROJECT_ROOT / "training",
        check=True,
        capture_output=True,
        timeout=300,
    )
    document = json.loads((models / "digits" / "exit-policies.json").read_text())
    assert document["data"]["labels"] is False
    assert document["data"]["source"].endswith("mine.npz")
    sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
    import spikeserve_process

    with spikeserve_process.started(spikeserve_bin, models) as server:
        with urllib.request.urlopen(f"http://{server.http_addr}/v1/models/digits") as response:
            info = json.load(response)
        assert info["exit_policies"]["serving_policy"] == document["serving_policy"]
        body = json.dumps({"input": heldout["inputs"][0], "max_accuracy_drop": 0.5, "guarantee": 0.9}).encode()
        request = urllib.request.Request(
            f"http://{server.http_addr}/v1/models/digits/infer", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request) as response:
            answer = json.load(response)
        assert answer["guarantee"] == 0.9 and answer["policy"] == document["serving_policy_guarantee"]


def test_the_point_rule_floors_an_estimated_gain_at_zero() -> None:
    # Early exits that broke 4 answers and fixed 5 on 500 samples: the drop estimate is -0.2 pt with a
    # paired SE of 0.6 pt. Unfloored, -0.2 + 0.6 fits a 0.5 pt budget; floored, 0 + 0.6 does not.
    p = ep.Points(
        lams=np.array([0.5, np.inf]),
        mean_timesteps=np.array([1.2, 10.0]),
        disagree=np.array([9, 0]),
        n10=np.array([4, 0]),
        n01=np.array([5, 0]),
        samples=500,
    )
    assert ep.point_choice(p, 0.5, floor=False) == 0
    assert ep.point_choice(p, 0.5) == 1
    assert p.upper()[0] == 3 / 500 and p.upper(floor=False)[0] == 2 / 500
