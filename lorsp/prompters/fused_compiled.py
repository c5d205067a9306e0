"""The compiled backend of LoRSP's fused LIF gate: the same recurrence (Eqs. 5–9) written functionally for
inductor, which fuses it into one kernel for δ and one for ∂L/∂F_1..F_G (the LIF recomputed, backwards in time)
and ∂A; ∂B follows as a matmul (:func:`~lorsp.prompters.fused_eager.store_factor_grads`).

On a CPU the two kernels are ahead-of-time packages kept on disk (:mod:`lorsp.prompters.aot`,
:func:`~lorsp.prompters.aot.aot_package_dir`): built once per configuration (G, r, image shape, dtype; every batch
size and LIF setting shares them, :func:`compiled_gate_cached`, :func:`build_compiled_gate`), then loaded in
milliseconds. On CUDA it is ``torch.compile``. :class:`CompiledLowRankLIFGate` runs them in autograd and falls
back to the eager loop (:mod:`lorsp.prompters.fused_eager`) when compiling fails and ``fallback`` allows it;
:func:`compile_available` says whether compiling can work here.
"""
from __future__ import annotations

import warnings
from functools import partial

import torch

from . import aot
from .aot import aot_package_dir, use_persistent_compile_cache
from .fused_eager import eager_lowrank_backward, eager_lowrank_forward, resolve_chunk_elements, store_factor_grads

__all__ = ["CompiledLowRankLIFGate", "compiled_gate_cached", "build_compiled_gate", "compile_available"]


def _lif_constants(like: torch.Tensor, tau, v_threshold, v_reset, alpha, detach_reset) -> torch.Tensor:
    """The LIF settings as one small tensor on ``like``'s device: 1/τ, V_th, V_reset (0 for the soft reset), α,
    1 for the hard reset (0 soft), and 1 when the gradient flows through the reset (0 for ``detach_reset``).
    The compiled functions take the settings as data, so one compiled kernel serves every setting (a
    hyperparameter sweep compiles once, not once per value). 1/τ rather than τ: a multiply instead of a vector
    division per pixel and step (exactly the same for τ a power of two, else within a rounding of the eager
    path)."""
    key = (like.device, tau, v_threshold, v_reset, alpha, detach_reset)
    if key not in _CONSTANTS:
        with torch.inference_mode(False):  # a normal tensor even when first made during evaluation
            _CONSTANTS[key] = torch.tensor([1.0 / tau, v_threshold, 0.0 if v_reset is None else v_reset, alpha,
                                            float(v_reset is not None), float(not detach_reset)],
                                           dtype=torch.float32, device=like.device)
    return _CONSTANTS[key]


_CONSTANTS: dict = {}


def _functional_steps(projected, basis, groups, rank, constants):
    """Factors, membranes and spikes of Eqs. 5–8 written functionally (for torch.compile and AOTInductor);
    ``constants`` from :func:`_lif_constants`."""
    inv_tau, v_threshold, v_reset, hard = constants[0], constants[1], constants[2], constants[4] > 0
    rest = v_reset  # V_rest = V_reset; 0 for the soft reset
    factors, membranes, fired_all = [], [], []
    voltage = None
    for t in range(groups):
        # F_t = A_t B as a broadcast product summed over r (inductor fuses it with the LIF; r is small)
        x_t = (projected[..., t * rank:(t + 1) * rank, None] * basis[:, None]).sum(-2)
        membrane = x_t * inv_tau + rest if voltage is None else voltage + (x_t - (voltage - rest)) * inv_tau
        fired = membrane >= v_threshold
        voltage = torch.where(fired, torch.where(hard, v_reset, membrane - v_threshold), membrane)
        factors.append(x_t)
        membranes.append(membrane)
        fired_all.append(fired)
    return factors, membranes, fired_all


def _compiled_forward_impl(projected, basis, constants, *, groups: int, rank: int):
    """δ (Eq. 9) of :func:`_functional_steps`."""
    factors, _, fired = _functional_steps(projected, basis, groups, rank, constants)
    total = factors[0] * fired[0]
    for t in range(1, groups):
        total = total + factors[t] * fired[t]
    return total / groups


