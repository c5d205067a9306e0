"""The trainer: method.md's protocol (Eqs. 10–12) on a frozen backbone, one run → one record.

``train(TrainConfig(backbone="mobilenetv2", dataset="cifar10", method="lorsp"))`` builds the backbone
(:func:`lorsp.backbones.create_backbone`), the datasets (:func:`lorsp.data.build_dataset`), the prompter
(:func:`lorsp.build_prompter`) and the :class:`lorsp.model.PromptedModel`, then trains the prompt and the
head with the paper's protocol as defaults: SGD (momentum 0.9), lr 0.01, weight decay 1e-4, a cosine
schedule stepped every iteration, batch 256, 20 epochs, 224×224 images; cross-entropy on
ŷ = W f(normalise(x + δ(x))) + b (Eqs. 10–12).

What the trainer guarantees:

- **Evaluation** after every ``eval_every``-th epoch and the last (default: every epoch), without autograd
  (``torch.inference_mode``) at ``eval_batch_size``: test accuracy and loss; for prompters, the mean firing rate
  and the prompt sparsity over the test set (``prompter.stats(x)``). The record lists ``evaluated_epochs``.
- **A loss trace**: ``loss_trace``, the training loss of the first ``trace_steps`` steps, and ``max_steps`` to
  stop a run early: re-running the first steps of a recorded run (``--deterministic``) checks it is current.
- **Atomic checkpoints** each epoch (:mod:`lorsp.checkpoint`) and ``resume=True``: the run continues
  after the last complete epoch and ends with the metrics of an uninterrupted run (CPU, deterministic
  mode), because everything random in an epoch (data order, dropout masks) is drawn from generators seeded
  by (seed, epoch, rank) alone.
- **Divergence**: a non-finite loss stops the run with :class:`DivergenceError`; the last good checkpoint
  stays, and the record is written with ``status: "failed"`` and the reason.
- **LP with cached features**: for ``method="none"`` with a linear head the frozen backbone's features are
  computed once (in memory, or on disk with ``cache_features="disk"``; with ``feature_cache_dir`` in a folder
  that runs on the same images share, whatever their seed) and the head trains on them — the same batches,
  optimizer and schedule, so the same results as through the backbone every epoch.
- **Several processes** under torchrun (:mod:`lorsp.distributed`): DDP, global batch split over ranks,
  metrics reduced, rank 0 writes.
- Autocast (bf16 where supported) and channels_last on CUDA; tqdm progress bars.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
import random
import sys
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset

from . import distributed as distrib
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .results import file_sha256, git_commit, host_info, to_jsonable, versions, write_record

__all__ = ["TrainConfig", "train", "DivergenceError", "EpochSampler", "evaluate_run", "build_run_model",
           "RECORD_NAME", "PROMPT_WEIGHTS_NAME", "LP_METHODS", "SCHEDULES", "AMP_MODES", "CACHE_MODES",
           "LOADERS", "choose_loader", "prebuild_lif_gates"]

RECORD_NAME = "record.json"
PROMPT_WEIGHTS_NAME = "prompt.safetensors"
LP_METHODS = ("none",)
SCHEDULES = ("cosine", "constant")
AMP_MODES = ("auto", "bf16", "fp16", "off")
CACHE_MODES = ("auto", "memory", "disk", "off")
BAD_IMAGE_POLICIES = ("error", "skip")
LOADERS = ("auto", "dataloader", "device")
DEVICE_LOADER_AUTO_MAX_BYTES = 4 << 30  # loader="auto" decodes a dataset once up to this many uint8 bytes
FEATURES_ON_DEVICE_MAX_BYTES = 2 << 30  # LP feature caches larger than this live in host memory
# Config fields that may differ between an interrupted run and its resumption.
# eval_every and eval_batch_size only decide which epochs are evaluated and in how large batches: every epoch
# reseeds from (seed, epoch, rank) before it trains, so evaluating (or not) changes nothing of the training.
RESUME_FREE_FIELDS = frozenset({"resume", "output", "num_workers", "device", "results_dir", "fault_injection",
                                "data_root", "cache_features", "feature_cache_dir", "loader", "eval_every",
                                "eval_batch_size"})


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite; the run stopped (its last good checkpoint is kept)."""


