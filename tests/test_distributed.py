"""torchrun with 2 CPU processes (gloo, DistributedDataParallel) trains and agrees with 1 process, through the
DataLoader and through the decode-once device loader.

Stated tolerance: the two processes see exactly the single process's global batches (EpochSampler) and DDP
averages their equal-size per-rank gradients, so only the floating-point summation order differs:
losses agree within 1e-4 (absolute), accuracies within one test image.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch.distributed as dist

import _train_helpers as helpers

from lorsp.train import train

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

LOSS_TOL = 1e-4


def _torchrun(tmp_path, config, dataset: str, *extra: str) -> dict:
    """The record of ``lorsp train`` under torchrun with 2 CPU processes, settings as ``config``."""
    out = tmp_path / "ddp"
    launcher = helpers.cli_command()[1:]  # ["-m", "lorsp"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *launcher,
               "train", "--backbone", config.backbone, "--dataset", dataset, "--method", "lorsp",
               "--groups", "2", "--rank", "2", "--epochs", "2", "--batch-size", "8", "--lr", str(config.lr),
               "--image-size", "32", "--device", "cpu", "--random-init", "--deterministic", "--no-progress",
               "--output", str(out), *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert len(list(out.glob("*.json"))) == 1  # rank 0 alone wrote
    return json.loads((out / "record.json").read_text())


def _assert_agree(record: dict, single: dict) -> None:
    assert record["world_size"] == 2 and record["status"] == "completed"
    n_test = single["data"]["n_test"]
    assert record["data"]["n_test"] == n_test
    for ddp_row, one_row in zip(record["metrics"], single["metrics"]):
        assert ddp_row["train_images"] == one_row["train_images"] == single["data"]["n_train"]
        assert ddp_row["test_images"] == n_test  # every test image counted once across ranks
        assert abs(ddp_row["train_loss"] - one_row["train_loss"]) < LOSS_TOL
        assert abs(ddp_row["test_loss"] - one_row["test_loss"]) < LOSS_TOL
        assert abs(ddp_row["test_accuracy"] - one_row["test_accuracy"]) <= 1 / n_test + 1e-9
        assert abs(ddp_row["sparsity"] - one_row["sparsity"]) < 1e-3


def test_torchrun_two_cpu_processes_agree_with_one(tmp_path):
    config = helpers.tiny_config(method="lorsp", epochs=2, batch_size=8, train_per_class=4, test_per_class=2,
                                  deterministic=True)  # synthetic: 16 train images = 2 global batches
    single = train(config, progress=False)
    record = _torchrun(tmp_path, config, "synthetic", "--train-per-class", "4", "--test-per-class", "2")
    _assert_agree(record, single)


def test_torchrun_with_the_device_loader_agrees_with_one_process_through_the_dataloader(tmp_path):
    # 16 train images = 2 global batches; 6 test images
    folder = helpers.write_image_folder(tmp_path / "images", counts=(("train", 8), ("test", 3)))
    dataset = f"folder:{folder}"
    config = helpers.tiny_config(method="lorsp", epochs=2, batch_size=8, dataset=dataset, train_per_class=None,
                                  test_per_class=None, deterministic=True, loader="dataloader")
    single = train(config, progress=False)
    record = _torchrun(tmp_path, config, dataset, "--loader", "device")
    assert record["loader"] == "device" and single["loader"] == "dataloader"
    _assert_agree(record, single)
