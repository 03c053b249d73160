"""The real release binary, started on free loopback ports with the shipped models, for the client
tests (`conftest.py` makes it the module-scoped `server` fixture)."""

import glob
import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
START_TIMEOUT_S = 60.0


def _binary() -> Path:
    configured = os.environ.get("SPIKESERVE_BIN")
    if configured is None:
        return ROOT / "target" / "release" / "spikeserve"
    path = Path(configured)
    if path.is_absolute() or path.exists():
        return path.resolve()
    return ROOT / path


def _ort_library() -> str:
    configured = os.environ.get("ORT_DYLIB_PATH")
    if configured:
        return configured
    found = sorted(glob.glob(str(ROOT / ".venv/lib/python3.*/site-packages/onnxruntime/capi/libonnxruntime.so.1.*")))
    if not found:
        pytest.fail("ORT_DYLIB_PATH is not set and no onnxruntime library is in .venv")
    return found[-1]


class Server:
    """A running server: its addresses (host:port) and its log lines so far."""

    def __init__(self, http_addr: str, grpc_addr: str, log: list[str]) -> None:
        self.http_addr = http_addr
        self.grpc_addr = grpc_addr
        self.log = log


def _listening(line: str) -> tuple[str, str] | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    fields = record.get("fields", {}) if isinstance(record, dict) else {}
    if fields.get("message") != "listening":
        return None
    return fields["http_addr"], fields["grpc_addr"]


def run_server() -> Iterator[Server]:
    """Starts the server, yields it once listening, stops it afterwards (a generator for a fixture)."""
    binary = _binary()
    if not binary.exists():
        pytest.fail(f"{binary} is missing; build it with `cargo build --release --locked`")
    env = dict(os.environ, ORT_DYLIB_PATH=_ort_library(), RUST_LOG="info")
    command = [
        str(binary),
        "serve",
        "--models",
        str(MODELS),
        "--http-addr",
        "127.0.0.1:0",
        "--grpc-addr",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]
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
                pytest.fail("the server did not start listening; its log:\n" + "\n".join(log))
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"the server exited ({process.wait()}); its log:\n" + "\n".join(log))
            addresses = _listening(line)
        yield Server(addresses[0], addresses[1], log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=5)
