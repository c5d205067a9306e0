"""Filling the data root from local archives and folders (``lorsp data import``) and describing it
(``lorsp data list``).

:func:`import_data` takes zips, tars (``.tar``, ``.tar.gz``, ``.tgz``), weight files (``.safetensors``,
``.pth``, ``.pt``: copied to ``<root>/weights/``), dataset folders (copied to ``<root>/<folder name>``) and
*bundle* folders (a folder holding archives and/or a ``weights/`` folder, such as the offline data folder:
each archive and weight file in it is imported). Google's ``mobilenet_v2_1.0_224_quant.tflite`` (given, or in a
bundle's ``weights/``) is converted into ``<root>/weights/mobilenetv2_100_tflite_in1k.safetensors`` when the
data root lacks that file (:mod:`lorsp.data.tflite_mobilenetv2`), after the bundle's own weight files are
copied. For each archive or weight file with a ``SHA256SUMS`` file
beside it (or in its parent folder), its SHA-256 is checked against the listed one first; a mismatch raises
:class:`ChecksumError` naming the file. Extraction is safe (members with absolute paths, ``..`` components or
links are refused with an error naming the member) and idempotent: a member whose destination already exists
with the same size is skipped, and every file is written to a temporary name and renamed, so an interrupted
import never leaves a half-written file that looks complete.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from .root import IMPORT_HINT, data_root

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")

__all__ = ["import_data", "describe_data", "ChecksumError", "UnsafeArchiveError", "sha256_of"]


class ChecksumError(ValueError):
    """A file whose SHA-256 differs from the one its SHA256SUMS lists."""


class UnsafeArchiveError(ValueError):
    """An archive member that would be written outside the data root (absolute path, ``..``, link)."""


from ..hashing import file_sha256 as sha256_of  # noqa: E402  (the name the importer's callers use)


def _listed_checksum(path: Path) -> tuple[str | None, Path | None]:
    """The checksum a SHA256SUMS beside ``path`` (or in its parent folder) lists for it."""
    path = path.resolve()
    for folder in (path.parent, path.parent.parent):
        sums = folder / "SHA256SUMS"
        if not sums.is_file():
            continue
        relative = path.relative_to(folder).as_posix()
        for line in sums.read_text(errors="replace").splitlines():
            parts = line.strip().split(None, 1)
            if len(parts) == 2 and parts[1].lstrip("*").strip().lstrip("./") == relative:
                return parts[0].lower(), sums
    return None, None


def _verify(path: Path) -> str:
    expected, sums = _listed_checksum(path)
    if expected is None:
        return "no SHA256SUMS entry"
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumError(f"checksum mismatch for {path}: {sums} lists sha256 {expected}, the file has {actual} "
                            f"(a corrupt or different file; fetch it again)")
    return "sha256 ok"


def _is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _safe_target(root: Path, member: str) -> Path:
    posix = PurePosixPath(member.replace("\\", "/"))
    if posix.is_absolute() or (posix.parts and ":" in posix.parts[0]) or ".." in posix.parts:
        raise UnsafeArchiveError(f"refusing archive member {member!r}: it would be written outside the data "
                                 f"root {root}")
    target = (root / Path(*posix.parts)).resolve() if posix.parts else root
    if target != root and root not in target.parents:
        raise UnsafeArchiveError(f"refusing archive member {member!r}: it resolves outside the data root {root}")
    return target


def _write_atomically(target: Path, source, size_hint: int | None = None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.part{os.getpid()}")
    try:
        with open(temporary, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        os.replace(temporary, target)
    finally:
        if temporary.exists():
            temporary.unlink()


def _progress(iterable, total, desc):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="file", disable=None, leave=False)


def _extract_zip(path: Path, root: Path) -> tuple[int, int]:
    written = skipped = 0
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        for info in members:  # validate everything before writing anything
            _safe_target(root, info.filename)
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise UnsafeArchiveError(f"refusing archive member {info.filename!r} of {path}: it is a symbolic link")
        for info in _progress(members, len(members), path.name):
            target = _safe_target(root, info.filename)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if target.is_file() and target.stat().st_size == info.file_size:
                skipped += 1
                continue
            with archive.open(info) as source:
                _write_atomically(target, source)
            written += 1
    return written, skipped


def _extract_tar(path: Path, root: Path) -> tuple[int, int]:
    written = skipped = 0
    with tarfile.open(path) as archive:
        members = archive.getmembers()
        for info in members:
            _safe_target(root, info.name)
            if info.issym() or info.islnk() or info.isdev():
                raise UnsafeArchiveError(f"refusing archive member {info.name!r} of {path}: links and devices "
                                         f"are not extracted")
        for info in _progress(members, len(members), path.name):
            target = _safe_target(root, info.name)
            if info.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if not info.isfile():
                continue
            if target.is_file() and target.stat().st_size == info.size:
                skipped += 1
                continue
            source = archive.extractfile(info)
            with source:
                _write_atomically(target, source)
            written += 1
    return written, skipped


def _copy_file(source: Path, target: Path) -> bool:
    if target.is_file() and target.stat().st_size == source.stat().st_size:
        return False
    with open(source, "rb") as handle:
        _write_atomically(target, handle)
    return True


def _copy_tree(source: Path, target: Path) -> tuple[int, int]:
    written = skipped = 0
    files = [p for p in source.rglob("*") if p.is_file()]
    for path in _progress(files, len(files), source.name):
        if _copy_file(path, target / path.relative_to(source)):
            written += 1
        else:
            skipped += 1
    return written, skipped


def _is_mobilenetv2_tflite(path: Path) -> bool:
    from .tflite_mobilenetv2 import TFLITE_NAME

    return path.is_file() and path.name == TFLITE_NAME


def _convert_tflite(path: Path, root: Path) -> list[dict]:
    """The MobileNetV2 TFLite file converted into the data root's safetensors, unless that is already there."""
    from .tflite_mobilenetv2 import SAFETENSORS_NAME, convert_tflite_mobilenetv2

    check = _verify(path)
    target = root / "weights" / SAFETENSORS_NAME
    present = target.is_file()
    if not present:
        print(f"converting {path} into {target} (dequantised, batch norm folded, background logit dropped)")
        convert_tflite_mobilenetv2(path, target)
    return [dict(source=str(path), kind="weights converted from TFLite", checksum=check, destination=str(target),
                 written=int(not present), already_present=int(present))]


