"""The one exception a server's refusal or a failed call raises."""

from __future__ import annotations


class SpikeserveError(Exception):
    """A request the server refused or that failed on the way.

    ``code`` is the server's stable error code (``invalid_input``, ``model_not_found``, ``overloaded``,
    ``deadline_exceeded``, ``unauthenticated``, ...; every code is in the server's ``docs/errors.md``).
    When the failure came from the transport rather than the server (no connection, a deadline the
    client ran out of), it is the gRPC status in lower case (``unavailable``) or ``connection_error``.
    ``grpc_status`` is the gRPC status name (``"INVALID_ARGUMENT"``) for gRPC calls, ``http_status`` the
    HTTP status for HTTP calls; ``request_id`` is the request's id when the server sent one back.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        grpc_status: str | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.grpc_status = grpc_status
        self.http_status = http_status
        self.request_id = request_id
