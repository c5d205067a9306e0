"""VPT (Jia et al., "Visual Prompt Tuning"): learnable prompt tokens inside a frozen timm ViT
(``docs/method.md``, "Ablations and baselines").

The prompter is the identity in pixel space (``forward(x)`` returns x, ``prompt(x)`` is 0); its tokens live
in the token sequence. :meth:`VPTPrompter.attach` (called by :class:`lorsp.model.PromptedModel`) creates the
tokens ``[depth_count, num_tokens, embed_dim]`` on the prompter (so they are trainable parameters of the
prompter, never of the frozen backbone) and replaces the backbone's ``forward_features`` by one that

- ``depth="shallow"``: inserts the tokens after the patch embedding + position embedding, between the prefix
  (class/register) tokens and the patch tokens, once, before the first block;
- ``depth="deep"``: does that before the first block and *replaces* them by the next layer's tokens before
  every later block (one token set per block: ``depth_count = num_layers``).

The prompt tokens are removed again after the last block, so the backbone's own pooling sees exactly the
tokens it would see without VPT: ``"token"`` pooling takes the class token, and ``"avg"`` pooling averages the
patch tokens only (prompt tokens excluded, as in VPT). Trainable: ``depth_count · num_tokens · embed_dim``
(:meth:`VPTPrompter.param_count`); before :meth:`attach` the tokens do not exist and
:meth:`num_prompt_params` is 0. Init: uniform(±√(6 / (3·patch² + embed_dim))) as VPT (Xavier on the patch
projection's fan). VPT's prompt dropout is not used.

Only timm ``VisionTransformer`` models are supported; anything else (ResNet, MobileNet, and also Swin, whose
windowed attention has no place for extra tokens in timm's implementation) gets a ValueError.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .baselines import NoPrompter
from .registry import register_prompter, require_positive_int

__all__ = ["VPTPrompter", "VPT_DEPTHS"]

VPT_DEPTHS = ("shallow", "deep")


def _check_depth(depth: str) -> str:
    if depth not in VPT_DEPTHS:
        raise ValueError(f"VPT depth must be one of {VPT_DEPTHS}, got {depth!r}")
    return depth


@register_prompter("vpt")
class VPTPrompter(NoPrompter):
    """VPT prompt tokens for a timm ViT; identity in pixel space. See the module docstring.

    Args:
        num_tokens: prompt tokens per layer (VPT's "p"; 10 by default).
        depth: ``"shallow"`` (tokens at the input of the first block) or ``"deep"`` (new tokens at every block).
        embed_dim, num_layers: optional; if given, :meth:`attach` checks them against the backbone.
    """

    def __init__(self, image_size=224, channels: int = 3, num_tokens: int = 10, depth: str = "shallow",
                 embed_dim: int | None = None, num_layers: int | None = None, **_ignored):
        super().__init__(image_size, channels)
        self.num_tokens = require_positive_int("num_tokens", num_tokens)
        self.depth = _check_depth(depth)
        self.expected_embed_dim = embed_dim
        self.expected_num_layers = num_layers
        self.tokens: nn.Parameter | None = None
        self._backbone_forward = None

    @classmethod
    def param_count(cls, image_size=224, channels: int = 3, num_tokens: int = 10, embed_dim: int = 768,
                    depth: str = "shallow", num_layers: int = 12, **_ignored) -> int:
        depth_count = num_layers if _check_depth(depth) == "deep" else 1
        return depth_count * require_positive_int("num_tokens", num_tokens) * require_positive_int(
            "embed_dim", embed_dim)

    # pixel space: the identity of NoPrompter (δ = 0); the prompt lives in the token sequence

    # -- tokens inside the backbone --------------------------------------------------------------
    def attach(self, backbone: nn.Module) -> None:
        """Create the prompt tokens for ``backbone`` and make its ``forward_features`` use them."""
        from timm.models.vision_transformer import VisionTransformer

        if not isinstance(backbone, VisionTransformer):
            raise ValueError(f"VPT needs a timm VisionTransformer (ViT) backbone, got {type(backbone).__name__}; "
                             "convolutional and Swin backbones have no place for prompt tokens here")
        if getattr(backbone, "rope", None) is not None:
            raise ValueError(f"VPT does not support {type(backbone).__name__} with rotary position embeddings")
        if self.tokens is not None:
            raise ValueError("this VPTPrompter is already attached to a backbone; build a new one")
        embed_dim, num_layers = backbone.embed_dim, len(backbone.blocks)
        for name, expected, actual in (("embed_dim", self.expected_embed_dim, embed_dim),
                                       ("num_layers", self.expected_num_layers, num_layers)):
            if expected is not None and expected != actual:
                raise ValueError(f"VPT {name}={expected} does not match the backbone's {name}={actual}")
        patch = backbone.patch_embed.patch_size
        patch_area = patch[0] * patch[1] if isinstance(patch, (tuple, list)) else patch * patch
        bound = math.sqrt(6.0 / float(3 * patch_area + embed_dim))
        depth_count = num_layers if self.depth == "deep" else 1
        device = backbone.pos_embed.device if backbone.pos_embed is not None else None
        self.tokens = nn.Parameter(torch.empty(depth_count, self.num_tokens, embed_dim, device=device)
                                   .uniform_(-bound, bound))
        self._backbone_forward = backbone.forward_features
        backbone.forward_features = _make_forward_features(backbone, self)

    def attached_param_count(self) -> int:
        """Trainable token count after :meth:`attach` (0 before)."""
        return 0 if self.tokens is None else self.tokens.numel()


def _make_forward_features(backbone, prompter: VPTPrompter):
    """``forward_features`` of a timm ViT with ``prompter``'s tokens inserted (shallow) / replaced (deep)."""

    def forward_features(x: torch.Tensor, attn_mask=None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("VPT's forward_features does not take attn_mask / is_causal")
        x = backbone.patch_embed(x)
        x = backbone._pos_embed(x)
        x = backbone.patch_drop(x)
        x = backbone.norm_pre(x)
        prefix, count, batch = backbone.num_prefix_tokens, prompter.num_tokens, x.shape[0]
        deep = prompter.depth == "deep"
        for index, block in enumerate(backbone.blocks):
            if index == 0 or deep:
                tokens = prompter.tokens[index if deep else 0].to(x.dtype).unsqueeze(0).expand(batch, -1, -1)
                rest = x[:, prefix:] if index == 0 else x[:, prefix + count:]
                x = torch.cat([x[:, :prefix], tokens, rest], dim=1)
            x = block(x)
        x = torch.cat([x[:, :prefix], x[:, prefix + count:]], dim=1)  # prompt tokens out: pooling as without VPT
        return backbone.norm(x)

    return forward_features
