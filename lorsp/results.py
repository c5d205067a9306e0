"""Run records: one JSON file per training run, and a pandas view over many.

A record (built by :func:`lorsp.train.train`) holds the full config, library versions, the git commit,
the device, timings, the per-epoch metrics (``metrics``, a list of rows), ``final_accuracy`` and
``best_accuracy`` (fractions in [0, 1] at the top level; the paper reports the final epoch, the best one
may stand beside it, never instead),
the prompt and head parameter counts, the mean firing rate and prompt sparsity of the final epoch, where
the backbone weights came from (``weights_source``; ``random_weights`` is true when they are random), the
data (dataset, number of train and test images, skipped images), ``status`` ("completed" or "failed")
and the reason of a failure. A completed run's record names its prompt file (``prompt_weights``: the trained
prompter and head, safetensors) and holds that file's sha256 (``prompt_sha256``).

:func:`write_record` writes atomically under a unique name, so several runs can write to one folder at
once without losing any record; :func:`load` reads a file or a folder into a DataFrame. Reading is strict: a
record file that does not parse, or whose prompt file beside it is missing or damaged (sha256 mismatch,
truncated safetensors), is a ValueError naming the file (:func:`read_record`, :func:`check_prompt_file`),
never a record silently skipped.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

from .checkpoint import atomic_write_bytes

__all__ = ["RECORD_SCHEMA", "RECORD_NAME", "PROMPT_NAME", "PROMPT_SHA256_KEY", "TRAINING_CODE", "write_record",
           "read_record", "parse_record_file", "check_prompt_file", "checked_prompt_sha256", "load", "versions", "git_commit", "record_filename",
           "to_jsonable", "file_sha256", "training_code_sha256"]

#: ``lorsp.run/2``: the record holds ``prompt_sha256`` from its run and ``versions.lorsp_code``
#: (:func:`training_code_sha256`), and its evaluation is repeatable for every method (random sparsifiers draw
#: evaluation masks per image from the run's seed); ``lorsp.run/1`` records (before) hold none of these, at most a
#: stamped ``prompt_sha256``
RECORD_SCHEMA = "lorsp.run/2"
#: the package's files whose content decides what a run trains and evaluates (:func:`training_code_sha256`)
TRAINING_CODE = ("train.py", "engine", "model.py", "backbones", "lif.py", "optim.py", "checkpoint.py",
                 "distributed.py", "data", "prompters")
#: the record of a run folder (engine run directory, or ``results/<scale>/<run key>/``), beside its prompt file
RECORD_NAME = "record.json"
#: the trained prompter and head of a run folder (:func:`lorsp.train.save_prompt_weights`)
PROMPT_NAME = "prompt.safetensors"
#: the record's key holding the sha256 (hex) of its prompt file
PROMPT_SHA256_KEY = "prompt_sha256"


def versions() -> dict[str, str | None]:
    """Versions of lorsp, torch, torchvision, timm and python, and ``lorsp_code``: the sha256 of the training
    code (:func:`training_code_sha256`), so that records of different commits can be told to train alike."""
    import torch
    out: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        from . import __version__ as lorsp_version
    except ImportError:  # pragma: no cover - circular import during package init
        lorsp_version = None
    out["lorsp"] = lorsp_version
    out["lorsp_code"] = training_code_sha256()
    for name in ("torchvision", "timm"):
        out[name] = _installed_version(name)
    return out


def _installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution`` as its package metadata gives it (``0.29.1``, without the build's
    local ``+cu130`` suffix that ``torchvision.__version__`` carries), or None when it is not installed. Read from
    the metadata, not by importing: importing ``torchvision.models`` imports torch's compiler, whose import logs
    "No CUDA runtime is found" into the output of the notebook cell that first trains."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def training_code_sha256() -> str:
    """The sha256 over the ``*.py`` files of :data:`TRAINING_CODE` (relative path and content, in path order): two
    commits with the same digest train and evaluate alike, whatever else (book, experiments' tables) differs."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    files = []
    for name in TRAINING_CODE:
        path = package / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    for path in files:
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def git_commit(path=None) -> str | None:
    """The commit of the git checkout that holds ``path`` (default: this package), or None outside one;
    ``-dirty`` is appended when tracked files differ from it, except under ``results/``: run records are the
    outputs of the code, and a runner that writes them into the checkout does not change what it runs."""
    folder = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                                timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    if result.returncode != 0 or not re.fullmatch(r"[0-9a-f]{40}", commit):
        return None
    try:
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                                ":(top,exclude)results"], cwd=folder, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        dirty = ""
    return commit + ("-dirty" if dirty else "")


