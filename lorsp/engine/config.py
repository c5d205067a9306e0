"""A training run's configuration: :class:`TrainConfig` (method.md's protocol as defaults), its allowed
values, :class:`DivergenceError`, and which fields may change when a run resumes."""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from ..results import to_jsonable


RECORD_NAME = "record.json"
PROMPT_WEIGHTS_NAME = "prompt.safetensors"
LP_METHODS = ("none",)
SCHEDULES = ("cosine", "constant")
AMP_MODES = ("auto", "bf16", "fp16", "off")
CACHE_MODES = ("auto", "memory", "disk", "off")
BAD_IMAGE_POLICIES = ("error", "skip")
LOADERS = ("auto", "dataloader", "device")


# Config fields that may differ between an interrupted run and its resumption.
# eval_every and eval_batch_size only decide which epochs are evaluated and in how large batches: every epoch
# reseeds from (seed, epoch, rank) before it trains, so evaluating (or not) changes nothing of the training.
RESUME_FREE_FIELDS = frozenset({"resume", "output", "num_workers", "device", "results_dir", "fault_injection",
                                "data_root", "cache_features", "feature_cache_dir", "loader", "eval_every",
                                "eval_batch_size"})


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite; the run stopped (its last good checkpoint is kept)."""


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
        self._validate_numbers()
        self._validate_options()
        return self

    def _validate_numbers(self) -> None:
        """The names, counts, rates and sizes (:meth:`validate`, first half)."""
        fail = self._fail
        for name in ("backbone", "dataset", "method", "head", "device"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                fail(name, "a non-empty string")
        for name in ("epochs", "batch_size", "image_size", "label_mapping_interval"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                fail(name, "an integer >= 1")
        if self.image_size > 4096:
            fail("image_size", "an integer in [1, 4096]")
        for name in ("train_per_class", "test_per_class"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                fail(name, "None (all images) or an integer >= 1")
        if self.val_per_class is not None and (not _is_int(self.val_per_class) or self.val_per_class < 1):
            fail("val_per_class", "None (no validation split) or an integer >= 1 (training images per class held "
                 "out for validation: lorsp.validation)")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**31:
            fail("seed", "an integer in [0, 2**31)")
        if not _is_num(self.lr) or not 0 < self.lr <= 100:
            fail("lr", "a number in (0, 100]")
        if self.prompt_lr is not None and (not _is_num(self.prompt_lr) or not 0 < self.prompt_lr <= 100):
            fail("prompt_lr", "None (the prompt trains at lr, as in the paper) or a number in (0, 100]")
        if not _is_num(self.momentum) or not 0 <= self.momentum < 1:
            fail("momentum", "a number in [0, 1)")
        if not _is_num(self.weight_decay) or not 0 <= self.weight_decay <= 1:
            fail("weight_decay", "a number in [0, 1]")
        if self.max_grad_norm is not None and (not _is_num(self.max_grad_norm) or self.max_grad_norm <= 0):
            fail("max_grad_norm", "None or a number > 0")
        if not _is_int(self.eval_every) or self.eval_every < 1:
            fail("eval_every", "an integer >= 1 (evaluate after every N-th epoch and after the last)")
        for name in ("eval_batch_size", "max_steps"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                fail(name, "None or an integer >= 1")
        if not _is_int(self.trace_steps) or self.trace_steps < 0:
            fail("trace_steps", "an integer >= 0")
        if not _is_int(self.num_workers) or self.num_workers < 0:
            fail("num_workers", "an integer >= 0")

    def _validate_options(self) -> None:
        """The choices, switches, keyword dicts and the fields that depend on each other (:meth:`validate`,
        second half)."""
        fail = self._fail
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

    def _fail(self, name: str, expected: str):
        """Raise the ValueError of field ``name``: what was expected, what it holds."""
        raise ValueError(f"TrainConfig.{name} must be {expected}, got {getattr(self, name)!r}")

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


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_resumable(saved: dict[str, Any], config: TrainConfig, path) -> None:
    """A ValueError naming the fields (outside :data:`RESUME_FREE_FIELDS`) in which ``config`` differs from the
    checkpoint's config ``saved``."""
    current = config.to_dict()
    defaults = TrainConfig().to_dict()  # fields newer than the checkpoint compare at their defaults
    saved = {**{k: v for k, v in defaults.items() if k not in saved}, **saved}
    different = sorted(k for k in set(saved) | set(current)
                       if k not in RESUME_FREE_FIELDS and saved.get(k) != current.get(k))
    if different:
        details = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}" for k in different)
        raise ValueError(f"cannot resume {path}: the config differs in {details}. Resume with the same "
                         "settings, or start a new run in another --output directory.")
