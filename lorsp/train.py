"""The trainer's public face: ``lorsp.train.train(lorsp.train.TrainConfig(...))`` (the CLI: ``lorsp train``).

Everything here is re-exported from the engine package :mod:`lorsp.engine` (one module per job: the config,
sampling, loaders, devices, building the run, label mapping, the LP feature cache, the loop, the run, ...), whose
docstring states what the trainer guarantees (method.md's protocol, Eqs. 10–12, as defaults).
"""
from __future__ import annotations

from .engine import (AMP_MODES, BAD_IMAGE_POLICIES, CACHE_MODES, DEVICE_LOADER_AUTO_MAX_BYTES,
                     FEATURES_ON_DEVICE_MAX_BYTES, LOADERS, LP_METHODS, PROMPT_WEIGHTS_NAME, RECORD_NAME,
                     RESUME_FREE_FIELDS, SCHEDULES, DivergenceError, EpochSampler, InjectedFault, Run, TrainConfig,
                     build_datasets, build_optimizer, build_prompter_for, build_run_model, build_scheduler,
                     choose_loader, compose_run_model, device_loader, evaluate, evaluate_run, freeze_backbone_mode,
                     prebuild_lif_gates, save_prompt_weights, seed_everything, train)

__all__ = ["TrainConfig", "train", "Run", "DivergenceError", "InjectedFault", "EpochSampler", "seed_everything",
           "evaluate", "evaluate_run", "build_datasets", "build_prompter_for", "build_run_model", "compose_run_model",
           "freeze_backbone_mode", "build_optimizer", "build_scheduler", "save_prompt_weights", "prebuild_lif_gates",
           "choose_loader", "device_loader", "RECORD_NAME", "PROMPT_WEIGHTS_NAME", "LP_METHODS", "SCHEDULES",
           "AMP_MODES", "CACHE_MODES", "BAD_IMAGE_POLICIES", "LOADERS", "RESUME_FREE_FIELDS",
           "DEVICE_LOADER_AUTO_MAX_BYTES", "FEATURES_ON_DEVICE_MAX_BYTES"]
