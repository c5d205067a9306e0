"""Reading a data pack (the folder that ``lorsp data pack``, :mod:`lorsp.data.pack`, writes): its format, its
manifest, the check of every file against it, and the datasets it holds.

A pack is itself a data root::

    <pack>/manifest.json                          format, source, counts, classes, sha256 of every file
    <pack>/packed/<dataset>/<split>.npz           images uint8, labels int64 (split: train, test)
    <pack>/weights/<backbone weights file>        copied unchanged

The ``.npz`` images are channel-planar (``[N, 3, H, W]``) and *row-delta filtered* (:func:`row_delta`, PNG's
"Sub" filter modulo 256); :func:`undo_row_delta` restores them bit for bit, checked against the manifest's
sha256 of the decoded pixels.

Reading (:func:`open_packed`, called by :func:`lorsp.data.build_dataset` first): when the data root holds
``manifest.json`` and ``packed/<dataset>/``, that dataset is read from the pack (an
:class:`~lorsp.data.images.ArrayDataset`). ``per_class`` must not exceed what the pack holds (a clear error
otherwise, never a silent smaller set), and ``per_class=None`` (all images) is refused: a pack is a subset.

This module sits below :mod:`lorsp.data.registry` (which reads packs) and imports nothing of it; writing a pack
(:mod:`lorsp.data.pack`) builds datasets through the registry, so it sits above.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..hashing import file_sha256 as sha256_file

__all__ = ["PACK_FORMAT", "MANIFEST_NAME", "PACK_FOLDER", "FILTER", "PackError", "read_manifest", "verify_pack",
           "load_packed_split", "open_packed", "row_delta", "undo_row_delta", "sha256_file"]

PACK_FORMAT = 1
MANIFEST_NAME = "manifest.json"
PACK_FOLDER = "packed"
FILTER = "planar-row-delta-mod256"
_CACHE: dict = {}


class PackError(ValueError):
    """A pack that is missing, incomplete, corrupt, over its size limit, or asked for more than it holds."""


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
