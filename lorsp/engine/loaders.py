"""Feeding the images: the choice between a DataLoader and the decode-once device loader
(:mod:`lorsp.data.gpu_pipeline`), the device loader itself, and the DataLoader workers' seeds."""
from __future__ import annotations

import random

import numpy as np
import torch

from .config import LOADERS


DEVICE_LOADER_AUTO_MAX_BYTES = 4 << 30  # loader="auto" decodes a dataset once up to this many uint8 bytes


def choose_loader(loader: str, device: torch.device, train_set, test_set) -> str:
    """``"dataloader"`` or ``"device"`` for :attr:`TrainConfig.loader` (see there); ``"device"`` on a dataset that
    it cannot serve is a ValueError saying why. ``"auto"`` picks ``"device"`` on CUDA and on a CPU when the bank
    reproduces both datasets (:meth:`~lorsp.data.gpu_pipeline.ImageBank.cannot_reproduce`) and their decoded
    images fit: at most :data:`DEVICE_LOADER_AUTO_MAX_BYTES`, and on a CPU at most a quarter of the memory
    available now (:func:`_available_memory`)."""
    from ..data.gpu_pipeline import ImageBank

    if loader not in LOADERS:
        raise ValueError(f"loader must be one of {list(LOADERS)}, got {loader!r}")
    if loader == "dataloader":
        return loader
    obstacle = ImageBank.cannot_reproduce(train_set) or ImageBank.cannot_reproduce(test_set)
    if loader == "device":
        if obstacle:
            raise ValueError(f"TrainConfig.loader='device' (--loader device) cannot serve this dataset: {obstacle}; "
                             f"use loader='dataloader'")
        return loader
    if device.type not in ("cuda", "cpu") or obstacle:
        return "dataloader"
    sizes = [ImageBank.estimate_nbytes(d) for d in (train_set, test_set)]
    if None in sizes:
        return "dataloader"
    limit = DEVICE_LOADER_AUTO_MAX_BYTES
    if device.type == "cpu":
        available = _available_memory()
        limit = min(limit, available // 4) if available is not None else limit
    return "device" if sum(sizes) <= limit else "dataloader"


def _available_memory() -> int | None:
    """The bytes of memory available to new allocations now (Linux ``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def device_loader(dataset, sampler, batch_size: int, image_size: int, device: torch.device,
                   draw_like_dataloader: bool = False):
    """A :class:`~lorsp.data.gpu_pipeline.DeviceBatchLoader` over ``dataset`` decoded once, in ``sampler``'s
    order. Image files are decoded once per machine: the decoded images are kept in
    :func:`~lorsp.data.gpu_pipeline.decode_cache_dir` and memory-mapped by every later run on the same files
    (the seeds of a grid, every epoch). On CUDA the uint8 images live on the GPU when they take at most a quarter
    of its free memory, else in pinned host memory; on a CPU they stay in host memory (resized batch by batch).
    ``draw_like_dataloader``: see :class:`~lorsp.data.gpu_pipeline.DeviceBatchLoader` (the loaders that stand
    for a DataLoader without a generator: evaluation's, label mapping's)."""
    from ..data.gpu_pipeline import DeviceBatchLoader, ImageBank, decode_cache_dir

    bank = ImageBank.from_dataset(dataset, cache_dir=decode_cache_dir())
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        bank = bank.to(device) if bank.nbytes <= free // 4 else bank.to(device, pin_memory=True)
    return DeviceBatchLoader(bank, batch_size, image_size, device, sampler=sampler,
                             draw_like_dataloader=draw_like_dataloader)


def worker_init(worker_id: int) -> None:
    """Seed python's and numpy's generators in a DataLoader worker from the seed torch gave it."""
    info = torch.utils.data.get_worker_info()
    seed = info.seed % 2**32 if info is not None else worker_id
    random.seed(seed)
    np.random.seed(seed)
