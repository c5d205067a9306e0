"""The runs of each chapter at each scale (:func:`grid`), their keys (:func:`run_key`), where they are
written (:func:`runs_dir`) and what a chapter's banner says about them (:func:`chapter_facts`)."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

from .methods import label_of, method_config, not_applicable, unavailable
from .runs import run_key
from .store import RecordStore
from .scales import REPO_ROOT, ScaleSetup, per_class_text, scale_setup


CHAPTERS = ("sparsifiers", "backbones", "downstream", "ood", "hyperparameters", "prompt_gallery")
#: the order ``python -m lorsp.experiments --chapter all`` trains in: the headline chapter (Tables II and V) first
RUN_ORDER = ("backbones", "sparsifiers", "downstream", "ood", "hyperparameters", "prompt_gallery")

#: committed run records of the larger scales: results/<scale>/<key>/record.json (desk, mini and paper); the
#: default of :func:`results_root`, which ``LORSP_RESULTS`` overrides
RESULTS_ROOT = REPO_ROOT / "results"
#: where the book's runs go when executed (git-ignored): runs/<scale>/
RUNS_ROOT = REPO_ROOT / "runs"

#: the paper's LoRSP setting for OOD (Sec. IV-A3; downstream tasks: methods.DOWNSTREAM_FACTORS)
OOD_FACTORS = dict(groups=2, rank=2)
SPARSIFIER_RATIOS = (0.1, 0.2, 0.5, 0.8)
GROUPS_SWEEP = (1, 2, 4, 8)
RANK_SWEEP = (1, 2, 4, 8)
TAU_SWEEP = (1.5, 2.0, 3.0, 4.0)
#: [reading] the paper does not print its threshold values; we sweep below, at and above the default 0
V_THRESHOLD_SWEEP = (-0.01, 0.0, 0.01, 0.05)
#: the rows (method labels) of each chapter's side-by-side table, in the paper's order
SPARSIFIER_ROWS = ([f"Top-k {round(r * 100)}%" for r in SPARSIFIER_RATIOS]
                   + [f"Dropout {round(r * 100)}%" for r in SPARSIFIER_RATIOS] + ["LPF", "LoRSP"])
BACKBONE_ROWS = ["LP", "ILM-VP", "AutoVP", "EVP", "LoR-VP", "LPF", "LoRSP"]
DOWNSTREAM_ROWS = ["LP", "VPT", "AutoVP", "LoR-VP", "LoRSP"]
OOD_ROWS = ["LP", "EVP", "LoR-VP", "LoRSP"]


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

    A scale may shrink or grow a chapter (:class:`ScaleSetup`): ``headline_seeds`` (the backbones chapter;
    5 at ``desk``), ``sparsifier_ratios`` and ``sweep_points`` (fewer points at ``desk``), ``sparsifier_seeds``
    and ``hyper_seeds`` (the sweeps' seeds), and
    ``reference_224`` (LP with cached features at 224 px on the same images, :data:`LP_224_LABEL`, beside
    LP in the backbones and downstream chapters), ``deviation_prompt_lr`` (:func:`deviation_label`) and
    ``training_length_epochs`` (LP again at the paper's epochs, :func:`training_length_label`; backbones and
    downstream).
    """
    setup = setup or scale_setup(scale, require_data=False)  # listing runs needs no data
    if chapter not in _CHAPTER_RUNS:
        raise KeyError(f"unknown chapter {chapter!r}; expected one of {CHAPTERS}")
    runs = _CHAPTER_RUNS[chapter](setup)
    return [run for run in runs if unavailable(_label_key(run)) is None]


