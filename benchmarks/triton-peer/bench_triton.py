"""spikeserve against NVIDIA Triton serving the same ONNX step graph, through the same KServe v2 requests.

Servers (each started here on free loopback ports, one at a time, pinned to core 0 with ``taskset``
where the machine has two cores or more; the load generator runs on core 1):

* spikeserve (``--max-batch 256``), its KServe v2 door;
* the Triton dynamic-batcher peer (whole requests batched, ``benchmarks/triton-peer/backend/model.py``);
* the Triton iterative-sequence peer (requests leave at their exit timestep, new ones join the batch;
  the load generator sends ``--kserve-sequence``).

Triton's batcher is swept over ``max_batch_size`` x ``max_queue_delay_microseconds``; every point
reports the best setting (closed loop: the highest throughput; open loop: the lowest p99) with all
settings kept in the JSON. Workloads: ``digits`` at its default threshold and at 0.99, ``event-digits``
at its calibrated default; closed loops at 1, 8, 64 and 256 clients and open loops at fixed rates
(``spikeserve-tools bench``, ``--protocol kserve-http`` by default; ``--workloads`` picks others, such
as the ``mnist-events`` ensemble). Each run also records the server's CPU seconds per answered request
(utime + stime of the server's process tree, from /proc, around the run). spikeserve is served before
and after the Triton sweep and its rows show the worse pass; with ``digits`` among the workloads, one
client also goes through each of its doors beside the in-process floor and an empty gRPC call.

    .venv/bin/python benchmarks/triton-peer/bench_triton.py            # the full matrix, HTTP
    .venv/bin/python benchmarks/triton-peer/bench_triton.py --protocol kserve-grpc --name triton-grpc
    .venv/bin/python benchmarks/triton-peer/bench_triton.py --quick    # a reduced matrix, a minute or two

Writes ``benchmarks/results/<name>.json`` (every run) and ``<name>.md`` (``--name``: ``triton``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import peer  # noqa: E402
import spikeserve_process  # noqa: E402

Result = dict[str, Any]
SPIKESERVE = "spikeserve"
SERVER_LABELS = {
    SPIKESERVE: "spikeserve (continuous batching, --max-batch 256), KServe v2 door",
    "triton-dynamic": "Triton, dynamic batcher (whole requests), Python backend + onnxruntime",
    "triton-iterative": "Triton, iterative sequences (leave at exit, join the batch), Python backend + onnxruntime",
}


@dataclass(frozen=True)
class Workload:
    model: str
    threshold: float | None

    @property
    def label(self) -> str:
        return f"{self.model} @ {'default' if self.threshold is None else self.threshold}"


@dataclass(frozen=True)
class Plan:
    workloads: tuple[Workload, ...]
    clients: tuple[int, ...]
    rates: tuple[float, ...]
    batchers: tuple[peer.Batcher, ...]
    requests: int
    requests_1_client: int
    open_requests: int
    warmup: int
    floor_rounds: int


WORKLOADS = {
    "digits": Workload("digits", None),
    "digits@0.99": Workload("digits", 0.99),
    "event-digits": Workload("event-digits", None),
    # A 3-member ensemble on real MNIST handwriting through the event simulator.
    "mnist-events": Workload("mnist-events", None),
}
# The full matrix's workloads; --workloads picks others (mnist-events is the slowest by far).
DEFAULT_WORKLOADS = ("digits", "digits@0.99", "event-digits")


def make_plan(quick: bool, names: Sequence[str] = DEFAULT_WORKLOADS) -> Plan:
    workloads = tuple(WORKLOADS[name] for name in names)
    if quick:
        return Plan(
            tuple(w for w in workloads if w.threshold is None) or workloads,
            (1, 64),
            (200.0,),
            (peer.Batcher(64, 0), peer.Batcher(256, 500)),
            400,
            100,
            400,
            20,
            1,
        )
    batchers = tuple(peer.Batcher(size, delay) for size in (8, 64, 256) for delay in (0, 500, 2000))
    return Plan(workloads, (1, 8, 64, 256), (100.0, 400.0), batchers, 3000, 500, 1000, 100, 3)


def log(message: str) -> None:
    print(f"[bench_triton {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pinning() -> tuple[list[str], list[str]]:
    """``taskset`` launchers for the server (core 0) and the load generator (core 1), where possible."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", "0"], ["taskset", "-c", "1"]
    return [], []


