"""Parity between two running servers on different devices (a GPU against the CPU, say).

Every held-out sample of every model in the models directory goes to both servers at the model's
default cutoff; the answers must agree on the class and the exit timestep, and every probability
within ``--tolerance`` (1e-4).

``scripts/check-cuda.sh`` runs it against a ``--device cuda:N`` server and a CPU server; the test
``benchmarks/python/test_device_parity.py`` runs it against two CPU servers.

    .venv/bin/python benchmarks/device_parity.py --a http://127.0.0.1:18000 --b http://127.0.0.1:18001
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@dataclass
class ModelParity:
    model: str
    samples: int = 0
    largest_difference: float = 0.0
    disagreements: list[str] = field(default_factory=list)


def infer(base: str, model: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{base}/v1/models/{model}/infer", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer: dict[str, Any] = json.load(response)
        return answer


def bodies(heldout: dict[str, Any]) -> list[dict[str, Any]]:
    """One request body per held-out sample: frames as ``input``, raw events as ``events``."""
    if "inputs" in heldout:
        return [{"input": x} for x in heldout["inputs"]]
    return [{"events": e} for e in heldout.get("events", [])]


def compare(model: str, samples: list[dict[str, Any]], a: str, b: str, tolerance: float) -> ModelParity:
    parity = ModelParity(model)
    for index, body in enumerate(samples):
        first, second = infer(a, model, body), infer(b, model, body)
        parity.samples += 1
        difference = max(abs(x - y) for x, y in zip(first["probabilities"], second["probabilities"], strict=True))
        parity.largest_difference = max(parity.largest_difference, difference)
        if first["class_index"] != second["class_index"]:
            parity.disagreements.append(f"sample {index}: class {first['class_index']} against {second['class_index']}")
        if first["timesteps"] != second["timesteps"]:
            parity.disagreements.append(
                f"sample {index}: exit at t={first['timesteps']} against t={second['timesteps']}"
            )
        if difference > tolerance:
            parity.disagreements.append(f"sample {index}: probabilities differ by {difference:.2e}")
    return parity


def parity(a: str, b: str, models_dir: Path, tolerance: float, limit: int | None = None) -> list[ModelParity]:
    results = []
    for heldout_path in sorted(models_dir.glob("*/heldout.json")):
        samples = bodies(json.loads(heldout_path.read_text()))[:limit]
        results.append(compare(heldout_path.parent.name, samples, a, b, tolerance))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", required=True, help="base URL of the first server (the GPU one)")
    parser.add_argument("--b", required=True, help="base URL of the second server (the CPU one)")
    parser.add_argument("--models", type=Path, default=REPO / "models")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--limit", type=int, default=None, help="samples per model (default: all)")
    args = parser.parse_args()
    results = parity(args.a, args.b, args.models, args.tolerance, args.limit)
    print("| model | samples | largest probability difference | disagreements |")
    print("|---|---|---|---|")
    for result in results:
        print(f"| {result.model} | {result.samples} | {result.largest_difference:.2e} | {len(result.disagreements)} |")
    failed = [line for result in results for line in (f"{result.model} {d}" for d in result.disagreements)]
    for line in failed[:50]:
        print(line, file=sys.stderr)
    return 1 if failed or not results else 0


if __name__ == "__main__":
    raise SystemExit(main())
