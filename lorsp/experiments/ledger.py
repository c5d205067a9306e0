"""The ledger: one row per comparison of the paper, counted once, decided by one rule across the page.

Every experiment chapter checks its claims on its own headline records (:mod:`.findings`); several chapters
test the same pair of methods on the same runs (the downstream chapter's CIFAR-10 pairs are a 3-seed subset
of the backbones chapter's 5-seed pairs; "G = 4 beats G = 1" is in two claims). :func:`build_ledger` keeps
each comparison once, on its largest seed set, and gives each row:

- **the paper's difference** and where it comes from (:func:`lorsp.paper.paper_gap`: table, rows, and the
  average over the paper's backbones; NaN with the figure named when the paper only plots it). A pair of two
  methods is held to the table of the chapter that tests it on the most seeds (:func:`lorsp.paper.headline_gap`:
  the backbones chapter to Tables II/V, the downstream chapter to Table III's column), so that the seed plan
  (:func:`lorsp.experiments.desk2_seed_plan`) and the ledger aim at the same number;
- **ours**: the mean paired difference over seeds with its 95% t-interval (``lorsp.stats``), n seeds;
- **the direction verdict**: the rule of :mod:`.claims` (holds / reversed / equivalent within ±0.5 pp /
  inconclusive), with **Holm's step-down rule over every row of the page** (one family) instead of within
  each claim: raw and adjusted p are both kept;
- **the magnitude verdict**: the paper's difference inside our interval, or ours smaller / larger;
- **the detectable difference**: the smallest true difference the paired t-test at our n and observed
  paired sd detects with 80% power (:func:`lorsp.stats.detectable_difference`, noncentral t), and a flag
  when it exceeds the paper's difference (the test cannot see an effect of the paper's size);
- **the protocol**: ``paper`` or ``proxy``, naming each substitution (backbone, dataset, resolution, length,
  synthetic shift, a comparator trained at a deviating prompt lr).

Claims that cannot fail are marked instead of "holds" (:mod:`.health`: unstable, degenerate, and a comparator
whose prompt did not move).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..paper import PaperGap, display_name, headline_gap, paper_gap
from ..stats import detectable_difference, holm_verdict
from .chapters import chapter as chapter_of
from .records import SPARSITY
from .claims import LEVEL, MARGIN_PP, chapter_claims
from .evidence import headline_evidence
from .health import COLLAPSED_BELOW_PP, degeneracy, instability, run_health, still_comparator
from .grid import DEVIATION_LABELS, is_deviation_of, method_of_label
from .grid import results_root as resolve_results_root
from .records import ACCURACY

#: the chapters the ledger reads, in the book's order (as :data:`lorsp.experiments.CLAIM_CHAPTERS`)
LEDGER_CHAPTERS = ("backbones", "downstream", "sparsifiers", "ood", "hyperparameters")
#: the final verdicts of a ledger row, in the order they are counted
LEDGER_VERDICTS = ("holds", "reversed", "equivalent", "inconclusive", "unstable", "degenerate")
#: the magnitude verdicts: where the paper's difference lies against our interval
MAGNITUDES = ("paper's inside ours", "ours smaller", "ours larger", "no printed value", "no interval")
INSIDE, BLIND = MAGNITUDES[0], "blind to the paper's size"
#: the OOD test set of the paper (Table IV column) each of our synthetic shifts stands in for; the
#: others stand in for the paper's shifted sets as a whole (its OOD average)
SHIFT_COUNTERPART = {"edge-map sketch": "imagenet-sketch", "shifted mean": "ood_avg"}
PAPER_SHIFTED_SETS = "ImageNet-V2/Sketch/A/R"
#: the figures behind the hyperparameter claims (values not printed): sweep → (source, backbones, dataset)
FIGURE_SOURCES = {
    "groups": ("Fig. 3a (G at r = 4): plotted, values not printed: direction only", ("vit_b16", "resnet50"),
               "tiny-imagenet"),
    "rank": ("Fig. 3a (r at G = 4): plotted, values not printed: direction only", ("vit_b16", "resnet50"),
             "tiny-imagenet"),
    "tau": ("Fig. 4 (tau): plotted, values not printed: direction only", ("vit_b16", "swin_b"), "tiny-imagenet"),
    "v_threshold": ("Fig. 4 (V_th): plotted, values not printed: direction only", ("vit_b16", "swin_b"),
                    "tiny-imagenet"),
}


# ----------------------------------------------------------------------------------------------------
# the comparisons: every chapter's pairs, with their runs, each kept once
# ----------------------------------------------------------------------------------------------------
def _side(rows: pd.DataFrame, column: str, name: str, value: str) -> pd.DataFrame:
    """The runs of one side, one per (dataset, backbone, seed): ``key`` and ``value`` (first of duplicates)."""
    part = rows[rows[column] == name]
    part = part.assign(value=pd.to_numeric(part[value], errors="coerce"))
    return part.groupby(["dataset", "backbone", "seed"], sort=True).agg(key=("key", "first"), value=("value", "mean"))


def _pair_runs(rows: pd.DataFrame, column: str, better: str, worse: str, value: str) -> pd.DataFrame:
    """Seed-paired runs of ``better`` and ``worse``: ``seed, key_a, key_b, a, b`` (NaN where a run diverged)."""
    joined = pd.merge(_side(rows, column, better, value), _side(rows, column, worse, value), how="inner",
                      left_index=True, right_index=True, suffixes=("_a", "_b"))
    return joined.reset_index().rename(columns={"value_a": "a", "value_b": "b"})


def _comparisons_of(chapter: str, frame: pd.DataFrame, scale: str) -> list[dict]:
    """One dict per pair of the chapter's claims (and per deviation pair beside a LoR-VP pair)."""
    _, table = chapter_claims(chapter, frame, scale=scale)
    if table.empty:
        return []
    long, column = chapter_of(chapter).comparison_rows(frame)
    out = []
    for pair in table.itertuples():
        sub = long
        for where in ("where_dataset", "where_backbone", "where_sweep"):
            wanted = getattr(pair, where, None)
            if isinstance(wanted, str):
                sub = sub[sub[where.removeprefix("where_")] == wanted]
        sweep = getattr(pair, "where_sweep", None)
        test_set = pair.where_dataset if chapter_of(chapter).shifted_test_sets else "source test"
        worse = [pair.worse] + sorted(lbl for lbl in set(sub[column].dropna())
                                      if pair.worse in DEVIATION_LABELS and is_deviation_of(str(lbl), pair.worse))
        for comparator in worse:
            runs = _pair_runs(sub, column, pair.better, comparator, pair.measure)
            if runs.empty:
                continue
            trained_on = frame.loc[frame["key"] == runs["key_a"].iloc[0], "dataset"].iloc[0]   # OOD: the source
            out.append(dict(chapter=chapter, claim=pair.claim, better=pair.better, worse=comparator,
                            measure=pair.measure, sweep=sweep if isinstance(sweep, str) else None,
                            test_set=test_set, dataset=trained_on, backbone=runs["backbone"].iloc[0],
                            runs=runs))
    return out