def _sparsifier_runs(setup: ScaleSetup) -> list[dict[str, Any]]:
    """Table VI: Top-k and Dropout at each keep ratio, then LPF and LoRSP, per backbone and seed."""
    chapter, runs = "sparsifiers", []
    backbones = setup.backbones if setup.scale != "paper" else ("vit_b32", "resnet50")
    if setup.protocol == "v2":  # desk v2: the sweeps on the first backbone only (the headline has both)
        backbones = setup.hyper_backbones
    dataset = setup.table2_datasets[0]
    for backbone in backbones:
        for seed in setup.sparsifier_seeds or setup.seeds:
            for ratio in setup.sparsifier_ratios or SPARSIFIER_RATIOS:
                for label in ("Top-k", "Dropout"):
                    runs.append(_run(setup, chapter, label, dataset, backbone, seed, keep_ratio=ratio,
                                     tags=dict(keep_ratio=ratio)))
            for label in ("LPF", "LoRSP"):
                runs.append(_run(setup, chapter, label, dataset, backbone, seed))
    return runs


def _backbone_runs(setup: ScaleSetup) -> list[dict[str, Any]]:
    """Tables II and V: the seven methods per dataset, backbone and headline seed, with LP at 224 px, the
    labelled deviation and LP's training-length check on the scale's seeds."""
    chapter, runs = "backbones", []
    if setup.prompt_lr_search:
        return _backbone_runs_searched(setup)
    for dataset in setup.table2_datasets:
        for backbone in setup.backbones:
            for seed in setup.headline_seeds or setup.seeds:
                for label in BACKBONE_ROWS:
                    runs.append(_run(setup, chapter, label, dataset, backbone, seed))
                if setup.reference_224 and seed in setup.seeds:
                    runs.append(_reference_224(setup, chapter, dataset, backbone, seed))
                if setup.deviation_prompt_lr and seed in setup.seeds:
                    runs += [_deviation_prompt_lr(setup, chapter, label, dataset, backbone, seed)
                             for label in DEVIATION_LABELS]
                if setup.training_length_epochs and seed in setup.seeds:
                    runs.append(_training_length(setup, chapter, dataset, backbone, seed))
    return runs


PROMPTED_ROWS = [label for label in BACKBONE_ROWS if label != "LP"]


def search_label(label: str, prompt_lr: float) -> str:
    """The label of ``label``'s prompt-lr search run at ``prompt_lr`` (desk protocol v2)."""
    return f"{label} · prompt lr {prompt_lr:g} (search)"


def paper_lr_label(label: str) -> str:
    """The label of ``label`` at the paper's single lr, the labelled column beside the searched headline."""
    return f"{label} · paper lr (column)"


def method_of_label(label) -> str:
    """The method a run label names: ``"LPF · paper lr (column)"`` and ``"LPF · prompt lr 0.01 (search)"`` are
    ``"LPF"`` (the labels above add `` · <what>`` to it)."""
    return str(label).split(" · ")[0]


def selection_key(label: str, backbone: str, dataset: str) -> str:
    return f"{label}|{backbone}|{dataset}"


def _backbone_runs_searched(setup: ScaleSetup) -> list[dict[str, Any]]:
    """Tables II and V with a prompt-lr search (desk protocol v2), in the order they train: first the search of
    every dataset and backbone (every prompted method at every lr of ``setup.prompt_lr_search`` on the search seeds,
    selected on the validation split), then the headline (LP, and each method at its selected lr,
    ``setup.prompt_lr_selection``, on its planned seeds, :func:`_planned_seeds`), then the paper's lr as a labelled
    column on the scale's seeds. Before the search is complete the headline runs are planned at the search's
    largest lr and tagged ``selection: "pending"`` (their hours are right; the runner does not train them)."""
    cells = [(dataset, backbone) for dataset in setup.table2_datasets for backbone in setup.backbones]
    search = [_with_prompt_lr(setup, label, dataset, backbone, seed, lr, search_label(label, lr),
                              dict(search=True, method_label=label))
              for dataset, backbone in cells for label in PROMPTED_ROWS
              for lr in setup.prompt_lr_search for seed in setup.search_seeds]
    headline = []
    for dataset, backbone in cells:
        headline += [_run(setup, "backbones", "LP", dataset, backbone, seed)
                     for seed in _planned_seeds(setup, "LP", backbone, dataset)]
        for label in PROMPTED_ROWS:
            chosen = (setup.prompt_lr_selection or {}).get(selection_key(label, backbone, dataset))
            tags = dict(selected_prompt_lr=chosen) if chosen else dict(selection="pending")
            headline += [_with_prompt_lr(setup, label, dataset, backbone, seed, chosen or max(setup.prompt_lr_search),
                                         label, tags) for seed in _planned_seeds(setup, label, backbone, dataset)]
    column = [_with_prompt_lr(setup, label, dataset, backbone, seed, setup.lr, paper_lr_label(label),
                              dict(paper_lr=True, method_label=label))
              for dataset, backbone in cells for label in PROMPTED_ROWS for seed in setup.seeds]
    return search + headline + column


