"""Issue 24: on a CPU too, ``loader="auto"`` serves the datasets decoded once (``ImageBank``, kept on disk between
runs) and the trainer computes the same numbers as through the DataLoader; a grid builds its compiled LIF gates
before its first run."""
from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from _train_helpers import tiny_config, write_image_folder
from lorsp.data import build_dataset
from lorsp.data.gpu_pipeline import ImageBank, decoded_key
from lorsp.data.images import ArrayDataset
from lorsp.train import EpochSampler, TrainConfig, choose_loader, device_loader, prebuild_lif_gates, train

CPU = torch.device("cpu")


@pytest.fixture
def folder(tmp_path):
    return write_image_folder(tmp_path / "images", counts=(("train", 9), ("test", 4)))


@pytest.fixture(autouse=True)
def decode_cache(tmp_path, monkeypatch):
    """Every test keeps its decoded images in a folder of its own."""
    monkeypatch.setenv("LORSP_DECODE_CACHE", str(tmp_path / "decoded"))
    return tmp_path / "decoded"


def _datasets(folder, size):
    files = build_dataset(f"folder:{folder}", split="train", image_size=size)
    rng = np.random.default_rng(1)
    arrays = ArrayDataset(rng.integers(0, 256, (13, 32, 32, 3), dtype=np.uint8), [i % 3 for i in range(13)],
                          ["a", "b", "c"], image_size=size)
    return files, arrays


@pytest.mark.parametrize("size", [64, 24])  # CIFAR's upsampling and a downsampling
def test_device_batches_are_the_dataloaders_batches(folder, size):
    for dataset in _datasets(folder, size):
        sampler = EpochSampler(len(dataset), seed=5, shuffle=True)
        plain = DataLoader(dataset, batch_size=4, sampler=sampler, generator=torch.Generator().manual_seed(0))
        device = device_loader(dataset, sampler, 4, size, CPU)
        assert len(device) == len(plain)
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            batches = list(zip(plain, device, strict=True))
            for (x, y), (x_device, y_device) in batches:
                assert torch.equal(y, y_device)
                torch.testing.assert_close(x_device, x, atol=1e-6, rtol=0)


def test_decoded_images_are_kept_between_runs_and_renamed_when_a_file_changes(folder, decode_cache, monkeypatch):
    dataset = build_dataset(f"folder:{folder}", split="test", image_size=16)
    same_size = [i for i, p in enumerate(dataset.paths) if p.endswith("0.png")]  # one native size: one array
    first = ImageBank.from_dataset(dataset, same_size, cache_dir=decode_cache)
    kept = sorted(decode_cache.glob("decoded-*.npy"))
    assert len(kept) == 1 and first.stacked is not None

    def no_decoding(path):
        raise AssertionError(f"decoded {path} again")

    loaded, load = [], np.load
    monkeypatch.setattr("lorsp.data.gpu_pipeline.load_rgb", no_decoding)
    monkeypatch.setattr(np, "load", lambda *args, **kwargs: loaded.append(load(*args, **kwargs)) or loaded[-1])
    again = ImageBank.from_dataset(dataset, same_size, cache_dir=decode_cache)
    assert torch.equal(again.stacked, first.stacked) and again.labels.tolist() == first.labels.tolist()
    assert len(loaded) == 1 and isinstance(loaded[0], np.memmap)  # memory-mapped, not read into a copy
    assert again.stacked.data_ptr() == loaded[0].ctypes.data
    monkeypatch.undo()
    os.environ["LORSP_DECODE_CACHE"] = str(decode_cache)
    # another subset, or a file that changed, has another name; a damaged file is decoded again
    path = dataset.paths[same_size[0]]
    key = decoded_key([dataset.paths[i] for i in same_size])
    assert decoded_key([dataset.paths[i] for i in same_size[1:]]) != key
    os.utime(path, ns=(0, 12345))
    assert decoded_key([dataset.paths[i] for i in same_size]) != key
    damaged = decode_cache / f"{decoded_key([dataset.paths[i] for i in same_size])}.npy"
    damaged.write_bytes(b"not an array")
    rebuilt = ImageBank.from_dataset(dataset, same_size, cache_dir=decode_cache)
    assert torch.equal(rebuilt.stacked, first.stacked)
    assert np.load(damaged).shape == tuple(first.stacked.shape)  # replaced by a whole array


def test_a_cache_folder_that_cannot_be_written_is_a_warning(folder, tmp_path):
    dataset = build_dataset(f"folder:{folder}", split="test", image_size=16)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    same_size = [i for i, p in enumerate(dataset.paths) if p.endswith("0.png")]
    with pytest.warns(RuntimeWarning, match="decoded again next time"):
        bank = ImageBank.from_dataset(dataset, same_size, cache_dir=blocked / "decoded")
    assert len(bank) == len(same_size)


