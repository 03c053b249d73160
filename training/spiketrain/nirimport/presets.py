"""Each producer's conventions: what a NIR file from it means when stepped one timestep at a time.

NIR's neurons are continuous-time equations without a time step, and NIR has only reset-to-value;
every framework that writes NIR discretises and resets in its own way and writes only part of it
down. A preset holds what the file leaves out, for the framework versions pinned in
training/requirements-nir.txt; every field can be overridden on the command line, and the card
records the values used.

The discrete step (``a``: decay, ``g``: gain of the input, per time constant tau):

* euler: ``a = 1 - dt/tau``, ``g = dt/tau``; exact: ``a = exp(-dt/tau)``, ``g = 1 - a``;
* LI / LIF: ``v = a*v + g*(v_leak + r*I)`` (``leaky_input = "unscaled"``: ``v = a*v + g*v_leak + r*I``);
* I / IF: ``v = v + dt*r*I``;
* CubaLI / CubaLIF: ``i = a_syn*i + g_syn*w_in*S`` (``synapse_input = "jump"``: ``i = a_syn*i + w_in*S``),
  then the membrane as LI with ``I = i`` (the current after this step's input);
* a spike where ``v > threshold`` (``compare = "gt"``) or ``>=`` (``"ge"``); ``multi_spike``:
  ``floor(v / threshold)`` spikes where ``v > 0`` (Sinabs' MultiSpike);
* reset ``zero`` (``v = 0``), ``subtract`` (``v -= spikes * threshold``) or ``value`` (``v = v_reset``),
  right after the spike (``reset_timing = "immediate"``) or at the start of the next step, before the
  decay (``"delayed"``, snnTorch's default: ``v = a*v + I - threshold * [v > threshold]``), or
  ``"both"`` (snnTorch's ``reset_delay=False``: the start-of-step reset where the previous step ended
  above threshold, then right after this step's spike only what that reset did not already take).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

PRODUCERS = ("snntorch", "spikingjelly", "norse", "sinabs", "rockpool", "nir")


@dataclass(frozen=True)
class Preset:
    producer: str
    dt: float
    discretisation: str  # "euler" | "exact"
    reset: str  # "zero" | "subtract" | "value"
    reset_timing: str  # "immediate" | "delayed" | "both"
    compare: str  # "gt" | "ge"
    multi_spike: bool
    synapse_input: str  # "euler" | "jump"
    #: ``scaled``: a leaky membrane takes ``g * r * I`` (the discretised equation); ``unscaled``: ``r * I``
    #: (Sinabs' own NIR reading, norm_input=False).
    leaky_input: str
    #: The Input node's shape starts with the exporter's example batch (nirtorch's tracer writes it).
    input_has_batch: bool
    #: Norse 1.1.0 writes ``tau = dt / tau_inv``, that is dt * tau, where NIR wants tau: the true time
    #: constant is the file's divided by dt.
    tau_is_dt_times_tau: bool
    notes: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    "snntorch": Preset(
        producer="snntorch",
        dt=1e-4,  # hard-coded in snntorch.export_nir: tau = dt / (1 - beta), r = tau / dt
        discretisation="euler",
        reset="subtract",  # Leaky's default reset_mechanism; the file says v_reset = 0
        reset_timing="delayed",  # Leaky's default reset_delay=True
        compare="gt",  # snnTorch's Heaviside fires where mem - threshold > 0
        multi_spike=False,
        synapse_input="euler",  # Synaptic: w_in = tau_syn / dt, so g_syn * w_in = 1
        leaky_input="scaled",
        input_has_batch=True,
        tau_is_dt_times_tau=False,
        notes="Leaky -> LIF, Synaptic -> CubaLIF, RLeaky/RSynaptic -> recurrent subgraph; beta = 1 - dt/tau",
    ),
    "norse": Preset(
        producer="norse",
        dt=1e-3,  # Norse's default integration step
        discretisation="euler",
        reset="value",  # LIF(Box)Cell resets to v_reset (0 unless set), right after the spike
        reset_timing="immediate",
        compare="gt",  # norse.torch.functional.heaviside: x > 0
        multi_spike=False,
        synapse_input="jump",  # LIFCell: i = i + input, then decays by dt * tau_syn_inv
        leaky_input="scaled",
        input_has_batch=True,
        tau_is_dt_times_tau=True,
        notes="LIFBoxCell -> LIF, LIFCell -> CubaLIF (r = 1, w_in = 1), LIBoxCell -> LI, IAFCell -> IF",
    ),
    "sinabs": Preset(
        producer="sinabs",
        dt=1.0,  # Sinabs counts tau in timesteps
        discretisation="exact",  # alpha = exp(-1 / tau)
        reset="subtract",  # MembraneSubtract
        reset_timing="immediate",
        compare="ge",
        multi_spike=True,  # IAF's default MultiSpike: floor(v / threshold) spikes per step
        synapse_input="euler",
        leaky_input="unscaled",
        input_has_batch=False,  # sinabs.to_nir passes ignore_dims=[0]
        tau_is_dt_times_tau=False,
        notes=(
            "IAF -> IF, LIF -> LIF, ExpLeak -> LI; multi-spike, subtract reset, min_v_mem=None; the input is not "
            "scaled by 1 - alpha (norm_input=False, as sinabs.from_nir reads it; LIF's default True is not recorded)"
        ),
    ),
    "spikingjelly": Preset(
        producer="spikingjelly",
        dt=1e-4,
        discretisation="euler",
        reset="value",  # a soft reset is exported as a hard one; --reset subtract restores it
        reset_timing="immediate",
        compare="ge",  # SpikingJelly's Heaviside: x >= 0
        multi_spike=False,
        synapse_input="euler",
        leaky_input="scaled",
        input_has_batch=False,  # its exporter writes per-sample shapes
        tau_is_dt_times_tau=False,
        notes="IFNode -> IF, LIFNode -> LIF (tau = dt * tau_steps, r = 1; IF: r = 1/dt); hard reset to v_reset",
    ),
    "rockpool": Preset(
        producer="rockpool",
        dt=1.0,  # Rockpool folds dt into r
        discretisation="exact",
        reset="subtract",
        reset_timing="immediate",
        compare="ge",
        multi_spike=False,
        synapse_input="jump",
        leaky_input="unscaled",
        input_has_batch=False,
        tau_is_dt_times_tau=False,
        notes="LIFTorch -> CubaLIF, ExpSynTorch -> LI; not round-tripped in the tests (see docs/import.md)",
    ),
    "nir": Preset(
        producer="nir",
        dt=1e-3,
        discretisation="euler",
        reset="value",  # what the file says: NIR only has reset to v_reset
        reset_timing="immediate",
        compare="gt",
        multi_spike=False,
        synapse_input="euler",
        leaky_input="scaled",
        input_has_batch=False,
        tau_is_dt_times_tau=False,
        notes="NIR's own reading: Euler, reset to v_reset right after the spike",
    ),
}


def preset(producer: str, **overrides: Any) -> Preset:
    if producer not in PRESETS:
        raise ValueError(f"--from {producer}: unknown producer (one of {', '.join(PRODUCERS)})")
    chosen = {k: v for k, v in overrides.items() if v is not None}
    return replace(PRESETS[producer], **chosen)