def _planned_seeds(setup: ScaleSetup, label: str, backbone: str, dataset: str) -> tuple[int, ...]:
    """The headline seeds of ``label`` on one backbone and dataset: the cell's own entry of
    ``setup.method_seeds`` (keyed :func:`selection_key`) where the plan gives it one, else the label's."""
    return setup.method_seeds.get(selection_key(label, backbone, dataset), setup.method_seeds[label])


def _with_prompt_lr(setup: ScaleSetup, label: str, dataset: str, backbone: str, seed: int, prompt_lr: float,
                    shown: str, tags: dict) -> dict[str, Any]:
    """``label`` with its prompt at ``prompt_lr`` (the head at the paper's ``setup.lr``; at that lr the config
    has no ``prompt_lr``, so the search point, the paper-lr column and a headline at the paper's lr are one run)."""
    run = _run(setup, "backbones", label, dataset, backbone, seed, tags=tags)
    if prompt_lr != setup.lr:
        run["prompt_lr"] = prompt_lr
    run["tags"]["label"] = shown
    return run


def _downstream_runs(setup: ScaleSetup) -> list[dict[str, Any]]:
    """Table III: the downstream methods that apply to the backbone, per dataset and seed, with LP at 224 px
    and LP's training-length check (on CIFAR-10 the same runs as the backbones chapter's)."""
    chapter, runs = "downstream", []
    backbone = "vit_b32" if setup.scale == "paper" else setup.backbones[0]
    for dataset in setup.table3_datasets:
        for seed in setup.seeds:
            runs += [_run(setup, chapter, label, dataset, backbone, seed)
                     for label in DOWNSTREAM_ROWS if not not_applicable(label, backbone)]
            if setup.reference_224:
                runs.append(_reference_224(setup, chapter, dataset, backbone, seed))
            if setup.training_length_epochs:
                runs.append(_training_length(setup, chapter, dataset, backbone, seed))
    return runs


def _ood_runs(setup: ScaleSetup) -> list[dict[str, Any]]:
    """Table IV: the OOD methods trained on the source set (LoRSP at :data:`OOD_FACTORS`); each run's tags
    carry ``eval_on``, the shifted test sets."""
    backbone = "vit_b32" if setup.scale == "paper" else setup.backbones[0]
    return [_run(setup, "ood", label, setup.ood_source, backbone, seed,
                 factors=OOD_FACTORS if label == "LoRSP" else None, tags=dict(eval_on=list(setup.ood_targets)))
            for seed in setup.seeds for label in OOD_ROWS]