def _compiled_grad_impl(projected, basis, grad_delta, constants, *, groups: int, rank: int):
    """``(∂L/∂A, (∂L/∂F_1, ..., ∂L/∂F_G))``: Eqs. 6–9 backwards in time, then ∂A_t = ∂F_t Bᵀ (Eq. 5), compiled
    together (∂A sums over each row's W pixels, which inductor fuses into the same kernel). ∂B = Σ A_tᵀ ∂F_t sums
    over images and rows instead; it follows as a matmul (:func:`store_factor_grads`), which on CPU beats that
    reduction inside the kernel."""
    factors, membranes, fired_all = _functional_steps(projected, basis, groups, rank, constants)
    inv_tau, v_threshold, v_reset, alpha = constants[0], constants[1], constants[2], constants[3]
    hard, reset_grad = constants[4] > 0, constants[5] > 0
    grad_gate = grad_delta * (1.0 / groups)  # ∂δ/∂(S_t ⊙ X_t) = 1/G (Eq. 9)
    grad_voltage = None
    grad_factors = [None] * groups
    for t in reversed(range(groups)):
        membrane, x_t, fired = membranes[t], factors[t], fired_all[t]
        grad_spike = grad_gate * x_t  # through Eq. 9
        if grad_voltage is not None:  # through the reset of Eq. 8 (hard: ∂V/∂S = V_reset − H; soft: −V_th)
            through_reset = grad_voltage * torch.where(hard, v_reset - membrane, -v_threshold)
            grad_spike = torch.where(reset_grad, grad_spike + through_reset, grad_spike)
        sig = torch.sigmoid(alpha * (membrane - v_threshold))  # surrogate of Eq. 7
        grad_h = grad_spike * alpha * sig * (1.0 - sig)
        if grad_voltage is not None:  # ∂V_t/∂H_t: 1 − S_t (hard) or 1 (soft)
            grad_h = grad_h + torch.where(hard & fired, 0.0, grad_voltage)
        grad_factors[t] = grad_h * inv_tau + grad_gate * fired  # Eq. 6 and Eq. 9 directly
        grad_voltage = grad_h * (1.0 - inv_tau)  # ∂H_t/∂V_{t−1} = 1 − 1/τ (Eq. 6)
    grad_projected = torch.cat([(grad_f[..., None, :] * basis[:, None]).sum(-1) for grad_f in grad_factors], -1)
    return grad_projected, tuple(grad_factors)


_COMPILED: dict = {}
_COMPILE_FAILED = False  # set by _compile_failed: compile nothing more in this process


_IMPLS = {"forward": _compiled_forward_impl, "backward": _compiled_grad_impl}
#: the inputs of each kind whose dimension 0 is the batch (projected A, and ∂L/∂δ for the backward)
_BATCH_INPUTS = {"forward": (0,), "backward": (0, 2)}


def _compiled(kind: str, inputs, groups: int, rank: int):
    """The compiled ``kind`` ("forward" or "backward") for G = ``groups`` and r = ``rank``, as a callable on
    tensors like ``inputs`` (forward: A, B, constants; backward: A, B, ∂L/∂δ, constants). On a CPU, an
    AOTInductor package kept in :func:`aot_package_dir` (built on first use, then loaded in milliseconds by
    every later process: :mod:`lorsp.prompters.aot`); elsewhere ``torch.compile``."""
    function = partial(_IMPLS[kind], groups=groups, rank=rank)
    projected = inputs[0]
    if projected.device.type == "cpu":
        return aot.load_or_build(function, inputs, _BATCH_INPUTS[kind], aot_package_dir(),
                                 _package_key(kind, groups, rank, *projected.shape[1:3], inputs[1].shape[-1],
                                              projected.dtype))
    if (kind, groups, rank) not in _COMPILED:
        use_persistent_compile_cache()
        _COMPILED[kind, groups, rank] = torch.compile(function, dynamic=False)
    return _COMPILED[kind, groups, rank]


def _package_key(kind, groups, rank, channels, height, width, dtype) -> str:
    return aot.package_key(f"lorsp-lif-{kind}", groups=groups, rank=rank, channels=channels, height=height,
                           width=width, dtype=dtype)


def compiled_gate_cached(groups: int, rank: int, channels: int, height: int, width: int,
                         dtype: torch.dtype = torch.float32) -> bool:
    """Whether both compiled halves (δ and its gradients) of the LIF gate for this configuration are already
    built on this CPU (:func:`aot_package_dir`): then compiling costs milliseconds, and ``backend="auto"``
    compiles whatever the run's length (:func:`~lorsp.prompters.fused.auto_backend`)."""
    return all(aot.is_built(aot_package_dir(), _package_key(kind, groups, rank, channels, height, width, dtype))
               for kind in _IMPLS)