def _import_one(path: Path, root: Path) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"cannot import {path}: no such file or folder")
    if path.is_file() and _is_archive(path):
        check = _verify(path)
        written, skipped = (_extract_zip if path.name.lower().endswith(".zip") else _extract_tar)(path, root)
        return [dict(source=str(path), kind="archive", checksum=check, destination=str(root), written=written,
                     already_present=skipped)]
    if _is_mobilenetv2_tflite(path):
        return _convert_tflite(path, root)
    if path.is_file() and path.name.lower().endswith(WEIGHT_SUFFIXES):
        check = _verify(path)
        target = root / "weights" / path.name
        written = _copy_file(path, target)
        return [dict(source=str(path), kind="weights", checksum=check, destination=str(target),
                     written=int(written), already_present=int(not written))]
    if path.is_dir():
        archives = sorted(p for p in path.iterdir() if p.is_file() and _is_archive(p))
        weights = sorted(p for p in (path / "weights").glob("*") if p.is_file()
                         and p.name.lower().endswith(WEIGHT_SUFFIXES)) if (path / "weights").is_dir() else []
        tflite = [p for p in sorted((path / "weights").glob("*.tflite")) if _is_mobilenetv2_tflite(p)]
        if archives or weights or tflite:  # a bundle folder; converting last lets a bundled safetensors win
            results = []
            for item in archives + weights + tflite:
                results.extend(_import_one(item, root))
            return results
        target = root / path.name
        written, skipped = _copy_tree(path, target)
        return [dict(source=str(path), kind="folder", checksum="not checked (folder)", destination=str(target),
                     written=written, already_present=skipped)]
    raise ValueError(f"cannot import {path}: expected a zip/tar archive ({', '.join(ARCHIVE_SUFFIXES)}), a weights "
                     f"file ({', '.join(WEIGHT_SUFFIXES)}), mobilenet_v2_1.0_224_quant.tflite or a folder")


