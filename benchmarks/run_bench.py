"""spikeserve against the alternatives, side by side in one run: same model, same held-out inputs, same cutoff.

What runs, one thing at a time (the clients share the machine with the server under test):

1. the floors: the Rust floor (``spikeserve-tools bench --floor``: the raw ort stepping loop at batch 1, in
   process) and the Python floor (``benchmarks/python/floor.py``: the same loop through the onnxruntime
   Python API);
2. three servers, each started by this script on free loopback ports and stopped before the next:
   the Python peer (``benchmarks/python/peer_server.py --threads 1``: FastAPI + uvicorn + onnxruntime,
   batch 1), spikeserve with batching off (``--max-batch 1``) and spikeserve with continuous batching on
   (``--max-batch 256``, so 256 clients all fit);
3. ``spikeserve-tools bench`` as the load generator: closed loops at 1, 8, 64 and 256 clients over HTTP
   against every server; gRPC unary, gRPC streaming and SSE at 1 and 64 clients against spikeserve
   (batching on); open loops at two fixed rates against spikeserve (batching on) and the Python peer;
4. the ratios against the baselines measured in this run, with the targets; then
   ``<out>/<name>.json`` (every raw result), ``<out>/<name>.md`` (tables) and two plots.

    .venv/bin/python benchmarks/run_bench.py            # the full run (about 75 s on 2 cores)
    .venv/bin/python benchmarks/run_bench.py --quick    # smoke test (under a minute)
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import spikeserve_process

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEERS = HERE / "python"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0

# Server keys, in the order they are shown.
PYTHON = "python-peer"
OFF = "spikeserve-batch-off"
ON = "spikeserve-batch-on"
SERVER_LABELS = {
    PYTHON: "Python peer (FastAPI + onnxruntime, batch 1)",
    OFF: "spikeserve, batching off (--max-batch 1)",
    ON: "spikeserve, continuous batching (--max-batch 256)",
}
PROTOCOLS = ("http", "grpc-unary", "grpc-stream", "sse")

# The targets (from the issue).
TARGET_VS_PYTHON = 5.0  # spikeserve / Python throughput at 64 clients, at equal or lower p99
TARGET_VS_FLOOR = 1.10  # spikeserve at 1 client / the Rust floor, per request

Result = dict[str, Any]


@dataclass
class Plan:
    """How much to run: the full benchmark or the smoke test."""

    clients: list[int]
    other_protocol_clients: list[int]
    requests: int
    requests_1_client: int
    open_requests: int
    floor_requests: int
    warmup: int
    open_fraction: float = 0.7


@dataclass
class Run:
    """Everything measured in this run, keyed so that the report can find it."""

    floors: dict[str, Result] = field(default_factory=dict)
    closed: list[Result] = field(default_factory=list)
    open: list[Result] = field(default_factory=list)

    def find(self, server: str, protocol: str, clients: int) -> Result | None:
        for r in self.closed:
            if r["server"] == server and r["protocol"] == protocol and r["clients"] == clients:
                return r
        return None


# The Python peer binds its own listening socket (``socket.socket(family, SOCK_STREAM)``, protocol 0) and
# hands it to uvicorn. asyncio sets TCP_NODELAY on a connection only when its socket's protocol is
# IPPROTO_TCP (``asyncio.base_events._set_nodelay``), so the peer's connections keep Nagle's algorithm:
# uvicorn writes the head and the body of each answer separately, the body waits for the client's
# delayed ACK, and every request costs 40 ms more (39 requests/s at one client instead of ~430). Any
# uvicorn started the ordinary way (``--port``) has TCP_NODELAY; so the peer is started through this
# bootstrap, which sets it on every TCP connection, and runs ``peer_server.py`` unchanged. ``--peer-as-is``
# runs the fixture without it.
NODELAY_BOOTSTRAP = """
import asyncio.base_events, runpy, socket, sys
def _set_nodelay(sock):
    if sock.family in {socket.AF_INET, socket.AF_INET6} and sock.type == socket.SOCK_STREAM:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
