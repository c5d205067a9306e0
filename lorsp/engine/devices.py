"""The training device, its autocast dtype (bf16 where supported) and its name in the record."""
from __future__ import annotations

import os

import torch

from .. import distributed as distrib


def resolve_device(name: str, ctx: distrib.DistContext | None = None) -> torch.device:
    """The device of ``TrainConfig.device`` (``"auto"``: CUDA where available; under torchrun ``"cuda"`` is the
    local rank's GPU); a device that is not available is a ValueError saying so."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for but CUDA is not available; use --device cpu")
        if name == "cuda" and ctx is not None and ctx.enabled:
            return torch.device("cuda", ctx.local_rank)
        return torch.device(name if ":" in name else "cuda:0" if torch.cuda.device_count() else name)
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was asked for but is not available; use --device cpu")
    return torch.device(name)


def resolve_amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA when supported ("auto"), fp16 on request, none on CPU."""
    if device.type != "cuda" or mode == "off":
        return None
    if mode == "fp16":
        return torch.float16
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if mode == "bf16":
        raise ValueError(f"amp='bf16' but {torch.cuda.get_device_name(device)} does not support bfloat16")
    return None


def device_name(device: torch.device) -> str:
    """The device as the record names it (the GPU's model, or the CPU and its logical cores)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} logical cores)"


def autocast(device: torch.device, amp_dtype):
    """Autocast to ``amp_dtype`` on ``device``, or a disabled autocast where it is None."""
    if amp_dtype is None:
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=amp_dtype)
