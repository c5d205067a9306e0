"""EVP's normalised-gradient update rule as a torch optimizer (``docs/method.md``, "Ablations and baselines").

EVP (Wu et al., "Unleashing the Power of Visual Prompting At the Pixel Level") borrows from adversarial
attacks: the prompt's gradient is divided by its L2 norm before the (momentum) SGD step, so the step size is
set by the learning rate alone. :class:`EVPOptimizer` does that for param groups with ``normalize=True``
(the prompt) and plain SGD for groups with ``normalize=False`` (the head); :func:`build_evp_optimizer`
splits a :class:`lorsp.model.PromptedModel`'s trainable parameters that way.

[reading] The norm is taken jointly over all tensors of a normalised group (the prompt as one vector);
weight decay is added after normalisation (it is 0 in EVP).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

__all__ = ["EVPOptimizer", "build_evp_optimizer"]


class EVPOptimizer(torch.optim.Optimizer):
    """SGD with momentum where each ``normalize=True`` group's gradient g is replaced by g / (‖g‖₂ + eps).

    ``params`` is an iterable of tensors (all normalised) or of param-group dicts; a group may set
    ``normalize`` (default ``True``), ``lr``, ``momentum``, ``weight_decay``.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 normalize: bool = True, eps: float = 1e-12):
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, normalize=normalize, eps=eps)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            scale = 1.0
            if group["normalize"]:
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
                scale = 1.0 / (norm + group["eps"])
            for p in params:
                d_p = p.grad * scale
                if group["weight_decay"]:
                    d_p = d_p.add(p, alpha=group["weight_decay"])
                if group["momentum"]:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = d_p.clone()
                    else:
                        state["momentum_buffer"].mul_(group["momentum"]).add_(d_p)
                    d_p = state["momentum_buffer"]
                p.add_(d_p, alpha=-group["lr"])
        return loss


def build_evp_optimizer(params: Iterable[nn.Parameter], lr: float, momentum: float = 0.9,
                        weight_decay: float = 0.0, model: nn.Module | None = None,
                        prompt_lr: float | None = None) -> EVPOptimizer:
    """Two param groups: the prompt (``model.prompter``'s parameters, normalised gradient) and the rest
    (the head, plain SGD). Without ``model`` every parameter is treated as prompt. ``prompt_lr`` (default:
    ``lr``) is the prompt group's learning rate."""
    params = [p for p in params]
    prompter = getattr(model, "prompter", None) if model is not None else None
    prompt_ids = {id(p) for p in prompter.parameters()} if prompter is not None else {id(p) for p in params}
    prompt = [p for p in params if id(p) in prompt_ids]
    rest = [p for p in params if id(p) not in prompt_ids]
    prompt_group = {"params": prompt, "normalize": True, "name": "prompt"}
    if prompt_lr is not None:
        prompt_group["lr"] = prompt_lr
    groups = [g for g in (prompt_group,
                          {"params": rest, "normalize": False, "name": "head"}) if g["params"]]
    if not groups:
        raise ValueError("build_evp_optimizer got no parameters to train")
    return EVPOptimizer(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
