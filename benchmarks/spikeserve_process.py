"""The release binary on free loopback ports: started with the models of a directory, its addresses
read from its "listening" log line, stopped afterwards. Shared by ``benchmarks/anytime_eval.py`` and
the client tests (``tests/clients``)."""

from __future__ import annotations

import glob
import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class ServerStartError(RuntimeError):
    """The server could not be started, or did not start listening (the message has its log)."""


@dataclass
class Server:
    """A running server: its addresses (host:port), its log lines so far and its process id (that of
    the launcher, which execs the binary)."""

    http_addr: str
    grpc_addr: str
    log: list[str]
    pid: int = 0


def release_binary(configured: str | None = None) -> Path:
    """``configured``, else $SPIKESERVE_BIN, else target/release/spikeserve (relative to the repository)."""
    path = Path(configured or os.environ.get("SPIKESERVE_BIN") or "target/release/spikeserve")
    if path.is_absolute() or path.exists():
        return path.resolve()
    return REPO / path


def tools_binary(server: Path) -> Path:
    """The load tools (``spikeserve-tools``: bench, soak, infer): $SPIKESERVE_TOOLS_BIN, else the file
    beside the server binary (``cargo build --release --workspace`` puts both in target/release)."""
    configured = os.environ.get("SPIKESERVE_TOOLS_BIN")
    if configured:
        path = Path(configured)
        return path.resolve() if path.is_absolute() or path.exists() else REPO / path
    return Path(server).with_name("spikeserve-tools")


def ort_library() -> str:
    """$ORT_DYLIB_PATH, else the onnxruntime library of the repository's .venv."""
    configured = os.environ.get("ORT_DYLIB_PATH")
    if configured:
        return configured
    found = sorted(glob.glob(str(REPO / ".venv/lib/python3.*/site-packages/onnxruntime/capi/libonnxruntime.so.1.*")))
    if not found:
        raise ServerStartError("set ORT_DYLIB_PATH to ONNX Runtime's shared library (none in .venv)")
    return found[-1]


def _listening(line: str) -> tuple[str, str] | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    fields = record.get("fields", {}) if isinstance(record, dict) else {}
    if not isinstance(fields, dict) or fields.get("message") != "listening":
        return None
    return str(fields["http_addr"]), str(fields["grpc_addr"])


@contextmanager
def started(
    binary: Path,
    models_dir: Path,
    extra: Sequence[str] = (),
    log_filter: str = "info",
    launcher: Sequence[str] = (),
) -> Iterator[Server]:
    """Runs ``binary serve`` on ``models_dir`` (with ``extra`` flags); yields the server once it listens;
    stops it after. ``log_filter`` is its ``RUST_LOG`` (the "listening" line is an info line);
    ``launcher`` goes before the binary (``taskset -c 0``, say)."""
    if not binary.exists():
        raise ServerStartError(f"{binary} is missing; build it with `cargo build --release --locked`")
    env = dict(os.environ, ORT_DYLIB_PATH=ort_library(), RUST_LOG=log_filter)
    command = [*launcher, str(binary), "--log-format", "json", "serve", "--models", str(models_dir)]
    command += ["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", *extra]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    log: list[str] = []
    lines: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line.rstrip("\n"))
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        addresses = None
        while addresses is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerStartError("the server did not start listening; its log:\n" + "\n".join(log))
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise ServerStartError(f"the server exited ({process.wait()}); its log:\n" + "\n".join(log))
            addresses = _listening(line)
        yield Server(addresses[0], addresses[1], log, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=5)
