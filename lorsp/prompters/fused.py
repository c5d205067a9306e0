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
(:func:`_store_factor_grads`). On a CPU the two kernels are ahead-of-time packages kept on disk
(:mod:`lorsp.prompters.aot`, :func:`aot_package_dir`): built once per configuration (G, r, image shape,
dtype; every batch size and LIF setting shares them), then loaded in milliseconds by every later run and
process. On CUDA it is ``torch.compile``. :class:`~lorsp.prompters.lowrank_sparse.LoRSPPrompter` picks the
backend with its ``backend`` option (:data:`LIF_BACKENDS`; ``auto`` compiles on CUDA, and on a CPU when the
packages are built or the run is long enough to build them, with an eager fallback, :func:`auto_backend`).

:func:`lif_gate_spikes` returns the spikes and δ of the same fused forward loop (no autograd), for checks.
:func:`saved_tensor_bytes` measures what a computation keeps for backward, device-independently.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from functools import partial

import torch

from ..lif import validate_lif_settings
from . import aot

__all__ = ["fused_lif_gate", "fused_lorsp_prompt", "lif_gate_spikes", "saved_tensor_bytes", "SavedTensorMeter",
           "compile_available", "LIF_BACKENDS",
           "CPU_COMPILE_MIN_STEPS", "auto_backend", "compile_cache_dir", "use_persistent_compile_cache",
           "aot_package_dir", "compiled_gate_cached", "build_compiled_gate"]


def _check_factors(factors: torch.Tensor) -> None:
    if not isinstance(factors, torch.Tensor):
        raise TypeError(f"factors must be a tensor [G, N, C, H, W], got {type(factors).__name__}")
    if factors.dim() < 2 or factors.shape[0] < 1:
        raise ValueError(f"factors must be a sequence [G, ...] with G >= 1 (the LIF's time steps), "
                         f"got shape {tuple(factors.shape)}")
    if not factors.is_floating_point():
        raise TypeError(f"factors must be a floating-point tensor, got dtype {factors.dtype}")


DEFAULT_CHUNK_ELEMENTS = 1 << 18
"""Elements per chunk on CPU (1 MiB per float32 tensor; whole images in :func:`fused_lorsp_prompt`, at least
one): the eager G-step loop runs chunk by chunk, which bounds what backward's recomputation holds at once (G
membranes of one chunk) and keeps its working tensors small enough to be reused from the cache and the
allocator's free lists. On a 2-core CPU, forward + backward of a batch of 32 images at 128 px took about half
as long with chunks of 2**18–2**19 elements as with the whole batch (2**22), and longer again with chunks of
2**16; 16 images at 224 px, likewise."""


def _chunk_elements(device: torch.device, chunk_elements: int | None) -> int | None:
    if chunk_elements is not None:
        if isinstance(chunk_elements, bool) or not isinstance(chunk_elements, int) or chunk_elements < 1:
            raise ValueError(f"chunk_elements must be a positive integer or None, got {chunk_elements!r}")
        return chunk_elements
    return DEFAULT_CHUNK_ELEMENTS if device.type == "cpu" else None  # GPUs want whole tensors


