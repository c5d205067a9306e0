"""Evaluating a finished run's last checkpoint (``lorsp eval``), on its own test set or another one (OOD)."""
from __future__ import annotations

import dataclasses
import sys
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader

from ..checkpoint import load_checkpoint
from .building import build_run_model, count_skipped, logit_indices_of
from .config import TrainConfig
from .devices import resolve_amp_dtype, resolve_device
from .loop import evaluate
from .sampling import seed_everything


def evaluate_run(run_dir, dataset: str | None = None, split: str = "test", per_class: int | None = None,
                 device: str = "auto", batch_size: int | None = None, logit_indices: Sequence[int] | None = None,
                 data_root: str | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Evaluate a run directory's last checkpoint on a dataset (its own by default, or another one such as an
    OOD set). Accuracy is over ``logit_indices`` only when given, or when the dataset names its subset
    (ImageNet-A/R: their 200 classes)."""
    checkpoint = load_checkpoint(run_dir)
    config = TrainConfig.from_dict(checkpoint["config"])
    config = dataclasses.replace(config, device=device, resume=False, output=None, data_root=data_root or
                                 config.data_root)
    dev = resolve_device(config.device)
    from ..data import build_dataset
    name = dataset or config.dataset
    data = build_dataset(name, split=split, image_size=config.image_size, root=config.data_root,
                         per_class=per_class if per_class is not None else (config.test_per_class if dataset is None
                                                                            else None),
                         seed=config.seed, bad_image_policy=config.bad_image_policy)
    seed_everything(config.seed)
    model, _ = build_run_model(config, int(checkpoint.get("num_classes") or 0) or data.num_classes)
    _, unexpected = model.load_state_dict(checkpoint["model"], strict=False)
    if unexpected:
        raise ValueError(f"{run_dir}: checkpoint keys {unexpected[:5]} do not fit the rebuilt model")
    model.to(dev)
    subset = torch.as_tensor(list(logit_indices), dtype=torch.long) if logit_indices is not None else \
        logit_indices_of(data)
    loader = DataLoader(data, batch_size=batch_size or config.batch_size, shuffle=False,
                        num_workers=config.num_workers)
    if progress is None:
        progress = sys.stderr.isatty()
    result = evaluate(model, loader, dev, resolve_amp_dtype(config.amp, dev), logit_indices=subset, progress=progress)
    return {"run_dir": str(run_dir), "epoch": checkpoint["epoch"], "dataset": name, "split": split,
            "n_images": len(data), "skipped": count_skipped(data),
            "logit_subset": None if subset is None else len(subset), **result}
