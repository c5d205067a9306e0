"""Linear probing with cached features: the frozen backbone's features computed once (in memory, in the run
directory, or in a folder shared by runs on the same images) and the head trained on them."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from .. import distributed as distrib
from .building import backbone_fingerprint
from .devices import autocast
from .loaders import worker_init
from .progress import progress_bar
from .sampling import EpochSampler


FEATURES_ON_DEVICE_MAX_BYTES = 2 << 30  # LP feature caches larger than this live in host memory


@torch.no_grad()
def _extract_features(model, dataset, config, device, amp_dtype, ctx, progress, desc) -> torch.Tensor:
    """Features of every image of ``dataset`` (rows rank::world computed here, gathered across ranks)."""
    sampler = EpochSampler(len(dataset), shuffle=False, rank=ctx.rank, world_size=ctx.world_size)
    loader = DataLoader(dataset, batch_size=max(1, config.batch_size // ctx.world_size), sampler=sampler,
                        num_workers=config.num_workers, pin_memory=device.type == "cuda",
                        worker_init_fn=worker_init)
    chunks = []
    bar = progress_bar(loader, progress, desc=desc, unit="batch", leave=False)
    for x, _ in bar:
        x = x.to(device, non_blocking=True)
        if device.type == "cuda" and config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            chunks.append(model.features(x).float())
    local = torch.cat(chunks) if chunks else torch.empty(0)
    return distrib.all_gather_rows(local, len(dataset), ctx)


def cached_features(model, dataset, split, config, info, device, amp_dtype, ctx, progress, run_dir):
    """The frozen backbone's features of ``dataset`` and its labels: read from a cache file whose key matches,
    else computed once (and written where a cache file is asked for). Two files may hold them: the run's own
    (``cache_features="disk"``: ``<output>/features_<split>.pt``) and one shared by runs
    (``feature_cache_dir``: named by :func:`_shared_feature_key`, so that runs on the same images share it)."""
    key = {"backbone": config.backbone, "weights_source": str(getattr(info, "weights_source", None)),
           "weights_sha256": getattr(info, "weights_sha256", None),
           "weights": config.weights, "dataset": config.dataset, "split": split, "image_size": config.image_size,
           "per_class": config.train_per_class if split == "train" else config.test_per_class,
           "seed": config.seed, "n": len(dataset), "fingerprint": backbone_fingerprint(model)}
    files = []
    if config.cache_features == "disk" and run_dir:
        files.append((Path(run_dir) / f"features_{split}.pt", key))
    shared = _shared_feature_key(key, dataset, device, amp_dtype) if config.feature_cache_dir else None
    if shared is not None:
        name = hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:32]
        files.append((Path(config.feature_cache_dir) / f"{name}_{split}.pt", shared))
    for path, wanted in files:
        if path.is_file():
            stored = torch.load(path, map_location="cpu", weights_only=True)
            if stored.get("key") == json.dumps(wanted, sort_keys=True):
                return stored["features"].to(device), stored["labels"]
    features = _extract_features(model, dataset, config, device, amp_dtype, ctx, progress, f"features ({split})")
    if features.is_cuda and features.numel() * features.element_size() > FEATURES_ON_DEVICE_MAX_BYTES:
        features = features.cpu()  # large caches stay in host memory; each batch moves to the device
    labels = _labels_of(dataset)
    for path, wanted in files if ctx.is_main else ():
        _write_features(path, wanted, features, labels)
    return features, labels


def _shared_feature_key(key: dict, dataset, device: torch.device, amp_dtype) -> dict | None:
    """What features depend on, without the seed: the backbone and its weights, the images (the dataset's
    :meth:`~lorsp.data.images.LorspDataset.content_fingerprint`: the same files in the same order, whatever seed
    drew them), the resolution, the device type and the autocast dtype. ``None`` when the dataset cannot say."""
    images = getattr(dataset, "content_fingerprint", lambda: None)()
    if images is None:
        return None
    shared = {k: v for k, v in key.items() if k not in ("seed", "per_class")}
    return {**shared, "images": images, "device": device.type, "amp": str(amp_dtype)}


def _write_features(path: Path, key: dict, features: torch.Tensor, labels: torch.Tensor) -> None:
    import io
    from ..checkpoint import atomic_write_bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"key": json.dumps(key, sort_keys=True), "features": features.cpu(), "labels": labels}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _labels_of(dataset) -> torch.Tensor:
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == len(dataset):
        return torch.as_tensor(list(targets), dtype=torch.long)
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


class HeadOnly(nn.Module):
    """The head of a PromptedModel applied to cached features (LP)."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, features):
        return self.head(features)
