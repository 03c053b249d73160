"""The fixed cost of serving: spikeserve at one client against the in-process floor, by model size.

The benchmark issue asks that one client through the server cost at most 10% over the Rust floor (the
raw ONNX Runtime stepping loop at batch 1, in one process) per request. Over a socket, a request also
pays for the client, loopback TCP, HTTP/2 framing, protobuf on both sides and two thread hand-offs: a
fixed cost per request, whatever the model. Whether that is 10% of a request depends on how long the
model takes, so this script measures the same comparison on networks of growing size:

* ``digits`` and ``event-digits``: the shipped models (a small CSNN; a conv net on 34x34 events);
* VGGSNN, the network of the TET and STR papers (eight 3x3 convolutions, 64 to 512 channels), on the
  event-digits sensor (2 x 34 x 34, T = 10), at a quarter of its width and at full width. Training it
  takes hours on this machine, so it is exported untrained (seeded random weights) into a temporary
  directory: a stand-in for the paper's network's *cost*, not a model to serve. Untrained, it is rarely
  confident, so its requests run most of their ten timesteps, in the floor and the server alike.

Per model, in rounds (so that the floor and the server see the same machine state): the floor
(``spikeserve-tools bench --floor``), then spikeserve (started on free loopback ports with its defaults)
over gRPC unary at one client, each a closed loop over the model's held-out inputs with the model's
default cutoff. Reported: time per request of each, their ratio and their difference (the overhead),
as the median over rounds; ``<out>/overhead.{json,md}``.

    .venv/bin/python benchmarks/overhead.py            # about two minutes on 2 cores
    .venv/bin/python benchmarks/overhead.py --quick    # smoke test: digits and a narrow VGGSNN, one round
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import run_bench
import spikeserve_process
from run_bench import REPO, TARGET_VS_FLOOR, Result, log, spikeserve_bench, spikeserve_server

STANDIN_SEED = 0


@dataclass
class Case:
    """One model to measure: where it is, and how many requests make a measurement of a few seconds."""

    name: str
    model_dir: Path
    inputs: Path
    requests: int
    description: str


def export_vggsnn_standin(width: float, out_dir: Path) -> Path:
    """VGGSNN on the event-digits sensor, untrained, with event-digits' contract metadata and its
    accuracy per timestep measured on the held-out samples it is benchmarked with."""
    sys.path.insert(0, str(REPO / "training"))
    import numpy as np
    import onnx
    import torch
    from spiketrain.anytime import accuracy_per_timestep
    from spiketrain.events import EventBinning, bin_events
    from spiketrain.export import METADATA_PREFIX, export_step_model, onnx_logits, open_session, update_metadata
    from spiketrain.models import VGGSNN

    source = onnx.load(str(REPO / "models" / "event-digits" / "model.onnx"))
    metadata: dict[str, Any] = {
        p.key.removeprefix(METADATA_PREFIX): p.value
        for p in source.metadata_props
        if p.key.startswith(METADATA_PREFIX) and p.key != METADATA_PREFIX + "contract_version"
    }
    metadata["training"] = json.dumps(
        {"untrained": True, "seed": STANDIN_SEED, "note": "benchmark stand-in for VGGSNN's cost; never served"}
    )
    torch.manual_seed(STANDIN_SEED)
    binning = EventBinning(**json.loads(metadata["events"]))
    model = VGGSNN(int(metadata["num_classes"]), binning.frame_shape(), width)
    model_dir = out_dir / f"vggsnn-x{width:g}"
    heldout_path = REPO / "models" / "event-digits" / "heldout.json"
    export_step_model(model, model_dir / "model.onnx", metadata)
    heldout = json.loads(heldout_path.read_text())
    frames = np.stack([bin_events(np.asarray(e), binning) for e in heldout["events"]], axis=1)
    logits = onnx_logits(open_session(model_dir / "model.onnx"), frames, batch_size=len(heldout["events"]))
    accuracy = accuracy_per_timestep(logits, np.asarray(heldout["targets"]))
    update_metadata(model_dir / "model.onnx", {"accuracy_per_timestep": accuracy})
    (model_dir / "heldout.json").symlink_to(heldout_path)
    return model_dir


def bench_args(args: argparse.Namespace, case: Case) -> argparse.Namespace:
    """The namespace ``run_bench``'s helpers read, for one model."""
    return argparse.Namespace(
        bin=args.bin,
        tools_bin=args.tools_bin,
        model=case.name,
        model_dir=case.model_dir,
        inputs=case.inputs,
        threshold=None,
        ort_library=args.ort_library,
        device=args.device,
        server_commands=[],
    )


def per_request_ms(report: Result) -> float:
    return float(report["duration_s"]) * 1e3 / max(int(report["requests"]), 1)


