"""``benchmarks/anytime_eval.py`` end to end: it starts the release binary itself, streams held-out samples
over gRPC at two thresholds and at two budgets under every exit policy of the models' ``exit-policies.json``
(named, the model's own choice, and guaranteed), finds no sample that differs from the offline evaluation of
the same file's rows, and writes its JSON, markdown and plot (about 30 s).

    ORT_DYLIB_PATH=... SPIKESERVE_BIN=target/release/spikeserve PYTHONPATH=training \\
        .venv/bin/python -m pytest -q benchmarks/python/test_anytime_eval.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "anytime_eval.py"
MODELS = ("digits", "event-digits-str")
THRESHOLDS = (0.9, 1.0)
#: Asked as max_accuracy_drop: both models ship exit policies, so every budget runs their rows.
BUDGETS = (0.5, 2.0)
LEVELS = (0.9,)
LIMIT = 40
#: Per budget: the model's choice, each of the three policies by name, and the same four with a guarantee.
POLICY_SETTINGS = 8


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("anytime_eval")
    command = [
        sys.executable,
        str(SCRIPT),
        "--start",
        "--models",
        *MODELS,
        "--thresholds",
        *(str(t) for t in THRESHOLDS),
        "--budgets",
        *(str(b) for b in BUDGETS),
        "--policies",
        "--levels",
        *(str(level) for level in LEVELS),
        "--limit",
        str(LIMIT),
        "--json",
        str(out / "out.json"),
        "--markdown",
        str(out / "out.md"),
        "--plot",
        str(out / "out.png"),
    ]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    return completed, out


def test_exits_zero_with_no_mismatch(run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    completed, _ = run
    assert completed.returncode == 0, f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    assert "0 mismatches" in completed.stdout


def test_json_report(run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    completed, out = run
    assert completed.returncode == 0, completed.stderr
    report = json.loads((out / "out.json").read_text())
    assert report["ok"] is True
    assert report["mismatches"] == []
    assert report["started_server"] is True
    assert report["thresholds"] == list(THRESHOLDS)
    assert report["limit"] == LIMIT
    assert report["budgets"] == list(BUDGETS)
    assert report["compared"] == len(MODELS) * (len(THRESHOLDS) + len(BUDGETS) * POLICY_SETTINGS) * LIMIT
    assert report["tolerance"]["near_threshold"] == 1e-9
    assert list(report["models"]) == list(MODELS)
    expected = {"digits": ("single", 8), "event-digits-str": ("STR ensemble", 10)}
    for name, entry in report["models"].items():
        variant, timesteps = expected[name]
        assert entry["variant"] == variant
        assert entry["timesteps"] == timesteps
        assert entry["samples"] == LIMIT
        rows = {row["threshold"]: row for row in entry["results"] if row["max_accuracy_drop"] is None}
        assert sorted(rows) == sorted(THRESHOLDS)
        budgeted = [row for row in entry["results"] if row["max_accuracy_drop"] is not None]
        policies = json.loads((REPO / "models" / name / "exit-policies.json").read_text())
        assert len(budgeted) == len(BUDGETS) * POLICY_SETTINGS
        assert {row["policy"] for row in budgeted} == {"cutoff", "schedule", "learned"}
        served = [row for row in budgeted if row["guarantee"] is None]
        assert policies["serving_policy"] in {row["policy"] for row in served}
        for row in budgeted:
            assert row["table_budget"] <= row["max_accuracy_drop"]
            assert row["guarantee"] in (None, *LEVELS)
            assert row["accuracy"] == pytest.approx(row["offline"]["accuracy"], abs=1e-12)
            assert row["mean_timesteps"] == pytest.approx(row["offline"]["mean_timesteps"], abs=1e-12)
            stopped_by = set(row["exit_reasons"]) - {"max_timesteps"}
            assert stopped_by <= ({"confident"} if row["policy"] == "cutoff" else {"policy"}), row
        # The ceiling: T over the mean first timestep after which the answer never changes.
        assert 1.0 <= entry["oracle_mean_exit"] <= timesteps
        assert entry["ceiling_speedup"] == pytest.approx(timesteps / entry["oracle_mean_exit"])
        full = rows[1.0]
        assert full["fraction_of_ceiling"] == pytest.approx(1.0 / entry["ceiling_speedup"])
        assert full["mean_timesteps"] == timesteps
        assert full["speedup"] == 1.0
        assert full["accuracy_drop"] == 0.0
        assert full["exit_reasons"] == {"max_timesteps": LIMIT}
        assert full["accuracy"] == pytest.approx(entry["accuracy_at_T"])
        early = rows[0.9]
        assert 1.0 <= early["mean_timesteps"] < timesteps
        assert early["speedup"] == pytest.approx(timesteps / early["mean_timesteps"])
        assert early["accuracy_drop"] == pytest.approx(full["accuracy"] - early["accuracy"])
        for row in rows.values():
            assert row["answered"] == LIMIT
            assert 0.0 <= row["accuracy"] <= 1.0
            # The server's figures are the offline evaluation's: no sample differed.
            assert row["accuracy"] == pytest.approx(row["offline"]["accuracy"], abs=1e-12)
            assert row["mean_timesteps"] == pytest.approx(row["offline"]["mean_timesteps"], abs=1e-12)
            if variant == "single":
                assert row["mean_uncertainty"] is None
            else:
                assert row["mean_uncertainty"] is not None and row["mean_uncertainty"] >= 0.0
                assert row["mean_uncertainty"] == pytest.approx(row["offline"]["mean_variance"], rel=1e-3, abs=1e-6)


def test_markdown_and_plot(run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    completed, out = run
    assert completed.returncode == 0, completed.stderr
    markdown = (out / "out.md").read_text()
    assert "| model | ceiling | variant | T |" in markdown
    assert "| STR ensemble | 10 | 40 | 0.9 |" in markdown
    assert "| schedule (budget 0.5, guarantee 0.9) |" in markdown
    assert (out / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
