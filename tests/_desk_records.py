"""A fabricated, COMPLETE set of ``desk`` run records, for tests only (never under the repository's results/).

:func:`fabricate_records` writes, for every run of every chapter's grid at a scale (default ``desk``),
``<root>/<scale>/<run key>/record.json`` in the shape :func:`lorsp.experiments.runner.train_one` writes (the
engine's record with ``config``, per-epoch ``metrics``, ``final_accuracy``, ``loss_trace``... and the
``experiment`` entry; ``experiment.shifted`` for the OOD chapter's runs) and ``prompt.safetensors``: the
run's real prompter and head, built through the engine from the run's config and saved with the engine's
own :func:`lorsp.train.save_prompt_weights` (freshly initialised, then nudged by small noise so that a prompt
is not exactly zero). Every number is invented: each record says ``"fabricated_for_tests": true``.

Point ``LORSP_RESULTS`` at ``root`` to make the book's chapters headline these records (the rehearsal of the
day the real desk grid is complete: ``tests/test_desk_rehearsal.py``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from pathlib import Path
from unittest import mock

import numpy as np

REPO = Path(__file__).resolve().parents[1]

#: plausible accuracy (fraction) per dataset and label offsets (pp); the numbers are invented
_BASE = {"cifar10": 0.60, "tiny-imagenet": 0.32, "synthetic": 0.5}
_OFFSET_PP = {"LP": 0.0, "ILM-VP": -1.0, "AutoVP": 0.5, "EVP": -0.5, "LoR-VP": 0.3, "LPF": 0.8, "LoRSP": 1.2,
              "VPT": 0.0}
_NUM_CLASSES = {"cifar10": 10, "tiny-imagenet": 200, "synthetic": 10}


def all_runs(scale: str = "desk") -> list[dict]:
    """Every run of every chapter's grid at ``scale``, each once, with the tags of the first chapter that
    ``python -m lorsp.experiments`` trains it in (:data:`lorsp.experiments.RUN_ORDER`)."""
    from lorsp.experiments import RUN_ORDER, grid, run_key
    runs = {}
    for chapter in RUN_ORDER:
        for run in grid(chapter, scale):
            runs.setdefault(run_key(run), run)
    return list(runs.values())


def shift_targets(scale: str = "desk") -> dict[str, list[str]]:
    """``{run key: shifted test sets}`` of the OOD chapter's runs (a run it shares with the backbones chapter
    is recorded with the backbones tags, and gets ``experiment.shifted`` all the same, as
    :func:`lorsp.experiments.evaluate_shifts` writes it)."""
    from lorsp.experiments import grid, run_key
    return {run_key(r): list(r["tags"].get("eval_on") or []) for r in grid("ood", scale)}


def _accuracy(run: dict, rng: np.random.Generator) -> float:
    label = run["tags"].get("method_label") or run["tags"]["label"]
    offset = _OFFSET_PP.get(label.split()[0], 0.0)
    if run.get("keep_ratio") is not None:
        offset -= 2.0 * (1.0 - float(run["keep_ratio"]))
    if label == "LP · 224 px (cached)":
        offset += 6.0
    value = _BASE.get(run["dataset"], 0.5) + offset / 100 + rng.normal(0.0, 0.004)
    return float(np.clip(value, 0.01, 0.99))


class _Models:
    """The engine's model of each config, with the backbone built once per (backbone, image size)."""

    def __init__(self):
        self.backbones = {}

    def build(self, config, num_classes):
        import lorsp.train as engine
        from lorsp.backbones import create_backbone
        key = (config.backbone, config.image_size)
        if key not in self.backbones:
            self.backbones[key] = create_backbone(config.backbone, random_init=True)
        backbone, info = self.backbones[key]
        return engine.compose_run_model(config, backbone, info, num_classes)[0]