def _hyperparameter_runs(setup: ScaleSetup) -> list[dict[str, Any]]:
    """Figs. 3a and 4: LoRSP along each sweep (G, r, tau, V_th); the default point is one run whose
    ``tags["sweeps"]`` lists every sweep it lies on."""
    dataset = setup.table2_datasets[0]
    sweep = dict(groups=GROUPS_SWEEP, rank=RANK_SWEEP, tau=TAU_SWEEP, v_threshold=V_THRESHOLD_SWEEP)
    sweep.update(setup.sweep_points or {})
    points = ([("groups", dict(factors=dict(groups=g, rank=4))) for g in sweep["groups"]]
              + [("rank", dict(factors=dict(groups=4, rank=r))) for r in sweep["rank"]]
              + [("tau", dict(tau=t, v_threshold=0.0)) for t in sweep["tau"]]
              + [("v_threshold", dict(tau=4.0, v_threshold=v)) for v in sweep["v_threshold"]])
    by_key: dict[str, dict[str, Any]] = {}
    for backbone in setup.hyper_backbones:
        for seed in setup.hyper_seeds:
            for name, kwargs in points:
                run = _run(setup, "hyperparameters", "LoRSP", dataset, backbone, seed, tags=dict(sweeps=[name]),
                           **kwargs)
                key = run_key(run)
                if key in by_key:  # the default point (G=4, r=4, tau=4, V_th=0) is on every sweep
                    by_key[key]["tags"]["sweeps"].append(name)
                else:
                    by_key[key] = run
    return list(by_key.values())


def _gallery_runs(setup: ScaleSetup) -> list[dict[str, Any]]:
    """Fig. 5: LoR-VP and LoRSP on the gallery dataset, first seed."""
    return [_run(setup, "prompt_gallery", label, setup.gallery_dataset, setup.gallery_backbone, setup.seeds[0])
            for label in ("LoR-VP", "LoRSP")]


#: the builder of each chapter's runs (:func:`grid`)
_CHAPTER_RUNS = {"sparsifiers": _sparsifier_runs, "backbones": _backbone_runs, "downstream": _downstream_runs,
                 "ood": _ood_runs, "hyperparameters": _hyperparameter_runs, "prompt_gallery": _gallery_runs}


#: the label of the reference runs: LP with features cached at 224 px on the same images as the scale's LP
LP_224_LABEL = "LP · 224 px (cached)"


def _reference_224(setup: ScaleSetup, chapter: str, dataset: str, backbone: str, seed: int) -> dict[str, Any]:
    """LP on the same images (same dataset subset and seed) at 224 px, its features cached once: what the
    scale's lower resolution costs LP (:data:`LP_224_LABEL`)."""
    run = _run(setup, chapter, "LP", dataset, backbone, seed, tags=dict(reference="224 px"))
    run.update(image_size=224, cache_features="memory")
    run.pop("eval_every", None)
    run["tags"]["label"] = LP_224_LABEL
    return run


#: the methods trained again at the scale's ``deviation_prompt_lr`` (a labelled deviation from the paper): the
#: prompts that barely move at the paper's lr at the scale's length (LoRSP's moves: book/running.md)
DEVIATION_LABELS = ("LoR-VP",)


def deviation_label(label: str, prompt_lr: float) -> str:
    """The label of ``label`` trained with the prompt at ``prompt_lr`` (the head at the paper's lr)."""
    return f"{label} · prompt lr {prompt_lr:g} (deviation)"


def is_deviation_of(run_label: str, label: str) -> bool:
    """Is ``run_label`` a :func:`deviation_label` of ``label`` (not, e.g., a point of a prompt-lr search)?"""
    return run_label.startswith(f"{label} · prompt lr ") and run_label.endswith(" (deviation)")


def _deviation_prompt_lr(setup: ScaleSetup, chapter: str, label: str, dataset: str, backbone: str,
                         seed: int) -> dict[str, Any]:
    """``label`` with the prompt at ``setup.deviation_prompt_lr`` and the head at the paper's lr: the extra,
    labelled column a scale adds when the paper's lr barely moves a prompt at its length (never a headline row)."""
    run = _run(setup, chapter, label, dataset, backbone, seed,
               tags=dict(deviation=f"prompt lr {setup.deviation_prompt_lr:g}", method_label=label))
    run["prompt_lr"] = setup.deviation_prompt_lr
    run["tags"]["label"] = deviation_label(label, setup.deviation_prompt_lr)
    return run