# ---------------------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """One training run. Defaults are method.md's protocol; every field is validated by :meth:`validate`.

    ``method`` is a prompter name (``lorsp.list_prompters()``) or ``"none"`` (linear probing);
    ``prompter_kwargs`` go to the prompter unchanged (groups, rank, tau, v_threshold, v_reset,
    keep_ratio, inner_size, ...). ``output`` is the run directory (checkpoint, record, prompt weights);
    ``None`` keeps everything in memory. ``loader`` feeds the images: ``"dataloader"`` (a DataLoader over the
    dataset, ``num_workers`` processes decoding and resizing on the CPU), ``"device"`` (decode every image once,
    keep it as uint8, resize on the training device: :mod:`lorsp.data.gpu_pipeline`; the same batches to
    floating-point rounding) or ``"auto"`` (``device`` on CUDA and on a CPU when the decoded images would take at
    most :data:`DEVICE_LOADER_AUTO_MAX_BYTES` (on a CPU also a quarter of the available memory), as CIFAR and
    Tiny-ImageNet do, and the dataset reads its images unaltered; else ``dataloader``). ``results_dir``
    receives an extra copy of the record under a unique name.

    ``eval_every``: evaluate on the test split after epoch e (1-based) when e % eval_every == 0, and always after
    the last epoch (the record's ``evaluated_epochs``; other epochs' rows have no test metrics).
    ``eval_batch_size``: the evaluation batch (global; default twice ``batch_size``: evaluation keeps no
    activations for backward). ``max_steps``: stop after that many optimisation steps in all (the schedule
    stays that of the whole run), evaluate and write the record as usual: re-running the first steps of a
    run. ``trace_steps``: the record's ``loss_trace`` keeps the training loss of the first that many steps.

    ``fault_injection`` is a test hook
    (``{"nonfinite_loss_at": [epoch, step]}``, ``{"sleep_per_batch": s}``, ``{"raise_after_epoch": k}``); the
    environment variable ``LORSP_FAULT_INJECTION`` (JSON) adds to it, e.g. ``'{"sleep_per_batch": 0.5}'`` to slow
    a CLI run down for a SIGKILL test; ``LORSP_FAULT_CHECKPOINT_SLEEP`` (seconds) pauses inside each checkpoint write,
    between the complete temporary file and its atomic rename, for a kill *during* a write.
    """

    backbone: str = "mobilenetv2"
    dataset: str = "synthetic"
    method: str = "lorsp"
    head: str = "linear"
    epochs: int = 20
    batch_size: int = 256
    lr: float = 0.01
    prompt_lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    image_size: int = 224
    train_per_class: int | None = None
    test_per_class: int | None = None
    val_per_class: int | None = None
    seed: int = 0
    device: str = "auto"
    weights: str | None = None
    random_init: bool = False
    deterministic: bool = False
    output: str | None = None
    resume: bool = False
    prompter_kwargs: dict = field(default_factory=dict)
    backbone_kwargs: dict = field(default_factory=dict)
    num_workers: int = 0
    loader: str = "auto"
    amp: str = "auto"
    channels_last: bool = True
    bad_image_policy: str = "error"
    label_mapping_interval: int = 1
    max_grad_norm: float | None = None
    eval_every: int = 1
    eval_batch_size: int | None = None
    max_steps: int | None = None
    trace_steps: int = 32
    cache_features: str = "auto"
    feature_cache_dir: str | None = None
    data_root: str | None = None
    download: bool = False
    results_dir: str | None = None
    fault_injection: dict | None = None

    # -- validation ------------------------------------------------------------------------------------
    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the field, its value and the allowed range; return self."""

        def fail(name, expected):
            raise ValueError(f"TrainConfig.{name} must be {expected}, got {getattr(self, name)!r}")

        def is_int(value):
            return isinstance(value, int) and not isinstance(value, bool)

        def is_num(value):
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        for name in ("backbone", "dataset", "method", "head", "device"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                fail(name, "a non-empty string")
        for name in ("epochs", "batch_size", "image_size", "label_mapping_interval"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                fail(name, "an integer >= 1")
        if self.image_size > 4096:
            fail("image_size", "an integer in [1, 4096]")
        for name in ("train_per_class", "test_per_class"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 1):
                fail(name, "None (all images) or an integer >= 1")
        if self.val_per_class is not None and (not is_int(self.val_per_class) or self.val_per_class < 1):
            fail("val_per_class", "None (no validation split) or an integer >= 1 (training images per class held "
                 "out for validation: lorsp.validation)")
        if not is_int(self.seed) or not 0 <= self.seed < 2**31:
            fail("seed", "an integer in [0, 2**31)")
        if not is_num(self.lr) or not 0 < self.lr <= 100:
            fail("lr", "a number in (0, 100]")
        if self.prompt_lr is not None and (not is_num(self.prompt_lr) or not 0 < self.prompt_lr <= 100):
            fail("prompt_lr", "None (the prompt trains at lr, as in the paper) or a number in (0, 100]")
        if not is_num(self.momentum) or not 0 <= self.momentum < 1:
            fail("momentum", "a number in [0, 1)")
        if not is_num(self.weight_decay) or not 0 <= self.weight_decay <= 1:
            fail("weight_decay", "a number in [0, 1]")
        if self.max_grad_norm is not None and (not is_num(self.max_grad_norm) or self.max_grad_norm <= 0):
            fail("max_grad_norm", "None or a number > 0")
        if not is_int(self.eval_every) or self.eval_every < 1:
            fail("eval_every", "an integer >= 1 (evaluate after every N-th epoch and after the last)")
        for name in ("eval_batch_size", "max_steps"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 1):
                fail(name, "None or an integer >= 1")
        if not is_int(self.trace_steps) or self.trace_steps < 0:
            fail("trace_steps", "an integer >= 0")
        if not is_int(self.num_workers) or self.num_workers < 0:
            fail("num_workers", "an integer >= 0")
        choices = {"schedule": SCHEDULES, "amp": AMP_MODES, "cache_features": CACHE_MODES,
                   "bad_image_policy": BAD_IMAGE_POLICIES, "loader": LOADERS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                fail(name, f"one of {list(allowed)}")
        for name in ("random_init", "deterministic", "resume", "download", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                fail(name, "True or False")
        for name in ("prompter_kwargs", "backbone_kwargs"):
            if not isinstance(getattr(self, name), dict):
                fail(name, "a dict of keyword arguments")
        if self.fault_injection is not None and not isinstance(self.fault_injection, dict):
            fail("fault_injection", "None or a dict")
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda", "mps"):
            fail("device", "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        if self.resume and not self.output:
            raise ValueError("TrainConfig.resume=True needs TrainConfig.output, the run directory to resume from")
        if self.weights is not None and self.random_init:
            raise ValueError("TrainConfig.weights and TrainConfig.random_init exclude each other: give one")
        if self.cache_features == "disk" and not self.output:
            raise ValueError("TrainConfig.cache_features='disk' needs TrainConfig.output (the cache lives there)")
        if self.feature_cache_dir is not None and not isinstance(self.feature_cache_dir, (str, os.PathLike)):
            fail("feature_cache_dir", "None or a folder path")
        return self

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Rebuild a config from :meth:`to_dict` (unknown keys are a ValueError naming them)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; known: {sorted(names)}")
        return cls(**values)

    @property
    def is_linear_probe(self) -> bool:
        return self.method in LP_METHODS


# ---------------------------------------------------------------------------------------------------------
# seeds, samplers, devices
# ---------------------------------------------------------------------------------------------------------
def _mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SplitMix-style), so that (seed, epoch, rank) streams do not overlap."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (int(part) + 0x9E3779B97F4A7C15 + (value << 6) + (value >> 2))) & 0xFFFFFFFFFFFFFFFF
        value = (value * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return value & 0x7FFFFFFFFFFFFFFF


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class EpochSampler(Sampler[int]):
    """The order of an epoch from (seed, epoch) alone, split over ranks so that batches add up.

    With ``shuffle`` the epoch's order is ``torch.randperm(n)`` from a generator seeded by (seed, epoch),
    padded (by repeating its start) to a multiple of ``world_size``; rank r takes entries r, r + W, ...
    Rank r's i-th batch of ``b`` images and the other ranks' i-th batches together are the single-process
    i-th batch of ``W·b`` images, so N processes see the same global batches as one. Without ``shuffle``
    (evaluation) the ranks take disjoint strided shards with no padding (nothing counted twice).
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.shuffle, self.rank, self.world_size = n, seed, shuffle, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.rank, self.n, self.world_size))
        generator = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch, 17))
        order = torch.randperm(self.n, generator=generator).tolist()
        if self.world_size > 1 and self.n % self.world_size:
            order += order[: self.world_size - self.n % self.world_size]
        return order[self.rank::self.world_size]

    def __iter__(self):
        return iter(self._indices())

    def __len__(self) -> int:
        if not self.shuffle:
            return len(range(self.rank, self.n, self.world_size))
        return -(-self.n // self.world_size)


def choose_loader(loader: str, device: torch.device, train_set, test_set) -> str:
    """``"dataloader"`` or ``"device"`` for :attr:`TrainConfig.loader` (see there); ``"device"`` on a dataset that
    it cannot serve is a ValueError saying why. ``"auto"`` picks ``"device"`` on CUDA and on a CPU when the bank
    reproduces both datasets (:meth:`~lorsp.data.gpu_pipeline.ImageBank.cannot_reproduce`) and their decoded
    images fit: at most :data:`DEVICE_LOADER_AUTO_MAX_BYTES`, and on a CPU at most a quarter of the memory
    available now (:func:`_available_memory`)."""
    from .data.gpu_pipeline import ImageBank

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


def _device_loader(dataset, sampler, batch_size: int, image_size: int, device: torch.device,
                   draw_like_dataloader: bool = False):
    """A :class:`~lorsp.data.gpu_pipeline.DeviceBatchLoader` over ``dataset`` decoded once, in ``sampler``'s
    order. Image files are decoded once per machine: the decoded images are kept in
    :func:`~lorsp.data.gpu_pipeline.decode_cache_dir` and memory-mapped by every later run on the same files
    (the seeds of a grid, every epoch). On CUDA the uint8 images live on the GPU when they take at most a quarter
    of its free memory, else in pinned host memory; on a CPU they stay in host memory (resized batch by batch).
    ``draw_like_dataloader``: see :class:`~lorsp.data.gpu_pipeline.DeviceBatchLoader` (the loaders that stand
    for a DataLoader without a generator: evaluation's, label mapping's)."""
    from .data.gpu_pipeline import DeviceBatchLoader, ImageBank, decode_cache_dir

    bank = ImageBank.from_dataset(dataset, cache_dir=decode_cache_dir())
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        bank = bank.to(device) if bank.nbytes <= free // 4 else bank.to(device, pin_memory=True)
    return DeviceBatchLoader(bank, batch_size, image_size, device, sampler=sampler,
                             draw_like_dataloader=draw_like_dataloader)


def _worker_init(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    seed = info.seed % 2**32 if info is not None else worker_id
    random.seed(seed)
    np.random.seed(seed)


def _resolve_device(name: str, ctx: distrib.DistContext | None = None) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for but CUDA is not available; use --device cpu")
        if name == "cuda" and ctx is not None and ctx.enabled:
            return torch.device("cuda", ctx.local_rank)
        return torch.device(name if ":" in name else "cuda:0" if torch.cuda.device_count() else name)
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was asked for but is not available; use --device cpu")
    return torch.device(name)


def _amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA when supported ("auto"), fp16 on request, none on CPU."""
    if device.type != "cuda" or mode == "off":
        return None
    if mode == "fp16":
        return torch.float16
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if mode == "bf16":
        raise ValueError(f"amp='bf16' but {torch.cuda.get_device_name(device)} does not support bfloat16")
    return None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} logical cores)"


def _fault_injection(config: TrainConfig) -> dict[str, Any]:
    faults = dict(config.fault_injection or {})
    env = os.environ.get("LORSP_FAULT_INJECTION")
    if env:
        try:
            faults.update(json.loads(env))
        except json.JSONDecodeError as error:
            raise ValueError(f"LORSP_FAULT_INJECTION must be a JSON object, got {env!r}: {error}") from None
    known = {"nonfinite_loss_at", "sleep_per_batch", "raise_after_epoch"}
    unknown = set(faults) - known
    if unknown:
        raise ValueError(f"unknown fault_injection keys {sorted(unknown)}; known: {sorted(known)}")
    return faults


class InjectedFault(RuntimeError):
    """Raised by the ``raise_after_epoch`` fault injection (a simulated interruption)."""


# ---------------------------------------------------------------------------------------------------------
# building the run
# ---------------------------------------------------------------------------------------------------------
def _call_with_supported(fn: Callable, *args, **kwargs):
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
    from .data import build_dataset
    from .validation import carve_validation, train_request
    common = dict(image_size=config.image_size, root=config.data_root, seed=config.seed,
                  download=config.download, bad_image_policy=config.bad_image_policy)
    drawn = build_dataset(config.dataset, split="train",
                          per_class=train_request(config.train_per_class, config.val_per_class), **common)
    train_set, val_set = carve_validation(drawn, config.val_per_class, config.seed)
    test_set = build_dataset(config.dataset, split="test", per_class=config.test_per_class, **common)
    return (train_set, val_set, test_set) if with_val else (train_set, test_set)


def build_prompter_for(config: TrainConfig):
    """The prompter of ``config.method`` (None for linear probing, ``method="none"``)."""
    from .prompters import build_prompter
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
    from .backbones import create_backbone, fold_frozen_backbone
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
    return _compose(config, backbone, info, num_classes)


def _compose(config: TrainConfig, backbone, info, num_classes: int):
    from .model import PromptedModel
    prompter = build_prompter_for(config)
    model = _call_with_supported(PromptedModel, backbone, prompter, head=config.head, num_classes=num_classes,
                                 mean=getattr(info, "mean", None), std=getattr(info, "std", None),
                                 label_mapping_interval=config.label_mapping_interval)
    return model, info


def _trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    params = model.trainable_parameters() if hasattr(model, "trainable_parameters") else model.parameters()
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (prompter and head are both frozen)")
    return params


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state without the frozen backbone (prompter, head, label mapping buffers)."""
    backbone = getattr(model, "backbone", None)
    frozen = set()
    if isinstance(backbone, nn.Module):
        frozen = {id(t) for t in backbone.state_dict(keep_vars=True).values()}
        trainable_in_backbone = {id(p) for p in backbone.parameters() if p.requires_grad}
        frozen -= trainable_in_backbone  # e.g. VPT prompt tokens living inside the backbone
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items() if id(v) not in frozen}


def _backbone_fingerprint(model: nn.Module) -> float:
    from .backbones import weights_fingerprint
    return weights_fingerprint(getattr(model, "backbone", model))


def _prompt_and_head(model: nn.Module, params: list[nn.Parameter]) -> tuple[list, list]:
    """``params`` split into the prompt's (everything not in ``model.head``, e.g. VPT's tokens) and the head's."""
    head = getattr(model, "head", None)
    head_ids = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
    return [p for p in params if id(p) not in head_ids], [p for p in params if id(p) in head_ids]


def _build_optimizer(config: TrainConfig, model: nn.Module, params: list[nn.Parameter]):
    """SGD (momentum, weight decay) as method.md; EVP's own update rule (:mod:`lorsp.optim`) for ``"evp"``.

    ``config.prompt_lr`` (a deviation from the paper, which trains prompt and head at one ``lr``) gives the
    prompt's parameters a learning rate of their own; the head keeps ``lr``. Unset, all parameters form one
    group, as in the paper (and as older checkpoints expect when they resume).
    """
    if config.method == "evp":
        from .optim import build_evp_optimizer
        return build_evp_optimizer(params, lr=config.lr, momentum=config.momentum,
                                   weight_decay=config.weight_decay, model=model, prompt_lr=config.prompt_lr)
    if config.prompt_lr is None:
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    prompt, head = _prompt_and_head(model, params)
    groups = [g for g in ({"params": prompt, "lr": config.prompt_lr, "name": "prompt"},
                          {"params": head, "lr": config.lr, "name": "head"}) if g["params"]]
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def _build_scheduler(config: TrainConfig, optimizer, steps_per_epoch: int):
    """Per-iteration cosine from lr to 0 over ``epochs × steps_per_epoch`` steps (or a constant lr)."""
    total = max(1, config.epochs * steps_per_epoch)
    if config.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total)
                                                                                         / total)))


