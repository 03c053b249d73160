import pytest
import torch

from spiketrain.models import DigitsCSNN
from spiketrain.regularisers import (
    LayerTrace,
    correct_at_every_step,
    rcs_penalty,
    regulariser_loss,
    spatial_temporal_factor,
    str_penalty,
)


def trace(spikes, membrane):
    return LayerTrace(torch.tensor(spikes, dtype=torch.float32), torch.tensor(membrane, dtype=torch.float32), 1.0)


# One layer, T = 2, two samples of two neurons each.
SPIKES = [[[1, 0], [1, 0]], [[1, 0], [0, 0]]]
MEMBRANE = [[[0, 0.5], [0, 0.5]], [[0.5, 0.5], [0.5, 0.5]]]


def test_spatial_temporal_factor_by_hand():
    stf = spatial_temporal_factor(trace(SPIKES, MEMBRANE))
    # t=1: mean spikes 0.5 over mean |u| 0.25 -> 2; t=2: sample 0: 0.5 / 0.5 -> 1, sample 1: 0 / 0.5 -> 0
    assert stf.flatten().tolist() == pytest.approx([2.0, 2.0, 1.0, 0.0], rel=1e-5)


def test_str_penalty_by_hand_on_the_masked_samples_only():
    layer = trace(SPIKES, MEMBRANE)
    # sample 0: 1 - 1/2 = 0.5; sample 1: 1 - 0/2 = 1
    assert str_penalty([layer], torch.tensor([True, False])).item() == pytest.approx(0.5, rel=1e-5)
    assert str_penalty([layer], torch.tensor([False, True])).item() == pytest.approx(1.0, rel=1e-5)
    assert str_penalty([layer], torch.tensor([True, True])).item() == pytest.approx(0.75, rel=1e-5)
    # two layers: the mean over layers
    even = trace([[[1, 0]], [[1, 0]]], [[[0, 0.5]], [[0, 0.5]]])  # STF 2 at both steps: penalty 0
    first = trace([s[:1] for s in SPIKES], [m[:1] for m in MEMBRANE])
    assert str_penalty([first, even], torch.tensor([True])).item() == pytest.approx(0.25, rel=1e-5)
    assert str_penalty([layer], torch.tensor([False, False])).item() == 0.0


def test_rcs_penalty_by_hand():
    # T=2: the reference is the last ceil(0.6) = 1 step. r_1 = [1, 0], r_2 = [0, 1]: cos 0 and 1.
    orthogonal = trace([[[1, 0]], [[0, 1]]], [[[0, 0]], [[0, 0]]])
    aligned = trace([[[1, 0]], [[1, 0]]], [[[0, 0]], [[0, 0]]])
    mask = torch.tensor([True])
    assert rcs_penalty([orthogonal], mask).item() == pytest.approx(1 / (0.5 + 1e-5), rel=1e-5)
    assert rcs_penalty([aligned], mask).item() == pytest.approx(1 / (1 + 1e-5), rel=1e-5)
    # the maximum over layers
    assert rcs_penalty([aligned, orthogonal], mask).item() == pytest.approx(1 / (0.5 + 1e-5), rel=1e-5)
    # the membrane counts through ReLU(u / theta): r_2 = [0, 0] + [1, 0] makes it aligned
    membrane_aligned = trace([[[1, 0]], [[0, 0]]], [[[0, 0]], [[1, -3]]])
    assert rcs_penalty([membrane_aligned], mask).item() == pytest.approx(1 / (1 + 1e-5), rel=1e-5)


def test_mask_is_correct_at_every_timestep():
    logits = torch.tensor([[[2.0, 0.0], [2.0, 0.0]], [[2.0, 0.0], [0.0, 2.0]]])  # T=2, B=2
    assert correct_at_every_step(logits, torch.tensor([0, 0])).tolist() == [True, False]


def test_str_gradient_reaches_the_weights():
    torch.manual_seed(0)
    model = DigitsCSNN()
    frames = torch.rand(4, 8, 1, 8, 8) * 16
    logits, traces = model.unroll(frames)
    loss = str_penalty(traces, torch.ones(8, dtype=torch.bool))
    assert loss.item() > 0
    loss.backward()
    conv = model.conv1[0].weight.grad
    assert conv is not None and float(conv.abs().sum()) > 0, "the surrogate carries the penalty to the first layer"
    with pytest.raises(ValueError, match="unknown regulariser"):
        regulariser_loss("l2", traces, logits, torch.zeros(8, dtype=torch.long))