def to_jsonable(value: Any) -> Any:
    """Tensors, numpy values, paths, tuples and dataclasses → plain JSON values; non-finite floats → None."""
    import dataclasses
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # tensors, numpy arrays and scalars
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(text)).strip("-")[:40] or "x"


def record_filename(record: dict[str, Any]) -> str:
    """A unique file name: ``<backbone>_<dataset>_<method>_s<seed>_<UTC time>_<random>.json``."""
    config = record.get("config", {}) or {}
    parts = [_slug(config.get(key, "?")) for key in ("backbone", "dataset", "method")]
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return f"{'_'.join(parts)}_s{config.get('seed', 0)}_{stamp}_{uuid.uuid4().hex[:10]}.json"


def write_record(record: dict[str, Any], folder, name: str | None = None) -> Path:
    """Write ``record`` as JSON into ``folder`` atomically and return the file's path.

    Without ``name`` the file gets a unique name (:func:`record_filename`), so two runs writing into the
    same folder at the same time both keep their record. With ``name`` that file is replaced atomically.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    payload = dict(to_jsonable(record))
    payload.setdefault("schema", RECORD_SCHEMA)
    text = json.dumps(payload, indent=2, sort_keys=False, allow_nan=False)
    path = folder / (name or record_filename(payload))
    return atomic_write_bytes(path, text.encode("utf-8"))


from .hashing import file_sha256  # noqa: E402  (re-exported: records name their prompt file by it)


#: (path, size, mtime) of prompt files already checked, so that a chapter reading a record many times hashes once
_CHECKED_PROMPTS: dict[tuple[str, int, int], str] = {}


def checked_prompt_sha256(path: Path) -> str:
    """The sha256 of a prompt file that loads as safetensors; a ValueError names it when it does not."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _CHECKED_PROMPTS:
        from safetensors.torch import load
        data = path.read_bytes()
        try:
            load(data)
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error type for every damage
            raise ValueError(f"{path} is not a readable safetensors file (the prompt file is damaged or "
                             f"truncated: {error}); restore it from git or regenerate its run") from error
        _CHECKED_PROMPTS[key] = hashlib.sha256(data).hexdigest()
    return _CHECKED_PROMPTS[key]


def check_prompt_file(record: dict[str, Any], record_path) -> Path | None:
    """Check the prompt file beside a run folder's ``record.json`` and return its path (None when there is none
    to check): a record holding ``prompt_sha256`` needs ``prompt.safetensors`` beside it with that digest; any
    prompt file there must load as safetensors (a truncated one is refused). Records with other names (the engine's
    ``results_dir`` copies, unique names) have no prompt beside them and are not checked. Raises a ValueError
    naming the file and what is wrong."""
    record_path = Path(record_path)
    if record_path.name != RECORD_NAME:
        return None
    prompt = record_path.parent / PROMPT_NAME
    expected = record.get(PROMPT_SHA256_KEY)
    if not prompt.is_file():
        if expected is not None:
            raise ValueError(f"prompt file {prompt} is missing: its record {record_path} holds its sha256; restore "
                             f"it or regenerate the run")
        return None
    actual = checked_prompt_sha256(prompt)
    if expected is not None and actual != expected:
        raise ValueError(f"prompt file {prompt} is damaged: its sha256 is {actual}, its record {record_path} says "
                         f"{PROMPT_SHA256_KEY} = {expected}; restore it from git or regenerate the run")
    return prompt


