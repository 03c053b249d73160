"""Latency budgets under overload: deadline-aware admission against first come, first served.

``make bench-deadlines`` (minutes; not part of ``make test``). One model, served alone by the release
binary; the load generator is ``spikeserve-tools bench`` (Rust, open loop: latency counts from the planned send
time), pinned to another core than the server where the machine has two.

1. **Warm-up**: the first request after the server says it is listening (from a client that has run its
   own request path against another server first and checked this server's health, which opens its
   connection), against the steady-state p50 of the same client's
   next 500 requests, with ``--warmup powers-of-two`` (the default) and ``--warmup off``; then, after the
   warm server has rested a second, the first request of another such client (what any request after
   an idle spell costs).
2. **Capacity**: a closed loop of 64 clients without budgets; the unloaded service time: one client.
3. **Overload**: open loops at 1.5x and 3x capacity; every request carries a budget, tight (the p50 of the
   capacity run: the service time when every slot is busy, batch waits included) for 30% of them or loose
   (10x tight) for 70%, and a priority class, 1 or 2, in equal shares independently of the budget. Each point runs on a
   fresh server with ``--admission fifo --no-early-refusal`` (the behaviour before deadline-aware
   admission), with the defaults (``--admission deadline``, early refusal on) and with the defaults and
   ``--budget-batch-limit`` (the batch kept small enough for the budgets that can still be met).

Each overload point runs ``--repeat`` times (3), each on a fresh server, the admissions taking turns; the
run with the median goodput is reported, with every run's goodput beside it (on a shared two-core machine
the spread is wide).
Reported per point: goodput (answered within budget: any exit but ``deadline``) per class and in all, as
requests per second and as a share of capacity; p99 of the answered requests; refusals by reason; and
what a refusal costs the server against an answer (its CPU over a second of refusals at each load's rate,
and over the capacity run), with the goodput that leaves room for on one core.

    ORT_DYLIB_PATH=... .venv/bin/python benchmarks/deadlines.py --json benchmarks/results/deadlines.json \\
        --markdown benchmarks/results/deadlines.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import spikeserve_process

REPO = Path(__file__).resolve().parents[1]
LOADS = (1.5, 3.0)
#: The baseline (the behaviour before deadline-aware admission), the defaults, and the defaults with
#: the batch kept small enough for the budgets that can still be met (``--budget-batch-limit``).
ADMISSIONS = {
    "fifo": ["--admission", "fifo", "--no-early-refusal"],
    "deadline": [],
    "deadline+limit": ["--budget-batch-limit"],
}
PRIORITIES = (1, 2)
#: Tenths of the requests with the tight budget (the rest loose), as in the issue's own measurement.
TIGHT_SHARE = 3
#: Unmeasured requests before each overload run (answered: the server is not loaded yet).
OVERLOAD_WARMUP = 200


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pinned(core: int | None) -> list[str]:
    return ["taskset", "-c", str(core)] if core is not None else []


def bench(binary: Path, server: spikeserve_process.Server, model: str, core: int | None, *flags: str) -> dict[str, Any]:
    """One ``spikeserve-tools bench`` run over gRPC unary (the tools beside the server ``binary``); its report."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [
            *pinned(core),
            str(spikeserve_process.tools_binary(binary)),
            "bench",
            "--protocol",
            "grpc-unary",
            "--grpc",
            f"http://{server.grpc_addr}",
        ]
        command += ["--model", model, "--inputs", str(REPO / "models" / model / "heldout.json"), "--no-progress"]
        command += ["--json", out.name, *flags]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"deadlines: `{' '.join(command)}` failed:\n{done.stdout}\n{done.stderr}")
        return json.loads(Path(out.name).read_text())


def serving(binary: Path, models: Path, core: int | None, *flags: str) -> Any:
    # Requests are not logged one by one: the log writer would take CPU from the server.
    return spikeserve_process.started(
        binary, models, flags, log_filter="info,spikeserve::request=warn", launcher=pinned(core)
    )


#: How long the warm server rests before the last measure of the warm-up point.
IDLE_S = 1.0


def refusal_cpu_seconds(
    binary: Path, server: spikeserve_process.Server, model: str, core: int | None, rate: float
) -> float:
    """The server's CPU per refused request, over a second of refusals at ``rate``."""
    before = cpu_seconds(server.pid)
    run = bench(
        binary,
        server,
        model,
        core,
        "--rate",
        f"{rate:.1f}",
        "--requests",
        str(int(rate)),
        "--warmup",
        "0",
        "--priorities",
        "9",
    )
    if run["ok"]:
        raise SystemExit("deadlines: a request of priority 9 was answered; the refusal cost needs refusals")
    return (cpu_seconds(server.pid) - before) / run["requests"]


