"""The images the "Prompt factorisation" figures are shown on: :func:`sample_images` (ImageNet sample
images of the data root, or synthetic ones, with a note saying which) as :class:`ShownImages`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..prompters.registry import as_size
from .display import shown_path


@dataclass
class ShownImages:
    """Images for the figures: ``images [N, 3, H, W]`` in [0, 1], readable ``names``, where they came from
    (``source``: ``"imagenet-samples"`` or ``"synthetic"``) and a sentence saying so (``note``)."""

    images: torch.Tensor
    names: list[str]
    source: str
    note: str

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"


def sample_images(n: int = 4, image_size=64, root=None, seed: int = 0) -> ShownImages:
    """``n`` ImageNet sample images of the data root (:func:`lorsp.data.load_sample_images`: a seeded pick,
    resized to ``image_size`` without crop, in [0, 1]) with readable names (``n01440764_tench`` → ``tench``).

    When the data root has no sample images, ``n`` images of lorsp's synthetic dataset, and a ``note`` that
    says so; an unreadable image file is an error naming it.
    """
    from ..data import data_root, load_sample_images

    size = as_size(image_size)
    folder = data_root(root) / "imagenet-samples"
    loaded = load_sample_images(n=n, image_size=size, root=root, seed=seed, allow_synthetic=True)
    if loaded.synthetic:
        return ShownImages(loaded.images, [f"synthetic {i}" for i in range(len(loaded.names))], "synthetic",
                           f"{n} synthetic images (lorsp's synthetic dataset): the data root has no ImageNet "
                           f"sample images in {shown_path(folder, root)}")
    names = [stem.split("_", 1)[1].replace("_", " ") if "_" in stem else stem for stem in loaded.names]
    return ShownImages(loaded.images, names, "imagenet-samples",
                       f"{len(names)} ImageNet sample images from {shown_path(folder, root)}, resized to {size[0]}×{size[1]} px")
