"""The measuring part of ``scripts/gpu-run.sh`` (issue 32): what runs once the bundle is unpacked.

In order, each step bounded by what is left of the run's time bound:

1. two servers from the bundle: one on the device (the shipped models and the VGGSNN stand-in,
   256 batch slots) and one on the CPU (the shipped models), both through the bundle's ONNX Runtime
   library, so that the two sides differ only in the execution provider;
2. parity (``device_parity.py``): every held-out sample of every shipped model on both, same class
   and exit timestep, probabilities within 1e-4; the CPU server is stopped after it;
3. the closed-loop server benchmark (``spikeserve-tools bench``, gRPC unary) against the device
   server at 1, 64 and 256 clients, for ``digits`` and the stand-in; the server is stopped after it;
4. the step by batch size (``spikeserve-tools step-bench``: states resident, host-bound, plain loop)
   for ``digits``, ``event-digits`` and the stand-in, alone on the machine.

Every result is a file under ``--results``; ``summary.md`` gathers them with the issue's targets.
Only the standard library: the GPU machine's python3 has no project packages and reaches no registry.
``--dry-run`` runs the same sequence with fewer samples, steps and requests (the tests, on the CPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import device_parity  # noqa: E402
import spikeserve_process  # noqa: E402

REPO = HERE.parent
CLIENTS = (1, 64, 256)
STEPS = ("parity", "server", "step")


@dataclass(frozen=True)
class Plan:
    """How much of each step: the full run on a GPU, or the dry run's short version."""

    parity_limit: int | None
    # spikeserve-tools step-bench: batch sizes, then timed steps per model ("standin" for the stand-in).
    step_batches: str
    step_steps: dict[str, int]
    step_rounds: int
    # Closed-loop requests per model and number of clients.
    requests: dict[str, dict[int, int]]
    server_warmup: str
    server_start_timeout_s: float


FULL = Plan(
    parity_limit=None,
    step_batches="1,2,4,8,16,32,64,128,256",
    step_steps={"digits": 200, "event-digits": 200, "standin": 100},
    step_rounds=5,
    requests={"digits": {1: 3000, 64: 20000, 256: 40000}, "standin": {1: 300, 64: 3000, 256: 6000}},
    # Every batch size the benchmark reaches is stepped once at load: no first-shape costs measured.
    server_warmup="powers-of-two",
    server_start_timeout_s=180.0,
)
DRY = Plan(
    parity_limit=3,
    step_batches="1,64",
    step_steps={"digits": 6, "event-digits": 6, "standin": 4},
    step_rounds=2,
    requests={"digits": {1: 40, 64: 128, 256: 512}, "standin": {1: 4, 64: 64, 256: 256}},
    server_warmup="1,8",
    server_start_timeout_s=60.0,
)


class OutOfTime(RuntimeError):
    """The run's time bound ends before a step could finish."""


class StepFailed(RuntimeError):
    """A step could not run (its one-line cause)."""


@dataclass
class Run:
    args: argparse.Namespace
    plan: Plan
    deadline: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def results(self) -> Path:
        path: Path = self.args.results
        return path

    def remaining(self, what: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 1:
            raise OutOfTime(f"the time bound ran out before {what}")
        return left

    def tools(self, *arguments: str, what: str, stdout: Path | None = None) -> None:
        """Runs spikeserve-tools, its output to ``stdout`` (a file) if given; stops on failure."""
        command = [str(self.args.bin_dir / "spikeserve-tools"), *arguments]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=self.remaining(what), check=False)
        except subprocess.TimeoutExpired as error:
            raise OutOfTime(f"the time bound ran out during {what}") from error
        if stdout is not None:
            stdout.write_text(done.stdout)
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()] or ["(no output)"]
            (self.results / f"failed-{what.replace(' ', '-')}.log").write_text(done.stderr)
            raise StepFailed(f"{what} failed: {lines[-1]}")


@contextmanager
def server(run: Run, name: str, models: Path, device: str, max_batch: int) -> Iterator[spikeserve_process.Server]:
    """A server from the bundle; its log is kept in the results whatever happens."""
    extra = ["--device", device, "--max-batch", str(max_batch), "--warmup", run.plan.server_warmup]
    extra += ["--reload-interval-secs", "0"]
    spikeserve_process.START_TIMEOUT_S = min(run.plan.server_start_timeout_s, run.remaining(f"starting {name}"))
    log: list[str] = []
    try:
        with spikeserve_process.started(run.args.bin_dir / "spikeserve", models, extra, log_filter="info") as s:
            log = s.log
            yield s
    except spikeserve_process.ServerStartError as error:
        lines = str(error).splitlines()
        (run.results / f"server-{name}.log").write_text(str(error))
        cause = next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else "")
        raise StepFailed(f"the {name} server ({device}) did not start: {cause.strip()[:400]}") from error
    finally:
        if log:
            (run.results / f"server-{name}.log").write_text("\n".join(log) + "\n")


