"""A FastAPI + uvicorn + onnxruntime peer of spikeserve's ``POST /v1/models/{name}/infer``.

Benchmark fixture, not part of the product: what a Python user would write instead. It serves ONE
step model (a directory holding ``model.onnx``) with the same request and answer JSON as the Rust
server for ``static``, ``frames`` and ``events`` models, and steps each request on its own at batch 1
(no batching across requests) through one ``onnxruntime.InferenceSession``, in the thread pool so
that the event loop stays free.

    python benchmarks/python/peer_server.py --model models/digits --host 127.0.0.1 --port 0 --threads 1

prints ``{"listening": "HOST:PORT"}`` on stdout once it accepts connections.
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from steploop import Answer, RequestError, StepModel

MAX_BUDGET_MS = 3_600_000.0
REQUEST_ID = "x-request-id"


class InferRequest(BaseModel):
    """The Rust server's ``InferRequest`` (``src/api/schema.rs``); unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    input: list[Any] | None = None
    events: list[Any] | None = None
    shape: list[int] | None = None
    threshold: float | None = None
    min_timesteps: int | None = None
    max_timesteps: int | None = None
    latency_budget_ms: float | None = None
    max_variance: float | None = None  # ensembles only; checked, no effect on a single model
    return_confidences: bool = False


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def answer_request(model: StepModel, body: InferRequest, arrived: float) -> tuple[Answer, float]:
    """Runs in the thread pool: checks the request, decodes its input and steps it. Returns the
    answer and the instant the work started (the end of the queueing)."""
    started = time.perf_counter()
    policy = model.policy(body.threshold, body.min_timesteps, body.max_timesteps)
    if body.max_variance is not None and not (math.isfinite(body.max_variance) and body.max_variance >= 0.0):
        raise RequestError("invalid_field", f"max_variance: must be a non-negative number, found {body.max_variance}")
    deadline = None
    if body.latency_budget_ms is not None:
        budget = body.latency_budget_ms
        if not (math.isfinite(budget) and 0.0 < budget <= MAX_BUDGET_MS):
            raise RequestError(
                "invalid_field",
                f"latency_budget_ms: must be a positive number of milliseconds up to {MAX_BUDGET_MS}, found {budget}",
            )
        deadline = arrived + budget / 1e3
    if body.input is not None and body.events is not None:
        raise RequestError("invalid_field", 'give either "input" or "events", not both')
    if body.input is not None:
        frames = model.frames(body.input, body.shape)
    elif body.events is not None:
        frames = model.bin_events(body.events)
    else:
        raise RequestError("invalid_field", "missing field `input` (or `events`)")
    return model.run(frames, policy, deadline, body.return_confidences), started


def create_app(model: StepModel) -> FastAPI:
    spec = model.spec
    app = FastAPI(title=f"python peer: {spec.name}", docs_url=None, redoc_url=None, openapi_url=None)

    def check_name(name: str) -> None:
        if name != spec.name:
            raise RequestError("model_not_found", f'no model "{name}"; loaded: {spec.name}', 404)

    @app.exception_handler(RequestError)
    async def request_error(_: Request, err: RequestError) -> JSONResponse:
        return error_response(err.status, err.code, err.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        errors = err.errors()
        first = errors[0] if errors else {}
        where = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            problem = first.get("ctx", {}).get("error", "invalid JSON")
            at = f" at character {where[-1]}" if where else ""
            return error_response(400, "malformed_json", f"the body is not JSON: {problem}{at}")
        return error_response(400, "invalid_field", f"{'.'.join(where) or 'body'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if err.status_code == 404 else "http_error"
        return error_response(err.status_code, code, str(err.detail))

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "models": [spec.name], "refused": 0})

    @app.get("/v1/models")
    async def list_models() -> JSONResponse:
        return JSONResponse({"models": [spec.describe()], "refused": []})

    @app.get("/v1/models/{name}")
    async def get_model(name: str) -> JSONResponse:
        check_name(name)
        return JSONResponse(spec.describe())

    @app.post("/v1/models/{name}/infer")
    async def infer(name: str, body: InferRequest, request: Request) -> JSONResponse:
        arrived = time.perf_counter()
        request_id = request.headers.get(REQUEST_ID) or uuid.uuid4().hex
        check_name(name)
        answer, started = await run_in_threadpool(answer_request, model, body, arrived)
        done = time.perf_counter()
        out: dict[str, object] = {
            "model": spec.name,
            "request_id": request_id,
            "label": spec.labels[answer.class_index],
            "class_index": answer.class_index,
            "confidence": answer.confidence,
            "probabilities": answer.probabilities.tolist(),
            "timesteps": answer.timesteps,
            "max_timesteps": answer.max_timesteps,
            "exit_reason": answer.exit_reason,
        }
        if answer.synaptic_ops is not None:
            out["synaptic_ops"] = answer.synaptic_ops
        if answer.confidences is not None:
            out["confidences"] = answer.confidences
        out["compute_ms"] = (done - started) * 1e3
        out["queue_ms"] = (started - arrived) * 1e3
        return JSONResponse(out, headers={REQUEST_ID: request_id})

    return app


class AnnouncingServer(uvicorn.Server):
    """Prints the bound address as one JSON line once uvicorn accepts connections."""

    def __init__(self, config: uvicorn.Config, address: str) -> None:
        super().__init__(config)
        self.address = address

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:
            print(json.dumps({"listening": self.address}), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a model directory holding model.onnx")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra_op_num_threads")
    parser.add_argument("--access-log", action="store_true", help="log every request (off: it costs time)")
    parser.add_argument("--log-level", default="warning")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model = StepModel(args.model, threads=args.threads)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets it knows are TCP,
    # and with Nagle on every answer waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    host, port = sock.getsockname()[:2]
    address = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    config = uvicorn.Config(
        create_app(model), log_level=args.log_level, access_log=args.access_log, lifespan="off", workers=1
    )
    print(f"serving {args.model} as {model.spec.name!r} on {address}", file=sys.stderr, flush=True)
    AnnouncingServer(config, address).run(sockets=[sock])


if __name__ == "__main__":
    main()