def _identity(c: dict) -> tuple:
    return c["measure"], c["test_set"], c["better"], c["worse"], c["dataset"], c["backbone"], c["sweep"] or ""


def unique_comparisons(comparisons: list[dict]) -> list[dict]:
    """Each comparison once (same measure, test set, methods, dataset, backbone and sweep): the one on the
    most seeds, with ``chapters`` and ``claims`` listing every chapter and claim that tests it."""
    kept: dict[tuple, dict] = {}
    for c in comparisons:
        key = _identity(c)
        seen = kept.get(key)
        chapters = (seen["chapters"] if seen else []) + [c["chapter"]]
        claims = (seen["claims"] if seen else []) + [c["claim"]]
        if seen is None or len(c["runs"].dropna(subset=["a", "b"])) > len(seen["runs"].dropna(subset=["a", "b"])):
            kept[key] = dict(c)
        kept[key]["chapters"] = list(dict.fromkeys(chapters))
        kept[key]["claims"] = list(dict.fromkeys(claims))
    return list(kept.values())


# ----------------------------------------------------------------------------------------------------
# the paper's number and the protocol of each comparison
# ----------------------------------------------------------------------------------------------------
def paper_reference(chapter: str, better: str, worse: str, dataset: str, test_set: str, sweep: str | None,
                    measure: str = ACCURACY) -> PaperGap:
    """The paper's difference for a comparison (see the module docstring for which table answers which)."""
    better, worse = method_of_label(better), method_of_label(worse)
    if sweep is not None:
        source, backbones, data = FIGURE_SOURCES[sweep]
        if measure == SPARSITY:
            source = "Sec. IV-D / Fig. 4: 'increasing V_th generally promotes sparser activations': no value printed"
        return PaperGap(float("nan"), source, backbones, data)
    if chapter_of(chapter).shifted_test_sets:
        column = SHIFT_COUNTERPART.get(test_set, "ood_avg")
        gap = paper_gap("table4", better, worse, column)
        if test_set not in SHIFT_COUNTERPART:
            gap = PaperGap(gap.difference, f"{gap.source} (no single counterpart of {test_set})", gap.backbones,
                           gap.dataset, gap.test_sets)
        return gap
    if worse.startswith(("Top-k", "Dropout")):
        return paper_gap("table6", better, worse, "tiny-imagenet")
    return headline_gap(better, worse, dataset, chapter_of(chapter).headline_table)


