"""The hyperparameters chapter (Figs. 3a and 4): LoRSP swept over groups G, rank r, leak tau and threshold
V_th; the paper prints no values, only findings in words."""
from __future__ import annotations

import pandas as pd

from ..claims import Claim, claim_pairs, claims, restrict_to_grid
from ..grid import GROUPS_SWEEP, RANK_SWEEP, TAU_SWEEP, V_THRESHOLD_SWEEP
from ..records import SPARSITY
from ..tables import compare, hyper_long, outside_grid, point_sweep
from .base import Chapter


def _points_inside(planned: pd.DataFrame):
    """Whether a table cell (point label, sweep column) is a point the planned grid runs: a point is only
    run in its own sweep."""
    long = hyper_long(planned)
    inside = set(zip(long["point"], long["sweep"]))

    def is_inside(label: str, column: str) -> bool:
        own_sweep = point_sweep(label)
        return column != own_sweep or (label, own_sweep) in inside
    return is_inside


class Hyperparameters(Chapter):
    name = "hyperparameters"
    paper_source = "Figs. 3a and 4"
    run_columns = ("label", "groups", "rank", "tau", "v_threshold", "seed")

    def table(self, ours):
        table = compare(None, {s: hyper_long(f) for s, f in ours.items()}, index="point", columns=("sweep",))
        if table.empty:
            return table
        order = [f"G={g}" for g in GROUPS_SWEEP] + [f"r={r}" for r in RANK_SWEEP] + \
                [f"tau={t:g}" for t in TAU_SWEEP] + \
                [f"V_th={v:g}" for v in sorted(set(V_THRESHOLD_SWEEP) | set(_thresholds(table.index)))]
        return outside_grid(table.reindex([p for p in order if p in table.index]), self.name, ours,
                            inside=_points_inside)

    def comparison_rows(self, frame):
        """One row per (run, sweep) with its point label, and the sparsity in percentage points."""
        long = hyper_long(frame)
        return long.assign(**{SPARSITY: 100.0 * pd.to_numeric(long["sparsity"], errors="coerce")}), "point"

    def claims(self, frame, scale, margin, level, value):
        long = hyper_long(frame)
        thresholds = swept_thresholds(long)
        specs = [
            Claim("G = 4 beats G = 1, 2 and 8 (r = 4)", claim_pairs("G=4", ["G=1", "G=2", "G=8"]),
                  dict(sweep="groups")),
            Claim("a single factor (G = 1) is worse than several", [("G=2", "G=1"), ("G=4", "G=1"), ("G=8", "G=1")],
                  dict(sweep="groups")),
            Claim("r = 4 beats r = 1, 2 and 8 (G = 4)", claim_pairs("r=4", ["r=1", "r=2", "r=8"]),
                  dict(sweep="rank")),
            Claim("tau = 4 beats tau = 1.5", [("tau=4", "tau=1.5")], dict(sweep="tau")),
            Claim("V_th = 0 beats the other thresholds",
                  claim_pairs("V_th=0", [f"V_th={v:g}" for v in sorted(set(V_THRESHOLD_SWEEP) | set(thresholds))
                                         if v != 0]),
                  dict(sweep="v_threshold")),
        ]
        specs = restrict_to_grid(specs, set(long["point"]))
        settings = dict(label="point", margin=margin, level=level, scale=scale)
        sentences, table = claims(long, specs, value=value, **settings)
        if len(thresholds) < 2:
            return sentences, table
        highest, lowest = (f"V_th={v:g}" for v in (thresholds[-1], thresholds[0]))
        more, more_table = claims(long.assign(**{SPARSITY: 100.0 * long["sparsity"].astype(float)}),
                                  [Claim("a higher threshold gives a sparser prompt (share of zeros, in percentage "
                                         "points)", claim_pairs(highest, [lowest]), dict(sweep="v_threshold"))],
                                  value=SPARSITY, **settings)
        return sentences + more, pd.concat([table, more_table], ignore_index=True)


def swept_thresholds(long) -> list[float]:
    """The thresholds V_th of the sweep's points that have records (``"V_th=0.01"`` → 0.01), in increasing order;
    the scale decides them (:data:`lorsp.experiments.grid.V_THRESHOLD_SWEEP`, or a scale's ``sweep_points``)."""
    return _thresholds(long["point"])


def _thresholds(points) -> list[float]:
    labels = {str(p) for p in points if str(p).startswith("V_th=")}
    return sorted(float(p.split("=", 1)[1]) for p in labels)
