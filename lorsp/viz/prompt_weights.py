"""Which LoRSP prompter the "Prompt factorisation" figures show: :func:`find_trained_prompt_weights` (a
trained ``prompt.safetensors`` of the committed records or this machine's runs), :func:`display_prompter`
(those weights loaded, or a random non-zero basis for display) and :func:`with_lif_settings` (the same
factors under another LIF).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import torch

from ..lif import DEFAULT_TAU, DEFAULT_V_RESET, DEFAULT_V_THRESHOLD, LIF
from ..prompters import LoRSPPrompter, build_prompter
from ..prompters.factors import DEFAULT_GROUPS, DEFAULT_RANK
from .display import REPO_ROOT, shown_path


def find_trained_prompt_weights(roots: Sequence | None = None, groups: int | None = None,
                                rank: int | None = None, scale: str | None = None) -> Path | None:
    """A trained LoRSP prompt (the trainer's ``prompt.safetensors``: keys ending in ``factors.projection`` and
    ``factors.basis``, metadata ``method`` = ``lorsp`` when present), optionally of the given groups and rank;
    ``None`` when there is none. Prompts whose basis B never left its zero init are skipped.

    ``roots`` are searched in order and the newest match of the first root that has one is returned. By
    default: the committed records of the larger scales first (``results/paper``, ``results/mini``), then
    this machine's runs of the current scale (``runs/<scale>``, see :func:`lorsp.scale.current_scale`).
    """
    from safetensors import safe_open

    if roots is None:
        from ..scale import current_scale

        roots = [REPO_ROOT / "results" / "paper", REPO_ROOT / "results" / "mini", REPO_ROOT / "runs" / current_scale(scale)]
    for root in map(Path, roots):
        if not root.is_dir():
            continue
        found = []
        for path in root.rglob("*.safetensors"):
            try:
                with safe_open(str(path), "pt") as handle:
                    method = (handle.metadata() or {}).get("method", "lorsp")
                    keys = list(handle.keys())
                    proj = [k for k in keys if k.endswith("factors.projection")]
                    basis = [k for k in keys if k.endswith("factors.basis")]
                    if method != "lorsp" or not (proj and basis):
                        continue
                    p_shape = handle.get_slice(proj[0]).get_shape()
                    b_shape = handle.get_slice(basis[0]).get_shape()
                    # a basis still at its zero init (e.g. a threshold no neuron reached, so B got no
                    # gradient) gives δ = 0 and nothing to show: not a trained prompt for this chapter
                    basis_moved = bool(handle.get_tensor(basis[0]).abs().max() > 0)
            except Exception:  # not a readable safetensors file: not a prompt of ours
                continue
            r = b_shape[-2]
            if not basis_moved:
                continue
            if (rank is not None and r != rank) or (groups is not None and p_shape[1] != groups * r):
                continue
            found.append(path)
        if found:
            return max(found, key=lambda p: (p.stat().st_mtime, str(p)))
    return None


def _load_trained_prompter(weights) -> tuple[LoRSPPrompter, str]:
    import json

    from safetensors import safe_open

    with safe_open(str(weights), "pt") as handle:
        metadata = handle.metadata() or {}
        state = {k: handle.get_tensor(k) for k in handle.keys()}
    proj = next((v for k, v in state.items() if k.endswith("factors.projection")), None)
    basis = next((v for k, v in state.items() if k.endswith("factors.basis")), None)
    if proj is None or basis is None:
        raise ValueError(f"{weights} holds no LoRSP factors (keys ending in factors.projection and "
                         f"factors.basis); it has {sorted(state)[:8]}")
    if basis.dim() != 3:
        raise ValueError(f"{weights}: expected a shared basis B [C, r, W], got shape {tuple(basis.shape)}")
    channels, rank, width = basis.shape
    groups = proj.shape[1] // rank
    try:
        options = json.loads(metadata.get("prompter_kwargs", "{}"))
        height = int(metadata.get("image_size", width))
    except ValueError as error:
        raise ValueError(f"{weights}: unreadable metadata {metadata!r}: {error}") from error
    lif = {k: options[k] for k in ("tau", "v_threshold", "v_reset", "surrogate_alpha") if k in options}
    prompter = build_prompter("lorsp", image_size=(height, width), channels=channels, groups=groups, rank=rank,
                              **lif)
    with torch.no_grad():
        prompter.factors.projection.copy_(proj)
        prompter.factors.basis.copy_(basis)
    where = ", ".join(f"{k}={metadata[k]}" for k in ("backbone", "dataset") if k in metadata)
    return prompter.eval(), f"trained prompt weights from {shown_path(weights)}" + (f" ({where})" if where else "")


def display_prompter(image_size=64, groups: int = DEFAULT_GROUPS, rank: int = DEFAULT_RANK,
                     tau: float = DEFAULT_TAU, v_threshold: float = DEFAULT_V_THRESHOLD,
                     v_reset: float = DEFAULT_V_RESET, weights=None, basis_std: float = 0.05,
                     projection_std: float = 0.05,
                     seed: int = 0) -> tuple[LoRSPPrompter, str]:
    """A LoRSP prompter with non-zero factors to look at, and a sentence saying what its weights are.

    With ``weights`` (a ``prompt.safetensors`` of a run, see :func:`find_trained_prompt_weights`) it loads
    the trained P and B, and the run's image size, groups, rank and LIF settings (the other arguments are
    then ignored). Otherwise it is **not trained**: LoRSP's own init has B = 0 (so every factor and δ are 0,
    nothing to see), so here P ~ N(0, ``projection_std``²) and B ~ N(0, ``basis_std``²) are drawn with
    ``seed`` — a random non-zero basis for display only.
    """
    if weights is not None:
        return _load_trained_prompter(weights)
    prompter = build_prompter("lorsp", image_size=image_size, groups=groups, rank=rank, tau=tau,
                              v_threshold=v_threshold, v_reset=v_reset)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        prompter.factors.projection.copy_(torch.randn(prompter.factors.projection.shape, generator=generator)
                                          * projection_std)
        prompter.factors.basis.copy_(torch.randn(prompter.factors.basis.shape, generator=generator) * basis_std)
    note = (f"untrained: P ~ N(0, {projection_std:g}²) and B ~ N(0, {basis_std:g}²) drawn with seed {seed} for "
            f"display only (LoRSP's own init has B = 0, which makes every factor and δ zero)")
    return prompter.eval(), note


def with_lif_settings(prompter: LoRSPPrompter, tau: float, v_threshold: float, v_reset: float) -> LoRSPPrompter:
    """A copy of ``prompter`` with the same factors (P, B) and a LIF with these tau, V_th and V_reset."""
    clone = copy.deepcopy(prompter)
    clone.lif = LIF(tau=tau, v_threshold=v_threshold, v_reset=v_reset, surrogate_alpha=prompter.lif.surrogate_alpha,
                    detach_reset=prompter.lif.detach_reset)
    return clone
