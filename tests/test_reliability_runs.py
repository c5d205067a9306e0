"""Interrupted and diverging runs of the real ``python -m lorsp train`` (CPU, deterministic, tiny):

- a run killed with SIGKILL during an epoch, and one killed during a checkpoint write, resume (``--resume``)
  from their last complete checkpoint and end with exactly the per-epoch metrics of an uninterrupted run;
- no checkpoint or record is ever half-written: what is left after a kill loads (or is a hidden temporary
  file that every reader ignores);
- concurrent writers of run records into one folder lose none;
- an injected non-finite loss stops the run (exit status 3, a clear message), keeps the last good checkpoint
  and writes the record with ``status: "failed"`` and the reason.

Test hooks used (documented in ``lorsp.train.TrainConfig`` and ``lorsp.checkpoint``):
``LORSP_FAULT_INJECTION='{"sleep_per_batch": s}'`` slows each batch down so that a kill lands inside an
epoch; ``LORSP_FAULT_CHECKPOINT_SLEEP=s`` pauses inside each checkpoint write, after the temporary file
is complete and before it replaces the checkpoint; ``LORSP_FAULT_INJECTION='{"nonfinite_loss_at": [epoch,
step]}'`` makes that step's loss NaN.

The scenarios run at the same time (one module fixture: two ``python -m lorsp`` processes that get killed, the
reference and the diverging run in this process) to keep the file well under 90 s on 2 cores.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from lorsp import results
from lorsp.checkpoint import CHECKPOINT_NAME, atomic_write_bytes, load_checkpoint
from lorsp.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 2
TRAIN_ARGS = ["--backbone", "resnet10t", "--random-init", "--dataset", "synthetic:2", "--method", "lorsp",
              "--groups", "2", "--rank", "2", "--image-size", "32", "--train-per-class", "4",
              "--test-per-class", "2", "--epochs", str(EPOCHS), "--batch-size", "4", "--seed", "3",
              "--deterministic", "--device", "cpu", "--no-progress"]
TIMING_KEYS = {"epoch_seconds", "train_seconds", "images_per_second"}
TIMEOUT = 300


def reference_config(**overrides) -> TrainConfig:
    """The in-process equivalent of TRAIN_ARGS."""
    values = dict(backbone="resnet10t", random_init=True, dataset="synthetic:2", method="lorsp",
                  prompter_kwargs={"groups": 2, "rank": 2}, image_size=32, train_per_class=4, test_per_class=2,
                  epochs=EPOCHS, batch_size=4, seed=3, deterministic=True, device="cpu")
    values.update(overrides)
    return TrainConfig(**values)


def metrics_of(rows):
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def launch(run_dir: Path, *extra: str, env_extra: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("LORSP_FAULT_INJECTION", None)
    env.pop("LORSP_FAULT_CHECKPOINT_SLEEP", None)
    env.update(env_extra or {})
    return subprocess.Popen([sys.executable, "-m", "lorsp", "train", *TRAIN_ARGS, "--output", str(run_dir), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO))


def temp_files(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.glob(".*") if p.name.endswith(".tmp"))


def kill_when(process: subprocess.Popen, condition, what: str) -> dict:
    """SIGKILL ``process`` as soon as ``condition()`` holds; returns what happened."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out, err = process.communicate()
            return {"killed": False, "error": f"the run ended (status {process.returncode}) before {what}:\n{err}"}
        if condition():
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
            return {"killed": True, "returncode": process.returncode}
        time.sleep(0.02)
    process.kill()
    process.wait()
    return {"killed": False, "error": f"timed out waiting for {what}"}


def snapshot(run_dir: Path) -> dict:
    """What a reader finds in the run directory right after the kill."""
    state = {"files": sorted(p.name for p in run_dir.iterdir()), "temps": [p.name for p in temp_files(run_dir)]}
    try:
        checkpoint = load_checkpoint(run_dir)
        state["checkpoint_epoch"] = checkpoint["epoch"]
        state["checkpoint_metrics"] = metrics_of(checkpoint["metrics"])
    except (FileNotFoundError, ValueError) as error:
        state["checkpoint_error"] = str(error)
    return state


