"""The anytime evaluation through the server: every held-out sample streamed over gRPC, checked against offline.

For each model and each threshold of a sweep:

1. **offline**, with the training job's own code: the shipped ONNX graphs stepped one sample at a time
   (``spiketrain.export.onnx_logits``, as ``train.py`` and ``ensemble.py`` do), then the cutoff rule of
   ``spiketrain.anytime`` (``anytime`` for a single model, ``anytime_ensemble`` for an ensemble), which is
   how ``eval.json``'s ``threshold_sweep`` and ``anytime_at_default_threshold`` are computed. ``eval.json``
   keeps per-sample exits for the default threshold only, so they are recomputed here for every threshold
   (and, on a full held-out set, checked against ``eval.json``: the default threshold sample by sample,
   the sweep's accuracy and mean timesteps where the thresholds coincide);
2. **through the server**: every sample sent on one KServe v2 gRPC stream (Triton's ``ModelStreamInfer``,
   driven by NVIDIA's ``tritonclient``, ``start_stream`` / ``async_stream_infer`` with
   ``parameters={"threshold": t}``), ``--concurrency`` requests in flight; the final response of each
   request gives its timesteps, class, exit reason and (ensembles) uncertainty, and every request must
   send one response per timestep;
3. **compared**: every sample's exit timestep, prediction and exit reason must equal offline. The one
   tolerated difference is a sample whose offline confidence (float64) at some timestep up to the later
   of the two exits lies within 1e-9 of the threshold, where float rounding may decide either way (the
   Rust tests, ``tests/http_api.rs`` and ``tests/ensemble.rs``, use the same rule). Any other difference
   is listed and the script exits 1.

Reported per model and threshold: accuracy, average timesteps, speedup ``T / average``, the accuracy
drop against running all ``T`` steps (threshold 1.0), and for ensembles the mean uncertainty (the
members' variance on the chosen class at exit). Writes ``--json``, ``--markdown`` and ``--plot``.

Held-out samples: ``digits`` ships all 360 in ``heldout.json``. The event models' ``heldout.json`` holds
the first 24 only (raw events are large), so the rest are regenerated with the training job's simulated
event camera (``spiketrain.event_digits``; deterministic, the seed is the sample's index). Where
``heldout.json`` has a sample it is the one used, and its regenerated twin must agree with it within
``event_digits.REGENERATION_TOLERANCE`` (never bit for bit: ``heldout.json`` may come from another CPU);
``--heldout-json-only`` uses only ``heldout.json``. Both sides always read the very same events.

    PYTHONPATH=training .venv/bin/python benchmarks/anytime_eval.py --start \\
        --json out.json --markdown out.md --plot out.png              # all six models, full sets
    PYTHONPATH=training .venv/bin/python benchmarks/anytime_eval.py --grpc 127.0.0.1:8001 \\
        --models digits event-digits-str --thresholds 0.9 1.0 --limit 40

``--budgets 0.5 1`` also asks every model that has a calibration table with ``max_accuracy_drop``
(percentage points) instead of a threshold: the server must pick the table's threshold for the largest
budget not above it (the answer's ``threshold`` and ``max_accuracy_drop`` parameters say which), and
every sample's exit must equal the offline evaluation at that threshold.

``--start`` runs ``target/release/spikeserve`` (or ``--bin`` / ``SPIKESERVE_BIN``) on free loopback
ports with ``ORT_DYLIB_PATH`` from the environment (else the ``.venv``'s onnxruntime library) and
stops it at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "training") not in sys.path:
    sys.path.insert(0, str(REPO / "training"))

import spikeserve_process  # noqa: E402
from spiketrain import anytime, data, event_digits  # noqa: E402
from spiketrain import exit_policies as ep  # noqa: E402
from spiketrain.events import EventBinning, bin_events  # noqa: E402
from spiketrain.exit_features import oracle_exits, trajectories  # noqa: E402
from spiketrain.export import METADATA_PREFIX, onnx_logits, open_session  # noqa: E402

DEFAULT_MODELS = (
    "digits",
    "digits-tet",
    "digits-str",
    "event-digits",
    "event-digits-tet",
    "event-digits-str",
    "mnist-events",
)
DEFAULT_THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0)
#: An offline confidence this close to the threshold may be decided either way by float rounding
#: (the server and the offline evaluation step the same graph on the same machine).
NEAR_THRESHOLD = 1e-9
#: Against ``eval.json``, written on another machine whose CPU may take other SIMD paths through ONNX
#: Runtime, a confidence this close to the threshold may be decided either way (the Rust tests'
#: ``CROSS_CPU_CONFIDENCE_TOLERANCE``).
CROSS_CPU_TOLERANCE = 1e-4


# --------------------------------------------------------------------------------------------------
# Models and held-out samples


@dataclass(frozen=True)
class ModelInfo:
    name: str
    directory: Path
    members: list[Path]  # ONNX files; one for a single model
    timesteps: int
    input_kind: str  # "static" or "events"
    dataset: str
    variant: str  # "single", "TET ensemble", "STR ensemble" or "running-mean ensemble"
    binning: EventBinning | None

    @property
    def ensemble(self) -> bool:
        return len(self.members) > 1 or (self.directory / "ensemble.json").exists()


def _metadata(path: Path) -> dict[str, str]:
    proto = onnx.load(str(path), load_external_data=False)
    return {
        p.key.removeprefix(METADATA_PREFIX): p.value for p in proto.metadata_props if p.key.startswith(METADATA_PREFIX)
    }


def load_model(models_dir: Path, name: str) -> ModelInfo:
    directory = models_dir / name
    spec_path = directory / "ensemble.json"
    if spec_path.exists():
        spec = json.loads(spec_path.read_text())
        members = [directory / m for m in spec["members"]]
    else:
        members = [directory / "model.onnx"]
    missing = [str(m) for m in members if not m.exists()]
    if missing:
        raise SystemExit(f"anytime_eval: {name}: missing {', '.join(missing)}")
    meta = _metadata(members[0])
    training = json.loads(meta.get("training", "{}"))
    if spec_path.exists():
        # The recipe as the training job recorded it: STR, the running-mean loss alone (issue 30), or TET.
        options = training.get("loss_options", {})
        if training.get("regulariser", "none") != "none":
            variant = "STR ensemble"
        elif options and not options.get("tet", True):
            variant = "running-mean ensemble"
        else:
            variant = "TET ensemble"
    else:
        variant = "single"
    binning = EventBinning(**json.loads(meta["events"])) if "events" in meta else None
    return ModelInfo(
        name=name,
        directory=directory,
        members=members,
        timesteps=int(meta["timesteps"]),
        input_kind=meta["input_kind"],
        dataset=str(training.get("dataset", name)),
        variant=variant,
        binning=binning,
    )


@dataclass(frozen=True)
class Setting:
    """One way of asking: a threshold, or an accuracy-drop budget the server turns into its calibrated
    threshold (``threshold`` is then the table's, which the offline evaluation runs)."""

    key: str  # request ids are KEY/INDEX
    threshold: float
    parameters: dict[str, Any]
    budget: float | None = None  # the budget asked
    table_budget: float | None = None  # the table row the server must pick
    #: An exit policy's row (``exit-policies.json``) instead of the cutoff: its kind, the row, its level.
    policy: str | None = None
    row: dict[str, Any] | None = None
    level: float | None = None


def exit_policies(model: ModelInfo) -> dict[str, Any] | None:
    """The model's ``exit-policies.json``, as the server reads it."""
    path = model.directory / "exit-policies.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _pick(rows: list[dict[str, Any]], budget: float) -> dict[str, Any] | None:
    fitting = sorted((r for r in rows if r["max_accuracy_drop"] <= budget), key=lambda r: r["max_accuracy_drop"])
    return fitting[-1] if fitting else None


def policy_settings(
    model: ModelInfo, budgets: Sequence[float], levels: Sequence[float], every_policy: bool
) -> list[Setting]:
    """For a model that ships ``exit-policies.json``, at every budget: the model's own choice, and with
    ``every_policy`` each policy by name and at each guarantee level; the rows the server must pick, as
    the file says."""
    document = exit_policies(model)
    if document is None:
        return []
    settings = []
    for budget in budgets:
        asks: list[tuple[str | None, float | None]] = [(None, None)]
        if every_policy:
            asks += [(k, None) for k in document["policies"]] + [(None, level) for level in levels]
            asks += [(k, level) for k in document["policies"] for level in levels]
        for named, level in asks:
            kind = named or (document["serving_policy_guarantee"] if level is not None else document["serving_policy"])
            spec = document["policies"][kind]
            if level is None:
                rows = spec["point"]
                chosen_level = None
            else:
                available = sorted({r["level"] for r in spec["guarantee"] if r["level"] >= level})
                if not available:
                    continue
                chosen_level = available[0]
                rows = [r for r in spec["guarantee"] if r["level"] == chosen_level]
            row = _pick(rows, budget)
            if row is None:
                continue
            parameters: dict[str, Any] = {"max_accuracy_drop": float(budget)}
            if named is not None:
                parameters["policy"] = named
            if level is not None:
                parameters["guarantee"] = float(level)
            key = f"policy:{named or 'default'}:{budget!r}:{level!r}"
            settings.append(
                Setting(
                    key,
                    float(row.get("threshold") or 1.0) if kind != "schedule" else 1.0,
                    parameters,
                    budget=float(budget),
                    table_budget=float(row["max_accuracy_drop"]),
                    policy=kind,
                    row=row,
                    level=chosen_level,
                )
            )
    return settings


def calibration_table(model: ModelInfo) -> list[dict[str, float]]:
    """The model's calibration table as the server reads it (ensemble.json, else the graph's metadata)."""
    spec_path = model.directory / "ensemble.json"
    if spec_path.exists():
        return list(json.loads(spec_path.read_text()).get("calibration", []))
    return list(json.loads(_metadata(model.members[0]).get("calibration", "[]")))


def settings_for(model: ModelInfo, thresholds: Sequence[float], budgets: Sequence[float]) -> list[Setting]:
    settings = [Setting(repr(float(t)), float(t), {"threshold": float(t)}) for t in thresholds]
    if exit_policies(model) is not None:
        return settings  # a budget runs the model's exit policies: see policy_settings
    table = sorted(calibration_table(model), key=lambda row: row["max_accuracy_drop"])
    for budget in budgets:
        rows = [row for row in table if row["max_accuracy_drop"] <= budget]
        if rows:  # models without a table (or below its smallest budget) are not asked
            row = rows[-1]
            settings.append(
                Setting(
                    f"budget:{budget!r}",
                    float(row["threshold"]),
                    {"max_accuracy_drop": float(budget)},
                    budget=float(budget),
                    table_budget=float(row["max_accuracy_drop"]),
                )
            )
    return settings


@dataclass(frozen=True)
class Samples:
    requests: list[np.ndarray]  # what is sent: the frame [1, *frame] (static) or events [n, 4] int64
    frames: np.ndarray  # [T, N, *frame] float32, what the offline evaluation steps
    targets: np.ndarray  # int64 [N]
    source: str


#: Event data sets whose held-out (test) split the training job's simulator regenerates.
SIMULATED = ("event-digits", "mnist-events")


@functools.cache
def simulated_heldout(dataset: str, limit: int | None) -> tuple[list[np.ndarray], np.ndarray]:
    """The training job's held-out split of a simulated event data set (``event-digits``: only that
    split; ``mnist-events``: its test split, from the simulator's cache); shared by one run's models."""
    if dataset == "mnist-events":
        held_out = data.load_dataset("mnist-events", timesteps=10).held_out
        assert held_out.events is not None
        raw = [np.asarray(e, dtype=np.int64) for e in held_out.events[:limit]]
        return raw, held_out.targets[:limit]
    *_, images, targets, indices = data._digit_split(limit)
    raw = [event_digits.simulate(image[0], int(i)) for image, i in zip(images, indices, strict=True)]
    return raw, targets


def load_samples(model: ModelInfo, limit: int | None, heldout_json_only: bool) -> Samples:
    heldout = json.loads((model.directory / "heldout.json").read_text())
    shipped_targets = np.asarray(heldout["targets"], dtype=np.int64)
    if model.input_kind == "static":
        inputs = np.asarray(heldout["inputs"], dtype=np.float32)[:limit]
        targets = shipped_targets[:limit]
        frames = data.to_frames(inputs, model.timesteps, "static")
        return Samples([x[None] for x in inputs], frames, targets, "heldout.json")
    if model.input_kind != "events" or model.binning is None:
        raise SystemExit(f"anytime_eval: {model.name}: unsupported input kind {model.input_kind!r}")
    shipped = [np.asarray(e, dtype=np.int64).reshape(-1, 4) for e in heldout["events"]]
    if heldout_json_only or model.dataset not in SIMULATED:
        raw, targets, source = shipped[:limit], shipped_targets[:limit], "heldout.json"
    else:
        regenerated, targets = simulated_heldout(model.dataset, limit)
        for i, events in enumerate(shipped[: len(regenerated)]):
            problems = event_digits.regeneration_differences(events, regenerated[i], model.binning.bins)
            if problems or shipped_targets[i] != targets[i]:
                raise SystemExit(
                    f"anytime_eval: {model.name}: regenerated held-out sample {i} is not heldout.json's "
                    f"({'; '.join(problems) or 'another target'}; tolerance "
                    f"{event_digits.REGENERATION_TOLERANCE:g} of its events)"
                )
        # heldout.json is the source of truth where it has the sample; the server and the offline
        # evaluation below read the very same events either way.
        kept = min(len(shipped), len(regenerated))
        raw = [*shipped[:kept], *regenerated[kept:]]
        source = (
            f"heldout.json's first {kept}, then the training job's simulator (held-out split; the shipped samples "
            f"regenerate within {event_digits.REGENERATION_TOLERANCE:g})"
        )
    binned = np.stack([bin_events(e, model.binning) for e in raw])
    frames = data.to_frames(binned, model.timesteps, "events")
    return Samples([np.ascontiguousarray(e, dtype=np.int64) for e in raw], frames, np.asarray(targets), source)


# --------------------------------------------------------------------------------------------------
# Offline


@dataclass(frozen=True)
class OfflineRun:
    result: anytime.AnytimeResult
    reasons: list[str]
    #: ``[T, N]``: how far each timestep's decision value lies from its boundary (policies only).
    distance: np.ndarray | None = None


@dataclass(frozen=True)
class Offline:
    confidences: np.ndarray  # float64 [T, N]: max of the (ensemble) running-mean softmax after each step
    runs: dict[float, OfflineRun]
    accuracy_at_t: float
    member_logits: np.ndarray | None = None  # [K, T, N, C]
    policy_runs: dict[str, OfflineRun] = field(default_factory=dict)

    def run_of(self, setting: Setting) -> OfflineRun:
        return self.policy_runs[setting.key] if setting.policy is not None else self.runs[setting.threshold]


def policy_run(offline: Offline, setting: Setting, targets: np.ndarray, document: dict[str, Any]) -> OfflineRun:
    """A policy row's exits over the same logits, decided as the server decides (``spiketrain.exit_policies``)."""
    assert offline.member_logits is not None and setting.policy is not None and setting.row is not None
    traj = trajectories(offline.member_logits)
    kind, row = setting.policy, setting.row
    score = None
    if kind == "learned":
        mlp = ep.Mlp.from_json(document["policies"]["learned"]["score"])
        score = ep.learned_family(traj, mlp).score
    rule = ep.rule_stops(traj, kind, row, score)
    stop = rule.copy()
    stop[-1] = True
    exits = ep.exits_of(stop)
    n = traj.samples
    predictions = traj.prediction[exits, np.arange(n)]
    said = rule[exits, np.arange(n)]
    reason = "confident" if kind == "cutoff" else "policy"
    reasons = [reason if s else "max_timesteps" for s in said.tolist()]
    if kind == "cutoff":
        distance = np.abs(traj.confidence - float(row["threshold"]))
    elif kind == "schedule":
        distance = np.abs(traj.confidence - np.asarray(row["thresholds"], dtype=np.float64)[:, None])
    else:
        assert score is not None
        lam = row["threshold"]
        distance = np.full(score.shape, np.inf) if lam is None else np.abs(score - lam) / max(1.0, abs(lam))
    result = anytime.AnytimeResult(
        threshold=setting.threshold,
        exit_timesteps=exits + 1,
        predictions=predictions,
        accuracy=float((predictions == targets).mean()),
        mean_timesteps=float((exits + 1).mean()),
    )
    return OfflineRun(result, reasons, distance)


def offline_evaluation(model: ModelInfo, samples: Samples, thresholds: Sequence[float]) -> Offline:
    member_logits = np.stack([onnx_logits(open_session(m), samples.frames, batch_size=1) for m in model.members])
    mean, _ = anytime.ensemble_probabilities(member_logits)
    confidences = mean.max(axis=2)
    runs: dict[float, OfflineRun] = {}
    for threshold in dict.fromkeys([*thresholds, 1.0]):
        if model.ensemble:
            result: anytime.AnytimeResult = anytime.anytime_ensemble(member_logits, samples.targets, threshold)
        else:
            result = anytime.anytime(member_logits[0], samples.targets, threshold)
        at_exit = confidences[result.exit_timesteps - 1, np.arange(len(samples.targets))]
        reasons = ["confident" if threshold < 1.0 and c >= threshold else "max_timesteps" for c in at_exit.tolist()]
        runs[threshold] = OfflineRun(result, reasons)
    return Offline(confidences, runs, runs[1.0].result.accuracy, member_logits)


def eval_json_thresholds(model: ModelInfo) -> list[float]:
    """The thresholds ``eval.json`` reports on: its default and its sweep."""
    evaluation = json.loads((model.directory / "eval.json").read_text())
    return [float(evaluation["default_threshold"]), *(float(e["threshold"]) for e in evaluation["threshold_sweep"])]


def _near_threshold(offline: Offline, threshold: float, sample: int, up_to: int, tolerance: float) -> bool:
    """Whether this run's offline confidence of ``sample`` lies within ``tolerance`` of ``threshold`` at
    some timestep up to ``up_to`` (1-based)."""
    window = offline.confidences[:up_to, sample]
    return threshold < 1.0 and bool(np.any(np.abs(window - threshold) < tolerance))


def check_against_eval_json(model: ModelInfo, offline: Offline, samples: Samples) -> dict[str, object]:
    """On a full held-out set, the recomputed offline evaluation must be ``eval.json``'s (its default
    threshold sample by sample, its sweep's accuracy and mean timesteps).

    ``eval.json`` was written on the machine that trained the model, and ONNX Runtime's kernels take
    CPU-specific SIMD paths, so a sample may exit differently here where its confidence lies within
    ``CROSS_CPU_TOLERANCE`` of the threshold; the sweep's figures may then move by what those samples
    can move (one sample's accuracy and ``T - 1`` timesteps each). Anything more is a difference."""
    evaluation = json.loads((model.directory / "eval.json").read_text())
    n = len(samples.targets)
    if n != evaluation["held_out_samples"]:
        return {"checked": False, "why": f"{n} of {evaluation['held_out_samples']} samples"}
    threshold = float(evaluation["default_threshold"])
    stored = evaluation["anytime_at_default_threshold"]
    result = offline.runs[threshold].result
    differing, near = [], []
    pairs = zip(result.exit_timesteps.tolist(), result.predictions.tolist(), strict=True)
    for i, (e, p) in enumerate(pairs):
        if (e, p) == (stored["exit_timesteps"][i], stored["predictions"][i]):
            continue
        later = max(e, int(stored["exit_timesteps"][i]))
        (near if _near_threshold(offline, threshold, i, later, CROSS_CPU_TOLERANCE) else differing).append(i)
    sweep_differences = []
    compared = []
    for entry in evaluation["threshold_sweep"]:
        t = float(entry["threshold"])
        compared.append(t)
        mine = offline.runs[t].result
        movable = sum(_near_threshold(offline, t, i, model.timesteps, CROSS_CPU_TOLERANCE) for i in range(n))
        accuracy_slack = movable / n + 1e-12
        timestep_slack = movable * (model.timesteps - 1) / n + 1e-12
        if (
            abs(mine.accuracy - entry["accuracy"]) > accuracy_slack
            or abs(mine.mean_timesteps - entry["mean_timesteps"]) > timestep_slack
        ):
            sweep_differences.append(
                {
                    "threshold": t,
                    "eval_json": [entry["accuracy"], entry["mean_timesteps"]],
                    "offline": [mine.accuracy, mine.mean_timesteps],
                    "samples_near_threshold": movable,
                }
            )
    return {
        "checked": True,
        "default_threshold": threshold,
        "cross_cpu_tolerance": CROSS_CPU_TOLERANCE,
        "default_threshold_samples_differing": differing,
        "default_threshold_samples_differing_near_threshold": near,
        "sweep_thresholds_compared": compared,
        "sweep_differences": sweep_differences,
        "ok": not differing and not sweep_differences,
    }


# --------------------------------------------------------------------------------------------------
# Through the server


@dataclass
class Answer:
    timesteps: int = 0
    class_index: int = -1
    exit_reason: str = ""
    uncertainty: float | None = None
    responses: int = 0
    steps_seen: list[int] = field(default_factory=list)
    final: bool = False
    threshold: float | None = None  # response parameters of the final answer
    budget: float | None = None
    policy: str | None = None
    guarantee: float | None = None


def _scalar(result: grpcclient.InferResult, name: str) -> Any:
    value = result.as_numpy(name)
    if value is None:
        return None
    item = value.reshape(-1)[0]
    return item.decode() if isinstance(item, bytes) else item.item()


class StreamRun:
    """One gRPC stream; at most ``concurrency`` requests in flight; answers keyed by request id."""

    def __init__(self, client: grpcclient.InferenceServerClient, concurrency: int) -> None:
        self.client = client
        self.slots = threading.Semaphore(concurrency)
        self.lock = threading.Lock()
        self.done = threading.Condition(self.lock)
        self.answers: dict[str, Answer] = {}
        self.errors: list[str] = []
        self.finished = 0
        self.sent = 0
        #: Set on an error: a gRPC stream that reported one takes no more requests.
        self.broken = False

    def callback(self, result: grpcclient.InferResult | None, error: InferenceServerException | None) -> None:
        if error is not None or result is None:
            with self.lock:
                self.errors.append(str(error))
                self.broken = True
                self.finished += 1
                self.done.notify_all()
            self.slots.release()
            return
        response = result.get_response()
        final = response.parameters["triton_final_response"].bool_param
        step = _scalar(result, "timesteps")
        with self.lock:
            answer = self.answers.setdefault(response.id, Answer())
            answer.responses += 1
            answer.steps_seen.append(int(step) if step is not None else -1)
            if final:
                answer.final = True
                answer.timesteps = int(step)
                answer.class_index = int(_scalar(result, "class_index"))
                answer.exit_reason = str(_scalar(result, "exit_reason"))
                uncertainty = _scalar(result, "uncertainty")
                answer.uncertainty = None if uncertainty is None else float(uncertainty)
                if "threshold" in response.parameters:
                    answer.threshold = response.parameters["threshold"].double_param
                if "max_accuracy_drop" in response.parameters:
                    answer.budget = response.parameters["max_accuracy_drop"].double_param
                if "policy" in response.parameters:
                    answer.policy = response.parameters["policy"].string_param
                if "guarantee" in response.parameters:
                    answer.guarantee = response.parameters["guarantee"].double_param
                self.finished += 1
                self.done.notify_all()
        if final:
            self.slots.release()

    def send(self, model: str, request: np.ndarray, request_id: str, parameters: dict[str, Any]) -> bool:
        """Sends one request once a slot is free; False when the stream has broken."""
        if request.dtype == np.int64:
            tensor = grpcclient.InferInput("events", list(request.shape), "INT64")
        else:
            tensor = grpcclient.InferInput("x", list(request.shape), "FP32")
        tensor.set_data_from_numpy(request)
        while not self.slots.acquire(timeout=0.5):
            if self.broken:
                return False
        if self.broken:
            self.slots.release()
            return False
        with self.lock:
            self.sent += 1
        try:
            self.client.async_stream_infer(model, [tensor], request_id=request_id, parameters=parameters)
        except InferenceServerException as error:
            with self.lock:
                self.errors.append(str(error))
                self.broken = True
                self.finished += 1
            self.slots.release()
            return False
        return True

    def wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self.lock:
            while self.finished < self.sent and not self.broken:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.done.wait(remaining)
        return True


def stream_model(
    address: str,
    model: ModelInfo,
    samples: Samples,
    settings: Sequence[Setting],
    concurrency: int,
    timeout_s: float,
) -> tuple[dict[str, Answer], list[str], float]:
    client = grpcclient.InferenceServerClient(url=address)
    run = StreamRun(client, concurrency)
    started = time.perf_counter()
    try:
        client.start_stream(callback=run.callback)
        try:
            requests = [(setting, i, r) for setting in settings for i, r in enumerate(samples.requests)]
            for setting, i, request in requests:
                if not run.send(model.name, request, f"{setting.key}/{i}", setting.parameters):
                    break
            if not run.wait(timeout_s):
                run.errors.append(f"timed out after {timeout_s} s with {run.sent - run.finished} requests unanswered")
        finally:
            client.stop_stream()
    finally:
        client.close()
    return run.answers, run.errors, time.perf_counter() - started


# --------------------------------------------------------------------------------------------------
# Comparison and report


def compare(
    model: ModelInfo,
    offline: Offline,
    setting: Setting,
    answers: dict[str, Answer],
    count: int,
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """(mismatches, tolerated differences) of one setting."""
    threshold = setting.threshold
    run = offline.run_of(setting)
    mismatches: list[dict[str, object]] = []
    tolerated: list[dict[str, object]] = []
    for i in range(count):
        answer = answers.get(f"{setting.key}/{i}")
        base: dict[str, object] = {"model": model.name, "threshold": threshold, "sample": i}
        if setting.budget is not None:
            base["max_accuracy_drop"] = setting.budget
        if setting.policy is not None:
            base.update(policy=setting.policy, guarantee=setting.level)
        if answer is None or not answer.final:
            mismatches.append({**base, "problem": "no final response"})
            continue
        if setting.policy is not None:
            expected = (setting.policy, setting.table_budget, setting.level)
            if (answer.policy, answer.budget, answer.guarantee) != expected:
                mismatches.append(
                    {
                        **base,
                        "problem": f"the server ran policy {answer.policy} row {answer.budget} at level "
                        f"{answer.guarantee}; the file says {expected}",
                    }
                )
        elif (answer.threshold, answer.budget) != (threshold, setting.table_budget):
            mismatches.append(
                {
                    **base,
                    "problem": f"the server ran threshold {answer.threshold} for budget {answer.budget}; "
                    f"the table says {threshold} for {setting.table_budget}",
                }
            )
        expected_exit = int(run.result.exit_timesteps[i])
        expected_class = int(run.result.predictions[i])
        expected_reason = run.reasons[i]
        if answer.steps_seen != list(range(1, answer.timesteps + 1)):
            mismatches.append(
                {**base, "problem": f"responses for timesteps {answer.steps_seen}, one per timestep expected"}
            )
        got = (answer.timesteps, answer.class_index, answer.exit_reason)
        if got == (expected_exit, expected_class, expected_reason):
            continue
        last = max(expected_exit, answer.timesteps)
        window = offline.confidences[:last, i]
        if run.distance is not None:
            near = bool(np.any(run.distance[:last, i] < NEAR_THRESHOLD))
        else:
            near = threshold < 1.0 and bool(np.any(np.abs(window - threshold) < NEAR_THRESHOLD))
        record = {
            **base,
            "offline": {"timesteps": expected_exit, "class_index": expected_class, "exit_reason": expected_reason},
            "server": {"timesteps": got[0], "class_index": got[1], "exit_reason": got[2]},
            "offline_confidences": [float(c) for c in window],
        }
        (tolerated if near else mismatches).append(record)
    return mismatches, tolerated


def summarise(
    model: ModelInfo,
    offline: Offline,
    samples: Samples,
    settings: Sequence[Setting],
    answers: dict[str, Answer],
) -> list[dict[str, object]]:
    count = len(samples.targets)
    server_rows: dict[str, dict[str, Any]] = {}
    for setting in settings:
        finals = [answers.get(f"{setting.key}/{i}") for i in range(count)]
        got = [a for a in finals if a is not None and a.final]
        correct = sum(
            1 for i, a in enumerate(finals) if a is not None and a.final and a.class_index == samples.targets[i]
        )
        uncertainties = [a.uncertainty for a in got if a.uncertainty is not None]
        server_rows[setting.key] = {
            "answered": len(got),
            "accuracy": correct / count,
            "mean_timesteps": sum(a.timesteps for a in got) / len(got) if got else None,
            "mean_uncertainty": float(np.mean(uncertainties)) if uncertainties else None,
            "exit_reasons": dict(sorted(Counter(a.exit_reason for a in got).items())),
        }
    # Full T: the server's own threshold-1.0 run when swept, else the offline figure (which it must equal).
    full = repr(1.0)
    accuracy_at_t = server_rows[full]["accuracy"] if full in server_rows else offline.accuracy_at_t
    rows = []
    for setting in settings:
        server = server_rows[setting.key]
        result = offline.run_of(setting).result
        variances = getattr(result, "variances", None)
        right_at_t = offline.runs[1.0].result.predictions == samples.targets
        right = result.predictions == samples.targets
        # The paired standard error of the drop (the offline exits are the server's: compared above).
        drop_se = float(np.sqrt((right_at_t & ~right).sum() + (~right_at_t & right).sum()) / count)
        rows.append(
            {
                "threshold": setting.threshold,
                "max_accuracy_drop": setting.budget,
                "policy": setting.policy,
                "guarantee": setting.level,
                "table_budget": setting.table_budget,
                "drop_standard_error": drop_se,
                "compute_reduction": (
                    model.timesteps / (len(model.members) * server["mean_timesteps"])
                    if server["mean_timesteps"]
                    else None
                ),
                "samples": count,
                "accuracy": server["accuracy"],
                "mean_timesteps": server["mean_timesteps"],
                "speedup": model.timesteps / server["mean_timesteps"] if server["mean_timesteps"] else None,
                "accuracy_drop": accuracy_at_t - server["accuracy"],
                "mean_uncertainty": server["mean_uncertainty"] if model.ensemble else None,
                "exit_reasons": server["exit_reasons"],
                "answered": server["answered"],
                "offline": {
                    "accuracy": result.accuracy,
                    "mean_timesteps": result.mean_timesteps,
                    "speedup": model.timesteps / result.mean_timesteps,
                    "mean_variance": float(np.mean(variances)) if model.ensemble and variances is not None else None,
                },
            }
        )
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _setting(row: dict[str, Any]) -> str:
    if row.get("policy") is not None:
        level = "" if row.get("guarantee") is None else f", guarantee {row['guarantee']:g}"
        return f"{row['policy']} (budget {row['max_accuracy_drop']:g}{level})"
    if row.get("max_accuracy_drop") is None:
        return f"{row['threshold']:g}"
    return f"{row['threshold']:.4g} (budget {row['max_accuracy_drop']:g})"


def _pct(value: float) -> str:
    return f"{value * 100:.2f}"


def write_markdown(path: Path, report: dict[str, Any]) -> None:
    lines = [
        "# Anytime evaluation through the server",
        "",
        f"Generated {report['generated']} by `benchmarks/anytime_eval.py` in {report['runtime_s']:.1f} s: every "
        f"held-out sample streamed over KServe v2 gRPC (`tritonclient` `ModelStreamInfer`, {report['concurrency']} "
        "requests in flight on one stream) at each threshold, and compared with the offline evaluation "
        "(`spiketrain.anytime` over the shipped ONNX graphs, one sample at a time).",
        "",
        f"**Exit timestep, prediction and exit reason equal offline for every sample: "
        f"{'yes' if report['ok'] else 'NO'}** ({report['compared']} sample-threshold pairs; "
        f"{len(report['mismatches'])} mismatches, {len(report['tolerated'])} tolerated differences where an offline "
        f"confidence lies within {NEAR_THRESHOLD:g} of the threshold).",
        "",
        "Accuracy and average timesteps are the server's; speedup is T / average timesteps; the drop is "
        "against running all T steps (threshold 1.0), in percentage points; uncertainty is the ensemble "
        "members' mean variance on the chosen class at exit. A row asked with an accuracy budget "
        "(`max_accuracy_drop`) shows the calibrated threshold the server picked, then the budget; a row of an exit "
        "policy (`--policies`) names the policy the server ran, the budget and any guarantee level. Of the ceiling: "
        "the speedup over the ceiling T / (mean oracle exit), the oracle exit being the first t from which the "
        "answer equals the answer at T at every later step.",
        "",
        "| model | ceiling | variant | T | samples | setting | accuracy % | avg timesteps | speedup (x) "
        "| of the ceiling | drop vs T (pp) | mean uncertainty | exits: confident / policy / max_timesteps |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in report["models"].items():
        for row in entry["results"]:
            reasons = row["exit_reasons"]
            uncertainty = "" if row["mean_uncertainty"] is None else f"{row['mean_uncertainty']:.2e}"
            fraction = row.get("fraction_of_ceiling")
            lines.append(
                f"| `{name}` | {entry['ceiling_speedup']:.2f}x | {entry['variant']} | {entry['timesteps']} "
                f"| {row['samples']} | {_setting(row)} "
                f"| {_pct(row['accuracy'])} | {_fmt(row['mean_timesteps'], '.3f')} | {_fmt(row['speedup'], '.2f')} "
                f"| {'n/a' if fraction is None else f'{fraction * 100:.0f}%'} "
                f"| {row['accuracy_drop'] * 100:+.2f} | {uncertainty} "
                f"| {reasons.get('confident', 0)} / {reasons.get('policy', 0)} / {reasons.get('max_timesteps', 0)} |"
            )
    lines += ["", "## Models", ""]
    for name, entry in report["models"].items():
        check = entry["offline_vs_eval_json"]
        if check.get("checked"):
            note = "offline equals `eval.json`" if check.get("ok") else "offline DIFFERS from `eval.json`"
        else:
            note = f"`eval.json` not compared ({check.get('why')})"
        lines.append(
            f"* `{name}`: {entry['samples']} samples from {entry['sample_source']}; {note}; "
            f"offline {entry['offline_s']:.1f} s, server {entry['server_s']:.1f} s."
        )
    if report["mismatches"] or report["tolerated"]:
        lines += ["", "## Differences", ""]
        for kind in ("mismatches", "tolerated"):
            for m in report[kind]:
                lines.append(f"* {kind[:-2] if kind == 'mismatches' else 'tolerated'}: `{json.dumps(m)}`")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def write_plot(path: Path, report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours: dict[str, str] = {}
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    styles = {"single": ":", "TET ensemble": "--", "STR ensemble": "-", "running-mean ensemble": "-."}
    markers = {"single": "o", "TET ensemble": "s", "STR ensemble": "^", "running-mean ensemble": "D"}
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for name, entry in report["models"].items():
        colour = colours.setdefault(entry["dataset"], palette[len(colours) % len(palette)])
        rows = sorted(
            (r for r in entry["results"] if r["mean_timesteps"] is not None), key=lambda r: r["mean_timesteps"]
        )
        ax.plot(
            [r["mean_timesteps"] for r in rows],
            [r["accuracy"] * 100 for r in rows],
            linestyle=styles.get(entry["variant"], "-"),
            marker=markers.get(entry["variant"], "o"),
            color=colour,
            label=f"{name} ({entry['variant']}, T={entry['timesteps']})",
        )
    ax.set_xlabel("average timesteps (server, threshold sweep)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title("Anytime accuracy vs average timesteps, through spikeserve (gRPC stream)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/anytime_eval.py", description=(__doc__ or "").split("\n", 1)[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--grpc", metavar="HOST:PORT", help="a running server's gRPC address")
    where.add_argument("--start", action="store_true", help="start the release binary on free ports, stop it after")
    parser.add_argument(
        "--bin", default=None, help="the binary for --start (default: $SPIKESERVE_BIN or target/release)"
    )
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--thresholds", nargs="+", type=float, default=list(DEFAULT_THRESHOLDS))
    parser.add_argument(
        "--budgets",
        nargs="*",
        type=float,
        default=[],
        help="also ask with max_accuracy_drop (percentage points) on models with a calibration table",
    )
    parser.add_argument(
        "--policies",
        action="store_true",
        help="also ask every exit policy of the models' exit-policies.json at each --budgets (named, the model's "
        "own choice, and with each --levels guarantee), and compare with the offline evaluation of the file's rows",
    )
    parser.add_argument("--levels", nargs="*", type=float, default=[0.9], help="guarantee levels for --policies")
    parser.add_argument("--limit", type=int, default=None, help="the first N held-out samples per model")
    parser.add_argument("--heldout-json-only", action="store_true", help="event models: heldout.json's samples only")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight on the stream")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="longest wait for one model's answers")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args(argv)
    bad = [t for t in args.thresholds if not 0.0 < t <= 1.0]
    if bad:
        parser.error(f"thresholds must lie in (0, 1], found {bad}")
    args.thresholds = list(dict.fromkeys(args.thresholds))
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    return args


def evaluate(args: argparse.Namespace, address: str) -> dict[str, Any]:
    started = time.perf_counter()
    models: dict[str, Any] = {}
    mismatches: list[dict[str, object]] = []
    tolerated: list[dict[str, object]] = []
    compared = 0
    for name in args.models:
        model = load_model(args.models_dir, name)
        t0 = time.perf_counter()
        samples = load_samples(model, args.limit, args.heldout_json_only)
        settings = settings_for(model, args.thresholds, args.budgets)
        offline = offline_evaluation(
            model, samples, [*args.thresholds, *(s.threshold for s in settings), *eval_json_thresholds(model)]
        )
        document = exit_policies(model)
        if document is not None:
            for setting in policy_settings(model, args.budgets, args.levels, args.policies):
                offline.policy_runs[setting.key] = policy_run(offline, setting, samples.targets, document)
                settings.append(setting)
        eval_check = check_against_eval_json(model, offline, samples)
        offline_s = time.perf_counter() - t0
        answers, errors, server_s = stream_model(address, model, samples, settings, args.concurrency, args.timeout_s)
        for error in errors:
            mismatches.append({"model": name, "problem": f"stream error: {error}"})
        if eval_check.get("checked") and not eval_check.get("ok"):
            mismatches.append({"model": name, "problem": "offline evaluation differs from eval.json", **eval_check})
        for setting in settings:
            m, t = compare(model, offline, setting, answers, len(samples.targets))
            mismatches += m
            tolerated += t
            compared += len(samples.targets)
        rows = summarise(model, offline, samples, settings, answers)
        assert offline.member_logits is not None
        oracle = oracle_exits(trajectories(offline.member_logits).prediction)
        ceiling = model.timesteps / float(oracle.mean())
        for row in rows:
            row["fraction_of_ceiling"] = row["speedup"] / ceiling if row["speedup"] else None
        models[name] = {
            "variant": model.variant,
            "dataset": model.dataset,
            "timesteps": model.timesteps,
            "members": [str(m.relative_to(model.directory)) for m in model.members],
            "samples": len(samples.targets),
            "sample_source": samples.source,
            "accuracy_at_T": offline.accuracy_at_t,
            "oracle_mean_exit": float(oracle.mean()),
            "ceiling_speedup": ceiling,
            "offline_vs_eval_json": eval_check,
            "offline_s": offline_s,
            "server_s": server_s,
            "requests_per_s": len(samples.targets) * len(settings) / server_s,
            "results": rows,
        }
        bad = sum(1 for m in mismatches if m.get("model") == name)
        print(
            f"{name}: {len(samples.targets)} samples x {len(settings)} settings; offline {offline_s:.1f} s, "
            f"server {server_s:.1f} s; {bad} mismatches",
            file=sys.stderr,
        )
    return {
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": sys.argv,
        "grpc": address,
        "started_server": bool(args.start),
        "concurrency": args.concurrency,
        "thresholds": args.thresholds,
        "budgets": args.budgets,
        "limit": args.limit,
        "tolerance": {
            "near_threshold": NEAR_THRESHOLD,
            "rule": "a sample may differ from offline only when an offline confidence (float64) at a timestep up "
            "to the later of the two exits lies within near_threshold of the threshold (as in the Rust tests)",
        },
        "compared": compared,
        "ok": not mismatches,
        "mismatches": mismatches,
        "tolerated": tolerated,
        "models": models,
        "runtime_s": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.start:
        try:
            with spikeserve_process.started(spikeserve_process.release_binary(args.bin), args.models_dir) as server:
                report = evaluate(args, server.grpc_addr)
        except spikeserve_process.ServerStartError as error:
            raise SystemExit(f"anytime_eval: {error}") from error
    else:
        report = evaluate(args, args.grpc)
    report["runtime_s"] = time.perf_counter() - started
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        write_markdown(args.markdown, report)
    if args.plot:
        write_plot(args.plot, report)
    for name, entry in report["models"].items():
        for row in entry["results"]:
            print(
                f"{name:18} t={_setting(row):<6} accuracy {row['accuracy'] * 100:6.2f}%  "
                f"avg timesteps {_fmt(row['mean_timesteps'], '6.3f')}  speedup {_fmt(row['speedup'], '5.2f')}  "
                f"drop {row['accuracy_drop'] * 100:+.2f} pp"
                + ("" if row["mean_uncertainty"] is None else f"  uncertainty {row['mean_uncertainty']:.2e}")
            )
    print(
        f"{report['compared']} sample-threshold pairs compared in {report['runtime_s']:.1f} s: "
        f"{len(report['mismatches'])} mismatches, {len(report['tolerated'])} tolerated near-threshold differences"
    )
    if report["mismatches"]:
        print("MISMATCHES (server vs offline):", file=sys.stderr)
        for m in report["mismatches"][:50]:
            print(f"  {json.dumps(m)}", file=sys.stderr)
        if len(report["mismatches"]) > 50:
            print(f"  ... and {len(report['mismatches']) - 50} more (see --json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
