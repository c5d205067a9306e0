"""Which numbers a chapter shows as its headline, and the desk scale's own evidence of training.

A chapter's headline table, figures and verdicts come from the **largest scale whose committed records are
complete** (``results/<scale>/``, or ``$LORSP_RESULTS/<scale>/``: ``paper``, then ``mini``, then ``desk``); when none is complete they come
from the runs the chapter trains now (``smoke`` in CI), and the chapter says how many records of each
larger scale exist (:func:`headline_evidence`). Beside them: the training loss per epoch of LP and LoRSP
(:func:`training_curves`, :func:`flattening` and :func:`flattening_sentence`: is training long enough
to flatten?), LP at the scale's resolution beside LP
with cached features at 224 px on the same images (:func:`resolution_cost`: what the lower resolution costs),
the labelled deviation of a larger prompt learning rate (:func:`prompt_lr_deviation`), and LP trained for the
paper's epochs beside LP at the scale's (:func:`training_length_check`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .grid import DEVIATION_LABELS, LP_224_LABEL, deviation_label, grid, run_key, training_length_label
from .grid import results_root as resolve_results_root
from .records import collect
from .store import RecordStore
from .scales import ScaleSetup, desk_protocol, scale_setup

#: the committed scales a headline may come from, the largest first
HEADLINE_SCALES = ("paper", "mini", "desk")


def committed_status(chapter: str, scale: str, results_root=None) -> tuple[int, int]:
    """``(records found, runs in the grid)`` of ``chapter`` at ``scale`` under ``results/<scale>/``."""
    folder = resolve_results_root(results_root) / scale
    runs = {run_key(r): r for r in grid(chapter, scale)}
    if not folder.is_dir():
        return 0, len(runs)
    store = RecordStore(folder)
    return sum(store.is_complete(r) for r in runs.values()), len(runs)


def desk2_status(chapter: str, results_root=None) -> tuple[int, int]:
    """``(records found, runs in the grid)`` of ``chapter`` under desk protocol v2 (:func:`.scales.desk2_setup`,
    its prompt-lr selection read from the search records once they are complete) in ``results/desk/``."""
    from .scales import desk2_setup, with_prompt_lr_selection
    folder = resolve_results_root(results_root) / "desk"
    runs = {run_key(r): r for r in grid(chapter, setup=with_prompt_lr_selection(desk2_setup(), folder))}
    if not folder.is_dir():
        return 0, len(runs)
    store = RecordStore(folder)
    return sum(store.is_complete(r) for r in runs.values()), len(runs)


@dataclass
class Evidence:
    """The numbers a chapter's headline shows: ``frame`` (rows of :func:`records_frame`) at ``scale``."""

    chapter: str
    scale: str
    frame: pd.DataFrame
    results_dir: Path
    committed: dict[str, tuple[int, int]] = field(default_factory=dict)
    from_committed: bool = False
    #: ``(found, total)`` of desk protocol v2's records of the chapter while they are being trained, else None
    desk2: tuple[int, int] | None = None

    @property
    def setup(self) -> ScaleSetup:
        return scale_setup(self.scale, require_data=False)

    @property
    def runs(self) -> list[dict[str, Any]]:
        return grid(self.chapter, self.scale)

    def sources(self, scale: str, ours: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """The "ours" columns of a side-by-side table: the headline's scale first, then this page's own runs
        (``ours`` at ``scale``) labelled as the check that the code runs today."""
        if not self.from_committed:
            return {scale: ours}
        return {self.scale: self.frame, f"{scale}: the check that the code runs today": ours}

    def banner(self):
        """The scale banner of the headline's numbers (:func:`lorsp.scale.scale_banner`)."""
        from ..scale import scale_banner
        from .grid import chapter_facts, shown_path
        facts = chapter_facts(self.chapter, self.setup, self.runs)
        facts["records"] = (f"committed under {shown_path(self.results_dir)}/" if self.from_committed else
                            f"trained by this page in {shown_path(self.results_dir)}")
        return scale_banner(facts, scale=self.scale)

    def note(self) -> str:
        """Markdown: where the headline comes from, and how complete each larger scale's records are."""
        from .grid import shown_path
        status = "; ".join(f"`{s}`: {found} of {total} runs" for s, (found, total) in self.committed.items())
        if self.from_committed:
            return (f"**The headline numbers below come from the committed `{self.scale}` records** "
                    f"(`{shown_path(self.results_dir)}/`, all {self._run_count()} of this chapter's `{self.scale}` grid). "
                    f"Committed records per scale: {status}.{self._desk2_sentence()}")
        incomplete = [f"`{s}` records are incomplete: {found} of {total} runs"
                      for s, (found, total) in self.committed.items() if found]
        why = ("; ".join(incomplete) if incomplete else "no larger scale has committed records yet")
        return (f"**The headline numbers below come from the `{self.scale}` runs executed with this page** "
                f"({why}), so they only show that the code runs today; they cannot confirm or refute the paper."
                f"{self._desk2_sentence()}")

    def _run_count(self) -> str:
        """The text "N runs", and in how many rows when a run serves under several labels (desk v2: the search point at a
        method's selected lr is also its headline seed 0, the one at the paper's lr its paper-lr seed 0)."""
        runs = self.frame["key"].nunique() if "key" in self.frame else len(self.frame)
        return f"{runs} runs" + (f", shown in {len(self.frame)} rows: a run that serves under several labels is "
                                 f"shown under each" if len(self.frame) > runs else "")

    def _desk2_sentence(self) -> str:
        if not self.desk2 or not self.desk2[0]:
            return ""
        found, total = self.desk2
        return (f" Desk protocol v2 (EfficientNet-Lite0 and MobileNetV2, a prompt-lr search on a validation split, "
                f"whole test sets, seeds from a power plan) is being trained: {found} of its {total} runs of this "
                f"chapter are committed; its numbers are not shown until they are all there (book/running.md).")


def headline_evidence(chapter: str, scale: str, frame: pd.DataFrame, results_dir, results_root=None) -> Evidence:
    """The evidence a chapter shows: the largest of :data:`HEADLINE_SCALES` whose committed records of
    ``chapter`` are complete, else this page's own runs (``frame`` at ``scale``, trained in ``results_dir``)."""
    root = resolve_results_root(results_root)
    committed = {}
    for larger in HEADLINE_SCALES:
        if larger == scale:
            continue
        found, total = committed_status(chapter, larger, root)
        committed[larger] = (found, total)
    desk2 = None if desk_protocol() == "v2" else desk2_status(chapter, root)
    for larger in HEADLINE_SCALES:
        found, total = committed.get(larger, (0, 0))
        if total and found == total:
            rows = collect(grid(chapter, larger), root / larger)
            return Evidence(chapter, larger, rows, root / larger, committed, from_committed=True, desk2=desk2)
    return Evidence(chapter, scale, frame, Path(results_dir), committed, from_committed=False, desk2=desk2)


# ----------------------------------------------------------------------------------------------------
# is training long enough? what does the resolution cost?
# ----------------------------------------------------------------------------------------------------
def _datasets(chapter: str, scale: str) -> list[str]:
    return list(dict.fromkeys(r["dataset"] for r in grid(chapter, scale)))


def _companion_runs(chapter: str, scale: str) -> list[dict]:
    """The chapter's runs plus the LP, LoRSP and LP-at-224-px runs of the backbones and downstream chapters on
    the chapter's datasets (the chapters that train them)."""
    datasets = set(_datasets(chapter, scale))
    runs = {}
    for name in (chapter, "backbones", "downstream"):
        for run in grid(name, scale):
            if run["dataset"] in datasets:
                runs.setdefault(run_key(run), run)
    return list(runs.values())


def training_curves(chapter: str, scale: str, results_dir, labels: Sequence[str] = ("LP", "LoRSP")) -> pd.DataFrame:
    """The per-epoch training loss of the ``labels`` runs on the chapter's datasets, from their records:
    one row per (run, epoch) with label, dataset, backbone, seed, epoch, train_loss, train_accuracy (empty when
    no record exists)."""
    rows, store = [], RecordStore(results_dir)
    for run in _companion_runs(chapter, scale):
        label = run["tags"]["label"]
        if label not in labels:
            continue
        record = store.get(run)
        if record is None:
            continue
        for metric in record.get("metrics") or []:
            rows.append(dict(label=label, dataset=run["dataset"], backbone=run["backbone"], seed=run["seed"],
                             epoch=metric.get("epoch"),
                             train_loss=metric.get("train_loss"), train_accuracy=metric.get("train_accuracy"),
                             key=run_key(run)))
    return pd.DataFrame(rows, columns=["label", "dataset", "backbone", "seed", "epoch", "train_loss",
                                       "train_accuracy", "key"])


def resolution_cost(chapter: str, scale: str, results_dir) -> pd.DataFrame:
    """LP at the scale's resolution beside LP with cached features at 224 px on the same images (same seeds),
    per dataset of the chapter: mean ± std over the seeds both have, and the mean paired difference (pp)."""
    frame = collect([r for r in _companion_runs(chapter, scale) if r["tags"]["label"] in ("LP", LP_224_LABEL)],
                    results_dir)
    out = []
    if frame.empty:
        return pd.DataFrame(columns=["dataset", "LP", LP_224_LABEL, "paired difference (pp)", "seeds"])
    for dataset, part in frame.groupby("dataset", sort=False):
        low = part[part["label"] == "LP"].set_index("seed")["accuracy_pct"]
        high = part[part["label"] == LP_224_LABEL].set_index("seed")["accuracy_pct"]
        seeds = sorted(set(low.dropna().index) & set(high.dropna().index))
        if not seeds:
            continue
        low, high = low.loc[seeds].astype(float), high.loc[seeds].astype(float)
        diff = (high - low)
        out.append({"dataset": dataset, "LP": _fmt(low), LP_224_LABEL: _fmt(high),
                    "paired difference (pp)": f"{diff.mean():+.2f}" + (f" ± {diff.std():.2f}" if len(diff) > 1 else ""),
                    "seeds": len(seeds)})
    return pd.DataFrame(out, columns=["dataset", "LP", LP_224_LABEL, "paired difference (pp)", "seeds"])


def _fmt(values: pd.Series) -> str:
    if len(values) > 1:
        return f"{values.mean():.2f} ± {values.std():.2f}"
    return f"{values.mean():.2f}"


#: [ours] the training loss counts as flattened when its last epoch lowers it by less than this share of the
#: whole drop from the first epoch's mean to the last (:func:`flattening`)
FLATTENED_BELOW = 0.2
_FLATTENING_COLUMNS = ["label", "dataset", "backbone", "first epoch loss", "last epoch loss",
                       "last epoch's share of the drop", "flattened"]
_SHARE = _FLATTENING_COLUMNS[5]


def flattening(curves: pd.DataFrame) -> pd.DataFrame:
    """Per label, dataset and backbone: the mean training loss at the first and the last epoch, the drop over the
    last epoch as a share of the whole drop, and whether that share is under :data:`FLATTENED_BELOW`
    (``flattened``: "yes", "no", or "—" when there is no drop to share)."""
    out = []
    if "backbone" not in curves:
        curves = curves.assign(backbone="—")
    for (label, dataset, backbone), part in (curves.groupby(["label", "dataset", "backbone"], sort=False)
                                             if not curves.empty else ()):
        mean = part.groupby("epoch")["train_loss"].mean().sort_index()
        first, last = float(mean.iloc[0]), float(mean.iloc[-1])
        whole = first - last
        share = (float(mean.iloc[-2]) - last) / whole if len(mean) > 1 and whole > 0 else float("nan")
        flattened = "—" if math.isnan(share) else ("yes" if share < FLATTENED_BELOW else "no")
        out.append({"label": label, "dataset": dataset, "backbone": backbone, "first epoch loss": first,
                    "last epoch loss": last, _SHARE: share, "flattened": flattened})
    return pd.DataFrame(out, columns=_FLATTENING_COLUMNS)


def flattening_sentence(table: pd.DataFrame, scale: str) -> str:
    """What :func:`flattening`'s ``table`` says, in words: which curves have flattened at ``scale`` and which
    have not, each with its last epoch's share of the drop (empty when the table is)."""
    several = table["backbone"].nunique() > 1 if "backbone" in table else False

    def listed(rows):
        return ", ".join(f"{row[_SHARE]:.0%} ({row['label']}, {row['dataset']}"
                         + (f", {row['backbone']})" if several else ")") for _, row in rows.iterrows())
    if table.empty:
        return ""
    criterion = f"(we count a curve as flattened when that share is under {FLATTENED_BELOW:.0%})"
    flat, steep = table[table["flattened"] == "yes"], table[table["flattened"] == "no"]
    if steep.empty and not flat.empty:
        return (f"At `{scale}` the training loss has flattened: its last epoch brings this share of the whole "
                f"drop: {listed(flat)} {criterion}.")
    sentence = (f"At `{scale}` the training loss has **not flattened**: its last epoch still brings this share of "
                f"the whole drop: {listed(steep)} {criterion}. The accuracies and verdicts on this page are those of this "
                f"training length; longer training may change them.")
    if len(flat) > 6:
        sentence += (f" The other {len(flat)} curves have flattened (their last epoch brings at most "
                     f"{flat[_SHARE].max():.0%} of the drop).")
    elif not flat.empty:
        sentence += f" The others have flattened ({listed(flat)})."
    return sentence


# ----------------------------------------------------------------------------------------------------
# the labelled deviation: a larger prompt learning rate
# ----------------------------------------------------------------------------------------------------
def prompt_lr_deviation(frame: pd.DataFrame, scale: str) -> tuple[list[str], pd.DataFrame]:
    """What a larger prompt learning rate does, on the runs of ``frame`` (a chapter's rows at ``scale``,
    whose setup has ``deviation_prompt_lr``): ``(sentences, table)`` from :func:`lorsp.experiments.claims`
    (seed-paired t-intervals, Holm within each question), for questions that are ours, not the paper's: does
    the larger prompt lr raise each such method's accuracy over the paper's lr; does it then beat LP; and does
    LoRSP, at the paper's lr, still beat it. Empty when the scale has no such deviation or ``frame`` holds none
    of its runs."""
    from .claims import Claim, claims
    prompt_lr = scale_setup(scale, require_data=False).deviation_prompt_lr
    labels = set(frame["label"]) if "label" in frame else set()
    if not prompt_lr or not {deviation_label(m, prompt_lr) for m in DEVIATION_LABELS} & labels:
        return [], pd.DataFrame()
    specs = []
    for method in DEVIATION_LABELS:
        fast = deviation_label(method, prompt_lr)
        specs += [Claim(f"a prompt lr of {prompt_lr:g} raises {method}'s accuracy over the paper's lr", [(fast, method)]),
                  Claim(f"{method} at a prompt lr of {prompt_lr:g} beats LP", [(fast, "LP")]),
                  Claim(f"LoRSP at the paper's lr beats {method} at a prompt lr of {prompt_lr:g}", [("LoRSP", fast)])]
    return claims(frame, specs, scale=scale)


# ----------------------------------------------------------------------------------------------------
# the training-length check: LP at the paper's epochs
# ----------------------------------------------------------------------------------------------------
def training_length_check(frame: pd.DataFrame, scale: str) -> tuple[list[str], pd.DataFrame]:
    """What the paper's training length does to LP, on the runs of ``frame`` (a chapter's rows at ``scale``,
    whose setup has ``training_length_epochs``): ``(sentences, table)`` from :func:`lorsp.experiments.claims`
    for one question per dataset that has the check, ours: does LP trained that many epochs beat LP trained
    the scale's epochs on the same images (seed-paired t-interval)? Empty when the scale has no such check or
    ``frame`` holds none of its runs."""
    from .claims import Claim, claims
    setup = scale_setup(scale, require_data=False)
    epochs = setup.training_length_epochs
    if not epochs or "label" not in frame or training_length_label(epochs) not in set(frame["label"]):
        return [], pd.DataFrame()
    checked = frame.loc[frame["label"] == training_length_label(epochs), "dataset"]
    questions = [Claim(f"LP trained for the paper's {epochs} epochs beats LP trained for this scale's "
                       f"{setup.epochs} ({dataset})", [(training_length_label(epochs), "LP")], dict(dataset=dataset))
                 for dataset in dict.fromkeys(checked)]
    return claims(frame, questions, scale=scale)
