"""The book's experiment grids (Tables II–VI, Figs. 3a, 4, 5), run through the engine, and the claims.

Every experiment chapter of the book does the same four things, all from here:

1. :func:`grid` ``(chapter, scale)`` — the list of runs of that chapter at that scale. A run is a flat,
   JSON-able dict of :class:`lorsp.train.TrainConfig` fields (``backbone, dataset, method, head, epochs,
   ...`` and the prompter's options such as ``groups, rank, tau, v_threshold, keep_ratio``) plus a
   ``"tags"`` dict (the method's label in the paper's words, the chapter...) that is not passed to the
   trainer. Runs are identified by :func:`run_key` (a hash of the config without tags), so a run shared by
   two chapters (LoRSP at G=4, r=4 is in four of them) is trained once.
2. :func:`run_grid` ``(runs, results_dir, resume=True)`` — trains each run with ``lorsp.train.train``
   unless its record ``<results_dir>/<key>/record.json`` exists (so an interrupted chapter resumes), and returns a
   DataFrame with one row per run (accuracy in percent, firing rate, sparsity, seconds...).
3. :func:`summarise` (mean ± std over seeds) and :func:`compare`: the paper's numbers (labelled, from
   :mod:`lorsp.paper`), ours at this scale and ours at larger scales (records committed under
   ``results/<scale>/``) side by side.
4. :func:`claims` — which of the paper's claims hold at this scale, computed from the numbers: a
   difference smaller than the spread over seeds is a *tie*, not a win; with a single seed the verdict is
   *undecided* unless a tolerance is stated.

Scales (``LORSP_SCALE``, :mod:`lorsp.scale`): ``smoke`` (CPU, seconds per run, CI), ``mini`` (one GPU,
MobileNetV2 on CIFAR-10 / Tiny-ImageNet subsets at the full protocol) and ``paper`` (the paper's
backbones and datasets). :func:`scale_setup` says exactly which data, weights, image counts, resolution
and epochs a scale uses, and which fallbacks it took.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

__all__ = [
    "SCALES", "CHAPTERS", "METHOD_LABELS", "ScaleSetup", "scale_setup", "method_config", "label_of", "grid",
    "run_key", "run_grid", "collect", "records_frame", "summarise", "compare", "style_compare",
    "larger_scales", "load_larger", "sweep_frame", "Claim", "claims", "claim_pairs", "evaluate_shifts", "RESULTS_ROOT",
    "RUNS_ROOT", "runs_dir", "ACCURACY", "not_applicable", "chapter_facts", "chapter_table", "chapter_claims",
    "closing_paragraph", "ood_long", "hyper_long", "prompt_gallery", "gallery_claims", "load_run_model",
    "test_set_of", "train_one", "missing_methods", "unavailable",
]

SCALES = ("smoke", "mini", "paper")
CHAPTERS = ("sparsifiers", "backbones", "downstream", "ood", "hyperparameters", "prompt_gallery")
ACCURACY = "accuracy_pct"

_REPO = Path(__file__).resolve().parent.parent
#: committed run records of the larger scales: results/<scale>/<key>/record.json (mini and paper only)
RESULTS_ROOT = _REPO / "results"
#: where the book's runs go when executed (git-ignored): runs/<scale>/
RUNS_ROOT = _REPO / "runs"

#: the paper's default LoRSP setting for downstream tasks and for OOD (Sec. IV-A3)
DOWNSTREAM_FACTORS = dict(groups=4, rank=4)
OOD_FACTORS = dict(groups=2, rank=2)
SPARSIFIER_RATIOS = (0.1, 0.2, 0.5, 0.8)
GROUPS_SWEEP = (1, 2, 4, 8)
RANK_SWEEP = (1, 2, 4, 8)
TAU_SWEEP = (1.5, 2.0, 3.0, 4.0)
#: [reading] the paper does not print its threshold values; we sweep below, at and above the default 0
V_THRESHOLD_SWEEP = (-0.01, 0.0, 0.01, 0.05)
#: LoRSP's LIF defaults (Sec. IV-A3: "set to 0.0 and 4.0")
LORSP_LIF_DEFAULTS = dict(tau=4.0, v_threshold=0.0)

#: label (the paper's word) → the engine's method (prompter name) and head
METHOD_LABELS = {
    "LP": dict(method="none", head="linear"),
    "ILM-VP": dict(method="pad", head="ilm", squash="sigmoid"),
    "AutoVP": dict(method="pad", head="linear"),
    "EVP": dict(method="evp", head="linear"),
    "LoR-VP": dict(method="lorvp", head="linear"),
    "VPT": dict(method="vpt", head="linear"),
    "LPF": dict(method="lpf", head="linear"),
    "LoRSP": dict(method="lorsp", head="linear"),
    "Top-k": dict(method="topk", head="linear"),
    "Dropout": dict(method="dropout", head="linear"),
}
#: padding prompts: inner (image) size at 224 px — ILM-VP 32 (147K params), AutoVP 160 (74K params)
PAD_INNER_AT_224 = {"ILM-VP": 32, "AutoVP": 160}
#: backbones that are vision transformers (VPT applies); the others are CNNs
TRANSFORMER_BACKBONES = ("vit_b32", "vit_b16", "swin_b", "clip_vit_b32")


def not_applicable(label: str, backbone: str) -> str | None:
    """Why ``label`` cannot run on ``backbone`` (``None`` when it can): VPT needs a transformer; a method
    whose prompter is not registered in this installation cannot run at all (said, never faked)."""
    if label == "VPT" and backbone not in TRANSFORMER_BACKBONES:
        return (f"not applicable: VPT prepends prompt tokens to a transformer's token sequence, and "
                f"{backbone} is a CNN")
    missing = unavailable(label)
    if missing:
        return missing
    return None


def unavailable(label: str) -> str | None:
    """A reason when the prompter of ``label`` is not registered (``lorsp.list_prompters()``), else None."""
    from .prompters import list_prompters
    method = METHOD_LABELS.get(label, {}).get("method")
    if method is None or method in list_prompters() or method == "none":
        return None
    return f"not available: the prompter {method!r} is not registered in this installation"


# ----------------------------------------------------------------------------------------------------
# scales
# ----------------------------------------------------------------------------------------------------
@dataclass
class ScaleSetup:
    """What a scale runs: backbones, datasets with image counts, resolution, epochs, seeds, fallbacks."""

    scale: str
    backbones: tuple[str, ...]
    datasets: dict[str, dict[str, Any]]          # name → {train_per_class, test_per_class}
    image_size: int
    epochs: int
    batch_size: int
    lr: float
    seeds: tuple[int, ...]
    device: str
    random_init: bool = False
    real_data: bool = True
    weights_note: str = ""
    notes: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)
    # chapter-specific choices
    table2_datasets: tuple[str, ...] = ()
    table3_datasets: tuple[str, ...] = ()
    ood_source: str = ""
    ood_targets: tuple[str, ...] = ()
    hyper_backbones: tuple[str, ...] = ()
    hyper_seeds: tuple[int, ...] = ()
    gallery_dataset: str = ""
    gallery_backbone: str = ""

    def train_kwargs(self, dataset: str) -> dict[str, Any]:
        counts = self.datasets[dataset]
        return dict(dataset=dataset, image_size=self.image_size, epochs=self.epochs,
                    batch_size=self.batch_size, lr=self.lr,
                    train_per_class=counts.get("train_per_class"), test_per_class=counts.get("test_per_class"),
                    device=self.device, random_init=self.random_init)

    def facts(self) -> dict[str, Any]:
        """Plain facts for :func:`lorsp.scale.scale_banner`."""
        data = ", ".join(
            f"{name} ({_count(c.get('train_per_class'))} train / {_count(c.get('test_per_class'))} test "
            f"images per class)" for name, c in self.datasets.items())
        facts = {
            "scale": self.scale,
            "backbones": ", ".join(self.backbones),
            "weights": self.weights_note,
            "data": data,
            "resolution": f"{self.image_size}×{self.image_size} px",
            "epochs": self.epochs,
            "batch size": self.batch_size,
            "learning rate": self.lr,
            "seeds": ", ".join(map(str, self.seeds)),
            "device": self.device,
        }
        if self.notes:
            facts["notes"] = " ".join(self.notes)
        facts["fallbacks"] = list(self.fallbacks)
        return facts


def _count(value) -> str:
    return "all" if value is None else str(value)


def _has_real_smoke_data(root) -> tuple[bool, bool, bool]:
    try:
        from .data import data_root
        root = Path(data_root(root))
    except ImportError:
        root = Path(root or os.environ.get("LORSP_DATA") or _REPO / "data")
    cifar = (root / "cifar10" / "train").is_dir() and (root / "cifar10" / "test").is_dir()
    tiny = (root / "tiny-imagenet-200" / "train").is_dir() and (root / "tiny-imagenet-200" / "val").is_dir()
    weights = (root / "weights" / "mobilenetv2_100_tflite_in1k.safetensors").is_file()
    return cifar, tiny, weights


def scale_setup(scale: str | None = None, data_root=None) -> ScaleSetup:
    """The setup of ``scale`` (default ``LORSP_SCALE`` via :func:`lorsp.scale.current_scale`).

    ``smoke``: CPU, MobileNetV2 with the ImageNet-1k weights of the data root and real CIFAR-10 (20 train
    / 20 test images per class) and Tiny-ImageNet (4 / 2 per class) at 64 px, 3 epochs, 2 seeds. Without
    the local data or weights it falls back to the ``synthetic`` dataset and random initialisation, and
    says so in ``notes`` (and the banner).
    ``mini``: one GPU, MobileNetV2 on CIFAR-10 (500 / 100 per class) and Tiny-ImageNet (100 / 50 per
    class: all the local data) at the paper's protocol (224 px, 20 epochs, batch 256, lr 0.01), 3 seeds.
    ``paper``: the paper's five backbones and datasets at its protocol, 1 seed (the paper reports one run).
    """
    if scale is None:
        from .scale import current_scale
        scale = current_scale()
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {SCALES} (LORSP_SCALE)")
    if scale == "smoke":
        from .data.fetch import ensure_smoke_inputs
        smoke = ensure_smoke_inputs(data_root)   # fetches CIFAR-10 and the weights when missing and online
        cifar, tiny, weights = smoke.flags()
        notes, fallbacks = [], []
        datasets: dict[str, dict[str, Any]] = {}
        if cifar:
            datasets["cifar10"] = dict(train_per_class=20, test_per_class=20)
        if tiny:
            datasets["tiny-imagenet"] = dict(train_per_class=4, test_per_class=2)
        if not datasets:
            datasets["synthetic"] = dict(train_per_class=20, test_per_class=20)
            fallbacks.append("the data root has neither CIFAR-10 nor Tiny-ImageNet, so every run uses the "
                             "procedural `synthetic` dataset; its numbers say nothing about the paper's tasks.")
        source = "cifar10" if cifar else next(iter(datasets))
        if weights:
            weights_note = smoke.weights_note
        else:
            weights_note = "RANDOM INIT (fallback: no MobileNetV2 weights in the data root)"
            fallbacks.append("no pretrained MobileNetV2 weights in the data root, so the backbone is randomly "
                             "initialised; prompting a random network tests the code, not the method.")
        fallbacks.extend(smoke.fallback_reasons())   # why nothing was fetched, in words
        notes.append("At 64 px the padding prompts keep the paper's proportions: ILM-VP's inner image is "
                     "32/224 of the side, AutoVP's 160/224. A smoke run makes only a few dozen optimisation "
                     "steps (see 'steps'), so the prompts move little from their zero start: smoke checks that "
                     "the whole pipeline runs on real data, and its differences are mostly ties.")
        return ScaleSetup(
            scale="smoke", backbones=("mobilenetv2",), datasets=datasets, image_size=64, epochs=3,
            batch_size=32, lr=0.01, seeds=(0, 1), device="cpu", random_init=not weights,
            real_data=cifar or tiny, weights_note=weights_note, notes=notes, fallbacks=fallbacks,
            table2_datasets=(source,), table3_datasets=tuple(datasets), ood_source=source,
            ood_targets=("edge-map sketch", "gaussian noise", "gaussian blur", "colour shift"),
            hyper_backbones=("mobilenetv2",), hyper_seeds=(0, 1),
            gallery_dataset="tiny-imagenet" if tiny else source, gallery_backbone="mobilenetv2")
    if scale == "mini":
        return ScaleSetup(
            scale="mini", backbones=("mobilenetv2",),
            datasets={"cifar10": dict(train_per_class=500, test_per_class=100),
                      "tiny-imagenet": dict(train_per_class=100, test_per_class=50)},
            image_size=224, epochs=20, batch_size=256, lr=0.01, seeds=(0, 1, 2), device="cuda",
            weights_note="MobileNetV2 (1.0, 224) ImageNet-1k weights from the data root, else timm's "
                         "mobilenetv2_100.ra_in1k",
            notes=["Tiny-ImageNet: the local archive holds the first 100 train images per class and the whole "
                   "validation set (50 per class)."],
            table2_datasets=("tiny-imagenet", "cifar10"), table3_datasets=("tiny-imagenet", "cifar10"),
            ood_source="tiny-imagenet",
            ood_targets=("edge-map sketch", "gaussian noise", "gaussian blur", "colour shift"),
            hyper_backbones=("mobilenetv2",), hyper_seeds=(0, 1, 2),
            gallery_dataset="tiny-imagenet", gallery_backbone="mobilenetv2")
    table3 = ("tiny-imagenet", "eurosat", "oxford-pets", "food101", "dtd", "flowers102", "cifar10", "cifar100")
    return ScaleSetup(
        scale="paper", backbones=("resnet50", "vit_b32", "vit_b16", "swin_b", "clip_vit_b32"),
        datasets={name: dict(train_per_class=None, test_per_class=None)
                  for name in dict.fromkeys(table3 + ("imagenet",))},
        image_size=224, epochs=20, batch_size=256, lr=0.01, seeds=(0,), device="cuda",
        weights_note="the paper's pretrained timm weights (Table I)",
        notes=["One seed per run, as the paper reports; claims then need a stated tolerance."],
        table2_datasets=("tiny-imagenet", "cifar100"), table3_datasets=table3, ood_source="imagenet",
        ood_targets=("imagenet-v2", "imagenet-sketch", "imagenet-a", "imagenet-r"),
        hyper_backbones=("vit_b16", "resnet50"), hyper_seeds=(0,),
        gallery_dataset="flowers102", gallery_backbone="vit_b32")


# ----------------------------------------------------------------------------------------------------
# runs
# ----------------------------------------------------------------------------------------------------
def method_config(label: str, image_size: int = 224, factors: dict | None = None,
                  **prompter_kwargs) -> dict[str, Any]:
    """The engine's ``method``, ``head`` and prompter options for a method label of the paper.

    ``label``: ``"LP"``, ``"ILM-VP"``, ``"AutoVP"``, ``"EVP"``, ``"LoR-VP"``, ``"VPT"``, ``"LPF"``,
    ``"LoRSP"``, ``"Top-k"``, ``"Dropout"``. ``factors`` (groups, rank) applies to the factor-based
    prompters (LPF, LoRSP, Top-k, Dropout; Eqs. 4–5); padding prompts get the paper's inner size scaled to
    ``image_size`` (32 and 160 at 224 px).
    """
    if label not in METHOD_LABELS:
        raise KeyError(f"unknown method label {label!r}; expected one of {list(METHOD_LABELS)}")
    config = dict(METHOD_LABELS[label])
    if label in PAD_INNER_AT_224:
        config["inner_size"] = max(1, round(PAD_INNER_AT_224[label] * image_size / 224))
    if label in ("LPF", "LoRSP", "Top-k", "Dropout"):
        config.update(factors if factors is not None else DOWNSTREAM_FACTORS)
    if label == "LoRSP":  # explicit, so that a sweep's default point is the same run as everyone's default
        config.update(LORSP_LIF_DEFAULTS)
    config.update(prompter_kwargs)
    return config


def label_of(config: dict) -> str:
    """The paper's label of a run config (also works on the ``config`` of a record written by the CLI)."""
    method = config.get("method", "none")
    head = config.get("head", "linear")
    if method in ("none", None, "lp"):
        return "LP"
    if method == "pad":
        return "ILM-VP" if head == "ilm" else "AutoVP"
    if method in ("topk", "dropout"):
        ratio = config.get("keep_ratio", (config.get("prompter_kwargs") or {}).get("keep_ratio"))
        name = "Top-k" if method == "topk" else "Dropout"
        return f"{name} {round(float(ratio) * 100)}%" if ratio is not None else name
    for label, spec in METHOD_LABELS.items():
        if spec["method"] == method:
            return label
    return str(method)


