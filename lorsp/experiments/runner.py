"""Training a chapter's runs through the engine (:func:`train_one`, :func:`run_grid`, :func:`collect`)
and the command line ``python -m lorsp.experiments`` (:func:`main`).

Where files go: the engine trains each run in a *work* folder (``runs/<scale>/<run key>/``, git-ignored:
checkpoints, feature caches), and the *results* folder (``results/<scale>/<run key>/``, committed) receives
only what a reader needs — ``record.json`` and the small trained prompt and head (``prompt.safetensors``).
A run whose record is in the results folder is done; a run cut mid-way resumes from its work folder's
last checkpoint.
"""
from __future__ import annotations

import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

import pandas as pd

from .grid import CHAPTERS, RUN_ORDER, grid, runs_dir
from .records import records_frame
from .runs import run_config, run_key
from .store import RecordStore, training_engine
from .scales import SCALES, scale_setup


#: the folder of the work folder where runs that cache their features share them (TrainConfig.feature_cache_dir)
FEATURE_CACHE_FOLDER = "feature-cache"


def _train_config(run: dict, output: Path):
    """The engine's :class:`lorsp.train.TrainConfig` of a run dict.

    Keys that are TrainConfig fields go there; the others (groups, rank, tau, v_threshold, keep_ratio,
    inner_size...) are the prompter's options (``prompter_kwargs``). ``output`` is the run directory and
    ``resume=True``, so a run interrupted mid-way continues from its last epoch's checkpoint. A run that
    caches its features (``cache_features``) keeps them in :data:`FEATURE_CACHE_FOLDER` beside its run
    directory too, where a run on the same images (another seed that draws every image) finds them.
    """
    engine = training_engine()
    from dataclasses import fields
    names = {f.name for f in fields(engine.TrainConfig)}
    kwargs, prompter = {}, {}
    for key, value in run_config(run).items():
        (kwargs if key in names else prompter)[key] = value
    kwargs["prompter_kwargs"] = {**kwargs.get("prompter_kwargs", {}), **prompter}
    kwargs.update(output=str(output), resume=True)
    if "cache_features" in run:   # e.g. LP at 224 px: its seeds on the same images share one feature file
        kwargs["feature_cache_dir"] = str(Path(output).parent / FEATURE_CACHE_FOLDER)
    return engine.TrainConfig(**kwargs)


#: what the results folder of a run receives (everything else stays in the work folder)
PUBLISHED_FILES = ("record.json", "prompt.safetensors")


def machine_info() -> dict:
    """Where a run was trained: platform, processor, CPU count, torch threads and version."""
    import torch
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}


def train_one(run: dict, results_dir, work_dir=None) -> dict:
    """Train one run with ``lorsp.train.train`` and return its record.

    The engine works in ``<work_dir>/<run_key>/`` (checkpoint, feature cache, prompt weights, record); without
    ``work_dir`` that is ``<results_dir>/<run_key>/`` itself. The record gets an ``"experiment"`` entry (key,
    tags, run, wall seconds, machine) and is written as ``<results_dir>/<run_key>/record.json``, beside a copy
    of the trained prompt (:data:`PUBLISHED_FILES`): nothing else reaches the results folder. A run that
    diverges (non-finite loss) keeps its failed record (``status: "failed"``) and is shown as such, not retried.
    """
    engine = training_engine()
    results_dir = Path(results_dir)
    key = run_key(run)
    output = Path(work_dir if work_dir is not None else results_dir) / key
    start = time.perf_counter()
    try:
        record = dict(engine.train(_train_config(run, output), progress=False))
    except engine.DivergenceError:
        record = RecordStore(output.parent).get(key)
        if record is None:
            raise
    record["experiment"] = dict(key=key, tags=run.get("tags", {}), run=run_config(run),
                                wall_seconds=time.perf_counter() - start, machine=machine_info())
    target = results_dir / key
    if work_dir is not None:
        weights = output / PUBLISHED_FILES[1]
        if weights.is_file():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(weights, target / PUBLISHED_FILES[1])
            record["prompt_weights"] = PUBLISHED_FILES[1]
        record["run_dir"] = None  # the work folder is local to the machine that trained the run
    RecordStore(results_dir).write(key, record)
    return record


def _line(text: str) -> None:
    print(text, flush=True)


