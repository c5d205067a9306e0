"""Handing a grid's runs to a cluster through `submitit <https://github.com/facebookincubator/submitit>`_:
``python -m lorsp.experiments --executor slurm`` (:func:`submit_chapters`).

The runs are the ones :func:`.runner.chapter_runs` lists for ``python -m lorsp.experiments`` (one per run key;
a run shared by chapters is submitted once), less those whose record in the results folder is already final
(:func:`pending_runs`, the test :func:`.runner.run_grid` resumes by). They go out as **one job array**
(``executor.map_array``): array task *i* trains run *i* with :func:`.runner.train_one` — the same code as
``--executor local`` — and so writes ``record.json`` and ``prompt.safetensors`` into the results folder, and
a run of the OOD chapter also gets its accuracy on the shifted test sets (:func:`.evaluation.evaluate_shifts`).
A job that fails writes no record there (a diverged run keeps the engine's ``status: "failed"`` record, as
in-process), so the next invocation submits it again; a job that hits its time limit is requeued by submitit
and resumes from its run's last epoch checkpoint in the work folder (:class:`TrainRunJob`).

Executors: ``local`` (default, no submitit: :func:`.runner.run_grid` in this process), ``slurm``
(``sbatch``), ``submitit-local`` (each run in its own process on this machine, through submitit's
``LocalExecutor``: the cluster path, rehearsed) and ``debug`` (submitit's ``DebugExecutor``: the jobs run one
after another in this process). Job logs and submitit's pickles go to a log folder beside the results
folder (:func:`default_log_folder`), never inside it.
"""
from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from . import runner
from .grid import run_key
from .store import RecordStore

#: ``--executor`` choices; the submitit ones map to the ``cluster`` of ``submitit.AutoExecutor``
EXECUTORS = ("local", "slurm", "submitit-local", "debug")
_SUBMITIT_CLUSTER = {"slurm": "slurm", "submitit-local": "local", "debug": "debug"}
#: the folder, beside the results folder, that holds the job logs (git-ignored: see .gitignore)
LOG_FOLDER_NAME = "submitit-logs"