def run_load(args: argparse.Namespace, server: Server, command: list[str]) -> Result:
    """Runs the load generator ``command`` (its report as JSON) and reads the server's CPU seconds
    around it."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in {"http_proxy", "https_proxy", "all_proxy"}}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        full = [*args.load_launcher, str(args.tools_bin), "bench", *command, "--json", str(out), "--no-progress"]
        cpu_before = peer.process_tree_cpu_seconds(server.pid)
        done = subprocess.run(full, capture_output=True, text=True, env=env, check=False)
        cpu = peer.process_tree_cpu_seconds(server.pid) - cpu_before
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"`{' '.join(full)}` failed ({done.returncode}):\n{done.stderr[-2000:]}")
        report: Result = json.loads(out.read_text())
    report["server_cpu_s"] = cpu
    report["server_cpu_ms_per_request"] = cpu * 1e3 / max(report["ok"], 1)
    report["command"] = " ".join(["spikeserve-tools", "bench", *command, "--json", "OUT.json"])
    return report


def bench(args: argparse.Namespace, server: Server, workload: Workload, extra: Sequence[str], sequence: bool) -> Result:
    """One ``spikeserve-tools bench`` run against ``server``, with its CPU seconds around it."""
    heldout = REPO / "models" / workload.model / "heldout.json"
    command = ["--model", workload.model, "--inputs", str(heldout), "--protocol", args.protocol]
    command += ["--http", server.http, "--grpc", server.grpc, *extra]
    if workload.threshold is not None:
        command += ["--threshold", str(workload.threshold)]
    if sequence:
        command.append("--kserve-sequence")
    return run_load(args, server, command)


@dataclass
class Server:
    key: str
    http: str
    grpc: str
    pid: int
    setting: str


@contextmanager
def spikeserve(args: argparse.Namespace) -> Iterator[Server]:
    extra = ["--max-batch", "256", "--queue-capacity", "4096"]
    with spikeserve_process.started(args.bin, REPO / "models", extra, "info", args.server_launcher) as s:
        yield Server(SPIKESERVE, f"http://{s.http_addr}", f"http://{s.grpc_addr}", s.pid, " ".join(extra))


@contextmanager
def triton(args: argparse.Namespace, kind: str, batcher: peer.Batcher) -> Iterator[Server]:
    models = sorted({w.model for w in args.plan.workloads})
    with tempfile.TemporaryDirectory(prefix="triton-repo-") as tmp:
        repository = peer.write_repository(Path(tmp), models, kind, batcher)
        with peer.started(repository, args.server_launcher) as t:
            yield Server(f"triton-{kind}", t.http, t.grpc, t.pid, batcher.label())


def points(args: argparse.Namespace, server: Server, sequence: bool) -> list[Result]:
    """Every workload at every closed-loop client count and open-loop rate against one running server."""
    plan: Plan = args.plan
    results = []
    for workload in plan.workloads:
        runs: list[tuple[str, float, list[str]]] = []
        for clients in plan.clients:
            requests = plan.requests_1_client if clients == 1 else plan.requests
            runs.append(("closed", clients, ["--clients", str(clients), "--requests", str(requests)]))
        for rate in plan.rates:
            runs.append(("open", rate, ["--rate", f"{rate:.1f}", "--requests", str(plan.open_requests)]))
        for mode, load, extra in runs:
            report = bench(args, server, workload, [*extra, "--warmup", str(plan.warmup)], sequence)
            report.update(server=server.key, setting=server.setting, workload=workload.label, load=load)
            log(
                f"{server.key} [{server.setting}] {workload.label} {mode} {load:g}: "
                f"{report['throughput_rps']:.0f} req/s, p99 {report['latency_ms']['p99']:.2f} ms, "
                f"{report['server_cpu_ms_per_request']:.3f} CPU ms/req, {report['ok']}/{report['requests']} ok"
            )
            results.append(report)
    return results


FLOOR_PROTOCOLS = ("floor", "grpc-health", "grpc-unary", "kserve-grpc", "http", "kserve-http")


def transport_floor(args: argparse.Namespace, server: Server) -> list[Result]:
    """One client on ``digits``: spikeserve's gRPC and HTTP doors beside what they cannot go below, the
    model stepped in the load generator's process (``--floor``) and an empty gRPC call
    (``grpc-health``). Alternated, ``plan.floor_rounds`` times, so that drift on a shared machine hits all alike."""
    plan: Plan = args.plan
    heldout = REPO / "models" / "digits" / "heldout.json"
    results = []
    for round_ in range(plan.floor_rounds):
        for protocol in FLOOR_PROTOCOLS:
            command = ["--model", "digits", "--inputs", str(heldout)]
            if protocol == "floor":
                command += ["--floor", "--model-dir", str(REPO / "models" / "digits")]
            else:
                command += ["--protocol", protocol, "--http", server.http, "--grpc", server.grpc]
            command += ["--clients", "1", "--requests", str(plan.requests), "--warmup", str(plan.warmup)]
            report = run_load(args, server, command)
            report.update(protocol=protocol, round=round_)
            if protocol == "floor":
                report["server_cpu_ms_per_request"] = 0.0
            log(f"floor round {round_} {protocol}: p50 {report['latency_ms']['p50']:.3f} ms")
            results.append(report)
    return results


def floor_summary(results: list[Result]) -> dict[str, dict[str, float]]:
    """Per protocol, the median over rounds of p50 and of server CPU per request."""
    summary = {}
    for protocol in FLOOR_PROTOCOLS:
        rows = [r for r in results if r["protocol"] == protocol]
        if rows:
            summary[protocol] = {
                "p50_ms": statistics.median(r["latency_ms"]["p50"] for r in rows),
                "cpu_ms_per_request": statistics.median(r["server_cpu_ms_per_request"] for r in rows),
            }
    return summary


def best(results: list[Result]) -> list[Result]:
    """Per server, workload, mode and load: Triton's best batcher setting (throughput; open loop: p99),
    and spikeserve's worse pass of the two it runs (before and after the Triton sweep), so that the
    machine's drift over the sweep never favours spikeserve."""
    chosen: dict[tuple[str, str, str, float], Result] = {}

    def score(x: Result) -> tuple[float, float]:
        errors = float(sum(x["errors"].values()))
        if x["mode"] == "open":
            return (-errors, -x["latency_ms"]["p99"])
        return (-errors, x["throughput_rps"])

    for r in results:
        key = (r["server"], r["workload"], r["mode"], r["load"])
        current = chosen.get(key)
        if current is None:
            chosen[key] = r
        elif r["server"] == SPIKESERVE:
            if score(r) < score(current):
                chosen[key] = r
        elif score(r) > score(current):
            chosen[key] = r
    return list(chosen.values())