def serving_dir(standin: Path) -> Path:
    """The device server's models: every shipped model and the stand-in, as links."""
    root = Path(tempfile.mkdtemp(prefix="gpu-run-models-"))
    for entry in sorted((REPO / "models").iterdir()):
        if entry.is_dir():
            (root / entry.name).symlink_to(entry)
    (root / standin.name).symlink_to(standin.resolve())
    return root


def parity_step(run: Run, device_http: str, cpu_http: str) -> dict[str, Any]:
    run.remaining("parity")
    results = device_parity.parity(
        f"http://{device_http}", f"http://{cpu_http}", REPO / "models", 1e-4, run.plan.parity_limit
    )
    rows = [
        {
            "model": r.model,
            "samples": r.samples,
            "largest_difference": r.largest_difference,
            "disagreements": r.disagreements,
        }
        for r in results
    ]
    report = {"device": run.args.device, "tolerance": 1e-4, "models": rows}
    (run.results / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def server_step(run: Run, grpc: str, standin: str) -> list[dict[str, Any]]:
    reports = []
    for model, key, inputs in (
        ("digits", "digits", REPO / "models/digits/heldout.json"),
        (standin, "standin", REPO / "models/event-digits/heldout.json"),
    ):
        for clients in CLIENTS:
            requests = run.plan.requests[key][clients]
            out = run.results / f"server-{model}-c{clients}.json"
            run.tools(
                "bench", "--protocol", "grpc-unary", "--grpc", f"http://{grpc}", "--model", model,
                "--inputs", str(inputs), "--clients", str(clients), "--requests", str(requests),
                "--warmup", str(max(20, 2 * clients)), "--json", str(out), "--no-progress",
                what=f"server bench {model} {clients} clients",
            )  # fmt: skip
            reports.append(json.loads(out.read_text()))
    return reports


def step_step(run: Run) -> dict[str, dict[str, Any]]:
    reports = {}
    for name, key, model_dir in (
        ("digits", "digits", REPO / "models/digits"),
        ("event-digits", "event-digits", REPO / "models/event-digits"),
        (run.args.standin.name, "standin", run.args.standin),
    ):
        steps = run.plan.step_steps[key]
        out = run.results / f"step-{name}.json"
        run.tools(
            "step-bench", "--device", run.args.device, "--ort-library", str(run.args.ort_library),
            "--model-dir", str(model_dir), "--batches", run.plan.step_batches, "--steps", str(steps),
            "--rounds", str(run.plan.step_rounds), "--json", str(out),
            what=f"step bench {name}", stdout=run.results / f"step-{name}.md",
        )  # fmt: skip
        reports[name] = json.loads(out.read_text())
    return reports


def row_at(report: dict[str, Any], batch: int) -> dict[str, Any] | None:
    return next((row for row in report.get("rows", []) if row["batch"] == batch), None)


def summary(
    run: Run,
    parity: dict[str, Any] | None,
    servers: list[dict[str, Any]],
    steps: dict[str, dict[str, Any]],
) -> str:
    """summary.md: the tables the issue asks for, with its targets checked where they apply."""
    dry = " (dry run: CPU, short)" if run.args.dry_run else ""
    lines = [f"# GPU run{dry}", "", f"Device `{run.args.device}`; time per step: "]
    lines[-1] += ", ".join(f"{k} {v:.1f} s" for k, v in run.timings.items()) + "."
    if parity is not None:
        failed = sum(len(m["disagreements"]) for m in parity["models"])
        lines += ["", f"## Parity against the CPU: {failed} disagreements", ""]
        lines += ["| model | samples | largest probability difference | disagreements |", "|---|---|---|---|"]
        lines += [
            f"| {m['model']} | {m['samples']} | {m['largest_difference']:.2e} | {len(m['disagreements'])} |"
            for m in parity["models"]
        ]
    if steps:
        lines += ["", "## Step by batch size (us per step)", ""]
        lines += [
            "| model | batch | resident | host-bound | plain loop | host-bound / resident "
            "| bytes per step (resident / host-bound) |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, report in steps.items():
            for row in report["rows"]:
                ratio = row["host_bound_us"] / row["resident_us"] if row["resident_us"] else float("nan")
                lines.append(
                    f"| {name} | {row['batch']} | {row['resident_us']:.1f} | {row['host_bound_us']:.1f} | "
                    f"{row['raw_loop_us']:.1f} | {ratio:.2f}x | {row['resident_bytes']} / {row['host_bound_bytes']} |"
                )
    targets: list[str] = []
    if servers:
        lines += ["", "## Closed-loop server benchmark (gRPC unary)", ""]
        lines += [
            "| model | clients | requests | errors | req/s | p50 ms | p99 ms | mean timesteps "
            "| against the plain loop at batch 64 |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for report in servers:
            model, clients = report["model"], report["clients"]
            key = model if model in steps else None
            against = ""
            row = row_at(steps[key], 64) if key else None
            if clients == 64 and row and report["mean_timesteps"] > 0:
                # The plain loop's requests per second at batch 64: rows per second over timesteps per request.
                loop_rps = 64 / (row["raw_loop_us"] * 1e-6) / report["mean_timesteps"]
                share = report["throughput_rps"] / loop_rps
                against = f"{share:.0%} of {loop_rps:.0f} req/s"
                verdict = "met" if share >= 0.7 else "missed"
                targets.append(f"Target, {model} at 64 clients: {share:.0%} of the plain loop (>= 70%: {verdict}).")
            errors = sum(report["errors"].values())
            lines.append(
                f"| {model} | {clients} | {report['requests']} | {errors} | {report['throughput_rps']:.0f} | "
                f"{report['latency_ms']['p50']:.3f} | {report['latency_ms']['p99']:.3f} | "
                f"{report['mean_timesteps']:.2f} | {against} |"
            )
    standin = run.args.standin.name
    if not run.args.dry_run and targets:
        lines += ["", *targets]
    if not run.args.dry_run and standin in steps and (row := row_at(steps[standin], 64)):
        ratio = row["host_bound_us"] / row["resident_us"]
        verdict = "met" if ratio >= 3 else "missed"
        target = f"Target, {standin} at batch 64: resident {ratio:.2f}x faster than host-bound (>= 3x: {verdict})."
        lines += ["", target]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", required=True, help="cuda:N, or cpu for the dry run")
    parser.add_argument("--ort-library", type=Path, required=True)
    parser.add_argument("--bin-dir", type=Path, required=True, help="the bundle's spikeserve and spikeserve-tools")
    parser.add_argument("--standin", type=Path, required=True, help="the VGGSNN stand-in's folder (model.onnx)")
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--deadline-s", type=float, required=True, help="seconds left of the run's time bound")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--only", default=",".join(STEPS), help="a comma list of " + ", ".join(STEPS))
    args = parser.parse_args()
    only = set(args.only.split(","))
    if not only <= set(STEPS):
        parser.error(f"--only takes {', '.join(STEPS)}")
    if (REPO / "models" / args.standin.name).exists():
        parser.error(f"the stand-in's name {args.standin.name} is a shipped model's")
    args.results.mkdir(parents=True, exist_ok=True)
    run = Run(args, DRY if args.dry_run else FULL, time.monotonic() + args.deadline_s)
    parity: dict[str, Any] | None = None
    servers: list[dict[str, Any]] = []
    steps: dict[str, dict[str, Any]] = {}
    models = serving_dir(args.standin)
    try:
        if only & {"parity", "server"}:
            with ExitStack() as stack:
                t = time.monotonic()
                device_server = stack.enter_context(server(run, "device", models, args.device, 256))
                if "parity" in only:
                    cpu_server = stack.enter_context(server(run, "cpu", REPO / "models", "cpu", 64))
                run.timings["servers up"] = time.monotonic() - t
                if "parity" in only:
                    t = time.monotonic()
                    parity = parity_step(run, device_server.http_addr, cpu_server.http_addr)
                    run.timings["parity"] = time.monotonic() - t
                if "server" in only:
                    t = time.monotonic()
                    servers = server_step(run, device_server.grpc_addr, args.standin.name)
                    run.timings["server bench"] = time.monotonic() - t
        if "step" in only:
            t = time.monotonic()
            steps = step_step(run)
            run.timings["step bench"] = time.monotonic() - t
    except (OutOfTime, StepFailed) as error:
        (args.results / "summary.md").write_text(summary(run, parity, servers, steps) + f"\nStopped: {error}\n")
        print(f"gpu-run.sh: {error}", file=sys.stderr)
        return 2
    finally:
        for link in models.iterdir():
            link.unlink()
        models.rmdir()
    text = summary(run, parity, servers, steps)
    (args.results / "summary.md").write_text(text)
    print(text)
    disagreements = sum(len(m["disagreements"]) for m in parity["models"]) if parity else 0
    if disagreements:
        print(f"gpu-run.sh: parity: {disagreements} disagreements (parity.json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