def build_compiled_gate(groups: int, rank: int, channels: int, height: int, width: int,
                        dtype: torch.dtype = torch.float32) -> bool:
    """Build (or load) both compiled halves of the CPU's LIF gate for this configuration now, as the first
    compiled step of a run would (:func:`aot_package_dir`; a minute or more when not yet built, milliseconds
    when built): a grid builds the gates of its shapes once before its first run
    (:func:`lorsp.train.prebuild_lif_gates`), so that its short runs use them. Returns whether they were
    already built. The inputs are zeros: the packages depend on shapes and dtype only."""
    cached = compiled_gate_cached(groups, rank, channels, height, width, dtype)
    projected = torch.zeros(2, channels, height, groups * rank, dtype=dtype)  # 2: a batch of 1 is specialised
    basis = torch.zeros(channels, rank, width, dtype=dtype)
    constants = _lif_constants(projected, 4.0, 0.0, 0.0, 4.0, False)
    _compiled("forward", (projected, basis, constants), groups, rank)
    grad_delta = torch.zeros(2, channels, height, width, dtype=dtype)
    _compiled("backward", (projected, basis, grad_delta, constants), groups, rank)
    return cached


class CompiledLowRankLIFGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, projected, basis, groups, rank, tau, v_threshold, v_reset, alpha, detach_reset, fallback):
        ctx.settings = (groups, rank, tau, v_threshold, v_reset, alpha, detach_reset)
        ctx.basis_dtype = basis.dtype
        ctx.fallback = fallback
        with torch.no_grad(), torch.autocast(projected.device.type, enabled=False):
            basis_c = basis.to(projected.dtype)
            ctx.save_for_backward(projected, basis_c)
            delta = _try_compiled(fallback, lambda: _compiled_forward(projected, basis_c, groups, rank, tau,
                                                                      v_threshold, v_reset, alpha, detach_reset))
            if delta is None:
                delta = eager_lowrank_forward(projected, basis_c, groups, rank, tau, v_threshold, v_reset,
                                              chunk=resolve_chunk_elements(projected.device, None))
            return delta

    @staticmethod
    def backward(ctx, grad_delta):
        projected, basis = ctx.saved_tensors
        grad_delta = grad_delta.to(projected.dtype).contiguous()
        grads = _try_compiled(ctx.fallback, lambda: _compiled_backward(projected, basis, grad_delta, *ctx.settings))
        if grads is None:
            grads = eager_lowrank_backward(projected, basis, grad_delta, *ctx.settings,
                                           chunk=resolve_chunk_elements(projected.device, None))
        grad_a, grad_b = grads
        return grad_a, grad_b.to(ctx.basis_dtype), None, None, None, None, None, None, None, None


def _try_compiled(fallback: bool, call):
    """``call()`` (a compiled computation), or None when it must fall back to the eager loop: compiling
    failed now or earlier in this process and ``fallback`` allows it (else the failure is raised)."""
    if fallback and _COMPILE_FAILED:
        return None
    try:
        return call()
    except Exception as error:  # noqa: BLE001 - any compiler failure: fall back when allowed
        if not fallback:
            raise
        _compile_failed(error)
        return None


def _compiled_forward(projected, basis, groups, rank, tau, v_threshold, v_reset, alpha, detach_reset):
    inputs = (projected.contiguous(), basis.contiguous(),
              _lif_constants(projected, tau, v_threshold, v_reset, alpha, detach_reset))
    return _compiled("forward", inputs, groups, rank)(*inputs)


def _compiled_backward(projected, basis, grad_delta, groups, rank, tau, v_threshold, v_reset, alpha, detach_reset):
    with torch.no_grad(), torch.autocast(projected.device.type, enabled=False):
        inputs = (projected.contiguous(), basis.contiguous(), grad_delta.contiguous(),
                  _lif_constants(projected, tau, v_threshold, v_reset, alpha, detach_reset))
        grad_projected, grad_factors = _compiled("backward", inputs, groups, rank)(*inputs)
        grad_basis = torch.zeros_like(basis)
        for t, grad_f in enumerate(grad_factors):
            store_factor_grads(t, grad_f, projected, basis, rank, None, grad_basis)
        return grad_projected, grad_basis


def _compile_failed(error: Exception) -> None:
    """Remember (for this process) that torch.compile failed, and say so once."""
    global _COMPILE_FAILED
    if not _COMPILE_FAILED:
        warnings.warn(f"torch.compile of LoRSP's LIF gate failed ({type(error).__name__}: {str(error)[:300]}); "
                      f"falling back to the eager fused LIF (backend='eager': the same δ and gradients, slower). "
                      f"Pass backend='eager' to skip compiling.", RuntimeWarning, stacklevel=4)
    _COMPILE_FAILED = True


def compile_available(device: torch.device | str) -> bool:
    """Whether torch.compile can build the gate on ``device``: CUDA with Triton importable, or a CPU with a C++
    compiler on the PATH; and no earlier failure in this process."""
    device_type = torch.device(device).type
    if _COMPILE_FAILED or device_type not in ("cuda", "cpu"):
        return False
    if device_type == "cpu":
        import shutil

        return any(shutil.which(name) for name in ("g++", "c++", "clang++"))
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True

