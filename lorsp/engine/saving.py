"""The trained prompt and head of a run, as a small safetensors file."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..results import to_jsonable
from .config import TrainConfig


def save_prompt_weights(model: nn.Module, path, config: TrainConfig) -> Path | None:
    """The trained prompter and head as safetensors (small), with the method and its options as metadata."""
    from safetensors.torch import save
    from ..checkpoint import atomic_write_bytes
    tensors = {}
    for part in ("prompter", "head"):
        module = getattr(model, part, None)
        if isinstance(module, nn.Module):
            for key, value in module.state_dict().items():
                if torch.is_tensor(value):
                    tensors[f"{part}.{key}"] = value.detach().to("cpu").contiguous().clone()
    if not tensors:
        return None
    metadata = {"method": config.method, "head": config.head, "backbone": config.backbone,
                "dataset": config.dataset, "image_size": str(config.image_size),
                "prompter_kwargs": json.dumps(to_jsonable(config.prompter_kwargs))}
    return atomic_write_bytes(path, save(tensors, metadata=metadata))