def _run(setup: ScaleSetup, chapter: str, label: str, dataset: str, backbone: str, seed: int,
         factors: dict | None = None, tags: dict | None = None, **prompter_kwargs) -> dict[str, Any]:
    config = dict(backbone=backbone, **setup.train_kwargs(dataset), seed=seed)
    config.update(method_config(label, setup.image_size, factors, **prompter_kwargs))
    shown = label
    if label in ("Top-k", "Dropout"):
        shown = label_of(config)
    config["tags"] = dict(chapter=chapter, label=shown, scale=setup.scale, **(tags or {}))
    return config


def grid(chapter: str, scale: str | None = None, setup: ScaleSetup | None = None) -> list[dict[str, Any]]:
    """The runs of ``chapter`` (one of :data:`CHAPTERS`) at ``scale``: a list of TrainConfig-like dicts.

    - ``sparsifiers`` (Table VI): Top-k and Dropout at keep ratios 10/20/50/80 % of LPF's prompt, LoRSP
      and LPF, G = r = 4.
    - ``backbones`` (Tables II and V): LP, ILM-VP, AutoVP, EVP, LoR-VP, LPF, LoRSP over the scale's
      backbones and Table II datasets.
    - ``downstream`` (Table III): LP, VPT (transformers only), AutoVP, LoR-VP, LoRSP over the scale's
      datasets; VPT on a CNN is *not run* (see :func:`not_applicable`).
    - ``ood`` (Table IV): LP, EVP, LoR-VP and LoRSP (G = r = 2) trained on the source set; each run's tags
      carry ``eval_on`` (the shifted test sets) for :func:`evaluate_shifts`.
    - ``hyperparameters`` (Figs. 3a, 4): groups G ∈ {1, 2, 4, 8} at r = 4, rank r ∈ {1, 2, 4, 8} at G = 4,
      tau ∈ {1.5, 2, 3, 4} and V_th ∈ :data:`V_THRESHOLD_SWEEP` at the defaults; the default point is one
      run whose ``tags["sweeps"]`` lists every sweep it lies on (see :func:`sweep_frame`).
    - ``prompt_gallery`` (Fig. 5): LoR-VP and LoRSP on the gallery dataset (their trained prompters are
      drawn on real test images).
    """
    setup = setup or scale_setup(scale)
    runs: list[dict[str, Any]] = []
    if chapter == "sparsifiers":
        backbones = setup.backbones if setup.scale != "paper" else ("vit_b32", "resnet50")
        dataset = setup.table2_datasets[0]
        for backbone in backbones:
            for seed in setup.seeds:
                for ratio in SPARSIFIER_RATIOS:
                    for label in ("Top-k", "Dropout"):
                        runs.append(_run(setup, chapter, label, dataset, backbone, seed, keep_ratio=ratio,
                                         tags=dict(keep_ratio=ratio)))
                for label in ("LPF", "LoRSP"):
                    runs.append(_run(setup, chapter, label, dataset, backbone, seed))
    elif chapter == "backbones":
        for dataset in setup.table2_datasets:
            for backbone in setup.backbones:
                for seed in setup.seeds:
                    for label in ("LP", "ILM-VP", "AutoVP", "EVP", "LoR-VP", "LPF", "LoRSP"):
                        runs.append(_run(setup, chapter, label, dataset, backbone, seed))
    elif chapter == "downstream":
        backbone = "vit_b32" if setup.scale == "paper" else setup.backbones[0]
        for dataset in setup.table3_datasets:
            for seed in setup.seeds:
                for label in ("LP", "VPT", "AutoVP", "LoR-VP", "LoRSP"):
                    if not_applicable(label, backbone):
                        continue
                    runs.append(_run(setup, chapter, label, dataset, backbone, seed))
    elif chapter == "ood":
        backbone = "vit_b32" if setup.scale == "paper" else setup.backbones[0]
        for seed in setup.seeds:
            for label in ("LP", "EVP", "LoR-VP", "LoRSP"):
                factors = OOD_FACTORS if label == "LoRSP" else None
                runs.append(_run(setup, chapter, label, setup.ood_source, backbone, seed, factors=factors,
                                 tags=dict(eval_on=list(setup.ood_targets))))
    elif chapter == "hyperparameters":
        dataset = setup.table2_datasets[0]
        by_key: dict[str, dict[str, Any]] = {}
        for backbone in setup.hyper_backbones:
            for seed in setup.hyper_seeds:
                points = ([("groups", dict(factors=dict(groups=g, rank=4))) for g in GROUPS_SWEEP]
                          + [("rank", dict(factors=dict(groups=4, rank=r))) for r in RANK_SWEEP]
                          + [("tau", dict(tau=t, v_threshold=0.0)) for t in TAU_SWEEP]
                          + [("v_threshold", dict(tau=4.0, v_threshold=v)) for v in V_THRESHOLD_SWEEP])
                for sweep, kwargs in points:
                    run = _run(setup, chapter, "LoRSP", dataset, backbone, seed, tags=dict(sweeps=[sweep]),
                               **kwargs)
                    key = run_key(run)
                    if key in by_key:  # the default point (G=4, r=4, tau=4, V_th=0) is on every sweep
                        by_key[key]["tags"]["sweeps"].append(sweep)
                    else:
                        by_key[key] = run
        runs.extend(by_key.values())
    elif chapter == "prompt_gallery":
        for label in ("LoR-VP", "LoRSP"):
            runs.append(_run(setup, chapter, label, setup.gallery_dataset, setup.gallery_backbone,
                             setup.seeds[0]))
    else:
        raise KeyError(f"unknown chapter {chapter!r}; expected one of {CHAPTERS}")
    return [run for run in runs if unavailable(_label_key(run)) is None]