def import_data(paths, root=None) -> list[dict]:
    """Import ``paths`` (one path or a list) into the data root; returns one summary dict per imported item
    (source, kind, checksum, destination, written, already_present). See the module docstring."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p).expanduser() for p in paths]
    if not paths:
        raise ValueError(f"nothing to import: give archives, weight files or folders (`{IMPORT_HINT}`)")
    target = data_root(root)
    target.mkdir(parents=True, exist_ok=True)
    target = target.resolve()
    results = []
    for path in paths:
        results.extend(_import_one(path, target))
    return results


def describe_data(root=None, as_frame: bool = False):
    """What ``lorsp`` can use from the data root: one row per registered dataset (``available`` locally with
    ``classes``, ``train`` and ``test`` image counts, or ``downloadable`` by torchvision, or neither, with the
    reason in ``note``) and one row per weights file in ``<root>/weights``. A list of dicts, or a pandas
    DataFrame with ``as_frame=True``."""
    from .registry import build_dataset, registered_datasets

    base = data_root(root)
    rows = []
    for name, spec in sorted(registered_datasets().items()):
        if name == "synthetic":
            rows.append(dict(name=name, kind="dataset", available=True, classes=spec.num_classes, train=None,
                             test=None, downloadable=False, location="(procedural, no files)",
                             note=spec.description))
            continue
        row = dict(name=name, kind="dataset", available=False, classes=spec.num_classes, train=None, test=None,
                   downloadable=spec.downloadable, location=None, note=spec.description)
        problems = []
        for split in spec.splits:
            try:
                dataset = build_dataset(name, split=split, root=base, image_size=32)
            except FileNotFoundError as error:
                problems.append(str(error) if not str(error).startswith(f"dataset {name!r} not found") else
                                "not in the data root")
                continue
            except (ValueError, OSError, RuntimeError) as error:
                problems.append(f"{split}: {error}")
                continue
            row.update({split: len(dataset), "classes": dataset.num_classes, "available": True})
            if row["location"] is None and dataset.root is not None:
                where = dataset.root.parent if dataset.root.name in ("train", "test", "val") else dataset.root
                row["location"] = str(where)
        if problems:
            row["note"] = "; ".join(dict.fromkeys(problems)) + (
                " — torchvision can download it (--download)" if spec.downloadable else
                f" — import it with `{IMPORT_HINT}`")
        rows.append(row)
    weights = base / "weights"
    for path in sorted(weights.glob("*")) if weights.is_dir() else []:
        if path.is_file() and path.name.lower().endswith(WEIGHT_SUFFIXES):
            rows.append(dict(name=path.name, kind="weights", available=True, classes=None, train=None, test=None,
                             downloadable=False, location=str(path),
                             note=f"{path.stat().st_size / 2**20:.1f} MiB"))
    rows.extend(_package_weight_rows())
    if as_frame:
        import pandas as pd

        return pd.DataFrame(rows)
    return rows


def _package_weight_rows() -> list[dict]:
    """One row per registered backbone whose weights ship in a Python package (``efficientnet_lite0``): where
    its file is and whether its sha256 is the pinned one, or why it cannot be used."""
    from ..backbones import BACKBONES, PackageWeightsError

    rows = []
    for spec in BACKBONES.values():
        if spec.package is None:
            continue
        row = dict(name=f"{spec.name} ({spec.package.source})", kind="weights", available=False, classes=None,
                   train=None, test=None, downloadable=False, location=None, note="")
        try:
            row["location"] = str(spec.package.verified())
            row.update(available=True, note=f"installed with lorsp; sha256 {spec.package.sha256[:12]}… as pinned")
        except PackageWeightsError as error:
            row["note"] = str(error)
        rows.append(row)
    return rows
