"""The OpenAPI document (`docs/openapi.json`, which a Rust test keeps equal to what the server serves)
checked by a real validator, and usable: a client's types generated from it by
`datamodel-code-generator` build a request the real server answers and parse every answer it gives
(JSON, errors, model listing and stats, and each event of an SSE stream)."""

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from openapi_spec_validator import validate

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from spikeserve_process import REPO, Server, ServerStartError, release_binary, started

DOCUMENT = REPO / "docs" / "openapi.json"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    try:
        with started(release_binary(), REPO / "models") as running:
            yield running
    except ServerStartError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """pydantic models generated from the document, imported as a module."""
    output = tmp_path_factory.mktemp("generated") / "spikeserve_api.py"
    command = [
        str(Path(sys.executable).with_name("datamodel-codegen")),
        *("--input", str(DOCUMENT), "--input-file-type", "openapi"),
        *("--output-model-type", "pydantic_v2.BaseModel", "--output", str(output)),
        "--disable-timestamp",
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    spec = importlib.util.spec_from_file_location("spikeserve_api", output)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the recursive NestedNumbers through it
    spec.loader.exec_module(module)
    return module


def test_the_document_is_valid_openapi() -> None:
    validate(json.loads(DOCUMENT.read_text()))


def test_the_document_documents_the_request_and_the_event_stream() -> None:
    document = json.loads(DOCUMENT.read_text())
    schemas = document["components"]["schemas"]
    # `input` holds nested number arrays, not objects.
    assert schemas["InferRequest"]["properties"]["input"]["items"] == {"$ref": "#/components/schemas/NestedNumbers"}
    infer = document["paths"]["/v1/models/{name}/infer"]["post"]
    content = infer["responses"]["200"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/InferResponse"}
    assert content["text/event-stream"]["schema"] == {"$ref": "#/components/schemas/InferEventStream"}
    events = {item["title"] for item in schemas["InferEventStream"]["oneOf"]}
    assert events == {"partial", "final", "error"}
    assert "error` event" in infer["responses"]["504"]["description"]


def _events(text: str) -> list[dict[str, object]]:
    """An SSE body as `{"event", "data"}` objects (the form the document gives each event)."""
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "event" in fields:
            events.append({"event": fields["event"].strip(), "data": json.loads(fields["data"])})
    return events


def test_a_client_generated_from_the_document_talks_to_the_server(generated: ModuleType, server: Server) -> None:
    api = generated
    base = f"http://{server.http_addr}"
    heldout = json.loads((REPO / "models" / "digits" / "heldout.json").read_text())
    with httpx.Client(base_url=base, timeout=30) as http:
        listing = api.ModelList.model_validate(http.get("/v1/models").json())
        assert "digits" in {model.name for model in listing.models}
        info = api.ModelInfo.model_validate(http.get("/v1/models/digits").json())
        stats = api.ModelStats.model_validate(http.get("/v1/models/digits/stats").json())
        assert info.timesteps == 8 and stats is not None

        request = api.InferRequest(input=heldout["inputs"][106], threshold=1.0, return_confidences=True)
        body = request.model_dump(mode="json", exclude_none=True)
        answer = api.InferResponse.model_validate(http.post("/v1/models/digits/infer", json=body).json())
        assert answer.timesteps == 8 and len(answer.confidences) == 8
        assert answer.label == info.labels[answer.class_index]

        streamed = http.post("/v1/models/digits/infer", json=body, headers={"accept": "text/event-stream"})
        events = [api.InferEventStream.model_validate(event) for event in _events(streamed.text)]
        assert [event.root.event.value for event in events] == ["partial"] * 8 + ["final"]
        assert events[-1].root.data.label == answer.label

        refused = http.post("/v1/models/digits/infer", json={**body, "threshold": 2.0})
        assert refused.status_code == 400
        error = api.ErrorResponse.model_validate(refused.json())
        assert error.error.code == "invalid_field" and "threshold" in error.error.message
