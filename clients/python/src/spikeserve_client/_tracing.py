"""The caller's OpenTelemetry trace context as request headers, when ``opentelemetry`` is installed."""

from __future__ import annotations


def trace_headers() -> dict[str, str]:
    """The current context as the configured propagators write it (W3C ``traceparent`` and
    ``tracestate`` by default); empty without ``opentelemetry`` or without an active span."""
    try:
        from opentelemetry.propagate import inject
    except ImportError:
        return {}
    carrier: dict[str, str] = {}
    inject(carrier)
    return {key.lower(): value for key, value in carrier.items()}