LABEL_MAPPING_HEADS = ("ilm", "flm")


def _label_mapping_due(model: nn.Module, config: TrainConfig, epoch: int) -> bool:
    """ILM: every ``label_mapping_interval`` epochs from epoch 1; FLM: once, at epoch 1 (kept in checkpoints)."""
    if config.head not in LABEL_MAPPING_HEADS or not hasattr(model, "update_label_mapping"):
        return False
    if config.head == "flm":
        return epoch == 1
    return (epoch - 1) % config.label_mapping_interval == 0


@torch.no_grad()
def _update_label_mapping(model: nn.Module, dataset, config: TrainConfig, device: torch.device, amp_dtype,
                          epoch: int, ctx: distrib.DistContext, progress: bool, bank=None):
    """``model.update_label_mapping(source_logits, labels, epoch=...)`` over the whole training set.

    The frozen source classifier's logits of the prompted training images are computed in dataset order
    (each rank its strided shard, then gathered), so every rank derives the same mapping. With ``bank`` (the
    training set decoded once, ``loader="device"``) the images come from it instead of the DataLoader.
    """
    from .data.gpu_pipeline import DeviceBatchLoader

    sampler = EpochSampler(len(dataset), shuffle=False, rank=ctx.rank, world_size=ctx.world_size)
    batch_size = max(1, config.batch_size // ctx.world_size)
    if bank is not None:
        loader = DeviceBatchLoader(bank, batch_size, config.image_size, device, sampler=sampler,
                                   draw_like_dataloader=True)  # as the DataLoader below, which has no generator
    else:
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=config.num_workers,
                            pin_memory=device.type == "cuda", worker_init_fn=_worker_init)
    was_training = model.training
    model.eval()
    logits, labels = [], []
    forward = model.source_logits if hasattr(model, "source_logits") else model
    for x, y in _tqdm(loader, progress, desc="label mapping", unit="batch", leave=False):
        x = x.to(device, non_blocking=True)
        with _autocast(device, amp_dtype):
            logits.append(forward(x).float())
        labels.append(torch.as_tensor(y).to(device))
    model.train(was_training)
    _freeze_backbone_mode(model)
    logits = distrib.all_gather_rows(torch.cat(logits), len(dataset), ctx)
    labels = distrib.all_gather_rows(torch.cat(labels), len(dataset), ctx)
    return _call_with_supported(model.update_label_mapping, logits, labels, epoch=epoch)


