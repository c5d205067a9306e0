"""What every experiment chapter does: :class:`Chapter` (the registry's base class) and :class:`ChapterPage`
(a chapter at one scale, as its notebook shows it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

#: every registered chapter class by name (filled by :meth:`Chapter.__init_subclass__`)
REGISTRY: dict[str, type["Chapter"]] = {}


def chapter(name: str) -> "Chapter":
    """The chapter registered as ``name``; ``KeyError`` naming the registered ones otherwise."""
    if name not in REGISTRY:
        raise KeyError(f"unknown chapter {name!r}; expected one of {', '.join(REGISTRY)}")
    return REGISTRY[name]()


def open_page(name: str, scale: str | None = None) -> "ChapterPage":
    """The page of chapter ``name`` at ``scale`` (default: ``LORSP_SCALE``, :func:`lorsp.scale.current_scale`:
    smoke unless set), with the book's figure style: what the first cell of every experiment notebook opens."""
    import seaborn as sns
    from ...scale import current_scale
    sns.set_theme(style="whitegrid", context="notebook")
    return chapter(name).page(scale or current_scale())


class Chapter:
    """An experiment chapter: its runs are ``grid(name)``; a subclass declares its table, claims and figures.

    Class attributes a subclass sets: ``name`` (registers it), ``paper_source`` (the table or figure of the
    paper it reproduces), ``rows`` (the methods of its side-by-side table, in the paper's order),
    ``shifted_test_sets`` (True when its runs are tested on shifted test sets, Table IV) and ``headline_table``."""

    name: ClassVar[str] = ""
    paper_source: ClassVar[str] = ""
    rows: ClassVar[tuple[str, ...]] = ()
    shifted_test_sets: ClassVar[bool] = False
    #: the table a pair of two methods (not a sparsifier, a sweep or a shift) is held to: ``"table2"`` (Tables
    #: II/V) or ``"table3"`` (:func:`lorsp.paper.headline_gap`)
    headline_table: ClassVar[str] = "table2"
    #: the run columns its "every run" table shows beside the common ones
    run_columns: ClassVar[tuple[str, ...]] = ("label", "dataset", "backbone", "seed")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            REGISTRY[cls.name] = cls

    # ---- what a chapter declares (the defaults: a chapter without a table or claims) -------------------
    def table(self, ours: dict[str, pd.DataFrame]) -> pd.DataFrame:
        """The side-by-side table: the paper's numbers, ours at each scale of ``ours`` (:func:`compare`)."""
        raise KeyError(f"chapter {self.name!r} has no side-by-side table; expected one of "
                       f"{', '.join(n for n, c in REGISTRY.items() if c.table is not Chapter.table)}")

    def claims(self, frame: pd.DataFrame, scale: str | None, margin: float, level: float,
               value: str) -> tuple[list[str], pd.DataFrame]:
        """The paper's claims checked on the usable rows ``frame`` (:func:`lorsp.experiments.claims`)."""
        raise KeyError(f"chapter {self.name!r} has no claims; expected one of "
                       f"{', '.join(n for n, c in REGISTRY.items() if c.claims is not Chapter.claims)}")

    def comparison_rows(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
        """The rows its claims compare and the column naming a method (or a sweep point): the run rows."""
        return frame, "label"

    def after_training(self, runs: list[dict], results_dir, frame: pd.DataFrame) -> pd.DataFrame:
        """What the chapter does with its trained runs before reading them (nothing by default)."""
        return frame

    # ---- what every chapter does ---------------------------------------------------------------------
    def page(self, scale: str) -> "ChapterPage":
        """This chapter at ``scale`` (its setup, runs and runs folder), as its notebook shows it."""
        from ..grid import grid, runs_dir
        from ..scales import scale_setup
        setup = scale_setup(scale)
        return ChapterPage(self, scale, setup, grid(self.name, setup=setup), runs_dir(scale))


@dataclass
class ChapterPage:
    """A chapter at one scale: ``runs`` (its grid) in ``runs_folder``; :meth:`train` fills ``ours``,
    :meth:`headline` the ``evidence`` (the committed scale a headline comes from, else ``ours``)."""

    chapter: Chapter
    scale: str
    setup: Any
    runs: list[dict]
    runs_folder: Path
    ours: pd.DataFrame = field(default_factory=pd.DataFrame)
    evidence: Any = None
    #: what :meth:`train` did, in words (shown by :meth:`smoke_check`)
    trained_summary: str = ""

    @property
    def best(self) -> pd.DataFrame:
        """The headline's run rows."""
        return self.evidence.frame

    @property
    def best_scale(self) -> str:
        return self.evidence.scale

    def banner(self):
        """The scale banner: exactly which data, images, weights, resolution and epochs the runs use."""
        from ...scale import scale_banner
        from ..grid import chapter_facts, shown_path
        return scale_banner({**chapter_facts(self.chapter.name, self.setup, self.runs),
                             "runs folder": shown_path(self.runs_folder)})

    def train(self, quiet: bool = False):
        """Train what is not done yet (existing records are reused), say what was trained and which methods
        are not run (``quiet``: keep it for :meth:`smoke_check`, which shows it at the end of the page, and return
        one short Markdown line instead); the rows of this scale's runs are ``self.ours``."""
        from ..grid import missing_methods, shown_path
        from ..runner import run_grid
        from ..tables import load_larger
        ours = run_grid(self.runs, self.runs_folder)
        larger = load_larger(self.chapter.name, self.scale)
        lines = [f"{method}: {reason} — not run, shown as such in the tables"
                 for method, reason in missing_methods(self.chapter.name, setup=self.setup).items()]
        lines.append(f"{len(ours)} runs at {self.scale}: {ours.attrs['trained']} trained now, {ours.attrs['reused']} "
                     f"found in {shown_path(self.runs_folder)} ({ours.attrs['seconds']:.0f} s). Larger scales with "
                     f"committed records: {sorted(larger) or 'none'}")
        self.trained_summary = "\n".join(lines)
        self.ours = self.chapter.after_training(self.runs, self.runs_folder, ours)
        if not quiet:
            print(self.trained_summary)
            return None
        from IPython.display import Markdown
        return Markdown(f"*This page's `{self.scale}` runs: {len(ours)} ({ours.attrs['trained']} trained now, "
                        f"{ours.attrs['reused']} found in {shown_path(self.runs_folder)}); the smoke check at the end "
                        f"of the page shows what they use and what they give.*")

    def headline(self) -> None:
        """Find the headline's numbers (the largest scale with complete committed records, else this page's
        runs) and show where they come from (and the committed scale's banner)."""
        from IPython.display import Markdown, display
        from ..evidence import headline_evidence
        self.evidence = headline_evidence(self.chapter.name, self.scale, self.ours, self.runs_folder)
        display(Markdown(self.evidence.note()))
        if self.evidence.from_committed:
            display(self.evidence.banner())

    def sources(self) -> dict[str, pd.DataFrame]:
        """The "ours" columns of the side-by-side table: the headline's scale, then this page's runs."""
        return self.evidence.sources(self.scale, self.ours)

    # ---- the sections every chapter shows -------------------------------------------------------------
    def side_by_side(self, caption: str):
        """The chapter's side-by-side table (:meth:`Chapter.table`), styled with ``caption``."""
        from ..tables import style_compare
        return style_compare(self.chapter.table(self.sources()), caption)

    def accuracy_bars(self, order, title: str, row: str | None = None, aspect: float = 1.3):
        """The headline's accuracy per method (bars: mean over seeds, whiskers: std), one panel per dataset (and
        per ``row``, e.g. backbone), methods in the paper's ``order`` (those the headline has)."""
        import seaborn as sns
        best = self.best
        facets = sns.catplot(data=best, x="label", y="accuracy_pct", col="dataset", row=row, kind="bar",
                             order=[m for m in order if m in set(best["label"])], errorbar="sd", height=3.8,
                             aspect=aspect, color="C0", sharey=False)
        for ax in facets.axes.flat:
            ax.tick_params(axis="x", rotation=30)
        facets.set_axis_labels("", "top-1 accuracy (%)")
        facets.fig.suptitle(title, y=1.02)
        return facets

    def every_run(self, columns=None):
        """Every run of the headline, one row each (accuracy: last epoch, as the paper reports; best beside)."""
        columns = list(dict.fromkeys(list(columns or self.chapter.run_columns) + [
            "accuracy_pct", "best_accuracy_pct", "firing_rate", "sparsity", "prompt_params", "train_seconds"]))
        shown = self.best[[c for c in columns if c in self.best.columns]]
        return shown.sort_values(["label", "seed"]).reset_index(drop=True).style.format(
            precision=3, na_rep="—").set_caption(f"Every run of this chapter at {self.best_scale} scale (accuracy: "
                                                 "last epoch, as the paper reports; best epoch beside it)")

    def verdicts(self):
        """The paper's claims checked on the headline (:func:`chapter_claims`): the per-pair table, styled;
        ``self.sentences`` and ``self.claim_table`` keep them for :meth:`closing`."""
        from ..claims import chapter_claims
        from ..tables import style_claims
        self.sentences, self.claim_table = chapter_claims(self.chapter.name, self.best, scale=self.best_scale)
        return style_claims(self.claim_table, "Claims of the paper, checked on our numbers: one row per pair of "
                                              "methods")

    def closing(self):
        """The closing paragraph: a count of the verdicts and one bullet per claim, from the numbers."""
        from IPython.display import Markdown, display
        from ..claims import closing_paragraph
        display(Markdown(closing_paragraph(self.sentences, self.claim_table, self.best_scale)))

    def loss_curves(self, labels=("LP", "LoRSP")):
        """The training loss per epoch of ``labels`` on the chapter's datasets and backbones (mean ± std over
        seeds), whether each curve has flattened, and what the lower resolution costs LP (:func:`resolution_cost`)."""
        from IPython.display import Markdown, display
        from ..evidence import flattening_sentence, resolution_cost, training_curves
        best = self.best_scale
        curves = training_curves(self.chapter.name, best, self.evidence.results_dir, labels=tuple(labels))
        if curves.empty:
            print(f"No records of {', '.join(labels)} at {best} on this chapter's datasets.")
        else:
            flat = _plot_curves(curves, f"training loss per epoch at {best} (mean ± std over seeds)")
            display(Markdown(flattening_sentence(flat, best)))
        resolution = resolution_cost(self.chapter.name, best, self.evidence.results_dir)
        if resolution.empty:
            print(f"This headline ({best}) has no LP runs with cached features at 224 px, so it cannot say what the "
                  f"lower resolution costs (desk protocol v1 trained them; v2 spends that time on seeds).")
        else:
            display(resolution.style.hide(axis="index").set_caption(
                f"LP at {best}'s resolution beside LP with cached features at 224 px, same images and seeds (%)"))

    def training_length(self):
        """LP at the paper's epochs beside LP at this scale's (:func:`training_length_check`): the curves,
        whether they flattened, and the seed-paired verdict per dataset."""
        from IPython.display import Markdown, display
        from ..evidence import training_curves, training_length_check
        from ..grid import training_length_label
        from ..scales import PAPER_EPOCHS
        from ..tables import style_claims
        best = self.best_scale
        sentences, table = training_length_check(self.best, best)
        if table.empty:
            print(f"This headline ({best}) has no training-length check: it trains no LP for the paper's "
                  f"{PAPER_EPOCHS} epochs beside its own (desk protocol v1 did).")
            return
        curves = training_curves(self.chapter.name, best, self.evidence.results_dir,
                                 labels=("LP", training_length_label(PAPER_EPOCHS)))
        _plot_curves(curves, f"LP's training loss per epoch at {best} (mean ± std over seeds)")
        display(Markdown(" ".join(sentences)))
        display(style_claims(table, "Test accuracy (%) of LP at the paper's length against LP at this scale's, "
                                    "paired by seed"))

    def deviation(self):
        """The labelled deviation (LoR-VP's prompt at a larger learning rate): its questions and verdicts."""
        from IPython.display import Markdown, display
        from ..evidence import prompt_lr_deviation
        from ..scales import DESK_PROMPT_LR
        from ..tables import style_claims
        sentences, table = prompt_lr_deviation(self.best, self.best_scale)
        if table.empty:
            print(f"This headline ({self.best_scale}) has no runs of the deviation (LoR-VP with the prompt at lr "
                  f"{DESK_PROMPT_LR}; desk protocol v1 trained them). Desk protocol v2 searches every method's "
                  f"prompt lr instead (the section above).")
            return
        display(Markdown(" ".join(sentences)))
        display(style_claims(table, "The deviation's questions (ours, not the paper's), on seed-paired runs (%)"))

    def prompt_lr_search(self):
        """The prompt-lr search (desk protocol v2): each method's validation accuracy at every searched lr and
        the lr its headline uses, then each method at that lr against the paper's lr (the labelled column)."""
        from IPython.display import Markdown, display
        from ..search import paper_lr_column, search_table
        from ..tables import style_claims
        paper_lr = self.evidence.setup.lr
        table = search_table(self.best, paper_lr)
        if table.empty:
            print(f"This headline ({self.best_scale}) has no prompt-lr search: every method trains at the "
                  f"paper's lr ({paper_lr:g}).")
            return
        display(table.style.format(precision=1, na_rep="—").format("{:g}", subset=["selected lr"]).set_caption(
            "The search: validation accuracy (%, one seed, a split of the training images) at each prompt lr"))
        sentences, column = paper_lr_column(self.best, paper_lr, self.best_scale)
        display(Markdown(" ".join(sentences)))
        if not column.empty:
            display(style_claims(column, "Each method at its selected lr against the paper's lr, on seed-paired "
                                         "test accuracies (%): our question, not the paper's"))

    def collapsed_runs(self):
        """The runs of this headline's records that collapsed (:mod:`..collapse`): their prompt's size on test
        images beside their healthy seeds', and what that shows."""
        from IPython.display import Markdown, display
        from ..collapse import collapse_sentences, prompt_sizes
        table = prompt_sizes(self.evidence.results_dir)
        if table.empty:
            print(f"No run of this headline's records ({self.best_scale}) collapsed.")
            return
        display(Markdown("\n".join(f"- {sentence}" for sentence in collapse_sentences(table))
                         + f"\n\nImages: {'; '.join(table.attrs['images'])}."))
        shown = table.drop(columns=["delta_abs_mean"] + (["note"] if (table["note"] == "").all() else [])).rename(
            columns={"accuracy": "accuracy (%)", "firing_rate": "firing rate", "delta_share_pct": "mean |δ| / std (%)"})
        display(shown.style.hide(axis="index").format(precision=3, na_rep="—")
                .format(precision=1, subset=["accuracy (%)", "mean |δ| / std (%)"])
                .set_caption(f"Every seed of each setting with a collapsed run, at {self.best_scale}: the trained "
                             f"prompt's mean |δ| on the same test images, as a share of their pixel std"))

    def smoke_check(self):
        """The runs this page trained (``LORSP_SCALE``): the check that the code runs today, after the banner of
        exactly what they use and what :meth:`train` did."""
        from IPython.display import display
        if self.runs:
            display(self.banner())
        if self.trained_summary:
            print(self.trained_summary)
        if not self.evidence.from_committed:
            print(f"The headline above is this page's {self.scale} runs themselves: no larger scale has complete "
                  f"committed records for this chapter yet.")
            return None
        return (self.ours[["label", "dataset", "seed", "accuracy_pct", "train_seconds"]]
                .sort_values(["label", "seed"]).reset_index(drop=True).style.format(precision=2, na_rep="—")
                .set_caption(f"This page's {self.scale} runs ({len(self.ours)} runs): the check that the code "
                             f"runs today"))


def _plot_curves(curves: pd.DataFrame, title: str) -> pd.DataFrame:
    """Training loss per epoch, one panel per dataset, one line per label; shows whether each flattened
    (:func:`flattening`) and returns that table."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from IPython.display import display
    from matplotlib.ticker import MaxNLocator
    from ..evidence import flattening
    several = curves["backbone"].nunique() > 1 if "backbone" in curves else False
    facets = sns.relplot(data=curves, x="epoch", y="train_loss", hue="label", col="dataset",
                         row="backbone" if several else None, kind="line", marker="o", errorbar="sd", height=3.2,
                         aspect=1.3, facet_kws=dict(sharey=False, sharex=False))
    facets.set_titles(template="{row_name} · {col_name}" if several else "{col_name}")
    facets.set_axis_labels("epoch", "training loss")
    for ax in facets.axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    facets.fig.suptitle(title, y=1.04)
    plt.show()
    flat = flattening(curves)
    shown = flat if several else flat.drop(columns="backbone")
    display(shown.style.format(precision=3, na_rep="—").hide(axis="index").set_caption(
        "Has the training loss flattened? (the last epoch's share of the whole drop)"))
    return flat
