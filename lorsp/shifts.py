"""Distribution shifts for the small-scale out-of-distribution chapter (Table IV at ``smoke``/``mini``).

At ``paper`` scale Table IV tests an ImageNet-1K model on ImageNet-V2, -Sketch, -A and -R. Those sets are
not available at small scale, so the "Out of distribution" chapter tests on **real transformations of the
source test images**, each named for what it is — they are *not* the ImageNet variants:

- ``"edge-map sketch"``: a Sobel edge map of the grey image, dark strokes on white (a crude stand-in for
  the *idea* of ImageNet-Sketch: shape kept, colour and texture gone);
- ``"gaussian noise"``: additive N(0, σ²) pixel noise, σ = 0.1 by default, clipped to [0, 1];
- ``"gaussian blur"``: a Gaussian blur whose kernel scales with the image (σ = 1.5 px at 32 px);
- ``"colour shift"``: hue rotated by a quarter turn and saturation boosted (colour statistics changed,
  shapes kept).

Every shift maps images ``[C, H, W]`` or ``[N, C, H, W]`` in [0, 1] to the same shape in [0, 1] and is
deterministic: the noise of image ``index`` is drawn from a generator seeded by ``(seed, index)``.
:class:`ShiftedDataset` wraps any ``(image, label)`` dataset (``lorsp.data.build_dataset``).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

__all__ = ["SHIFTS", "SHIFT_DESCRIPTIONS", "list_shifts", "apply_shift", "ShiftedDataset", "register_shift"]

ShiftFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

SHIFTS: dict[str, ShiftFn] = {}
SHIFT_DESCRIPTIONS: dict[str, str] = {}


def register_shift(name: str, description: str):
    """Decorator: register ``fn(images [N, C, H, W] in [0, 1], generator) → same shape in [0, 1]``."""
    def wrap(fn: ShiftFn) -> ShiftFn:
        if name in SHIFTS:
            raise ValueError(f"shift {name!r} is already registered")
        SHIFTS[name] = fn
        SHIFT_DESCRIPTIONS[name] = description
        return fn
    return wrap


def list_shifts() -> list[str]:
    """Names of the registered shifts, in registration order."""
    return list(SHIFTS)


def _grey(images: torch.Tensor) -> torch.Tensor:
    if images.shape[1] == 1:
        return images
    weights = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images[:, :3] * weights).sum(1, keepdim=True)


@register_shift("edge-map sketch",
                "Sobel edge magnitude of the grey image, dark strokes on a white page (shape kept, "
                "colour and texture removed)")
def edge_map_sketch(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    grey = _grey(images)
    kx = grey.new_tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]).view(1, 1, 3, 3)
    ky = kx.transpose(2, 3)
    padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
    magnitude = torch.sqrt(F.conv2d(padded, kx) ** 2 + F.conv2d(padded, ky) ** 2 + 1e-12)
    # per-image normalisation by a high quantile so that strokes are dark whatever the contrast; a flat
    # image (no gradient above 0.05, a 1/80 step) stays a blank white page
    scale = torch.quantile(magnitude.flatten(1), 0.98, dim=1).clamp_min(0.05).view(-1, 1, 1, 1)
    sketch = 1.0 - (magnitude / scale).clamp(0.0, 1.0)
    return sketch.expand(-1, images.shape[1], -1, -1).contiguous()


@register_shift("gaussian noise", "additive Gaussian pixel noise, sigma = 0.1, clipped to [0, 1]")
def gaussian_noise(images: torch.Tensor, generator: torch.Generator, sigma: float = 0.1) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype, device="cpu").to(images.device)
    return (images + sigma * noise).clamp(0.0, 1.0)


@register_shift("gaussian blur", "Gaussian blur, sigma = 1.5 px per 32 px of image side")
def gaussian_blur(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    side = min(images.shape[-2:])
    sigma = 1.5 * side / 32.0
    kernel = int(2 * round(2.5 * sigma) + 1)
    kernel = min(kernel, (side // 2) * 2 - 1) if side >= 3 else 1
    if kernel < 3:
        return images.clone()
    return TF.gaussian_blur(images, kernel_size=[kernel, kernel], sigma=[sigma, sigma]).clamp(0.0, 1.0)


@register_shift("colour shift", "hue rotated by a quarter turn, saturation x1.5")
def colour_shift(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    if images.shape[1] != 3:
        raise ValueError(f"'colour shift' needs RGB images [N, 3, H, W], got {tuple(images.shape)}")
    shifted = TF.adjust_hue(images, 0.25)
    return TF.adjust_saturation(shifted, 1.5).clamp(0.0, 1.0)


def apply_shift(name: str, images: torch.Tensor, seed: int = 0, index: int | torch.Tensor = 0) -> torch.Tensor:
    """Apply the shift ``name`` to ``images`` (``[C, H, W]`` or ``[N, C, H, W]`` in [0, 1]).

    The result has the same shape and lies in [0, 1]. Random shifts draw from a generator seeded by
    ``(seed, index)`` so that image ``index`` always gets the same corruption.
    """
    if name not in SHIFTS:
        raise KeyError(f"unknown shift {name!r}; expected one of {list_shifts()}")
    if not isinstance(images, torch.Tensor) or images.dim() not in (3, 4) or not images.is_floating_point():
        raise ValueError(f"shift {name!r} takes a float tensor [C, H, W] or [N, C, H, W] in [0, 1], got "
                         f"{type(images).__name__} {tuple(getattr(images, 'shape', ()))}")
    single = images.dim() == 3
    batch = images.unsqueeze(0) if single else images
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(index))
    out = SHIFTS[name](batch, generator)
    return out[0] if single else out


class ShiftedDataset(Dataset):
    """``base`` (yielding ``(image [C, H, W] in [0, 1], label)``) with the shift ``shift`` applied.

    Keeps ``classes`` and ``num_classes`` of the base dataset; image ``i`` is shifted deterministically.
    """

    def __init__(self, base: Dataset, shift: str, seed: int = 0):
        if shift not in SHIFTS:
            raise KeyError(f"unknown shift {shift!r}; expected one of {list_shifts()}")
        self.base = base
        self.shift = shift
        self.seed = int(seed)
        self.classes = getattr(base, "classes", None)
        self.num_classes = getattr(base, "num_classes", None)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        image, label = self.base[index]
        return apply_shift(self.shift, image, seed=self.seed, index=index), label

    def __repr__(self) -> str:
        return f"ShiftedDataset({self.shift!r}, seed={self.seed}, base={type(self.base).__name__}, n={len(self)})"