def _spikes(membrane: torch.Tensor, v_threshold: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """S_t = Θ(H_t − V_th) (Eq. 7) as a float 0/1 tensor of the membrane's dtype: ``ge`` written straight into
    a float tensor (``out`` when given). Boolean masks cost 5–7× and ``masked_fill_`` ~25× a float multiply on a
    CPU (a bool → float conversion each time one meets a float tensor), so the loops below gate and reset with
    float arithmetic, which for S ∈ {0, 1} gives the reference's values exactly."""
    return torch.ge(membrane, v_threshold, out=torch.empty_like(membrane) if out is None else out)


def _reset(membrane: torch.Tensor, fired: torch.Tensor, v_threshold: float, v_reset) -> torch.Tensor:
    """V_t (Eq. 8) in place of H_t: H_t − V_th S_t (soft, ``v_reset=None``) or H_t − H_t S_t + V_reset S_t
    (hard), which for S_t ∈ {0, 1} and finite H_t equals the reference's H_t (1 − S_t) + V_reset S_t."""
    if v_reset is None:
        return membrane.sub_(fired, alpha=v_threshold)
    membrane.addcmul_(membrane, fired, value=-1.0)
    return membrane.add_(fired, alpha=v_reset) if v_reset != 0.0 else membrane


def _forward_loop(step_input, groups: int, tau, v_threshold, v_reset, keep=None, out=None):
    """Run Eqs. 6–9 over ``step_input(t)`` for t < groups; returns δ (written into ``out`` when given).
    ``keep(t, membrane, fired)`` sees each step's H_t and S_t (float 0/1) before the reset overwrites the
    membrane; both live in buffers the next step reuses, so ``keep`` copies what it keeps.

    H_t = V + (X − (V − V_rest)) / τ with the reference's operation order, so H_t is bit-identical (at t = 1,
    V = V_rest gives V − V_rest = 0 exactly); S_t = (H_t − V_th ≥ 0) ⇔ (H_t ≥ V_th) for finite floats.
    Every image-sized tensor is allocated once and reused across steps: on a CPU a fresh tensor's first
    touch costs about as much as the operation that fills it.
    """
    rest = 0.0 if v_reset is None else v_reset
    voltage = charge = fired = total = None
    for t in range(groups):
        x_t = step_input(t)
        if voltage is None:  # V_0 = V_rest: H_1 = V_rest + X_1 / τ
            membrane = torch.div(x_t, tau).add_(rest)
        else:
            torch.sub(voltage, rest, out=charge)
            torch.sub(x_t, charge, out=charge)
            membrane = voltage.add_(charge.div_(tau))  # Eq. 6
        fired = _spikes(membrane, v_threshold, out=fired)  # Eq. 7
        if keep is not None:
            keep(t, membrane, fired)
        if total is None:  # Eq. 9: Σ_t S_t ⊙ X_t (S_t ∈ {0, 1}, so each product is exact)
            total = torch.mul(x_t, fired, out=out) if out is not None else x_t * fired
        else:
            total.addcmul_(x_t, fired)
        if t + 1 < groups:  # Eq. 8 (V_G is never used)
            voltage = _reset(membrane, fired, v_threshold, v_reset)
            charge = torch.empty_like(voltage) if charge is None else charge
    return total.div_(groups)


def _backward_loop(grad_delta, step_input, groups, tau, v_threshold, v_reset, alpha, detach_reset,
                   grad_step):
    """Recompute Eqs. 6–8 forward, then backpropagate through Eqs. 6–9 in reverse time;
    ``grad_step(t, grad_x_t)`` receives ∂L/∂X_t (in a buffer the next step reuses)."""
    membranes = [None] * groups

    def keep(t, membrane, fired):
        membranes[t] = membrane.clone()

    _forward_loop(step_input, groups, tau, v_threshold, v_reset, keep)
    grad_gate = grad_delta / groups  # ∂δ/∂(S_t ⊙ X_t) = 1/G (Eq. 9)
    grad_spike, grad_x, fired = (torch.empty_like(grad_gate) for _ in range(3))
    grad_voltage = None  # ∂L/∂V_t from step t + 1
    for t in reversed(range(groups)):
        membrane, x_t = membranes[t], step_input(t)  # X_t asked for again: it may be recomputed into a reused buffer
        _spikes(membrane, v_threshold, out=fired)  # S_t again: cheaper than keeping a copy
        torch.mul(grad_gate, x_t, out=grad_spike)  # through Eq. 9
        if grad_voltage is not None and not detach_reset:  # through the reset of Eq. 8
            if v_reset is None:  # V_t = H_t − V_th S_t
                grad_spike.add_(grad_voltage, alpha=-v_threshold)
            else:  # V_t = H_t (1 − S_t) + V_reset S_t: ∂/∂S_t = V_reset − H_t
                grad_spike.addcmul_(grad_voltage, torch.sub(membrane, v_reset, out=grad_x), value=-1.0)
        # through the surrogate of Eq. 7: α σ(αu)(1 − σ(αu)), u = H_t − V_th (written over the membrane)
        sig = membrane.sub_(v_threshold).mul_(alpha).sigmoid_()
        grad_h = torch.ops.aten.sigmoid_backward.grad_input(grad_spike.mul_(alpha), sig, grad_input=sig)
        if grad_voltage is not None:  # ∂V_t/∂H_t: 1 − S_t (hard) or 1 (soft)
            grad_h.add_(grad_voltage.addcmul_(grad_voltage, fired, value=-1.0) if v_reset is not None
                        else grad_voltage)
        torch.div(grad_h, tau, out=grad_x).addcmul_(grad_gate, fired)  # Eq. 6 and Eq. 9 directly
        grad_step(t, grad_x)
        grad_voltage = grad_h.mul_(1.0 - 1.0 / tau)  # ∂H_t/∂V_{t−1} = 1 − 1/τ (Eq. 6)
        membranes[t] = None


def _ranges(total: int, per_chunk: int | None):
    if per_chunk is None or per_chunk >= total:
        yield 0, total
        return
    for start in range(0, total, per_chunk):
        yield start, min(start + per_chunk, total)


class _FusedLIFGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, factors, tau, v_threshold, v_reset, alpha, detach_reset, chunk):
        ctx.settings = (tau, v_threshold, v_reset, alpha, detach_reset, chunk)
        ctx.save_for_backward(factors)
        groups = factors.shape[0]
        with torch.no_grad():
            flat = factors.reshape(groups, -1)
            delta = flat.new_empty(flat.shape[1])
            for start, end in _ranges(flat.shape[1], chunk):
                part = flat[:, start:end]
                _forward_loop(part.__getitem__, groups, tau, v_threshold, v_reset, out=delta[start:end])
        return delta.view(factors.shape[1:])

    @staticmethod
    def backward(ctx, grad_delta):
        (factors,) = ctx.saved_tensors
        tau, v_threshold, v_reset, alpha, detach_reset, chunk = ctx.settings
        groups = factors.shape[0]
        with torch.no_grad():
            flat = factors.reshape(groups, -1)
            grad_flat = grad_delta.reshape(-1).to(flat.dtype)
            grad_factors = torch.empty_like(flat)
            for start, end in _ranges(flat.shape[1], chunk):
                part = flat[:, start:end]

                def store(t, grad, start=start, end=end):
                    grad_factors[t, start:end] = grad

                _backward_loop(grad_flat[start:end], part.__getitem__, groups, tau, v_threshold,
                               v_reset, alpha, detach_reset, store)
        return grad_factors.view(factors.shape), None, None, None, None, None, None