def run_grid(runs: Sequence[dict], results_dir, resume: bool = True, progress: bool = False,
             work_dir=None, log=None, planned=None,
             max_seconds: float | None = None, max_runs: int | None = None) -> pd.DataFrame:
    """Train every run of ``runs`` not yet done and return one row per run (see :func:`records_frame`).

    A run whose record ``<results_dir>/<run_key(run)>/record.json`` is final is skipped when ``resume``
    (so an interrupted chapter resumes where it stopped — a run cut mid-way continues from its last
    checkpoint — and a run shared by chapters is trained once). Duplicate runs are trained once. To read
    records without training, :func:`lorsp.experiments.records.collect`.
    ``work_dir``: where the engine trains (see :func:`train_one`). ``progress`` shows a tqdm bar over the
    runs; ``log`` (e.g. ``print``) gets one line per run instead, with the planned seconds ``planned(run)``
    and an estimate of the time left (the plan scaled by how long the runs so far took against their
    plan). ``max_seconds``: start no run whose plan would end past that many seconds from now; ``max_runs``:
    train at most that many runs now; the runs left are listed in ``frame.attrs["left"]``. ``frame.attrs`` also holds ``trained`` (runs trained now),
    ``reused`` (records found) and ``seconds``.
    """
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows, seen = [], {}
    store = RecordStore(results_dir)
    done = {run_key(run): store.is_final(run) for run in runs}
    todo = [key for key, finished in done.items() if not (resume and finished)]
    plan = {run_key(run): float(planned(run)) if planned else None for run in runs}
    report = _GridProgress(todo, plan, log, bar=progress and bool(todo) and log is None,
                           already_done=len(done) - len(todo))
    if todo:  # the compiled LIF gates of the grid's shapes, once, so that its short runs use them
        training_engine().prebuild_lif_gates([_train_config(run, results_dir / run_key(run)) for run in runs
                                              if run_key(run) in todo])
    left = []
    for run in runs:
        key = run_key(run)
        if key in seen:
            record = seen[key]
        elif resume and done[key]:
            record = store.read(run)
        else:
            over_time = (max_seconds is not None and plan[key] is not None
                         and time.perf_counter() - started + plan[key] > max_seconds)
            if over_time or (max_runs is not None and report.trained >= max_runs):
                left.append(key)
                continue
            t0 = time.perf_counter()
            record = train_one(run, results_dir, work_dir=work_dir)
            report.run_trained(run, key, record, time.perf_counter() - t0, left)
        seen[key] = record
        rows.append((run, record))
    report.close()
    frame = records_frame(rows)
    frame.attrs.update(trained=report.trained, reused=len(done) - len(todo),
                       seconds=time.perf_counter() - started, left=left)
    return frame


