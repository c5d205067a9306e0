"""Run records on disk (``<results_dir>/<run key>/record.json``) and the DataFrame of their rows
(:func:`records_frame`).

Reading is strict (:func:`_read_record`, :func:`_is_done`): a record that exists but does not parse, or whose
``prompt.safetensors`` is missing or damaged (its sha256 differs from the record's ``prompt_sha256``, or it is
not a whole safetensors file), is a ValueError naming the file, never a run counted as "not trained yet" (which
would silently turn a chapter's headline back to its smoke runs). ``python -m lorsp.experiments.records
--stamp-sha256 results/desk`` stamps records with the sha256 of their prompt file (:func:`stamp_prompt_sha256`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import pandas as pd

from .grid import _config_only, run_key
from .methods import label_of


ACCURACY = "accuracy_pct"


def _engine():
    try:
        from .. import engine
    except ImportError as error:  # the engine package is part of this package; this names what is missing
        raise ImportError(f"lorsp.experiments needs the training engine lorsp.engine (TrainConfig, train): "
                          f"{error}") from error
    return engine


def _record_path(results_dir: Path, run: dict) -> Path:
    """``<results_dir>/<run_key>/record.json``: the engine's record of the run, with our ``experiment`` entry."""
    return _key_record_path(results_dir, run_key(run))


def _key_record_path(results_dir: Path, key: str) -> Path:
    """``<results_dir>/<key>/record.json`` for a run key (:func:`~lorsp.experiments.grid.run_key`)."""
    return Path(results_dir) / key / "record.json"


def _read_record(path: Path) -> dict:
    """The run record at ``path``, its prompt file checked (:func:`lorsp.results.check_prompt_file`): a
    ValueError names the file when the record does not parse or its prompt file is missing or damaged."""
    from ..results import check_prompt_file, parse_record_file
    record = parse_record_file(path)
    check_prompt_file(record, path)
    return record


def _is_done(path: Path) -> bool:
    """A record exists and is final: completed, or failed by divergence (rerunning would diverge again). A
    record that exists but cannot be read, or whose prompt file is damaged, raises (see the module)."""
    if not path.is_file():
        return False
    record = _read_record(path)
    status = record.get("status", "completed")
    return status == "completed" or str(record.get("reason") or "").startswith("DivergenceError")


def _complete(folder: Path, run: dict) -> bool:
    """The run's record is final and, for the OOD chapter, holds its accuracy on every shifted test set."""
    path = _record_path(folder, run)
    if not _is_done(path):
        return False
    targets = run.get("tags", {}).get("eval_on") or []
    if not targets:
        return True
    shifted = (_read_record(path).get("experiment") or {}).get("shifted") or {}
    return all(t in shifted for t in targets)


def _write_record(record: dict, path: Path) -> None:
    """Write ``record`` atomically as ``path`` (:func:`lorsp.results.write_record`)."""
    from ..data.provenance import portable_record
    from ..results import write_record
    record = portable_record(record)
    write_record(record, Path(path).parent, name=Path(path).name)


_COLUMNS = ["key", "status", "reason", "chapter", "label", "scale", "dataset", "backbone", "method", "head", "seed", "groups",
            "rank", "tau", "v_threshold", "keep_ratio", "sweeps", ACCURACY, "best_accuracy_pct",
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
        config = _config_only(run)
        final = record.get("final_accuracy")
        best = record.get("best_accuracy")
        out.append(dict(
            key=run_key(run), status=record.get("status", "completed"), reason=record.get("reason"), chapter=tags.get("chapter"), label=tags.get("label", label_of(config)),
            scale=tags.get("scale"), dataset=config.get("dataset"), backbone=config.get("backbone"),
            method=config.get("method"), head=config.get("head"), seed=config.get("seed"),
            groups=config.get("groups"), rank=config.get("rank"), tau=config.get("tau"),
            v_threshold=config.get("v_threshold"), keep_ratio=config.get("keep_ratio"),
            sweeps=tags.get("sweeps"),
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
    from ..results import PROMPT_NAME, PROMPT_SHA256_KEY, _prompt_digest_and_check, write_record
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
        digest = _prompt_digest_and_check(prompt)
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


def trained_state(run_dir, what: str) -> tuple[dict, dict, Path, int | None]:
    """``(config values, trained state dict, the file it came from, number of classes)`` of a run folder: its
    checkpoint when there is one, else its committed ``record.json`` and prompt file (all a results folder
    keeps). ``what`` names what the caller rebuilds, for the error that names a missing file."""
    engine, run_dir = _engine(), Path(run_dir)
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
    record = _read_record(record_path)
    classes = (record.get("data") or {}).get("num_classes")
    return record["config"], load_file(str(weights)), weights, None if classes is None else int(classes)