def _autocast(device: torch.device, amp_dtype):
    if amp_dtype is None:
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def _freeze_backbone_mode(model: nn.Module) -> None:
    """Keep the frozen backbone in eval mode (batch-norm statistics, dropout) while the rest trains."""
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        backbone.eval()


def _skipped(dataset) -> int:
    value = getattr(dataset, "skipped", None)
    if value is None:
        return 0
    return value if isinstance(value, int) else len(value)


def _logit_indices(dataset):
    """The logit subset a dataset is scored on (ImageNet-A/R: their 200 of the 1,000 classes), or None."""
    for name in ("logit_indices", "class_subset", "class_indices"):
        value = getattr(dataset, name, None)
        if value is not None:
            return torch.as_tensor(list(value), dtype=torch.long)
    return None


# ---------------------------------------------------------------------------------------------------------
# feature cache (linear probing)
# ---------------------------------------------------------------------------------------------------------
@torch.no_grad()
def _extract_features(model, dataset, config, device, amp_dtype, ctx, progress, desc) -> torch.Tensor:
    """Features of every image of ``dataset`` (rows rank::world computed here, gathered across ranks)."""
    sampler = EpochSampler(len(dataset), shuffle=False, rank=ctx.rank, world_size=ctx.world_size)
    loader = DataLoader(dataset, batch_size=max(1, config.batch_size // ctx.world_size), sampler=sampler,
                        num_workers=config.num_workers, pin_memory=device.type == "cuda",
                        worker_init_fn=_worker_init)
    chunks = []
    bar = _tqdm(loader, progress, desc=desc, unit="batch", leave=False)
    for x, _ in bar:
        x = x.to(device, non_blocking=True)
        if device.type == "cuda" and config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp_dtype):
            chunks.append(model.features(x).float())
    local = torch.cat(chunks) if chunks else torch.empty(0)
    return distrib.all_gather_rows(local, len(dataset), ctx)


def _cached_features(model, dataset, split, config, info, device, amp_dtype, ctx, progress, run_dir):
    """The frozen backbone's features of ``dataset`` and its labels: read from a cache file whose key matches,
    else computed once (and written where a cache file is asked for). Two files may hold them: the run's own
    (``cache_features="disk"``: ``<output>/features_<split>.pt``) and one shared by runs
    (``feature_cache_dir``: named by :func:`_shared_feature_key`, so that runs on the same images share it)."""
    key = {"backbone": config.backbone, "weights_source": str(getattr(info, "weights_source", None)),
           "weights_sha256": getattr(info, "weights_sha256", None),
           "weights": config.weights, "dataset": config.dataset, "split": split, "image_size": config.image_size,
           "per_class": config.train_per_class if split == "train" else config.test_per_class,
           "seed": config.seed, "n": len(dataset), "fingerprint": _backbone_fingerprint(model)}
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
    from .checkpoint import atomic_write_bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"key": json.dumps(key, sort_keys=True), "features": features.cpu(), "labels": labels}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _labels_of(dataset) -> torch.Tensor:
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == len(dataset):
        return torch.as_tensor(list(targets), dtype=torch.long)
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


class _HeadOnly(nn.Module):
    """The head of a PromptedModel applied to cached features (LP)."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, features):
        return self.head(features)


# ---------------------------------------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------------------------------------
def _tqdm(iterable, enabled: bool, **kwargs):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, dynamic_ncols=True, **kwargs)


# ---------------------------------------------------------------------------------------------------------
# one epoch, evaluation
# ---------------------------------------------------------------------------------------------------------
def _train_epoch(step_model, loader, optimizer, scheduler, params, config, device, amp_dtype, ctx, epoch,
                 faults, progress, on_batch_end, first_step=0, loss_trace=None) -> dict[str, float]:
    """One epoch of optimisation steps. ``first_step``: the steps the run made before this epoch; the epoch
    ends early once the run has made ``config.max_steps``; ``loss_trace`` (a list) receives the loss of each of
    the run's first ``config.trace_steps`` steps (the mean over processes)."""
    loss_sum = correct = count = 0.0
    steps = 0
    start = time.perf_counter()
    bar = _tqdm(loader, progress, desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False)
    sleep = float(faults.get("sleep_per_batch", 0) or 0)
    for step, (x, y) in enumerate(bar):
        x = x.to(device, non_blocking=True)
        y = torch.as_tensor(y).to(device, non_blocking=True)
        if device.type == "cuda" and config.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        loss_value, logits = _train_step(step_model, x, y, optimizer, scheduler, params, config, device, amp_dtype,
                                         epoch, step, faults.get("nonfinite_loss_at"))
        steps += 1
        if loss_trace is not None and first_step + step < config.trace_steps:
            loss_trace.append(_mean_over_ranks(loss_value, ctx, device))
        n = y.shape[0]
        loss_sum += loss_value * n
        correct += float((logits.detach().argmax(1) == y).sum())
        count += n
        if progress:
            elapsed = max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(loss=f"{loss_sum / count:.4f}", acc=f"{correct / count:.3f}",
                            img_s=f"{count * ctx.world_size / elapsed:.0f}")
        if on_batch_end is not None:
            on_batch_end(epoch, step, loss_value)
        if sleep:
            time.sleep(sleep)
        if config.max_steps is not None and first_step + steps >= config.max_steps:
            break
    seconds = time.perf_counter() - start
    loss_sum, correct, count = distrib.all_reduce_sums([loss_sum, correct, count], ctx, device)
    return {"train_loss": loss_sum / max(count, 1), "train_accuracy": correct / max(count, 1),
            "train_images": int(count), "train_steps": steps, "train_seconds": seconds,
            "images_per_second": count / max(seconds, 1e-9), "lr": optimizer.param_groups[0]["lr"]}


