"""The Python onnxruntime floor: the anytime stepping loop over a model's held-out set, no server.

Benchmark fixture, not part of the product. One ``onnxruntime.InferenceSession``, one sample at a
time (batch 1), inputs already decoded to float32 arrays, the same cutoff as spikeserve
(``steploop.StepModel.run``): what Python costs at the very least per request, with no HTTP and no
JSON. The held-out set is the training job's own (``spiketrain.data``), so the exit timesteps can be
checked against the offline evaluation (``spiketrain.anytime``, ``models/<name>/eval.json``).

    PYTHONPATH=training .venv/bin/python benchmarks/python/floor.py --model models/digits --limit 100 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from steploop import StepModel

REPO = Path(__file__).resolve().parents[2]


def heldout_set(model: StepModel, limit: int | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """The model's held-out samples as the request frames ``run`` takes (the frame for static
    models, ``[T, *frame]`` binned events for event models) and their targets, in the training job's
    order. Only the held-out split is built (simulating the event camera for the training split too
    would take a minute)."""
    try:
        import spiketrain  # noqa: F401
    except ModuleNotFoundError:  # run without PYTHONPATH=training
        sys.path.insert(0, str(REPO / "training"))
    from spiketrain import data, event_digits, events

    dataset = model.spec.training.get("dataset")
    if dataset == "digits":
        held_out = data.load_digits_dataset(limit).held_out
        inputs = np.asarray(held_out.inputs, dtype=np.float32)
        return [np.ascontiguousarray(x) for x in inputs], np.asarray(held_out.targets)
    if dataset == "event-digits":
        *_, images, targets, indices = data._digit_split(limit)
        binning = event_digits.binning(model.spec.timesteps)
        frames = [
            events.bin_events(event_digits.simulate(image[0], int(index)), binning)
            for image, index in zip(images, indices, strict=True)
        ]
        return [np.ascontiguousarray(f, dtype=np.float32) for f in frames], np.asarray(targets)
    raise SystemExit(f"floor.py: no held-out loader for data set {dataset!r} (digits and event-digits only)")


def percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q))


def run_floor(
    model: StepModel,
    samples: list[np.ndarray],
    targets: np.ndarray,
    threshold: float | None = None,
    min_timesteps: int | None = None,
    max_timesteps: int | None = None,
    warmup: int = 20,
    repeat: int = 1,
) -> dict[str, object]:
    policy = model.policy(threshold, min_timesteps, max_timesteps)
    for _ in range(warmup):
        model.run(samples[0], policy)
    latencies_ns: list[int] = []
    exits: list[int] = []
    predictions: list[int] = []
    reasons: Counter[str] = Counter()
    started = time.perf_counter_ns()
    for round_ in range(repeat):
        for sample in samples:
            t0 = time.perf_counter_ns()
            answer = model.run(sample, policy)
            latencies_ns.append(time.perf_counter_ns() - t0)
            if round_ == 0:
                exits.append(answer.timesteps)
                predictions.append(answer.class_index)
                reasons[answer.exit_reason] += 1
    wall_s = (time.perf_counter_ns() - started) / 1e9
    latency_ms = np.asarray(latencies_ns, dtype=np.float64) / 1e6
    exit_array = np.asarray(exits)
    return {
        "model": model.spec.name,
        "runtime": "python onnxruntime, batch 1, no server",
        "threshold": policy.threshold,
        "min_timesteps": policy.min_timesteps,
        "max_timesteps": policy.max_timesteps,
        "intra_op_num_threads": model.session.get_session_options().intra_op_num_threads,
        "samples": len(samples),
        "repeat": repeat,
        "warmup": warmup,
        "requests": len(latencies_ns),
        "latency_ms": {
            "median": percentile(latency_ms, 50),
            "p99": percentile(latency_ms, 99),
            "mean": float(latency_ms.mean()),
            "min": float(latency_ms.min()),
            "max": float(latency_ms.max()),
        },
        "throughput_per_s": len(latencies_ns) / wall_s,
        "timesteps_per_s": repeat * int(exit_array.sum()) / wall_s,
        "mean_timesteps": float(exit_array.mean()),
        "accuracy": float((np.asarray(predictions) == targets).mean()),
        "exit_reasons": dict(reasons),
        "exit_timesteps": exits,
        "predictions": predictions,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a model directory holding model.onnx")
    parser.add_argument("--threshold", type=float, default=None, help="default: the model's default_threshold")
    parser.add_argument("--min-timesteps", type=int, default=None)
    parser.add_argument("--max-timesteps", type=int, default=None)
    parser.add_argument("--limit", type=int, default=None, help="the first N held-out samples (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra_op_num_threads")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs of the first sample")
    parser.add_argument("--repeat", type=int, default=1, help="timed passes over the samples")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.repeat < 1 or args.warmup < 0:
        parser.error("--repeat must be at least 1 and --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model = StepModel(args.model, threads=args.threads)
    samples, targets = heldout_set(model, args.limit)
    result = run_floor(
        model, samples, targets, args.threshold, args.min_timesteps, args.max_timesteps, args.warmup, args.repeat
    )
    text = json.dumps(result)
    if args.json is not None:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
