"""LoRSP (Eqs. 4–9) and the ablations that share its prompt factors.

- ``"lorsp"``: the factors F_1..F_G are the LIF's input sequence; δ = (1/G) Σ_t S_t ⊙ F_t (Eq. 9 [reading]).
- ``"lpf"``: the factors averaged, no SNN, δ = (1/G) Σ_t F_t (Table V's LPF).
- ``"topk"``: LPF's dense prompt, keeping the ``keep_ratio`` largest |δ| per image (Table VI).
- ``"dropout"``: LPF's dense prompt, keeping a random ``keep_ratio`` of its entries (Table VI).
- ``"threshold"``: LPF's dense prompt, keeping entries with |δ| >= ``threshold`` (fixed-threshold selection).

Book chapters: "Prompt factorisation", "Sparsifiers".
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from ..lif import DEFAULT_SURROGATE_ALPHA, DEFAULT_TAU, DEFAULT_V_RESET, DEFAULT_V_THRESHOLD, LIF
from .factors import DEFAULT_GROUPS, DEFAULT_RANK, PromptFactors, factor_param_count
from .fused import LIF_BACKENDS, auto_backend, compiled_gate_cached, fused_lorsp_prompt
from .registry import Prompter, prompt_sparsity, register_prompter

__all__ = ["LowRankPrompter", "LoRSPPrompter", "LPFPrompter", "TopKPrompter", "DropoutPrompter",
           "ThresholdPrompter", "LoRSPExplanation"]


class LowRankPrompter(Prompter):
    """A prompter built on :class:`PromptFactors` (Eqs. 4–5); subclasses turn the factors into δ."""

    def __init__(self, image_size=224, channels: int = 3, groups: int = DEFAULT_GROUPS,
                 rank: int = DEFAULT_RANK, init_std: float = 0.01, shared_basis: bool = True):
        super().__init__(image_size, channels)
        self.factors = PromptFactors(self.image_size, self.channels, groups, rank, init_std, shared_basis)

    @property
    def groups(self) -> int:
        return self.factors.groups

    @property
    def rank(self) -> int:
        return self.factors.rank

    @classmethod
    def param_count(cls, image_size=224, channels: int = 3, groups: int = DEFAULT_GROUPS,
                    rank: int = DEFAULT_RANK, shared_basis: bool = True, **_ignored) -> int:
        """Eqs. 13–15: W·r·(G + C) (shared basis) or W·r·G·(1 + C) (ungrouped)."""
        return factor_param_count(image_size, channels, groups, rank, shared_basis)

    def dense_prompt(self, x: torch.Tensor) -> torch.Tensor:
        """LPF's prompt (1/G) Σ_t F_t(x), the dense prompt the sparsifiers start from."""
        return self.factors(x).mean(0)


