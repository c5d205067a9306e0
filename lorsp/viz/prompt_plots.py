"""Figures and tables of the "Prompt factorisation" chapter (Eqs. 4–9): :func:`plot_prompt_anatomy`,
:func:`prompt_ranks`, :func:`sparsity_grid`, :func:`plot_sparsity_heatmap`, :func:`factor_correlation` and
:func:`plot_factor_correlation` (Fig. 3b), :func:`plot_prompt_explorer` (the slider callback).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from ..lif import DEFAULT_TAU, DEFAULT_V_RESET, DEFAULT_V_THRESHOLD
from ..prompters import LoRSPPrompter
from .display import import_seaborn
from .prompt_weights import with_lif_settings


def _diverging(ax, image: np.ndarray, limit: float, title: str):
    handle = ax.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()
    return handle


def plot_prompt_anatomy(prompter: LoRSPPrompter, images: torch.Tensor, names: Sequence[str] | None = None,
                        max_images: int = 3, channel: int = 0) -> Figure:
    """One row per image: the image, F_1..F_G (Eq. 5), the spikes S_1..S_G (Eq. 7, share of the C channels
    that fired), δ (Eq. 9) and the prompted image x + δ clipped to [0, 1] for display (Eq. 10).

    Factors and δ show ``channel``; one colour scale per row (symmetric around 0).
    """
    images = images[:max_images]
    explanation = prompter.explain(images)
    groups = explanation.factors.shape[0]
    names = list(names or [f"image {i}" for i in range(len(images))])
    cols = 1 + 2 * groups + 2
    fig = Figure(figsize=(1.45 * cols, 1.7 * len(images) + 0.6), layout="constrained")
    axes = fig.subplots(len(images), cols, squeeze=False)
    for row in range(len(images)):
        ax = axes[row]
        ax[0].imshow(images[row].permute(1, 2, 0).numpy())
        ax[0].set_title(names[row][:18], fontsize=8)
        ax[0].set_axis_off()
        factors = explanation.factors[:, row, channel].numpy()
        limit = float(np.abs(factors).max()) or 1.0
        for g in range(groups):
            _diverging(ax[1 + g], factors[g], limit, f"F_{g + 1} (c={channel})")
            fired = explanation.spikes[g, row].mean(0).numpy()
            ax[1 + groups + g].imshow(fired, cmap="gray_r", vmin=0, vmax=1)
            ax[1 + groups + g].set_title(f"S_{g + 1}: {explanation.firing_rate[row, g].item():.0%} fired",
                                         fontsize=8)
            ax[1 + groups + g].set_axis_off()
        delta = explanation.prompt[row, channel].numpy()
        _diverging(ax[-2], delta, float(np.abs(delta).max()) or 1.0,
                   f"δ: {explanation.sparsity[row].item():.0%} zero")
        ax[-1].imshow((images[row] + explanation.prompt[row]).clamp(0, 1).permute(1, 2, 0).numpy())
        ax[-1].set_title("x + δ", fontsize=8)
        ax[-1].set_axis_off()
    lif = prompter.lif
    fig.suptitle(f"LoRSP anatomy: G={groups}, r={prompter.rank}, tau={lif.tau:g}, V_th={lif.v_threshold:g}, "
                 f"V_reset={lif.v_reset:g} (red > 0 > blue)", fontsize=10)
    return fig


def sparsity_grid(prompter: LoRSPPrompter, images: torch.Tensor, taus: Iterable[float],
                  thresholds: Iterable[float], v_reset: float | None = None) -> pd.DataFrame:
    """Mean sparsity of δ (share of zero entries) and mean firing rate over ``images`` for every
    (tau, v_threshold) pair, with the prompter's factors fixed. Columns ``tau, v_threshold, sparsity,
    firing_rate``."""
    v_reset = prompter.lif.v_reset if v_reset is None else v_reset
    rows = []
    for tau in taus:
        for v_threshold in thresholds:
            explanation = with_lif_settings(prompter, float(tau), float(v_threshold), v_reset).explain(images)
            rows.append(dict(tau=float(tau), v_threshold=float(v_threshold),
                             sparsity=explanation.sparsity.mean().item(),
                             firing_rate=explanation.firing_rate.mean().item()))
    return pd.DataFrame(rows)


def plot_sparsity_heatmap(grid: pd.DataFrame, title: str = "") -> Figure:
    """Heatmaps (seaborn) of the sparsity of δ and of the firing rate over the (tau, V_th) grid."""
    sns = import_seaborn()
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    for ax, value, cmap in zip(fig.subplots(1, 2), ("sparsity", "firing_rate"), ("rocket_r", "mako")):
        table = grid.pivot(index="v_threshold", columns="tau", values=value).sort_index(ascending=False)
        sns.heatmap(table, annot=True, fmt=".2f", cmap=cmap, vmin=0, vmax=1, ax=ax,
                    xticklabels=[f"{v:g}" for v in table.columns], yticklabels=[f"{v:g}" for v in table.index])
        ax.set_title("sparsity of δ (share of zeros)" if value == "sparsity" else "firing rate (share of spikes)")
        ax.set_xlabel("tau")
        ax.set_ylabel("V_th")
    if title:
        fig.suptitle(title)
    return fig


def factor_correlation(factors: torch.Tensor) -> np.ndarray:
    """Pairwise Pearson correlation of the G prompt factors ``[G, N, C, H, W]`` (Fig. 3b).

    Per image, each factor is flattened over C·H·W and the G×G correlation matrix is computed; the matrices
    are averaged over the N images. A factor that is constant on an image has no correlation and gives NaN.
    """
    if factors.dim() != 5:
        raise ValueError(f"factors must be [G, N, C, H, W], got shape {tuple(factors.shape)}")
    g, n = factors.shape[:2]
    flat = factors.detach().double().permute(1, 0, 2, 3, 4).reshape(n, g, -1)
    centred = flat - flat.mean(-1, keepdim=True)
    norm = centred.norm(dim=-1, keepdim=True)
    unit = centred / norm
    corr = unit @ unit.transpose(1, 2)
    return corr.mean(0).numpy()


def plot_factor_correlation(corr: np.ndarray, title: str = "pairwise correlation of the prompt factors") -> Figure:
    """The G×G correlation heatmap of Fig. 3b (seaborn), annotated, colour scale −1..1."""
    sns = import_seaborn()
    g = corr.shape[0]
    labels = [f"F_{i + 1}" for i in range(g)]
    fig = Figure(figsize=(1.0 * g + 2.2, 0.9 * g + 1.4), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(pd.DataFrame(corr, index=labels, columns=labels), annot=True, fmt=".2f", cmap="RdBu_r",
                vmin=-1, vmax=1, square=True, ax=ax)
    ax.set_title(title, fontsize=10)
    return fig


def prompt_ranks(prompter: LoRSPPrompter, images: torch.Tensor, channel: int = 0) -> pd.DataFrame:
    """Numerical rank (``torch.linalg.matrix_rank``, float32, torch's default tolerance) of each factor F_g,
    of the dense average (1/G) Σ F_g (LPF) and of LoRSP's gated δ (Eq. 9), per image, for one channel's H×W
    matrix.

    Eq. 5 bounds every F_g and their average by r; the element-wise spike gate of Eq. 9 carries no such
    bound, so this table shows what the gating does to the rank on these images.
    """
    explanation = prompter.explain(images)
    rows = []
    for n in range(images.shape[0]):
        row = {"image": n}
        for g in range(explanation.factors.shape[0]):
            row[f"F_{g + 1}"] = int(torch.linalg.matrix_rank(explanation.factors[g, n, channel]))
        row["mean of F (LPF)"] = int(torch.linalg.matrix_rank(explanation.factors[:, n, channel].mean(0)))
        row["δ (LoRSP)"] = int(torch.linalg.matrix_rank(explanation.prompt[n, channel]))
        row["min(H, W)"] = min(explanation.prompt.shape[-2:])
        rows.append(row)
    return pd.DataFrame(rows).set_index("image")


def plot_prompt_explorer(prompter: LoRSPPrompter, images: torch.Tensor, tau: float = DEFAULT_TAU,
                         v_threshold: float = DEFAULT_V_THRESHOLD, v_reset: float = DEFAULT_V_RESET,
                         image_index: int = 0, names: Sequence[str] | None = None,
                         channel: int = 0) -> Figure:
    """The slider callback of "Prompt factorisation": the anatomy of one image (the panels of
    :func:`plot_prompt_anatomy`, in two rows so that each is large enough to read) with the LIF's tau, V_th
    and V_reset replaced, the factors (P, B) unchanged. Top: the image, F_1..F_G (Eq. 5, ``channel``) and δ
    (Eq. 9); bottom: x + δ (clipped to [0, 1] for display) and the spikes S_1..S_G (Eq. 7, share of the
    channels that fired)."""
    if not 0 <= image_index < len(images):
        raise ValueError(f"image_index must be in [0, {len(images) - 1}], got {image_index}")
    names = list(names or [f"image {i}" for i in range(len(images))])
    clone = with_lif_settings(prompter, tau, v_threshold, v_reset)
    image = images[image_index:image_index + 1]
    explanation = clone.explain(image)
    groups = explanation.factors.shape[0]
    fig = Figure(figsize=(2.0 * (groups + 2), 4.6), layout="constrained")
    axes = fig.subplots(2, groups + 2)
    for ax in axes.flat:
        ax.set_axis_off()
    axes[0, 0].imshow(image[0].permute(1, 2, 0).numpy())
    axes[0, 0].set_title(names[image_index][:24], fontsize=9)
    factors = explanation.factors[:, 0, channel].numpy()
    limit = float(np.abs(factors).max()) or 1.0
    for g in range(groups):
        _diverging(axes[0, 1 + g], factors[g], limit, f"F_{g + 1} (channel {channel})")
        axes[1, 1 + g].imshow(explanation.spikes[g, 0].mean(0).numpy(), cmap="gray_r", vmin=0, vmax=1)
        axes[1, 1 + g].set_title(f"S_{g + 1}: {explanation.firing_rate[0, g].item():.0%} fired", fontsize=9)
    delta = explanation.prompt[0, channel].numpy()
    _diverging(axes[0, -1], delta, float(np.abs(delta).max()) or 1.0, f"δ: {explanation.sparsity[0].item():.0%} zero")
    axes[1, 0].imshow((image[0] + explanation.prompt[0]).clamp(0, 1).permute(1, 2, 0).numpy())
    axes[1, 0].set_title("x + δ", fontsize=9)
    fig.suptitle(f"LoRSP anatomy: G={groups}, r={clone.rank}, tau={tau:.3g}, V_th={v_threshold:.3g}, V_reset={v_reset:.3g} "
                 f"(red > 0 > blue; black: fired)", fontsize=10)
    return fig
