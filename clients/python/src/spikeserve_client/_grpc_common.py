"""What the sync and asyncio gRPC clients share: channels, metadata, errors, retries."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc

from ._target import check_token, parse_target, read_certificates
from ._tracing import trace_headers
from .errors import SpikeserveError

DEFAULT_GRPC_PORT = 8001
ERROR_CODE_KEY = "spikeserve-error-code"
REQUEST_ID_KEY = "x-request-id"


class ChannelSettings:
    """A parsed address with its credentials and the metadata every call carries."""

    def __init__(
        self,
        target: str,
        tls: bool | None,
        root_certificates: bytes | str | Path | None,
        token: str | None,
        retries: int,
        retry_backoff_s: float,
    ) -> None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a non-negative integer, got {retries!r}")
        if not retry_backoff_s >= 0:
            raise ValueError(f"retry_backoff_s must not be negative, got {retry_backoff_s!r}")
        parsed = parse_target(target, True if root_certificates is not None and tls is None else tls, DEFAULT_GRPC_PORT)
        self.address = parsed.host_port
        self.credentials = (
            grpc.ssl_channel_credentials(root_certificates=read_certificates(root_certificates)) if parsed.tls else None
        )
        self.token = check_token(token)
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s

    def metadata(self) -> tuple[tuple[str, str], ...]:
        entries: list[tuple[str, str]] = []
        if self.token is not None:
            entries.append(("authorization", f"Bearer {self.token}"))
        entries.extend(trace_headers().items())
        return tuple(entries)

    def backoff(self, attempt: int) -> float:
        return float(self.retry_backoff_s * (2**attempt))


def _entry(metadata: Iterable[Any] | None, key: str) -> str | None:
    for entry in metadata or ():
        name, value = entry[0], entry[1]
        if name == key:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def nothing_was_received(error: grpc.RpcError) -> bool:
    """UNAVAILABLE before the server answered anything (no headers, no error code): the request never
    reached it (no connection), so sending it again cannot run it twice."""
    call: Any = error
    if call.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    return not _initial(call) and _entry(call.trailing_metadata(), ERROR_CODE_KEY) is None


def to_error(error: grpc.RpcError) -> SpikeserveError:
    """The gRPC failure as the package's exception: the server's code when it sent one."""
    call: Any = error
    status: grpc.StatusCode = call.code()
    trailing = call.trailing_metadata()
    code = _entry(trailing, ERROR_CODE_KEY) or status.name.lower()
    return SpikeserveError(
        code,
        call.details() or status.name,
        grpc_status=status.name,
        request_id=_entry(trailing, REQUEST_ID_KEY) or _entry(_initial(call), REQUEST_ID_KEY),
    )


def _initial(call: Any) -> Any:
    try:
        return call.initial_metadata()
    except Exception:
        return None


def check_timeout(timeout: float | None) -> float | None:
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return timeout
