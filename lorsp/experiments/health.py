"""The health of a results folder's runs, and which comparisons cannot fail (the findings ledger's flags).

Claims that cannot fail are marked instead of "holds" (:func:`run_health`, detected from the records,
and used by :mod:`.ledger`):
**unstable** when the verdict rests on a run that diverged, or whose first-epoch training loss stayed
above chance (ln K for K classes) and above every LP run's first epoch on the same data, backbone,
resolution and length (at desk v2's batch the head's own first epoch overshoots ln K, so LP's highest is the
level a healthy run may reach), or which collapsed (it ends more than :data:`COLLAPSED_BELOW_PP` below the
median of the seeds of its own configuration, :data:`SAME_CONFIG`), and whose accuracy ended below LP's on the
same seed — unless the verdict is the same with those seeds left out; **degenerate** when one side's LIF never fires (firing rate 0 on
every seed: δ is all zeros, so a sparsity claim holds by construction and an accuracy claim is LoRSP
against a zero prompt). A comparator whose prompt did not move (mean |δ| below one grey level, 1/255 of
the pixel range, from its ``prompt.safetensors``) is flagged, and the comparison against the labelled
deviation that trains it at a larger prompt lr is its own row beside it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..stats import paired_verdict
from .records import SPARSITY
from .store import RecordStore

#: [ours] a run that ends this many pp below the median of its own configuration's seeds (same settings, data,
#: backbone, resolution and length; 3 runs or more) and below LP's has collapsed: desk v2's LoRSP at lr 0.01 on
#: EfficientNet-Lite0 ends at 58–59% on most seeds and at 31–36% on two, with a first epoch like the others'
COLLAPSED_BELOW_PP = 5.0
#: the config fields that make runs seeds of one configuration (with the data, backbone, resolution and length),
#: whatever label a chapter gave them: a run's "own method" for the collapse rule is its configuration
SAME_CONFIG = ("method", "head", "prompter_kwargs", "lr", "prompt_lr", "batch_size", "train_per_class",
               "val_per_class", "test_per_class")
#: a prompt whose mean |δ| is below one grey level of an 8-bit image has not moved
STILL_PROMPT = 1.0 / 255.0


# ----------------------------------------------------------------------------------------------------
# the runs' health, from the records
# ----------------------------------------------------------------------------------------------------
def shared_prompt_abs_mean(record_dir) -> float:
    """Mean |δ| of an image-independent low-rank prompt δ = B·A (LoR-VP: ``prompter.left`` @
    ``prompter.right`` in ``prompt.safetensors``), in units of the [0, 1] pixel range; NaN for other
    prompters or when the file is missing."""
    path = Path(record_dir) / "prompt.safetensors"
    if not path.is_file():
        return float("nan")
    from safetensors.numpy import load_file
    tensors = load_file(str(path))
    if "prompter.left" not in tensors or "prompter.right" not in tensors:
        return float("nan")
    return float(np.abs(tensors["prompter.left"].astype(np.float64) @ tensors["prompter.right"]).mean())


def _health_row(folder: Path, record: dict) -> dict:
    config, tags = record.get("config") or {}, (record.get("experiment") or {}).get("tags") or {}
    metrics = record.get("metrics") or [{}]
    final = record.get("final_accuracy")
    factors = config.get("prompter_kwargs") or {}
    setting = (f" (G={factors['groups']}, r={factors['rank']}, tau={factors.get('tau', 4):g}, "
               f"V_th={factors.get('v_threshold', 0):g})" if config.get("method") == "lorsp" and "groups" in factors else "")
    return dict(key=(record.get("experiment") or {}).get("key") or folder.name, label=tags.get("label"),
                method=config.get("method"), setting=setting, prompt_lr=config.get("prompt_lr") or config.get("lr"),
                config_id=json.dumps({k: config.get(k) for k in SAME_CONFIG}, sort_keys=True, default=str),
                dataset=config.get("dataset"), backbone=config.get("backbone"), seed=config.get("seed"),
                image_size=config.get("image_size"), epochs=config.get("epochs"), status=record.get("status"),
                num_classes=(record.get("data") or {}).get("num_classes"),
                first_loss=metrics[0].get("train_loss", float("nan")),
                accuracy=float("nan") if final is None else 100.0 * float(final),
                firing_rate=record.get("firing_rate"), sparsity=record.get("sparsity"),
                prompt_abs_mean=shared_prompt_abs_mean(folder))


def run_health(results_dir) -> pd.DataFrame:
    """One row per committed record under ``results_dir`` (``<key>/record.json``): its facts, and whether it
    is ``unstable`` with the ``why`` in words (see the module docstring); LP's accuracy on the same dataset,
    backbone, seed, resolution and length is the reference (``lp_accuracy``)."""
    store = RecordStore(results_dir)
    rows = [_health_row(store.run_folder(key), record) for key, record in store.items()]
    return assess_health(pd.DataFrame(rows))


def assess_health(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` (rows of :func:`run_health`'s facts) with ``lp_accuracy``, ``unstable``, ``why`` and
    ``collapsed`` (unstable because it collapsed, not because it diverged or never started to learn)."""
    if runs.empty:
        return runs.assign(lp_accuracy=[], unstable=[], why=[], collapsed=[])
    same = ["dataset", "backbone", "seed", "image_size", "epochs"]
    cell = ["dataset", "backbone", "image_size", "epochs"]
    lp_runs = runs[runs["label"] == "LP"]
    lp = lp_runs.groupby(same)["accuracy"].mean().rename("lp_accuracy")
    lp_first = lp_runs.groupby(cell)["first_loss"].max().rename("lp_first_loss")
    runs = runs.drop(columns=["lp_accuracy", "lp_first_loss"], errors="ignore").join(lp, on=same) \
        .join(lp_first, on=cell)
    seeds_of = ["config_id"] if "config_id" in runs else ["label", "setting"]   # the seeds of one configuration
    own = runs.assign(setting=runs.get("setting", "")).fillna({"setting": ""}).groupby(
        seeds_of + cell, dropna=False)["accuracy"]
    runs = runs.assign(own_median=own.transform("median"), own_runs=own.transform("count"))
    kinds, whys = zip(*(_unstable(row) for row in runs.itertuples()))
    return runs.drop(columns=["own_median", "own_runs"]).assign(unstable=[bool(k) for k in kinds], why=list(whys),
                                                                collapsed=[k == "collapsed" for k in kinds])


