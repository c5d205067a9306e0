"""LoRSP's spike gate (Eqs. 6–9) fused into one autograd function that recomputes the LIF in backward.

The reference path (:meth:`lorsp.prompters.lowrank_sparse.LoRSPPrompter.gate`, through :class:`lorsp.LIF`)
lets autograd record every operation of the G-step recurrence, so a training step keeps about a dozen tensors
of the image's size ``[N, C, H, W]`` per time step alive until backward (membranes H_t, spikes S_t, the
surrogate's inputs, the reset products, the stacked spikes and factors of Eq. 9). The functions here keep
only what the recurrence cannot be recomputed without, and run the LIF again in backward:

- :func:`fused_lif_gate` ``(factors, tau, v_threshold, v_reset, surrogate_alpha, detach_reset) -> delta``:
  a drop-in for ``LoRSPPrompter.gate(factors)``; it saves the factors ``[G, N, C, H, W]`` only.
- :func:`fused_lorsp_prompt` ``(x, projection, basis, tau, v_threshold, v_reset, surrogate_alpha,
  detach_reset) -> delta``: Eqs. 4–9 in one go. The factors F_t = A_t B (Eq. 5) are rebuilt step by step
  from A = xP (Eq. 4, ``[N, C, H, G·r]``, G·r/W of an image) and the basis B, so nothing of the image's size
  is saved at all; A is saved by the projection's matmul as usual (autograd).

Both compute, for t = 1..G (``docs/method.md``; the same operations in the same order as :class:`lorsp.LIF`,
so spikes and δ are bit-identical to the reference for the same factors)::

    H_t = V_{t-1} + (X_t - (V_{t-1} - V_rest)) / tau          (Eq. 6, as Eq. 1)
    S_t = Θ(H_t - V_th)                                        (Eq. 7, as Eq. 2; Θ(0) = 1)
    V_t = H_t (1 - S_t) + V_reset S_t      (hard)             (Eq. 8, as Eq. 3)
    V_t = H_t - V_th S_t                   (soft, v_reset=None)
    δ = (1/G) Σ_t S_t ⊙ X_t                                    (Eq. 9 [reading])

Backward runs the recurrence forward again (storing the G membranes transiently, at the end of the backward
pass when the backbone's activations are already freed) and then backwards in time with the sigmoid
surrogate Θ'(u) ≈ α σ(αu)(1 − σ(αu)), u = H_t − V_th, and the reset term detached or not
(``detach_reset``), exactly the gradient autograd takes through the reference.

``fused_lorsp_prompt(..., backend="compile")`` runs the same recurrence compiled by inductor: one fused
kernel for δ, one for ∂L/∂F_1..F_G (the LIF recomputed, backwards in time) and ∂A, then ∂B as a matmul
(:func:`~lorsp.prompters.fused_eager.store_factor_grads`). On a CPU the two kernels are ahead-of-time
packages kept on disk (:mod:`lorsp.prompters.aot`, :func:`aot_package_dir`): built once per configuration (G, r,
image shape, dtype; every batch size and LIF setting shares them), then loaded in milliseconds by every later
run and process. On CUDA it is ``torch.compile``. :class:`~lorsp.prompters.lowrank_sparse.LoRSPPrompter` picks the
backend with its ``backend`` option (:data:`LIF_BACKENDS`; ``auto`` compiles on CUDA, and on a CPU when the
packages are built or the run is long enough to build them, with an eager fallback, :func:`auto_backend`).

:func:`lif_gate_spikes` returns the spikes and δ of the same fused forward loop (no autograd), for checks.
:func:`saved_tensor_bytes` measures what a computation keeps for backward, device-independently.

This module is the one the rest of lorsp imports from: it holds :func:`fused_lorsp_prompt` and the backend choice
(:func:`auto_backend`) and re-exports the rest, which lives in one module per job: the eager loops and their
autograd functions in :mod:`lorsp.prompters.fused_eager`, the compiled backend and its CPU packages in
:mod:`lorsp.prompters.fused_compiled`, the folders compiled kernels are kept in in :mod:`lorsp.prompters.aot`,
the saved-tensor meter in :mod:`lorsp.prompters.saved_tensors`.
"""
from __future__ import annotations

import torch

from ..lif import (DEFAULT_SURROGATE_ALPHA, DEFAULT_TAU, DEFAULT_V_RESET, DEFAULT_V_THRESHOLD,
                   validate_lif_settings)
from .aot import aot_package_dir, compile_cache_dir, use_persistent_compile_cache
from .fused_compiled import CompiledLowRankLIFGate, build_compiled_gate, compile_available, compiled_gate_cached
from .fused_eager import FusedLowRankLIFGate, fused_lif_gate, lif_gate_spikes, resolve_chunk_elements
from .saved_tensors import SavedTensorMeter, saved_tensor_bytes

__all__ = ["fused_lif_gate", "fused_lorsp_prompt", "lif_gate_spikes", "saved_tensor_bytes", "SavedTensorMeter",
           "compile_available", "LIF_BACKENDS",
           "CPU_COMPILE_MIN_STEPS", "auto_backend", "compile_cache_dir", "use_persistent_compile_cache",
           "aot_package_dir", "compiled_gate_cached", "build_compiled_gate"]