def _train_step(step_model, x, y, optimizer, scheduler, params, config, device, amp_dtype, epoch, step,
                nonfinite_loss_at=None) -> tuple[float, torch.Tensor]:
    """One optimisation step (Eqs. 10–12, cross-entropy, SGD, the schedule); returns ``(loss, logits)``; a
    non-finite loss raises :class:`DivergenceError`."""
    with _autocast(device, amp_dtype):
        logits = step_model(x)
    loss = F.cross_entropy(logits.float(), y)
    if nonfinite_loss_at is not None and [epoch, step] == list(nonfinite_loss_at):
        loss = loss * float("nan")
    loss_value = float(loss.detach())
    if not math.isfinite(loss_value):
        raise DivergenceError(
            f"non-finite training loss ({loss_value}) at epoch {epoch}, step {step} (method "
            f"{config.method!r}, lr {config.lr}); the run stopped, its last good checkpoint is kept. "
            "Try a lower --lr or --max-grad-norm.")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
    optimizer.step()
    scheduler.step()
    return loss_value, logits


def _mean_over_ranks(value: float, ctx: distrib.DistContext, device) -> float:
    if ctx.world_size == 1:
        return value
    return distrib.all_reduce_sums([value], ctx, device)[0] / ctx.world_size


@torch.inference_mode()
def evaluate(model, loader, device, amp_dtype=None, ctx=None, logit_indices=None, prompt_stats=True,
             channels_last=False, progress=False, features_mode=False) -> dict[str, float | None]:
    """Test loss and accuracy, and the prompt's mean firing rate and sparsity over the images
    (``prompter.stats``; None where the prompter has no such statistic).

    With ``logit_indices`` (ImageNet-A/R: their 200 of the 1,000 classes) only those logits are scored and a
    label ``i`` means the class of logit ``logit_indices[i]``.
    """
    ctx = ctx or distrib.DistContext()
    was_training = model.training
    model.eval()
    prompter = None if features_mode else getattr(model, "prompter", None)
    loss_sum = correct = count = 0.0
    fire_sum = sparse_sum = 0.0
    fire_n = sparse_n = 0.0
    if logit_indices is not None:
        logit_indices = logit_indices.to(device)
    for x, y in _tqdm(loader, progress, desc="eval", unit="batch", leave=False):
        x = x.to(device, non_blocking=True)
        y = torch.as_tensor(y).to(device, non_blocking=True)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp_dtype):
            logits = model(x).float()
        if logit_indices is not None:
            logits = logits[:, logit_indices]
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += float((logits.argmax(1) == y).sum())
        count += y.shape[0]
        if prompt_stats and prompter is not None and hasattr(prompter, "stats"):
            stats = prompter.stats(x)
            if stats.get("firing_rate") is not None:
                fire_sum += float(stats["firing_rate"].float().sum())
                fire_n += stats["firing_rate"].numel()
            if stats.get("sparsity") is not None:
                sparse_sum += float(stats["sparsity"].float().sum())
                sparse_n += stats["sparsity"].numel()
    loss_sum, correct, count, fire_sum, fire_n, sparse_sum, sparse_n = distrib.all_reduce_sums(
        [loss_sum, correct, count, fire_sum, fire_n, sparse_sum, sparse_n], ctx, device)
    model.train(was_training)
    _freeze_backbone_mode(model)
    return {"test_loss": loss_sum / max(count, 1), "test_accuracy": correct / max(count, 1),
            "test_images": int(count),
            "firing_rate": fire_sum / fire_n if fire_n else None,
            "sparsity": sparse_sum / sparse_n if sparse_n else None}


# ---------------------------------------------------------------------------------------------------------
# saving
# ---------------------------------------------------------------------------------------------------------
def save_prompt_weights(model: nn.Module, path, config: TrainConfig) -> Path | None:
    """The trained prompter and head as safetensors (small), with the method and its options as metadata."""
    from safetensors.torch import save
    from .checkpoint import atomic_write_bytes
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


# ---------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------
def _check_resumable(saved: dict[str, Any], config: TrainConfig, path) -> None:
    current = config.to_dict()
    defaults = TrainConfig().to_dict()  # fields newer than the checkpoint compare at their defaults
    saved = {**{k: v for k, v in defaults.items() if k not in saved}, **saved}
    different = sorted(k for k in set(saved) | set(current)
                       if k not in RESUME_FREE_FIELDS and saved.get(k) != current.get(k))
    if different:
        details = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}" for k in different)
        raise ValueError(f"cannot resume {path}: the config differs in {details}. Resume with the same "
                         "settings, or start a new run in another --output directory.")


