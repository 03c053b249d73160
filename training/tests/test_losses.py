import math

import pytest
import torch

from spiketrain.losses import (
    LossOptions,
    running_mean_logits,
    running_mean_loss,
    self_distillation_loss,
    tet_loss,
    timestep_weights,
    training_loss,
)


def test_tet_loss_by_hand():
    # T=2, B=1, C=2
    logits = torch.tensor([[[2.0, 0.0]], [[0.0, 0.0]]])
    target = torch.tensor([0])
    ce_t1 = -math.log(math.exp(2) / (math.exp(2) + 1))
    ce_t2 = math.log(2)
    mse = ((2 - 1) ** 2 + 1 + 1 + 1) / 4
    lam = 1e-3
    expected = (1 - lam) * (ce_t1 + ce_t2) / 2 + lam * mse
    assert tet_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_tet_loss_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"\[T, B, C\]"):
        tet_loss(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))


# --- Losses on the running mean (issue 30) ---------------------------------------------------------------


def _ce(logits: list[float], target: int) -> float:
    return -math.log(math.exp(logits[target]) / sum(math.exp(x) for x in logits))


def test_timestep_weights_sum_to_one_and_lean_early():
    for schedule in ("linear", "harmonic", "uniform"):
        w = timestep_weights(4, schedule)
        assert w.sum().item() == pytest.approx(1.0)
        assert all(w[t] >= w[t + 1] for t in range(3))
    assert timestep_weights(4, "linear").tolist() == pytest.approx([0.4, 0.3, 0.2, 0.1])
    assert timestep_weights(2, "harmonic").tolist() == pytest.approx([2 / 3, 1 / 3])
    with pytest.raises(ValueError, match="schedule"):
        timestep_weights(3, "late")


def test_running_mean_loss_by_hand():
    # T=2, B=1, C=2: running means [2, 0] then [1, 0]; linear weights 2/3, 1/3.
    logits = torch.tensor([[[2.0, 0.0]], [[0.0, 0.0]]])
    target = torch.tensor([0])
    assert running_mean_logits(logits)[:, 0].tolist() == [[2.0, 0.0], [1.0, 0.0]]
    expected = 2 / 3 * _ce([2.0, 0.0], 0) + 1 / 3 * _ce([1.0, 0.0], 0)
    assert running_mean_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    uniform = 0.5 * _ce([2.0, 0.0], 0) + 0.5 * _ce([1.0, 0.0], 0)
    assert running_mean_loss(logits, target, "uniform").item() == pytest.approx(uniform, rel=1e-6)


def test_self_distillation_by_hand():
    # T=2: only t=1 (running mean [2, 0]) is pulled toward softmax([1, 0] / tau), weight 1, times tau^2.
    logits = torch.tensor([[[2.0, 0.0]], [[0.0, 0.0]]])
    tau = 2.0

    def softmax(x: list[float]) -> list[float]:
        e = [math.exp(v / tau) for v in x]
        return [v / sum(e) for v in e]

    p, q = softmax([1.0, 0.0]), softmax([2.0, 0.0])
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    assert self_distillation_loss(logits, tau).item() == pytest.approx(tau**2 * kl, rel=1e-5)
    assert self_distillation_loss(logits[:1], tau).item() == 0.0  # T = 1: nothing to pull
    same = torch.ones(3, 2, 4)  # every running mean already is the full-T one
    assert self_distillation_loss(same).item() == pytest.approx(0.0, abs=1e-7)


def test_gradients_flow_and_the_teacher_is_stopped():
    torch.manual_seed(0)
    logits = torch.randn(4, 3, 5, requires_grad=True)
    target = torch.tensor([0, 2, 4])
    running_mean_loss(logits, target).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert torch.isfinite(logits.grad).all()
    logits.grad = None
    self_distillation_loss(logits).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    # The full-T distribution is a stop-gradient teacher: the loss reaches o_T only through the
    # students' running means (which include o_T at no t < T), so o_T gets no gradient.
    assert logits.grad[-1].abs().max().item() == 0.0


def test_with_the_new_weights_at_zero_the_loss_is_tet_exactly():
    torch.manual_seed(1)
    logits = torch.randn(5, 8, 10)
    target = torch.randint(0, 10, (8,))
    tet = tet_loss(logits, target)
    assert torch.equal(training_loss(logits, target), tet)
    assert torch.equal(training_loss(logits, target, LossOptions(schedule="harmonic", distill_temperature=4.0)), tet)
    assert LossOptions().is_tet and LossOptions().name() == "tet"


def test_training_loss_adds_its_terms():
    torch.manual_seed(2)
    logits = torch.randn(4, 6, 3)
    target = torch.randint(0, 3, (6,))
    options = LossOptions(running_mean_weight=0.5, distill_weight=2.0, distill_temperature=3.0)
    expected = (
        tet_loss(logits, target) + 0.5 * running_mean_loss(logits, target) + 2.0 * self_distillation_loss(logits, 3.0)
    )
    assert training_loss(logits, target, options).item() == pytest.approx(expected.item(), rel=1e-6)
    assert options.name() == "tet+running-mean+self-distillation"
    alone = LossOptions(tet=False, running_mean_weight=1.0)
    assert training_loss(logits, target, alone).item() == pytest.approx(running_mean_loss(logits, target).item())
    assert alone.name() == "running-mean"
    with pytest.raises(ValueError, match="without TET"):
        LossOptions(tet=False)
    with pytest.raises(ValueError, match="temperature"):
        LossOptions(distill_weight=1.0, distill_temperature=0.0)
