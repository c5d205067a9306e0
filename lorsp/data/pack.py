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

Reading (:func:`open_packed`, called by :func:`lorsp.data.build_dataset` first): when the data root holds
``manifest.json`` and ``packed/<dataset>/``, that dataset is read from the pack (an
:class:`~lorsp.data.images.ArrayDataset`). ``per_class`` must not exceed what the pack holds (a clear error
otherwise, never a silent smaller set), and ``per_class=None`` (all images) is refused: a pack is a subset.
Every seed sees the same packed images (in its own order); only the pack's ``seed`` chose them.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

__all__ = ["PACK_FORMAT", "MANIFEST_NAME", "PACK_FOLDER", "DEFAULT_MAX_MIB", "PackError", "pack_data",
           "read_manifest", "verify_pack", "load_packed_split", "open_packed", "row_delta", "undo_row_delta",
           "add_pack_arguments", "pack_main"]

PACK_FORMAT = 1
MANIFEST_NAME = "manifest.json"
PACK_FOLDER = "packed"
DEFAULT_MAX_MIB = 40.0
FILTER = "planar-row-delta-mod256"
#: the offline MobileNetV2 of the data root (lorsp.backbones.MOBILENETV2_FILE)
MOBILENETV2_WEIGHTS = "mobilenetv2_100_tflite_in1k.safetensors"
_CACHE: dict = {}


class PackError(ValueError):
    """A pack that is missing, incomplete, corrupt, over its size limit, or asked for more than it holds."""


from ..hashing import file_sha256 as sha256_file  # noqa: E402  (the name the pack's callers use)


def row_delta(images: np.ndarray) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` → planar ``[N, 3, H, W]``, each pixel minus its left neighbour modulo 256."""
    planar = np.ascontiguousarray(np.asarray(images, dtype=np.uint8).transpose(0, 3, 1, 2))
    out = planar.copy()
    out[..., 1:] -= planar[..., :-1]  # uint8 arithmetic wraps modulo 256
    return out


def undo_row_delta(delta: np.ndarray) -> np.ndarray:
    """The inverse of :func:`row_delta`: planar deltas → uint8 ``[N, H, W, 3]`` (exact)."""
    planar = np.cumsum(np.asarray(delta, dtype=np.uint8), axis=-1, dtype=np.uint8)
    return np.ascontiguousarray(planar.transpose(0, 2, 3, 1))


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


def read_manifest(pack) -> dict:
    """The manifest of the pack folder ``pack``; :class:`PackError` naming the file when absent or unreadable."""
    path = Path(pack) / MANIFEST_NAME
    if not path.is_file():
        raise PackError(f"no pack at {Path(pack)}: {path} does not exist (make one with `lorsp data pack`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise PackError(f"{path} is not a readable pack manifest ({error})") from error
    if manifest.get("format") != PACK_FORMAT:
        raise PackError(f"{path}: pack format {manifest.get('format')!r}, expected {PACK_FORMAT}")
    return manifest


def verify_pack(pack, max_mib: float | None = None) -> dict:
    """Check every file of the pack against its manifest (present, sha256) and the total size; return the
    manifest. Raises :class:`PackError` naming the first file that is missing or differs."""
    pack = Path(pack)
    manifest = read_manifest(pack)
    entries = [(f"{name} {split}", s) for name, d in manifest["datasets"].items() for split, s in d["splits"].items()]
    entries += [(f"weights of {name}", w) for name, w in manifest["weights"].items()]
    total = 0
    for what, entry in entries:
        path = pack / entry["file"]
        if not path.is_file():
            raise PackError(f"pack {pack}: {what} file {path} is missing")
        if sha256_file(path) != entry["sha256"]:
            raise PackError(f"pack {pack}: {what} file {path} does not match its sha256 in the manifest (corrupt "
                            f"or replaced; make the pack again)")
        total += path.stat().st_size
    limit = manifest.get("max_bytes") if max_mib is None else int(max_mib * 2**20)
    if limit is not None and total > limit:
        raise PackError(f"pack {pack} holds {total / 2**20:.2f} MiB, over its limit of {limit / 2**20:g} MiB")
    return manifest


def load_packed_split(pack, name: str, split: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(images uint8 [N, H, W, 3], labels int64 [N], dataset entry)`` of one split of a pack (cached per file)."""
    pack = Path(pack)
    manifest = read_manifest(pack)
    entry = manifest["datasets"].get(name)
    split = "test" if split == "val" else split
    if entry is None or split not in entry["splits"]:
        raise PackError(f"pack {pack} holds no {split} split of {name!r} (it holds: "
                        f"{', '.join(manifest['datasets']) or 'nothing'})")
    meta = entry["splits"][split]
    path = pack / meta["file"]
    if not path.is_file():
        raise PackError(f"pack {pack}: {path} is missing")
    key = (str(path.resolve()), path.stat().st_mtime_ns, meta["sha256"])
    if key not in _CACHE:
        with np.load(path) as data:
            images, labels = undo_row_delta(data["images"]), np.asarray(data["labels"], dtype=np.int64)
        if hashlib.sha256(images.tobytes()).hexdigest() != meta["pixels_sha256"]:
            raise PackError(f"pack {pack}: the images of {path} do not match the manifest's pixels_sha256")
        _CACHE.clear()  # keep one split in memory at most: a run reads train, then test, then the next run
        _CACHE[key] = (images, labels)
    images, labels = _CACHE[key]
    return images, labels, entry


def open_packed(request):
    """The dataset of ``request`` (a :class:`lorsp.data.registry.BuildRequest`) from the data root's pack, or
    ``None`` when the data root holds no pack of that dataset."""
    root = Path(request.root)
    if not (root / MANIFEST_NAME).is_file() or not (root / PACK_FOLDER / request.name).is_dir():
        return None
    from .images import ArrayDataset

    images, labels, entry = load_packed_split(root, request.name, request.split)
    split = "train" if request.is_train else "test"
    held = entry["splits"][split]["per_class"]
    if request.per_class is None or request.per_class > held:
        raise PackError(f"the pack at {root} holds {held} {split} images per class of {request.name!r}, but "
                        f"{'all images' if request.per_class is None else f'{request.per_class} per class'} were "
                        f"asked for; make a larger pack (`lorsp data pack`) or ask for at most {held}")
    dataset = ArrayDataset(images, labels, entry["classes"], image_size=request.image_size,
                           per_class=request.per_class, seed=request.seed, name=request.name, split=split,
                           root=root / entry["splits"][split]["file"])
    if entry.get("class_descriptions"):
        dataset.class_descriptions = list(entry["class_descriptions"])
    return dataset


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
        from ..gpu_window import WINDOW_DATASETS
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
