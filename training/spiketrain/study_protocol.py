"""The study's protocol and the layout of its runs, shared by the driver (:mod:`spiketrain.study`) and the
report (:mod:`spiketrain.study_report`): the data set and schedule, the arms and their names, and how a
run's outputs are read back. The driver imports the report, the report imports this, and nothing here
imports either.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATASET = "mnist-events"
TIMESTEPS = 10
EPOCHS = 30
SCREEN_ALPHAS = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
SCREEN_SEEDS = (0, 1)
PAIRED_SEEDS = tuple(range(8))
#: Members of a shipped ensemble: the winning recipe's first seeds.
SHIPPED_SEEDS = (0, 1, 2)
#: RCS is the third arm, for reference: as many seeds as the screen, fewer than the paired TET / STR
#: comparison (its interval is correspondingly wider, and the report shows it).
RCS_SEEDS = (0, 1)
#: The authors' default loss weight for RCS (``snncase.py`` in their toolkit).
RCS_ALPHA = 0.002
ABLATIONS = {
    "mask-tail": ["--reg-mask", "tail"],
    "skip-first": ["--reg-skip-first"],
    "logvar": ["--reg-spread", "logvar"],
}

#: Arms of the early-answers study (issue 30): losses on the running mean of the logits, which is what the
#: exit reads (``spiketrain.losses``; the reasons are in training/README.md). Screened against TET on the
#: calibration split, in this order (what a shortened screen runs first).
EARLY_ARMS = {
    # TET plus the cross-entropy of the running mean at every t, weighted toward early t (linear).
    "rm-w1": ["--running-mean-weight", "1"],
    # The running mean's pull toward the model's own (stop-gradient) full-T answer, with TET.
    "sd-w1-t2": ["--distill-weight", "1", "--distill-temperature", "2"],
    # The running-mean loss alone: the exit's reading supervised, no timestep's own logits.
    "rm-w1-no-tet": ["--no-tet", "--running-mean-weight", "1"],
    # A lighter and a heavier running-mean weight (the weight is swept).
    "rm-w0.3": ["--running-mean-weight", "0.3"],
    "rm-w3": ["--running-mean-weight", "3"],
    # Both losses on the running mean, with TET: the label and the model's own final answer.
    "rm-w1-sd-w1-t2": ["--running-mean-weight", "1", "--distill-weight", "1", "--distill-temperature", "2"],
    # The running-mean loss alone with every t weighted alike: is the early-leaning schedule what helps?
    "rm-w1-uniform-no-tet": ["--no-tet", "--running-mean-weight", "1", "--running-mean-schedule", "uniform"],
    # The same loss on equal-event-count frames (K: the median training sample's events / T): the first
    # timestep sees as many events as a later one, instead of the first 1/T of the window.
    "rm-w1-uniform-no-tet-count": [
        "--no-tet",
        "--running-mean-weight",
        "1",
        "--running-mean-schedule",
        "uniform",
        "--binning",
        "count",
    ],
}

#: The screen's candidates for the paired stage, named before any test-split figure was read: the largest
#: calibration-split area (the study's criterion) and the fewest calibrated timesteps.
EARLY_CANDIDATES = ("rm-w1-uniform-no-tet", "rm-w1-no-tet")


def alpha_arm(alpha: float) -> str:
    return "tet" if alpha == 0 else f"str-a{alpha:g}"


def rcs_arm() -> str:
    return f"rcs-a{RCS_ALPHA:g}"


def load_logits(directory: Path) -> dict[str, np.ndarray]:
    stored = np.load(directory / "logits.npz")
    return {"calibration": stored["calibration"], "test": stored["test"]}


def calibration_targets() -> tuple[np.ndarray, np.ndarray]:
    """The targets of the calibration and test splits, in the order of the runs' logits."""
    from .mnist_events import load_mnist_digits, split_indices

    _, labels = load_mnist_digits()
    _, cal, test = split_indices(labels)
    return labels[cal], labels[test]