def _unstable(row) -> tuple[str, str]:
    """Whether ``row``'s run is unstable and why: ``(kind, why in words)``, kind ``"diverged"``,
    ``"not learning"`` or ``"collapsed"``; ``("", "")`` when it is not (see the module docstring)."""
    name = f"{row.label}{getattr(row, 'setting', '') or ''} seed {row.seed}"
    if row.status == "failed" or not (math.isfinite(row.accuracy) and math.isfinite(row.first_loss)):
        return "diverged", f"{row.label} seed {row.seed} diverged or failed (status {row.status!r})"
    if not row.accuracy < row.lp_accuracy:
        return "", ""
    if row.first_loss > _first_epoch_ceiling(row):
        return "not learning", (f"{name}: first-epoch loss {row.first_loss:.2f} > {_first_epoch_ceiling_text(row)}, "
                                f"accuracy {row.accuracy:.1f}% < LP's {row.lp_accuracy:.1f}%")
    if row.own_runs >= 3 and row.accuracy < row.own_median - COLLAPSED_BELOW_PP:
        return "collapsed", (f"{name} collapsed: accuracy {row.accuracy:.1f}%, {row.own_median - row.accuracy:.1f} "
                             f"pp below the median of its own {row.own_runs} runs ({row.own_median:.1f}%) and below "
                             f"LP's {row.lp_accuracy:.1f}%")
    return "", ""


