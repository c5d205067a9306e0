"""A validation split carved from the training images (``TrainConfig.val_per_class``, issue 25).

A hyperparameter search (e.g. of the prompt's learning rate) must never look at the test set. With
``val_per_class = v`` the trainer draws ``train_per_class + v`` training images per class (seeded, as
:func:`lorsp.data.images.select_per_class` draws any subset), then moves ``v`` of each class, chosen by a second
seeded permutation, to the validation split: the two splits are disjoint by construction, both come from the
training files only, and the same seed gives the same two splits. The trainer evaluates on it beside the test
set and writes ``val_accuracy`` into every evaluated epoch's row and ``final_val_accuracy`` into the record.

Note: with ``val_per_class`` set, the training subset is the remaining ``train_per_class`` of the
``train_per_class + v`` drawn, so it is not the same subset as a run without a validation split.
"""
from __future__ import annotations

import copy
import hashlib
from typing import Sequence

import numpy as np
import torch

__all__ = ["VAL_SEED_STREAM", "train_request", "carve_validation", "subset_dataset"]

#: mixed with the run's seed for the permutation that picks the validation images (a stream of its own, so that
#: the validation draw does not repeat the permutation that drew the training subset)
VAL_SEED_STREAM = 2_025_0025


def train_request(train_per_class: int | None, val_per_class: int | None) -> int | None:
    """How many training images per class to draw before the split: ``train + val`` (all when ``train`` is None)."""
    if train_per_class is None or not val_per_class:
        return train_per_class
    return int(train_per_class) + int(val_per_class)


def carve_validation(dataset, val_per_class: int | None, seed: int, name: str = "train"):
    """``(train, val)``: ``val_per_class`` images of every class of ``dataset`` (a seeded draw) and the rest.

    ``val`` is None when ``val_per_class`` is None or 0. A class with no more than ``val_per_class`` images is an
    error naming it (its training split would be empty)."""
    if not val_per_class:
        return dataset, None
    targets = np.asarray(list(dataset.targets), dtype=np.int64)
    rng = np.random.default_rng([int(seed), VAL_SEED_STREAM])
    val_idx: list[int] = []
    for label in range(int(getattr(dataset, "num_classes", 0) or (targets.max() + 1 if targets.size else 0))):
        members = np.flatnonzero(targets == label)
        if len(members) <= val_per_class:
            classes = getattr(dataset, "classes", None)
            shown = classes[label] if classes and label < len(classes) else label
            raise ValueError(f"TrainConfig.val_per_class={val_per_class}: class {shown!r} of the {name} split of "
                             f"{getattr(dataset, 'name', '?')!r} has only {len(members)} images drawn; expected more "
                             "than val_per_class (lower val_per_class or train_per_class)")
        val_idx.extend(int(i) for i in members[rng.permutation(len(members))[:val_per_class]])
    val_set = set(val_idx)
    train_idx = [i for i in range(len(targets)) if i not in val_set]
    return subset_dataset(dataset, train_idx), subset_dataset(dataset, sorted(val_idx), split="val")


def subset_dataset(dataset, indices: Sequence[int], split: str | None = None):
    """``dataset`` restricted to ``indices`` (in that order), keeping its type and attributes.

    The image-file and image-array datasets are copied with their ``paths``/``images`` and ``targets`` sliced (so
    provenance, the feature cache and the decode-once loader see exactly these images); any other dataset is
    wrapped in :class:`IndexedSubset`."""
    indices = [int(i) for i in indices]
    paths, images = getattr(dataset, "paths", None), getattr(dataset, "images", None)
    if isinstance(paths, list) or isinstance(images, np.ndarray):
        out = copy.copy(dataset)
        if isinstance(paths, list):
            out.paths = [paths[i] for i in indices]
        if isinstance(images, np.ndarray):
            out.images = np.ascontiguousarray(images[indices])
        out.targets = [dataset.targets[i] for i in indices]
        if split is not None:
            out.split = split
        return out
    return IndexedSubset(dataset, indices, split)


class IndexedSubset(torch.utils.data.Dataset):
    """A dataset that makes its images from their index (e.g. ``synthetic``), restricted to ``indices``."""

    def __init__(self, base, indices: Sequence[int], split: str | None = None):
        self.base, self.indices = base, list(indices)
        self.targets = [base.targets[i] for i in self.indices]
        self.split = split or getattr(base, "split", "train")
        for attribute in ("name", "classes", "image_size", "root", "class_subset", "skipped"):
            setattr(self, attribute, getattr(base, attribute, None))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def content_fingerprint(self) -> str | None:
        base = getattr(self.base, "content_fingerprint", lambda: None)()
        if base is None:
            return None
        return hashlib.sha256(f"{base}|{self.split}|{self.indices}".encode()).hexdigest()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.base[self.indices[index]]
