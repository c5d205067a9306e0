"""The training engine: method.md's protocol (Eqs. 10–12) on a frozen backbone, one run → one record.

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

The package, one job per module: :mod:`~lorsp.engine.config` (the config, its validation, resume rules),
:mod:`~lorsp.engine.sampling` (seeds, the epoch order), :mod:`~lorsp.engine.devices`, :mod:`~lorsp.engine.loaders`,
:mod:`~lorsp.engine.faults` (test hooks), :mod:`~lorsp.engine.building` (datasets, model, optimizer, schedule),
:mod:`~lorsp.engine.label_mapping`, :mod:`~lorsp.engine.features` (the LP feature cache),
:mod:`~lorsp.engine.loop` (epoch, step, evaluation), :mod:`~lorsp.engine.run` (:func:`train`, :class:`Run`),
:mod:`~lorsp.engine.describe` and :mod:`~lorsp.engine.saving` (what a run records and writes),
:mod:`~lorsp.engine.gates` (compiled LIF gates), :mod:`~lorsp.engine.checkpoint_eval` (``lorsp eval``).
:mod:`lorsp.train` is the public facade over this package.
"""

from __future__ import annotations

from .building import (build_datasets, build_optimizer, build_prompter_for, build_run_model, build_scheduler,
                       compose_run_model, freeze_backbone_mode)
from .checkpoint_eval import evaluate_run
from .config import (AMP_MODES, BAD_IMAGE_POLICIES, CACHE_MODES, LOADERS, LP_METHODS, PROMPT_WEIGHTS_NAME, RECORD_NAME,
                     RESUME_FREE_FIELDS, SCHEDULES, DivergenceError, TrainConfig)
from .faults import InjectedFault
from .features import FEATURES_ON_DEVICE_MAX_BYTES
from .gates import prebuild_lif_gates
from .loaders import DEVICE_LOADER_AUTO_MAX_BYTES, choose_loader, device_loader
from .loop import evaluate
from .run import Run, train
from .sampling import EpochSampler, seed_everything
from .saving import save_prompt_weights

__all__ = ["TrainConfig", "train", "Run", "DivergenceError", "InjectedFault", "EpochSampler", "seed_everything",
           "evaluate", "evaluate_run", "build_datasets", "build_prompter_for", "build_run_model", "compose_run_model",
           "freeze_backbone_mode", "build_optimizer", "build_scheduler", "save_prompt_weights", "prebuild_lif_gates",
           "choose_loader", "device_loader", "RECORD_NAME", "PROMPT_WEIGHTS_NAME", "LP_METHODS", "SCHEDULES",
           "AMP_MODES", "CACHE_MODES", "BAD_IMAGE_POLICIES", "LOADERS", "RESUME_FREE_FIELDS",
           "DEVICE_LOADER_AUTO_MAX_BYTES", "FEATURES_ON_DEVICE_MAX_BYTES"]
