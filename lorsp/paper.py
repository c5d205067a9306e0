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

from importlib import resources

import pandas as pd

__all__ = ["TABLES", "list_tables", "load_table", "paper_long", "PAPER_LABEL"]

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
