"""``spikeserve-client``: a command line for the package (``replay`` a recording, list ``models``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from typing import Any, TextIO

import numpy as np

from .client import Client
from .errors import SpikeserveError
from .events import EventFileError, read_events
from .replay import replay
from .results import Partial, Result


def _client(arguments: argparse.Namespace) -> Client:
    return Client(arguments.server, root_certificates=arguments.ca_cert, token=arguments.token)


def _line(item: Partial | Result, as_json: bool) -> str:
    if as_json:
        kind = "partial" if isinstance(item, Partial) else "final"
        fields = {k: v for k, v in asdict(item).items() if k not in ("probabilities", "confidences")}
        return json.dumps({kind: fields}, default=str)
    if isinstance(item, Partial):
        return f"t={item.timestep:<3} label {item.label:<10} confidence {item.confidence:.4f}"
    return (
        f"=> label {item.label} (class {item.class_index}), confidence {item.confidence:.4f} after "
        f"{item.timesteps}/{item.max_timesteps} timesteps, exit {item.exit_reason.value}; request {item.request_id}"
    )


def _replay(arguments: argparse.Namespace, out: TextIO) -> int:
    events = read_events(arguments.file, arguments.sample)
    with _client(arguments) as client:
        info = client.model(arguments.model)
        binning = info.events
        if binning is None:
            raise EventFileError(f"{arguments.model} takes {info.input_kind} input, not raw events")
        window = int(binning["window_us"])
        late = int(np.count_nonzero(events[:, 2] >= window))
        if late:
            print(f"note: {late} of {len(events)} events fall after the model's {window} us window", file=sys.stderr)
            events = events[events[:, 2] < window]
        policy: dict[str, Any] = {
            "threshold": arguments.threshold,
            "max_accuracy_drop": arguments.max_accuracy_drop,
            "policy": arguments.policy,
            "guarantee": arguments.guarantee,
            "min_timesteps": arguments.min_timesteps,
            "max_timesteps": arguments.max_timesteps,
            "latency_budget_ms": arguments.budget_ms,
        }
        replay(
            client,
            arguments.model,
            events,
            realtime=not arguments.fast,
            speed=arguments.speed,
            chunk_ms=arguments.chunk_ms,
            on_item=lambda item: print(_line(item, arguments.json), file=out, flush=True),
            **{k: v for k, v in policy.items() if v is not None},
        )
    return 0


def _models(arguments: argparse.Namespace, out: TextIO) -> int:
    with _client(arguments) as client:
        for info in client.list_models():
            shape = "x".join(str(d) for d in info.frame_shape)
            print(f"{info.name:<20} {info.input_kind:<7} T={info.timesteps:<3} frame {shape}", file=out)
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="spikeserve-client", description="A client of spikeserve's gRPC API.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--server", default=os.environ.get("SPIKESERVE_GRPC_URL", "localhost:8001"), help="host:port or https://..."
    )
    common.add_argument("--ca-cert", help="PEM file of the CA to trust (https)")
    common.add_argument("--token", default=os.environ.get("SPIKESERVE_TOKEN"), help="bearer token ($SPIKESERVE_TOKEN)")
    commands = root.add_subparsers(dest="command", required=True)

    run = commands.add_parser("replay", parents=[common], help="stream a recording into a session, print partials")
    run.add_argument("file", help="N-MNIST .bin, .npy or .json event array, .aedat4")
    run.add_argument("--model", required=True)
    run.add_argument("--sample", type=int, help="which sample of a file that holds several")
    run.add_argument("--fast", action="store_true", help="as fast as possible instead of in real time")
    run.add_argument("--speed", type=float, default=1.0, help="real-time factor (2 = twice as fast)")
    run.add_argument("--chunk-ms", type=float, default=10.0, help="events sent per chunk, in recording time")
    run.add_argument("--threshold", type=float)
    run.add_argument("--max-accuracy-drop", type=float)
    run.add_argument("--policy", help="the exit policy: cutoff, schedule or learned (default: the model's choice)")
    run.add_argument("--guarantee", type=float, help="with --max-accuracy-drop: the probability it must hold with")
    run.add_argument("--min-timesteps", type=int)
    run.add_argument("--max-timesteps", type=int)
    run.add_argument("--budget-ms", type=float, help="latency budget in milliseconds")
    run.add_argument("--json", action="store_true", help="JSON lines")
    run.set_defaults(handler=_replay)

    models = commands.add_parser("models", parents=[common], help="list the served models")
    models.set_defaults(handler=_models)
    return root


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    arguments = parser().parse_args(argv)
    try:
        return int(arguments.handler(arguments, out or sys.stdout))
    except SpikeserveError as error:
        print(f"error: {error.code}: {error.message}", file=sys.stderr)
        return 1
    except (EventFileError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
