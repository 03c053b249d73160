"""The asyncio gRPC client: :class:`AsyncClient`, the same calls as :class:`~spikeserve_client.Client`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
import grpc.aio
import numpy.typing as npt

from . import _convert
from ._convert import Policy
from ._grpc_common import ChannelSettings, check_timeout, nothing_was_received, to_error
from ._proto import anytime_pb2 as pb
from ._proto import anytime_pb2_grpc as rpc
from .errors import SpikeserveError
from .results import ModelInfo, Partial, Result

T = TypeVar("T")


class AsyncClient:
    """As :class:`~spikeserve_client.Client`, with coroutines and async iterators. Create it inside the
    event loop that uses it (``async with AsyncClient(...) as client``)."""

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
            self._channel = grpc.aio.insecure_channel(self._settings.address, options=options)
        else:
            self._channel = grpc.aio.secure_channel(self._settings.address, credentials, options=options)
        self._stub = rpc.AnytimeStub(self._channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel; streams and sessions still open are cancelled."""
        await self._channel.close()

    async def _call(self, attempt: Callable[[], Awaitable[T]]) -> T:
        for n in range(self._settings.retries + 1):
            try:
                return await attempt()
            except grpc.aio.AioRpcError as error:
                if n < self._settings.retries and nothing_was_received(error):
                    await asyncio.sleep(self._settings.backoff(n))
                    continue
                raise to_error(error) from None
        raise AssertionError("unreachable")

    async def list_models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        """Every loaded model's contract."""
        deadline = check_timeout(timeout)
        answer = await self._call(
            lambda: self._stub.ListModels(pb.ListModelsRequest(), timeout=deadline, metadata=self._settings.metadata())
        )
        return [_convert.model_from_proto(m) for m in answer.models]

    async def model(self, name: str, *, timeout: float | None = None) -> ModelInfo:
        """One model's contract (``model_not_found`` when it is not loaded)."""
        request = pb.GetModelRequest(model=_convert.check_model(name))
        deadline = check_timeout(timeout)
        answer = await self._call(
            lambda: self._stub.GetModel(request, timeout=deadline, metadata=self._settings.metadata())
        )
        return _convert.model_from_proto(answer)

    async def infer(
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
        """One request, one answer (see :meth:`spikeserve_client.Client.infer`)."""
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
        answer = await self._call(
            lambda: self._stub.Infer(request, timeout=deadline, metadata=self._settings.metadata())
        )
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
    ) -> AsyncStream:
        """As :meth:`infer`, streamed: ``async for`` a :class:`Partial` after every timestep, then the
        :class:`Result`. ``await stream.close()`` cancels the request."""
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
        return AsyncStream(
            self, lambda: self._stub.InferStream(request, timeout=deadline, metadata=self._settings.metadata())
        )

    async def session(
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
    ) -> AsyncSession:
        """A bidirectional session (see :meth:`spikeserve_client.Client.session`); its start is sent."""
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
            await asyncio.wait_for(self._channel.channel_ready(), connect_timeout_s)
        except TimeoutError:
            raise SpikeserveError(
                "unavailable",
                f"no connection to {self._settings.address} within {connect_timeout_s} s",
                grpc_status="UNAVAILABLE",
            ) from None
        call = self._stub.Session(timeout=deadline, metadata=self._settings.metadata())
        session = AsyncSession(call)
        await session._write(pb.SessionRequest(start=start))
        return session