def _write_prompt(run: dict, config, num_classes: int, folder: Path, models: _Models, seed: int) -> dict:
    """Save the run's prompter and head (engine-built, fresh, plus noise) and return its parameter counts."""
    import torch
    import lorsp.train as engine
    torch.manual_seed(seed)
    model = models.build(config, num_classes)
    with torch.no_grad():
        for part in ("prompter", "head"):
            module = getattr(model, part, None)
            if module is None:
                continue
            for parameter in module.parameters():
                if parameter.is_floating_point():
                    parameter.add_(0.01 * torch.randn_like(parameter))
    engine.save_prompt_weights(model, folder / engine.PROMPT_WEIGHTS_NAME, config)
    count = lambda m: 0 if m is None else sum(p.numel() for p in m.parameters())  # noqa: E731
    return {"prompt_params": count(getattr(model, "prompter", None)), "head_params": count(model.head),
            "prompter_class": type(getattr(model, "prompter", None)).__name__}


def _record(run: dict, config, rng: np.random.Generator, params: dict, targets: list[str]) -> dict:
    from lorsp.experiments import run_config, run_key
    from lorsp.experiments.runner import machine_info
    epochs = int(config.epochs)
    classes = _NUM_CLASSES.get(config.dataset, 10)
    images = int(config.train_per_class or 10) * classes
    steps = max(1, math.ceil(images / config.batch_size))
    final = _accuracy(run, rng)
    start_loss, end_loss = math.log(classes) + 0.4, max(0.2, 1.2 - final)
    losses = [end_loss + (start_loss - end_loss) * 0.35 ** e + rng.normal(0, 0.01) for e in range(epochs)]
    metrics = [dict(epoch=e + 1, train_loss=float(losses[e]), train_accuracy=float(min(0.99, final * (0.8 + 0.1 * e))),
                    train_images=images, train_steps=steps, train_seconds=100.0, images_per_second=images / 100.0,
                    lr=float(config.lr), epoch_seconds=100.0) for e in range(epochs)]
    key = run_key(run)
    prompted = not config.is_linear_probe
    record = {
        "fabricated_for_tests": True,
        "run_id": key[-12:], "status": "completed", "reason": None,
        "config": dict(config.to_dict(), output=None, resume=True),
        "versions": {"note": "fabricated for tests"}, "git_commit": "0" * 40,
        "device": "cpu", "device_name": "fabricated", "world_size": 1, "host": "fabricated",
        "data": {"dataset": config.dataset, "n_train": images, "n_test": int(config.test_per_class or 5) * classes,
                 "num_classes": classes, "skipped_train": 0, "skipped_test": 0, "skipped": 0, "path": None},
        "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:05:00Z", "pid": 0,
        "weights_source": "fabricated", "random_weights": True,
        "backbone_info": {"name": config.backbone, "fabricated": True}, "backbone_fingerprint": 0.0,
        "amp": None, "features_cached": config.cache_features == "memory", "eval_batch_size": 128,
        "loader": "dataloader", "trainable_params": params["prompt_params"] + params["head_params"],
        "prompt_params": params["prompt_params"] if prompted else 0, "prompter_class": params["prompter_class"],
        "head_params": params["head_params"], "steps_per_epoch": steps, "prompt_weights": "prompt.safetensors",
        "metrics": metrics, "evaluated_epochs": [epochs], "final_accuracy": final,
        "best_accuracy": min(0.99, final + abs(rng.normal(0, 0.002))), "best_epoch": epochs,
        "final_test_loss": float(1.3 - final), "final_train_loss": float(losses[-1]),
        "firing_rate": float(rng.uniform(0.3, 0.5)) if config.method == "lorsp" else None,
        "sparsity": (float(rng.uniform(0.2, 0.4)) if config.method == "lorsp" else 0.0) if prompted else None,
        "epochs_completed": epochs, "steps_completed": epochs * steps,
        "loss_trace": [float(start_loss - 0.01 * i + rng.normal(0, 0.02)) for i in range(32)],
        "timings": {"total_seconds": 100.0 * epochs, "epoch_seconds": [100.0] * epochs, "feature_cache_seconds": None},
        "run_dir": None, "schema": "lorsp.run/1",
        **({"prompt_params_closed_form": params["prompt_params"]} if prompted else {}),
        **({"lif_backend": "fabricated"} if config.method == "lorsp" else {}),
        "experiment": dict(key=key, tags=run.get("tags", {}), run=run_config(run), wall_seconds=100.0 * epochs,
                           machine=machine_info()),
    }
    if targets:
        record["experiment"]["shifted"] = {t: float(max(0.01, final - rng.uniform(0.05, 0.25))) for t in targets}
    if getattr(config, "val_per_class", None):   # desk v2: a validation split, which the prompt-lr search reads
        record["final_val_accuracy"] = float(np.clip(final + rng.normal(0.0, 0.01), 0.01, 0.99))
    return record