def training_length_label(epochs: int) -> str:
    """The label of LP trained for ``epochs`` epochs in a scale's training-length check."""
    return f"LP · {epochs} epochs (training-length check)"


def _training_length(setup: ScaleSetup, chapter: str, dataset: str, backbone: str, seed: int) -> dict[str, Any]:
    """LP on the same images and seed, trained ``setup.training_length_epochs`` epochs (the paper's) instead of
    the scale's and evaluated after the last: what the scale's shorter training does to LP (never a headline
    row). Its features are cached, so its extra epochs cost little."""
    epochs = setup.training_length_epochs
    run = _run(setup, chapter, "LP", dataset, backbone, seed,
               tags=dict(training_length=epochs, method_label="LP"))
    run.update(epochs=epochs, eval_every=epochs)
    run["tags"]["label"] = training_length_label(epochs)
    return run


def _label_key(run: dict) -> str:
    label = run["tags"].get("method_label") or run["tags"]["label"]
    return label.split()[0] if label.startswith(("Top-k", "Dropout")) else label


def missing_methods(chapter: str, scale: str | None = None, setup: ScaleSetup | None = None) -> dict[str, str]:
    """Methods of ``chapter`` left out of its grid at this scale, with the reason (VPT on a CNN, a prompter
    missing from this installation)."""
    setup = setup or scale_setup(scale, require_data=False)  # listing runs needs no data
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


def results_root(override=None) -> Path:
    """Where the committed run records are read: ``results/`` of the repository (:data:`RESULTS_ROOT`,
    ``results/<scale>/<run key>/record.json``).

    ``override`` (a path) wins; else the environment variable ``LORSP_RESULTS`` overrides the folder, as
    ``LORSP_RUNS`` does for :func:`runs_dir` (e.g. to rehearse the book on a set of records kept elsewhere).
    """
    if override is not None:
        return Path(override)
    return Path(os.environ.get("LORSP_RESULTS") or RESULTS_ROOT)


def runs_dir(scale: str) -> Path:
    """Where the book writes the runs of ``scale``: ``runs/<scale>`` (git-ignored).

    ``LORSP_RUNS`` overrides the folder. The committed records of larger scales live in
    ``results/<scale>`` (:func:`results_root`; ``LORSP_RESULTS`` overrides it) and are written there by
    ``python -m lorsp.experiments --out results/<scale>``.
    """
    root = Path(os.environ.get("LORSP_RUNS") or RUNS_ROOT)
    return root / scale


def shown_path(path) -> str:
    """``path`` as the book shows it, never as this machine's absolute path: relative to the repository
    (``runs/smoke``), else relative to ``$LORSP_RUNS`` (``$LORSP_RUNS/smoke``) or ``$LORSP_RESULTS``
    (``$LORSP_RESULTS/desk``), else ``…/<name>``."""
    path = Path(path).resolve()
    if path.is_relative_to(REPO_ROOT):
        return path.relative_to(REPO_ROOT).as_posix() or "."
    for variable in ("LORSP_RUNS", "LORSP_RESULTS"):
        override = os.environ.get(variable)
        if override and path.is_relative_to(Path(override).resolve()):
            return "/".join([f"${variable}", *path.relative_to(Path(override).resolve()).parts])
    return f"…/{path.name}"