def run_cli_in_process(argv: list[str], env: dict) -> dict:
    """``lorsp.cli.main(argv)`` with ``env`` set, capturing its exit status and output."""
    import contextlib
    import io

    from lorsp.cli import main
    saved = {key: os.environ.get(key) for key in env}
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.update(env)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return {"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    dirs = {name: base / name for name in ("epoch_kill", "write_kill", "diverged")}
    processes = {
        # each batch sleeps 0.3 s: the kill lands inside epoch 2, right after checkpoint 1 was written
        "epoch_kill": launch(dirs["epoch_kill"], env_extra={"LORSP_FAULT_INJECTION": '{"sleep_per_batch": 0.3}'}),
        # each checkpoint write pauses 2 s between the complete temporary file and the rename
        "write_kill": launch(dirs["write_kill"], env_extra={"LORSP_FAULT_CHECKPOINT_SLEEP": "2"}),
    }
    kills: dict[str, dict] = {}

    def epoch_kill():
        d = dirs["epoch_kill"]
        kills["epoch_kill"] = kill_when(processes["epoch_kill"], lambda: (d / CHECKPOINT_NAME).exists(),
                                        "checkpoint 1")
        kills["epoch_kill"]["after"] = snapshot(d)

    def write_kill():
        d = dirs["write_kill"]  # checkpoint 1 complete and the temporary file of checkpoint 2 written
        kills["write_kill"] = kill_when(processes["write_kill"],
                                        lambda: (d / CHECKPOINT_NAME).exists() and bool(temp_files(d)),
                                        "the write of checkpoint 2")
        kills["write_kill"]["after"] = snapshot(d)

    threads = [threading.Thread(target=epoch_kill), threading.Thread(target=write_kill)]
    for thread in threads:
        thread.start()
    # the uninterrupted reference, in this process, while the others run
    reference = train(reference_config(output=str(base / "reference")), progress=False)
    # the diverging run through the command line, in this process too (no second interpreter to start)
    diverged = run_cli_in_process(["train", *TRAIN_ARGS, "--output", str(dirs["diverged"])],
                                  {"LORSP_FAULT_INJECTION": '{"nonfinite_loss_at": [2, 1]}'})
    diverged["after"] = snapshot(dirs["diverged"])
    for thread in threads:
        thread.join()
    # resume both killed runs at once
    resumes = {name: launch(dirs[name], "--resume", "--json") for name in ("epoch_kill", "write_kill")
               if kills[name].get("killed")}
    resumed = {}
    for name, process in resumes.items():
        out, err = process.communicate(timeout=TIMEOUT)
        resumed[name] = {"returncode": process.returncode, "stdout": out, "stderr": err}
    return {"dirs": dirs, "kills": kills, "reference": reference, "diverged": diverged, "resumed": resumed}


def _resumed_record(scenarios, name):
    kill = scenarios["kills"][name]
    assert kill.get("killed"), kill.get("error")
    result = scenarios["resumed"][name]
    assert result["returncode"] == 0, result["stderr"][-3000:]
    return json.loads(result["stdout"])


def test_reference_run_is_complete(scenarios):
    reference = scenarios["reference"]
    assert reference["status"] == "completed" and reference["epochs_completed"] == EPOCHS
    assert reference["config"]["deterministic"] is True


@pytest.mark.parametrize("name", ["epoch_kill", "write_kill"])
def test_killed_run_leaves_only_its_last_complete_checkpoint(scenarios, name):
    kill = scenarios["kills"][name]
    assert kill.get("killed"), kill.get("error")
    assert kill["returncode"] == -signal.SIGKILL
    after = kill["after"]
    assert "checkpoint_error" not in after, after
    assert after["checkpoint_epoch"] == 1, after  # killed inside epoch 2 / the write of checkpoint 2
    assert after["checkpoint_metrics"] == metrics_of(scenarios["reference"]["metrics"])[:1]
    assert "record.json" not in after["files"]  # a killed run writes no record (nothing half-written either)
    visible = [f for f in after["files"] if not f.startswith(".")]
    assert visible == [CHECKPOINT_NAME], after["files"]
    if name == "write_kill":
        # the interrupted write left its (hidden) temporary file; the checkpoint itself is the old, whole one
        assert len(after["temps"]) == 1 and after["temps"][0].startswith(f".{CHECKPOINT_NAME}."), after
    else:
        assert after["temps"] == []


@pytest.mark.parametrize("name", ["epoch_kill", "write_kill"])
def test_resumed_run_ends_with_the_metrics_of_an_uninterrupted_run(scenarios, name):
    record = _resumed_record(scenarios, name)
    reference = scenarios["reference"]
    assert record["status"] == "completed" and record["resumed_from_epoch"] == 1
    assert record["epochs_completed"] == EPOCHS
    got, want = metrics_of(record["metrics"]), metrics_of(reference["metrics"])
    assert [row["epoch"] for row in got] == list(range(1, EPOCHS + 1))
    for row, expected in zip(got, want):
        assert row.keys() == expected.keys()
        for key, value in expected.items():
            if isinstance(value, float):
                assert row[key] == pytest.approx(value, rel=1e-6, abs=1e-6), (row["epoch"], key)
            else:
                assert row[key] == value, (row["epoch"], key)
    assert record["final_accuracy"] == pytest.approx(reference["final_accuracy"], abs=1e-12)
    assert record["best_accuracy"] == pytest.approx(reference["best_accuracy"], abs=1e-12)
    # the same trained prompt and head as the uninterrupted run
    final = load_checkpoint(scenarios["dirs"][name])
    ref = load_checkpoint(Path(reference["run_dir"]))
    assert final["epoch"] == ref["epoch"] == EPOCHS
    for key, value in ref["model"].items():
        assert torch.allclose(final["model"][key].float(), value.float(), rtol=1e-6, atol=1e-7), key


@pytest.mark.parametrize("name", ["epoch_kill", "write_kill"])
def test_after_resume_every_visible_file_is_whole(scenarios, name):
    _resumed_record(scenarios, name)
    run_dir = scenarios["dirs"][name]
    visible = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
    assert visible == sorted([CHECKPOINT_NAME, "record.json", "prompt.safetensors"]), visible
    assert load_checkpoint(run_dir)["epoch"] == EPOCHS
    frame = results.load(run_dir)  # hidden temporary files are not records
    assert len(frame) == 1 and frame.loc[0, "status"] == "completed"
    from safetensors.torch import load_file
    assert load_file(run_dir / "prompt.safetensors")


def test_injected_nonfinite_loss_stops_the_run_keeping_checkpoint_and_failed_record(scenarios):
    result = scenarios["diverged"]
    assert result["returncode"] == 3, result["stderr"][-3000:]
    assert "diverged" in result["stderr"] and "non-finite training loss" in result["stderr"]
    assert "epoch 2, step 1" in result["stderr"] and "Traceback" not in result["stderr"]
    after = result["after"]
    assert after.get("checkpoint_epoch") == 1, after  # the last good one
    assert after["checkpoint_metrics"] == metrics_of(scenarios["reference"]["metrics"])[:1]
    checkpoint = load_checkpoint(scenarios["dirs"]["diverged"])
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())
    record = json.loads((scenarios["dirs"]["diverged"] / "record.json").read_text())
    assert record["status"] == "failed"
    assert "DivergenceError" in record["reason"] and "non-finite training loss" in record["reason"]
    assert record["epochs_completed"] == 1 and metrics_of(record["metrics"]) == after["checkpoint_metrics"]
    assert after["temps"] == []