def warmup_point(binary: Path, models: Path, model: str, cores: tuple[int | None, int | None]) -> dict[str, Any]:
    point: dict[str, Any] = {}
    # The client's own first request pays for its first use of every code path it runs; it primes
    # them against another server first, so that the first request measured is the server's cost.
    with serving(binary, models, cores[1]) as primer:
        prime = ("--prime-grpc", f"http://{primer.grpc_addr}")
        for warmup in ("powers-of-two", "off"):
            with serving(binary, models, cores[0], "--warmup", warmup) as server:
                # One client process: primed, it checks the server's health (which opens the
                # connection, as a readiness probe would), then its first request is the server's
                # first; the rest of the run is the steady state on the same connection.
                one = ("--clients", "1", "--warmup", "0", *prime)
                run = bench(binary, server, model, cores[1], *one, "--requests", "501")
                # The same measure on the now warm server after a rest: what any first request
                # after an idle spell costs, which no warm-up at start can remove.
                time.sleep(IDLE_S)
                rested = bench(binary, server, model, cores[1], *one, "--requests", "1")
            point[warmup] = {
                "first_request_ms": run["first_request_ms"],
                "steady_p50_ms": run["latency_ms"]["p50"],
                "ratio": run["first_request_ms"] / run["latency_ms"]["p50"],
                "after_idle_ms": rested["first_request_ms"],
            }
    return point


