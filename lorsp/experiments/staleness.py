"""Are the committed run records still what the code trains? (issue 15: committed records stay true)

Every run record keeps ``loss_trace``, the training loss of its first steps (``TrainConfig.trace_steps``).
:func:`replay_losses` re-runs the first ``steps`` steps of a record's run from its config (CPU,
deterministic) and returns their losses; :func:`stale_records` compares them with the records' traces and
names every record whose first steps the code no longer reproduces, so that it is retrained.

A record whose first steps need a pass over the whole training set before any step (LP with cached
features, ILM-VP's label mapping) is not replayed: the prompted records of the same data and backbone
cover the same inputs, and replaying these would cost a whole epoch's forward passes.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Iterable

#: relative tolerance between a replayed loss and the recorded one (float sums over 1–2 threads differ by ~1e-6)
RTOL = 1e-4


class _Enough(Exception):
    """Raised by the step hook once the replay has its steps (the run stops there, before any evaluation)."""


def replayable(record: dict) -> bool:
    """Whether :func:`replay_losses` can re-run the first steps of ``record`` cheaply (see the module)."""
    config = record.get("config") or {}
    return bool(record.get("loss_trace")) and config.get("method") not in ("none", None) and \
        config.get("head") not in ("ilm", "flm")


def replay_losses(record: dict, steps: int, data_root=None) -> list[float]:
    """The training losses of the first ``steps`` steps of ``record``'s run, re-run now on the CPU."""
    from ..train import TrainConfig, train
    config = TrainConfig.from_dict(dict(record["config"]))
    config = dataclasses.replace(config, output=None, resume=False, results_dir=None, feature_cache_dir=None,
                                 device="cpu",
                                 deterministic=True, max_steps=steps, fault_injection=None,
                                 prompter_kwargs=_same_lif_backend(record, config.prompter_kwargs),
                                 data_root=data_root if data_root is not None else config.data_root)
    losses: list[float] = []

    def collect(epoch, step, loss):
        losses.append(float(loss))
        if len(losses) >= steps:
            raise _Enough

    try:
        train(config, progress=False, on_batch_end=collect)
    except _Enough:
        pass
    return losses


def _same_lif_backend(record: dict, prompter_kwargs: dict) -> dict:
    """``prompter_kwargs`` with LoRSP's fused gate pinned to the backend the record was trained with
    (``lif_backend``): ``backend="auto"`` may pick the compiled gate on a machine where it is built, and the
    replay must compute as the run did, not as this machine would choose."""
    backend = record.get("lif_backend")
    if backend is None or "backend" in prompter_kwargs:
        return prompter_kwargs
    return {**prompter_kwargs, "backend": backend}


def compare_trace(record: dict, losses: list[float], rtol: float = RTOL) -> str | None:
    """``None`` when ``losses`` match the start of the record's ``loss_trace``, else what differs."""
    trace = [float(v) for v in record.get("loss_trace") or []][:len(losses)]
    if len(trace) < len(losses):
        return f"its loss_trace has {len(trace)} steps, {len(losses)} were replayed"
    for step, (old, new) in enumerate(zip(trace, losses)):
        if not math.isclose(old, new, rel_tol=rtol, abs_tol=1e-7):
            return f"step {step}: recorded loss {old:.6f}, the code now gives {new:.6f}"
    return None


def stale_records(paths: Iterable[Path], steps: int = 3, budget_seconds: float | None = None,
                  data_root=None) -> tuple[list[str], list[Path]]:
    """Replay the first ``steps`` of each replayable record of ``paths`` (one per method and dataset, the
    first found, until ``budget_seconds`` is spent) and return ``(problems, replayed paths)``: one sentence per
    record whose replay differs, naming the record to regenerate."""
    problems, replayed, seen = [], [], set()
    started = time.perf_counter()
    for path in sorted(Path(p) for p in paths):
        record = json.loads(path.read_text(encoding="utf-8"))
        if not replayable(record):
            continue
        kind = (record["config"].get("method"), record["config"].get("dataset"))
        if kind in seen:
            continue
        if budget_seconds is not None and replayed and time.perf_counter() - started > budget_seconds:
            break
        seen.add(kind)
        losses = replay_losses(record, steps, data_root=data_root)
        replayed.append(path)
        difference = compare_trace(record, losses)
        if difference:
            problems.append(f"{path} is stale ({difference}): the code no longer trains what this record "
                            f"says; regenerate it (and the records of the same commit "
                            f"{str(record.get('git_commit'))[:12]}) with python -m lorsp.experiments")
    return problems, replayed