def measure(args: argparse.Namespace, case: Case) -> Result:
    ns = bench_args(args, case)
    warmup = max(2, case.requests // 10)
    common = ["--requests", str(case.requests), "--warmup", str(warmup)]
    rounds: list[Result] = []
    with spikeserve_server(ns, f"spikeserve-{case.name}", max_batch=64) as server:
        for index in range(args.rounds):
            floor = spikeserve_bench(ns, ["--floor", "--model-dir", str(case.model_dir), *common], f"{case.name} floor")
            to_server = ["--http", server.http, "--grpc", str(server.grpc), "--clients", "1"]
            served = spikeserve_bench(
                ns, ["--protocol", "grpc-unary", *to_server, *common], f"{case.name} gRPC unary, 1 client"
            )
            transport = spikeserve_bench(
                ns, ["--protocol", "grpc-health", *to_server, *common], f"{case.name} empty gRPC call, 1 client"
            )
            floor_ms, served_ms = per_request_ms(floor), per_request_ms(served)
            transport_ms = per_request_ms(transport)
            rounds.append(
                {
                    "round": index,
                    "floor_ms": floor_ms,
                    "served_ms": served_ms,
                    "transport_ms": transport_ms,
                    "ratio": served_ms / floor_ms,
                    "overhead_ms": served_ms - floor_ms,
                    "server_ms": served_ms - floor_ms - transport_ms,
                    "floor_mean_timesteps": floor["mean_timesteps"],
                    "served_mean_timesteps": served["mean_timesteps"],
                    "served_errors": served["errors"],
                }
            )
    median = {
        key: statistics.median(r[key] for r in rounds)
        for key in ("floor_ms", "served_ms", "ratio", "overhead_ms", "transport_ms", "server_ms")
    }
    return {
        "model": case.name,
        "description": case.description,
        "requests_per_measurement": case.requests,
        "mean_timesteps": rounds[-1]["floor_mean_timesteps"],
        **median,
        "met": median["ratio"] <= TARGET_VS_FLOOR,
        "rounds": rounds,
        "server_command": " ".join(ns.server_commands[0]) if ns.server_commands else "",
    }


def markdown(results: list[Result], info: Result, args: argparse.Namespace) -> str:
    lines = [
        "# Fixed cost per request: one client through spikeserve against the in-process floor",
        "",
        f"Measured {info['date']}, commit {info['commit']}, on {info['cpu']} ({info['cores']} CPUs), "
        f"load average at start {info['load_average_1m_at_start']:.2f}; {args.rounds} round(s), medians shown. "
        "Command: "
        f"`{' '.join(info['argv'])}`.",
        "",
        "| model | mean timesteps | floor ms / request | spikeserve gRPC, 1 client, ms / request "
        f"| ratio (target <= {TARGET_VS_FLOOR:.2f}x) | overhead ms | of which an empty gRPC call | "
        "of which the rest of the server |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        met = "met" if r["met"] else "not met"
        lines.append(
            f"| {r['model']}: {r['description']} | {r['mean_timesteps']:.2f} | {r['floor_ms']:.3f} | "
            f"{r['served_ms']:.3f} | {r['ratio']:.3f}x ({met}) | {r['overhead_ms']:.3f} | "
            f"{r['transport_ms']:.3f} | {r['server_ms']:.3f} |"
        )
    lines += [
        "",
        "The empty gRPC call is `grpc.health.v1.Health/Check` on the same server with the same client "
        "(`spikeserve-tools bench --protocol grpc-health`): the round trip every gRPC request pays before any "
        "model work. The rest is overhead minus that: decoding and checking the request, the hand-offs "
        "to and from the model's scheduler thread, and the answer.",
        "",
        "Every round:",
        "",
        "| model | round | floor ms | served ms | empty gRPC call ms | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for x in r["rounds"]:
            lines.append(
                f"| {r['model']} | {x['round']} | {x['floor_ms']:.3f} | {x['served_ms']:.3f} | "
                f"{x['transport_ms']:.3f} | {x['ratio']:.3f}x |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--bin", type=Path, default=Path(os.environ.get("SPIKESERVE_BIN", REPO / "target/release/spikeserve"))
    )
    parser.add_argument("--ort-library", default=run_bench.default_ort_library())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--name", default=None, help="file stem (default: overhead, overhead-quick)")
    parser.add_argument("--quick", action="store_true", help="smoke test: digits and VGGSNN at 1/8 width, one round")
    args = parser.parse_args(argv)
    args.bin = args.bin.resolve()
    args.tools_bin = spikeserve_process.tools_binary(args.bin)
    if args.quick:
        args.rounds = 1
    args.name = args.name or ("overhead-quick" if args.quick else "overhead")
    return args


def cases(args: argparse.Namespace, tmp: Path) -> list[Case]:
    shipped = REPO / "models"

    def shipped_case(name: str, requests: int, description: str) -> Case:
        return Case(name, shipped / name, shipped / name / "heldout.json", requests, description)

    def vggsnn(width: float, requests: int, description: str) -> Case:
        log(f"exporting the untrained VGGSNN stand-in at width {width:g}")
        model_dir = export_vggsnn_standin(width, tmp)
        return Case(model_dir.name, model_dir, model_dir / "heldout.json", requests, description)

    if args.quick:
        return [shipped_case("digits", 200, "shipped CSNN, 8x8"), vggsnn(0.125, 10, "VGGSNN at 1/8 width, untrained")]
    return [
        shipped_case("digits", 2000, "shipped CSNN, 8x8 (the default model)"),
        shipped_case("event-digits", 1000, "shipped conv SNN, 2x34x34 events"),
        vggsnn(0.25, 60, "VGGSNN at 1/4 width, 2x34x34, untrained"),
        vggsnn(1.0, 8, "VGGSNN (the papers' network), 2x34x34, untrained"),
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ok, why = run_bench.bench_available(args.tools_bin)
    if not ok:
        print(f"overhead: {why}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    info = run_bench.machine(args.device)
    info["load_average_1m_at_start"] = os.getloadavg()[0]
    info["argv"] = [".venv/bin/python", "benchmarks/overhead.py", *sys.argv[1:]]
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(args, case) for case in cases(args, Path(tmp))]
    document = {
        "machine": info,
        "target": TARGET_VS_FLOOR,
        "results": results,
        "elapsed_s": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(results, info, args))
    for r in results:
        print(
            f"{r['model']}: floor {r['floor_ms']:.3f} ms, served {r['served_ms']:.3f} ms per request: "
            f"{r['ratio']:.3f}x ({'met' if r['met'] else 'not met'}), overhead {r['overhead_ms']:.3f} ms "
            f"(an empty gRPC call {r['transport_ms']:.3f} ms)"
        )
    log(f"wrote {args.out / args.name}.json and .md in {document['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
