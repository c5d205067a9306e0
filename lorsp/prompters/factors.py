"""Group-wise prompt factors (Eqs. 4–5), the one module every low-rank LoRSP variant shares.

Book chapter: "Prompt factorisation" (``book/prompt_factorisation.ipynb``).
"""
from __future__ import annotations

import torch
from torch import nn

from .registry import as_size, require_positive_int

__all__ = ["PromptFactors", "factor_param_count", "DEFAULT_GROUPS", "DEFAULT_RANK"]

# G and r of the paper's LoRSP setting (Eqs. 4-5; method.md): every prompter and tool above takes them from here.
DEFAULT_GROUPS = 4
DEFAULT_RANK = 4


def factor_param_count(image_size=224, channels: int = 3, groups: int = DEFAULT_GROUPS, rank: int = DEFAULT_RANK,
                       shared_basis: bool = True) -> int:
    """|P| + |B| (Eqs. 13–15): W·G·r + C·r·W = W·r·(G + C) with the shared basis of Eq. 5;
    W·G·r + G·C·r·W = W·r·G·(1 + C) for the ungrouped formulation (one basis per factor)."""
    _, width = as_size(image_size)
    groups = require_positive_int("groups", groups)
    rank = require_positive_int("rank", rank)
    projection = width * groups * rank
    basis = channels * rank * width * (1 if shared_basis else groups)
    return projection + basis


class PromptFactors(nn.Module):
    """F_g(x) = (x P)_g B, g = 1..G (Eqs. 4–5).

    ``P ∈ R^{W×(G·r)}`` is a spatial projection shared by all images and channels (Eq. 4); its output
    ``A = xP ∈ R^{C×H×(G·r)}`` is split along the last dimension into G blocks ``A_g ∈ R^{C×H×r}``,
    and each is multiplied by the basis ``B ∈ R^{C×r×W}`` (one r×W basis per channel, Eq. 5), so every
    factor has rank ≤ r per channel and depends on the image.

    Args:
        groups: G, the number of factors (the LIF's time steps).
        rank: r.
        init_std: σ of P ~ N(0, σ²); B starts at 0, so every factor (and δ) is 0 at init [reading].
        shared_basis: ``False`` gives each factor its own basis (the "ungrouped" formulation).
    """

    def __init__(self, image_size=224, channels: int = 3, groups: int = DEFAULT_GROUPS, rank: int = DEFAULT_RANK,
                 init_std: float = 0.01, shared_basis: bool = True):
        super().__init__()
        height, width = as_size(image_size)
        self.groups = require_positive_int("groups", groups)
        self.rank = require_positive_int("rank", rank)
        self.channels = require_positive_int("channels", channels)
        self.shared_basis = bool(shared_basis)
        if not init_std >= 0:
            raise ValueError(f"init_std must be >= 0, got {init_std!r}")
        self.projection = nn.Parameter(torch.randn(width, self.groups * self.rank) * init_std)  # P
        basis_shape = (channels, self.rank, width) if self.shared_basis else (self.groups, channels, self.rank, width)
        self.basis = nn.Parameter(torch.zeros(basis_shape))  # B

    def extra_repr(self) -> str:
        return f"groups={self.groups}, rank={self.rank}, shared_basis={self.shared_basis}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [N, C, H, W]`` → factors ``[G, N, C, H, W]``."""
        n, c, h, _ = x.shape
        a = (x @ self.projection).view(n, c, h, self.groups, self.rank)  # Eq. 4 and Split_G
        if self.shared_basis:
            return torch.einsum("nchgr,crw->gnchw", a, self.basis)  # Eq. 5
        return torch.einsum("nchgr,gcrw->gnchw", a, self.basis)
