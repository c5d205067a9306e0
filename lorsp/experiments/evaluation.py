"""OOD: evaluating trained runs on shifted test sets (Table IV), and rebuilding a trained run's model."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from .grid import run_key
from .records import records_frame, trained_state
from .store import RecordStore, training_engine


def evaluate_shifts(runs: Sequence[dict], results_dir, shifts: Sequence[str] | None = None,
                    progress: bool = True) -> pd.DataFrame:
    """Accuracy of each trained run (its checkpoint) on the shifted test sets, added to its record.

    At ``smoke``/``mini`` the shifted sets are :class:`lorsp.shifts.ShiftedDataset` views of the source
    test set (the same images, transformed); at ``paper`` they are datasets of the registry (ImageNet-V2,
    -Sketch, -A, -R; A and R scored over their 200 classes by the engine's evaluation). Results are cached
    in the record under ``experiment.shifted`` so a rerun skips them. Returns :func:`run_grid`'s rows
    with one ``accuracy_pct:<shift>`` column per shifted set.
    """
    engine = training_engine()
    results_dir = Path(results_dir)
    rows, store = [], RecordStore(results_dir)
    for run in runs:
        record = store.get(run)
        if record is None:
            continue
        targets = list(shifts if shifts is not None else run.get("tags", {}).get("eval_on", []))
        shifted = dict(record.get("experiment", {}).get("shifted") or {})
        missing = [t for t in targets if t not in shifted]
        if missing:
            shifted.update(engine_evaluate_shifts(engine, run, results_dir, missing))
            record.setdefault("experiment", {})["shifted"] = shifted
            store.write(run, record)
        rows.append((run, record))
    return records_frame(rows)


def load_run_model(run: dict, results_dir, device: str = "cpu"):
    """The trained model of ``run`` (backbone + prompter + head) and its TrainConfig.

    Built with the engine's :func:`lorsp.train.build_run_model` (the frozen backbone is rebuilt from its
    weights) and filled from the run folder's checkpoint when there is one, else from its committed
    ``record.json`` (the config) and ``prompt.safetensors`` (the trained prompter and head), which is all a
    results folder keeps. The model is in eval mode on ``device``.
    """
    engine = training_engine()
    import dataclasses
    values, state, source, num_classes = trained_state(Path(results_dir) / run_key(run), "model")
    config = engine.TrainConfig.from_dict(values)
    config = dataclasses.replace(config, device=device, resume=False, output=None)
    engine.seed_everything(config.seed)  # as the engine does before building: a random-init backbone is the same
    model, info = engine.build_run_model(config, num_classes)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k.startswith(("prompter.", "head."))]
    if unexpected or missing:
        raise ValueError(f"{source}: keys {unexpected[:5]} do not fit the rebuilt model, and its trained keys "
                         f"{missing[:5]} are missing")
    return model.to(device).eval(), config


def test_set_of(config, shift: str | None = None, seed: int = 0):
    """The test set a run was evaluated on (same images: same per-class subset and seed), optionally shifted."""
    from ..data import build_dataset
    data = build_dataset(config.dataset, split="test", image_size=config.image_size, root=config.data_root,
                         per_class=config.test_per_class, seed=config.seed,
                         bad_image_policy=config.bad_image_policy)
    if shift is None:
        return data
    from ..shifts import ShiftedDataset
    return ShiftedDataset(data, shift, seed=seed)


def engine_evaluate_shifts(engine, run: dict, results_dir, targets: Sequence[str]) -> dict[str, float]:
    """Accuracy (fraction) of a trained run on each target: a registered shift of its own test set
    (:mod:`lorsp.shifts`), or otherwise a dataset of the registry evaluated by
    :func:`lorsp.train.evaluate_run` (ImageNet-A/R scored over their 200 classes)."""
    from torch.utils.data import DataLoader
    from ..shifts import SHIFTS
    results_dir = Path(results_dir)
    device = run.get("device", "cpu")
    out: dict[str, float] = {}
    model = config = None
    for target in targets:
        if target in SHIFTS:
            if model is None:
                model, config = load_run_model(run, results_dir, device=device)
            data = test_set_of(config, target, seed=0)
            loader = DataLoader(data, batch_size=config.batch_size, shuffle=False)
            import torch
            result = engine.evaluate(model, loader, torch.device(device), prompt_stats=False)
        else:
            result = engine.evaluate_run(results_dir / run_key(run), dataset=target, device=device, progress=False)
        out[target] = float(result["test_accuracy"])
    return out
