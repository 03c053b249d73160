"""A small client of the Chrome DevTools protocol: starts Debian's headless Chromium and drives one
page (navigate, evaluate JavaScript and wait for its promise) over the protocol's WebSocket."""

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

START_TIMEOUT_S = 60.0

# As few side trips as possible: this machine has no network, and a headless browser that tries to
# reach Google's update and sync services fills its log with refused connections.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # the tests run as root in CI, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
)


class BrowserError(RuntimeError):
    """The browser did not start, or a page's script threw (the message has what it said)."""


def chromium_path() -> str | None:
    """Debian's Chromium (``make tools`` installs it), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Browser:
    """A running headless Chromium: the port of its DevTools endpoint."""

    devtools_port: int


@contextmanager
def launched(binary: str) -> Iterator[Browser]:
    """Starts Chromium with a fresh profile; stops it and removes the profile after."""
    with tempfile.TemporaryDirectory(prefix="spikeserve-chromium-") as profile:
        process = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            yield Browser(_devtools_port(Path(profile), process))
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _devtools_port(profile: Path, process: subprocess.Popen[str]) -> int:
    """Chromium writes the port it chose into the profile once its endpoint listens."""
    deadline = time.monotonic() + START_TIMEOUT_S
    marker = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read() if process.stderr else ""
            raise BrowserError(f"chromium exited with {process.returncode}:\n{stderr}")
        if marker.exists():
            first_line = marker.read_text().splitlines()[:1]
            if first_line and first_line[0].isdigit():
                return int(first_line[0])
        time.sleep(0.1)
    raise BrowserError(f"chromium did not open its DevTools endpoint within {START_TIMEOUT_S:.0f} s")


class Page:
    """One tab, driven over its DevTools WebSocket."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._next_id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Sends one command and returns its result (events that arrive meanwhile are skipped)."""
        self._next_id += 1
        command_id = self._next_id
        await self._socket.send_json({"id": command_id, "method": method, "params": params})
        while True:
            message = await self._socket.receive()
            if message.type != aiohttp.WSMsgType.TEXT:
                raise BrowserError(f"the DevTools connection ended ({message.type.name}) during {method}")
            reply = json.loads(message.data)
            if reply.get("id") != command_id:
                continue
            if "error" in reply:
                raise BrowserError(f"{method}: {reply['error']}")
            result: dict[str, Any] = reply.get("result", {})
            return result

    async def evaluate(self, expression: str) -> Any:
        """The value of ``expression`` (a promise is awaited); a script that throws raises BrowserError."""
        result = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            thrown = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"the page's script threw: {thrown}")
        return result.get("result", {}).get("value")

    async def open(self, url: str, timeout_s: float = 30.0) -> None:
        """Navigates and waits until the document has loaded."""
        await self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = await self.evaluate("[document.readyState, location.href]")
            if state and state[0] == "complete" and state[1].rstrip("/").startswith(url.rstrip("/")):
                return
            await asyncio.sleep(0.1)
        raise BrowserError(f"{url} did not load within {timeout_s:.0f} s")


@asynccontextmanager
async def page_of(browser: Browser) -> AsyncIterator[Page]:
    """A new tab of ``browser``, closed after."""
    endpoint = f"http://127.0.0.1:{browser.devtools_port}"
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{endpoint}/json/new?about:blank") as response:
            target = await response.json()
        try:
            async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as socket:
                yield Page(socket)
        finally:
            async with session.get(f"{endpoint}/json/close/{target['id']}"):
                pass