@dataclass
class ClusterOptions:
    """What each job asks the cluster for (``--partition --time --gpus-per-run --cpus-per-task --mem
    --array-parallelism``); ``None`` leaves the cluster's default."""

    partition: str | None = None
    time_minutes: int = 60
    gpus_per_run: int = 0
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    array_parallelism: int | None = None
    account: str | None = None
    job_name: str = "lorsp"

    def submitit_parameters(self) -> dict:
        """The parameters of ``submitit.AutoExecutor.update_parameters``: generic ones (every cluster) and
        ``slurm_``-prefixed ones (read by SLURM only)."""
        parameters = dict(name=self.job_name, timeout_min=self.time_minutes, gpus_per_node=self.gpus_per_run,
                          cpus_per_task=self.cpus_per_task, mem_gb=self.mem_gb, slurm_partition=self.partition,
                          slurm_array_parallelism=self.array_parallelism, slurm_account=self.account)
        return {name: value for name, value in parameters.items() if value is not None}


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--executor`` options of ``python -m lorsp.experiments`` (see :func:`submit_chapters`)."""
    group = parser.add_argument_group("executor (a grid on a cluster: one SLURM job array through submitit)")
    group.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="local: train here, in this process (default); slurm: one job array on SLURM; "
                            "submitit-local: one process per run on this machine (rehearses the slurm path); "
                            "debug: submitit's DebugExecutor, the jobs one after another in this process")
    group.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's)")
    group.add_argument("--time", type=int, default=60, metavar="MINUTES",
                       help="time limit per run, minutes (a run past it is requeued and resumes; default 60)")
    group.add_argument("--gpus-per-run", type=int, default=0, help="GPUs per run (default 0)")
    group.add_argument("--cpus-per-task", type=int, default=None, help="CPUs per run (default: the cluster's)")
    group.add_argument("--mem", type=float, default=None, metavar="GB", help="memory per run, GB")
    group.add_argument("--account", default=None, help="SLURM account to charge")
    group.add_argument("--array-parallelism", type=int, default=None, metavar="N",
                       help="at most N runs of the array at once (submitit's slurm_array_parallelism)")
    group.add_argument("--log-folder", default=None,
                       help=f"job logs and pickles (default <results parent>/{LOG_FOLDER_NAME}/<results name>)")
    group.add_argument("--wait", action="store_true",
                       help="block until every job ends and report the failed runs (exit status 1 if any); "
                            "without it, print the job ids and return")


def options_from_args(args: argparse.Namespace) -> ClusterOptions:
    """The :class:`ClusterOptions` of the parsed command line; a non-positive number is a ValueError."""
    for name in ("time", "cpus_per_task", "mem", "array_parallelism"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} {value}: expected a positive number")
    if args.gpus_per_run < 0:
        raise ValueError(f"--gpus-per-run {args.gpus_per_run}: expected 0 or more")
    return ClusterOptions(partition=args.partition, time_minutes=args.time, gpus_per_run=args.gpus_per_run,
                          cpus_per_task=args.cpus_per_task, mem_gb=args.mem,
                          array_parallelism=args.array_parallelism, account=args.account)


def default_log_folder(results_dir) -> Path:
    """``<parent of the results folder>/submitit-logs/<results folder name>``: e.g. ``results/mini`` →
    ``results/submitit-logs/mini`` — beside the committed records, not among them (git ignores it)."""
    results_dir = Path(results_dir).resolve()
    return results_dir.parent / LOG_FOLDER_NAME / results_dir.name


def check_log_folder(log_folder, results_dir) -> Path:
    """The log folder, refused when it lies inside the results folder (whose every folder is a run)."""
    log_folder, results_dir = Path(log_folder).resolve(), Path(results_dir).resolve()
    if log_folder == results_dir or results_dir in log_folder.parents:
        raise ValueError(f"--log-folder {log_folder} lies inside the results folder {results_dir}, which holds "
                         f"only run records; choose a folder beside it, e.g. {default_log_folder(results_dir)}")
    return log_folder


def make_executor(kind: str, log_folder, options: ClusterOptions):
    """A ``submitit.AutoExecutor`` for ``kind`` (a submitit choice of :data:`EXECUTORS`), configured with
    ``options``; a clear error where ``slurm`` is asked for on a machine without SLURM."""
    try:
        import submitit
    except ImportError as error:
        raise RuntimeError(f"--executor {kind} needs submitit, a dependency of lorsp: pip install 'submitit>=1.5' "
                           f"(or reinstall lorsp: pip install -e .); {error}") from error
    if kind not in _SUBMITIT_CLUSTER:
        raise ValueError(f"executor {kind!r}: expected one of {tuple(_SUBMITIT_CLUSTER)}")
    if kind == "slurm" and shutil.which("srun") is None:
        raise RuntimeError("--executor slurm needs SLURM (srun and sbatch on PATH): run it on the cluster's "
                           "login node; --executor submitit-local rehearses the same path on this machine")
    executor = submitit.AutoExecutor(folder=str(log_folder), cluster=_SUBMITIT_CLUSTER[kind])
    executor.update_parameters(**options.submitit_parameters())
    return executor


def unique_runs(by_chapter: dict[str, list[dict]]) -> list[dict]:
    """The chapters' runs, one per run key, in order; a run listed by the OOD chapter too keeps the OOD
    chapter's ``eval_on`` (its shifted test sets), so its job evaluates them as well."""
    runs: dict[str, dict] = {}
    for chapter_runs in by_chapter.values():
        for run in chapter_runs:
            key = run_key(run)
            if key not in runs or (run.get("tags", {}).get("eval_on")
                                   and not runs[key].get("tags", {}).get("eval_on")):
                runs[key] = run
    return list(runs.values())


def pending_runs(runs: Sequence[dict], results_dir) -> list[dict]:
    """The runs a job is still needed for: no final record in ``results_dir``
    (:meth:`.store.RecordStore.is_final`), or a completed one that lacks an accuracy on a shifted test set the
    run asks for (a diverged run's record is final: there is no model to evaluate)."""
    pending, store = [], RecordStore(results_dir)
    for run in runs:
        if not store.is_final(run):
            pending.append(run)
        elif store.read(run).get("status", "completed") == "completed" and not store.is_complete(run):
            pending.append(run)
    return pending


class TrainRunJob:
    """What one array task runs: :func:`.runner.train_one` (unless the run's record is already final), then
    the shifted test sets of an OOD run. Its :meth:`checkpoint` makes submitit requeue a job that reaches its
    time limit (or is preempted) with the same arguments: the engine resumes from the run's last epoch
    checkpoint (``resume=True``)."""

    def __call__(self, run: dict, results_dir: str, work_dir: str | None = None) -> dict:
        results = Path(results_dir)
        store = RecordStore(results)
        if not store.is_final(run):
            runner.train_one(run, results, work_dir=work_dir)
        record = store.read(run)
        if record.get("status", "completed") == "completed" and run.get("tags", {}).get("eval_on"):
            from .evaluation import evaluate_shifts
            evaluate_shifts([run], results, progress=False)
            record = store.read(run)
        return dict(key=run_key(run), status=record.get("status", "completed"),
                    final_accuracy=record.get("final_accuracy"))

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission
        return DelayedSubmission(self, *args, **kwargs)