# ---------------------------------------------------------------------------------------------------------
# partial files are never mistaken for whole ones (in process)
# ---------------------------------------------------------------------------------------------------------
def test_stray_partial_temporary_files_are_ignored_and_a_diverged_run_resumes(scenarios, tmp_path):
    import shutil
    run_dir = tmp_path / "run"
    shutil.copytree(scenarios["dirs"]["diverged"], run_dir)
    (run_dir / "record.json").unlink()
    # a kill in the middle of writing: half a checkpoint and half a record in temporary files
    whole = (run_dir / CHECKPOINT_NAME).read_bytes()
    (run_dir / f".{CHECKPOINT_NAME}.abc123.tmp").write_bytes(whole[: len(whole) // 2])
    (run_dir / ".record.json.def456.tmp").write_text('{"config": {"backbone": "res')
    assert load_checkpoint(run_dir)["epoch"] == 1
    assert results.load(run_dir).empty
    # ... and the diverged run's last good checkpoint is usable: without the fault, resuming it reproduces
    # the uninterrupted run
    record = train(reference_config(output=str(run_dir), resume=True), progress=False)
    assert record["status"] == "completed" and record["resumed_from_epoch"] == 1
    assert metrics_of(record["metrics"]) == metrics_of(scenarios["reference"]["metrics"])
    assert len(results.load(run_dir)) == 1


def test_a_truncated_checkpoint_is_refused_naming_the_file(tmp_path):
    """If something other than lorsp cut a checkpoint short, resuming fails clearly instead of loading junk."""
    atomic_write_bytes(tmp_path / CHECKPOINT_NAME, b"PK\x03\x04 half a zip")
    with pytest.raises(ValueError, match=CHECKPOINT_NAME):
        load_checkpoint(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# concurrent record writers
# ---------------------------------------------------------------------------------------------------------
def _write_records(folder: str, who: str, n: int) -> None:
    for i in range(n):
        results.write_record({"config": {"backbone": "b", "dataset": "d", "method": who, "seed": i},
                              "status": "completed", "final_accuracy": i / n, "payload": "x" * 20000}, folder)
        results.write_record({"config": {"backbone": "b", "dataset": "d", "method": who, "seed": i}, "writer": who,
                              "payload": who * 20000}, folder, name="shared.json")


def test_two_processes_writing_records_into_one_folder_lose_neither(tmp_path):
    import multiprocessing
    folder = tmp_path / "results"
    n = 40
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    writers = [context.Process(target=_write_records, args=(str(folder), who, n)) for who in ("first", "second")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=TIMEOUT)
        assert writer.exitcode == 0
    files = sorted(folder.glob("*.json"))
    assert len(files) == 2 * n + 1 and not list(folder.glob(".*"))  # every record, no temporary file left
    frame = results.load(folder)
    unique = frame[frame["record_path"] != str(folder / "shared.json")]
    assert sorted(unique.groupby("method")["seed"].apply(sorted).tolist()) == [list(range(n))] * 2
    # the record both wrote under one name is one whole record, the last one of one writer
    shared = json.loads((folder / "shared.json").read_text())
    assert shared["writer"] in ("first", "second") and shared["payload"] == shared["writer"] * 20000


def test_threads_writing_records_into_one_folder_lose_none(tmp_path):
    errors = []

    def write_many(who):
        try:
            for i in range(25):
                results.write_record({"config": {"backbone": "b", "dataset": "d", "method": who, "seed": i}}, tmp_path)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=write_many, args=(f"t{k}",)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    frame = results.load(tmp_path)
    assert len(frame) == 100 and frame.groupby("method").size().tolist() == [25] * 4