def _label_key(run: dict) -> str:
    label = run["tags"]["label"]
    return label.split()[0] if label.startswith(("Top-k", "Dropout")) else label


def missing_methods(chapter: str, scale: str | None = None, setup: ScaleSetup | None = None) -> dict[str, str]:
    """Methods of ``chapter`` left out of its grid at this scale, with the reason (VPT on a CNN, a prompter
    missing from this installation)."""
    setup = setup or scale_setup(scale)
    labels = {"sparsifiers": ["Top-k", "Dropout", "LPF", "LoRSP"], "backbones": BACKBONE_ROWS,
              "downstream": DOWNSTREAM_ROWS, "ood": OOD_ROWS, "hyperparameters": ["LoRSP"],
              "prompt_gallery": ["LoR-VP", "LoRSP"]}[chapter]
    backbone = setup.backbones[0] if setup.scale != "paper" else "vit_b32"
    out = {}
    for label in labels:
        reason = not_applicable(label, backbone)
        if reason:
            out[label] = reason
    return out


def _config_only(run: dict) -> dict:
    return {k: v for k, v in run.items() if k != "tags"}


def _canonical(value):
    if isinstance(value, float) and value.is_integer():
        return float(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def run_key(run: dict) -> str:
    """A stable identifier of a run: its label, dataset, backbone, seed and a hash of the whole config.

    Tags do not enter the key, so the same training run listed by two chapters is trained once.
    """
    config = _config_only(run)
    blob = json.dumps(_canonical(config), sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
    label = label_of(config).replace(" ", "").replace("%", "pct").replace("/", "-").lower()
    return f"{config.get('dataset')}-{config.get('backbone')}-{label}-s{config.get('seed')}-{digest}"


def runs_dir(scale: str) -> Path:
    """Where the book writes the runs of ``scale``: ``runs/<scale>`` (git-ignored).

    ``LORSP_RUNS`` overrides the folder. The committed records of larger scales live in
    ``results/<scale>`` (:data:`RESULTS_ROOT`) and are copied there from a ``runs/`` folder by hand.
    """
    root = Path(os.environ.get("LORSP_RUNS") or RUNS_ROOT)
    return root / scale


# ----------------------------------------------------------------------------------------------------
# running through the engine
# ----------------------------------------------------------------------------------------------------
def _engine():
    try:
        from . import train as engine
    except ImportError as error:  # the engine module is part of this package; this names what is missing
        raise ImportError(f"lorsp.experiments needs the training engine lorsp.train (TrainConfig, train): "
                          f"{error}") from error
    return engine


def _train_config(run: dict, output: Path):
    """The engine's :class:`lorsp.train.TrainConfig` of a run dict.

    Keys that are TrainConfig fields go there; the others (groups, rank, tau, v_threshold, keep_ratio,
    inner_size...) are the prompter's options (``prompter_kwargs``). ``output`` is the run directory and
    ``resume=True``, so a run interrupted mid-way continues from its last epoch's checkpoint.
    """
    engine = _engine()
    from dataclasses import fields
    names = {f.name for f in fields(engine.TrainConfig)}
    kwargs, prompter = {}, {}
    for key, value in _config_only(run).items():
        (kwargs if key in names else prompter)[key] = value
    kwargs["prompter_kwargs"] = {**kwargs.get("prompter_kwargs", {}), **prompter}
    kwargs.update(output=str(output), resume=True)
    return engine.TrainConfig(**kwargs)


def _record_path(results_dir: Path, run: dict) -> Path:
    """``<results_dir>/<run_key>/record.json``: the engine's record of the run, with our ``experiment`` entry."""
    return Path(results_dir) / run_key(run) / "record.json"


def _read_record(path: Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _is_done(path: Path) -> bool:
    """A record exists and is final: completed, or failed by divergence (rerunning would diverge again)."""
    if not path.is_file():
        return False
    try:
        record = _read_record(path)
    except (OSError, json.JSONDecodeError):
        return False
    status = record.get("status", "completed")
    return status == "completed" or str(record.get("reason") or "").startswith("DivergenceError")


def _write_record(record: dict, path: Path) -> None:
    """Write ``record`` atomically as ``path`` (:func:`lorsp.results.write_record`)."""
    from .results import write_record
    record = {k: v for k, v in record.items() if k not in ("record_path", "results_path")}
    write_record(record, Path(path).parent, name=Path(path).name)


def train_one(run: dict, results_dir) -> dict:
    """Train one run with ``lorsp.train.train`` in ``<results_dir>/<run_key>/`` and return its record.

    The run directory holds the engine's checkpoint, prompt weights and ``record.json``; the record gets an
    ``"experiment"`` entry (key, tags, run) so the book finds it again. A run that diverges (non-finite loss)
    keeps its failed record (``status: "failed"``) and is shown as such, not retried.
    """
    engine = _engine()
    results_dir = Path(results_dir)
    key = run_key(run)
    output = results_dir / key
    start = time.perf_counter()
    try:
        record = dict(engine.train(_train_config(run, output), progress=False))
    except engine.DivergenceError:
        path = output / "record.json"
        if not path.is_file():
            raise
        record = _read_record(path)
    record["experiment"] = dict(key=key, tags=run.get("tags", {}), run=_config_only(run),
                                wall_seconds=time.perf_counter() - start)
    _write_record(record, _record_path(results_dir, run))
    return record


def run_grid(runs: Sequence[dict], results_dir, resume: bool = True, progress: bool = False,
             train: bool = True) -> pd.DataFrame:
    """Train every run of ``runs`` not yet done and return one row per run (see :func:`records_frame`).

    A run whose record ``<results_dir>/<run_key(run)>/record.json`` is final is skipped when ``resume``
    (so an interrupted chapter resumes where it stopped — a run cut mid-way continues from its last
    checkpoint — and a run shared by chapters is trained once). With ``train=False`` nothing is trained:
    only the existing records are collected (see :func:`collect`). Duplicate runs are trained once.
    ``progress`` shows a tqdm bar over the runs. ``frame.attrs`` holds ``trained`` (runs trained now),
    ``reused`` (records found) and ``seconds``.
    """
    results_dir = Path(results_dir)
    if train:
        results_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows, seen = [], {}
    done = {run_key(run): _is_done(_record_path(results_dir, run)) for run in runs}
    todo = [key for key, finished in done.items() if not (resume and finished)]
    bar = None
    if progress and train and todo:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(todo), desc=f"training ({len(done) - len(todo)} runs already done)", unit="run")
    for run in runs:
        key = run_key(run)
        if key in seen:
            record = seen[key]
        elif resume and done[key]:
            record = _read_record(_record_path(results_dir, run))
        elif train:
            record = train_one(run, results_dir)
            if bar is not None:
                bar.update(1)
        else:
            continue
        seen[key] = record
        rows.append((run, record))
    if bar is not None:
        bar.close()
    frame = records_frame(rows)
    frame.attrs.update(trained=len(todo) if train else 0, reused=len(done) - len(todo) if train else len(seen),
                       seconds=time.perf_counter() - started)
    return frame


def collect(runs: Sequence[dict], results_dir) -> pd.DataFrame:
    """The rows of the runs whose records exist under ``results_dir`` (nothing is trained)."""
    if not Path(results_dir).is_dir():
        return records_frame([])
    return run_grid(runs, results_dir, resume=True, progress=False, train=False)


_COLUMNS = ["key", "status", "chapter", "label", "scale", "dataset", "backbone", "method", "head", "seed", "groups",
            "rank", "tau", "v_threshold", "keep_ratio", "sweeps", ACCURACY, "best_accuracy_pct",
            "firing_rate", "sparsity", "prompt_params", "train_seconds", "weights_source"]


def _first(record: dict, *names, default=None):
    for name in names:
        if name in record and record[name] is not None:
            return record[name]
    return default


def records_frame(rows: Iterable[tuple[dict, dict]]) -> pd.DataFrame:
    """One row per (run, record): the run's tags and config and the record's metrics.

    ``accuracy_pct`` is the record's ``final_accuracy`` (the last epoch's test accuracy, as the paper
    reports) in percent; ``best_accuracy_pct`` the best epoch's, shown beside it only.
    """
    out = []
    for run, record in rows:
        tags = run.get("tags", {})
        config = _config_only(run)
        final = record.get("final_accuracy")
        best = record.get("best_accuracy")
        out.append(dict(
            key=run_key(run), status=record.get("status", "completed"), chapter=tags.get("chapter"), label=tags.get("label", label_of(config)),
            scale=tags.get("scale"), dataset=config.get("dataset"), backbone=config.get("backbone"),
            method=config.get("method"), head=config.get("head"), seed=config.get("seed"),
            groups=config.get("groups"), rank=config.get("rank"), tau=config.get("tau"),
            v_threshold=config.get("v_threshold"), keep_ratio=config.get("keep_ratio"),
            sweeps=tags.get("sweeps"),
            **{ACCURACY: None if final is None else 100.0 * float(final),
               "best_accuracy_pct": None if best is None else 100.0 * float(best)},
            firing_rate=_first(record, "firing_rate", "mean_firing_rate"),
            sparsity=_first(record, "sparsity", "prompt_sparsity"),
            prompt_params=_first(record, "prompt_params", "prompt_param_count", "num_prompt_params"),
            train_seconds=(record.get("timings") or {}).get("total_seconds",
                                                          record.get("experiment", {}).get("wall_seconds")),
            weights_source=_first(record, "weights_source",
                                  default=(record.get("backbone_info") or {}).get("weights_source")
                                  if isinstance(record.get("backbone_info"), dict) else None),
        ))
        for name, value in (record.get("experiment", {}).get("shifted") or {}).items():
            out[-1][f"{ACCURACY}:{name}"] = 100.0 * float(value)
    frame = pd.DataFrame(out)
    for column in _COLUMNS:
        if column not in frame:
            frame[column] = pd.Series(dtype=object)
    return frame


def sweep_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Hyperparameter rows, one per (run, sweep) with the swept ``value``: the default point repeats."""
    if frame.empty:
        return frame.assign(sweep=pd.Series(dtype=object), value=pd.Series(dtype=float))
    rows = frame.explode("sweeps").rename(columns={"sweeps": "sweep"})
    rows = rows[rows["sweep"].notna()].copy()
    rows["value"] = [float(row[row["sweep"]]) for _, row in rows.iterrows()]
    return rows.reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------
# OOD: evaluating trained runs on shifted test sets
# ----------------------------------------------------------------------------------------------------
def evaluate_shifts(runs: Sequence[dict], results_dir, shifts: Sequence[str] | None = None,
                    progress: bool = True) -> pd.DataFrame:
    """Accuracy of each trained run (its checkpoint) on the shifted test sets, added to its record.

    At ``smoke``/``mini`` the shifted sets are :class:`lorsp.shifts.ShiftedDataset` views of the source
    test set (the same images, transformed); at ``paper`` they are datasets of the registry (ImageNet-V2,
    -Sketch, -A, -R; A and R scored over their 200 classes by the engine's evaluation). Results are cached
    in the record under ``experiment.shifted`` so a rerun skips them. Returns :func:`run_grid`'s rows
    with one ``accuracy_pct:<shift>`` column per shifted set.
    """
    engine = _engine()
    results_dir = Path(results_dir)
    rows = []
    for run in runs:
        path = _record_path(results_dir, run)
        if not path.is_file():
            continue
        record = _read_record(path)
        targets = list(shifts if shifts is not None else run.get("tags", {}).get("eval_on", []))
        shifted = dict(record.get("experiment", {}).get("shifted") or {})
        missing = [t for t in targets if t not in shifted]
        if missing:
            shifted.update(engine_evaluate_shifts(engine, run, results_dir, missing))
            record.setdefault("experiment", {})["shifted"] = shifted
            _write_record(record, path)
        rows.append((run, record))
    return records_frame(rows)


def load_run_model(run: dict, results_dir, device: str = "cpu"):
    """The trained model of ``run`` (backbone + prompter + head from its checkpoint) and its TrainConfig.

    Built with the engine's :func:`lorsp.train.build_run_model`; the checkpoint holds the prompter and head
    (the frozen backbone is rebuilt from its weights). The model is in eval mode on ``device``.
    """
    engine = _engine()
    import dataclasses
    from .checkpoint import load_checkpoint
    run_dir = Path(results_dir) / run_key(run)
    checkpoint = load_checkpoint(run_dir)
    config = engine.TrainConfig.from_dict(checkpoint["config"])
    config = dataclasses.replace(config, device=device, resume=False, output=None)
    model, info = engine.build_run_model(config, int(checkpoint["num_classes"]))
    _, unexpected = model.load_state_dict(checkpoint["model"], strict=False)
    if unexpected:
        raise ValueError(f"{run_dir}: checkpoint keys {unexpected[:5]} do not fit the rebuilt model")
    return model.to(device).eval(), config


def test_set_of(config, shift: str | None = None, seed: int = 0):
    """The test set a run was evaluated on (same images: same per-class subset and seed), optionally shifted."""
    from .data import build_dataset
    data = build_dataset(config.dataset, split="test", image_size=config.image_size, root=config.data_root,
                         per_class=config.test_per_class, seed=config.seed,
                         bad_image_policy=config.bad_image_policy)
    if shift is None:
        return data
    from .shifts import ShiftedDataset
    return ShiftedDataset(data, shift, seed=seed)


def engine_evaluate_shifts(engine, run: dict, results_dir, targets: Sequence[str]) -> dict[str, float]:
    """Accuracy (fraction) of a trained run on each target: a registered shift of its own test set
    (:mod:`lorsp.shifts`), or otherwise a dataset of the registry evaluated by
    :func:`lorsp.train.evaluate_run` (ImageNet-A/R scored over their 200 classes)."""
    from torch.utils.data import DataLoader
    from .shifts import SHIFTS
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


# ----------------------------------------------------------------------------------------------------
# summaries, side-by-side tables, claims
# ----------------------------------------------------------------------------------------------------
def summarise(frame: pd.DataFrame, by: Sequence[str] = ("dataset", "backbone", "label"),
              value: str = ACCURACY) -> pd.DataFrame:
    """Mean, std (over seeds; NaN with one seed) and n of ``value`` per group ``by``."""
    by = list(by)
    if frame.empty:
        return pd.DataFrame(columns=by + ["mean", "std", "n"])
    grouped = frame.dropna(subset=[value]).groupby(by, sort=False, dropna=False)[value]
    out = grouped.agg(mean="mean", std="std", n="count").reset_index()
    return out


def _fmt(mean, std, n, digits: int = 1) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if n is None or n < 2 or std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f} (1 seed)"
    return f"{mean:.{digits}f} ± {std:.{digits}f} (n={int(n)})"


def larger_scales(scale: str) -> list[str]:
    """The scales above ``scale`` (``smoke`` → ``["mini", "paper"]``)."""
    return list(SCALES[SCALES.index(scale) + 1:])


def load_larger(chapter: str, scale: str, results_root=None) -> dict[str, pd.DataFrame]:
    """Committed records of the scales above ``scale`` for ``chapter``: ``{scale: rows}`` (present only)."""
    results_root = Path(results_root or RESULTS_ROOT)
    out = {}
    for larger in larger_scales(scale):
        folder = results_root / larger
        if not folder.is_dir():
            continue
        rows = collect(grid(chapter, larger), folder)
        if not rows.empty:
            out[larger] = rows
    return out


def compare(paper: pd.DataFrame | None, ours: dict[str, pd.DataFrame], index: str = "label",
            columns: Sequence[str] = ("dataset",), rows: Sequence[str] | None = None,
            value: str = ACCURACY, paper_value: str = "paper_pct", paper_index: str = "method",
            na_rows: dict[str, str] | None = None) -> pd.DataFrame:
    """Side by side: the paper's numbers (labelled) and ours at each scale (mean ± std over seeds).

    ``paper``: :func:`lorsp.paper.paper_long` rows (or ``None``); ``ours``: ``{scale: run rows}``.
    Row index: ``index`` (ours) / ``paper_index`` (the paper's) — the method label; columns: a MultiIndex
    (source, ``columns`` values) where source is ``"paper (reported, %)"`` or ``"ours · <scale> (%)"``.
    ``rows`` orders (and selects) the methods; ``na_rows`` puts a reason in the cells of ours for a method
    that was not run at a scale (e.g. VPT on a CNN).
    """
    from .paper import PAPER_LABEL
    columns = list(columns)
    blocks = []
    if paper is not None and not paper.empty:
        pivot = paper.pivot_table(index=paper_index, columns=columns, values=paper_value, aggfunc="first")
        pivot = pivot.map(lambda v: "—" if pd.isna(v) else f"{v:.2f}")
        pivot.index.name = "method"
        pivot.columns = pd.MultiIndex.from_tuples(
            [(PAPER_LABEL, _colname(c)) for c in pivot.columns])
        blocks.append(pivot)
    for scale, frame in ours.items():
        summary = summarise(frame, by=[index] + columns, value=value)
        if summary.empty:
            continue
        summary["cell"] = [_fmt(m, s, n) for m, s, n in zip(summary["mean"], summary["std"], summary["n"])]
        pivot = summary.pivot_table(index=index, columns=columns, values="cell", aggfunc="first")
        pivot.index.name = "method"
        pivot.columns = pd.MultiIndex.from_tuples([(f"ours · {scale} (%)", _colname(c)) for c in pivot.columns])
        if na_rows:
            for label, reason in na_rows.items():
                if label not in pivot.index:  # only where the method was not run at this scale
                    pivot.loc[label] = reason
        blocks.append(pivot)
    if not blocks:
        return pd.DataFrame()
    table = pd.concat(blocks, axis=1)
    if rows is not None:
        table = table.reindex([r for r in rows if r in table.index])
    return table.fillna("—")


def _colname(value) -> str:
    if isinstance(value, tuple):
        return " · ".join(str(v) for v in value)
    return str(value)


def style_compare(table: pd.DataFrame, caption: str):
    """A pandas Styler of a :func:`compare` table with a caption and readable headers."""
    styler = table.style.set_caption(caption).set_table_styles([
        {"selector": "caption", "props": [("caption-side", "top"), ("font-weight", "bold"),
                                          ("text-align", "left")]},
        {"selector": "th", "props": [("text-align", "center")]},
        {"selector": "td", "props": [("text-align", "right"), ("white-space", "nowrap")]},
    ])
    return styler


@dataclass
class Claim:
    """A claim of the paper: ``better`` beats ``worse`` (for every pair when several are given).

    ``pairs``: ``[(better_label, worse_label), ...]``; ``where``: column filters on the summary (e.g.
    ``{"dataset": "cifar10"}``); ``text``: the claim in words, as the paper makes it.
    """

    text: str
    pairs: list[tuple[str, str]]
    where: dict[str, Any] = field(default_factory=dict)


def claim_pairs(better: str, worse: Iterable[str]) -> list[tuple[str, str]]:
    """``[(better, w) for w in worse]``."""
    return [(better, w) for w in worse]


def _verdict(a_mean, a_std, a_n, b_mean, b_std, b_n, tolerance):
    diff = a_mean - b_mean
    stds = [s for s, n in ((a_std, a_n), (b_std, b_n)) if n is not None and n >= 2 and not pd.isna(s)]
    if len(stds) == 2:
        spread = max(stds)
        basis = "the larger std over seeds"
    elif tolerance is not None:
        spread = float(tolerance)
        basis = "the stated tolerance"
    else:
        return "undecided", diff, float("nan"), "one seed, no tolerance stated"
    if abs(diff) <= spread:
        return "tie", diff, spread, basis
    return ("holds" if diff > 0 else "does not hold"), diff, spread, basis


def claims(summary: pd.DataFrame, specs: Sequence[Claim], label: str = "label",
           tolerance: float | None = None, scale: str | None = None) -> tuple[list[str], pd.DataFrame]:
    """Which claims hold at this scale, from the numbers: ``(sentences, table)``.

    ``summary``: :func:`summarise` output (``mean``, ``std``, ``n`` per ``label``). For each pair
    (better, worse) the verdict is: **holds** if mean(better) − mean(worse) exceeds the spread, **does not
    hold** if it is below −spread, **tie** if within ±spread, where the spread is the larger of the two
    standard deviations over seeds; with fewer than two seeds on either side the spread is ``tolerance``
    (percentage points) when given, else the verdict is **undecided**. A claim over several pairs holds
    when every pair holds, does not hold when any pair is reversed, and is otherwise a tie (or undecided).
    A method missing from the numbers makes the pair **not run**.
    """
    table_rows, sentences = [], []
    for spec in specs:
        sub = summary
        for column, wanted in spec.where.items():
            sub = sub[sub[column] == wanted]
        verdicts = []
        for better, worse in spec.pairs:
            a = sub[sub[label] == better]
            b = sub[sub[label] == worse]
            if a.empty or b.empty:
                verdict, diff, spread, basis = "not run", float("nan"), float("nan"), "missing numbers"
                a_mean = b_mean = float("nan")
            else:
                a_row, b_row = a.iloc[0], b.iloc[0]
                a_mean, b_mean = float(a_row["mean"]), float(b_row["mean"])
                verdict, diff, spread, basis = _verdict(a_mean, a_row["std"], a_row["n"], b_mean, b_row["std"],
                                                        b_row["n"], tolerance)
            verdicts.append(verdict)
            table_rows.append(dict(claim=spec.text, better=better, worse=worse, better_mean=a_mean,
                                   worse_mean=b_mean, difference=diff, spread=spread, spread_basis=basis,
                                   verdict=verdict, **{f"where_{k}": v for k, v in spec.where.items()}))
        overall = _combine(verdicts)
        sentences.append(_sentence(spec, overall, table_rows[-len(spec.pairs):], scale))
    return sentences, pd.DataFrame(table_rows)


def _combine(verdicts: Iterable[str]) -> str:
    """One verdict for a claim over several pairs (see :func:`claims`)."""
    verdicts = list(verdicts)
    if not verdicts or all(v == "not run" for v in verdicts):
        return "not run"
    present = [v for v in verdicts if v != "not run"]
    if "does not hold" in present:
        return "does not hold"
    if all(v == "holds" for v in present):
        return "holds" if len(present) == len(verdicts) else "holds where run"
    if "undecided" in present:
        return "undecided"
    return "tie"


def _sentence(spec: Claim, overall: str, rows: list[dict], scale: str | None) -> str:
    where = f" at {scale} scale" if scale else ""
    def spread(r):
        return "" if math.isnan(r["spread"]) else f", spread {r['spread']:.1f} pp"

    details = "; ".join(
        f"{r['better']} {r['better_mean']:.1f} vs {r['worse']} {r['worse_mean']:.1f} "
        f"(Δ = {r['difference']:+.1f} pp{spread(r)}: {r['verdict']})"
        if not math.isnan(r["difference"]) else f"{r['better']} vs {r['worse']}: {r['verdict']}"
        for r in rows)
    wording = {
        "holds": "holds",
        "holds where run": "holds for the pairs that were run",
        "does not hold": "does not hold",
        "tie": "is not supported: the differences are within the spread (a tie)",
        "undecided": "cannot be decided with one seed and no stated tolerance",
        "not run": "was not tested (no runs)",
    }[overall]
    return f"“{spec.text}” {wording}{where} — {details}."


# ----------------------------------------------------------------------------------------------------
# per-chapter tables and claims (so that each notebook only orchestrates)
# ----------------------------------------------------------------------------------------------------
SPARSIFIER_ROWS = ([f"Top-k {round(r * 100)}%" for r in SPARSIFIER_RATIOS]
                   + [f"Dropout {round(r * 100)}%" for r in SPARSIFIER_RATIOS] + ["LPF", "LoRSP"])
BACKBONE_ROWS = ["LP", "ILM-VP", "AutoVP", "EVP", "LoR-VP", "LPF", "LoRSP"]
DOWNSTREAM_ROWS = ["LP", "VPT", "AutoVP", "LoR-VP", "LoRSP"]
OOD_ROWS = ["LP", "EVP", "LoR-VP", "LoRSP"]
#: the claims of Sec. IV-D and Fig. 4 in the paper's words (values of the figure are not printed)
PAPER_HYPER_FINDINGS = {
    "groups": "best at G = 4 (r = 4); G = 1 drops, G = 8 drops slightly",
    "rank": "best at r = 4 (G = 4); a larger rank drops slightly",
    "tau": "accuracy rises as tau goes from 1.5 to 4",
    "v_threshold": "best at V_th = 0; a higher threshold gives sparser prompts and eventually lower accuracy",
}


def ood_long(frame: pd.DataFrame) -> pd.DataFrame:
    """OOD rows → one row per (run, test set): the source test set and each shifted set, plus their mean.

    The ``dataset`` column reads ``"<source> (source test)"``, the shift's name, and ``"shifted mean"``.
    """
    if frame.empty:
        return frame
    shift_columns = [c for c in frame.columns if c.startswith(f"{ACCURACY}:")]
    rows = []
    for _, row in frame.iterrows():
        base = row.drop(labels=shift_columns).to_dict()
        rows.append({**base, "dataset": f"{row['dataset']} (source test)"})
        values = []
        for column in shift_columns:
            if pd.notna(row[column]):
                values.append(float(row[column]))
                rows.append({**base, "dataset": column.split(":", 1)[1], ACCURACY: float(row[column])})
        if values:
            rows.append({**base, "dataset": "shifted mean", ACCURACY: sum(values) / len(values)})
    return pd.DataFrame(rows)


def hyper_long(frame: pd.DataFrame) -> pd.DataFrame:
    """Hyperparameter rows with a ``point`` label (``"G=2"``, ``"r=8"``, ``"tau=1.5"``, ``"V_th=0.01"``)."""
    rows = sweep_frame(frame)
    if rows.empty:
        return rows.assign(point=pd.Series(dtype=object))
    short = {"groups": "G", "rank": "r", "tau": "tau", "v_threshold": "V_th"}
    rows["point"] = [f"{short[s]}={v:g}" for s, v in zip(rows["sweep"], rows["value"])]
    return rows


def _na_rows(ours: dict[str, pd.DataFrame], labels: Sequence[str]) -> dict[str, str]:
    """Cells for methods not run: ``n/a (<backbone> is a CNN)`` for VPT, ``not available`` for a missing prompter."""
    out = {}
    for frame in ours.values():
        for backbone in frame["backbone"].dropna().unique():
            for label in labels:
                reason = not_applicable(label, backbone)
                if reason and label not in out:
                    out[label] = f"n/a ({backbone} is a CNN)" if label == "VPT" and "CNN" in reason else \
                        "not available in this installation"
    return out


def chapter_table(chapter: str, ours: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The side-by-side table of ``chapter``: the paper's numbers, ours at this and the larger scales."""
    from .paper import paper_long
    if chapter == "sparsifiers":
        paper = paper_long("table6")
        lpf = paper_long("table5")
        lpf = lpf[(lpf.method == "LPF") & (lpf.dataset == "tiny-imagenet") & lpf.backbone.isin(paper.backbone)]
        return compare(pd.concat([paper, lpf]), ours, columns=("dataset", "backbone"), rows=SPARSIFIER_ROWS)
    if chapter == "backbones":
        paper = paper_long("table2")
        paper = paper[paper.backbone != "avg"]
        lpf = paper_long("table5")
        lpf = lpf[lpf.method == "LPF"]
        return compare(pd.concat([paper, lpf]), ours, columns=("dataset", "backbone"), rows=BACKBONE_ROWS,
                       na_rows=_na_rows(ours, BACKBONE_ROWS))
    if chapter == "downstream":
        return compare(paper_long("table3"), ours, columns=("dataset",), rows=DOWNSTREAM_ROWS,
                       na_rows=_na_rows(ours, DOWNSTREAM_ROWS))
    if chapter == "ood":
        return compare(paper_long("table4"), {s: ood_long(f) for s, f in ours.items()}, columns=("dataset",),
                       rows=OOD_ROWS, na_rows=_na_rows(ours, OOD_ROWS))
    if chapter == "hyperparameters":
        table = compare(None, {s: hyper_long(f) for s, f in ours.items()}, index="point", columns=("sweep",))
        if table.empty:
            return table
        order = [f"G={g}" for g in GROUPS_SWEEP] + [f"r={r}" for r in RANK_SWEEP] + \
                [f"tau={t:g}" for t in TAU_SWEEP] + [f"V_th={v:g}" for v in V_THRESHOLD_SWEEP]
        return table.reindex([p for p in order if p in table.index])
    raise KeyError(f"chapter {chapter!r} has no side-by-side table; expected one of "
                   f"sparsifiers, backbones, downstream, ood, hyperparameters")


def chapter_claims(chapter: str, frame: pd.DataFrame, scale: str | None = None,
                   tolerance: float | None = None, value: str = ACCURACY) -> tuple[list[str], pd.DataFrame]:
    """The paper's claims for ``chapter``, checked on ``frame`` (this scale's run rows): see :func:`claims`."""
    if frame.empty:
        return ["No runs: nothing can be said at this scale."], pd.DataFrame()
    specs: list[Claim] = []
    if chapter == "sparsifiers":
        for (dataset, backbone), _ in frame.groupby(["dataset", "backbone"], sort=False):
            where = dict(dataset=dataset, backbone=backbone)
            specs += [
                Claim(f"LoRSP beats Top-k at every kept ratio ({backbone}, {dataset})",
                      claim_pairs("LoRSP", [r for r in SPARSIFIER_ROWS if r.startswith("Top-k")]), where),
                Claim(f"LoRSP beats Dropout at every kept ratio ({backbone}, {dataset})",
                      claim_pairs("LoRSP", [r for r in SPARSIFIER_ROWS if r.startswith("Dropout")]), where),
                Claim(f"LoRSP beats LPF, its dense ablation ({backbone}, {dataset})", [("LoRSP", "LPF")], where),
            ]
        summary = summarise(frame, by=["dataset", "backbone", "label"], value=value)
    elif chapter in ("backbones", "downstream"):
        rivals = ["LP", "ILM-VP", "AutoVP", "EVP", "LoR-VP"] if chapter == "backbones" else \
            ["LP", "VPT", "AutoVP", "LoR-VP"]
        for (dataset, backbone), group in frame.groupby(["dataset", "backbone"], sort=False):
            where = dict(dataset=dataset, backbone=backbone)
            present = set(group["label"])
            for rival in rivals:
                if rival in present:
                    specs.append(Claim(f"LoRSP beats {rival} ({backbone}, {dataset})", [("LoRSP", rival)], where))
            if chapter == "backbones":
                specs += [Claim(f"LPF beats LP: prompt factors help ({backbone}, {dataset})", [("LPF", "LP")], where),
                          Claim(f"LoRSP beats LPF: the SNN's sparsity helps ({backbone}, {dataset})",
                                [("LoRSP", "LPF")], where)]
        summary = summarise(frame, by=["dataset", "backbone", "label"], value=value)
    elif chapter == "ood":
        long = ood_long(frame)
        for dataset in long["dataset"].unique():
            if dataset.endswith("(source test)"):
                continue
            specs.append(Claim(f"LoRSP beats LP, EVP and LoR-VP on {dataset}",
                               claim_pairs("LoRSP", ["LP", "EVP", "LoR-VP"]), dict(dataset=dataset)))
        summary = summarise(long, by=["dataset", "label"], value=value)
    elif chapter == "hyperparameters":
        long = hyper_long(frame)
        acc = summarise(long, by=["sweep", "point"], value=value).rename(columns={"point": "label"})
        specs = [
            Claim("G = 4 beats G = 1, 2 and 8 (r = 4)", claim_pairs("G=4", ["G=1", "G=2", "G=8"]),
                  dict(sweep="groups")),
            Claim("a single factor (G = 1) is worse than several", [("G=2", "G=1"), ("G=4", "G=1"), ("G=8", "G=1")],
                  dict(sweep="groups")),
            Claim("r = 4 beats r = 1, 2 and 8 (G = 4)", claim_pairs("r=4", ["r=1", "r=2", "r=8"]),
                  dict(sweep="rank")),
            Claim("tau = 4 beats tau = 1.5", [("tau=4", "tau=1.5")], dict(sweep="tau")),
            Claim("V_th = 0 beats the other thresholds", claim_pairs("V_th=0", [f"V_th={v:g}" for v in
                                                                                 V_THRESHOLD_SWEEP if v != 0]),
                  dict(sweep="v_threshold")),
        ]
        sentences, table = claims(acc, specs, tolerance=tolerance, scale=scale)
        sparsity = summarise(long.assign(sparsity_pct=100.0 * long["sparsity"].astype(float)),
                             by=["sweep", "point"], value="sparsity_pct").rename(columns={"point": "label"})
        higher = [f"V_th={v:g}" for v in V_THRESHOLD_SWEEP if v > 0]
        more, more_table = claims(sparsity, [Claim("a higher threshold gives a sparser prompt (share of zeros, "
                                                   "in percentage points)",
                                                   claim_pairs(higher[-1], ["V_th=0"]), dict(sweep="v_threshold"))],
                                  tolerance=tolerance, scale=scale)
        return sentences + more, pd.concat([table, more_table], ignore_index=True)
    else:
        raise KeyError(f"chapter {chapter!r} has no claims; expected sparsifiers, backbones, downstream, ood or "
                       f"hyperparameters")
    return claims(summary, specs, tolerance=tolerance, scale=scale)


def closing_paragraph(sentences: Sequence[str], table: pd.DataFrame, scale: str) -> str:
    """Markdown: a count of verdicts and one bullet per claim, all generated from the numbers."""
    if table.empty:
        return f"At `{scale}` scale there are no numbers yet, so no claim of the paper is tested here."
    per_claim = table.groupby("claim", sort=False)["verdict"].apply(_combine)
    counts = per_claim.value_counts()
    summary = ", ".join(f"{n} {verdict}" for verdict, n in counts.items())
    bullets = "\n".join(f"- {s}" for s in sentences)
    return (f"**What the numbers say at `{scale}` scale** ({len(per_claim)} claims checked: {summary}). "
            f"A difference within the spread over seeds is a tie; one seed without a stated tolerance "
            f"decides nothing.\n\n{bullets}")


# ----------------------------------------------------------------------------------------------------
# Fig. 5: what the trained prompts look like
# ----------------------------------------------------------------------------------------------------
@dataclass
class GalleryPanel:
    """One method's prompts on the gallery images (all ``[N, C, H, W]`` CPU tensors, detached)."""

    label: str
    prompts: Any                   # δ(x)
    prompted: Any                  # x̃ = x + δ(x) (what the backbone sees before normalisation)
    sparsity: Any                  # [N] share of zero entries of δ
    firing_rate: Any | None        # [N] mean firing rate (LoRSP), None for a prompter without spikes
    firing_rate_per_factor: Any | None  # [N, G]
    instance_variation: float      # mean over pixels of std over images of δ, over mean |δ| (0: shared)


@dataclass
class Gallery:
    images: Any
    labels: list[str]
    panels: dict[str, GalleryPanel]
    source: str


def prompt_gallery(runs: Sequence[dict], results_dir, n_images: int = 6, device: str = "cpu") -> Gallery:
    """The trained prompters of ``runs`` (Fig. 5: LoR-VP and LoRSP) applied to ``n_images`` real test images.

    Images are the first image of each of the first ``n_images`` classes of the run's own test set (the
    same subset the run was scored on). For each method: δ(x), x̃, the sparsity of δ per image and, for
    LoRSP, the firing rate per image (and per factor, :meth:`lorsp.LoRSPPrompter.explain`), plus how much δ
    varies between images (``instance_variation``: 0 for a prompt shared by all images, as LoR-VP's).
    """
    import torch
    from .prompters import prompt_sparsity
    panels: dict[str, GalleryPanel] = {}
    images = labels = None
    source = ""
    for run in runs:
        model, config = load_run_model(run, results_dir, device=device)
        if images is None:
            data = test_set_of(config)
            chosen, seen = [], set()
            for index in range(len(data)):
                _, label = data[index]
                if int(label) not in seen:
                    seen.add(int(label))
                    chosen.append(index)
                if len(chosen) == n_images:
                    break
            images = torch.stack([data[i][0] for i in chosen])
            names = getattr(data, "classes", None)
            labels = [str(names[int(data[i][1])]) if names else str(int(data[i][1])) for i in chosen]
            source = (f"{len(chosen)} test images of {config.dataset} ({config.image_size}×{config.image_size} px), "
                      f"one per class")
        prompter = model.prompter
        x = images.to(device)
        with torch.no_grad():
            if hasattr(prompter, "explain"):
                explanation = prompter.explain(x)
                delta = explanation.prompt
                rates = explanation.firing_rate
                firing, per_factor = rates.mean(1).cpu(), rates.cpu()
            else:
                delta = prompter.prompt(x) if hasattr(prompter, "prompt") else prompter(x) - x
                firing = per_factor = None
            prompted = prompter(x)
            sparsity = prompt_sparsity(delta).cpu()
            scale = delta.abs().mean().clamp_min(1e-12)
            variation = float(delta.std(0).mean() / scale) if len(x) > 1 else float("nan")
        label = run.get("tags", {}).get("label", label_of(run))
        panels[label] = GalleryPanel(label, delta.cpu(), prompted.cpu(), sparsity, firing, per_factor, variation)
    return Gallery(images.cpu() if images is not None else None, labels or [], panels, source)


def gallery_claims(gallery: Gallery, scale: str | None = None) -> list[str]:
    """Fig. 5's claims, checked on the gallery: LoRSP's prompts are sparse and instance-specific, LoR-VP's
    are dense and shared. Each sentence states the measured numbers."""
    out = []
    where = f" at {scale} scale" if scale else ""
    lorsp, lorvp = gallery.panels.get("LoRSP"), gallery.panels.get("LoR-VP")
    if lorsp is not None:
        mean_sparsity = float(lorsp.sparsity.mean())
        verdict = "holds" if mean_sparsity > 0 else "does not hold"
        out.append(f"“LoRSP produces sparse prompts” {verdict}{where}: on average {100 * mean_sparsity:.1f}% of "
                   f"the prompt's entries are exactly zero (per image: "
                   f"{', '.join(f'{100 * float(s):.0f}%' for s in lorsp.sparsity)}); mean firing rate "
                   f"{100 * float(lorsp.firing_rate.mean()):.1f}%.")
        verdict = "holds" if lorsp.instance_variation > 1e-3 else "does not hold"
        out.append(f"“LoRSP's prompts are instance-specific” {verdict}{where}: across the images its prompt "
                   f"varies by {lorsp.instance_variation:.3f} (std over images / mean |δ|).")
    if lorvp is not None:
        dense = float(lorvp.sparsity.mean())
        verdict = "holds" if dense < 0.01 and lorvp.instance_variation < 1e-6 else "does not hold"
        out.append(f"“LoR-VP's prompt is dense and shared by every image” {verdict}{where}: "
                   f"{100 * dense:.1f}% zeros, variation across images {lorvp.instance_variation:.2g}.")
    return out


def chapter_facts(chapter: str, setup: ScaleSetup, runs: Sequence[dict]) -> dict[str, Any]:
    """The banner facts of a chapter: exactly which data, images, weights, resolution and epochs its runs use."""
    facts = setup.facts()
    datasets = list(dict.fromkeys(r["dataset"] for r in runs))
    facts["data"] = "; ".join(
        f"{name}: {_count(setup.datasets[name].get('train_per_class'))} train and "
        f"{_count(setup.datasets[name].get('test_per_class'))} test images per class"
        + (" (the same subset for a given seed)" if setup.scale != "paper" else "")
        for name in datasets)
    facts["backbones"] = ", ".join(dict.fromkeys(r["backbone"] for r in runs))
    seeds = sorted({r["seed"] for r in runs})
    facts["seeds"] = ", ".join(map(str, seeds)) + (" (mean ± std over seeds)" if len(seeds) > 1 else
                                                   " (one seed: claims need a stated tolerance)")
    steps = {}
    for name in datasets:
        per_class = setup.datasets[name].get("train_per_class")
        classes = {"cifar10": 10, "cifar100": 100, "tiny-imagenet": 200, "synthetic": 10}.get(name)
        if per_class and classes:
            steps[name] = setup.epochs * math.ceil(per_class * classes / setup.batch_size)
    if steps:
        facts["steps"] = "; ".join(f"{name}: {n} optimisation steps per run" for name, n in steps.items())
    unique = len({run_key(r) for r in runs})
    facts["runs"] = (f"{unique} training runs; runs shared with other chapters (same config) are trained "
                     f"once and reused from the runs folder")
    return facts


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lorsp.experiments --scale mini --chapter all --out results/mini``: run chapters' grids
    (and the OOD chapter's shifted evaluations) outside the notebooks, e.g. on a GPU machine."""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m lorsp.experiments", description=main.__doc__)
    parser.add_argument("--scale", choices=SCALES, default=None, help="default: $LORSP_SCALE or smoke")
    parser.add_argument("--chapter", choices=CHAPTERS + ("all",), default="all")
    parser.add_argument("--out", default=None, help="results folder (default runs/<scale>)")
    parser.add_argument("--list", action="store_true", help="only list the runs")
    args = parser.parse_args(argv)
    setup = scale_setup(args.scale)
    out = Path(args.out) if args.out else runs_dir(setup.scale)
    chapters = CHAPTERS if args.chapter == "all" else (args.chapter,)
    for chapter in chapters:
        runs = grid(chapter, setup=setup)
        if args.list:
            for run in runs:
                print(chapter, run_key(run), run["tags"].get("label"))
            continue
        frame = run_grid(runs, out)
        if chapter == "ood":
            frame = evaluate_shifts(runs, out)
        print(f"{chapter}: {len(frame)} runs in {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
