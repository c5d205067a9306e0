"""The paper's reported numbers (Tables I–VI and the parameter counts), copied verbatim from the paper.

These are **the paper's** numbers, not ours: top-1 accuracies in percent (0–100) as printed in the
paper, shipped as CSV files in ``lorsp/paper_tables/``. Our own runs report fractions in [0, 1]; the book's
experiment chapters convert ours to percent before setting them beside these (:mod:`lorsp.experiments`).

- ``table1`` backbones (Table I), ``table2`` accuracy over backbones (Table II), ``table3`` downstream tasks
  with ViT-B/32 (Table III), ``table4`` OOD with ViT-B/32 (Table IV), ``table5`` ablation LP/LPF/LoRSP
  (Table V), ``table6`` sparsifiers on Tiny-ImageNet (Table VI), ``params`` trainable prompt parameters
  (Eqs. 13–15 and Sec. IV-E).

``load_table(name)`` returns a DataFrame whose ``attrs`` say where it comes from; ``paper_long(name)``
reshapes the accuracy tables to one row per (dataset, backbone, method) number, the layout of our run
records, so that the two can be joined.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources

import pandas as pd

__all__ = ["TABLES", "list_tables", "load_table", "paper_long", "PAPER_LABEL", "PaperGap", "paper_gap",
           "display_name", "PAPER_IMAGE_SIZE", "PAPER_EPOCHS"]

#: the column label under which the paper's numbers appear in the book's side-by-side tables
PAPER_LABEL = "paper (reported, %)"

#: short name → (CSV file in lorsp/paper_tables, caption)
TABLES: dict[str, tuple[str, str]] = {
    "table1": ("table1_backbones.csv", "Table I: the five pre-trained backbones"),
    "table2": ("table2_backbones.csv",
               "Table II: top-1 accuracy (%) of visual prompting methods over five backbones"),
    "table3": ("table3_downstream_vit_b32.csv",
               "Table III: top-1 accuracy (%) on eight downstream tasks, ViT-B/32"),
    "table4": ("table4_ood_vit_b32.csv",
               "Table IV: top-1 accuracy (%) trained on ImageNet-1K, tested on its OOD variants, ViT-B/32"),
    "table5": ("table5_ablation.csv", "Table V: ablation LP → LPF → LoRSP, top-1 accuracy (%)"),
    "table6": ("table6_sparsifiers_tiny_imagenet.csv",
               "Table VI: Top-k and Dropout sparsifiers vs LoRSP on Tiny-ImageNet, top-1 accuracy (%)"),
    "params": ("params.csv", "Trainable prompt parameters reported in the paper (Sec. IV-E)"),
}

_ALIASES = {stem.split(".")[0]: short for short, (stem, _) in TABLES.items()}

#: the paper's method names as they appear in its tables, for our method labels
PAPER_METHOD_NAMES = ("LP", "ILM-VP", "AutoVP", "EVP", "LoR-VP", "VPT", "LPF", "LoRSP", "Top-k", "Dropout")


def list_tables() -> list[str]:
    """Short names accepted by :func:`load_table`."""
    return list(TABLES)


def _resolve(name: str) -> str:
    key = str(name).strip().lower()
    key = key[:-4] if key.endswith(".csv") else key
    if key in TABLES:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    raise KeyError(f"unknown paper table {name!r}; expected one of {list_tables()} "
                   f"(or a file name from lorsp/paper_tables/: {sorted(_ALIASES)})")


def load_table(name: str) -> pd.DataFrame:
    """The paper's table ``name`` (``"table2"``, ``"table6"``, ``"params"``, or its CSV stem) as printed.

    Accuracies are the paper's reported top-1 numbers in **percent**. ``df.attrs`` holds ``source``
    (``"paper"``), ``units``, ``caption`` and ``file``.
    """
    key = _resolve(name)
    file_name, caption = TABLES[key]
    with resources.files("lorsp").joinpath("paper_tables", file_name).open("r", encoding="utf-8") as fh:
        table = pd.read_csv(fh)
    table.attrs.update(source="paper", units="percent" if key not in ("table1", "params") else "as printed",
                       caption=caption, file=f"lorsp/paper_tables/{file_name}", label=PAPER_LABEL)
    return table


def paper_long(name: str) -> pd.DataFrame:
    """An accuracy table of the paper, one row per number: columns ``dataset, backbone, method, paper_pct``.

    Table VI's rows become methods ``"Top-k 10%"``, ``"Dropout 10%"``… and ``"LoRSP"`` (the paper prints
    LoRSP's single number on every ratio row; here it appears once). Table IV's columns become datasets
    (``imagenet-1k`` is the source, the others the shifted sets; ``ood_avg`` is kept as printed).
    """
    key = _resolve(name)
    table = load_table(key)
    if key == "table2":
        long = table.melt(id_vars=["dataset", "method"], var_name="backbone", value_name="paper_pct")
    elif key == "table3":
        long = table.melt(id_vars=["method"], var_name="dataset", value_name="paper_pct")
        long["backbone"] = "vit_b32"
    elif key == "table4":
        long = table.melt(id_vars=["method"], var_name="dataset", value_name="paper_pct")
        long["backbone"] = "vit_b32"
    elif key == "table5":
        long = table.rename(columns={"baseline_lp": "LP", "lpf": "LPF", "lorsp": "LoRSP"}).melt(
            id_vars=["dataset", "backbone"], var_name="method", value_name="paper_pct")
    elif key == "table6":
        rows = []
        for _, row in table.iterrows():
            ratio = f"{round(float(row['sparsity']) * 100):d}%"
            rows.append(dict(backbone=row["backbone"], method=f"Top-k {ratio}", paper_pct=row["topk"]))
            rows.append(dict(backbone=row["backbone"], method=f"Dropout {ratio}", paper_pct=row["dropout"]))
        for backbone, group in table.groupby("backbone", sort=False):
            rows.append(dict(backbone=backbone, method="LoRSP", paper_pct=float(group["lorsp"].iloc[0])))
        long = pd.DataFrame(rows)
        long["dataset"] = "tiny-imagenet"
    else:
        raise KeyError(f"paper table {name!r} holds no accuracies; paper_long takes table2..table6")
    long = long[["dataset", "backbone", "method", "paper_pct"]].reset_index(drop=True)
    long["paper_pct"] = long["paper_pct"].astype(float)
    long.attrs.update(source="paper", units="percent", caption=TABLES[key][1], label=PAPER_LABEL)
    return long


#: the paper's protocol (Sec. IV-A): images resized to 224 px, every model trained for 20 epochs
PAPER_IMAGE_SIZE = 224
PAPER_EPOCHS = 20

#: how the book writes the paper's backbones and datasets (and ours) in sentences
_DISPLAY = {"resnet50": "ResNet-50", "vit_b32": "ViT-B/32", "vit_b16": "ViT-B/16", "swin_b": "Swin-B",
            "clip_vit_b32": "CLIP ViT-B/32", "mobilenetv2": "MobileNetV2",
            "efficientnet_lite0": "EfficientNet-Lite0", "cifar10": "CIFAR-10",
            "cifar100": "CIFAR-100", "tiny-imagenet": "Tiny-ImageNet", "imagenet-1k": "ImageNet-1K",
            "imagenet": "ImageNet-1K", "imagenet-r": "ImageNet-R", "imagenet-sketch": "ImageNet-Sketch",
            "imagenet-a": "ImageNet-A", "imagenet-v2": "ImageNet-V2", "ood_avg": "OOD average"}
_ROMAN = {"table2": "II", "table3": "III", "table4": "IV", "table5": "V", "table6": "VI"}


def display_name(name: str) -> str:
    """``"vit_b32"`` → ``"ViT-B/32"``, ``"cifar10"`` → ``"CIFAR-10"``; other names unchanged."""
    return _DISPLAY.get(str(name), str(name))


@dataclass(frozen=True)
class PaperGap:
    """The paper's own difference ``better − worse`` (pp) for one comparison, and where it comes from.

    ``difference`` is NaN when the paper prints no value (e.g. its Figs. 3–4 are plotted only); ``source``
    names the table, the rows or column and how the number is averaged; ``backbones``, ``dataset`` and
    ``test_sets`` (Table IV: the shifted sets) and ``image_size``/``epochs`` are the paper's protocol for it."""

    difference: float
    source: str
    backbones: tuple[str, ...]
    dataset: str
    test_sets: tuple[str, ...] = ()
    image_size: int = PAPER_IMAGE_SIZE
    epochs: int = PAPER_EPOCHS

    @property
    def printed(self) -> bool:
        return math.isfinite(self.difference)


