"""What the reproduction finds: every experiment chapter's claims, at its headline scale, on one page.

Each experiment chapter checks the paper's claims on its own headline numbers (:func:`headline_evidence`:
the largest scale whose committed records of that chapter are complete). :func:`findings` collects those
verdicts, chapter by chapter, without training anything: a chapter with no complete committed scale is
listed as such, never filled in with the smoke runs that CI trains (they cannot confirm or refute the paper).
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .claims import LEVEL, MARGIN_PP, chapter_claims, seed_span
from .evidence import headline_evidence
from .grid import chapter_facts
from .grid import results_root as resolve_results_root
from .records import ACCURACY

#: the chapters that check claims of the paper, in the book's order (the prompt gallery measures, it has
#: no pairwise claims)
CLAIM_CHAPTERS = ("sparsifiers", "backbones", "downstream", "ood", "hyperparameters")

#: the facts of a chapter's scale banner (:func:`chapter_facts`) that the summary repeats per chapter
PROTOCOL_FACTS = ("data", "resolution", "epochs", "seeds")

#: the order in which verdicts are listed and counted
VERDICTS = ("holds", "reversed", "equivalent", "inconclusive", "not run")
#: one colour per verdict in the findings page's figure: holds green, reversed red, equivalent blue,
#: inconclusive grey
VERDICT_COLOURS = {"holds": "#2a9d4b", "reversed": "#c8363a", "equivalent": "#3b6fb6", "inconclusive": "#8a8a8a",
                   "not run": "#cccccc"}


@dataclass
class Findings:
    """``chapters``: one row per chapter (its headline scale, committed records per scale, claims checked,
    and the :data:`PROTOCOL_FACTS` of its headline scale);
    ``pairs``: one row per pair of methods of every claim (:func:`lorsp.experiments.claims` columns, plus
    ``chapter`` and ``scale``)."""

    chapters: pd.DataFrame
    pairs: pd.DataFrame

    def claims(self) -> pd.DataFrame:
        """One row per claim: chapter, scale, claim, verdict, seeds, and its pairs' paired differences in
        words (``"vs LP: +1.2 pp [-1.5, +3.9]"``)."""
        columns = ["chapter", "scale", "claim", "verdict", "seeds", "paired differences (pp, 95% CI)"]
        if self.pairs.empty:
            return pd.DataFrame(columns=columns)
        rows = []
        for (chapter, claim), part in self.pairs.groupby(["chapter", "claim"], sort=False):
            rows.append({"chapter": chapter, "scale": part["scale"].iloc[0], "claim": claim,
                         "verdict": part["claim_verdict"].iloc[0], "seeds": seed_span(part, empty="—"),
                         "paired differences (pp, 95% CI)": "; ".join(_pair_text(row) for row in part.itertuples())})
        return pd.DataFrame(rows, columns=columns)

    def forest(self) -> pd.DataFrame:
        """The accuracy pairs that were run, for a forest plot: ``pair`` (chapter, methods and where they
        were compared), ``difference``, ``ci_low``, ``ci_high`` (pp) and the pair's ``verdict`` after Holm;
        in the book's order. Pairs that measure something else (the sparsity of a threshold claim) are left
        out: their unit is not accuracy."""
        columns = ["chapter", "pair", "difference", "ci_low", "ci_high", "verdict"]
        if self.pairs.empty:
            return pd.DataFrame(columns=columns)
        run = self.pairs[(self.pairs["measure"] == ACCURACY) & (self.pairs["verdict"] != "not run")]
        where = [c for c in ("where_dataset", "where_sweep") if c in run.columns]

        def name(row) -> str:
            place = " · ".join(str(row[c]) for c in where if isinstance(row[c], str))
            return f"{row['chapter']}: {row['better']} vs {row['worse']}" + (f" ({place})" if place else "")

        return run.assign(pair=run.apply(name, axis=1))[columns].reset_index(drop=True)

    def counts(self) -> pd.DataFrame:
        """Claims per chapter and verdict (rows: chapters; columns: :data:`VERDICTS` that occur, and all)."""
        claims = self.claims()
        if claims.empty:
            return pd.DataFrame()
        table = pd.crosstab(claims["chapter"], claims["verdict"])
        table = table.reindex(index=[c for c in CLAIM_CHAPTERS if c in table.index],
                              columns=[v for v in VERDICTS if v in table.columns])
        table["all claims"] = table.sum(axis=1)
        return table

    def sentence(self) -> str:
        """Markdown: how many claims were checked at which scales, and how many of each verdict."""
        claims = self.claims()
        waiting = self.chapters.loc[self.chapters["headline scale"] == "none", "chapter"].tolist()
        wait = (f" No complete committed records yet for: {', '.join(waiting)} (their pages show only the check "
                f"that the code runs)." if waiting else "")
        if claims.empty:
            return ("No chapter has complete committed records at a larger scale yet, so no claim is checked "
                    "here." + wait)
        counts = claims["verdict"].value_counts()
        summary = ", ".join(f"**{counts[v]} {v}**" for v in VERDICTS if v in counts)
        scales = ", ".join(f"`{s}`" for s in dict.fromkeys(claims["scale"]))
        return (f"{len(claims)} claims of the paper checked on committed records at {scales} scale, across "
                f"{claims['chapter'].nunique()} chapters: {summary}. Every verdict is a paired t-interval over "
                f"seeds ({100 * LEVEL:g}%, equivalence margin ±{MARGIN_PP:g} pp), Holm's rule over a claim's "
                f"pairs (lorsp.stats).{wait}")


def _pair_text(row) -> str:
    if row.verdict == "not run":
        return f"vs {row.worse}: not run"
    return (f"{row.better} vs {row.worse}: {row.difference:+.1f} [{row.ci_low:+.1f}, {row.ci_high:+.1f}] "
            f"({row.verdict})")


def findings(results_root=None, chapters=CLAIM_CHAPTERS) -> Findings:
    """The verdicts of every claim of ``chapters`` at each chapter's headline scale, from the committed
    records under ``results_root`` (default: :func:`lorsp.experiments.results_root`). Trains nothing: a
    chapter without a complete committed scale gets ``headline scale`` ``"none"`` and no claims."""
    root = resolve_results_root(results_root)
    chapter_rows, pair_frames = [], []
    for chapter in chapters:
        evidence = headline_evidence(chapter, "smoke", pd.DataFrame(), root / "smoke", results_root=root)
        status = "; ".join(f"{scale}: {found} of {total}" for scale, (found, total) in evidence.committed.items())
        row = {"chapter": chapter, "headline scale": evidence.scale if evidence.from_committed else "none",
               "committed records": status, "claims": 0, **dict.fromkeys(PROTOCOL_FACTS, "—")}
        if evidence.from_committed:
            facts = chapter_facts(chapter, evidence.setup, evidence.runs)
            row.update({name: facts.get(name, "—") for name in PROTOCOL_FACTS})
            _, table = chapter_claims(chapter, evidence.frame, scale=evidence.scale)
            if not table.empty:
                pair_frames.append(table.assign(chapter=chapter, scale=evidence.scale))
                row["claims"] = int(table["claim"].nunique())
        chapter_rows.append(row)
    pairs = pd.concat(pair_frames, ignore_index=True) if pair_frames else pd.DataFrame()
    return Findings(pd.DataFrame(chapter_rows), pairs)
