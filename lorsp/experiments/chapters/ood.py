"""The out-of-distribution chapter (Table IV): the trained models tested, unchanged, on shifted test sets."""
from __future__ import annotations

from ..claims import Claim, claim_pairs, claims
from ..grid import OOD_ROWS
from ..tables import compare, na_rows, ood_long
from .base import Chapter


class OutOfDistribution(Chapter):
    name = "ood"
    paper_source = "Table IV"
    rows = tuple(OOD_ROWS)
    shifted_test_sets = True

    def table(self, ours):
        from ...paper import paper_long
        return compare(paper_long("table4"), {s: ood_long(f) for s, f in ours.items()}, columns=("dataset",),
                       rows=self.rows, na_rows=na_rows(ours, self.rows))

    def comparison_rows(self, frame):
        """One row per (run, test set): the source test set, each shifted set and their mean."""
        return ood_long(frame), "label"

    def claims(self, frame, scale, margin, level, value):
        long = ood_long(frame)
        specs = [Claim(f"LoRSP beats LP, EVP and LoR-VP on {dataset}", claim_pairs("LoRSP", ["LP", "EVP", "LoR-VP"]),
                       dict(dataset=dataset))
                 for dataset in long["dataset"].unique() if not dataset.endswith("(source test)")]
        return claims(long, specs, value=value, margin=margin, level=level, scale=scale)

    def after_training(self, runs, results_dir, frame):
        """Each trained run tested on the shifted sets (cached in its record)."""
        from ..evaluation import evaluate_shifts
        return evaluate_shifts(runs, results_dir)
