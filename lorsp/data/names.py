"""Readable class names: words where a dataset's classes are WordNet ids (Tiny-ImageNet, ImageNet)."""
from __future__ import annotations

import re

__all__ = ["class_names"]

_WNID = re.compile(r"^n\d{8}$")


def _short(description: str) -> str:
    """``"goldfish, Carassius auratus"`` → ``"goldfish"`` (WordNet lists synonyms, the common one first)."""
    return description.split(",")[0].strip() or description.strip()


def class_names(dataset) -> list[str]:
    """The classes of ``dataset`` as a reader reads them, in label order.

    - Tiny-ImageNet: the words of the archive's ``words.txt`` (``n01443537`` → ``goldfish``), read by the
      dataset into ``class_descriptions``.
    - A class still named by a WordNet id ``nXXXXXXXX`` (ImageNet and its variants, a Tiny-ImageNet without
      words.txt): timm's ImageNet-1k description of that id; an id ImageNet-1k lacks stays as it is.
    - Every other dataset: its own class names (CIFAR's ``airplane``, a folder's names).

    Wrapped datasets (a shifted test set: ``.base``, a torch ``Subset``: ``.dataset``) are unwrapped. A dataset
    without ``classes`` is an error naming its type.
    """
    chain, inner = [], dataset
    while inner is not None and len(chain) < 8:  # the dataset and the ones it wraps
        chain.append(inner)
        inner = getattr(inner, "base", None) or getattr(inner, "dataset", None)
    descriptions = next((d.class_descriptions for d in chain if getattr(d, "class_descriptions", None) is not None),
                        None)
    classes = next((d.classes for d in chain if getattr(d, "classes", None) is not None), None)
    if descriptions is None and classes is None:
        raise TypeError(f"{type(dataset).__name__} has no classes (expected a dataset of lorsp.data.build_dataset)")
    names = [_short(str(name)) for name in (descriptions if descriptions is not None else classes)]
    if any(_WNID.match(name) for name in names):  # ids left: ImageNet-1k's words where it has the class
        from .imagenet import imagenet_class_index, imagenet_descriptions

        index, words = imagenet_class_index(), imagenet_descriptions()
        names = [_short(words[index[name]]) if name in index else name for name in names]
    return names