def chapter_facts(chapter: str, setup: ScaleSetup, runs: Sequence[dict]) -> dict[str, Any]:
    """The banner facts of a chapter: exactly which data, images, weights, resolution and epochs its runs use."""
    facts = setup.facts()
    datasets = list(dict.fromkeys(r["dataset"] for r in runs))
    facts["data"] = "; ".join(
        f"{name}: {per_class_text(setup.datasets[name].get('train_per_class'))} train and "
        f"{per_class_text(setup.datasets[name].get('test_per_class'))} test images per class"
        + (" (the same subset for a given seed)" if setup.scale != "paper" else "")
        for name in datasets)
    facts["backbones"] = ", ".join(dict.fromkeys(r["backbone"] for r in runs))
    seeds = sorted({r["seed"] for r in runs})
    facts["seeds"] = ", ".join(map(str, seeds)) + (" (mean ± std over seeds)" if len(seeds) > 1 else
                                                   " (one seed: the claims' verdicts are inconclusive)")
    steps = {}
    for name in datasets:
        per_class = setup.datasets[name].get("train_per_class")
        classes = {"cifar10": 10, "cifar100": 100, "tiny-imagenet": 200, "synthetic": 10}.get(name)
        if per_class and classes:
            epochs = setup.datasets[name].get("epochs", setup.epochs)
            steps[name] = epochs * math.ceil(per_class * classes / setup.batch_size)
    if steps:
        facts["steps"] = "; ".join(f"{name}: {n} optimisation steps per run" for name, n in steps.items())
    unique = len({run_key(r) for r in runs})
    facts["runs"] = (f"{unique} training runs; runs shared with other chapters (same config) are trained "
                     f"once and reused from the runs folder")
    return facts


# ----------------------------------------------------------------------------------------------------
# the power plan of desk protocol v2 (issue 25)
# ----------------------------------------------------------------------------------------------------
#: the headline pairs of Tables II and V (better, worse); :func:`lorsp.paper.headline_gap` names each one's table
HEADLINE_PAIRS = [("LoRSP", rival) for rival in ("LP", "ILM-VP", "AutoVP", "EVP", "LoR-VP")] + \
    [("LPF", "LP"), ("LoRSP", "LPF")]


def paired_sds(results_dir, setup: ScaleSetup) -> dict[tuple[str, str, str, str], float]:
    """The paired sd (pp, over seeds) of every headline pair's accuracy difference in the committed records of
    ``setup``'s backbones and downstream chapters (``results_dir/<key>/record.json``), keyed ``(dataset,
    backbone, better, worse)`` for each dataset of ``setup.table3_datasets``; pairs with fewer than two common
    seeds are left out."""
    import statistics
    accuracy: dict[tuple, float] = {}
    store = RecordStore(results_dir)
    for run in grid("backbones", setup=setup) + grid("downstream", setup=setup):  # v1: Tiny-ImageNet is downstream's
        if store.exists(run) and run["tags"]["label"] in BACKBONE_ROWS:
            value = store.read(run).get("final_accuracy")
            if value is not None:
                accuracy[(run["dataset"], run["backbone"], run["tags"]["label"], run["seed"])] = 100.0 * value
    out = {}
    for dataset in setup.table3_datasets:
        for backbone in setup.backbones:
            for better, worse in HEADLINE_PAIRS:
                diffs = [accuracy[(dataset, backbone, better, s)] - accuracy[(dataset, backbone, worse, s)]
                         for (d, b, label, s) in accuracy if (d, b, label) == (dataset, backbone, better)
                         and (dataset, backbone, worse, s) in accuracy]
                if len(diffs) >= 2:
                    out[(dataset, backbone, better, worse)] = statistics.stdev(diffs)
    return out


def _fallback_sd(sds: dict[tuple, float], dataset: str, better: str, worse: str) -> float | None:
    """A pair's sd on another backbone of the same dataset, else on any dataset (the first found)."""
    same = [v for (d, _, b, w), v in sds.items() if (d, b, w) == (dataset, better, worse)]
    other = [v for (_, _, b, w), v in sds.items() if (b, w) == (better, worse)]
    return (same or other or [None])[0]


