"""The HTTP API in a real browser (Debian's headless Chromium over the DevTools protocol): the API
page renders offline and its "Try it out" gets an answer from the server, and a page on another
origin can call the API (JSON and an SSE stream) only when ``--cors-allow-origin`` names its origin."""

import asyncio
import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from devtools import Browser, chromium_path, launched, page_of
from spikeserve_process import REPO, Server, ServerStartError, release_binary, started

# The first of scikit-learn's digits (a 0); the docs page's example sends the same image.
DIGIT_ZERO = [
    [0, 0, 5, 13, 9, 1, 0, 0],
    [0, 0, 13, 15, 10, 15, 5, 0],
    [0, 3, 15, 2, 0, 11, 8, 0],
    [0, 4, 12, 0, 0, 8, 8, 0],
    [0, 5, 8, 0, 0, 9, 8, 0],
    [0, 4, 11, 0, 1, 12, 7, 0],
    [0, 2, 14, 5, 10, 12, 0, 0],
    [0, 0, 6, 13, 10, 0, 0, 0],
]

# Waits in the page for what a function returns to be truthy (the page renders asynchronously).
WAIT_FOR = """
const waitFor = async (probe, what, timeoutMs = 30000) => {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const found = probe();
    if (found) return found;
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
};
"""


class _Page(BaseHTTPRequestHandler):
    """An empty page: the tests run their scripts in it, on its origin."""

    def do_GET(self) -> None:  # the name http.server calls
        body = b"<!doctype html><title>another origin</title><p>a page on another origin</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def page_server() -> Iterator[str]:
    """Serves the empty page on a loopback port of its own: an origin other than the API's."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    binary = chromium_path()
    if binary is None:
        pytest.skip("Debian's chromium is not installed (`make tools` installs it: scripts/ensure-chromium.sh)")
    with launched(binary) as running:
        yield running


@pytest.fixture(scope="module")
def origins() -> Iterator[tuple[str, str]]:
    """Two other origins: the first is allowed by the server, the second is not."""
    with page_server() as allowed, page_server() as refused:
        yield allowed, refused


@pytest.fixture(scope="module")
def server(origins: tuple[str, str]) -> Iterator[Server]:
    allowed, _ = origins
    try:
        with started(release_binary(), REPO / "models", ["--cors-allow-origin", allowed]) as running:
            yield running
    except ServerStartError as error:
        pytest.fail(str(error))


def run(scenario: Any) -> Any:
    return asyncio.run(scenario)


def test_the_api_page_renders_offline_and_try_it_out_answers(browser: Browser, server: Server) -> None:
    async def scenario() -> dict[str, Any]:
        async with page_of(browser) as page:
            await page.open(f"http://{server.http_addr}/docs/")
            return await page.evaluate(
                WAIT_FOR
                + """
(async () => {
  const title = await waitFor(() => document.querySelector('.info .title'), 'the title');
  const titles = await waitFor(() => {
    const found = [...document.querySelectorAll('section.models .json-schema-2020-12__title')];
    return found.length ? found : null;
  }, 'the schemas');
  const schemas = titles.map((t) => t.textContent);
  // ModelInfo is the contract's fields plus its own (allOf): it must render as fields, not raw JSON.
  const modelInfo = titles.find((t) => t.textContent === 'ModelInfo').closest('.json-schema-2020-12');
  modelInfo.querySelector('.json-schema-2020-12-expand-deep-button').click();
  const modelInfoText = await waitFor(() => {
    const text = modelInfo.textContent;
    return text.includes('timesteps') ? text : null;
  }, 'the fields of ModelInfo');
  const block = await waitFor(() => [...document.querySelectorAll('.opblock')].find(
    (b) => b.querySelector('.opblock-summary-path')?.getAttribute('data-path') === '/v1/models/{name}/infer'),
    'the infer operation');
  block.querySelector('.opblock-summary-control').click();
  const execute = await waitFor(() => block.querySelector('.btn.execute'), 'the Execute button');
  execute.click();
  const status = await waitFor(
    () => block.querySelector('.live-responses-table tbody .response-col_status'), 'a response');
  const body = await waitFor(() => {
    const code = block.querySelector('.live-responses-table tbody .response-col_description pre');
    return code && code.textContent.includes('}') ? code.textContent : null;
  }, 'the response body');
  return {title: title.textContent, schemas, modelInfoText, status: status.textContent.trim(), body};
})()
"""
            )

    seen = run(scenario())
    assert seen["title"].startswith("spikeserve"), seen
    for schema in ("InferRequest", "InferResponse", "InferEventStream", "ModelInfo", "ModelStats", "ErrorResponse"):
        assert schema in seen["schemas"], seen["schemas"]
    assert "version" in seen["modelInfoText"] and "allOf" not in seen["modelInfoText"], seen["modelInfoText"]
    assert seen["status"] == "200", seen
    answer = json.loads(seen["body"])
    assert answer["model"] == "digits" and answer["label"] == "0", answer
    assert answer["exit_reason"] in ("confident", "max_timesteps"), answer


def _cross_origin_calls(api: str) -> str:
    """A script that calls the API from the page's origin: one JSON answer, then one SSE stream read
    event by event; a refused call comes back as the error the browser gives."""
    request = json.dumps({"input": [DIGIT_ZERO], "threshold": 1.0})
    return f"""