def parse_record_file(path) -> dict[str, Any]:
    """The JSON object of a record file; a ValueError names the file when it cannot be read or parsed, or is
    not a JSON object (a truncated record is never taken for a missing one)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read run record {path}: {error}") from error
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not a lorsp run record (expected a JSON object, got {type(record).__name__})")
    return record


def read_record(path, check_prompt: bool = True) -> dict[str, Any]:
    """One record file → dict; a ValueError names the file when it does not parse or is not a run record, and
    (``check_prompt``) when the prompt file beside a ``record.json`` is missing or damaged
    (:func:`check_prompt_file`)."""
    path = Path(path)
    record = parse_record_file(path)
    if "config" not in record:
        raise ValueError(f"{path} is not a lorsp run record (expected a JSON object with a 'config' key)")
    if check_prompt:
        check_prompt_file(record, path)
    record["record_path"] = str(path)
    return record


def _looks_like_a_record(path: Path) -> bool:
    """A JSON file that is meant to be a run record: a run folder's ``record.json``, or one whose text says its
    schema is a run record's. Such a file that cannot be read as one is an error, never skipped."""
    if path.name == RECORD_NAME:
        return True
    try:
        head = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True
    return '"schema": "lorsp.run/' in head or not _parses(head)


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _record_files(path: Path, recursive: bool = False) -> Iterable[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = path.rglob("*.json") if recursive else path.glob("*.json")
        return sorted(p for p in files if not p.name.startswith("."))
    raise FileNotFoundError(f"no run record file or folder at {path}")


def _flat_row(record: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, value in record.items():
        if key == "config" and isinstance(value, dict):
            for ckey, cvalue in value.items():
                if ckey == "prompter_kwargs" and isinstance(cvalue, dict):
                    for pkey, pvalue in cvalue.items():
                        row[pkey] = pvalue
                else:
                    row[ckey] = cvalue if not isinstance(cvalue, (dict, list)) else json.dumps(cvalue)
        elif key in ("data", "versions", "timings") and isinstance(value, dict):
            for skey, svalue in value.items():
                column = f"{key}.{skey}" if key != "data" else skey if skey != "dataset" else "data.dataset"
                row[column] = svalue if not isinstance(svalue, (dict, list)) else json.dumps(svalue)
        else:
            row[key] = value
    return row


def load(path, with_epochs: bool = False, recursive: bool = False):
    """Run records (a JSON file, or every ``*.json`` in a folder) → a pandas DataFrame, one row per run.

    ``recursive=True`` also reads the sub-folders (e.g. a ``runs/`` folder of run directories, each with
    its ``record.json``).

    Config keys become columns (prompter options such as ``groups``, ``rank``, ``tau`` too), as do the
    data fields (``n_train``, ``n_test``, ``skipped``), versions and timings (``versions.torch``,
    ``timings.total_seconds``). The per-epoch metrics stay a list in the ``metrics`` column; with
    ``with_epochs=True`` the result has one row per run and epoch instead, the epoch metrics as columns.
    JSON files under the folder that are valid JSON but not run records (no ``config``) are skipped; a
    ``record.json``, or any JSON file that does not parse, that cannot be read as a record is a ValueError
    naming it (a damaged record is never silently left out), as is a record whose prompt file is missing or
    damaged (:func:`check_prompt_file`).
    """
    import pandas as pd
    root = Path(path)
    rows = []
    for file in _record_files(root, recursive):
        try:
            record = read_record(file)
        except ValueError:
            if root.is_file() or _looks_like_a_record(file):
                raise
            continue
        row = _flat_row(record)
        if with_epochs:
            for epoch in record.get("metrics", []) or []:
                rows.append({**{k: v for k, v in row.items() if k != "metrics"},
                             **{f"epoch_{k}" if k in row else k: v for k, v in epoch.items()}})
        else:
            rows.append(row)
    return pd.DataFrame(rows)


def host_info() -> dict[str, Any]:
    """Host name and process id (for telling concurrent runs apart)."""
    return {"host": socket.gethostname(), "pid": os.getpid()}