def desk2_seed_plan(results_dir=None, datasets: Sequence[str] = ("cifar10", "tiny-imagenet"),
                    cap: int = 10, minimum: int = 3, sds_from: str = "v2") -> tuple[list[dict], dict[str, int]]:
    """The seeds each headline pair of desk v2 needs on each backbone and dataset
    (:func:`lorsp.desk_budget.seed_plan`), held to the paper's difference the ledger shows for it
    (:func:`lorsp.paper.headline_gap`, Tables II/V). Paired sds come from the committed desk v1 records
    (MobileNetV2 only; the v2 pilot trains one seed, so it has none; a pair v1 did not train on a dataset takes
    its sd on the other dataset). ``sds_from="v2"`` re-plans on desk v2's own headline records (at the selected
    lrs) where a pair has two seeds or more on that backbone and dataset, and on v1's sd where it has not yet;
    each row's ``sd_from`` says which. Returns the plan's rows (``pair``: ``(dataset, backbone, better,
    worse)``) and each method's seeds: the most any of its pairs needs."""
    from ..desk_budget import seed_plan
    from ..paper import headline_gap
    from .scales import DESK2_BACKBONES, desk2_setup, desk_setup, with_prompt_lr_selection
    if sds_from not in ("v1", "v2"):
        raise ValueError(f"sds_from must be 'v1' or 'v2', got {sds_from!r}")
    folder = Path(results_dir) if results_dir is not None else results_root() / "desk"
    v1 = paired_sds(folder, desk_setup(require_data=False, protocol="v1"))
    v2 = paired_sds(folder, with_prompt_lr_selection(desk2_setup(), folder)) if sds_from == "v2" else {}
    sds, claimed, source = {}, {}, {}
    for dataset in datasets:
        for backbone in DESK2_BACKBONES:
            for better, worse in HEADLINE_PAIRS:
                key = (dataset, backbone, better, worse)
                sd = v2.get(key) or _fallback_sd(v1, dataset, better, worse)
                if sd is None:
                    raise ValueError(f"no paired sd for {better} − {worse} ({dataset}, {backbone}) in the desk "
                                     f"records of {folder}: neither v2 nor v1 has two seeds of the pair")
                source[key] = "v2" if key in v2 else "v1"
                sds[key] = sd
                claimed[key] = headline_gap(better, worse, dataset).difference
    rows = [{**row, "sd_from": source[row["pair"]]} for row in seed_plan(sds, claimed, cap=cap, minimum=minimum)]
    seeds: dict[str, int] = {}
    for row in rows:
        for label in row["pair"][2:]:
            seeds[label] = max(seeds.get(label, minimum), row["seeds"])
    return rows, seeds


def select_prompt_lrs(results_dir, setup: ScaleSetup) -> dict[str, float]:
    """The prompt-lr selection of ``setup``'s search (desk protocol v2): for each prompted method, backbone and
    dataset, the searched lr with the best mean validation accuracy (``final_val_accuracy`` of the search runs'
    records in ``results_dir/<key>/record.json``; ties go to the paper's lr, then the smaller; a failed or diverged
    search run counts as never best). Never reads test accuracy. Raises ``FileNotFoundError`` naming the first search run without a record."""
    scores: dict[str, dict[float, list[float]]] = {}
    store = RecordStore(results_dir)
    for run in grid("backbones", setup=setup):
        if not run["tags"].get("search"):
            continue
        path = store.path(run)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the search run {run['tags']['label']} ({run['backbone']}, "
                                    f"{run['dataset']}, seed {run['seed']}) has no record; train the search first")
        record = store.read(run)
        value = record.get("final_val_accuracy")
        if value is None and record.get("status", "completed") == "completed":
            raise ValueError(f"{path}: no final_val_accuracy (was it trained with val_per_class?)")
        value = float("-inf") if value is None else value  # a failed or diverged search run is never selected
        key = selection_key(run["tags"]["method_label"], run["backbone"], run["dataset"])
        scores.setdefault(key, {}).setdefault(run.get("prompt_lr", setup.lr), []).append(float(value))
    return {key: max(by_lr, key=lambda lr: (sum(by_lr[lr]) / len(by_lr[lr]), lr == setup.lr, -lr))
            for key, by_lr in scores.items()}
