"""A flat NIR graph and a preset -> one timestep as an ONNX graph (docs/MODEL-CONTRACT.md).

Built node by node with ``onnx.helper`` (no tracing): every NIR node maps to a few standard
operators, every neuron's membrane (and synaptic current) becomes a ``state_in.i`` / ``state_out.i``
pair, and every recurrent edge becomes a state that carries its source's output to the next step
(NIRTorch's reading: a back edge delivers the previous step's value, zeros at t = 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..export import INPUT_NAME, LOGITS_NAME, OPSET, SYNAPTIC_OPS_NAME, state_in_name, state_out_name
from . import GraphError
from .presets import Preset
from .reader import Graph, Node

NEURONS = ("I", "IF", "LI", "LIF", "CubaLI", "CubaLIF")
SPIKING = ("IF", "LIF", "CubaLIF", "Threshold")
#: Readout modes: a neuron's membrane, its spikes, or a node's plain output (Affine, LI, ...).
READOUTS = ("auto", "membrane", "spikes", "output")


@dataclass
class Built:
    model: onnx.ModelProto
    frame_shape: tuple[int, ...]
    num_classes: int
    state_shapes: list[tuple[int, ...]]
    readout: dict[str, str]
    #: Per spiking node, the synapses one of its spikes drives (what ``synaptic_ops`` counts).
    fanout: dict[str, float]
    order: list[str]
    layers: list[dict[str, object]] = field(default_factory=list)


class _Onnx:
    """Accumulates nodes and initializers under unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        clean = "".join(c if c.isalnum() else "_" for c in hint)
        return f"{clean}_{self.count}"

    def const(self, hint: str, value: np.ndarray, dtype: type = np.float32) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, kind: str, inputs: list[str], hint: str, **attrs: object) -> str:
        out = self.name(hint)
        self.nodes.append(helper.make_node(kind, inputs, [out], name=out, **attrs))
        return out


def _ints(value: object, n: int, node: Node, key: str) -> tuple[int, ...]:
    array = np.atleast_1d(np.asarray(value)).astype(np.int64).reshape(-1)
    if array.size == 1:
        array = np.repeat(array, n)
    if array.size != n:
        raise GraphError(f"node '{node.name}' ({node.kind}): field '{key}' has {array.size} values, expected {n}")
    return tuple(int(v) for v in array)


