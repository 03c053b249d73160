"""The caller's OpenTelemetry context travels as W3C ``traceparent`` (opentelemetry-api is installed here:
the API alone propagates a span context that the caller made current)."""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from opentelemetry import context, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from spikeserve_client import AsyncClient, Client, HttpClient
from spikeserve_client._tracing import trace_headers
from spikeserve_process import Server

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7


@contextmanager
def current_span() -> Iterator[None]:
    span = NonRecordingSpan(SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(1)))
    token = context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        context.detach(token)


def test_the_current_span_becomes_traceparent() -> None:
    assert "traceparent" not in trace_headers()
    with current_span():
        assert trace_headers()["traceparent"] == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert "traceparent" not in trace_headers()


def test_requests_inside_a_span_are_answered(server: Server) -> None:
    frame = np.zeros((1, 8, 8), dtype=np.float32)
    with current_span():
        with Client(server.grpc_addr) as client:
            assert client.infer("digits", frame, max_timesteps=1, threshold=1.0).timesteps == 1
            assert isinstance(list(client.stream("digits", frame, max_timesteps=1, threshold=1.0))[-1].timesteps, int)
        with HttpClient(server.http_addr) as http:
            assert http.infer("digits", frame, max_timesteps=1, threshold=1.0).timesteps == 1

        async def run() -> Any:
            async with AsyncClient(server.grpc_addr) as aclient:
                return await aclient.infer("digits", frame, max_timesteps=1, threshold=1.0)

        assert asyncio.run(run()).timesteps == 1
