"""The synchronous gRPC client of spikeserve's anytime service (``spikeserve.anytime.v1.Anytime``)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
import numpy.typing as npt

from . import _convert
from ._convert import Policy
from ._grpc_common import ChannelSettings, check_timeout, nothing_was_received, to_error
from ._proto import anytime_pb2 as pb
from ._proto import anytime_pb2_grpc as rpc
from .errors import SpikeserveError
from .results import ModelInfo, Partial, Result

T = TypeVar("T")
_CLOSED = None


class Client:
    """A connection to spikeserve's gRPC port (8001 by default).

    ``target`` is ``host:port``, ``http://host:port`` or ``https://host:port`` (TLS, also with ``tls=True``
    or ``root_certificates``: a PEM file's path or its bytes; without them the system's roots are
    trusted). ``token`` is sent as ``authorization: Bearer <token>``. A call that fails with
    ``UNAVAILABLE`` before the server answered anything (no connection yet) is tried again up to
    ``retries`` times, ``retry_backoff_s`` doubling each time; nothing else is retried.

    Every inference call takes the policy (``threshold`` or ``max_accuracy_drop``, ``min_timesteps``,
    ``max_timesteps``, ``latency_budget_ms``, ``max_variance``, ``priority``) and ``timeout``: the
    call's gRPC deadline in seconds, which **is the latency budget** when ``latency_budget_ms`` is not
    given (the answer is the best one so far when it nears). Server refusals raise
    :class:`~spikeserve_client.SpikeserveError`; bad arguments raise ``ValueError``/``TypeError``
    before anything is sent.
    """

    def __init__(
        self,
        target: str = "localhost:8001",
        *,
        tls: bool | None = None,
        root_certificates: bytes | str | Path | None = None,
        token: str | None = None,
        retries: int = 3,
        retry_backoff_s: float = 0.05,
        options: list[tuple[str, Any]] | None = None,
    ) -> None:
        self._settings = ChannelSettings(target, tls, root_certificates, token, retries, retry_backoff_s)
        credentials = self._settings.credentials
        if credentials is None:
            self._channel = grpc.insecure_channel(self._settings.address, options=options)
        else:
            self._channel = grpc.secure_channel(self._settings.address, credentials, options=options)
        self._stub = rpc.AnytimeStub(self._channel)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel; streams and sessions still open are cancelled."""
        self._channel.close()

    def _call(self, attempt: Callable[[], T]) -> T:
        for n in range(self._settings.retries + 1):
            try:
                return attempt()
            except grpc.RpcError as error:
                if n < self._settings.retries and nothing_was_received(error):
                    time.sleep(self._settings.backoff(n))
                    continue
                raise to_error(error) from None
        raise AssertionError("unreachable")

    def list_models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        """Every loaded model's contract."""
        request = pb.ListModelsRequest()
        deadline = check_timeout(timeout)
        answer = self._call(
            lambda: self._stub.ListModels(request, timeout=deadline, metadata=self._settings.metadata())
        )
        return [_convert.model_from_proto(m) for m in answer.models]

    def model(self, name: str, *, timeout: float | None = None) -> ModelInfo:
        """One model's contract (``model_not_found`` when it is not loaded)."""
        request = pb.GetModelRequest(model=_convert.check_model(name))
        deadline = check_timeout(timeout)
        answer = self._call(lambda: self._stub.GetModel(request, timeout=deadline, metadata=self._settings.metadata()))
        return _convert.model_from_proto(answer)

    def infer(
        self,
        model: str,
        input: npt.ArrayLike | None = None,
        *,
        events: npt.ArrayLike | None = None,
        threshold: float | None = None,
        min_timesteps: int | None = None,
        max_timesteps: int | None = None,
        latency_budget_ms: float | None = None,
        max_accuracy_drop: float | None = None,
        policy: str | None = None,
        guarantee: float | None = None,
        max_variance: float | None = None,
        priority: int | None = None,
        request_id: str | None = None,
        return_confidences: bool = False,
        timeout: float | None = None,
    ) -> Result:
        """One request, one answer. ``input``: the model's frame (or ``[n, *frame]`` frames) as a numpy
        array or nested lists; or ``events``: raw events ``[N, 4]`` (``x, y, t_us, p``) for event models."""
        policy = Policy(
            threshold,
            min_timesteps,
            max_timesteps,
            latency_budget_ms,
            max_accuracy_drop,
            max_variance,
            priority,
            policy,
            guarantee,
        )
        request = _convert.infer_request(model, input, events, policy, request_id, return_confidences)
        deadline = check_timeout(timeout)
        answer = self._call(lambda: self._stub.Infer(request, timeout=deadline, metadata=self._settings.metadata()))
        return _convert.result_from_proto(answer)

    def stream(
        self,
        model: str,
        input: npt.ArrayLike | None = None,
        *,
        events: npt.ArrayLike | None = None,
        threshold: float | None = None,
        min_timesteps: int | None = None,
        max_timesteps: int | None = None,
        latency_budget_ms: float | None = None,
        max_accuracy_drop: float | None = None,
        policy: str | None = None,
        guarantee: float | None = None,
        max_variance: float | None = None,
        priority: int | None = None,
        request_id: str | None = None,
        return_confidences: bool = False,
        timeout: float | None = None,
    ) -> Stream:
        """As :meth:`infer`, streamed: iterate for a :class:`Partial` after every timestep, then the
        :class:`Result`. Closing the stream (``close()``, or leaving its ``with`` block) cancels the
        request at its next timestep."""
        policy = Policy(
            threshold,
            min_timesteps,
            max_timesteps,
            latency_budget_ms,
            max_accuracy_drop,
            max_variance,
            priority,
            policy,
            guarantee,
        )
        request = _convert.infer_request(model, input, events, policy, request_id, return_confidences)
        deadline = check_timeout(timeout)
        return Stream(
            self, lambda: self._stub.InferStream(request, timeout=deadline, metadata=self._settings.metadata())
        )

    def session(
        self,
        model: str,
        *,
        threshold: float | None = None,
        min_timesteps: int | None = None,
        max_timesteps: int | None = None,
        latency_budget_ms: float | None = None,
        max_accuracy_drop: float | None = None,
        policy: str | None = None,
        guarantee: float | None = None,
        max_variance: float | None = None,
        priority: int | None = None,
        request_id: str | None = None,
        return_confidences: bool = False,
        timeout: float | None = None,
        connect_timeout_s: float = 10.0,
    ) -> Session:
        """A bidirectional session: push frames (:meth:`Session.send_frame`) or raw event chunks
        (:meth:`Session.send_events`) as they are captured, read partials as they come, half-close with
        :meth:`Session.close_input` for the answer from the timesteps sent. The session first waits up to
        ``connect_timeout_s`` for a connection (nothing is sent before one is up)."""
        policy = Policy(
            threshold,
            min_timesteps,
            max_timesteps,
            latency_budget_ms,
            max_accuracy_drop,
            max_variance,
            priority,
            policy,
            guarantee,
        )
        start = pb.SessionStart(
            model=_convert.check_model(model),
            request_id=request_id or "",
            policy=policy.to_proto(),
            return_confidences=return_confidences,
        )
        deadline = check_timeout(timeout)
        try:
            grpc.channel_ready_future(self._channel).result(timeout=connect_timeout_s)
        except grpc.FutureTimeoutError:
            raise SpikeserveError(
                "unavailable",
                f"no connection to {self._settings.address} within {connect_timeout_s} s",
                grpc_status="UNAVAILABLE",
            ) from None
        return Session(self._stub, start, deadline, self._settings.metadata())


