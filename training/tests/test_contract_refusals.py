"""Models that break the contract are refused by the server with a message naming what is wrong."""

from collections.abc import Callable
from pathlib import Path

import onnx
import pytest


def _drop_metadata(key: str) -> Callable[[onnx.ModelProto], None]:
    def edit(proto: onnx.ModelProto) -> None:
        kept = [p for p in proto.metadata_props if p.key != key]
        del proto.metadata_props[:]
        proto.metadata_props.extend(kept)

    return edit


def _set_metadata(key: str, value: str) -> Callable[[onnx.ModelProto], None]:
    def edit(proto: onnx.ModelProto) -> None:
        for prop in proto.metadata_props:
            if prop.key == key:
                prop.value = value

    return edit


def _rename_output(old: str, new: str) -> Callable[[onnx.ModelProto], None]:
    def edit(proto: onnx.ModelProto) -> None:
        for node in proto.graph.node:
            node.output[:] = [new if o == old else o for o in node.output]
        for output in proto.graph.output:
            if output.name == old:
                output.name = new

    return edit


def _fix_batch(proto: onnx.ModelProto) -> None:
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    dim.ClearField("dim_param")
    dim.dim_value = 1


CASES = [
    (_drop_metadata("spikeserve.timesteps"), 'metadata key "spikeserve.timesteps" is missing'),
    (_set_metadata("spikeserve.labels", '["a", "b"]'), "has 2 labels for 10 classes"),
    (_set_metadata("spikeserve.default_threshold", "0"), "spikeserve.default_threshold"),
    (
        _rename_output("state_out.1", "hidden"),
        'state input "state_in.1" has no matching output "state_out.1"',
    ),
    (_rename_output("logits", "scores"), 'graph has no output named "logits"'),
    (_fix_batch, '"x" must have a dynamic batch dimension first'),
]


@pytest.mark.parametrize(("edit", "message"), CASES)
def test_contract_breaking_models_are_refused(tiny_model, spikeserve_bin, tmp_path: Path, edit, message):
    import subprocess

    source, _ = tiny_model
    proto = onnx.load(str(source / "model.onnx"))
    edit(proto)
    broken = tmp_path / "model.onnx"
    onnx.save_model(proto, str(broken))
    result = subprocess.run([spikeserve_bin, "inspect", broken], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "breaks the step-model contract" in result.stderr
    assert message in result.stderr, result.stderr
