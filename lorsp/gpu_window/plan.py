"""The GPU-window plan itself: the blocks, the window's image counts and the ordered runs (``mini``'s chapters
re-sized, :func:`lorsp.experiments.grid`); see :mod:`lorsp.gpu_window`."""
from __future__ import annotations

import dataclasses

# images per class of the window: defined by the data pack that carries them (the default content of
# ``lorsp data pack``), which sits below this package
from ..data.pack import WINDOW_DATASETS

#: the MobileNetV2 weights file the window's pack must hold (the pack's default weights)
WEIGHTS_FILE = "mobilenetv2_100_tflite_in1k.safetensors"

WINDOW_SCALE = "mini-window"
#: the same plan at tiny sizes (64 px, 1 epoch, seed 0 only), for a CPU (tests)
SMOKE_DATASETS = {"cifar10": {"train_per_class": 2, "test_per_class": 1},
                  "tiny-imagenet": {"train_per_class": 1, "test_per_class": 1}}
NUM_CLASSES = {"cifar10": 10, "tiny-imagenet": 200}
#: (block, chapter of lorsp.experiments, dataset kept or None for all), in order of importance
BLOCKS = (("table2-cifar10", "backbones", "cifar10"),
          ("table2-tiny-imagenet", "backbones", "tiny-imagenet"),
          ("ood", "ood", None),
          ("sparsifiers", "sparsifiers", None),
          ("hyperparameters", "hyperparameters", None),
          ("downstream", "downstream", None),
          ("gallery", "prompt_gallery", None))
#: the `lorsp bench` method whose step a label's training step costs
BENCH_METHOD = {"LP": "lp", "ILM-VP": "pad", "AutoVP": "pad", "EVP": "evp", "LoR-VP": "lorvp", "LPF": "lpf",
                "LoRSP": "lorsp", "Top-k": "topk", "Dropout": "dropout"}


def window_setup(smoke: bool = False, device: str | None = None):
    """mini's :class:`lorsp.experiments.ScaleSetup` with the window's image counts (``smoke``: tiny sizes)."""
    from ..experiments import scale_setup

    mini = scale_setup("mini")
    counts = SMOKE_DATASETS if smoke else WINDOW_DATASETS
    changes = dict(scale=WINDOW_SCALE, datasets={name: dict(c) for name, c in counts.items()},
                   device=device or ("cpu" if smoke else "cuda"),
                   weights_note="MobileNetV2 (1.0, 224) ImageNet-1k weights from the pack (never a hub download)",
                   notes=["The GPU-window plan (lorsp.gpu_window): mini's chapters with fewer images, from a pack "
                          "of one fixed subset per dataset (every seed sees the same images)."])
    if smoke:
        # 64 px: EVP pads 30 px a side; one seed: the plan's shape, not its statistics, is what a smoke run checks
        changes.update(image_size=64, epochs=1, batch_size=8, seeds=(0,), hyper_seeds=(0,))
    return dataclasses.replace(mini, **changes)


def window_run_label(run: dict) -> str:
    label = run["tags"]["label"]
    return label.split()[0] if label.startswith(("Top-k", "Dropout")) else label


def window_plan(smoke: bool = False, device: str | None = None, blocks=None) -> list[dict]:
    """The window's runs in order: dicts ``{block, run, key, shared_with}``; ``shared_with`` names the earlier
    block that lists the same run (same key), which is trained once. ``blocks`` keeps only those blocks."""
    from ..experiments import grid, run_key

    setup = window_setup(smoke, device)
    known = [name for name, _, _ in BLOCKS]
    chosen = known if not blocks else list(blocks)
    unknown = [b for b in chosen if b not in known]
    if unknown:
        raise ValueError(f"unknown block(s) {unknown}; expected some of {known}")
    plan, first_seen = [], {}
    for name, chapter, dataset in BLOCKS:
        if name not in chosen:
            continue
        for run in grid(chapter, setup=setup):
            if dataset is not None and run["dataset"] != dataset:
                continue
            run["tags"]["block"] = name
            key = run_key(run)
            plan.append(dict(block=name, run=run, key=key, shared_with=first_seen.get(key)))
            first_seen.setdefault(key, name)
    return plan


def plan_backbones(plan) -> str:
    """The words for which backbone a plan trains and with which weights (``lorsp gpu-window plan`` and ``run``
    print it first): the plan's backbones and the pack's weights file."""
    names = ", ".join(sorted({item["run"]["backbone"] for item in plan})) or "none"
    return f"backbone: {names}, with the ImageNet-1k weights of the pack's weights/{WEIGHTS_FILE}"