def drift(results: list[Result]) -> list[dict[str, Any]]:
    """spikeserve's closed-loop throughput before and after the Triton sweep, point by point: how much
    the machine moved while Triton ran."""
    passes: dict[tuple[str, float], dict[str, float]] = {}
    for r in results:
        if r["server"] == SPIKESERVE and r["mode"] == "closed":
            passes.setdefault((r["workload"], r["load"]), {})[r["pass"]] = r["throughput_rps"]
    return [
        {"workload": w, "clients": c, **p, "after_over_before": p["after"] / p["before"]}
        for (w, c), p in passes.items()
        if {"before", "after"} <= p.keys()
    ]


def markdown(run: Result) -> str:
    lines = [
        "# spikeserve against NVIDIA Triton (same step graph, same KServe v2 requests)",
        "",
        f"Generated by `{run['command']}` on {run['generated']} ({run['machine']}).",
        f"Protocol: `{run['protocol']}`; server pinned with `{' '.join(run['server_launcher']) or 'none'}`,"
        f" load generator with `{' '.join(run['load_launcher']) or 'none'}`.",
        "Triton rows show the best batcher setting of the sweep for each point (every run is in the JSON);"
        " spikeserve runs before and after the sweep and its rows show the worse of the two passes.",
        "",
    ]
    for key, label in SERVER_LABELS.items():
        lines.append(f"* **{key}**: {label}")
    moved = run.get("spikeserve_drift", [])
    if moved:
        ratios = sorted(m["after_over_before"] for m in moved)
        lines += [""]
        lines.append(
            f"spikeserve's closed-loop throughput after the sweep over before: {ratios[0]:.2f}x to {ratios[-1]:.2f}x"
            f" (median {statistics.median(ratios):.2f}x over {len(ratios)} points): how much the machine moved."
        )
    floor = run.get("floor", {})
    if floor:
        lines += ["", "## One client against the transport floor (spikeserve, `digits`)", ""]
        lines.append("| door | p50 ms | server CPU ms/req |")
        lines.append("|---|---|---|")
        for protocol, row in floor.items():
            lines.append(f"| {protocol} | {row['p50_ms']:.3f} | {row['cpu_ms_per_request']:.3f} |")
        if {"floor", "grpc-health", "grpc-unary"} <= floor.keys():
            bound = floor["floor"]["p50_ms"] + floor["grpc-health"]["p50_ms"]
            ratio = floor["grpc-unary"]["p50_ms"] / bound
            lines += [
                "",
                f"gRPC unary p50 against an empty gRPC call's p50 plus the in-process floor's p50 ({bound:.3f} ms):"
                f" **{ratio:.2f}x** (target at most 1.5x). Medians of {run.get('floor_rounds', 1)} alternated rounds.",
            ]
    for workload in dict.fromkeys(r["workload"] for r in run["best"]):
        lines += ["", f"## {workload}", ""]
        lines.append(
            "| server | mode | clients / rate | req/s | p50 ms | p99 ms | mean timesteps | CPU ms/req | errors"
            " | setting |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        rows = [r for r in run["best"] if r["workload"] == workload]
        rows.sort(key=lambda r: (r["mode"], r["load"], list(SERVER_LABELS).index(r["server"])))
        for r in rows:
            lines.append(
                f"| {r['server']} | {r['mode']} | {r['load']:g} | {r['throughput_rps']:.0f}"
                f" | {r['latency_ms']['p50']:.3f} | {r['latency_ms']['p99']:.3f} | {r['mean_timesteps']:.3f}"
                f" | {r['server_cpu_ms_per_request']:.3f}"
                f" | {sum(r['errors'].values())} | {r['setting']} |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a reduced matrix (a few minutes)")
    parser.add_argument("--protocol", choices=("kserve-http", "kserve-grpc"), default="kserve-http")
    parser.add_argument("--peers", nargs="+", choices=peer.PEERS, default=list(peer.PEERS))
    parser.add_argument("--bin", type=Path, default=None, help="the spikeserve binary (target/release/spikeserve)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--name", default="triton")
    parser.add_argument(
        "--workloads", nargs="+", choices=list(WORKLOADS), default=list(DEFAULT_WORKLOADS), help="model[@threshold]"
    )
    args = parser.parse_args(argv)
    args.bin = spikeserve_process.release_binary(str(args.bin) if args.bin else None)
    args.tools_bin = spikeserve_process.tools_binary(args.bin)
    args.plan = make_plan(args.quick, args.workloads)
    args.server_launcher, args.load_launcher = pinning()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        peer.check_installed()
    except peer.PeerError as error:
        print(error, file=sys.stderr)
        return 1
    for binary in (args.bin, args.tools_bin):
        if not binary.exists():
            print(f"bench_triton: {binary} is missing; run `make build`", file=sys.stderr)
            return 1
    results: list[Result] = []
    floor: list[Result] = []
    try:
        with spikeserve(args) as server:
            if any(w.model == "digits" for w in args.plan.workloads):
                floor = transport_floor(args, server)
            results += [{**r, "pass": "before"} for r in points(args, server, sequence=False)]
        for kind in args.peers:
            for batcher in args.plan.batchers:
                with triton(args, kind, batcher) as server:
                    results += points(args, server, sequence=kind == "iterative")
        with spikeserve(args) as server:
            results += [{**r, "pass": "after"} for r in points(args, server, sequence=False)]
    except (peer.PeerError, spikeserve_process.ServerStartError, RuntimeError) as error:
        print(f"bench_triton: {error}", file=sys.stderr)
        return 1
    run: Result = {
        "command": "benchmarks/triton-peer/bench_triton.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "protocol": args.protocol,
        "quick": args.quick,
        "server_launcher": args.server_launcher,
        "load_launcher": args.load_launcher,
        "batchers": [b.label() for b in args.plan.batchers],
        "floor_rounds": args.plan.floor_rounds,
        "best": best(results),
        "spikeserve_drift": drift(results),
        "runs": results,
        "floor": floor_summary(floor),
        "floor_runs": floor,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(run, indent=1) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(run))
    log(f"wrote {args.out / (args.name + '.json')} and {args.out / (args.name + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
