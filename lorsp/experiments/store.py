"""The one reader and writer of run records: :class:`RecordStore`, a results folder of ``<run key>/record.json``
files, each beside its trained prompt (``prompt.safetensors``).

The runner writes through it, and the tables, claims, ledger, evidence, hours, executors, gallery and
staleness checks read through it (:func:`read_run_record` for a record named by its path). Reading is strict:
a record that exists but does not parse, or whose prompt file is missing or damaged (its sha256 differs from the
record's ``prompt_sha256``, or it is not a whole safetensors file), is a ValueError naming the file, never a run
counted as "not trained yet" (which would silently turn a chapter's headline back to its smoke runs).

Each record file is parsed once per process while it is unchanged on disk (keyed by its size and modification
time), however many tables of a page ask for it, and its prompt file hashed once while that is unchanged
(:func:`lorsp.results.checked_prompt_sha256`); every reader gets its own copy.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterator

from ..results import RECORD_NAME
from .runs import run_key

__all__ = ["RecordStore", "read_run_record", "is_final_record", "write_run_record", "training_engine"]


#: resolved path → (size, mtime in ns, the parsed and checked record)
_PARSED: dict[str, tuple[int, int, dict]] = {}


def read_run_record(path) -> dict:
    """The run record at ``path``, its prompt file checked (:func:`lorsp.results.check_prompt_file`): a ValueError
    names the file when the record does not parse or its prompt file is missing or damaged; a FileNotFoundError
    when there is none. Parsed once while the file is unchanged; the caller gets its own copy."""
    from ..results import check_prompt_file, parse_record_file
    path = Path(path)
    stat = path.stat()
    name = str(path.resolve())
    cached = _PARSED.get(name)
    if cached is None or cached[:2] != (stat.st_size, stat.st_mtime_ns):
        _PARSED[name] = cached = (stat.st_size, stat.st_mtime_ns, parse_record_file(path))
    check_prompt_file(cached[2], path)   # every time: the prompt file may change while the record does not
    return copy.deepcopy(cached[2])


def is_final_record(record: dict) -> bool:
    """A record is final when its run completed, or failed by divergence (rerunning would diverge again)."""
    status = record.get("status", "completed")
    return status == "completed" or str(record.get("reason") or "").startswith("DivergenceError")


def write_run_record(record: dict, path) -> Path:
    """Write ``record`` atomically as ``path`` in its portable form (:func:`lorsp.data.provenance.portable_record`:
    no path of the machine that trained it); return the path."""
    from ..data.provenance import portable_record
    from ..results import write_record
    path = Path(path)
    return write_record(portable_record(record), path.parent, name=path.name)


def training_engine():
    """The training engine :mod:`lorsp.engine` (TrainConfig, train, ...), imported when a run is trained or
    rebuilt: reading records never needs it."""
    try:
        from .. import engine
    except ImportError as error:  # the engine package is part of this package; this names what is missing
        raise ImportError(f"lorsp.experiments needs the training engine lorsp.engine (TrainConfig, train): "
                          f"{error}") from error
    return engine


class RecordStore:
    """The run records of one results folder: ``<folder>/<run key>/record.json`` and ``prompt.safetensors``.

    ``run`` arguments are a run dict of a chapter's grid or its key (:func:`~lorsp.experiments.runs.run_key`).
    """

    RECORD = RECORD_NAME

    def __init__(self, folder):
        self.folder = Path(folder)

    def __repr__(self) -> str:
        return f"RecordStore({str(self.folder)!r})"

    @staticmethod
    def key(run) -> str:
        return run if isinstance(run, str) else run_key(run)

    def path(self, run) -> Path:
        """``<folder>/<run key>/record.json``."""
        return self.folder / self.key(run) / self.RECORD

    def run_folder(self, run) -> Path:
        """``<folder>/<run key>/``: the record and the trained prompt of the run."""
        return self.folder / self.key(run)

    def exists(self, run) -> bool:
        return self.path(run).is_file()

    def read(self, run) -> dict:
        """The run's record (strict: see the module); FileNotFoundError naming the file when there is none."""
        path = self.path(run)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: run {self.key(run)} has no record")
        return read_run_record(path)

    def get(self, run) -> dict | None:
        """The run's record, or None when it has none (a damaged one still raises)."""
        return self.read(run) if self.exists(run) else None

    def is_final(self, run) -> bool:
        """The run has a final record (:func:`is_final_record`). A record that exists but cannot be read, or
        whose prompt file is damaged, raises (see the module)."""
        record = self.get(run)
        return record is not None and is_final_record(record)

    def is_complete(self, run: dict) -> bool:
        """The run's record is final and, for a run evaluated on shifted test sets (the OOD chapter's
        ``tags["eval_on"]``), holds its accuracy on every one of them."""
        record = self.get(run)
        if record is None or not is_final_record(record):
            return False
        targets = run.get("tags", {}).get("eval_on") or [] if isinstance(run, dict) else []
        shifted = (record.get("experiment") or {}).get("shifted") or {}
        return all(t in shifted for t in targets)

    def write(self, run, record: dict) -> Path:
        """Write the run's record (:func:`write_run_record`)."""
        return write_run_record(record, self.path(run))

    def keys(self) -> list[str]:
        """The keys of every run with a record in the folder, sorted."""
        return sorted(path.parent.name for path in self.folder.glob(f"*/{self.RECORD}"))

    def items(self) -> Iterator[tuple[str, dict]]:
        """``(key, record)`` of every record in the folder (strict), in key order."""
        for key in self.keys():
            yield key, self.read(key)
