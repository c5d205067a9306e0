"""The DataFrame of run records (:func:`records_frame`), their failed runs, a run folder's trained state
(:func:`trained_state`), and stamping committed records with the sha256 of their prompt file
(``python -m lorsp.experiments.records --stamp-sha256 results/desk``: :func:`stamp_prompt_sha256`).

Records are read and written through :mod:`.store` (strict: a damaged record or prompt file is an error naming it).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Iterable

import pandas as pd

from .methods import label_of
from .runs import run_config, run_key
from .store import RecordStore, read_run_record, training_engine


ACCURACY = "accuracy_pct"
#: the column of a prompt's sparsity (share of exact zeros of δ) in percentage points, where a claim compares it
SPARSITY = "sparsity_pct"


_COLUMNS = ["key", "status", "reason", "chapter", "label", "scale", "dataset", "backbone", "method", "head", "seed", "groups",
            "rank", "tau", "v_threshold", "keep_ratio", "sweeps", "prompt_lr", "val_accuracy_pct", ACCURACY,
            "best_accuracy_pct",
            "firing_rate", "sparsity", "prompt_params", "train_seconds", "weights_source"]


def _first(record: dict, *names, default=None):
    for name in names:
        if name in record and record[name] is not None:
            return record[name]
    return default


def records_frame(rows: Iterable[tuple[dict, dict]]) -> pd.DataFrame:
    """One row per (run, record): the run's tags and config and the record's metrics.

    ``accuracy_pct`` is the record's ``final_accuracy`` (the last epoch's test accuracy, as the paper
    reports) in percent; ``best_accuracy_pct`` the best epoch's, shown beside it only.
    """
    out = []
    for run, record in rows:
        tags = run.get("tags", {})
        config = run_config(run)
        final = record.get("final_accuracy")
        best = record.get("best_accuracy")
        out.append(dict(
            key=run_key(run), status=record.get("status", "completed"), reason=record.get("reason"), chapter=tags.get("chapter"), label=tags.get("label", label_of(config)),
            scale=tags.get("scale"), dataset=config.get("dataset"), backbone=config.get("backbone"),
            method=config.get("method"), head=config.get("head"), seed=config.get("seed"),
            groups=config.get("groups"), rank=config.get("rank"), tau=config.get("tau"),
            v_threshold=config.get("v_threshold"), keep_ratio=config.get("keep_ratio"),
            sweeps=tags.get("sweeps"), prompt_lr=config.get("prompt_lr"),
            val_accuracy_pct=None if record.get("final_val_accuracy") is None else
            100.0 * float(record["final_val_accuracy"]),
            **{ACCURACY: None if final is None else 100.0 * float(final),
               "best_accuracy_pct": None if best is None else 100.0 * float(best)},
            firing_rate=_first(record, "firing_rate", "mean_firing_rate"),
            sparsity=_first(record, "sparsity", "prompt_sparsity"),
            prompt_params=_first(record, "prompt_params", "prompt_param_count", "num_prompt_params"),
            train_seconds=(record.get("timings") or {}).get("total_seconds",
                                                          record.get("experiment", {}).get("wall_seconds")),
            weights_source=_first(record, "weights_source",
                                  default=(record.get("backbone_info") or {}).get("weights_source")
                                  if isinstance(record.get("backbone_info"), dict) else None),
        ))
        for name, value in (record.get("experiment", {}).get("shifted") or {}).items():
            out[-1][f"{ACCURACY}:{name}"] = 100.0 * float(value)
    frame = pd.DataFrame(out)
    for column in _COLUMNS:
        if column not in frame:
            frame[column] = pd.Series(dtype=object)
    return frame


def planned_frame(runs: Iterable[dict]) -> pd.DataFrame:
    """One row per planned run: the columns of :func:`records_frame` that its tags and config give (label,
    dataset, backbone, method, seed, prompter options...), its metrics empty; no record is read."""
    return records_frame((run, {}) for run in runs)


def collect(runs: Iterable[dict], results_dir) -> pd.DataFrame:
    """The rows (:func:`records_frame`) of the runs with a final record in ``results_dir``, read through the
    :class:`~lorsp.experiments.store.RecordStore` (strict); nothing is trained, runs without a record are left
    out. A run listed twice (the same training run under two labels) gives a row for each listing.
    ``frame.attrs``: ``trained`` (0), ``reused`` (records found), ``seconds``, ``left`` (empty)."""
    started = time.perf_counter()
    store, rows, found = RecordStore(results_dir), [], set()
    if store.folder.is_dir():
        for run in runs:
            if store.is_final(run):
                found.add(run_key(run))
                rows.append((run, store.read(run)))
    frame = records_frame(rows)
    frame.attrs.update(trained=0, reused=len(found), seconds=time.perf_counter() - started, left=[])
    return frame


def _failed_mask(frame: pd.DataFrame, value: str = ACCURACY) -> pd.Series:
    """Rows of a failed or diverged run: record status ``"failed"``, or a missing / non-finite ``value``."""
    if frame.empty:
        return pd.Series(False, index=frame.index, dtype=bool)
    failed = frame["status"].eq("failed") if "status" in frame else pd.Series(False, index=frame.index)
    if value in frame:
        numbers = pd.to_numeric(frame[value], errors="coerce").astype(float)
        failed = failed | ~numbers.map(math.isfinite)
    return failed.astype(bool)


def usable_rows(frame: pd.DataFrame, value: str = ACCURACY) -> pd.DataFrame:
    """``frame`` without failed or diverged runs (see :func:`failed_runs`): what means and verdicts use."""
    return frame[~_failed_mask(frame, value)]


def failed_runs(frame: pd.DataFrame, value: str = ACCURACY) -> pd.DataFrame:
    """The failed or diverged runs of ``frame`` (record status ``"failed"``, or a non-finite accuracy — a
    diverged run may keep its last good epoch's number): one row each with ``key, label, dataset, backbone,
    seed, status, reason``. They are left out of every mean and verdict and listed by name."""
    columns = ["key", "label", "dataset", "backbone", "seed", "status", "reason"]
    rows = frame[_failed_mask(frame, value)]
    out = pd.DataFrame({c: rows[c] if c in rows else pd.Series([None] * len(rows), index=rows.index, dtype=object)
                        for c in columns})
    return out.drop_duplicates(subset=["key"] if "key" in rows else None).reset_index(drop=True)


def describe_failed(failed: pd.DataFrame) -> str:
    """One sentence naming each failed run: ``"Left out of means and verdicts: 1 failed or diverged run:
    <key> (LoRSP, cifar10, seed 1; DivergenceError: ...)."``; empty when there is none."""
    if failed.empty:
        return ""
    names = []
    for _, row in failed.iterrows():
        detail = ", ".join(str(row[c]) if c != "seed" else f"seed {row[c]}"
                           for c in ("label", "dataset", "seed") if pd.notna(row[c]))
        reason = f"; {str(row['reason']).splitlines()[0][:120]}" if pd.notna(row["reason"]) and row["reason"] else ""
        names.append(f"`{row['key']}` ({detail}{reason})" if pd.notna(row["key"]) else f"({detail}{reason})")
    count = len(names)
    return (f"Left out of means and verdicts: {count} failed or diverged run{'s' if count > 1 else ''}: "
            + "; ".join(names) + ".")


def trained_state(run_dir, what: str) -> tuple[dict, dict, Path, int | None]:
    """``(config values, trained state dict, the file it came from, number of classes)`` of a run folder: its
    checkpoint when there is one, else its committed ``record.json`` and prompt file (all a results folder
    keeps). ``what`` names what the caller rebuilds, for the error that names a missing file."""
    engine, run_dir = training_engine(), Path(run_dir)
    if (run_dir / "checkpoint.pt").is_file():
        from ..checkpoint import load_checkpoint
        checkpoint = load_checkpoint(run_dir)
        return (checkpoint["config"], checkpoint["model"], run_dir / "checkpoint.pt",
                int(checkpoint["num_classes"]) if "num_classes" in checkpoint else None)
    from safetensors.torch import load_file
    record_path, weights = run_dir / "record.json", run_dir / engine.PROMPT_WEIGHTS_NAME
    for path in (record_path, weights):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: {run_dir} has neither a checkpoint nor a record with its "
                                    f"trained prompt, so the run's {what} cannot be rebuilt")
    record = read_run_record(record_path)
    classes = (record.get("data") or {}).get("num_classes")
    return record["config"], load_file(str(weights)), weights, None if classes is None else int(classes)


