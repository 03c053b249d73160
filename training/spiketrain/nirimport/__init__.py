"""Bring your own SNN: NIR graphs (snnTorch, Sinabs, Norse, ... or ``nir``'s own API) to spikeserve models.

``spikeserve-import GRAPH.nir OUT_DIR --from PRODUCER`` reads the HDF5 file itself (h5py: the NIR
package's own type inference fails on what several exporters write), flattens nested subgraphs,
discretises every neuron with the producer's conventions (:mod:`.presets`), and writes the
one-timestep ONNX graph of docs/MODEL-CONTRACT.md with its metadata and a card. docs/import.md says
how to export from each framework and what each preset assumes.
"""


class GraphError(ValueError):
    """A graph the importer refuses: the message is one line naming the node, the field or the edge."""