def substitutions(gap: PaperGap, runs: pd.DataFrame, comparison: dict) -> list[str]:
    """What differs from the paper's protocol for this comparison, one phrase each (empty: the paper's)."""
    facts = runs.iloc[0]
    out = []
    if set(gap.backbones) != {comparison["backbone"]}:
        theirs = ("the paper's five" if len(gap.backbones) == 5 else
                  " and ".join(display_name(b) for b in gap.backbones))
        out.append(f"backbone {display_name(comparison['backbone'])} for {theirs}")
    if gap.dataset != comparison["dataset"] and not (gap.dataset == "imagenet-1k" and comparison["dataset"] == "imagenet"):
        out.append(f"dataset {display_name(comparison['dataset'])} for {display_name(gap.dataset)}")
    if facts["image_size"] != gap.image_size:
        out.append(f"resolution {facts['image_size']:.0f} px for {gap.image_size}")
    if facts["epochs"] != gap.epochs:
        out.append(f"length {facts['epochs']:.0f} epochs for {gap.epochs}")
    if comparison["test_set"] == "shifted mean":
        out.append(f"the mean of our synthetic shifts for the mean over {PAPER_SHIFTED_SETS}")
    elif comparison["test_set"] != "source test" and not comparison["test_set"].startswith("imagenet"):
        out.append(f"synthetic shift ({comparison['test_set']}) for {PAPER_SHIFTED_SETS}")
    if " · prompt lr" in comparison["worse"]:
        out.append(f"comparator {comparison['worse'].removesuffix(' (deviation)')} (a labelled deviation)")
    return out


# ----------------------------------------------------------------------------------------------------
# the ledger
# ----------------------------------------------------------------------------------------------------
def magnitude(paper: float, low: float, high: float) -> str:
    """Where the paper's difference lies against our interval ``[low, high]`` (one of :data:`MAGNITUDES`)."""
    if not math.isfinite(paper):
        return "no printed value"
    if not (math.isfinite(low) and math.isfinite(high)) or low == high:
        return "no interval"
    if low <= paper <= high:
        return "paper's inside ours"
    return "ours smaller" if high < paper else "ours larger"


def _name(c: dict) -> str:
    worse = c["worse"].replace(" (deviation)", "").replace(" · prompt lr", " at prompt lr")
    where = (c["test_set"] if chapter_of(c["chapter"]).shifted_test_sets else
             "sparsity" if c["measure"] == SPARSITY else display_name(c["dataset"]))
    return f"{c['better']} vs {worse}" + (f" · {where}" if where else "") + f" · {display_name(c['backbone'])}"


def _row(c: dict, health: pd.DataFrame, level: float) -> dict:
    runs = c["runs"].dropna(subset=["a", "b"])
    gap = paper_reference(c["chapter"], c["better"], c["worse"], c["dataset"], c["test_set"], c["sweep"],
                          c["measure"])
    changed = substitutions(gap, health.set_index("key").loc[runs["key_a"]].reset_index(), c)
    rests, unstable_note = instability(c["runs"], health)
    diffs = (runs["a"] - runs["b"]).to_numpy(dtype=float)
    sd = float(diffs.std(ddof=1)) if len(diffs) > 1 else float("nan")
    detectable = detectable_difference(len(diffs), sd, level=level)
    return dict(comparison=_name(c), chapter=c["chapters"][0], also_in=", ".join(c["chapters"][1:]),
                claims=" | ".join(c["claims"]), better=c["better"], worse=c["worse"], measure=c["measure"],
                paper_difference=gap.difference, paper_source=gap.source, n=len(diffs), sd=sd,
                detectable=detectable, blind=bool(gap.printed and math.isfinite(detectable)
                                                  and detectable > abs(gap.difference)),
                protocol="paper" if not changed else "proxy", substitutions="; ".join(changed),
                unstable=rests, unstable_note=unstable_note, degenerate_note=degeneracy(c, health),
                still_note=still_comparator(c, health), a=runs["a"].tolist(), b=runs["b"].tolist())


