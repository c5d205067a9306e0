"""The prompt-lr search of desk protocol v2 and the paper's single lr beside it, as the backbones chapter shows them.

The paper trains every method at one learning rate (0.01). At a short CPU protocol that lr suits some prompts and
not others (``book/running.md``, the pilot), so desk protocol v2 trains every prompted method at each prompt lr of
a small search (the head at the paper's lr) on one seed, judges it on a validation split carved from its training
images (never the test set), and compares the methods at their selected lrs; the paper's lr stays a labelled column
(issue 25, build item 2). :func:`search_table` shows each method's validation accuracy at every searched lr and the
lr its headline runs were trained at; :func:`paper_lr_column` asks, seed by seed, what the selection changed against
the paper's lr. Both read the chapter's run rows (:func:`lorsp.experiments.records_frame`); neither reads a test
accuracy to choose anything.
"""
from __future__ import annotations

import pandas as pd

from .claims import Claim, claims
from .grid import PROMPTED_ROWS, method_of_label, paper_lr_label

#: how a search point's label ends (:func:`lorsp.experiments.grid.search_label`)
SEARCH_SUFFIX = " (search)"
VALIDATION = "val_accuracy_pct"


def _lr(rows: pd.DataFrame, paper_lr: float) -> pd.Series:
    """Each row's prompt lr (a run at the paper's lr has no ``prompt_lr`` of its own)."""
    return pd.to_numeric(rows["prompt_lr"], errors="coerce").fillna(paper_lr)


def selected_lrs(frame: pd.DataFrame, paper_lr: float) -> pd.Series:
    """The prompt lr each prompted method's headline runs were trained at, indexed ``(method, backbone,
    dataset)``."""
    headline = frame[frame["label"].isin(PROMPTED_ROWS)]
    return (headline.assign(lr=_lr(headline, paper_lr)).groupby(["label", "backbone", "dataset"])["lr"].first()
            .rename_axis(["method", "backbone", "dataset"]))


def search_table(frame: pd.DataFrame, paper_lr: float) -> pd.DataFrame:
    """One row per prompted method, backbone and dataset: its validation accuracy (%) at every searched prompt
    lr (one column each), and ``selected lr``: the lr its headline runs were trained at. Empty when ``frame``
    holds no search point (a protocol without a search)."""
    if frame.empty or "label" not in frame:
        return pd.DataFrame()
    points = frame[frame["label"].astype(str).str.endswith(SEARCH_SUFFIX)]
    if points.empty:
        return pd.DataFrame()
    points = points.assign(method=points["label"].map(method_of_label), lr=_lr(points, paper_lr))
    table = points.pivot_table(index=["method", "backbone", "dataset"], columns="lr", values=VALIDATION,
                               aggfunc="mean")
    table.columns = [f"val. acc. at {lr:g}" + (" (paper's)" if lr == paper_lr else "") for lr in table.columns]
    table["selected lr"] = selected_lrs(frame, paper_lr).reindex(table.index)
    order = {label: i for i, label in enumerate(PROMPTED_ROWS)}
    return table.sort_index(key=lambda level: level.map(order) if level.name == "method" else level)


def paper_lr_column(frame: pd.DataFrame, paper_lr: float, scale: str | None = None) -> tuple[list[str], pd.DataFrame]:
    """Each prompted method at its selected lr against the same method at the paper's lr (the labelled column),
    per backbone and dataset, paired by seed with the rule of :func:`lorsp.experiments.claims` (these questions
    are ours, not the paper's). A method whose selection is the paper's lr is one set of runs on both sides, so
    it is named in a sentence instead of tested. ``([], empty)`` when ``frame`` has no paper-lr column."""
    if frame.empty or "label" not in frame:
        return [], pd.DataFrame()
    column = frame[frame["label"].isin([paper_lr_label(m) for m in PROMPTED_ROWS])]
    if column.empty:
        return [], pd.DataFrame()
    chosen = selected_lrs(frame, paper_lr)
    column = column.assign(method=column["label"].map(method_of_label))
    cells = [cell for cell in column[["method", "backbone", "dataset"]].drop_duplicates().itertuples(index=False)
             if tuple(cell) in chosen.index]
    cells.sort(key=lambda cell: PROMPTED_ROWS.index(cell.method))
    same = [f"{m} ({b}, {d})" for m, b, d in cells if chosen[(m, b, d)] == paper_lr]
    specs = [Claim(f"{m} at its selected lr ({chosen[(m, b, d)]:g}) beats {m} at the paper's lr ({b}, {d})",
                   [(m, paper_lr_label(m))], where=dict(backbone=b, dataset=d))
             for m, b, d in cells if chosen[(m, b, d)] != paper_lr]
    _, table = claims(frame, specs, scale=scale)
    sentences = [_summary(table)] if not table.empty else []
    if same:
        sentences.append(f"The search selected the paper's lr ({paper_lr:g}) for {', '.join(same)}: there the "
                         f"headline and the column are the same runs.")
    return sentences, table


def _summary(table: pd.DataFrame) -> str:
    counts = table["verdict"].value_counts()
    said = {"holds": "its selected lr beats the paper's", "reversed": "the paper's lr is better",
            "equivalent": "the two are within ±0.5 pp", "inconclusive": "the seeds cannot tell them apart"}
    parts = [f"{counts[v]} {text}" for v, text in said.items() if counts.get(v)]
    return f"Of the {len(table)} methods, backbones and datasets whose selection is not the paper's lr: " \
        + "; ".join(parts) + "."
