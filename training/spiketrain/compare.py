"""Compares groups of trained models (e.g. TET against STR, several seeds each) from their ``eval.json``.

    python -m spiketrain.compare --group TET ../models/event-digits-tet/seed-{0,1,2} \\
        --group STR ../models/event-digits-str/seed-{0,1,2} --markdown out.md --plot out.png

For each group, mean and standard deviation over its runs of: accuracy at full T, the anytime
accuracy and mean timesteps at the default threshold, the speedup ``T / mean timesteps`` and the
accuracy drop against full T; and a plot of accuracy against mean timesteps over the threshold sweep.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np


def _load(run: Path) -> dict[str, object]:
    return json.loads((run / "eval.json").read_text())


def summarise(groups: dict[str, list[Path]]) -> tuple[str, dict[str, dict[str, tuple[float, float]]]]:
    rows: dict[str, dict[str, tuple[float, float]]] = {}
    for name, runs in groups.items():
        reports = [_load(r) for r in runs]
        full = np.array([r["accuracy_per_timestep"][-1] for r in reports]) * 100  # type: ignore[index]
        anytime = np.array([r["anytime_at_default_threshold"]["accuracy"] for r in reports]) * 100  # type: ignore[index]
        steps = np.array([r["anytime_at_default_threshold"]["mean_timesteps"] for r in reports])  # type: ignore[index]
        speedup = np.array([r["anytime_at_default_threshold"]["speedup"] for r in reports])  # type: ignore[index]
        rows[name] = {
            "accuracy at T (%)": (full.mean(), full.std()),
            "anytime accuracy (%)": (anytime.mean(), anytime.std()),
            "mean timesteps": (steps.mean(), steps.std()),
            "speedup T/mean": (speedup.mean(), speedup.std()),
            "drop vs T (pt)": ((full - anytime).mean(), (full - anytime).std()),
        }
    columns = list(next(iter(rows.values())).keys())
    lines = [
        "| group | runs | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for name, values in rows.items():
        cells = " | ".join(f"{m:.2f} ± {s:.2f}" for m, s in values.values())
        lines.append(f"| {name} | {len(groups[name])} | {cells} |")
    return "\n".join(lines) + "\n", rows


def plot(groups: dict[str, list[Path]], path: Path, title: str) -> None:
    figure, axes = plt.subplots(figsize=(6, 4))
    for name, runs in groups.items():
        sweeps = [_load(r)["threshold_sweep"] for r in runs]
        steps = np.array([[p["mean_timesteps"] for p in s] for s in sweeps]).mean(axis=0)  # type: ignore[union-attr]
        accuracy = np.array([[p["accuracy"] for p in s] for s in sweeps]).mean(axis=0) * 100  # type: ignore[union-attr]
        axes.plot(steps, accuracy, marker="o", label=f"{name} ({len(runs)} seeds)")
    axes.set_xlabel("mean timesteps (threshold sweep)")
    axes.set_ylabel("held-out accuracy (%)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m spiketrain.compare", description=__doc__.split("\n")[0])
    parser.add_argument("--group", nargs="+", action="append", required=True, metavar=("NAME", "RUN"))
    parser.add_argument("--markdown", type=Path, required=True)
    parser.add_argument("--plot", type=Path, required=True)
    parser.add_argument("--title", default="Anytime accuracy against timesteps")
    args = parser.parse_args(argv)
    groups = {g[0]: [Path(r) for r in g[1:]] for g in args.group}
    table, _ = summarise(groups)
    args.markdown.write_text(table)
    plot(groups, args.plot, args.title)
    print(table)


if __name__ == "__main__":
    main()