# ----------------------------------------------------------------------------------------------------
# stamping committed records with the sha256 of their prompt file
# ----------------------------------------------------------------------------------------------------
def _with_key_after(record: dict, after: str, key: str, value) -> dict:
    """``record`` with ``key: value`` placed right after ``after`` (at the end when ``after`` is absent)."""
    if after not in record:
        return {**record, key: value}
    out = {}
    for name, item in record.items():
        out[name] = item
        if name == after:
            out[key] = value
    return out


def stamp_prompt_sha256(folder) -> list[Path]:
    """Add ``prompt_sha256`` (the sha256 of ``prompt.safetensors``) to every ``<folder>/*/record.json`` that has a
    prompt file beside it and no digest yet; return the records changed. Idempotent: a record whose digest is
    already right is left as it is. Refuses (ValueError naming the file) a record that does not parse, a prompt
    file that is not a whole safetensors file, and a record whose digest differs from its prompt file: stamping
    never blesses a damaged file."""
    from ..results import PROMPT_NAME, PROMPT_SHA256_KEY, checked_prompt_sha256, write_record
    changed = []
    for path in sorted(Path(folder).glob("*/record.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot stamp {path}: it does not parse as JSON ({error})") from error
        prompt = path.parent / PROMPT_NAME
        if not prompt.is_file():
            if record.get(PROMPT_SHA256_KEY):
                raise ValueError(f"cannot stamp {path}: it holds {PROMPT_SHA256_KEY} but {prompt} is missing")
            continue
        digest = checked_prompt_sha256(prompt)
        recorded = record.get(PROMPT_SHA256_KEY)
        if recorded == digest:
            continue
        if recorded is not None:
            raise ValueError(f"cannot stamp {path}: it says {PROMPT_SHA256_KEY} = {recorded} but {prompt} has "
                             f"sha256 {digest} (the prompt file changed after its run: restore it or regenerate)")
        write_record(_with_key_after(record, "prompt_weights", PROMPT_SHA256_KEY, digest), path.parent,
                     name=path.name)
        changed.append(path)
    return changed


def main(argv=None) -> int:
    """``python -m lorsp.experiments.records --stamp-sha256 FOLDER...``: stamp the records of each folder."""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m lorsp.experiments.records", description=main.__doc__)
    parser.add_argument("--stamp-sha256", nargs="+", metavar="FOLDER", required=True,
                        help="results folders (e.g. results/desk) whose <run key>/record.json to stamp with the "
                             "sha256 of their prompt.safetensors")
    args = parser.parse_args(argv)
    for folder in args.stamp_sha256:
        changed = stamp_prompt_sha256(folder)
        total = len(list(Path(folder).glob("*/record.json")))
        print(f"{folder}: stamped {len(changed)} of {total} records with their prompt file's sha256")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