def _conv_pads(
    node: Node, kernel: tuple[int, ...], dilation: tuple[int, ...], stride: tuple[int, ...]
) -> tuple[int, ...]:
    """ONNX ``pads`` (all begins, then all ends) from NIR's padding: int, tuple, 'same' or 'valid'."""
    n = len(kernel)
    raw = node.params.get("padding", 0)
    text = raw.decode() if isinstance(raw, bytes) else raw if isinstance(raw, str) else None
    if isinstance(raw, np.ndarray) and raw.dtype.kind in "SO":
        text = raw.reshape(-1)[0]
        text = text.decode() if isinstance(text, bytes) else str(text)
    if text is not None:
        if text == "valid":
            return (0,) * (2 * n)
        if text == "same":
            if any(s != 1 for s in stride):
                raise GraphError(f"node '{node.name}' ({node.kind}): padding 'same' needs stride 1, got {stride}")
            total = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
            begins = [t // 2 for t in total]  # PyTorch's split: the odd pixel goes at the end
            return (*begins, *(t - b for t, b in zip(total, begins, strict=True)))
        raise GraphError(
            f"node '{node.name}' ({node.kind}): field 'padding' is {text!r} (int, tuple, 'same' or 'valid')"
        )
    pads = _ints(raw, n, node, "padding")
    return (*pads, *pads)


class _Builder:
    def __init__(self, graph: Graph, preset: Preset, input_shape: tuple[int, ...] | None) -> None:
        self.graph = graph
        self.preset = preset
        self.input_shape_override = input_shape
        self.onnx = _Onnx()
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.values: dict[str, str] = {}  # node -> ONNX tensor of its output
        self.membranes: dict[str, str] = {}
        self.spikes: dict[str, str] = {}
        self.state_inputs: list[onnx.ValueInfoProto] = []
        self.state_outputs: list[tuple[str, tuple[int, ...]]] = []
        self.state_shapes: list[tuple[int, ...]] = []
        self.layers: list[dict[str, object]] = []

    # -- structure ---------------------------------------------------------------------------------
    def structure(self) -> tuple[list[str], list[tuple[str, str]], dict[str, list[str]]]:
        """(evaluation order, back edges, inbound forward sources per node)."""
        graph = self.graph
        for source, target in graph.edges:
            for end in (source, target):
                if end not in graph.nodes:
                    raise GraphError(f"edge '{source}' -> '{target}': no node named '{end}'")
        if len(graph.inputs) != 1:
            raise GraphError(f"the graph has {len(graph.inputs)} top-level Input nodes; exactly one is supported")
        successors: dict[str, list[str]] = {n: [] for n in graph.nodes}
        for source, target in graph.edges:
            successors[source].append(target)
        # A cycle must pass through a neuron: without one there is no state to carry it.
        stateless = {n for n, node in graph.nodes.items() if node.kind not in NEURONS}
        self._refuse_stateless_cycles(stateless, successors)
        # Delayed edges: out of a neuron into a node that leads back to it. Every cycle passes through
        # a neuron (checked above), so cutting these breaks them all; the consumer gets the neuron's
        # output of the previous step (zeros at t = 1), which is snnTorch's RLeaky: W * spk_{t-1} + b.
        start = graph.inputs[0]
        reach = {n: self._reachable(n, successors) for n in graph.nodes}
        delayed = [(s, t) for s, t in graph.edges if graph.nodes[s].kind in NEURONS and s in reach[t]]
        reached = self._reachable(start, successors) | {start}
        forward = [(s, t) for s, t in graph.edges if s in reached and (s, t) not in delayed]
        inbound: dict[str, list[str]] = {n: [] for n in reached}
        for s, t in forward:
            inbound[t].append(s)
        pending = {n: len(inbound[n]) for n in reached}
        ready = [n for n in reached if pending[n] == 0]
        order: list[str] = []
        while ready:
            node = ready.pop(0)
            order.append(node)
            for s, t in forward:
                if s == node:
                    pending[t] -= 1
                    if pending[t] == 0:
                        ready.append(t)
        return order, delayed, inbound

    @staticmethod
    def _reachable(start: str, successors: dict[str, list[str]]) -> set[str]:
        seen: set[str] = set()
        frontier = list(successors.get(start, []))
        while frontier:
            node = frontier.pop()
            if node not in seen:
                seen.add(node)
                frontier.extend(successors.get(node, []))
        return seen

    def _refuse_stateless_cycles(self, stateless: set[str], successors: dict[str, list[str]]) -> None:
        colour: dict[str, int] = {}
        for root in stateless:
            if colour.get(root):
                continue
            path: list[str] = []
            stack: list[tuple[str, int]] = [(root, 0)]
            colour[root] = 1
            path.append(root)
            while stack:
                node, i = stack.pop()
                nexts = [n for n in successors[node] if n in stateless]
                if i < len(nexts):
                    stack.append((node, i + 1))
                    nxt = nexts[i]
                    if colour.get(nxt, 0) == 1:
                        loop = [*path[path.index(nxt) :], nxt]
                        raise GraphError(
                            f"cycle with no state: {' -> '.join(repr(n) for n in loop)} (a recurrent edge must pass "
                            f"through a neuron that holds the previous step's value); edge '{node}' -> '{nxt}'"
                        )
                    if colour.get(nxt, 0) == 0:
                        colour[nxt] = 1
                        path.append(nxt)
                        stack.append((nxt, 0))
                else:
                    colour[node] = 2
                    path.pop()

    # -- shapes ------------------------------------------------------------------------------------
    def input_shape(self, node: Node) -> tuple[int, ...]:
        if self.input_shape_override is not None:
            return self.input_shape_override
        shape = tuple(int(v) for v in np.atleast_1d(np.asarray(node.params["shape"])).reshape(-1))
        if self.preset.input_has_batch and len(shape) > 1 and shape[0] == 1:
            shape = shape[1:]  # the exporter's example batch of one
        if not shape or any(d <= 0 for d in shape):
            raise GraphError(f"node '{node.name}' (Input): field 'shape' is {list(shape)}; give --input-shape")
        return shape

    # -- emission ----------------------------------------------------------------------------------
    def infer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every node's output shape, by sweeps that take any input whose shape is known: a node fed only
        by a delayed edge learns its shape from the neuron upstream (checked again when emitted)."""
        order, delayed, inbound = self.structure()
        start = self.graph.inputs[0]
        self.shapes[start], self.values[start] = self.input_shape(self.graph.nodes[start]), INPUT_NAME
        sources = {n: [*inbound[n], *(s for s, t in delayed if t == n)] for n in order}
        progress = True
        while progress:
            progress = False
            for name in order:
                if name in self.shapes:
                    continue
                known = [s for s in sources[name] if s in self.shapes]
                if not known:
                    continue
                self.values[name], self.shapes[name] = self._emit(
                    self.graph.nodes[name], "dry", self.shapes[known[0]], known[0]
                )
                progress = True
        return self.shapes

    def build(self, readout_node: str | None, readout_mode: str) -> Built:
        order, delayed, inbound = self.structure()
        shapes_ahead = _Builder(self.graph, self.preset, self.input_shape_override).infer_shapes()
        graph = self.graph
        carried: dict[str, list[tuple[str, str]]] = {}  # target -> (source, carried state input)
        pending_carried: list[tuple[str, str, int]] = []  # (source, state_in, index)
        start = graph.inputs[0]
        frame_shape = self.input_shape(graph.nodes[start])
        x = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", *frame_shape])
        for source, target in delayed:
            if source not in shapes_ahead:
                continue
            index, name = self._state(shapes_ahead[source])
            carried.setdefault(target, []).append((source, name))
            pending_carried.append((source, name, index))
        for name in order:
            node = graph.nodes[name]
            if name == start:
                self.values[name], self.shapes[name] = INPUT_NAME, frame_shape
                continue
            feeds = [(s, self.values[s], self.shapes[s]) for s in inbound[name]]
            feeds += [(s, state, shapes_ahead[s]) for s, state in carried.get(name, [])]
            if not feeds:
                continue
            first, value, in_shape = feeds[0]
            for other, other_value, other_shape in feeds[1:]:
                if other_shape != in_shape:
                    raise GraphError(
                        f"shape mismatch into node '{name}': edge '{first}' -> '{name}' carries {list(in_shape)} but "
                        f"edge '{other}' -> '{name}' carries {list(other_shape)}"
                    )
                value = self.onnx.op("Add", [value, other_value], f"{name}_fanin")
            self.values[name], self.shapes[name] = self._emit(node, value, in_shape, first)
        for source, _state_name, index in pending_carried:
            self.state_outputs[index] = (self.values[source], self.shapes[source])
        readout, logits_value, classes = self._readout(readout_node, readout_mode)
        fanout = self._fanout(order)
        outputs = [helper.make_tensor_value_info(LOGITS_NAME, TensorProto.FLOAT, ["batch", classes])]
        self.onnx.nodes.append(helper.make_node("Identity", [logits_value], [LOGITS_NAME], name="logits_out"))
        for i, (value, shape) in enumerate(self.state_outputs):
            self.onnx.nodes.append(helper.make_node("Identity", [value], [state_out_name(i)], name=f"state_out_{i}"))
            outputs.append(helper.make_tensor_value_info(state_out_name(i), TensorProto.FLOAT, ["batch", *shape]))
        outputs.append(self._synaptic_ops(fanout))
        onnx_graph = helper.make_graph(
            self.onnx.nodes, "nir_step", [x, *self.state_inputs], outputs, initializer=self.onnx.initializers
        )
        model = helper.make_model(
            onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="spikeserve-import"
        )
        model.ir_version = 8  # ONNX Runtime reads it; a newer onnx package would otherwise stamp a newer one
        onnx.checker.check_model(model, full_check=True)
        return Built(model, frame_shape, classes, self.state_shapes, readout, fanout, order, self.layers)

    def _new_state_slot(self) -> int:
        index = len(self.state_shapes)
        self.state_shapes.append(())
        self.state_outputs.append(("", ()))
        return index

    def _state(self, shape: tuple[int, ...]) -> tuple[int, str]:
        index = self._new_state_slot()
        name = state_in_name(index)
        self.state_shapes[index] = shape
        self.state_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *shape]))
        self.state_inputs.sort(key=lambda v: int(v.name.split(".")[1]))
        return index, name

    def _emit(self, node: Node, value: str, shape: tuple[int, ...], source: str) -> tuple[str, tuple[int, ...]]:
        kind, p, o = node.kind, node.params, self.onnx
        edge = f"edge '{source}' -> '{node.name}'"
        if kind in ("Input", "Output"):  # a subgraph's ends, or the top-level Output
            return value, shape
        if kind in ("Affine", "Linear"):
            weight = np.asarray(p["weight"])
            if weight.ndim != 2:
                raise GraphError(f"node '{node.name}' ({kind}): field 'weight' must be 2-D, got {list(weight.shape)}")
            if shape[-1] != weight.shape[1]:
                raise GraphError(
                    f"shape mismatch on {edge}: it carries {list(shape)} but node '{node.name}' ({kind}) takes "
                    f"{weight.shape[1]} inputs (weight {list(weight.shape)})"
                )
            out = o.op("MatMul", [value, o.const(f"{node.name}_wT", weight.T)], node.name)
            if kind == "Affine":
                bias = np.asarray(p["bias"]).reshape(-1)
                if bias.size != weight.shape[0]:
                    raise GraphError(
                        f"node '{node.name}' (Affine): field 'bias' has {bias.size} values "
                        f"for {weight.shape[0]} outputs"
                    )
                out = o.op("Add", [out, o.const(f"{node.name}_b", bias)], node.name)
            return out, (*shape[:-1], weight.shape[0])
        if kind == "Scale":
            scale = self._broadcast(node, "scale", shape)
            return o.op("Mul", [value, o.const(f"{node.name}_s", scale)], node.name), shape
        if kind in ("Conv1d", "Conv2d"):
            return self._conv(node, value, shape, edge)
        if kind == "Flatten":
            start = int(np.asarray(p.get("start_dim", 0)))
            end = int(np.asarray(p.get("end_dim", -1)))
            rank = len(shape)
            start, end = (start + rank if start < 0 else start), (end + rank if end < 0 else end)
            if not 0 <= start <= end < rank:
                raise GraphError(
                    f"node '{node.name}' (Flatten): dims {start}..{end} do not fit the input {list(shape)} ({edge})"
                )
            out_shape = (*shape[:start], int(np.prod(shape[start : end + 1])), *shape[end + 1 :])
            target = o.const(f"{node.name}_shape", np.array([0, *out_shape]), np.int64)
            return o.op("Reshape", [value, target], node.name), out_shape
        if kind in ("SumPool2d", "AvgPool2d"):
            return self._pool(node, value, shape, edge)
        if kind == "Threshold":
            theta = self._broadcast(node, "threshold", shape)
            spikes = self._compare(value, o.const(f"{node.name}_theta", theta), node.name)
            self.spikes[node.name] = spikes
            return spikes, shape
        if kind in NEURONS:
            return self._neuron(node, value, shape), shape
        raise GraphError(f"node '{node.name}': unsupported NIR node type {kind}")

    def _conv(self, node: Node, value: str, shape: tuple[int, ...], edge: str) -> tuple[str, tuple[int, ...]]:
        p = node.params
        weight = np.asarray(p["weight"])
        n = 2 if node.kind == "Conv2d" else 1
        if weight.ndim != n + 2:
            raise GraphError(
                f"node '{node.name}' ({node.kind}): field 'weight' must be {n + 2}-D, got {list(weight.shape)}"
            )
        groups = int(np.asarray(p.get("groups", 1)))
        if len(shape) != n + 1 or shape[0] != weight.shape[1] * groups:
            raise GraphError(
                f"shape mismatch on {edge}: it carries {list(shape)} but node '{node.name}' ({node.kind}) takes "
                f"{weight.shape[1] * groups} channels in {n} spatial dims "
                f"(weight {list(weight.shape)}, groups {groups})"
            )
        kernel = tuple(int(k) for k in weight.shape[2:])
        stride = _ints(p.get("stride", 1), n, node, "stride")
        dilation = _ints(p.get("dilation", 1), n, node, "dilation")
        pads = _conv_pads(node, kernel, dilation, stride)
        spatial = []
        for i in range(n):
            size = (shape[1 + i] + pads[i] + pads[n + i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
            if size <= 0:
                raise GraphError(
                    f"node '{node.name}' ({node.kind}): the input {list(shape)} is smaller than the kernel ({edge})"
                )
            spatial.append(size)
        inputs = [value, self.onnx.const(f"{node.name}_w", weight)]
        if "bias" in p:
            bias = np.asarray(p["bias"]).reshape(-1)
            if bias.size == 1 and weight.shape[0] > 1:
                bias = np.repeat(bias, weight.shape[0])
            inputs.append(self.onnx.const(f"{node.name}_b", bias))
        out = self.onnx.op(
            "Conv",
            inputs,
            node.name,
            kernel_shape=list(kernel),
            strides=list(stride),
            dilations=list(dilation),
            pads=list(pads),
            group=groups,
        )
        return out, (int(weight.shape[0]), *spatial)

    def _pool(self, node: Node, value: str, shape: tuple[int, ...], edge: str) -> tuple[str, tuple[int, ...]]:
        p = node.params
        if len(shape) != 3:
            raise GraphError(
                f"shape mismatch on {edge}: node '{node.name}' ({node.kind}) takes [C, H, W], got {list(shape)}"
            )
        kernel = _ints(p["kernel_size"], 2, node, "kernel_size")
        stride = _ints(p.get("stride", kernel), 2, node, "stride")
        pad = _ints(p.get("padding", 0), 2, node, "padding")
        spatial = [(shape[1 + i] + 2 * pad[i] - kernel[i]) // stride[i] + 1 for i in range(2)]
        if any(s <= 0 for s in spatial):
            raise GraphError(
                f"node '{node.name}' ({node.kind}): the input {list(shape)} is smaller than the window ({edge})"
            )
        if node.kind == "SumPool2d":
            # A depthwise convolution with ones: sums of spike counts stay exact (an average times the
            # window area would round).
            ones = np.ones((shape[0], 1, *kernel), dtype=np.float32)
            out = self.onnx.op(
                "Conv",
                [value, self.onnx.const(f"{node.name}_ones", ones)],
                node.name,
                kernel_shape=list(kernel),
                strides=list(stride),
                pads=[*pad, *pad],
                group=shape[0],
            )
        else:
            out = self.onnx.op(
                "AveragePool",
                [value],
                node.name,
                kernel_shape=list(kernel),
                strides=list(stride),
                pads=[*pad, *pad],
                count_include_pad=1,
            )
        return out, (shape[0], *spatial)

    def _broadcast(self, node: Node, key: str, shape: tuple[int, ...], default: float | None = None) -> np.ndarray:
        """A parameter as an array that broadcasts against ``[B, *shape]``: scalars stay scalars."""
        if key not in node.params:
            if default is None:
                raise GraphError(f"node '{node.name}' ({node.kind}): field '{key}' is missing")
            return np.asarray(default, dtype=np.float64)
        value = np.asarray(node.params[key], dtype=np.float64)
        if value.size == 1:
            return value.reshape(())
        if value.shape == shape:
            return value
        if value.size == int(np.prod(shape)):
            return value.reshape(shape)
        if len(shape) > 1 and value.reshape(-1).shape == (shape[0],):  # per channel
            return value.reshape((shape[0],) + (1,) * (len(shape) - 1))
        raise GraphError(
            f"node '{node.name}' ({node.kind}): field '{key}' has shape {list(value.shape)}, which does not "
            f"broadcast to the layer {list(shape)}"
        )

    def _decay(self, node: Node, key: str, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        tau = self._broadcast(node, key, shape)
        if self.preset.tau_is_dt_times_tau:
            tau = tau / self.preset.dt
        ratio = self.preset.dt / tau
        if self.preset.discretisation == "exact":
            decay = np.exp(-ratio)
            return decay, 1.0 - decay
        return 1.0 - ratio, ratio

    def _compare(self, value: str, theta: str, hint: str) -> str:
        op = "Greater" if self.preset.compare == "gt" else "GreaterOrEqual"
        return self.onnx.op("Cast", [self.onnx.op(op, [value, theta], hint)], f"{hint}_spikes", to=TensorProto.FLOAT)

    def _affine(self, value: str, scale: np.ndarray, hint: str) -> str:
        """``scale * value``, skipping a multiplication by exactly one (bit-exact with frameworks that do none)."""
        if np.all(scale == 1.0):
            return value
        return self.onnx.op("Mul", [value, self.onnx.const(hint, scale)], hint)

    def _neuron(self, node: Node, current: str, shape: tuple[int, ...]) -> str:
        o, preset, kind, name = self.onnx, self.preset, node.kind, node.name
        r = self._broadcast(node, "r", shape)
        layer: dict[str, object] = {"node": name, "type": kind, "shape": list(shape)}
        if kind in ("CubaLI", "CubaLIF"):
            decay_syn, gain_syn = self._decay(node, "tau_syn", shape)
            w_in = self._broadcast(node, "w_in", shape, default=1.0)
            syn_gain = w_in if preset.synapse_input == "jump" else gain_syn * w_in
            syn_index, syn_in = self._state(shape)
            syn = o.op(
                "Add",
                [self._affine(syn_in, decay_syn, f"{name}_asyn"), self._affine(current, syn_gain, f"{name}_gsyn")],
                f"{name}_syn",
            )
            self.state_outputs[syn_index] = (syn, shape)
            current = syn
            decay, gain = self._decay(node, "tau_mem", shape)
            layer["synapse"] = {"decay": _summary(decay_syn), "input_gain": _summary(syn_gain)}
        elif kind in ("LI", "LIF"):
            decay, gain = self._decay(node, "tau", shape)
        else:  # I, IF: v' = r * I
            decay, gain = np.asarray(1.0), np.asarray(preset.dt)
        input_gain = (
            1.0 if kind in ("LI", "LIF", "CubaLI", "CubaLIF") and preset.leaky_input == "unscaled" else gain
        ) * r
        leak = (
            gain * self._broadcast(node, "v_leak", shape, default=0.0) if kind not in ("I", "IF") else np.asarray(0.0)
        )
        index, v_in = self._state(shape)
        layer.update({"decay": _summary(decay), "input_gain": _summary(input_gain), "leak": _summary(leak)})
        spiking = kind in SPIKING
        theta_value = self._broadcast(node, "v_threshold", shape) if spiking else None
        theta = o.const(f"{name}_theta", theta_value) if theta_value is not None else ""
        previous = v_in
        reset_value = self._broadcast(node, "v_reset", shape, default=0.0) if spiking else None
        start_reset = spiking and preset.reset_timing in ("delayed", "both")
        if start_reset:
            fired = self._compare(v_in, theta, f"{name}_fired")
            if preset.reset == "zero":
                previous = o.op("Sub", [v_in, o.op("Mul", [v_in, fired], f"{name}_r")], f"{name}_reset")
            elif preset.reset == "value":
                assert reset_value is not None
                delta = o.op("Sub", [o.const(f"{name}_vreset", reset_value), v_in], f"{name}_d")
                previous = o.op("Add", [v_in, o.op("Mul", [fired, delta], f"{name}_r")], f"{name}_reset")
        v = o.op(
            "Add",
            [self._affine(previous, decay, f"{name}_a"), self._affine(current, input_gain, f"{name}_g")],
            f"{name}_v",
        )
        if np.any(leak != 0):
            v = o.op("Add", [v, o.const(f"{name}_leak", leak)], f"{name}_v")
        if start_reset and preset.reset == "subtract":
            v = o.op("Sub", [v, self._affine(fired, theta_value, f"{name}_theta_r")], f"{name}_reset")
        if not spiking:
            self.state_outputs[index] = (v, shape)
            self.membranes[name] = v
            self.layers.append(layer)
            return v
        if preset.multi_spike:
            spikes = o.op(
                "Floor", [o.op("Div", [o.op("Relu", [v], f"{name}_pos"), theta], f"{name}_q")], f"{name}_spikes"
            )
            fired_now = o.op("Min", [spikes, o.const(f"{name}_one", np.asarray(1.0))], f"{name}_any")
        else:
            spikes = self._compare(v, theta, name)
            fired_now = spikes
        after = v
        if preset.reset_timing in ("immediate", "both"):
            if preset.reset_timing == "both":
                # snnTorch's reset_delay=False: the start-of-step reset above already took one threshold
                # (or the membrane) where the previous step ended above threshold; only the rest now.
                spikes_left = o.op("Sub", [spikes, fired], f"{name}_left")
                fired_left = o.op("Sub", [fired_now, fired], f"{name}_left")
            else:
                spikes_left, fired_left = spikes, fired_now
            if preset.reset == "subtract":
                after = o.op("Sub", [v, self._affine(spikes_left, theta_value, f"{name}_theta_r")], f"{name}_reset")
            elif preset.reset == "zero":
                after = o.op("Sub", [v, o.op("Mul", [v, fired_left], f"{name}_r")], f"{name}_reset")
            else:
                assert reset_value is not None
                delta = o.op("Sub", [o.const(f"{name}_vreset", reset_value), v], f"{name}_d")
                after = o.op("Add", [v, o.op("Mul", [fired_left, delta], f"{name}_r")], f"{name}_reset")
        self.state_outputs[index] = (after, shape)
        self.membranes[name] = after
        self.spikes[name] = spikes
        layer.update({"threshold": _summary(theta_value), "reset": preset.reset, "reset_timing": preset.reset_timing})
        self.layers.append(layer)
        return spikes

    def _readout(self, node_name: str | None, mode: str) -> tuple[dict[str, str], str, int]:
        graph = self.graph
        if node_name is None:
            if len(graph.outputs) != 1:
                raise GraphError(
                    f"the graph has {len(graph.outputs)} top-level Output nodes: name the readout with --readout-node"
                )
            feeding = [s for s, t in graph.edges if t == graph.outputs[0]]
            if len(feeding) != 1:
                raise GraphError(
                    f"Output node '{graph.outputs[0]}' has {len(feeding)} inbound edges; "
                    "name the readout with --readout-node"
                )
            node_name = feeding[0]
            while graph.nodes[node_name].kind in ("Output", "Input") and node_name in self.values:
                inner = [s for s, t in graph.edges if t == node_name]
                if len(inner) != 1:
                    break
                node_name = inner[0]
        if node_name not in graph.nodes:
            raise GraphError(f"--readout-node {node_name}: the graph has no node of that name")
        if node_name not in self.values:
            raise GraphError(f"--readout-node {node_name}: the node is not reached from the Input")
        kind = graph.nodes[node_name].kind
        if mode == "auto":
            mode = "spikes" if kind in SPIKING else "output"
        if mode == "membrane":
            if node_name not in self.membranes:
                raise GraphError(f"--readout membrane: node '{node_name}' ({kind}) has no membrane")
            value = self.membranes[node_name]
        elif mode == "spikes":
            if node_name not in self.spikes:
                raise GraphError(f"--readout spikes: node '{node_name}' ({kind}) does not spike")
            value = self.spikes[node_name]
        else:
            value = self.values[node_name]
        shape = self.shapes[node_name]
        if len(shape) != 1:
            raise GraphError(
                f"readout node '{node_name}' has shape {list(shape)}: a readout must be a vector of class scores"
            )
        return {"node": node_name, "type": kind, "mode": mode}, value, shape[0]

    def _fanout(self, order: list[str]) -> dict[str, float]:
        """Per spiking node, the synapses one spike drives: out features of each Affine/Linear it reaches,
        out channels / groups x kernel area of each convolution, through pass-through nodes."""
        successors: dict[str, list[str]] = {}
        for s, t in self.graph.edges:
            successors.setdefault(s, []).append(t)
        fanout: dict[str, float] = {}
        for name in order:
            if name not in self.spikes:
                continue
            total, seen, frontier = 0.0, set(), list(successors.get(name, []))
            while frontier:
                nxt = frontier.pop()
                if nxt in seen:
                    continue
                seen.add(nxt)
                node = self.graph.nodes[nxt]
                if node.kind in ("Affine", "Linear"):
                    total += float(np.asarray(node.params["weight"]).shape[0])
                elif node.kind in ("Conv1d", "Conv2d"):
                    weight = np.asarray(node.params["weight"])
                    groups = int(np.asarray(node.params.get("groups", 1)))
                    total += float(weight.shape[0] // groups * np.prod(weight.shape[2:]))
                elif node.kind in ("Flatten", "SumPool2d", "AvgPool2d", "Scale", "Input", "Output"):
                    frontier.extend(successors.get(nxt, []))
            fanout[name] = total
        return fanout

    def _synaptic_ops(self, fanout: dict[str, float]) -> onnx.ValueInfoProto:
        o = self.onnx
        total = None
        for name, per_spike in fanout.items():
            if per_spike == 0:
                continue
            flat = o.op("Reshape", [self.spikes[name], o.const("flat", np.array([0, -1]), np.int64)], f"{name}_flat")
            count = o.op("ReduceSum", [flat, o.const("axis", np.array([1]), np.int64)], f"{name}_count", keepdims=0)
            ops = o.op("Mul", [count, o.const(f"{name}_fanout", np.asarray(per_spike))], f"{name}_ops")
            total = ops if total is None else o.op("Add", [total, ops], "synops")
        if total is None:  # no spiking layer drives a synapse: zero per sample
            shape = o.op("Shape", [INPUT_NAME], "batch_shape", start=0, end=1)
            total = o.op(
                "ConstantOfShape", [shape], "no_ops", value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0])
            )
        o.nodes.append(helper.make_node("Identity", [total], [SYNAPTIC_OPS_NAME], name="synaptic_ops_out"))
        return helper.make_tensor_value_info(SYNAPTIC_OPS_NAME, TensorProto.FLOAT, ["batch"])


def _summary(value: np.ndarray | None) -> object:
    """A scalar as a number, a layer's values as their range (the card's table)."""
    if value is None:
        return None
    array = np.asarray(value, dtype=np.float64)
    if array.size == 1:
        return float(array.reshape(-1)[0])
    return {"min": float(array.min()), "max": float(array.max())}


def build(
    graph: Graph,
    preset: Preset,
    readout_node: str | None = None,
    readout_mode: str = "auto",
    input_shape: tuple[int, ...] | None = None,
) -> Built:
    if readout_mode not in READOUTS:
        raise GraphError(f"--readout {readout_mode}: one of {', '.join(READOUTS)}")
    return _Builder(graph, preset, input_shape).build(readout_node, readout_mode)
