"""The KServe v2 doors of the real release binary, driven by NVIDIA's unchanged `tritonclient`
(HTTP and gRPC), answered as the offline evaluation of models/digits says (recomputed here as eval.json was made).

Run from the repository root (`make` sets ORT_DYLIB_PATH and SPIKESERVE_BIN):

    ORT_DYLIB_PATH=... .venv/bin/python -m pytest tests/clients -q
"""

import json
import queue
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from reference import offline_reference
from spikeserve_process import REPO, Server
from tritonclient.utils import InferenceServerException

MODELS = REPO / "models"
MODEL = "digits"
# Held-out samples: the first few answer after one timestep; 55, 106 and 190 need 2, 4 and 4,
# and 15 runs all 8 (offline evaluation at the default threshold).
SAMPLES = [0, 1, 2, 3, 15, 55, 106, 190]


@pytest.fixture(scope="module")
def heldout() -> dict:
    return json.loads((MODELS / MODEL / "heldout.json").read_text())


@pytest.fixture(scope="module")
def offline() -> dict:
    """The offline evaluation: per held-out sample, the exit timestep and predicted class at the default
    threshold, recomputed on this machine from the same ONNX graph (see ``reference.py``)."""
    reference = offline_reference(MODEL)
    evaluation = json.loads((MODELS / MODEL / "eval.json").read_text())
    assert len(reference.exits) == evaluation["held_out_samples"] == len(reference.predictions)
    return {
        "timesteps": reference.timesteps,
        "threshold": reference.threshold,
        "exits": reference.exits,
        "predictions": reference.predictions,
    }


@pytest.fixture
def http(server: Server) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(url=server.http_addr)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def grpc(server: Server) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(url=server.grpc_addr)
    try:
        yield client
    finally:
        client.close()


def _image(heldout: dict, index: int) -> np.ndarray:
    image = np.asarray(heldout["inputs"][index], dtype=np.float32)
    assert image.shape == (1, 8, 8)
    return image[np.newaxis]  # [1, 1, 8, 8]: the batch dimension KServe clients add


def _scalar(result: httpclient.InferResult | grpcclient.InferResult, name: str) -> object:
    value = result.as_numpy(name)
    assert value is not None, f"output {name} missing"
    assert value.shape == (1,), f"{name} has shape {value.shape}"
    item = value[0]
    if isinstance(item, bytes):  # BYTES sent as binary data
        return item.decode()
    if isinstance(item, str):  # BYTES sent as JSON
        return item
    return item.item()


def _check_offline(result: httpclient.InferResult | grpcclient.InferResult, offline: dict, index: int) -> None:
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (1, 10)
    assert abs(float(probabilities.sum()) - 1.0) < 1e-5
    predicted = offline["predictions"][index]
    assert _scalar(result, "class_index") == predicted, f"sample {index}"
    assert int(np.argmax(probabilities[0])) == predicted
    assert _scalar(result, "label") == str(predicted)
    assert _scalar(result, "timesteps") == offline["exits"][index], f"sample {index}"
    exit_reason = "max_timesteps" if offline["exits"][index] == offline["timesteps"] else "confident"
    assert _scalar(result, "exit_reason") == exit_reason
    assert _scalar(result, "confidence") == pytest.approx(float(probabilities.max()), abs=1e-6)


def test_http_health_and_metadata(http: httpclient.InferenceServerClient) -> None:
    assert http.is_server_live()
    assert http.is_server_ready()
    assert http.is_model_ready(MODEL)
    assert http.is_model_ready(MODEL, model_version="1")
    assert not http.is_model_ready("nope")
    metadata = http.get_server_metadata()
    assert metadata["name"] == "spikeserve"
    assert {"binary_tensor_data", "model_configuration", "statistics"} <= set(metadata["extensions"])
    model = http.get_model_metadata(MODEL)
    assert model["name"] == MODEL
    assert model["versions"] == ["1"]
    assert model["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [1, 8, 8]}]
    outputs = {o["name"]: (o["datatype"], o["shape"]) for o in model["outputs"]}
    assert outputs["probabilities"] == ("FP32", [1, 10])
    assert outputs["label"] == ("BYTES", [1])
    assert outputs["timesteps"] == ("INT64", [1])
    config = http.get_model_config(MODEL)
    assert config["name"] == MODEL
    assert config["max_batch_size"] == 0
    assert config["input"][0]["name"] == "x"
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert config["parameters"]["timesteps"]["string_value"] == "8"
    with pytest.raises(InferenceServerException):
        http.get_model_metadata("nope")


@pytest.mark.parametrize("binary_data", [True, False])
def test_http_infer_matches_offline_evaluation(
    http: httpclient.InferenceServerClient, heldout: dict, offline: dict, binary_data: bool
) -> None:
    for index in SAMPLES:
        x = httpclient.InferInput("x", [1, 1, 8, 8], "FP32")
        x.set_data_from_numpy(_image(heldout, index), binary_data=binary_data)
        # No outputs named: the client asks for every output in binary form.
        result = http.infer(MODEL, [x])
        _check_offline(result, offline, index)
        # Outputs named, as JSON or binary as the client asks.
        outputs = [
            httpclient.InferRequestedOutput(name, binary_data=binary_data)
            for name in ("probabilities", "label", "timesteps", "exit_reason", "class_index", "confidence")
        ]
        result = http.infer(MODEL, [x], outputs=outputs)
        _check_offline(result, offline, index)
        assert result.get_response()["model_name"] == MODEL


def test_http_parameters_and_output_selection(
    http: httpclient.InferenceServerClient, heldout: dict, offline: dict
) -> None:
    x = httpclient.InferInput("x", [1, 1, 8, 8], "FP32")
    x.set_data_from_numpy(_image(heldout, 0))
    result = http.infer(MODEL, [x], parameters={"threshold": 1.0})
    assert _scalar(result, "timesteps") == offline["timesteps"] == 8
    assert _scalar(result, "exit_reason") == "max_timesteps"
    result = http.infer(MODEL, [x], parameters={"threshold": 1.0, "max_timesteps": 3})
    assert _scalar(result, "timesteps") == 3
    result = http.infer(MODEL, [x], outputs=[httpclient.InferRequestedOutput("label")])
    assert _scalar(result, "label") == str(offline["predictions"][0])
    assert result.as_numpy("probabilities") is None
    with pytest.raises(InferenceServerException, match="threshold"):
        http.infer(MODEL, [x], parameters={"threshold": 0.0})
    wrong = httpclient.InferInput("x", [1, 1, 8, 7], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 1, 8, 7), dtype=np.float32))
    with pytest.raises(InferenceServerException):
        http.infer(MODEL, [wrong])


