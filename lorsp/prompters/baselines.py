"""The pixel-space baselines the paper compares against (``docs/method.md``, "Ablations and baselines").

- ``"none"``: linear probing (LP), δ = 0 and no parameters.
- ``"lorvp"``: LoR-VP, one prompt B·A shared by all images, B ∈ R^{C×H×r}, A ∈ R^{C×r×W}.
- ``"pad"``: the ILM-VP / AutoVP frame: the image resized to ``inner_size`` and zero-padded to the input
  size, plus a learnable program on the frame.

Book chapters: "Parameter counting", "Backbones", "What the prompts look like".
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import Prompter, as_size, register_prompter, require_positive_int

__all__ = ["NoPrompter", "LoRVPPrompter", "PadPrompter", "frame_mask"]


@register_prompter("none")
class NoPrompter(Prompter):
    """Linear probing: no prompt (δ = 0), no parameters; the image passes unchanged."""

    def __init__(self, image_size=224, channels: int = 3, **_ignored):
        super().__init__(image_size, channels)

    @classmethod
    def param_count(cls, image_size=224, channels: int = 3, **_ignored) -> int:
        return 0

    def prompt(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return torch.zeros_like(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return x


@register_prompter("lorvp")
class LoRVPPrompter(Prompter):
    """LoR-VP: δ = B·A per channel, one prompt shared by every image (added before normalisation).

    ``B ∈ R^{C×H×r}`` starts at 0 and ``A ∈ R^{C×r×W}`` ~ N(0, ``init_std``²) (0.01 in LoR-VP), so δ = 0 at
    init. Trainable parameters: C·r·(H + W) = 2·C·224·r = 5,376 at r = 4.
    """

    def __init__(self, image_size=224, channels: int = 3, rank: int = 4, init_std: float = 0.01, **_ignored):
        super().__init__(image_size, channels)
        height, width = self.image_size
        self.rank = require_positive_int("rank", rank)
        self.left = nn.Parameter(torch.zeros(self.channels, height, self.rank))  # B
        self.right = nn.Parameter(torch.randn(self.channels, self.rank, width) * init_std)  # A

    @classmethod
    def param_count(cls, image_size=224, channels: int = 3, rank: int = 4, **_ignored) -> int:
        height, width = as_size(image_size)
        return channels * require_positive_int("rank", rank) * (height + width)

    def shared_prompt(self) -> torch.Tensor:
        """The image-independent prompt B·A, ``[C, H, W]``."""
        return self.left @ self.right

    def prompt(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.shared_prompt().unsqueeze(0).expand_as(x)


def frame_mask(image_size, inner_size) -> torch.Tensor:
    """``[H, W]`` mask: 1 on the frame, 0 on the centred ``inner_size`` square (or rectangle) of the image."""
    height, width = as_size(image_size)
    inner_h, inner_w = as_size(inner_size)
    if inner_h > height or inner_w > width:
        raise ValueError(f"inner_size {inner_size!r} must fit inside image_size {image_size!r}")
    mask = torch.ones(height, width)
    top, left = (height - inner_h) // 2, (width - inner_w) // 2
    mask[top:top + inner_h, left:left + inner_w] = 0
    return mask


@register_prompter("pad")
class PadPrompter(Prompter):
    """The padding prompt of ILM-VP and AutoVP.

    The image is resized to ``inner_size`` and zero-padded (centred) back to ``image_size``; a learnable
    program of the full image size, masked to the frame, is added (``squash="sigmoid"`` passes it through a
    sigmoid first, as ILM-VP does). Trainable: C·(H·W − inner²): 147,456 for inner 32 ("147K", ILM-VP),
    73,728 for inner 160 ("74K", AutoVP). The program starts at 0 (with ``squash=None``).
    """

    def __init__(self, image_size=224, channels: int = 3, inner_size=160, squash: str | None = None,
                 **_ignored):
        super().__init__(image_size, channels)
        if squash not in (None, "none", "sigmoid"):
            raise ValueError(f"squash must be None or 'sigmoid', got {squash!r}")
        self.squash = None if squash in (None, "none") else squash
        self.inner_size = as_size(inner_size)
        self.register_buffer("mask", frame_mask(self.image_size, self.inner_size), persistent=False)
        frame_pixels = int(self.mask.sum().item())
        self.frame = nn.Parameter(torch.zeros(self.channels, frame_pixels))
        self.register_buffer("frame_index", self.mask.flatten().nonzero().squeeze(1), persistent=False)

    @classmethod
    def param_count(cls, image_size=224, channels: int = 3, inner_size=160, **_ignored) -> int:
        return channels * int(frame_mask(image_size, inner_size).sum().item())

    def program(self) -> torch.Tensor:
        """The learnable program on the frame, ``[C, H, W]`` (0 inside)."""
        height, width = self.image_size
        values = torch.sigmoid(self.frame) if self.squash == "sigmoid" else self.frame
        full = values.new_zeros(self.channels, height * width)
        full = full.index_copy(1, self.frame_index, values)
        return full.view(self.channels, height, width)

    def shrink(self, x: torch.Tensor) -> torch.Tensor:
        """The image resized to ``inner_size`` and zero-padded (centred) to ``image_size``."""
        height, width = self.image_size
        inner_h, inner_w = self.inner_size
        small = F.interpolate(x, size=(inner_h, inner_w), mode="bilinear", align_corners=False, antialias=True)
        top, left = (height - inner_h) // 2, (width - inner_w) // 2
        return F.pad(small, (left, width - inner_w - left, top, height - inner_h - top))

    def prompt(self, x: torch.Tensor) -> torch.Tensor:
        """x̃ − x: what the frame prompt changes (not an additive prompt: the image is also resized)."""
        return self.forward(x) - x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.shrink(x) + self.program().unsqueeze(0)
