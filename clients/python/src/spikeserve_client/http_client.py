"""HTTP clients of the ``/v1`` API (JSON, and Server-Sent Events for streams), over httpx.

Sessions need gRPC (a bidirectional stream); everything else is here too. Over HTTP the latency
budget is ``latency_budget_ms`` only: ``timeout`` is the client's own limit.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx
import numpy.typing as npt

from . import _convert
from ._convert import Policy
from ._target import check_token, read_certificates
from ._tracing import trace_headers
from .errors import SpikeserveError
from .results import ModelInfo, Partial, Result


def _base_url(url: str) -> str:
    if not isinstance(url, str) or not url:
        raise ValueError(f"the server URL must be a non-empty string, got {url!r}")
    if "://" not in url:
        url = f"http://{url}"
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url}: the scheme must be http:// or https://")
    return url.rstrip("/")


def _verify(root_certificates: bytes | str | Path | None) -> ssl.SSLContext | bool:
    pem = read_certificates(root_certificates)
    if pem is None:
        return True
    return ssl.create_default_context(cadata=pem.decode())


def _error_from(response: httpx.Response, body: bytes) -> SpikeserveError:
    code, message = f"http_{response.status_code}", body.decode(errors="replace") or response.reason_phrase
    try:
        detail = json.loads(body)["error"]
        if isinstance(detail, dict):
            code, message = str(detail["code"]), str(detail["message"])
        else:  # the KServe routes' form
            message = str(detail)
    except (ValueError, KeyError, TypeError):
        pass
    return SpikeserveError(
        code, message, http_status=response.status_code, request_id=response.headers.get("x-request-id")
    )


def _transport_error(error: httpx.HTTPError) -> SpikeserveError:
    code = "timeout" if isinstance(error, httpx.TimeoutException) else "connection_error"
    return SpikeserveError(code, f"{type(error).__name__}: {error}")


class _Events:
    """Server-Sent Events from lines: yields (event, data)."""

    def __init__(self) -> None:
        self.event = "message"
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        if line == "":
            if not self.data:
                self.event = "message"
                return None
            message = (self.event, "\n".join(self.data))
            self.event, self.data = "message", []
            return message
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        return None


def _stream_item(event: str, data: str, request_id: str | None) -> Partial | Result | None:
    if event == "partial":
        return _convert.partial_from_json(json.loads(data))
    if event == "final":
        return _convert.result_from_json(json.loads(data))
    if event == "error":
        detail = json.loads(data).get("error", {})
        raise SpikeserveError(
            str(detail.get("code", "internal")),
            str(detail.get("message", data)),
            http_status=200,
            request_id=request_id,
        )
    return None


class _Settings:
    def __init__(
        self,
        url: str,
        root_certificates: bytes | str | Path | None,
        token: str | None,
        retries: int,
        timeout: float | None,
    ) -> None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a non-negative integer, got {retries!r}")
        self.base_url = _base_url(url)
        self.verify = _verify(root_certificates)
        self.token = check_token(token)
        self.retries = retries
        self.timeout = timeout

    def headers(self, request_id: str | None = None) -> dict[str, str]:
        headers = {"accept": "application/json"}
        if self.token is not None:
            headers["authorization"] = f"Bearer {self.token}"
        if request_id:
            headers["x-request-id"] = request_id
        headers.update(trace_headers())
        return headers


def _infer_arguments(
    model: str,
    input: npt.ArrayLike | None,
    events: npt.ArrayLike | None,
    policy: Policy,
    return_confidences: bool,
) -> tuple[str, dict[str, Any]]:
    path = f"/v1/models/{quote(_convert.check_model(model), safe='')}/infer"
    return path, _convert.infer_body(input, events, policy, return_confidences)


class HttpClient:
    """A connection to spikeserve's HTTP port (8000 by default): ``infer``, ``stream`` (Server-Sent
    Events), ``list_models`` and ``model``, with the same arguments and results as the gRPC
    :class:`~spikeserve_client.Client` (no sessions: they need gRPC). Connections that fail before the
    request is sent are tried again ``retries`` times; nothing else is retried."""

    def __init__(
        self,
        url: str = "http://localhost:8000",
        *,
        root_certificates: bytes | str | Path | None = None,
        token: str | None = None,
        retries: int = 3,
        timeout: float | None = 60.0,
    ) -> None:
        self._settings = _Settings(url, root_certificates, token, retries, timeout)
        transport = httpx.HTTPTransport(retries=retries, verify=self._settings.verify)
        self._http = httpx.Client(base_url=self._settings.base_url, transport=transport, timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _json(self, method: str, path: str, body: Any = None, request_id: str | None = None) -> Any:
        try:
            response = self._http.request(method, path, json=body, headers=self._settings.headers(request_id))
        except httpx.HTTPError as error:
            raise _transport_error(error) from None
        if response.status_code >= 400:
            raise _error_from(response, response.content)
        return response.json()

    def list_models(self) -> list[ModelInfo]:
        return [_convert.model_from_json(m) for m in self._json("GET", "/v1/models")["models"]]

    def model(self, name: str) -> ModelInfo:
        return _convert.model_from_json(self._json("GET", f"/v1/models/{quote(_convert.check_model(name), safe='')}"))

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
    ) -> Result:
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
        path, body = _infer_arguments(model, input, events, policy, return_confidences)
        return _convert.result_from_json(self._json("POST", path, body, request_id))

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
    ) -> HttpStream:
        """Partials as Server-Sent Events, then the :class:`Result`; ``close()`` cancels the request."""
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
        path, body = _infer_arguments(model, input, events, policy, return_confidences)
        headers = self._settings.headers(request_id)
        headers["accept"] = "text/event-stream"
        request = self._http.build_request("POST", path, json=body, headers=headers)
        try:
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as error:
            raise _transport_error(error) from None
        if response.status_code >= 400:
            content = response.read()
            response.close()
            raise _error_from(response, content)
        return HttpStream(response)


class HttpStream(Iterator[Partial | Result]):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._request_id = response.headers.get("x-request-id")
        self._lines: Iterator[str] = response.iter_lines()
        self._parser = _Events()
        self._done = False
        self.result: Result | None = None

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Partial | Result:
        while not self._done:
            try:
                line = next(self._lines)
            except StopIteration:
                line = None
            except httpx.HTTPError as error:
                self.close()
                raise _transport_error(error) from None
            if line is None:
                self.close()
                if self.result is None:
                    raise SpikeserveError("internal", "the stream ended without a final answer")
                break
            message = self._parser.feed(line)
            if message is None:
                continue
            try:
                item = _stream_item(*message, self._request_id)
            except SpikeserveError:
                self.close()
                raise
            if isinstance(item, Result):
                self.result = item
                self.close()
            if item is not None:
                return item
        raise StopIteration

    def final(self) -> Result:
        for _ in self:
            pass
        assert self.result is not None
        return self.result

    def close(self) -> None:
        """Closes the connection: the server cancels the request at its next timestep."""
        self._done = True
        self._response.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


class AsyncHttpClient:
    """As :class:`HttpClient`, with coroutines and async iterators."""

    def __init__(
        self,
        url: str = "http://localhost:8000",
        *,
        root_certificates: bytes | str | Path | None = None,
        token: str | None = None,
        retries: int = 3,
        timeout: float | None = 60.0,
    ) -> None:
        self._settings = _Settings(url, root_certificates, token, retries, timeout)
        transport = httpx.AsyncHTTPTransport(retries=retries, verify=self._settings.verify)
        self._http = httpx.AsyncClient(base_url=self._settings.base_url, transport=transport, timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _json(self, method: str, path: str, body: Any = None, request_id: str | None = None) -> Any:
        try:
            response = await self._http.request(method, path, json=body, headers=self._settings.headers(request_id))
        except httpx.HTTPError as error:
            raise _transport_error(error) from None
        if response.status_code >= 400:
            raise _error_from(response, response.content)
        return response.json()

    async def list_models(self) -> list[ModelInfo]:
        return [_convert.model_from_json(m) for m in (await self._json("GET", "/v1/models"))["models"]]

    async def model(self, name: str) -> ModelInfo:
        path = f"/v1/models/{quote(_convert.check_model(name), safe='')}"
        return _convert.model_from_json(await self._json("GET", path))

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
    ) -> Result:
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
        path, body = _infer_arguments(model, input, events, policy, return_confidences)
        return _convert.result_from_json(await self._json("POST", path, body, request_id))

    async def stream(
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
    ) -> AsyncHttpStream:
        """Partials as Server-Sent Events, then the :class:`Result`; ``await close()`` cancels it."""
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
        path, body = _infer_arguments(model, input, events, policy, return_confidences)
        headers = self._settings.headers(request_id)
        headers["accept"] = "text/event-stream"
        request = self._http.build_request("POST", path, json=body, headers=headers)
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as error:
            raise _transport_error(error) from None
        if response.status_code >= 400:
            content = await response.aread()
            await response.aclose()
            raise _error_from(response, content)
        return AsyncHttpStream(response)


class AsyncHttpStream(AsyncIterator[Partial | Result]):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._request_id = response.headers.get("x-request-id")
        self._lines: AsyncIterator[str] = response.aiter_lines()
        self._parser = _Events()
        self._done = False
        self.result: Result | None = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Partial | Result:
        while not self._done:
            try:
                line: str | None = await anext(self._lines)
            except StopAsyncIteration:
                line = None
            except httpx.HTTPError as error:
                await self.close()
                raise _transport_error(error) from None
            if line is None:
                await self.close()
                if self.result is None:
                    raise SpikeserveError("internal", "the stream ended without a final answer")
                break
            message = self._parser.feed(line)
            if message is None:
                continue
            try:
                item = _stream_item(*message, self._request_id)
            except SpikeserveError:
                await self.close()
                raise
            if isinstance(item, Result):
                self.result = item
                await self.close()
            if item is not None:
                return item
        raise StopAsyncIteration

    async def final(self) -> Result:
        async for _ in self:
            pass
        assert self.result is not None
        return self.result

    async def close(self) -> None:
        self._done = True
        await self._response.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()