class Stream(Iterator[Partial | Result]):
    """The partials of one request, then its :class:`Result` (also :attr:`result` once read)."""

    def __init__(self, client: Client, open_call: Callable[[], Any]) -> None:
        self._client = client
        self._open_call = open_call
        self._call: Any = None
        self._received = False
        self._closed = False
        self._done = False
        self.result: Result | None = None

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Partial | Result:
        if self._done or self._closed:
            raise StopIteration
        settings = self._client._settings
        attempt = 0
        while True:
            if self._call is None:
                self._call = self._open_call()
            try:
                message = next(self._call)
                break
            except StopIteration:
                self._done = True
                if self.result is None:
                    raise SpikeserveError("internal", "the stream ended without a final answer") from None
                raise
            except grpc.RpcError as error:
                if self._closed:
                    raise StopIteration from None
                if not self._received and attempt < settings.retries and nothing_was_received(error):
                    time.sleep(settings.backoff(attempt))
                    attempt += 1
                    self._call = None
                    continue
                self._done = True
                raise to_error(error) from None
        self._received = True
        item = _convert.stream_item_from_proto(message)
        if isinstance(item, Result):
            self.result = item
        return item

    def final(self) -> Result:
        """Reads the rest of the stream and returns its :class:`Result`."""
        for _ in self:
            pass
        if self.result is None:
            raise SpikeserveError("cancelled", "the stream was closed before its answer")
        return self.result

    def close(self) -> None:
        """Cancels the request (the server stops it at its next timestep)."""
        self._closed = True
        if self._call is not None and not self._done:
            self._call.cancel()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


