"""Summaries over seeds and the side-by-side tables: the paper's numbers beside ours at each scale."""
from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from .grid import grid, results_root as _default_results_root
from .methods import not_applicable
from .records import ACCURACY, collect, usable_rows
from .scales import SCALES


def summarise(frame: pd.DataFrame, by: Sequence[str] = ("dataset", "backbone", "label"),
              value: str = ACCURACY) -> pd.DataFrame:
    """Mean, std (over seeds; NaN with one seed) and n of ``value`` per group ``by``; failed or diverged runs
    (:func:`failed_runs`) are left out."""
    by = list(by)
    if frame.empty:
        return pd.DataFrame(columns=by + ["mean", "std", "n"])
    grouped = usable_rows(frame, value).groupby(by, sort=False, dropna=False)[value]
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
    """Committed records of the scales above ``scale`` for ``chapter``: ``{scale: rows}`` (present only), read
    from ``results_root`` (default ``$LORSP_RESULTS``, else the repository's ``results/``)."""
    results_root = _default_results_root(results_root)
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
    """Side by side: ours at each scale (mean ± std over seeds) and the paper's numbers (labelled).

    ``paper``: :func:`lorsp.paper.paper_long` rows (or ``None``); ``ours``: ``{scale: run rows}``, the headline
    first. Row index: ``index`` (ours) / ``paper_index`` (the paper's) — the method label; columns: a MultiIndex
    (source, ``columns`` values) where source is ``"paper (reported, %)"`` or ``"ours · <scale> (%)"``, in the
    order: ours at the first scale (the headline, which a narrow page shows without scrolling), the paper's,
    ours at the other scales.
    ``rows`` orders (and selects) the methods; ``na_rows`` puts a reason in the cells of ours for a method
    that was not run at a scale (e.g. VPT on a CNN).
    """
    from ..paper import PAPER_LABEL
    columns = list(columns)
    blocks, paper_block = [], None
    if paper is not None and not paper.empty:
        pivot = paper.pivot_table(index=paper_index, columns=columns, values=paper_value, aggfunc="first")
        pivot = pivot.map(lambda v: "—" if pd.isna(v) else f"{v:.2f}")
        pivot.index.name = "method"
        pivot.columns = pd.MultiIndex.from_tuples(
            [(PAPER_LABEL, _colname(c)) for c in pivot.columns])
        paper_block = pivot
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
    if paper_block is not None:
        blocks.insert(min(1, len(blocks)), paper_block)
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


#: the caption of a styled table: above it, bold, left-aligned (:func:`style_compare`, :func:`style_claims`)
CAPTION_STYLE = {"selector": "caption", "props": [("caption-side", "top"), ("font-weight", "bold"),
                                                   ("text-align", "left")]}


def style_compare(table: pd.DataFrame, caption: str):
    """A pandas Styler of a :func:`compare` table with a caption and readable headers."""
    styler = table.style.set_caption(caption).set_table_styles([
        CAPTION_STYLE,
        {"selector": "th", "props": [("text-align", "center")]},
        {"selector": "td", "props": [("text-align", "right"), ("white-space", "nowrap")]},
    ])
    return styler


#: the columns of a claims table (:func:`lorsp.experiments.claims`) that :func:`style_claims` shows, in order
CLAIM_COLUMNS = ["claim", "claim_verdict", "better", "worse", "n", "better_mean", "worse_mean", "difference",
                 "ci_low", "ci_high", "detectable", "p_value", "p_holm", "verdict"]


def style_claims(table: pd.DataFrame, caption: str):
    """A pandas Styler of a claims table for a narrow page: one row per pair of methods, a claim's text and
    verdict on its first pair only (its other pairs follow it), the numbers on one line, no index. The columns
    are :data:`CLAIM_COLUMNS` (the others — the claim's note and ``where`` filters — are in its text)."""
    shown = table[[c for c in CLAIM_COLUMNS if c in table.columns]].copy()
    if "claim" in shown:
        repeated = shown["claim"].eq(shown["claim"].shift()).to_numpy()
        for column in ("claim", "claim_verdict"):
            if column in shown:
                shown[column] = shown[column].astype(object)
                shown.loc[repeated, column] = ""
    return shown.style.format(precision=2, na_rep="—").hide(axis="index").set_caption(caption).set_table_styles([
        CAPTION_STYLE,
        {"selector": "td", "props": [("white-space", "nowrap"), ("vertical-align", "top")]},
        {"selector": "td.col0", "props": [("white-space", "normal"), ("min-width", "18em")]},
    ])


