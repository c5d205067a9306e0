"""Training a chapter's runs through the engine (:func:`train_one`, :func:`run_grid`, :func:`collect`)
and the command line ``python -m lorsp.experiments`` (:func:`main`)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import pandas as pd

from .evaluation import evaluate_shifts
from .grid import CHAPTERS, _config_only, grid, run_key, runs_dir
from .records import _engine, _is_done, _read_record, _record_path, _write_record, records_frame
from .scales import SCALES, scale_setup


def _train_config(run: dict, output: Path):
    """The engine's :class:`lorsp.train.TrainConfig` of a run dict.

    Keys that are TrainConfig fields go there; the others (groups, rank, tau, v_threshold, keep_ratio,
    inner_size...) are the prompter's options (``prompter_kwargs``). ``output`` is the run directory and
    ``resume=True``, so a run interrupted mid-way continues from its last epoch's checkpoint.
    """
    engine = _engine()
    from dataclasses import fields
    names = {f.name for f in fields(engine.TrainConfig)}
    kwargs, prompter = {}, {}
    for key, value in _config_only(run).items():
        (kwargs if key in names else prompter)[key] = value
    kwargs["prompter_kwargs"] = {**kwargs.get("prompter_kwargs", {}), **prompter}
    kwargs.update(output=str(output), resume=True)
    return engine.TrainConfig(**kwargs)


def train_one(run: dict, results_dir) -> dict:
    """Train one run with ``lorsp.train.train`` in ``<results_dir>/<run_key>/`` and return its record.

    The run directory holds the engine's checkpoint, prompt weights and ``record.json``; the record gets an
    ``"experiment"`` entry (key, tags, run) so the book finds it again. A run that diverges (non-finite loss)
    keeps its failed record (``status: "failed"``) and is shown as such, not retried.
    """
    engine = _engine()
    results_dir = Path(results_dir)
    key = run_key(run)
    output = results_dir / key
    start = time.perf_counter()
    try:
        record = dict(engine.train(_train_config(run, output), progress=False))
    except engine.DivergenceError:
        path = output / "record.json"
        if not path.is_file():
            raise
        record = _read_record(path)
    record["experiment"] = dict(key=key, tags=run.get("tags", {}), run=_config_only(run),
                                wall_seconds=time.perf_counter() - start)
    _write_record(record, _record_path(results_dir, run))
    return record


def run_grid(runs: Sequence[dict], results_dir, resume: bool = True, progress: bool = False,
             train: bool = True) -> pd.DataFrame:
    """Train every run of ``runs`` not yet done and return one row per run (see :func:`records_frame`).

    A run whose record ``<results_dir>/<run_key(run)>/record.json`` is final is skipped when ``resume``
    (so an interrupted chapter resumes where it stopped — a run cut mid-way continues from its last
    checkpoint — and a run shared by chapters is trained once). With ``train=False`` nothing is trained:
    only the existing records are collected (see :func:`collect`). Duplicate runs are trained once.
    ``progress`` shows a tqdm bar over the runs. ``frame.attrs`` holds ``trained`` (runs trained now),
    ``reused`` (records found) and ``seconds``.
    """
    results_dir = Path(results_dir)
    if train:
        results_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows, seen = [], {}
    done = {run_key(run): _is_done(_record_path(results_dir, run)) for run in runs}
    todo = [key for key, finished in done.items() if not (resume and finished)]
    bar = None
    if progress and train and todo:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(todo), desc=f"training ({len(done) - len(todo)} runs already done)", unit="run")
    for run in runs:
        key = run_key(run)
        if key in seen:
            record = seen[key]
        elif resume and done[key]:
            record = _read_record(_record_path(results_dir, run))
        elif train:
            record = train_one(run, results_dir)
            if bar is not None:
                bar.update(1)
        else:
            continue
        seen[key] = record
        rows.append((run, record))
    if bar is not None:
        bar.close()
    frame = records_frame(rows)
    frame.attrs.update(trained=len(todo) if train else 0, reused=len(done) - len(todo) if train else len(seen),
                       seconds=time.perf_counter() - started)
    return frame


def collect(runs: Sequence[dict], results_dir) -> pd.DataFrame:
    """The rows of the runs whose records exist under ``results_dir`` (nothing is trained)."""
    if not Path(results_dir).is_dir():
        return records_frame([])
    return run_grid(runs, results_dir, resume=True, progress=False, train=False)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lorsp.experiments --scale mini --chapter all --out results/mini``: run chapters' grids
    (and the OOD chapter's shifted evaluations) outside the notebooks, e.g. on a GPU machine."""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m lorsp.experiments", description=main.__doc__)
    parser.add_argument("--scale", choices=SCALES, default=None, help="default: $LORSP_SCALE or smoke")
    parser.add_argument("--chapter", choices=CHAPTERS + ("all",), default="all")
    parser.add_argument("--out", default=None, help="results folder (default runs/<scale>)")
    parser.add_argument("--list", action="store_true", help="only list the runs")
    args = parser.parse_args(argv)
    setup = scale_setup(args.scale)
    out = Path(args.out) if args.out else runs_dir(setup.scale)
    chapters = CHAPTERS if args.chapter == "all" else (args.chapter,)
    for chapter in chapters:
        runs = grid(chapter, setup=setup)
        if args.list:
            for run in runs:
                print(chapter, run_key(run), run["tags"].get("label"))
            continue
        frame = run_grid(runs, out)
        if chapter == "ood":
            frame = evaluate_shifts(runs, out)
        print(f"{chapter}: {len(frame)} runs in {out}")
    return 0
