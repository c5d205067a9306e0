"""The paper's claims, checked on the numbers: :class:`Claim`, :func:`claims`, :func:`chapter_claims` and
the chapter's closing paragraph."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import pandas as pd

from ..stats import holm_verdict
from .records import ACCURACY, describe_failed, failed_runs, usable_rows

#: the equivalence margin (percentage points) and the confidence level of every verdict (lorsp.stats)
MARGIN_PP = 0.5
LEVEL = 0.95
#: what pairs two runs of a claim: the same dataset, backbone and seed (so the same data subset)
PAIR_ON = ("dataset", "backbone", "seed")


@dataclass
class Claim:
    """A claim of the paper: ``better`` beats ``worse`` (for every pair when several are given).

    ``pairs``: ``[(better_label, worse_label), ...]``; ``where``: column filters on the run rows (e.g.
    ``{"dataset": "cifar10"}``); ``text``: the claim in words, as the paper makes it.
    """

    text: str
    pairs: list[tuple[str, str]]
    where: dict[str, Any] = field(default_factory=dict)


def claim_pairs(better: str, worse: Iterable[str]) -> list[tuple[str, str]]:
    """``[(better, w) for w in worse]``."""
    return [(better, w) for w in worse]


#: the wording of a claim's combined verdict (:func:`lorsp.stats.holm_verdict`) in its sentence
_WORDING = {
    "holds": "holds",
    "reversed": "is reversed: the other method is better",
    "equivalent": "is not supported: the methods are equivalent within the margin",
    "inconclusive": "is inconclusive",
    "not run": "was not tested (no runs)",
}


def paired_values(rows: pd.DataFrame, better: str, worse: str, label: str = "label", value: str = ACCURACY,
                  pair_on: Sequence[str] = PAIR_ON) -> tuple[list[float], list[float], list]:
    """Per-seed values of ``better`` and ``worse`` paired on ``pair_on`` (the columns of it that ``rows`` has:
    same dataset, backbone and seed), failed or diverged runs left out: ``(a, b, keys)`` in the same order.
    A pair key that only one method has is dropped; duplicates of a key are averaged."""
    rows = usable_rows(rows, value)
    keys = [c for c in pair_on if c in rows.columns]
    if "seed" not in keys:
        raise KeyError(f"claims pair runs by seed, but the rows have no 'seed' column (columns: {list(rows.columns)})")

    def side(name):
        sub = rows[rows[label] == name]
        return sub.assign(**{value: sub[value].astype(float)}).groupby(keys, sort=True)[value].mean()

    joined = pd.concat([side(better).rename("a"), side(worse).rename("b")], axis=1, join="inner")
    return joined["a"].tolist(), joined["b"].tolist(), list(joined.index)


def claims(rows: pd.DataFrame, specs: Sequence[Claim], label: str = "label", value: str = ACCURACY,
           margin: float = MARGIN_PP, level: float = LEVEL, scale: str | None = None,
           pair_on: Sequence[str] = PAIR_ON) -> tuple[list[str], pd.DataFrame]:
    """Which claims hold at this scale, from the per-run ``rows`` (one row per run and seed): ``(sentences,
    table)``.

    For each pair (better, worse) of a claim the runs are paired by seed (:func:`paired_values`; failed or
    diverged runs left out) and tested by :func:`lorsp.stats.paired_verdict` (paired t-interval, ``level``,
    equivalence ``margin`` in pp); a claim's pairs are combined by :func:`lorsp.stats.holm_verdict` (Holm's
    step-down rule over its pairs). A pair whose methods have no common seed is **not run**; the claim's
    verdict is over the pairs that were run. ``table``: one row per pair with the means over the paired
    seeds, ``difference``, ``ci_low``/``ci_high``, ``detectable``, ``p_value``, ``p_holm``, the pair's
    ``verdict`` after Holm, the claim's ``claim_verdict`` and the ``measure`` compared (``value``).
    """
    table_rows, sentences = [], []
    for spec in specs:
        sub = rows
        for column, wanted in spec.where.items():
            sub = sub[sub[column] == wanted]
        paired = {}
        for better, worse in spec.pairs:
            a, b, _ = paired_values(sub, better, worse, label=label, value=value, pair_on=pair_on)
            if a:
                paired[(better, worse)] = (a, b)
        family = holm_verdict(paired, margin=margin, level=level) if paired else None
        by_pair = {pair.name: pair for pair in family.pairs} if family else {}
        overall = family.verdict if family else "not run"
        for better, worse in spec.pairs:
            pair = by_pair.get((better, worse))
            test = pair.test if pair else None
            a, b = paired.get((better, worse), ([], []))
            table_rows.append(dict(
                claim=spec.text, better=better, worse=worse, n=test.n if test else 0,
                better_mean=sum(a) / len(a) if a else float("nan"), worse_mean=sum(b) / len(b) if b else float("nan"),
                difference=test.difference if test else float("nan"),
                ci_low=test.ci[0] if test else float("nan"), ci_high=test.ci[1] if test else float("nan"),
                detectable=test.detectable if test else float("nan"),
                p_value=test.p_value if test else float("nan"), p_holm=pair.p_adjusted if pair else float("nan"),
                verdict=pair.verdict if pair else "not run", claim_verdict=overall,
                note=(test.reason if test else "no common seeds"), measure=value,
                **{f"where_{k}": v for k, v in spec.where.items()}))
        sentences.append(_sentence(spec, overall, table_rows[-len(spec.pairs):], by_pair, scale, margin, level))
    return sentences, pd.DataFrame(table_rows)


def seed_span(table: pd.DataFrame, empty: str = "no") -> str:
    """How many seeds the pairs of ``table`` (rows of :func:`claims`) were tested on: ``"3"``, ``"3–5"``, or
    ``empty`` when no pair was run."""
    seeds = sorted({int(n) for n in table["n"] if n})
    return empty if not seeds else str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"


def rule_description(table: pd.DataFrame, margin: float = MARGIN_PP, level: float = LEVEL) -> str:
    """``"paired t-interval over 3 seeds, 95%, equivalence margin ±0.5 pp, Holm over 4 pairs"`` for the
    pairs of ``table`` (one claim's rows of :func:`claims`)."""
    span = seed_span(table)
    run = int((table["verdict"] != "not run").sum())
    return (f"paired t-interval over {span} seeds, {100 * level:g}%, equivalence margin ±{margin:g} pp, "
            f"Holm over {run} pair{'s' if run != 1 else ''}")


def _sentence(spec: Claim, overall: str, rows: list[dict], by_pair: dict, scale: str | None, margin: float,
              level: float) -> str:
    where = f" at {scale} scale" if scale else ""
    details = []
    for r in rows:
        pair = by_pair.get((r["better"], r["worse"]))
        if pair is None:
            details.append(f"{r['better']} vs {r['worse']}: not run")
            continue
        after = "" if pair.verdict == pair.test.verdict else f"; after Holm: {pair.verdict}"
        details.append(f"{r['better']} {r['better_mean']:.1f} vs {r['worse']} {r['worse_mean']:.1f}: "
                       f"{pair.test.describe()}{after}")
    if overall == "not run":
        return f"“{spec.text}” {_WORDING[overall]}{where}."
    wording = _WORDING[overall]
    if overall == "equivalent":
        wording = f"is not supported: the methods are equivalent within ±{margin:g} pp"
    missing = sum(1 for r in rows if r["verdict"] == "not run")
    if missing:
        wording += f" (for the {len(rows) - missing} of {len(rows)} pairs that were run)"
    test = rule_description(pd.DataFrame(rows), margin, level)
    return f"“{spec.text}” {wording}{where} ({test}) — " + "; ".join(details) + "."


def chapter_claims(chapter: str, frame: pd.DataFrame, scale: str | None = None, margin: float = MARGIN_PP,
                   level: float = LEVEL, value: str = ACCURACY) -> tuple[list[str], pd.DataFrame]:
    """The paper's claims for ``chapter``, checked on ``frame`` (this scale's run rows): see :func:`claims`;
    which claims a chapter makes is its :meth:`lorsp.experiments.chapters.Chapter.claims`.

    Failed or diverged runs (:func:`failed_runs`) are left out of the verdicts, and the last sentence names
    them."""
    if frame.empty:
        return ["No runs: nothing can be said at this scale."], pd.DataFrame()
    left_out = describe_failed(failed_runs(frame, value))
    from .chapters import chapter as chapter_of
    sentences, table = chapter_of(chapter).claims(usable_rows(frame, value), scale, margin, level, value)
    return sentences + ([left_out] if left_out else []), table


def restrict_to_grid(specs: Sequence[Claim], present: set, label: str = "point") -> list[Claim]:
    """``specs`` restricted to the pairs whose both sides are in ``present`` (the points or methods of this
    scale's grid: a smaller grid, e.g. desk's two keep ratios, runs fewer points than the paper): a pair left
    out is not "not run" but outside the grid, and the claim's text names the pairs it was tested on. A claim
    with no such pair is kept whole (its pairs show as not run)."""
    out = []
    for spec in specs:
        pairs = [(a, b) for a, b in spec.pairs if a in present and b in present]
        if not pairs or len(pairs) == len(spec.pairs):
            out.append(spec)
            continue
        tested = ", ".join(f"{a} vs {b}" for a, b in pairs)
        out.append(Claim(f"{spec.text} — tested on this grid's {label}s only ({tested})", pairs, spec.where))
    return out


def closing_paragraph(sentences: Sequence[str], table: pd.DataFrame, scale: str, margin: float = MARGIN_PP,
                      level: float = LEVEL) -> str:
    """Markdown: a count of verdicts, the test, and one bullet per claim, all generated from the numbers."""
    if table.empty:
        return f"At `{scale}` scale there are no numbers yet, so no claim of the paper is tested here."
    per_claim = table.groupby("claim", sort=False)["claim_verdict"].first()
    counts = per_claim.value_counts()
    summary = ", ".join(f"{n} {verdict}" for verdict, n in counts.items())
    bullets = "\n".join(f"- {s}" for s in sentences)
    return (f"**What the numbers say at `{scale}` scale** ({len(per_claim)} claims checked: {summary}). "
            f"Each pair of methods is compared seed by seed (same data subset): a claim *holds* when the "
            f"{100 * level:g}% t-interval of the paired difference lies above zero, is *reversed* below zero, "
            f"the methods are *equivalent* when it lies within ±{margin:g} pp, and otherwise the result is "
            f"*inconclusive* — the seeds cannot tell the methods apart, and the 'detectable' difference says how "
            f"large a true difference they would have caught (80% power). A claim over several pairs uses Holm's "
            f"rule over its pairs (lorsp.stats). Failed or diverged runs are left out and named.\n\n{bullets}")