def decide(rows: pd.DataFrame, margin: float = MARGIN_PP, level: float = LEVEL) -> pd.DataFrame:
    """``rows`` (one per comparison, with per-seed ``a`` and ``b``) with the page's verdicts: each row's
    paired t-interval, Holm's rule over **all** rows (``p_value``, ``p_holm``, ``direction``), the
    ``magnitude`` verdict and the final ``verdict`` (degenerate, then unstable, then the direction)."""
    family = holm_verdict({i: (r.a, r.b) for i, r in rows.iterrows()}, margin=margin, level=level)
    out = []
    for (i, row), pair in zip(rows.iterrows(), family.pairs):
        test = pair.test
        verdict = ("degenerate" if row["degenerate_note"] else "unstable" if row["unstable"] else pair.verdict)
        out.append(dict(difference=test.difference, ci_low=test.ci[0], ci_high=test.ci[1], p_value=test.p_value,
                        p_holm=pair.p_adjusted, direction=pair.verdict, verdict=verdict,
                        magnitude=magnitude(row["paper_difference"], *test.ci)))
    return rows.assign(**pd.DataFrame(out, index=rows.index))


def build_ledger(results_root=None, chapters=LEDGER_CHAPTERS, margin: float = MARGIN_PP,
                 level: float = LEVEL) -> "Ledger":
    """The ledger of every chapter's comparisons at its headline scale, from the committed records under
    ``results_root`` (default :func:`lorsp.experiments.results_root`); trains nothing. Chapters without a
    complete committed scale contribute no rows (``Ledger.waiting`` names them)."""
    root = resolve_results_root(results_root)
    comparisons, health, waiting, scales = [], {}, [], []
    for chapter in chapters:
        evidence = headline_evidence(chapter, "smoke", pd.DataFrame(), root / "smoke", results_root=root)
        if not evidence.from_committed:
            waiting.append(chapter)
            continue
        scales.append(evidence.scale)
        if evidence.scale not in health:
            health[evidence.scale] = run_health(evidence.results_dir)
        comparisons += [dict(c, scale=evidence.scale) for c in _comparisons_of(chapter, evidence.frame, evidence.scale)]
    rows = [dict(_row(c, health[c["scale"]], level), scale=c["scale"]) for c in unique_comparisons(comparisons)]
    frame = decide(pd.DataFrame(rows), margin, level) if rows else pd.DataFrame()
    all_health = pd.concat(health.values(), ignore_index=True) if health else pd.DataFrame()
    return Ledger(frame, list(dict.fromkeys(scales)), waiting, all_health, margin, level, len(comparisons))


#: the colour of each final verdict in the ledger's figure
LEDGER_COLOURS = {"holds": "#2a9d4b", "reversed": "#c8363a", "equivalent": "#3b6fb6", "inconclusive": "#8a8a8a",
                  "unstable": "#e08a1e", "degenerate": "#8e5bb5"}


