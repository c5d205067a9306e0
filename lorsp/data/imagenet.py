"""ImageNet-1k class order, the ImageNet-family folder datasets and the 1,000 ImageNet sample images.

The class order is timm's (``timm.data.ImageNetInfo``: the 1,000 WordNet ids sorted, the order of every
ImageNet-1k classifier in timm), so label ``k`` is logit ``k`` of a pretrained backbone.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .images import ImageFileDataset, as_image_size, is_image_file, list_images, load_rgb, make_transform
from .root import IMPORT_HINT, data_root

__all__ = ["imagenet_wnids", "imagenet_descriptions", "imagenet_class_index", "imagenet_folder_samples",
           "SampleImages", "load_sample_images", "SAMPLES_FOLDER"]

SAMPLES_FOLDER = "imagenet-samples"
_WNID = re.compile(r"^n\d{8}$")


@functools.lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k WordNet ids in logit order."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo("imagenet-1k").label_names())


@functools.lru_cache(maxsize=1)
def imagenet_descriptions() -> tuple[str, ...]:
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo("imagenet-1k").label_descriptions())


@functools.lru_cache(maxsize=1)
def imagenet_class_index() -> dict[str, int]:
    return {wnid: i for i, wnid in enumerate(imagenet_wnids())}


def imagenet_folder_samples(folder: Path, name: str) -> tuple[list[tuple[Path, int]], list[str]]:
    """``(path, ImageNet index)`` of every image under ``folder/<class>/``, where the class folders are WordNet
    ids or (ImageNet-V2's format) the integers 0–999; returns the samples and the class folders' wnids."""
    index = imagenet_class_index()
    wnids = imagenet_wnids()
    folders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        loose = [p for p in folder.iterdir() if is_image_file(p)]
        hint = (f" It holds {len(loose)} images directly: arrange them in one folder per class (WordNet id)."
                if loose else "")
        raise FileNotFoundError(f"{name}: {folder} has no class folders (expected <wnid>/ or 0–999/ "
                                f"folders of images).{hint}")
    samples, present = [], []
    for class_folder in folders:
        key = class_folder.name
        if key.isdigit() and 0 <= int(key) < len(wnids):
            label = int(key)
        elif key in index:
            label = index[key]
        else:
            raise ValueError(f"{name}: class folder {class_folder} is neither an ImageNet-1k WordNet id "
                             f"(like n01440764) nor a class index 0–999")
        files = list_images(class_folder)
        if not files:
            raise FileNotFoundError(f"{name}: class folder {class_folder} is empty (no image files)")
        present.append(wnids[label])
        samples.extend((path, label) for path in files)
    return samples, present


class SampleImages(NamedTuple):
    """``images`` [n, 3, S, S] in [0, 1]; ``names`` (file stems, e.g. ``n01440764_tench``); ``labels``
    (ImageNet-1k indices; -1 for synthetic images); ``synthetic`` (True when no sample files were found and
    synthetic stand-ins were returned because ``allow_synthetic=True``)."""
    images: torch.Tensor
    names: list
    labels: torch.Tensor
    synthetic: bool


def load_sample_images(n: int = 8, image_size=224, root=None, seed: int = 0,
                       allow_synthetic: bool = False) -> SampleImages:
    """``n`` of the 1,000 ImageNet sample images (``<data root>/imagenet-samples/<wnid>_<name>.JPEG``), a
    seeded pick (``numpy.random.default_rng(seed)``, in file-name order), resized to ``image_size`` (no crop).

    When the folder is missing or empty: ``FileNotFoundError`` naming the folder and the import command, or
    with ``allow_synthetic=True`` ``n`` images of the ``synthetic`` dataset and ``synthetic=True``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    size = as_image_size(image_size)
    folder = data_root(root) / SAMPLES_FOLDER
    files = [p for p in sorted(folder.iterdir()) if is_image_file(p)] if folder.is_dir() else []
    if not files:
        if not allow_synthetic:
            raise FileNotFoundError(f"no ImageNet sample images in {folder}: import them with "
                                    f"`{IMPORT_HINT}` (e.g. imagenet-samples-256.zip)")
        from .synthetic import SyntheticDataset

        data = SyntheticDataset("test", size, num_classes=max(2, min(n, 10)), per_class=n)
        picks = [(i % data.num_classes) * n + i // data.num_classes for i in range(n)]
        images = torch.stack([data[i][0] for i in picks])
        return SampleImages(images, [f"synthetic_{data.classes[data.targets[i]]}_{i}" for i in picks],
                            torch.full((n,), -1, dtype=torch.long), True)
    if n > len(files):
        raise ValueError(f"asked for {n} sample images but {folder} holds {len(files)}")
    pick = sorted(np.random.default_rng(seed).choice(len(files), size=n, replace=False).tolist())
    transform = make_transform(size)
    index = imagenet_class_index()
    images, names, labels = [], [], []
    for i in pick:
        path = files[i]
        images.append(transform(load_rgb(path)))
        names.append(path.stem)
        labels.append(index.get(path.stem.split("_")[0], -1))
    return SampleImages(torch.stack(images), names, torch.tensor(labels, dtype=torch.long), False)


def imagenet_samples_dataset(root=None, image_size=224, bad_image_policy="error") -> ImageFileDataset:
    """The sample images as a dataset over the 1,000 ImageNet classes (one image each)."""
    folder = data_root(root) / SAMPLES_FOLDER
    if not folder.is_dir():
        raise FileNotFoundError(f"no ImageNet sample images in {folder}: import them with `{IMPORT_HINT}`")
    index = imagenet_class_index()
    samples = [(p, index[p.stem.split("_")[0]]) for p in list_images(folder) if p.stem.split("_")[0] in index]
    return ImageFileDataset(samples, list(imagenet_wnids()), image_size=image_size,
                            bad_image_policy=bad_image_policy, name="imagenet-samples", split="test", root=folder)
