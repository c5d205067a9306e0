"""A data subset and the backbone's weights packed into one small folder that is itself a data root.

A GPU machine here is lent for minutes, has no network, and receives at most 64 MiB with the code; the local
CIFAR-10 and Tiny-ImageNet archives plus the weights are over that. ``lorsp data pack`` (:func:`pack_data`)
writes what a plan needs into at most ``max_mib`` (40 MiB by default)::

    <pack>/manifest.json                          format, source, counts, classes, sha256 of every file
    <pack>/packed/<dataset>/<split>.npz           images uint8, labels int64 (split: train, test)
    <pack>/weights/mobilenetv2_100_tflite_in1k.safetensors   copied unchanged

Images are kept at their **native resolution** (CIFAR-10 32×32, Tiny-ImageNet 64×64) as 8-bit RGB; the run
resizes them to its image size as it would the files (the same transform, or the device loader on a GPU).
In the ``.npz`` they are stored channel-planar (``[N, 3, H, W]``) and *row-delta filtered* — each pixel minus its
left neighbour, modulo 256, as PNG's "Sub" filter does — then deflated (``numpy.savez_compressed``), which
stores CIFAR-10's JPEG-decoded pixels in about two thirds and Tiny-ImageNet's in about four fifths of the raw
size. The filter is undone exactly (a cumulative sum modulo 256), so the images round-trip bit for bit; the
manifest holds the sha256 of the decoded pixels as well as of each file.

The subset of each split is what :func:`lorsp.data.build_dataset` selects for ``per_class=n`` and the pack's
``seed`` (0): the first ``n`` images of each class in the seeded order. So a pack of n per class holds the same
images as a run on the full data with ``seed=0`` and ``per_class=n``.

Reading a pack (:func:`open_packed`, called by :func:`lorsp.data.build_dataset` first) lives in
:mod:`lorsp.data.packed`, below the dataset registry; its names are re-exported here. Every seed sees the same
packed images (in its own order); only the pack's ``seed`` chose them.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from .packed import (FILTER, MANIFEST_NAME, PACK_FOLDER, PACK_FORMAT, PackError, load_packed_split, open_packed,
                     read_manifest, row_delta, sha256_file, undo_row_delta, verify_pack)

__all__ = ["PACK_FORMAT", "MANIFEST_NAME", "PACK_FOLDER", "DEFAULT_MAX_MIB", "WINDOW_DATASETS", "PackError",
           "pack_data", "read_manifest", "verify_pack", "load_packed_split", "open_packed", "row_delta",
           "undo_row_delta", "add_pack_arguments", "pack_main"]

DEFAULT_MAX_MIB = 40.0
#: the offline MobileNetV2 of the data root (lorsp.backbones.MOBILENETV2_FILE)
MOBILENETV2_WEIGHTS = "mobilenetv2_100_tflite_in1k.safetensors"
#: images per class of the GPU window's plan (lorsp.gpu_window.WINDOW_DATASETS, which reads them from here), and
#: what ``lorsp data pack`` packs when no ``--dataset`` is given: a pack of these takes 39.2 MiB with the weights
WINDOW_DATASETS = {"cifar10": {"train_per_class": 256, "test_per_class": 100},
                   "tiny-imagenet": {"train_per_class": 8, "test_per_class": 2}}


def _native_pixels(dataset, name: str, split: str) -> np.ndarray:
    """All images of a lorsp dataset as uint8 ``[N, H, W, 3]`` at their native size (one size required)."""
    from .images import load_rgb

    if getattr(dataset, "images", None) is not None:
        images = np.asarray(dataset.images, dtype=np.uint8)
    else:
        paths = getattr(dataset, "paths", None)
        if paths is None:
            raise PackError(f"{name} ({split}) has neither image files nor an image array: only datasets of real "
                            f"images can be packed")
        arrays = [np.asarray(load_rgb(p), dtype=np.uint8) for p in paths]
        shapes = sorted({a.shape for a in arrays})
        if len(shapes) != 1:
            raise PackError(f"{name} ({split}) has images of {len(shapes)} sizes ({shapes[:3]}…); a pack holds one "
                            f"native size per dataset")
        images = np.stack(arrays) if arrays else np.zeros((0, 1, 1, 3), np.uint8)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise PackError(f"{name} ({split}): expected uint8 images [N, H, W, 3], got shape {images.shape}")
    return np.ascontiguousarray(images)


def pack_data(output, datasets: dict, root=None, seed: int = 0, weights=(MOBILENETV2_WEIGHTS,),
              max_mib: float = DEFAULT_MAX_MIB, overwrite: bool = False) -> dict:
    """Write a pack of ``datasets`` (``{name: {"train_per_class": n, "test_per_class": m}}``) and the local
    weights files of the backbones in ``weights`` into the folder ``output``; return its manifest.

    The images come from the data root ``root`` (:func:`lorsp.data.build_dataset`, ``seed``); ``weights`` are
    file names in the data root's ``weights/`` folder, where :func:`lorsp.backbones.create_backbone` finds
    them, copied to the pack's ``weights/``. Raises
    :class:`PackError` when the pack would exceed ``max_mib`` (nothing is left behind) or a weights file is
    missing (a pack never relies on a hub download).
    """
    from .registry import build_dataset
    from .root import IMPORT_HINT, data_root

    source = Path(data_root(root))
    output = Path(output)
    if output.resolve() == source.resolve():
        raise PackError(f"the pack folder {output} is the source data root; pack into a new folder")
    if output.exists() and any(output.iterdir()):
        if not overwrite:
            raise PackError(f"pack folder {output} exists and is not empty (give overwrite=True / --overwrite)")
        shutil.rmtree(output)
    staging = output.with_name(output.name + f".tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    manifest = {"format": PACK_FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "source_root": str(source), "seed": int(seed), "filter": FILTER, "datasets": {}, "weights": {}}
    try:
        for name, counts in datasets.items():
            if ":" in name or "/" in name:
                raise PackError(f"cannot pack dataset {name!r}: give a registered dataset name (cifar10, "
                                f"tiny-imagenet, …), whose packed copy a run then finds under that name")
            entry = manifest["datasets"][name] = {"splits": {}}
            for split, key in (("train", "train_per_class"), ("test", "test_per_class")):
                per_class = counts.get(key)
                if per_class is None:
                    raise PackError(f"{name}: give {key} (a pack is a subset; all images would not fit)")
                data = build_dataset(name, split=split, image_size=32, root=source, per_class=int(per_class),
                                     seed=seed)
                images = _native_pixels(data, name, split)
                labels = np.asarray(data.targets, dtype=np.int64)
                file = staging / PACK_FOLDER / name / f"{split}.npz"
                file.parent.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(file, images=row_delta(images), labels=labels)
                entry["classes"] = list(data.classes)
                if getattr(data, "class_descriptions", None):
                    entry["class_descriptions"] = list(data.class_descriptions)
                entry["image_shape"] = list(images.shape[1:])
                entry["splits"][split] = {
                    "file": file.relative_to(staging).as_posix(), "count": int(len(labels)),
                    "per_class": int(per_class), "class_counts": np.bincount(labels, minlength=len(data.classes)).tolist(),
                    "raw_bytes": int(images.nbytes), "bytes": file.stat().st_size, "sha256": sha256_file(file),
                    "pixels_sha256": hashlib.sha256(images.tobytes()).hexdigest(),
                    "source": str(getattr(data, "root", "") or "")}
        for file_name in weights:
            found = source / "weights" / file_name
            if not found.is_file():
                raise PackError(f"no weights file {found} in the data root; import it with `{IMPORT_HINT}` "
                                f"(a pack never falls back to a hub download)")
            target = staging / "weights" / found.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(found, target)
            manifest["weights"][file_name] = {"file": target.relative_to(staging).as_posix(),
                                             "bytes": target.stat().st_size, "sha256": sha256_file(target),
                                             "source": str(found)}
        total = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
        manifest["total_bytes"] = int(total)  # without the manifest itself (a few KB)
        manifest["max_bytes"] = int(max_mib * 2**20)
        if total > manifest["max_bytes"]:
            parts = ", ".join(f"{p.relative_to(staging)} {p.stat().st_size / 2**20:.2f} MiB"
                              for p in sorted(staging.rglob("*")) if p.is_file())
            raise PackError(f"the pack would take {total / 2**20:.2f} MiB, over its limit of {max_mib:g} MiB "
                            f"({parts}); pack fewer images per class")
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        output.parent.mkdir(parents=True, exist_ok=True)
        if output.exists():
            output.rmdir()
        staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


# ---------------------------------------------------------------------------------------------------------
# lorsp data pack
# ---------------------------------------------------------------------------------------------------------
def _counts(text: str) -> tuple[str, dict]:
    """``cifar10=256/100`` → ``("cifar10", {"train_per_class": 256, "test_per_class": 100})``."""
    name, _, counts = text.partition("=")
    train, _, test = counts.partition("/")
    if not name or not train.isdigit() or not test.isdigit():
        raise ValueError(f"--dataset expects NAME=TRAIN/TEST images per class (e.g. cifar10=256/100), got {text!r}")
    return name, {"train_per_class": int(train), "test_per_class": int(test)}


def add_pack_arguments(parser) -> None:
    parser.add_argument("output", help="the pack folder to write (it becomes a data root: LORSP_DATA=OUTPUT)")
    parser.add_argument("--dataset", action="append", default=None, metavar="NAME=TRAIN/TEST",
                        help="a dataset and its images per class, repeatable (default: the GPU-window plan's, "
                             "lorsp.gpu_window.WINDOW_DATASETS)")
    parser.add_argument("--root", default=None, help="source data root (default: $LORSP_DATA or data/)")
    parser.add_argument("--max-mib", type=float, default=DEFAULT_MAX_MIB, help="size limit (default 40)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing pack folder")


def pack_main(args) -> int:
    if args.dataset:
        datasets = dict(_counts(text) for text in args.dataset)
    else:
        datasets = {name: dict(counts) for name, counts in WINDOW_DATASETS.items()}
    manifest = pack_data(args.output, datasets, root=args.root, max_mib=args.max_mib, overwrite=args.overwrite)
    for name, entry in manifest["datasets"].items():
        for split, s in entry["splits"].items():
            print(f"{name:14s} {split:5s} {s['count']:6d} images ({s['per_class']}/class, "
                  f"{'×'.join(map(str, entry['image_shape']))})  {s['bytes'] / 2**20:6.2f} MiB "
                  f"(raw {s['raw_bytes'] / 2**20:.2f})")
    for name, w in manifest["weights"].items():
        print(f"{'weights':14s} {w['file']}  {w['bytes'] / 2**20:6.2f} MiB")
    print(f"pack {args.output}: {manifest['total_bytes'] / 2**20:.2f} MiB of {args.max_mib:g} MiB")
    return 0