class Ledger:
    """The rows of :func:`build_ledger` and what the page says about them."""

    def __init__(self, rows: pd.DataFrame, scales: list[str], waiting: list[str], health: pd.DataFrame,
                 margin: float = MARGIN_PP, level: float = LEVEL, chapter_pairs: int = 0):
        self.rows, self.scales, self.waiting, self.health = rows, scales, waiting, health
        self.margin, self.level, self.chapter_pairs = margin, level, chapter_pairs

    def counts(self) -> dict[str, int]:
        """Rows per final verdict (every verdict of :data:`LEDGER_VERDICTS`), and the other headline counts."""
        rows = self.rows
        if rows.empty:
            return {"rows": 0}
        verdicts = rows["verdict"].value_counts()
        return {"rows": len(rows), **{v: int(verdicts.get(v, 0)) for v in LEDGER_VERDICTS},
                "paper protocol": int((rows["protocol"] == "paper").sum()),
                "proxy": int((rows["protocol"] == "proxy").sum()),
                "paper value printed": int(np.isfinite(rows["paper_difference"]).sum()),
                BLIND: int(rows["blind"].sum()),
                **{m: int((rows["magnitude"] == m).sum()) for m in MAGNITUDES},
                "comparator did not move": int((rows["still_note"] != "").sum())}

    def rule(self) -> str:
        """The page's one decision rule, in words."""
        return (f"Each row compares two methods seed by seed on the same data subset: the mean paired difference "
                f"with its {100 * self.level:g}% t-interval. One family-wise rule covers the whole page: Holm's "
                f"step-down rule over all {len(self.rows)} rows (family-wise error {100 * (1 - self.level):g}%). "
                f"A row *holds* / is *reversed* when its Holm-adjusted p ≤ {1 - self.level:g} (sign of the "
                f"difference), is *equivalent* when its Holm-adjusted equivalence test puts it within "
                f"±{self.margin:g} pp, and is otherwise *inconclusive*. Before that, a row is *degenerate* when "
                f"it cannot fail by construction (a side whose LIF never fires), and *unstable* when its verdict "
                f"rests on a run that diverged, or that ended below LP's accuracy after a first-epoch loss above "
                f"chance (ln K) and above every LP run's first epoch, or after it collapsed (it ended more than "
                f"{COLLAPSED_BELOW_PP:g} pp below the median of the seeds of its own configuration: the same "
                f"method, settings and learning rates); the verdict stands when "
                f"the seeds without such runs give the same one. 'Detectable' is the smallest true difference "
                f"the paired t-test "
                f"sees with 80% power at that row's seeds and spread (noncentral t).")

    def sentences(self) -> str:
        """Markdown: what the reproduction finds, generated from the rows."""
        c = self.counts()
        if not c["rows"]:
            return "No chapter has complete committed records yet, so the ledger is empty."
        scales = ", ".join(f"`{s}`" for s in self.scales)
        verdicts = ", ".join(f"**{c[v]} {v}**" for v in LEDGER_VERDICTS)
        printed = c["paper value printed"]
        paper = ("none follows the paper's protocol" if not c["paper protocol"] else
                 f"{c['paper protocol']} follow the paper's protocol")
        lines = [
            f"The reproduction checks **{c['rows']} comparisons** of the paper, each counted once, on the "
            f"committed {scales} records ({self.chapter_pairs} pairs across the chapters, repeats merged onto "
            f"their largest seed set): {verdicts}.",
            f"Every row is a **proxy**: {paper}, {c['proxy']} are proxies (at least "
            + self._common_substitutions() + ").",
            f"The paper prints a number for {printed} of them (the hyperparameter rows come from plotted "
            f"figures): for {c[INSIDE]} the paper's difference lies inside our 95% interval, for "
            f"{c['ours smaller']} ours is smaller and for {c['ours larger']} ours is larger.",
            f"For **{c[BLIND]} of {printed}** the paired test at our seeds cannot see an "
            f"effect of the paper's size (its 80%-power detectable difference exceeds the paper's difference).",
        ]
        if c["comparator did not move"]:
            deviation = self.rows["substitutions"].str.contains("labelled deviation").any()
            lines.append(f"In {c['comparator did not move']} rows the comparator's prompt did not move (its mean "
                         f"|δ| is under one grey level): those rows compare the first method with LP in effect"
                         + ("; the labelled deviation that trains LoR-VP's prompt at a larger lr has its own row."
                            if deviation else "."))
        if self.waiting:
            lines.append(f"No complete committed records yet for: {', '.join(self.waiting)}.")
        return "\n\n".join(lines)

    def _common_substitutions(self) -> str:
        """The substitutions every row shares, as words (``"backbone and resolution"``)."""
        kinds = [{p.split(" ")[0] for p in s.split("; ") if p} for s in self.rows["substitutions"]]
        common = set.intersection(*kinds) if kinds else set()
        order = ["backbone", "dataset", "resolution", "length", "synthetic", "comparator"]
        shared = [k for k in order if k in common]
        return (", ".join(shared[:-1]) + " and " + shared[-1] if len(shared) > 1 else
                shared[0] if shared else "one substitution")

    # ------------------------------------------------------------------------------------------------
    # the detailed table, for a narrow page
    # ------------------------------------------------------------------------------------------------
    def table(self) -> pd.DataFrame:
        """One row per comparison in five HTML text columns: the comparison (and the chapters that check it),
        the paper's difference and its source, ours (interval, n seeds, p raw → Holm), the verdicts with the
        detectable difference, and the protocol with the row's flags (⚠)."""
        out = []
        for r in self.rows.itertuples():
            unit = " of zeros" if r.measure == SPARSITY else ""
            paper = (f"<b>{r.paper_difference:+.2f} pp</b><br>{r.paper_source}" if math.isfinite(r.paper_difference)
                     else r.paper_source)
            ours = (f"<b>{r.difference:+.2f} pp</b>{unit}<br><span style='white-space:nowrap'>[{r.ci_low:+.2f}, "
                    f"{r.ci_high:+.2f}]</span><br>n = {r.n}; p {_p(r.p_value)} → Holm {_p(r.p_holm)}")
            verdict = (f"<b>{r.verdict}</b>" + (f" (direction: {r.direction})" if r.verdict != r.direction else "")
                       + f"<br>{r.magnitude}<br>detectable: {r.detectable:.2f} pp"
                       + (" — cannot see the paper's size" if r.blind else ""))
            flags = [f for f in (r.degenerate_note, r.unstable_note if r.unstable else "", r.still_note) if f]
            protocol = f"<b>{r.protocol}</b>" + (f": {r.substitutions}" if r.substitutions else "")
            where = r.chapter + (f" (also {r.also_in})" if r.also_in else "")
            out.append({"comparison": f"<b>{r.comparison}</b><br>{where}", "paper's difference": paper,
                        "ours (95% CI)": ours, "verdict": verdict,
                        "protocol; flags": protocol + "".join(f"<br>⚠ {f}" for f in flags)})
        return pd.DataFrame(out)

    def styled(self, caption: str = "The ledger: one row per comparison of the paper"):
        """The :meth:`table` as a pandas Styler that fits a narrow page (wrapped text, small type)."""
        from .tables import CAPTION_STYLE
        return self.table().style.hide(axis="index").set_caption(caption).set_table_styles([
            CAPTION_STYLE,
            {"selector": "td, th", "props": [("white-space", "normal"), ("vertical-align", "top"),
                                             ("font-size", "0.8em"), ("text-align", "left"),
                                             ("padding", "2px 4px")]},
            {"selector": "td.col0, td.col1, td.col2, td.col3", "props": [("min-width", "8em")]},
            {"selector": "td.col4", "props": [("min-width", "14em")]},
        ])


