"""Compiled LIF gates: a grid builds them before its first run, and a run tells its prompter the steps it plans."""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch
from torch import nn

from .building import build_prompter_for
from .config import TrainConfig


def plan_prompter(model: nn.Module, steps: int, device: torch.device, record: dict) -> None:
    """Tell the prompter how many steps the whole run takes (``plan_run``; LoRSP's ``backend="auto"`` compiles on a
    CPU only for long runs): the planned length, not ``max_steps``, so that a shortened re-run computes alike."""
    prompter = getattr(model, "prompter", None)
    if callable(getattr(prompter, "plan_run", None)):
        prompter.plan_run(steps)
    if callable(getattr(prompter, "lif_backend", None)):
        record["lif_backend"] = prompter.lif_backend(device)


def prebuild_lif_gates(configs: Sequence[TrainConfig]) -> list[tuple[int, ...]]:
    """Build, before a grid's first run, the compiled LIF gates its CPU runs will load (LoRSP's
    ``backend="auto"``, :meth:`~lorsp.prompters.lowrank_sparse.LoRSPPrompter.cpu_gate_shape`): a gate is built
    once per machine and configuration (a minute or more), after which ``auto`` runs it in every run of that
    shape, however short (:func:`~lorsp.prompters.fused.auto_backend`). It is built for the shapes whose runs
    in ``configs`` together plan at least :data:`~lorsp.prompters.fused.CPU_COMPILE_MIN_STEPS` steps
    (:func:`_planned_steps`) — the rule a single run applies to itself, applied to the grid — and not already
    built. Returns the ``(G, r, C, H, W)`` built now; a build that fails is a warning (those runs stay eager)."""
    from collections import Counter

    from ..prompters.fused import CPU_COMPILE_MIN_STEPS, build_compiled_gate, compile_available, compiled_gate_cached

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
    from ..data import dataset_spec

    try:
        classes = dataset_spec(config.dataset).num_classes
    except ValueError:
        classes = None
    if config.train_per_class is None or classes is None:
        return 0
    steps = config.epochs * math.ceil(config.train_per_class * classes / config.batch_size)
    return min(steps, config.max_steps) if config.max_steps is not None else steps
