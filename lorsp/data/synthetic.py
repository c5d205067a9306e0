"""``synthetic``: a procedural, deterministic image-classification task that needs no files.

Class ``c`` of ``K`` is an oriented sinusoidal grating blended between two class colours:

- background hue ``c / K`` and foreground hue ``c / K + 1/2`` (HSV, saturation 0.65, value 0.55 / 0.9);
- orientation ``θ_c = π · frac(0.618 · c)`` (golden-ratio spacing) and ``2 + 2 · (c mod 3)`` cycles per image.

Each image adds random nuisance: phase, ±10 % frequency, ±6° orientation, ±0.1 brightness, a random disc of
the foreground colour and Gaussian pixel noise (σ = 0.06). Sample ``i`` of a split is drawn from a
``torch.Generator`` seeded by (split, i) alone, so the images do not depend on the run seed, the worker or
the order they are read in; ``per_class`` sets the number of images per class (defaults: 50 train, 20 test).
The classes differ in colour and orientation, so even a random-weight backbone with a linear head learns them
well above chance (the engine's smoke tests rely on this); the numbers say nothing about the paper's tasks.
"""
from __future__ import annotations

import colorsys
import math

import torch
import torch.nn.functional as F

from .images import LorspDataset, as_image_size

DEFAULT_PER_CLASS = {"train": 50, "test": 20}
DEFAULT_NUM_CLASSES = 10
_SPLIT_SEED = {"train": 1_000_003, "test": 2_000_003}

__all__ = ["SyntheticDataset", "synthetic_image", "DEFAULT_NUM_CLASSES", "DEFAULT_PER_CLASS"]


def _hsv(h: float, s: float, v: float) -> torch.Tensor:
    return torch.tensor(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=torch.float32)


def synthetic_image(label: int, num_classes: int, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """One ``[3, H, W]`` image in [0, 1] of class ``label`` (see the module docstring)."""
    h, w = size
    u = torch.rand(8, generator=generator)
    yy, xx = torch.meshgrid(torch.linspace(-0.5, 0.5, h), torch.linspace(-0.5, 0.5, w), indexing="ij")
    theta = math.pi * ((0.618034 * label) % 1.0) + (u[0].item() - 0.5) * math.radians(12)
    cycles = (2 + 2 * (label % 3)) * (0.9 + 0.2 * u[1].item())
    phase = 2 * math.pi * u[2].item()
    grating = 0.5 + 0.5 * torch.sin(2 * math.pi * cycles * (xx * math.cos(theta) + yy * math.sin(theta)) + phase)
    hue = label / num_classes
    background, foreground = _hsv(hue, 0.65, 0.55), _hsv(hue + 0.5, 0.65, 0.9)
    image = background[:, None, None] * (1 - grating) + foreground[:, None, None] * grating
    cx, cy, radius = u[3].item() - 0.5, u[4].item() - 0.5, 0.08 + 0.12 * u[5].item()
    disc = (((xx - cx) ** 2 + (yy - cy) ** 2) < radius ** 2).float()
    image = image * (1 - disc) + foreground[:, None, None] * disc
    image = image + (u[6].item() - 0.5) * 0.2 + 0.06 * torch.randn(3, h, w, generator=generator)
    return image.clamp(0, 1)


class SyntheticDataset(LorspDataset):
    """``num_classes`` classes × ``per_class`` images of size ``image_size``, generated on access."""

    def __init__(self, split: str = "train", image_size=224, num_classes: int = DEFAULT_NUM_CLASSES,
                 per_class: int | None = None, seed: int = 0):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"synthetic num_classes must be an integer >= 2, got {num_classes!r}")
        per_class = DEFAULT_PER_CLASS[split] if per_class is None else per_class
        if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
            raise ValueError(f"per_class must be a positive integer or None, got {per_class!r}")
        self.name, self.split, self.root = "synthetic", split, None
        self.image_size = as_image_size(image_size)
        self.classes = [f"pattern{c:02d}" for c in range(num_classes)]
        self.per_class = per_class
        self.seed = seed  # recorded only: the images do not depend on it (see the module docstring)
        self.targets = [c for c in range(num_classes) for _ in range(per_class)]

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} synthetic images")
        label = self.targets[index]
        generator = torch.Generator().manual_seed(_SPLIT_SEED[self.split] + 7919 * index)
        # draw at a fixed 64 px and resize like any other image, so content does not depend on image_size
        image = synthetic_image(label, self.num_classes, (64, 64), generator)
        if self.image_size != (64, 64):
            image = F.interpolate(image[None], size=self.image_size, mode="bilinear", antialias=True,
                                  align_corners=False)[0].clamp(0, 1)
        return image, label