class Session(Iterator[Partial | Result]):
    """One bidirectional session. Sending never blocks (messages are queued for the connection);
    iterating blocks for the next partial, then yields the :class:`Result` and stops."""

    def __init__(self, stub: rpc.AnytimeStub, start: pb.SessionStart, timeout: float | None, metadata: Any) -> None:
        self._queue: queue.Queue[pb.SessionRequest | None] = queue.Queue()
        self._lock = threading.Lock()
        self._input_closed = False
        self._done = False
        self._cancelled = False
        self.result: Result | None = None
        self._call: Any = stub.Session(self._requests(start), timeout=timeout, metadata=metadata)

    def _requests(self, start: pb.SessionStart) -> Iterator[pb.SessionRequest]:
        yield pb.SessionRequest(start=start)
        while True:
            message = self._queue.get()
            if message is _CLOSED:
                return
            yield message

    def _send(self, message: pb.SessionRequest) -> None:
        with self._lock:
            if self._input_closed:
                raise RuntimeError("the session's input is closed (close_input was called)")
            if not self._done:
                self._queue.put(message)

    def send_frame(self, frame: npt.ArrayLike) -> None:
        """The next timestep's input, in the model's frame shape. Ignored once the server has answered."""
        self._send(pb.SessionRequest(frame=_convert.tensor_proto(frame, "frame")))

    def send_events(self, events: npt.ArrayLike) -> None:
        """The next chunk of raw events ``[N, 4]`` (``x, y, t_us, p``), in time order across chunks.
        Ignored once the server has answered."""
        self._send(pb.SessionRequest(events=_convert.events_proto(events)))

    def close_input(self) -> None:
        """Half-closes: no more input; the server answers from the timesteps it has."""
        with self._lock:
            if not self._input_closed:
                self._input_closed = True
                self._queue.put(_CLOSED)

    def _finish(self) -> None:
        with self._lock:
            self._done = True
            self._queue.put(_CLOSED)  # wakes the request thread if it waits for input

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Partial | Result:
        if self._done:
            raise StopIteration
        try:
            message = next(self._call)
        except StopIteration:
            self._finish()
            if self.result is None:
                raise SpikeserveError("internal", "the session ended without a final answer") from None
            raise
        except grpc.RpcError as error:
            self._finish()
            if self._cancelled:
                raise StopIteration from None
            raise to_error(error) from None
        item = _convert.stream_item_from_proto(message)
        if isinstance(item, Result):
            self.result = item
            self._finish()
        return item

    def final(self) -> Result:
        """Reads the remaining partials and returns the :class:`Result` (half-close first to get it
        before the server would stop by itself)."""
        for _ in self:
            pass
        if self.result is None:
            raise SpikeserveError("cancelled", "the session was cancelled before its answer")
        return self.result

    def cancel(self) -> None:
        """Ends the session without an answer (the server stops the request)."""
        if not self._done:
            self._cancelled = True
            self._call.cancel()
        self._finish()

    close = cancel

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.cancel()
