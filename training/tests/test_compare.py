import json

import pytest

from spiketrain.compare import main, summarise


def _run(tmp_path, name, full, anytime, steps):
    run = tmp_path / name
    run.mkdir()
    report = {
        "accuracy_per_timestep": [0.5, full],
        "anytime_at_default_threshold": {"accuracy": anytime, "mean_timesteps": steps, "speedup": 2 / steps},
        "threshold_sweep": [
            {"threshold": 0.5, "accuracy": anytime - 0.1, "mean_timesteps": 1.0},
            {"threshold": 1.0, "accuracy": full, "mean_timesteps": 2.0},
        ],
    }
    (run / "eval.json").write_text(json.dumps(report))
    return run


def test_mean_and_std_over_seeds(tmp_path):
    a = [_run(tmp_path, "a0", 0.9, 0.8, 1.0), _run(tmp_path, "a1", 0.8, 0.8, 2.0)]
    b = [_run(tmp_path, "b0", 0.7, 0.7, 1.5)]
    table, rows = summarise({"A": a, "B": b})
    assert rows["A"]["accuracy at T (%)"] == pytest.approx((85.0, 5.0))
    assert rows["A"]["drop vs T (pt)"] == pytest.approx((5.0, 5.0))
    assert rows["A"]["mean timesteps"] == pytest.approx((1.5, 0.5))
    assert rows["B"]["speedup T/mean"][0] == pytest.approx(2 / 1.5)
    assert "| A | 2 | 85.00 ± 5.00 |" in table
    main(
        [
            "--group",
            "A",
            *map(str, a),
            "--group",
            "B",
            *map(str, b),
            "--markdown",
            str(tmp_path / "t.md"),
            "--plot",
            str(tmp_path / "p.png"),
        ]
    )
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