def overload_point(
    binary: Path,
    models: Path,
    model: str,
    cores: tuple[int | None, int | None],
    admission: str,
    rate: float,
    budgets: tuple[float, float],
    seconds: float,
) -> dict[str, Any]:
    with serving(binary, models, cores[0], *ADMISSIONS[admission]) as server:
        cpu_before = cpu_seconds(server.pid)
        report = bench(
            binary,
            server,
            model,
            cores[1],
            "--rate",
            f"{rate:.1f}",
            "--requests",
            str(int(rate * seconds)),
            "--warmup",
            str(OVERLOAD_WARMUP),
            "--budgets-ms",
            f"{budgets[0]:.3f}:{TIGHT_SHARE},{budgets[1]:.3f}:{10 - TIGHT_SHARE}",
            "--priorities",
            ",".join(str(p) for p in PRIORITIES),
        )
        cpu = cpu_seconds(server.pid) - cpu_before
    within = sum(c["within_budget"] for c in report["classes"])
    refused: dict[str, int] = {}
    for c in report["classes"]:
        for reason, n in c["refused"].items():
            refused[reason] = refused.get(reason, 0) + n
    return {
        "admission": admission,
        "rate": rate,
        "duration_s": report["duration_s"],
        "sent": report["requests"],
        "goodput_rps": within / report["duration_s"],
        # The server's CPU over the run and its warm-up, and what it answered and refused in them.
        "server_cpu_s": cpu,
        "answered": report["ok"] + OVERLOAD_WARMUP,
        "refused_total": report["requests"] - report["ok"],
        "answered_p99_ms": report["latency_ms"]["p99"] if report["ok"] else None,
        "refused": refused,
        "classes": report["classes"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits-str")
    parser.add_argument("--bin", default=None, help="the server binary (default target/release/spikeserve)")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each overload run")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per overload point, each on a fresh server; the median is reported"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    binary = spikeserve_process.release_binary(args.bin)
    two_cores = (os.cpu_count() or 1) >= 2 and shutil.which("taskset")
    cores: tuple[int | None, int | None] = (0, 1) if two_cores else (None, None)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        shutil.copytree(REPO / "models" / args.model, models / args.model)
        warm = warmup_point(binary, models, args.model, cores)
        with serving(binary, models, cores[0]) as server:
            cpu_before = cpu_seconds(server.pid)
            capacity = bench(binary, server, args.model, cores[1], "--clients", "64", "--requests", "6000")
            # Warm-up included (100 requests by default): the CPU an answer costs at capacity.
            cpu_per_answer = (cpu_seconds(server.pid) - cpu_before) / (capacity["ok"] + 100)
            # And a refusal, at each overload's rate (a busy server reads and answers many per
            # wake-up, so the cost falls as the rate grows): requests of a class out of range,
            # refused before the engine as an overloaded queue refuses them.
            cpu_per_refusal = {
                load: refusal_cpu_seconds(binary, server, args.model, cores[1], load * capacity["throughput_rps"])
                for load in LOADS
            }
            unloaded = bench(binary, server, args.model, cores[1], "--clients", "1", "--requests", "1000")
        tight = round(capacity["latency_ms"]["p50"], 3)
        budgets = (tight, round(10 * tight, 3))
        rate = capacity["throughput_rps"]
        points = []
        for load in LOADS:
            # Round-robin over the admissions, so that the machine's drift over minutes (capacity
            # moves by a fifth between runs on a shared host) falls on each of them alike.
            runs: dict[str, list[dict[str, Any]]] = {admission: [] for admission in ADMISSIONS}
            for _ in range(args.repeat):
                for admission in ADMISSIONS:
                    runs[admission].append(
                        overload_point(binary, models, args.model, cores, admission, load * rate, budgets, args.seconds)
                    )
            for kept in runs.values():
                kept.sort(key=lambda run: run["goodput_rps"])
                median = kept[len(kept) // 2]
                points.append(median | {"load": load, "goodput_rps_runs": [run["goodput_rps"] for run in kept]})
    result = {
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": sys.argv,
        "model": args.model,
        "pinned_cores": {"server": cores[0], "load": cores[1]},
        "capacity_rps": capacity["throughput_rps"],
        "unloaded_latency_ms": unloaded["latency_ms"],
        "cpu_per_answer_ms": cpu_per_answer * 1e3,
        "cpu_per_refusal_ms": {str(load): cost * 1e3 for load, cost in cpu_per_refusal.items()},
        "budgets_ms": budgets,
        "priorities": PRIORITIES,
        "warmup": warm,
        "points": points,
        "runtime_s": time.perf_counter() - started,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    if args.markdown:
        args.markdown.write_text(text)
    print(text)
    return 0


def markdown(r: dict[str, Any]) -> str:
    capacity = r["capacity_rps"]
    tight, loose = r["budgets_ms"]
    lines = [
        f"Model `{r['model']}`, gRPC unary, open loop; capacity {capacity:.0f} req/s (64 clients, closed loop); "
        f"unloaded p50 {r['unloaded_latency_ms']['p50']:.3f} ms; budgets {tight} ms (tight, 30%) and {loose} ms "
        f"(loose, 70%), "
        f"priorities {', '.join(map(str, r['priorities']))} in equal shares; "
        f"server on core {r['pinned_cores']['server']}, load on core {r['pinned_cores']['load']}.",
        "",
        "| load | admission | goodput req/s (median; all runs) | share of capacity "
        "| tight p1 | tight p2 | loose p1 | loose p2 | answered p99 ms | refused |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in r["points"]:
        by_class = {(c["budget_ms"], c["priority"]): c["goodput"] for c in p["classes"]}
        cells = [f"{by_class.get((b, pr), float('nan')) * 100:.1f}%" for b in (tight, loose) for pr in r["priorities"]]
        refused = ", ".join(f"{k}: {v}" for k, v in sorted(p["refused"].items())) or "none"
        p99 = "-" if p["answered_p99_ms"] is None else f"{p['answered_p99_ms']:.2f}"
        lines.append(
            f"| {p['load']}x ({p['rate']:.0f}/s) | {p['admission']} | {p['goodput_rps']:.0f} "
            f"({', '.join(f'{g:.0f}' for g in p['goodput_rps_runs'])}) | "
            f"{p['goodput_rps'] / capacity * 100:.1f}% | {' | '.join(cells)} | {p99} | {refused} |"
        )
    lines += refusal_cost(r)
    lines += [
        "",
        "| warm-up | first request ms | steady p50 ms | ratio "
        f"| first request after {IDLE_S:g} s idle, warm server ms |",
        "|---|---|---|---|---|",
    ]
    for mode, w in r["warmup"].items():
        lines.append(
            f"| {mode} | {w['first_request_ms']:.3f} | {w['steady_p50_ms']:.3f} | {w['ratio']:.2f}x "
            f"| {w['after_idle_ms']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def refusal_cost(r: dict[str, Any]) -> list[str]:
    """What a refusal costs the server against an answer, and the goodput that leaves room for.

    With one core, an answer costing ``a`` CPU-seconds (capacity ``C = 1/a``) and a refusal ``f``, a
    load of ``L`` x capacity can answer at most ``s`` a second where ``s*a + (L*C - s)*f <= 1``: a
    share of capacity of ``(1 - L*f/a) / (1 - f/a)``.
    """
    answer_ms = r["cpu_per_answer_ms"]
    lines = [
        "",
        f"Server CPU per answer in the capacity run: {answer_ms:.3f} ms. Per refusal (a class out of range, "
        "refused before the engine as a full queue refuses, one second at the load's rate), and the share "
        "of capacity one core can answer at most when every refusal costs that:",
        "",
        "| load | CPU per refusal ms | of an answer | most goodput, share of capacity |",
        "|---|---|---|---|",
    ]
    for load, refusal_ms in r["cpu_per_refusal_ms"].items():
        ratio = refusal_ms / answer_ms
        most = max((1 - float(load) * ratio) / (1 - ratio), 0.0) if ratio < 1 else 0.0
        lines.append(f"| {load}x | {refusal_ms:.3f} | {ratio:.2f} | {most * 100:.0f}% |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
