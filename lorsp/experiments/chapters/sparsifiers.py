"""The sparsifiers chapter (Table VI): LoRSP's LIF-gated prompt beside Top-k and random (Dropout) sparsifiers
of LPF's dense prompt at several kept ratios."""
from __future__ import annotations

import pandas as pd

from ..claims import Claim, claim_pairs, claims, restrict_to_grid
from ..grid import SPARSIFIER_ROWS
from ..tables import compare, outside_grid
from .base import Chapter


class Sparsifiers(Chapter):
    name = "sparsifiers"
    paper_source = "Table VI"
    rows = tuple(SPARSIFIER_ROWS)
    run_columns = ("label", "dataset", "backbone", "seed", "keep_ratio")

    def table(self, ours):
        from ...paper import paper_long
        paper = paper_long("table6")
        lpf = paper_long("table5")
        lpf = lpf[(lpf.method == "LPF") & (lpf.dataset == "tiny-imagenet") & lpf.backbone.isin(paper.backbone)]
        table = compare(pd.concat([paper, lpf]), ours, columns=("dataset", "backbone"), rows=self.rows)
        return outside_grid(table, self.name, ours)

    def claims(self, frame, scale, margin, level, value):
        specs = []
        for (dataset, backbone), _ in frame.groupby(["dataset", "backbone"], sort=False):
            where = dict(dataset=dataset, backbone=backbone)
            specs += [
                Claim(f"LoRSP beats Top-k at every kept ratio ({backbone}, {dataset})",
                      claim_pairs("LoRSP", [r for r in self.rows if r.startswith("Top-k")]), where),
                Claim(f"LoRSP beats Dropout at every kept ratio ({backbone}, {dataset})",
                      claim_pairs("LoRSP", [r for r in self.rows if r.startswith("Dropout")]), where),
                Claim(f"LoRSP beats LPF, its dense ablation ({backbone}, {dataset})", [("LoRSP", "LPF")], where),
            ]
        specs = restrict_to_grid(specs, set(frame["label"]), label="kept ratio")
        return claims(frame, specs, value=value, margin=margin, level=level, scale=scale)
