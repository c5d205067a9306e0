"""The prompter interface and its registry (timm-style: one name, one class).

Every prompter is an ``nn.Module`` working on images in [0, 1] pixel space, **before** normalisation
(Eq. 10): ``forward(x)`` returns the prompted image x̃ and ``prompt(x)`` the prompt δ(x) alone.
Book chapter: "Prompt factorisation" and "Parameter counting".
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = [
    "Prompter",
    "register_prompter",
    "build_prompter",
    "list_prompters",
    "get_prompter_class",
    "prompt_param_count",
    "as_size",
    "require_positive_int",
]

_REGISTRY: dict[str, type["Prompter"]] = {}


def as_size(image_size) -> tuple[int, int]:
    """``224`` → ``(224, 224)``; ``(H, W)`` stays; anything else is a ValueError naming the value."""
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        size = tuple(image_size)
    else:
        raise ValueError(f"image_size must be an int or a (height, width) pair, got {image_size!r}")
    for side in size:
        if not isinstance(side, int) or isinstance(side, bool) or side < 1:
            raise ValueError(f"image_size must hold positive ints, got {image_size!r}")
    return size


def require_positive_int(name: str, value) -> int:
    """Return ``value`` as an int >= 1, else a ValueError naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


class Prompter(nn.Module):
    """Base class: an input-level visual prompt for images ``[N, channels, H, W]`` in [0, 1].

    Subclasses implement :meth:`prompt` (δ(x), the additive prompt of Eq. 10) or override
    :meth:`forward` when the prompt is not additive (padding prompts resize the image first), and the
    closed-form :meth:`param_count` (Eqs. 13–15 and the baselines' counts).
    """

    name: str = "?"

    def __init__(self, image_size=224, channels: int = 3):
        super().__init__()
        self.image_size = as_size(image_size)
        self.channels = require_positive_int("channels", channels)

    # -- interface ---------------------------------------------------------------------------
    def prompt(self, x: torch.Tensor) -> torch.Tensor:
        """δ(x), the same shape as ``x``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x̃ = x + δ(x) (Eq. 10; no clamp [reading])."""
        self.check_input(x)
        return x + self.prompt(x)

    @classmethod
    def param_count(cls, image_size=224, channels: int = 3, **kwargs) -> int:
        """Closed-form number of trainable prompt parameters."""
        raise NotImplementedError

    def num_prompt_params(self) -> int:
        """Number of trainable prompt parameters, counted on the module."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @torch.no_grad()
    def stats(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image statistics of the prompt: ``sparsity`` (share of zero entries of δ), ``[N]``."""
        delta = self.prompt(x)
        return {"sparsity": prompt_sparsity(delta)}

    # -- checks ------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError naming both shapes if ``x`` is not ``[N, channels, H, W]`` of the built size."""
        expected = (self.channels, *self.image_size)
        if not torch.is_tensor(x) or x.dim() != 4 or tuple(x.shape[1:]) != expected:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(
                f"{type(self).__name__} ({self.name!r}) was built for images [N, {expected[0]}, "
                f"{expected[1]}, {expected[2]}] (channels, height, width), got {got}"
            )


def prompt_sparsity(delta: torch.Tensor) -> torch.Tensor:
    """Share of exactly-zero entries of δ per image, in [0, 1], ``[N]``."""
    return (delta == 0).flatten(1).float().mean(1)


def register_prompter(name: str) -> Callable[[type[Prompter]], type[Prompter]]:
    """Class decorator: make ``build_prompter(name, ...)`` build this class."""

    def decorate(cls: type[Prompter]) -> type[Prompter]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"prompter name {name!r} is already registered by {_REGISTRY[name].__name__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def list_prompters() -> list[str]:
    """Names accepted by :func:`build_prompter`."""
    return sorted(_REGISTRY)


def get_prompter_class(name: str) -> type[Prompter]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown prompter {name!r}; expected one of {list_prompters()}") from None


def build_prompter(name: str, image_size=224, channels: int = 3, **kwargs) -> Prompter:
    """Build a prompter by name, e.g. ``build_prompter("lorsp", groups=4, rank=4, tau=4.0)``.

    Keyword arguments a prompter does not take raise a TypeError naming them.
    """
    cls = get_prompter_class(name)
    return cls(image_size=image_size, channels=channels, **kwargs)


def prompt_param_count(method: str, image_size=224, channels: int = 3, **kwargs) -> int:
    """Closed-form trainable prompt parameters of ``method`` (Eqs. 13–15 for LoRSP).

    Takes the same keyword arguments as :func:`build_prompter`; those that do not change the count
    (tau, v_threshold, ...) are accepted and ignored.
    """
    return get_prompter_class(method).param_count(image_size=image_size, channels=channels, **kwargs)
