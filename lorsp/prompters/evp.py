"""EVP ("Unleashing the Power of Visual Prompting At the Pixel Level", Wu et al.): the image shrunk and framed
by ``pad_size`` learnable pixels on each side (``docs/method.md``, "Ablations and baselines").

At 224 the image is shrunk to 164 and padded by 30 pixels: 3·(224² − 164²) = 69,840 parameters. In training
mode the image also gets EVP's input diversity (a random horizontal flip and a small random shift, drawn from
torch's global RNG, so ``torch.manual_seed`` makes it reproducible); in eval mode it is deterministic.
EVP's normalised-gradient update rule is :class:`lorsp.optim.EVPOptimizer`.

Book chapters: "Parameter counting", "Backbones".
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .baselines import PadPrompter
from .registry import as_size, register_prompter

__all__ = ["EVPPrompter", "evp_inner_size"]


def evp_inner_size(image_size=224, pad_size: int = 30) -> tuple[int, int]:
    """The shrunk image's size: ``image_size − 2·pad_size`` per side (164 at 224); ValueError if ≤ 0."""
    if isinstance(pad_size, bool) or not isinstance(pad_size, int) or pad_size < 0:
        raise ValueError(f"pad_size must be an integer >= 0, got {pad_size!r}")
    height, width = as_size(image_size)
    inner = (height - 2 * pad_size, width - 2 * pad_size)
    if min(inner) <= 0:
        raise ValueError(f"EVP pad_size={pad_size} leaves no image inside image_size={image_size!r} "
                         f"(inner size {inner}); use pad_size < {min(height, width) / 2}")
    return inner


@register_prompter("evp")
class EVPPrompter(PadPrompter):
    """EVP: :class:`PadPrompter` with inner size ``image_size − 2·pad_size`` plus input diversity.

    Args:
        pad_size: learnable frame width in pixels (30 in EVP).
        max_shift: the random shift of input diversity, in pixels (the image is padded by ``max_shift``
            by edge replication and a random crop of the original size is taken). 0 disables it.
        flip: random horizontal flip (p = 0.5) in training mode.
        inner_size: optional; overrides ``pad_size`` (the shrunk image's size, int or (H, W), as ``"pad"``).
    """

    def __init__(self, image_size=224, channels: int = 3, pad_size: int = 30, max_shift: int = 4,
                 flip: bool = True, squash: str | None = None, inner_size=None, **_ignored):
        inner = evp_inner_size(image_size, pad_size) if inner_size is None else as_size(inner_size)
        super().__init__(image_size, channels, inner_size=inner, squash=squash)
        if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
            raise ValueError(f"max_shift must be an integer >= 0, got {max_shift!r}")
        self.pad_size = pad_size
        self.max_shift = max_shift
        self.flip = bool(flip)

    @classmethod
    def param_count(cls, image_size=224, channels: int = 3, pad_size: int = 30, inner_size=None,
                    **_ignored) -> int:
        inner = evp_inner_size(image_size, pad_size) if inner_size is None else inner_size
        return super().param_count(image_size, channels, inner_size=inner)

    def diversify(self, x: torch.Tensor) -> torch.Tensor:
        """EVP's input diversity (training mode only): per-image random horizontal flip and random shift."""
        if self.flip:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        if self.max_shift > 0:
            s = self.max_shift
            height, width = x.shape[-2:]
            padded = F.pad(x, (s, s, s, s), mode="replicate")
            offsets = torch.randint(0, 2 * s + 1, (x.shape[0], 2))
            x = torch.stack([padded[i, :, int(dy):int(dy) + height, int(dx):int(dx) + width]
                             for i, (dy, dx) in enumerate(offsets)])
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if self.training:
            x = self.diversify(x)
        return self.shrink(x) + self.program().unsqueeze(0)
