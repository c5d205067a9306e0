"""The LIF neuron (Eqs. 1–3) against an independent loop of method.md's recurrence and snntorch's Leaky."""
import math

import pytest
import torch

from lorsp import LIF

SETTINGS = [(4.0, 0.0), (2.0, 0.1), (1.5, -0.05), (8.0, 0.3)]


def reference_lif(x, tau, v_threshold, v_reset, alpha, detach_reset):
    """method.md's recurrence written out with plain tensor ops and a sigmoid-surrogate straight-through."""
    v = torch.full_like(x[0], v_reset)
    out = []
    for x_t in x:
        h = v + (x_t - (v - v_reset)) / tau
        u = h - v_threshold
        hard = (u >= 0).float()
        soft = torch.sigmoid(alpha * u)
        s = soft + (hard - soft).detach()  # forward Θ(u), backward α σ(αu)(1-σ(αu))
        r = s.detach() if detach_reset else s
        v = h * (1 - r) + v_reset * r
        out.append(s)
    return torch.stack(out)


@pytest.mark.parametrize("tau,v_threshold", SETTINGS)
@pytest.mark.parametrize("detach_reset", [False, True])
def test_matches_independent_loop(tau, v_threshold, detach_reset):
    torch.manual_seed(0)
    x = torch.randn(6, 4, 50, requires_grad=True)
    weights = torch.randn(6, 4, 50)
    lif = LIF(tau=tau, v_threshold=v_threshold, detach_reset=detach_reset)
    spikes = lif(x)
    (grad,) = torch.autograd.grad((spikes * weights).sum(), x)
    x_ref = x.detach().clone().requires_grad_()
    ref = reference_lif(x_ref, tau, v_threshold, 0.0, 4.0, detach_reset)
    (grad_ref,) = torch.autograd.grad((ref * weights).sum(), x_ref)
    assert torch.equal(spikes, ref)
    assert 0 < spikes.mean() < 1
    torch.testing.assert_close(grad, grad_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tau,v_threshold", SETTINGS)
def test_matches_snntorch_leaky(tau, v_threshold):
    """snntorch Leaky(beta = 1 - 1/tau, reset "zero") fed X/tau; its reset is detached, so ours is too."""
    snntorch = pytest.importorskip("snntorch")
    from snntorch import surrogate

    torch.manual_seed(1)
    x = torch.randn(8, 3, 40, requires_grad=True)
    weights = torch.randn(8, 3, 40)
    leaky = snntorch.Leaky(beta=1 - 1 / tau, threshold=v_threshold, reset_mechanism="zero",
                           spike_grad=surrogate.sigmoid(slope=4))
    mem = leaky.init_leaky()
    spk = []
    for x_t in x:
        s, mem = leaky(x_t / tau, mem)
        spk.append(s)
    spk = torch.stack(spk)
    (grad_snn,) = torch.autograd.grad((spk * weights).sum(), x)

    x_ours = x.detach().clone().requires_grad_()
    ours = LIF(tau=tau, v_threshold=v_threshold, v_reset=0.0, detach_reset=True)(x_ours)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), x_ours)
    assert torch.equal(ours, spk)
    torch.testing.assert_close(grad_ours, grad_snn, atol=1e-5, rtol=1e-5)


def test_trace_and_soft_reset():
    x = torch.tensor([[0.8], [0.8], [0.8], [0.8]])
    trace = LIF(tau=2.0, v_threshold=0.5, v_reset=None)(x, return_trace=True)
    # H_1 = 0.4 (no spike), H_2 = 0.4 + (0.8 - 0.4)/2 = 0.6 (spike), V_2 = 0.6 - 0.5 = 0.1
    torch.testing.assert_close(trace.membrane[:2, 0], torch.tensor([0.4, 0.6]))
    assert trace.spikes[:, 0].tolist()[:2] == [0.0, 1.0]
    torch.testing.assert_close(trace.voltage[1, 0], torch.tensor(0.1))
    hard = LIF(tau=2.0, v_threshold=0.5, v_reset=0.0)(x, return_trace=True)
    assert hard.voltage[1, 0] == 0.0


def test_theta_of_zero_fires():
    assert LIF(v_threshold=0.0)(torch.zeros(3, 5)).eq(1).all()


@pytest.mark.parametrize("kwargs,word", [
    (dict(tau=1.0), "tau"), (dict(tau=0.5), "tau"), (dict(tau=math.nan), "tau"),
    (dict(v_threshold=math.inf), "v_threshold"), (dict(v_reset=math.nan), "v_reset"),
    (dict(surrogate_alpha=0.0), "surrogate_alpha"),
])
def test_invalid_settings_name_the_setting(kwargs, word):
    with pytest.raises(ValueError, match=word):
        LIF(**kwargs)


def test_rejects_empty_sequence():
    with pytest.raises(ValueError, match=r"\[T, \.\.\.\]"):
        LIF()(torch.zeros(0, 3))
