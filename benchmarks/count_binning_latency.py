"""Decision latency of a paced event session: a time-binned model against a count-binned one.

Not a pass/fail test: a measurement. Two models are trained here with the same recipe, data and seed,
differing only in ``--binning`` (``time``: T equal-time bins; ``count``: T bins of K events, K the
training split's median event count / T), or taken from ``--time-model`` / ``--count-model``. Both are
served by the release binary; each held-out sample's raw events go to a gRPC ``Session`` **paced at
their own timestamps**: the events of every ``--chunk-us`` of event time are sent when that time has
passed on the wall clock since the session started, as a live camera would deliver them. The client
half-closes after the sample's last event. Per session it records, from the session's start:

* the first partial (when the model first stepped: a time bin completes once an event past its
  window arrives; a count bin once its K-th event arrives),
* the decision (the final answer, at the model's default, calibrated threshold), its timestep and
  whether it is right;

and, on ``--full-samples`` more sessions at threshold 1, when the partial after each timestep arrived
(when each frame was complete: the binning alone, whatever the model decides). The samples are spread
evenly over the held-out split (mnist-events is in label order).

The samples alternate between the models (time, count, time, ...), so that drift in the machine's load
falls on both alike; every figure is printed with its ratio against the time-binned model measured in
the same run.

    ORT_DYLIB_PATH=... .venv/bin/python benchmarks/count_binning_latency.py \\
        [--epochs 5 --limit 1000 --samples 100] [--time-model DIR --count-model DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import numpy as np
import spikeserve_process

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "training"))

from spiketrain.data import load_dataset  # noqa: E402
from spiketrain.train import TrainConfig, run  # noqa: E402

MODELS = ("time", "count")


def stubs(out: Path) -> tuple[ModuleType, ModuleType]:
    from grpc_tools import protoc

    well_known = Path(protoc.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    arguments = [f"-I{REPO / 'proto'}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(["protoc", *arguments, "anytime/v1/anytime.proto"]) != 0:
        raise RuntimeError("protoc failed")
    sys.path.insert(0, str(out))
    return importlib.import_module("anytime.v1.anytime_pb2"), importlib.import_module("anytime.v1.anytime_pb2_grpc")


def train_pair(args: argparse.Namespace, work: Path) -> dict[str, Path]:
    """The two models, the same recipe but the binning (reused when already in ``work``)."""
    paths = {}
    for mode in MODELS:
        given = getattr(args, f"{mode}_model")
        out = Path(given) if given else work / f"models/{mode}-binned"
        if not (out / "model.onnx").is_file():
            config = TrainConfig(
                dataset=args.dataset,
                timesteps=args.timesteps,
                epochs=args.epochs,
                limit=args.limit,
                threads=args.threads,
                seed=0,
                binning=mode,
            )
            print(f"training the {mode}-binned model into {out} ...", flush=True)
            run(config, out)
        paths[mode] = out
    return paths


def columns(pb: ModuleType, rows: np.ndarray) -> Any:
    x, y, t_us, p = (column.tolist() for column in rows.T)
    return pb.Events(x=x, y=y, t_us=t_us, p=p)


def paced_session(
    stub: Any, pb: ModuleType, model: str, rows: np.ndarray, chunk_us: int, threshold: float | None = None
) -> dict[str, Any]:
    """One session fed ``rows`` at their timestamps; times in ms from the session's start. ``threshold``
    1.0 steps every timestep the events fill (when each timestep's frame was complete, whatever the model)."""
    ends = np.arange(chunk_us, int(rows[-1, 2]) + chunk_us + 1, chunk_us)
    cuts = np.searchsorted(rows[:, 2], ends, side="left")
    done = threading.Event()
    started = time.perf_counter()

    def requests() -> Iterator[Any]:
        policy = None if threshold is None else pb.Policy(threshold=threshold)
        yield pb.SessionRequest(start=pb.SessionStart(model=model, policy=policy))
        first = 0
        for end_us, cut in zip(ends, cuts, strict=True):
            # The chunk's events all happened before end_us: send it once that much time has passed.
            delay = started + end_us / 1e6 - time.perf_counter()
            if delay > 0:
                done.wait(delay)
            if done.is_set():
                return
            if cut > first:
                yield pb.SessionRequest(events=columns(pb, rows[first:cut]))
                first = cut

    partials: list[float] = []
    for message in stub.Session(requests(), timeout=60):
        now = (time.perf_counter() - started) * 1e3
        kind = message.WhichOneof("message")
        if kind == "partial":
            partials.append(now)
        if kind == "final":
            done.set()
            return {
                "first_partial_ms": partials[0] if partials else now,
                "decision_ms": now,
                "timesteps": message.final.timesteps,
                "class_index": message.final.class_index,
                "partials_ms": partials,
            }
    raise RuntimeError("the session ended without a final answer")


def summarise(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "mean": statistics.fmean(values),
        "p50": statistics.median(values),
        "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="mnist-events", choices=["mnist-events", "event-digits"])
    parser.add_argument("--timesteps", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=500, help="samples per split used to train and calibrate")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=60, help="held-out samples sent to each model (spread evenly)")
    parser.add_argument("--chunk-us", type=int, default=1000, help="event time per chunk sent")
    parser.add_argument("--full-samples", type=int, default=40, help="sessions per model run to T (threshold 1)")
    parser.add_argument("--time-model", default=None, help="a trained time-binned model directory")
    parser.add_argument("--count-model", default=None, help="a trained count-binned model directory")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "spikeserve-count-binning")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    args.work.mkdir(parents=True, exist_ok=True)
    trained = train_pair(args, args.work)
    served = args.work / "served"
    shutil.rmtree(served, ignore_errors=True)
    served.mkdir()
    for mode, path in trained.items():
        (served / mode).symlink_to(path.resolve(), target_is_directory=True)
    # The whole held-out split (mnist-events reads its cached simulation); never trained on.
    data = load_dataset(args.dataset, timesteps=args.timesteps)
    assert data.held_out.events is not None
    # Spread over the split (mnist-events' samples are in label order): every class, not the first few.
    picked = np.unique(np.linspace(0, len(data.held_out.targets) - 1, args.samples).round().astype(int))
    samples = [np.asarray(data.held_out.events[i], dtype=np.int64).reshape(-1, 4) for i in picked]
    targets = data.held_out.targets[picked]
    pb, services = stubs(args.work / "stubs")

    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODELS}
    with (
        spikeserve_process.started(spikeserve_process.release_binary(), served) as server,
        grpc.insecure_channel(server.grpc_addr) as channel,
    ):
        stub = services.AnytimeStub(channel)
        for mode in MODELS:
            paced_session(stub, pb, mode, samples[0], args.chunk_us)  # warm-up, not counted
        for rows in samples:
            for mode in MODELS:
                results[mode].append(paced_session(stub, pb, mode, rows, args.chunk_us))
        # Every timestep (threshold 1): when each timestep's frame was complete, the binning alone.
        full: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODELS}
        for rows in samples[: args.full_samples]:
            for mode in MODELS:
                full[mode].append(paced_session(stub, pb, mode, rows, args.chunk_us, threshold=1.0))

    meta = {mode: json.loads((trained[mode] / "eval.json").read_text()) for mode in MODELS}
    report: dict[str, Any] = {
        "dataset": args.dataset,
        "samples": len(samples),
        "chunk_us": args.chunk_us,
        "events_per_bin": meta["count"]["training"].get("events_per_bin"),
        "models": {},
    }
    for mode in MODELS:
        rows = results[mode]
        report["models"][mode] = {
            "first_partial_ms": summarise([r["first_partial_ms"] for r in rows]),
            "decision_ms": summarise([r["decision_ms"] for r in rows]),
            "mean_timesteps": statistics.fmean(r["timesteps"] for r in rows),
            "accuracy": float(np.mean([r["class_index"] == t for r, t in zip(rows, targets, strict=True)])),
            "default_threshold": meta[mode]["default_threshold"],
            "offline_test_accuracy_at_t": meta[mode]["accuracy_per_timestep"][-1],
            "offline_mean_timesteps": meta[mode]["anytime_at_default_threshold"]["mean_timesteps"],
            # p50 over sessions of when the partial after timestep t arrived (threshold 1).
            "timestep_ready_p50_ms": [
                statistics.median(r["partials_ms"][t] for r in full[mode] if len(r["partials_ms"]) > t)
                for t in range(args.timesteps)
                if any(len(r["partials_ms"]) > t for r in full[mode])
            ],
        }
    base = report["models"]["time"]
    print(
        f"\n{args.dataset}, T = {args.timesteps}, K = {report['events_per_bin']}, {len(samples)} paced sessions "
        f"per model (chunks of {args.chunk_us} us of event time); ratios against the time-binned model, same run"
    )
    print(
        f"{'model':>6} | {'first partial p50 ms':>21} | {'decision p50 ms':>16} | {'decision mean ms':>17} | "
        f"{'mean t':>6} | {'accuracy':>8}"
    )
    for mode in MODELS:
        m = report["models"][mode]
        ratio = {key: m[key]["p50"] / base[key]["p50"] for key in ("first_partial_ms", "decision_ms")}
        mean_ratio = m["decision_ms"]["mean"] / base["decision_ms"]["mean"]
        m["ratio_to_time"] = {**ratio, "decision_mean": mean_ratio}
        print(
            f"{mode:>6} | {m['first_partial_ms']['p50']:9.1f} ({ratio['first_partial_ms']:.2f}x)"
            f" | {m['decision_ms']['p50']:7.1f} ({ratio['decision_ms']:.2f}x)"
            f" | {m['decision_ms']['mean']:8.1f} ({mean_ratio:.2f}x)"
            f" | {m['mean_timesteps']:6.2f} | {m['accuracy']:8.3f}"
        )
    print(
        "p50 ms from the session's start until the partial after timestep t (threshold 1, "
        f"{min(len(samples), args.full_samples)} sessions per model):"
    )
    for mode in MODELS:
        ready = report["models"][mode]["timestep_ready_p50_ms"]
        ratios = [r / b for r, b in zip(ready, base["timestep_ready_p50_ms"], strict=False)]
        shown = [f"t{t + 1}={v:.0f} ({q:.2f}x)" for t, (v, q) in enumerate(zip(ready, ratios, strict=False))]
        print(f"{mode:>6} | " + " ".join(shown))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