class _GridProgress:
    """What :func:`run_grid` says while it trains: a tqdm bar over the runs (``bar``), or one ``log`` line per
    trained run with its planned time and the time left (the plan of the runs still to train, scaled by how
    long the runs so far took against their plan)."""

    def __init__(self, todo: list[str], plan: dict, log=None, bar: bool = False, already_done: int = 0):
        self.todo, self.plan, self.log = todo, plan, log
        self.trained = 0
        self.spent = self.planned_spent = 0.0
        self.bar = None
        if bar:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=len(todo), desc=f"training ({already_done} runs already done)", unit="run")

    def run_trained(self, run: dict, key: str, record: dict, seconds: float, left: list[str]) -> None:
        self.trained += 1
        if self.bar is not None:
            self.bar.update(1)
        if self.log is None:
            return
        self.spent += seconds
        self.planned_spent += self.plan[key] or 0.0
        rest = sum(self.plan[k] or 0.0 for k in self.todo[self.trained:] if k not in left)
        pace = self.spent / self.planned_spent if self.planned_spent else 1.0
        planned_text = f" (planned {_duration(self.plan[key])})" if self.plan[key] else ""
        self.log(f"[{self.trained}/{len(self.todo)}] {key} {run.get('tags', {}).get('label', '')}: "
                 f"{record.get('status', 'completed')}, accuracy {_pct(record.get('final_accuracy'))}, "
                 f"{_duration(seconds)}{planned_text}; left about {_duration(rest * pace)}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _pct(value) -> str:
    return "—" if value is None else f"{100 * float(value):.2f}%"


def chapter_runs(chapters: Sequence[str], setup) -> dict[str, list[dict]]:
    """``{chapter: runs}`` in the given order (a run shared with an earlier chapter is listed by both)."""
    return {chapter: grid(chapter, setup=setup) for chapter in chapters}


def dry_run(chapters: dict[str, list[dict]], results_dir, costs=None, out=None) -> list[dict]:
    """Print the planned runs (key, label, planned time, done or not) and the planned hours per chapter, from
    the measured per-image costs (:mod:`lorsp.desk_budget`); return the plan's rows."""
    from ..desk_budget import format_plan, load_costs, plan
    out = out or _line
    costs = costs or load_costs()
    rows = plan(chapters, costs, key=run_key)
    done = {row["key"] for row in rows if _planned_row_done(row, chapters, results_dir)}
    for row in rows:
        out(f"{row['chapter']:<16} {row['key']:<56} {str(row['label']):<24} {_duration(row['seconds']):>9}"
            f"{'  done' if row['key'] in done else ''}")
    out("")
    out(f"planned time on an unloaded 2-core CPU, from {costs.source} (see lorsp.desk_budget):")
    out(format_plan(rows, done, chapters=list(chapters)))
    return rows


def _planned_row_done(row: dict, chapters: dict[str, list[dict]], results_dir) -> bool:
    """A planned run is done when its record is final; a ``<key>:shifted`` row (an earlier chapter's run
    evaluated on the OOD chapter's shifted sets) when that record also holds every shifted accuracy."""
    key, store = row["key"], RecordStore(results_dir)
    if not key.endswith(":shifted"):
        return store.is_final(key)
    base = key[: -len(":shifted")]
    run = next(r for r in chapters[row["chapter"]] if run_key(r) == base)
    return store.is_complete(run)


def _without_pending_selection(by_chapter: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The runs to train: all but the headline runs whose prompt lr waits for the search (tagged ``selection:
    "pending"``, desk protocol v2), which a later call trains once every search run has its record."""
    out = {}
    for chapter, runs in by_chapter.items():
        out[chapter] = [run for run in runs if run["tags"].get("selection") != "pending"]
        if len(out[chapter]) < len(runs):
            _line(f"== {chapter}: {len(runs) - len(out[chapter])} headline runs wait for the prompt-lr search "
                  f"(selection pending); they train once every search run has its record")
    return out


def _parser():
    """The command line of :func:`main` (the executor options: :func:`.executors.add_executor_arguments`)."""
    import argparse
    from .executors import add_executor_arguments
    parser = argparse.ArgumentParser(prog="python -m lorsp.experiments", description=main.__doc__)
    parser.add_argument("--scale", choices=SCALES, default=None, help="default: $LORSP_SCALE or smoke")
    parser.add_argument("--chapter", choices=CHAPTERS + ("all",), default="all",
                        help=f"one chapter, or all of them in the order {', '.join(RUN_ORDER)}")
    parser.add_argument("--out", default=None,
                        help="results folder: record.json and prompt.safetensors per run (default runs/<scale>)")
    parser.add_argument("--work", default=None,
                        help="where the engine trains (checkpoints, feature caches; default runs/<scale>)")
    parser.add_argument("--list", action="store_true", help="only list the runs")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the planned runs and hours per chapter (from measured costs); train nothing")
    parser.add_argument("--hours", action="store_true",
                        help="print the Markdown table of planned and measured hours per chapter (from the records "
                             "in --out) that book/running.md shows; train nothing")
    parser.add_argument("--hours-into", default=None, metavar="FILE",
                        help="with --hours: write the table into FILE's desk-hours block (book/running.md)")
    parser.add_argument("--max-hours", type=float, default=None,
                        help="start no run whose planned time would end after this many hours")
    parser.add_argument("--max-runs", type=int, default=None, help="train at most this many runs, then stop")
    add_executor_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lorsp.experiments --scale desk --chapter backbones --out results/desk``: train chapters'
    grids (and the OOD chapter's shifted evaluations) outside the notebooks, in the background or on a GPU
    machine; one line per run with the time left; a killed run resumes where it stopped. ``--executor
    slurm`` hands the runs to a cluster instead, one job array (:mod:`.executors`)."""
    args = _parser().parse_args(argv)
    setup = scale_setup(args.scale, require_data=not (args.list or args.dry_run or args.hours))
    work = Path(args.work) if args.work else runs_dir(setup.scale)
    out = Path(args.out) if args.out else work
    work_dir = None if out.resolve() == work.resolve() else work
    chapters = {"all": RUN_ORDER}.get(args.chapter, (args.chapter,))
    by_chapter = chapter_runs(chapters, setup)
    if args.dry_run:
        dry_run(by_chapter, out)
        return 0
    if args.hours:
        from .hours import chapter_hours, hours_markdown, write_marked_table
        table = hours_markdown(chapter_hours(out, setup.scale, chapters))
        print(table)
        if args.hours_into:
            write_marked_table(args.hours_into, table)
        return 0
    if args.list:
        for chapter, runs in by_chapter.items():
            for run in runs:
                print(chapter, run_key(run), run["tags"].get("label"))
        return 0
    by_chapter = _without_pending_selection(by_chapter)
    if args.executor != "local":
        from .executors import submit_chapters
        return submit_chapters(by_chapter, out, work_dir, args, log=_line)
    from ..desk_budget import load_costs, run_seconds
    from .chapters import chapter as chapter_of
    try:
        costs = load_costs()
        planned = lambda run: run_seconds(run, costs)  # noqa: E731
    except (FileNotFoundError, KeyError, ValueError) as error:
        print(f"no time plan: {error}", file=sys.stderr)
        planned = None
    budget = None if args.max_hours is None else 3600.0 * args.max_hours
    started, trained = time.perf_counter(), 0
    for chapter, runs in by_chapter.items():
        _line(f"== {chapter}: {len({run_key(r) for r in runs})} runs, results in {out}"
              + (f", work folder {work_dir}" if work_dir else ""))
        remaining = None if budget is None else budget - (time.perf_counter() - started)
        runs_left = None if args.max_runs is None else max(0, args.max_runs - trained)
        frame = run_grid(runs, out, work_dir=work_dir, log=_line, planned=planned, max_seconds=remaining,
                         max_runs=runs_left)
        now, left = frame.attrs.get("trained", 0), frame.attrs.get("left") or []
        trained += now
        frame = chapter_of(chapter).after_training(runs, out, frame)
        _line(f"== {chapter}: {len(frame)} runs recorded, {now} trained now"
              + (f"; {len(left)} left for later (--max-hours / --max-runs)" if left else ""))
    return 0