class AsyncStream(AsyncIterator[Partial | Result]):
    """The partials of one request, then its :class:`Result` (also :attr:`result` once read)."""

    def __init__(self, client: AsyncClient, open_call: Callable[[], Any]) -> None:
        self._client = client
        self._open_call = open_call
        self._call: Any = None
        self._received = False
        self._closed = False
        self._done = False
        self.result: Result | None = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Partial | Result:
        if self._done or self._closed:
            raise StopAsyncIteration
        settings = self._client._settings
        attempt = 0
        while True:
            if self._call is None:
                self._call = self._open_call()
            try:
                message = await self._call.read()
            except asyncio.CancelledError:
                if self._closed:
                    raise StopAsyncIteration from None
                raise
            except grpc.aio.AioRpcError as error:
                if self._closed:
                    raise StopAsyncIteration from None
                if not self._received and attempt < settings.retries and nothing_was_received(error):
                    await asyncio.sleep(settings.backoff(attempt))
                    attempt += 1
                    self._call = None
                    continue
                self._done = True
                raise to_error(error) from None
            break
        if message is grpc.aio.EOF:
            self._done = True
            if self.result is None:
                raise SpikeserveError("internal", "the stream ended without a final answer")
            raise StopAsyncIteration
        self._received = True
        item = _convert.stream_item_from_proto(message)
        if isinstance(item, Result):
            self.result = item
        return item

    async def final(self) -> Result:
        """Reads the rest of the stream and returns its :class:`Result`."""
        async for _ in self:
            pass
        if self.result is None:
            raise SpikeserveError("cancelled", "the stream was closed before its answer")
        return self.result

    async def close(self) -> None:
        """Cancels the request (the server stops it at its next timestep)."""
        self._closed = True
        if self._call is not None and not self._done:
            self._call.cancel()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()


class AsyncSession(AsyncIterator[Partial | Result]):
    """One bidirectional session: ``await send_frame(...)``/``send_events(...)``, ``async for`` the
    partials and the :class:`Result`, ``await close_input()`` to half-close."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._input_closed = False
        self._done = False
        self._cancelled = False
        self.result: Result | None = None

    async def _write(self, message: pb.SessionRequest) -> None:
        if self._input_closed:
            raise RuntimeError("the session's input is closed (close_input was called)")
        if self._done or self._call.done():
            return
        try:
            await self._call.write(message)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            # The call has ended (answered or failed): reading it tells which.
            return

    async def send_frame(self, frame: npt.ArrayLike) -> None:
        """The next timestep's input, in the model's frame shape. Ignored once the server has answered."""
        await self._write(pb.SessionRequest(frame=_convert.tensor_proto(frame, "frame")))

    async def send_events(self, events: npt.ArrayLike) -> None:
        """The next chunk of raw events ``[N, 4]`` (``x, y, t_us, p``). Ignored once the server has answered."""
        await self._write(pb.SessionRequest(events=_convert.events_proto(events)))

    async def close_input(self) -> None:
        """Half-closes: no more input; the server answers from the timesteps it has."""
        if self._input_closed:
            return
        self._input_closed = True
        if not self._done and not self._call.done():
            try:
                await self._call.done_writing()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                return

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Partial | Result:
        if self._done:
            raise StopAsyncIteration
        try:
            message = await self._call.read()
        except asyncio.CancelledError:
            self._done = True
            if self._cancelled:
                raise StopAsyncIteration from None
            raise
        except grpc.aio.AioRpcError as error:
            self._done = True
            if self._cancelled:
                raise StopAsyncIteration from None
            raise to_error(error) from None
        if message is grpc.aio.EOF:
            self._done = True
            if self.result is None:
                raise SpikeserveError("internal", "the session ended without a final answer")
            raise StopAsyncIteration
        item = _convert.stream_item_from_proto(message)
        if isinstance(item, Result):
            self.result = item
            self._done = True
        return item

    async def final(self) -> Result:
        """Reads the remaining partials and returns the :class:`Result`."""
        async for _ in self:
            pass
        if self.result is None:
            raise SpikeserveError("cancelled", "the session was cancelled before its answer")
        return self.result

    async def cancel(self) -> None:
        """Ends the session without an answer (the server stops the request)."""
        if not self._done:
            self._cancelled = True
            self._call.cancel()
        self._done = True

    close = cancel

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.cancel()
