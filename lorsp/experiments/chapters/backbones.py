"""The backbones chapter (Tables II and V): LoRSP beside LP, ILM-VP, AutoVP, EVP and LoR-VP on each
backbone, and the ablation LP → LPF → LoRSP."""
from __future__ import annotations

import pandas as pd

from ..claims import Claim, claims
from ..grid import BACKBONE_ROWS
from ..tables import compare, na_rows
from .base import Chapter

#: the methods LoRSP is claimed to beat in Table II
RIVALS = ("LP", "ILM-VP", "AutoVP", "EVP", "LoR-VP")


def rival_claims(frame: pd.DataFrame, rivals, ablation: bool = False) -> list[Claim]:
    """The claims "LoRSP beats <rival>", per (dataset, backbone) for each rival that was run there; with ``ablation``
    also Table V's two steps, LPF beats LP and LoRSP beats LPF."""
    specs = []
    for (dataset, backbone), group in frame.groupby(["dataset", "backbone"], sort=False):
        where = dict(dataset=dataset, backbone=backbone)
        present = set(group["label"])
        specs += [Claim(f"LoRSP beats {rival} ({backbone}, {dataset})", [("LoRSP", rival)], where)
                  for rival in rivals if rival in present]
        if ablation:
            specs += [Claim(f"LPF beats LP: prompt factors help ({backbone}, {dataset})", [("LPF", "LP")], where),
                      Claim(f"LoRSP beats LPF: the SNN's sparsity helps ({backbone}, {dataset})",
                            [("LoRSP", "LPF")], where)]
    return specs


class Backbones(Chapter):
    name = "backbones"
    paper_source = "Tables II and V"
    rows = tuple(BACKBONE_ROWS)

    def table(self, ours):
        from ...paper import paper_long
        paper = paper_long("table2")
        paper = paper[paper.backbone != "avg"]
        lpf = paper_long("table5")
        lpf = lpf[lpf.method == "LPF"]
        return compare(pd.concat([paper, lpf]), ours, columns=("dataset", "backbone"), rows=self.rows,
                       na_rows=na_rows(ours, self.rows))

    def claims(self, frame, scale, margin, level, value):
        return claims(frame, rival_claims(frame, RIVALS, ablation=True), value=value, margin=margin, level=level,
                      scale=scale)