def _settings(tau, v_threshold, v_reset, surrogate_alpha):
    return validate_lif_settings(tau, v_threshold, v_reset, surrogate_alpha)


def fused_lif_gate(factors: torch.Tensor, tau: float = 4.0, v_threshold: float = 0.0,
                   v_reset: float | None = 0.0, surrogate_alpha: float = 4.0,
                   detach_reset: bool = False, chunk_elements: int | None = None) -> torch.Tensor:
    """δ = (1/G) Σ_t S_t ⊙ F_t (Eqs. 6–9) for factors ``[G, N, C, H, W]`` → ``[N, C, H, W]``.

    The same δ, spikes and gradients as ``LoRSPPrompter.gate(factors)`` with the same LIF settings
    (``v_reset=None`` = soft reset), but it saves only ``factors`` for backward and recomputes the LIF there.
    ``chunk_elements``: pixels per chunk (default :data:`DEFAULT_CHUNK_ELEMENTS` on CPU, whole tensors on GPUs).
    """
    _check_factors(factors)
    tau, v_threshold, v_reset, surrogate_alpha = _settings(tau, v_threshold, v_reset, surrogate_alpha)
    chunk = _chunk_elements(factors.device, chunk_elements)
    return _FusedLIFGate.apply(factors, tau, v_threshold, v_reset, surrogate_alpha, bool(detach_reset), chunk)


