"""``python -m lorsp.experiments --executor ...``: a grid's runs handed to submitit (lorsp.experiments.executors).

The jobs really run here through submitit's LocalExecutor (one process per run) and DebugExecutor (in this
process) on tiny synthetic runs; SLURM itself is stood in for by an ``sbatch`` on PATH that keeps the batch
script it is given, so the test reads what the cluster would have been asked for.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from lorsp import experiments as ex
from lorsp.experiments import executors

pytest.importorskip("submitit")
for _module in ("lorsp.train", "lorsp.data", "lorsp.backbones"):
    pytest.importorskip(_module)

REPO = Path(__file__).resolve().parents[1]


def _tiny_setup(tmp_path):
    """The smoke setup on an empty data root (synthetic data, random init), shrunk to seconds per run."""
    setup = ex.scale_setup("smoke", data_root=tmp_path / "no-data")
    setup.datasets = {"synthetic": dict(train_per_class=2, test_per_class=2)}
    setup.image_size, setup.epochs, setup.batch_size, setup.seeds = 32, 2, 8, (0,)
    return setup


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """``main`` builds the tiny setup whatever --scale says; the results folder is <tmp>/results/smoke."""
    setup = _tiny_setup(tmp_path)
    monkeypatch.setattr(ex.runner, "scale_setup", lambda scale=None, **kwargs: setup)
    results, work = tmp_path / "results" / "smoke", tmp_path / "runs" / "smoke"
    argv = ["--scale", "smoke", "--out", str(results), "--work", str(work)]
    return setup, results, work, argv


def _mtimes(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("record.json")}


def test_submitit_local_reports_failed_runs_by_key_then_trains_and_resubmits_nothing(tiny, monkeypatch, capsys):
    setup, results, work, argv = tiny
    argv += ["--chapter", "prompt_gallery", "--executor", "submitit-local", "--wait", "--time", "10"]
    keys = [ex.run_key(run) for run in ex.grid("prompt_gallery", setup=setup)]
    assert len(keys) == 2
    # the first run's job is killed after its first epoch: the failure is named by its run key, no record
    monkeypatch.setenv("LORSP_FAULT_INJECTION", json.dumps({"raise_after_epoch": 1}))
    assert ex.main(argv + ["--max-runs", "1"]) == 1
    out = capsys.readouterr().out
    assert f"failed: {keys[0]}: " in out and "fault injection" in out.split(f"failed: {keys[0]}: ")[1].splitlines()[0]
    assert (work / keys[0] / "checkpoint.pt").is_file()
    assert not results.exists() or not list(results.rglob("record.json"))
    monkeypatch.delenv("LORSP_FAULT_INJECTION")
    # again: both submitted; each trains in its own process (the first resumes from its checkpoint) and
    # publishes its record
    assert ex.main(argv) == 0
    out = capsys.readouterr().out
    assert "2 to submit" in out and "2 runs recorded" in out
    for key, resumed in zip(keys, (1, None)):
        record = json.loads((results / key / "record.json").read_text())
        assert record["status"] == "completed" and record.get("resumed_from_epoch") == resumed
        assert record["experiment"]["key"] == key and "run_dir" not in record   # no path of the training machine
    logs = results.parent / "submitit-logs" / "smoke"
    assert logs.is_dir() and sorted(p.name for p in results.iterdir()) == sorted(keys)   # no logs among runs
    # a third time: every record is final, nothing is submitted and nothing is rewritten
    before, log_files = _mtimes(results), sorted(logs.rglob("*"))
    assert ex.main(argv) == 0
    assert "0 to submit" in capsys.readouterr().out
    assert _mtimes(results) == before and sorted(logs.rglob("*")) == log_files


def test_debug_executor_trains_the_ood_runs_with_their_shifted_accuracies(tiny, capsys):
    setup, results, work, argv = tiny
    assert ex.main(argv + ["--chapter", "ood", "--executor", "debug", "--max-runs", "1"]) == 0   # debug waits
    runs = ex.grid("ood", setup=setup)
    done = [run for run in runs if (results / ex.run_key(run) / "record.json").is_file()]
    assert [ex.run_key(r) for r in done] == [ex.run_key(runs[0])]
    for run in done:
        shifted = json.loads((results / ex.run_key(run) / "record.json").read_text())["experiment"]["shifted"]
        assert set(shifted) == set(run["tags"]["eval_on"]) and all(0 <= v <= 1 for v in shifted.values())
    assert executors.pending_runs(runs, results) == runs[1:]
    out = capsys.readouterr().out
    assert f"{len(runs)} runs, 0 already recorded" in out and "1 to submit" in out


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``srun`` and ``sbatch`` on PATH; sbatch keeps the batch script it gets and answers as SLURM does."""
    bin_dir, scripts = tmp_path / "bin", tmp_path / "sbatch-scripts"
    bin_dir.mkdir()
    scripts.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" "{scripts}/$(date +%s%N).sh"\n'
                                    'echo "Submitted batch job 4242"\n')
    for name in ("srun", "sbatch"):
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return scripts