def paper_gap(name: str, better: str, worse: str, dataset: str) -> PaperGap:
    """The paper's ``better − worse`` in table ``name`` on ``dataset`` (Tables II, V, VI: the training set;
    Tables III and IV: the column, e.g. ``"cifar10"`` or ``"imagenet-sketch"``), averaged over the backbones
    the table reports it on (Table II/V: the five; Table VI: ViT-B/32 and ResNet-50; III/IV: ViT-B/32 only).

    Raises ``KeyError`` naming the table, the dataset and the methods it has when a number is missing."""
    key = _resolve(name)
    long = paper_long(key)
    long = long[(long["backbone"] != "avg") & (long["dataset"] == dataset)]
    if long.empty:
        raise KeyError(f"paper table {name!r} has no numbers for dataset {dataset!r}")
    pivot = long.pivot_table(index="backbone", columns="method", values="paper_pct", aggfunc="first")
    missing = [m for m in (better, worse) if m not in pivot.columns]
    if missing:
        raise KeyError(f"paper table {name!r} ({dataset}) has no method {missing[0]!r}; it has "
                       f"{sorted(pivot.columns)}")
    backbones = tuple(b for b in dict.fromkeys(load_table(key)["backbone"]) if b in pivot.index) \
        if "backbone" in load_table(key) else tuple(pivot.index)
    gaps = (pivot.loc[list(backbones), better] - pivot.loc[list(backbones), worse]).dropna()
    table = f"Table {_ROMAN[key]}"
    if key in ("table3", "table4"):
        where = f"{display_name(dataset)} column, ViT-B/32"
        trained = "imagenet-1k" if key == "table4" else dataset
        test_sets = (dataset,) if key == "table4" else ()
        return PaperGap(float(gaps.mean()), f"{table}, {where}: {better} − {worse}", ("vit_b32",), trained, test_sets)
    over = ("the paper's five backbones" if len(backbones) == 5 else
            " and ".join(display_name(b) for b in backbones))
    return PaperGap(float(gaps.mean()), f"{table}, {display_name(dataset)}: {better} − {worse}, mean over {over}",
                    tuple(backbones), dataset)