def _p(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{value:.2g}" if value < 0.01 else f"{value:.2f}"


def plot_ledger(ledger: Ledger, width: float = 7.0):
    """One figure: each accuracy comparison's 95% interval (coloured by its final verdict) with the paper's
    difference marked on the same row (◇; none where the paper only plots a figure). The horizontal axis
    is linear within ±2 pp and logarithmic beyond. Rows of another unit (sparsity) are left out."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    rows = ledger.rows[ledger.rows["measure"] == ACCURACY].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(width, 0.24 * len(rows) + 1.9))
    y = np.arange(len(rows))[::-1]
    ax.axvspan(-ledger.margin, ledger.margin, color="0.9", zorder=0)
    ax.axvline(0, color="0.3", lw=0.8)
    for verdict, part in rows.groupby("verdict", sort=False):
        ax.errorbar(part["difference"], y[part.index], fmt="o", ms=3.5, capsize=2, lw=1.2,
                    xerr=[part["difference"] - part["ci_low"], part["ci_high"] - part["difference"]],
                    color=LEDGER_COLOURS[verdict])
    ax.scatter(rows["paper_difference"], y, marker="D", s=24, facecolor="none", edgecolor="black", lw=1.0, zorder=5)
    ax.set_yticks(y, rows["comparison"], fontsize=7)
    ax.set_xscale("symlog", linthresh=2)
    low = min(-2.5, 1.3 * float(np.nanmin(rows["ci_low"])))
    high = max(2.5, 1.3 * float(np.nanmax(rows[["ci_high", "paper_difference"]].to_numpy())))
    ticks = [t for t in (-40, -20, -10, -2, -1, 0, 1, 2, 10, 20, 40) if low <= t <= high]
    ax.set_xticks(ticks, [f"{t:+d}" if t else "0" for t in ticks], fontsize=8)
    ax.set(xlim=(low, high), ylim=(-0.8, len(rows) - 0.2))
    ax.set_xlabel("difference in top-1 accuracy (pp): ours, 95% t-interval; ◇ the paper's", fontsize=8)
    handles = [Line2D([], [], color=LEDGER_COLOURS[v], marker="o", ms=4, label=v) for v in LEDGER_VERDICTS
               if v in set(rows["verdict"])]
    handles.append(Line2D([], [], ls="", marker="D", mfc="none", mec="black", label="paper's difference"))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.legend(handles=handles, fontsize=7, ncol=len(handles), loc="lower center", frameon=False)
    return fig
