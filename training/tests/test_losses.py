import math

import pytest
import torch

from spiketrain.losses import tet_loss


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
