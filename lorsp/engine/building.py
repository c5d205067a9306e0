"""Building a run: its datasets, prompter, model (backbone + prompter + head), trainable parameters, optimizer
and schedule; the dataset facts the trainer reads (skipped images, scored logit subset)."""
from __future__ import annotations

import inspect
import math
from typing import Callable

import torch
from torch import nn

from .config import TrainConfig


def call_with_supported(fn: Callable, *args, **kwargs):
    """Call ``fn`` with the keyword arguments its signature takes (all of them if it has ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(*args, **kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return fn(*args, **kwargs)
    return fn(*args, **{k: v for k, v in kwargs.items() if k in params})


def build_datasets(config: TrainConfig, with_val: bool = False):
    """The train and test datasets of ``config`` (``lorsp.data.build_dataset``); with ``with_val``,
    ``(train, val, test)``: ``val`` holds ``config.val_per_class`` training images per class, disjoint from
    ``train`` (None without a validation split; :mod:`lorsp.validation`)."""
    from ..data import build_dataset
    from ..validation import carve_validation, train_request
    common = dict(image_size=config.image_size, root=config.data_root, seed=config.seed,
                  download=config.download, bad_image_policy=config.bad_image_policy)
    drawn = build_dataset(config.dataset, split="train",
                          per_class=train_request(config.train_per_class, config.val_per_class), **common)
    train_set, val_set = carve_validation(drawn, config.val_per_class, config.seed)
    test_set = build_dataset(config.dataset, split="test", per_class=config.test_per_class, **common)
    return (train_set, val_set, test_set) if with_val else (train_set, test_set)


def build_prompter_for(config: TrainConfig):
    """The prompter of ``config.method`` (None for linear probing, ``method="none"``)."""
    from ..prompters import build_prompter
    if config.is_linear_probe:  # no prompter module at all (a registered "none" would only add δ = 0)
        if config.prompter_kwargs:
            raise ValueError(f"method {config.method!r} (linear probing) takes no prompter options, got "
                             f"{sorted(config.prompter_kwargs)}")
        return None
    prompter = build_prompter(config.method, image_size=config.image_size, **config.prompter_kwargs)
    if hasattr(prompter, "set_run_seed"):  # a random sparsifier draws its evaluation masks from the run's seed
        prompter.set_run_seed(config.seed)
    return prompter


def build_run_model(config: TrainConfig, num_classes: int):
    """Backbone + prompter + head as a :class:`lorsp.model.PromptedModel`; returns ``(model, backbone_info)``."""
    from ..backbones import create_backbone, fold_frozen_backbone
    common = dict(weights=config.weights, random_init=config.random_init, data_root=config.data_root)
    backbone_kwargs = dict(config.backbone_kwargs)
    if "img_size" not in backbone_kwargs:
        # Transformers (ViT, Swin, ...) are built for the run's image size; CNNs take any size and reject
        # the argument.
        try:
            backbone, info = create_backbone(config.backbone, **common, img_size=config.image_size,
                                             **backbone_kwargs)
        except TypeError as error:
            if "img_size" not in str(error):
                raise
            backbone, info = create_backbone(config.backbone, **common, **backbone_kwargs)
    else:
        backbone, info = create_backbone(config.backbone, **common, **backbone_kwargs)
    fold_frozen_backbone(backbone, config.image_size)  # the same outputs, cheaper (benchmarks/README.md)
    return compose_run_model(config, backbone, info, num_classes)


def compose_run_model(config: TrainConfig, backbone, info, num_classes: int):
    """A :class:`lorsp.model.PromptedModel` of a built ``backbone``, the prompter of ``config`` and its head;
    returns ``(model, info)``."""
    from ..model import PromptedModel
    prompter = build_prompter_for(config)
    model = call_with_supported(PromptedModel, backbone, prompter, head=config.head, num_classes=num_classes,
                                 mean=getattr(info, "mean", None), std=getattr(info, "std", None),
                                 label_mapping_interval=config.label_mapping_interval)
    return model, info


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that train (prompter and head); none is a ValueError."""
    params = model.trainable_parameters() if hasattr(model, "trainable_parameters") else model.parameters()
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (prompter and head are both frozen)")
    return params


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state without the frozen backbone (prompter, head, label mapping buffers)."""
    backbone = getattr(model, "backbone", None)
    frozen = set()
    if isinstance(backbone, nn.Module):
        frozen = {id(t) for t in backbone.state_dict(keep_vars=True).values()}
        trainable_in_backbone = {id(p) for p in backbone.parameters() if p.requires_grad}
        frozen -= trainable_in_backbone  # e.g. VPT prompt tokens living inside the backbone
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items() if id(v) not in frozen}


def backbone_fingerprint(model: nn.Module) -> float:
    """A number that changes with the frozen backbone's weights (:func:`lorsp.backbones.weights_fingerprint`)."""
    from ..backbones import weights_fingerprint
    return weights_fingerprint(getattr(model, "backbone", model))


def _prompt_and_head(model: nn.Module, params: list[nn.Parameter]) -> tuple[list, list]:
    """``params`` split into the prompt's (everything not in ``model.head``, e.g. VPT's tokens) and the head's."""
    head = getattr(model, "head", None)
    head_ids = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
    return [p for p in params if id(p) not in head_ids], [p for p in params if id(p) in head_ids]


def build_optimizer(config: TrainConfig, model: nn.Module, params: list[nn.Parameter]):
    """SGD (momentum, weight decay) as method.md; EVP's own update rule (:mod:`lorsp.optim`) for ``"evp"``.

    ``config.prompt_lr`` (a deviation from the paper, which trains prompt and head at one ``lr``) gives the
    prompt's parameters a learning rate of their own; the head keeps ``lr``. Unset, all parameters form one
    group, as in the paper (and as older checkpoints expect when they resume).
    """
    if config.method == "evp":
        from ..optim import build_evp_optimizer
        return build_evp_optimizer(params, lr=config.lr, momentum=config.momentum,
                                   weight_decay=config.weight_decay, model=model, prompt_lr=config.prompt_lr)
    if config.prompt_lr is None:
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    prompt, head = _prompt_and_head(model, params)
    groups = [g for g in ({"params": prompt, "lr": config.prompt_lr, "name": "prompt"},
                          {"params": head, "lr": config.lr, "name": "head"}) if g["params"]]
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def build_scheduler(config: TrainConfig, optimizer, steps_per_epoch: int):
    """Per-iteration cosine from lr to 0 over ``epochs × steps_per_epoch`` steps (or a constant lr)."""
    total = max(1, config.epochs * steps_per_epoch)
    if config.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total)
                                                                                         / total)))


def freeze_backbone_mode(model: nn.Module) -> None:
    """Keep the frozen backbone in eval mode (batch-norm statistics, dropout) while the rest trains."""
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        backbone.eval()


def count_skipped(dataset) -> int:
    """How many unreadable images the dataset skipped (``bad_image_policy="skip"``)."""
    value = getattr(dataset, "skipped", None)
    if value is None:
        return 0
    return value if isinstance(value, int) else len(value)


def logit_indices_of(dataset):
    """The logit subset a dataset is scored on (ImageNet-A/R: their 200 of the 1,000 classes), or None."""
    for name in ("logit_indices", "class_subset", "class_indices"):
        value = getattr(dataset, name, None)
        if value is not None:
            return torch.as_tensor(list(value), dtype=torch.long)
    return None
