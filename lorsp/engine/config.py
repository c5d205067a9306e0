"""A training run's configuration: :class:`TrainConfig` (method.md's protocol as defaults), its allowed
values, :class:`DivergenceError`, and which fields may change when a run resumes."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..results import to_jsonable
from .fields import field_specs, spec


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
    """One training run. Defaults are method.md's protocol. Each field declares once, with
    :func:`~lorsp.engine.fields.spec`, its allowed values and help text: :meth:`validate` checks them and
    ``lorsp train`` makes its flags from them (:func:`lorsp.cli_types.add_config_arguments`).

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

    # what to train
    backbone: str = spec("mobilenetv2", kind="str", group="what", help="backbone short name or timm name "
                         "(default: mobilenetv2); see lorsp.backbones.list_backbones()")
    dataset: str = spec("synthetic", kind="str", group="what", help="dataset name (cifar10, tiny-imagenet, "
                        "folder:PATH, synthetic, ...; default: synthetic)")
    method: str = spec("lorsp", kind="str", group="what", help="prompter name (lorsp, lpf, topk, dropout, lorvp, "
                       "...) or 'none' for linear probing (default: lorsp)")
    head: str = spec("linear", kind="str", group="what", help="output head: linear (LP head, default), or a label "
                     "mapping head of the baselines (e.g. ilm, flm, fullymap)")
    # the protocol (method.md's defaults)
    epochs: int = spec(20, kind="int", low=1, flag_high=100000, group="protocol", help="epochs (default 20)")
    batch_size: int = spec(256, kind="int", low=1, flag_high=1 << 20, group="protocol",
                           help="global batch (default 256)")
    lr: float = spec(0.01, kind="number", low=0, high=100, low_open=True, group="protocol",
                     help="learning rate in (0, 100] (default 0.01)")
    prompt_lr: float | None = spec(None, kind="number", low=0, high=100, low_open=True, optional=True,
                                   optional_means="the prompt trains at lr, as in the paper", group="protocol",
                                   help="the prompt's own learning rate in (0, 100], the head keeping --lr (a "
                                   "deviation from the paper, which trains both at --lr; default: --lr)")
    momentum: float = spec(0.9, kind="number", low=0, high=1, high_open=True, group="protocol",
                           help="SGD momentum in [0, 1) (default 0.9)")
    weight_decay: float = spec(1e-4, kind="number", low=0, high=1, group="protocol",
                               help="weight decay in [0, 1] (default 1e-4)")
    schedule: str = spec("cosine", kind="choice", choices=SCHEDULES, group="protocol",
                         help="learning-rate schedule, stepped every iteration (default cosine)")
    image_size: int = spec(224, kind="int", low=1, high=4096, group="protocol",
                           help="image side in pixels (default 224)")
    train_per_class: int | None = spec(None, kind="int", low=1, optional=True, optional_means="all images",
                                       group="protocol", help="train images per class (a seeded subset; default "
                                       "all)")
    test_per_class: int | None = spec(None, kind="int", low=1, optional=True, optional_means="all images",
                                      group="protocol", help="test images per class (default all)")
    val_per_class: int | None = spec(None, kind="int", low=1, optional=True, optional_means="no validation split",
                                     note="training images per class held out for validation: lorsp.validation",
                                     flag=False, help="training images per class held out for validation "
                                     "(lorsp.validation; default: no validation split)")
    seed: int = spec(0, kind="int", low=0, high=2**31 - 1, what="an integer in [0, 2**31)", group="protocol",
                     help="random seed (default 0)")
    # weights, data, device
    device: str = spec("auto", kind="str", group="data", help="auto (default), cpu, cuda, cuda:N")
    weights: str | None = spec(None, kind="path", optional=True, group="data",
                               help="a local checkpoint file for the backbone")
    random_init: bool = spec(False, kind="bool", group="data",
                             help="random backbone weights (the record says so)")
    # the run directory
    deterministic: bool = spec(False, kind="bool", group="run", help="deterministic algorithms (exact resume)")
    output: str | None = spec(None, kind="path", optional=True, metavar="DIR", group="run",
                              help="run directory for the checkpoint, record and prompt weights (default: "
                              "runs/<backbone>_<dataset>_<method>_s<seed>_<time>)")
    resume: bool = spec(False, kind="bool", group="run", help="continue the run in --output from its last "
                        "complete checkpoint")
    # keyword arguments of the prompter and the backbone (the command line: PROMPTER_FLAGS, --backbone-option)
    prompter_kwargs: dict = spec({}, kind="dict", what="a dict of keyword arguments", flag=False,
                                 help="keyword arguments of the prompter (groups, rank, tau, ...), passed unchanged")
    backbone_kwargs: dict = spec({}, kind="dict", what="a dict of keyword arguments", flag=False,
                                 help="extra timm create_model arguments, e.g. img_size=32")
    # weights, data, device
    num_workers: int = spec(0, kind="int", low=0, flag_high=256, group="data", help="DataLoader workers "
                            "(default 0)")
    loader: str = spec("auto", kind="choice", choices=LOADERS, group="data",
                       help="dataloader: decode and resize every epoch on the CPU; device: decode once, keep uint8, "
                       "resize on the training device; auto (default): device (on CUDA and on a CPU) when the "
                       "decoded images take at most 4 GiB (CIFAR, Tiny-ImageNet; on a CPU also at most a quarter "
                       "of the available memory) and the dataset reads its images unaltered, else dataloader")
    amp: str = spec("auto", kind="choice", choices=AMP_MODES, group="data",
                    help="autocast on CUDA (auto: bf16 where supported; never on CPU)")
    channels_last: bool = spec(True, kind="bool", group="data", help="keep NCHW memory format on GPU")
    bad_image_policy: str = spec("error", kind="choice", choices=BAD_IMAGE_POLICIES, flag_name="--bad-images",
                                 group="data", help="unreadable images: fail naming the file (default) or skip "
                                 "and count them")
    # the protocol
    label_mapping_interval: int = spec(1, kind="int", low=1, group="protocol", help="epochs between "
                                       "label-mapping updates of mapping heads (ILM: 1)")
    max_grad_norm: float | None = spec(None, kind="number", low=0, low_open=True, optional=True, group="protocol",
                                       help="clip the gradient norm (default: no clipping)")
    eval_every: int = spec(1, kind="int", low=1, note="evaluate after every N-th epoch and after the last",
                           metavar="N", group="protocol", help="evaluate on the test split after every N-th "
                           "epoch and after the last (default 1)")
    eval_batch_size: int | None = spec(None, kind="int", low=1, optional=True, flag_high=1 << 20, group="protocol",
                                       help="evaluation batch (default: twice --batch-size)")
    max_steps: int | None = spec(None, kind="int", low=1, optional=True, metavar="K", group="protocol",
                                 help="stop after K optimisation steps in all (the schedule stays the whole run's), "
                                 "evaluate and write the record: re-run the first steps of a run")
    trace_steps: int = spec(32, kind="int", low=0, metavar="K", group="protocol", help="the record's loss_trace "
                            "keeps the loss of the first K steps (default 32)")
    # weights, data, device
    cache_features: str = spec("auto", kind="choice", choices=CACHE_MODES, group="data",
                               help="linear probing: cache backbone features in memory (auto), on disk in the run "
                               "directory, or not at all")
    feature_cache_dir: str | None = spec(None, kind="path", optional=True, what="a folder path", metavar="DIR",
                                         group="data", help="linear probing: also keep the features in DIR, shared "
                                         "by runs on the same images (e.g. the seeds of a grid that uses every "
                                         "image), so that they are computed once")
    data_root: str | None = spec(None, kind="path", optional=True, group="data",
                                 help="data root (default: $LORSP_DATA or data/)")
    download: bool = spec(False, kind="bool", group="data", help="let torchvision download a missing dataset")
    results_dir: str | None = spec(None, kind="path", optional=True, group="run",
                                   help="also write the record under a unique name here")
    fault_injection: dict | None = spec(None, kind="dict", optional=True, flag=False,
                                        help="test hook: {'nonfinite_loss_at': [epoch, step]}, "
                                        "{'sleep_per_batch': s} or {'raise_after_epoch': k}")

    # -- validation ------------------------------------------------------------------------------------
    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the field, its value and the allowed values (each field's
        :class:`~lorsp.engine.fields.FieldSpec`, then the fields that depend on each other); return self."""
        for name, allowed in field_specs(type(self)).items():
            if not allowed.accepts(getattr(self, name)):
                self._fail(name, allowed.expected())
        self._validate_combinations()
        return self

    def _validate_combinations(self) -> None:
        """The device's pattern and the fields that depend on each other (:meth:`validate`)."""
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda", "mps"):
            self._fail("device", "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        if self.resume and not self.output:
            raise ValueError("TrainConfig.resume=True needs TrainConfig.output, the run directory to resume from")
        if self.weights is not None and self.random_init:
            raise ValueError("TrainConfig.weights and TrainConfig.random_init exclude each other: give one")
        if self.cache_features == "disk" and not self.output:
            raise ValueError("TrainConfig.cache_features='disk' needs TrainConfig.output (the cache lives there)")

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