asyncio.base_events._set_nodelay = _set_nodelay
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, script.rsplit("/", 1)[0])
runpy.run_path(script, run_name="__main__")
"""


def log(message: str) -> None:
    print(f"[run_bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the children: loopback must never go through a proxy."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in {"http_proxy", "https_proxy", "all_proxy"}}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra or {})
    return env


def default_ort_library() -> str | None:
    """``ORT_DYLIB_PATH``, else the library inside the pinned onnxruntime wheel of ``.venv``."""
    if os.environ.get("ORT_DYLIB_PATH"):
        return os.environ["ORT_DYLIB_PATH"]
    found = sorted(glob.glob(str(REPO / ".venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*")))
    return found[-1] if found else None


def bench_available(binary: Path) -> tuple[bool, str]:
    """Whether ``spikeserve-tools bench`` (``binary``) exists in this build, and why not."""
    if not binary.exists():
        return False, f"{binary} does not exist (cargo build --release --locked --workspace)"
    done = subprocess.run([str(binary), "bench", "--help"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return False, f"`{binary} bench --help` failed: {(done.stderr or done.stdout).strip()[:300]}"
    return True, ""


# --- the load generator and the floors ---------------------------------------------------------------


def spikeserve_bench(args: argparse.Namespace, extra: list[str], label: str) -> Result:
    """Runs ``spikeserve-tools bench`` with ``extra`` and returns its JSON report."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        command = [
            str(args.tools_bin),
            "bench",
            "--model",
            args.model,
            "--inputs",
            str(args.inputs),
            "--json",
            str(out),
            "--no-progress",
            *extra,
        ]
        if args.threshold is not None:
            command += ["--threshold", str(args.threshold)]
        env = clean_env({"ORT_DYLIB_PATH": args.ort_library} if args.ort_library else None)
        env["RUST_LOG"] = "warn"
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"{label}: `{' '.join(command)}` failed ({done.returncode}):\n{done.stderr[-2000:]}")
        report: Result = json.loads(out.read_text())
    report["command"] = "spikeserve-tools bench " + " ".join(command[2:]).replace(str(out), "OUT.json")
    report["wall_s"] = time.perf_counter() - started
    log(
        f"{label}: {report['throughput_rps']:.0f} req/s, p50 {report['latency_ms']['p50']:.3f} ms, "
        f"p99 {report['latency_ms']['p99']:.3f} ms, {report['ok']}/{report['requests']} ok"
        + (f", errors {report['errors']}" if report["errors"] else "")
    )
    return report


def rust_floor(args: argparse.Namespace, plan: Plan) -> Result:
    extra = ["--floor", "--model-dir", str(args.model_dir), "--requests", str(plan.floor_requests)]
    extra += ["--warmup", str(plan.warmup)]
    report = spikeserve_bench(args, extra, "Rust floor")
    report["per_request_ms"] = report["duration_s"] * 1e3 / max(report["requests"], 1)
    return report