#: our training set → the nearer of Table II/V's two datasets (Tiny-ImageNet, CIFAR-100), when ours is not one
TABLE2_NEAREST = {"cifar10": "cifar100"}


def headline_gap(better: str, worse: str, dataset: str, table: str = "table2") -> PaperGap:
    """The paper's difference a headline pair trained on ``dataset`` is held to, one rule for the seed plan and
    the ledger: a pair with LPF from Table V (Eq. 15's ablation), the others from ``table``: ``"table2"`` (the
    backbones chapter: the mean over the paper's five backbones) or ``"table3"`` (the downstream chapter: its
    ``dataset`` column, ViT-B/32, falling back to Table II where the column lacks a method). A dataset Tables
    II/V do not have is held to the nearer one (:data:`TABLE2_NEAREST`: CIFAR-10 → CIFAR-100)."""
    if table not in ("table2", "table3"):
        raise ValueError(f"a headline pair's paper table is 'table2' or 'table3', got {table!r}")
    nearest = TABLE2_NEAREST.get(dataset, dataset)
    if "LPF" in (better, worse):
        return paper_gap("table5", better, worse, nearest)
    if table == "table3":
        try:
            return paper_gap("table3", better, worse, dataset)
        except KeyError:
            pass
    return paper_gap("table2", better, worse, nearest)