@register_prompter("lpf")
class LPFPrompter(LowRankPrompter):
    """Low-rank prompt factors averaged, no spiking (Table V): δ = (1/G) Σ_t F_t(x)."""

    def prompt(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.dense_prompt(x)


@dataclass
class LoRSPExplanation:
    """Everything LoRSP computes for a batch, for the book's figures (all detached).

    factors ``[G, N, C, H, W]`` (F_t, Eq. 5); spikes and membrane ``[G, N, C, H, W]`` (S_t, H_t, Eqs. 6–8);
    prompt ``[N, C, H, W]`` (δ, Eq. 9); firing_rate ``[N, G]`` (share of neurons that fired at step t);
    sparsity ``[N]`` (share of zero entries of δ).
    """

    factors: torch.Tensor
    spikes: torch.Tensor
    membrane: torch.Tensor
    prompt: torch.Tensor
    firing_rate: torch.Tensor
    sparsity: torch.Tensor


@register_prompter("lorsp")
class LoRSPPrompter(LowRankPrompter):
    """Low-Rank visual Spike Prompting (Eqs. 4–9).

    The G factors are fed to a LIF neuron as a sequence (t = 1..G, Eqs. 6–8), one neuron per pixel and
    channel, and its spikes gate them: δ(x) = (1/G) Σ_t S_t ⊙ F_t(x) (Eq. 9 [reading]). With every spike on
    this is exactly LPF. LIF settings: ``tau``, ``v_threshold``, ``v_reset``, ``surrogate_alpha``,
    ``detach_reset`` (see :class:`lorsp.LIF`).

    ``fused=True`` (default) computes Eqs. 4–9 with :func:`lorsp.prompters.fused.fused_lorsp_prompt`, which
    keeps nothing of the image's size for backward and recomputes the LIF there (same spikes, δ equal to
    float rounding, gradients to 1e-5); ``fused=False`` runs the reference path (:meth:`gate` through
    :class:`lorsp.LIF`, every step recorded by autograd). :meth:`explain` always uses the reference path.

    ``backend`` (fused only): ``"eager"`` runs the fused loop as PyTorch operations; ``"compile"`` runs it as
    two kernels fused by inductor (much faster; on a CPU they are built once per configuration, a minute or
    more each, and kept on disk, where every later run and process loads them in milliseconds:
    :mod:`lorsp.prompters.aot`); ``"auto"`` (default) compiles on CUDA, and on a CPU when this configuration's
    kernels are already built (:func:`~lorsp.prompters.fused.compiled_gate_cached`) or the run is planned
    (:meth:`plan_run`) to take at least :data:`~lorsp.prompters.fused.CPU_COMPILE_MIN_STEPS` steps, which repays
    building them; it falls back to ``"eager"`` with a warning if compiling fails, and runs ``"eager"``
    otherwise (short runs on a fresh machine, the tests, the smoke book). Benchmarks: ``benchmarks/README.md``.
    """

    def __init__(self, image_size=224, channels: int = 3, groups: int = DEFAULT_GROUPS,
                 rank: int = DEFAULT_RANK, tau: float = DEFAULT_TAU, v_threshold: float = DEFAULT_V_THRESHOLD,
                 v_reset: float | None = DEFAULT_V_RESET, surrogate_alpha: float = DEFAULT_SURROGATE_ALPHA,
                 detach_reset: bool = False, init_std: float = 0.01,
                 shared_basis: bool = True, fused: bool = True, backend: str = "auto"):
        super().__init__(image_size, channels, groups, rank, init_std, shared_basis)
        self.lif = LIF(tau=tau, v_threshold=v_threshold, v_reset=v_reset, surrogate_alpha=surrogate_alpha,
                       detach_reset=detach_reset)
        self.fused = bool(fused)
        if backend not in LIF_BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(LIF_BACKENDS)}; got {backend!r}")
        if backend == "compile" and not self.factors.shared_basis:
            raise ValueError("backend='compile' supports the shared basis only; use backend='eager' with "
                             "shared_basis=False")
        self.backend = backend
        self.planned_steps: int | None = None
        self._gate_cached: bool | None = None

    def plan_run(self, steps: int | None) -> None:
        """Say how many training steps the run will take (the trainer and ``lorsp bench`` do): ``backend="auto"``
        compiles on a CPU only for long runs (:func:`~lorsp.prompters.fused.auto_backend`)."""
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
            raise ValueError(f"steps must be None or an integer >= 0, got {steps!r}")
        self.planned_steps = steps
        self._gate_cached = None  # looked up again for the new run (lif_backend)

    def lif_backend(self, device) -> str:
        """The fused backend that runs on ``device``: ``backend``, with ``"auto"`` resolved (see the class)."""
        if self.backend != "auto":
            return self.backend
        if not self.factors.shared_basis:
            return "eager"
        if torch.device(device).type != "cpu":
            return auto_backend(device, self.planned_steps)
        if self._gate_cached is None:  # once per run (plan_run): a run does not switch backends midway
            self._gate_cached = compiled_gate_cached(self.factors.groups, self.factors.rank, self.channels,
                                                     *self.image_size)
        return auto_backend(device, self.planned_steps, self._gate_cached)

    def cpu_gate_shape(self) -> tuple[int, int, int, int, int] | None:
        """``(G, r, C, H, W)``: the configuration of the compiled gate this prompter runs on a CPU once it is
        built (:func:`~lorsp.prompters.fused.compiled_gate_cached`), or None when it never runs one (the
        reference path, ``backend="eager"``, an ungrouped basis). A grid builds these before its first run
        (:func:`lorsp.train.prebuild_lif_gates`), so that its short runs use them."""
        if not self.fused or self.backend == "eager" or not self.factors.shared_basis:
            return None
        return (self.factors.groups, self.factors.rank, self.channels, *self.image_size)

    def gate(self, factors: torch.Tensor, return_trace: bool = False):
        """Eqs. 6–9 on precomputed factors ``[G, N, C, H, W]``: returns δ (and the LIF trace)."""
        trace = self.lif(factors, return_trace=True)
        delta = (trace.spikes * factors).mean(0)  # Eq. 9
        return (delta, trace) if return_trace else delta

    def prompt(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if self.fused:
            lif = self.lif
            return fused_lorsp_prompt(x, self.factors.projection, self.factors.basis, lif.tau, lif.v_threshold,
                                      lif.v_reset, lif.surrogate_alpha, lif.detach_reset,
                                      backend=self.lif_backend(x.device), fallback=self.backend == "auto")
        return self.gate(self.factors(x))

    @torch.no_grad()
    def explain(self, x: torch.Tensor) -> LoRSPExplanation:
        """Factors, spikes, membrane, δ, firing rate per factor and sparsity of δ, per image."""
        self.check_input(x)
        factors = self.factors(x)
        delta, trace = self.gate(factors, return_trace=True)
        return LoRSPExplanation(
            factors=factors,
            spikes=trace.spikes,
            membrane=trace.membrane,
            prompt=delta,
            firing_rate=trace.spikes.flatten(2).mean(2).T.contiguous(),
            sparsity=prompt_sparsity(delta),
        )

    @torch.no_grad()
    def stats(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per image: ``sparsity`` of δ and ``firing_rate`` (mean over the G steps), both in [0, 1]."""
        explanation = self.explain(x)
        return {"sparsity": explanation.sparsity, "firing_rate": explanation.firing_rate.mean(1)}


def _check_ratio(keep_ratio: float) -> float:
    keep_ratio = float(keep_ratio)
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1] (the share of prompt entries kept), got {keep_ratio}")
    return keep_ratio


@register_prompter("topk")
class TopKPrompter(LowRankPrompter):
    """Top-k sparsifier (Table VI): keep the ``keep_ratio`` share of LPF's δ with the largest |δ| per image."""

    def __init__(self, image_size=224, channels: int = 3, groups: int = DEFAULT_GROUPS,
                 rank: int = DEFAULT_RANK, keep_ratio: float = 0.5, init_std: float = 0.01, shared_basis: bool = True):
        super().__init__(image_size, channels, groups, rank, init_std, shared_basis)
        self.keep_ratio = _check_ratio(keep_ratio)

    def prompt(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        dense = self.dense_prompt(x)
        flat = dense.flatten(1)
        k = max(1, math.ceil(self.keep_ratio * flat.shape[1]))
        index = flat.abs().topk(k, dim=1).indices
        mask = torch.zeros_like(flat).scatter_(1, index, 1.0)
        return (flat * mask).view_as(dense)


@register_prompter("dropout")
class DropoutPrompter(LowRankPrompter):
    """Random sparsifier (Table VI): keep a random ``keep_ratio`` share of LPF's δ.

    ``rescale`` divides the kept entries by ``keep_ratio`` (inverted dropout) [reading: off by default].
    ``mask_at_eval`` keeps drawing masks in eval mode, so the evaluated prompt is as sparse as the
    trained one [reading: on by default]; off, eval uses the whole dense prompt (scaled by ``keep_ratio``
    when ``rescale`` is off, as dropout's expectation).

    Training masks come from torch's global generator, which the trainer seeds per (run seed, epoch). An
    evaluation mask is a function of the image and the run's seed alone (:meth:`eval_masks`: a generator
    seeded by the sha256 of the run seed and the image's values), so evaluating a trained prompt twice, with
    any batch size or order, on any device, gives the same accuracy. The trainer passes the run's seed
    (:meth:`set_run_seed`; 0 until then).
    """

    def __init__(self, image_size=224, channels: int = 3, groups: int = DEFAULT_GROUPS,
                 rank: int = DEFAULT_RANK, keep_ratio: float = 0.5, rescale: bool = False, mask_at_eval: bool = True,
                 init_std: float = 0.01, shared_basis: bool = True):
        super().__init__(image_size, channels, groups, rank, init_std, shared_basis)
        self.keep_ratio = _check_ratio(keep_ratio)
        self.rescale = bool(rescale)
        self.mask_at_eval = bool(mask_at_eval)
        self.run_seed = 0

    def set_run_seed(self, seed: int) -> None:
        """The run's seed, from which (with each image) the evaluation masks are drawn."""
        self.run_seed = int(seed)

    def eval_masks(self, x: torch.Tensor) -> torch.Tensor:
        """Per image of ``x [N, C, H, W]``: a keep mask (1 keeps, 0 drops) whose entries are kept with
        probability ``keep_ratio``, drawn from a CPU generator seeded by the sha256 of (run seed, the image's
        float32 values): the same image gets the same mask in any batch, at any position, on any device."""
        images = x.detach().to("cpu", torch.float32).contiguous()
        salt = self.run_seed.to_bytes(8, "little", signed=True)
        masks = torch.empty(images.shape, dtype=torch.bool)
        for index, image in enumerate(images):
            digest = hashlib.sha256(salt + image.numpy().tobytes()).digest()
            generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
            masks[index] = torch.rand(images.shape[1:], generator=generator) < self.keep_ratio
        return masks.to(x.device)

    def prompt(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        dense = self.dense_prompt(x)
        if not self.training and not self.mask_at_eval:
            return dense if self.rescale else dense * self.keep_ratio
        if self.training:
            mask = (torch.rand_like(dense) < self.keep_ratio).to(dense.dtype)
        else:
            mask = self.eval_masks(x).to(dense.dtype)
        delta = dense * mask
        return delta / self.keep_ratio if self.rescale else delta


@register_prompter("threshold")
class ThresholdPrompter(LowRankPrompter):
    """Fixed-threshold sparsifier: keep the entries of LPF's δ with |δ| >= ``threshold``."""

    def __init__(self, image_size=224, channels: int = 3, groups: int = DEFAULT_GROUPS,
                 rank: int = DEFAULT_RANK, threshold: float = 0.01, init_std: float = 0.01, shared_basis: bool = True):
        super().__init__(image_size, channels, groups, rank, init_std, shared_basis)
        threshold = float(threshold)
        if not (math.isfinite(threshold) and threshold >= 0):
            raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
        self.threshold = threshold

    def prompt(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        dense = self.dense_prompt(x)
        return dense * (dense.abs() >= self.threshold).to(dense.dtype)
