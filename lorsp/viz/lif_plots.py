"""Figures and tables of the "LIF dynamics" chapter (Eqs. 1–3): :func:`input_current`, :func:`lif_response`,
:func:`plot_lif_response` (the slider callback), :func:`plot_spike_raster`, :func:`firing_rate_grid`,
:func:`plot_firing_rate_sweep`, :func:`snntorch_comparison`.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from ..lif import DEFAULT_TAU, LIF, LIFTrace
from .display import import_seaborn


INPUT_KINDS = ("constant", "pulses", "sine", "noisy")


def input_current(kind: str = "constant", amplitude: float = 1.0, steps: int = 40, seed: int = 0) -> torch.Tensor:
    """An input sequence X_1..X_T ``[steps]`` for the LIF neuron.

    ``constant``: X_t = amplitude; ``pulses``: amplitude on every 8th step for 3 steps, else 0;
    ``sine``: amplitude·(1 + sin(2πt/20))/2; ``noisy``: amplitude + N(0, (amplitude/2)²) with ``seed``.
    """
    if kind not in INPUT_KINDS:
        raise ValueError(f"input kind must be one of {INPUT_KINDS}, got {kind!r}")
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    amplitude = float(amplitude)
    t = torch.arange(steps, dtype=torch.float32)
    if kind == "constant":
        return torch.full((steps,), amplitude)
    if kind == "pulses":
        return amplitude * ((t % 8) < 3).float()
    if kind == "sine":
        return amplitude * (1 + torch.sin(2 * math.pi * t / 20)) / 2
    generator = torch.Generator().manual_seed(seed)
    return amplitude + 0.5 * abs(amplitude) * torch.randn(steps, generator=generator)


def lif_response(inputs: torch.Tensor, tau: float = DEFAULT_TAU, v_threshold: float = 0.5,
                 v_reset: float = 0.0) -> LIFTrace:
    """Run :class:`lorsp.LIF` (Eqs. 1–3) on ``inputs [T, ...]`` and return its trace (spikes, H_t, V_t)."""
    return LIF(tau=tau, v_threshold=v_threshold, v_reset=v_reset)(torch.as_tensor(inputs, dtype=torch.float32),
                                                                    return_trace=True)


def plot_lif_response(tau: float = DEFAULT_TAU, v_threshold: float = 0.5, v_reset: float = 0.0, amplitude: float = 1.0,
                      kinds: Sequence[str] = ("constant", "pulses", "noisy"), steps: int = 40,
                      seed: int = 0) -> Figure:
    """The slider callback of "LIF dynamics": one column per input kind, rows input X_t, membrane, spikes.

    The membrane row draws H_t (Eq. 1, before the reset) as dots and V_t (Eq. 3, after it) as a line, with
    V_th dashed; the spike row marks S_t = 1 (Eq. 2). The title gives the firing rate of each input.
    """
    kinds = list(kinds)
    fig = Figure(figsize=(3.6 * len(kinds), 6.2), layout="constrained")
    axes = fig.subplots(3, len(kinds), sharex=True, squeeze=False)
    t = np.arange(1, steps + 1)
    for col, kind in enumerate(kinds):
        x = input_current(kind, amplitude, steps, seed)
        trace = lif_response(x, tau, v_threshold, v_reset)
        spikes = trace.spikes.numpy()
        ax_in, ax_v, ax_s = axes[:, col]
        ax_in.step(t, x.numpy(), where="mid", color="C0")
        low, high = min(0.0, x.min().item()), max(x.max().item(), v_threshold, 0.0)
        pad = 0.1 * (high - low or 1.0)
        ax_in.set_ylim(low - pad, high + pad)
        ax_in.set_title(f"{kind} input — firing rate {spikes.mean():.2f}")
        ax_v.plot(t, trace.voltage.numpy(), color="C1", label="V_t (after reset, Eq. 3)")
        ax_v.plot(t, trace.membrane.numpy(), ".", color="C2", label="H_t (charged, Eq. 1)")
        ax_v.axhline(v_threshold, ls="--", color="k", lw=1, label="V_th")
        ax_v.axhline(v_reset, ls=":", color="grey", lw=1, label="V_reset")
        fired = t[spikes > 0]
        ax_s.vlines(fired, 0, 1, color="C3")
        ax_s.set_ylim(0, 1.2)
        ax_s.set_yticks([])
        ax_s.set_xlabel("time step t")
        if col == 0:
            ax_in.set_ylabel("input X_t")
            ax_v.set_ylabel("membrane")
            ax_s.set_ylabel("spikes S_t")
            ax_v.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"LIF with tau={tau:g}, V_th={v_threshold:g}, V_reset={v_reset:g}, amplitude={amplitude:g}")
    return fig


def plot_spike_raster(amplitudes: Sequence[float] = tuple(np.linspace(0.2, 2.0, 24)), tau: float = DEFAULT_TAU,
                      v_threshold: float = 0.5, v_reset: float = 0.0, steps: int = 40) -> Figure:
    """Spike raster of one LIF neuron per constant input amplitude (Eqs. 1–3): stronger input fires sooner
    and more often. Under a constant input X, Eq. 1 drives the membrane from V_reset towards X, so an input
    that does not exceed V_th never fires."""
    amplitudes = torch.as_tensor(list(amplitudes), dtype=torch.float32)
    inputs = amplitudes.expand(steps, -1)  # [T, neurons]
    spikes = lif_response(inputs, tau, v_threshold, v_reset).spikes.numpy()
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.subplots()
    ts, ns = np.nonzero(spikes)
    ax.scatter(ts + 1, amplitudes.numpy()[ns], marker="|", s=60, color="k")
    ax.set_xlabel("time step t")
    ax.set_ylabel("constant input X")
    ax.set_xlim(0, steps + 1)
    ax.axhline(v_threshold, ls="--", color="C3", lw=1, label="X = V_th (below: never fires)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"spike raster, one neuron per input (tau={tau:g}, V_th={v_threshold:g})")
    return fig


def firing_rate_grid(taus: Iterable[float], thresholds: Iterable[float], amplitude: float = 1.0,
                     kind: str = "noisy", steps: int = 100, v_reset: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Firing rate (share of the ``steps`` with a spike) of the LIF for every (tau, v_threshold) pair.

    Columns ``tau, v_threshold, firing_rate``; one LIF run per pair on the same input.
    """
    x = input_current(kind, amplitude, steps, seed)
    rows = []
    for tau in taus:
        for v_threshold in thresholds:
            spikes = lif_response(x, float(tau), float(v_threshold), v_reset).spikes
            rows.append(dict(tau=float(tau), v_threshold=float(v_threshold), firing_rate=spikes.mean().item()))
    return pd.DataFrame(rows)


