"""The downstream chapter (Table III): one backbone adapted to several datasets by LP, VPT, AutoVP, LoR-VP
and LoRSP."""
from __future__ import annotations

from ..claims import claims
from ..grid import DOWNSTREAM_ROWS
from ..tables import compare, na_rows
from .backbones import rival_claims
from .base import Chapter

#: the methods LoRSP is claimed to beat in Table III
RIVALS = ("LP", "VPT", "AutoVP", "LoR-VP")


class Downstream(Chapter):
    name = "downstream"
    paper_source = "Table III"
    headline_table = "table3"
    rows = tuple(DOWNSTREAM_ROWS)

    def table(self, ours):
        from ...paper import paper_long
        return compare(paper_long("table3"), ours, columns=("dataset",), rows=self.rows,
                       na_rows=na_rows(ours, self.rows))

    def claims(self, frame, scale, margin, level, value):
        return claims(frame, rival_claims(frame, RIVALS), value=value, margin=margin, level=level, scale=scale)
