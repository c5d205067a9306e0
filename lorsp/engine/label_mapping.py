"""Label mapping (ILM-VP's iterative, FLM's frequency-based): when it falls due and its update over the training set."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from .. import distributed as distrib
from .building import call_with_supported, freeze_backbone_mode
from .config import TrainConfig
from .devices import autocast
from .loaders import worker_init
from .progress import progress_bar
from .sampling import EpochSampler


LABEL_MAPPING_HEADS = ("ilm", "flm")


def label_mapping_due(model: nn.Module, config: TrainConfig, epoch: int) -> bool:
    """ILM: every ``label_mapping_interval`` epochs from epoch 1; FLM: once, at epoch 1 (kept in checkpoints)."""
    if config.head not in LABEL_MAPPING_HEADS or not hasattr(model, "update_label_mapping"):
        return False
    if config.head == "flm":
        return epoch == 1
    return (epoch - 1) % config.label_mapping_interval == 0


@torch.no_grad()
def update_label_mapping(model: nn.Module, dataset, config: TrainConfig, device: torch.device, amp_dtype,
                          epoch: int, ctx: distrib.DistContext, progress: bool, bank=None):
    """``model.update_label_mapping(source_logits, labels, epoch=...)`` over the whole training set.

    The frozen source classifier's logits of the prompted training images are computed in dataset order
    (each rank its strided shard, then gathered), so every rank derives the same mapping. With ``bank`` (the
    training set decoded once, ``loader="device"``) the images come from it instead of the DataLoader.
    """
    from ..data.gpu_pipeline import DeviceBatchLoader

    sampler = EpochSampler(len(dataset), shuffle=False, rank=ctx.rank, world_size=ctx.world_size)
    batch_size = max(1, config.batch_size // ctx.world_size)
    if bank is not None:
        loader = DeviceBatchLoader(bank, batch_size, config.image_size, device, sampler=sampler,
                                   draw_like_dataloader=True)  # as the DataLoader below, which has no generator
    else:
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=config.num_workers,
                            pin_memory=device.type == "cuda", worker_init_fn=worker_init)
    was_training = model.training
    model.eval()
    logits, labels = [], []
    forward = model.source_logits if hasattr(model, "source_logits") else model
    for x, y in progress_bar(loader, progress, desc="label mapping", unit="batch", leave=False):
        x = x.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits.append(forward(x).float())
        labels.append(torch.as_tensor(y).to(device))
    model.train(was_training)
    freeze_backbone_mode(model)
    logits = distrib.all_gather_rows(torch.cat(logits), len(dataset), ctx)
    labels = distrib.all_gather_rows(torch.cat(labels), len(dataset), ctx)
    return call_with_supported(model.update_label_mapping, logits, labels, epoch=epoch)