def plot_firing_rate_sweep(grid: pd.DataFrame, title: str = "") -> Figure:
    """Left: firing rate vs tau, one line per threshold; right: the same grid as a heatmap (seaborn)."""
    sns = import_seaborn()
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_line, ax_heat = fig.subplots(1, 2)
    sns.lineplot(data=grid, x="tau", y="firing_rate", hue="v_threshold", marker="o", palette="viridis",
                 ax=ax_line)
    ax_line.set_ylabel("firing rate")
    ax_line.legend(title="V_th", fontsize=8)
    table = grid.pivot(index="v_threshold", columns="tau", values="firing_rate").sort_index(ascending=False)
    sns.heatmap(table, annot=True, fmt=".2f", cmap="mako", vmin=0, vmax=1, ax=ax_heat,
                xticklabels=[f"{v:g}" for v in table.columns], yticklabels=[f"{v:g}" for v in table.index])
    ax_heat.set_xlabel("tau")
    ax_heat.set_ylabel("V_th")
    if title:
        fig.suptitle(title)
    return fig


def snntorch_comparison(inputs: torch.Tensor, tau: float = DEFAULT_TAU, v_threshold: float = 0.5) -> pd.DataFrame:
    """Our LIF (hard reset to 0) beside snntorch's ``Leaky(beta=1-1/tau, reset_mechanism="zero")`` fed X_t/tau,
    step by step on one input sequence ``[T]``: columns ``t, input, H_t (lorsp), mem (snntorch), S_t (lorsp),
    S_t (snntorch)``. The two recurrences are the same (docs/method.md); spikes can only differ where the
    membrane sits exactly on the threshold (snntorch fires on H > V_th, Eq. 2 on H >= V_th).

    Raises ``ImportError`` when snntorch is not installed (it is in the ``test`` extra).
    """
    import snntorch

    inputs = torch.as_tensor(inputs, dtype=torch.float32)
    if inputs.dim() != 1:
        raise ValueError(f"inputs must be one sequence [T], got shape {tuple(inputs.shape)}")
    ours = lif_response(inputs, tau, v_threshold, 0.0)
    leaky = snntorch.Leaky(beta=1 - 1 / tau, threshold=v_threshold, reset_mechanism="zero")
    mem = leaky.init_leaky()
    spikes, membranes = [], []
    with torch.no_grad():
        for x_t in inputs:
            s, mem = leaky(x_t.view(1) / tau, mem)
            spikes.append(float(s.item()))
            membranes.append(float(mem.item()))
    return pd.DataFrame({"t": np.arange(1, len(inputs) + 1), "input": inputs.numpy(),
                         "H_t (lorsp)": ours.membrane.numpy(), "mem (snntorch)": membranes,
                         "S_t (lorsp)": ours.spikes.numpy(), "S_t (snntorch)": spikes})
