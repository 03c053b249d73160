import torch

from spiketrain.neurons import LIF, spike


def test_lif_charges_fires_and_resets_by_hand():
    lif = LIF()
    membrane = torch.tensor([0.0, 0.0, 0.8])
    current = torch.tensor([0.6, 1.2, 0.7])
    spikes, membrane = lif(current, membrane)
    # u = 0.5*u_prev + x: [0.6, 1.2, 1.1]; spikes where u >= 1; hard reset to 0 where spiked
    assert spikes.tolist() == [0.0, 1.0, 1.0]
    assert torch.allclose(membrane, torch.tensor([0.6, 0.0, 0.0]))
    spikes, membrane = lif(torch.tensor([0.7, 0.2, 1.0]), membrane)
    # u = [0.3 + 0.7, 0 + 0.2, 0 + 1.0] = [1.0, 0.2, 1.0]: exactly at threshold fires
    assert spikes.tolist() == [1.0, 0.0, 1.0]
    assert torch.allclose(membrane, torch.tensor([0.0, 0.2, 0.0]))


def test_triangle_surrogate_gradient_by_hand():
    u = torch.tensor([0.0, 0.5, 1.0, 1.25, 2.0, 2.5], requires_grad=True)
    s = spike(u)
    assert s.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    s.sum().backward()
    # ds/du = max(0, 1 - |u - 1|) with width 1
    assert u.grad is not None
    assert torch.allclose(u.grad, torch.tensor([0.0, 0.5, 1.0, 0.75, 0.0, 0.0]))


def test_without_autograd_the_spike_is_a_plain_comparison():
    with torch.no_grad():
        u = torch.tensor([0.999, 1.0, 1.001])
        assert spike(u).tolist() == [0.0, 1.0, 1.0]
