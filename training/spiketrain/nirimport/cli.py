"""``spikeserve-import``: a NIR graph to a model directory the server loads; and its calibration.

    spikeserve-import GRAPH.nir OUT_DIR --from snntorch --timesteps 10 [--labels a,b,...] [--input frames]
    spikeserve-import calibrate MODEL_DIR --data FILE

Every refusal is one line on stderr naming the node, the field or the edge, with exit status 2, and
nothing is written: the directory is assembled in a temporary directory beside OUT_DIR and renamed
into place at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx

from ..events import EventBinning
from ..export import METADATA_PREFIX
from . import GraphError, reader
from .builder import READOUTS, Built, build
from .presets import PRODUCERS, Preset, preset

CARD = "card.md"
#: The card's note until ``spikeserve-import calibrate`` runs (which removes it).
UNCALIBRATED = "Accuracy per timestep and calibrated exits: not measured yet;"
SOURCE = "source.json"


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 2,34,34") from error
    if not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape of positive sizes")
    return shape


def import_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikeserve-import",
        description="Import a NIR graph as a spikeserve model directory "
        "(or: spikeserve-import calibrate MODEL_DIR --data FILE).",
    )
    parser.add_argument("graph", type=Path, help="the NIR file (HDF5) written by nir.write")
    parser.add_argument("out", type=Path, help="the model directory to write (models/<name>)")
    parser.add_argument("--from", dest="producer", required=True, choices=PRODUCERS, help="the framework that wrote it")
    parser.add_argument("--timesteps", type=int, required=True, help="T: timesteps per request")
    parser.add_argument("--dt", type=float, help="the step in the graph's time unit (preset's by default)")
    parser.add_argument("--discretisation", choices=("euler", "exact"))
    parser.add_argument("--reset", choices=("zero", "subtract", "value"))
    parser.add_argument(
        "--reset-timing",
        choices=("immediate", "delayed", "both"),
        help="after the spike, at the next step's start, or both (snnTorch's reset_delay=False)",
    )
    parser.add_argument("--compare", choices=("gt", "ge"), help="spike where v > threshold (gt) or v >= threshold (ge)")
    parser.add_argument("--multi-spike", choices=("yes", "no"), help="floor(v / threshold) spikes per step")
    parser.add_argument("--synapse-input", choices=("euler", "jump"))
    parser.add_argument("--leaky-input", choices=("scaled", "unscaled"))
    parser.add_argument("--readout", choices=READOUTS, default="auto", help="membrane, spikes or the node's output")
    parser.add_argument("--readout-node", help="the node read out (default: the one feeding the graph's Output)")
    parser.add_argument("--input", dest="input_kind", choices=("static", "frames", "events"), default="frames")
    parser.add_argument("--input-shape", type=_shape, help="a frame's shape without batch, e.g. 2,34,34")
    parser.add_argument("--window-us", type=int, help="events: the window binned into T frames (microseconds)")
    parser.add_argument("--labels", help="comma-separated class names, or @FILE with one per line")
    parser.add_argument("--name", help="the model's name on its card (default: OUT_DIR's name)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    return parser


def _labels(text: str | None, classes: int) -> list[str]:
    if text is None:
        return [str(i) for i in range(classes)]
    if text.startswith("@"):
        names = [line.strip() for line in Path(text[1:]).read_text().splitlines() if line.strip()]
    else:
        names = [n.strip() for n in text.split(",")]
    if len(names) != classes:
        raise GraphError(f"--labels: {len(names)} labels for a readout of {classes} classes")
    return names


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_graph(args: argparse.Namespace) -> Path:
    if args.timesteps < 1:
        raise GraphError("--timesteps must be at least 1")
    chosen = preset(
        args.producer,
        dt=args.dt,
        discretisation=args.discretisation,
        reset=args.reset,
        reset_timing=args.reset_timing,
        compare=args.compare,
        multi_spike=None if args.multi_spike is None else args.multi_spike == "yes",
        synapse_input=args.synapse_input,
        leaky_input=args.leaky_input,
    )
    if chosen.dt <= 0:
        raise GraphError(f"--dt {chosen.dt}: must be positive")
    graph = reader.read(args.graph)
    built = build(graph, chosen, args.readout_node, args.readout, args.input_shape)
    labels = _labels(args.labels, built.num_classes)
    metadata: dict[str, Any] = {
        "timesteps": args.timesteps,
        "num_classes": built.num_classes,
        "labels": labels,
        "input_kind": args.input_kind,
        # Until calibrated: run every timestep (1.0 turns the confidence exit off).
        "default_threshold": 1.0,
        # Not measured until `spikeserve-import calibrate` runs on data (the contract requires the key).
        "accuracy_per_timestep": [0.0] * args.timesteps,
        "input_description": f"one frame {list(built.frame_shape)} per timestep, as the {args.producer} model took it",
    }
    if args.input_kind == "events":
        if len(built.frame_shape) != 3 or args.window_us is None:
            raise GraphError("--input events needs a [polarities, height, width] frame and --window-us")
        polarities, height, width = built.frame_shape
        metadata["events"] = EventBinning(width, height, polarities, args.window_us, args.timesteps).to_metadata()
    source = {
        "file": args.graph.name,
        "sha256": _sha256(args.graph),
        "nir_version": graph.version,
        "producer": args.producer,
        "preset": chosen.to_json(),
        "readout": built.readout,
        "synaptic_fanout": built.fanout,
        "states": [list(s) for s in built.state_shapes],
    }
    metadata["training"] = {"imported_from": "nir", **{k: source[k] for k in ("file", "sha256", "producer")}}
    _set_props(built.model, metadata)
    name = args.name or args.out.resolve().name
    return _write_atomically(
        args.out, args.overwrite, lambda tmp: _write_directory(tmp, built, metadata, source, chosen, name)
    )


def _set_props(model: onnx.ModelProto, metadata: dict[str, Any]) -> None:
    del model.metadata_props[:]
    for key, value in {"contract_version": "1", **metadata}.items():
        prop = model.metadata_props.add()
        prop.key = METADATA_PREFIX + key
        prop.value = value if isinstance(value, str) else json.dumps(value)


def _write_directory(
    directory: Path, built: Built, metadata: dict[str, Any], source: dict[str, Any], chosen: Preset, name: str
) -> None:
    onnx.save_model(built.model, str(directory / "model.onnx"))
    (directory / SOURCE).write_text(json.dumps({**source, "layers": built.layers}, indent=1) + "\n")
    (directory / CARD).write_text(card_text(name, metadata, source, built, chosen))


def _write_atomically(out: Path, overwrite: bool, write: Callable[[Path], None]) -> Path:
    """Writes into a temporary directory beside ``out`` and renames it into place: a refusal or a
    crash half-way leaves no half-written model directory for the server to trip on."""
    if out.exists() and not overwrite:
        raise GraphError(f"{out} exists; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.import-", dir=out.parent))
    try:
        write(tmp)
        os.chmod(tmp, 0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def card_text(name: str, metadata: dict[str, Any], source: dict[str, Any], built: Built, chosen: Preset) -> str:
    p = chosen.to_json()
    lines = [
        f"# {name}",
        "",
        f"Imported from NIR by `spikeserve-import` (not trained by this project's training job). Source file "
        f"`{source['file']}`, sha256 `{source['sha256']}`, NIR version {source['nir_version']}, producer "
        f"**{source['producer']}**.",
        "",
        f"* T = {metadata['timesteps']} timesteps, input `{metadata['input_kind']}` frames {list(built.frame_shape)}, "
        f"{built.num_classes} classes: {', '.join(metadata['labels'])}",
        f"* Readout: node `{built.readout['node']}` ({built.readout['type']}), "
        f"its {built.readout['mode']} per timestep "
        "are the logits; the server averages them over the timesteps run",
        f"* States: {len(built.state_shapes)} ({', '.join(str(list(s)) for s in built.state_shapes) or 'none'})",
        f"* Synaptic operations per spike: {json.dumps(built.fanout)}",
        "",
        "## Discretisation (every choice the file leaves open)",
        "",
        "| choice | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in p.items()),
        "",
        "## Layers as discretised",
        "",
        "| node | type | shape | decay | input gain | leak | threshold | reset |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| `{layer['node']}` | {layer['type']} | {layer['shape']} | {layer.get('decay')} "
            f"| {layer.get('input_gain')} "
            f"| {layer.get('leak')} | {layer.get('threshold', '-')} | {layer.get('reset', '-')} "
            f"{layer.get('reset_timing', '')} |"
            for layer in built.layers
        ),
        "",
        UNCALIBRATED + " run "
        "`spikeserve-import calibrate MODEL_DIR --data FILE` on your own recordings (until then the default "
        "threshold is 1.0: every request runs all T timesteps).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["calibrate"]:
            from .calibrate import calibrate_main

            calibrate_main(argv[1:])
            return
        args = import_parser().parse_args(argv)
        out = import_graph(args)
    except GraphError as error:
        print(f"spikeserve-import: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {out} (model.onnx, {CARD}, {SOURCE})")


if __name__ == "__main__":
    main()