def test_slurm_gets_one_array_with_the_asked_resources_and_returns_the_job_ids(tiny, fake_slurm, capsys):
    setup, results, work, argv = tiny
    argv += ["--chapter", "prompt_gallery", "--executor", "slurm", "--partition", "gpu", "--gpus-per-run", "1",
             "--time", "60", "--cpus-per-task", "8", "--mem", "32", "--array-parallelism", "1",
             "--account", "proj42"]
    assert ex.main(argv) == 0
    out = capsys.readouterr().out
    (script,) = list(fake_slurm.iterdir())   # one sbatch call: the grid is one array
    flags = {line for line in script.read_text().splitlines() if line.startswith("#SBATCH")}
    expected = {"--partition=gpu", "--time=60", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=32GB",
                "--array=0-1%1", "--account=proj42", "--job-name=lorsp"}
    assert {f"#SBATCH {flag}" for flag in expected} <= flags
    keys = [ex.run_key(run) for run in ex.grid("prompt_gallery", setup=setup)]
    assert "squeue -j 4242" in out and "4242_0  " + keys[0] in out and "4242_1  " + keys[1] in out
    # each array task carries its run, the results folder and the work folder
    from submitit.core.utils import DelayedSubmission
    logs = results.parent / "submitit-logs" / "smoke"
    for index, key in enumerate(keys):
        submission = DelayedSubmission.load(logs / f"4242_{index}_submitted.pkl")
        run, results_arg, work_arg = submission.args
        assert ex.run_key(run) == key and results_arg == str(results.resolve()) and work_arg == str(work.resolve())
        assert isinstance(submission.function, executors.TrainRunJob)
    assert not list(results.rglob("record.json"))   # nothing ran


def test_slurm_options_reach_the_submitit_executor(tmp_path, fake_slurm):
    options = executors.ClusterOptions(partition="a100", time_minutes=90, gpus_per_run=2, cpus_per_task=4,
                                       mem_gb=16.5, array_parallelism=3)
    executor = executors.make_executor("slurm", tmp_path / "logs", options)
    parameters = executor._executor.parameters   # what the sbatch script is written from
    assert parameters["partition"] == "a100" and parameters["time"] == 90 and parameters["gpus_per_node"] == 2
    assert parameters["cpus_per_task"] == 4 and parameters["mem"] == "16896MB" and parameters["array_parallelism"] == 3


def test_slurm_without_slurm_and_bad_options_are_clear_errors(tiny, monkeypatch, capsys):
    setup, results, work, argv = tiny
    monkeypatch.setenv("PATH", str(Path(os.__file__).parent))   # no srun there
    assert ex.main(argv + ["--chapter", "prompt_gallery", "--executor", "slurm"]) == 2
    assert "needs SLURM (srun and sbatch on PATH)" in capsys.readouterr().out
    assert ex.main(argv + ["--chapter", "prompt_gallery", "--executor", "debug", "--time", "0"]) == 2
    assert "--time 0: expected a positive number" in capsys.readouterr().out
    inside = results / "logs"
    assert ex.main(argv + ["--chapter", "prompt_gallery", "--executor", "debug", "--log-folder", str(inside)]) == 2
    assert "lies inside the results folder" in capsys.readouterr().out
    assert not list(results.rglob("record.json"))


def test_the_default_log_folder_is_beside_the_results_and_ignored_by_git():
    folder = executors.default_log_folder(REPO / "results" / "mini")
    assert folder == REPO / "results" / "submitit-logs" / "mini"
    path = str((folder / "4242_0_log.out").relative_to(REPO))
    result = subprocess.run(["git", "check-ignore", path], cwd=REPO, capture_output=True, text=True)
    if result.returncode == 128:
        pytest.skip("not a git checkout")
    assert result.stdout.strip() == path


def test_unique_runs_keeps_one_run_per_key_with_the_ood_evaluations(tmp_path):
    setup = _tiny_setup(tmp_path)
    ood = ex.grid("ood", setup=setup)
    shared = {**ood[0], "tags": {"chapter": "backbones"}}   # the same training run, listed without eval_on
    runs = executors.unique_runs({"backbones": [shared], "ood": ood})
    assert [ex.run_key(r) for r in runs] == [ex.run_key(r) for r in ood]
    assert runs[0]["tags"]["eval_on"] == ood[0]["tags"]["eval_on"]


def test_a_timed_out_job_is_requeued_with_the_same_run():
    from submitit.core.utils import DelayedSubmission
    job, run = executors.TrainRunJob(), {"dataset": "synthetic", "seed": 0, "tags": {}}
    again = job.checkpoint(run, "/r", None)   # what submitit calls at the time limit, before requeueing
    assert isinstance(again, DelayedSubmission) and again.function is job and again.args == (run, "/r", None)
