"""The leaky integrate-and-fire neuron of LoRSP (Eqs. 1–3).

Book chapter: "LIF dynamics" (``book/lif_dynamics.ipynb``).

The recurrence, for t = 1..T (``docs/method.md``, as spikingjelly's ``LIFNode(decay_input=True)``)::

    V_0 = V_reset
    H_t = V_{t-1} + (X_t - (V_{t-1} - V_reset)) / tau          (1)  charge
    S_t = Θ(H_t - V_th),   Θ(0) = 1                            (2)  fire
    V_t = H_t (1 - S_t) + V_reset S_t                           (3)  hard reset
    V_t = H_t - V_th S_t                                        (3') soft reset (v_reset=None)

Θ's derivative is replaced by the sigmoid surrogate α σ(αu)(1 − σ(αu)), u = H_t − V_th.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

__all__ = ["LIF", "LIFTrace", "spike", "validate_lif_settings", "DEFAULT_TAU", "DEFAULT_V_THRESHOLD",
           "DEFAULT_V_RESET", "DEFAULT_SURROGATE_ALPHA"]

# The LIF neuron's defaults, the paper's LoRSP setting (method.md): every layer above takes them from here.
DEFAULT_TAU = 4.0  # leak factor tau (Eq. 1)
DEFAULT_V_THRESHOLD = 0.0  # firing threshold V_th (Eq. 2)
DEFAULT_V_RESET = 0.0  # reset potential V_reset (Eq. 3)
DEFAULT_SURROGATE_ALPHA = 4.0  # slope of the sigmoid surrogate gradient (spikingjelly's default)


class _SigmoidSurrogateSpike(torch.autograd.Function):
    """Heaviside step Θ(u) (Θ(0) = 1, Eq. 2) with the sigmoid surrogate gradient in backward."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(u)
        ctx.alpha = alpha
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (u,) = ctx.saved_tensors
        sig = torch.sigmoid(ctx.alpha * u)
        return grad_output * ctx.alpha * sig * (1.0 - sig), None


def spike(u: torch.Tensor, alpha: float = 4.0) -> torch.Tensor:
    """Θ(u) of Eq. 2 in forward, d/du σ(αu) in backward."""
    return _SigmoidSurrogateSpike.apply(u, alpha)


class LIFTrace(NamedTuple):
    """What one LIF run produced, each ``[T, ...]``.

    ``spikes`` S_t (Eq. 2), ``membrane`` H_t before the reset (Eq. 1), ``voltage`` V_t after it (Eq. 3).
    """

    spikes: torch.Tensor
    membrane: torch.Tensor
    voltage: torch.Tensor


def _require_finite(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def validate_lif_settings(tau: float, v_threshold: float, v_reset: float | None, surrogate_alpha: float):
    """Check the LIF's settings; raise ``ValueError`` naming the setting and why it is wrong."""
    tau = _require_finite("tau", tau)
    if tau <= 1.0:
        raise ValueError(
            f"tau must be > 1 (Eq. 1 divides the charge by tau; tau <= 1 over-corrects the leak), got {tau}"
        )
    v_threshold = _require_finite("v_threshold", v_threshold)
    if v_reset is not None:
        v_reset = _require_finite("v_reset", v_reset)
    surrogate_alpha = _require_finite("surrogate_alpha", surrogate_alpha)
    if surrogate_alpha <= 0:
        raise ValueError(f"surrogate_alpha must be > 0 (the sigmoid surrogate's slope), got {surrogate_alpha}")
    return tau, v_threshold, v_reset, surrogate_alpha


class LIF(nn.Module):
    """Multi-step leaky integrate-and-fire neuron (Eqs. 1–3), one neuron per element of ``X_t``.

    Args:
        tau: leak factor τ (> 1). Paper default 4.0 [reading].
        v_threshold: firing threshold V_th. Default 0.0 [reading].
        v_reset: reset potential V_reset (hard reset, Eq. 3); ``None`` selects the soft reset
            V_t = H_t − V_th S_t, with a resting potential of 0 in the charge.
        surrogate_alpha: slope α of the sigmoid surrogate gradient (spikingjelly's default 4).
        detach_reset: cut the gradient through the reset term (spikingjelly's ``detach_reset``).

    ``forward(inputs)`` takes ``[T, ...]`` and returns the spikes ``[T, ...]``;
    ``forward(inputs, return_trace=True)`` returns a :class:`LIFTrace` with the membrane too.
    """

    def __init__(
        self,
        tau: float = DEFAULT_TAU,
        v_threshold: float = DEFAULT_V_THRESHOLD,
        v_reset: float | None = DEFAULT_V_RESET,
        surrogate_alpha: float = DEFAULT_SURROGATE_ALPHA,
        detach_reset: bool = False,
    ):
        super().__init__()
        self.tau, self.v_threshold, self.v_reset, self.surrogate_alpha = validate_lif_settings(
            tau, v_threshold, v_reset, surrogate_alpha
        )
        self.detach_reset = bool(detach_reset)

    def extra_repr(self) -> str:
        return (
            f"tau={self.tau}, v_threshold={self.v_threshold}, v_reset={self.v_reset}, "
            f"surrogate_alpha={self.surrogate_alpha}, detach_reset={self.detach_reset}"
        )

    def forward(self, inputs: torch.Tensor, return_trace: bool = False):
        if inputs.dim() < 1 or inputs.shape[0] < 1:
            raise ValueError(f"LIF expects a sequence [T, ...] with T >= 1, got shape {tuple(inputs.shape)}")
        rest = 0.0 if self.v_reset is None else self.v_reset
        voltage = torch.full_like(inputs[0], rest)
        spikes, membranes, voltages = [], [], []
        for x_t in inputs:
            h_t = voltage + (x_t - (voltage - rest)) / self.tau  # Eq. 1
            s_t = spike(h_t - self.v_threshold, self.surrogate_alpha)  # Eq. 2
            s_reset = s_t.detach() if self.detach_reset else s_t
            if self.v_reset is None:
                voltage = h_t - self.v_threshold * s_reset  # Eq. 3, soft reset
            else:
                voltage = h_t * (1.0 - s_reset) + self.v_reset * s_reset  # Eq. 3, hard reset
            spikes.append(s_t)
            if return_trace:
                membranes.append(h_t)
                voltages.append(voltage)
        spikes = torch.stack(spikes)
        if not return_trace:
            return spikes
        return LIFTrace(spikes, torch.stack(membranes), torch.stack(voltages))