def submit_runs(executor, runs: Sequence[dict], results_dir, work_dir=None) -> list[tuple[str, object]]:
    """Submit ``runs`` as one job array (``executor.map_array``); ``[(run key, job)]`` in the runs' order."""
    if not runs:
        return []
    results = str(Path(results_dir).resolve())
    work = None if work_dir is None else str(Path(work_dir).resolve())
    Path(results).mkdir(parents=True, exist_ok=True)
    jobs = executor.map_array(TrainRunJob(), list(runs), [results] * len(runs), [work] * len(runs))
    return [(run_key(run), job) for run, job in zip(runs, jobs)]


def wait_for(jobs: Sequence[tuple[str, object]], log: Callable[[str], None]) -> list[tuple[str, str]]:
    """Block until each job ends; log one line per run; return ``[(run key, error)]`` of the failed ones,
    the error's last line with the job's log file."""
    failures = []
    for index, (key, job) in enumerate(jobs, 1):
        error = job.exception()   # waits; the job's exception (with its traceback) or None
        if error is None:
            outcome = job.result()
            accuracy = outcome.get("final_accuracy")
            log(f"[{index}/{len(jobs)}] {key}: {outcome.get('status')}, job {job.job_id}"
                + ("" if accuracy is None else f", accuracy {100 * float(accuracy):.2f}%"))
            continue
        reason = error_line(error)
        failures.append((key, f"{reason} (job {job.job_id}; log {job.paths.stderr})"))
        log(f"[{index}/{len(jobs)}] {key}: FAILED in job {job.job_id}: {reason}")
    return failures


def error_line(error: BaseException) -> str:
    """One line that says why a job failed: the last line of the run's traceback for a job whose run raised
    (submitit's ``FailedJobError`` quotes it between dashed lines), else the first line of the error (a job
    that never finished: cancelled, out of memory, past its time with no requeue left)."""
    text = str(error)
    if _TRACE_MARK in text:
        text = text.split(_TRACE_MARK)[1]
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else type(error).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


#: the dashed line around the traceback in the message of submitit's FailedJobError
_TRACE_MARK = "-" * 22


def submission_lines(kind: str, jobs: Sequence[tuple[str, object]], log_folder: Path) -> list[str]:
    """What to print after submitting without ``--wait``: the job ids and how to follow them."""
    ids = sorted({str(job.job_id).split("_")[0] for _, job in jobs})
    lines = [f"submitted {len(jobs)} runs as job array {', '.join(ids)} ({kind}); logs in {log_folder}"]
    lines += [f"  {job.job_id}  {key}" for key, job in jobs]
    if kind == "slurm":
        lines.append(f"follow them: squeue -j {','.join(ids)}; afterwards: sacct -j {','.join(ids)} "
                     "--format=JobID,State,Elapsed,ExitCode")
    lines.append("a run's log: <log folder>/<job id>_0_log.out and .err; the same command again submits only "
                 "the runs whose record is not yet in the results folder (add --dry-run to see which are done)")
    return lines


def submit_chapters(by_chapter: dict[str, list[dict]], results_dir, work_dir, args: argparse.Namespace,
                    log: Callable[[str], None] = print) -> int:
    """``python -m lorsp.experiments --executor slurm|submitit-local|debug``: submit the chapters' runs that
    have no final record yet as one job array; with ``--wait`` (always with ``debug``, whose jobs run when
    waited on) block and report each failed run by its key. Exit status: 0, 1 when a run failed, 2 when
    nothing could be submitted (bad option, no SLURM)."""
    if args.max_hours is not None:
        log("error: --max-hours applies to --executor local; on a cluster each run has its --time")
        return 2
    runs = unique_runs(by_chapter)
    pending = pending_runs(runs, results_dir)
    done = len(runs) - len(pending)
    if args.max_runs is not None:
        pending = pending[:args.max_runs]
    log(f"== {', '.join(by_chapter)}: {len(runs)} runs, {done} already recorded in {results_dir}; "
        f"{len(pending)} to submit" + (f" (work folder {work_dir})" if work_dir else ""))
    if not pending:
        return 0
    try:
        log_folder = check_log_folder(args.log_folder or default_log_folder(results_dir), results_dir)
        executor = make_executor(args.executor, log_folder, options_from_args(args))
        jobs = submit_runs(executor, pending, results_dir, work_dir)
    except (ValueError, RuntimeError) as error:   # submitit's submission errors are RuntimeErrors
        log(f"error: {error}")
        return 2
    if not (args.wait or args.executor == "debug"):
        for line in submission_lines(args.executor, jobs, log_folder):
            log(line)
        return 0
    log(f"waiting for {len(jobs)} jobs (logs in {log_folder})")
    failures = wait_for(jobs, log)
    log(f"== {len(jobs) - len(failures)} runs recorded in {results_dir}, {len(failures)} failed")
    for key, reason in failures:
        log(f"failed: {key}: {reason}")
    return 1 if failures else 0