def train(config: TrainConfig, progress: bool | None = None,
          on_epoch_end: Callable[[int, dict], None] | None = None,
          on_batch_end: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Run one training run and return its record (see :mod:`lorsp.results`).

    ``progress``: tqdm bars (None: only when stderr is a terminal). ``on_epoch_end(epoch, metrics)`` runs
    after each epoch's checkpoint; ``on_batch_end(epoch, step, loss)`` after each step (hooks for tests and
    notebooks; an exception there stops the run like an interruption would).
    """
    config.validate()
    faults = _fault_injection(config)
    device_pref = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    ctx = distrib.init_from_env(device_pref.split(":")[0])
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    cudnn_before = torch.backends.cudnn.benchmark
    try:
        device = _resolve_device(config.device, ctx)
        if progress is None:
            progress = sys.stderr.isatty()
        progress = bool(progress) and ctx.is_main
        if config.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        return _run(config, ctx, device, progress, faults, on_epoch_end, on_batch_end)
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
        torch.backends.cudnn.benchmark = cudnn_before
        distrib.cleanup(ctx)


def _run(config: TrainConfig, ctx: distrib.DistContext, device: torch.device, progress: bool, faults: dict,
         on_epoch_end, on_batch_end) -> dict[str, Any]:
    """The steps of one run (:class:`_Run`); a failure after the data were built still writes a record."""
    run = _Run(config, ctx, device, progress, faults)
    checkpoint = run.open_checkpoint()
    try:
        run.build_data()
        run.build_model()
        run.build_loaders()
        run.resume(checkpoint)
        run.epoch_loop(on_epoch_end, on_batch_end)
        return run.complete()
    except Exception as error:
        if isinstance(error, InjectedFault):
            raise  # a simulated kill leaves no record, like a real one
        run.fail(error)
        raise


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class _Run:
    """One training run, step by step (:func:`_run`): open the run directory, build the data, the model and the
    loaders, resume, the epoch loop, finish. Each step sets the attributes the later ones read, and fills in
    :attr:`record`."""

    def __init__(self, config: TrainConfig, ctx: distrib.DistContext, device: torch.device, progress: bool,
                 faults: dict):
        self.config, self.ctx, self.device, self.progress, self.faults = config, ctx, device, progress, faults
        self.started, self.t0 = time.time(), time.perf_counter()
        self.run_dir = Path(config.output) if config.output else None
        self.metrics: list[dict[str, Any]] = []
        self.loss_trace: list[float] = []
        self.start_epoch = self.steps_done = 0
        self.cache_seconds = None
        self.record: dict[str, Any] = {
            "run_id": uuid.uuid4().hex[:12], "status": "running", "reason": None, "config": config.to_dict(),
            "versions": versions(), "git_commit": git_commit(), "device": str(device),
            "device_name": _device_name(device), "world_size": ctx.world_size, "started_at": _utc(self.started),
            **host_info(),
        }
        if faults:
            self.record["fault_injection"] = faults  # test hooks in effect (config or LORSP_FAULT_INJECTION)

    def open_checkpoint(self) -> dict | None:
        """The checkpoint to resume from (None: start from the beginning); a run directory that already holds
        one without ``resume``, or a checkpoint of another config, is a ValueError."""
        config, run_dir = self.config, self.run_dir
        if config.resume:
            try:
                checkpoint = load_checkpoint(run_dir)
            except FileNotFoundError:
                return None  # nothing finished yet: start from the beginning
            _check_resumable(checkpoint["config"], config, run_dir)
            return checkpoint
        if run_dir is not None and self.ctx.is_main and (run_dir / "checkpoint.pt").exists():
            raise ValueError(f"{run_dir} already holds a checkpoint; pass --resume to continue it, or choose "
                             "another --output directory")
        return None

    def build_data(self) -> None:
        """The train and test datasets (seeded by the run's seed), described in the record."""
        config = self.config
        seed_everything(config.seed)
        train_set, self.val_set, test_set = build_datasets(config, with_val=True)
        self.num_classes = getattr(train_set, "num_classes", None) or len(train_set.classes)
        self.record["data"] = {
            "dataset": config.dataset, "n_train": len(train_set), "n_test": len(test_set),
            "num_classes": self.num_classes, "skipped_train": _skipped(train_set), "skipped_test": _skipped(test_set),
            "skipped": _skipped(train_set) + _skipped(test_set),
            "provenance": _provenance(train_set, test_set, config, self.val_set)}
        if self.val_set is not None:
            self.record["data"]["n_val"] = len(self.val_set)
        if len(train_set) == 0 or len(test_set) == 0:
            raise ValueError(f"dataset {config.dataset!r} has {len(train_set)} train and {len(test_set)} test "
                             "images; both must be non-empty")
        self.train_set, self.test_set = train_set, test_set

    def build_model(self) -> None:
        """Backbone, prompter and head on the device (seeded by the run's seed), described in the record."""
        config, record, device = self.config, self.record, self.device
        seed_everything(config.seed)
        model, info = build_run_model(config, self.num_classes)
        _describe_model(record, model, info, config)
        model.to(device)
        if device.type == "cuda" and config.channels_last:
            model.to(memory_format=torch.channels_last)
        self.amp_dtype = _amp_dtype(config.amp, device)
        record["amp"] = str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else None
        self.params = _trainable_parameters(model)
        record["trainable_params"] = sum(p.numel() for p in self.params)
        record["backbone_fingerprint"] = _backbone_fingerprint(model)
        self.model, self.info = model, info

    def build_loaders(self) -> None:
        """The train and test loaders: over the images (a DataLoader, or the decode-once device loader) or, for
        linear probing, over the frozen backbone's features computed once."""
        config, ctx, model = self.config, self.ctx, self.model
        head = getattr(model, "head", None)
        self.use_cache = (config.is_linear_probe and config.cache_features != "off"
                          and getattr(model, "prompter", None) is None and config.head == "linear"
                          and hasattr(model, "features") and isinstance(head, nn.Module))
        self.record["features_cached"] = bool(self.use_cache)
        if config.batch_size % ctx.world_size:
            raise ValueError(f"batch_size {config.batch_size} must be divisible by the number of processes "
                             f"({ctx.world_size})")
        batch = config.batch_size // ctx.world_size
        eval_batch = max(1, (config.eval_batch_size or 2 * config.batch_size) // ctx.world_size)
        self.record["eval_batch_size"] = eval_batch * ctx.world_size
        if self.use_cache:
            train_data, test_data = self._cached_feature_sets()
            self.step_module = self.eval_module = _HeadOnly(head)
            loader_kw = dict(num_workers=0)
        else:
            train_data, test_data = self.train_set, self.test_set
            self.step_module = self.eval_module = model
            loader_kw = dict(num_workers=config.num_workers, pin_memory=self.device.type == "cuda",
                             worker_init_fn=_worker_init, persistent_workers=False)
        loader = "dataloader" if self.use_cache else choose_loader(config.loader, self.device, self.train_set,
                                                                   self.test_set)
        self.record["loader"] = loader
        self.train_sampler = EpochSampler(len(train_data), config.seed, True, ctx.rank, ctx.world_size)
        test_sampler = EpochSampler(len(test_data), config.seed, False, ctx.rank, ctx.world_size)
        if loader == "device":
            tb = time.perf_counter()
            self.train_loader = _device_loader(self.train_set, self.train_sampler, batch, config.image_size,
                                               self.device)
            self.test_loader = _device_loader(self.test_set, test_sampler, eval_batch, config.image_size, self.device,
                                              draw_like_dataloader=True)  # as the test DataLoader (no generator)
            self.record["loader_decode_seconds"] = time.perf_counter() - tb
        else:
            self.train_loader = DataLoader(train_data, batch_size=batch, sampler=self.train_sampler,
                                           generator=torch.Generator().manual_seed(config.seed), **loader_kw)
            self.test_loader = DataLoader(test_data, batch_size=eval_batch, sampler=test_sampler, **loader_kw)
        self.val_loader = self._val_loader(loader, eval_batch, loader_kw)
        self.steps_per_epoch = len(self.train_loader)
        self.ddp_module = distrib.wrap_ddp(self.step_module, ctx, self.device)
        _plan_prompter(model, config.epochs * self.steps_per_epoch, self.device, self.record)

    def _val_loader(self, loader: str, eval_batch: int, loader_kw: dict):
        """The loader of the validation split (``val_per_class``), built as the test loader is; None without one."""
        if self.val_set is None:
            return None
        data = self.val_set
        if self.use_cache:
            args = (self.config, self.info, self.device, self.amp_dtype, self.ctx, self.progress, self.run_dir)
            features, labels = _cached_features(self.model, self.val_set, "val", *args)
            data = TensorDataset(features, labels.to(features.device))
        sampler = EpochSampler(len(data), self.config.seed, False, self.ctx.rank, self.ctx.world_size)
        if loader == "device":
            return _device_loader(self.val_set, sampler, eval_batch, self.config.image_size, self.device)
        return DataLoader(data, batch_size=eval_batch, sampler=sampler, **loader_kw)

    def _cached_feature_sets(self):
        """Linear probing: the frozen backbone's features of the train and test images, computed once."""
        args = (self.config, self.info, self.device, self.amp_dtype, self.ctx, self.progress, self.run_dir)
        self.model.eval()
        tc = time.perf_counter()
        train_feats, train_labels = _cached_features(self.model, self.train_set, "train", *args)
        test_feats, test_labels = _cached_features(self.model, self.test_set, "test", *args)
        self.cache_seconds = time.perf_counter() - tc
        return (TensorDataset(train_feats, train_labels.to(train_feats.device)),
                TensorDataset(test_feats, test_labels.to(test_feats.device)))

    def resume(self, checkpoint: dict | None) -> None:
        """The optimizer and schedule, and with a checkpoint its state: trainable weights, optimizer, schedule,
        random state, metrics and loss trace, after its last complete epoch."""
        config, model, record = self.config, self.model, self.record
        self.optimizer = _build_optimizer(config, model, self.params)
        self.scheduler = _build_scheduler(config, self.optimizer, self.steps_per_epoch)
        record["steps_per_epoch"] = self.steps_per_epoch
        if checkpoint is None:
            return
        fingerprint = record["backbone_fingerprint"]
        if abs(checkpoint.get("backbone_fingerprint", fingerprint) - fingerprint) > 1e-6 * max(1.0, abs(fingerprint)):
            raise ValueError(f"cannot resume {self.run_dir}: the backbone weights differ from the checkpoint's "
                             "(another weights file or random init?)")
        expected = set(_trainable_state(model))
        missing, unexpected = model.load_state_dict(checkpoint["model"], strict=False)
        missing = [k for k in missing if k in expected]
        if unexpected or missing:
            raise ValueError(f"cannot resume {self.run_dir}: the checkpoint does not fit the model (keys not in the "
                             f"model: {unexpected[:5]}; model keys not in the checkpoint: {missing[:5]})")
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        set_rng_state(checkpoint["rng"])
        self.metrics = list(checkpoint["metrics"])
        self.start_epoch = int(checkpoint["epoch"])
        self.steps_done = int(checkpoint.get("steps_completed", self.start_epoch * self.steps_per_epoch))
        self.loss_trace = list(checkpoint.get("loss_trace", []))
        record["resumed_from_epoch"] = self.start_epoch
        record["run_id"] = checkpoint.get("run_id", record["run_id"])

    def epoch_loop(self, on_epoch_end, on_batch_end) -> None:
        """Train the remaining epochs; evaluate where due (:meth:`evaluation_due`); checkpoint each complete
        epoch; stop after ``max_steps`` optimisation steps."""
        config = self.config
        epoch_bar = _tqdm(range(self.start_epoch + 1, config.epochs + 1), self.progress, desc="epochs",
                          unit="epoch", initial=self.start_epoch, total=config.epochs)
        for epoch in epoch_bar:
            te = time.perf_counter()
            row = {"epoch": epoch, **self.train_epoch(epoch, on_batch_end)}
            stopped = config.max_steps is not None and self.steps_done >= config.max_steps
            if stopped or self.evaluation_due(epoch):
                row.update(self.evaluate())
            row["epoch_seconds"] = time.perf_counter() - te
            self.metrics.append(to_jsonable(row))
            if row["train_steps"] == self.steps_per_epoch:  # a complete epoch (max_steps may end one early)
                self.save_checkpoint(epoch)
            distrib.barrier(self.ctx)
            if self.progress:
                accuracy = row.get("test_accuracy")
                epoch_bar.set_postfix(test_acc="–" if accuracy is None else f"{accuracy:.3f}",
                                      loss=f"{row['train_loss']:.4f}")
            if on_epoch_end is not None:
                on_epoch_end(epoch, dict(row))
            if self.faults.get("raise_after_epoch") == epoch:
                raise InjectedFault(f"fault injection: interrupted after epoch {epoch}")
            if stopped:
                self.record["stopped_at_max_steps"] = True
                break

    def evaluation_due(self, epoch: int) -> bool:
        """After every ``eval_every``-th epoch (1-based) and after the last."""
        return epoch % self.config.eval_every == 0 or epoch == self.config.epochs

    def train_epoch(self, epoch: int, on_batch_end) -> dict[str, Any]:
        """One epoch; everything random in it comes from (seed, epoch, rank): exact resume, any world size."""
        config, ctx = self.config, self.ctx
        seed_everything(_mix_seed(config.seed, epoch, ctx.rank) % 2**31)
        self.train_sampler.set_epoch(epoch)
        if isinstance(self.train_loader, DataLoader):
            self.train_loader.generator.manual_seed(_mix_seed(config.seed, epoch, 31))  # worker seeds of this epoch
        if not self.use_cache and _label_mapping_due(self.model, config, epoch):
            _update_label_mapping(self.model, self.train_set, config, self.device, self.amp_dtype, epoch, ctx,
                                  self.progress, bank=getattr(self.train_loader, "bank", None))
        self.step_module.train()
        _freeze_backbone_mode(self.model)
        row = _train_epoch(self.ddp_module, self.train_loader, self.optimizer, self.scheduler, self.params, config,
                           self.device, self.amp_dtype, ctx, epoch, self.faults, self.progress, on_batch_end,
                           first_step=self.steps_done, loss_trace=self.loss_trace)
        self.steps_done += row["train_steps"]
        return row

    def evaluate(self) -> dict[str, Any]:
        """Test metrics of the model as it is now (:func:`evaluate`)."""
        config, use_cache = self.config, self.use_cache
        options = dict(channels_last=self.device.type == "cuda" and config.channels_last and not use_cache,
                       features_mode=use_cache)
        metrics = evaluate(self.eval_module, self.test_loader, self.device, self.amp_dtype, self.ctx,
                           _logit_indices(self.test_set), **options)
        if self.val_loader is not None:  # the validation split of val_per_class: the search's criterion
            val = evaluate(self.eval_module, self.val_loader, self.device, self.amp_dtype, self.ctx,
                           _logit_indices(self.val_set), prompt_stats=False, **options)
            metrics.update(val_loss=val["test_loss"], val_accuracy=val["test_accuracy"], val_images=val["test_images"])
        return metrics

    def save_checkpoint(self, epoch: int) -> None:
        if self.run_dir is None or not self.ctx.is_main:
            return
        save_checkpoint(self.run_dir, {
            "epoch": epoch, "model": _trainable_state(self.model), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": rng_state(), "metrics": self.metrics,
            "config": self.config.to_dict(), "run_id": self.record["run_id"],
            "backbone_fingerprint": self.record["backbone_fingerprint"], "num_classes": self.num_classes,
            "steps_completed": self.steps_done, "loss_trace": self.loss_trace})

    def complete(self) -> dict[str, Any]:
        """The completed run's record (and its prompt weights, with a run directory)."""
        self.record["status"] = "completed"
        if self.run_dir is not None and self.ctx.is_main:
            weights = save_prompt_weights(self.model, self.run_dir / PROMPT_WEIGHTS_NAME, self.config)
            self.record["prompt_weights"] = str(weights)
            if weights is not None:  # the record vouches for its prompt file (lorsp.results.check_prompt_file)
                self.record["prompt_sha256"] = file_sha256(weights)
        return self.finish()

    def fail(self, error: Exception) -> None:
        """Record a failed run; failures before the data were built are configuration errors: no record."""
        self.record["status"] = "failed"
        self.record["reason"] = f"{type(error).__name__}: {error}"
        self.cache_seconds = None
        if "data" in self.record:
            self.finish()

    def finish(self) -> dict[str, Any]:
        """The record's summary of the epochs (test metrics from the last evaluated one), written atomically."""
        record, metrics = self.record, self.metrics
        record["metrics"] = metrics  # per-epoch rows (config "epochs" is the planned count)
        evaluated = [m for m in metrics if m.get("test_accuracy") is not None]
        final = evaluated[-1] if evaluated else {}
        accuracies = [m["test_accuracy"] for m in evaluated]
        record["evaluated_epochs"] = [m["epoch"] for m in evaluated]
        record["final_accuracy"] = final.get("test_accuracy")
        record["best_accuracy"] = max(accuracies) if accuracies else None
        record["best_epoch"] = evaluated[accuracies.index(max(accuracies))]["epoch"] if accuracies else None
        record["final_test_loss"] = final.get("test_loss")
        if self.config.val_per_class:
            record["final_val_accuracy"] = final.get("val_accuracy")
        record["final_train_loss"] = metrics[-1].get("train_loss") if metrics else None
        record["firing_rate"] = final.get("firing_rate")
        record["sparsity"] = final.get("sparsity")
        record["epochs_completed"] = len(metrics)
        record["steps_completed"] = self.steps_done
        record["loss_trace"] = list(self.loss_trace)
        record["timings"] = {"total_seconds": time.perf_counter() - self.t0,
                             "epoch_seconds": [m.get("epoch_seconds") for m in metrics],
                             "feature_cache_seconds": self.cache_seconds}
        record["finished_at"] = _utc(time.time())
        record["run_dir"] = str(self.run_dir) if self.run_dir is not None else None
        record = to_jsonable(record)
        if self.ctx.is_main:
            if self.run_dir is not None:
                record["record_path"] = str(write_record(record, self.run_dir, name=RECORD_NAME))
            if self.config.results_dir:
                from .data.provenance import portable_record
                record["results_path"] = str(write_record(portable_record(record), self.config.results_dir))
        return record


def _plan_prompter(model: nn.Module, steps: int, device: torch.device, record: dict) -> None:
    """Tell the prompter how many steps the whole run takes (``plan_run``; LoRSP's ``backend="auto"`` compiles on a
    CPU only for long runs): the planned length, not ``max_steps``, so that a shortened re-run computes alike."""
    prompter = getattr(model, "prompter", None)
    if callable(getattr(prompter, "plan_run", None)):
        prompter.plan_run(steps)
    if callable(getattr(prompter, "lif_backend", None)):
        record["lif_backend"] = prompter.lif_backend(device)


def _provenance(train_set, test_set, config: TrainConfig, val_set=None) -> dict:
    """The exact images of the splits, named so that anyone can check them (:mod:`lorsp.data.provenance`)."""
    from .data import data_root
    from .data.provenance import data_provenance

    root = data_root(config.data_root)
    out = {"train": data_provenance(train_set, root), "test": data_provenance(test_set, root)}
    if val_set is not None:
        out["val"] = data_provenance(val_set, root)
    return out


def prebuild_lif_gates(configs: Sequence[TrainConfig]) -> list[tuple[int, ...]]:
    """Build, before a grid's first run, the compiled LIF gates its CPU runs will load (LoRSP's
    ``backend="auto"``, :meth:`~lorsp.prompters.lowrank_sparse.LoRSPPrompter.cpu_gate_shape`): a gate is built
    once per machine and configuration (a minute or more), after which ``auto`` runs it in every run of that
    shape, however short (:func:`~lorsp.prompters.fused.auto_backend`). It is built for the shapes whose runs
    in ``configs`` together plan at least :data:`~lorsp.prompters.fused.CPU_COMPILE_MIN_STEPS` steps
    (:func:`_planned_steps`) — the rule a single run applies to itself, applied to the grid — and not already
    built. Returns the ``(G, r, C, H, W)`` built now; a build that fails is a warning (those runs stay eager)."""
    from collections import Counter

    from .prompters.fused import CPU_COMPILE_MIN_STEPS, build_compiled_gate, compile_available, compiled_gate_cached

    steps: Counter = Counter()
    for config in configs:
        on_cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
        prompter = None if config.is_linear_probe or not on_cpu else build_prompter_for(config)
        shape = prompter.cpu_gate_shape() if callable(getattr(prompter, "cpu_gate_shape", None)) else None
        if shape is not None:
            steps[shape] += _planned_steps(config)
    built = []
    for shape, total in steps.items():
        if total < CPU_COMPILE_MIN_STEPS or compiled_gate_cached(*shape) or not compile_available("cpu"):
            continue
        try:
            build_compiled_gate(*shape)
        except Exception as error:  # noqa: BLE001 - any compiler failure: those runs stay eager
            warnings.warn(f"could not build the compiled LIF gate (G, r, C, H, W) = {shape} ({type(error).__name__}: "
                          f"{str(error)[:300]}); its runs train with the eager gate", RuntimeWarning, stacklevel=2)
            continue
        built.append(shape)
    return built


def _planned_steps(config: TrainConfig) -> int:
    """The training steps ``config`` plans (``epochs × ⌈images / batch⌉``, at most ``max_steps``), estimated
    without reading the data: ``train_per_class`` × the registered dataset's number of classes; 0 where either
    is unknown (the whole dataset, a folder)."""
    from .data import dataset_spec

    try:
        classes = dataset_spec(config.dataset).num_classes
    except ValueError:
        classes = None
    if config.train_per_class is None or classes is None:
        return 0
    steps = config.epochs * math.ceil(config.train_per_class * classes / config.batch_size)
    return min(steps, config.max_steps) if config.max_steps is not None else steps


def _describe_model(record: dict, model: nn.Module, info, config: TrainConfig) -> None:
    """Weights source (by package, timm tag or file name, and sha256), backbone, prompt and head sizes of a built
    model, into the run record."""
    source = str(getattr(info, "weights_source", "unknown"))
    record.update({
        "weights_source": source, "weights_sha256": getattr(info, "weights_sha256", None),
        "random_weights": source == "random",
        "backbone_info": {k: to_jsonable(getattr(info, k, None)) for k in
                          ("name", "timm_name", "num_features", "num_classes", "mean", "std", "input_size")},
    })
    prompter = getattr(model, "prompter", None)
    record["prompt_params"] = int(prompter.num_prompt_params()) if isinstance(prompter, nn.Module) else 0
    record["prompter_class"] = type(prompter).__name__ if prompter is not None else None
    if prompter is not None:
        try:  # the closed form (Eqs. 13–15 for LoRSP) beside the count on the module
            from .prompters import prompt_param_count
            record["prompt_params_closed_form"] = int(prompt_param_count(
                config.method, image_size=config.image_size, **config.prompter_kwargs))
        except (TypeError, ValueError, NotImplementedError):
            record["prompt_params_closed_form"] = None
    head = getattr(model, "head", None)
    record["head_params"] = (sum(p.numel() for p in head.parameters() if p.requires_grad)
                             if isinstance(head, nn.Module) else 0)


# ---------------------------------------------------------------------------------------------------------
# evaluating a finished run (lorsp eval)
# ---------------------------------------------------------------------------------------------------------
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
    dev = _resolve_device(config.device)
    from .data import build_dataset
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
        _logit_indices(data)
    loader = DataLoader(data, batch_size=batch_size or config.batch_size, shuffle=False,
                        num_workers=config.num_workers)
    if progress is None:
        progress = sys.stderr.isatty()
    result = evaluate(model, loader, dev, _amp_dtype(config.amp, dev), logit_indices=subset, progress=progress)
    return {"run_dir": str(run_dir), "epoch": checkpoint["epoch"], "dataset": name, "split": split,
            "n_images": len(data), "skipped": _skipped(data),
            "logit_subset": None if subset is None else len(subset), **result}