def _factor_step(projected: torch.Tensor, basis: torch.Tensor, rank: int, reuse: bool = False):
    """``t ↦ F_t = A_t B`` (Eq. 5) from A ``[n, C, H, G·r]`` and B ``[C, r, W]`` (or ``[G, C, r, W]``);
    ``reuse``: every F_t is written into one buffer (for a caller that is done with F_t before asking for
    F_{t+1})."""
    shared = basis.dim() == 3
    buffer = []

    def step(t: int) -> torch.Tensor:
        a_t, b_t = projected[..., t * rank:(t + 1) * rank], basis if shared else basis[t]
        if not reuse:
            return torch.matmul(a_t, b_t)
        if not buffer:
            buffer.append(torch.matmul(a_t, b_t))
            return buffer[0]
        return torch.matmul(a_t, b_t, out=buffer[0])

    return step


def _image_chunks(projected: torch.Tensor, width: int, chunk: int | None):
    n, c, h, _ = projected.shape
    per_image = c * h * width
    return _ranges(n, None if chunk is None else max(1, chunk // per_image))


class _FusedLowRankLIFGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, projected, basis, groups, rank, tau, v_threshold, v_reset, alpha, detach_reset, chunk):
        ctx.settings = (groups, rank, tau, v_threshold, v_reset, alpha, detach_reset, chunk)
        ctx.basis_dtype = basis.dtype
        with torch.no_grad(), torch.autocast(projected.device.type, enabled=False):
            basis_c = basis.to(projected.dtype)
            ctx.save_for_backward(projected, basis_c)
            return _eager_lowrank_forward(projected, basis_c, groups, rank, tau, v_threshold, v_reset, chunk)

    @staticmethod
    def backward(ctx, grad_delta):
        projected, basis = ctx.saved_tensors
        grad_projected, grad_basis = _eager_lowrank_backward(projected, basis, grad_delta, *ctx.settings,
                                                             needs_input_grad=ctx.needs_input_grad[:2])
        if grad_basis is not None:
            grad_basis = grad_basis.to(ctx.basis_dtype)
        return grad_projected, grad_basis, None, None, None, None, None, None, None, None


def _eager_lowrank_forward(projected, basis, groups, rank, tau, v_threshold, v_reset, chunk):
    """δ of Eqs. 5–9 by the eager loop, a chunk of images at a time (no autograd)."""
    n, c, h, _ = projected.shape
    width = basis.shape[-1]
    delta = projected.new_empty((n, c, h, width))
    with torch.no_grad():
        for start, end in _image_chunks(projected, width, chunk):
            part = projected[start:end]
            _forward_loop(_factor_step(part, basis, rank, reuse=True), groups, tau, v_threshold, v_reset,
                          out=delta[start:end])
    return delta


def _eager_lowrank_backward(projected, basis, grad_delta, groups, rank, tau, v_threshold, v_reset, alpha,
                            detach_reset, chunk=None, needs_input_grad=(True, True)):
    """(∂L/∂A, ∂L/∂B) of Eqs. 5–9 by the eager loop: the LIF recomputed, a chunk of images at a time."""
    width = basis.shape[-1]
    with torch.no_grad(), torch.autocast(projected.device.type, enabled=False):
        grad_delta = grad_delta.to(projected.dtype)
        grad_projected = torch.empty_like(projected) if needs_input_grad[0] else None
        grad_basis = torch.zeros_like(basis) if needs_input_grad[1] else None
        for start, end in _image_chunks(projected, width, chunk):
            part = projected[start:end]

            def store(t, grad_f, part=part, start=start):
                _store_factor_grads(t, grad_f, part, basis, rank, grad_projected, grad_basis, start)

            _backward_loop(grad_delta[start:end], _factor_step(part, basis, rank, reuse=True), groups, tau,
                           v_threshold, v_reset, alpha, detach_reset, store)
    return grad_projected, grad_basis


def _store_factor_grads(t, grad_f, projected, basis, rank, grad_projected, grad_basis, start=0):
    """F_t = A_t B_t (Eq. 5) backwards for one step t: writes ∂A_t = ∂F_t B_tᵀ into ``grad_projected`` (rows
    ``start:``) and adds ∂B_t = Σ_{n,h} A_tᵀ ∂F_t to ``grad_basis`` (either may be None).

    ``grad_f`` ``[n, C, H, W]``, ``projected`` A ``[n, C, H, G·r]``, ``basis`` ``[C, r, W]`` or ``[G, C, r, W]``.
    Both products are laid out for BLAS with a wide output (B ∂Fᵀ rather than ∂F Bᵀ, and one batch entry per
    image and channel), which on CPU is several times faster than the textbook layout for r ≪ W."""
    n, c, h, width = grad_f.shape
    shared = basis.dim() == 3
    b_t = basis if shared else basis[t]
    if grad_projected is not None:  # (B_t ∂F_tᵀ)ᵀ: [n, C, r, H] → [n, C, H, r]
        grad_projected[start:start + n, ..., t * rank:(t + 1) * rank] = torch.matmul(
            b_t, grad_f.transpose(-1, -2)).transpose(-1, -2)
    if grad_basis is not None:
        a_t = projected[..., t * rank:(t + 1) * rank].reshape(n * c, h, rank)
        g_b = torch.bmm(a_t.transpose(1, 2), grad_f.reshape(n * c, h, width)).view(n, c, rank, width).sum(0)
        (grad_basis if shared else grad_basis[t]).add_(g_b)


# ---------------------------------------------------------------------------------------------------------
# the compiled path (inductor fuses the G-step elementwise loop into one kernel; slow to build, see aot.py)
# ---------------------------------------------------------------------------------------------------------
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
    over images and rows instead; it follows as a matmul (:func:`_store_factor_grads`), which on CPU beats that
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


def aot_package_dir() -> str:
    """Where the CPU's compiled LIF gates are kept: ``$LORSP_AOT_CACHE`` when set, else
    ``$XDG_CACHE_HOME/lorsp/aot`` (``~/.cache/lorsp/aot``), which outlives ``/tmp``. Not inductor's
    ``$TORCHINDUCTOR_CACHE_DIR``: inductor sets that variable itself (to ``/tmp/torchinductor_<user>``) the first
    time any of its code runs in a process, so it cannot tell whether a user chose it."""
    import os

    return os.environ.get("LORSP_AOT_CACHE") or _user_cache_dir("aot")


def compiled_gate_cached(groups: int, rank: int, channels: int, height: int, width: int,
                         dtype: torch.dtype = torch.float32) -> bool:
    """Whether both compiled halves (δ and its gradients) of the LIF gate for this configuration are already
    built on this CPU (:func:`aot_package_dir`): then compiling costs milliseconds, and ``backend="auto"``
    compiles whatever the run's length (:func:`auto_backend`)."""
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


def compile_cache_dir() -> str:
    """Where ``torch.compile`` (CUDA) keeps its compiled kernels between processes (the CPU's packages are in
    :func:`aot_package_dir`): ``$TORCHINDUCTOR_CACHE_DIR`` when set, else
    ``$XDG_CACHE_HOME/lorsp/inductor`` (``~/.cache/lorsp/inductor``), which outlives ``/tmp``."""
    import os

    return os.environ.get("TORCHINDUCTOR_CACHE_DIR") or _user_cache_dir("inductor")


def _user_cache_dir(name: str) -> str:
    """``$XDG_CACHE_HOME/lorsp/<name>`` (``~/.cache/lorsp/<name>``): lorsp's folders that outlive ``/tmp``."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lorsp", name)


def use_persistent_compile_cache() -> str:
    """Point inductor's caches (its FX-graph and AOT-autograd caches, on by default) at :func:`compile_cache_dir`
    unless ``TORCHINDUCTOR_CACHE_DIR`` is set: a later run or process that compiles the same shapes loads the
    kernels instead of compiling them again (``benchmarks/compile_cache.py`` measures both)."""
    import os

    path = compile_cache_dir()
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", path)
    return path


class _CompiledLowRankLIFGate(torch.autograd.Function):
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
                delta = _eager_lowrank_forward(projected, basis_c, groups, rank, tau, v_threshold, v_reset,
                                               chunk=_chunk_elements(projected.device, None))
            return delta

    @staticmethod
    def backward(ctx, grad_delta):
        projected, basis = ctx.saved_tensors
        grad_delta = grad_delta.to(projected.dtype).contiguous()
        grads = _try_compiled(ctx.fallback, lambda: _compiled_backward(projected, basis, grad_delta, *ctx.settings))
        if grads is None:
            grads = _eager_lowrank_backward(projected, basis, grad_delta, *ctx.settings,
                                            chunk=_chunk_elements(projected.device, None))
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
            _store_factor_grads(t, grad_f, projected, basis, rank, None, grad_basis)
        return grad_projected, grad_basis


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


def fused_lorsp_prompt(x: torch.Tensor, projection: torch.Tensor, basis: torch.Tensor, tau: float = 4.0,
                       v_threshold: float = 0.0, v_reset: float | None = 0.0, surrogate_alpha: float = 4.0,
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
    tau, v_threshold, v_reset, surrogate_alpha = _settings(tau, v_threshold, v_reset, surrogate_alpha)
    chunk = _chunk_elements(x.device, chunk_elements)
    projected = x @ projection  # A = xP (Eq. 4), [N, C, H, G·r]
    if backend == "compile":
        if basis.dim() != 3:
            raise ValueError("backend='compile' supports the shared basis [C, r, W] only")
        return _CompiledLowRankLIFGate.apply(projected, basis, groups, rank, tau, v_threshold, v_reset,
                                             surrogate_alpha, bool(detach_reset), bool(fallback))
    return _FusedLowRankLIFGate.apply(projected, basis, groups, rank, tau, v_threshold, v_reset, surrogate_alpha,
                                      bool(detach_reset), chunk)


@torch.no_grad()
def lif_gate_spikes(factors: torch.Tensor, tau: float = 4.0, v_threshold: float = 0.0,
                    v_reset: float | None = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(spikes [G, ...] float, δ)`` of the fused forward loop (Eqs. 6–9), without autograd."""
    _check_factors(factors)
    tau, v_threshold, v_reset, _ = _settings(tau, v_threshold, v_reset, 4.0)
    spikes = torch.empty_like(factors)

    def keep(t, membrane, fired):
        spikes[t] = fired

    delta = _forward_loop(factors.__getitem__, factors.shape[0], tau, v_threshold, v_reset, keep)
    return spikes, delta


class SavedTensorMeter:
    """Sums the bytes autograd saves for backward inside ``with meter:`` (``torch.autograd.graph.
    saved_tensors_hooks``), counting each storage once. Storages of the tensors in ``exclude`` (e.g. the
    model's parameters, which exist whether or not they are saved) are counted apart as ``excluded_bytes``.
    Device-independent: the same numbers on CPU and GPU for the same dtype."""

    def __init__(self, exclude=()):
        self.bytes = 0
        self.excluded_bytes = 0
        self.count = 0
        self._seen: set = set()
        self._exclude = {self._key(t)[0] for t in exclude}
        self._hooks = None

    @staticmethod
    def _key(tensor: torch.Tensor):
        try:
            storage = tensor.untyped_storage()
            return (storage.data_ptr(), str(tensor.device)), storage.nbytes()
        except (RuntimeError, NotImplementedError):  # tensors without a plain storage
            return (id(tensor), str(tensor.device)), tensor.numel() * tensor.element_size()

    def _pack(self, tensor: torch.Tensor):
        key, size = self._key(tensor)
        if key not in self._seen:
            self._seen.add(key)
            self.count += 1
            if key in self._exclude:
                self.excluded_bytes += size
            else:
                self.bytes += size
        return tensor

    @staticmethod
    def _unpack(tensor):
        return tensor

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        return False

    @property
    def megabytes(self) -> float:
        return self.bytes / 2 ** 20


@contextmanager
def saved_tensor_bytes(exclude=()):
    """``with saved_tensor_bytes() as meter: loss = f(x)`` → ``meter.bytes`` saved for backward (see
    :class:`SavedTensorMeter`)."""
    meter = SavedTensorMeter(exclude)
    with meter:
        yield meter