#: the claims of Sec. IV-D and Fig. 4 in the paper's words (values of the figure are not printed)
PAPER_HYPER_FINDINGS = {
    "groups": "best at G = 4 (r = 4); G = 1 drops, G = 8 drops slightly",
    "rank": "best at r = 4 (G = 4); a larger rank drops slightly",
    "tau": "accuracy rises as tau goes from 1.5 to 4",
    "v_threshold": "best at V_th = 0; a higher threshold gives sparser prompts and eventually lower accuracy",
}


def sweep_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Hyperparameter rows, one per (run, sweep) with the swept ``value``: the default point repeats."""
    if frame.empty:
        return frame.assign(sweep=pd.Series(dtype=object), value=pd.Series(dtype=float))
    rows = frame.explode("sweeps").rename(columns={"sweeps": "sweep"})
    rows = rows[rows["sweep"].notna()].copy()
    rows["value"] = [float(row[row["sweep"]]) for _, row in rows.iterrows()]
    return rows.reset_index(drop=True)


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


#: the short name of each hyperparameter sweep in a point label (``"G=2"``), as the paper's Figs. 3–4 write it
SWEEP_SHORT_NAMES = {"groups": "G", "rank": "r", "tau": "tau", "v_threshold": "V_th"}


def hyper_long(frame: pd.DataFrame) -> pd.DataFrame:
    """Hyperparameter rows with a ``point`` label (``"G=2"``, ``"r=8"``, ``"tau=1.5"``, ``"V_th=0.01"``)."""
    rows = sweep_frame(frame)
    if rows.empty:
        return rows.assign(point=pd.Series(dtype=object))
    rows["point"] = [f"{SWEEP_SHORT_NAMES[s]}={v:g}" for s, v in zip(rows["sweep"], rows["value"])]
    return rows


def point_sweep(point: str) -> str:
    """The sweep a point label of :func:`hyper_long` belongs to: ``"V_th=0.01"`` → ``"v_threshold"``."""
    short = point.split("=")[0]
    for sweep, name in SWEEP_SHORT_NAMES.items():
        if name == short:
            return sweep
    raise ValueError(f"point {point!r}: expected <name>=<value> with name one of "
                     f"{', '.join(SWEEP_SHORT_NAMES.values())}")


def na_rows(ours: dict[str, pd.DataFrame], labels: Sequence[str]) -> dict[str, str]:
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


def _labels_inside(planned: pd.DataFrame):
    """Whether a table cell (method label, column) is a method the planned grid runs."""
    inside = set(planned["label"])
    return lambda label, column: label in inside


def outside_grid(table: pd.DataFrame, chapter: str, ours: dict[str, pd.DataFrame], inside=_labels_inside) -> pd.DataFrame:
    """``table`` with the empty cells of a point that the scale's grid does not run (desk runs two of Table VI's
    four keep ratios and fewer sweep points) marked ``not in the <scale> grid`` instead of ``—``.

    ``inside(planned rows) -> is_inside(row label, column name)`` says which cells the planned grid of
    ``chapter`` runs (default: the rows whose method label it runs)."""
    from .records import planned_frame
    table = table.copy()
    for source, frame in ours.items():
        scales = frame["scale"].dropna().unique() if "scale" in frame else []
        if len(scales) != 1:
            continue
        scale = str(scales[0])
        is_inside = inside(planned_frame(grid(chapter, scale)))
        for column in [c for c in table.columns if c[0] == f"ours · {source} (%)"]:
            for label in table.index:
                if table.at[label, column] == "—" and not is_inside(label, column[1]):
                    table.at[label, column] = f"not in the {scale} grid"
    return table


def chapter_table(chapter: str, ours: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The side-by-side table of ``chapter``: the paper's numbers, ours at this and the larger scales
    (:meth:`lorsp.experiments.chapters.Chapter.table`); a point that a scale's grid does not run says so
    (:func:`outside_grid`)."""
    from .chapters import chapter as chapter_of
    return chapter_of(chapter).table(ours)