LIF_BACKENDS = ("auto", "eager", "compile")
"""How LoRSP runs its fused LIF gate (``LoRSPPrompter(backend=...)``): ``auto`` compiles on CUDA, and on a CPU
when this configuration's compiled gate is already built (:func:`compiled_gate_cached`) or the run is planned to
take at least :data:`CPU_COMPILE_MIN_STEPS` steps (:func:`auto_backend`); it falls back to ``eager`` if compiling
fails, and runs ``eager`` otherwise."""

CPU_COMPILE_MIN_STEPS = 1000
"""``backend="auto"`` builds the compiled gate on a CPU only for runs planned (``LoRSPPrompter.plan_run``) to take
at least this many training steps: there building it costs minutes per configuration (torch.export and a C++
compile of each half), and the compiled gate saves tens of milliseconds per step (``benchmarks/README.md``), so
it repays itself after roughly a thousand steps. Once built it loads in milliseconds, and ``auto`` uses it for
runs of any length."""


def auto_backend(device: torch.device | str, planned_steps: int | None = None, cached: bool = False) -> str:
    """What ``backend="auto"`` runs on ``device`` for a run of ``planned_steps`` training steps (None: unknown,
    i.e. short): ``"compile"`` on CUDA, and on a CPU where :func:`compile_available`, when the compiled gate is
    already ``cached`` (:func:`compiled_gate_cached`) or from :data:`CPU_COMPILE_MIN_STEPS` planned steps on;
    else ``"eager"``."""
    device = torch.device(device)
    long_enough = planned_steps is not None and planned_steps >= CPU_COMPILE_MIN_STEPS
    if device.type == "cpu" and not (cached or long_enough):
        return "eager"
    return "compile" if compile_available(device) else "eager"


def fused_lorsp_prompt(x: torch.Tensor, projection: torch.Tensor, basis: torch.Tensor, tau: float = DEFAULT_TAU,
                       v_threshold: float = DEFAULT_V_THRESHOLD, v_reset: float | None = DEFAULT_V_RESET,
                       surrogate_alpha: float = DEFAULT_SURROGATE_ALPHA,
                       detach_reset: bool = False, chunk_elements: int | None = None,
                       backend: str = "eager", fallback: bool = False) -> torch.Tensor:
    """LoRSP's prompt δ(x) (Eqs. 4–9) for images ``x [N, C, H, W]`` in [0, 1] → ``[N, C, H, W]``.

    ``projection`` is P ``[W, G·r]`` (Eq. 4) and ``basis`` B ``[C, r, W]`` (Eq. 5; ``[G, C, r, W]`` for the
    ungrouped formulation), i.e. ``prompter.factors.projection`` and ``prompter.factors.basis`` of a
    :class:`~lorsp.prompters.lowrank_sparse.LoRSPPrompter`. A = xP goes through autograd as usual; the
    factors, the LIF and the gate run in one function that saves only A and B and rebuilds F_t = A_t B in
    backward, a chunk of images at a time. δ equals the reference up to the floating-point rounding of the
    factors' matmul (the reference uses an einsum); the spikes equal it except at membranes within that
    rounding of V_th.

    ``backend="compile"`` runs the same recurrence through ``torch.compile`` (inductor fuses the G-step loop
    into one kernel: much faster, but the first call of each new shape compiles, for tens of seconds on a CPU;
    the LIF settings are data, so changing them does not recompile; shared basis only). Its δ matches to float
    rounding (inductor may reorder arithmetic).
    ``fallback=True``: if compiling fails, warn once and run the eager loop instead (for this process).
    """
    if backend not in ("eager", "compile"):
        raise ValueError(f"backend must be 'eager' or 'compile', got {backend!r}")
    if x.dim() != 4:
        raise ValueError(f"x must be images [N, C, H, W], got shape {tuple(x.shape)}")
    if basis.dim() not in (3, 4):
        raise ValueError(f"basis must be [C, r, W] (shared) or [G, C, r, W], got shape {tuple(basis.shape)}")
    rank = basis.shape[-2]
    if projection.dim() != 2 or projection.shape[0] != x.shape[-1] or projection.shape[1] % rank:
        raise ValueError(f"projection must be [W={x.shape[-1]}, G·r] with r={rank} (from the basis), got shape "
                         f"{tuple(projection.shape)}")
    if basis.shape[-3] != x.shape[1] or basis.shape[-1] != x.shape[-1]:
        raise ValueError(f"basis {tuple(basis.shape)} does not fit images {tuple(x.shape)} (expected [C, r, W])")
    groups = projection.shape[1] // rank
    if basis.dim() == 4 and basis.shape[0] != groups:
        raise ValueError(f"basis has {basis.shape[0]} factor bases but the projection has {groups} groups")
    tau, v_threshold, v_reset, surrogate_alpha = validate_lif_settings(tau, v_threshold, v_reset, surrogate_alpha)
    chunk = resolve_chunk_elements(x.device, chunk_elements)
    projected = x @ projection  # A = xP (Eq. 4), [N, C, H, G·r]
    if backend == "compile":
        if basis.dim() != 3:
            raise ValueError("backend='compile' supports the shared basis [C, r, W] only")
        return CompiledLowRankLIFGate.apply(projected, basis, groups, rank, tau, v_threshold, v_reset,
                                            surrogate_alpha, bool(detach_reset), bool(fallback))
    return FusedLowRankLIFGate.apply(projected, basis, groups, rank, tau, v_threshold, v_reset, surrogate_alpha,
                                     bool(detach_reset), chunk)