def python_floor(args: argparse.Namespace, plan: Plan) -> Result:
    """``floor.py``, its JSON normalised to the load generator's keys (its own keys kept under ``raw``)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "floor.json"
        # floor.py times whole passes over the held-out set.
        samples = len(json.loads(args.inputs.read_text()).get("inputs", [])) or 360
        repeat = max(1, round(plan.floor_requests / samples))
        command = [
            args.python,
            str(PEERS / "floor.py"),
            "--model",
            str(args.model_dir),
            "--threads",
            "1",
            "--repeat",
            str(repeat),
            "--warmup",
            str(plan.warmup),
            "--json",
            str(out),
        ]
        if args.threshold is not None:
            command += ["--threshold", str(args.threshold)]
        env = clean_env({"PYTHONPATH": str(REPO / "training")})
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"Python floor: `{' '.join(command)}` failed:\n{done.stderr[-2000:]}")
        raw: Result = json.loads(out.read_text())
    for key in ("exit_timesteps", "predictions"):
        raw.pop(key, None)
    lat = raw["latency_ms"]
    report: Result = {
        "protocol": None,
        "model": raw["model"],
        "mode": "floor",
        "clients": 1,
        "rate": None,
        "requests": raw["requests"],
        "ok": raw["requests"],
        "errors": {},
        "duration_s": raw["requests"] / raw["throughput_per_s"],
        "throughput_rps": raw["throughput_per_s"],
        # floor.py reports the median and p99 (no p90).
        "latency_ms": {"mean": lat["mean"], "p50": lat["median"], "p90": None, "p99": lat["p99"], "max": lat["max"]},
        "ttfp_ms": None,
        "mean_timesteps": raw["mean_timesteps"],
        "exit_reasons": raw["exit_reasons"],
        "per_request_ms": 1e3 / raw["throughput_per_s"],
        "command": " ".join(["python", *command[1:]]).replace(str(out), "OUT.json").replace(str(REPO) + "/", ""),
        "raw": raw,
    }
    log(f"Python floor: {report['throughput_rps']:.0f} req/s, p50 {lat['median']:.3f} ms, p99 {lat['p99']:.3f} ms")
    return report


# --- the servers --------------------------------------------------------------------------------------


@dataclass
class Server:
    key: str
    http: str
    grpc: str | None
    command: list[str]


def _wait_for(proc: subprocess.Popen[bytes], path: Path, pattern: re.Pattern[str], what: str) -> re.Match[str]:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace")
        match = pattern.search(text)
        if match:
            return match
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}) before listening:\n{text[-3000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen within {START_TIMEOUT_S} s:\n{path.read_text(errors='replace')[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def spikeserve_server(args: argparse.Namespace, key: str, max_batch: int) -> Iterator[Server]:
    """spikeserve on free loopback ports, serving only the benchmarked model (a symlink in a temporary
    directory); its JSON log on a file, the "listening" line parsed for the two addresses."""
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        (models / args.model).symlink_to(args.model_dir.resolve())
        command = [str(args.bin), "--log-format", "json", "serve", "--models", str(models)]
        command += ["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--max-batch", str(max_batch)]
        command += ["--queue-capacity", str(max(256, max_batch)), "--device", args.device]
        if args.ort_library:
            command += ["--ort-library", args.ort_library]
        env = clean_env({"RUST_LOG": "warn,spikeserve=info,spikeserve::request=warn"})
        log_path = Path(tmp) / "server.log"
        with log_path.open("wb") as stderr:
            proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=env
            )
        try:
            pattern = re.compile(r'^\{.*"message":"listening".*\}$', re.MULTILINE)
            line = json.loads(_wait_for(proc, log_path, pattern, f"spikeserve ({key})").group(0))
            fields = line["fields"]
            shown = [
                c.replace(str(models), "MODELS")
                .replace(args.ort_library or "\0", "$ORT_DYLIB_PATH")
                .replace(f"{REPO}/", "")
                for c in command
            ]
            server = Server(key, f"http://{fields['http_addr']}", f"http://{fields['grpc_addr']}", shown)
            args.server_commands.append(shown)
            log(f"started {key} at {server.http} / {server.grpc}")
            yield server
        finally:
            _stop(proc)
            problems = [ln for ln in log_path.read_text(errors="replace").splitlines() if '"level":"ERROR"' in ln]
            if problems:
                log(f"{key} logged errors:\n" + "\n".join(problems[:5]))


@contextmanager
def python_peer(args: argparse.Namespace) -> Iterator[Server]:
    with tempfile.TemporaryDirectory() as tmp:
        command = [args.python, str(PEERS / "peer_server.py"), "--model", str(args.model_dir)]
        command += ["--host", "127.0.0.1", "--port", "0", "--threads", "1"]
        if not args.peer_as_is:
            command[1:1] = ["-c", NODELAY_BOOTSTRAP]
        out_path = Path(tmp) / "stdout"
        with out_path.open("wb") as stdout, (Path(tmp) / "stderr").open("wb") as stderr:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=clean_env())
        try:
            pattern = re.compile(r'^\{"listening": "([^"]+)"\}$', re.MULTILINE)
            address = _wait_for(proc, out_path, pattern, "the Python peer").group(1)
            shown = ["python", *[c.replace(str(REPO) + "/", "") for c in command[1:]]]
            if not args.peer_as_is:
                shown[1:3] = ["-c", "'<NODELAY_BOOTSTRAP>'"]
            server = Server(PYTHON, f"http://{address}", None, shown)
            args.server_commands.append(shown)
            log(f"started {PYTHON} at {server.http}")
            yield server
        finally:
            _stop(proc)


def closed_loop(args: argparse.Namespace, plan: Plan, server: Server, protocol: str, clients: int) -> Result:
    requests = plan.requests_1_client if clients == 1 else plan.requests
    extra = ["--protocol", protocol, "--http", server.http, "--clients", str(clients)]
    extra += ["--requests", str(requests), "--warmup", str(plan.warmup)]
    if server.grpc:
        extra += ["--grpc", server.grpc]
    report = spikeserve_bench(args, extra, f"{server.key} {protocol} {clients} clients")
    report["server"] = server.key
    return report


def open_loop(args: argparse.Namespace, plan: Plan, server: Server, rate: float, basis: str) -> Result:
    extra = ["--protocol", "http", "--http", server.http, "--rate", f"{rate:.1f}"]
    extra += ["--requests", str(plan.open_requests), "--warmup", str(plan.warmup)]
    report = spikeserve_bench(args, extra, f"{server.key} open loop at {rate:.0f}/s")
    report["server"] = server.key
    report["rate_basis"] = basis
    return report


# --- the run ------------------------------------------------------------------------------------------


def run_all(args: argparse.Namespace, plan: Plan) -> Run:
    run = Run()
    log("floors")
    run.floors["rust"] = rust_floor(args, plan)
    run.floors["python"] = python_floor(args, plan)
    top = max(plan.clients)

    # The Python peer first: its own sustainable rate (70% of its throughput at the top concurrency)
    # is one of the two open-loop rates.
    with python_peer(args) as server:
        for clients in plan.clients:
            run.closed.append(closed_loop(args, plan, server, "http", clients))
        python_top = max(r["throughput_rps"] for r in run.closed if r["server"] == PYTHON)
        low_rate = plan.open_fraction * python_top
        low_basis = f"{plan.open_fraction:.0%} of the Python peer's best closed-loop HTTP throughput"
        run.open.append(open_loop(args, plan, server, low_rate, low_basis))

    with spikeserve_server(args, OFF, 1) as server:
        for clients in plan.clients:
            run.closed.append(closed_loop(args, plan, server, "http", clients))

    with spikeserve_server(args, ON, 256) as server:
        for clients in plan.clients:
            run.closed.append(closed_loop(args, plan, server, "http", clients))
        for protocol in PROTOCOLS[1:]:
            for clients in plan.other_protocol_clients:
                run.closed.append(closed_loop(args, plan, server, protocol, clients))
        anchor = 64 if 64 in plan.clients else top
        on_anchor = run.find(ON, "http", anchor)
        assert on_anchor is not None
        high_rate = plan.open_fraction * on_anchor["throughput_rps"]
        high_basis = f"{plan.open_fraction:.0%} of spikeserve's (batching on) HTTP throughput at {anchor} clients"
        run.open.append(open_loop(args, plan, server, low_rate, low_basis))
        run.open.append(open_loop(args, plan, server, high_rate, high_basis))

    # The Python peer again, at the rate spikeserve sustains.
    with python_peer(args) as server:
        run.open.append(open_loop(args, plan, server, high_rate, high_basis))
    return run


# --- ratios -------------------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def compute_ratios(run: Run, plan: Plan) -> list[Result]:
    """Each comparison with its value, target (if any) and whether it was met."""
    out: list[Result] = []
    anchor = 64 if 64 in plan.clients else max(plan.clients)
    on, off, py = run.find(ON, "http", anchor), run.find(OFF, "http", anchor), run.find(PYTHON, "http", anchor)
    if on and py:
        tput = ratio(on["throughput_rps"], py["throughput_rps"])
        p99_ok = on["latency_ms"]["p99"] <= py["latency_ms"]["p99"]
        out.append(
            {
                "name": f"spikeserve (batching on) / Python peer, HTTP throughput at {anchor} clients",
                "value": tput,
                "target": f">= {TARGET_VS_PYTHON:.0f}x at equal or lower p99",
                "met": bool(tput is not None and tput >= TARGET_VS_PYTHON and p99_ok),
                "detail": (
                    f"{on['throughput_rps']:.0f} vs {py['throughput_rps']:.0f} req/s; p99 "
                    f"{on['latency_ms']['p99']:.2f} vs {py['latency_ms']['p99']:.2f} ms "
                    f"({'lower' if p99_ok else 'HIGHER'}, "
                    f"{ratio(py['latency_ms']['p99'], on['latency_ms']['p99']) or 0:.1f}x)"
                ),
            }
        )
    floor = run.floors.get("rust")
    for protocol in ("http", "grpc-unary"):
        one = run.find(ON, protocol, 1)
        if floor is None or one is None:
            continue
        value = ratio(one["latency_ms"]["p50"], floor["latency_ms"]["p50"])
        out.append(
            {
                "name": f"spikeserve (batching on) {protocol} at 1 client / Rust floor, p50 latency",
                "value": value,
                "target": f"<= {TARGET_VS_FLOOR:.2f}x",
                "met": bool(value is not None and value <= TARGET_VS_FLOOR),
                "detail": (
                    f"{one['latency_ms']['p50'] * 1e3:.0f} vs {floor['latency_ms']['p50'] * 1e3:.0f} us; "
                    "the server path includes the client, loopback TCP and the protocol, the floor is in-process"
                ),
            }
        )
        per_request = 1e3 / one["throughput_rps"]
        value = ratio(per_request, floor["per_request_ms"])
        out.append(
            {
                "name": f"spikeserve (on) {protocol} at 1 client / Rust floor, time per request (1 / throughput)",
                "value": value,
                "target": f"<= {TARGET_VS_FLOOR:.2f}x",
                "met": bool(value is not None and value <= TARGET_VS_FLOOR),
                "detail": f"{per_request * 1e3:.0f} vs {floor['per_request_ms'] * 1e3:.0f} us",
            }
        )
    if on and off:
        value = ratio(on["throughput_rps"], off["throughput_rps"])
        out.append(
            {
                "name": f"spikeserve batching on / off, HTTP throughput at {anchor} clients",
                "value": value,
                "target": None,
                "met": None,
                "detail": f"{on['throughput_rps']:.0f} vs {off['throughput_rps']:.0f} req/s; p99 "
                f"{on['latency_ms']['p99']:.2f} vs {off['latency_ms']['p99']:.2f} ms",
            }
        )
    if off and py:
        value = ratio(off["throughput_rps"], py["throughput_rps"])
        out.append(
            {
                "name": f"spikeserve batching off / Python peer, HTTP throughput at {anchor} clients",
                "value": value,
                "target": None,
                "met": None,
                "detail": f"{off['throughput_rps']:.0f} vs {py['throughput_rps']:.0f} req/s (both batch 1)",
            }
        )
    pyfloor = run.floors.get("python")
    if floor and pyfloor:
        value = ratio(pyfloor["per_request_ms"], floor["per_request_ms"])
        out.append(
            {
                "name": "Python floor / Rust floor, time per request",
                "value": value,
                "target": None,
                "met": None,
                "detail": f"{pyfloor['per_request_ms'] * 1e3:.0f} vs {floor['per_request_ms'] * 1e3:.0f} us",
            }
        )
    py1 = run.find(PYTHON, "http", 1)
    if pyfloor and py1:
        value = ratio(py1["latency_ms"]["p50"], pyfloor["latency_ms"]["p50"])
        out.append(
            {
                "name": "Python peer HTTP at 1 client / Python floor, p50 latency",
                "value": value,
                "target": None,
                "met": None,
                "detail": f"{py1['latency_ms']['p50'] * 1e3:.0f} vs {pyfloor['latency_ms']['p50'] * 1e3:.0f} us",
            }
        )
    return out


# --- the report ---------------------------------------------------------------------------------------


def machine(device: str) -> Result:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True)
    info: Result = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else ""),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "device": device,
        "load_average_1m_at_end": os.getloadavg()[0],
    }
    if device.startswith("cuda") and shutil.which("nvidia-smi"):
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"], capture_output=True, text=True
        )
        info["gpu"] = smi.stdout.strip()
    return info


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def errors_text(r: Result) -> str:
    return "none" if not r["errors"] else ", ".join(f"{k}: {v}" for k, v in r["errors"].items())


def result_row(label: str, r: Result) -> str:
    lat, ttfp = r["latency_ms"], r.get("ttfp_ms")
    return (
        f"| {label} | {r['throughput_rps']:.0f} | {fmt(lat['p50'])} | {fmt(lat['p90'])} | {fmt(lat['p99'])} | "
        f"{fmt(ttfp['p50']) if ttfp else '-'} | {fmt(ttfp['p99']) if ttfp else '-'} | "
        f"{r['mean_timesteps']:.2f} | {r['ok']}/{r['requests']} | {errors_text(r)} |"
    )


HEADER = (
    "| {what} | req/s | p50 ms | p90 ms | p99 ms | ttfp p50 ms | ttfp p99 ms | mean timesteps | ok | errors |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def markdown(
    run: Run, ratios: list[Result], info: Result, args: argparse.Namespace, plan: Plan, plots: dict[str, Path]
) -> str:
    lines: list[str] = []
    add = lines.append
    add(f"# spikeserve against the alternatives: `{args.model}`, one run{' (quick)' if args.quick else ''}")
    add("")
    add(
        f"Machine: {info['cpu']}, {info['cores']} cores"
        + (f", GPU {info['gpu']}" if info.get("gpu") else "")
        + f"; spikeserve device `{info['device']}`; {info['date']}; commit {info['commit']}; "
        f"Linux {info['kernel']}, Python {info['python']}; load average (1 min) "
        f"{info['load_average_1m_at_start']:.2f} at the start, {info['load_average_1m_at_end']:.2f} at the end. "
        "The load generator (`spikeserve-tools bench`, one "
        "process, tokio) runs on the same cores as the server under test."
    )
    add("")
    inputs = args.inputs.relative_to(REPO) if args.inputs.is_relative_to(REPO) else args.inputs
    threshold = args.threshold if args.threshold is not None else "the model's default"
    add(
        f"Same model (`{args.model}`), same inputs (`{inputs}`, cycled), same cutoff (threshold {threshold}) for "
        f"every row. Closed loops: {plan.requests} requests per point ({plan.requests_1_client} at 1 client), "
        f"{plan.warmup} warm-up requests first. Open loops: {plan.open_requests} requests at fixed intervals, "
        "latency counted from the planned send time."
    )
    add("")
    if args.peer_as_is:
        add("The Python peer ran as is: its connections keep Nagle's algorithm (40 ms per request more).")
    else:
        add(
            "The Python peer ran unchanged but through a bootstrap that sets TCP_NODELAY on its connections "
            "(`NODELAY_BOOTSTRAP` in `benchmarks/run_bench.py`): `peer_server.py` binds its listening socket "
            "with protocol 0, for which asyncio never sets TCP_NODELAY, and each answer would otherwise wait "
            "40 ms for the client's delayed ACK. spikeserve sets TCP_NODELAY itself."
        )
    add("")
    add("## Ratios (baselines from this run)")
    add("")
    add("| comparison | value | target | met | detail |")
    add("|---|---|---|---|---|")
    for r in ratios:
        met = "-" if r["met"] is None else ("**yes**" if r["met"] else "**no**")
        add(f"| {r['name']} | {fmt(r['value'], 2)}x | {r['target'] or '-'} | {met} | {r['detail']} |")
    add("")
    add("## Floors (one process, batch 1, no server)")
    add("")
    add("| floor | req/s | us per request | p50 ms | p99 ms | mean timesteps | requests |")
    add("|---|---|---|---|---|---|---|")
    floors = (("rust", "Rust (`spikeserve-tools bench --floor`, ort C API)"), ("python", "Python (`floor.py`)"))
    for key, label in floors:
        f = run.floors.get(key)
        if f:
            add(
                f"| {label} | {f['throughput_rps']:.0f} | {f['per_request_ms'] * 1e3:.1f} | "
                f"{fmt(f['latency_ms']['p50'])} | {fmt(f['latency_ms']['p99'])} | {f['mean_timesteps']:.2f} | "
                f"{f['requests']} |"
            )
    add("")
    add("## HTTP (JSON), closed loop: every server")
    add("")
    add(HEADER.format(what="server, clients"))
    for server in (PYTHON, OFF, ON):
        for clients in plan.clients:
            r = run.find(server, "http", clients)
            if r:
                add(result_row(f"{SERVER_LABELS[server]}, {clients}", r))
    for protocol in PROTOCOLS[1:]:
        add("")
        add(f"## {protocol}, closed loop: spikeserve (batching on)")
        add("")
        add(HEADER.format(what="clients"))
        for clients in plan.other_protocol_clients:
            r = run.find(ON, protocol, clients)
            if r:
                add(result_row(str(clients), r))
    add("")
    add("## HTTP, open loop (fixed arrival rate)")
    add("")
    add(HEADER.format(what="server, rate"))
    for r in run.open:
        add(result_row(f"{SERVER_LABELS[r['server']]}, {r['rate']:.0f}/s ({r['rate_basis']})", r))
    add("")
    if plots:
        add("## Plots")
        add("")
        for title, path in plots.items():
            add(f"![{title}]({path.name})")
            add("")
    add("## Commands")
    add("")
    add("```sh")
    add(" ".join(sys_argv_shown()))
    add("# servers (each on free loopback ports, one at a time):")
    for cmd in sorted({" ".join(c) for c in args.server_commands}):
        add(cmd)
    add("# floors and the load generator (one line per point; OUT.json is a temporary file):")
    for f in run.floors.values():
        add(f["command"])
    for r in [*run.closed, *run.open]:
        add(r["command"].replace(str(REPO) + "/", ""))
    add("```")
    add("")
    return "\n".join(lines)


def sys_argv_shown() -> list[str]:
    return [".venv/bin/python", "benchmarks/run_bench.py", *sys.argv[1:]]


def plot(run: Run, plan: Plan, out: Path, name: str) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: dict[str, Path] = {}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for server in (ON, OFF, PYTHON):
        points = [(c, run.find(server, "http", c)) for c in plan.clients]
        xs = [c for c, r in points if r]
        ys = [r["throughput_rps"] for _, r in points if r]
        ax.plot(xs, ys, marker="o", label=SERVER_LABELS[server])
    floor = run.floors.get("rust")
    if floor:
        ax.axhline(floor["throughput_rps"], color="grey", linestyle="--", linewidth=1, label="Rust floor (1 process)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(plan.clients, [str(c) for c in plan.clients])
    ax.set_yscale("log")
    ax.set_xlabel("concurrent clients (closed loop, HTTP)")
    ax.set_ylabel("requests per second")
    ax.set_title(f"{run.closed[0]['model']}: throughput against concurrency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / f"{name}-throughput.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    paths["throughput against concurrency"] = path

    anchor = 64 if 64 in plan.clients else max(plan.clients)
    bars: list[tuple[str, Result]] = []
    for server, short in ((PYTHON, "Python peer\nHTTP"), (OFF, "spikeserve off\nHTTP"), (ON, "spikeserve on\nHTTP")):
        r = run.find(server, "http", anchor)
        if r:
            bars.append((short, r))
    for protocol in PROTOCOLS[1:]:
        r = run.find(ON, protocol, anchor)
        if r:
            bars.append((f"spikeserve on\n{protocol}", r))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    xs = list(range(len(bars)))
    width = 0.38
    p50 = [r["latency_ms"]["p50"] for _, r in bars]
    p99 = [r["latency_ms"]["p99"] for _, r in bars]
    ax.bar([x - width / 2 for x in xs], p50, width, label="p50")
    ax.bar([x + width / 2 for x in xs], p99, width, label="p99")
    for x, a, b in zip(xs, p50, p99, strict=True):
        ax.text(x - width / 2, a, f"{a:.2f}", ha="center", va="bottom", fontsize=7)
        ax.text(x + width / 2, b, f"{b:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(xs, [label for label, _ in bars], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("latency, ms (log)")
    ax.set_title(f"latency at {anchor} concurrent clients (closed loop)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = out / f"{name}-latency.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    paths[f"latency at {anchor} clients"] = path
    return paths


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="digits")
    parser.add_argument("--model-dir", type=Path, default=None, help="default: models/<model>")
    parser.add_argument("--inputs", type=Path, default=None, help="default: <model-dir>/heldout.json")
    parser.add_argument("--threshold", type=float, default=None, help="default: the model's default_threshold")
    parser.add_argument(
        "--bin", type=Path, default=Path(os.environ.get("SPIKESERVE_BIN", REPO / "target/release/spikeserve"))
    )
    parser.add_argument("--ort-library", default=default_ort_library(), help="default: ORT_DYLIB_PATH, else .venv's")
    parser.add_argument("--python", default=sys.executable, help="the interpreter for the Python peer and floor")
    parser.add_argument("--device", default="cpu", help="passed to spikeserve serve (cpu, cuda:0, ...)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="directory for the results")
    parser.add_argument("--name", default=None, help="file stem of the results (default: bench, bench-quick)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 360 requests, 1 and 8 clients")
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        help="requests per closed-loop point (default 2880: 8 passes over digits' 360)",
    )
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--peer-as-is",
        action="store_true",
        help="start peer_server.py without the TCP_NODELAY bootstrap (its connections then keep Nagle: +40 ms)",
    )
    args = parser.parse_args(argv)
    args.bin = args.bin.resolve()
    args.tools_bin = spikeserve_process.tools_binary(args.bin)
    args.model_dir = (args.model_dir or REPO / "models" / args.model).resolve()
    args.inputs = (args.inputs or args.model_dir / "heldout.json").resolve()
    args.name = args.name or ("bench-quick" if args.quick else "bench")
    args.server_commands = []
    return args


def make_plan(args: argparse.Namespace) -> Plan:
    # Whole passes over the held-out set (digits: 360), so every row averages over the same inputs.
    if args.quick:
        n = args.requests or 360
        return Plan([1, 8], [1, 8], n, n, n, n, 20)
    n = args.requests or 2880
    return Plan([1, 8, 64, 256], [1, 64], n, max(n * 3 // 8, 100), n, n, 100)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ok, why = bench_available(args.tools_bin)
    if not ok:
        print(f"run_bench: {why}", file=sys.stderr)
        return 2
    if not (args.model_dir / "model.onnx").exists() or not args.inputs.exists():
        print(f"run_bench: {args.model_dir}/model.onnx or {args.inputs} is missing", file=sys.stderr)
        return 2
    plan = make_plan(args)
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]

    run = run_all(args, plan)
    ratios = compute_ratios(run, plan)
    info = machine(args.device)
    info["load_average_1m_at_start"] = load_at_start
    args.out.mkdir(parents=True, exist_ok=True)
    plots = {} if args.no_plots else plot(run, plan, args.out, args.name)
    document = {
        "machine": info,
        "model": args.model,
        "inputs": str(args.inputs),
        "threshold": args.threshold,
        "device": args.device,
        "quick": args.quick,
        "plan": plan.__dict__,
        "servers": {key: SERVER_LABELS[key] for key in (PYTHON, OFF, ON)},
        "python_peer_nodelay_bootstrap": not args.peer_as_is,
        "server_commands": [" ".join(c) for c in args.server_commands],
        "floors": run.floors,
        "closed": run.closed,
        "open": run.open,
        "ratios": ratios,
        "elapsed_s": time.perf_counter() - started,
    }
    (args.out / f"{args.name}.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(run, ratios, info, args, plan, plots))
    log(f"wrote {args.out / args.name}.json and .md in {document['elapsed_s']:.0f} s")
    for r in ratios:
        met = "" if r["met"] is None else (" [target met]" if r["met"] else " [target NOT met]")
        print(f"{r['name']}: {fmt(r['value'], 2)}x{met} ({r['detail']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
