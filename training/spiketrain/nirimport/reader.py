"""Reads a NIR file (HDF5) into a flat graph: nested subgraphs inlined under dotted names.

Read with h5py directly rather than ``nir.read``: the NIR package's type inference fails on graphs
that snnTorch and Norse write (docs/import.md), and reading the raw fields lets every refusal name
the node and the field it is about.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import GraphError

#: NIR file versions this reader understands (the ``version`` string at the file's root).
KNOWN_MAJOR_VERSIONS = (0, 1)

#: Fields each supported node type must have, and those it may have.
REQUIRED: dict[str, tuple[str, ...]] = {
    "Input": ("shape",),
    "Output": (),
    "Affine": ("weight", "bias"),
    "Linear": ("weight",),
    "Scale": ("scale",),
    "Conv1d": ("weight",),
    "Conv2d": ("weight",),
    "Flatten": (),
    "SumPool2d": ("kernel_size",),
    "AvgPool2d": ("kernel_size",),
    "I": ("r",),
    "IF": ("r", "v_threshold"),
    "LI": ("tau", "r", "v_leak"),
    "LIF": ("tau", "r", "v_leak", "v_threshold"),
    "CubaLI": ("tau_syn", "tau_mem", "r", "v_leak"),
    "CubaLIF": ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold"),
    "Threshold": ("threshold",),
}
#: Fields that are numbers (checked for NaN and infinity); the rest are shapes, strings or flags.
NUMERIC = ("weight", "bias", "scale", "r", "tau", "tau_syn", "tau_mem", "v_leak", "v_threshold", "v_reset", "w_in")
#: Time constants must be positive.
POSITIVE = ("tau", "tau_syn", "tau_mem")


@dataclass
class Node:
    name: str  # dotted path through the subgraphs: "rlif.w_rec"
    kind: str  # the NIR type: "LIF", "Affine", ...
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    """Every node of the file, subgraphs inlined; a subgraph's Input and Output nodes become pass-throughs."""

    version: str
    nodes: dict[str, Node]
    edges: list[tuple[str, str]]
    inputs: list[str]  # top-level Input nodes
    outputs: list[str]  # top-level Output nodes


def read(path: Path) -> Graph:
    try:
        handle = h5py.File(path, "r")
    except FileNotFoundError as error:
        raise GraphError(f"{path}: no such file") from error
    except OSError as error:
        raise GraphError(f"{path}: not a readable NIR file (HDF5; truncated or corrupt?): {error}") from error
    with handle:
        try:
            return _read(handle)
        except GraphError:
            raise
        except (KeyError, OSError, ValueError, TypeError, RuntimeError) as error:
            raise GraphError(f"{path}: not a readable NIR file (corrupt structure: {error})") from error


def _read(handle: h5py.File) -> Graph:
    if "version" not in handle:
        raise GraphError("field 'version' is missing at the file's root: not a NIR file")
    version = _text(handle["version"][()])
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?(\S*)", version)
    if match is None or int(match.group(1)) not in KNOWN_MAJOR_VERSIONS:
        known = ", ".join(f"{v}.x" for v in KNOWN_MAJOR_VERSIONS)
        raise GraphError(f"NIR version {version!r} is not supported (this importer reads {known})")
    if "node" not in handle:
        raise GraphError("group 'node' is missing at the file's root: not a NIR file")
    root = handle["node"]
    if _text(_dataset(root, "type", "the root node")) != "NIRGraph":
        raise GraphError("the root node is not a NIRGraph")
    nodes: dict[str, Node] = {}
    edges: list[tuple[str, str]] = []
    _inline(root, "", nodes, edges)
    inputs = [n for n, node in nodes.items() if "." not in n and node.kind == "Input"]
    outputs = [n for n, node in nodes.items() if "." not in n and node.kind == "Output"]
    return Graph(version=version, nodes=nodes, edges=edges, inputs=inputs, outputs=outputs)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf8")
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO" and value.size == 1:
        return _text(value.reshape(-1)[0])
    return str(value)


def _dataset(group: h5py.Group, key: str, where: str) -> Any:
    if key not in group:
        raise GraphError(f"{where}: field '{key}' is missing")
    item = group[key]
    if not isinstance(item, h5py.Dataset):
        raise GraphError(f"{where}: field '{key}' is not a value")
    return item[()]


def _inline(group: h5py.Group, prefix: str, nodes: dict[str, Node], edges: list[tuple[str, str]]) -> None:
    where = f"subgraph '{prefix.rstrip('.')}'" if prefix else "the root graph"
    if "nodes" not in group:
        raise GraphError(f"{where}: field 'nodes' is missing")
    children = group["nodes"]
    subgraphs: dict[str, dict[str, list[str]]] = {}
    for name in children:
        child = children[name]
        full = prefix + name
        kind = _text(_dataset(child, "type", f"node '{full}'"))
        if kind == "NIRGraph":
            _inline(child, full + ".", nodes, edges)
            direct = [n for n in nodes if n.startswith(full + ".") and "." not in n[len(full) + 1 :]]
            subgraphs[name] = {role: [n for n in direct if nodes[n].kind == role] for role in ("Input", "Output")}
            continue
        if kind not in REQUIRED:
            supported = ", ".join([*REQUIRED, "NIRGraph"])
            raise GraphError(f"node '{full}': unsupported NIR node type {kind} (supported: {supported})")
        params = {
            k: child[k][()] for k in child if k not in ("type", "metadata") and isinstance(child[k], h5py.Dataset)
        }
        if kind == "Flatten" and "input_type" in child and isinstance(child["input_type"], h5py.Group):
            # Some writers store Flatten's input type as a group {"input": shape}.
            inner = child["input_type"]
            if "input" in inner:
                params["input_type"] = inner["input"][()]
        for key in REQUIRED[kind]:
            if key not in params:
                raise GraphError(f"node '{full}' ({kind}): field '{key}' is missing")
        for key in NUMERIC:
            if key in params:
                params[key] = _numeric(params[key], full, kind, key)
        nodes[full] = Node(full, kind, params)
    if "edges" not in group:
        raise GraphError(f"{where}: field 'edges' is missing")
    raw = group["edges"][()]
    pairs = np.asarray(raw).reshape(-1, 2) if np.asarray(raw).size else np.zeros((0, 2))
    for source, target in pairs:
        edges.append(
            (
                _endpoint(prefix, _text(source), subgraphs, "Output"),
                _endpoint(prefix, _text(target), subgraphs, "Input"),
            )
        )


def _endpoint(prefix: str, name: str, subgraphs: dict[str, dict[str, list[str]]], role: str) -> str:
    """An edge to a subgraph as a whole goes to its Input node; one from it leaves its Output node."""
    if name in subgraphs:
        wanted = subgraphs[name][role]
        if len(wanted) != 1:
            raise GraphError(f"edge to subgraph '{prefix}{name}': it has no single {role} node to connect to")
        return wanted[0]
    return prefix + name


def _numeric(value: Any, node: str, kind: str, key: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise GraphError(f"node '{node}' ({kind}): field '{key}' is not numeric") from error
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0]) if array.ndim else ()
        raise GraphError(
            f"node '{node}' ({kind}): field '{key}' has {int(bad.sum())} NaN or infinite value(s) "
            f"(first at index {first})"
        )
    if key in POSITIVE and (array <= 0).any():
        raise GraphError(f"node '{node}' ({kind}): field '{key}' must be positive (a time constant)")
    return array