def _chance(row) -> float:
    return math.log(row.num_classes) if row.num_classes and row.num_classes > 1 else float("nan")


def _first_epoch_ceiling(row) -> float:
    """The first-epoch loss above which a run has not started to learn: chance (ln K), or LP's highest first
    epoch on the same data, backbone, resolution and length when that is higher."""
    lp_first = getattr(row, "lp_first_loss", float("nan"))
    return max(_chance(row), lp_first) if math.isfinite(lp_first) else _chance(row)


def _first_epoch_ceiling_text(row) -> str:
    chance = f"ln {row.num_classes} = {_chance(row):.2f}"
    ceiling = _first_epoch_ceiling(row)
    return chance if ceiling == _chance(row) else f"LP's highest first epoch {ceiling:.2f} (above {chance})"


# ----------------------------------------------------------------------------------------------------
# what cannot fail: unstable runs, a LIF that never fires, a comparator whose prompt did not move
# ----------------------------------------------------------------------------------------------------
def instability(runs: pd.DataFrame, health: pd.DataFrame) -> tuple[bool, str]:
    """Does the comparison's verdict rest on an unstable run? ``(rests, note)``: it rests on one when a paired
    seed has an unstable or diverged run and either fewer than two seeds remain without them or the
    verdict (:func:`lorsp.stats.paired_verdict`) changes when they are left out."""
    flagged = set(health.loc[health["unstable"], "key"])
    bad = runs["key_a"].isin(flagged) | runs["key_b"].isin(flagged) | runs["a"].isna() | runs["b"].isna()
    if not bad.any():
        return False, ""
    keys = set(runs.loc[bad, "key_a"]) | set(runs.loc[bad, "key_b"])
    why = "; ".join(w for w in health.loc[health["key"].isin(keys) & health["unstable"], "why"])
    usable, kept = runs.dropna(subset=["a", "b"]), runs[~bad]
    if len(kept) < 2:
        return True, f"unstable runs under {int(bad.sum())} of {len(runs)} seeds ({why}); too few left without them"
    before = paired_verdict(usable["a"], usable["b"]).verdict
    after = paired_verdict(kept["a"], kept["b"]).verdict
    if before != after:
        return True, f"unstable runs ({why}); without them the verdict is {after}, not {before}"
    return False, f"unstable runs ({why}); the seeds' own interval gives the same verdict ({after}) without them"


def degeneracy(comparison: dict, health: pd.DataFrame) -> str:
    """``"no neuron fires at V_th=0.05 ..."`` when one side's LIF fires on no seed (firing rate 0 on every
    run: δ is all zeros), else ``""``."""
    runs = comparison["runs"]
    for side, name in (("key_a", comparison["better"]), ("key_b", comparison["worse"])):
        rates = pd.to_numeric(health.set_index("key").reindex(runs[side])["firing_rate"], errors="coerce")
        if len(rates) and rates.notna().all() and (rates == 0).all():
            what = ("its prompt is all zeros, so it is the sparsest possible by construction"
                    if comparison["measure"] == SPARSITY else "this is LoRSP against a zero prompt (LP with a head)")
            return f"no neuron fires at {name} (firing rate 0 on all {len(rates)} seeds, δ all zeros): {what}"
    return ""


def still_comparator(comparison: dict, health: pd.DataFrame) -> str:
    """``"comparator's prompt did not move ..."`` when the comparator's mean |δ| is below
    :data:`STILL_PROMPT` on average over its seeds, else ``""``."""
    values = pd.to_numeric(health.set_index("key").reindex(comparison["runs"]["key_b"])["prompt_abs_mean"],
                           errors="coerce")
    if len(values) and values.notna().all() and values.mean() < STILL_PROMPT:
        return (f"comparator's prompt did not move: mean |δ| = {255 * values.mean():.2f}/255 of the pixel range "
                f"(under one grey level)")
    return ""