def test_auto_decodes_once_on_a_cpu_where_it_reproduces_the_data_and_fits(folder, monkeypatch):
    from lorsp.engine import loaders
    from lorsp.shifts import ShiftedDataset

    files, arrays = _datasets(folder, 16)
    synthetic = build_dataset("synthetic", split="train", image_size=16, per_class=1)
    assert choose_loader("auto", CPU, files, arrays) == "device"
    assert choose_loader("auto", CPU, synthetic, synthetic) == "dataloader"  # made on access
    assert choose_loader("auto", CPU, ShiftedDataset(files, "gaussian noise"), files) == "dataloader"
    assert choose_loader("auto", torch.device("mps"), files, files) == "dataloader"
    monkeypatch.setattr(loaders, "_available_memory", lambda: 4 * 100)  # a quarter: 100 bytes
    assert choose_loader("auto", CPU, files, arrays) == "dataloader"
    assert choose_loader("device", CPU, files, arrays) == "device"  # asked for: not second-guessed
    monkeypatch.setattr(loaders, "_available_memory", lambda: None)  # unknown: the fixed limit alone
    assert choose_loader("auto", CPU, files, arrays) == "device"


@pytest.mark.parametrize("method, options", [("lorsp", dict(groups=2, rank=2)), ("dropout", dict(keep_ratio=0.5))])
def test_a_short_deterministic_run_computes_the_same_with_either_loader(folder, method, options):
    """The losses of every step (``loss_trace``) and the evaluations agree to the staleness check's tolerance;
    the dropout prompter also draws its evaluation masks after the test loader, like the DataLoader's."""
    from lorsp.experiments.staleness import RTOL

    common = dict(dataset=f"folder:{folder}", train_per_class=None, test_per_class=None, epochs=2, batch_size=4,
                  deterministic=True, method=method, prompter_kwargs=options, trace_steps=100, image_size=24)
    plain = train(tiny_config(loader="dataloader", **common), progress=False)
    auto = train(tiny_config(loader="auto", **common), progress=False)
    assert plain["loader"] == "dataloader" and auto["loader"] == "device"
    assert len(plain["loss_trace"]) == len(auto["loss_trace"]) == 2 * math.ceil(18 / 4)
    for old, new in zip(plain["loss_trace"], auto["loss_trace"]):
        assert math.isclose(old, new, rel_tol=RTOL, abs_tol=1e-7), (plain["loss_trace"], auto["loss_trace"])
    for a, b in zip(plain["metrics"], auto["metrics"]):
        for key in ("train_loss", "test_loss", "test_accuracy", "sparsity"):
            if a.get(key) is not None:
                assert math.isclose(a[key], b[key], rel_tol=RTOL, abs_tol=1e-7), (key, a[key], b[key])


def test_a_grid_builds_the_gates_its_runs_need_together(monkeypatch):
    from lorsp.prompters import fused

    built, cached = [], set()
    monkeypatch.setattr(fused, "build_compiled_gate", lambda *shape: built.append(shape) or cached.add(shape))
    monkeypatch.setattr(fused, "compiled_gate_cached", lambda *shape: shape in cached)
    monkeypatch.setattr(fused, "compile_available", lambda device: True)

    def desk(**overrides):  # a desk CIFAR-10 run: 3 epochs of 1,600 images per class at batch 64 (750 steps)
        values = dict(dataset="cifar10", method="lorsp", epochs=3, batch_size=64, image_size=64, device="cpu",
                      train_per_class=1600)
        return TrainConfig(**{**values, **overrides})

    assert prebuild_lif_gates([desk()]) == [] and built == []  # one 750-step run does not repay a build
    shapes = prebuild_lif_gates([desk(seed=0), desk(seed=1), desk(method="lorvp"), desk(method="none")])
    assert shapes == built == [(4, 4, 3, 64, 64)]  # two LoRSP runs: 1,500 steps of one shape
    assert prebuild_lif_gates([desk(seed=0), desk(seed=1)]) == []  # built already
    assert prebuild_lif_gates([desk(prompter_kwargs=dict(backend="eager"))] * 2) == []
    assert prebuild_lif_gates([desk(prompter_kwargs=dict(rank=2), max_steps=400)] * 2) == []  # 400 + 400 steps
    assert prebuild_lif_gates([desk(prompter_kwargs=dict(rank=2))] * 2) == [(4, 2, 3, 64, 64)]

    def failing(*shape):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(fused, "build_compiled_gate", failing)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert prebuild_lif_gates([desk(prompter_kwargs=dict(groups=8))] * 2) == []
    assert any("eager gate" in str(w.message) for w in caught)