(async () => {{
  const url = '{api}/v1/models/digits/infer';
  const request = {json.dumps(request)};
  const headers = {{'content-type': 'application/json', 'x-request-id': 'browser-1'}};
  const seen = {{}};
  try {{
    const response = await fetch(url, {{method: 'POST', headers, body: request}});
    const requestId = response.headers.get('x-request-id');
    seen.json = {{status: response.status, requestId, answer: await response.json()}};
  }} catch (error) {{
    seen.json = {{error: String(error)}};
  }}
  try {{
    const streaming = {{...headers, accept: 'text/event-stream'}};
    const response = await fetch(url, {{method: 'POST', headers: streaming, body: request}});
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let text = '';
    for (;;) {{
      const {{value, done}} = await reader.read();
      if (done) break;
      text += value;
    }}
    const events = text.split('\\n\\n').map((block) => {{
      const name = block.split('\\n').find((line) => line.startsWith('event:'));
      const data = block.split('\\n').find((line) => line.startsWith('data:'));
      return name && data ? {{event: name.slice(6).trim(), data: JSON.parse(data.slice(5))}} : null;
    }}).filter(Boolean);
    seen.sse = {{status: response.status, events}};
  }} catch (error) {{
    seen.sse = {{error: String(error)}};
  }}
  return seen;
}})()
"""


def test_a_page_on_an_allowed_origin_reads_answers_and_streams(
    browser: Browser, server: Server, origins: tuple[str, str]
) -> None:
    allowed, _ = origins

    async def scenario() -> dict[str, Any]:
        async with page_of(browser) as page:
            await page.open(allowed + "/")
            return await page.evaluate(_cross_origin_calls(f"http://{server.http_addr}"))

    seen = run(scenario())
    assert seen["json"].get("status") == 200, seen["json"]
    assert seen["json"]["requestId"] == "browser-1", "the request-id header is exposed to the page"
    assert seen["json"]["answer"]["label"] == "0"
    events = seen["sse"].get("events")
    assert seen["sse"].get("status") == 200 and events, seen["sse"]
    names = [event["event"] for event in events]
    timesteps = seen["json"]["answer"]["timesteps"]
    assert names == ["partial"] * timesteps + ["final"], names
    assert [event["data"]["timestep"] for event in events[:-1]] == list(range(1, timesteps + 1))
    assert events[-1]["data"]["label"] == seen["json"]["answer"]["label"]


def test_a_page_on_another_origin_is_refused(browser: Browser, server: Server, origins: tuple[str, str]) -> None:
    _, refused = origins

    async def scenario() -> dict[str, Any]:
        async with page_of(browser) as page:
            await page.open(refused + "/")
            return await page.evaluate(_cross_origin_calls(f"http://{server.http_addr}"))

    seen = run(scenario())
    # The browser withholds the answer: fetch rejects, the page learns nothing but that it failed.
    assert "Failed to fetch" in seen["json"].get("error", ""), seen
    assert "Failed to fetch" in seen["sse"].get("error", ""), seen
