"""The NVIDIA Triton peer: its own environment, its model repository, and a running ``tritonserver``.

Triton serves spikeserve's ONNX step graph (``models/<name>/model.onnx``, or an ensemble's members)
through its Python backend (``backend/model.py``, stepping the graph with onnxruntime, one intra-op
thread, one model instance), in one of two ways (``PEERS``): whole requests through the dynamic
batcher, or iterative sequences (a request leaves after its exit timestep and new ones join the
running batch). The inputs and outputs are named as spikeserve's KServe v2 door names them, so the
same requests go to both servers.

    python3 benchmarks/triton-peer/peer.py install            # .venv-triton (what `make triton-peer` runs)
    python3 benchmarks/triton-peer/peer.py repo --out DIR --peer iterative
    python3 benchmarks/triton-peer/peer.py serve --peer dynamic --models digits   # until Ctrl-C

The tritonserver binary comes inside the ``nvidia-pytriton`` wheel (requirements.txt); it needs the
wheel's bundled libraries on ``LD_LIBRARY_PATH`` even without a GPU. Its Python backend runs the
model in a stub process that embeds the system ``python3`` (3.11 here), whose imports (numpy < 2,
onnxruntime) come from ``.venv-triton/stub-site`` (requirements-stub.txt) through ``PYTHONPATH``.
Only the standard library is used here, so any python3 runs this file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VENV = REPO / ".venv-triton"
STUB_SITE = VENV / "stub-site"
BACKENDS = VENV / "triton-backends"
STAMP = VENV / ".installed"
PEERS = ("dynamic", "iterative")
INSTALL_HINT = "run `make triton-peer`"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
# The server's sequences never end by a client's sequence_end (each request is one sequence, released
# by the model at its exit): an idle one is dropped after this long.
SEQUENCE_IDLE_US = 5_000_000


class PeerError(RuntimeError):
    """The peer cannot be installed or started; the message is one line saying why and what to do."""


@dataclass(frozen=True)
class Batcher:
    """How Triton batches: ``max_batch_size`` and ``max_queue_delay_microseconds``."""

    max_batch_size: int = 256
    queue_delay_us: int = 0

    def label(self) -> str:
        return f"max_batch_size {self.max_batch_size}, max_queue_delay_microseconds {self.queue_delay_us}"


@dataclass
class Triton:
    """A running tritonserver: its addresses (``http://host:port``), process and log file."""

    http: str
    grpc: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


# --- the environment -----------------------------------------------------------------------------------


def _site_packages(venv: Path = VENV) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if not found:
        raise PeerError(f"triton peer: {venv} has no site-packages; {INSTALL_HINT}")
    return found[-1]


def tritonserver_binary(venv: Path = VENV) -> Path:
    return _site_packages(venv) / "pytriton" / "tritonserver" / "bin" / "tritonserver"


def stub_python_version() -> str:
    """The version of the system python3 the Python backend's stub embeds (``3.11``)."""
    done = subprocess.run(
        ["python3", "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise PeerError("triton peer: no system python3 for the Python backend's stub")
    return done.stdout.strip()


def _run(command: Sequence[str]) -> None:
    print("+ " + " ".join(command), file=sys.stderr, flush=True)
    done = subprocess.run(list(command), check=False)
    if done.returncode != 0:
        raise PeerError(f"triton peer: `{' '.join(command)}` failed ({done.returncode})")


def install(venv: Path = VENV) -> None:
    """Creates ``venv`` from requirements.txt, the stub's imports in ``stub-site`` (pip --target) and a
    backend directory whose ``python/`` holds the Python backend with the stub for the system python3."""
    if not (venv / "bin" / "python").exists():
        _run([sys.executable if sys.prefix == sys.base_prefix else "python3", "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-cache-dir"]
    _run([*pip, "-r", str(HERE / "requirements.txt")])
    stub_site = venv / "stub-site"
    shutil.rmtree(stub_site, ignore_errors=True)
    _run([*pip, "--target", str(stub_site), "-r", str(HERE / "requirements-stub.txt")])
    tritonserver = _site_packages(venv) / "pytriton" / "tritonserver"
    version = stub_python_version()
    stub = tritonserver / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise PeerError(f"triton peer: the pytriton wheel has no Python backend stub for python {version}")
    python_backend = venv / "triton-backends" / "python"
    shutil.rmtree(python_backend, ignore_errors=True)
    python_backend.mkdir(parents=True)
    for source in (tritonserver / "backends" / "python").iterdir():
        if source.is_file():
            shutil.copy2(source, python_backend / source.name)
    shutil.copy2(stub, python_backend / "triton_python_backend_stub")
    (venv / ".installed").write_text(f"stub python {version}\n")
    print(f"triton peer installed in {venv} (tritonserver {tritonserver / 'bin' / 'tritonserver'})", file=sys.stderr)


def check_installed(venv: Path = VENV) -> None:
    """Raises a one-line ``PeerError`` when the peer is not installed."""
    if not (venv / ".installed").exists() or not tritonserver_binary(venv).exists():
        raise PeerError(f"triton peer: tritonserver not installed; {INSTALL_HINT}")


def installed(venv: Path = VENV) -> bool:
    try:
        check_installed(venv)
    except PeerError:
        return False
    return True


# --- the model repository ------------------------------------------------------------------------------


def member_graphs(model_dir: Path) -> tuple[list[Path], float | None]:
    """The step graphs a model directory serves: its ``model.onnx``, or an ensemble's members (read
    from ``ensemble.json``, with the ensemble's own default threshold, which overrides the members')."""
    single = model_dir / "model.onnx"
    ensemble = model_dir / "ensemble.json"
    if ensemble.is_file():
        description = json.loads(ensemble.read_text())
        members = [model_dir / member for member in description["members"]]
        missing = [str(m) for m in members if not m.is_file()]
        if missing:
            raise PeerError(f"triton peer: {ensemble} names members that are not there: {', '.join(missing)}")
        threshold = description.get("default_threshold")
        return members, None if threshold is None else float(threshold)
    if single.is_file():
        return [single], None
    raise PeerError(f"triton peer: {model_dir} has neither model.onnx nor ensemble.json")


def _model_meta(graph: Path) -> dict[str, object]:
    """What the configuration needs from the step graph: the frame shape, input kind and classes.
    Read by onnxruntime in a child (the standard library cannot read ONNX); any python with it will do."""
    script = (
        "import json, sys, onnxruntime as o\n"
        "s = o.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
        "m = s.get_modelmeta().custom_metadata_map\n"
        "x = {i.name: i.shape for i in s.get_inputs()}['x']\n"
        "print(json.dumps({'frame_shape': x[1:], 'input_kind': m['spikeserve.input_kind'],"
        " 'classes': len(json.loads(m['spikeserve.labels'])), 'events': 'spikeserve.events' in m}))\n"
    )
    for python in (REPO / ".venv" / "bin" / "python", VENV / "bin" / "python"):
        if not python.exists():
            continue
        env = dict(os.environ)
        if python.parent.parent == VENV:
            env["PYTHONPATH"] = str(STUB_SITE)
        done = subprocess.run(
            [str(python), "-c", script, str(graph)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if done.returncode == 0:
            meta: dict[str, object] = json.loads(done.stdout)
            return meta
    raise PeerError(f"triton peer: cannot read {graph} (no python with onnxruntime)")


def model_config(
    name: str, meta: dict[str, object], peer: str, batcher: Batcher, default_threshold: float | None = None
) -> str:
    """The ``config.pbtxt`` of one model for one peer; ``default_threshold`` overrides the graphs'
    (an ensemble's own)."""
    if peer not in PEERS:
        raise PeerError(f"triton peer: unknown peer {peer!r} (one of {', '.join(PEERS)})")
    frame = [int(d) for d in meta["frame_shape"]]  # type: ignore[attr-defined]
    classes = int(meta["classes"])  # type: ignore[call-overload]
    if meta["events"]:
        # One request's events: [1, N, 4] (x, y, t_us, p); requests of different N batch together.
        inputs = ['{ name: "events" data_type: TYPE_INT64 dims: [ -1, 4 ] allow_ragged_batch: true }']
    elif meta["input_kind"] == "static":
        inputs = [f'{{ name: "x" data_type: TYPE_FP32 dims: [ {", ".join(map(str, frame))} ] }}']
    else:
        dims = ", ".join(map(str, [-1, *frame]))
        inputs = [f'{{ name: "x" data_type: TYPE_FP32 dims: [ {dims} ] allow_ragged_batch: true }}']
    outputs = [
        f'{{ name: "probabilities" data_type: TYPE_FP32 dims: [ {classes} ] }}',
        '{ name: "class_index" data_type: TYPE_INT64 dims: [ 1 ] }',
        '{ name: "label" data_type: TYPE_STRING dims: [ 1 ] }',
        '{ name: "confidence" data_type: TYPE_FP32 dims: [ 1 ] }',
        '{ name: "timesteps" data_type: TYPE_INT64 dims: [ 1 ] }',
        '{ name: "exit_reason" data_type: TYPE_STRING dims: [ 1 ] }',
    ]
    if peer == "dynamic":
        scheduling = f"dynamic_batching {{ max_queue_delay_microseconds: {batcher.queue_delay_us} }}"
    else:
        scheduling = (
            "sequence_batching {\n  iterative_sequence: true\n"
            f"  max_sequence_idle_microseconds: {SEQUENCE_IDLE_US}\n"
            f"  oldest {{ max_candidate_sequences: {max(4 * batcher.max_batch_size, 1024)}"
            f" max_queue_delay_microseconds: {batcher.queue_delay_us} }}\n}}"
        )
    return "\n".join(
        [
            f'name: "{name}"',
            'backend: "python"',
            f"max_batch_size: {batcher.max_batch_size}",
            "input [\n  " + ",\n  ".join(inputs) + "\n]",
            "output [\n  " + ",\n  ".join(outputs) + "\n]",
            "instance_group [ { count: 1 kind: KIND_CPU } ]",
            f'parameters: {{ key: "peer" value: {{ string_value: "{peer}" }} }}',
            f'parameters: {{ key: "default_threshold" value: {{ string_value: "{default_threshold!r}" }} }}'
            if default_threshold is not None
            else "",
            scheduling,
            "",
        ]
    )


def write_repository(
    out: Path, models: Sequence[str], peer: str, batcher: Batcher = Batcher(), models_dir: Path = REPO / "models"
) -> Path:
    """A Triton model repository in ``out``: one model per name of ``models`` (a directory of
    ``models_dir``), each the Python backend model stepping that directory's ``model.onnx``, or its
    ensemble's members in lockstep."""
    out.mkdir(parents=True, exist_ok=True)
    for name in models:
        source = models_dir / name
        members, threshold = member_graphs(source)
        meta = _model_meta(members[0])
        target = out / name
        shutil.rmtree(target, ignore_errors=True)
        version = target / "1"
        version.mkdir(parents=True)
        shutil.copy2(HERE / "backend" / "model.py", version / "model.py")
        shutil.copy2(REPO / "benchmarks" / "python" / "steploop.py", version / "steploop.py")
        # member-0.onnx, member-1.onnx, ...: one for a single model, K for an ensemble.
        for k, member in enumerate(members):
            shutil.copy2(member, version / f"member-{k}.onnx")
        (target / "config.pbtxt").write_text(model_config(name, meta, peer, batcher, threshold))
    return out


# --- the server ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(venv: Path = VENV) -> dict[str, str]:
    """tritonserver's environment: its bundled libraries, the stub's imports, no proxy for loopback."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in {"http_proxy", "https_proxy", "all_proxy"}}
    libs = _site_packages(venv) / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
    env["PYTHONPATH"] = str(venv / "stub-site")
    env["OMP_NUM_THREADS"] = "1"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def _ready(http: str) -> bool:
    try:
        with urllib.request.urlopen(f"{http}/v2/health/ready", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(server: Triton) -> None:
    """SIGTERM (Triton drains and exits), then SIGKILL to the process group if it lingers."""
    process = server.process
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def started(
    repository: Path, launcher: Sequence[str] = (), venv: Path = VENV, log_dir: Path | None = None
) -> Iterator[Triton]:
    """tritonserver on ``repository`` on free loopback ports, yielded once every model is ready, stopped
    after. ``launcher`` goes before the binary (``taskset -c 0``, say). Raises a one-line ``PeerError``
    when it is not installed or does not come up (with the end of its log)."""
    check_installed(venv)
    http_port, grpc_port = free_port(), free_port()
    command = [
        *launcher,
        str(tritonserver_binary(venv)),
        "--model-repository",
        str(repository),
        "--backend-directory",
        str(venv / "triton-backends"),
        "--http-address",
        "127.0.0.1",
        "--http-port",
        str(http_port),
        "--grpc-address",
        "127.0.0.1",
        "--grpc-port",
        str(grpc_port),
        "--allow-metrics",
        "false",
        "--strict-readiness",
        "true",
        "--exit-timeout-secs",
        "5",
        "--log-verbose",
        "0",
    ]
    with tempfile.TemporaryDirectory(prefix="triton-log-") as tmp:
        log_path = (log_dir or Path(tmp)) / "tritonserver.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=server_env(venv), start_new_session=True
            )
        server = Triton(f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{grpc_port}", process, log_path)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not _ready(server.http):
                if process.poll() is not None:
                    raise PeerError(
                        f"triton peer: tritonserver exited ({process.returncode}) before it was ready; "
                        f"its log ends:\n{_tail(log_path)}"
                    )
                if time.monotonic() > deadline:
                    raise PeerError(
                        f"triton peer: tritonserver not ready after {START_TIMEOUT_S:.0f} s:\n{_tail(log_path)}"
                    )
                time.sleep(0.2)
            yield server
        finally:
            stop(server)


def process_tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (Triton's Python backend steps the
    model in stub processes, its children), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    total, frontier, seen = 0.0, [pid], set()
    while frontier:
        current = frontier.pop()
        if current in seen or current not in stats:
            continue
        seen.add(current)
        total += stats[current][1]
        frontier.extend(child for child, (parent, _) in stats.items() if parent == current)
    return total


# --- the command line ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("install", help="create .venv-triton (tritonserver, its Python backend's imports)")
    for name in ("repo", "serve"):
        sub = commands.add_parser(name, help="write a model repository" if name == "repo" else "run tritonserver")
        sub.add_argument("--peer", choices=PEERS, default="iterative")
        sub.add_argument("--models", nargs="+", default=["digits", "event-digits"])
        sub.add_argument("--max-batch-size", type=int, default=Batcher.max_batch_size)
        sub.add_argument("--queue-delay-us", type=int, default=Batcher.queue_delay_us)
        if name == "repo":
            sub.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            install()
            return 0
        batcher = Batcher(args.max_batch_size, args.queue_delay_us)
        if args.command == "repo":
            write_repository(args.out, args.models, args.peer, batcher)
            print(args.out)
            return 0
        check_installed()
        with tempfile.TemporaryDirectory(prefix="triton-repo-") as tmp:
            repository = write_repository(Path(tmp), args.models, args.peer, batcher)
            with started(repository) as server:
                print(
                    f"triton ({args.peer} peer, {batcher.label()}): HTTP {server.http}, gRPC {server.grpc}", flush=True
                )
                stopped = threading.Event()
                signal.signal(signal.SIGTERM, lambda *_: stopped.set())
                try:
                    while not stopped.is_set() and server.process.poll() is None:
                        stopped.wait(0.5)
                except KeyboardInterrupt:
                    pass
        return 0
    except PeerError as error:
        print(error, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
