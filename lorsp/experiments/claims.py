"""The paper's claims, checked on the numbers: :class:`Claim`, :func:`claims`, :func:`chapter_claims` and
the chapter's closing paragraph."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import pandas as pd

from .grid import SPARSIFIER_ROWS, V_THRESHOLD_SWEEP
from .records import ACCURACY
from .tables import hyper_long, ood_long, summarise


@dataclass
class Claim:
    """A claim of the paper: ``better`` beats ``worse`` (for every pair when several are given).

    ``pairs``: ``[(better_label, worse_label), ...]``; ``where``: column filters on the summary (e.g.
    ``{"dataset": "cifar10"}``); ``text``: the claim in words, as the paper makes it.
    """

    text: str
    pairs: list[tuple[str, str]]
    where: dict[str, Any] = field(default_factory=dict)


def claim_pairs(better: str, worse: Iterable[str]) -> list[tuple[str, str]]:
    """``[(better, w) for w in worse]``."""
    return [(better, w) for w in worse]


def _verdict(a_mean, a_std, a_n, b_mean, b_std, b_n, tolerance):
    diff = a_mean - b_mean
    stds = [s for s, n in ((a_std, a_n), (b_std, b_n)) if n is not None and n >= 2 and not pd.isna(s)]
    if len(stds) == 2:
        spread = max(stds)
        basis = "the larger std over seeds"
    elif tolerance is not None:
        spread = float(tolerance)
        basis = "the stated tolerance"
    else:
        return "undecided", diff, float("nan"), "one seed, no tolerance stated"
    if abs(diff) <= spread:
        return "tie", diff, spread, basis
    return ("holds" if diff > 0 else "does not hold"), diff, spread, basis


def claims(summary: pd.DataFrame, specs: Sequence[Claim], label: str = "label",
           tolerance: float | None = None, scale: str | None = None) -> tuple[list[str], pd.DataFrame]:
    """Which claims hold at this scale, from the numbers: ``(sentences, table)``.

    ``summary``: :func:`summarise` output (``mean``, ``std``, ``n`` per ``label``). For each pair
    (better, worse) the verdict is: **holds** if mean(better) − mean(worse) exceeds the spread, **does not
    hold** if it is below −spread, **tie** if within ±spread, where the spread is the larger of the two
    standard deviations over seeds; with fewer than two seeds on either side the spread is ``tolerance``
    (percentage points) when given, else the verdict is **undecided**. A claim over several pairs holds
    when every pair holds, does not hold when any pair is reversed, and is otherwise a tie (or undecided).
    A method missing from the numbers makes the pair **not run**.
    """
    table_rows, sentences = [], []
    for spec in specs:
        sub = summary
        for column, wanted in spec.where.items():
            sub = sub[sub[column] == wanted]
        verdicts = []
        for better, worse in spec.pairs:
            a = sub[sub[label] == better]
            b = sub[sub[label] == worse]
            if a.empty or b.empty:
                verdict, diff, spread, basis = "not run", float("nan"), float("nan"), "missing numbers"
                a_mean = b_mean = float("nan")
            else:
                a_row, b_row = a.iloc[0], b.iloc[0]
                a_mean, b_mean = float(a_row["mean"]), float(b_row["mean"])
                verdict, diff, spread, basis = _verdict(a_mean, a_row["std"], a_row["n"], b_mean, b_row["std"],
                                                        b_row["n"], tolerance)
            verdicts.append(verdict)
            table_rows.append(dict(claim=spec.text, better=better, worse=worse, better_mean=a_mean,
                                   worse_mean=b_mean, difference=diff, spread=spread, spread_basis=basis,
                                   verdict=verdict, **{f"where_{k}": v for k, v in spec.where.items()}))
        overall = _combine(verdicts)
        sentences.append(_sentence(spec, overall, table_rows[-len(spec.pairs):], scale))
    return sentences, pd.DataFrame(table_rows)


def _combine(verdicts: Iterable[str]) -> str:
    """One verdict for a claim over several pairs (see :func:`claims`)."""
    verdicts = list(verdicts)
    if not verdicts or all(v == "not run" for v in verdicts):
        return "not run"
    present = [v for v in verdicts if v != "not run"]
    if "does not hold" in present:
        return "does not hold"
    if all(v == "holds" for v in present):
        return "holds" if len(present) == len(verdicts) else "holds where run"
    if "undecided" in present:
        return "undecided"
    return "tie"


def _sentence(spec: Claim, overall: str, rows: list[dict], scale: str | None) -> str:
    where = f" at {scale} scale" if scale else ""
    def spread(r):
        return "" if math.isnan(r["spread"]) else f", spread {r['spread']:.1f} pp"

    details = "; ".join(
        f"{r['better']} {r['better_mean']:.1f} vs {r['worse']} {r['worse_mean']:.1f} "
        f"(Δ = {r['difference']:+.1f} pp{spread(r)}: {r['verdict']})"
        if not math.isnan(r["difference"]) else f"{r['better']} vs {r['worse']}: {r['verdict']}"
        for r in rows)
    wording = {
        "holds": "holds",
        "holds where run": "holds for the pairs that were run",
        "does not hold": "does not hold",
        "tie": "is not supported: the differences are within the spread (a tie)",
        "undecided": "cannot be decided with one seed and no stated tolerance",
        "not run": "was not tested (no runs)",
    }[overall]
    return f"“{spec.text}” {wording}{where} — {details}."


def chapter_claims(chapter: str, frame: pd.DataFrame, scale: str | None = None,
                   tolerance: float | None = None, value: str = ACCURACY) -> tuple[list[str], pd.DataFrame]:
    """The paper's claims for ``chapter``, checked on ``frame`` (this scale's run rows): see :func:`claims`."""
    if frame.empty:
        return ["No runs: nothing can be said at this scale."], pd.DataFrame()
    specs: list[Claim] = []
    if chapter == "sparsifiers":
        for (dataset, backbone), _ in frame.groupby(["dataset", "backbone"], sort=False):
            where = dict(dataset=dataset, backbone=backbone)
            specs += [
                Claim(f"LoRSP beats Top-k at every kept ratio ({backbone}, {dataset})",
                      claim_pairs("LoRSP", [r for r in SPARSIFIER_ROWS if r.startswith("Top-k")]), where),
                Claim(f"LoRSP beats Dropout at every kept ratio ({backbone}, {dataset})",
                      claim_pairs("LoRSP", [r for r in SPARSIFIER_ROWS if r.startswith("Dropout")]), where),
                Claim(f"LoRSP beats LPF, its dense ablation ({backbone}, {dataset})", [("LoRSP", "LPF")], where),
            ]
        summary = summarise(frame, by=["dataset", "backbone", "label"], value=value)
    elif chapter in ("backbones", "downstream"):
        rivals = ["LP", "ILM-VP", "AutoVP", "EVP", "LoR-VP"] if chapter == "backbones" else \
            ["LP", "VPT", "AutoVP", "LoR-VP"]
        for (dataset, backbone), group in frame.groupby(["dataset", "backbone"], sort=False):
            where = dict(dataset=dataset, backbone=backbone)
            present = set(group["label"])
            for rival in rivals:
                if rival in present:
                    specs.append(Claim(f"LoRSP beats {rival} ({backbone}, {dataset})", [("LoRSP", rival)], where))
            if chapter == "backbones":
                specs += [Claim(f"LPF beats LP: prompt factors help ({backbone}, {dataset})", [("LPF", "LP")], where),
                          Claim(f"LoRSP beats LPF: the SNN's sparsity helps ({backbone}, {dataset})",
                                [("LoRSP", "LPF")], where)]
        summary = summarise(frame, by=["dataset", "backbone", "label"], value=value)
    elif chapter == "ood":
        long = ood_long(frame)
        for dataset in long["dataset"].unique():
            if dataset.endswith("(source test)"):
                continue
            specs.append(Claim(f"LoRSP beats LP, EVP and LoR-VP on {dataset}",
                               claim_pairs("LoRSP", ["LP", "EVP", "LoR-VP"]), dict(dataset=dataset)))
        summary = summarise(long, by=["dataset", "label"], value=value)
    elif chapter == "hyperparameters":
        long = hyper_long(frame)
        acc = summarise(long, by=["sweep", "point"], value=value).rename(columns={"point": "label"})
        specs = [
            Claim("G = 4 beats G = 1, 2 and 8 (r = 4)", claim_pairs("G=4", ["G=1", "G=2", "G=8"]),
                  dict(sweep="groups")),
            Claim("a single factor (G = 1) is worse than several", [("G=2", "G=1"), ("G=4", "G=1"), ("G=8", "G=1")],
                  dict(sweep="groups")),
            Claim("r = 4 beats r = 1, 2 and 8 (G = 4)", claim_pairs("r=4", ["r=1", "r=2", "r=8"]),
                  dict(sweep="rank")),
            Claim("tau = 4 beats tau = 1.5", [("tau=4", "tau=1.5")], dict(sweep="tau")),
            Claim("V_th = 0 beats the other thresholds", claim_pairs("V_th=0", [f"V_th={v:g}" for v in
                                                                                 V_THRESHOLD_SWEEP if v != 0]),
                  dict(sweep="v_threshold")),
        ]
        sentences, table = claims(acc, specs, tolerance=tolerance, scale=scale)
        sparsity = summarise(long.assign(sparsity_pct=100.0 * long["sparsity"].astype(float)),
                             by=["sweep", "point"], value="sparsity_pct").rename(columns={"point": "label"})
        higher = [f"V_th={v:g}" for v in V_THRESHOLD_SWEEP if v > 0]
        more, more_table = claims(sparsity, [Claim("a higher threshold gives a sparser prompt (share of zeros, "
                                                   "in percentage points)",
                                                   claim_pairs(higher[-1], ["V_th=0"]), dict(sweep="v_threshold"))],
                                  tolerance=tolerance, scale=scale)
        return sentences + more, pd.concat([table, more_table], ignore_index=True)
    else:
        raise KeyError(f"chapter {chapter!r} has no claims; expected sparsifiers, backbones, downstream, ood or "
                       f"hyperparameters")
    return claims(summary, specs, tolerance=tolerance, scale=scale)


def closing_paragraph(sentences: Sequence[str], table: pd.DataFrame, scale: str) -> str:
    """Markdown: a count of verdicts and one bullet per claim, all generated from the numbers."""
    if table.empty:
        return f"At `{scale}` scale there are no numbers yet, so no claim of the paper is tested here."
    per_claim = table.groupby("claim", sort=False)["verdict"].apply(_combine)
    counts = per_claim.value_counts()
    summary = ", ".join(f"{n} {verdict}" for verdict, n in counts.items())
    bullets = "\n".join(f"- {s}" for s in sentences)
    return (f"**What the numbers say at `{scale}` scale** ({len(per_claim)} claims checked: {summary}). "
            f"A difference within the spread over seeds is a tie; one seed without a stated tolerance "
            f"decides nothing.\n\n{bullets}")
