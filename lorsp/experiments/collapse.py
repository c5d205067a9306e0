"""Why a run collapsed: the size of its trained prompt δ beside its healthy seeds'.

The findings ledger calls a run *collapsed* (:func:`.health.assess_health`) when it ends more than
:data:`.health.COLLAPSED_BELOW_PP` below the median of the seeds of its own configuration and below LP. The factor
prompts (LPF's δ = (1/G) Σ_t F_t, LoRSP's Eq. 9, the sparsifiers') are added to the image unclamped (x̃ = x + δ(x),
method.md [reading]), so one possible cause can be measured on the committed prompts: a δ grown to the size of
the image itself. :func:`prompt_sizes` rebuilds each run's trained prompter
(:func:`.dissection.load_dissected_prompt`) and measures mean |δ| on the same test images
(:func:`.dissection.dissection_images`), as a share of those images' pixel std; :func:`collapse_sentences`
says what that shows, cell by cell.
"""
from __future__ import annotations

import math

import pandas as pd

from .dissection import dissection_images, load_dissected_prompt
from .grid import method_of_label
from .health import run_health
from .store import RecordStore

#: the prompters whose δ is measured: the factor prompts (another method's collapsed run is listed unmeasured)
MEASURED_METHODS = ("lorsp", "lpf", "topk", "dropout")
#: what makes runs seeds of one another (the health's own grouping: one configuration, whatever its label)
CELL = ["config_id", "dataset", "backbone", "image_size", "epochs"]


def prompt_sizes(results_dir, n_images: int = 10, data_root=None) -> pd.DataFrame:
    """One row per run of every cell (method and setting, data, backbone, resolution, length) that holds a
    collapsed run: ``seed``, ``accuracy`` (%), ``collapsed``, ``firing_rate``, ``delta_abs_mean`` (mean |δ| on
    ``n_images`` test images, in units of the [0, 1] pixel range) and ``delta_share_pct`` (that as a share of the
    images' pixel std), and a ``note`` where a run's prompt is not a factor prompt (not measured). A missing or
    damaged prompt file is an error naming it. ``attrs["images"]`` says which images were used. Empty when no run
    collapsed."""
    health = run_health(results_dir)
    if health.empty or not health["collapsed"].any():
        return pd.DataFrame()
    cells = health.loc[health["collapsed"], CELL].drop_duplicates()
    runs = health.merge(cells, on=CELL).sort_values(CELL + ["seed"])
    store, images = RecordStore(results_dir), {}
    rows = [_measured(store.run_folder(run.key), run, images, n_images, data_root) for run in runs.itertuples()]
    table = pd.DataFrame(rows)
    table.attrs["images"] = sorted({shown.note for shown in images.values()})
    return table


def _measured(folder, run, images: dict, n_images: int, data_root) -> dict:
    """One run's row of :func:`prompt_sizes`; ``images`` caches the test images per dataset and resolution."""
    import torch
    method = method_of_label(run.label)   # "LPF · paper lr (column)" and "LPF" are one configuration
    row = dict(label=f"{method}{run.setting or ''} at prompt lr {run.prompt_lr:g}", dataset=run.dataset,
               backbone=run.backbone, seed=run.seed, accuracy=run.accuracy, collapsed=bool(run.collapsed),
               firing_rate=run.firing_rate, delta_abs_mean=math.nan, delta_share_pct=math.nan, note="")
    if run.method not in MEASURED_METHODS:
        row["note"] = f"not measured: a {run.method!r} prompt (only the factor prompts are: {MEASURED_METHODS})"
        return row
    trained = load_dissected_prompt(folder, methods=MEASURED_METHODS)
    where = (run.dataset, run.image_size)
    if where not in images:
        images[where] = dissection_images(trained, n=n_images, root=data_root)
    shown = images[where].images
    with torch.no_grad():
        delta = trained.prompter.prompt(shown)
    row["delta_abs_mean"] = float(delta.double().abs().mean())
    row["delta_share_pct"] = 100.0 * row["delta_abs_mean"] / float(shown.double().std())
    return row


def collapse_sentences(table: pd.DataFrame) -> list[str]:
    """What :func:`prompt_sizes` shows, one sentence per cell: the collapsed seeds' prompt size against the
    healthy seeds', and whether every collapsed prompt is larger than every healthy one."""
    sentences = []
    for (label, dataset, backbone), cell in table.groupby(["label", "dataset", "backbone"], sort=False):
        bad = cell.loc[cell["collapsed"], "delta_share_pct"].dropna()
        good = cell.loc[~cell["collapsed"], "delta_share_pct"].dropna()
        where = f"{label} on {dataset} with {backbone}"
        if bad.empty or good.empty:
            sentences.append(f"{where}: the prompts could not be measured on both sides (see the notes).")
            continue
        collapsed = ("the collapsed seed's prompt has" if len(bad) == 1
                     else f"the {len(bad)} collapsed seeds' prompts have")
        sizes = (f"{collapsed} a mean |δ| of {_span(bad)} of the test images' pixel std, the {len(good)} healthy "
                 f"seeds' {_span(good)}")
        if bad.min() > good.max():
            ratios = _span(bad / good.median(), digits=0, unit="×")
            sentences.append(f"{where}: {sizes}. Every collapsed prompt is larger than every healthy one ({ratios} "
                             f"the healthy median): the prompt outgrew the image it is added to.")
        else:
            sentences.append(f"{where}: {sizes}. The sizes overlap, so the prompt's size does not tell the "
                             f"collapsed seeds apart.")
    return sentences


def _span(values: pd.Series, digits: int = 1, unit: str = "%") -> str:
    low, high = (f"{float(v):.{digits}f}" for v in (values.min(), values.max()))
    return f"{low}{unit}" if low == high else f"{low}–{high}{unit}"
