"""The eager fused LIF gate (Eqs. 6–9): the G-step loop as PyTorch operations, chunk by chunk, in autograd
functions that save only the factors (:func:`fused_lif_gate`) or only A = xP and B (:class:`FusedLowRankLIFGate`,
behind :func:`lorsp.prompters.fused.fused_lorsp_prompt`) and run the LIF again in backward.

Forward: :func:`_forward_loop` runs Eqs. 6–9 with the reference's operation order (spikes and δ bit-identical to
:class:`lorsp.LIF` for the same factors). Backward: :func:`_backward_loop` recomputes the membranes, then goes
backwards in time with the sigmoid surrogate and the reset term detached or not (``detach_reset``).
:func:`eager_lowrank_forward`, :func:`eager_lowrank_backward` and :func:`store_factor_grads` (F_t = A_t B, Eq. 5,
backwards) are also the compiled backend's fallback and its ∂B (:mod:`lorsp.prompters.fused_compiled`).
:func:`lif_gate_spikes` returns the spikes and δ of the same forward loop (no autograd), for checks.
"""
from __future__ import annotations

import torch

from ..lif import (DEFAULT_SURROGATE_ALPHA, DEFAULT_TAU, DEFAULT_V_RESET, DEFAULT_V_THRESHOLD,
                   validate_lif_settings)

__all__ = ["fused_lif_gate", "lif_gate_spikes", "FusedLowRankLIFGate", "eager_lowrank_forward",
           "eager_lowrank_backward", "store_factor_grads", "resolve_chunk_elements", "DEFAULT_CHUNK_ELEMENTS"]


def _check_factors(factors: torch.Tensor) -> None:
    if not isinstance(factors, torch.Tensor):
        raise TypeError(f"factors must be a tensor [G, N, C, H, W], got {type(factors).__name__}")
    if factors.dim() < 2 or factors.shape[0] < 1:
        raise ValueError(f"factors must be a sequence [G, ...] with G >= 1 (the LIF's time steps), "
                         f"got shape {tuple(factors.shape)}")
    if not factors.is_floating_point():
        raise TypeError(f"factors must be a floating-point tensor, got dtype {factors.dtype}")


DEFAULT_CHUNK_ELEMENTS = 1 << 18
"""Elements per chunk on CPU (1 MiB per float32 tensor; whole images in
:func:`~lorsp.prompters.fused.fused_lorsp_prompt`, at least
one): the eager G-step loop runs chunk by chunk, which bounds what backward's recomputation holds at once (G
membranes of one chunk) and keeps its working tensors small enough to be reused from the cache and the
allocator's free lists. On a 2-core CPU, forward + backward of a batch of 32 images at 128 px took about half
as long with chunks of 2**18–2**19 elements as with the whole batch (2**22), and longer again with chunks of
2**16; 16 images at 224 px, likewise."""


def resolve_chunk_elements(device: torch.device, chunk_elements: int | None) -> int | None:
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


def fused_lif_gate(factors: torch.Tensor, tau: float = DEFAULT_TAU, v_threshold: float = DEFAULT_V_THRESHOLD,
                   v_reset: float | None = DEFAULT_V_RESET, surrogate_alpha: float = DEFAULT_SURROGATE_ALPHA,
                   detach_reset: bool = False, chunk_elements: int | None = None) -> torch.Tensor:
    """δ = (1/G) Σ_t S_t ⊙ F_t (Eqs. 6–9) for factors ``[G, N, C, H, W]`` → ``[N, C, H, W]``.

    The same δ, spikes and gradients as ``LoRSPPrompter.gate(factors)`` with the same LIF settings
    (``v_reset=None`` = soft reset), but it saves only ``factors`` for backward and recomputes the LIF there.
    ``chunk_elements``: pixels per chunk (default :data:`DEFAULT_CHUNK_ELEMENTS` on CPU, whole tensors on GPUs).
    """
    _check_factors(factors)
    tau, v_threshold, v_reset, surrogate_alpha = validate_lif_settings(tau, v_threshold, v_reset, surrogate_alpha)
    chunk = resolve_chunk_elements(factors.device, chunk_elements)
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


class FusedLowRankLIFGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, projected, basis, groups, rank, tau, v_threshold, v_reset, alpha, detach_reset, chunk):
        ctx.settings = (groups, rank, tau, v_threshold, v_reset, alpha, detach_reset, chunk)
        ctx.basis_dtype = basis.dtype
        with torch.no_grad(), torch.autocast(projected.device.type, enabled=False):
            basis_c = basis.to(projected.dtype)
            ctx.save_for_backward(projected, basis_c)
            return eager_lowrank_forward(projected, basis_c, groups, rank, tau, v_threshold, v_reset, chunk)

    @staticmethod
    def backward(ctx, grad_delta):
        projected, basis = ctx.saved_tensors
        grad_projected, grad_basis = eager_lowrank_backward(projected, basis, grad_delta, *ctx.settings,
                                                            needs_input_grad=ctx.needs_input_grad[:2])
        if grad_basis is not None:
            grad_basis = grad_basis.to(ctx.basis_dtype)
        return grad_projected, grad_basis, None, None, None, None, None, None, None, None


def eager_lowrank_forward(projected, basis, groups, rank, tau, v_threshold, v_reset, chunk):
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


def eager_lowrank_backward(projected, basis, grad_delta, groups, rank, tau, v_threshold, v_reset, alpha,
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
                store_factor_grads(t, grad_f, part, basis, rank, grad_projected, grad_basis, start)

            _backward_loop(grad_delta[start:end], _factor_step(part, basis, rank, reuse=True), groups, tau,
                           v_threshold, v_reset, alpha, detach_reset, store)
    return grad_projected, grad_basis


def store_factor_grads(t, grad_f, projected, basis, rank, grad_projected, grad_basis, start=0):
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


@torch.no_grad()
def lif_gate_spikes(factors: torch.Tensor, tau: float = DEFAULT_TAU, v_threshold: float = DEFAULT_V_THRESHOLD,
                    v_reset: float | None = DEFAULT_V_RESET) -> tuple[torch.Tensor, torch.Tensor]:
    """``(spikes [G, ...] float, δ)`` of the fused forward loop (Eqs. 6–9), without autograd."""
    _check_factors(factors)
    tau, v_threshold, v_reset, _ = validate_lif_settings(tau, v_threshold, v_reset, 4.0)
    spikes = torch.empty_like(factors)

    def keep(t, membrane, fired):
        spikes[t] = fired

    delta = _forward_loop(factors.__getitem__, factors.shape[0], tau, v_threshold, v_reset, keep)
    return spikes, delta