def test_grpc_health_and_metadata(grpc: grpcclient.InferenceServerClient) -> None:
    assert grpc.is_server_live()
    assert grpc.is_server_ready()
    assert grpc.is_model_ready(MODEL)
    assert not grpc.is_model_ready("nope")
    metadata = grpc.get_server_metadata(as_json=True)
    assert metadata["name"] == "spikeserve"
    assert "binary_tensor_data" in metadata["extensions"]
    model = grpc.get_model_metadata(MODEL, as_json=True)
    assert model["name"] == MODEL
    assert model["inputs"][0]["name"] == "x"
    assert model["inputs"][0]["datatype"] == "FP32"
    assert [int(d) for d in model["inputs"][0]["shape"]] == [1, 8, 8]
    config = grpc.get_model_config(MODEL).config
    assert config.name == MODEL
    assert [i.name for i in config.input] == ["x"]
    assert config.model_transaction_policy.decoupled
    assert config.parameters["timesteps"].string_value == "8"
    with pytest.raises(InferenceServerException):
        grpc.get_model_metadata("nope")


def test_grpc_infer_matches_offline_evaluation(
    grpc: grpcclient.InferenceServerClient, heldout: dict, offline: dict
) -> None:
    for index in SAMPLES:
        x = grpcclient.InferInput("x", [1, 1, 8, 8], "FP32")
        x.set_data_from_numpy(_image(heldout, index))
        result = grpc.infer(MODEL, [x])
        _check_offline(result, offline, index)
    x = grpcclient.InferInput("x", [1, 1, 8, 8], "FP32")
    x.set_data_from_numpy(_image(heldout, 0))
    result = grpc.infer(MODEL, [x], parameters={"threshold": 1.0})
    assert _scalar(result, "timesteps") == 8
    assert _scalar(result, "exit_reason") == "max_timesteps"
    result = grpc.infer(MODEL, [x], outputs=[grpcclient.InferRequestedOutput("timesteps")])
    assert _scalar(result, "timesteps") == offline["exits"][0]
    assert result.as_numpy("label") is None
    with pytest.raises(InferenceServerException, match="threshold"):
        grpc.infer(MODEL, [x], parameters={"threshold": 0.0})


def test_grpc_stream_sends_one_response_per_timestep(
    grpc: grpcclient.InferenceServerClient, heldout: dict, offline: dict
) -> None:
    responses: queue.Queue[tuple[grpcclient.InferResult | None, InferenceServerException | None]] = queue.Queue()

    def callback(result: grpcclient.InferResult | None, error: InferenceServerException | None) -> None:
        responses.put((result, error))

    grpc.start_stream(callback=callback)
    try:
        for index in (106, 15, 0):
            exits = offline["exits"][index]
            x = grpcclient.InferInput("x", [1, 1, 8, 8], "FP32")
            x.set_data_from_numpy(_image(heldout, index))
            grpc.async_stream_infer(MODEL, [x], request_id=f"sample-{index}")
            steps = []
            while True:
                result, error = responses.get(timeout=30)
                assert error is None, f"sample {index}: {error}"
                assert result is not None
                response = result.get_response()
                assert response.id == f"sample-{index}"
                final = response.parameters["triton_final_response"].bool_param
                steps.append(_scalar(result, "timesteps"))
                probabilities = result.as_numpy("probabilities")
                assert probabilities.shape == (1, 10)
                if final:
                    break
                assert result.as_numpy("exit_reason") is None, "only the last response has an exit reason"
            # One response per timestep 1..n; the last is flagged final and is the answer infer gives.
            assert steps == list(range(1, exits + 1)), f"sample {index}"
            _check_offline(result, offline, index)
        assert responses.empty()
    finally:
        grpc.stop_stream()


def test_inference_statistics_count_requests(
    http: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient, heldout: dict
) -> None:
    def count() -> int:
        stats = http.get_inference_statistics(MODEL)
        (model,) = stats["model_stats"]
        assert model["name"] == MODEL
        return model["inference_stats"]["success"]["count"]

    before = count()
    x = httpclient.InferInput("x", [1, 1, 8, 8], "FP32")
    x.set_data_from_numpy(_image(heldout, 1))
    http.infer(MODEL, [x])
    assert count() == before + 1
    stats = grpc.get_inference_statistics(MODEL, as_json=True)
    (model,) = stats["model_stats"]
    assert int(model["inference_stats"]["success"]["count"]) == before + 1
    assert int(model["execution_count"]) > 0
    # No model named: every model's statistics, over both doors.
    for every in (http.get_inference_statistics(), grpc.get_inference_statistics(as_json=True)):
        names = [m["name"] for m in every["model_stats"]]
        assert MODEL in names
        assert "event-digits" in names
