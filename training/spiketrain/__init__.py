"""Training job for spikeserve: LIF spiking networks trained with TET, exported one timestep per ONNX graph."""
