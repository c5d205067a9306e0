"""How long each chapter's grid took, measured from its committed records, beside the plan
(:func:`chapter_hours`, :func:`hours_markdown`, :func:`marked_table`; ``python -m lorsp.experiments --scale desk
--out results/desk --hours`` prints the table, ``--hours-into book/running.md`` writes it there).

A chapter counts the runs it adds, in :data:`~lorsp.experiments.grid.RUN_ORDER` (a run an earlier chapter
already trains is that chapter's, as in the plan of :mod:`lorsp.desk_budget`). Measured hours are the sum of
the wall time each record states (``experiment.wall_seconds``: training and evaluation of that run, on the
machine its ``experiment.machine`` names); a chapter's OOD evaluations of runs trained by other chapters are
part of its plan but not of its measured hours (records keep no time for them). A failed run's time counts:
the machine spent it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from .grid import RUN_ORDER, grid, run_key
from .store import RecordStore

HOURS_COLUMNS = ["order", "chapter", "runs it adds", "records", "planned hours", "measured hours",
                 "planned hours of the recorded runs"]


def chapter_hours(results_dir, scale: str = "desk", chapters: Sequence[str] = RUN_ORDER, costs=None) -> pd.DataFrame:
    """One row per chapter (and ``all``): runs it adds, how many have a final record under ``results_dir``,
    planned hours of all its runs and of the recorded ones (:func:`lorsp.desk_budget.plan`), and the measured
    hours of the recorded ones (:data:`HOURS_COLUMNS`)."""
    from ..desk_budget import load_costs, plan
    rows = plan({c: grid(c, scale) for c in chapters}, costs or load_costs(), key=run_key)
    out = []
    for order, chapter in enumerate(chapters, start=1):
        items = [r for r in rows if r["chapter"] == chapter]
        runs = [r for r in items if not r["key"].endswith(":shifted")]
        store = RecordStore(results_dir)
        recorded = [r for r in runs if store.is_final(r["key"])]
        measured = sum(_wall_seconds(store, r["key"]) for r in recorded)
        out.append({"order": order, "chapter": chapter, "runs it adds": len(runs), "records": len(recorded),
                    "planned hours": sum(r["seconds"] for r in items) / 3600,
                    "measured hours": measured / 3600,
                    "planned hours of the recorded runs": sum(r["seconds"] for r in recorded) / 3600})
    frame = pd.DataFrame(out, columns=HOURS_COLUMNS)
    total = {"order": "", "chapter": "all", **{c: frame[c].sum() for c in HOURS_COLUMNS[2:]}}
    return pd.concat([frame, pd.DataFrame([total])], ignore_index=True)


def _wall_seconds(store: RecordStore, key: str) -> float:
    """The wall time a record states (``experiment.wall_seconds``); ``ValueError`` naming the file if absent."""
    seconds = (store.read(key).get("experiment") or {}).get("wall_seconds")
    if not isinstance(seconds, (int, float)) or seconds < 0:
        raise ValueError(f"{store.path(key)}: experiment.wall_seconds should be the run's wall time in seconds, got {seconds!r}")
    return float(seconds)


def hours_markdown(frame: pd.DataFrame) -> str:
    """:func:`chapter_hours` as the Markdown table of ``book/running.md``."""
    lines = ["| " + " | ".join(HOURS_COLUMNS) + " |", "|" + "---|" * len(HOURS_COLUMNS)]
    for row in frame.itertuples(index=False):
        order, chapter, runs, records, planned, measured, planned_recorded = row
        name = {"all": "all"}.get(chapter, f"`{chapter}`")   # the total row is named as such
        lines.append(f"| {order} | {name} | {runs} | {records} of {runs} | {planned:.2f} | "
                     f"{measured:.2f} | {planned_recorded:.2f} |")
    return "\n".join(lines)


#: the markers around the generated table in a Markdown file (``book/running.md``)
MARKERS = ("<!-- desk-hours:start -->", "<!-- desk-hours:end -->")


def marked_table(text: str, name: str = "the file") -> str:
    """The table between :data:`MARKERS` in ``text``; ``ValueError`` naming ``name`` when a marker is missing."""
    start, end = MARKERS
    if start not in text or end not in text or text.index(start) > text.index(end):
        raise ValueError(f"{name} has no '{start}' ... '{end}' block for the hours table")
    return text[text.index(start) + len(start):text.index(end)].strip()


def write_marked_table(path, table: str) -> None:
    """Replace the block between :data:`MARKERS` in the Markdown file ``path`` with ``table``."""
    path = Path(path)
    text = path.read_text()
    marked_table(text, str(path))  # raises when the markers are missing
    start, end = MARKERS
    head, rest = text.split(start, 1)
    path.write_text(f"{head}{start}\n{table}\n{end}{rest.split(end, 1)[1]}")
