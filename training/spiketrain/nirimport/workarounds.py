"""Exporting to NIR from the pinned frameworks where their own path breaks (docs/import.md, "Known quirks").

Each helper calls the framework's own per-module converter through ``nirtorch.extract_nir_graph``,
as the framework's exporter does, and skips only the step that breaks:

* snnTorch 1.0.0's ``export_to_nir`` ends with ``nir_graph.infer_types()``, which raises in NIR 1.0.8
  (``IndexError`` in ``calculate_conv_output`` for a convolution, "type mismatch" for an MLP);
  :func:`snntorch_to_nir` stops before it (this importer infers shapes itself).
* Norse 1.1.0's converter has no case for ``torch.nn.Flatten``, so a convolutional network's graph
  gets a missing node; :func:`norse_to_nir` adds Flatten (NIR counts dims without the batch).
* nirtorch leaves a convolution's ``input_shape`` ``None``, which ``nir.write`` cannot store and
  ``nir.read`` needs back: :func:`with_conv_shapes` fills it in by running the network once on the
  example (the snnTorch and Norse helpers here do it themselves), and :func:`write_nir` writes the file
  without the fields still ``None`` (a Flatten's ``input_type``).

Needs torch, nir and nirtorch (and the framework): test and export time only, never the server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py


def _pruned(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _pruned(v) for k, v in value.items() if v is not None and not _empty_type(k, v)}
    return value


def _empty_type(key: str, value: Any) -> bool:
    """``{"input": None}``: a type nirtorch did not infer."""
    return key in ("input_type", "output_type") and isinstance(value, dict) and all(v is None for v in value.values())


def write_nir(path: Path, graph: Any) -> None:
    """``nir.write`` less the fields left ``None`` (the file reads back with ``nir.read`` as before)."""
    import nir

    def write(group: h5py.Group, node: dict[str, Any]) -> None:
        for key, value in node.items():
            if key == "metadata":
                if value:
                    write(group.create_group(key), value)
            elif isinstance(value, str):
                group.create_dataset(key, data=value, dtype=h5py.string_dtype())
            elif isinstance(value, dict):
                write(group.create_group(str(key)), value)
            else:
                if hasattr(value, "detach"):
                    value = value.detach().cpu().numpy()
                group.create_dataset(key, data=value)

    with h5py.File(path, "w") as handle:
        handle.create_dataset("version", data=nir.version, dtype=h5py.string_dtype())
        write(handle.create_group("node"), _pruned(graph.to_dict()))


def with_conv_shapes(graph: Any, net: Any, sample: Any) -> Any:
    """Sets each convolution node's ``input_shape`` (its input's spatial size) from one run of ``net`` on
    ``sample``; node names are the modules' names, as nirtorch writes them. Stateful layers keep the
    state of that run: reset them before using the network."""
    import torch

    seen: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.Conv1d | torch.nn.Conv2d):

            def hook(_module: Any, inputs: Any, _output: Any, name: str = name) -> None:
                seen[name] = tuple(int(d) for d in inputs[0].shape[2:])

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            net(sample)
    finally:
        for handle in handles:
            handle.remove()
    for name, node in graph.nodes.items():
        if type(node).__name__ in ("Conv1d", "Conv2d") and getattr(node, "input_shape", None) is None and name in seen:
            node.input_shape = seen[name] if len(seen[name]) > 1 else seen[name][0]
    return graph


def snntorch_to_nir(net: Any, sample: Any, model_name: str = "snntorch") -> Any:
    """``snntorch.export_nir.export_to_nir`` without its final ``infer_types()``, convolutions' input
    shapes filled in. Resets the network's hidden states afterwards."""
    import nirtorch
    import snntorch as snn
    from snntorch import utils
    from snntorch.export_nir import _extract_snntorch_module

    graph = nirtorch.extract_nir_graph(
        net, _extract_snntorch_module, sample, model_name=model_name, ignore_submodules_of=[snn.RLeaky, snn.RSynaptic]
    )
    graph = with_conv_shapes(graph, net, sample)
    utils.reset(net)
    return graph


def norse_to_nir(net: Any, sample: Any, dt: float = 1e-3, model_name: str = "norse") -> Any:
    """``norse.torch.utils.export_nir.to_nir`` with ``torch.nn.Flatten`` converted too."""
    import nir
    import nirtorch
    import torch
    from norse.torch.utils.export_nir import _extract_norse_module

    def convert(module: torch.nn.Module) -> Any:
        if isinstance(module, torch.nn.Flatten):
            start = module.start_dim - 1 if module.start_dim > 0 else module.start_dim
            end = module.end_dim - 1 if module.end_dim > 0 else module.end_dim
            return nir.Flatten(input_type=None, start_dim=start, end_dim=end)
        return _extract_norse_module(module, dt=dt)

    graph = nirtorch.extract_nir_graph(net, convert, sample, model_name=model_name)
    return with_conv_shapes(graph, net, sample)