def fabricate_records(root, scale: str = "desk", runs: list[dict] | None = None, prompts: bool = True) -> Path:
    """Write a complete, clearly fake set of ``scale`` records for ``runs`` (default: every chapter's grid)
    under ``<root>/<scale>/``; return that folder. Refuses the repository's own ``results/``. With
    ``prompts=False`` only ``record.json`` is written (cheap: for a chapter's own runs folder, whose records
    the page reuses without rebuilding a model)."""
    from lorsp.experiments import RESULTS_ROOT, run_key
    root = Path(root).resolve()
    if root.is_relative_to(REPO / "results") or root.is_relative_to(RESULTS_ROOT.resolve()):
        raise ValueError(f"fabricated records never go under the repository's results/ (got {root})")
    folder = root / scale
    models = _Models()
    if runs is None:   # every run, in phases: desk v2 lists its headline runs once the search's records exist
        written: set[str] = set()
        with mock.patch.dict(os.environ, {"LORSP_RESULTS": str(root)}):   # where the grid reads the search
            while True:
                todo = [r for r in all_runs(scale) if run_key(r) not in written
                        and r["tags"].get("selection") != "pending"]
                if not todo:
                    return folder
                _fabricate(folder, todo, models, scale, prompts, first_index=len(written))
                written |= {run_key(r) for r in todo}
    _fabricate(folder, runs, models, scale, prompts)
    return folder


def _fabricate(folder: Path, runs: list[dict], models: "_Models", scale: str, prompts: bool,
               first_index: int = 0) -> None:
    from lorsp.experiments import run_key
    from lorsp.experiments.runner import _train_config
    from lorsp.experiments.store import write_run_record
    shifted = shift_targets(scale)
    for index, run in enumerate(runs, start=first_index):
        key = run_key(run)
        target = folder / key
        target.mkdir(parents=True, exist_ok=True)
        config = _train_config(run, target)
        config = dataclasses.replace(config, output=None, resume=False)
        num_classes = _NUM_CLASSES.get(config.dataset, 10)
        rng = np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
        params = (_write_prompt(run, config, num_classes, target, models, seed=index) if prompts else
                  {"prompt_params": 0, "head_params": 0, "prompter_class": None})
        write_run_record(_record(run, config, rng, params, shifted.get(key, [])), target / "record.json")


def executed_notebook_text(name: str, timeout: int = 600) -> str:
    """Execute ``book/<name>.ipynb`` whole (in this process's environment, e.g. ``LORSP_RESULTS`` pointing at a
    fabricated set) and return the text of every output; fails on any cell's error."""
    import nbformat
    from nbclient import NotebookClient
    notebook = nbformat.read(REPO / "book" / f"{name}.ipynb", as_version=4)
    NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "book")}}).execute()
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", output
            data = output.get("data", {})
            texts.append(output.get("text", "") + data.get("text/markdown", "") + data.get("text/html", ""))
    return "\n".join(texts)


def fabricated_rehearsal(tmp_path_factory, protocol: str | None = None) -> tuple[Path, Path]:
    """``(results root with a complete fake desk set, runs folder with fake smoke records)`` for the desk
    ``protocol`` (default: the current one), in two fresh temporary folders."""
    from lorsp.experiments import CHAPTERS, grid, run_key
    with mock.patch.dict(os.environ, {"LORSP_DESK_PROTOCOL": protocol} if protocol else {}):
        root = tmp_path_factory.mktemp(f"fake-{protocol or 'desk'}-results")
        fabricate_records(root, "desk")
        runs = tmp_path_factory.mktemp(f"fake-{protocol or 'desk'}-runs")
        smoke_runs = {run_key(r): r for chapter in CHAPTERS for r in grid(chapter, "smoke")}
        fabricate_records(runs, "smoke", runs=list(smoke_runs.values()), prompts=False)
    return root, runs
